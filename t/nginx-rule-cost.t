#!/usr/bin/env perl
# Issue 11.1: no rule, whatever its operators and however it combines them,
# can make one evaluation stall an nginx worker. The worst documents of
# docs/rules.md ("Worst cases") are planted in Redis (as a writer could, or
# an older release stored them) and evaluated for 4 KiB identities on a
# single worker: every answer comes back well within a generous bound, the
# ones over the evaluation budget are false, a concurrent stream of ordinary
# evaluations stays fast, and the targeting API refuses the document that is
# over the document bound with a 400 saying why. Before the budget, one
# evaluation of the "segments" flag read a 4669-needle STR_CONTAINS segment
# 64 times (47 ms each: 3 s), "distinct" 64 such segments, and "bombs" ran
# 791 REGEX bombs (0.3 s).
use strict; use warnings;
use Test::More;
use JSON::PP ();
use Time::HiRes qw(time);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key);

my $h = TM::Harness->new;
$h->redis;

# A bound no budgeted evaluation comes near (about 1 ms, a few under ASan),
# generous for a loaded machine; the old evaluations took 0.3 to 3 s.
my $BOUND = 0.25;

my @needles = map { 'aaaaaaaaab' . ($_ % 10) } 1 .. 4669;
my $heavy = { contextName => 'userId', operator => 'STR_CONTAINS', values => \@needles };
my $bomb = { contextName => 'userId', operator => 'REGEX', value => '(?:a|b)*?a*+c|!!',
             inverted => JSON::PP::true };
my @bomb_strategies = map { { constraints => [ ($bomb) x 64 ], rollout => { percentage => 0 } } } 1 .. 13;

my %RULES = (
    needles  => { strategies => [ { constraints => [ $heavy ] } ] },
    segments => { strategies => [ map { { segments => [ 'heavy' ] } } 1 .. 64 ] },
    distinct => { strategies => [ map { { segments => [ "heavy$_" ] } } 1 .. 64 ] },
    bombs    => { strategies => \@bomb_strategies },
);
TM::Nginx::set_segment($h, 'heavy', [ $heavy ], quiet => 1);
TM::Nginx::set_segment($h, "heavy$_", [ $heavy ], quiet => 1) for 1 .. 64;
TM::Nginx::set_flag($h, 'plain', 1, quiet => 1);
for my $f (sort keys %RULES) {
    TM::Nginx::set_flag($h, $f, 1, quiet => 1);
    TM::Nginx::set_rule($h, $f, $RULES{$f}, 1, quiet => 1);
}
$h->redis_cmd('SET', 'tm:version', 100);
TM::Nginx::mark_ready($h);
# one worker: an evaluation that stalled it would stall every other request
my $ng = TM::Nginx->new($h, workers => 1);
$ng->start;
ok $h->wait_until(20, sub { eval { $ng->evaluate('u', 'plain') } }), 'snapshot loaded';

my $id4k = 'a' x 4096;
sub ofrep {
    my ($flag, $user) = @_;
    return $h->req(POST => $ng->url("/ofrep/v1/evaluate/flags/$flag"), {},
                   { context => { targetingKey => $user } });
}

# What OFREP says: its reason, or its errorCode and errorDetails.
sub outcome {
    my ($j) = @_;
    return $j->{errorCode} ? "$j->{errorCode}: " . ($j->{errorDetails} // '') : $j->{reason} // '';
}

# flag, identity, expected result, OFREP outcome
my $OVER = 'GENERAL: over the evaluation budget';
for my $c ([ 'needles', $id4k, 0, 'DEFAULT' ], [ 'needles', 'aaaaaaaaab7', 1, 'TARGETING_MATCH' ],
           [ 'segments', $id4k, 0, 'DEFAULT' ], [ 'segments', 'xaaaaaaaaab3', 1, 'TARGETING_MATCH' ],
           [ 'distinct', $id4k, 0, $OVER ], [ 'distinct', 'aaaaaaaaab0', 1, 'TARGETING_MATCH' ],
           [ 'bombs', $id4k, 0, 'PARSE_ERROR: the flag\'s rule document is unusable' ]) {
    my ($f, $user, $want, $reason) = @$c;
    my $label = sprintf '%s, %d-byte identity', $f, length $user;
    my ($r, $t) = $ng->timed_eval($user, $f);
    is $r->{status}, 200, "$label: 200";
    is $r->{json}{result} ? 1 : 0, $want, "$label: " . ($want ? 'true' : 'false');
    cmp_ok $t, '<', $BOUND, sprintf('%s: answered in %.3f s', $label, $t);
    is outcome(ofrep($f, $user)->{json} // {}), $reason, "$label: OFREP $reason";
}

# --- the worker keeps serving others while the worst documents are asked ---
my $ROUNDS = 20;
my $busy = $ng->serves_while(60, 'plain', sub {
    for my $i (1 .. $ROUNDS) {
        for my $f (qw(needles segments distinct bombs)) {
            $h->req(GET => $ng->url('/evaluate?user_id=' . TM::Nginx::_esc($id4k) . "&flag_name=$f"));
        }
        $h->req(POST => $ng->url('/ofrep/v1/evaluate/flags'), {}, { context => { targetingKey => $id4k } });
    }
});
ok $busy->{done}, "the ${\ ($ROUNDS * 5)} heavy requests completed within 60 s";
ok !$busy->{bad}, "$busy->{n} ordinary evaluations meanwhile: all 200 true";
cmp_ok $busy->{slowest}, '<', $BOUND, sprintf('... the slowest took %.3f s (median %.4f s)',
                                              $busy->{slowest}, $busy->{median});

# --- bulk OFREP evaluates every flag: each within the budget ---
my $t0 = time;
my $bulk = $h->req(POST => $ng->url('/ofrep/v1/evaluate/flags'), {}, { context => { targetingKey => $id4k } });
my $tb = time - $t0;
is $bulk->{status}, 200, 'bulk OFREP with a 4 KiB identity: 200';
my %by = map { $_->{key} => $_ } @{ $bulk->{json}{flags} // [] };
is outcome($by{distinct} // {}), $OVER, '... distinct: over the budget';
ok exists $by{plain}, '... the others answered';
cmp_ok $tb, '<', $BOUND * 2, sprintf('... in %.3f s', $tb);

like $ng->error_log, qr/bombs.*could cost up to \d+ units/, 'the edge logged why "bombs" is unusable';
unlike $ng->error_log, qr/\[(alert|emerg|crit)\]|exited on signal/, 'no alerts or crashes';

# --- the targeting API refuses the document over the document bound ---
my $M = 'master-test-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $fl = $h->daemon('flags', AUTH_SERVICE_URL => $auth);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my %K = (Authorization => 'Bearer ' . new_key($h, $auth, $M, 'rule-cost')->{key});
is $h->req(POST => "$fl/flags", \%K, { name => 'cost-api', is_enabled => JSON::PP::true })->{status}, 201, 'flag';
# 80 bombs: over 64 evaluation budgets at worst (832 would not fit in a body)
my $over = { strategies => [ @bomb_strategies[0 .. 1] ] };
splice @{ $over->{strategies}[1]{constraints} }, 16;
my $r = $h->req(POST => "$tg/rules", \%K, { flag_name => 'cost-api', rules => $over });
is $r->{status}, 400, '80 REGEX constraints: 400';
like $r->{json}{error} // '', qr/^rules: its constraints could cost up to \d+ units in one evaluation, over the limit/,
    '... saying why';
is $h->req(GET => "$tg/rules/cost-api", \%K)->{status}, 404, '... nothing stored';
$r = $h->req(POST => "$tg/rules", \%K, { flag_name => 'cost-api', rules => { strategies => [ @bomb_strategies[0 .. 0] ] } });
is $r->{status}, 201, '64 REGEX constraints: accepted (within the document bound)';

$h->teardown;
done_testing;
