#!/usr/bin/env perl
# Keys' last use at the edge (docs/environments.md): a server or client key
# accepted by nginx is reported to Redis (HSET tm:keys:used <hash> <time>),
# at most once a minute per key by each worker, and the auth daemon's
# reconcile folds it into GET /admin/keys' last_used_at. Refused keys and
# unused keys record nothing; while Redis is down nginx keeps answering.
use strict; use warnings;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Digest::SHA qw(sha256_hex);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $h = TM::Harness->new;
my $M = 'master-test-key';
my %MH = (Authorization => "Bearer $M");
my $auth = $h->daemon('auth', MASTER_KEY => $M, TM_RECONCILE_SECONDS => 1);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my $fl = $h->daemon('flags', AUTH_SERVICE_URL => $auth, TARGETING_SERVICE_URL => $tg);
my $T = JSON::PP::true;

sub mint {
    my (%b) = @_;
    my $r = $h->req(POST => "$auth/admin/keys", \%MH, \%b);
    is $r->{status}, 201, "key $b{name} minted" or diag $r->{content};
    return $r->{json}{key};
}
my %A = (Authorization => 'Bearer ' . mint(name => 'admin'));
is $h->req(POST => "$fl/environments", \%A, { name => 'staging' })->{status}, 201, 'staging created';
is $h->req(POST => "$fl/flags", \%A, { name => 'checkout', client_visible => $T })->{status}, 201, 'flag created';
my %key = (server => mint(name => 'edge-server', scope => 'server', environment => 'staging'),
           client => mint(name => 'edge-client', scope => 'client', environment => 'staging'),
           idle => mint(name => 'edge-idle', scope => 'server', environment => 'staging'),
           ro => mint(name => 'edge-ro', scope => 'readonly'));

my $WORKERS = 2;
my $ng = TM::Nginx->new($h, workers => $WORKERS, server => <<'CONF')->start;
        location = /k/evaluate { togglemaster_api_key server client; togglemaster_evaluate; }
CONF
sub ev {
    my $k = shift;
    return $h->req(GET => $ng->url('/k/evaluate?user_id=u1&flag_name=checkout'),
                   { Authorization => "Bearer $k" })->{status};
}
ok $h->wait_until(10, sub { ev($key{server}) == 200 }), 'nginx knows the server key';

# Every command Redis runs, from a MONITOR connection.
my $mon = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $h->{ports}{redis}, Timeout => 5)
    or die "redis: $!";
print $mon "MONITOR\r\n";
like scalar(<$mon>), qr/^\+OK/, 'MONITOR started';
sub hsets {   # the HSET tm:keys:used lines for $hash seen in $secs
    my ($hash, $secs) = @_;
    my ($n, $buf, $sel, $end) = (0, '', IO::Select->new($mon), time + $secs);
    while ((my $left = $end - time) > 0) {
        last unless $sel->can_read($left);
        my $got = sysread $mon, $buf, 65536, length $buf;
        last unless $got;
    }
    $n++ while $buf =~ /"hset" "tm:keys:used" "\Q$hash\E" "\d+"/gi;
    return $n;
}

# 100 requests with one key: each worker reports it once
my $ok = 0;
$ok += ev($key{server}) == 200 for 1 .. 100;
is $ok, 100, '100 evaluations with the server key';
my $n = hsets(sha256_hex($key{server}), 1.5);
ok $n >= 1, "the server key's use reported ($n HSET)";
ok $n <= $WORKERS, "at most one HSET per worker for 100 requests ($n, $WORKERS workers)";
$ok = 0;
$ok += ev($key{server}) == 200 for 1 .. 20;
is hsets(sha256_hex($key{server}), 1), 0, 'within the minute: no more HSET';

is ev($key{client}), 200, 'the client key evaluates';
is hsets(sha256_hex($key{client}), 1.5), 1, "the client key's use reported once";
is ev($key{ro}), 403, 'a readonly key is refused at the edge';
is ev('tm_key_' . ('0' x 64)), 401, 'an unknown key is refused';
is hsets(sha256_hex($key{ro}), 1), 0, 'a refused key: no use reported';

# auth's reconcile folds the uses into last_used_at
sub listed {
    my %by = map { $_->{name} => $_ } @{ $h->req(GET => "$auth/admin/keys", \%MH)->{json} || [] };
    return \%by;
}
ok $h->wait_until(10, sub { my $l = listed(); $l->{'edge-server'}{last_used_at} && $l->{'edge-client'}{last_used_at} }),
   'server and client keys used at the edge show last_used_at';
like listed()->{'edge-server'}{last_used_at} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'last_used_at RFC 3339';
ok !listed()->{'edge-idle'}{last_used_at}, 'an unused key has no last_used_at';
ok !listed()->{'edge-ro'}{last_used_at}, 'a key refused at the edge has no last_used_at';

# Redis down: requests still answered (nothing sent, nothing queued)
$h->stop('redis');
my $t0 = time;
$ok = 0;
$ok += ev($key{idle}) == 200 for 1 .. 20;
is $ok, 20, 'Redis down: the snapshot keeps answering';
ok time - $t0 < 10, 'and the key-use report never blocks';
my $log = $ng->error_log;
unlike $log, qr/\[(alert|emerg)\]|AddressSanitizer|runtime error/, 'no alert, crash or sanitizer report';

$h->teardown;
done_testing;
