#!/usr/bin/env perl
# C unit test for lib/: the strategies engine, segments, contexts, MurmurHash3.
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_engine');
