#!/usr/bin/env perl
# targeting daemon (8003): the original contract plus GET /rules, rule
# validation against lib/'s rule language, API keys, Redis publication, bad
# input, replicas racing, faults.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key replica subscriber change race);

my $h = TM::Harness->new;
my $M = 'master-test-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my $J = $h->json;
my $BUILD = $ENV{TM_BUILD} || "build";
my $k = new_key($h, $auth, $M, 'targeting-test');
my %K = (Authorization => "Bearer $k->{key}");
sub count { $h->psql('SELECT count(*) FROM targeting_rules') }
sub ver { $h->redis_cmd('GET', 'tm:version') // 0 }
my $T = JSON::PP::true;
my $F = JSON::PP::false;

# --- health and keys ---
for my $p (qw(/health /health/live /health/ready)) {
    is $h->req(GET => "$tg$p")->{status}, 200, "$p 200 without a key";
}
for my $c ([GET => '/rules'], [POST => '/rules'], [GET => '/rules/x'], [PUT => '/rules/x'], [DELETE => '/rules/x']) {
    my $r = $h->req($c->[0] => "$tg$c->[1]", {}, $c->[0] =~ /POST|PUT/ ? { flag_name => 'x', rules => { type => 'PERCENTAGE', value => 1 } } : undef);
    is $r->{status}, 401, "$c->[0] $c->[1] without a key -> 401";
    ok $r->{json}{error}, '401 JSON error';
}
is $h->req(GET => "$tg/rules", { Authorization => 'Bearer wrong' })->{status}, 401, 'invalid key 401';
is count(), 0, 'nothing written without a key';

# --- create ---
my $sub = subscriber($h);
my $v0 = ver();
my $r = $h->req(POST => "$tg/rules", \%K, { flag_name => 'new-checkout', rules => { type => 'PERCENTAGE', value => 25 } });
is $r->{status}, 201, 'create 201';
is $r->{headers}{'content-type'}, 'application/json', 'JSON content type';
my $rule = $r->{json};
is_deeply [ sort keys %$rule ], [qw(created_at flag_name id is_enabled rules updated_at)], 'row fields';
is $rule->{flag_name}, 'new-checkout', 'flag_name';
ok $rule->{is_enabled} && JSON::PP::is_bool($rule->{is_enabled}), 'is_enabled defaults to true';
is_deeply $rule->{rules}, { type => 'PERCENTAGE', value => 25 }, 'rules document returned';
like $rule->{created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'created_at RFC 3339 UTC';
is $rule->{updated_at}, $rule->{created_at}, 'updated_at = created_at on create';
is $h->redis_cmd('HGET', 'tm:rules', 'new-checkout'), $r->{content}, 'published JSON byte-identical to the response';
is ver(), $v0 + 1, 'tm:version incremented';
is_deeply change($h, $sub, $v0 + 1), { version => $v0 + 1, kind => 'rule', op => 'upsert', name => 'new-checkout' },
    'tm:changes notification';
is $h->psql(q{SELECT jsonb_typeof(rules) || ' ' || (rules->>'value') FROM targeting_rules WHERE flag_name = 'new-checkout'}),
    'object 25', 'stored as JSONB';

$r = $h->req(POST => "$tg/rules", \%K, JSON::PP->new->utf8->encode({ flag_name => 'beta', is_enabled => $F,
    rules => { type => 'USER_LIST', values => [ 'alice', "o'brien; DROP TABLE x;--", "\x{e9}" ] } }));
is $r->{status}, 201, 'USER_LIST with is_enabled false 201';
ok !$r->{json}{is_enabled}, 'is_enabled false';
is_deeply $r->{json}{rules}{values}, [ 'alice', "o'brien; DROP TABLE x;--", "\xc3\xa9" ], 'user ids stored verbatim';
$r = $h->req(POST => "$tg/rules", \%K, '{"flag_name":"decimal","rules":{"type":"PERCENTAGE","value":33.3}}');
is $r->{status}, 201, 'fractional percentage 201';
like $r->{content}, qr/"value"\s*:\s*33\.3[},]/, 'value kept as written (33.3)';
$r = $h->req(POST => "$tg/rules", \%K, { flag_name => 'edge', rules => { type => 'PERCENTAGE', value => 0 } });
is $r->{status}, 201, 'percentage 0 accepted';

# --- duplicate ---
my $before = count();
$r = $h->req(POST => "$tg/rules", \%K, { flag_name => 'new-checkout', rules => { type => 'PERCENTAGE', value => 90 } });
is $r->{status}, 409, 'duplicate 409';
ok $r->{json}{error}, '409 JSON error';
is count(), $before, 'duplicate wrote nothing';
is $h->req(GET => "$tg/rules/new-checkout", \%K)->{json}{rules}{value}, 25, 'original rule untouched';

# --- list (beyond the original) and get ---
$r = $h->req(GET => "$tg/rules", \%K);
is $r->{status}, 200, 'list 200';
is_deeply [ map { $_->{flag_name} } @{ $r->{json} } ], [qw(beta decimal edge new-checkout)], 'list ordered by flag_name';
is $r->{content}, '[' . join(',', map { $h->redis_cmd('HGET', 'tm:rules', $_->{flag_name}) } @{ $r->{json} }) . ']',
    'list elements are the published texts';
$r = $h->req(GET => "$tg/rules/new-checkout", \%K);
is $r->{status}, 200, 'get 200';
is_deeply $r->{json}, $rule, 'get returns the created row';
is $h->req(GET => "$tg/rules/missing", \%K)->{status}, 404, 'get unknown 404';
is $h->req(GET => "$tg/rules/bad%20name", \%K)->{status}, 400, 'bad name in path 400';
is $h->req(GET => "$tg/rules/" . ('r' x 101), \%K)->{status}, 400, 'name over 100 in path 400';

# --- update ---
$v0 = ver();
$r = $h->req(PUT => "$tg/rules/new-checkout", \%K, { rules => { type => 'PERCENTAGE', value => 50 } });
is $r->{status}, 200, 'update rules 200';
is $r->{json}{rules}{value}, 50, 'rules replaced';
ok $r->{json}{is_enabled}, 'is_enabled kept';
is $r->{json}{created_at}, $rule->{created_at}, 'created_at unchanged';
ok $r->{json}{updated_at} gt $rule->{updated_at}, 'updated_at changed';
is $h->redis_cmd('HGET', 'tm:rules', 'new-checkout'), $r->{content}, 'update published byte-identical';
is_deeply change($h, $sub, $v0 + 1), { version => $v0 + 1, kind => 'rule', op => 'upsert', name => 'new-checkout' },
    'update notification';
my $u1 = $r->{json}{updated_at};
$r = $h->req(PUT => "$tg/rules/new-checkout", \%K, { is_enabled => $F });
is $r->{status}, 200, 'update is_enabled 200';
ok !$r->{json}{is_enabled}, 'is_enabled updated';
is $r->{json}{rules}{value}, 50, 'rules kept';
ok $r->{json}{updated_at} gt $u1, 'updated_at changes on every update';
$r = $h->req(PUT => "$tg/rules/new-checkout", \%K,
             { flag_name => 'new-checkout', is_enabled => $T, rules => { type => 'USER_LIST', values => ['bob'] } });
is $r->{status}, 200, 'update both (flag_name repeated) 200';
is_deeply [ $r->{json}{is_enabled} ? 1 : 0, $r->{json}{rules} ], [ 1, { type => 'USER_LIST', values => ['bob'] } ], 'both updated';
is $h->req(PUT => "$tg/rules/missing", \%K, { is_enabled => $T })->{status}, 404, 'update unknown 404';
is count(), $before, 'update of unknown rule created nothing';

my $row = $h->req(GET => "$tg/rules/new-checkout", \%K)->{content};
for my $case (
    [ '', 'empty body' ],
    [ '{}', 'neither field' ],
    [ '{"flag_name":"new-checkout"}', 'only the name' ],
    [ '{"rules":', 'malformed JSON' ],
    [ '{"is_enabled":"yes"}', 'is_enabled "yes"' ],
    [ '{"rules":null}', 'rules null' ],
    [ '{"rules":[]}', 'rules not an object' ],
    [ '{"rules":{"type":"PERCENTAGE","value":101}}', 'percentage over 100' ],
    [ '{"rules":{"type":"GEO","value":1}}', 'unknown type' ],
    [ '{"flag_name":"other","is_enabled":true}', 'rename' ],
    [ '{"is_enabled":true,"extra":1}', 'unknown field' ],
) {
    my $res = $h->req(PUT => "$tg/rules/new-checkout", \%K, $case->[0]);
    is $res->{status}, 400, "update: $case->[1] -> 400";
    ok $res->{json} && $res->{json}{error}, "update: $case->[1] -> JSON error";
}
is $h->req(GET => "$tg/rules/new-checkout", \%K)->{content}, $row, 'rejected updates changed nothing';

# --- delete ---
$v0 = ver();
$r = $h->req(DELETE => "$tg/rules/edge", \%K);
is $r->{status}, 204, 'delete 204';
is length($r->{content} // ''), 0, '204 empty body';
is $h->req(GET => "$tg/rules/edge", \%K)->{status}, 404, 'deleted rule 404';
is $h->req(DELETE => "$tg/rules/edge", \%K)->{status}, 404, 'delete unknown 404';
ok !$h->redis_cmd('HEXISTS', 'tm:rules', 'edge'), 'deleted rule removed from tm:rules';
is_deeply change($h, $sub, $v0 + 1), { version => $v0 + 1, kind => 'rule', op => 'delete', name => 'edge' },
    'delete notification';
close $sub;

# --- routing ---
is $h->req(GET => "$tg/flags", \%K)->{status}, 404, 'unknown route 404';
is $h->req(DELETE => "$tg/rules", \%K)->{status}, 405, 'DELETE /rules 405';
is $h->req(POST => "$tg/rules/x", \%K, '{}')->{status}, 405, 'POST /rules/x 405';

# --- bad input on create: 4xx JSON, nothing written ---
$before = count();
$v0 = ver();
my $P = '"rules":{"type":"PERCENTAGE","value":10}';
for my $case (
    [ '{"flag_name":', 'malformed JSON' ],
    [ '[]', 'array body' ],
    [ '', 'empty body' ],
    [ "{$P}", 'missing flag_name' ],
    [ '{"flag_name":"r1"}', 'missing rules' ],
    [ qq({"flag_name":null,$P}), 'flag_name null' ],
    [ qq({"flag_name":7,$P}), 'flag_name not a string' ],
    [ qq({"flag_name":"",$P}), 'empty flag_name' ],
    [ '{"flag_name":"' . ('a' x 101) . qq(",$P}), 'flag_name over 100 chars' ],
    [ qq({"flag_name":"a b",$P}), 'space in flag_name' ],
    [ qq({"flag_name":"x'; DROP TABLE targeting_rules;--",$P}), 'SQL metacharacters in flag_name' ],
    [ qq({"flag_name":"caf\xe2\x80\x8b",$P}), 'invisible character (U+200B) in flag_name' ],
    [ '{"flag_name":"r1","rules":"PERCENTAGE"}', 'rules a string' ],
    [ '{"flag_name":"r1","rules":[{"type":"PERCENTAGE","value":1}]}', 'rules an array' ],
    [ '{"flag_name":"r1","rules":null}', 'rules null' ],
    [ '{"flag_name":"r1","rules":{"type":5}}', 'type not a string' ],
    [ '{"flag_name":"r1","rules":{"type":"PERCENTAGE"}}', 'PERCENTAGE without value' ],
    [ '{"flag_name":"r1","rules":{"type":"PERCENTAGE","value":"25"}}', 'PERCENTAGE value a string' ],
    [ '{"flag_name":"r1","rules":{"type":"PERCENTAGE","value":-1}}', 'PERCENTAGE below 0' ],
    [ '{"flag_name":"r1","rules":{"type":"PERCENTAGE","value":100.5}}', 'PERCENTAGE over 100' ],
    [ '{"flag_name":"r1","rules":{"type":"PERCENTAGE","value":10,"x":1}}', 'unknown field in rules' ],
    [ '{"flag_name":"r1","rules":{"type":"USER_LIST"}}', 'USER_LIST without values' ],
    [ '{"flag_name":"r1","rules":{"type":"USER_LIST","values":"alice"}}', 'USER_LIST values not an array' ],
    [ '{"flag_name":"r1","rules":{"type":"USER_LIST","values":["a",1]}}', 'USER_LIST value not a string' ],
    [ qq({"flag_name":"r1","rules":{"type":"USER_LIST","values":["bad\xc3\x28"]}}), 'invalid UTF-8 in a user id' ],
    [ '{"flag_name":"r1","rules":{"type":"GEO","country":"PT"}}', 'unknown rule type' ],
    [ qq({"flag_name":"r1",$P,"is_enabled":"yes"}), 'is_enabled "yes"' ],
    [ qq({"flag_name":"r1",$P,"is_enabled":0}), 'is_enabled 0' ],
    [ qq({"flag_name":"r1",$P,"priority":1}), 'unknown field' ],
    [ qq({"flag_name":"r1","flag_name":"r2",$P}), 'duplicate member' ],
) {
    my $res = $h->req(POST => "$tg/rules", \%K, $case->[0]);
    is $res->{status}, 400, "$case->[1] -> 400";
    ok $res->{json} && $res->{json}{error}, "$case->[1] -> JSON error";
}
$r = $h->req(POST => "$tg/rules", \%K, '{"flag_name":"r1","rules":{"type":"GEO"}}');
like $r->{json}{error}, qr/PERCENTAGE, USER_LIST/, 'unknown type: the error names the accepted types';
$r = $h->req(POST => "$tg/rules", \%K, qq({"flag_name":"r1",$P,"priority":1}));
like $r->{json}{error}, qr/"priority"/, 'unknown field named';
$r = $h->req(POST => "$tg/rules", \%K, qq({"flag_name":"r1","rules":{"type":"x\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"}}));
is $r->{status}, 400, 'unknown multi-byte type cut in the message: still 400';
ok $r->{json}{error}, '... with a JSON error';
$r = $h->req(POST => "$tg/rules", \%K, '{"flag_name":"big","rules":{"type":"USER_LIST","values":["' . ('u' x 70000) . '"]}}');
is $r->{status}, 413, 'body over 64 KiB -> 413';
ok $r->{json}{error}, '413 JSON error';
is count(), $before, 'no bad request wrote a row';
is ver(), $v0, 'no bad request published anything';

# --- two replicas racing on the same flag_name: one 201, the rest 409 ---
my ($h2, $tg2) = replica($h, 'targeting', AUTH_SERVICE_URL => $auth);
for my $n (1 .. 5) {
    my @st = race($h, [ ("$tg/rules", "$tg2/rules") x 4 ], POST => \%K,
                  { flag_name => "race-$n", rules => { type => 'PERCENTAGE', value => $n } });
    is_deeply [ sort @st ], [ 201, (409) x 7 ], "race $n: 8 concurrent creates on 2 replicas: one 201, seven 409";
}
is $h->psql("SELECT count(*) FROM targeting_rules WHERE flag_name LIKE 'race-%'"), 5, 'one row per raced name';
unlike $h->log('targeting') . $h2->log('targeting'), qr/ 500 /, 'no 500 in either replica';
$h2->teardown;

# --- Redis flushed, then down: writes still succeed; reconciliation repairs ---
$h->redis_cmd('FLUSHALL');
is $h->req(GET => "$tg/rules", \%K)->{status}, 200, 'Redis flushed: the key still works';
my $n = count();
ok $h->wait_until(5, sub { $h->redis_cmd('HLEN', 'tm:rules') == $n }), 'reconciliation republishes every rule';

$h->stop('redis');
$r = $h->req(POST => "$tg/rules", \%K, { flag_name => 'while-down', rules => { type => 'PERCENTAGE', value => 5 } });
is $r->{status}, 201, 'create with Redis down 201';
is $h->req(PUT => "$tg/rules/beta", \%K, { is_enabled => $T })->{status}, 200, 'update with Redis down 200';
is $h->req(DELETE => "$tg/rules/decimal", \%K)->{status}, 204, 'delete with Redis down 204';
$h->restart('redis');
my $want = $h->req(GET => "$tg/rules/beta", \%K)->{content};
ok $h->wait_until(6, sub {
    ($h->redis_cmd('HGET', 'tm:rules', 'while-down') // '') eq $r->{content}
        && ($h->redis_cmd('HGET', 'tm:rules', 'beta') // '') eq $want
        && !$h->redis_cmd('HEXISTS', 'tm:rules', 'decimal') }), 'Redis repaired by reconciliation';

# --- PostgreSQL down: 503, recovery ---
$h->stop('postgres');
$r = $h->req(PUT => "$tg/rules/beta", \%K, { is_enabled => $F });
is $r->{status}, 503, 'update with PostgreSQL down 503';
ok $r->{json}{error}, '503 JSON error';
is $h->req(GET => "$tg/rules/beta", \%K)->{status}, 503, 'get 503';
is $h->req(GET => "$tg/health/ready")->{status}, 503, 'not ready';
$h->restart('postgres');
is $h->req(PUT => "$tg/rules/beta", \%K, { is_enabled => $F })->{status}, 200, 'recovers when PostgreSQL returns';

# --- migrations ---
{
    local $ENV{DATABASE_URL} = $h->postgres;
    my $out = `$BUILD/admin-daemons/togglemaster-targeting --migrate 2>&1`;
    is $?, 0, '--migrate on a migrated database exits 0' or diag $out;
}
is $h->psql("SELECT count(*) FROM tm_schema_migrations WHERE component = 'targeting'"), '2', 'two migrations recorded (rules, segments)';

done_testing;
