#!/usr/bin/env perl
# The audit trail (docs/audit.md): each kind of change gives exactly one
# record with the right actor, before and after, request id and client
# address; a change whose transaction fails (409, 404, bad input) leaves no
# record; secrets never appear; GET /audit filters and pages; readonly keys
# read it, keys without the scope do not; retention prunes old records.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;

my $h = TM::Harness->new;
my $M = 'master-test-key';
my %MH = (Authorization => "Bearer $M");
my %TP = (TM_TRUSTED_PROXIES => '127.0.0.1', TM_AUDIT_RETENTION_DAYS => 30);
my $auth = $h->daemon('auth', MASTER_KEY => $M, %TP);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth, %TP);
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, TARGETING_SERVICE_URL => $tg, %TP);
my $J = $h->json;

sub req { $h->req(@_) }
sub count { $h->psql("SELECT count(*) FROM audit_log WHERE service = '$_[0]'") }
sub latest {
    my ($base, %q) = @_;
    my $r = req(GET => "$base/audit?" . join('&', map { "$_=$q{$_}" } sort keys %q), $_[-1] // {});
    return $r;
}

my $admin = req(POST => "$auth/admin/keys", \%MH, { name => 'alice' })->{json};
my $ro = req(POST => "$auth/admin/keys", \%MH, { name => 'reader', scope => 'readonly' })->{json};
my %A = (Authorization => "Bearer $admin->{key}");
my %R = (Authorization => "Bearer $ro->{key}");
ok $admin->{key} && $ro->{key}, 'keys created';

# --- keys: the master key is the actor; no key, no hash in the record ---
my $r = req(GET => "$auth/audit", \%MH);
is $r->{status}, 200, 'auth GET /audit with the master key';
my @keyrecs = @{ $r->{json}{records} };
is scalar @keyrecs, 2, 'two key creations, two records';
is $keyrecs[0]{name}, 'reader', 'newest first';
is $keyrecs[0]{action}, 'create', 'action create';
is $keyrecs[0]{kind}, 'key', 'kind key';
is $keyrecs[0]{actor}{name}, 'master key', 'actor: master key';
is $keyrecs[0]{actor}{id}, undef, 'master key has no id';
is $keyrecs[0]{before}, undef, 'no before on create';
is $keyrecs[0]{after}{scope}, 'readonly', 'after: the listing';
unlike $r->{content}, qr/\Q$admin->{key}\E|\Q$ro->{key}\E|\Q$M\E|key_hash|[0-9a-f]{64}/,
    'no key, master key nor hash in the trail';
is $h->psql("SELECT count(*) FROM audit_log WHERE before::text ~ '[0-9a-f]{64}' OR after::text ~ '[0-9a-f]{64}'"),
    0, 'no hash stored either';

# --- flags: create, update, delete; actor is the key; before/after ---
my $t0 = count('flags');
$r = req(POST => "$flags/flags", { %A, 'X-Request-Id' => 'req-create-1', 'X-Forwarded-For' => '203.0.113.9' },
         { name => 'checkout', description => 'new checkout', is_enabled => JSON::PP::false });
is $r->{status}, 201, 'flag created';
is count('flags'), $t0 + 1, 'one record for the create';
$r = req(GET => "$flags/audit?limit=1", \%A);
my $rec = $r->{json}{records}[0];
is $rec->{action}, 'create', 'flag create recorded';
is $rec->{kind}, 'flag', 'kind flag';
is $rec->{name}, 'checkout', 'object name';
is $rec->{environment}, 'default', 'environment';
is $rec->{actor}{name}, 'alice', 'actor: key name';
is $rec->{actor}{id}, $admin->{id}, 'actor: key id';
is $rec->{request_id}, 'req-create-1', 'request id from X-Request-Id';
is $rec->{client_address}, '203.0.113.9', 'X-Forwarded-For believed from a trusted proxy';
is $rec->{before}, undef, 'no before';
is $rec->{after}{description}, 'new checkout', 'after';
like $rec->{at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'time RFC 3339';

$r = req(PUT => "$flags/flags/checkout", \%A, { is_enabled => JSON::PP::true });
is $r->{status}, 200, 'flag updated';
$rec = req(GET => "$flags/audit?limit=1", \%A)->{json}{records}[0];
is $rec->{action}, 'update', 'update recorded';
ok !$rec->{before}{is_enabled}, 'before: off';
ok $rec->{after}{is_enabled}, 'after: on';
like $rec->{request_id}, qr/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    'request id generated when absent';
is $rec->{client_address}, '127.0.0.1', 'no X-Forwarded-For: the peer';

# --- failed changes leave no record ---
my $n = count('flags');
is req(POST => "$flags/flags", \%A, { name => 'checkout' })->{status}, 409, 'duplicate 409';
is req(PUT => "$flags/flags/nope", \%A, { is_enabled => JSON::PP::true })->{status}, 404, 'update absent 404';
is req(DELETE => "$flags/flags/nope", \%A)->{status}, 404, 'delete absent 404';
is req(POST => "$flags/flags", \%A, { name => 'bad name!' })->{status}, 400, 'bad name 400';
is req(POST => "$flags/flags", \%R, { name => 'ro-write' })->{status}, 403, 'readonly key cannot write';
is count('flags'), $n, 'no record for any failed change';

# --- a record that cannot be written fails the change: nothing changes ---
$h->psql("ALTER TABLE audit_log ADD CONSTRAINT audit_no_x CHECK (name <> 'blocked')");
$r = req(POST => "$flags/flags", \%A, { name => 'blocked' });
ok $r->{status} >= 400 && $r->{json}{error}, "record refused -> the change fails ($r->{status})";
is $h->psql("SELECT count(*) FROM flags WHERE name = 'blocked'"), 0, 'no flag without its record';
is count('flags'), $n, 'and no record';
$h->psql("ALTER TABLE audit_log DROP CONSTRAINT audit_no_x");

# --- environments, per-environment update, promotion, environment delete ---
is req(POST => "$flags/environments", \%A, { name => 'staging' })->{status}, 201, 'staging created';
$rec = req(GET => "$flags/audit?kind=environment", \%A)->{json}{records}[0];
is_deeply [ @$rec{qw(action kind name)} ], [ 'create', 'environment', 'staging' ], 'environment create recorded';
is $rec->{after}{name}, 'staging', 'environment after';

is req(PUT => "$flags/flags/checkout?environment=staging", \%A, { is_enabled => JSON::PP::true })->{status}, 200,
    'enabled in staging';
$rec = req(GET => "$flags/audit?environment=staging&limit=1", \%A)->{json}{records}[0];
is_deeply [ @$rec{qw(action name environment)} ], [ 'update', 'checkout', 'staging' ], 'staging update recorded';
ok !$rec->{before}{is_enabled} && $rec->{after}{is_enabled}, 'staging: off -> on';

is req(PUT => "$flags/flags/checkout", \%A, { is_enabled => JSON::PP::false })->{status}, 200, 'off in default';
$r = req(POST => "$flags/flags/checkout/promote", \%A, { from => 'staging', to => 'default' });
is $r->{status}, 200, 'promote staging -> default' or diag $r->{content};
$rec = req(GET => "$flags/audit?limit=1", \%A)->{json}{records}[0];
is_deeply [ @$rec{qw(action kind name environment)} ], [ 'promote', 'flag', 'checkout', 'default' ],
    'promotion recorded in the target environment';
ok !$rec->{before}{is_enabled} && $rec->{after}{is_enabled}, 'promotion: before off, after on';

# --- rules and segments (targeting daemon) ---
my $tn = count('targeting');
is req(POST => "$tg/rules", \%A, { flag_name => 'checkout', rules => { type => 'PERCENTAGE', value => 25 } })->{status},
    201, 'rule created';
is req(PUT => "$tg/rules/checkout", \%A, { rules => { type => 'PERCENTAGE', value => 50 } })->{status}, 200, 'rule updated';
is req(POST => "$tg/rules", \%A, { flag_name => 'checkout', rules => { type => 'PERCENTAGE', value => 1 } })->{status},
    409, 'duplicate rule 409';
is req(POST => "$tg/segments", \%A, { name => 'corp', constraints => [ { contextName => 'email',
    operator => 'STR_ENDS_WITH', values => ['@corp.io'] } ] })->{status}, 201, 'segment created';
is req(DELETE => "$tg/segments/corp", \%A)->{status}, 204, 'segment deleted';
is count('targeting'), $tn + 4, 'four changes, four records (the 409 none)';
$r = req(GET => "$tg/audit?kind=rule&name=checkout", \%R);
is $r->{status}, 200, 'a readonly key reads the trail';
my @rr = @{ $r->{json}{records} };
is_deeply [ map { $_->{action} } @rr ], [ 'update', 'create' ], 'rule: create then update, newest first';
is $rr[0]{before}{rules}{value}, 25, 'rule before';
is $rr[0]{after}{rules}{value}, 50, 'rule after';
$rec = req(GET => "$tg/audit?kind=segment", \%A)->{json}{records}[0];
is_deeply [ @$rec{qw(action name)} ], [ 'delete', 'corp' ], 'segment delete recorded';
ok $rec->{before} && !defined $rec->{after}, 'delete: before, no after';
is $rec->{environment}, undef, 'segments have no environment';

# --- flag delete, key revoke ---
is req(DELETE => "$flags/flags/checkout", \%A)->{status}, 204, 'flag deleted';
$rec = req(GET => "$flags/audit?name=checkout&limit=1", \%A)->{json}{records}[0];
is $rec->{action}, 'delete', 'flag delete recorded';
is $rec->{before}{name}, 'checkout', 'delete before';
is req(DELETE => "$auth/admin/keys/$ro->{id}", \%MH)->{status}, 204, 'reader revoked';
$rec = req(GET => "$auth/audit?limit=1", \%MH)->{json}{records}[0];
is_deeply [ @$rec{qw(action kind name)} ], [ 'revoke', 'key', 'reader' ], 'revocation recorded';
ok $rec->{before}{is_active} && !$rec->{after}{is_active}, 'revocation: active -> inactive';
my $nk = count('auth');
is req(DELETE => "$auth/admin/keys/$ro->{id}", \%MH)->{status}, 204, 'reader revoked again: 204 as before';
is count('auth'), $nk, 'changed nothing: no second record';

# --- filters, pagination, bad input ---
$r = req(GET => "$flags/audit?actor=alice", \%A);
ok @{ $r->{json}{records} } >= 6, 'actor filter by name';
is scalar(grep { $_->{actor}{name} ne 'alice' } @{ $r->{json}{records} }), 0, 'only alice';
is scalar @{ req(GET => "$flags/audit?actor=$admin->{id}", \%A)->{json}{records} },
    scalar @{ $r->{json}{records} }, 'actor filter by key id';
is scalar @{ req(GET => "$flags/audit?actor=nobody", \%A)->{json}{records} }, 0, 'unknown actor: none';
is scalar @{ req(GET => "$flags/audit?since=2999-01-01T00:00:00Z", \%A)->{json}{records} }, 0, 'since the future: none';
is scalar @{ req(GET => "$flags/audit?until=2000-01-01T00:00:00Z", \%A)->{json}{records} }, 0, 'until the past: none';
my $all = req(GET => "$flags/audit?limit=1000", \%A)->{json}{records};
my (@paged, $cursor);
for (1 .. 50) {
    my $p = req(GET => "$flags/audit?limit=2" . ($cursor ? "&cursor=$cursor" : ''), \%A)->{json};
    push @paged, @{ $p->{records} };
    $cursor = $p->{next_cursor};
    last unless defined $cursor;
}
is_deeply [ map { $_->{id} } @paged ], [ map { $_->{id} } @$all ], 'pages of 2 give the whole trail once, in order';
for my $q ('limit=0', 'limit=1001', 'limit=x', 'cursor=-1', 'since=yesterday', 'until=2026-13-45') {
    my $b = req(GET => "$flags/audit?$q", \%A);
    is $b->{status}, 400, "$q -> 400";
    ok $b->{json}{error}, "$q: JSON error";
}
is req(GET => "$flags/audit")->{status}, 401, 'no key 401';
is req(POST => "$flags/audit", \%A, {})->{status}, 405, 'POST /audit 405';
is req(GET => "$auth/audit")->{status}, 401, 'auth /audit without a key 401';

# --- webhook endpoints: each create, update and delete is one record in
# its change's transaction; refused or failed requests leave none; the
# secret never appears (only "set" / "changed") ---
my $S1 = 'whsec-first-0123456789';
my $S2 = 'whsec-second-9876543210';
my $wc = sub { $h->psql("SELECT count(*) FROM audit_log WHERE kind = 'webhook' AND service = '$_[0]'") };
my $w0 = $wc->('flags');
my $wh = req(POST => "$flags/webhooks", \%A, { url => 'http://127.0.0.1:9/a', secret => $S1, kinds => ['flag'] });
is $wh->{status}, 201, 'webhook created';
my $wid = $wh->{json}{id};
is $wc->('flags'), $w0 + 1, 'one record for the webhook create';
$rec = req(GET => "$flags/audit?kind=webhook&limit=1", \%A)->{json}{records}[0];
is "$rec->{action} $rec->{kind} $rec->{name}", "create webhook $wid", 'webhook create recorded, named by its id';
is $rec->{actor}{name}, 'alice', 'actor: the key';
is $rec->{before}, undef, 'no before on create';
is $rec->{after}{url}, 'http://127.0.0.1:9/a', 'after: the url';
is_deeply $rec->{after}{kinds}, ['flag'], 'after: the kinds';
is $rec->{after}{secret}, 'set', 'after: "secret": "set", not the secret';
is req(PUT => "$flags/webhooks/$wid", \%A, { url => 'http://127.0.0.1:9/b' })->{status}, 200, 'url changed';
is $wc->('flags'), $w0 + 2, 'one record for the url change';
$rec = req(GET => "$flags/audit?kind=webhook&name=$wid&limit=1", \%A)->{json}{records}[0];
is "$rec->{action} $rec->{before}{url} -> $rec->{after}{url}", 'update http://127.0.0.1:9/a -> http://127.0.0.1:9/b',
    'update: url before and after';
is $rec->{after}{secret}, undef, 'secret not given: not said to change';
is req(PUT => "$flags/webhooks/$wid", \%A, { secret => $S2 })->{status}, 200, 'secret changed';
is $wc->('flags'), $w0 + 3, 'one record for the secret change';
$rec = req(GET => "$flags/audit?kind=webhook&name=$wid&limit=1", \%A)->{json}{records}[0];
is $rec->{after}{secret}, 'changed', 'after: "secret": "changed"';
is $rec->{before}{secret}, undef, 'before: no secret';
is req(PUT => "$flags/webhooks/$wid", \%A, { secret => $S2, url => 'http://127.0.0.1:9/b' })->{status}, 200,
    'the same secret and url again';
is $wc->('flags'), $w0 + 3, 'changed nothing: no record';
my $ro2 = req(POST => "$auth/admin/keys", \%MH, { name => 'reader2', scope => 'readonly' })->{json};
my %RO = (Authorization => "Bearer $ro2->{key}");
for my $bad (
    [ POST => "$flags/webhooks", \%A, { url => 'ftp://x/', secret => $S1 }, 400, 'bad url' ],
    [ POST => "$flags/webhooks", \%A, { url => 'http://127.0.0.1:9/', secret => 'short' }, 400, 'short secret' ],
    [ POST => "$flags/webhooks", \%A, 'not json', 400, 'not JSON' ],
    [ PUT => "$flags/webhooks/$wid", \%A, { kinds => ['nope'] }, 400, 'bad kinds' ],
    [ PUT => "$flags/webhooks/$wid", \%A, { secret => $S1, extra => 1 }, 400, 'unknown member' ],
    [ PUT => "$flags/webhooks/9999", \%A, { url => 'http://127.0.0.1:9/c' }, 404, 'update unknown' ],
    [ DELETE => "$flags/webhooks/9999", \%A, undef, 404, 'delete unknown' ],
    [ PUT => "$flags/webhooks/$wid", \%RO, { url => 'http://127.0.0.1:9/c' }, 403, 'readonly key' ],
    [ DELETE => "$flags/webhooks/$wid", {}, undef, 401, 'no key' ],
) {
    my ($m, $u, $hd, $body, $want, $what) = @$bad;
    is req($m, $u, $hd, defined $body ? ($body) : ())->{status}, $want, "webhook $what -> $want";
}
is $wc->('flags'), $w0 + 3, 'refused webhook requests: no record';
is req(GET => "$flags/webhooks/$wid", \%A)->{json}{url}, 'http://127.0.0.1:9/b', 'and no change';
is req(POST => "$flags/webhooks/$wid/ping", \%A)->{status}, 202, 'ping';
is $wc->('flags'), $w0 + 3, 'a ping is not a configuration change: no record';
# An endpoint watching kind "webhook" is told of the others' changes.
my $watch = req(POST => "$flags/webhooks", \%A, { url => 'http://127.0.0.1:9/w', secret => $S1, kinds => ['webhook'] })->{json}{id};
ok $watch, 'an endpoint watching webhook changes';
is req(DELETE => "$flags/webhooks/$wid", \%A)->{status}, 204, 'webhook deleted';
is $wc->('flags'), $w0 + 5, 'one record for the watcher create, one for the delete';
$rec = req(GET => "$flags/audit?kind=webhook&name=$wid&limit=1", \%A)->{json}{records}[0];
is "$rec->{action} $rec->{before}{url}", 'delete http://127.0.0.1:9/b', 'delete: before is the endpoint';
is $rec->{after}, undef, 'delete: no after';
is $h->psql("SELECT count(*) FROM webhook_outbox WHERE webhook_id = $watch AND body::json->>'event' = 'webhook.delete'"), 1,
    'the watching endpoint has the delete queued';
is scalar @{ req(GET => "$flags/audit?kind=webhook", \%A)->{json}{records} }, 5, 'GET /audit?kind=webhook: the five';
is req(DELETE => "$flags/webhooks/$watch", \%A)->{status}, 204, 'watcher deleted';
# On auth the master key registers endpoints too: it is the actor.
my $aw = req(POST => "$auth/webhooks", \%MH, { url => 'http://127.0.0.1:9/k', secret => $S1, kinds => ['key'] });
is $aw->{status}, 201, 'auth webhook created with the master key';
$rec = req(GET => "$auth/audit?kind=webhook", \%MH)->{json}{records}[0];
is "$rec->{actor}{name} $rec->{action} $rec->{name}", "master key create $aw->{json}{id}", 'auth: actor master key';
my $trail = join '', map { req(GET => "$_/audit?limit=1000", \%MH)->{content} } $flags, $auth;
unlike $trail, qr/\Q$S1\E|\Q$S2\E/, 'no webhook secret in any audit answer';
is $h->psql("SELECT count(*) FROM audit_log WHERE before::text LIKE '%whsec-%' OR after::text LIKE '%whsec-%'"),
    0, 'nor stored in the trail';
is $h->psql("SELECT count(*) FROM webhook_outbox WHERE body LIKE '%whsec-%'"), 0, 'nor in any delivery body';

# --- retention (TM_AUDIT_RETENTION_DAYS=30), and a restart trusting no
# local proxy: records older than the retention go, X-Forwarded-For from an
# untrusted peer is ignored ---
$h->psql("INSERT INTO audit_log (service, at, actor_name, action, kind, name, request_id)"
         . " SELECT 'flags', now() - interval '40 days', 'old', 'update', 'flag', 'old-' || g, 'r'"
         . " FROM generate_series(1, 2500) g");
$h->psql("INSERT INTO audit_log (service, at, actor_name, action, kind, name, request_id)"
         . " VALUES ('flags', now() - interval '20 days', 'old', 'update', 'flag', 'recent', 'r')");
$h->psql("INSERT INTO webhooks (id, service, url, secret) VALUES (900, 'flags', 'http://127.0.0.1:9/', 'x')");
$h->psql("INSERT INTO webhook_outbox (webhook_id, service, delivery_id, body, status, created_at, next_at)"
         . " SELECT 900, 'flags', 'old-' || g, '{}', CASE WHEN g = 1 THEN 'pending' ELSE 'delivered' END,"
         . " now() - interval '40 days', now() + interval '1 day' FROM generate_series(1, 1500) g");
$h->{env}{flags}{TM_TRUSTED_PROXIES} = '10.0.0.0/8, 192.168.0.1';
$h->restart('flags');
ok $h->wait_until(20, sub { $h->psql("SELECT count(*) FROM audit_log WHERE actor_name = 'old'") eq '1' }),
    'records past the retention pruned (in batches), younger kept';
ok $h->wait_until(10, sub { $h->psql("SELECT count(*) FROM webhook_outbox WHERE webhook_id = 900") eq '1' }),
    'old deliveries done with pruned too, the pending one kept';
is req(POST => "$flags/flags", { %A, 'X-Forwarded-For' => '203.0.113.7' }, { name => 'spoof' })->{status}, 201,
    'created through a daemon that trusts no local proxy';
$rec = req(GET => "$flags/audit?name=spoof", \%A)->{json}{records}[0];
is $rec->{client_address}, '127.0.0.1', 'forged X-Forwarded-For ignored: the peer';

# --- tmctl audit and tmctl history (the merge of the two trails) ---
my $TMCTL = ($ENV{TM_BUILD} || 'build') . '/tmctl/tmctl';
local $ENV{TOGGLEMASTER_API_KEY} = $admin->{key};
my @U = ('--flags-url', $flags, '--targeting-url', $tg, '--auth-url', $auth);
is req(POST => "$flags/flags", \%A, { name => 'hist' })->{status}, 201, 'hist created';
is req(POST => "$tg/rules", \%A, { flag_name => 'hist', rules => { type => 'PERCENTAGE', value => 10 } })->{status}, 201,
    'hist rule created';
is req(PUT => "$flags/flags/hist", \%A, { is_enabled => JSON::PP::true })->{status}, 200, 'hist enabled';
my $out = `$TMCTL @U history hist --json`;
is $?, 0, 'tmctl history --json exits 0';
my $hist = eval { $J->decode($out) } || [];
is_deeply [ map { "$_->{kind} $_->{action}" } @$hist ], [ 'flag update', 'rule create', 'flag create' ],
    'history merges the flag and its rule, newest first';
$out = `$TMCTL @U history hist`;
like $out, qr/alice\s+update\s+flag\s+hist \[default\]\s+is_enabled: false -> true/, 'history readable: what changed';
like $out, qr/rule\s+hist/, 'history readable: the rule';
$out = `$TMCTL @U audit --service auth --kind key --name reader --limit 1`;
like $out, qr/master key\s+revoke\s+key\s+reader/, 'tmctl audit --service auth';
$out = `$TMCTL @U audit --name hist --json`;
is scalar @{ (eval { $J->decode($out) }) || [] }, 2, 'tmctl audit --name filters (flags trail: 2 records)';
$out = `$TMCTL @U audit --limit 3 --json`;
is scalar @{ (eval { $J->decode($out) }) || [] }, 3, 'tmctl audit --limit';
system("$TMCTL @U audit --since yesterday >/dev/null 2>&1");
is $? >> 8, 1, 'a bad --since: the server refuses, exit 1';
system("$TMCTL @U audit --service nope >/dev/null 2>&1");
is $? >> 8, 2, 'unknown --service: usage, exit 2';

done_testing;
