#!/usr/bin/env perl
# Redis Cluster with TLS everywhere (tls-cluster yes, as ElastiCache
# Serverless is TLS only) and a password: the daemons and nginx, pointed at
# a node's TLS port that does not serve the {tm} slot, follow MOVED to the
# owner's TLS port, verify its certificate (the test CA) and authenticate
# there; a flag written through the admin API reaches the edge, and a change
# arrives by pub/sub.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key);

my $h = TM::Harness->new(redis_cluster => 1, redis_tls => 1, redis_password => 'cluster-pw');
$h->redis;
my $owner = $h->slot_owner('{tm}');
my ($other) = grep { $_->{name} ne $owner->{name} } $h->cluster_nodes;
my $URL = "rediss://:cluster-pw\@127.0.0.1:$other->{tls_port}";

my $MASTER = 'redis-cluster-tls-master-key-012';
my $A = $h->daemon('auth', MASTER_KEY => $MASTER, REDIS_URL => $URL, REDIS_CLUSTER => 1);
my $F = $h->daemon('flags', REDIS_URL => $URL, REDIS_CLUSTER => 1, AUTH_SERVICE_URL => $A);
my $ng = TM::Nginx->new($h, redis_url => $URL, redis_cluster => 1, check_interval => '60s')->start;
sub ev {
    my ($user, $flag) = @_;
    my $r = $h->req(GET => $ng->url("/evaluate?user_id=$user&flag_name=$flag"));
    return $r->{status} == 200 ? ($r->{json}{result} ? 1 : 0) : -$r->{status};
}

my $key = new_key($h, $A, $MASTER, 'tls-cluster')->{key};
my %K = (Authorization => "Bearer $key");
is $h->req(POST => "$F/flags", \%K, { name => 't-flag', is_enabled => JSON::PP::true })->{status}, 201,
    'a flag created';
ok $h->wait_until(10, sub { ev('u', 't-flag') == 1 }), 'the edge serves it over TLS from the owner';
is $h->redis_cmd('HEXISTS', '{tm}:flags', 't-flag'), 1, 'the flag is in {tm}:flags';
like $h->log('flags'), qr/MOVED: slot \d+ is at 127\.0\.0\.1:$owner->{tls_port}; following/,
    'flags daemon followed MOVED to the owner\'s TLS port';
like $ng->error_log, qr/MOVED: slot \d+ of the \{tm\} keys is served by 127\.0\.0\.1:$owner->{tls_port}/,
    'edge followed MOVED to the owner\'s TLS port';
unlike $ng->error_log . $h->log('flags') . $h->log('auth'), qr/TLS:|TLS handshake|not trusted|AUTH.*failed|cluster-pw/,
    'no TLS or AUTH error, no password in a log';

is $h->req(PUT => "$F/flags/t-flag", \%K, { is_enabled => JSON::PP::false })->{status}, 200, 'the flag disabled';
ok $h->wait_until(5, sub { ev('u', 't-flag') == 0 }), 'the change arrives by pub/sub';
done_testing;
