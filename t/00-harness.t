#!/usr/bin/env perl
# The harness itself: real PostgreSQL and Redis start on free ports, answer,
# and are gone after teardown.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;

my $h = TM::Harness->new;
like $h->postgres, qr{^postgresql://postgres\@127\.0\.0\.1:\d+/togglemaster$}, 'postgres url';
is $h->psql('SELECT 40 + 2'), '42', 'postgres answers';
like $h->redis, qr{^redis://127\.0\.0\.1:\d+$}, 'redis url';
is $h->redis_cmd('SET', 'k', "v\r\nx"), 'OK', 'redis SET';
is $h->redis_cmd('GET', 'k'), "v\r\nx", 'redis GET binary-safe';
my $pg = $h->pid('postgres');
ok kill(0, $pg), 'postgres pid alive';
$h->teardown;
ok !kill(0, $pg), 'postgres gone after teardown';

# A sanitizer report in a service log must fail the test file that ran it.
my $child = <<'PL';
use Test::More; use lib 't/lib'; use TM::Harness;
my $h = TM::Harness->new; $h->redis;
open my $f, '>>', $h->dir . '/redis.log' or die; print $f "x.c:1:2: runtime error: signed integer overflow\n"; close $f;
ok 1, 'body'; done_testing;
PL
my $out = `$^X -e \Q$child\E 2>&1`;
isnt $? >> 8, 0, 'sanitizer report in a log fails the test file';
like $out, qr/sanitizer report in redis log/, 'and names the log';

# The same for a report of the sanitized nginx module (asan.<pid> files).
(my $child2 = $child) =~ s{/redis\.log}{/asan.4242};
$child2 =~ s/runtime error: signed integer overflow/ERROR: AddressSanitizer: heap-buffer-overflow/;
$out = `$^X -e \Q$child2\E 2>&1`;
isnt $? >> 8, 0, 'an nginx module ASan report fails the test file';
like $out, qr/sanitizer report in .*asan\.4242/, 'and names the file';
done_testing;
