#!/usr/bin/env perl
# ngx_http_togglemaster_module answering from its snapshot: the original
# /evaluate contract and its SHA-1 buckets, bad input, OFREP, the nginx.conf
# directives, API keys at the edge, metrics and health.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use Encode qw(encode_utf8);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $h = TM::Harness->new;
$h->redis;

my $KEY = 'tm_key_' . ('ab' x 32);
$h->redis_cmd('HSET', 'tm:keys', sha256_hex($KEY), '{"id":3,"name":"ci"}');

my %pct = (p0 => 0, p25 => 25, p50 => 50, p100 => 100, 'p33.5' => 33.5);
for my $f (sort keys %pct) {
    TM::Nginx::set_flag($h, $f, 1, quiet => 1);
    TM::Nginx::set_rule($h, $f, { type => 'PERCENTAGE', value => $pct{$f} }, 1, quiet => 1);
}
TM::Nginx::set_flag($h, 'static-on', 1, quiet => 1);
TM::Nginx::set_flag($h, 'off-flag', 0, quiet => 1);
TM::Nginx::set_rule($h, 'off-flag', { type => 'PERCENTAGE', value => 100 }, 1, quiet => 1);
TM::Nginx::set_flag($h, 'rule-off', 1, quiet => 1);
TM::Nginx::set_rule($h, 'rule-off', { type => 'PERCENTAGE', value => 0 }, 0, quiet => 1);
TM::Nginx::set_flag($h, 'vip', 1, quiet => 1);
TM::Nginx::set_rule($h, 'vip', { type => 'USER_LIST', values => ['alice', "j\x{f6}rg"] }, 1, quiet => 1);
TM::Nginx::set_flag($h, 'geo', 1, quiet => 1);
$h->redis_cmd('HSET', 'tm:rules', 'geo',
    '{"id":9,"flag_name":"geo","is_enabled":true,"rules":{"type":"GEO","value":"BR"}}');
TM::Nginx::set_flag($h, 'New_Checkout', 1, quiet => 1);
$h->redis_cmd('SET', 'tm:version', 42);

my $ng = TM::Nginx->new($h, workers => 2, server => <<'CONF');
        togglemaster_identity $cookie_uid;
        location /beta/ { togglemaster_require p50; }
        location /teapot/ { togglemaster_require off-flag 418; }
        location /static/ { togglemaster_require static-on; }
        location = /vars {
            add_header X-P50 $togglemaster_flag_p50 always;
            add_header X-Static $togglemaster_flag_static_on always;
            add_header X-Version $togglemaster_version always;
            togglemaster_health;
        }
        location /api/ {
            togglemaster_api_key on;
            location = /api/open { togglemaster_api_key off; togglemaster_health; }
            togglemaster_health;
        }
        location /hdr/ { togglemaster_identity $http_x_user; togglemaster_require vip; }
CONF
for my $d (qw(beta teapot static hdr)) {
    mkdir "$ng->{dir}/html/$d";
    open my $f, '>', "$ng->{dir}/html/$d/index.html" or die; print $f "$d page\n"; close $f;
}
$ng->start;
$h->wait_until(5, sub { ($h->req(GET => $ng->url('/vars'))->{headers}{'x-version'} // '') eq '42' });

# --- /evaluate: the original contract ---
my $r = $h->req(GET => $ng->url('/evaluate?user_id=u1&flag_name=static-on'));
is $r->{status}, 200, 'evaluate 200';
is_deeply $r->{json}, { flag_name => 'static-on', user_id => 'u1', result => JSON::PP::true },
    'body has flag_name, user_id, result';
like $r->{headers}{'content-type'}, qr{^application/json}, 'json content type';
is $ng->evaluate('u1', 'off-flag'), 0, 'disabled flag -> false';
is $ng->evaluate('u1', 'rule-off'), 1, 'rule disabled -> true';
is $ng->evaluate('u1', 'no-such-flag'), 0, 'unknown flag -> false';
is $h->req(GET => $ng->url('/evaluate?user_id=u1&flag_name=no-such'))->{status}, 200, 'unknown flag is 200';
is $ng->evaluate('u1', 'geo'), 0, 'unknown rule type -> false';
is $ng->evaluate('alice', 'vip'), 1, 'USER_LIST member';
is $ng->evaluate('bob', 'vip'), 0, 'USER_LIST non-member';
is $ng->evaluate(encode_utf8("j\x{f6}rg"), 'vip'), 1, 'USER_LIST UTF-8 member, URL-encoded';
is $ng->evaluate('u1', 'new_checkout'), 0, 'flag names are case-sensitive';
is $ng->evaluate('u1', 'New_Checkout'), 1, 'exact-case flag';

# SHA-1 buckets against Digest::SHA, many users
my ($bad, $n) = (0, 0);
for my $i (1 .. 300) {
    my $user = "user-$i";
    for my $f ('p25', 'p50', 'p33.5') {
        my $want = TM::Nginx::bucket($user, $f) < $pct{$f} ? 1 : 0;
        my $got = $ng->evaluate($user, $f);
        $n++;
        if ($got != $want) { $bad++; diag "mismatch $user $f: got $got want $want" if $bad < 5 }
    }
}
is $bad, 0, "$n percentage answers match an independent SHA-1 bucket";
is $ng->evaluate('anyone', 'p0'), 0, '0% -> false';
is $ng->evaluate('anyone', 'p100'), 1, '100% -> true';
my $odd = "a b+c&d=\x{e9}";
is $ng->evaluate(encode_utf8($odd), 'p50'), (TM::Nginx::bucket(encode_utf8($odd), 'p50') < 50 ? 1 : 0),
    'URL-decoded user id gives the original bucket';
$r = $h->req(GET => $ng->url('/evaluate?user_id=a+b&flag_name=p50'));
is $r->{json}{user_id}, 'a b', "'+' in the query is a space";
$r = $h->req(GET => $ng->url('/evaluate?user_id=%22q%22%5C&flag_name=p50'));
is $r->{json}{user_id}, '"q"\\', 'quotes and backslashes escaped in JSON';
# as Flask's request.args: an invalid escape stays, names are decoded and
# exact, the first of a name wins
$r = $h->req(GET => $ng->url('/evaluate?user_id=a%zz%4&flag_name=p50'));
is $r->{json}{user_id}, 'a%zz%4', 'an invalid %-escape stays as written';
$r = $h->req(GET => $ng->url('/evaluate?user%5Fid=enc&flag%5fname=p50'));
is $r->{json}{user_id}, 'enc', 'encoded parameter names are decoded';
$r = $h->req(GET => $ng->url('/evaluate?user_id=first&flag_name=p50&user_id=second'));
is $r->{json}{user_id}, 'first', 'the first user_id wins';
is $h->req(GET => $ng->url('/evaluate?USER_ID=u&flag_name=p50'))->{status}, 400,
    'parameter names are case-sensitive (USER_ID is not user_id)';

# --- bad input ---
for my $q ('', '?user_id=u1', '?flag_name=p50', '?user_id=&flag_name=p50', '?user_id=u1&flag_name=') {
    $r = $h->req(GET => $ng->url("/evaluate$q"));
    is $r->{status}, 400, "400 for '$q'";
    ok $r->{json} && $r->{json}{error}, "JSON error for '$q'";
}
$r = $h->req(GET => $ng->url('/evaluate?user_id=' . ('x' x 1024) . '&flag_name=p50'));
is $r->{status}, 200, '1 KiB identity accepted';
$r = $h->req(GET => $ng->url('/evaluate?user_id=' . ('x' x 4097) . '&flag_name=p50'));
is $r->{status}, 400, 'identity over 4096 bytes -> 400';
$r = $h->req(GET => $ng->url('/evaluate?user_id=%FF%FE&flag_name=p50'));
is $r->{status}, 400, 'invalid UTF-8 -> 400';
$r = $h->req(POST => $ng->url('/evaluate?user_id=u&flag_name=p50'), {}, 'x');
is $r->{status}, 405, 'POST /evaluate -> 405';

# --- OFREP ---
my $of = sub { $h->req(POST => $ng->url("/ofrep/v1/evaluate/flags$_[0]"), {%{ $_[2] || {} }}, $_[1]) };
$r = $of->('/static-on', { context => { targetingKey => 'u1' } });
is $r->{status}, 200, 'OFREP single 200';
is_deeply $r->{json}, { key => 'static-on', value => JSON::PP::true, variant => 'on',
                        reason => 'STATIC', metadata => { enabled => JSON::PP::true } }, 'OFREP STATIC';
is $of->('/off-flag', { context => { targetingKey => 'u1' } })->{json}{reason}, 'DISABLED', 'OFREP DISABLED';
is $of->('/vip', { context => { targetingKey => 'alice' } })->{json}{reason}, 'TARGETING_MATCH', 'OFREP TARGETING_MATCH';
is $of->('/vip', { context => { targetingKey => 'bob' } })->{json}{reason}, 'DEFAULT', 'OFREP DEFAULT';
$r = $of->('/p50', { context => { targetingKey => 'user-7' } });
is $r->{json}{reason}, 'SPLIT', 'OFREP SPLIT';
is(($r->{json}{value} ? 1 : 0), (TM::Nginx::bucket('user-7', 'p50') < 50 ? 1 : 0), 'OFREP split value');
$r = $of->('/nope', { context => { targetingKey => 'u' } });
is $r->{status}, 404, 'OFREP unknown flag 404';
is $r->{json}{errorCode}, 'FLAG_NOT_FOUND', 'FLAG_NOT_FOUND';
is $r->{json}{key}, 'nope', 'error names the key';
$r = $of->('/p50', '{not json');
is $r->{status}, 400, 'bad JSON 400';
is $r->{json}{errorCode}, 'PARSE_ERROR', 'PARSE_ERROR';
is $of->('/p50', '[1,2]')->{json}{errorCode}, 'PARSE_ERROR', 'non-object body PARSE_ERROR';
is $of->('/p50', '')->{status}, 400, 'empty body 400';
$r = $of->('/p50', { context => 'x' });
is $r->{json}{errorCode}, 'INVALID_CONTEXT', 'context not an object';
is $of->('/p50', { context => { targetingKey => 7 } })->{json}{errorCode}, 'INVALID_CONTEXT',
    'targetingKey not a string';
$r = $of->('/p50', { context => {} });
is $r->{status}, 400, 'missing targeting key 400';
is $r->{json}{errorCode}, 'TARGETING_KEY_MISSING', 'TARGETING_KEY_MISSING';
is $of->('/static-on', { context => {} })->{status}, 200, 'static flag needs no targeting key';
is $h->req(GET => $ng->url('/ofrep/v1/evaluate/flags/p50'))->{status}, 405, 'GET -> 405';

$r = $of->('', { context => { targetingKey => 'alice' } });
is $r->{status}, 200, 'OFREP bulk 200';
my %bulk = map { $_->{key} => $_ } @{ $r->{json}{flags} };
ok exists $bulk{p50} && exists $bulk{'static-on'} && exists $bulk{vip}, 'bulk lists the flags';
is $bulk{vip}{reason}, 'TARGETING_MATCH', 'bulk evaluates per flag';
my $etag = $r->{headers}{etag};
like $etag, qr/^"[0-9a-f]{32}"$/, 'bulk ETag';
$r = $of->('', { context => { targetingKey => 'alice' } }, { 'If-None-Match' => $etag });
is $r->{status}, 304, 'If-None-Match -> 304';
is $r->{content} // '', '', '304 has no body';
$r = $of->('', { context => { targetingKey => 'bob' } }, { 'If-None-Match' => $etag });
is $r->{status}, 200, 'another context -> another ETag, 200';
$r = $of->('', { context => {} });
%bulk = map { $_->{key} => $_ } @{ $r->{json}{flags} };
is $bulk{p50}{errorCode}, 'TARGETING_KEY_MISSING', 'bulk without key: per-flag error';
is $bulk{'static-on'}{value}, JSON::PP::true, 'bulk without key: static flags still answer';

# --- directives ---
my $uid_on  = (grep { TM::Nginx::bucket($_, 'p50') < 50 } map { "c$_" } 1 .. 50)[0];
my $uid_off = (grep { TM::Nginx::bucket($_, 'p50') >= 50 } map { "c$_" } 1 .. 50)[0];
$r = $h->req(GET => $ng->url('/beta/'), { Cookie => "uid=$uid_on" });
is $r->{status}, 200, 'togglemaster_require: flag on for the cookie identity -> page';
is $r->{content}, "beta page\n", 'page served';
is $h->req(GET => $ng->url('/beta/'), { Cookie => "uid=$uid_off" })->{status}, 404,
    'togglemaster_require: flag off -> 404';
is $h->req(GET => $ng->url('/teapot/'))->{status}, 418, 'togglemaster_require with a status';
is $h->req(GET => $ng->url('/static/'))->{status}, 200, 'static flag on without identity';
is $h->req(GET => $ng->url('/hdr/'), { 'X-User' => 'alice' })->{status}, 200, 'identity from a header';
is $h->req(GET => $ng->url('/hdr/'), { 'X-User' => 'bob' })->{status}, 404, 'header identity not listed';
$r = $h->req(GET => $ng->url('/vars'), { Cookie => "uid=$uid_on" });
is $r->{headers}{'x-p50'}, '1', '$togglemaster_flag_p50 = 1';
is $r->{headers}{'x-static'}, '1', '$togglemaster_flag_static_on finds static-on';
is $h->req(GET => $ng->url('/vars'), { Cookie => "uid=$uid_off" })->{headers}{'x-p50'}, '0',
    '$togglemaster_flag_p50 = 0';

# --- API keys ---
is $h->req(GET => $ng->url('/api/x'))->{status}, 401, 'no key -> 401';
$r = $h->req(GET => $ng->url('/api/x'), { Authorization => 'Bearer tm_key_wrong' });
is $r->{status}, 401, 'wrong key -> 401';
ok $r->{json}{error}, '401 is JSON';
unlike $r->{content}, qr/tm_key_wrong/, 'key not echoed';
is $h->req(GET => $ng->url('/api/x'), { Authorization => "Bearer $KEY" })->{status}, 200, 'Bearer key';
is $h->req(GET => $ng->url('/api/x'), { Authorization => $KEY })->{status}, 200, 'bare key';
is $h->req(GET => $ng->url('/api/x'), { 'X-API-Key' => $KEY })->{status}, 200, 'X-API-Key';
is $h->req(GET => $ng->url('/api/open'))->{status}, 200, 'togglemaster_api_key off in a nested location';
$h->redis_cmd('HDEL', 'tm:keys', sha256_hex($KEY));
TM::Nginx::_publish($h, 'key', 'delete', sha256_hex($KEY));
ok $h->wait_until(5, sub { $h->req(GET => $ng->url('/api/x'), { 'X-API-Key' => $KEY })->{status} == 401 }),
    'revoked key -> 401 after the change arrives';

# --- health, metrics ---
$r = $h->req(GET => $ng->url('/health'));
is $r->{status}, 200, 'health 200';
is_deeply $r->{json}, { status => 'ok' }, 'health body';
$r = $h->req(GET => $ng->url('/metrics'));
is $r->{status}, 200, 'metrics 200';
like $r->{content}, qr/^togglemaster_evaluations_total\{flag="p50",result="true"\} [1-9]\d*$/m, 'evaluations by flag/result';
like $r->{content}, qr/^togglemaster_snapshot_version\{worker="\d+"\} \d+$/m, 'snapshot version';
like $r->{content}, qr/^togglemaster_snapshot_age_seconds\{worker="\d+"\} \d+$/m, 'snapshot age';
like $r->{content}, qr/^togglemaster_redis_sync_state\{worker="\d+"\} 2$/m, 'sync state';
like $r->{content}, qr/^togglemaster_redis_reconnects_total \d+$/m, 'reconnects';
like $r->{content}, qr/^togglemaster_api_key_denied_total [1-9]/m, 'denied keys counted';

unlike $ng->error_log, qr/\[(alert|emerg|crit)\]/, 'no alerts in the error log';
done_testing;
