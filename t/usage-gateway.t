#!/usr/bin/env perl
# Usage end to end on the `make run` stack: evaluations through the gateway
# (the edge's events -> SQS -> the worker's aggregates) are read back through
# the gateway's /analytics prefix, and by `tmctl usage` and `tmctl stale`.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Stack;

my $h = TM::Harness->new;
my $s = TM::Stack->new(master_key => 'usage-gw-master');
plan skip_all => 'the nginx module is not built' unless -s $s->dir . '/nginx.pid';
ok $s->started, 'run.sh start' or diag $s->output;
my $gw = $s->url('INGRESS');

my $key = $h->req(POST => $s->url('AUTH') . '/admin/keys', { Authorization => 'Bearer usage-gw-master' },
                  { name => 'usage-gw' })->{json}{key};
ok $key, 'an API key';
my %K = (Authorization => "Bearer $key");
# the edge checks the key against its snapshot: a new key is known there once
# Redis brought it (README, "At the edge")
ok $h->wait_until(10, sub { $h->req(GET => "$gw/flags/flags", \%K)->{status} == 200 }), 'the gateway knows the key';
for my $f (qw(gw-flag gw-unused)) {
    is $h->req(POST => "$gw/flags/flags", \%K, { name => $f, is_enabled => JSON::PP::true })->{status}, 201,
        "flag $f created through the gateway";
}
# the edge learns the flag through Redis, then every evaluation is an event
ok $h->wait_until(10, sub { ($h->req(GET => "$gw/evaluate?user_id=u0&flag_name=gw-flag", \%K)->{json} // {})->{result} }),
    'the edge evaluates gw-flag';
for my $i (1 .. 19) {
    $h->req(GET => "$gw/evaluate?user_id=u$i&flag_name=gw-flag", \%K)->{status} == 200 or die "evaluate $i";
}
my $u;
ok $h->wait_until(60, sub {
    $u = $h->req(GET => "$gw/analytics/flags/gw-flag/usage", \%K);
    ($u->{json}{totals}{evaluations} // 0) >= 20 }), 'the 20 evaluations reach the aggregates';
is $u->{status}, 200, 'GET /analytics/flags/gw-flag/usage through the gateway: 200';
is $u->{json}{totals}{evaluations}, 20, 'exactly 20 (no event counted twice)';
is $u->{json}{totals}{true}, 20, 'all true';
is $h->req(GET => "$gw/analytics/flags/gw-flag/usage")->{status}, 401, 'no key: 401 (the service checks it)';
is $h->req(GET => "$gw/analytics/flags/nope/usage", \%K)->{status}, 404, 'unknown flag: 404 through the gateway';
my $r = $h->req(GET => "$gw/analytics/flags/gw-flag/usage?from=soon", \%K);
is $r->{status}, 400, 'bad date: 400 through the gateway';
like $r->{json}{error}, qr/from: "soon" is not a date/, '... with the reason';

$r = $h->req(GET => "$gw/analytics/usage/stale?days=7", \%K);
is $r->{status}, 200, 'GET /analytics/usage/stale: 200';
my %st = map { $_->{flag} => $_ } @{ $r->{json}{stale} };
like $st{'gw-unused'}{reason}, qr/no evaluation in 7 days/, 'gw-unused is stale';
like $st{'gw-flag'}{reason}, qr/answered true/, 'gw-flag answered only true';

# --- tmctl ---------------------------------------------------------------------
my $tmctl = ($ENV{TM_BUILD} // "$TM::Harness::ROOT/build") . '/tmctl/tmctl';
local $ENV{TOGGLEMASTER_URL} = $gw;
local $ENV{TOGGLEMASTER_API_KEY} = $key;
my $out = `$tmctl usage gw-flag 2>&1`;
is $?, 0, 'tmctl usage exits 0' or diag $out;
like $out, qr/^gw-flag in default, /m, 'a title';
like $out, qr/^\d{4}-\d\d-\d\d \d\d:00  #{40} +20  true 20 false 0$/m, 'the busiest hour: a full bar and its counts';
like $out, qr/^total 20 evaluations: true 20, false 0$/m, 'totals';
is scalar(() = $out =~ /^\d{4}-\d\d-\d\d \d\d:00  /mg), 24, '24 hourly lines';
$out = `$tmctl usage gw-flag --granularity day --from 2000-01-01 2>&1`;
isnt $?, 0, 'a range too long: tmctl fails';
like $out, qr/range too long: at most 366 days/, '... saying why';
$out = `$tmctl usage 'bad name' 2>&1`;
is $? >> 8, 2, 'a bad flag name: usage error';
$out = `$tmctl stale --days 7 2>&1`;
is $?, 0, 'tmctl stale exits 0' or diag $out;
like $out, qr/^gw-unused\s+never\s+0  no evaluation in 7 days$/m, 'tmctl stale: gw-unused';
like $out, qr/^\(2 flags checked\)$/m, 'every flag checked';
$out = `$tmctl stale --from 2026-01-01 2>&1`;
is $? >> 8, 2, 'stale does not take --from';

$s->stop;
$h->teardown;
done_testing;
