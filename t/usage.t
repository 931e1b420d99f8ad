#!/usr/bin/env perl
# Usage aggregates and their read API against real servers (moto, Redis,
# PostgreSQL, the auth and flags daemons): per-flag per-hour counts equal
# the distinct events, also when SQS redelivers, the edge re-sends a batch
# and the worker is SIGKILLed mid-batch; bulk summaries (envelope v2) count;
# GET /flags/<name>/usage and /usage/stale answer from DynamoDB Query; bad
# input is a 4xx with the reason, DynamoDB down a 503 JSON.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key);
use TM::AWS;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);

my $h = TM::Harness->new;
my $moto = $h->moto;
my $aws = TM::AWS->new($moto);
my ($table, $usage) = ('ToggleMasterAnalytics', 'ToggleMasterUsage');
my $p = $aws->create_pipeline(queue => 'usage-q', table => $table, max_receive => 50, visibility => 2);
my $q = $p->{queue_url};

my $auth = $h->daemon('auth', MASTER_KEY => 'usage-master');
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth);
my $key = new_key($h, $auth, 'usage-master', 'usage-reader')->{key};
my %K = (Authorization => "Bearer $key");
for my $f (qw(checkout dark-mode banner never-used always-on old-one)) {
    my $r = $h->req(POST => "$flags/flags", \%K, { name => $f, is_enabled => JSON::PP::true });
    die "create $f: $r->{status}" unless $r->{status} == 201;
}

my %env = (AWS_ENDPOINT_URL => $moto, AWS_SQS_URL => $q, AWS_DYNAMODB_TABLE => $table,
           AWS_REGION => 'us-east-1', AWS_ACCESS_KEY_ID => 'test', AWS_SECRET_ACCESS_KEY => 'test',
           BIND_ADDR => '127.0.0.1', TM_SQS_WAIT_SECONDS => 1, TM_BACKOFF_MAX_MS => 400,
           REDIS_URL => $h->redis, AUTH_SERVICE_URL => $auth,
           # One poller: moto serves requests in threads and its
           # TransactWriteItems is not isolated (it checks conditions, then
           # restores a deep copy of the table on cancel, without a lock), so
           # two concurrent transactions on one marker can both pass there.
           # DynamoDB serialises them: the second is cancelled
           # (ConditionalCheckFailed or TransactionConflict, both handled).
           TM_POLLERS => 1);
my $port = $h->start('analytics', undef, %env);
my $base = "http://127.0.0.1:$port";
ok $h->wait_until(15, sub { ($h->req(GET => "$base/health/ready")->{status} // 0) == 200 }), 'worker ready';

sub metric {
    my ($name) = @_;
    my $r = $h->req(GET => "$base/metrics");
    return $r->{content} =~ /^togglemaster_analytics_\Q$name\E (\S+)$/m ? $1 + 0 : undef;
}
sub drained { my $secs = shift; $h->wait_until($secs // 30, sub { $aws->queue_depth($q) == 0 }) }
my $J = $h->json;
my $n = 0;
sub uuid { sprintf '%08x-%04x-4%03x-a%03x-%012x', $$, $n++ % 65536, int(rand 4096), int(rand 4096), int(rand 2**48) }
my $now = time;
my $hour0 = $now - $now % 3600;
sub ts { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($_[0])) }
sub event { my ($flag, $res, $t, %x) = @_;
    { event_id => uuid(), user_id => "u$n", flag_name => $flag, result => $res ? JSON::PP::true : JSON::PP::false,
      timestamp => ts($t), %x } }
sub envelope { $J->encode({ v => 1, events => [@_] }) }
sub usage { my ($flag, %q) = @_;
    my $qs = join '&', map { "$_=$q{$_}" } sort keys %q;
    $h->req(GET => "$base/flags/$flag/usage" . ($qs ? "?$qs" : ''), \%K) }

# --- counts per hour, true/false, variants, last evaluated --------------------
my @batch1 = ((map { event('checkout', 1, $hour0 - 7200 + 60 * $_, variant => 'on') } 1 .. 6),
              (map { event('checkout', 0, $hour0 - 7200 + 600, variant => 'off') } 1 .. 4),
              (map { event('checkout', $_ % 2, $hour0 + 125) } 1 .. 5),
              event('dark-mode', 1, $hour0 + 30));
my $dup = event('checkout', 1, $hour0 + 130);
$aws->send_batch($q, envelope(@batch1), envelope($dup, $dup),
                 $J->encode({ user_id => 'single', flag_name => 'checkout', result => JSON::PP::true,
                              timestamp => ts($hour0 + 59 * 60 + 1) }));
ok drained(), 'first messages consumed';
my $r = usage('checkout');
is $r->{status}, 200, 'GET /flags/checkout/usage 200' or diag $r->{content};
my $u = $r->{json};
is $u->{granularity}, 'hour', 'hourly by default';
is scalar @{ $u->{points} }, 24, 'the last 24 hours by default, every hour present';
is $u->{totals}{evaluations}, 17, '10 + 5 + 1 distinct (duplicate event_id once) + 1 single = 17';
is $u->{totals}{true}, 6 + 3 + 1 + 1, 'true answers';
is $u->{totals}{false}, 4 + 2, 'false answers';
is_deeply $u->{totals}{variants}, { on => 6, off => 4 }, 'counts per variant';
my %pt = map { $_->{start} => $_ } @{ $u->{points} };
is $pt{ts($hour0 - 7200)}{evaluations}, 10, 'the hour two hours ago: 10';
is $pt{ts($hour0 - 3600)}{evaluations}, 0, 'an hour without evaluations: 0';
is $pt{ts($hour0)}{evaluations}, 7, 'this hour: 7';
is $u->{last_evaluated}, ts($hour0 + 59 * 60), 'last evaluated, to the minute';
ok exists $u->{distinct_users} && !defined $u->{distinct_users}, 'distinct users: null (not kept)';
is usage('dark-mode')->{json}{totals}{evaluations}, 1, 'another flag counted apart';

$r = usage('checkout', granularity => 'day', from => strftime('%Y-%m-%d', gmtime($now - 2 * 86400)));
is $r->{status}, 200, 'granularity=day';
is $r->{json}{points}[-1]{start}, strftime('%Y-%m-%dT00:00:00Z', gmtime($now)), 'days start at midnight UTC';
is $r->{json}{totals}{evaluations}, 17, 'the same totals by day';

# --- the edge re-sends, SQS redelivers: nothing counted twice ----------------
my $before = metric('usage_transactions_repeated_total');
$aws->send_batch($q, envelope(@batch1));
ok drained(), 're-sent envelope consumed';
is usage('checkout')->{json}{totals}{evaluations}, 17, 're-sent envelope (same event ids): still 17';
cmp_ok metric('usage_transactions_repeated_total'), '>', $before, 'its transaction was refused by its marker';

# --- bulk summaries (envelope v2) ---------------------------------------------
my $summary = { summary_id => uuid(), timestamp => ts($hour0 + 240),
                flags => { banner => { n => 3, t => 2, f => 1, variants => { blue => 2 } },
                           checkout => { n => 2, t => 2 } } };
my $v2a = $J->encode({ v => 2, events => [], summaries => [$summary] });
$aws->send($q, $v2a);
$aws->send($q, $J->encode({ v => 2, events => [event('banner', 1, $hour0 + 250)],
                            summaries => [{ %$summary, summary_id => uuid() }] }));
$aws->send($q, $v2a);   # the edge re-sends a message: same ids
ok drained(), 'v2 envelopes consumed';
$u = usage('banner')->{json};
is $u->{totals}{evaluations}, 3 + 3 + 1, 'banner: two summaries of 3 (one of them re-sent, counted once) + 1 event';
is_deeply $u->{totals}{variants}, { blue => 4 }, 'summary variants';
is usage('checkout')->{json}{totals}{evaluations}, 21, 'checkout: +2 +2 from the summaries';
is scalar(grep { $_->{flag_name} eq 'banner' } @{ $aws->scan($table) }), 1, 'summaries store no raw events';
$aws->send($q, $J->encode({ v => 2, events => [], summaries => [{ summary_id => 'x', timestamp => ts($now), flags => { a => { n => 1, t => 2 } } }] }));
ok $h->wait_until(20, sub { (metric('messages_poison_total') // 0) >= 1 }), 'a bad summary is poison (t > n)';

# --- SIGKILL mid-batch, visibility 0 redeliveries: totals = distinct events --
$h->stop('analytics');
my @flags = map { "f$_" } 1 .. 12;
for my $f (@flags) {
    $h->req(POST => "$flags/flags", \%K, { name => $f }) ->{status} == 201 or die "flag $f";
}
my %want;
my @bodies;
for my $m (1 .. 40) {
    my @ev = map { my $f = $flags[($m + $_) % @flags]; $want{$f}++;
                   event($f, $_ % 3, $hour0 + ($_ % 50) * 60) } 1 .. 50;
    push @bodies, envelope(@ev);
}
$aws->send_batch($q, @bodies[$_ * 10 .. $_ * 10 + 9]) for 0 .. 3;
$port = $h->start('analytics', $port, %env, TM_SQS_VISIBILITY_TIMEOUT => 1);
ok $h->wait_until(60, sub { (metric('usage_transactions_total') // 0) >= 5 }), 'some aggregates applied';
$h->signal(KILL => 'analytics');
ok $h->wait_until(10, sub { !kill 0, $h->pid('analytics') }), 'worker SIGKILLed mid-batch';
my $left = $aws->queue_depth($q);
cmp_ok $left, '>', 0, "messages left on the queue ($left)";
$h->stop('analytics');
$port = $h->start('analytics', $port, %env, TM_SQS_VISIBILITY_TIMEOUT => 0);
ok drained(120), 'restarted worker drained the queue';
my $repeated = metric('usage_transactions_repeated_total');
diag "after the restart: $repeated transactions refused by their markers (redeliveries)";
my %got = map { $_ => usage($_)->{json}{totals}{evaluations} } @flags;
is_deeply \%got, \%want, 'every flag: totals equal the distinct events (2000 events, 40 messages)';

# --- read API: bad input, unknown names, keys ---------------------------------
my @bad = (
    [{ from => 'yesterday' }, qr/from: "yesterday" is not a date/],
    [{ to => '2026-13-01' }, qr/to: .* is not a date/],
    [{ from => ts($now), to => ts($now - 3600) }, qr/from must be before to/],
    [{ from => '2026-01-01', to => '2026-03-01' }, qr/range too long: at most 744 hours/],
    [{ from => '2020-01-01', to => '2021-06-01', granularity => 'day' }, qr/range too long: at most 366 days/],
    [{ granularity => 'week' }, qr/granularity must be hour or day/],
    [{ from => '1999-12-31' }, qr/years 2000\.\.9999/],
);
for my $b (@bad) {
    $r = usage('checkout', %{ $b->[0] });
    is $r->{status}, 400, "400 for " . $J->encode($b->[0]);
    like $r->{json} && $r->{json}{error}, $b->[1], '... with the reason';
}
is usage('no-such-flag')->{status}, 404, 'unknown flag 404';
is usage('checkout', environment => 'staging')->{status}, 404, 'unknown environment 404';
is usage('bad%20name')->{status}, 400, 'a name that cannot be a flag 400';
is $h->req(GET => "$base/flags/checkout/usage")->{status}, 401, 'no key 401';
is $h->req(GET => "$base/flags/checkout/usage", { Authorization => 'Bearer nope' })->{status}, 401, 'bad key 401';
is $h->req(POST => "$base/usage/stale", \%K)->{status}, 405, 'POST 405';
my $ro = $h->req(POST => "$auth/admin/keys", { Authorization => 'Bearer usage-master' },
                 { name => 'ro', scope => 'readonly' })->{json}{key};
is $h->req(GET => "$base/flags/checkout/usage", { Authorization => "Bearer $ro" })->{status}, 200,
    'a readonly key reads usage';
my $srv = $h->req(POST => "$auth/admin/keys", { Authorization => 'Bearer usage-master' },
                  { name => 'srv', scope => 'server', environment => 'default' })->{json}{key};
$r = $h->req(GET => "$base/usage/stale", { Authorization => "Bearer $srv" });
is $r->{status}, 403, 'a server key does not';
like $r->{json}{error}, qr/scope/, '... and is told about scopes';
for my $d ('0', '91', 'abc', '-3', '1.5') {
    $r = $h->req(GET => "$base/usage/stale?days=$d", \%K);
    is $r->{status}, 400, "days=$d 400";
}
like $r->{json}{error}, qr/days must be a whole number from 1 to 90/, 'days: the reason';
is $h->req(GET => "$base/usage/stale?limit=0", \%K)->{status}, 400, 'limit=0 400';

# --- stale flags ----------------------------------------------------------------
$aws->send_batch($q, envelope((map { event('always-on', 1, $hour0 - 3 * 86400 + $_) } 1 .. 4),
                              event('old-one', 1, $now - 40 * 86400)));
ok drained(), 'stale-test events consumed';
$r = $h->req(GET => "$base/usage/stale?days=30", \%K);
is $r->{status}, 200, 'GET /usage/stale 200' or diag $r->{content};
my %st = map { $_->{flag} => $_ } @{ $r->{json}{stale} };
is $r->{json}{checked}, 6 + 12, 'every flag checked';
ok !defined $r->{json}{next}, 'one page';
like $st{'never-used'}{reason}, qr/no evaluation in 30 days/, 'never-used: no evaluation';
ok !defined $st{'never-used'}{last_evaluated}, 'never-used: never seen';
like $st{'old-one'}{reason}, qr/no evaluation in 30 days/, 'old-one: no evaluation in 30 days';
is $st{'old-one'}{last_evaluated}, strftime('%Y-%m-%dT%H:%M:00Z', gmtime($now - 40 * 86400)),
    'old-one: last evaluated 40 days ago (evidence)';
like $st{'always-on'}{reason}, qr/every evaluation in 30 days answered true/, 'always-on: one value';
is $st{'always-on'}{evaluations}, 4, 'always-on: its counts';
ok !$st{checkout}, 'checkout (true and false) is not stale';
like $st{'dark-mode'}{reason}, qr/answered true/, 'dark-mode: one evaluation, true';
$r = $h->req(GET => "$base/usage/stale?days=30&limit=2", \%K);
is $r->{json}{checked}, 2, 'limit=2: two flags checked';
is $r->{json}{next}, 'banner', 'next: the cursor';
$r = $h->req(GET => "$base/usage/stale?days=30&limit=2&after=banner", \%K);
is $r->{json}{checked}, 2, 'after=banner: the next page';
is $r->{json}{next}, 'dark-mode', 'its cursor';

# --- DynamoDB down: 503 JSON, nothing half-written ----------------------------
$aws->delete_table($usage);
$r = usage('checkout');
is $r->{status}, 503, 'usage table gone: 503';
like $r->{json} && $r->{json}{error}, qr/DynamoDB: ResourceNotFoundException/, '503 JSON with the reason';
is $h->req(GET => "$base/usage/stale", \%K)->{status}, 503, 'stale: 503';
$aws->send_batch($q, envelope(event('checkout', 1, $hour0 + 300)));
sleep 4;
cmp_ok $aws->queue_depth($q), '>=', 1, 'aggregates cannot be written: the message stays on the queue';
$aws->create_usage_table($usage);
ok drained(40), 'usage table back: delivered';
is usage('checkout')->{json}{totals}{evaluations}, 1, 'the new table holds that event once';

$h->teardown;
done_testing;
