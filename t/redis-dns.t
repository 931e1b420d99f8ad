#!/usr/bin/env perl
# The admin daemons never resolve REDIS_URL's host on a request thread: a
# resolver thread does, at start and every TM_REDIS_RESOLVE_SECONDS. Here
# TM::SlowDNS (an LD_PRELOAD library) plays a stalled DNS: getaddrinfo for
# one name blocks while stalled, fails while failing, and otherwise answers
# 127.0.0.1 (where the harness's Redis is).
# While the name does not resolve, every request answers at once (publication
# waits); once it resolves, the daemon publishes; when DNS fails later, the
# last good address stays in use. The analytics worker (its usage API reads
# Redis through the same code) likewise.
use strict; use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key);
use TM::AWS;
use TM::SlowDNS;

my $h = TM::Harness->new;
my $M = 'master-dns-key';
$h->redis;
my $port = $h->port('redis');
my $NAME = 'tm-slow-redis.test';
my $dns = TM::SlowDNS->new($h->dir, $NAME);
sub ncalls { $dns->calls }
sub published { defined $h->redis_cmd('HGET', 'tm:flags', $_[0]) }

my $auth = $h->daemon('auth', MASTER_KEY => $M);
my %K = (Authorization => 'Bearer ' . new_key($h, $auth, $M, 'dns-test')->{key});

$dns->stall;   # DNS stops answering before the daemon starts
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, REDIS_URL => "redis://$NAME:$port",
                       TM_REDIS_RESOLVE_SECONDS => 1, $dns->env);
ok $h->wait_until(5, sub { ncalls() >= 1 }), 'the daemon looks the name up';

# every request (API key looked up in Redis, flag published) answers at once
my ($slow, $bad, $worst) = (0, 0, 0);
for my $i (1 .. 20) {
    my $t0 = time;
    my $r = $h->req(POST => "$flags/flags", \%K, { name => "dns-$i", is_enabled => JSON::PP::true });
    my $dt = time - $t0;
    $worst = $dt if $dt > $worst;
    $slow++ if $dt > 1;
    $bad++ unless $r->{status} == 201;
}
is $slow, 0, sprintf('20 creations while DNS stalls: none slower than 1 s (worst %.0f ms)', $worst * 1000);
is $bad, 0, '... all 201';
is $h->req(GET => "$flags/flags/dns-1", \%K)->{status}, 200, 'reads answer too';
ok !published('dns-1'), 'nothing reached Redis yet';
like $h->log('flags'), qr/redis host \Q$NAME\E not resolved yet/, 'the log says why';
is ncalls(), 1, 'the one lookup is still stalled: no request started another';

$dns->stall(0);   # DNS answers again
ok $h->wait_until(10, sub { published('dns-1') && published('dns-20') }),
    'once the name resolves, the flags made meanwhile are published (reconciled)';
sleep 1.1;   # past a request thread's one-second pause after a failed connect
is $h->req(POST => "$flags/flags", \%K, { name => 'dns-after', is_enabled => JSON::PP::true })->{status}, 201,
    'a new flag';
ok published('dns-after'), '... published at once';
like $h->log('flags'), qr/redis: \Q$NAME\E resolved/, 'the resolution is logged';
my $n = ncalls();
ok $h->wait_until(5, sub { ncalls() >= $n + 2 }), 'the name is looked up again every second';

# DNS fails: the last good address stays in use, and the failure is logged once
$dns->fail;
$n = ncalls();
ok $h->wait_until(5, sub { ncalls() >= $n + 3 }), 'lookups keep failing';
is $h->req(POST => "$flags/flags", \%K, { name => 'dns-failing', is_enabled => JSON::PP::true })->{status}, 201,
    'a flag while DNS fails';
ok published('dns-failing'), '... published through the last good address';
my @warned = $h->log('flags') =~ /cannot resolve \Q$NAME\E/g;
is scalar @warned, 1, 'the failing lookups are logged once, not each time';
$dns->fail(0);

my $t0 = time;
$h->stop('flags');
ok time - $t0 < 4, 'the daemon stops promptly (resolver thread joined)';

# The analytics worker's usage API reads flags and keys through the same
# code: it too answers at once while the name does not resolve.
my $moto = $h->moto;
my $p = TM::AWS->new($moto)->create_pipeline(queue => 'dns-q', table => 'ToggleMasterAnalytics');
$dns->stall;
$n = ncalls();
my $aport = $h->start('analytics', undef, AWS_ENDPOINT_URL => $moto, AWS_SQS_URL => $p->{queue_url},
                      AWS_REGION => 'us-east-1', AWS_ACCESS_KEY_ID => 'test', AWS_SECRET_ACCESS_KEY => 'test',
                      BIND_ADDR => '127.0.0.1', TM_SQS_WAIT_SECONDS => 1, AUTH_SERVICE_URL => $auth,
                      REDIS_URL => "redis://$NAME:$port", TM_REDIS_RESOLVE_SECONDS => 1,
                      $dns->env);
my $usage = "http://127.0.0.1:$aport/flags/dns-1/usage";
ok $h->wait_until(5, sub { ncalls() > $n }), 'the worker looks the name up';
($slow, $worst) = (0, 0);
my %st;
for (1 .. 10) {
    my $t1 = time;
    my $r = $h->req(GET => $usage, \%K);
    my $dt = time - $t1;
    $worst = $dt if $dt > $worst;
    $slow++ if $dt > 1;
    $st{ $r->{status} }++;
}
is $slow, 0, sprintf('10 usage reads while DNS stalls: none slower than 1 s (worst %.0f ms)', $worst * 1000);
is_deeply \%st, { 503 => 10 }, '... each a 503 (Redis not reachable yet)';
$dns->stall(0);
ok $h->wait_until(10, sub { $h->req(GET => $usage, \%K)->{status} == 200 }), 'once resolved, usage reads answer 200';
$t0 = time;
$h->stop('analytics');
ok time - $t0 < 4, 'the worker stops promptly (resolver thread joined)';
like $h->log('analytics'), qr/\bstopped\b/, '... on SIGTERM, cleanly (the resolver thread takes no signal)';
done_testing;
