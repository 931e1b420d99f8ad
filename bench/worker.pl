#!/usr/bin/env perl
# Benchmark of the analytics worker against a local moto server: puts N
# events on the queue (edge-style envelopes, 10 messages per SendMessageBatch),
# starts the worker, waits until every event is stored, and reports the
# worker's CPU time per 1,000 stored events and its AWS requests per 1,000,
# with the usage aggregates on (the worker's default; events spread over
# FLAGS flags, default 10: one aggregate transaction per message).
# moto itself is the slow part of the wall time; the CPU figure is the
# worker's own (utime + stime from /proc).
#
#   perl -I t/lib bench/worker.pl [EVENTS] [EVENTS_PER_MESSAGE]    default 20000 100
#   FLAGS=n (default 10), TM_POLLERS=n (default 4)
# Uses build/ (or $TM_BUILD). Prints one summary line starting "bench-worker:".
use strict; use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use TM::Harness;
use TM::AWS;
use POSIX qw(sysconf _SC_CLK_TCK);
use Time::HiRes qw(time);

my $events = shift // 20000;
my $per_msg = shift // 100;
my $nflags = $ENV{FLAGS} // 10;
die "usage: $0 [EVENTS] [EVENTS_PER_MESSAGE]\n" unless $events =~ /^\d+$/ && $per_msg =~ /^\d+$/ && $per_msg >= 1;

my $h = TM::Harness->new;
my $moto = $h->moto;
my $aws = TM::AWS->new($moto);
my $table = 'Bench';
my $p = $aws->create_pipeline(queue => 'bench-q', table => $table, max_receive => 5, visibility => 30);
my $J = $aws->json;

my ($sent, @batch) = (0);
my $t_send = time;
while ($sent < $events) {
    my $k = $events - $sent < $per_msg ? $events - $sent : $per_msg;
    push @batch, $J->encode({ v => 1, events => [map { { event_id => sprintf('bench-%08d', $sent + $_),
        user_id => "user$_", flag_name => 'flag-' . ($_ % $nflags), result => JSON::PP::true,
        timestamp => '2026-11-22T10:00:00Z', reason => 'SPLIT' } } 0 .. $k - 1] });
    $sent += $k;
    if (@batch == 10 || $sent >= $events) { $aws->send_batch($p->{queue_url}, @batch); @batch = () }
}
printf "queued %d events in %.1fs\n", $events, time - $t_send;

my $port = $h->start('analytics', undef, AWS_ENDPOINT_URL => $moto, AWS_SQS_URL => $p->{queue_url},
    AWS_DYNAMODB_TABLE => $table, AWS_REGION => 'us-east-1', AWS_ACCESS_KEY_ID => 'test',
    AWS_SECRET_ACCESS_KEY => 'test', BIND_ADDR => '127.0.0.1', TM_SQS_WAIT_SECONDS => 1,
    TM_POLLERS => $ENV{TM_POLLERS} // 4, LOG_LEVEL => 'warn');
my $t0 = time;
sub metric {
    my $r = $h->req(GET => "http://127.0.0.1:$port/metrics");
    return $r->{content} =~ /^togglemaster_analytics_\Q$_[0]\E (\S+)$/m ? $1 + 0 : 0;
}
$h->wait_until(1800, sub { metric('events_stored_total') >= $events && $aws->queue_depth($p->{queue_url}) == 0 })
    or die "not all events stored: " . metric('events_stored_total') . " of $events\n";
my $wall = time - $t0;
open my $st, '<', "/proc/" . $h->pid('analytics') . "/stat" or die "stat: $!";
my @f = split ' ', (<$st> =~ s/^.*\) //r);
my $cpu = ($f[11] + $f[12]) / sysconf(_SC_CLK_TCK);   # utime, stime
my ($sqs, $ddb) = (metric('sqs_requests_total'), metric('dynamodb_requests_total'));
my $txns = metric('usage_transactions_total') + metric('usage_transactions_repeated_total');
my $items = scalar @{ $aws->scan($table) };
printf "bench-worker: %d events (%d per message) stored in %.1fs (%.0f/s, moto-bound); "
     . "worker CPU %.1f ms per 1000 events; per 1000 events: %.1f SQS + %.1f DynamoDB requests "
     . "(of which %.1f aggregate transactions, %d flags); items %d\n",
    $events, $per_msg, $wall, $events / $wall, $cpu * 1000 * 1000 / $events,
    $sqs * 1000 / $events, $ddb * 1000 / $events, $txns * 1000 / $events, $nflags, $items;
$h->teardown;
