#!/usr/bin/env perl
# The real browser client of OFREP event streams: @openfeature/web-sdk and
# @openfeature/ofrep-web-provider (npm, test-only: t/sse-browser/package.json,
# installed by scripts/deps.sh) loaded bundle-free in headless Chromium
# (t/sse-browser/browser.py) from another origin, pointed at the gateway of
# a `make run` stack with a client key, polling off. A flag changed through
# the admin API reaches the page as PROVIDER_CONFIGURATION_CHANGED with the
# new value, each time.
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
my $s = TM::Stack->new(master_key => 'sse-master');
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

for my $i (1 .. 3) {
    my $on = $i % 2 ? $T : JSON::PP::false;
    is $h->req(PUT => "$G/flags/flags/banner?environment=staging", $A, { is_enabled => $on })->{status}, 200,
        "admin API: banner " . ($on ? 'on' : 'off');
    $st = cmd("wait $i 10");
    is scalar(@{ $st->{changes} // [] }), $i, "the page saw PROVIDER_CONFIGURATION_CHANGED ($i)"
        or diag explain $st;
    is !!$st->{value}, !!$on, '... and the new value';
}
is_deeply $st->{errors}, [], 'no provider errors at the end';

diag `tail -5 @{[ $s->dir ]}/nginx/error.log` if grep { !$_ } Test::More->builder->summary;
print $in "quit\n";
close $in;
waitpid $pid, 0;
done_testing;
