#!/usr/bin/env perl
# Runs the C unit test for lib/tm_sigv4 against the AWS SigV4 test suite
# vendored in t/data/aws-sigv4 (Apache-2.0; LICENSE and NOTICE beside it).
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_sigv4', $ENV{TM_SIGV4_VECTORS} // "$TM::Unit::ROOT/t/data/aws-sigv4");
