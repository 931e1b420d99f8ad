#!/usr/bin/env perl
# Evaluation events from the nginx module to SQS, through the real analytics
# worker into DynamoDB, on a moto server: every evaluation (/evaluate, OFREP
# single and bulk, $togglemaster_flag_*, togglemaster_require) becomes
# exactly one item with the right attributes; events leave in batches; a
# stalled SQS (moto SIGSTOPped) does not slow evaluation and its events are
# delivered or accounted; a full buffer and an unreachable SQS drop events
# with counted reasons while evaluation answers; a graceful stop flushes.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::AWS;
use Time::HiRes qw(time sleep);

my $h = TM::Harness->new;
$h->redis;
my $moto = $h->moto;
my $aws = TM::AWS->new($moto);
my $table = 'ToggleMasterAnalytics';
my $p = $aws->create_pipeline(queue => 'tm-events', table => $table, max_receive => 5, visibility => 5);
my $q = $p->{queue_url};

my %wenv = (AWS_ENDPOINT_URL => $moto, AWS_SQS_URL => $q, AWS_DYNAMODB_TABLE => $table,
            AWS_REGION => 'us-east-1', AWS_ACCESS_KEY_ID => 'test', AWS_SECRET_ACCESS_KEY => 'test',
            BIND_ADDR => '127.0.0.1', TM_SQS_WAIT_SECONDS => 1, TM_POLLERS => 2,
            TM_BACKOFF_MAX_MS => 400);
my $wport = $h->start('analytics', undef, %wenv);
my $wbase = "http://127.0.0.1:$wport";

TM::Nginx::set_flag($h, 'on-flag', 1, quiet => 1);
TM::Nginx::set_flag($h, 'off-flag', 0, quiet => 1);
TM::Nginx::set_flag($h, 'half', 1, quiet => 1);
TM::Nginx::set_rule($h, 'half', { type => 'PERCENTAGE', value => 50 }, 1, quiet => 1);
$h->redis_cmd('SET', 'tm:version', 7);

my $events_conf = <<"CONF";
    togglemaster_events on;
    togglemaster_sqs_queue_url $q;
    togglemaster_aws_endpoint $moto;
    togglemaster_aws_region us-east-1;
    togglemaster_events_batch 100 300ms;
    togglemaster_events_timeout 400ms;
    togglemaster_events_attempts 100;
    togglemaster_events_backoff_max 500ms;
    # one raw event per flag of a bulk call, as this test checks them
    # (the default is a summary: t/usage-bulk.t)
    togglemaster_events_bulk raw;
CONF
my $server_conf = <<'CONF';
        togglemaster_identity $arg_user;
        location = /var { return 200 "$togglemaster_flag_half\n"; }
        location = /gated { togglemaster_require on-flag; togglemaster_health; }
CONF
my $ng = TM::Nginx->new($h, workers => 2, http => $events_conf, server => $server_conf);
$ng->start;
$h->wait_until(5, sub { ($h->req(GET => $ng->url('/health'))->{status} // 0) == 200 });

sub items { $aws->scan($table) }
sub wait_items {
    my ($n, $secs) = @_;
    my $c = 0;
    $h->wait_until($secs // 30, sub { ($c = @{ items() }) >= $n });
    return $c;
}
sub settled {   # nothing left in the workers' buffers
    my ($n) = @_;
    return $h->wait_until(20, sub { TM::Nginx::m_sum($n->metrics, 'togglemaster_events_buffered') == 0 });
}

# --- every kind of evaluation becomes exactly one item -----------------------
my %want;   # user_id/flag -> expected fields
my $N = 300;
for my $i (1 .. $N) {
    my $u = "user-$i";
    my $r = $h->req(GET => $ng->url("/evaluate?user_id=$u&flag_name=half"));
    $want{"$u/half"} = { result => $r->{json}{result} ? 1 : 0, reason => undef };
}
my $r = $h->req(GET => $ng->url('/evaluate?user_id=' . TM::Nginx::_esc("j\x{c3}\x{b6}rg \"q\"") . '&flag_name=nope'));
is $r->{status}, 200, '/evaluate of an unknown flag';
$want{"j\x{c3}\x{b6}rg \"q\"/nope"} = { result => 0 };

$r = $h->req(POST => $ng->url('/ofrep/v1/evaluate/flags/on-flag'), {}, { context => { targetingKey => 'ofrep-1' } });
is $r->{status}, 200, 'OFREP single';
$want{'ofrep-1/on-flag'} = { result => 1, variant => 'on', reason => 'STATIC' };

$r = $h->req(POST => $ng->url('/ofrep/v1/evaluate/flags'), {}, { context => { targetingKey => 'bulk-1' } });
is $r->{status}, 200, 'OFREP bulk';
my $bulk = 0;
for my $f (@{ $r->{json}{flags} }) {
    $want{"bulk-1/$f->{key}"} = { result => $f->{value} ? 1 : 0, variant => $f->{variant}, reason => $f->{reason} };
    $bulk++;
}
is $bulk, 3, 'bulk evaluated 3 flags';

$r = $h->req(GET => $ng->url('/var?user=var-1'));
like $r->{content}, qr/^[01]$/, '$togglemaster_flag_half';
$want{'var-1/half'} = { result => $r->{content} =~ /1/ ? 1 : 0 };

$r = $h->req(GET => $ng->url('/gated?user=gate-1'));
is $r->{status}, 200, 'togglemaster_require';
$want{'gate-1/on-flag'} = { result => 1 };

$r = $h->req(GET => $ng->url('/gated'));   # no identity: evaluated, event dropped (counted)
is $r->{status}, 200, 'togglemaster_require without identity';

my $total = keys %want;
is wait_items($total), $total, "$total evaluations -> $total DynamoDB items";
settled($ng);
my $items = items();
is scalar @$items, $total, 'no duplicates, nothing extra';
my %got;
for my $it (@$items) {
    my $k = "$it->{user_id}/$it->{flag_name}";
    utf8::encode($k) if !exists $want{$k} && utf8::is_utf8($k);   # moto's \u escapes
    $got{$k} = $it;
}
my $bad = 0;
for my $k (sort keys %want) {
    my $it = $got{$k} or do { $bad++; diag "missing $k"; next };
    my $w = $want{$k};
    $bad++, diag "result of $k" if $it->{result} != $w->{result};
    $bad++, diag "variant of $k" if defined $w->{variant} && ($it->{variant} // '') ne $w->{variant};
    $bad++, diag "reason of $k" if defined $w->{reason} && ($it->{reason} // '') ne $w->{reason};
    $bad++, diag "event_id of $k: $it->{event_id}"
        unless $it->{event_id} =~ /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    $bad++, diag "timestamp of $k: $it->{timestamp}"
        unless $it->{timestamp} =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
}
is $bad, 0, 'every item has the right user_id, flag_name, result, variant, reason, UUID v4 id, RFC 3339 UTC timestamp';
ok !exists $got{'user-1/half'}{variant}, '/evaluate events carry no variant';
like $got{'user-1/half'}{reason}, qr/^(SPLIT|DEFAULT)$/, '... but a reason';
is $got{"j\x{c3}\x{b6}rg \"q\"/nope"}{reason}, 'UNKNOWN', 'UTF-8 and quotes survive two levels of JSON';

my $m = $ng->metrics;
is $m->{togglemaster_events_produced_total}, $total + 1, 'produced counted (one without identity)';
is $m->{togglemaster_events_sent_total}, $total, 'sent counted';
is $m->{'togglemaster_events_dropped_total{reason="no_user_id"}'}, 1, 'the one without identity: dropped, reason no_user_id';
is TM::Nginx::m_sum($m, 'togglemaster_events_dropped_total'), 1, 'nothing else dropped';
my $reqs = $m->{togglemaster_sqs_requests_total};
cmp_ok $reqs, '<=', 12, "batched: $total events in $reqs SendMessageBatch requests";
diag sprintf '%d events, %d SQS requests (%.1f per 1000 events), %d messages', $total, $reqs,
    1000 * $reqs / $total, $m->{togglemaster_sqs_messages_sent_total};
my $wm = $h->req(GET => "$wbase/metrics")->{content};
my ($received) = $wm =~ /^togglemaster_analytics_messages_received_total (\d+)/m;
cmp_ok $received, '<', $total / 10, "worker received $received messages for $total events";

# --- SQS stalled: evaluation latency unchanged, events delivered after -------
my $before = @{ items() };
$h->signal('STOP', 'moto');
my ($max, $n, $fail) = (0, 0, 0);
my $t_end = time + 3;
while (time < $t_end) {
    # the stall lasts 3 s whatever the pace; a few thousand events are
    # plenty, and keep the delivery check below quick
    if ($n >= 2000) { sleep 0.05; next }
    my $t0 = time;
    my $rr = $h->req(GET => $ng->url("/evaluate?user_id=stall-$n&flag_name=on-flag"));
    my $dt = time - $t0;
    $fail++ unless $rr->{status} == 200 && $rr->{json}{result};
    $max = $dt if $dt > $max;
    $n++;
}
$m = $ng->metrics;
$h->signal('CONT', 'moto');
is $fail, 0, "$n evaluations answered while SQS was stalled";
cmp_ok $max, '<', 0.2, sprintf('slowest evaluation while SQS stalled: %.1f ms', $max * 1000);
diag sprintf '%d evaluations in 3 s with moto SIGSTOPped, slowest %.2f ms', $n, $max * 1000;
cmp_ok TM::Nginx::m_sum($m, 'togglemaster_sqs_errors_total'), '>=', 1, 'stalled SQS: timeouts counted';
cmp_ok TM::Nginx::m_sum($m, 'togglemaster_events_buffered'), '>', 0, 'events held meanwhile';

ok settled($ng), 'SQS back: buffers drained';
$m = $ng->metrics;
my $dropped = TM::Nginx::m_sum($m, 'togglemaster_events_dropped_total') - 1;
is $m->{togglemaster_events_produced_total}, $total + 1 + $n, 'every stalled-time evaluation produced an event';
is $m->{togglemaster_events_sent_total} + $dropped, $total + $n, 'sent + dropped = produced';
is wait_items($before + $n - $dropped, 90), $before + $n - $dropped, "stalled-time events delivered: $n - $dropped dropped";
$h->wait_until(5, sub { @{ items() } > $before + $n - $dropped });
is scalar @{ items() }, $before + $n - $dropped, 'no duplicates from the timed-out attempts';

# --- graceful stop flushes -----------------------------------------------------
# A long batch time, so the events are still buffered when QUIT comes; the
# queue and the endpoint come from the environment this time.
$ng->stop;
$ng->{http} = "    togglemaster_events on;\n    togglemaster_events_batch 1000 60s;\n";
$ng->write_conf;
$h->start('nginx', $ng->port, TM::Nginx::san_env($h), AWS_SQS_URL => $q, AWS_ENDPOINT_URL_SQS => $moto, AWS_REGION => 'us-east-1');
$ng->wait_up;
$before = @{ items() };
$ng->evaluate("quit-$_", 'on-flag') for 1 .. 40;
sleep 0.3;
is scalar @{ items() }, $before, 'batched for 60 s: nothing sent yet';
my $pid = $h->pid('nginx');
my $t0 = time;
kill 'QUIT', $pid;
$h->wait_until(10, sub { !kill 0, $pid });
my $took = time - $t0;
ok !kill(0, $pid), sprintf('nginx exited on QUIT in %.2f s', $took);
is wait_items($before + 40), $before + 40, 'graceful stop sent the 40 buffered events';
unlike $ng->error_log, qr/events dropped/, 'nothing dropped at exit';

# --- buffer full and SQS unreachable: drops counted, evaluation answers -----
my $h2 = TM::Harness->new;
my $dead = TM::Harness::free_port();
my $ng2 = TM::Nginx->new($h2, redis => 0, http => <<"CONF");
    togglemaster_events on;
    togglemaster_sqs_queue_url http://127.0.0.1:$dead/000000000000/nowhere;
    togglemaster_events_buffer 20;
    togglemaster_events_batch 5 50ms;
    togglemaster_events_timeout 200ms;
    togglemaster_events_attempts 1000;
    togglemaster_events_backoff_max 300ms;
CONF
$ng2->start;
($max, $fail) = (0, 0);
for my $i (1 .. 60) {
    my $t = time;
    my $rr = $h2->req(GET => $ng2->url("/evaluate?user_id=d$i&flag_name=f"));
    $fail++ unless $rr->{status} == 200;
    $max = time - $t if time - $t > $max;
}
is $fail, 0, 'SQS unreachable: 60 evaluations answered';
cmp_ok $max, '<', 0.2, sprintf('slowest %.1f ms', $max * 1000);
sleep 0.5;
$m = $ng2->metrics;
is $m->{togglemaster_events_produced_total}, 60, 'produced 60';
is $m->{'togglemaster_events_dropped_total{reason="buffer_full"}'}, 40, 'buffer of 20: 40 dropped, reason buffer_full';
is TM::Nginx::m_sum($m, 'togglemaster_events_buffered'), 20, '20 held for retries';
cmp_ok $m->{'togglemaster_sqs_errors_total{kind="connect"}'}, '>=', 1, 'connect errors counted';
is $m->{togglemaster_events_sent_total}, 0, 'nothing sent';
$ng2->stop;
like $ng2->error_log, qr/20 evaluation events dropped: worker exiting/, 'the 20 held at exit are logged as dropped';

# --- TLS: https endpoint (nginx terminating TLS in front of moto) ------------
my $h4 = TM::Harness->new;
my $tdir = $h4->dir;
my ($tls, $tls_proxy, $cert) = TM::Nginx::tls_proxy($tdir, $moto);
my $tls_server = "        togglemaster_identity \$arg_user;\n" . $tls_proxy;
my $tls_http = <<"CONF";
    togglemaster_events on;
    togglemaster_sqs_queue_url $q;
    togglemaster_aws_endpoint https://localhost:$tls;
    togglemaster_events_batch 10 100ms;
    togglemaster_events_timeout 1s;
    togglemaster_events_backoff_max 300ms;
CONF
my $ng4 = TM::Nginx->new($h4, redis => 0, server => $tls_server,
                         http => $tls_http . "    togglemaster_events_ssl_trusted_certificate $cert;\n");
$ng4->start;
$before = @{ items() };
$ng4->evaluate("tls-$_", 'f') for 1 .. 25;
is wait_items($before + 25), $before + 25, 'https endpoint, certificate and host name verified: 25 events delivered';
$m = $ng4->metrics;
is $m->{togglemaster_events_sent_total}, 25, 'sent over TLS';
$ng4->stop;

# the same server without trusting its certificate: refused, nothing sent
$ng4->{http} = $tls_http;
$ng4->write_conf;
$ng4->start;
$ng4->evaluate("untrusted-$_", 'f') for 1 .. 5;
ok $h4->wait_until(10, sub { $ng4->error_log =~ /certificate verify error/ }), 'untrusted certificate: verify error logged';
$m = $ng4->metrics;
is $m->{togglemaster_events_sent_total}, 0, 'nothing sent to an untrusted server';
cmp_ok $m->{'togglemaster_sqs_errors_total{kind="connect"}'}, '>=', 1, 'counted as a connect error';
$ng4->stop;
ok !grep({ $_->{user_id} =~ /^untrusted-/ } @{ items() }), 'no untrusted-* item';

# --- configuration errors -------------------------------------------------------
my $h3 = TM::Harness->new;
my $ng3 = TM::Nginx->new($h3, redis => 0, http => "    togglemaster_events on;\n");
my $out = `@{[TM::Nginx::shell_env($h)]} nginx -t -p $ng3->{dir} -c $ng3->{dir}/nginx.conf 2>&1`;
like $out, qr/needs "togglemaster_sqs_queue_url" \(or AWS_SQS_URL/, 'events on without a queue: clear error';
{
    local $ENV{AWS_ACCESS_KEY_ID};
    local $ENV{AWS_SECRET_ACCESS_KEY};
    delete @ENV{qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_ENDPOINT_URL AWS_ENDPOINT_URL_SQS)};
    local $ENV{AWS_SQS_URL} = 'https://sqs.eu-west-1.amazonaws.com/123456789012/q';
    $out = `@{[TM::Nginx::shell_env($h)]} nginx -t -p $ng3->{dir} -c $ng3->{dir}/nginx.conf 2>&1`;
    like $out, qr/no AWS credentials/, 'real AWS without credentials: clear error';
}

done_testing;
