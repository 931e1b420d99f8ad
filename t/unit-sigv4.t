#!/usr/bin/env perl
# Runs the C unit test for lib/tm_sigv4 against the AWS SigV4 test suite in
# ../shared/testdata/aws-sigv4 (beside the repository).
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_sigv4', $ENV{TM_SIGV4_VECTORS} // "$TM::Unit::ROOT/../shared/testdata/aws-sigv4");
