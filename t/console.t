#!/usr/bin/env perl
# The admin console (console/, served by the gateway at /ui/) in a real
# browser: headless Chromium from Debian driven by Selenium (PyPI, test-only;
# scripts/deps.sh installs both) against a stack started as `make run` starts
# it (scripts/run.sh on free ports). t/console/console.py does the clicking
# and prints one JSON line per check: sign in, create a flag, switch it on,
# a strategy with a constraint, an invalid regex refused next to its field
# with nothing saved, "try it" against /evaluate, segments, a key created
# and revoked, read-only keys, the audit log and a flag's history with
# before/after and its filters, usage and stale flags (and their message once the analytics
# worker is stopped), no console errors, the CSP holding.
# TM_CONSOLE_SHOTS=dir keeps the screenshots there (docs/console/ holds some).
use strict; use warnings;
use Test::More;
use File::Temp qw(tempdir);
use JSON::PP;
use lib 't/lib';
use TM::Harness;
use TM::Stack;

for my $bin (qw(/usr/bin/chromium /usr/bin/chromedriver)) {
    plan skip_all => "$bin is missing (scripts/deps.sh installs chromium and chromium-driver)" unless -x $bin;
}
plan skip_all => 'python3 has no selenium (scripts/deps.sh installs it)'
    if system('python3 -c "import selenium" 2>/dev/null') != 0;

my $s = TM::Stack->new(master_key => 'console-master-key');
plan skip_all => 'the nginx module is not built' unless -s $s->dir . '/nginx.pid';
ok $s->started, 'run.sh start' or diag $s->output;

my $shots = $ENV{TM_CONSOLE_SHOTS} || tempdir('tm-console-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $t0 = time;
# the analytics worker's pid: console.py stops it to see the usage views say
# that the service is away
open my $py, '-|', 'python3', "$TM::Harness::ROOT/t/console/console.py", $s->url('INGRESS'), $s->master_key, $shots,
    $s->pid('analytics') // ''
    or die "console.py: $!";
my ($checks, $lines) = (0, '');
while (my $line = <$py>) {
    $lines .= $line;
    my $r = eval { decode_json($line) };
    if (!$r) { diag $line; next }
    $checks++;
    if (exists $r->{skip}) {
        SKIP: { skip "$r->{name}: $r->{skip}", 1 }
        next;
    }
    ok $r->{ok}, $r->{name} or diag $r->{diag};
}
close $py;
is $?, 0, 'console.py ran to its end' or diag $lines;
cmp_ok $checks, '>=', 30, "every check reported ($checks)";
my @png = glob("$shots/*.png");
cmp_ok scalar @png, '>=', 5, 'screenshots taken (' . join(' ', map { m{([^/]+)$} } @png) . ')';
# a generous bound: the browser part proves the console is quick to drive
cmp_ok time - $t0, '<', 180, 'the browser flows took less than 3 minutes (' . (time - $t0) . ' s)';

done_testing;
