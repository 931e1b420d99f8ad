#!/usr/bin/env perl
# A restarted (empty) Redis under the whole stack: the edge keeps answering
# with its snapshot — no 401s, no flags gone — until the daemons have
# reconciled each kind into the new Redis (tm:ready), which they notice and
# do within about a second, not a reconciliation period (10 s here).
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Stack;
use Time::HiRes qw(time sleep);

my $h = TM::Harness->new;
my $s = TM::Stack->new(master_key => 'rr-master');
plan skip_all => 'the nginx module is not built' unless -s $s->dir . '/nginx.pid';
ok $s->started, 'stack up' or BAIL_OUT($s->output);
my ($A, $F, $T, $E) = map { $s->url($_) } qw(AUTH FLAGS TARGETING EVAL);
my $key = $h->req(POST => "$A/admin/keys", { Authorization => 'Bearer rr-master' }, { name => 'rr' })->{json}{key};
my %K = (Authorization => "Bearer $key");
$h->req(POST => "$F/flags", \%K, { name => "rr-$_", is_enabled => JSON::PP::true }) for 1 .. 5;
$h->req(POST => "$T/rules", \%K, { flag_name => 'rr-5', rules => { type => 'USER_LIST', values => ['alice'] } });
sub ev { my ($u, $f) = @_; $h->req(GET => "$E/evaluate?user_id=$u&flag_name=$f", \%K) }
ok $h->wait_until(5, sub { my $r = ev('bob', 'rr-5'); $r->{json} && defined $r->{json}{result} && !$r->{json}{result} }),
    'edge serves the flags and the rule';

my $redis_pid = $s->pid('redis');
ok $s->restart('redis'), 'Redis restarted (empty)';
isnt $s->pid('redis'), $redis_pid, 'a new Redis process';

# While the daemons refill it, every answer stays right and authorised.
my %bad;
my $n = 0;
my $t0 = time;
while (time - $t0 < 3) {
    my $r = ev('alice', 'rr-' . (1 + $n % 5));
    $n++;
    $bad{ $r->{status} }++ if $r->{status} != 200;
    $bad{wrong}++ if $r->{status} == 200 && !$r->{json}{result};
}
is_deeply \%bad, {}, "$n evaluations during the refill: all 200 and right";

# The daemons reconcile at once (tm:ready lost), long before their 10 s period.
ok $h->wait_until(4, sub {
    my $m = `redis-cli -p ${\ $s->port('REDIS')} SMEMBERS tm:ready`;
    $m =~ /flag/ && $m =~ /rule/ && $m =~ /key/ }), 'all kinds reconciled into the new Redis within seconds';
is $h->req(POST => "$F/flags", \%K, { name => 'rr-new', is_enabled => JSON::PP::true })->{status}, 201, 'a new flag';
# each worker reconnects on its own backoff (at most togglemaster_backoff_max, 5 s)
ok $h->wait_until(8, sub { (ev('x', 'rr-new')->{json} // {})->{result} }), 'and the edge serves it';
is ev('bob', 'rr-5')->{json}{result}, JSON::PP::false, 'the rule still applies';
done_testing;
