#!/usr/bin/env perl
# targeting daemon (8003), /segments: named constraint sets that strategies
# refer to. Routes, validation with lib/'s tm_segment_check (nothing written
# on bad input), API keys, publication to tm:segments (kind "segment"),
# delete refused while a rule refers to the segment, reconciliation.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key subscriber change);

my $h = TM::Harness->new;
my $M = 'master-test-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my $BUILD = $ENV{TM_BUILD} || "build";
my $k = new_key($h, $auth, $M, 'segments-test');
my %K = (Authorization => "Bearer $k->{key}");
sub count { $h->psql('SELECT count(*) FROM segments') }
sub ver { $h->redis_cmd('GET', 'tm:version') // 0 }
my $CORP = [ { contextName => 'email', operator => 'STR_ENDS_WITH', values => ['@corp.io'], caseInsensitive => JSON::PP::true } ];
my $BR = [ { contextName => 'country', operator => 'IN', values => [ 'BR', 'PT' ] },
           { contextName => 'appVersion', operator => 'SEMVER_GTE', value => '2.3.0' } ];

# --- keys ---
for my $c ([GET => '/segments'], [POST => '/segments'], [GET => '/segments/x'], [PUT => '/segments/x'], [DELETE => '/segments/x']) {
    my $r = $h->req($c->[0] => "$tg$c->[1]", {}, $c->[0] =~ /POST|PUT/ ? { name => 'x', constraints => [] } : undef);
    is $r->{status}, 401, "$c->[0] $c->[1] without a key -> 401";
}
is count(), 0, 'nothing written without a key';

# --- create ---
my $sub = subscriber($h);
my $v0 = ver();
my $r = $h->req(POST => "$tg/segments", \%K, { name => 'beta-testers', description => 'opted in', constraints => $CORP });
is $r->{status}, 201, 'create 201';
my $seg = $r->{json};
is_deeply [ sort keys %$seg ], [qw(constraints created_at description id name updated_at)], 'row fields';
is $seg->{name}, 'beta-testers', 'name';
is $seg->{description}, 'opted in', 'description';
is_deeply $seg->{constraints}, $CORP, 'constraints stored as given';
like $seg->{created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'created_at RFC 3339 UTC';
is $h->redis_cmd('HGET', 'tm:segments', 'beta-testers'), $r->{content}, 'published to tm:segments byte-identical to the response';
is ver(), $v0 + 1, 'tm:version incremented';
is_deeply change($h, $sub, $v0 + 1), { version => $v0 + 1, kind => 'segment', op => 'upsert', name => 'beta-testers' },
    'tm:changes notification with kind "segment"';
ok !$h->redis_cmd('HEXISTS', 'tm:rules', 'beta-testers'), 'not in tm:rules';

$r = $h->req(POST => "$tg/segments", \%K, { name => 'brazil', constraints => $BR });
is $r->{status}, 201, 'second segment 201';
is $r->{json}{description}, '', 'description defaults to ""';
$r = $h->req(POST => "$tg/segments", \%K, { name => 'everyone', constraints => [] });
is $r->{status}, 201, 'empty constraint list 201';

# --- duplicate ---
my $before = count();
$r = $h->req(POST => "$tg/segments", \%K, { name => 'brazil', constraints => [] });
is $r->{status}, 409, 'duplicate 409';
like $r->{json}{error}, qr/brazil/, '409 names the segment';
is count(), $before, 'duplicate wrote nothing';

# --- list and get ---
$r = $h->req(GET => "$tg/segments", \%K);
is $r->{status}, 200, 'list 200';
is_deeply [ map { $_->{name} } @{ $r->{json} } ], [qw(beta-testers brazil everyone)], 'list ordered by name';
is $r->{content}, '[' . join(',', map { $h->redis_cmd('HGET', 'tm:segments', $_->{name}) } @{ $r->{json} }) . ']',
    'list elements are the published texts';
$r = $h->req(GET => "$tg/segments/beta-testers", \%K);
is $r->{status}, 200, 'get 200';
is_deeply $r->{json}, $seg, 'get returns the created row';
is $h->req(GET => "$tg/segments/missing", \%K)->{status}, 404, 'get unknown 404';
is $h->req(GET => "$tg/segments/bad%20name", \%K)->{status}, 400, 'bad name in path 400';
is $h->req(GET => "$tg/rules", \%K)->{status}, 200, '/rules still served next to /segments';

# --- update ---
$v0 = ver();
$r = $h->req(PUT => "$tg/segments/brazil", \%K, { constraints => [ $BR->[0] ] });
is $r->{status}, 200, 'update constraints 200';
is scalar @{ $r->{json}{constraints} }, 1, 'constraints replaced';
ok $r->{json}{updated_at} gt $r->{json}{created_at}, 'updated_at changed';
is $h->redis_cmd('HGET', 'tm:segments', 'brazil'), $r->{content}, 'update published';
is_deeply change($h, $sub, $v0 + 1), { version => $v0 + 1, kind => 'segment', op => 'upsert', name => 'brazil' },
    'update notification';
$r = $h->req(PUT => "$tg/segments/brazil", \%K, { name => 'brazil', description => 'south' });
is $r->{status}, 200, 'update description (name repeated) 200';
is $r->{json}{description}, 'south', 'description updated';
is scalar @{ $r->{json}{constraints} }, 1, 'constraints kept';
is $h->req(PUT => "$tg/segments/missing", \%K, { description => 'x' })->{status}, 404, 'update unknown 404';
is count(), $before, 'update of an unknown segment created nothing';

my $row = $h->req(GET => "$tg/segments/brazil", \%K)->{content};
$v0 = ver();
for my $case (
    [ '', 'empty body' ],
    [ '{}', 'neither field' ],
    [ '{"name":"brazil"}', 'only the name' ],
    [ '{"constraints":', 'malformed JSON' ],
    [ '{"constraints":null}', 'constraints null' ],
    [ '{"constraints":{}}', 'constraints an object' ],
    [ '{"constraints":[{"contextName":"c","operator":"FOO","values":["x"]}]}', 'unknown operator' ],
    [ '{"description":5}', 'description a number' ],
    [ '{"description":"a\u0001b"}', 'control character in description' ],
    [ '{"name":"other","description":"x"}', 'rename' ],
    [ '{"description":"x","extra":1}', 'unknown field' ],
) {
    my $res = $h->req(PUT => "$tg/segments/brazil", \%K, $case->[0]);
    is $res->{status}, 400, "update: $case->[1] -> 400";
    ok $res->{json} && $res->{json}{error}, "update: $case->[1] -> JSON error";
}
is $h->req(GET => "$tg/segments/brazil", \%K)->{content}, $row, 'rejected updates changed nothing';
is ver(), $v0, 'rejected updates published nothing';

# --- bad input on create: 400 with the path to the bad part, nothing written ---
$before = count();
$v0 = ver();
for my $case (
    [ '{"name":', 'malformed JSON', qr/JSON/i ],
    [ '[]', 'array body', qr/object/ ],
    [ '{"constraints":[]}', 'missing name', qr/"name"/ ],
    [ '{"name":"s1"}', 'missing constraints', qr/"constraints" is required/ ],
    [ '{"name":"","constraints":[]}', 'empty name', qr/"name"/ ],
    [ '{"name":"a b","constraints":[]}', 'space in name', qr/"name"/ ],
    [ '{"name":"' . ('a' x 101) . '","constraints":[]}', 'name over 100', qr/"name"/ ],
    [ '{"name":7,"constraints":[]}', 'name a number', qr/"name"/ ],
    [ '{"name":"s1","constraints":"x"}', 'constraints a string', qr/^constraints/ ],
    [ '{"name":"s1","constraints":[5]}', 'constraint a number', qr/^constraints\[0\]/ ],
    [ '{"name":"s1","constraints":[{"operator":"IN","values":["a"]}]}', 'no contextName', qr/^constraints\[0\]\.contextName/ ],
    [ '{"name":"s1","constraints":[{"contextName":"c","values":["a"]}]}', 'no operator', qr/^constraints\[0\]\.operator/ ],
    [ '{"name":"s1","constraints":[{"contextName":"c","operator":"IN","values":["a"]},{"contextName":"c","operator":"FOO","values":["a"]}]}',
      'unknown operator', qr/^constraints\[1\]\.operator: unknown operator "FOO"/ ],
    [ '{"name":"s1","constraints":[{"contextName":"c","operator":"NUM_GT","value":"abc"}]}', 'NUM_ with a non-number', qr/^constraints\[0\]/ ],
    [ '{"name":"s1","constraints":[{"contextName":"c","operator":"SEMVER_EQ","value":"1.x"}]}', 'bad semver', qr/^constraints\[0\]/ ],
    [ '{"name":"s1","constraints":[{"contextName":"c","operator":"REGEX","value":"(a"}]}', 'bad regex', qr/^constraints\[0\]/ ],
    [ '{"name":"s1","constraints":[{"contextName":"c","operator":"IP_IN_CIDR","values":["10.0.0.0/99"]}]}', 'bad CIDR', qr/^constraints\[0\]/ ],
    [ '{"name":"s1","constraints":[{"contextName":"c","operator":"IN","values":["a"],"x":1}]}', 'unknown constraint field', qr/^constraints\[0\]/ ],
    [ '{"name":"s1","constraints":[],"description":false}', 'description not a string', qr/^description/ ],
    [ '{"name":"s1","constraints":[],"rules":{}}', 'unknown field', qr/"rules"/ ],
) {
    my $res = $h->req(POST => "$tg/segments", \%K, $case->[0]);
    is $res->{status}, 400, "create: $case->[1] -> 400";
    like $res->{json} && $res->{json}{error}, $case->[2], "create: $case->[1] -> message";
}
is count(), $before, 'no bad request wrote a row';
is ver(), $v0, 'no bad request published anything';

# --- routing ---
is $h->req(DELETE => "$tg/segments", \%K)->{status}, 405, 'DELETE /segments 405';
is $h->req(POST => "$tg/segments/x", \%K, '{}')->{status}, 405, 'POST /segments/x 405';
is $h->req(GET => "$tg/segmentsx", \%K)->{status}, 404, '/segmentsx 404';

# --- delete: refused while a rule refers to the segment ---
for my $f (qw(checkout search)) {
    is $h->req(POST => "$tg/rules", \%K, { flag_name => $f, rules => { strategies => [
        { constraints => $BR }, { name => 'beta', segments => [ 'everyone', 'beta-testers' ] } ] } })->{status},
        201, "rule for $f referring to beta-testers";
}
is $h->req(POST => "$tg/rules", \%K, { flag_name => 'plain', rules => { type => 'PERCENTAGE', value => 5 } })->{status},
    201, 'a rule without segments';
is $h->req(POST => "$tg/rules", \%K, { flag_name => 'mentions', rules => { strategies => [
    { name => 'beta-testers', constraints => [ { contextName => 'beta-testers', operator => 'IN', values => ['beta-testers'] } ] } ] } })->{status},
    201, 'a rule that mentions the name without referring to the segment';
$v0 = ver();
$r = $h->req(DELETE => "$tg/segments/beta-testers", \%K);
is $r->{status}, 409, 'delete of a segment in use 409';
like $r->{json}{error}, qr/"checkout", "search"/, '409 names the flags whose rules use it';
unlike $r->{json}{error}, qr/mentions|plain/, '... and only those';
ok $h->redis_cmd('HEXISTS', 'tm:segments', 'beta-testers'), 'still published';
is $h->req(GET => "$tg/segments/beta-testers", \%K)->{status}, 200, 'still stored';
is ver(), $v0, 'refused delete published nothing';

is $h->req(PUT => "$tg/rules/checkout", \%K, { rules => { strategies => [ { constraints => $BR } ] } })->{status}, 200,
    'checkout no longer refers to it';
$r = $h->req(DELETE => "$tg/segments/beta-testers", \%K);
is $r->{status}, 409, 'still used by search';
like $r->{json}{error}, qr/flag "search"/, '... and the message says so';
is $h->req(DELETE => "$tg/rules/search", \%K)->{status}, 204, 'search rule deleted';

$v0 = ver();
$r = $h->req(DELETE => "$tg/segments/beta-testers", \%K);
is $r->{status}, 204, 'delete 204 once unused';
is length($r->{content} // ''), 0, '204 empty body';
is $h->req(GET => "$tg/segments/beta-testers", \%K)->{status}, 404, 'deleted segment 404';
is $h->req(DELETE => "$tg/segments/beta-testers", \%K)->{status}, 404, 'delete unknown 404';
ok !$h->redis_cmd('HEXISTS', 'tm:segments', 'beta-testers'), 'removed from tm:segments';
is_deeply change($h, $sub, $v0 + 1), { version => $v0 + 1, kind => 'segment', op => 'delete', name => 'beta-testers' },
    'delete notification';
close $sub;

# --- Redis flushed, then down: reconciliation repairs tm:segments and tm:rules ---
$h->redis_cmd('FLUSHALL');
my ($ns, $nr) = (count(), $h->psql('SELECT count(*) FROM targeting_rules'));
ok $h->wait_until(5, sub { $h->redis_cmd('HLEN', 'tm:segments') == $ns && $h->redis_cmd('HLEN', 'tm:rules') == $nr }),
    'reconciliation republishes every segment and every rule';
is $h->redis_cmd('HGET', 'tm:segments', 'brazil'), $h->req(GET => "$tg/segments/brazil", \%K)->{content},
    'republished byte-identical';
$h->redis_cmd('HSET', 'tm:segments', 'ghost', '{}');
$h->redis_cmd('HSET', 'tm:segments', 'brazil', '{"stale":1}');
ok $h->wait_until(5, sub { !$h->redis_cmd('HEXISTS', 'tm:segments', 'ghost')
    && $h->redis_cmd('HGET', 'tm:segments', 'brazil') ne '{"stale":1}' }), 'extra field removed, stale field fixed';

$h->stop('redis');
$r = $h->req(POST => "$tg/segments", \%K, { name => 'while-down', constraints => [] });
is $r->{status}, 201, 'create with Redis down 201';
is $h->req(DELETE => "$tg/segments/everyone", \%K)->{status}, 204, 'delete with Redis down 204';
$h->restart('redis');
ok $h->wait_until(6, sub {
    ($h->redis_cmd('HGET', 'tm:segments', 'while-down') // '') eq $r->{content}
        && !$h->redis_cmd('HEXISTS', 'tm:segments', 'everyone') }), 'Redis repaired by reconciliation';

# --- migrations: versioned and idempotent ---
is $h->psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM tm_schema_migrations WHERE component = 'targeting'"),
    '1,2', 'targeting migrations 1 and 2 recorded';
{
    local $ENV{DATABASE_URL} = $h->postgres;
    my $out = `$BUILD/admin-daemons/togglemaster-targeting --migrate 2>&1`;
    is $?, 0, '--migrate on a migrated database exits 0' or diag $out;
}
is $h->psql("SELECT count(*) FROM tm_schema_migrations WHERE component = 'targeting'"), '2', 'still two migrations recorded';
is count(), 2, 'segments kept';

done_testing;
