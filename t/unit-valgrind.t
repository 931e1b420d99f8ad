#!/usr/bin/env perl
# Every C unit test (t/unit-*.t) once more under valgrind memcheck, from the
# plain build (ASan binaries do not run under valgrind). Any error or
# definite leak fails.
use strict; use warnings;
use Test::More;

plan skip_all => 'valgrind not installed' unless grep { -x "$_/valgrind" } split /:/, $ENV{PATH};
my @units = grep { !/valgrind/ } glob 't/unit-*.t';
ok @units >= 2, 'unit tests found: ' . join(' ', @units);
for my $t (@units) {
    local $ENV{TM_BUILD} = 'build';
    local $ENV{TM_UNIT_PREFIX} = 'valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect';
    my $out = `$^X $t 2>&1`;
    my $rc = $? >> 8;
    isnt $rc, 99, "$t: no memcheck errors or leaks" or diag join "\n", grep { /^==/ } split /\n/, $out;
    is $rc, 0, "$t: passes under valgrind" or diag join "\n", grep { /^not ok|^#/ } split /\n/, $out;
}
done_testing;
