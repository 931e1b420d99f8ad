#!/usr/bin/env perl
# The periodic version check against single changes (issue 14, browser
# latency). The daemons bump tm:version and publish in one script, so a
# check may read the version of a change whose message the worker is just
# receiving; that is no sign of a lost message, and must not cost a full
# reload (the change would wait behind it). A check every 5 ms over 200
# changes makes the overlap happen (it used to give 1 to 9 full loads);
# none may follow, every change is served, and a change made without a
# message is still found by the check. Real nginx + Redis, one worker.
use strict; use warnings;
use Test::More;
use Time::HiRes qw(sleep);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $h = TM::Harness->new;
$h->redis;
TM::Nginx::set_flag($h, 'probe', 1);
my $ng = TM::Nginx->new($h, workers => 1, check_interval => '5ms');
$ng->start;
ok $h->wait_until(5, sub { $ng->evaluate('u', 'probe') }), 'synced';

my $loads = sub { scalar(() = $ng->error_log =~ /built in \d+ ms/g) };
my $n0 = $loads->();
# as tm_publish_env() writes: object, version and message in one script
my $lua = "redis.call('HSET', 'tm:flags', 'probe', ARGV[1]) "
        . "local v = redis.call('INCR', 'tm:version') "
        . "redis.call('PUBLISH', 'tm:changes', cjson.encode({version = v, kind = 'flag', op = 'upsert', name = 'probe'})) "
        . "return v";
for my $i (1 .. 200) {
    $h->redis_cmd('EVAL', $lua, 0, TM::Nginx::flag_json('probe', $i % 2 ? 0 : 1));
    sleep 0.01;
}
ok $h->wait_until(5, sub { $ng->evaluate('u', 'probe') == 1 }), 'the last change is served';
sleep 0.2;
my $applied = () = $ng->error_log =~ /change applied in/g;
cmp_ok $applied, '>=', 150, "the changes were applied one by one ($applied)";
is $loads->() - $n0, 0, 'no full load: a check overlapping a change is not taken for a lost message';

# the safety net still works: a change without a message
TM::Nginx::set_flag($h, 'silent', 1, quiet => 1);
$h->redis_cmd('INCR', 'tm:version');
ok $h->wait_until(5, sub { $ng->evaluate('u', 'silent') }), 'a change without a message is found by the check';
cmp_ok $loads->() - $n0, '>=', 1, '... through a full load';

unlike $ng->error_log, qr/\[(alert|crit|emerg)\]|AddressSanitizer|runtime error/, 'no alerts or sanitizer reports';
done_testing;
