#!/usr/bin/env perl
# C unit test for lib/tm_log: control characters escaped in log lines.
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_log');
