#!/usr/bin/env perl
# The admin daemons never resolve REDIS_URL's host on a request thread: a
# resolver thread does, at start and every TM_REDIS_RESOLVE_SECONDS. Here a
# small LD_PRELOAD library built by the test plays a stalled DNS: getaddrinfo
# for one name blocks while a gate file exists, fails while a "fail" file
# exists, and otherwise answers 127.0.0.1 (where the harness's Redis is).
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

my $h = TM::Harness->new;
my $M = 'master-dns-key';
$h->redis;
my $port = $h->port('redis');
my $NAME = 'tm-slow-redis.test';
my $gate = $h->dir . '/dns-gate';
my $fail = $h->dir . '/dns-fail';
my $calls = $h->dir . '/dns-calls';
my $so = $h->dir . '/slowdns.so';

open my $c, '>', $h->dir . '/slowdns.c' or die;
print $c <<"C";
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <string.h>
#include <unistd.h>
typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
/* getaddrinfo("$NAME"): one line per call in the calls file; blocks while
 * the gate exists, fails while the fail file exists, else is 127.0.0.1 */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    gai_fn real = (gai_fn) dlsym(RTLD_NEXT, "getaddrinfo");
    if (node == NULL || strcmp(node, "$NAME") != 0) {
        return real(node, service, hints, res);
    }
    int fd = open("$calls", O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        (void) !write(fd, "x\\n", 2);
        close(fd);
    }
    while (access("$gate", F_OK) == 0) {
        usleep(10000);
    }
    if (access("$fail", F_OK) == 0) {
        return EAI_AGAIN;
    }
    return real("127.0.0.1", service, hints, res);
}
C
close $c;
is system('cc', '-shared', '-fPIC', '-o', $so, $h->dir . '/slowdns.c', '-ldl'), 0, 'the slow-DNS library builds';

sub ncalls { open my $f, '<', $calls or return 0; my @l = <$f>; scalar @l }
sub touch { open my $f, '>', $_[0] or die "$_[0]: $!"; close $f }
sub published { defined $h->redis_cmd('HGET', 'tm:flags', $_[0]) }

my $auth = $h->daemon('auth', MASTER_KEY => $M);
my %K = (Authorization => 'Bearer ' . new_key($h, $auth, $M, 'dns-test')->{key});

touch($gate);   # DNS stops answering before the daemon starts
my $asan = join ':', grep { $_ } $ENV{ASAN_OPTIONS}, 'verify_asan_link_order=0';
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, REDIS_URL => "redis://$NAME:$port",
                       TM_REDIS_RESOLVE_SECONDS => 1, LD_PRELOAD => $so, ASAN_OPTIONS => $asan);
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

unlink $gate or die "unlink: $!";   # DNS answers again
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
touch($fail);
$n = ncalls();
ok $h->wait_until(5, sub { ncalls() >= $n + 3 }), 'lookups keep failing';
is $h->req(POST => "$flags/flags", \%K, { name => 'dns-failing', is_enabled => JSON::PP::true })->{status}, 201,
    'a flag while DNS fails';
ok published('dns-failing'), '... published through the last good address';
my @warned = $h->log('flags') =~ /cannot resolve \Q$NAME\E/g;
is scalar @warned, 1, 'the failing lookups are logged once, not each time';
unlink $fail or die "unlink: $!";

my $t0 = time;
$h->stop('flags');
ok time - $t0 < 4, 'the daemon stops promptly (resolver thread joined)';

# The analytics worker's usage API reads flags and keys through the same
# code: it too answers at once while the name does not resolve.
my $moto = $h->moto;
my $p = TM::AWS->new($moto)->create_pipeline(queue => 'dns-q', table => 'ToggleMasterAnalytics');
touch($gate);
$n = ncalls();
my $aport = $h->start('analytics', undef, AWS_ENDPOINT_URL => $moto, AWS_SQS_URL => $p->{queue_url},
                      AWS_REGION => 'us-east-1', AWS_ACCESS_KEY_ID => 'test', AWS_SECRET_ACCESS_KEY => 'test',
                      BIND_ADDR => '127.0.0.1', TM_SQS_WAIT_SECONDS => 1, AUTH_SERVICE_URL => $auth,
                      REDIS_URL => "redis://$NAME:$port", TM_REDIS_RESOLVE_SECONDS => 1,
                      LD_PRELOAD => $so, ASAN_OPTIONS => $asan);
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
unlink $gate or die "unlink: $!";
ok $h->wait_until(10, sub { $h->req(GET => $usage, \%K)->{status} == 200 }), 'once resolved, usage reads answer 200';
$t0 = time;
$h->stop('analytics');
ok time - $t0 < 4, 'the worker stops promptly (resolver thread joined)';
like $h->log('analytics'), qr/\bstopped\b/, '... on SIGTERM, cleanly (the resolver thread takes no signal)';
done_testing;
