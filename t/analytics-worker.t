#!/usr/bin/env perl
# The analytics worker against a real moto server: original single-event
# messages and batch envelopes land in DynamoDB exactly once (also when the
# edge re-sends and when SQS redelivers), poison goes to the dead-letter
# queue, a missing table keeps messages queued until it is back, health,
# metrics, graceful stop during a long poll.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::AWS;
use Time::HiRes qw(time sleep);

my $h = TM::Harness->new;
my $moto = $h->moto;
my $aws = TM::AWS->new($moto);
my $table = 'ToggleMasterAnalytics';
my $p = $aws->create_pipeline(queue => 'tm-events', table => $table, max_receive => 3, visibility => 2);
my ($q, $dlq) = @$p{qw(queue_url dlq_url)};
like $q, qr{/tm-events$}, "queue $q";

my %env = (AWS_ENDPOINT_URL => $moto, AWS_SQS_URL => $q, AWS_DYNAMODB_TABLE => $table,
           AWS_REGION => 'us-east-1', AWS_ACCESS_KEY_ID => 'test', AWS_SECRET_ACCESS_KEY => 'test',
           BIND_ADDR => '127.0.0.1', TM_SQS_WAIT_SECONDS => 1, TM_POLLERS => 2,
           TM_BACKOFF_MAX_MS => 400);
my $port = $h->start('analytics', undef, %env);
my $base = "http://127.0.0.1:$port";

sub metric {
    my ($name) = @_;
    my $r = $h->req(GET => "$base/metrics");
    return $r->{content} =~ /^togglemaster_analytics_\Q$name\E (\S+)$/m ? $1 + 0 : undef;
}
sub items { $aws->scan($table) }
sub settle {   # until the queue is empty and the table holds $n items
    my ($n, $secs) = @_;
    my $c = 0;
    $h->wait_until($secs // 20, sub { $aws->queue_depth($q) == 0 && ($c = @{ items() }) == $n });
    return scalar @{ items() };
}
my $i = 0;
sub single { my ($u, $r) = @_; $aws->json->encode({ user_id => $u, flag_name => 'new-checkout',
    result => $r ? JSON::PP::true : JSON::PP::false, timestamp => '2026-11-22T10:00:0' . ($i++ % 10) . 'Z' }) }
sub uuid { sprintf '%08x-%04x-4%03x-a%03x-%012x', int(rand 2**32), int(rand 2**16), int(rand 4096), int(rand 4096), int(rand 2**48) }
sub envelope { $aws->json->encode({ v => 1, events => [@_] }) }
sub event { my ($id, $u, %x) = @_; { event_id => $id, user_id => $u, flag_name => 'dark-mode',
    result => JSON::PP::true, timestamp => '2026-11-22T11:00:00.250Z', %x } }

# --- health and metrics ------------------------------------------------------
my $r = $h->req(GET => "$base/health");
is $r->{status}, 200, '/health 200';
is_deeply $r->{json}, { status => 'ok' }, '/health body as the original';
is $h->req(GET => "$base/health/live")->{status}, 200, '/health/live 200';
ok $h->wait_until(10, sub { $h->req(GET => "$base/health/ready")->{status} == 200 }), '/health/ready 200 once SQS answered';
$r = $h->req(GET => "$base/metrics");
is $r->{status}, 200, '/metrics 200';
like $r->{headers}{'content-type'}, qr{^text/plain}, 'Prometheus text';
like $r->{content}, qr/^# TYPE togglemaster_analytics_$_ /m, "metric $_"
    for qw(messages_received_total events_stored_total events_retried_total events_failed_total
           messages_dead_lettered_total messages_poison_total oldest_message_age_seconds);
is $h->req(GET => "$base/nope")->{status}, 404, 'unknown path 404';

# --- original single events and envelopes -----------------------------------
my @single_ids = map { $aws->send($q, single("user$_", $_ % 2)) } 1 .. 5;
my @envs;
for my $e (1 .. 3) {
    push @envs, envelope(map { event(uuid(), "env$e-$_", $_ == 1 ? (variant => 'on', reason => 'SPLIT', environment => 'staging') : ()) } 1 .. 10);
}
my $dup = uuid();
push @envs, envelope(event($dup, 'dup-a'), event($dup, 'dup-a'), event(uuid(), 'dup-b', variant => undef));
$aws->send_batch($q, @envs);
is settle(37), 37, '5 single events + 3 x 10 envelope events + 2 distinct of a 3-event envelope = 37 items';

my %by_user = map { $_->{user_id} => $_ } @{ items() };
my $s1 = $by_user{user1};
like $s1->{event_id}, qr/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    'single event got a derived UUID';
is_deeply [sort keys %$s1], [qw(event_id flag_name result timestamp user_id)], 'original attributes only';
is $s1->{result}, 1, 'result BOOL true';
is $by_user{user2}{result}, 0, 'result BOOL false';
is $s1->{flag_name}, 'new-checkout', 'flag_name';
like $s1->{timestamp}, qr/^2026-11-22T10:00:0\dZ$/, 'timestamp kept';
my $e1 = $by_user{'env1-1'};
is $e1->{variant}, 'on', 'variant stored';
is $e1->{reason}, 'SPLIT', 'reason stored';
is $e1->{environment}, 'staging', 'environment stored';
ok !exists $by_user{'env1-2'}{environment}, 'no environment when absent (the default one)';
is $e1->{timestamp}, '2026-11-22T11:00:00.250Z', 'fractional timestamp kept';
ok !exists $by_user{'env1-2'}{variant}, 'no variant when absent';
ok !exists $by_user{'dup-b'}{variant}, 'no variant when null';
is scalar(grep { $_->{event_id} eq $dup } @{ items() }), 1, 'same event_id twice in one message: one item';
is metric('events_duplicate_total'), 1, 'duplicate counted';
is metric('messages_deleted_total'), 9, 'every message deleted';

# The edge re-sends a batch (e.g. its SendMessageBatch timed out): same ids, no new items.
$aws->send_batch($q, @envs[0, 1]);
$h->wait_until(15, sub { metric('messages_deleted_total') == 11 });
is metric('messages_deleted_total'), 11, 're-sent envelopes consumed';
is scalar @{ items() }, 37, 're-sent envelopes: still 37 items';

# --- poison -> dead-letter queue ---------------------------------------------
$aws->send($q, 'not json at all');
$aws->send($q, '{"v":2,"events":[]}');
$aws->send($q, '{"user_id":"u","flag_name":"f","result":"yes","timestamp":"t"}');
ok $h->wait_until(30, sub { $aws->queue_depth($dlq) == 3 }), 'three poison messages moved to the DLQ';
is $aws->queue_depth($q), 0, 'main queue empty';
cmp_ok metric('messages_poison_total'), '>=', 9, 'each poison receive counted (3 x 3)';
is metric('messages_dead_lettered_total'), 3, 'dead-lettered counted on the last receive';
like $h->log('analytics'), qr/poison message \S+ \(receive 3 of 3, goes to the dead-letter queue next\): not JSON/,
    'poison logged with its reason';
is scalar @{ items() }, 37, 'poison wrote nothing';

# --- DynamoDB down: messages stay queued, delivered when it is back ----------
$aws->delete_table($table);
my @late = map { $aws->send($q, single("late$_", 1)) } 1 .. 3;
ok $h->wait_until(15, sub { ($h->req(GET => "$base/health/ready")->{status} // 0) == 503 }),
    '/health/ready 503 while the table is missing';
is metric('dynamodb_up'), 0, 'dynamodb_up 0';
cmp_ok metric('events_failed_total'), '>=', 1, 'unstored events counted as failed';
sleep 5;   # two visibility timeouts: without the gate they would be received again and again
is $aws->queue_depth($q), 3, 'messages stay on the queue during the outage';
is $aws->queue_depth($dlq), 3, 'no good message was dead-lettered';
$aws->create_table($table);
is settle(3, 20), 3, 'table back: the 3 queued events delivered';
is_deeply [sort map { $_->{user_id} } @{ items() }], [qw(late1 late2 late3)], 'the right ones';
ok $h->wait_until(10, sub { $h->req(GET => "$base/health/ready")->{status} == 200 }), 'ready again';

# --- strings that need escaping survive the worker's compact item text ------
# (items are held as JSON text between parsing and BatchWriteItem)
my $odd = "q\"uo\\te\n\ttab \x{e9}t\x{e9} \x{1F600} </x> \x{7f}";
my $odd_id = uuid();
# \u escapes in the message (TM::AWS sends characters as they are)
$aws->send($q, JSON::PP->new->ascii->encode({ v => 1, events => [event($odd_id, $odd, variant => "v\"1\\", reason => "\x{2028}r")] }));
is settle(4, 20), 4, 'event with escaped and non-ASCII strings stored';
my ($oi) = grep { $_->{event_id} eq $odd_id } @{ items() };
is $oi && $oi->{user_id}, $odd, 'user_id with quotes, backslash, control and non-ASCII characters unchanged';
is $oi && $oi->{variant}, "v\"1\\", 'variant unchanged';
is $oi && $oi->{reason}, "\x{2028}r", 'reason unchanged';
is $oi && $oi->{result}, 1, 'result BOOL';

# --- redelivery: visibility 0, many pollers, queue found by name ------------
$h->stop('analytics');
my %env2 = %env;
delete $env2{AWS_SQS_URL};
$h->start('analytics', $port, %env2, TM_SQS_QUEUE_NAME => 'tm-events', TM_SQS_VISIBILITY_TIMEOUT => 0,
          TM_POLLERS => 4, TM_SQS_MAX_MESSAGES => 1);
$aws->send_batch($q, map { single("redeliver$_", 1) } 1 .. 10);
is settle(14, 20), 14, 'visibility 0: every message stored exactly once';
my $received = metric('messages_received_total');
cmp_ok $received, '>=', 10, 'messages received';
diag "10 messages were received $received times (redeliveries absorbed by derived event ids)";
like $h->log('analytics'), qr/queue URL \S*tm-events/, 'queue URL looked up by name';

# --- graceful stop during a 20 s long poll -----------------------------------
$h->stop('analytics');
$h->start('analytics', $port, %env, TM_SQS_WAIT_SECONDS => 20);
ok $h->wait_until(10, sub { ($h->req(GET => "$base/health/ready")->{status} // 0) == 200 }), 'ready';
sleep 0.5;
my $t0 = time;
my $pid = $h->pid('analytics');
$h->signal(TERM => 'analytics');
my $stopped = $h->wait_until(10, sub { $h->log('analytics') =~ /INFO analytics: stopped$/m });
my $took = time - $t0;
ok $stopped, 'stopped on SIGTERM';
cmp_ok $took, '<', 2, sprintf('long poll abandoned: stopped in %.2f s', $took);
ok $h->wait_until(10, sub { !kill 0, $pid }), 'process gone';
like $h->log('analytics'), qr/INFO analytics: stopped$/m, 'clean stop logged';

$h->teardown;
done_testing;
