#!/usr/bin/env perl
# Every seed and every past crash of each fuzz target, replayed under
# ASan+UBSan (`make test` builds build-san/). A crash found by `make fuzz`
# goes into fuzz/regressions/<target>/ and is checked here from then on.
use strict; use warnings;
use Test::More;

my $build = $ENV{TM_BUILD} // 'build';
my @targets = map { m{fuzz/fuzz_(\w+)\.c$} ? $1 : () } glob 'fuzz/fuzz_*.c';
ok @targets >= 3, 'fuzz targets found: ' . join(' ', @targets);
for my $t (@targets) {
    my @inputs = grep { -f } (glob("fuzz/corpus/$t/*"), glob("fuzz/regressions/$t/*"));
    ok @inputs, "$t: has seed inputs";
    my $bin = "$build/fuzz/replay-$t";
    ok -x $bin, "$t: replay binary built" or next;
    my $out = `$bin @{[ map { quotemeta } @inputs ]} 2>&1`;
    is $?, 0, "$t: replays " . scalar(@inputs) . ' input(s) cleanly' or diag $out;
    unlike $out, qr/Sanitizer|runtime error/, "$t: no sanitizer report";
}
done_testing;
