#!/usr/bin/env perl
# C unit test for lib/tm_url.c: the Redis URL (redis://, rediss://, user,
# password, database) that the daemons and the nginx module both read.
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_redis_url');
