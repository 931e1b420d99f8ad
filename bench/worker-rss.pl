#!/usr/bin/env perl
# The analytics worker's memory under steady traffic, alone against a local
# moto server: a feeder puts RATE events/s on the queue (edge-style envelopes
# of PER_MESSAGE events, 10 messages per SendMessageBatch), the worker runs as
# in `make run` (2 pollers, 20 s long polls), and every EVERY seconds one line
# gives its RSS and where it lives (/proc/PID/smaps): the main heap, other
# anonymous mappings (glibc's per-thread malloc arenas, thread stacks) and
# file-backed pages (code, libraries). Figures, not pass/fail.
#
#   perl -I t/lib bench/worker-rss.pl [SECONDS] [RATE] [PER_MESSAGE]   default 300 1000 250
# Environment: EVERY (30); RESTART_MOTO=1 restarts the emulator halfway (and
# recreates the queue and table), as make soak does; TM_BUILD (build; a directory whose
# analytics-worker/togglemaster-analytics execs valgrind on the real one works
# too); any WORKER_<NAME>=value is passed to the worker as <NAME> (e.g.
# WORKER_MALLOC_ARENA_MAX=2).
use strict; use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use TM::Harness;
use TM::AWS;
use Time::HiRes qw(time sleep);

my $secs = shift // 300;
my $rate = shift // 1000;
my $per_msg = shift // 250;
my $every = $ENV{EVERY} // 30;
$| = 1;

my $h = TM::Harness->new;
my $moto = $h->moto;
my $aws = TM::AWS->new($moto);
my $table = 'RssBench';
my $p = $aws->create_pipeline(queue => 'rss-q', table => $table, max_receive => 5, visibility => 30);
my $J = $aws->json;
my %extra = map { /^WORKER_(.+)/ ? ($1 => $ENV{$_}) : () } keys %ENV;
my $port = $h->start('analytics', undef, AWS_ENDPOINT_URL => $moto, AWS_SQS_URL => $p->{queue_url},
    AWS_DYNAMODB_TABLE => $table, AWS_REGION => 'us-east-1', AWS_ACCESS_KEY_ID => 'test',
    AWS_SECRET_ACCESS_KEY => 'test', BIND_ADDR => '127.0.0.1', LOG_LEVEL => 'warn', %extra);
my $pid = $h->pid('analytics');
printf "worker-rss: pid %d, %d s, %d events/s, %d per message%s\n", $pid, $secs, $rate, $per_msg,
    %extra ? ', ' . join(' ', map { "$_=$extra{$_}" } sort keys %extra) : '';

sub metric {
    my $r = $h->req(GET => "http://127.0.0.1:$port/metrics");
    return ($r->{content} // '') =~ /^togglemaster_analytics_\Q$_[0]\E (\S+)$/m ? $1 + 0 : 0;
}
# RSS in KiB: total, [heap], other anonymous, file-backed.
sub rss {
    open my $f, '<', "/proc/$pid/smaps" or return;
    my ($name, %r) = ('');
    while (<$f>) {
        if (/^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\d+)\s*(.*)$/) {
            $name = $2 eq '[heap]' ? 'heap' : ($1 == 0 && $2 !~ m{^/}) ? 'anon' : 'file';
        } elsif (/^Rss:\s+(\d+)/) {
            $r{$name} += $1;
            $r{total} += $1;
        }
    }
    return \%r;
}
sub line {
    my ($t, $r) = @_;
    printf "worker-rss: %5ds  RSS %6.1f MiB  heap %6.1f  anon %6.1f  file %5.1f  stored %d\n", $t,
        map({ ($r->{$_} // 0) / 1024 } qw(total heap anon file)), metric('events_stored_total');
}

my ($n, $t0) = (0, time);
line(0, rss());
my $next = $every;
my $restarted = !$ENV{RESTART_MOTO};
while (time - $t0 < $secs) {
    if (!$restarted && time - $t0 >= $secs / 2) {
        $restarted = 1;
        printf "worker-rss: %5ds  restarting the emulator\n", time - $t0;
        $h->restart('moto');
        $p = $aws->create_pipeline(queue => 'rss-q', table => $table, max_receive => 5, visibility => 30);
    }
    my $tick = time;
    my @batch;
    for (1 .. int($rate / $per_msg) || 1) {
        push @batch, $J->encode({ v => 1, events => [map { { event_id => sprintf('rss-%010d', $n++),
            user_id => "user$_", flag_name => 'new-checkout', result => JSON::PP::true,
            timestamp => '2026-11-22T10:00:00Z', reason => 'SPLIT' } } 1 .. $per_msg] });
        if (@batch == 10) { $aws->send_batch($p->{queue_url}, @batch); @batch = () }
    }
    $aws->send_batch($p->{queue_url}, @batch) if @batch;
    if (time - $t0 >= $next) { line($next, rss()); $next += $every }
    my $left = 1 - (time - $tick);
    sleep $left if $left > 0;
}
$h->wait_until(60, sub { metric('events_stored_total') >= $n });
line(int(time - $t0), rss());
printf "worker-rss: queued %d, stored %d, failed %d, SQS errors %d, DynamoDB errors %d\n", $n,
    map { metric($_) } qw(events_stored_total events_failed_total sqs_errors_total dynamodb_errors_total);
# Stop it here, waiting as long as it takes (valgrind or LSan reporting at
# exit take longer than the harness waits before SIGKILL).
kill 'TERM', $pid;
my $t_stop = time;
sleep 0.1 while kill(0, $pid) && time - $t_stop < 300;
printf "worker-rss: worker stopped in %.1fs\n", time - $t_stop;
$h->teardown;
