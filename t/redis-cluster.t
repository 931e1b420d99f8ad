#!/usr/bin/env perl
# Redis Cluster (as ElastiCache Serverless speaks it): three masters on
# loopback, joined by redis-cli --cluster create. The daemons
# (REDIS_CLUSTER=1) and nginx ("togglemaster_redis ... cluster") are pointed
# at a node that does NOT serve the slot of the {tm} keys, so both follow
# MOVED to the one that does. Every key shares that slot (the {tm} hash
# tag): the scripts and transactions run there without CROSSSLOT. Flags and
# rules written through the admin API reach /evaluate, an environment's too;
# a change arrives by
# pub/sub (on the edge, and on a node that is not the publisher's); reconciliation
# repairs the cluster; a restarted edge without its snapshot file loads
# from the cluster. Then the slot moves to the third node (CLUSTER SETSLOT
# MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE): auth answers an ASK on the
# node it names, and afterwards both sides follow the new MOVED. A
# database other than 0 is refused at start on both
# sides, and a standalone-mode process meeting a cluster says what to set.
use strict; use warnings;
use Test::More;
use IO::Socket::INET;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key replica subscriber change);

my $h = TM::Harness->new(redis_cluster => 1);
$h->redis;
my @nodes = $h->cluster_nodes;
is scalar @nodes, 3, 'three cluster nodes';
my $owner = $h->slot_owner('{tm}');
my ($other) = grep { $_->{name} ne $owner->{name} } @nodes;
isnt $other->{port}, $owner->{port}, "the {tm} slot is on $owner->{name}; we point everything at $other->{name}";
my $URL = "redis://127.0.0.1:$other->{port}";

my $MASTER = 'redis-cluster-master-key-0123456';
my $A = $h->daemon('auth', MASTER_KEY => $MASTER, REDIS_URL => $URL, REDIS_CLUSTER => 1);
my $F = $h->daemon('flags', REDIS_URL => $URL, REDIS_CLUSTER => 1, AUTH_SERVICE_URL => $A);
my $T = $h->daemon('targeting', REDIS_URL => $URL, REDIS_CLUSTER => 1, AUTH_SERVICE_URL => $A);
# a long check interval: a change must come by pub/sub, not by the check
my $ng = TM::Nginx->new($h, redis_url => $URL, redis_cluster => 1, workers => 2,
                        check_interval => '60s',
                        server => 'location = /stg/evaluate { togglemaster_environment staging; togglemaster_evaluate; }')->start;

sub ev {
    my ($user, $flag) = @_;
    my $r = $h->req(GET => $ng->url("/evaluate?user_id=$user&flag_name=$flag"));
    return $r->{status} == 200 ? ($r->{json}{result} ? 1 : 0) : -$r->{status};
}
sub states { TM::Nginx::m_all($ng->metrics, 'togglemaster_redis_sync_state') }
sub all_synced { my @s = states(); @s && !grep { $_ != 2 } @s }

# ---- the admin API to the edge through the cluster ---------------------------
my $key = new_key($h, $A, $MASTER, 'cluster')->{key};
my %K = (Authorization => "Bearer $key");
my $r = $h->req(POST => "$F/flags", \%K, { name => 'c-flag', is_enabled => JSON::PP::true });
is $r->{status}, 201, 'a flag created (the key checked in the cluster)';
ok $h->wait_until(10, sub { ev('alice', 'c-flag') == 1 }), 'the edge serves it';
ok $h->wait_until(5, sub { all_synced() }), 'every worker is synced';

is $h->redis_cmd('HEXISTS', '{tm}:flags', 'c-flag'), 1, 'the flag is in {tm}:flags';
is $h->redis_cmd_at($owner->{port}, 0, 'EXISTS', '{tm}:flags', '{tm}:version', '{tm}:keys', '{tm}:ready'), 4,
    'every key on the node that owns the slot of {tm}';
for my $n (@nodes) {
    is $h->redis_cmd_at($n->{port}, 0, 'DBSIZE'), 0, "$n->{name}: holds no key" if $n ne $owner;
}
my $ready = $h->redis_cmd('SMEMBERS', '{tm}:ready');
ok((grep { $_ eq 'flag' } @$ready) && (grep { $_ eq 'key' } @$ready), 'the daemons reconciled into the cluster');

like $h->log('flags'), qr/MOVED: slot \d+ is at 127\.0\.0\.1:$owner->{port}; following/,
    'flags daemon: the redirect is logged with the slot and the node';
like $ng->error_log, qr/MOVED: slot \d+ of the \{tm\} keys is served by 127\.0\.0\.1:$owner->{port}; reconnecting there/,
    'edge: the redirect is logged with the slot and the node';
unlike $ng->error_log, qr/CROSSSLOT/, 'edge: no CROSSSLOT';
unlike $h->log($_), qr/CROSSSLOT|redis: EVAL:/, "$_: no CROSSSLOT, no script error" for qw(auth flags targeting);

# ---- rules and segments ----------------------------------------------------
$r = $h->req(POST => "$T/rules", \%K, { flag_name => 'c-flag', rules => { type => 'USER_LIST', values => ['alice'] } });
is $r->{status}, 201, 'a rule created through the targeting daemon';
ok $h->wait_until(10, sub { ev('bob', 'c-flag') == 0 }), 'the edge applies it: bob is out';
is ev('alice', 'c-flag'), 1, '... alice is in';

# ---- an environment: its hashes ({tm}:flags@staging) in the same slot ------
is $h->req(POST => "$F/environments", \%K, { name => 'staging' })->{status}, 201, 'environment staging created';
is $h->req(POST => "$F/flags", \%K, { name => 'c-env', is_enabled => JSON::PP::true })->{status}, 201, 'flag c-env';
is $h->req(PUT => "$F/flags/c-env?environment=staging", \%K, { is_enabled => JSON::PP::false })->{status}, 200,
    '... off in staging';
ok $h->wait_until(10, sub {
    my $r = $h->req(GET => $ng->url('/stg/evaluate?user_id=u&flag_name=c-env'));
    $r->{status} == 200 && !$r->{json}{result} && ev('u', 'c-env') == 1 }),
    'the edge serves c-env off in staging, on in the default environment';
is $h->redis_cmd('HEXISTS', '{tm}:flags@staging', 'c-env'), 1, 'staging\'s flags are in {tm}:flags@staging';

# ---- a change by pub/sub ---------------------------------------------------
# (the daemons publish on the owner; a cluster broadcasts it to every node)
my $sub = subscriber($h, $other->{port});
$r = $h->req(PUT => "$F/flags/c-flag", \%K, { is_enabled => JSON::PP::false });
is $r->{status}, 200, 'the flag disabled';
my $msg = change($h, $sub, 0);
is $msg && $msg->{name}, 'c-flag', "its message reaches a subscriber on $other->{name}, which does not own the slot";
ok $h->wait_until(5, sub { ev('alice', 'c-flag') == 0 }), 'the change reaches the edge by pub/sub (check interval 60 s)';
$r = $h->req(PUT => "$F/flags/c-flag", \%K, { is_enabled => JSON::PP::true });
ok $h->wait_until(5, sub { ev('alice', 'c-flag') == 1 }), 'and back';

# ---- reconciliation --------------------------------------------------------
$h->redis_cmd('HDEL', '{tm}:flags', 'c-flag');
$h->redis_cmd('SREM', '{tm}:ready', 'flag');
ok $h->wait_until(10, sub { $h->redis_cmd('HEXISTS', '{tm}:flags', 'c-flag') == 1 }),
    'a flag lost in the cluster is put back by the reconciliation';
$h->redis_cmd('HSET', '{tm}:flags', 'ghost', TM::Nginx::flag_json('ghost', 1));
ok $h->wait_until(10, sub { $h->redis_cmd('HEXISTS', '{tm}:flags', 'ghost') == 0 }),
    'a flag the database lacks is removed';

# ---- a restarted edge, without its snapshot file, loads from the cluster ---
$h->req(POST => "$F/flags", \%K, { name => 'c-late', is_enabled => JSON::PP::true });
ok $h->wait_until(5, sub { ev('x', 'c-late') == 1 }), 'one more flag served';
$ng->stop;
unlink $ng->snapshot_file;
$ng->start;
ok $h->wait_until(10, sub { ev('x', 'c-late') == 1 && ev('bob', 'c-flag') == 0 }),
    'the restarted edge loaded flags and rules from the cluster';

# ---- the slot moves to another node (a resharding): ASK, then MOVED ---------
my ($to) = grep { $_->{name} ne $owner->{name} && $_->{name} ne $other->{name} } @nodes;
my %id = map { $_->{name} => $h->redis_cmd_at($_->{port}, 0, 'CLUSTER', 'MYID') } @nodes;
my $slot = $h->redis_cmd_at($owner->{port}, 0, 'CLUSTER', 'KEYSLOT', '{tm}');
# a key the old owner does not have is answered with ASK once the slot is
# migrating: auth reads {tm}:keys:used each second
$h->redis_cmd_at($owner->{port}, 0, 'DEL', '{tm}:keys:used');
is $h->redis_cmd_at($to->{port}, 0, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $id{ $owner->{name} }), 'OK',
    "slot $slot importing on $to->{name}";
is $h->redis_cmd_at($owner->{port}, 0, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $id{ $to->{name} }), 'OK',
    "... and migrating on $owner->{name}";
ok $h->wait_until(10, sub { $h->log('auth') =~ /ASK: slot $slot is at 127\.0\.0\.1:$to->{port}; asking that node this once/ }),
    'auth: an ASK is answered on the node it names';
my $keys = $h->redis_cmd_at($owner->{port}, 0, 'CLUSTER', 'GETKEYSINSLOT', $slot, 1000);
is $h->redis_cmd_at($owner->{port}, 0, 'MIGRATE', '127.0.0.1', $to->{port}, '', 0, 5000, 'KEYS', @$keys), 'OK',
    scalar(@$keys) . ' keys migrated';
for my $n ($to, $owner, $other) {
    $h->redis_cmd_at($n->{port}, 0, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $id{ $to->{name} });
}
ok $h->wait_until(10, sub { $h->slot_owner('{tm}')->{name} eq $to->{name} }), "$to->{name} owns the slot now";
$r = $h->req(POST => "$F/flags", \%K, { name => 'c-moved', is_enabled => JSON::PP::true });
is $r->{status}, 201, 'a flag created after the move';
ok $h->wait_until(10, sub { ev('x', 'c-moved') == 1 }), 'the edge serves it';
is $h->redis_cmd_at($to->{port}, 0, 'HEXISTS', '{tm}:flags', 'c-moved'), 1, "it is on $to->{name}";
like $h->log('flags'), qr/MOVED: slot $slot is at 127\.0\.0\.1:$to->{port}; following/, 'flags daemon followed the slot';
like $ng->error_log, qr/MOVED: slot $slot of the \{tm\} keys is served by 127\.0\.0\.1:$to->{port}/,
    'edge followed the slot';
is ev('bob', 'c-flag'), 0, 'rules still apply';

# ---- refused at start: a database other than 0, a bad REDIS_CLUSTER ---------
my $pg = $h->postgres;
for my $case (["$URL/2", 1, qr/database 0 only/], [$URL, 'yes', qr/REDIS_CLUSTER must be 1 .* or 0/]) {
    my ($url, $mode, $want) = @$case;
    my $bin = ($ENV{TM_BUILD} // "$TM::Harness::ROOT/build") . '/admin-daemons/togglemaster-flags';
    my $out = `REDIS_URL='$url' REDIS_CLUSTER='$mode' DATABASE_URL='$pg' PORT=${\ TM::Harness::free_port()} BIND_ADDR=127.0.0.1 TOGGLEMASTER_ENV=development timeout 10 $bin 2>&1`;
    isnt $? >> 8, 0, "flags daemon with REDIS_URL=$url REDIS_CLUSTER=$mode: does not start";
    like $out, $want, '  and says why';
}
my $conf = $ng->dir . '/t.conf';
{
    open my $f, '<', $ng->dir . '/nginx.conf' or die;
    local $/;
    (my $c = <$f>) =~ s{togglemaster_redis "[^"]*" cluster;}{togglemaster_redis "$URL/2" cluster;};
    open my $o, '>', $conf or die;
    print $o $c;
}
my $out = `${\ TM::Nginx::shell_env($h)} nginx -t -p ${\ $ng->dir} -c $conf 2>&1`;
isnt $?, 0, 'nginx -t refuses "togglemaster_redis .../2 cluster"';
like $out, qr/a Redis Cluster has database 0 only/, '  and says why';

# ---- standalone mode against a cluster: a clear error ----------------------
my ($h2, $F2) = replica($h, 'flags', REDIS_URL => $URL, AUTH_SERVICE_URL => $A);
$h->req(POST => "$F2/flags", \%K, { name => 'c-standalone', is_enabled => JSON::PP::true });
ok $h2->wait_until(5, sub { $h2->log('flags') =~ /is a Redis Cluster .*set REDIS_CLUSTER=1/ }),
    'a flags daemon without REDIS_CLUSTER says to set it';
$h2->teardown;

my $mark = length $ng->error_log;
$ng->{redis_cluster} = 0;
$ng->write_conf;
$ng->restart;
ok $h->wait_until(10, sub { substr($ng->error_log, $mark) =~ /redis is a Redis Cluster: add "cluster" to togglemaster_redis/ }),
    'an edge without "cluster" says to add it';
is ev('x', 'c-late'), 1, '... and serves its snapshot file meanwhile';

done_testing;
