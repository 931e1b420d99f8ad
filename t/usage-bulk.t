#!/usr/bin/env perl
# OFREP bulk evaluations count in the usage aggregates through summaries
# (togglemaster_events_bulk summary, the default): 20 bulk calls against
# 300 flags store no raw event, leave the edge as a few summary messages
# (one entry per flag per flush, whatever the number of calls) and add
# exactly 20 evaluations to every flag; `raw` keeps the old per-flag events
# (which the worker counts instead).
# Prints the cost of one bulk call both ways (README's figures).
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key);
use TM::Nginx;
use TM::AWS;

my $h = TM::Harness->new;
$h->redis;
my $moto = $h->moto;
my $aws = TM::AWS->new($moto);
my ($table, $usage) = ('ToggleMasterAnalytics', 'ToggleMasterUsage');
my $q = $aws->create_pipeline(queue => 'bulk-q', table => $table, max_receive => 5, visibility => 5)->{queue_url};

my $auth = $h->daemon('auth', MASTER_KEY => 'bulk-master');
my $key = new_key($h, $auth, 'bulk-master', 'reader')->{key};
my $wport = $h->start('analytics', undef, AWS_ENDPOINT_URL => $moto, AWS_SQS_URL => $q,
    AWS_DYNAMODB_TABLE => $table, AWS_REGION => 'us-east-1', AWS_ACCESS_KEY_ID => 'test',
    AWS_SECRET_ACCESS_KEY => 'test', BIND_ADDR => '127.0.0.1', TM_SQS_WAIT_SECONDS => 1,
    TM_POLLERS => 1, REDIS_URL => $h->redis, AUTH_SERVICE_URL => $auth);
my $wbase = "http://127.0.0.1:$wport";

my @flags = map { sprintf 'bulk-%03d', $_ } 1 .. 300;
TM::Nginx::set_flag($h, $_, $_ =~ /[02468]$/ ? 1 : 0, quiet => 1) for @flags;
TM::Nginx::mark_ready($h);

sub wmetric {
    my $r = $h->req(GET => "$wbase/metrics");
    return $r->{content} =~ /^togglemaster_analytics_\Q$_[0]\E (\S+)$/m ? $1 + 0 : 0;
}
sub usage_of { $h->req(GET => "$wbase/flags/$_[0]/usage", { Authorization => "Bearer $key" })->{json} }

# Runs 20 bulk calls against a fresh nginx in mode $mode; returns the
# edge's and the worker's request counts for them.
sub run_mode {
    my ($mode) = @_;
    my $conf = <<"CONF";
    togglemaster_events on;
    togglemaster_sqs_queue_url $q;
    togglemaster_aws_endpoint $moto;
    togglemaster_aws_region us-east-1;
    togglemaster_events_batch 1000 1s;
CONF
    $conf .= "    togglemaster_events_bulk $mode;\n" if $mode ne 'default';
    my $ng = TM::Nginx->new($h, http => $conf);
    $ng->start;
    $h->wait_until(10, sub { scalar @{ ($h->req(POST => $ng->url('/ofrep/v1/evaluate/flags'), {},
        { context => { targetingKey => 'x' } })->{json} // {})->{flags} // [] } == 300 });
    my ($d0, $items0) = (wmetric('dynamodb_requests_total'), scalar @{ $aws->scan($table) });
    my $m0 = TM::Nginx::m_sum($ng->metrics, 'togglemaster_sqs_messages_sent_total');
    for my $i (1 .. 20) {
        my $r = $h->req(POST => $ng->url('/ofrep/v1/evaluate/flags'), {}, { context => { targetingKey => "user-$i" } });
        die "bulk $i: $r->{status}" unless $r->{status} == 200;
    }
    $h->wait_until(30, sub { TM::Nginx::m_sum($ng->metrics, 'togglemaster_events_buffered') == 0 });
    $h->wait_until(30, sub { $aws->queue_depth($q) == 0 });
    sleep 1;
    $h->wait_until(30, sub { $aws->queue_depth($q) == 0 });
    my %out = (messages => TM::Nginx::m_sum($ng->metrics, 'togglemaster_sqs_messages_sent_total') - $m0,
               ddb => wmetric('dynamodb_requests_total') - $d0,
               items => @{ $aws->scan($table) } - $items0);
    $ng->stop;
    return \%out;
}

my $before = usage_of('bulk-001')->{totals}{evaluations};
my $sum = run_mode('default');
is $sum->{items}, 0, 'summary (default): no raw event stored for bulk evaluations';
cmp_ok $sum->{messages}, '<=', 3, "summary: $sum->{messages} SQS messages for 20 bulk calls x 300 flags";
my $after = usage_of('bulk-001')->{totals}{evaluations};
is $after - $before, 21, 'bulk-001: 20 bulk calls (+1 warm-up) counted in its aggregates';
my $u = usage_of('bulk-002');
is $u->{totals}{evaluations}, 21, 'bulk-002 too';
is $u->{totals}{true}, 21, 'bulk-002 (on): true 21';
is_deeply $u->{totals}{variants}, { on => 21 }, 'its variant counted';
is usage_of('bulk-299')->{totals}{false}, 21, 'bulk-299 (off): false 21';

my $raw = run_mode('raw');
is $raw->{items}, 20 * 300 + 300, 'raw: one item per flag per bulk call (as before)';
is usage_of('bulk-002')->{totals}{evaluations}, 42, 'raw: the raw events count in the aggregates instead (21 more)';

# --- bulk calls in another environment count there, not in the default ---
$h->redis_cmd('HSET', 'tm:envs', 'default', TM::Nginx::env_json('default', 1));
$h->redis_cmd('HSET', 'tm:envs', 'staging', TM::Nginx::env_json('staging', 2));
$h->redis_cmd('HSET', 'tm:flags@staging', $_, TM::Nginx::env_flag_json($_, 1)) for qw(bulk-001 bulk-002);
$h->redis_cmd('SADD', 'tm:ready', 'env', 'flag@staging', 'rule@staging');
{
    my $ng = TM::Nginx->new($h, http => <<"CONF");
    togglemaster_events on;
    togglemaster_sqs_queue_url $q;
    togglemaster_aws_endpoint $moto;
    togglemaster_aws_region us-east-1;
    togglemaster_events_batch 1000 1s;
    togglemaster_environment staging;
CONF
    $ng->start;
    my $bulk = sub { $h->req(POST => $ng->url('/ofrep/v1/evaluate/flags'), {}, { context => { targetingKey => "s-$_[0]" } }) };
    ok $h->wait_until(10, sub { scalar @{ ($bulk->(0)->{json} // {})->{flags} // [] } == 2 }),
        'staging: the bulk answer holds its two flags';
    my $d0 = usage_of('bulk-001')->{totals}{evaluations};
    $bulk->($_) for 1 .. 5;
    ok $h->wait_until(30, sub { (eval { $h->req(GET => "$wbase/flags/bulk-002/usage?environment=staging",
        { Authorization => "Bearer $key" })->{json}{totals}{evaluations} } // 0) == 6 }),
        'staging: 5 bulk calls (+1 warm-up) counted in staging';
    sleep 2;   # a summary wrongly keyed to the default would have landed by now
    is usage_of('bulk-001')->{totals}{evaluations}, $d0, '... and none in the default environment';
    $ng->stop;
}

diag sprintf "one bulk call over 300 flags: raw %.0f DynamoDB items + %.0f worker DynamoDB requests; "
    . "summary %d items, %.1f worker DynamoDB requests per call (%d SQS messages for 20 calls)",
    $raw->{items} / 21, $raw->{ddb} / 21, 0, $sum->{ddb} / 21, $sum->{messages};

$h->teardown;
done_testing;
