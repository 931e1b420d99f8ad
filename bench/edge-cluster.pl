#!/usr/bin/env perl
# Redis Cluster figures (not pass/fail): the daemons and one nginx worker
# pointed at a cluster node that does not serve the {tm} slot (so both
# follow MOVED), against the same on one Redis.
#   perl -I t/lib bench/edge-cluster.pl            (cluster, then one Redis)
# - first load: an edge started without a snapshot file, until it answers
#   from Redis (with the cluster: connect, MOVED, reconnect, load);
# - propagation: PUT /flags/<name> through the flags daemon until /evaluate
#   answers the new value (publication, pub/sub across nodes, the edge's
#   delta; includes the HTTP round trips).
use strict; use warnings;
use Time::HiRes qw(time sleep);
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key);

sub pct { my ($p, @v) = @_; @v = sort { $a <=> $b } @v; $v[int($p * $#v + 0.5)] }

sub run {
    my ($cluster) = @_;
    my $h = TM::Harness->new($cluster ? (redis_cluster => 1) : ());
    my $url = $h->redis;
    my %mode;
    if ($cluster) {
        my $owner = $h->slot_owner('{tm}');
        my ($other) = grep { $_->{name} ne $owner->{name} } $h->cluster_nodes;
        $url = "redis://127.0.0.1:$other->{port}";
        %mode = (REDIS_CLUSTER => 1);
    }
    my $master = 'bench-cluster-master-key-0123456';
    my $A = $h->daemon('auth', MASTER_KEY => $master, REDIS_URL => $url, %mode);
    my $F = $h->daemon('flags', REDIS_URL => $url, AUTH_SERVICE_URL => $A, %mode);
    my %K = (Authorization => 'Bearer ' . new_key($h, $A, $master, 'bench')->{key});
    $h->req(POST => "$F/flags", \%K, { name => 'probe', is_enabled => JSON::PP::true });
    my $ng = TM::Nginx->new($h, redis_url => $url, redis_cluster => $cluster, workers => 1,
                            check_interval => '60s', snapshot => 0);
    my $t = time;
    $ng->start;
    $h->wait_until(10, sub { eval { $ng->evaluate('u', 'probe') } });
    my $first = (time - $t) * 1000;
    my @ms;
    for my $i (1 .. 100) {
        my $want = $i % 2 ? 0 : 1;
        $t = time;
        $h->req(PUT => "$F/flags/probe", \%K, { is_enabled => $want ? JSON::PP::true : JSON::PP::false });
        1 until (eval { $ng->evaluate('u', 'probe') } // -1) == $want || time - $t > 10;
        push @ms, (time - $t) * 1000;
    }
    printf "%-11s first load %.0f ms; propagation p50 %.1f ms, p99 %.1f ms (n=%d)\n",
        $cluster ? 'cluster:' : 'one Redis:', $first, pct(0.5, @ms), pct(0.99, @ms), scalar @ms;
    $h->teardown;
}

run(1);
run(0);
