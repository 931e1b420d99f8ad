#!/usr/bin/env perl
# Issue 11.1: no REGEX rule and no identity can stall an nginx worker.
# The issue's patterns against identities up to 4 KiB through /evaluate on a
# single worker: every answer comes back well within a generous bound, a
# concurrent stream of ordinary evaluations stays fast while bombs are sent,
# /metrics counts each bound hit exactly, and the targeting API refuses the
# compile bombs with a 400 that says why. (Before lib/tm_regex, one 200-byte
# identity kept the worker busy 1.8 s and a 4 KiB one more than 20 s.)
use strict; use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key);

my $h = TM::Harness->new;
$h->redis;

# A bound no bounded evaluation comes near (they take about a millisecond),
# generous for a loaded machine; the old matcher took seconds.
my $BOUND = 1.0;

sub regex_rule {
    my ($pattern) = @_;
    return { strategies => [ { constraints => [
        { contextName => 'userId', operator => 'REGEX', value => $pattern } ] } ] };
}
my %BOMB = (
    'rx-nested'  => '((a{1,50}){1,50}){1,20}b',   # the issue's
    # exponential with backtracking; the API refuses backreferences now, so
    # this is a rule stored by an older release: it never compiles, never matches
    'rx-backref' => '(a*)*\1b',
);
TM::Nginx::set_flag($h, 'plain', 1, quiet => 1);
TM::Nginx::set_flag($h, 'rx-user', 1, quiet => 1);
TM::Nginx::set_rule($h, 'rx-user', regex_rule('^user-[0-9]+$'), 1, quiet => 1);
for my $f (sort keys %BOMB) {
    TM::Nginx::set_flag($h, $f, 1, quiet => 1);
    TM::Nginx::set_rule($h, $f, regex_rule($BOMB{$f}), 1, quiet => 1);
}
$h->redis_cmd('SET', 'tm:version', 100);
TM::Nginx::mark_ready($h);
# one worker: a bomb that stalled it would stall every other request
my $ng = TM::Nginx->new($h, workers => 1);
$ng->start;
ok $h->wait_until(10, sub { eval { $ng->evaluate('u', 'plain') } }), 'snapshot loaded';

is $ng->evaluate('user-42', 'rx-user'), 1, 'an ordinary REGEX matches';
is $ng->evaluate('user-42x', 'rx-user'), 0, '... and does not';

# identities: what each gives with PCRE2 (lib/tm_regex.h)
my %ID = (
    short => 'a' x 200,                 # no 'b': a definite no, no bound hit
    full  => 'b' . 'a' x 1023,          # 1024 bytes, 'b' first: the budget runs out
    long  => 'a' x 4096,                # over 1024 bytes: too long
);

my $m0 = $ng->metrics;
my %sent = (limit => 0, too_long => 0);
# flag, identity, expected result, the bound it hits (if any)
for my $c ([ 'rx-nested', 'short', 0 ], [ 'rx-nested', 'full', 0, 'limit' ],
           [ 'rx-nested', 'long', 0, 'too_long' ], [ 'rx-backref', 'short', 0 ],
           [ 'rx-backref', 'full', 0 ], [ 'rx-backref', 'long', 0 ]) {
    my ($f, $k, $want, $bound) = @$c;
    my ($r, $t) = $ng->timed_eval($ID{$k}, $f);
    is $r->{status}, 200, "$f, $k identity: 200";
    is $r->{json}{result} ? 1 : 0, $want, "$f, $k identity: " . ($want ? 'true' : 'false');
    cmp_ok $t, '<', $BOUND, sprintf('%s, %s identity: answered in %.3f s', $f, $k, $t);
    $sent{$bound}++ if $bound;
}

# --- the worker keeps serving others while bombs arrive ---
my $BOMBS = 40;
my $busy = $ng->serves_while(30, 'plain', sub {
    for my $i (1 .. $BOMBS) {
        my $k = $i % 2 ? 'full' : 'long';
        $h->req(GET => $ng->url('/evaluate?user_id=' . TM::Nginx::_esc($ID{$k}) . '&flag_name=rx-nested'));
    }
});
ok $busy->{done}, "the $BOMBS bomb requests completed within 30 s";
$sent{limit} += $BOMBS / 2;
$sent{too_long} += $BOMBS / 2;
ok !$busy->{bad}, "$busy->{n} ordinary evaluations during the bombs: all 200 true";
cmp_ok $busy->{slowest}, '<', $BOUND, sprintf('... the slowest took %.3f s (median %.4f s)',
                                              $busy->{slowest}, $busy->{median});

# --- /metrics counts each bound hit, exactly ---
my $m1 = $ng->metrics;
my $d = sub { my $k = "togglemaster_regex_unmatched_total{reason=\"$_[0]\"}";
              ($m1->{$k} // -1) - ($m0->{$k} // 0) };
is $d->('limit'), $sent{limit}, "/metrics: $sent{limit} match-budget hits";
is $d->('too_long'), $sent{too_long}, "/metrics: $sent{too_long} identities over 1024 bytes";
is $d->('bad_subject'), 0, '/metrics: no bad subjects';
my ($r2) = $ng->timed_eval("\xff" x 3, 'rx-user');
is $r2->{status}, 400, 'an identity that is not UTF-8 never reaches the matcher (/evaluate refuses it)';
ok exists $m1->{'togglemaster_redis_reconnects_total'}, '/metrics still complete after the new lines';

unlike $ng->error_log, qr/\[(alert|emerg|crit)\]|exited on signal/, 'no alerts or crashes';

# --- the targeting API: compile bombs refused with 400 JSON, quickly ---
my $M = 'master-test-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $fl = $h->daemon('flags', AUTH_SERVICE_URL => $auth);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my %K = (Authorization => 'Bearer ' . new_key($h, $auth, $M, 'regex-stall')->{key});
is $h->req(POST => "$fl/flags", \%K, { name => 'rx-api', is_enabled => JSON::PP::true })->{status}, 201, 'flag';
for my $case (
    [ '((a{1,100}){1,100}){1,100}', qr/expand too far/ ],
    [ '(' x 40 . 'a' . ')' x 40, qr/at most 32 levels/ ],
    [ 'a(*SKIP)b', qr/not supported/ ],
    [ 'x' x 1025, qr/at most 1024 bytes/ ],
    [ '(a', qr/missing closing parenthesis/ ],
    [ '(a*)*\1b', qr/backreferences .* not supported/ ],
) {
    my ($pat, $why) = @$case;
    my $t0 = time;
    my $rr = $h->req(POST => "$tg/rules", \%K, { flag_name => 'rx-api', rules => regex_rule($pat) });
    my $dt = time - $t0;
    is $rr->{status}, 400, substr($pat, 0, 30) . ': 400';
    like $rr->{json}{error} // '', qr/constraints\[0\]\.value: .*$why/, '... saying why';
    cmp_ok $dt, '<', $BOUND * 2, sprintf('... in %.3f s', $dt);
}
my $r = $h->req(POST => "$tg/rules", \%K, { flag_name => 'rx-api', rules => regex_rule($BOMB{'rx-nested'}) });
is $r->{status}, 201, "the issue's runtime bomb compiles (its matches are bounded)";
# without its rule the flag answers true for everyone: 'zzz' turns false
# once the rule has reached the edge
ok $h->wait_until(10, sub { my ($x) = $ng->timed_eval('zzz', 'rx-api');
                            $x->{status} == 200 && $x->{json} && !$x->{json}{result} }),
    'the edge has it';
my ($r3, $t3) = $ng->timed_eval($ID{full}, 'rx-api');
ok $r3->{status} == 200 && !$r3->{json}{result} && $t3 < $BOUND, sprintf('... and answers in %.3f s', $t3);

$h->teardown;
done_testing;
