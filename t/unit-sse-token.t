#!/usr/bin/env perl
# C unit test for lib/tm_sse_token.c: the signed stream tokens of OFREP
# event-stream URLs.
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_sse_token');
