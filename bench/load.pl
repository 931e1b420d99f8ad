#!/usr/bin/env perl
# `make load`: the original teams' acceptance run — sustained load on
# /evaluate through the gateway, thresholds p95 < 2 s and < 1 % errors (their
# k6 scripts) — against the whole `make run` stack on free ports. Reports how
# far under the thresholds we are. wrk drives it; a Lua script spreads the
# requests over 5,000 users and 20 flags with varied rules.
#   LOAD_SECONDS=60 LOAD_CONNECTIONS=64 perl -I t/lib bench/load.pl
use strict; use warnings;
use File::Temp qw(tempfile);
use TM::Harness;
use TM::Stack;

my $secs = $ENV{LOAD_SECONDS} // 60;
my $conns = $ENV{LOAD_CONNECTIONS} // 64;
die "wrk is needed (apt-get install wrk)\n" unless grep { -x "$_/wrk" } split /:/, $ENV{PATH};

my $h = TM::Harness->new;
my $s = TM::Stack->new(master_key => 'load-master');
die "stack did not start:\n" . $s->output unless $s->started && -s $s->dir . '/nginx.pid';
my $key = $h->req(POST => $s->url('AUTH') . '/admin/keys', { Authorization => 'Bearer load-master' }, { name => 'load' })->{json}{key};
my %K = (Authorization => "Bearer $key");
my @flags = map { "load-flag-$_" } 1 .. 20;
for my $i (0 .. $#flags) {
    $h->req(POST => $s->url('FLAGS') . '/flags', \%K, { name => $flags[$i], is_enabled => ($i % 7 ? JSON::PP::true : JSON::PP::false) });
    $h->req(POST => $s->url('TARGETING') . '/rules', \%K,
            { flag_name => $flags[$i], rules => $i % 3 ? { type => 'PERCENTAGE', value => 5 * $i } : { type => 'USER_LIST', values => [ map { "user-$_" } 1 .. 100 ] } })
        if $i % 2;
}
my $gw = $s->url('INGRESS');
$h->wait_until(10, sub { ($h->req(GET => "$gw/evaluate?user_id=u&flag_name=$flags[-1]", \%K)->{json} // {})->{result} }) or die "flags did not reach the edge\n";

my ($fh, $lua) = tempfile(SUFFIX => '.lua', UNLINK => 1);
print $fh <<"LUA";
local flags = { @{[ join ',', map { qq("$_") } @flags ]} }
local n = 0
wrk.headers["Authorization"] = "Bearer $key"
request = function()
  n = n + 1
  return wrk.format("GET", "/evaluate?user_id=user-" .. (n % 5000) .. "&flag_name=" .. flags[(n % #flags) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("LOAD requests=%d seconds=%.2f p50=%.3f p95=%.3f p99=%.3f max=%.3f non2xx=%d connect=%d read=%d write=%d timeout=%d\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(95) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3, e.status, e.connect, e.read, e.write, e.timeout))
end
LUA
close $fh;
print "load: ${secs}s, $conns connections, /evaluate through the gateway ($gw)\n";
my $out = `wrk -t2 -c$conns -d${secs}s --timeout 5s -s $lua '$gw' 2>&1`;
my %r = $out =~ /(\w+)=([\d.]+)/g;
die "wrk failed:\n$out" unless $r{requests};
my $errors = $r{non2xx} + $r{connect} + $r{read} + $r{write} + $r{timeout};
my $err_pct = 100 * $errors / $r{requests};
printf "load: %d requests, %.0f req/s; latency p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.1f ms\n",
    $r{requests}, $r{requests} / $r{seconds}, @r{qw(p50 p95 p99 max)};
printf "load: p95 %.2f ms against the 2000 ms threshold: %.0fx under\n", $r{p95}, 2000 / ($r{p95} || 0.001);
printf "load: errors %d (%.4f %%) against the 1 %% threshold: %s\n", $errors, $err_pct,
    $err_pct < 1 ? 'pass' : 'FAIL';
exit($r{p95} < 2000 && $err_pct < 1 ? 0 : 1);
