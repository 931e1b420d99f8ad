package TM::Harness;
# Test harness: real PostgreSQL, Redis, moto server, the daemons and nginx on
# free loopback ports, isolated in a temp dir per test file, torn down at exit
# even when a test dies. Perl core modules only.
#
#   my $h = TM::Harness->new;
#   my $pg = $h->postgres;           # DATABASE_URL
#   my $redis = $h->redis;           # REDIS_URL
#   my $auth = $h->daemon('auth', MASTER_KEY => 'm');   # base URL
#   my $r = $h->req(POST => "$auth/admin/keys", {Authorization => 'Bearer m'}, {name => 'x'});
#   $r->{status}, $r->{json}, $r->{content}, $r->{headers}
#
# Redis like a managed one: TM::Harness->new(redis_password => 'pw') starts
# it with requirepass; redis_tls => 1 also makes a test CA and a certificate
# for localhost/127.0.0.1 (openssl CLI, in the test's dir) and has Redis
# listen with TLS: redis() is then the rediss:// URL, redis_ca() the CA file
# the daemons (REDIS_CA_FILE) and nginx trust. redis_cmd() keeps using the
# plain loopback port, authenticated.
#
# A Redis Cluster: TM::Harness->new(redis_cluster => 1) starts three
# masters (services redis, redis-node2, redis-node3; TLS on the cluster bus
# too with redis_tls) and joins them with `redis-cli --cluster create`;
# redis_cluster_replicas => 1 adds a replica to each (six nodes).
# redis() is then the first node's URL; cluster_nodes() lists every node
# ({name, port, tls_port}), slot_owner($key) the master that serves $key;
# redis_cmd() follows MOVED to it.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(sleep time);

our $ROOT = abs_path(dirname(__FILE__) . '/../../..');
our @LIVE;   # harnesses to tear down at exit

sub new {
    my ($class, %o) = @_;
    my $dir = tempdir('tm-test-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TM_KEEP});
    chmod 0755, $dir;
    my $self = bless { dir => $dir, started => [], ports => {}, %o }, $class;
    push @LIVE, $self;
    return $self;
}

sub dir { $_[0]{dir} }
my $JSON = JSON::PP->new->canonical->allow_nonref;
sub json { $JSON }

sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
        or die "free_port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub svc {
    my ($self, $action, $name, $port, %env) = @_;
    local %ENV = (%ENV, %env);
    my @cmd = ("$ROOT/scripts/svc.sh", $action, $name, $self->{dir}, defined $port ? $port : ());
    system(@cmd) == 0 or die "svc.sh @cmd failed (see $self->{dir}/$name.log)\n" . $self->log($name);
}

sub start {
    my ($self, $name, $port, %env) = @_;
    $port //= free_port();
    $self->svc(start => $name, $port, %env);
    push @{ $self->{started} }, $name unless grep { $_ eq $name } @{ $self->{started} };
    $self->{ports}{$name} = $port;
    $self->{env}{$name} = \%env;
    return $port;
}

sub stop { my ($self, $name) = @_; $self->svc(stop => $name) }

# Restart with the same port and environment.
sub restart {
    my ($self, $name) = @_;
    $self->stop($name);
    $self->svc(start => $name, $self->{ports}{$name}, %{ $self->{env}{$name} || {} });
}

# The pid in <dir>/<name>.pid (scripts/svc.sh writes it), or undef.
sub read_pid {
    my ($dir, $name) = @_;
    open my $f, '<', "$dir/$name.pid" or return;
    my $p = <$f>;
    chomp $p;
    return $p;
}

sub pid { my ($self, $name) = @_; read_pid($self->{dir}, $name) }

sub signal { my ($self, $sig, $name) = @_; kill $sig, $self->pid($name) }

sub log {
    my ($self, $name) = @_;
    open my $f, '<', "$self->{dir}/$name.log" or return '';
    local $/;
    return <$f> // '';
}

sub port { $_[0]{ports}{ $_[1] } }

sub postgres {
    my $self = shift;
    my $p = $self->{ports}{postgres} // $self->start('postgres');
    return "postgresql://postgres\@127.0.0.1:$p/togglemaster";
}

sub redis {
    my $self = shift;
    $self->start_redis unless $self->{ports}{redis};
    # a harness given another's port (TM::Admin::replica) shares its Redis
    return $self->{redis_url} // "redis://127.0.0.1:$self->{ports}{redis}";
}

sub start_redis {
    my $self = shift;
    my $pw = $self->{redis_password};
    my $n = $self->{redis_cluster} ? 3 * (1 + ($self->{redis_cluster_replicas} // 0)) : 1;
    my @names = ('redis', map { "redis-node$_" } 2 .. $n);
    for my $name (@names) {
        my %env;
        my $node = { name => $name };
        if ($self->{redis_tls}) {
            $self->{redis_ca} = $self->tls_files . '/ca.pem';
            $node->{tls_port} = free_port();
            %env = (TM_REDIS_TLS_PORT => $node->{tls_port}, TM_REDIS_TLS_DIR => "$self->{dir}/tls");
        }
        $env{TM_REDIS_PASSWORD} = $pw if defined $pw;
        $env{TM_REDIS_CLUSTER_PORT} = free_port() if $self->{redis_cluster};
        $node->{port} = $self->start($name, undef, %env);
        push @{ $self->{cluster_nodes} }, $node;
    }
    my $first = $self->{cluster_nodes}[0];
    $self->{redis_tls_port} = $first->{tls_port};
    $self->create_cluster if $self->{redis_cluster};
    my $auth = defined $pw ? ":$pw\@" : '';
    $self->{redis_url} = $self->{redis_tls} ? "rediss://${auth}127.0.0.1:$first->{tls_port}"
                                            : "redis://${auth}127.0.0.1:$first->{port}";
}

# Joins the nodes (every slot assigned, no replicas) and waits until each
# says the cluster is ok.
sub create_cluster {
    my $self = shift;
    my @a = defined $self->{redis_password} ? ('-a', $self->{redis_password}, '--no-auth-warning') : ();
    my @nodes = map { "127.0.0.1:$_->{port}" } @{ $self->{cluster_nodes} };
    my $replicas = $self->{redis_cluster_replicas} // 0;
    my $out = `redis-cli @a --cluster create @nodes --cluster-replicas $replicas --cluster-yes 2>&1`;
    die "redis-cli --cluster create failed:\n$out" if $?;
    for my $n (@{ $self->{cluster_nodes} }) {
        $self->wait_until(20, sub { ($self->redis_cmd_at($n->{port}, 0, 'CLUSTER', 'INFO') // '')
                                       =~ /cluster_state:ok/ })
            or die "redis cluster: $n->{name} never says cluster_state:ok";
    }
}

sub cluster_nodes { @{ $_[0]{cluster_nodes} || [] } }

# The node ({name, port, tls_port}) whose slots hold $key, as the node on
# plain port $ask (default: the first) sees it.
sub slot_owner {
    my ($self, $key, $ask) = @_;
    my $port = $ask // $self->{cluster_nodes}[0]{port};
    my $slot = $self->redis_cmd_at($port, 0, 'CLUSTER', 'KEYSLOT', $key);
    for my $range (@{ $self->redis_cmd_at($port, 0, 'CLUSTER', 'SLOTS') }) {
        next unless $range->[0] <= $slot && $slot <= $range->[1];
        my ($owner) = grep { $_->{port} == $range->[2][1] || ($_->{tls_port} // 0) == $range->[2][1] }
                           @{ $self->{cluster_nodes} };
        return $owner;
    }
    die "slot_owner: no node serves slot $slot\n";
}

sub redis_tls_port { $_[0]{redis_tls_port} }

# The test CA (undef without redis_tls).
sub redis_ca { $_[0]{redis_ca} }

# <dir>/tls: ca.pem (the test CA), redis.pem/redis.key (localhost and
# 127.0.0.1, signed by it) and other-ca.pem (a CA that signed nothing here).
sub tls_files {
    my $self = shift;
    my $d = "$self->{dir}/tls";
    return $d if -s "$d/redis.pem";
    mkdir $d;
    my $key = '-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';
    open my $ext, '>', "$d/ext.cnf" or die "ext.cnf: $!";
    print $ext "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    close $ext;
    for my $cmd ("openssl req -x509 $key -days 2 -subj /CN=tm-test-ca -keyout $d/ca.key -out $d/ca.pem",
                 "openssl req -x509 $key -days 2 -subj /CN=tm-other-ca -keyout $d/other-ca.key -out $d/other-ca.pem",
                 "openssl req $key -subj /CN=localhost -keyout $d/redis.key -out $d/redis.csr",
                 "openssl x509 -req -in $d/redis.csr -CA $d/ca.pem -CAkey $d/ca.key -CAcreateserial "
                 . "-days 2 -extfile $d/ext.cnf -out $d/redis.pem") {
        system("$cmd >/dev/null 2>&1") == 0 or die "tls_files: $cmd failed";
    }
    chmod 0644, "$d/redis.key";
    return $d;
}

sub moto {
    my $self = shift;
    my $p = $self->{ports}{moto} // $self->start('moto');
    return "http://127.0.0.1:$p";
}

# Starts an admin daemon (auth, flags, targeting) with DATABASE_URL and
# REDIS_URL pointing at this harness unless given; returns its base URL.
sub daemon {
    my ($self, $name, %env) = @_;
    $env{DATABASE_URL} //= $self->postgres;
    $env{REDIS_URL} //= $self->redis;
    $env{REDIS_CA_FILE} //= $self->redis_ca if $self->redis_ca && $env{REDIS_URL} =~ /^rediss:/;
    $env{BIND_ADDR} //= '127.0.0.1';
    $env{TM_RECONCILE_SECONDS} //= 1;
    # A test stack is a development stack: short master keys are allowed.
    $env{TOGGLEMASTER_ENV} //= 'development';
    my $port = $self->start($name, undef, %env);
    return "http://127.0.0.1:$port";
}

# psql one statement against the harness database; returns trimmed output.
sub psql {
    my ($self, $sql) = @_;
    my ($bin) = sort glob('/usr/lib/postgresql/*/bin');
    my $p = $self->{ports}{postgres};
    my $out = `$bin/psql -X -q -h 127.0.0.1 -p $p -U postgres -d togglemaster -tA -c \Q$sql\E 2>&1`;
    chomp $out;
    return $out;
}

# One Redis command over RESP; returns a scalar, an array ref or undef.
sub redis_cmd {
    my ($self, @args) = @_;
    return $self->redis_cmd_in(0, @args);
}

# The same in database $db; in a cluster, on the node a MOVED names.
sub redis_cmd_in {
    my ($self, $db, @args) = @_;
    my $port = $self->{ports}{redis};
    for my $hop (1 .. 3) {
        my $r = eval { $self->redis_cmd_at($port, $db, @args) };
        return $r unless $@;
        die $@ unless $@ =~ /^redis error: MOVED \d+ [^ ]*:(\d+)/ && $hop < 3;
        $port = $1;
    }
}

# One command to the node on plain port $port.
sub redis_cmd_at {
    my ($self, $port, $db, @args) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5)
        or die "redis connect: $!";
    my @pre;
    push @pre, ['AUTH', $self->{redis_password}] if defined $self->{redis_password};
    push @pre, ['SELECT', $db] if $db;
    for my $cmd (@pre, \@args) {
        my $req = '*' . scalar(@$cmd) . "\r\n";
        $req .= '$' . length($_) . "\r\n$_\r\n" for @$cmd;
        print $s $req;
    }
    _resp($s) for @pre;
    my $r = _resp($s);
    close $s;
    return $r;
}

sub _resp {
    my $s = shift;
    my $line = <$s>;
    die "redis: no reply\n" unless defined $line;
    $line =~ s/\r\n$//;
    my ($t, $v) = (substr($line, 0, 1), substr($line, 1));
    return $v if $t eq '+' || $t eq ':';
    die "redis error: $v\n" if $t eq '-';
    if ($t eq '$') {
        return undef if $v < 0;
        my $buf = '';
        while (length($buf) < $v + 2) {
            my $n = read($s, my $chunk, $v + 2 - length $buf);
            die "redis: short read\n" unless $n;
            $buf .= $chunk;
        }
        return substr($buf, 0, $v);
    }
    if ($t eq '*') {
        return undef if $v < 0;
        return [ map { _resp($s) } 1 .. $v ];
    }
    die "redis: bad reply $line\n";
}

# HTTP request; $body may be a string (sent as is) or a ref (sent as JSON).
sub req {
    my ($self, $method, $url, $headers, $body) = @_;
    my %h = %{ $headers || {} };
    my %opt = (headers => \%h);
    if (defined $body) {
        $opt{content} = ref $body ? $JSON->encode($body) : $body;
        $h{'Content-Type'} //= 'application/json';
    }
    my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 0);
    my $r = $http->request($method, $url, \%opt);
    my $json;
    if (length($r->{content} // '')) {
        $json = eval { $JSON->decode($r->{content}) };
    }
    return { status => $r->{status}, content => $r->{content}, json => $json,
             headers => $r->{headers}, reason => $r->{reason} };
}

# Polls $code until it returns true or $secs pass; returns the last value.
sub wait_until {
    my ($self, $secs, $code) = @_;
    my $end = time + $secs;
    my $v;
    while (1) {
        $v = $code->();
        return $v if $v || time > $end;
        sleep 0.02;
    }
}

sub teardown {
    my $self = shift;
    return if $self->{down}++;
    for my $name (reverse @{ $self->{started} }) {
        eval { $self->svc(stop => $name) };
    }
    $self->check_sanitizers;
}

# A sanitizer report in any service log fails the test file: the daemons run
# from the ASan+UBSan build under `make test`, and their reports (including
# LeakSanitizer's at exit) land in their logs.
sub check_sanitizers {
    my $self = shift;
    return unless $INC{'Test/More.pm'};
    # asan.<pid>: reports of a sanitized nginx module (TM::Nginx)
    my @logs = ((map { [$_, $self->log($_)] } @{ $self->{started} }),
                (map { [$_, do { local (@ARGV, $/) = ($_); <> } // ''] } glob "$self->{dir}/asan.*"));
    for my $entry (@logs) {
        my ($name, $log) = @$entry;
        my @hits = $log =~ /^(.*(?:ERROR: \w+Sanitizer|runtime error:).*)$/mg;
        next unless @hits;   # silent when clean: teardown may run after done_testing
        Test::More::fail("sanitizer report in $name log ($self->{dir}/$name.log)");
        Test::More::diag(join("\n", @hits[0 .. ($#hits < 4 ? $#hits : 4)]));
        $? = 1 if Test::More->builder->is_passing == 0 && !$?;
    }
}

sub DESTROY { $_[0]->teardown }
END { $_->teardown for @LIVE; @LIVE = () }
$SIG{INT} = $SIG{TERM} = sub { $_->teardown for @LIVE; exit 1 };

1;
