package TM::Nginx;
# nginx with ngx_http_togglemaster_module for tests, on top of TM::Harness:
# writes <rundir>/nginx/nginx.conf and starts it through scripts/svc.sh.
#
#   my $h = TM::Harness->new;
#   my $ng = TM::Nginx->new($h, server => 'location = /x { ... }');
#   $ng->start;                      # waits until it answers
#   $h->req(GET => $ng->url('/evaluate?user_id=u&flag_name=f'));
#   TM::Nginx::set_flag($h, 'f', 1); # HSET + INCR + PUBLISH, as daemons do
use strict;
use warnings;
use File::Path qw(make_path);
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use TM::Harness;

# The module of the build under test. Under `make test` that is build-san/,
# where the module is instrumented with ASan+UBSan: the distro nginx then
# runs with the ASan runtime preloaded, reports go to <harness dir>/asan.<pid>
# and fail the test (TM::Harness::check_sanitizers). Leak checking is off:
# nginx frees its pools by exiting.
my $BUILD = $ENV{TM_BUILD} // "$TM::Harness::ROOT/build";
our $MODULE = "$BUILD/nginx/ngx_http_togglemaster_module.so";
our $SANITIZED = !system("nm -D '$MODULE' 2>/dev/null | grep -q __asan_init");
our $LIBASAN = $SANITIZED ? `gcc -print-file-name=libasan.so` : '';
chomp $LIBASAN;

# The same as a shell prefix, for commands like `nginx -t` run by tests.
sub shell_env {
    my %e = san_env(shift);
    return join ' ', map { "$_='$e{$_}'" } sort keys %e;
}

# Environment nginx is started with (empty unless the module is sanitized).
sub san_env {
    my $h = shift;
    return () unless $SANITIZED;
    return (LD_PRELOAD => $LIBASAN,
            ASAN_OPTIONS => 'detect_leaks=0:verify_asan_link_order=0:log_path=' . $h->dir . '/asan',
            UBSAN_OPTIONS => 'print_stacktrace=1:log_path=' . $h->dir . '/asan');
}

# Options: redis (default: the harness's Redis; 0 for none), redis_url (a
# URL instead of the harness's), redis_ca (trusted CA file for rediss://;
# default the harness's test CA), redis_ssl_name, module (the .so to load,
# default the build's: an older release's for upgrade tests), workers (1),
# http (extra http-level lines), server (extra server-level lines),
# check_interval, timeout, snapshot (1: use <rundir>/nginx/snapshot.json).
sub new {
    my ($class, $h, %o) = @_;
    my $self = bless { h => $h, workers => 1, snapshot => 1, %o }, $class;
    $self->{port} = TM::Harness::free_port();
    $self->{dir} = $h->dir . '/nginx';
    make_path("$self->{dir}/tmp");
    $self->write_conf;
    return $self;
}

sub port { $_[0]{port} }
sub dir  { $_[0]{dir} }
sub url  { my ($self, $path) = @_; "http://127.0.0.1:$self->{port}" . ($path // '') }
sub snapshot_file { "$_[0]{dir}/snapshot.json" }

# togglemaster_redis's URL: the redis_url option, else the harness's.
sub redis_addr {
    my $self = shift;
    return undef if defined $self->{redis} && !$self->{redis};
    return $self->{redis_url} // $self->{h}->redis;
}

sub write_conf {
    my $self = shift;
    my $redis = $self->redis_addr;
    my $user = $> == 0 ? "user root root;\n" : '';
    my $http = $self->{http} // '';
    my $server = $self->{server} // '';
    # with TLS, the harness's test CA unless redis_ca says otherwise ('' none)
    my $ca = $self->{redis_ca} // ($redis && $redis =~ /^rediss:/ ? $self->{h}->redis_ca : undef);
    my $redis_lines = defined $redis
        ? "togglemaster_redis \"$redis\";\n"
          . ($ca ? "togglemaster_redis_ssl_trusted_certificate $ca;\n" : '')
          . ($self->{redis_ssl_name} ? "togglemaster_redis_ssl_server_name $self->{redis_ssl_name};\n" : '')
          . 'togglemaster_check_interval ' . ($self->{check_interval} // '1s') . ";\n"
          . 'togglemaster_redis_timeout ' . ($self->{timeout} // '500ms') . ";\n"
          . "togglemaster_backoff_max 1s;\n"
        : '';
    my $snap = $self->{snapshot} ? "togglemaster_snapshot_file $self->{dir}/snapshot.json;\n" : '';
    open my $f, '>', "$self->{dir}/nginx.conf" or die "nginx.conf: $!";
    print $f <<"CONF";
load_module @{[ $self->{module} // $MODULE ]};
${user}worker_processes $self->{workers};
pid $self->{dir}/nginx.pid;
error_log $self->{dir}/error.log info;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $self->{dir}/tmp;
    proxy_temp_path $self->{dir}/tmp;
    fastcgi_temp_path $self->{dir}/tmp;
    uwsgi_temp_path $self->{dir}/tmp;
    scgi_temp_path $self->{dir}/tmp;
    default_type text/plain;
    $redis_lines$snap$http
    server {
        listen 127.0.0.1:$self->{port};
        root $self->{dir}/html;
        location = /evaluate { togglemaster_evaluate; }
        location /ofrep/v1/ { togglemaster_ofrep; }
        location = /metrics { togglemaster_metrics; }
        location = /health { togglemaster_health; }
        $server
    }
}
CONF
    close $f;
    make_path("$self->{dir}/html");
}

sub start {
    my $self = shift;
    $self->{h}->start('nginx', $self->{port}, san_env($self->{h}));
    $self->wait_up;
    return $self;
}

sub wait_up {
    my $self = shift;
    my $end = time + 10;
    while (time < $end) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Timeout => 1);
        return 1 if $s;
        sleep 0.05;
    }
    die "nginx did not come up:\n" . $self->error_log;
}

sub stop { $_[0]{h}->stop('nginx') }

sub restart {
    my $self = shift;
    $self->stop;
    $self->start;
}

sub error_log {
    my $self = shift;
    open my $f, '<', "$self->{dir}/error.log" or return '';
    local $/;
    return <$f>;
}

# A self-signed certificate for localhost/127.0.0.1 in $dir and the server
# block that terminates TLS with it in front of $upstream (moto), to append
# to a "server" option (it closes the test's server first). Returns
# (port, server lines, certificate path).
sub tls_proxy {
    my ($dir, $upstream) = @_;
    system("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
           . "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
           . "-keyout $dir/key.pem -out $dir/cert.pem >/dev/null 2>&1") == 0 or die "openssl failed";
    my $port = TM::Harness::free_port();
    return ($port, <<"CONF", "$dir/cert.pem");
    }
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
        location / { proxy_pass $upstream; }
CONF
}

# GET /metrics as { 'name{labels}' => value }.
sub metrics {
    my $self = shift;
    my $r = $self->{h}->req(GET => $self->url('/metrics'));
    my %m;
    for (split /\n/, $r->{content} // '') {
        next if /^#/;
        my ($k, $v) = /^(\S+) (\S+)$/ or next;
        $m{$k} = $v;
    }
    return \%m;
}

# A metric of metrics() summed over its label sets; every value, in order.
sub m_sum {
    my ($m, $name) = @_;
    my $s = 0;
    $s += $m->{$_} for grep { /^\Q$name\E(\{|$)/ } keys %$m;
    return $s;
}
sub m_all { my ($m, $name) = @_; map { $m->{$_} } sort grep { /^\Q$name\E\{/ } keys %$m }

# GET /evaluate; returns the decoded result (1/0) or dies on a non-200.
sub evaluate {
    my ($self, $user, $flag) = @_;
    my $r = $self->{h}->req(GET => $self->url('/evaluate?user_id=' . _esc($user)
                                             . '&flag_name=' . _esc($flag)));
    die "evaluate: $r->{status} $r->{content}\n" unless $r->{status} == 200;
    return $r->{json}{result} ? 1 : 0;
}

sub _esc {
    my $s = shift;
    $s =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

# GET /evaluate for $user and $flag: (the harness's response, seconds taken).
sub timed_eval {
    my ($self, $user, $flag) = @_;
    my $t0 = time;
    my $r = $self->{h}->req(GET => $self->url('/evaluate?user_id=' . _esc($user) . '&flag_name=' . _esc($flag)));
    return ($r, time - $t0);
}

# Whether the workers keep serving while something heavy arrives: $heavy
# (a code ref sending the heavy requests) runs in a child process while
# ordinary evaluations of $plain (a flag true for user "u") keep coming from
# here, until the child is done or $secs pass (the child is then killed).
# Returns { done => the child finished in time, n => evaluations made,
# bad => those not "200, true", slowest, median => seconds }.
sub serves_while {
    my ($self, $secs, $plain, $heavy) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $heavy->();
        POSIX::_exit(0);   # not exit: the harness's END would stop the services
    }
    my (@lat, $bad);
    my $end = time + $secs;
    while (time < $end) {
        my ($r, $dt) = $self->timed_eval('u', $plain);
        push @lat, $dt;
        $bad++ unless $r->{status} == 200 && $r->{json} && $r->{json}{result};
        last if waitpid($pid, POSIX::WNOHANG()) == $pid;
    }
    my $done = !kill 0, $pid;
    if (!$done) { kill 'KILL', $pid; waitpid $pid, 0 }
    @lat = sort { $a <=> $b } @lat;
    return { done => $done, n => scalar @lat, bad => $bad // 0,
             slowest => $lat[-1] // 99, median => $lat[@lat / 2] // 99 };
}

# Writes as the admin daemons do (docs/redis-layout.md): object, version,
# notification.
my $JSON = JSON::PP->new->canonical->utf8;

sub _publish {
    my ($h, $kind, $op, $name) = @_;
    mark_ready($h);
    my $v = $h->redis_cmd('INCR', 'tm:version');
    $h->redis_cmd('PUBLISH', 'tm:changes',
                  $JSON->encode({ version => $v + 0, kind => $kind, op => $op, name => $name }));
    return $v;
}

# What a daemon's reconciliation says once its hash is complete: the edge
# takes only kinds listed in tm:ready (docs/redis-layout.md).
sub mark_ready { my $h = shift; $h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment)) }

sub flag_json {
    my ($name, $enabled) = @_;
    return $JSON->encode({ id => 1, name => $name, description => '',
                           is_enabled => $enabled ? JSON::PP::true : JSON::PP::false,
                           created_at => '2026-11-22T10:00:00Z', updated_at => '2026-11-22T10:00:00Z' });
}

sub rule_json {
    my ($name, $rules, $enabled) = @_;
    return $JSON->encode({ id => 1, flag_name => $name, rules => $rules,
                           is_enabled => ($enabled // 1) ? JSON::PP::true : JSON::PP::false,
                           created_at => '2026-11-22T10:00:00Z', updated_at => '2026-11-22T10:00:00Z' });
}

# Environments and scoped keys as the daemons write them
# (docs/environments.md): env_json('staging', 2) for tm:envs (is_default
# when the name is "default"), key2_json('server', 'staging') for
# tm:keys:v2, env_flag_json('banner', 1, 1) for tm:flags@<env> (the last
# argument: client_visible).
sub env_json {
    my ($name, $id) = @_;
    return $JSON->encode({ id => $id // 1, name => $name,
                           is_default => $name eq 'default' ? JSON::PP::true : JSON::PP::false });
}

sub key2_json {
    my ($scope, $env, $id) = @_;
    return $JSON->encode({ id => $id // 9, name => "k-$scope", scope => $scope, environment => $env });
}

sub env_flag_json {
    my ($name, $enabled, $client_visible) = @_;
    return $JSON->encode({ id => 1, name => $name, description => '',
                           is_enabled => $enabled ? JSON::PP::true : JSON::PP::false,
                           client_visible => $client_visible ? JSON::PP::true : JSON::PP::false });
}

sub set_flag {
    my ($h, $name, $enabled, %o) = @_;
    $h->redis_cmd('HSET', 'tm:flags', $name, flag_json($name, $enabled));
    mark_ready($h);
    return $o{quiet} ? undef : _publish($h, 'flag', 'upsert', $name);
}

sub set_rule {
    my ($h, $name, $rules, $enabled, %o) = @_;
    $h->redis_cmd('HSET', 'tm:rules', $name, rule_json($name, $rules, $enabled));
    return $o{quiet} ? undef : _publish($h, 'rule', 'upsert', $name);
}

# A segment as the targeting daemon publishes it (docs/redis-layout.md):
# set_segment($h, 'beta', [ {contextName => ..., operator => ..., values => [...]} ]).
sub segment_json {
    my ($name, $constraints, $description) = @_;
    return $JSON->encode({ id => 1, name => $name, description => $description // '',
                           constraints => $constraints,
                           created_at => '2026-11-22T10:00:00Z', updated_at => '2026-11-22T10:00:00Z' });
}

sub set_segment {
    my ($h, $name, $constraints, %o) = @_;
    $h->redis_cmd('HSET', 'tm:segments', $name, segment_json($name, $constraints, $o{description}));
    return $o{quiet} ? undef : _publish($h, 'segment', 'upsert', $name);
}

my %KIND = ('tm:flags' => 'flag', 'tm:rules' => 'rule', 'tm:keys' => 'key', 'tm:segments' => 'segment');

sub set_raw {
    my ($h, $hash, $field, $json, %o) = @_;
    $h->redis_cmd('HSET', $hash, $field, $json);
    return $o{quiet} ? undef : _publish($h, $KIND{$hash}, 'upsert', $field);
}

sub del {
    my ($h, $hash, $field) = @_;
    $h->redis_cmd('HDEL', $hash, $field);
    return _publish($h, $KIND{$hash}, 'delete', $field);
}

# Independent bucket: uint32_be(sha1(user . flag)[0..4]) % 100.
sub bucket {
    my ($user, $flag) = @_;
    require Digest::SHA;
    my $d = Digest::SHA::sha1($user . $flag);
    return unpack('N', substr($d, 0, 4)) % 100;
}

1;
