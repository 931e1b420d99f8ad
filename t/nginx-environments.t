#!/usr/bin/env perl
# Environments and scoped keys at the edge (docs/environments.md), with
# Redis written as the daemons write it: every environment in the snapshot,
# the key picks the environment for /evaluate and OFREP, a location's
# togglemaster_environment for keyless locations, variables and require;
# togglemaster_api_key scope lists (403 naming the scope), client keys that
# see only client_visible flags, CORS; live changes with "environment";
# a key of one environment never evaluating another.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $h = TM::Harness->new;
$h->redis;
my $J = JSON::PP->new->canonical;

sub flag_json {
    my ($name, $on, $cv) = @_;
    return $J->encode({ id => 1, name => $name, description => '', is_enabled => $on ? JSON::PP::true : JSON::PP::false,
                        (defined $cv ? (client_visible => $cv ? JSON::PP::true : JSON::PP::false) : ()) });
}
sub env_json { my ($id, $name, $def) = @_; $J->encode({ id => $id, name => $name, is_default => $def ? JSON::PP::true : JSON::PP::false }) }
sub key2 { my ($scope, $env) = @_; $J->encode({ id => 9, name => "k-$scope", scope => $scope, environment => $env }) }
sub publish { my %m = @_; my $v = $h->redis_cmd('INCR', 'tm:version'); $h->redis_cmd('PUBLISH', 'tm:changes', $J->encode({ version => $v + 0, %m })) }

my %K = map { $_ => "tm_key_$_" . ('x' x 40) } qw(admin stg prod client ro ghost);
$h->redis_cmd('HSET', 'tm:keys', sha256_hex($K{admin}), '{"id":1,"name":"admin"}');
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{stg}), key2(server => 'staging'));
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{prod}), key2(server => 'production'));
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{client}), key2(client => 'staging'));
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{ro}), key2(readonly => undef));
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{ghost}), key2(server => 'ghost'));

$h->redis_cmd('HSET', 'tm:envs', 'default', env_json(1, 'default', 1));
$h->redis_cmd('HSET', 'tm:envs', 'staging', env_json(2, 'staging', 0));
$h->redis_cmd('HSET', 'tm:envs', 'production', env_json(3, 'production', 0));
# checkout: off by default, on in staging, off in production
$h->redis_cmd('HSET', 'tm:flags', 'checkout', flag_json('checkout', 0));
$h->redis_cmd('HSET', 'tm:flags@staging', 'checkout', flag_json('checkout', 1));
$h->redis_cmd('HSET', 'tm:flags@production', 'checkout', flag_json('checkout', 0));
$h->redis_cmd('HSET', 'tm:flags@staging', 'only-staging', flag_json('only-staging', 1));
$h->redis_cmd('HSET', 'tm:flags@staging', 'banner', flag_json('banner', 1, 1));
$h->redis_cmd('HSET', 'tm:flags@staging', 'beta', flag_json('beta', 1, 0));
# a rule in staging only: 0 % of users
$h->redis_cmd('HSET', 'tm:rules@staging', 'beta',
    $J->encode({ id => 1, flag_name => 'beta', is_enabled => JSON::PP::true, rules => { type => 'PERCENTAGE', value => 0 } }));
$h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2 flag@staging rule@staging flag@production rule@production));
$h->redis_cmd('SET', 'tm:version', 10);

my $ng = TM::Nginx->new($h, workers => 1, server => <<'CONF');
        togglemaster_identity $http_x_user;
        location = /k/evaluate { togglemaster_api_key on; togglemaster_evaluate; }
        location /k/ofrep/v1/ { togglemaster_api_key server client; togglemaster_ofrep; }
        location /c/ofrep/v1/ { togglemaster_api_key client; togglemaster_cors_origin https://app.example; togglemaster_ofrep; }
        location = /stg/evaluate { togglemaster_environment staging; togglemaster_evaluate; }
        location = /qa/evaluate { togglemaster_environment qa; togglemaster_evaluate; }
        location /stg/ofrep/v1/ { togglemaster_environment staging; togglemaster_ofrep; }
        location = /stg/vars {
            togglemaster_environment staging;
            add_header X-Checkout $togglemaster_flag_checkout always;
            togglemaster_health;
        }
        location = /vars { add_header X-Checkout $togglemaster_flag_checkout always; togglemaster_health; }
        location /stg/gated/ { togglemaster_environment staging; togglemaster_require checkout; }
        location /gated/ { togglemaster_require checkout; }
        location = /ro { togglemaster_api_key readonly; togglemaster_health; }
CONF
for my $d (qw(stg/gated gated)) {
    system('mkdir', '-p', "$ng->{dir}/html/$d");
    open my $f, '>', "$ng->{dir}/html/$d/index.html" or die; print $f "page\n"; close $f;
}
$ng->start;
$h->wait_until(5, sub { ($h->req(GET => $ng->url('/stg/evaluate?user_id=u&flag_name=checkout'))->{json}{result} // 0) });

sub ev { my ($path, $key, $flag) = @_; $h->req(GET => $ng->url("$path?user_id=u1&flag_name=$flag"), $key ? { 'X-API-Key' => $key } : {}) }
sub of { my ($path, $key, $flag, %hd) = @_;
         $h->req(POST => $ng->url($path . (defined $flag ? "/$flag" : '')), { ($key ? ('X-API-Key' => $key) : ()), %hd },
                 { context => { targetingKey => 'u1' } }) }

# --- keyless: the location's environment --------------------------------------
is ev('/evaluate', undef, 'checkout')->{json}{result}, JSON::PP::false, 'keyless, no togglemaster_environment: default (off)';
is ev('/stg/evaluate', undef, 'checkout')->{json}{result}, JSON::PP::true, 'togglemaster_environment staging: on';
my $r = ev('/qa/evaluate', undef, 'checkout');
is $r->{status}, 404, 'an environment that does not exist: 404';
is_deeply $r->{json}, { error => 'environment "qa" does not exist' }, '... with a JSON error naming it';
is $h->req(GET => $ng->url('/stg/vars'), { 'X-User' => 'u1' })->{headers}{'x-checkout'}, '1', '$togglemaster_flag_ in staging';
is $h->req(GET => $ng->url('/vars'), { 'X-User' => 'u1' })->{headers}{'x-checkout'}, '0', '... and in the default environment';
is $h->req(GET => $ng->url('/stg/gated/'), { 'X-User' => 'u1' })->{status}, 200, 'togglemaster_require in staging: let through';
is $h->req(GET => $ng->url('/gated/'), { 'X-User' => 'u1' })->{status}, 404, 'togglemaster_require in the default: refused';
is of('/stg/ofrep/v1/evaluate/flags', undef, 'only-staging')->{json}{value}, JSON::PP::true, 'OFREP keyless in staging';
is ev('/stg/evaluate', undef, 'beta')->{json}{result}, JSON::PP::false, "staging's own rule (0 %) applies";

# --- /evaluate with keys: the key's environment --------------------------------
is ev('/k/evaluate', $K{stg}, 'checkout')->{json}{result}, JSON::PP::true, 'server key of staging: staging';
is ev('/k/evaluate', $K{prod}, 'checkout')->{json}{result}, JSON::PP::false, 'server key of production: production';
is ev('/k/evaluate', $K{admin}, 'checkout')->{json}{result}, JSON::PP::false, 'admin key: the default environment';
is ev('/k/evaluate', $K{prod}, 'only-staging')->{json}{result}, JSON::PP::false, 'production key never sees a staging-only flag';
$r = ev('/k/evaluate', $K{client}, 'checkout');
is $r->{status}, 403, 'client key on /evaluate (api_key on): 403';
is_deeply $r->{json}, { error => 'this route needs the admin or server scope; the key has client' }, '... naming the scopes';
$r = ev('/k/evaluate', $K{ro}, 'checkout');
is $r->{status}, 403, 'readonly key on /evaluate: 403';
like $r->{json}{error}, qr/the key has readonly$/, '... naming its scope';
is ev('/k/evaluate', undef, 'checkout')->{status}, 401, 'no key: 401';
is ev('/k/evaluate', 'tm_key_unknown', 'checkout')->{status}, 401, 'unknown key: 401';
$r = ev('/k/evaluate', $K{ghost}, 'checkout');
is $r->{status}, 404, "a key whose environment does not exist: 404";
is_deeply $r->{json}, { error => q{the key's environment "ghost" does not exist} }, '... saying so';
is $h->req(GET => $ng->url('/ro'), { 'X-API-Key' => $K{ro} })->{status}, 200, 'togglemaster_api_key readonly accepts a readonly key';
is $h->req(GET => $ng->url('/ro'), { 'X-API-Key' => $K{stg} })->{status}, 403, '... and refuses a server key';

# --- OFREP: server and client keys ----------------------------------------------
$r = of('/k/ofrep/v1/evaluate/flags', $K{stg}, 'only-staging');
is $r->{status}, 200, 'OFREP, staging server key, staging flag';
is $r->{json}{value}, JSON::PP::true, '... on';
$r = of('/k/ofrep/v1/evaluate/flags', $K{prod}, 'only-staging');
is $r->{status}, 404, 'OFREP, production key, staging-only flag: 404';
is $r->{json}{errorCode}, 'FLAG_NOT_FOUND', '... FLAG_NOT_FOUND';
is of('/k/ofrep/v1/evaluate/flags', $K{prod}, 'checkout')->{json}{value}, JSON::PP::false, "production key: production's state";
$r = of('/k/ofrep/v1/evaluate/flags', $K{stg});
is_deeply [ sort map { $_->{key} } @{ $r->{json}{flags} } ], [qw(banner beta checkout only-staging)], "bulk, server key: staging's flags";
$r = of('/k/ofrep/v1/evaluate/flags', $K{prod});
is_deeply [ map { $_->{key} } @{ $r->{json}{flags} } ], [qw(checkout)], "bulk, production key: production's flags";

$r = of('/k/ofrep/v1/evaluate/flags', $K{client}, 'banner');
is $r->{status}, 200, 'client key, client_visible flag: evaluated';
is $r->{json}{value}, JSON::PP::true, '... on';
for my $f (qw(checkout beta)) {
    $r = of('/k/ofrep/v1/evaluate/flags', $K{client}, $f);
    is $r->{status}, 404, "client key, hidden flag $f: 404";
    is_deeply $r->{json}, { key => $f, errorCode => 'FLAG_NOT_FOUND', errorDetails => 'flag not found' },
        '... exactly as a flag that does not exist';
}
$r = of('/k/ofrep/v1/evaluate/flags', $K{client});
is_deeply [ map { $_->{key} } @{ $r->{json}{flags} } ], ['banner'], 'bulk, client key: client_visible flags only';
is $r->{headers}{'access-control-allow-origin'}, '*', 'CORS on a location accepting client keys';
is $r->{headers}{'access-control-expose-headers'}, 'ETag', '... ETag exposed';
$r = $h->req(OPTIONS => $ng->url('/k/ofrep/v1/evaluate/flags'), { Origin => 'https://a.example',
    'Access-Control-Request-Method' => 'POST', 'Access-Control-Request-Headers' => 'authorization,content-type' });
is $r->{status}, 204, 'CORS preflight: 204 without a key';
like $r->{headers}{'access-control-allow-headers'}, qr/Authorization/, '... allows the Authorization header';
like $r->{headers}{'access-control-allow-methods'}, qr/POST/, '... and POST';
$r = of('/k/ofrep/v1/evaluate/flags', undef, 'banner');
is $r->{status}, 401, 'OFREP without a key: 401';
is $r->{headers}{'access-control-allow-origin'}, '*', '... still with CORS, so a browser can read why';
is $h->req(OPTIONS => $ng->url('/k/evaluate'))->{status}, 401, 'no preflight where client keys are not accepted';
$r = of('/c/ofrep/v1/evaluate/flags', $K{client}, 'banner');
is $r->{headers}{'access-control-allow-origin'}, 'https://app.example', 'togglemaster_cors_origin';
is $r->{headers}{vary}, 'Origin', '... with Vary: Origin';
is of('/c/ofrep/v1/evaluate/flags', $K{stg}, 'banner')->{status}, 403, 'api_key client refuses a server key';

# --- live changes -------------------------------------------------------------------
$h->redis_cmd('HSET', 'tm:flags@staging', 'checkout', flag_json('checkout', 0));
publish(kind => 'flag', environment => 'staging', op => 'upsert', name => 'checkout');
ok $h->wait_until(5, sub { ev('/k/evaluate', $K{stg}, 'checkout')->{json}{result} == JSON::PP::false }),
    'a change with "environment": staging turns off';
is ev('/k/evaluate', $K{admin}, 'checkout')->{json}{result}, JSON::PP::false, '... default untouched';
$h->redis_cmd('HSET', 'tm:flags', 'checkout', flag_json('checkout', 1));
publish(kind => 'flag', op => 'upsert', name => 'checkout');
ok $h->wait_until(5, sub { ev('/evaluate', undef, 'checkout')->{json}{result} == JSON::PP::true }), 'a default change: default on';
is ev('/k/evaluate', $K{stg}, 'checkout')->{json}{result}, JSON::PP::false, '... staging still off';
is ev('/k/evaluate', $K{prod}, 'checkout')->{json}{result}, JSON::PP::false, '... production still off';

# a new environment, and a key for it
$h->redis_cmd('HSET', 'tm:envs', 'qa', env_json(4, 'qa', 0));
$h->redis_cmd('HSET', 'tm:flags@qa', 'checkout', flag_json('checkout', 1));
$h->redis_cmd('SADD', 'tm:ready', 'flag@qa', 'rule@qa');
publish(kind => 'env', op => 'upsert', name => 'qa');
ok $h->wait_until(5, sub { ev('/qa/evaluate', undef, 'checkout')->{status} == 200 }), 'a new environment: its location answers';
is ev('/qa/evaluate', undef, 'checkout')->{json}{result}, JSON::PP::true, '... from its own hash';
my $qa = 'tm_key_qa' . ('q' x 40);
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($qa), key2(server => 'qa'));
publish(kind => 'key2', op => 'upsert', name => sha256_hex($qa));
ok $h->wait_until(5, sub { ev('/k/evaluate', $qa, 'checkout')->{status} == 200 }), 'a new scoped key: accepted';
is ev('/k/evaluate', $qa, 'checkout')->{json}{result}, JSON::PP::true, "... evaluating in qa";
is ev('/k/evaluate', $K{stg}, 'checkout')->{json}{result}, JSON::PP::false, 'staging key still in staging after the environments changed';

# revocation of a scoped key
$h->redis_cmd('HDEL', 'tm:keys:v2', sha256_hex($K{stg}));
publish(kind => 'key2', op => 'delete', name => sha256_hex($K{stg}));
ok $h->wait_until(5, sub { ev('/k/evaluate', $K{stg}, 'checkout')->{status} == 401 }), 'a revoked scoped key: 401';
# a malformed scoped key record keeps its last good version
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{prod}), '{"scope":"server"}');
publish(kind => 'key2', op => 'upsert', name => sha256_hex($K{prod}));
$h->redis_cmd('HSET', 'tm:flags@production', 'probe', flag_json('probe', 1));
publish(kind => 'flag', environment => 'production', op => 'upsert', name => 'probe');
ok $h->wait_until(5, sub { (ev('/k/evaluate', $K{prod}, 'probe')->{json}{result} // 0) == JSON::PP::true }),
    'a malformed scoped key: its last good version still works';
like $ng->error_log, qr/malformed scoped key/, '... logged';

# an environment deleted: its keys and locations answer 404
$h->redis_cmd('HDEL', 'tm:envs', 'qa');
$h->redis_cmd('DEL', 'tm:flags@qa');
publish(kind => 'env', op => 'delete', name => 'qa');
ok $h->wait_until(5, sub { ev('/qa/evaluate', undef, 'checkout')->{status} == 404 }), 'a deleted environment: 404 again';
is ev('/k/evaluate', $qa, 'checkout')->{status}, 404, "... and for its key";

# --- configuration ------------------------------------------------------------------
for my $bad ('togglemaster_api_key sometimes;', 'togglemaster_api_key on server;', 'togglemaster_environment "bad name";',
             'togglemaster_environment all;', 'togglemaster_api_key admin nobody;') {
    my $n2 = TM::Nginx->new($h, redis => 0, server => "location /x { $bad }");
    my $out = `@{[TM::Nginx::shell_env($h)]} nginx -t -p $n2->{dir} -c $n2->{dir}/nginx.conf 2>&1`;
    like $out, qr/\[emerg\].*(invalid value|invalid environment name)/, "refused at parse time: $bad";
}

unlike $ng->error_log, qr/\[(alert|emerg|crit)\]/, 'no alerts in the error log';
done_testing;
