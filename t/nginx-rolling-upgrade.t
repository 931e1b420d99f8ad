#!/usr/bin/env perl
# Rolling upgrade, daemons first (docs/environments.md, docs/redis-layout.md):
# an edge of the previous release (its module built from this repository's
# history at 25fe147, scripts/build-old-edge.sh) reading a Redis that the new
# daemons write (tm:envs, tm:flags@<env>, tm:rules@<env>, tm:keys:v2, change
# messages with "environment" and the new kinds) keeps answering the default
# environment right, and refuses scoped keys instead of granting them admin
# rights. Then the new edge, on the same Redis, answers every environment.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $OLD_REV = '25fe147';
plan skip_all => 'not a git checkout with the previous release'
    unless !system("git -C '$TM::Harness::ROOT' cat-file -e $OLD_REV 2>/dev/null");

my $BUILD = $ENV{TM_BUILD} // "$TM::Harness::ROOT/build";
my $old = `'$TM::Harness::ROOT/scripts/build-old-edge.sh' $OLD_REV '$BUILD/old-edge-$OLD_REV'`;
chomp $old;
ok -f $old, "the previous release's module built ($OLD_REV)" or BAIL_OUT('no old module');

my $h = TM::Harness->new;
$h->redis;
my $J = JSON::PP->new->canonical;
sub flag_json { my ($n, $on) = @_; $J->encode({ id => 1, name => $n, description => '', client_visible => JSON::PP::false,
                                               is_enabled => $on ? JSON::PP::true : JSON::PP::false }) }
sub rule_json { my ($n, $pct) = @_; $J->encode({ id => 1, flag_name => $n, is_enabled => JSON::PP::true,
                                                rules => { type => 'PERCENTAGE', value => $pct } }) }
sub publish { my %m = @_; my $v = $h->redis_cmd('INCR', 'tm:version'); $h->redis_cmd('PUBLISH', 'tm:changes', $J->encode({ version => $v + 0, %m })) }

# what the new daemons write
my $ADMIN = 'tm_key_admin' . ('a' x 40);
my $SERVER = 'tm_key_server' . ('s' x 40);
$h->redis_cmd('HSET', 'tm:keys', sha256_hex($ADMIN), '{"id":1,"name":"admin"}');
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($SERVER), '{"id":2,"name":"s","scope":"server","environment":"staging"}');
$h->redis_cmd('HSET', 'tm:envs', 'default', '{"id":1,"name":"default","is_default":true}');
$h->redis_cmd('HSET', 'tm:envs', 'staging', '{"id":2,"name":"staging","is_default":false}');
$h->redis_cmd('HSET', 'tm:flags', 'checkout', flag_json('checkout', 1));
$h->redis_cmd('HSET', 'tm:rules', 'checkout', rule_json('checkout', 100));
$h->redis_cmd('HSET', 'tm:flags@staging', 'checkout', flag_json('checkout', 0));
$h->redis_cmd('HSET', 'tm:rules@staging', 'checkout', rule_json('checkout', 0));
$h->redis_cmd('HSET', 'tm:flags@staging', 'staging-only', flag_json('staging-only', 1));
$h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2 flag@staging rule@staging));
$h->redis_cmd('SET', 'tm:version', 5);

my $conf = <<'CONF';
        location = /k/evaluate { togglemaster_api_key on; togglemaster_evaluate; }
CONF
my $ng = TM::Nginx->new($h, module => $old, server => $conf);
$ng->start;
$h->wait_until(5, sub { ($h->req(GET => $ng->url('/evaluate?user_id=u1&flag_name=checkout'))->{json}{result} // 0) });

sub ev { my ($flag, $key) = @_;
         my $r = $h->req(GET => $ng->url(($key ? '/k' : '') . "/evaluate?user_id=u1&flag_name=$flag"), $key ? { 'X-API-Key' => $key } : {});
         return $r->{status} == 200 ? ($r->{json}{result} ? 1 : 0) : "status $r->{status}" }

is ev('checkout'), 1, 'old edge: the default environment (on, 100 %), not staging (off)';
is ev('staging-only'), 0, "old edge: a staging-only flag is unknown in the default";
is ev('checkout', $ADMIN), 1, 'old edge: admin key (tm:keys) accepted';
is ev('checkout', $SERVER), 'status 401', 'old edge: a scoped key (tm:keys:v2) is refused, never admin';

# a staging change, as the new daemons announce it: the old edge re-reads the
# default's (unchanged) value
$h->redis_cmd('HSET', 'tm:flags@staging', 'checkout', flag_json('checkout', 1));
publish(kind => 'flag', environment => 'staging', op => 'upsert', name => 'checkout');
$h->redis_cmd('HSET', 'tm:rules@staging', 'checkout', rule_json('checkout', 100));
publish(kind => 'rule', environment => 'staging', op => 'upsert', name => 'checkout');
# a default change after them: proves the messages were read in order
$h->redis_cmd('HSET', 'tm:rules', 'checkout', rule_json('checkout', 0));
publish(kind => 'rule', op => 'upsert', name => 'checkout');
ok $h->wait_until(5, sub { ev('checkout') eq '0' }), 'old edge follows a default change after staging ones';
my $wrong = 0;
for (1 .. 20) { $wrong++ if ev('checkout') ne '0' }
is $wrong, 0, '... and answers the default, never staging (20 requests)';
# kinds it does not know make it reload: still right
publish(kind => 'env', op => 'upsert', name => 'qa');
publish(kind => 'key2', op => 'upsert', name => sha256_hex($SERVER));
$h->redis_cmd('HSET', 'tm:rules', 'checkout', rule_json('checkout', 100));
publish(kind => 'rule', op => 'upsert', name => 'checkout');
ok $h->wait_until(5, sub { ev('checkout') eq '1' }), 'old edge after env/key2 messages: still right';
is ev('checkout', $SERVER), 'status 401', '... scoped key still refused';
unlike $ng->error_log, qr/\[(alert|emerg|crit)\]/, 'old edge: no alerts';
$ng->stop;

# the new edge on the same Redis: every environment
my $new = TM::Nginx->new($h, server => $conf);
$new->start;
$h->wait_until(5, sub { ($h->req(GET => $new->url('/evaluate?user_id=u1&flag_name=checkout'))->{json}{result} // 0) });
$ng = $new;
is ev('checkout'), 1, 'new edge: default';
is ev('staging-only', $SERVER), 1, "new edge: the server key evaluates in staging";
is ev('checkout', $ADMIN), 1, 'new edge: admin key, default';
done_testing;
