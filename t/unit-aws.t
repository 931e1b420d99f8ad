#!/usr/bin/env perl
# C unit test for lib/tm_aws and lib/tm_events: credentials, endpoints,
# signed requests, tolerant parsers, event envelope and DynamoDB items.
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_aws');
