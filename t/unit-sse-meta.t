#!/usr/bin/env perl
# C unit test for lib/tm_sse_meta.c: the etag and lastModified of OFREP
# event-stream events, and their forms read back from a refetch.
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_sse_meta');
