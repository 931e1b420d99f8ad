#!/usr/bin/env perl
# Rolling upgrade, daemons first (docs/environments.md, docs/redis-layout.md):
# an edge of the previous release (its module built from this repository's
# history at 25fe147, scripts/build-old-edge.sh) reading a Redis that the new
# daemons write (the real daemons, driven through their API: tm:envs,
# tm:flags@<env>, tm:rules@<env>, tm:keys:v2, change messages with
# "environment" and the new kinds) keeps answering the default
# environment right, and refuses scoped keys instead of granting them admin
# rights. Then the new edge, on the same Redis, answers every environment.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key);

my $OLD_REV = '25fe147';
plan skip_all => 'not a git checkout with the previous release'
    unless !system("git -C '$TM::Harness::ROOT' cat-file -e $OLD_REV 2>/dev/null");

my $BUILD = $ENV{TM_BUILD} // "$TM::Harness::ROOT/build";
my $old = `'$TM::Harness::ROOT/scripts/build-old-edge.sh' $OLD_REV '$BUILD/old-edge-$OLD_REV'`;
chomp $old;
ok -f $old, "the previous release's module built ($OLD_REV)" or BAIL_OUT('no old module');

my $h = TM::Harness->new;
$h->redis;
# the new daemons, writing Redis as they do (tm:envs, tm:flags@<env>,
# tm:rules@<env>, tm:keys:v2, messages with "environment")
my $M = 'master-upgrade-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, TARGETING_SERVICE_URL => $tg);
my $T = JSON::PP::true;
my $ADMIN = new_key($h, $auth, $M, 'upgrade-admin')->{key};
my %A = (Authorization => "Bearer $ADMIN");
sub api {   # an admin call that must succeed
    my ($method, $url, $body, $want) = @_;
    my $r = $h->req($method => $url, \%A, $body);
    is $r->{status}, $want // 200, "$method $url" or diag $r->{content};
    return $r->{json};
}
sub rule { my $pct = shift; { type => 'PERCENTAGE', value => $pct } }
api(POST => "$flags/environments", { name => 'staging' }, 201);
# checkout: on at 100 % in the default environment, off at 0 % in staging
api(POST => "$flags/flags", { name => 'checkout', is_enabled => $T }, 201);
api(POST => "$tg/rules", { flag_name => 'checkout', rules => rule(100) }, 201);
api(POST => "$tg/rules?environment=staging", { flag_name => 'checkout', rules => rule(0) }, 201);
api(POST => "$flags/flags?environment=staging", { name => 'staging-only', is_enabled => $T }, 201);
my $SERVER = $h->req(POST => "$auth/admin/keys", { Authorization => "Bearer $M" },
                     { name => 's', scope => 'server', environment => 'staging' })->{json}{key};
ok $SERVER, 'a server key for staging';
ok $h->redis_cmd('HEXISTS', 'tm:flags@staging', 'staging-only') && $h->redis_cmd('HEXISTS', 'tm:keys:v2', sha256_hex($SERVER)),
    'the daemons wrote the new layout';
ok !$h->redis_cmd('HEXISTS', 'tm:keys', sha256_hex($SERVER)), '... the scoped key in tm:keys:v2 only';

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

# staging changes through the daemons (messages with "environment"): the old
# edge re-reads the default's (unchanged) value
api(PUT => "$flags/flags/checkout?environment=staging", { is_enabled => $T });
api(PUT => "$tg/rules/checkout?environment=staging", { rules => rule(100) });
# a default change after them: proves the messages were read in order
api(PUT => "$tg/rules/checkout", { rules => rule(0) });
ok $h->wait_until(5, sub { ev('checkout') eq '0' }), 'old edge follows a default change after staging ones';
my $wrong = 0;
for (1 .. 20) { $wrong++ if ev('checkout') ne '0' }
is $wrong, 0, '... and answers the default, never staging (20 requests)';
# kinds it does not know (env, key2) make it reload: still right
api(POST => "$flags/environments", { name => 'qa' }, 201);
ok $h->req(POST => "$auth/admin/keys", { Authorization => "Bearer $M" },
           { name => 'q', scope => 'server', environment => 'qa' })->{status} == 201, 'a qa key';
api(PUT => "$tg/rules/checkout", { rules => rule(100) });
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
