#!/usr/bin/env perl
# C unit test for lib/tm_usage: aggregate transactions, summaries (envelope
# v2), the usage API's ranges and series.
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_usage');
