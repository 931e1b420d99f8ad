#!/usr/bin/env perl
# Runs the C unit test for lib/tm_sigv4 against the AWS SigV4 test suite in
# ../shared/testdata/aws-sigv4 (beside the repository).
use strict; use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
my $root = abs_path(dirname(__FILE__) . '/..');
my $vectors = $ENV{TM_SIGV4_VECTORS} // "$root/../shared/testdata/aws-sigv4";
my $bin = ($ENV{TM_BUILD} // "$root/build") . '/t/unit/test_sigv4';
exec $bin, $vectors or die "cannot run $bin: $!";
