#!/usr/bin/env perl
# C unit test for lib/: rules, hashing and names.
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_rules');
