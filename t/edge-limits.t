#!/usr/bin/env perl
# Limits at the edge with the shipped dev.conf (make run's stack): admin
# routes are rate limited per client address (brute force on keys gets 429),
# bodies over 64 KiB are refused before they reach a daemon, and the
# evaluation path is not rate limited.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Stack;

my $h = TM::Harness->new;
my $s = TM::Stack->new(master_key => 'lim-master');
plan skip_all => 'the nginx module is not built' unless -s $s->dir . '/nginx.pid';
my $I = $s->url('INGRESS');
my $key = $h->req(POST => "$I/auth/admin/keys", { Authorization => 'Bearer lim-master' }, { name => 'lim' })->{json}{key};
ok $key, 'a key through the ingress';

# 200 guesses of the master key as fast as we can: the burst (40) passes to
# auth (403), the rest is refused at the edge (429) without reaching it.
my %seen;
$seen{ $h->req(POST => "$I/auth/admin/keys", { Authorization => "Bearer guess-$_" }, { name => 'x' })->{status} }++ for 1 .. 200;
ok $seen{429} && $seen{429} >= 100, "brute force rate limited: " . join(', ', map { "$_ x $seen{$_}" } sort keys %seen);
ok !grep({ $_ != 403 && $_ != 429 } keys %seen), 'only 403 and 429';
my $r = $h->req(POST => "$I/auth/admin/keys", { Authorization => 'Bearer x' }, { name => 'x' });
is $r->{status}, 429, 'still limited right after';
like $r->{json}{error}, qr/too many requests/, '429 is a JSON error';

# evaluation is not limited: the same client keeps getting answers
my %ev;
$ev{ $h->req(GET => "$I/evaluate?user_id=u&flag_name=none", { Authorization => "Bearer $key" })->{status} }++ for 1 .. 200;
is_deeply \%ev, { 200 => 200 }, '/evaluate is not rate limited';

sleep 3;   # the limiter refills at 20 r/s
$r = $h->req(POST => "$I/flags", { Authorization => "Bearer $key" }, '{"name":"' . ('x' x 70_000) . '"}');
is $r->{status}, 413, 'a body over 64 KiB is refused at the edge';
like $r->{json}{error}, qr/64 KiB/, '413 is a JSON error';
is $h->req(POST => "$I/flags", { Authorization => "Bearer $key" }, { name => 'after-limits' })->{status}, 201,
    'a normal write passes once the limiter has refilled';
done_testing;
