#!/usr/bin/env perl
# Runs the C unit test for lib/tm_aws and lib/tm_events (TAP on stdout).
use strict; use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
my $root = abs_path(dirname(__FILE__) . '/..');
my $bin = ($ENV{TM_BUILD} // "$root/build") . '/t/unit/test_aws';
exec $bin or die "cannot run $bin: $!";
