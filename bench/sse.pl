#!/usr/bin/env perl
# OFREP event streams, measured (prints, not a test; issue 14's goals):
#  1. a browser (the real @openfeature/ofrep-web-provider in headless
#     Chromium, t/sse-browser/browser.py) against a `make run` stack:
#     admin-API write -> PROVIDER_CONFIGURATION_CHANGED in the page, over
#     CHANGES changes: p50, p99, max (goal p99 < 100 ms; the provider itself
#     debounces events by 50 ms before it refetches);
#  2. one nginx worker holding STREAMS idle streams (bench/sse_streams.c):
#     worker RSS per stream (goal <= 8 KiB), time until every stream has the
#     event of one change (goal < 250 ms; ROUNDS changes, each from the
#     Redis PUBLISH to the read of the last stream's event, with nginx's
#     own swap -> last write from /metrics beside it), and /evaluate
#     throughput (wrk) with the streams open against the same worker
#     without them.
#   perl -I t/lib bench/sse.pl [CHANGES] [STREAMS] [ROUNDS]
use strict; use warnings;
use IPC::Open2;
use JSON::PP;
use Time::HiRes qw(time sleep);
use Digest::SHA qw(sha256_hex);
use TM::Harness;
use TM::Nginx;
use TM::Stack;

my ($CHANGES, $STREAMS, $ROUNDS) = (@ARGV, 100, 10_000, 5)[0, 1, 2];
my $ROOT = $TM::Harness::ROOT;
my $h = TM::Harness->new;

sub pct { my ($p, @v) = @_; @v = sort { $a <=> $b } @v; return $v[ int(($#v) * $p + 0.5) ] }

# --- 1. browser latency ---
browser_latency() unless $ENV{TM_BENCH_NO_BROWSER};
sub browser_latency {
    my $s = TM::Stack->new(master_key => 'bench-master');
    die "run.sh failed:\n" . $s->output unless $s->started;
    my $G = $s->url('INGRESS');
    my $M = { Authorization => 'Bearer bench-master' };
    my $admin = $h->req(POST => "$G/auth/admin/keys", $M, { name => 'a' })->{json}{key};
    my $A = { Authorization => "Bearer $admin" };
    $h->wait_until(10, sub { $h->req(GET => "$G/flags/flags", $A)->{status} == 200 }) or die "admin key\n";
    $h->req(POST => "$G/flags/environments", $A, { name => 'staging' });
    $h->req(POST => "$G/flags/flags", $A, { name => 'banner', client_visible => JSON::PP::true });
    my $client = $h->req(POST => "$G/auth/admin/keys", $M, { name => 'c', scope => 'client', environment => 'staging' })->{json}{key};
    $h->wait_until(10, sub { $h->req(POST => "$G/ofrep/v1/evaluate/flags", { Authorization => "Bearer $client" },
                                     { context => { targetingKey => 'x' } })->{status} == 200 }) or die "client key\n";
    my $pid = open2(my $out, my $in, 'python3', "$ROOT/t/sse-browser/browser.py", $G, $client, 'banner');
    my $cmd = sub { print $in "$_[0]\n"; decode_json(scalar <$out>) };
    my $st = $cmd->('load');
    die "page not ready: " . encode_json($st) . "\n" unless $st->{ready};
    my @lat;
    for my $i (1 .. $CHANGES) {
        my $t0 = time * 1000;
        my $r = $h->req(PUT => "$G/flags/flags/banner?environment=staging", $A,
                        { is_enabled => $i % 2 ? JSON::PP::true : JSON::PP::false });
        die "PUT: $r->{status}\n" unless $r->{status} == 200;
        $st = $cmd->("wait $i 5");
        my $c = $st->{changes}[$i - 1] or die "change $i never reached the page\n";
        push @lat, $c->{at} - $t0;
        sleep 0.15;   # past the provider's debounce: one event per change
    }
    print $in "quit\n"; close $in; waitpid $pid, 0;
    printf "browser: admin write -> PROVIDER_CONFIGURATION_CHANGED over %d changes: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
        scalar @lat, pct(0.5, @lat), pct(0.99, @lat), pct(1, @lat);
    $s->stop;
}

# --- 2. idle streams on one worker ---
# two identical nginx, each with its Redis: one gets the streams, the other
# is the baseline of /evaluate throughput, measured in alternate rounds
my $secret = 'bench-secret-' . ('x' x 32);
sub edge {
    my $hh = shift;
    $hh->redis;
    $hh->redis_cmd('HSET', 'tm:envs', $_->[0], TM::Nginx::env_json(@$_)) for ['default', 1], ['staging', 2];
    $hh->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', 1, 1));
    TM::Nginx::set_flag($hh, 'flag-1', 1, quiet => 1);
    $hh->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2 flag@staging rule@staging));
    $hh->redis_cmd('SET', 'tm:version', 3);
    my $n = TM::Nginx->new($hh, workers => 1, timeout => '5s', http => "togglemaster_sse_secret $secret;",
        server => "location = /sse { togglemaster_sse on; togglemaster_sse_heartbeat 60s; togglemaster_sse_max_connections 100000; }");
    # room for the streams: the harness's conf says 1024 connections
    my $f = $n->dir . '/nginx.conf';
    open my $c, '<', $f or die; local $/; my $t = <$c>; close $c;
    $t =~ s/worker_connections 1024;/worker_connections @{[ $STREAMS + 2000 ]};/;
    $t =~ s/^(events)/worker_rlimit_nofile @{[ $STREAMS + 4000 ]};\n$1/m;
    open $c, '>', $f or die; print $c $t; close $c;
    $n->start;
    $hh->wait_until(5, sub { $n->evaluate('user-42', 'flag-1') }) or die "nginx did not sync\n";
    return $n;
}
my $ng = edge($h);
my $h0 = TM::Harness->new;
my $ng0 = edge($h0);
my $master = TM::Harness::read_pid($ng->dir, 'nginx') // do { open my $p, '<', $ng->dir . '/nginx.pid'; <$p> };
chomp $master;
my ($worker) = grep { /\d/ } split /\s+/, `pgrep -P $master`;
sub rss_kib { open my $f, '<', "/proc/$worker/status" or die; while (<$f>) { return $1 if /^VmRSS:\s+(\d+)/ } }
sub wrk {
    my $n = shift;
    my $out = `wrk -t1 -c32 -d2s '${\ $n->url('/evaluate?user_id=u&flag_name=flag-1')}' 2>&1`;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/ or die "wrk failed:\n$out";
    return $rps;
}
# medians of alternate rounds: the nginx with streams, the one without
sub wrk_ab {
    my (@a, @b);
    for (1 .. 5) { push @a, wrk($ng); push @b, wrk($ng0) }
    return (pct(0.5, @a), pct(0.5, @b));
}
my $exp = int(time) + 3600;
my $token = "$exp.staging." . Digest::SHA::hmac_sha256_hex("tm-sse-v1\nstaging\n$exp", $secret);

my ($rpsa, $rpsb) = wrk_ab();
printf "/evaluate before the streams: %.0f req/s, the other nginx %.0f: ratio %.2f (the same edges: ~1)\n",
    $rpsa, $rpsb, $rpsa / $rpsb;
my $rss0 = rss_kib();
my $holder = ($ENV{TM_BUILD} // "$ROOT/build") . '/bench/sse_streams';
-x $holder or die "$holder: not built (make)\n";
my $pid = open2(my $out, my $in, $holder, $ng->port, "/sse?token=$token", $STREAMS,
                '/evaluate?user_id=u&flag_name=flag-1');
my $o = decode_json(scalar <$out>);
printf "streams: %d of %d open in %.1f s\n", $o->{open}, $STREAMS, $o->{secs};
sleep 1;
my $rss1 = rss_kib();
printf "worker RSS: %d KiB without streams, %d KiB with them: %.2f KiB per stream\n",
    $rss0, $rss1, ($rss1 - $rss0) / ($o->{open} || 1);
my ($rps1, $rps0) = wrk_ab();
printf "/evaluate with %d streams open: %.0f req/s, the same nginx without streams %.0f: ratio %.2f\n",
    $o->{open}, $rps1, $rps0, $rps1 / $rps0;
# One change as the daemons write it, t0 the PUBLISH that tells nginx;
# before it, the floor: the same number of event-sized send()s by a bare C
# loop to as many other loopback connections, read the same way (the
# loopback charges the sender with the receiving side's TCP work too).
my (@all, @floor, @probe);
for my $round (1 .. $ROUNDS) {
    print $in "floor\n";
    my $f = decode_json(scalar <$out>);
    my $on = $round % 2 ? 0 : 1;
    $h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', $on, 1));
    my $v = $h->redis_cmd('INCR', 'tm:version');
    my $msg = encode_json({ version => $v + 0, kind => 'flag', environment => 'staging', op => 'upsert', name => 'banner' });
    print $in "arm\n";
    decode_json(scalar <$out>);
    my $t0 = time;
    $h->redis_cmd('PUBLISH', 'tm:changes', $msg);
    my $e = decode_json(scalar <$out>);
    my $m = $ng->metrics;
    my ($all, $fall) = (($e->{last} - $t0) * 1000, ($f->{last} - $f->{t0}) * 1000);
    my $srv = TM::Nginx::m_sum($m, 'togglemaster_sse_fanout_seconds') * 1000;
    push @all, $all; push @floor, $fall; push @probe, $e->{probe_max_ms};
    printf "one change -> all %d streams have the event: %.1f ms (%d got it; first after %.1f ms); nginx swap -> last write "
         . "%.1f ms (%d events, %.1f us each); /evaluate meanwhile: %d, the slowest %.1f ms | "
         . "floor: %d bare sends %.1f ms, all read %.1f ms | ratio %.2f\n",
        $o->{open}, $all, $e->{got}, ($e->{first} - $t0) * 1000, $srv,
        TM::Nginx::m_sum($m, 'togglemaster_sse_fanout_events'), $srv * 1000 / ($o->{open} || 1),
        $e->{probes}, $e->{probe_max_ms},
        $f->{got}, $f->{send_ms}, $fall, $all / ($fall || 1);
    sleep 0.5;
}
printf "one change -> all streams: median %.1f ms, max %.1f ms over %d changes (floor median %.1f ms; "
     . "median ratio %.2f); the slowest /evaluate during a change: median %.1f ms, max %.1f ms; load average %s",
    pct(0.5, @all), pct(1, @all), scalar @all, pct(0.5, @floor),
    pct(0.5, map { $all[$_] / ($floor[$_] || 1) } 0 .. $#all), pct(0.5, @probe), pct(1, @probe), `cat /proc/loadavg`;
print $in "quit\n"; close $in; waitpid $pid, 0;
