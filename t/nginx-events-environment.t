#!/usr/bin/env perl
# Events carry the environment evaluated, end to end: nginx (every kind of
# evaluation, with the environment picked by the key, by the location's
# togglemaster_environment, or the default) -> SQS (moto) -> the analytics
# worker -> one DynamoDB item each, whose `environment` attribute names that
# environment, and is absent for the default one (docs/events.md). Also
# after an environment appears at run time.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::AWS;

my $h = TM::Harness->new;
$h->redis;
my $moto = $h->moto;
my $aws = TM::AWS->new($moto);
my $table = 'ToggleMasterAnalytics';
my $q = $aws->create_pipeline(queue => 'tm-events', table => $table, max_receive => 5, visibility => 5)->{queue_url};

$h->start('analytics', undef, AWS_ENDPOINT_URL => $moto, AWS_SQS_URL => $q, AWS_DYNAMODB_TABLE => $table,
          AWS_REGION => 'us-east-1', AWS_ACCESS_KEY_ID => 'test', AWS_SECRET_ACCESS_KEY => 'test',
          BIND_ADDR => '127.0.0.1', TM_SQS_WAIT_SECONDS => 1, TM_POLLERS => 2, TM_BACKOFF_MAX_MS => 400);

# checkout: off in the default environment, on in staging and production;
# banner (client_visible) and beta (not) in staging only
my %K = map { $_ => "tm_key_$_" . ('x' x 40) } qw(admin prod client qa);
$h->redis_cmd('HSET', 'tm:keys', sha256_hex($K{admin}), '{"id":1,"name":"admin"}');
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{prod}), TM::Nginx::key2_json(server => 'production', 2));
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{client}), TM::Nginx::key2_json(client => 'staging', 3));
$h->redis_cmd('HSET', 'tm:envs', $_->[0], TM::Nginx::env_json(@$_)) for ['default', 1], ['staging', 2], ['production', 3];
$h->redis_cmd('HSET', 'tm:flags', 'checkout', TM::Nginx::env_flag_json('checkout', 0));
$h->redis_cmd('HSET', 'tm:flags@staging', 'checkout', TM::Nginx::env_flag_json('checkout', 1, 1));
$h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', 1, 1));
$h->redis_cmd('HSET', 'tm:flags@staging', 'beta', TM::Nginx::env_flag_json('beta', 1, 0));
$h->redis_cmd('HSET', 'tm:flags@production', 'checkout', TM::Nginx::env_flag_json('checkout', 1));
$h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2 flag@staging rule@staging
                                     flag@production rule@production));
$h->redis_cmd('SET', 'tm:version', 3);

my $ng = TM::Nginx->new($h, workers => 2, http => <<"CONF", server => <<'CONF');
    togglemaster_events on;
    togglemaster_sqs_queue_url $q;
    togglemaster_aws_endpoint $moto;
    togglemaster_aws_region us-east-1;
    togglemaster_events_batch 100 200ms;
    togglemaster_events_bulk raw;        # one event per flag: this test follows each
CONF
        togglemaster_identity $arg_user;
        location = /k/evaluate { togglemaster_api_key on; togglemaster_evaluate; }
        location /k/ofrep/v1/ { togglemaster_api_key server client; togglemaster_ofrep; }
        location = /stg/evaluate { togglemaster_environment staging; togglemaster_evaluate; }
        location /stg/ofrep/v1/ { togglemaster_environment staging; togglemaster_ofrep; }
        location = /stg/var { togglemaster_environment staging; return 200 "$togglemaster_flag_checkout\n"; }
        location = /stg/gated { togglemaster_environment staging; togglemaster_require checkout; togglemaster_health; }
        location = /qa/evaluate { togglemaster_environment qa; togglemaster_evaluate; }
CONF
$ng->start;
ok $h->wait_until(10, sub { ($h->req(GET => $ng->url('/stg/evaluate?user_id=warm&flag_name=checkout'))->{json}{result} // 0) }),
    'the snapshot holds staging';

my %want;   # "user/flag" -> [result, environment or undef]
sub ev {
    my ($path, $key, $user, $flag, $env) = @_;
    my $r = $h->req(GET => $ng->url("$path?user_id=$user&flag_name=$flag"), $key ? { 'X-API-Key' => $key } : {});
    is $r->{status}, 200, "$path as $user: 200";
    $want{"$user/$flag"} = [$r->{json}{result} ? 1 : 0, $env];
    return $r->{json}{result} ? 1 : 0;
}
sub ofrep {
    my ($path, $key, $user, $env) = @_;
    my $r = $h->req(POST => $ng->url($path), $key ? { 'X-API-Key' => $key } : {}, { context => { targetingKey => $user } });
    is $r->{status}, 200, "$path as $user: 200";
    my @flags = $r->{json}{flags} ? @{ $r->{json}{flags} } : ($r->{json});
    $want{"$user/$_->{key}"} = [$_->{value} ? 1 : 0, $env] for @flags;
    return [sort map { $_->{key} } @flags];
}

is ev('/evaluate', undef, 'd1', 'checkout', undef), 0, 'keyless /evaluate: the default environment (off)';
is ev('/k/evaluate', $K{admin}, 'a1', 'checkout', undef), 0, 'admin key: the default environment';
is ev('/stg/evaluate', undef, 's1', 'checkout', 'staging'), 1, 'togglemaster_environment staging (on)';
is ev('/k/evaluate', $K{prod}, 'p1', 'checkout', 'production'), 1, 'a production key (on)';
is_deeply ofrep('/k/ofrep/v1/evaluate/flags/checkout', $K{client}, 'c1', 'staging'), ['checkout'],
    'OFREP single with a staging client key';
is_deeply ofrep('/k/ofrep/v1/evaluate/flags', $K{client}, 'cb1', 'staging'), [qw(banner checkout)],
    'OFREP bulk with a staging client key: the client_visible flags';
is_deeply ofrep('/k/ofrep/v1/evaluate/flags', $K{prod}, 'pb1', 'production'), ['checkout'],
    'OFREP bulk with a production key';
is_deeply ofrep('/stg/ofrep/v1/evaluate/flags/beta', undef, 'sb1', 'staging'), ['beta'], 'keyless OFREP in staging';
my $r = $h->req(GET => $ng->url('/stg/var?user=v1'));
is $r->{content}, "1\n", '$togglemaster_flag_checkout in staging';
$want{'v1/checkout'} = [1, 'staging'];
is $h->req(GET => $ng->url('/stg/gated?user=g1'))->{status}, 200, 'togglemaster_require in staging';
$want{'g1/checkout'} = [1, 'staging'];

# an environment created at run time, and its key
$h->redis_cmd('HSET', 'tm:envs', 'qa', TM::Nginx::env_json('qa', 4));
$h->redis_cmd('HSET', 'tm:flags@qa', 'checkout', TM::Nginx::env_flag_json('checkout', 1));
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{qa}), TM::Nginx::key2_json(server => 'qa', 4));
$h->redis_cmd('SADD', 'tm:ready', qw(flag@qa rule@qa));
my $v = $h->redis_cmd('INCR', 'tm:version');
$h->redis_cmd('PUBLISH', 'tm:changes', TM::AWS->json->encode({ version => $v + 0, kind => 'env', op => 'upsert', name => 'qa' }));
ok $h->wait_until(10, sub { ($h->req(GET => $ng->url('/qa/evaluate?user_id=warm&flag_name=checkout'))->{status} // 0) == 200 }),
    'a new environment qa is served';
$v = $h->redis_cmd('INCR', 'tm:version');
$h->redis_cmd('PUBLISH', 'tm:changes', TM::AWS->json->encode({ version => $v + 0, kind => 'key2', op => 'upsert', name => sha256_hex($K{qa}) }));
ok $h->wait_until(10, sub { ($h->req(GET => $ng->url('/k/evaluate?user_id=warm&flag_name=checkout'), { 'X-API-Key' => $K{qa} })->{status} // 0) == 200 }),
    'its key is accepted';
is ev('/qa/evaluate', undef, 'q1', 'checkout', 'qa'), 1, 'togglemaster_environment qa';
is ev('/k/evaluate', $K{qa}, 'q2', 'checkout', 'qa'), 1, 'a qa key';

# --- what DynamoDB holds --------------------------------------------------------
my $n = keys %want;
my $items = [];
$h->wait_until(30, sub { $items = $aws->scan($table); (grep { $_->{user_id} ne 'warm' } @$items) >= $n });
my %got = map { ("$_->{user_id}/$_->{flag_name}" => $_) } grep { $_->{user_id} ne 'warm' } @$items;
is scalar(keys %got), $n, "$n evaluations -> $n items";
for my $k (sort keys %want) {
    my ($result, $env) = @{ $want{$k} };
    my $it = $got{$k};
    if (!$it) { fail "$k stored"; next }
    is $it->{result}, $result, "$k: result as answered";
    if (defined $env) {
        is $it->{environment}, $env, "$k: environment $env";
    } else {
        ok !exists $it->{environment}, "$k: no environment attribute (the default)";
    }
}
ok !exists $got{'cb1/beta'}, 'a client key never evaluated a flag it cannot see';
my %per;
$per{ $_->{environment} // 'default' }++ for values %got;
is_deeply \%per, { default => 2, staging => 7, production => 2, qa => 2 }, 'items per environment';

done_testing;
