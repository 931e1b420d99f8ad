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
# TM_BENCH_BROWSER_ONLY=1 stops after part 1, TM_BENCH_NO_BROWSER=1 skips it;
# TM_BENCH_STAGES=0 leaves out part 1's stage breakdown; TM_BENCH_FLAGS=N
# adds N flags (not client-visible) to part 1's environment.
use strict; use warnings;
use IPC::Open2;
use JSON::PP;
use Time::HiRes qw(time sleep);
use Digest::SHA qw(sha256_hex);
use TM::Harness;
use TM::Nginx;
use TM::Stack;

my ($CHANGES, $STREAMS, $ROUNDS) = ($ARGV[0] // 100, $ARGV[1] // 10_000, $ARGV[2] // 5);
my $ROOT = $TM::Harness::ROOT;
my $h = TM::Harness->new;

sub pct { my ($p, @v) = @_; @v = sort { $a <=> $b } @v; return $v[ int(($#v) * $p + 0.5) ] }

# --- 1. browser latency ---
# With the stages (TM_BENCH_STAGES=1, the default): when the admin API
# answered, when Redis published tm:changes and when the edge wrote the
# stream event (both seen by a loopback watcher process), when the page's
# EventSource had it, when the provider's bulk POST left the page, reached
# nginx (access log, $msec - $request_time) and was answered, and when
# PROVIDER_CONFIGURATION_CHANGED fired: each as ms after the admin PUT was
# sent, p50/p90/p99/max over the changes.
browser_latency() unless $ENV{TM_BENCH_NO_BROWSER};
exit 0 if $ENV{TM_BENCH_BROWSER_ONLY};

# A child that prints "<ms> redis <message>" for each tm:changes message
# and "<ms> sse <id>" for each stream event on $url, to $file, unbuffered.
sub watcher {
    my ($rport, $url, $file) = @_;
    my ($host, $port, $path) = $url =~ m{^https?://([^:/]+):(\d+)(/.*)$} or die "stream url $url\n";
    my $pid = fork // die "fork: $!\n";
    return $pid if $pid;
    require IO::Socket::INET; require IO::Select;
    open my $log, '>', $file or die; $log->autoflush(1);
    my $r = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$rport") or die "redis: $!\n";
    print $r "SUBSCRIBE tm:changes\r\n";
    my $e = IO::Socket::INET->new(PeerAddr => "$host:$port") or die "stream: $!\n";
    print $e "GET $path HTTP/1.1\r\nHost: $host:$port\r\nAccept: text/event-stream\r\n\r\n";
    my $sel = IO::Select->new($r, $e);
    my %buf;
    while (my @ready = $sel->can_read) {
        my $at = time * 1000;
        for my $fh (@ready) {
            sysread($fh, my $chunk, 65536) or exit 0;
            my $b = \$buf{$fh}; $$b .= $chunk;
            if ($fh == $r) {   # RESP push: *3 $7 message $10 tm:changes $n <json>
                while ($$b =~ s/^\*3\r\n\$\d+\r\n(\w+)\r\n\$\d+\r\n[^\r]*\r\n(?:\$\d+\r\n([^\r]*)\r\n|:\d+\r\n)//) {
                    printf $log "%.3f redis %s\n", $at, $2 if $1 eq 'message';
                }
            } else {
                printf $log "%.3f sse %s\n", $at, $1 while $$b =~ s/^.*?\bid: (\d+)\n//s;
            }
        }
    }
    exit 0;
}

# The first of @$ts at or after $t (sorted), or undef.
sub first_after { my ($t, $ts) = @_; for (@$ts) { return $_ if $_ >= $t } return undef }

sub browser_latency {
    my $s = TM::Stack->new(master_key => 'bench-master');
    die "run.sh failed:\n" . $s->output unless $s->started;
    my $G = $s->url('INGRESS');
    my $stages = $ENV{TM_BENCH_STAGES} // 1;
    print STDERR "stack: ", $s->dir, "\n";   # to attach perf or strace
    my $access = $s->dir . '/nginx/bench-access.log';
    if ($stages) {   # the bulk POSTs' arrival: an access log with $msec
        my $f = $s->dir . '/nginx/nginx.conf';
        open my $c, '<', $f or die; local $/; my $t = <$c>; close $c;
        $t =~ s{access_log off;}{log_format tm_bench '\$msec \$request_time \$request_method \$uri \$status';\n    access_log $access tm_bench;} or die "no access_log in $f\n";
        # the workers' "snapshot version N: 1 change applied in M ms"
        $t =~ s{^(error_log \S+) notice;}{$1 info;}m or die "no error_log in $f\n";
        open $c, '>', $f or die; print $c $t; close $c;
        my $old = join ' ', sort map { /(\d+)/ } `pgrep -P ${\ $s->pid('nginx')}`;
        kill 'HUP', $s->pid('nginx') or die "reload: $!\n";
        $h->wait_until(10, sub { -e $access && join(' ', sort map { /(\d+)/ } `pgrep -P ${\ $s->pid('nginx')}`) ne $old })
            or die "nginx did not reload\n";
    }
    my $M = { Authorization => 'Bearer bench-master' };
    my $admin = $h->req(POST => "$G/auth/admin/keys", $M, { name => 'a' })->{json}{key};
    my $A = { Authorization => "Bearer $admin" };
    $h->wait_until(10, sub { $h->req(GET => "$G/flags/flags", $A)->{status} == 200 }) or die "admin key\n";
    $h->req(POST => "$G/flags/environments", $A, { name => 'staging' });
    $h->req(POST => "$G/flags/flags", $A, { name => 'banner', client_visible => JSON::PP::true });
    if (my $n = $ENV{TM_BENCH_FLAGS}) {   # more flags in the environment (not client-visible)
        my ($bin) = sort glob('/usr/lib/postgresql/*/bin');
        my $sql = "INSERT INTO flags (name, description) SELECT 'filler-' || i, 'a flag the page does not read'"
                . " FROM generate_series(1, $n) i";
        system("$bin/psql", '-X', '-q', '-h', '127.0.0.1', '-p', $s->port('PG'), '-U', 'postgres', '-d', 'togglemaster',
               '-c', $sql) == 0 or die "psql failed\n";
        # reconciliation (every 10 s) publishes them
        my $rp = $s->port('REDIS');
        $h->wait_until(30, sub { `redis-cli -p $rp HLEN tm:flags\@staging` > $n }) or die "not reconciled\n";
        sleep 1;
    }
    my $client = $h->req(POST => "$G/auth/admin/keys", $M, { name => 'c', scope => 'client', environment => 'staging' })->{json}{key};
    my $bulk;
    $h->wait_until(10, sub { $bulk = $h->req(POST => "$G/ofrep/v1/evaluate/flags", { Authorization => "Bearer $client" },
                                             { context => { targetingKey => 'x' } }); $bulk->{status} == 200 }) or die "client key\n";
    my ($wpid, $wfile);
    if ($stages) {
        $wfile = $s->dir . '/bench-watch.log';
        $wpid = watcher($s->port('REDIS'), $bulk->{json}{eventStreams}[0]{url}, $wfile);
    }
    my $pid = open2(my $out, my $in, 'python3', "$ROOT/t/sse-browser/browser.py", $G, $client, 'banner');
    my $cmd = sub { print $in "$_[0]\n"; decode_json(scalar <$out>) };
    my $st = $cmd->('load');
    die "page not ready: " . encode_json($st) . "\n" unless $st->{ready};
    my (@t0, @t1, @lat);
    for my $i (1 .. $CHANGES) {
        push @t0, time * 1000;
        my $r = $h->req(PUT => "$G/flags/flags/banner?environment=staging", $A,
                        { is_enabled => $i % 2 ? JSON::PP::true : JSON::PP::false });
        push @t1, time * 1000;
        die "PUT: $r->{status}\n" unless $r->{status} == 200;
        $st = $cmd->("wait $i 5");
        my $c = $st->{changes}[$i - 1] or die "change $i never reached the page\n";
        die "change $i: the page has the old value\n" unless !$c->{value} == !($i % 2);
        push @lat, $c->{at} - $t0[-1];
        sleep 0.15;   # past the provider's debounce: one event per change
    }
    my $trace = $stages ? $cmd->('trace') : undef;
    print $in "quit\n"; close $in; waitpid $pid, 0;
    printf "browser: admin write -> PROVIDER_CONFIGURATION_CHANGED over %d changes: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n",
        scalar @lat, pct(0.5, @lat), pct(0.9, @lat), pct(0.99, @lat), pct(1, @lat);
    if ($stages) {
        kill 'TERM', $wpid; waitpid $wpid, 0;
        stages(\@t0, \@t1, \@lat, $trace, $wfile, $access);
        my @applied = map { /change applied in (\d+) ms/ ? $1 : () } do { open my $e, '<', $s->dir . '/nginx/error.log'; <$e> };
        printf "  edge workers: a change applied (patch + swap + stream events) in p50 %d ms, p99 %d ms, max %d ms (%d)\n",
            pct(0.5, @applied), pct(0.99, @applied), pct(1, @applied), scalar @applied if @applied;
    }
    $s->stop;
}

# The stage table: per change, each stage's first timestamp after the PUT
# was sent (the next change is sent 150 ms after this one arrived, so the
# windows never overlap).
sub stages {
    my ($t0, $t1, $lat, $trace, $wfile, $access) = @_;
    my (@redis, @sse);
    open my $w, '<', $wfile or die "$wfile: $!\n";
    # the page's environment's message (a write may publish to others too)
    while (<$w>) { push @redis, $1 if /^(\S+) redis .*"environment":"staging"/; push @sse, $1 if /^(\S+) sse / }
    my @post;
    open my $a, '<', $access or die "$access: $!\n";
    my $preflights = 0;
    while (<$a>) {
        push @post, ($1 - $2) * 1000 if m{^(\S+) (\S+) POST /ofrep/v1/evaluate/flags 200};
        $preflights++ if m{ OPTIONS /ofrep/v1/evaluate/flags };
    }
    my @page_sse = map { $_->{at} } @{ $trace->{sse} };
    my @fetch = grep { $_->{url} =~ m{/ofrep/v1/evaluate/flags} } @{ $trace->{fetch} };
    my @fstart = map { $_->{start} } @fetch;
    my @fend = map { $_->{end} } @fetch;
    my @names = ('admin API answered', 'Redis PUBLISH (staging)', 'edge SSE event (loopback)',
                 'SSE event in the page', 'bulk POST sent by the page', 'bulk POST at nginx',
                 'bulk POST answered (page)', 'CONFIGURATION_CHANGED');
    my @cols = map { [] } @names;
    for my $i (0 .. $#$t0) {
        my $z = $t0->[$i];
        my @at = ($t1->[$i], first_after($z, \@redis), first_after($z, \@sse), first_after($z, \@page_sse),
                  first_after($z, \@fstart), first_after($z, \@post), first_after($z, \@fend), $z + $lat->[$i]);
        for my $k (0 .. $#at) { push @{ $cols[$k] }, defined $at[$k] ? $at[$k] - $z : () }
    }
    printf "  %-28s %7s %7s %7s %7s  (ms after the PUT was sent; n)\n", 'stage', 'p50', 'p90', 'p99', 'max';
    for my $k (0 .. $#names) {
        my @v = @{ $cols[$k] } or do { printf "  %-28s (not seen)\n", $names[$k]; next };
        printf "  %-28s %7.1f %7.1f %7.1f %7.1f  %d\n", $names[$k], pct(0.5, @v), pct(0.9, @v), pct(0.99, @v), pct(1, @v), scalar @v;
    }
    # the provider puts flagConfigEtag/-LastModified in the URL: a new URL
    # each time, which a cached preflight (Access-Control-Max-Age) does not cover
    printf "  CORS preflights (OPTIONS) before the bulk POSTs: %d for %d POSTs\n", $preflights, scalar @post;
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
