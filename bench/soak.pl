#!/usr/bin/env perl
# `make soak`: evaluation and admin traffic against the whole stack for
# SOAK_SECONDS (default 1800), with Redis and the AWS emulator restarted
# midway. Reports RSS of the nginx workers, the daemons and the worker at
# start and end (goal: no growth beyond noise), error counts (goal: zero) and
# events produced at the edge vs stored in DynamoDB. Every SOAK_RSS_EVERY
# seconds (60) one line with each process's RSS in MiB, so growth that keeps
# going can be told from warm-up that levels off.
#   SOAK_SECONDS=1800 perl -I t/lib bench/soak.pl
use strict; use warnings;
use File::Temp qw(tempfile);
use Time::HiRes qw(time sleep);
use TM::Harness;
use TM::Stack;
use TM::AWS;

my $secs = $ENV{SOAK_SECONDS} // 1800;
# Evaluations per second (steady, like production traffic; not a load test):
# what the local AWS emulator can store, so produced and stored can be compared.
my $rate = $ENV{SOAK_RATE} // 1000;
my $rss_every = $ENV{SOAK_RSS_EVERY} // 60;
$| = 1;   # the timeline shows up as it happens when logged to a file
die "wrk is needed (apt-get install wrk)\n" unless grep { -x "$_/wrk" } split /:/, $ENV{PATH};
my $h = TM::Harness->new;
my $s = TM::Stack->new(master_key => 'soak-master');
die "stack did not start:\n" . $s->output unless $s->started && -s $s->dir . '/nginx.pid';
my ($A, $F, $T, $gw) = map { $s->url($_) } qw(AUTH FLAGS TARGETING INGRESS);
my $key = $h->req(POST => "$A/admin/keys", { Authorization => 'Bearer soak-master' }, { name => 'soak' })->{json}{key};
my %K = (Authorization => "Bearer $key");
$h->req(POST => "$F/flags", \%K, { name => "soak-$_", is_enabled => JSON::PP::true }) for 1 .. 10;
$h->wait_until(10, sub { ($h->req(GET => "$gw/evaluate?user_id=u&flag_name=soak-10", \%K)->{json} // {})->{result} });

sub rss_kb { my $pid = shift; open my $f, '<', "/proc/$pid/status" or return 0; local $/; (<$f> =~ /VmRSS:\s+(\d+)/)[0] // 0 }
sub processes {
    my %p = map { ($_ => $s->pid($_)) } grep { $s->pid($_) } qw(auth flags targeting analytics);
    my $master = $s->pid('nginx');
    my @w = `pgrep -P $master`; chomp @w;
    $p{"nginx-worker-$_"} = $w[$_] for 0 .. $#w;
    return \%p;
}
# Distinct items in the events table (moto's DescribeTable counts them live);
# undef, with the reason on stderr, when the table cannot be read (3 tries).
my $aws = TM::AWS->new($s->url('AWS'), timeout => 120);   # a busy emulator is slow
my $table = $ENV{AWS_DYNAMODB_TABLE} // 'ToggleMasterAnalytics';
sub item_count {
    for my $try (1 .. 3) {
        my $r = eval { $aws->ddb(DescribeTable => { TableName => $table }) };
        return $r->{Table}{ItemCount} if $r && defined $r->{Table}{ItemCount};
        warn "soak: DescribeTable $table (try $try): " . ($@ || "no ItemCount\n");
        sleep 1;
    }
    return undef;
}
sub rss_all { my $p = processes(); return { map { ($_ => rss_kb($p->{$_})) } keys %$p } }
sub metric {
    my $m = $h->req(GET => $s->url('EVAL') . '/metrics')->{content} // '';
    my $re = shift;
    my $sum = 0;
    $sum += $1 while $m =~ /^$re(?:\{[^}]*\})?\s+(\d+)/mg;
    return $sum;
}

# warm up, then the starting RSS
sleep 2;
my $rss0 = rss_all();
# The timeline: a header naming the columns, then one row per interval.
my @cols = sort keys %$rss0;
my %short = (analytics => 'worker', map { ("nginx-worker-$_" => "nginx-w$_") } 0 .. 63);
my @timeline;
sub rss_line {
    my ($t, $r) = @_;
    push @timeline, [$t, $r];
    printf "soak: rss %6ds %s\n", $t, join ' ', map { sprintf '%9.1f', ($r->{$_} // 0) / 1024 } @cols;
}
printf "soak: rss %7s %s   (MiB)\n", 'elapsed', join ' ', map { sprintf '%9s', $short{$_} // $_ } @cols;
rss_line(0, $rss0);

my ($fh, $lua) = tempfile(SUFFIX => '.lua', UNLINK => 1);
print $fh <<"LUA";
local n = 0
wrk.headers["Authorization"] = "Bearer $key"
-- two connections, each waiting between requests: about $rate requests/s
delay = function() return @{[ int(2000 / $rate) || 1 ]} end
request = function() n = n + 1
  return wrk.format("GET", "/evaluate?user_id=soak-user-" .. (n % 10000) .. "&flag_name=soak-" .. (n % 10 + 1)) end
done = function(s, l, r)
  io.write(string.format("SOAK requests=%d non2xx=%d errors=%d p99=%.3f\\n", s.requests, s.errors.status,
    s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout, l:percentile(99) / 1e3))
end
LUA
close $fh;
# modest, steady evaluation load in the background (2 connections)
open my $wrk, '-|', "wrk -t1 -c2 -d${secs}s --timeout 5s -s $lua '$gw' 2>&1" or die "wrk: $!";

my %admin = (ok => 0, errors => 0);
my $t0 = time;
my $restarted = 0;
my $items_before;   # distinct items stored before the emulator (and its table) restarted
my $i = 0;
my $next_rss = $rss_every;
while (time - $t0 < $secs) {
    $i++;
    my $name = 'soak-admin-' . ($i % 50);
    my @calls = (
        [ POST => "$F/flags", { name => $name, is_enabled => JSON::PP::true }, 201, 409 ],
        [ PUT => "$F/flags/$name", { is_enabled => ($i % 2 ? JSON::PP::true : JSON::PP::false) }, 200 ],
        [ POST => "$T/rules", { flag_name => $name, rules => { type => 'PERCENTAGE', value => $i % 100 } }, 201, 409 ],
        [ PUT => "$T/rules/$name", { rules => { type => 'PERCENTAGE', value => ($i * 7) % 100 } }, 200 ],
        [ DELETE => ($i % 10 ? "$T/rules/none-$i" : "$F/flags/$name"), undef, 404, 204 ],
    );
    for my $c (@calls) {
        my ($m, $url, $body, @want) = @$c;
        my $st = $h->req($m, $url, \%K, $body)->{status};
        (grep { $_ == $st } @want) ? $admin{ok}++ : do { $admin{errors}++; warn "soak: $m $url -> $st\n" if $admin{errors} < 10 };
    }
    if ($i % 20 == 0) {   # keys: create one, revoke it
        my $r = $h->req(POST => "$A/admin/keys", { Authorization => 'Bearer soak-master' }, { name => "k$i" });
        $r->{status} == 201 && $h->req(DELETE => "$A/admin/keys/$r->{json}{id}", { Authorization => 'Bearer soak-master' })->{status} == 204
            ? $admin{ok}++ : $admin{errors}++;
    }
    if (!$restarted && time - $t0 > $secs / 2) {
        $restarted = 1;
        print "soak: midway — restarting Redis and the AWS emulator\n";
        $s->restart('redis') or warn "soak: redis restart failed\n";
        $items_before = item_count();   # just before the table goes
        $s->restart('moto') or warn "soak: moto restart failed\n";
        local %ENV = (%ENV, AWS_ENDPOINT_URL => $s->url('AWS'), AWS_ACCESS_KEY_ID => 'test', AWS_SECRET_ACCESS_KEY => 'test');
        system("$TM::Harness::ROOT/scripts/aws-init.sh >/dev/null 2>&1");   # moto forgets everything
    }
    if (time - $t0 >= $next_rss) { rss_line($next_rss, rss_all()); $next_rss += $rss_every }
    sleep 0.05;
}
my $wout = join '', <$wrk>;
close $wrk;
my %w = $wout =~ /(\w+)=([\d.]+)/g;
sleep 3;   # let the last events drain
my $rss1 = rss_all();
rss_line(int(time - $t0), $rss1);

printf "soak: %ds, Redis and the AWS emulator restarted midway\n", $secs;
# Growth in the first and in the second half of the run: warm-up shows up in
# the first half only, a leak in both.
if (@timeline >= 3) {
    my $mid = $timeline[int($#timeline / 2)];
    for my $c (@cols) {
        my ($max) = sort { $b <=> $a } map { $_->[1]{$c} // 0 } @timeline;
        printf "soak: RSS growth %-18s first half %+7.1f MiB, second half %+7.1f MiB (peak %.1f MiB)\n", $c,
            (($mid->[1]{$c} // 0) - ($rss0->{$c} // 0)) / 1024, (($rss1->{$c} // 0) - ($mid->[1]{$c} // 0)) / 1024,
            $max / 1024;
    }
}
printf "soak: RSS %-18s %8s -> %8s KiB (%+.1f%%)\n", $_, $rss0->{$_} // 0, $rss1->{$_} // 0,
    $rss0->{$_} ? 100 * (($rss1->{$_} // 0) - $rss0->{$_}) / $rss0->{$_} : 0 for sort keys %$rss1;
printf "soak: evaluation requests %d, non-2xx %d, socket errors %d, p99 %.2f ms\n", @w{qw(requests non2xx errors p99)};
printf "soak: admin calls ok %d, unexpected %d\n", $admin{ok}, $admin{errors};
my $produced = metric('togglemaster_events_produced_total');
if ($produced) {
    sleep 5;   # the worker's last batches
    my $m = $h->req(GET => $s->url('ANALYTICS') . '/metrics')->{content} // '';
    my %wm = map { ($_ => ($m =~ /^togglemaster_analytics_${_}_total\s+(\d+)/m)[0] // 0) }
        qw(events_received events_stored events_failed delete_failures sqs_errors dynamodb_errors);
    my $items_after = item_count();
    printf "soak: events produced at the edge %d, sent %d, dropped (counted, by reason) %d; "
         . "the worker received %d and wrote %d (redeliveries included), failed %d, delete failures %d, "
         . "SQS errors %d, DynamoDB errors %d\n",
        $produced, metric('togglemaster_events_sent_total'), metric('togglemaster_events_dropped_total'),
        @wm{qw(events_received events_stored events_failed delete_failures sqs_errors dynamodb_errors)};
    if (!defined $items_before || !defined $items_after) {
        print "soak: distinct events stored: unknown (the table's item count could not be read)\n";
    } else {
        # The restarted emulator starts with an empty queue and table.
        printf "soak: distinct events stored: %d before the emulator restart + %d after = %d; "
             . "%d (%.3f%%) of those produced never stored (in the emulator's queue or in flight when it restarted)\n",
            $items_before, $items_after, $items_before + $items_after, $produced - $items_before - $items_after,
            100 * ($produced - $items_before - $items_after) / $produced;
    }
} else {
    print "soak: the edge reports no event counters (event producer not built in)\n";
}
exit($admin{errors} || $w{non2xx} || $w{errors} ? 1 : 0);
