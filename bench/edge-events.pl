#!/usr/bin/env perl
# /evaluate throughput with evaluation events on vs off (same nginx build,
# one worker, rounds alternating), and what events cost SQS: requests and
# messages per 1,000 events, drops. SQS is a moto server on loopback.
#   perl -I t/lib bench/edge-events.pl [SECONDS_PER_ROUND] [ROUNDS]
use strict; use warnings;
use TM::Harness;
use TM::Nginx;
use TM::AWS;

my ($SECS, $ROUNDS) = (@ARGV, 3, 3)[0, 1];
die "wrk is needed (apt-get install wrk)\n" unless grep { -x "$_/wrk" } split /:/, $ENV{PATH};

my $h = TM::Harness->new;
$h->redis;
my $moto = $h->moto;
my $q = TM::AWS->new($moto)->create_queue('bench-events');
TM::Nginx::set_flag($h, 'flag-1', 1, quiet => 1);
TM::Nginx::set_rule($h, 'flag-1', { type => 'PERCENTAGE', value => 50 }, 1, quiet => 1);
$h->redis_cmd('SET', 'tm:version', 1);

my $ng = TM::Nginx->new($h, workers => 1, timeout => '5s');

sub run {
    my ($events) = @_;
    $ng->stop;
    $ng->{http} = $events ? "togglemaster_events on;\n    togglemaster_sqs_queue_url $q;\n"
                            . "    togglemaster_aws_endpoint $moto;\n" : '';
    $ng->write_conf;
    $ng->start;
    $h->wait_until(5, sub { eval { $ng->evaluate('warm', 'flag-1'); 1 } });
    my $out = `wrk -t1 -c32 -d${SECS}s --latency '${\ $ng->url('/evaluate?user_id=user-42&flag_name=flag-1')}' 2>&1`;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/ or die "wrk failed:\n$out";
    my ($p99, $unit) = $out =~ /99%\s+([\d.]+)(us|ms|s)/;
    $p99 *= { us => 0.001, ms => 1, s => 1000 }->{$unit};
    my %m;
    if ($events) {   # let the last batch leave, then read the counters
        $h->wait_until(10, sub {
            my $c = $h->req(GET => $ng->url('/metrics'))->{content};
            %m = $c =~ /^(togglemaster_(?:events|sqs)_\S+) (\d+)$/mg;
            ($m{'togglemaster_events_buffered{worker="0"}'} // 1) == 0;
        });
    }
    return ($rps, $p99, \%m);
}

my (@off, @on, @m);
for (1 .. $ROUNDS) {
    my ($r, $p) = run(0);
    push @off, [$r, $p];
    my ($r2, $p2, $m) = run(1);
    push @on, [$r2, $p2];
    push @m, $m;
    printf "round %d: events off %.0f req/s (p99 %.2f ms), on %.0f req/s (p99 %.2f ms)\n",
        $_, $r, $p, $r2, $p2;
}
sub med { my @s = sort { $a <=> $b } @_; $s[$#s / 2] }
my ($roff, $ron) = (med(map { $_->[0] } @off), med(map { $_->[0] } @on));
printf "median: off %.0f req/s, on %.0f req/s, ratio %.3f (goal >= 0.95); p99 off %.2f ms, on %.2f ms\n",
    $roff, $ron, $ron / $roff, med(map { $_->[1] } @off), med(map { $_->[1] } @on);
my ($ev, $req, $msg, $drop, $sent) = (0, 0, 0, 0, 0);
for my $m (@m) {
    $ev += $m->{togglemaster_events_produced_total} // 0;
    $sent += $m->{togglemaster_events_sent_total} // 0;
    $req += $m->{togglemaster_sqs_requests_total} // 0;
    $msg += $m->{togglemaster_sqs_messages_sent_total} // 0;
    $drop += $m->{$_} for grep { /dropped/ } keys %$m;
}
printf "events: %d produced, %d sent, %d dropped; %d SendMessageBatch requests, %d messages: "
     . "%.2f requests and %.2f messages per 1000 events (goal <= 2)\n",
    $ev, $sent, $drop, $req, $msg, 1000 * $req / ($ev || 1), 1000 * $msg / ($ev || 1);
