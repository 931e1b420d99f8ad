#!/usr/bin/env perl
# Snapshot file figures (not pass/fail): its size per environment, the time
# a worker takes to write it (from a thread) and to load it at start with
# Redis down, for ENVS environments of FLAGS flags (half with a rule) and
# KEYS scoped keys.
#   perl -I t/lib bench/snapshot-file.pl          (3 environments x 10,000)
#   BENCH_ENVS=64 BENCH_FLAGS=1000 perl -I t/lib bench/snapshot-file.pl
use strict; use warnings;
use Time::HiRes qw(time);
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use TM::Harness;
use TM::Nginx;

my $ENVS = $ENV{BENCH_ENVS} // 3;
my $FLAGS = $ENV{BENCH_FLAGS} // 10_000;
my $KEYS = $ENV{BENCH_KEYS} // 10_000;
my $h = TM::Harness->new;
$h->redis;
my $port = $h->port('redis');

my @envs = ('default', map { "env$_" } 1 .. $ENVS - 1);
open my $p, '|-', "redis-cli -p $port --pipe >/dev/null" or die;
sub cmd { my $s = '*' . scalar(@_) . "\r\n"; $s .= '$' . length($_) . "\r\n$_\r\n" for @_; print $p $s }
for my $e (@envs) {
    my $sfx = $e eq 'default' ? '' : "\@$e";
    cmd('HSET', 'tm:envs', $e, TM::Nginx::env_json($e));
    for my $i (1 .. $FLAGS) {
        cmd('HSET', "tm:flags$sfx", "flag-$i", TM::Nginx::env_flag_json("flag-$i", 1, $i % 2));
        cmd('HSET', "tm:rules$sfx", "flag-$i",
            TM::Nginx::rule_json("flag-$i", { type => 'PERCENTAGE', value => $i % 100 }, 1)) if $i % 2;
    }
}
cmd('HSET', 'tm:keys:v2', sha256_hex("key-$_"), TM::Nginx::key2_json('server', $envs[$_ % $ENVS], $_)) for 1 .. $KEYS;
close $p;
$h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2), map { ("flag\@$_", "rule\@$_") } @envs[1 .. $#envs]);
$h->redis_cmd('SET', 'tm:version', 1);

my $ng = TM::Nginx->new($h, workers => 1, timeout => '5s');
$ng->start;
my $file = $ng->snapshot_file;
$h->wait_until(60, sub { $ng->error_log =~ /snapshot file "[^"]*" written, version 1, in (\d+) ms/ });
my ($write_ms) = $ng->error_log =~ /snapshot file "[^"]*" written, version 1, in (\d+) ms/;
my $size = -s $file;
open my $f, '<', $file or die; my $doc = do { local $/; decode_json(<$f>) }; close $f;
my $J = JSON::PP->new->canonical;
my $env1 = $ENVS > 1 ? length($J->encode($doc->{environments}{env1})) : 0;
my $keys = length($J->encode($doc->{keys2}));
printf "%d environments x %d flags (half with a rule), %d scoped keys\n", $ENVS, $FLAGS, $KEYS;
printf "snapshot file: %.1f MB; one environment's flags and rules: %.2f MB (%.0f bytes a flag); scoped keys: %.2f MB (%.0f bytes a key)\n",
    $size / 1e6, $env1 / 1e6, $FLAGS ? $env1 / $FLAGS : 0, $keys / 1e6, $KEYS ? $keys / $KEYS : 0;
printf "written from the worker's thread in %s ms\n", $write_ms // '?';

$h->stop('redis');
$ng->stop;
my $before = length $ng->error_log;
my $t = time;
$ng->start;
$h->wait_until(60, sub { $ng->evaluate('u', "flag-$FLAGS") });
printf "restart with Redis down to the first answer from the file: %.0f ms\n", (time - $t) * 1000;
print substr($ng->error_log, $before) =~ /(loaded snapshot file[^\n]*)/ ? "$1\n" : "not loaded\n";
