#!/usr/bin/env perl
# Edge figures (not pass/fail): propagation of a change, full reload time and
# worker RSS with 10,000 flags and 100,000 API keys loaded.
#   perl -I t/lib bench/edge-sync.pl
#   BENCH_REDIS_TLS=1 perl -I t/lib bench/edge-sync.pl   (the edge syncs over
#   TLS with AUTH: a test CA and requirepass, as a managed Redis)
use strict; use warnings;
use Time::HiRes qw(time sleep);
use Digest::SHA qw(sha256_hex);
use TM::Harness;
use TM::Nginx;

my ($FLAGS, $KEYS) = (10_000, 100_000);
my $TLS = $ENV{BENCH_REDIS_TLS};
my $h = TM::Harness->new($TLS ? (redis_tls => 1, redis_password => 'bench-pw') : ());
print 'redis: ', $TLS ? 'TLS + AUTH' : 'plain', "\n";
$h->redis;
my $port = $h->port('redis');   # the plain loopback port, for loading

sub pct { my ($p, @v) = @_; @v = sort { $a <=> $b } @v; $v[int($p * $#v + 0.5)] }
sub propagation {
    my ($ng, $n) = @_;
    my @ms;
    for my $i (1 .. $n) {
        my $want = $i % 2 ? 0 : 1;
        my $t = time;
        TM::Nginx::set_flag($h, 'probe', $want);
        1 until $ng->evaluate("u", "probe") == $want || time - $t > 10;
        push @ms, (time - $t) * 1000;
    }
    return sprintf 'p50 %.1f ms, p99 %.1f ms (n=%d, includes the HTTP poll)', pct(0.5, @ms), pct(0.99, @ms), $n;
}

TM::Nginx::set_flag($h, 'probe', 1);
my $api = 'location = /api { togglemaster_api_key on; togglemaster_health; }';
my $ng = TM::Nginx->new($h, workers => 1, timeout => '5s', server => $api);
$ng->start;
$h->wait_until(5, sub { $ng->evaluate('u', 'probe') });
print "propagation, small snapshot: ", propagation($ng, 100), "\n";

open my $p, '|-', "redis-cli -p $port" . ($TLS ? ' -a bench-pw --no-auth-warning' : '') . " --pipe >/dev/null" or die;
sub cmd { my $s = '*' . scalar(@_) . "\r\n"; $s .= '$' . length($_) . "\r\n$_\r\n" for @_; print $p $s }
for my $i (1 .. $FLAGS) {
    cmd('HSET', 'tm:flags', "flag-$i", TM::Nginx::flag_json("flag-$i", 1));
    cmd('HSET', 'tm:rules', "flag-$i", TM::Nginx::rule_json("flag-$i", { type => 'PERCENTAGE', value => $i % 100 }, 1)) if $i % 2;
}
cmd('HSET', 'tm:keys', sha256_hex("key-$_"), qq({"id":$_,"name":"k$_"})) for 1 .. $KEYS;
close $p;
my $t = time;
$h->redis_cmd('INCR', 'tm:version');
$h->redis_cmd('PUBLISH', 'tm:changes', '{"kind":"flag","op":"resync"}');
$h->redis_cmd('PUBLISH', 'tm:changes', '{"kind":"key","op":"resync"}');
$h->wait_until(30, sub { eval { $ng->evaluate('u', "flag-$FLAGS") } &&
                         $h->req(GET => $ng->url('/api'), { 'X-API-Key' => "key-$KEYS" })->{status} == 200 });
printf "full reload of %d flags + %d keys (both hashes): %.0f ms\n", $FLAGS, $KEYS, (time - $t) * 1000;

my @ms;
for my $i (1 .. 5) {
    my $k = "new-key-$i";
    $t = time;
    $h->redis_cmd('HSET', 'tm:keys', sha256_hex($k), '{"id":0,"name":"n"}');
    TM::Nginx::_publish($h, 'key', 'upsert', sha256_hex($k));
    $h->wait_until(10, sub { $h->req(GET => $ng->url('/api'), { 'X-API-Key' => $k })->{status} == 200 });
    push @ms, (time - $t) * 1000;
}
printf "key change with %d keys (reloads tm:keys): p50 %.0f ms\n", $KEYS, pct(0.5, @ms);
print "propagation, $FLAGS flags + $KEYS keys loaded: ", propagation($ng, 20), "\n";
my $ppid = $h->pid('nginx');
my ($w) = `pgrep -P $ppid`; chomp $w;
my ($rss) = `grep VmRSS /proc/$w/status` =~ /(\d+)/;
printf "worker RSS: %.1f MiB\n", $rss / 1024;
printf "snapshot file: %.1f MiB\n", (-s $ng->snapshot_file) / 1048576;
