#!/usr/bin/env perl
# A failover in a Redis Cluster with replicas (three masters, three
# replicas): the master serving the {tm} slot is killed, its replica takes
# over, and the daemons and the edge, pointed at another master, find the
# new owner (the node they knew is unreachable, so they ask the configured
# node again, which answers MOVED). Meanwhile the edge serves its snapshot;
# afterwards a flag written through the admin API reaches it again.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key);

my $h = TM::Harness->new(redis_cluster => 1, redis_cluster_replicas => 1);
$h->redis;
is scalar($h->cluster_nodes), 6, 'six cluster nodes';
my $owner = $h->slot_owner('{tm}');
my @masters = grep { ($h->redis_cmd_at($_->{port}, 0, 'ROLE')->[0] // '') eq 'master' } $h->cluster_nodes;
is scalar @masters, 3, 'three masters';
my ($other) = grep { $_->{name} ne $owner->{name} } @masters;
my $URL = "redis://127.0.0.1:$other->{port}";

my $MASTER = 'redis-failover-master-key-012345';
my $A = $h->daemon('auth', MASTER_KEY => $MASTER, REDIS_URL => $URL, REDIS_CLUSTER => 1);
my $F = $h->daemon('flags', REDIS_URL => $URL, REDIS_CLUSTER => 1, AUTH_SERVICE_URL => $A);
my $ng = TM::Nginx->new($h, redis_url => $URL, redis_cluster => 1, workers => 2)->start;
sub ev {
    my ($user, $flag) = @_;
    my $r = $h->req(GET => $ng->url("/evaluate?user_id=$user&flag_name=$flag"));
    return $r->{status} == 200 ? ($r->{json}{result} ? 1 : 0) : -$r->{status};
}

my %K = (Authorization => 'Bearer ' . new_key($h, $A, $MASTER, 'failover')->{key});
is $h->req(POST => "$F/flags", \%K, { name => 'before', is_enabled => JSON::PP::true })->{status}, 201,
    'a flag before the failover';
ok $h->wait_until(10, sub { ev('u', 'before') == 1 }), 'served by the edge';

$h->stop($owner->{name});
ok $h->wait_until(30, sub { my $o = eval { $h->slot_owner('{tm}', $other->{port}) };
                            $o && $o->{name} ne $owner->{name} }),
    "$owner->{name} killed; its replica now serves the slot";
my $new = $h->slot_owner('{tm}', $other->{port});
is ev('u', 'before'), 1, 'the edge kept serving meanwhile';

my $r;
ok $h->wait_until(20, sub {
    $r = $h->req(POST => "$F/flags", \%K, { name => 'after', is_enabled => JSON::PP::true });
    $r->{status} == 201 || $r->{status} == 409 }), 'a flag after the failover';
ok $h->wait_until(20, sub { ($h->redis_cmd_at($new->{port}, 0, 'HEXISTS', '{tm}:flags', 'after') // 0) == 1 }),
    "published on the new owner $new->{name} (a write before the daemon found it is repaired by reconciliation)";
ok $h->wait_until(20, sub { ev('u', 'after') == 1 }), 'the edge found the new owner and serves it';
like $ng->error_log, qr/MOVED: slot \d+ of the \{tm\} keys is served by 127\.0\.0\.1:$new->{port}/,
    'edge: redirected to the new owner';
like $h->log('flags'), qr/MOVED: slot \d+ is at 127\.0\.0\.1:$new->{port}; following/,
    'flags daemon: redirected to the new owner';
done_testing;
