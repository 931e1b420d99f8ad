#!/usr/bin/env perl
# The real browser client of OFREP event streams: @openfeature/web-sdk and
# @openfeature/ofrep-web-provider (npm, test-only: t/sse-browser/package.json,
# installed by scripts/deps.sh) loaded bundle-free in headless Chromium
# (t/sse-browser/browser.py) from another origin, pointed at the gateway of
# a `make run` stack with a client key, polling off. A flag changed through
# the admin API reaches the page as PROVIDER_CONFIGURATION_CHANGED with the
# new value, each time. Stream tokens live 10 s here: the gateway ends a
# stream at its token's expiry, the browser's reconnect gets 401, and the
# provider evaluates again and connects to the new URL; the page keeps
# receiving changes across expiries.
use strict; use warnings;
use Test::More;
use IPC::Open2;
use JSON::PP;
use lib 't/lib';
use TM::Harness;
use TM::Stack;

for my $bin (qw(/usr/bin/chromium /usr/bin/chromedriver)) {
    plan skip_all => "$bin is missing (scripts/deps.sh installs chromium and chromium-driver)" unless -x $bin;
}
plan skip_all => 'python3 has no selenium (scripts/deps.sh installs it)'
    if system('python3 -c "import selenium" 2>/dev/null') != 0;
plan skip_all => 'the npm packages are not installed (scripts/deps.sh: npm install in t/sse-browser)'
    unless -f "$TM::Harness::ROOT/t/sse-browser/node_modules/\@openfeature/ofrep-web-provider/index.esm.js";

my $h = TM::Harness->new;
my $TTL = 10;
my $s = TM::Stack->new(master_key => 'sse-master', env => { TM_SSE_TOKEN_TTL => "${TTL}s" });
plan skip_all => 'the nginx module is not built' unless -s $s->dir . '/nginx.pid';
ok $s->started, 'run.sh start' or diag $s->output;
my $G = $s->url('INGRESS');
my $M = { Authorization => 'Bearer sse-master' };
my $T = JSON::PP::true;

sub mint {
    my (%b) = @_;
    my $r = $h->req(POST => "$G/auth/admin/keys", $M, { name => 'k', %b });
    is $r->{status}, 201, 'key minted: ' . join(' ', map { "$_=$b{$_}" } sort keys %b) or diag $r->{content};
    return $r->{json}{key};
}
my $admin = mint();
my $A = { Authorization => "Bearer $admin" };
ok $h->wait_until(10, sub { $h->req(GET => "$G/flags/flags", $A)->{status} == 200 }), 'the gateway knows the admin key';
is $h->req(POST => "$G/flags/environments", $A, { name => 'staging' })->{status}, 201, 'environment staging';
is $h->req(POST => "$G/flags/flags", $A, { name => 'banner', client_visible => $T })->{status}, 201, 'flag banner';
my $client = mint(scope => 'client', environment => 'staging');
ok $h->wait_until(10, sub { $h->req(POST => "$G/ofrep/v1/evaluate/flags", { Authorization => "Bearer $client" },
                                    { context => { targetingKey => 'x' } })->{status} == 200 }), 'the gateway knows the client key';

my $pid = open2(my $out, my $in, 'python3', "$TM::Harness::ROOT/t/sse-browser/browser.py", $G, $client, 'banner');
sub cmd { print $in "$_[0]\n"; my $l = <$out>; return eval { decode_json($l // '') } // { errors => ["no answer: " . ($l // 'EOF')] } }

my $st = cmd('load');
ok $st->{ready}, 'the page has the provider ready' or diag explain $st;
is_deeply $st->{errors}, [], 'no provider errors';
ok !$st->{value}, 'banner: off';

# a change made while the page reconnects would be fetched without an event:
# each change waits for a stream with a few seconds to live
sub change {
    my ($i, $on) = @_;
    my $f = cmd('fresh 30 3');
    ok !$f->{timeout}, "($i) the page is on a stream with 3 s to live" or diag explain $f;
    is $h->req(PUT => "$G/flags/flags/banner?environment=staging", $A, { is_enabled => $on })->{status}, 200,
        "admin API: banner " . ($on ? 'on' : 'off');
    my $st = cmd("wait $i 10");
    is scalar(@{ $st->{changes} // [] }), $i, "the page saw PROVIDER_CONFIGURATION_CHANGED ($i)"
        or diag explain $st;
    is !!$st->{value}, !!$on, '... and the new value';
    return $st;
}

for my $i (1 .. 3) {
    $st = change($i, $i % 2 ? $T : JSON::PP::false);
}

# across token expiries: the stream ends, the old URL gets 401, the provider
# evaluates again (the ETag covers the stream URL: not a 304) and connects
# to the new URL
for my $i (4 .. 5) {
    my $n = cmd('next ' . ($TTL * 3));
    ok !$n->{timeout}, "($i) the token expired and the page is on a new stream URL" or diag explain $n;
    my ($old) = grep { $_->{url} eq ($n->{was} // '') } @{ $n->{streams} // [] };
    ok $old && $old->{errors} >= 1 && $old->{state} == 2,
        '... the old stream was ended by the gateway, its reconnect refused' or diag explain $old;
    my ($cur) = grep { $_->{open} && !$_->{closed} } reverse @{ $n->{streams} // [] };
    note sprintf '(%d) without a stream for %.1f s (the browser waits 3 s to reconnect, the provider 1 s after the 401)',
        $i, ($cur->{openedAt} - $old->{endedAt}) / 1000 if $old && $cur && $old->{endedAt} && $cur->{openedAt};
    $st = change($i, $i % 2 ? $T : JSON::PP::false);
}
cmp_ok scalar(@{ $st->{streams} // [] }), '>=', 3, 'the page went through several stream URLs';

is_deeply $st->{errors}, [], 'no provider errors at the end';

diag `tail -5 @{[ $s->dir ]}/nginx/error.log` if grep { !$_ } Test::More->builder->summary;
print $in "quit\n";
close $in;
waitpid $pid, 0;
done_testing;
