#!/usr/bin/env perl
# flags daemon (8002): the original contract, API keys (through a real auth
# daemon), Redis publication, bad input, replicas racing, faults.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key replica subscriber change race);
use Digest::SHA ();
use Time::HiRes qw(time sleep);

my $h = TM::Harness->new;
my $M = 'master-test-key';
# auth reconciles rarely here, so a key missing from Redis stays missing and
# the /validate fallback is what lets it through.
my $auth = $h->daemon('auth', MASTER_KEY => $M, TM_RECONCILE_SECONDS => 3600);
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth);
my $J = $h->json;
my $BUILD = $ENV{TM_BUILD} || "build";

my $k = new_key($h, $auth, $M, 'flags-test');
my %K = (Authorization => "Bearer $k->{key}");
sub count { $h->psql('SELECT count(*) FROM flags') }
sub ver { $h->redis_cmd('GET', 'tm:version') // 0 }

# --- health needs no key ---
for my $p (qw(/health /health/live /health/ready)) {
    is $h->req(GET => "$flags$p")->{status}, 200, "$p 200 without a key";
}
is_deeply $h->req(GET => "$flags/health")->{json}, { status => 'ok' }, 'health body';

# --- API key required everywhere else ---
for my $c ([GET => '/flags'], [POST => '/flags'], [GET => '/flags/x'], [PUT => '/flags/x'],
           [DELETE => '/flags/x'], [GET => '/nope']) {
    my $r = $h->req($c->[0] => "$flags$c->[1]", {}, $c->[0] =~ /POST|PUT/ ? { name => 'x' } : undef);
    is $r->{status}, 401, "$c->[0] $c->[1] without a key -> 401";
    ok $r->{json}{error}, '401 JSON error';
}
is $h->req(GET => "$flags/flags", { Authorization => 'Bearer tm_key_' . ('0' x 64) })->{status}, 401, 'unknown key 401';
is $h->req(GET => "$flags/flags", { Authorization => $k->{key} })->{status}, 200, 'bare key accepted';
is count(), 0, 'nothing written without a key';

# --- create ---
my $v0 = ver();
my $r = $h->req(POST => "$flags/flags", \%K, { name => 'new-checkout' });
is $r->{status}, 201, 'create 201';
is $r->{headers}{'content-type'}, 'application/json', 'JSON content type';
my $f = $r->{json};
is_deeply [ sort keys %$f ], [qw(created_at description id is_enabled name updated_at)], 'row fields';
is $f->{name}, 'new-checkout', 'name';
is $f->{description}, '', 'description defaults to ""';
ok !$f->{is_enabled} && JSON::PP::is_bool($f->{is_enabled}), 'is_enabled defaults to false (a JSON boolean)';
like $f->{id}, qr/^\d+$/, 'id is a number';
like $f->{created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'created_at RFC 3339 UTC';
is $f->{updated_at}, $f->{created_at}, 'updated_at = created_at on create';
is $h->redis_cmd('HGET', 'tm:flags', 'new-checkout'), $r->{content}, 'published JSON byte-identical to the response';
is ver(), $v0 + 1, 'tm:version incremented';

$r = $h->req(POST => "$flags/flags", \%K, { name => 'b.beta', description => 'Beta', is_enabled => JSON::PP::true });
is $r->{status}, 201, 'create with description and is_enabled';
is $r->{json}{description}, 'Beta', 'description stored';
ok $r->{json}{is_enabled}, 'is_enabled true';
$r = $h->req(POST => "$flags/flags", \%K, { name => 'A:upper_case-1' });
is $r->{status}, 201, 'charset: letters, digits, _ - . :';
$r = $h->req(POST => "$flags/flags", \%K, { name => 'n' x 100 });
is $r->{status}, 201, 'name of exactly 100 characters';

# --- duplicate ---
my $before = count();
$r = $h->req(POST => "$flags/flags", \%K, { name => 'new-checkout', is_enabled => JSON::PP::true });
is $r->{status}, 409, 'duplicate 409';
ok $r->{json}{error}, '409 JSON error';
is count(), $before, 'duplicate wrote nothing';
ok !$h->req(GET => "$flags/flags/new-checkout", \%K)->{json}{is_enabled}, 'original row untouched';

# --- list ---
$r = $h->req(GET => "$flags/flags", \%K);
is $r->{status}, 200, 'list 200';
is_deeply [ map { $_->{name} } @{ $r->{json} } ], [ 'A:upper_case-1', 'b.beta', 'new-checkout', 'n' x 100 ],
    'list ordered by name';
is $r->{content}, '[' . join(',', map { $h->redis_cmd('HGET', 'tm:flags', $_->{name}) } @{ $r->{json} }) . ']',
    'list elements are the published texts';

# --- get ---
$r = $h->req(GET => "$flags/flags/new-checkout", \%K);
is $r->{status}, 200, 'get 200';
is_deeply $r->{json}, $f, 'get returns the created row';
$r = $h->req(GET => "$flags/flags/missing", \%K);
is $r->{status}, 404, 'get unknown 404';
ok $r->{json}{error}, '404 JSON error';

# --- update ---
my $sub = subscriber($h);
$v0 = ver();
sleep 0.01;
$r = $h->req(PUT => "$flags/flags/new-checkout", \%K, { description => 'Checkout v2' });
is $r->{status}, 200, 'update description 200';
is $r->{json}{description}, 'Checkout v2', 'description updated';
ok !$r->{json}{is_enabled}, 'is_enabled kept';
is $r->{json}{created_at}, $f->{created_at}, 'created_at unchanged';
ok $r->{json}{updated_at} gt $f->{updated_at}, 'updated_at changed';
is $h->redis_cmd('HGET', 'tm:flags', 'new-checkout'), $r->{content}, 'update published byte-identical';
is ver(), $v0 + 1, 'version incremented on update';
is_deeply change($h, $sub, $v0 + 1), { version => $v0 + 1, kind => 'flag', op => 'upsert', name => 'new-checkout' },
    'tm:changes subscriber receives {version, kind, op, name}';
my $u1 = $r->{json}{updated_at};

$r = $h->req(PUT => "$flags/flags/new-checkout", \%K, { is_enabled => JSON::PP::true });
is $r->{status}, 200, 'update is_enabled 200';
ok $r->{json}{is_enabled}, 'is_enabled updated';
is $r->{json}{description}, 'Checkout v2', 'description kept';
ok $r->{json}{updated_at} gt $u1, 'updated_at changes on every update';
$r = $h->req(PUT => "$flags/flags/new-checkout", \%K,
             { name => 'new-checkout', description => '', is_enabled => JSON::PP::false });
is $r->{status}, 200, 'update both (name repeated) 200';
ok !$r->{json}{is_enabled} && $r->{json}{description} eq '', 'both fields updated';
$r = $h->req(PUT => "$flags/flags/missing", \%K, { is_enabled => JSON::PP::true });
is $r->{status}, 404, 'update unknown 404';
is count(), 4, 'update of unknown flag created nothing';

my $row = $h->req(GET => "$flags/flags/new-checkout", \%K)->{content};
for my $case (
    [ '', 'empty body' ],
    [ '{}', 'neither field' ],
    [ '{"name":"new-checkout"}', 'only the name' ],
    [ '{"description":', 'malformed JSON' ],
    [ '[]', 'array body' ],
    [ '{"is_enabled":"yes"}', 'is_enabled "yes"' ],
    [ '{"is_enabled":null}', 'is_enabled null' ],
    [ '{"description":[]}', 'description not a string' ],
    [ '{"description":"x","colour":"red"}', 'unknown field' ],
    [ '{"name":"renamed","description":"x"}', 'rename' ],
    [ qq({"description":"bad\xc3\x28"}), 'invalid UTF-8' ],
) {
    my $res = $h->req(PUT => "$flags/flags/new-checkout", \%K, $case->[0]);
    is $res->{status}, 400, "update: $case->[1] -> 400";
    ok $res->{json} && $res->{json}{error}, "update: $case->[1] -> JSON error";
}
like $h->req(PUT => "$flags/flags/new-checkout", \%K, '{"colour":1}')->{json}{error}, qr/colour/,
    'unknown field named in the error';
is $h->req(GET => "$flags/flags/new-checkout", \%K)->{content}, $row, 'rejected updates changed nothing';

# --- delete ---
$v0 = ver();
$r = $h->req(DELETE => "$flags/flags/b.beta", \%K);
is $r->{status}, 204, 'delete 204';
is length($r->{content} // ''), 0, '204 empty body';
is $h->req(GET => "$flags/flags/b.beta", \%K)->{status}, 404, 'deleted flag 404';
is $h->req(DELETE => "$flags/flags/b.beta", \%K)->{status}, 404, 'delete unknown 404';
ok !defined $h->redis_cmd('HGET', 'tm:flags', 'b.beta'), 'deleted flag removed from tm:flags';
is ver(), $v0 + 1, 'version incremented on delete';
is_deeply change($h, $sub, $v0 + 1), { version => $v0 + 1, kind => 'flag', op => 'delete', name => 'b.beta' },
    'delete notification';
close $sub;

# --- routing ---
is $h->req(GET => "$flags/nope", \%K)->{status}, 404, 'unknown route 404';
is $h->req(GET => "$flags/flagsx", \%K)->{status}, 404, 'prefix is not a route';
$r = $h->req(DELETE => "$flags/flags", \%K);
is $r->{status}, 405, 'DELETE /flags 405';
is $r->{headers}{allow}, 'GET, POST', 'Allow header';
is $h->req(PATCH => "$flags/flags/new-checkout", \%K, '{}')->{status}, 405, 'PATCH 405';
for my $p ('bad%20name', 'a%2Fb', 'x%27%3B--', 'n' x 101, 'caf%E2%80%8B') {
    $r = $h->req(GET => "$flags/flags/$p", \%K);
    is $r->{status}, 400, "name in path $p -> 400";
}
like $r->{json}{error}, qr/letters, digits/, 'error names the charset';

# --- bad input on create: 4xx JSON, nothing written ---
$before = count();
$v0 = ver();
for my $case (
    [ '{"name":', 'malformed JSON' ],
    [ '{"name":"x"} trailing', 'trailing garbage' ],
    [ '[]', 'array body' ],
    [ '"new"', 'string body' ],
    [ '', 'empty body' ],
    [ '{}', 'missing name' ],
    [ '{"description":"d"}', 'missing name with description' ],
    [ '{"name":null}', 'name null' ],
    [ '{"name":42}', 'name not a string' ],
    [ '{"name":""}', 'empty name' ],
    [ '{"name":"' . ('a' x 101) . '"}', 'name over 100 chars' ],
    [ '{"name":"a b"}', 'space in name' ],
    [ '{"name":"a/b"}', 'slash in name' ],
    [ qq({"name":"caf\xe2\x80\x8b"}), 'invisible character (U+200B) in name' ],
    [ q({"name":"x'; DROP TABLE flags;--"}), 'SQL metacharacters in name' ],
    [ '{"name":"ok1","is_enabled":"yes"}', 'is_enabled "yes"' ],
    [ '{"name":"ok1","is_enabled":1}', 'is_enabled 1' ],
    [ '{"name":"ok1","description":5}', 'description not a string' ],
    [ '{"name":"ok1","description":null}', 'description null' ],
    [ qq({"name":"ok1","description":"bad\xc3\x28"}), 'invalid UTF-8 in description' ],
    [ qq({"name":"ok1","description":"\xed\xa0\x80"}), 'UTF-8 surrogate in description' ],
    [ '{"name":"ok1","description":"bell\u0007"}', 'control character in description' ],
    [ '{"name":"ok1","description":"nul\u0000"}', 'NUL in description' ],
    [ '{"name":"ok1","colour":"red"}', 'unknown field' ],
    [ '{"name":"a","name":"b"}', 'duplicate member' ],
) {
    my $res = $h->req(POST => "$flags/flags", \%K, $case->[0]);
    is $res->{status}, 400, "$case->[1] -> 400";
    ok $res->{json} && $res->{json}{error}, "$case->[1] -> JSON error";
}
like $h->req(POST => "$flags/flags", \%K, '{"name":"ok1","colour":"red"}')->{json}{error}, qr/"colour"/,
    'unknown field named';
$r = $h->req(POST => "$flags/flags", \%K, '{"name":"big","description":"' . ('x' x 70000) . '"}');
is $r->{status}, 413, 'body over 64 KiB -> 413';
ok $r->{json}{error}, '413 JSON error';
is count(), $before, 'no bad request wrote a row';
is ver(), $v0, 'no bad request published anything';

my $meta = q{'; DROP TABLE flags; -- "quoted" \\ %_ $1 ; DELETE FROM flags WHERE '1'='1};
my $utf = "caf\xc3\xa9 \xf0\x9f\x9a\x80\ttab\nline";
$r = $h->req(POST => "$flags/flags", \%K, $J->encode({ name => 'sql-meta', description => $meta }));
is $r->{status}, 201, 'SQL metacharacters in description accepted';
is $h->req(GET => "$flags/flags/sql-meta", \%K)->{json}{description}, $meta, 'stored verbatim';
$r = $h->req(POST => "$flags/flags", \%K, $J->encode({ name => 'utf8', description => $utf }));
is $r->{status}, 201, 'UTF-8 description with tab and newline accepted';
is $h->req(GET => "$flags/flags/utf8", \%K)->{json}{description}, $utf, 'UTF-8 stored verbatim';
is count(), $before + 2, 'exactly the two valid creates wrote rows';

# --- two replicas racing on the same name: one 201, the rest 409 ---
my ($h2, $flags2) = replica($h, 'flags');   # no AUTH_SERVICE_URL: Redis only
is $h->req(GET => "$flags2/flags", \%K)->{status}, 200, 'replica accepts the key from Redis';
for my $n (1 .. 5) {
    my @st = race($h, [ ("$flags/flags", "$flags2/flags") x 4 ], POST => \%K, { name => "race-$n" });
    is_deeply [ sort @st ], [ 201, (409) x 7 ], "race $n: 8 concurrent creates on 2 replicas: one 201, seven 409";
}
is $h->psql("SELECT count(*) FROM flags WHERE name LIKE 'race-%'"), 5, 'one row per raced name';
unlike $h->log('flags') . $h2->log('flags'), qr/ 500 /, 'no 500 in either replica';

# --- keys: revocation within 1 s; Redis flushed -> /validate fallback ---
my $victim = new_key($h, $auth, $M, 'to-revoke');
my %V = (Authorization => "Bearer $victim->{key}");
is $h->req(GET => "$flags/flags", \%V)->{status}, 200, 'fresh key works on flags';
is $h->req(DELETE => "$auth/admin/keys/$victim->{id}", { Authorization => "Bearer $M" })->{status}, 204, 'key revoked';
my $t0 = time;
my $gone = $h->wait_until(1, sub { $h->req(GET => "$flags/flags", \%V)->{status} == 401 });
ok $gone && time - $t0 <= 1, 'revoked key gets 401 on flags within 1 s';
is $h->req(GET => "$flags2/flags", \%V)->{status}, 401, 'and on the replica';

$h->redis_cmd('FLUSHALL');
is $h->req(GET => "$flags/flags", \%K)->{status}, 200, 'Redis flushed: valid key still works (fallback to /validate)';
ok !$h->redis_cmd('HEXISTS', 'tm:keys', Digest::SHA::sha256_hex($k->{key})), '... and it was not Redis that knew it';
is $h->req(GET => "$flags2/flags", \%K)->{status}, 401, 'without AUTH_SERVICE_URL the key is unknown';
my $n = count();
ok $h->wait_until(5, sub { $h->redis_cmd('HLEN', 'tm:flags') == $n }), 'reconciliation republishes every flag';
is $h->redis_cmd('HGET', 'tm:flags', 'sql-meta'), $h->req(GET => "$flags/flags/sql-meta", \%K)->{content},
    'republished JSON equals the response';
$h->redis_cmd('HSET', 'tm:flags', 'ghost', '{}');
$h->redis_cmd('HSET', 'tm:flags', 'utf8', '{"stale":true}');
ok $h->wait_until(5, sub { !$h->redis_cmd('HEXISTS', 'tm:flags', 'ghost')
                           && $h->redis_cmd('HGET', 'tm:flags', 'utf8') ne '{"stale":true}' }),
    'reconciliation removes extra fields and repairs changed ones';
$h2->teardown;

# --- Redis down: writes commit and succeed; repaired when it returns ---
$h->stop('redis');
$r = $h->req(POST => "$flags/flags", \%K, { name => 'while-down' });
is $r->{status}, 201, 'create with Redis down 201';
is $h->req(PUT => "$flags/flags/new-checkout", \%K, { is_enabled => JSON::PP::true })->{status}, 200, 'update with Redis down 200';
is $h->req(DELETE => "$flags/flags/utf8", \%K)->{status}, 204, 'delete with Redis down 204';
$h->restart('redis');
my $want = $h->req(GET => "$flags/flags/new-checkout", \%K)->{content};
ok $h->wait_until(6, sub {
    ($h->redis_cmd('HGET', 'tm:flags', 'while-down') // '') ne ''
        && ($h->redis_cmd('HGET', 'tm:flags', 'new-checkout') // '') eq $want
        && !$h->redis_cmd('HEXISTS', 'tm:flags', 'utf8') }), 'Redis repaired by reconciliation';

# --- PostgreSQL down: 503, recovery ---
$h->stop('postgres');
$r = $h->req(POST => "$flags/flags", \%K, { name => 'pg-down' });
is $r->{status}, 503, 'create with PostgreSQL down 503';
ok $r->{json}{error}, '503 JSON error';
is $h->req(GET => "$flags/flags", \%K)->{status}, 503, 'list 503';
is $h->req(GET => "$flags/health/ready")->{status}, 503, 'not ready';
is $h->req(GET => "$flags/health/live")->{status}, 200, 'still live';
$h->restart('postgres');
is $h->req(POST => "$flags/flags", \%K, { name => 'pg-back' })->{status}, 201, 'recovers when PostgreSQL returns';
is $h->req(GET => "$flags/health/ready")->{status}, 200, 'ready again';

# --- migrations: idempotent, and on the original service's schema ---
{
    local $ENV{DATABASE_URL} = $h->postgres;
    my $out = `$BUILD/admin-daemons/togglemaster-flags --migrate 2>&1`;
    is $?, 0, '--migrate on a migrated database exits 0' or diag $out;
    $h->psql('CREATE DATABASE original');
    (my $orig = $h->postgres) =~ s{/togglemaster$}{/original};
    my ($bin) = sort glob('/usr/lib/postgresql/*/bin');
    system("$bin/psql -X -q -h 127.0.0.1 -p " . $h->port('postgres') . " -U postgres -d original -c "
           . "\"CREATE TABLE flags (id SERIAL PRIMARY KEY, name VARCHAR(100) UNIQUE NOT NULL, description TEXT,"
           . " is_enabled BOOLEAN NOT NULL DEFAULT false, created_at TIMESTAMPTZ DEFAULT NOW(), updated_at TIMESTAMPTZ DEFAULT NOW());"
           . " INSERT INTO flags (name) VALUES ('legacy')\" >/dev/null") == 0 or diag 'cannot create original schema';
    $ENV{DATABASE_URL} = $orig;
    $out = `$BUILD/admin-daemons/togglemaster-flags --migrate 2>&1`;
    is $?, 0, '--migrate on the original schema exits 0' or diag $out;
    my ($h3, $legacy) = replica($h, 'flags', DATABASE_URL => $orig, AUTH_SERVICE_URL => $auth);
    $r = $h->req(GET => "$legacy/flags/legacy", \%K);
    is $r->{status}, 200, 'a flag of the original database is served';
    is $r->{json}{description}, '', 'NULL description served as ""';
    $h3->teardown;
}
is $h->psql("SELECT count(*) FROM tm_schema_migrations WHERE component = 'flags'"), '1', 'one migration recorded';

done_testing;
