#!/usr/bin/env perl
# Runs the C unit test for lib/ rules, hashing and names (TAP on stdout).
use strict; use warnings;
my $bin = ($ENV{TM_BUILD} // 'build') . '/t/unit/test_rules';
exec $bin or die "cannot run $bin: $!";
