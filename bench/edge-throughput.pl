#!/usr/bin/env perl
# /evaluate throughput and p99 against nginx's own `return 200` of the same
# body, in the same nginx, same run, same worker count (not pass/fail).
# Rounds alternate baseline and evaluation so machine noise hits both alike.
# Then the same with 3 environments x 10,000 flags loaded (docs/environments.md):
# the default's /evaluate, and staging's through togglemaster_environment.
#   perl -I t/lib bench/edge-throughput.pl [SECONDS_PER_ROUND] [ROUNDS]
use strict; use warnings;
use Digest::SHA qw(sha256_hex);
use TM::Harness;
use TM::Nginx;

my ($SECS, $ROUNDS) = (@ARGV, 3, 3)[0, 1];
my ($FLAGS, $KEYS) = (10_000, 100_000);
die "wrk is needed (apt-get install wrk)\n" unless grep { -x "$_/wrk" } split /:/, $ENV{PATH};

my $h = TM::Harness->new;
my ($rport) = $h->redis =~ /(\d+)$/;
my $body = '{"flag_name":"flag-1","user_id":"user-42","result":true}';
my $ng = TM::Nginx->new($h, workers => 1, timeout => '5s',
    server => "location = /baseline { default_type application/json; return 200 '$body'; }\n"
            . "location = /api { togglemaster_api_key on; togglemaster_health; }\n"
            . "location = /stg/evaluate { togglemaster_environment staging; togglemaster_evaluate; }");
TM::Nginx::set_flag($h, 'flag-1', 1);
$ng->start;
$h->wait_until(5, sub { $ng->evaluate('user-42', 'flag-1') }) or die "nginx did not sync\n";

sub wrk {
    my $path = shift;
    my $out = `wrk -t1 -c32 -d${SECS}s --latency '${\ $ng->url($path)}' 2>&1`;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    my ($p99, $unit) = $out =~ /99%\s+([\d.]+)(us|ms|s)/;
    my ($non2xx) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    die "wrk failed:\n$out" unless $rps;
    $p99 *= { us => 0.001, ms => 1, s => 1000 }->{$unit} if defined $p99;
    return ($rps, $p99 // 0, $non2xx // 0);
}

sub compare {
    my ($label, $path) = @_;
    $path //= '/evaluate';
    my (@b, @e, @bp, @ep, $errors);
    for (1 .. $ROUNDS) {
        my ($r, $p, $x) = wrk('/baseline');
        push @b, $r; push @bp, $p;
        ($r, $p, $x) = wrk("$path?user_id=user-42&flag_name=flag-1");
        push @e, $r; push @ep, $p; $errors += $x;
    }
    my $med = sub { my @v = sort { $a <=> $b } @_; $v[$#v / 2] };
    my ($bm, $em) = ($med->(@b), $med->(@e));
    printf "edge %-44s baseline %8.0f req/s p99 %.2f ms | /evaluate %8.0f req/s p99 %.2f ms | ratio %.2f%s\n",
        $label, $bm, $med->(@bp), $em, $med->(@ep), $em / $bm, $errors ? " ($errors non-2xx!)" : '';
}

compare('(1 flag loaded):');

open my $p, '|-', "redis-cli -p $rport --pipe >/dev/null" or die;
sub cmd { my $s = '*' . scalar(@_) . "\r\n"; $s .= '$' . length($_) . "\r\n$_\r\n" for @_; print $p $s }
for my $i (2 .. $FLAGS) {
    cmd('HSET', 'tm:flags', "flag-$i", TM::Nginx::flag_json("flag-$i", 1));
    cmd('HSET', 'tm:rules', "flag-$i", TM::Nginx::rule_json("flag-$i", { type => 'PERCENTAGE', value => $i % 100 }, 1)) if $i % 2;
}
cmd('HSET', 'tm:keys', sha256_hex("key-$_"), qq({"id":$_,"name":"k$_"})) for 1 .. $KEYS;
close $p;
$h->redis_cmd('INCR', 'tm:version');
$h->redis_cmd('PUBLISH', 'tm:changes', '{"kind":"flag","op":"resync"}');
$h->redis_cmd('PUBLISH', 'tm:changes', '{"kind":"key","op":"resync"}');
$h->wait_until(30, sub { eval { $ng->evaluate('u', "flag-$FLAGS") }
                         && $h->req(GET => $ng->url('/api'), { 'X-API-Key' => "key-$KEYS" })->{status} == 200 })
    or die "big snapshot not loaded\n";
sleep 1;
compare("($FLAGS flags + $KEYS keys loaded):");

# two more environments, 10,000 flags each (half with rules), as the daemons
# write them: tm:envs, tm:flags@<env>, tm:rules@<env>
open $p, '|-', "redis-cli -p $rport --pipe >/dev/null" or die;
cmd('HSET', 'tm:envs', 'default', '{"id":1,"name":"default","is_default":true}');
my $id = 2;
for my $env (qw(staging production)) {
    cmd('HSET', 'tm:envs', $env, qq({"id":@{[ $id++ ]},"name":"$env","is_default":false}));
    for my $i (1 .. $FLAGS) {
        cmd('HSET', "tm:flags\@$env", "flag-$i", TM::Nginx::flag_json("flag-$i", 1));
        cmd('HSET', "tm:rules\@$env", "flag-$i", TM::Nginx::rule_json("flag-$i", { type => 'PERCENTAGE', value => $i % 100 }, 1)) if $i % 2;
    }
    cmd('SADD', 'tm:ready', 'env', "flag\@$env", "rule\@$env");
}
close $p;
$h->redis_cmd('INCR', 'tm:version');
$h->redis_cmd('PUBLISH', 'tm:changes', '{"kind":"env","op":"resync"}');
$h->wait_until(30, sub { my $r = $h->req(GET => $ng->url("/stg/evaluate?user_id=u&flag_name=flag-$FLAGS"));
                         $r->{status} == 200 && $r->{json}{result} })
    or die "environments not loaded\n";
sleep 1;
compare("(3 envs x $FLAGS flags + $KEYS keys): default");
compare("(3 envs x $FLAGS flags + $KEYS keys): staging", '/stg/evaluate');
