#!/usr/bin/env perl
# C unit test for lib/: the admin API's request bodies (tm_bodies).
use strict; use warnings;
use lib 't/lib';
use TM::Unit;
TM::Unit::run('test_bodies');
