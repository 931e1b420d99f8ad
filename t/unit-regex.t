#!/usr/bin/env perl
# C unit test for lib/tm_regex: bounded REGEX matching (PCRE2).
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_regex');
