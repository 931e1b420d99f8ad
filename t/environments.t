#!/usr/bin/env perl
# Environments (docs/environments.md), daemon side: CRUD, per-environment
# flag state and rules, client_visible, promotion through the targeting
# daemon, deletion with confirmation, Redis publication (tm:envs,
# tm:flags@env, tm:rules@env, tm:ready, change messages) and its
# reconciliation, bad input (4xx JSON, nothing changed).
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key subscriber change);

my $h = TM::Harness->new;
my $M = 'master-test-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, TARGETING_SERVICE_URL => $tg);
my $J = $h->json;
my $T = JSON::PP::true; my $F = JSON::PP::false;
my %K = (Authorization => 'Bearer ' . new_key($h, $auth, $M, 'env-test')->{key});

sub req { $h->req(@_) }
sub hget { my $v = $h->redis_cmd('HGET', @_); defined $v ? $J->decode($v) : undef }
sub ready { scalar grep { $_ eq $_[0] } @{ $h->redis_cmd('SMEMBERS', 'tm:ready') } }
sub envs_count { $h->psql('SELECT count(*) FROM environments') }
sub json_error { my ($r, $st, $what) = @_; is $r->{status}, $st, "$what -> $st"; ok $r->{json} && $r->{json}{error}, "$what: JSON error" }

# --- the migration created the default environment ---
my $r = req(GET => "$flags/environments", \%K);
is $r->{status}, 200, 'GET /environments 200';
is scalar @{ $r->{json} }, 1, 'one environment at first';
is $r->{json}[0]{name}, 'default', 'named default';
ok $r->{json}[0]{is_default}, 'is the default';
ok $h->wait_until(5, sub { ready('env') }), 'env kind marked ready';
ok hget('tm:envs', 'default')->{is_default}, 'tm:envs holds the default environment';
is req(GET => "$flags/environments")->{status}, 401, 'needs a key';

# --- create ---
my $sub = subscriber($h);
my $v0 = $h->redis_cmd('GET', 'tm:version');
$r = req(POST => "$flags/environments", \%K, { name => 'staging' });
is $r->{status}, 201, 'create staging 201';
is $r->{json}{name}, 'staging', 'name';
ok !$r->{json}{is_default}, 'not the default';
like $r->{json}{created_at}, qr/^\d{4}-\d\d-\d\dT/, 'created_at';
is_deeply hget('tm:envs', 'staging'), { id => $r->{json}{id}, name => 'staging', is_default => $F }, 'published in tm:envs';
ok ready('flag@staging') && ready('rule@staging'), 'its flag and rule hashes are ready at once';
my $c = change($h, $sub, $v0 + 1);
ok $c, 'a change message follows';
is req(POST => "$flags/environments", \%K, { name => 'production' })->{status}, 201, 'create production';
json_error(req(POST => "$flags/environments", \%K, { name => 'staging' }), 409, 'duplicate');
my $n = envs_count();
for my $case ([ '{}', 'no name' ], [ '{"name":"all"}', 'reserved name all' ], [ '{"name":"a b"}', 'space' ],
              [ '{"name":"a@b"}', '@ in name' ], [ '{"name":"' . ('e' x 101) . '"}', 'too long' ],
              [ '{"name":"x","colour":1}', 'unknown member' ], [ '{"name":', 'malformed JSON' ],
              [ '[]', 'array' ], [ '{"name":7}', 'name not a string' ]) {
    json_error(req(POST => "$flags/environments", \%K, $case->[0]), 400, "create: $case->[1]");
}
is envs_count(), $n, 'bad creates wrote nothing';
json_error(req(PUT => "$flags/environments", \%K, '{}'), 405, 'PUT /environments');
$r = req(GET => "$flags/environments", \%K);
is_deeply [ map { $_->{name} } @{ $r->{json} } ], [qw(default production staging)], 'listed by name';

# --- per-environment state ---
$r = req(POST => "$flags/flags", \%K, { name => 'checkout', description => 'v2' });
is $r->{status}, 201, 'flag created (default environment)';
ok !exists $r->{json}{client_visible}, 'client_visible left out while false: the original row';
my $def_row = $r->{content};
is_deeply [ sort keys %{ hget('tm:flags@staging', 'checkout') } ], [ sort keys %{ $r->{json} } ],
    'published in staging too, same members';
ok !hget('tm:flags@staging', 'checkout')->{is_enabled}, 'off in staging';

$v0 = $h->redis_cmd('GET', 'tm:version');
$r = req(PUT => "$flags/flags/checkout?environment=staging", \%K, { is_enabled => $T });
is $r->{status}, 200, 'enable in staging 200';
ok $r->{json}{is_enabled}, 'on in staging';
is $r->{json}{description}, 'v2', 'the definition is shared';
is $h->redis_cmd('HGET', 'tm:flags@staging', 'checkout'), $r->{content}, 'tm:flags@staging byte-identical';
ok !req(GET => "$flags/flags/checkout", \%K)->{json}{is_enabled}, 'still off in default';
ok !req(GET => "$flags/flags/checkout?environment=production", \%K)->{json}{is_enabled}, 'still off in production';
ok !hget('tm:flags', 'checkout')->{is_enabled}, 'tm:flags (default) unchanged';
$c = change($h, $sub, $v0 + 1);
is_deeply [ @{ $c // {} }{qw(kind op name environment)} ], [qw(flag upsert checkout staging)],
    'change message carries "environment":"staging"';
# only staging's flag changed: the other environments are not republished
# (one message, not one per environment, ahead of the one that matters)
is $h->redis_cmd('GET', 'tm:version'), $v0 + 1, 'a state change in staging is published there only';
$r = req(GET => "$flags/flags/checkout", { %K, 'X-TM-Environment' => 'staging' });
ok $r->{json}{is_enabled}, 'X-TM-Environment header picks the environment';
$r = req(GET => "$flags/flags?environment=staging", \%K);
is $r->{status}, 200, 'list in staging';
ok $r->{json}[0]{is_enabled}, 'list shows staging state';
is $r->{content}, '[' . $h->redis_cmd('HGET', 'tm:flags@staging', 'checkout') . ']', 'list elements are the published texts';

$r = req(POST => "$flags/flags?environment=production", \%K, { name => 'beta', is_enabled => $T });
is $r->{status}, 201, 'create in production';
ok $r->{json}{is_enabled}, 'on in production';
ok !req(GET => "$flags/flags/beta", \%K)->{json}{is_enabled}, 'off in default';
ok !hget('tm:flags@staging', 'beta')->{is_enabled}, 'off in staging';

# --- client_visible ---
$v0 = $h->redis_cmd('GET', 'tm:version');
$r = req(PUT => "$flags/flags/checkout", \%K, { client_visible => $T });
is $r->{status}, 200, 'set client_visible';
ok $r->{json}{client_visible}, 'client_visible true';
ok hget('tm:flags@staging', 'checkout')->{client_visible} && hget('tm:flags', 'checkout')->{client_visible},
    'published in every environment';
my %seen;
for (1 .. 3) { my $m = change($h, $sub, $v0 + $_) or last; $seen{ $m->{environment} // '(none)' }++ }
is_deeply \%seen, { '(none)' => 1, production => 1, staging => 1 },
    'one message per environment, the default environment\'s without an environment member';
$v0 = $h->redis_cmd('GET', 'tm:version');
$r = req(PUT => "$flags/flags/checkout?environment=production", \%K, { description => 'v3' });
is $r->{status}, 200, 'description changed from production';
is hget('tm:flags', 'checkout')->{description}, 'v3', 'the definition reaches the default environment';
is hget('tm:flags@staging', 'checkout')->{description}, 'v3', 'and staging';
is $h->redis_cmd('GET', 'tm:version'), $v0 + 3, 'a definition change is published in every environment';
ok hget('tm:flags@staging', 'checkout')->{is_enabled}, 'staging state kept';
json_error(req(PUT => "$flags/flags/checkout", \%K, { client_visible => 'yes' }), 400, 'client_visible not boolean');

# --- unknown or bad environment: 404 / 400, nothing written ---
my $states = $h->psql('SELECT count(*) FROM flag_states');
for my $m ([GET => '/flags'], [GET => '/flags/checkout'], [PUT => '/flags/checkout'], [POST => '/flags'],
           [DELETE => '/flags/checkout']) {
    my $body = $m->[0] eq 'POST' ? { name => 'ghost' } : $m->[0] eq 'PUT' ? { is_enabled => $T } : undef;
    json_error(req($m->[0] => "$flags$m->[1]?environment=nope", \%K, $body), 404, "$m->[0] $m->[1] unknown environment");
    json_error(req($m->[0] => "$flags$m->[1]?environment=a%20b", \%K, $body), 400, "$m->[0] $m->[1] bad environment name");
}
like req(GET => "$flags/flags?environment=nope", \%K)->{json}{error}, qr/no environment "nope"/, '404 names the environment';
for my $m ([GET => '/rules'], [GET => '/rules/checkout'], [POST => '/rules'], [PUT => '/rules/checkout'], [DELETE => '/rules/checkout']) {
    my $body = $m->[0] eq 'POST' ? { flag_name => 'checkout', rules => { type => 'PERCENTAGE', value => 5 } }
             : $m->[0] eq 'PUT' ? { is_enabled => $F } : undef;
    json_error(req($m->[0] => "$tg$m->[1]?environment=nope", \%K, $body), 404, "targeting $m->[0] $m->[1] unknown environment");
}
is $h->psql('SELECT count(*) FROM flag_states'), $states, 'no state written';
is req(GET => "$flags/flags/ghost", \%K)->{status}, 404, 'no flag created';
is $h->psql('SELECT count(*) FROM targeting_rules'), 0, 'no rule written';

# --- per-environment rules ---
$r = req(POST => "$tg/rules?environment=staging", \%K, { flag_name => 'checkout', rules => { type => 'PERCENTAGE', value => 25 } });
is $r->{status}, 201, 'rule created in staging';
is_deeply [ sort keys %{ $r->{json} } ], [qw(created_at flag_name id is_enabled rules updated_at)], 'original row members';
is $h->redis_cmd('HGET', 'tm:rules@staging', 'checkout'), $r->{content}, 'published in tm:rules@staging';
ok !defined $h->redis_cmd('HGET', 'tm:rules', 'checkout'), 'not in tm:rules (default)';
is req(GET => "$tg/rules/checkout", \%K)->{status}, 404, 'no rule in default';
is req(POST => "$tg/rules", \%K, { flag_name => 'checkout', rules => { type => 'PERCENTAGE', value => 90 } })->{status},
    201, 'same flag, default environment: its own rule';
is req(GET => "$tg/rules/checkout?environment=staging", \%K)->{json}{rules}{value}, 25, 'staging keeps 25';
is req(GET => "$tg/rules/checkout", \%K)->{json}{rules}{value}, 90, 'default has 90';
json_error(req(POST => "$tg/rules?environment=staging", \%K, { flag_name => 'checkout', rules => { type => 'PERCENTAGE', value => 1 } }),
    409, 'duplicate in staging');
is scalar @{ req(GET => "$tg/rules?environment=staging", \%K)->{json} }, 1, 'list per environment';
is req(GET => "$tg/segments?environment=staging", \%K)->{status}, 200, 'segments are shared: environment ignored';

# --- every environment at once ---
$r = req(GET => "$flags/flags/checkout?environment=all", \%K);
is $r->{status}, 200, 'environment=all 200';
is_deeply [ sort keys %{ $r->{json}{states} } ], [qw(default production staging)], 'a state per environment';
ok $r->{json}{states}{staging}{is_enabled} && !$r->{json}{states}{default}{is_enabled}, 'states';
is $r->{json}{states}{staging}{rule}{rules}{value}, 25, 'staging rule';
ok !defined $r->{json}{states}{production}{rule}, 'production: no rule (null)';
json_error(req(GET => "$flags/flags?environment=all", \%K), 400, 'all on the collection');
json_error(req(GET => "$flags/flags/none?environment=all", \%K), 404, 'all on an unknown flag');

# --- promotion ---
$r = req(POST => "$flags/flags/checkout/promote", \%K, { from => 'staging', to => 'production' });
is $r->{status}, 200, 'promote staging -> production 200' or diag $r->{content};
ok $r->{json}{flag}{is_enabled}, 'state copied';
is $r->{json}{rule}{rules}{value}, 25, 'rule copied';
ok req(GET => "$flags/flags/checkout?environment=production", \%K)->{json}{is_enabled}, 'production on';
is req(GET => "$tg/rules/checkout?environment=production", \%K)->{json}{rules}{value}, 25, 'production rule 25';
ok hget('tm:flags@production', 'checkout')->{is_enabled}, 'tm:flags@production published';
is hget('tm:rules@production', 'checkout')->{rules}{value}, 25, 'tm:rules@production published';
ok !req(GET => "$flags/flags/checkout", \%K)->{json}{is_enabled}, 'default untouched';
# again after a change: the existing rule is replaced
req(PUT => "$tg/rules/checkout?environment=staging", \%K, { rules => { type => 'PERCENTAGE', value => 50 }, is_enabled => $F });
req(PUT => "$flags/flags/checkout?environment=staging", \%K, { is_enabled => $F });
$r = req(POST => "$flags/flags/checkout/promote", \%K, { from => 'staging', to => 'production' });
is $r->{status}, 200, 'promote again';
my $pr = req(GET => "$tg/rules/checkout?environment=production", \%K)->{json};
is_deeply [ $pr->{rules}{value}, $pr->{is_enabled} ? 1 : 0 ], [ 50, 0 ], 'rule replaced (document and is_enabled)';
ok !req(GET => "$flags/flags/checkout?environment=production", \%K)->{json}{is_enabled}, 'state copied (off)';
# from an environment without a rule: the target's rule goes
$r = req(POST => "$flags/flags/beta/promote", \%K, { from => 'default', to => 'staging' });
is $r->{status}, 200, 'promote default -> staging';
req(POST => "$tg/rules?environment=production", \%K, { flag_name => 'beta', rules => { type => 'PERCENTAGE', value => 3 } });
$r = req(POST => "$flags/flags/beta/promote", \%K, { from => 'staging', to => 'production' });
is $r->{status}, 200, 'promote without a rule';
ok !defined $r->{json}{rule}, 'rule null';
is req(GET => "$tg/rules/beta?environment=production", \%K)->{status}, 404, 'target rule deleted';
ok !req(GET => "$flags/flags/beta?environment=production", \%K)->{json}{is_enabled}, 'state off copied';
# bad promotions: nothing changes
my $snap = req(GET => "$flags/flags/checkout?environment=all", \%K)->{content};
for my $case ([ {}, 400, 'empty body' ], [ { from => 'staging' }, 400, 'no to' ],
              [ { from => 'staging', to => 'staging' }, 400, 'same environment' ],
              [ { from => 'staging', to => 'nope' }, 404, 'unknown target' ],
              [ { from => 'nope', to => 'staging' }, 404, 'unknown source' ],
              [ { from => 'staging', to => 'production', x => 1 }, 400, 'unknown member' ],
              [ { from => 'all', to => 'production' }, 400, 'all is not an environment' ]) {
    json_error(req(POST => "$flags/flags/checkout/promote", \%K, $case->[0]), $case->[1], "promote: $case->[2]");
}
json_error(req(POST => "$flags/flags/none/promote", \%K, { from => 'staging', to => 'production' }), 404, 'promote unknown flag');
json_error(req(GET => "$flags/flags/checkout/promote", \%K), 405, 'GET promote');
json_error(req(POST => "$flags/flags/a%20b/promote", \%K, { from => 'staging', to => 'production' }), 400, 'bad name');
is req(GET => "$flags/flags/checkout?environment=all", \%K)->{content}, $snap, 'bad promotions changed nothing';

# --- reconciliation of the new hashes ---
$h->redis_cmd('HSET', 'tm:flags@staging', 'ghost', '{}');
$h->redis_cmd('HDEL', 'tm:flags@staging', 'checkout');
$h->redis_cmd('HSET', 'tm:rules@staging', 'checkout', '{"stale":1}');
$h->redis_cmd('HSET', 'tm:envs', 'phantom', '{}');
ok $h->wait_until(6, sub {
    !$h->redis_cmd('HEXISTS', 'tm:flags@staging', 'ghost') && $h->redis_cmd('HEXISTS', 'tm:flags@staging', 'checkout')
        && !$h->redis_cmd('HEXISTS', 'tm:envs', 'phantom')
        && ($h->redis_cmd('HGET', 'tm:rules@staging', 'checkout') // '') ne '{"stale":1}' }),
    'tm:flags@env, tm:rules@env and tm:envs repaired';
$h->redis_cmd('DEL', 'tm:ready');
ok $h->wait_until(6, sub { ready('flag@staging') && ready('rule@production') && ready('env') }),
    'a flushed tm:ready lists the environment kinds again';

# --- delete an environment ---
json_error(req(DELETE => "$flags/environments/default", \%K), 409, 'the default cannot be deleted');
json_error(req(DELETE => "$flags/environments/nope", \%K), 404, 'unknown environment');
json_error(req(DELETE => "$flags/environments/a%20b", \%K), 400, 'bad name');
$r = req(DELETE => "$flags/environments/production", \%K);
json_error($r, 409, 'non-empty without confirm');
like $r->{json}{error}, qr/2 flag states and 1 rule.*confirm=production/, 'says what it holds and how to confirm';
json_error(req(DELETE => "$flags/environments/production?confirm=staging", \%K), 409, 'wrong confirm');
json_error(req(DELETE => "$tg/rules?environment=production", \%K), 409, 'targeting purge needs confirm too');
is envs_count(), 3, 'nothing deleted yet';
is req(GET => "$tg/rules/checkout?environment=production", \%K)->{status}, 200, 'rules kept';
$r = req(DELETE => "$flags/environments/production?confirm=production", \%K);
is $r->{status}, 204, 'confirmed delete 204' or diag $r->{content};
is envs_count(), 2, 'gone';
is $h->psql("SELECT count(*) FROM targeting_rules WHERE environment = 'production'"), 0, 'its rules deleted';
is $h->psql('SELECT count(*) FROM flag_states s LEFT JOIN environments e ON e.id = s.environment_id WHERE e.id IS NULL'), 0,
    'its states deleted';
ok !$h->redis_cmd('HEXISTS', 'tm:envs', 'production'), 'out of tm:envs';
ok !$h->redis_cmd('EXISTS', 'tm:flags@production') && !$h->redis_cmd('EXISTS', 'tm:rules@production'), 'its hashes dropped';
ok !ready('flag@production') && !ready('rule@production'), 'and their tm:ready entries';
json_error(req(GET => "$flags/flags?environment=production", \%K), 404, 'flags of a deleted environment');
$h->wait_until(3, sub { 0 });
ok !$h->redis_cmd('EXISTS', 'tm:flags@production'), 'reconciliation does not bring it back';
is req(POST => "$flags/environments", \%K, { name => 'production' })->{status}, 201, 'a new production';
is req(GET => "$tg/rules/checkout?environment=production", \%K)->{status}, 404, 'starts without the old rules';
ok !req(GET => "$flags/flags/checkout?environment=production", \%K)->{json}{is_enabled}, 'and with every flag off';
$r = req(DELETE => "$flags/environments/production", \%K);
is $r->{status}, 204, 'an empty environment needs no confirmation';

# --- deleting a flag deletes it everywhere ---
is req(DELETE => "$flags/flags/checkout?environment=staging", \%K)->{status}, 204, 'delete flag';
ok !$h->redis_cmd('HEXISTS', 'tm:flags', 'checkout') && !$h->redis_cmd('HEXISTS', 'tm:flags@staging', 'checkout'),
    'removed from every environment hash';

# --- the default environment's Redis values keep the original shape ---
my $f = hget('tm:flags', 'beta');
is_deeply [ sort keys %$f ], [qw(created_at description id is_enabled name updated_at)], 'tm:flags value: original members';

close $sub;
$h->teardown;
done_testing;
