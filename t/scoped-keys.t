#!/usr/bin/env perl
# Scoped API keys, daemon side (docs/environments.md): creation with scope
# and environment, publication (tm:keys for admin keys only, tm:keys:v2 for
# the others), the scope x route matrix of the admin daemons, listing with
# scope, environment and last use, revocation, and the /validate fallback
# carrying the scope. Bad input: 4xx JSON, nothing written.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use Digest::SHA qw(sha256_hex);

my $h = TM::Harness->new;
my $M = 'master-test-key';
my %MH = (Authorization => "Bearer $M");
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, TARGETING_SERVICE_URL => $tg);
my $J = $h->json;
my $T = JSON::PP::true;

sub req { $h->req(@_) }
sub keys_count { $h->psql('SELECT count(*) FROM api_keys') }
sub mk { my %b = @_; req(POST => "$auth/admin/keys", \%MH, \%b) }

my $admin = mk(name => 'admin-key')->{json};
my %A = (Authorization => "Bearer $admin->{key}");
is req(POST => "$flags/environments", \%A, { name => 'staging' })->{status}, 201, 'staging created';
ok $h->wait_until(5, sub { $h->redis_cmd('HEXISTS', 'tm:envs', 'staging') }), 'staging in tm:envs';

# --- create ---
my %key;
for my $c ([ readonly => undef ], [ server => 'staging' ], [ client => 'staging' ], [ admin => undef ]) {
    my ($scope, $env) = @$c;
    my $r = mk(name => "$scope-key", scope => $scope, defined $env ? (environment => $env) : ());
    is $r->{status}, 201, "create $scope key 201";
    is $r->{json}{scope}, $scope, "$scope: scope echoed";
    is $r->{json}{environment}, $env, "$scope: environment echoed";
    like $r->{json}{key}, qr/^tm_key_[0-9a-f]{64}$/, "$scope: key format";
    $key{$scope} = $r->{json};
}
is mk(name => 'default-scope')->{json}{scope}, 'admin', 'no scope: admin';
is mk(name => 'server-default', scope => 'server', environment => 'default')->{status}, 201, 'server key of the default environment';

my $n = keys_count();
for my $case (
    [ { name => 'x', scope => 'root' }, 400, 'unknown scope' ],
    [ { name => 'x', scope => 7 }, 400, 'scope not a string' ],
    [ { name => 'x', scope => 'server' }, 400, 'server without environment' ],
    [ { name => 'x', scope => 'client', environment => undef }, 400, 'client with null environment' ],
    [ { name => 'x', scope => 'readonly', environment => 'staging' }, 400, 'readonly with an environment' ],
    [ { name => 'x', environment => 'staging' }, 400, 'admin (default) with an environment' ],
    [ { name => 'x', scope => 'server', environment => 'a b' }, 400, 'bad environment name' ],
    [ { name => 'x', scope => 'server', environment => 'all' }, 400, 'environment all' ],
    [ { name => 'x', scope => 'server', environment => 'nope' }, 404, 'unknown environment' ],
    [ { scope => 'server', environment => 'staging' }, 400, 'no name' ],
) {
    my $r = mk(%{ $case->[0] });
    is $r->{status}, $case->[1], "create: $case->[2] -> $case->[1]";
    ok $r->{json} && $r->{json}{error}, "create: $case->[2]: JSON error";
}
is keys_count(), $n, 'bad creates wrote nothing';
is req(POST => "$auth/admin/keys", \%A, { name => 'x', scope => 'readonly' })->{status}, 403,
    'an admin API key cannot mint keys (the master key does)';

# --- publication ---
for my $s (qw(readonly server client)) {
    my $hash = sha256_hex($key{$s}{key});
    ok !$h->redis_cmd('HEXISTS', 'tm:keys', $hash), "$s key not in tm:keys (an old edge refuses it)";
    is_deeply $J->decode($h->redis_cmd('HGET', 'tm:keys:v2', $hash) // '{}'),
        { id => $key{$s}{id}, name => "$s-key", scope => $s, environment => $key{$s}{environment} },
        "$s key in tm:keys:v2 with scope and environment";
}
is_deeply $J->decode($h->redis_cmd('HGET', 'tm:keys', sha256_hex($key{admin}{key}))), { id => $key{admin}{id}, name => 'admin-key' },
    'admin key in tm:keys as before';
ok !$h->redis_cmd('HEXISTS', 'tm:keys:v2', sha256_hex($key{admin}{key})), 'admin key not in tm:keys:v2';

# --- validate names the scope ---
my $r = req(GET => "$auth/validate", { Authorization => "Bearer $key{server}{key}" });
is $r->{status}, 200, 'validate a server key';
is_deeply [ @{ $r->{json} }{qw(scope environment)} ], [ 'server', 'staging' ], 'validate says scope and environment';
ok $r->{json}{message}, 'and the original message';

# --- the scope x route matrix of the admin daemons ---
# Setup objects the routes act on.
is req(POST => "$flags/flags", \%A, { name => 'f1' })->{status}, 201, 'flag f1';
is req(POST => "$tg/rules", \%A, { flag_name => 'f1', rules => { type => 'PERCENTAGE', value => 5 } })->{status}, 201, 'rule f1';
is req(POST => "$tg/segments", \%A, { name => 's1', constraints => [] })->{status}, 201, 'segment s1';
my @routes = (
    [ GET => "$flags/flags" ], [ POST => "$flags/flags", { name => 'm-new' } ],
    [ GET => "$flags/flags/f1" ], [ PUT => "$flags/flags/f1", { description => 'd' } ],
    [ GET => "$flags/flags/f1?environment=staging" ], [ GET => "$flags/flags/f1?environment=all" ],
    [ POST => "$flags/flags/f1/promote", { from => 'default', to => 'staging' } ],
    [ GET => "$flags/environments" ], [ POST => "$flags/environments", { name => 'm-env' } ],
    [ DELETE => "$flags/environments/m-env" ],
    [ GET => "$tg/rules" ], [ POST => "$tg/rules", { flag_name => 'm-new', rules => {} } ],
    [ GET => "$tg/rules/f1" ], [ PUT => "$tg/rules/f1", { is_enabled => $T } ],
    [ DELETE => "$tg/rules/m-new" ], [ DELETE => "$tg/rules?environment=m-env&confirm=m-env" ],
    [ GET => "$tg/segments" ], [ POST => "$tg/segments", { name => 'm-seg', constraints => [] } ],
    [ GET => "$tg/segments/s1" ], [ PUT => "$tg/segments/s1", { description => 'x' } ],
    [ DELETE => "$tg/segments/m-seg" ], [ DELETE => "$flags/flags/m-new" ],
);
my %rank = (admin => 3, readonly => 2, server => 0, client => 0);
for my $scope (qw(readonly server client admin)) {
    my %H = (Authorization => "Bearer $key{$scope}{key}");
    for my $rt (@routes) {
        my ($m, $url, $body) = @$rt;
        my $need = $m eq 'GET' ? 2 : 3;
        my $res = req($m => $url, \%H, $body);
        (my $short = $url) =~ s{^http://[^/]+}{};
        if ($rank{$scope} >= $need) {
            ok $res->{status} =~ /^2/, "$scope: $m $short allowed ($res->{status})" or diag $res->{content};
        } else {
            is $res->{status}, 403, "$scope: $m $short -> 403";
            my $want = $need == 3 ? 'admin' : 'admin or readonly';
            like $res->{json}{error} // '', qr/needs the \Q$want\E scope; the key has $scope/,
                "$scope: $m $short names the missing scope";
        }
    }
    is req(GET => "$auth/admin/keys", \%H)->{status}, 403, "$scope: GET /admin/keys needs the master key";
}
is req(GET => "$flags/flags/m-new", \%A)->{status}, 404, 'refused writes wrote nothing (the admin pass cleaned up)';

# --- listing: scope, environment, last use ---
$r = req(GET => "$auth/admin/keys", \%MH);
is $r->{status}, 200, 'list 200';
my %by = map { $_->{name} => $_ } @{ $r->{json} };
is_deeply [ @{ $by{'server-key'} }{qw(scope environment)} ], [qw(server staging)], 'server key listed with scope and environment';
is $by{'readonly-key'}{scope}, 'readonly', 'readonly listed';
ok !exists $by{'default-scope'}{scope}, 'an admin key lists as the original rows (scope absent = admin)';
ok !exists $by{'default-scope'}{last_used_at}, 'never used: no last_used_at';
ok $h->wait_until(6, sub {
    my $l = req(GET => "$auth/admin/keys", \%MH)->{json};
    my ($k) = grep { $_->{name} eq 'readonly-key' } @$l;
    $k && $k->{last_used_at} }), 'last use recorded from the daemons\' checks';
my ($ro) = grep { $_->{name} eq 'readonly-key' } @{ req(GET => "$auth/admin/keys", \%MH)->{json} };
like $ro->{last_used_at} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'last_used_at RFC 3339';
ok $h->wait_until(6, sub { $h->redis_cmd('HLEN', 'tm:keys:used') == 0 }), 'folded uses are removed from tm:keys:used';
is $h->psql("SELECT count(*) FROM api_keys WHERE last_used_at IS NOT NULL AND name = 'default-scope'"), 0,
    'an unused key has no last use';

# --- the /validate fallback enforces the scope too ---
$h->redis_cmd('HDEL', 'tm:keys:v2', sha256_hex($key{readonly}{key}));
$r = req(POST => "$flags/flags", { Authorization => "Bearer $key{readonly}{key}" }, { name => 'via-validate' });
is $r->{status}, 403, 'a readonly key unknown to Redis: scope from /validate, POST 403';
is req(GET => "$flags/flags", { Authorization => "Bearer $key{readonly}{key}" })->{status}, 200, 'and GET allowed';

# --- revocation ---
$r = req(DELETE => "$auth/admin/keys/$key{server}{id}", \%MH);
is $r->{status}, 204, 'revoke the server key';
ok !$h->redis_cmd('HEXISTS', 'tm:keys:v2', sha256_hex($key{server}{key})), 'gone from tm:keys:v2 at once';
is req(GET => "$auth/validate", { Authorization => "Bearer $key{server}{key}" })->{status}, 401, 'no longer valid';
$r = req(GET => "$flags/flags", { Authorization => "Bearer $key{server}{key}" });
is $r->{status}, 401, 'a revoked scoped key: 401';

# --- reconciliation of tm:keys:v2 ---
$h->redis_cmd('HSET', 'tm:keys:v2', 'f' x 64, '{"id":999,"name":"planted","scope":"readonly","environment":null}');
$h->redis_cmd('DEL', 'tm:keys:v2');
ok $h->wait_until(6, sub { $h->redis_cmd('HEXISTS', 'tm:keys:v2', sha256_hex($key{client}{key})) }),
    'tm:keys:v2 refilled by reconciliation';
ok !$h->redis_cmd('HEXISTS', 'tm:keys:v2', 'f' x 64), 'planted record removed';
ok scalar(grep { $_ eq 'key2' } @{ $h->redis_cmd('SMEMBERS', 'tm:ready') }), 'key2 kind ready';

# A malformed record is refused, not taken as admin.
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($key{client}{key}), '{"scope":"admin"}');
$r = req(POST => "$flags/flags", { Authorization => "Bearer $key{client}{key}" }, { name => 'planted' });
isnt $r->{status}, 201, 'a malformed tm:keys:v2 record grants nothing';

$h->teardown;
done_testing;
