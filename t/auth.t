#!/usr/bin/env perl
# auth daemon (8001): the original contract plus list/revoke, key storage,
# Redis publication, bad input and faults.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use Digest::SHA qw(sha256_hex);

my $h = TM::Harness->new;
my $M = 'master-test-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my %MH = (Authorization => "Bearer $M");

my $r = $h->req(GET => "$auth/health");
is $r->{status}, 200, 'health 200';
is_deeply $r->{json}, { status => 'ok' }, 'health body';
is $h->req(GET => "$auth/health/live")->{status}, 200, 'live';
is $h->req(GET => "$auth/health/ready")->{status}, 200, 'ready (db reachable)';

# --- create ---
$r = $h->req(POST => "$auth/admin/keys", \%MH, { name => 'ci' });
is $r->{status}, 201, 'create 201';
my $key = $r->{json}{key};
like $key, qr/^tm_key_[0-9a-f]{64}$/, 'key format tm_key_ + 64 hex';
is $r->{json}{name}, 'ci', 'name echoed';
ok $r->{json}{message}, 'message present';
like $r->{json}{id}, qr/^\d+$/, 'id returned';
my $id = $r->{json}{id};
is $r->{headers}{'content-type'}, 'application/json', 'JSON content type';

my $r2 = $h->req(POST => "$auth/admin/keys", { Authorization => $M }, { name => 'bare' });
is $r2->{status}, 201, 'bare master key accepted';
isnt $r2->{json}{key}, $key, 'keys differ';

# Stored: hash only.
is $h->psql("SELECT count(*) FROM api_keys WHERE key_hash = '" . sha256_hex($key) . "'"), '1', 'sha256 hex stored';
is $h->psql("SELECT count(*) FROM api_keys WHERE key_hash LIKE 'tm_key_%' OR name LIKE 'tm_key_%'"), '0', 'plain key not stored';
unlike $h->log('auth'), qr/\Q$key\E/, 'key never logged';

# Published to Redis.
my $pub = $h->redis_cmd('HGET', 'tm:keys', sha256_hex($key));
ok $pub, 'key hash published in tm:keys';
is_deeply $h->json->decode($pub), { id => $id, name => 'ci' }, 'published object has id and name only';
ok $h->redis_cmd('GET', 'tm:version') >= 2, 'version bumped';

# --- validate ---
is $h->req(GET => "$auth/validate", { Authorization => "Bearer $key" })->{status}, 200, 'validate bearer';
is $h->req(GET => "$auth/validate", { Authorization => $key })->{status}, 200, 'validate bare';
ok $h->req(GET => "$auth/validate", { Authorization => "Bearer $key" })->{json}{message}, 'validate message';
is $h->req(GET => "$auth/validate")->{status}, 401, 'validate without header 401';
is $h->req(GET => "$auth/validate", { Authorization => 'Bearer tm_key_nope' })->{status}, 401, 'unknown key 401';

# --- list ---
$r = $h->req(GET => "$auth/admin/keys", \%MH);
is $r->{status}, 200, 'list 200';
is scalar @{ $r->{json} }, 2, 'two keys listed';
is_deeply [ sort keys %{ $r->{json}[0] } ], [qw(created_at id is_active name)], 'list fields: no key, no hash';
like $r->{json}[0]{created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$/, 'created_at RFC 3339 UTC';
is $h->req(GET => "$auth/admin/keys")->{status}, 403, 'list needs master key';

# --- master key errors ---
is $h->req(POST => "$auth/admin/keys", { Authorization => 'Bearer wrong' }, { name => 'x' })->{status}, 403, 'wrong master 403';
is $h->req(POST => "$auth/admin/keys", {}, { name => 'x' })->{status}, 403, 'missing master 403';

# --- bad input: 400 and nothing written ---
my $before = $h->psql('SELECT count(*) FROM api_keys');
for my $case (
    [ '{"name":', 'malformed JSON' ],
    [ '[]', 'array body' ],
    [ '', 'empty body' ],
    [ '{}', 'missing name' ],
    [ '{"name":""}', 'empty name' ],
    [ '{"name":42}', 'name not a string' ],
    [ '{"name":"' . ('a' x 101) . '"}', 'name over 100 chars' ],
    [ qq({"name":"bad\xc3\x28"}), 'invalid UTF-8' ],
    [ '{"name":"a","name":"b"}', 'duplicate keys' ],
) {
    my $res = $h->req(POST => "$auth/admin/keys", \%MH, $case->[0]);
    is $res->{status}, 400, "$case->[1] -> 400";
    ok $res->{json} && $res->{json}{error}, "$case->[1] -> JSON error";
}
$r = $h->req(POST => "$auth/admin/keys", \%MH, '{"name":"' . ('x' x 70000) . '"}');
is $r->{status}, 413, 'body over 64 KiB -> 413';
ok $r->{json}{error}, '413 has JSON error';
$r = $h->req(POST => "$auth/admin/keys", \%MH, { name => "x'); DROP TABLE api_keys;--" });
is $r->{status}, 201, 'SQL metacharacters are just a name';
is $h->psql("SELECT count(*) FROM api_keys"), $before + 1, 'only the valid create wrote a row';

# --- revoke ---
is $h->req(DELETE => "$auth/admin/keys/$id", {})->{status}, 403, 'revoke needs master';
is $h->req(DELETE => "$auth/admin/keys/abc", \%MH)->{status}, 400, 'revoke bad id 400';
is $h->req(DELETE => "$auth/admin/keys/999999", \%MH)->{status}, 404, 'revoke unknown 404';
$r = $h->req(DELETE => "$auth/admin/keys/$id", \%MH);
is $r->{status}, 204, 'revoke 204';
is length($r->{content} // ''), 0, '204 empty body';
is $h->req(GET => "$auth/validate", { Authorization => "Bearer $key" })->{status}, 401, 'revoked key 401';
ok !defined $h->redis_cmd('HGET', 'tm:keys', sha256_hex($key)), 'revoked hash removed from Redis';

# --- routing ---
is $h->req(GET => "$auth/nope")->{status}, 404, 'unknown route 404';
is $h->req(PUT => "$auth/admin/keys", \%MH, {})->{status}, 405, 'wrong method 405';

# --- Redis flushed: reconciliation heals it ---
$h->redis_cmd('FLUSHALL');
ok $h->wait_until(5, sub { $h->redis_cmd('HEXISTS', 'tm:keys', sha256_hex($r2->{json}{key})) }),
    'reconciliation republishes active keys after FLUSHALL';
ok !$h->redis_cmd('HEXISTS', 'tm:keys', sha256_hex($key)), 'revoked key not republished';

# --- Redis down: writes still succeed ---
$h->stop('redis');
$r = $h->req(POST => "$auth/admin/keys", \%MH, { name => 'while-redis-down' });
is $r->{status}, 201, 'create with Redis down still 201';
$h->restart('redis');
ok $h->wait_until(6, sub { $h->redis_cmd('HEXISTS', 'tm:keys', sha256_hex($r->{json}{key})) }),
    'key created while Redis was down appears after it returns';

# --- PostgreSQL down: 503, recovery ---
$h->stop('postgres');
$r = $h->req(POST => "$auth/admin/keys", \%MH, { name => 'pg-down' });
is $r->{status}, 503, 'create with PostgreSQL down -> 503';
ok $r->{json}{error}, '503 JSON error';
is $h->req(GET => "$auth/health/ready")->{status}, 503, 'not ready without database';
is $h->req(GET => "$auth/health/live")->{status}, 200, 'still live';
$h->restart('postgres');
is $h->req(POST => "$auth/admin/keys", \%MH, { name => 'pg-back' })->{status}, 201, 'recovers when PostgreSQL returns';

# --- migrations are idempotent; --migrate mode ---
{
    local $ENV{DATABASE_URL} = $h->postgres;
    my $out = `build/admin-daemons/togglemaster-auth --migrate 2>&1`;
    is $?, 0, '--migrate exits 0 on a migrated database' or diag $out;
}
is $h->psql("SELECT count(*) FROM tm_schema_migrations WHERE component = 'auth'"), '1', 'one migration recorded';

done_testing;
