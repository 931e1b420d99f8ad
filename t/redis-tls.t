#!/usr/bin/env perl
# Production-like Redis: TLS with a CA made here, requirepass and a Redis 6+
# ACL user, database 3. The daemons and the nginx module reach it through the
# same URL parser (lib/tm_url.c): a flag created through a daemon is served
# by the edge; the data is in database 3 only. A wrong password, an
# untrusted certificate or a wrong server name fail clearly in the logs,
# the edge keeps serving its last snapshot and the daemons keep serving
# from PostgreSQL. Passwords never reach a log.
use strict; use warnings;
use Test::More;
use Time::HiRes qw(time);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key);

my $h = TM::Harness->new(redis_tls => 1, redis_password => 'admin-pw');
like $h->redis, qr{^rediss://:admin-pw\@127\.0\.0\.1:\d+$}, 'the harness gives a rediss:// URL';
my $tls = $h->redis_tls_port;
my $ca = $h->redis_ca;
my $other_ca = $h->tls_files . '/other-ca.pem';

# The applications' ACL user: only the tm: keys and channel.
is $h->redis_cmd('ACL', 'SETUSER', 'tm', 'on', '>tm-pw', '~tm:*', '&tm:changes', '+@all'), 'OK', 'ACL user tm';

# auth authenticates with the password alone, by name (localhost); flags and
# the edge as the ACL user, flags by name, the edge by address (127.0.0.1).
my $MASTER = 'redis-tls-master-key-0123456789';
my $A = $h->daemon('auth', MASTER_KEY => $MASTER, REDIS_URL => "rediss://:admin-pw\@localhost:$tls/3");
# (a key Redis cannot confirm is asked of auth, as deployments do)
my $F = $h->daemon('flags', REDIS_URL => "rediss://tm:tm-pw\@localhost:$tls/3", AUTH_SERVICE_URL => $A);
my $EDGE_URL = "rediss://tm:tm-pw\@127.0.0.1:$tls/3";
my $ng = TM::Nginx->new($h, redis_url => $EDGE_URL, workers => 2)->start;

sub edge_on {
    my $flag = shift;
    my $r = $h->req(GET => $ng->url("/evaluate?user_id=alice&flag_name=$flag"));
    return $r->{status} == 200 && $r->{json}{result} ? 1 : 0;
}
sub states { TM::Nginx::m_all($ng->metrics, 'togglemaster_redis_sync_state') }
sub all_state { my $want = shift; my @s = states(); @s && !grep { $_ != $want } @s }

# ---- the normal flow -------------------------------------------------------
my $key = new_key($h, $A, $MASTER, 'tls')->{key};
my %K = (Authorization => "Bearer $key");
my $r = $h->req(POST => "$F/flags", \%K, { name => 'tls-flag', is_enabled => JSON::PP::true });
is $r->{status}, 201, 'a flag created through the flags daemon (key checked in Redis over TLS)';
ok $h->wait_until(10, sub { edge_on('tls-flag') }), 'and served by the edge';
ok $h->wait_until(5, sub { all_state(2) }), 'every worker synced (metrics)';
is $h->redis_cmd_in(3, 'HEXISTS', 'tm:flags', 'tls-flag'), 1, 'the flag is in database 3';
is $h->redis_cmd_in(3, 'SISMEMBER', 'tm:ready', 'key'), 1, 'auth reconciled its keys into database 3';
is $h->redis_cmd('EXISTS', 'tm:flags', 'tm:keys', 'tm:version'), 0, 'and nothing in database 0';

# The edge reads database 3 too: a change written there alone arrives.
$h->redis_cmd_in(3, 'HSET', 'tm:flags', 'db3-only', TM::Nginx::flag_json('db3-only', 1));
my $v = $h->redis_cmd_in(3, 'INCR', 'tm:version');
$h->redis_cmd_in(3, 'PUBLISH', 'tm:changes',
                 qq({"version":$v,"kind":"flag","op":"upsert","name":"db3-only"}));
ok $h->wait_until(5, sub { edge_on('db3-only') }), 'a flag written to database 3 reaches the edge';

my @tm = grep { /\buser=tm\b/ } split /\n/, $h->redis_cmd('CLIENT', 'LIST');
ok @tm >= 5, 'the ACL user is connected (2 per worker, flags)';
ok !grep({ !/\bdb=3\b/ } @tm), 'every one of its connections uses database 3';

ok $h->wait_until(3, sub { -s $ng->snapshot_file }), 'the snapshot file is written';

# ---- a wrong password (the password rotated under us) -----------------------
my $mark = length $ng->error_log;
$h->redis_cmd('ACL', 'SETUSER', 'tm', 'resetpass', '>rotated-pw');
$h->redis_cmd('CLIENT', 'KILL', 'USER', 'tm');
ok $h->wait_until(8, sub { substr($ng->error_log, $mark) =~ /AUTH as tm failed: WRONGPASS/ }),
    'edge: a clear AUTH error in the log';
ok $h->wait_until(5, sub { all_state(0) }), 'edge: metrics show Redis down';
ok edge_on('tls-flag') && edge_on('db3-only'), 'edge: the last snapshot still serves';

$r = $h->req(POST => "$F/flags", \%K, { name => 'while-down', is_enabled => JSON::PP::true });
is $r->{status}, 201, 'flags daemon: writes still succeed (PostgreSQL)';
ok $h->wait_until(8, sub { $h->log('flags') =~ /AUTH as tm failed: WRONGPASS/ }),
    'flags daemon: a clear AUTH error in the log';

$h->redis_cmd('ACL', 'SETUSER', 'tm', 'resetpass', '>tm-pw');
ok $h->wait_until(10, sub { edge_on('while-down') }), 'password back: reconciled, and the edge catches up';
ok $h->wait_until(5, sub { all_state(2) }), 'edge synced again';

# ---- an untrusted certificate ---------------------------------------------
sub restart_edge {
    my %o = @_;
    $ng->stop;
    $ng->{$_} = $o{$_} for keys %o;
    $ng->write_conf;
    my $mark = length $ng->error_log;
    $ng->start;
    return $mark;
}

$mark = restart_edge(redis_ca => $other_ca);
ok $h->wait_until(8, sub { substr($ng->error_log, $mark) =~
        /certificate not trusted for "127\.0\.0\.1": \(\d+: [^)]+\)/ }),
    'edge: an untrusted certificate is a clear error';
ok edge_on('tls-flag') && edge_on('while-down'), 'edge: the snapshot (file) serves';
ok all_state(0), 'edge: metrics show Redis down';

# ---- a wrong server name ---------------------------------------------------
$mark = restart_edge(redis_ca => undef, redis_ssl_name => 'wrong.example');
ok $h->wait_until(8, sub { substr($ng->error_log, $mark) =~
        /certificate not trusted for "wrong\.example": \(\d+: hostname mismatch\)/ }),
    'edge: a certificate for another name is refused';
ok edge_on('tls-flag'), 'edge: the snapshot serves';

# the name the certificate does carry, while connecting by address
$mark = restart_edge(redis_ssl_name => 'localhost');
ok $h->wait_until(8, sub { all_state(2) }), 'edge: togglemaster_redis_ssl_server_name localhost syncs';
unlike substr($ng->error_log, $mark), qr/not trusted/, 'without certificate errors';

# ---- a Redis that takes connections and never answers -----------------------
# The TLS handshakes wait on nginx's timers (togglemaster_redis_timeout,
# 500 ms here), never the worker: requests answer at once meanwhile.
$h->signal('STOP', 'redis');
$mark = restart_edge();
my ($n, $wrong, $slowest, $t0) = (0, 0, 0, time);
while (time - $t0 < 3) {
    my $t = time;
    $wrong++ unless edge_on('tls-flag');
    $slowest = time - $t if time - $t > $slowest;
    $n++;
}
$h->signal('CONT', 'redis');
is $wrong, 0, "$n evaluations while Redis is stalled: all from the snapshot";
ok $slowest < 1, sprintf('none waited on Redis (slowest %.0f ms; the handshake timeout is 500 ms)', $slowest * 1000);
like substr($ng->error_log, $mark), qr/timed out/, 'the stalled handshake is logged as timed out';
ok $h->wait_until(10, sub { all_state(2) }), 'Redis back: synced again';

# ---- the daemons: untrusted certificate, wrong server name -----------------
$h->stop('flags');
$F = $h->daemon('flags', REDIS_URL => "rediss://tm:tm-pw\@localhost:$tls/3", REDIS_CA_FILE => $other_ca,
               AUTH_SERVICE_URL => $A);
is $h->req(POST => "$F/flags", \%K, { name => 'untrusted', is_enabled => JSON::PP::true })->{status}, 201,
    'flags daemon with an untrusted certificate: writes still succeed';
ok $h->wait_until(8, sub { $h->log('flags') =~
        /certificate of localhost not trusted for "localhost": (unable to get local issuer certificate|self-signed)/ }),
    'and it says the certificate is not trusted';

$h->stop('flags');
$F = $h->daemon('flags', REDIS_URL => "rediss://tm:tm-pw\@127.0.0.1:$tls/3", REDIS_TLS_SERVER_NAME => 'wrong.example');
ok $h->wait_until(8, sub { $h->log('flags') =~ /not trusted for "wrong\.example": hostname mismatch/ }),
    'flags daemon: a wrong server name is refused';

$h->stop('flags');
$F = $h->daemon('flags', REDIS_URL => "redis://tm:tm-pw\@127.0.0.1:$tls/3");
ok $h->wait_until(8, sub { $h->log('flags') =~ /redis redis:\/\/tm:\*\*\*\@127\.0\.0\.1:\d+\/3: (receive|send): /
                                            || $h->log('flags') =~ /AUTH as tm failed/ }),
    'flags daemon: plain text to the TLS port fails with a reason';

# ---- configuration errors at start ------------------------------------------
sub nginx_t {
    my $lines = shift;
    my $conf = $h->dir . '/t.conf';
    mkdir $h->dir . '/logs';
    open my $f, '>', $conf or die $!;
    print $f "load_module $TM::Nginx::MODULE;\nevents {}\nhttp {\n$lines\n}\n";
    close $f;
    return scalar `${\ TM::Nginx::shell_env($h)} nginx -t -q -p ${\ $h->dir} -c $conf 2>&1`;
}
like nginx_t(qq(togglemaster_redis "redis://:s3cret\@127.0.0.1:1/x";)),
    qr/invalid redis URL .*database number/, 'a bad database number is refused at start';
unlike nginx_t(qq(togglemaster_redis "redis://:s3cret\@127.0.0.1:1/x";)), qr/s3cret/,
    'and the message does not show the password';
like nginx_t("togglemaster_redis redis://127.0.0.1:1;\ntogglemaster_redis_ssl_trusted_certificate $ca;"),
    qr/need a rediss:\/\/ togglemaster_redis/, 'TLS directives without rediss:// are refused';
like nginx_t("togglemaster_redis rediss://127.0.0.1:1;\ntogglemaster_redis_ssl_trusted_certificate /nonexistent.pem;"),
    qr/nonexistent\.pem/, 'a missing CA file is refused';
is nginx_t("togglemaster_redis rediss://u:p\@127.0.0.1:1/3;\ntogglemaster_redis_ssl_trusted_certificate $ca;\n"
           . "togglemaster_redis_ssl_server_name localhost;"), '', 'a full TLS configuration is accepted';

# ---- no password in any log -------------------------------------------------
for my $name (qw(auth flags)) {
    unlike $h->log($name), qr/admin-pw|tm-pw|rotated-pw/, "no password in the $name log";
}
unlike $ng->error_log, qr/admin-pw|tm-pw|rotated-pw/, 'no password in the nginx log';

done_testing;
