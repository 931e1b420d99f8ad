#!/usr/bin/env perl
# C unit test for lib/tm_redis_keys.c: the Redis key schema shared by the
# daemons and the nginx module (standalone and cluster names), the cluster
# slot of a key, and the MOVED/ASK redirects both follow.
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_redis_keys');
