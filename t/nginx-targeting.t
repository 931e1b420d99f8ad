#!/usr/bin/env perl
# The v2 rule language at the edge: contexts from OFREP bodies, /evaluate
# query arguments and togglemaster_context; segments from tm:segments (and
# their changes, and a malformed one); Unleash-style rollouts against an
# independent MurmurHash3 (t/unit/murmur3.py); variants and their payloads
# in OFREP; dependent flags; and a segment + rule created through the real
# targeting daemon, evaluated by nginx.
use strict; use warnings;
use Test::More;
use JSON::PP;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key);

my $h = TM::Harness->new;
$h->redis;
my $T = JSON::PP::true;
my $F = JSON::PP::false;

# Unleash's normalizedValue for many ids at once, from the independent
# Python implementation: [[id, group], ...] -> [n, ...]
sub normalized {
    my ($pairs, $normalizer, $seed) = @_;
    my $in = "$h->{dir}/murmur-in.json";
    open my $f, '>', $in or die; print $f encode_json($pairs); close $f;
    my $out = `python3 -c 'import json, sys; sys.path.insert(0, "t/unit"); from murmur3 import normalized_value as n; print(json.dumps([n(i, g, $normalizer, $seed) for i, g in json.load(open(sys.argv[1]))]))' $in`;
    die "murmur3.py failed\n" if $?;
    return decode_json($out);
}

sub flag { my ($name, $rules, %o) = @_;
    TM::Nginx::set_flag($h, $name, $o{off} ? 0 : 1, quiet => 1);
    TM::Nginx::set_rule($h, $name, $rules, 1, quiet => 1) if $rules;
}
sub c { my ($name, $op, @v) = @_; { contextName => $name, operator => $op, values => [@v] } }

# --- flags ---
flag('country', { strategies => [ { constraints => [ c('country', 'IN', 'BR', 'PT') ] } ] });
flag('adult', { strategies => [ { constraints => [ { contextName => 'age', operator => 'NUM_GTE', value => 18 },
                                                   c('beta', 'IN', 'true') ] } ] });
flag('local', { strategies => [ { constraints => [ c('remoteAddress', 'IP_IN_CIDR', '127.0.0.0/8') ] } ] });
flag('launched', { strategies => [ { constraints => [ { contextName => 'currentTime', operator => 'DATE_AFTER', value => '2020-01-01T00:00:00Z' } ] } ] });
flag('not-yet', { strategies => [ { constraints => [ { contextName => 'currentTime', operator => 'DATE_AFTER', value => '2999-01-01' } ] } ] });
flag('email', { strategies => [ { constraints => [ { contextName => 'email', operator => 'STR_ENDS_WITH', values => ['@corp.io'], caseInsensitive => $T } ] } ] });
flag('seg', { strategies => [ { segments => ['br-users'] } ] });
flag('seg-unknown', { strategies => [ { segments => ['no-such-segment'] } ] });
flag('seg-broken', { strategies => [ { segments => ['broken'] } ] });
flag('seg-bad-op', { strategies => [ { segments => ['bad-op'] } ] });
flag('seg-kept', { strategies => [ { segments => ['kept'] } ] });
flag('roll', { strategies => [ { rollout => { percentage => 30, stickiness => 'default', groupId => 'g1' } } ] });
flag('roll-acct', { strategies => [ { rollout => { percentage => 50, stickiness => 'accountId' } } ] });
my @VARIANTS = (
    { name => 'blue', weight => 250, payload => { type => 'string', value => '#00f' },
      overrides => [ { contextName => 'userId', values => ['alice'] } ] },
    { name => 'green', weight => 250, payload => { type => 'json', value => '{"color":"#0f0","n":[1,2]}' },
      overrides => [ { contextName => 'userId', values => ['bob'] } ] },
    { name => 'answer', weight => 250, payload => { type => 'number', value => '42' },
      overrides => [ { contextName => 'userId', values => ['carol'] } ] },
    { name => 'yes', weight => 250, payload => { type => 'boolean', value => 'true' },
      overrides => [ { contextName => 'userId', values => ['dave'] } ] },
    { name => 'plain', weight => 0, overrides => [ { contextName => 'userId', values => ['erin'] } ] },
);
flag('colors', { variants => \@VARIANTS });
flag('colors-off', { variants => \@VARIANTS }, off => 1);
flag('colors-br', { strategies => [ { constraints => [ c('country', 'IN', 'BR') ] } ], variants => \@VARIANTS });
flag('parent', { strategies => [ { constraints => [ c('plan', 'IN', 'pro') ] } ],
                 variants => [ { name => 'A', weight => 1, overrides => [ { contextName => 'userId', values => ['va'] } ] },
                               { name => 'B', weight => 0, overrides => [ { contextName => 'userId', values => ['vb'] } ] } ] });
flag('child', { dependencies => [ { feature => 'parent' } ] });
flag('child-of-a', { dependencies => [ { feature => 'parent', variants => ['A'] } ] });
flag('child-of-off', { dependencies => [ { feature => 'parent', enabled => $F } ] });
flag('orphan', { dependencies => [ { feature => 'no-such-parent' } ] });
flag('cycle-a', { dependencies => [ { feature => 'cycle-b' } ] });
flag('cycle-b', { dependencies => [ { feature => 'cycle-a' } ] });
flag('pct', { type => 'PERCENTAGE', value => 50 });
flag('geo');
$h->redis_cmd('HSET', 'tm:rules', 'geo', '{"id":9,"flag_name":"geo","is_enabled":true,"rules":{"type":"GEO","value":"BR"}}');

TM::Nginx::set_segment($h, 'br-users', [ c('country', 'IN', 'BR') ], quiet => 1);
TM::Nginx::set_segment($h, 'kept', [ c('tier', 'IN', 'gold') ], quiet => 1);
TM::Nginx::set_raw($h, 'tm:segments', 'broken', '{not json', quiet => 1);
TM::Nginx::set_segment($h, 'bad-op', [ { contextName => 'x', operator => 'FOO', values => ['1'] } ], quiet => 1);
$h->redis_cmd('SET', 'tm:version', 100);
TM::Nginx::mark_ready($h);

my $ng = TM::Nginx->new($h, workers => 2, server => <<'CONF');
        togglemaster_identity $arg_uid;
        location = /geo { togglemaster_context country $http_x_country; togglemaster_require country; togglemaster_health; }
        location = /net { togglemaster_context remoteAddress $remote_addr; togglemaster_require local; togglemaster_health; }
        location = /vars {
            togglemaster_context country $arg_c;
            togglemaster_context plan $arg_plan;
            add_header X-Country $togglemaster_flag_country always;
            add_header X-Seg $togglemaster_flag_seg always;
            add_header X-Child $togglemaster_flag_child always;
            add_header X-Version $togglemaster_version always;
            togglemaster_health;
        }
        location = /evaluate-br { togglemaster_context country BR; togglemaster_evaluate; }
        location /ofrep-br/ofrep/v1/ { togglemaster_context country BR; togglemaster_ofrep; }
CONF
$ng->start;
$h->wait_until(5, sub { ($h->req(GET => $ng->url('/vars'))->{headers}{'x-version'} // '') eq '100' })
    or BAIL_OUT("nginx did not sync:\n" . $ng->error_log);

my $of = sub { my ($flag, $ctx, $path) = @_;
    $h->req(POST => $ng->url(($path // '') . "/ofrep/v1/evaluate/flags$flag"), {}, { context => $ctx }) };
my $ev = sub { my $q = shift; $h->req(GET => $ng->url("/evaluate?$q")) };

# --- context from OFREP ---
my $r = $of->('/country', { targetingKey => 'u1', country => 'BR' });
is $r->{status}, 200, 'OFREP with a context 200';
is_deeply $r->{json}, { key => 'country', value => $T, variant => 'on', reason => 'TARGETING_MATCH',
                        metadata => { enabled => $T } }, 'constraint on a context attribute matches';
$r = $of->('/country', { targetingKey => 'u1', country => 'US' });
is_deeply [ @{ $r->{json} }{qw(value variant reason)} ], [ $F, 'off', 'DEFAULT' ], 'no match: off, DEFAULT';
is $r->{json}{metadata}{enabled}, $F, 'metadata.enabled false';
is $of->('/country', { targetingKey => 'u1', properties => { country => 'PT' } })->{json}{value}, $T,
    'properties are flattened into attributes';
is $of->('/country', { country => 'BR' })->{status}, 200, 'strategies need no targeting key';
is $of->('/country', { country => 'BR' })->{json}{value}, $T, '... and match on the context alone';
is $of->('/pct', { country => 'BR' })->{json}{errorCode}, 'TARGETING_KEY_MISSING', 'PERCENTAGE still needs one';
is $of->('/pct', { userId => 'u7' })->{status}, 200, 'userId is the identity without targetingKey';
is $of->('/adult', { targetingKey => 'u', age => 21, beta => $T })->{json}{value}, $T, 'numbers and booleans as attributes';
is $of->('/adult', { targetingKey => 'u', age => 17.5, beta => $T })->{json}{value}, $F, 'NUM_GTE on a real';
is $of->('/adult', { targetingKey => 'u', age => 30, beta => $F })->{json}{value}, $F, 'boolean false';
is $of->('/email', { targetingKey => 'u', email => 'Ann@CORP.io' })->{json}{value}, $T, 'case-insensitive STR_ENDS_WITH';
is $of->('/launched', { targetingKey => 'u' })->{json}{value}, $T, 'currentTime from the clock: after 2020';
is $of->('/not-yet', { targetingKey => 'u' })->{json}{value}, $F, 'currentTime from the clock: not after 2999';
is $of->('/not-yet', { targetingKey => 'u', currentTime => '3000-01-01T00:00:00Z' })->{json}{value}, $T,
    'currentTime from the context';
$r = $h->req(POST => $ng->url('/ofrep/v1/evaluate/flags/country'), {}, { context => { map { ("a$_" => $_) } 1 .. 300 } });
is $r->{status}, 400, 'more than 256 attributes 400';
is $r->{json}{errorCode}, 'INVALID_CONTEXT', '... INVALID_CONTEXT';
is $of->('/country', { targetingKey => 'u', country => 'x' x 5000 })->{json}{errorCode}, 'INVALID_CONTEXT',
    'a value over 4096 bytes INVALID_CONTEXT';
is $of->('/country', { targetingKey => 'u' }, '/ofrep-br')->{json}{value}, $T, 'togglemaster_context fills OFREP contexts';
is $of->('/country', { targetingKey => 'u', country => 'US' }, '/ofrep-br')->{json}{value}, $F, '... the body wins';

# --- context from /evaluate query arguments ---
is $ev->('user_id=u1&flag_name=country&country=BR')->{json}{result}, $T, 'query argument as an attribute';
is $ev->('user_id=u1&flag_name=country&country=US')->{json}{result}, $F, 'query argument not matching';
is $ev->('country=PT&user_id=u1&flag_name=country')->{json}{result}, $T, 'any order';
is $ev->('user_id=u1&flag_name=country&country=%42R')->{json}{result}, $T, '%XX decoded';
is $ev->('user_id=u1&flag_name=email&email=a%40corp.io')->{json}{result}, $T, 'encoded @';
is $ev->('user_id=u1&flag_name=adult&age=18&beta=true')->{json}{result}, $T, 'two attributes';
is $ev->('user_id=u1&flag_name=adult&age=18&beta=true&age=3')->{json}{result}, $T, 'the first of a name counts';
is_deeply $ev->('user_id=u1&flag_name=country&country=BR')->{json},
    { flag_name => 'country', user_id => 'u1', result => $T }, '/evaluate keeps its shape without variants';
is $ev->('user_id=u1&flag_name=country')->{json}{result}, $F, 'absent attribute';
is $ev->('user_id=u1&flag_name=country&country=BR&' . join('&', map { "a$_=1" } 1 .. 300))->{status}, 400,
    'more than 256 query attributes 400';
is $ev->('user_id=u1&flag_name=country&country=' . ('x' x 5000))->{status}, 400, 'a value over 4096 bytes 400';
is $h->req(GET => $ng->url('/evaluate-br?user_id=u1&flag_name=country'))->{json}{result}, $T,
    'togglemaster_context fills /evaluate';
is $h->req(GET => $ng->url('/evaluate-br?user_id=u1&flag_name=country&country=US'))->{json}{result}, $F,
    '... query arguments win';

# --- context from togglemaster_context (require and variables) ---
is $h->req(GET => $ng->url('/geo'), { 'X-Country' => 'BR' })->{status}, 200, 'togglemaster_require with a header attribute';
is $h->req(GET => $ng->url('/geo'), { 'X-Country' => 'US' })->{status}, 404, '... not matching 404';
is $h->req(GET => $ng->url('/geo'))->{status}, 404, '... absent 404';
is $h->req(GET => $ng->url('/net'))->{status}, 200, 'remoteAddress from $remote_addr, IP_IN_CIDR';
$r = $h->req(GET => $ng->url('/vars?c=BR'));
is $r->{headers}{'x-country'}, '1', '$togglemaster_flag_ with togglemaster_context';
is $r->{headers}{'x-seg'}, '1', '$togglemaster_flag_ through a segment';
is $h->req(GET => $ng->url('/vars?c=US'))->{headers}{'x-country'}, '0', '$togglemaster_flag_ not matching';

# --- segments ---
is $ev->('user_id=u&flag_name=seg&country=BR')->{json}{result}, $T, 'segment matches';
is $ev->('user_id=u&flag_name=seg&country=PT')->{json}{result}, $F, 'segment does not match';
is $of->('/seg', { targetingKey => 'u', country => 'BR' })->{json}{reason}, 'TARGETING_MATCH', 'segment match is TARGETING_MATCH';
is $ev->('user_id=u&flag_name=seg-unknown&country=BR')->{json}{result}, $F, 'unknown segment never matches';
is $ev->('user_id=u&flag_name=seg-broken')->{json}{result}, $F, 'malformed segment skipped: never matches';
is $ev->('user_id=u&flag_name=seg-bad-op&x=1')->{json}{result}, $F, 'segment that does not compile skipped';
like $ng->error_log, qr/malformed segment "broken" skipped/, 'malformed segment logged';
like $ng->error_log, qr/segment "bad-op" does not compile: constraints\[0\]\.operator/, 'compile error logged with its path';
is $ev->('user_id=u&flag_name=seg-kept&tier=gold')->{json}{result}, $T, 'good segment';
TM::Nginx::set_raw($h, 'tm:segments', 'kept', '{"name":"kept","constraints":[{"contextName":"tier","operator":"NOPE"}]}');
ok $h->wait_until(5, sub { $ng->error_log =~ /malformed segment "kept" skipped, keeping its last good version/ }),
    'a bad update of a segment is logged';
is $ev->('user_id=u&flag_name=seg-kept&tier=gold')->{json}{result}, $T, '... and its last good version keeps serving';
is $ev->('user_id=u&flag_name=seg&country=BR')->{json}{result}, $T, '... as do the others';

# a segment change propagates (both workers)
TM::Nginx::set_segment($h, 'br-users', [ c('country', 'IN', 'PT') ]);
ok $h->wait_until(5, sub { my $ok = 1;
        for (1 .. 4) { $ok &&= $ev->('user_id=u&flag_name=seg&country=PT')->{json}{result} } $ok }),
    'segment change propagates';
is $ev->('user_id=u&flag_name=seg&country=BR')->{json}{result}, $F, 'old segment value no longer matches';
TM::Nginx::del($h, 'tm:segments', 'br-users');
ok $h->wait_until(5, sub { my $ok = 1;
        for (1 .. 4) { $ok &&= !$ev->('user_id=u&flag_name=seg&country=PT')->{json}{result} } $ok }),
    'deleted segment: never matches';
TM::Nginx::set_segment($h, 'br-users', [ c('country', 'IN', 'BR') ]);
ok $h->wait_until(5, sub { $ev->('user_id=u&flag_name=seg&country=BR')->{json}{result} }), 'segment recreated';
ok $h->wait_until(5, sub { -s $ng->snapshot_file && do { open my $f, '<', $ng->snapshot_file; local $/;
        my $d = eval { decode_json(<$f>) }; $d && $d->{segments}{'br-users'} && $d->{segments}{'br-users'} =~ /"BR"/ } }),
    'segments are in the snapshot file';

# --- rollout stickiness against an independent MurmurHash3 ---
my @users = map { "user-$_" } 1 .. 300;
my $want = normalized([ map { [ $_, 'g1' ] } @users ], 100, 0);
my ($bad, $on) = (0, 0);
for my $i (0 .. $#users) {
    my $got = $ev->("user_id=$users[$i]&flag_name=roll")->{json}{result} ? 1 : 0;
    $bad++ if $got != ($want->[$i] <= 30 ? 1 : 0);
    $on += $got;
}
is $bad, 0, "rollout 30 % (groupId g1): 300 users agree with murmur3.py ($on on)";
ok $on > 45 && $on < 135, 'about 30 % on';
my $again = grep { $ev->("user_id=$users[$_]&flag_name=roll")->{json}{result} ? $want->[$_] <= 30 : $want->[$_] > 30 } 0 .. 49;
is $again, 50, 'sticky: the same answers again';
$r = $of->('/roll', { targetingKey => $users[0] });
is $r->{json}{reason}, 'SPLIT', 'rollout reason SPLIT';
my @acct = map { "acct-$_" } 1 .. 100;
$want = normalized([ map { [ $_, 'roll-acct' ] } @acct ], 100, 0);
$bad = 0;
for my $i (0 .. $#acct) {
    # a different user each time: the account decides
    my $got = $ev->("user_id=x$i&flag_name=roll-acct&accountId=$acct[$i]")->{json}{result} ? 1 : 0;
    $bad++ if $got != ($want->[$i] <= 50 ? 1 : 0);
}
is $bad, 0, 'stickiness on a context attribute (groupId defaults to the flag name)';
is $ev->('user_id=x&flag_name=roll-acct')->{json}{result}, $F, 'stickiness attribute absent: no rollout';

# --- variants and payloads ---
$r = $of->('/colors', { targetingKey => 'alice' });
is_deeply $r->{json}, { key => 'colors', value => '#00f', variant => 'blue', reason => 'TARGETING_MATCH',
                        metadata => { enabled => $T } }, 'string payload as a JSON string (override)';
is_deeply $of->('/colors', { targetingKey => 'bob' })->{json}{value}, { color => '#0f0', n => [1, 2] }, 'json payload as an object';
$r = $of->('/colors', { targetingKey => 'carol' });
is $r->{json}{value}, 42, 'number payload';
like $r->{content}, qr/"value":42[,}]/, '... a JSON number';
like $of->('/colors', { targetingKey => 'dave' })->{content}, qr/"value":true[,}]/, 'boolean payload';
$r = $of->('/colors', { targetingKey => 'erin' });
is_deeply [ @{ $r->{json} }{qw(value variant)} ], [ $T, 'plain' ], 'variant without payload: value is the boolean';
$r = $of->('/colors', { userId => 'alice' });
is $r->{json}{variant}, 'blue', 'overrides on userId without targetingKey';
$r = $of->('/colors-off', { targetingKey => 'alice' });
is_deeply $r->{json}, { key => 'colors-off', value => $F, variant => 'off', reason => 'DISABLED',
                        metadata => { enabled => $F } }, 'flag off: no variant';
$r = $of->('/colors-br', { targetingKey => 'alice', country => 'US' });
is_deeply [ @{ $r->{json} }{qw(value variant reason)} ], [ $F, 'off', 'DEFAULT' ], 'no strategy: no variant';
is $of->('/colors-br', { targetingKey => 'alice', country => 'BR' })->{json}{variant}, 'blue', 'strategy then variant';

# weighted choice: murmur3("colors:<id>", seed 86028157) % 1000 + 1 over 250-wide bands
my @vu = map { "vu-$_" } 1 .. 60;
$want = normalized([ map { [ $_, 'colors' ] } @vu ], 1000, 86028157);
my %names = (0 => 'blue', 1 => 'green', 2 => 'answer', 3 => 'yes');
$bad = 0;
my %seen;
for my $i (0 .. $#vu) {
    $r = $of->('/colors', { targetingKey => $vu[$i] });
    my $exp = $names{ int(($want->[$i] - 1) / 250) };
    $bad++ if $r->{json}{variant} ne $exp || $r->{json}{reason} ne 'SPLIT' || $r->{json}{metadata}{enabled} ne $T;
    $seen{ $r->{json}{variant} }++;
}
is $bad, 0, 'weighted variants agree with murmur3.py for 60 users (SPLIT)';
is scalar(keys %seen), 4, 'every weighted variant drawn';

# /evaluate: "variant" only when the rule gave one
is_deeply $ev->('user_id=alice&flag_name=colors')->{json},
    { flag_name => 'colors', user_id => 'alice', result => $T, variant => 'blue' }, '/evaluate adds "variant"';
ok !exists $ev->('user_id=alice&flag_name=colors-off')->{json}{variant}, '... not when off';

# bulk: payloads of several types in one answer
$r = $of->('', { targetingKey => 'bob', country => 'BR' });
is $r->{status}, 200, 'bulk 200';
my %bulk = map { $_->{key} => $_ } @{ $r->{json}{flags} };
is_deeply $bulk{colors}{value}, { color => '#0f0', n => [1, 2] }, 'bulk carries payloads';
is $bulk{country}{value}, $T, 'bulk evaluates the context';
is $bulk{pct}{reason}, 'SPLIT', 'bulk with identity';
is $bulk{geo}{errorCode}, 'PARSE_ERROR', 'bulk: unusable rule PARSE_ERROR';
is_deeply [ @{ $bulk{'cycle-a'} }{qw(value reason)} ], [ $F, 'DEFAULT' ], 'bulk: dependency cycle off (a parent with dependencies never satisfies)';

# --- dependencies ---
is $ev->('user_id=u&flag_name=child&plan=pro')->{json}{result}, $T, 'dependency met';
is $ev->('user_id=u&flag_name=child&plan=free')->{json}{result}, $F, 'dependency unmet';
is $of->('/child', { targetingKey => 'u', plan => 'free' })->{json}{reason}, 'DEFAULT', '... DEFAULT';
is $ev->('user_id=u&flag_name=child-of-off&plan=free')->{json}{result}, $T, 'enabled: false dependency';
is $ev->('user_id=va&flag_name=child-of-a&plan=pro')->{json}{result}, $T, 'dependency on a variant, met';
is $ev->('user_id=vb&flag_name=child-of-a&plan=pro')->{json}{result}, $F, 'dependency on a variant, other variant';
is $ev->('user_id=u&flag_name=orphan')->{json}{result}, $F, 'unknown parent: unmet';
is $h->req(GET => $ng->url('/vars?uid=u&plan=pro'))->{headers}{'x-child'}, '1', 'dependency through a variable';
$r = $of->('/cycle-a', { targetingKey => 'u' });
is $r->{status}, 200, 'dependency cycle 200 (Unleash: one level of dependencies)';
is_deeply [ @{ $r->{json} }{qw(value reason)} ], [ $F, 'DEFAULT' ], '... off, DEFAULT';
is $ev->('user_id=u&flag_name=cycle-a')->{json}{result}, $F, '/evaluate: cycle is false';
$r = $of->('/geo', { targetingKey => 'u' });
is $r->{status}, 400, 'unusable rule 400';
is $r->{json}{errorCode}, 'PARSE_ERROR', '... PARSE_ERROR';
TM::Nginx::set_flag($h, 'parent', 0);
ok $h->wait_until(5, sub { !$ev->('user_id=u&flag_name=child&plan=pro')->{json}{result} }), 'parent switched off: child off';

unlike $ng->error_log, qr/\[(alert|emerg|crit)\]|exited on signal/, 'no alerts or crashes';

# --- end to end: a segment and a v2 rule through the targeting daemon ---
# (the daemons reconcile Redis to PostgreSQL: the fields set above go away)
my $M = 'master-test-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $fl = $h->daemon('flags', AUTH_SERVICE_URL => $auth);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my %K = (Authorization => 'Bearer ' . new_key($h, $auth, $M, 'targeting-e2e')->{key});
is $h->req(POST => "$fl/flags", \%K, { name => 'checkout-v2', is_enabled => $T })->{status}, 201, 'daemon: flag';
is $h->req(POST => "$tg/segments", \%K, { name => 'corp', constraints => [
    { contextName => 'email', operator => 'STR_ENDS_WITH', values => ['@corp.io'] } ] })->{status}, 201, 'daemon: segment';
$r = $h->req(POST => "$tg/rules", \%K, { flag_name => 'checkout-v2', rules => {
    strategies => [ { segments => ['corp'], constraints => [ c('country', 'IN', 'BR') ] } ],
    variants => [ { name => 'fast', weight => 1000, payload => { type => 'json', value => '{"speed":9}' } } ] } });
is $r->{status}, 201, 'daemon: v2 rule';
ok $h->wait_until(10, sub { ($of->('/checkout-v2', { targetingKey => 'u', email => 'a@corp.io', country => 'BR' })->{json}{variant} // '') eq 'fast' }),
    'the edge evaluates it';
$r = $of->('/checkout-v2', { targetingKey => 'u', email => 'a@corp.io', country => 'BR' });
is_deeply $r->{json}, { key => 'checkout-v2', value => { speed => 9 }, variant => 'fast', reason => 'TARGETING_MATCH',
                        metadata => { enabled => $T } }, 'segment + constraint + variant payload';
is $of->('/checkout-v2', { targetingKey => 'u', email => 'a@gmail.com', country => 'BR' })->{json}{value}, $F, 'outside the segment';
is $h->req(PUT => "$tg/segments/corp", \%K, { constraints => [
    { contextName => 'email', operator => 'STR_ENDS_WITH', values => ['@gmail.com'] } ] })->{status}, 200, 'daemon: segment update';
ok $h->wait_until(5, sub { $of->('/checkout-v2', { targetingKey => 'u', email => 'a@gmail.com', country => 'BR' })->{json}{value} }),
    'the segment update reaches the edge';
ok $h->redis_cmd('SISMEMBER', 'tm:ready', 'segment'), 'the targeting daemon marks segments ready';

# a restarted nginx without Redis serves segments from the snapshot file
ok $h->wait_until(5, sub { open my $f, '<', $ng->snapshot_file or return 0; local $/; <$f> =~ /gmail/ }),
    'snapshot file has the new segment';
$ng->stop;
my $ng2 = TM::Nginx->new($h, redis => 0);
$ng2->start;
$r = $h->req(POST => $ng2->url('/ofrep/v1/evaluate/flags/checkout-v2'), {},
             { context => { targetingKey => 'u', email => 'a@gmail.com', country => 'BR' } });
is $r->{json}{variant}, 'fast', 'restarted without Redis: segment and rule from the snapshot file';
unlike $ng2->error_log, qr/\[(alert|emerg|crit)\]|exited on signal|unreadable/, 'snapshot file loads cleanly';
done_testing;
