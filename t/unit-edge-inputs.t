#!/usr/bin/env perl
# C unit test for lib/: what the edge parses from outside (query strings,
# OFREP bodies, Redis objects and messages), away from nginx.
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_edge_inputs');
