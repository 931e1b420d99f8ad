#!/usr/bin/env perl
# tmctl against real daemons (auth, flags, targeting), reached directly and,
# when the nginx module is built, through nginx as the gateway (also for
# tmctl eval over OFREP): every command, exit codes and messages, export ->
# import into a fresh database, Unleash import of t/data/unleash-features.json,
# idempotent re-imports, bad files that change nothing, keys never printed.
use strict; use warnings;
use Test::More;
use POSIX ();
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key replica);
use TM::Nginx;

my $h = TM::Harness->new;
my $M = 'master-test-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $fl = $h->daemon('flags', AUTH_SERVICE_URL => $auth);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my $BUILD = $ENV{TM_BUILD} || 'build';
my $TMCTL = "$BUILD/tmctl/tmctl";
my $KEY = new_key($h, $auth, $M, 'tmctl-test')->{key};
my $J = $h->json;
my $dir = $h->dir;
my $T = JSON::PP::true;
my $F = JSON::PP::false;
my $all_output = '';

sub slurp { my $p = shift; open my $f, '<', $p or return ''; local $/; my $s = <$f>; $s // '' }
sub spew { my ($p, $s) = @_; open my $f, '>', $p or die "$p: $!"; print $f $s; close $f; $p }
sub jfile { my ($name, $data) = @_; spew("$dir/$name", ref $data ? $J->encode($data) : $data) }

# Runs tmctl; env: the direct URLs and the key unless overridden (undef
# removes a variable). Returns {rc, out, err, json}.
my %DIRECT = (TOGGLEMASTER_FLAGS_URL => $fl, TOGGLEMASTER_TARGETING_URL => $tg,
              TOGGLEMASTER_AUTH_URL => $auth, TOGGLEMASTER_URL => undef, TOGGLEMASTER_EVAL_URL => undef);
sub tm {
    my $o = ref $_[0] eq 'HASH' ? shift : {};
    my %env = (%DIRECT, TOGGLEMASTER_API_KEY => $KEY, %{ $o->{env} || {} });
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        for my $k (keys %env) {
            if (defined $env{$k}) { $ENV{$k} = $env{$k} } else { delete $ENV{$k} }
        }
        open STDIN, '<', $o->{stdin} // '/dev/null' or POSIX::_exit(126);
        open STDOUT, '>', "$dir/tm.out" or POSIX::_exit(126);
        open STDERR, '>', "$dir/tm.err" or POSIX::_exit(126);
        exec $TMCTL, @_ or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $r = { rc => $? >> 8, out => slurp("$dir/tm.out"), err => slurp("$dir/tm.err") };
    $r->{json} = eval { $J->decode($r->{out}) };
    $all_output .= $r->{out} . $r->{err};
    return $r;
}
sub ok_run {
    my ($r, $name) = @_;
    is $r->{rc}, 0, "$name: exit 0" or diag "stderr: $r->{err}";
    return $r;
}

ok -x $TMCTL, "$TMCTL built";

# --- usage: exit 2 ---
my $r = tm('--help');
is $r->{rc}, 0, '--help exits 0';
like $r->{out}, qr/tmctl flags list.*tmctl import unleash FILE/s, '--help lists the commands';
is tm('-h')->{rc}, 0, '-h exits 0';
for my $case (
    [ [], 'no command' ],
    [ ['bogus'], 'unknown command', qr/unknown command "bogus"/ ],
    [ ['flags'], 'group without a command', qr/flags needs a command/ ],
    [ ['flags', 'frob'], 'unknown flags command', qr/unknown flags command "frob"/ ],
    [ ['flags', 'get'], 'missing NAME', qr/usage: tmctl flags get NAME/ ],
    [ ['flags', 'get', 'a', 'b'], 'extra argument', qr/usage: tmctl flags get NAME/ ],
    [ ['flags', 'list', '--frob'], 'unknown option', qr/unknown option --frob/ ],
    [ ['flags', 'list', '--user', 'x'], 'option the command does not take', qr/does not take --user/ ],
    [ ['flags', 'create', 'x', '--enabled', '--disabled'], '--enabled and --disabled', qr/together/ ],
    [ ['flags', 'get', 'bad name'], 'invalid name', qr/names are 1 to 100 characters/ ],
    [ ['flags', 'update', 'x'], 'update with nothing to change', qr/nothing to update/ ],
    [ ['flags', 'list', '--url'], 'option without its value', qr/--url needs a value/ ],
    [ ['flags', 'list', '--timeout', 'soon'], 'bad timeout', qr/--timeout/ ],
    [ ['flags', 'list', '--retries', 'many'], 'bad retries', qr/--retries must be a number from 0 to 20/ ],
    [ ['flags', 'list', '--retries', '21'], 'too many retries', qr/--retries must be a number from 0 to 20/ ],
    [ ['flags', 'list', '--flags-url', 'ftp://x'], 'URL not http', qr/http:\/\// ],
    [ ['rules', 'set', 'f', "$dir/missing.json"], 'missing file', qr/cannot read .*missing\.json/ ],
    [ ['eval', 'f', '--context', '[1]'], '--context not an object', qr/--context must be a JSON object/ ],
    [ ['eval', 'f', '--context', '{'], '--context not JSON', qr/--context must be a JSON object/ ],
    [ ['import', 'unleash'], 'import unleash without FILE', qr/usage: tmctl import unleash FILE/ ],
) {
    my ($args, $name, $re) = @$case;
    my $x = tm(@$args);
    is $x->{rc}, 2, "$name -> exit 2";
    like $x->{err}, $re, "$name -> message" if $re;
    is $x->{out}, '', "$name -> nothing on stdout";
}
$r = tm({ env => { TOGGLEMASTER_API_KEY => undef } }, 'flags', 'list');
is $r->{rc}, 2, 'no key -> exit 2';
like $r->{err}, qr/no API key: set TOGGLEMASTER_API_KEY or pass --key/, 'no key -> says how to give one';

# --- the key: validate, wrong key, --key ---
ok_run(tm('validate'), 'validate');
$r = tm({ env => { TOGGLEMASTER_API_KEY => 'tm_key_wrong' } }, 'flags', 'list');
is $r->{rc}, 1, 'wrong key -> exit 1';
like $r->{err}, qr/^tmctl: flags list: 401 /m, 'wrong key -> the server\'s 401 and message';
is tm({ env => { TOGGLEMASTER_API_KEY => 'tm_key_wrong' } }, 'validate')->{rc}, 1, 'validate with a wrong key -> 1';
ok_run(tm({ env => { TOGGLEMASTER_API_KEY => undef } }, '--key', $KEY, 'flags', 'list'), '--key on the command line');
ok_run(tm({ env => { TOGGLEMASTER_API_KEY => undef, TOGGLEMASTER_FLAGS_URL => undef } },
          "--key=$KEY", '--flags-url', "$fl/", 'flags', 'list'), '--flags-url and --key=VALUE');
$r = tm({ env => { TOGGLEMASTER_FLAGS_URL => 'http://127.0.0.1:' . TM::Harness::free_port() } }, 'flags', 'list');
is $r->{rc}, 1, 'server unreachable -> exit 1';
like $r->{err}, qr/^tmctl: GET http:\/\/127\.0\.0\.1:\d+\/flags: /m, 'server unreachable -> says where';

# --- flags ---
$r = ok_run(tm('flags', 'create', 'new-checkout', '--description', 'v2 checkout', '--enabled'), 'flags create');
is_deeply [ @{ $r->{json} }{qw(name description is_enabled)} ], [ 'new-checkout', 'v2 checkout', $T ], 'created row printed';
$r = ok_run(tm('flags', 'create', 'dark'), 'flags create without options');
ok !$r->{json}{is_enabled}, 'created off by default';
$r = tm('flags', 'create', 'dark');
is $r->{rc}, 1, 'duplicate -> exit 1';
like $r->{err}, qr/^tmctl: flag "dark": 409 a flag "dark" already exists$/m, 'duplicate -> the server\'s message';
$r = ok_run(tm('flags', 'get', 'new-checkout'), 'flags get');
is $r->{json}{description}, 'v2 checkout', 'get prints the row';
$r = ok_run(tm('flags', 'list'), 'flags list');
is_deeply [ map { $_->{name} } @{ $r->{json} } ], [qw(dark new-checkout)], 'list prints every flag';
$r = ok_run(tm('flags', 'update', 'dark', '--description', 'hidden'), 'flags update');
is $r->{json}{description}, 'hidden', 'description updated';
ok !$r->{json}{is_enabled}, 'is_enabled kept';
$r = ok_run(tm('flags', 'enable', 'dark'), 'flags enable');
ok $r->{json}{is_enabled}, 'enabled';
$r = ok_run(tm('flags', 'disable', 'dark'), 'flags disable');
ok !$r->{json}{is_enabled}, 'disabled';
$r = ok_run(tm('flags', 'update', 'dark', '--enabled'), 'flags update --enabled');
ok $r->{json}{is_enabled}, 'update --enabled';
$r = ok_run(tm('flags', 'delete', 'dark'), 'flags delete');
like $r->{out}, qr/deleted flag "dark"/, 'delete says so';
$r = tm('flags', 'get', 'dark');
is $r->{rc}, 1, 'get deleted -> exit 1';
like $r->{err}, qr/404 no flag "dark"/, 'get deleted -> 404 message';
is tm('flags', 'delete', 'dark')->{rc}, 1, 'delete unknown -> exit 1';
is tm('flags', 'create', 'x', '--description', "a\x01b")->{rc}, 2, 'control character in --description -> 2';
is tm('flags', 'get', 'x')->{rc}, 1, '... and nothing created';

# --- segments ---
my $BR = [ { contextName => 'country', operator => 'IN', values => [ 'BR', 'PT' ] } ];
$r = ok_run(tm('segments', 'set', 'brazil', jfile('seg.json', { constraints => $BR, description => 'BR and PT' })), 'segments set (create)');
is_deeply [ @{ $r->{json} }{qw(name description)}, $r->{json}{constraints} ], [ 'brazil', 'BR and PT', $BR ], 'segment created';
$r = ok_run(tm('segments', 'set', 'brazil', jfile('seg2.json', [ $BR->[0], { contextName => 'plan', operator => 'NUM_GTE', value => 2 } ])),
            'segments set with a bare array (update)');
is scalar @{ $r->{json}{constraints} }, 2, 'constraints replaced';
is $r->{json}{description}, 'BR and PT', 'description kept';
$r = tm({ stdin => jfile('seg3.json', { name => 'corp', constraints => [ { contextName => 'email', operator => 'STR_ENDS_WITH', values => ['@corp.io'] } ] }) },
        'segments', 'set', 'corp', '-', '--description', 'staff');
is $r->{rc}, 0, 'segments set - (stdin) with --description' or diag $r->{err};
is $r->{json}{description}, 'staff', '--description applied';
$r = ok_run(tm('segments', 'list'), 'segments list');
is_deeply [ map { $_->{name} } @{ $r->{json} } ], [qw(brazil corp)], 'segments listed';
ok_run(tm('segments', 'get', 'corp'), 'segments get');
my $segs_before = $h->psql('SELECT string_agg(updated_at::text, \',\' ORDER BY name) FROM segments');
for my $case (
    [ { constraints => [ { contextName => 'c', operator => 'FOO', values => ['x'] } ] }, 'unknown operator', qr/constraints\[0\]\.operator: unknown operator "FOO"/ ],
    [ { name => 'other', constraints => [] }, 'another name in the file', qr/"name" says another segment/ ],
    [ { constraints => [], rules => 1 }, 'unknown field', qr/rules/ ],
    [ '{"constraints": [', 'not JSON', qr/not valid JSON: line 1/ ],
    [ '"text"', 'a string', qr/must be \{"constraints"/ ],
) {
    my $x = tm('segments', 'set', 'brazil', jfile('bad-seg.json', $case->[0]));
    is $x->{rc}, 1, "segments set, $case->[1] -> exit 1";
    like $x->{err}, $case->[2], "segments set, $case->[1] -> message";
}
is $h->psql('SELECT string_agg(updated_at::text, \',\' ORDER BY name) FROM segments'), $segs_before, 'bad segment files changed nothing';

# --- rules ---
my $DOC = { strategies => [ { name => 'br', segments => ['brazil'], rollout => { percentage => 100, stickiness => 'default' } },
                            { constraints => [ { contextName => 'userId', operator => 'IN', values => ['alice'] } ] } ],
            variants => [ { name => 'blue', weight => 1, payload => { type => 'string', value => '#00f' } } ] };
$r = ok_run(tm('rules', 'set', 'new-checkout', jfile('rule.json', $DOC)), 'rules set (create)');
is_deeply $r->{json}{rules}, $DOC, 'rule document stored as given';
ok $r->{json}{is_enabled}, 'rule enabled';
$r = ok_run(tm('rules', 'set', 'new-checkout', jfile('rule2.json', { rules => { type => 'PERCENTAGE', value => 25 }, is_enabled => $F })),
            'rules set with a row {"rules","is_enabled"} (update)');
is_deeply [ $r->{json}{rules}, $r->{json}{is_enabled} ], [ { type => 'PERCENTAGE', value => 25 }, $F ], 'replaced, disabled';
$r = ok_run(tm('rules', 'set', 'new-checkout', "$dir/rule.json", '--enabled'), 'rules set --enabled');
is_deeply [ $r->{json}{rules}, $r->{json}{is_enabled} ], [ $DOC, $T ], 'back to the strategies document, enabled';
ok_run(tm({ stdin => jfile('rule3.json', { type => 'USER_LIST', values => ['bob'] }) }, 'rules', 'set', 'search', '-'), 'rules set from stdin');
$r = ok_run(tm('rules', 'disable', 'search'), 'rules disable');
ok !$r->{json}{is_enabled}, 'disabled';
$r = ok_run(tm('rules', 'enable', 'search'), 'rules enable');
ok $r->{json}{is_enabled}, 'enabled';
$r = ok_run(tm('rules', 'list'), 'rules list');
is_deeply [ map { $_->{flag_name} } @{ $r->{json} } ], [qw(new-checkout search)], 'rules listed';
$r = ok_run(tm('rules', 'get', 'new-checkout'), 'rules get');
is_deeply $r->{json}{rules}, $DOC, 'rules get prints the document';
my $rules_before = $h->psql('SELECT string_agg(updated_at::text, \',\' ORDER BY flag_name) FROM targeting_rules');
for my $case (
    [ { strategies => [ { constraints => [ { contextName => 'c', operator => 'IN', values => ['a'] }, { contextName => 'c', operator => 'BAD', values => ['a'] } ] } ] },
      'unknown operator', qr/strategies\[0\]\.constraints\[1\]\.operator: unknown operator "BAD"/ ],
    [ { type => 'PERCENTAGE', value => 101 }, 'percentage over 100', qr/./ ],
    [ { strategies => [ { rollout => { percentage => 500 } } ] }, 'rollout over 100', qr/strategies\[0\]\.rollout\.percentage: must be a number from 0 to 100/ ],
    [ { rules => {}, flag_name => 'other' }, 'row for another flag', qr/"flag_name" says another flag/ ],
    [ { rules => {}, is_enabled => 'yes' }, 'is_enabled not a boolean', qr/is_enabled/ ],
    [ '[1,2', 'not JSON', qr/not valid JSON/ ],
) {
    my $x = tm('rules', 'set', 'new-checkout', jfile('bad-rule.json', $case->[0]));
    is $x->{rc}, 1, "rules set, $case->[1] -> exit 1";
    like $x->{err}, $case->[2], "rules set, $case->[1] -> message";
}
is $h->psql('SELECT string_agg(updated_at::text, \',\' ORDER BY flag_name) FROM targeting_rules'), $rules_before,
    'bad rule files changed nothing';

# segment in use
$r = tm('segments', 'delete', 'brazil');
is $r->{rc}, 1, 'segments delete of a segment in use -> exit 1';
like $r->{err}, qr/409 segment "brazil" is used by the rules of flag "new-checkout"/, '... with the server\'s 409 naming the flag';
$r = ok_run(tm('rules', 'delete', 'search'), 'rules delete');
like $r->{out}, qr/deleted the rule for flag "search"/, 'rules delete says so';
is tm('rules', 'get', 'search')->{rc}, 1, 'deleted rule -> get exits 1';
ok_run(tm('segments', 'set', 'unused', jfile('seg4.json', { constraints => [] })), 'segments set unused');
ok_run(tm('segments', 'delete', 'unused'), 'segments delete');
is tm('segments', 'get', 'unused')->{rc}, 1, 'deleted segment -> get exits 1';

# --- eval and the gateway, through nginx when the module is built ---
SKIP: {
    skip 'nginx module not built', 16 unless -f $TM::Nginx::MODULE && `sh -c 'command -v nginx'`;
    my ($fp, $tp, $ap) = map { m/:(\d+)$/ && $1 } $fl, $tg, $auth;
    my $ng = TM::Nginx->new($h, server => <<"CONF");
        location /flags/ { proxy_pass http://127.0.0.1:$fp/; }
        location /targeting/ { proxy_pass http://127.0.0.1:$tp/; }
        location /auth/ { proxy_pass http://127.0.0.1:$ap/; }
CONF
    $ng->start;
    my %GW = (env => { TOGGLEMASTER_FLAGS_URL => undef, TOGGLEMASTER_TARGETING_URL => undef,
                       TOGGLEMASTER_AUTH_URL => undef, TOGGLEMASTER_URL => $ng->url('') });
    ok_run(tm('flags', 'create', 'eval-me', '--enabled'), 'flag for eval');
    ok_run(tm('rules', 'set', 'eval-me', jfile('eval-rule.json', { type => 'USER_LIST', values => ['alice'] })), 'rule for eval');
    ok $h->wait_until(5, sub { ($h->req(POST => $ng->url('/ofrep/v1/evaluate/flags/eval-me'), {},
        { context => { targetingKey => 'alice' } })->{json}{reason} // '') eq 'TARGETING_MATCH' }), 'nginx has the rule';
    $r = ok_run(tm(\%GW, 'eval', 'eval-me', '--user', 'alice', '--context', '{"country":"BR"}'), 'eval through the gateway');
    is_deeply [ @{ $r->{json} }{qw(key reason value)} ], [ 'eval-me', 'TARGETING_MATCH', $T ], 'eval prints the OFREP result';
    $r = ok_run(tm({ env => { TOGGLEMASTER_EVAL_URL => $ng->url('') } }, 'eval', 'eval-me', '--context', '{"targetingKey":"bob"}'),
                'eval with --eval-url, the identity in --context');
    is_deeply [ @{ $r->{json} }{qw(reason value)} ], [ 'DEFAULT', $F ], 'not listed -> DEFAULT, false';
    $r = tm(\%GW, 'eval', 'no-such-flag', '--user', 'u');
    is $r->{rc}, 1, 'eval of an unknown flag -> exit 1';
    like $r->{err}, qr/404 FLAG_NOT_FOUND/, '... with the OFREP error code';
    $r = ok_run(tm(\%GW, 'flags', 'list'), 'flags list through the gateway');
    ok((grep { $_->{name} eq 'eval-me' } @{ $r->{json} }), 'gateway lists the flags');
    $r = ok_run(tm(\%GW, 'rules', 'get', 'eval-me'), 'rules get through the gateway (/targeting)');
    ok_run(tm(\%GW, 'segments', 'list'), 'segments list through the gateway');
    ok_run(tm(\%GW, 'validate'), 'validate through the gateway (/auth)');
    ok_run(tm('rules', 'delete', 'eval-me'), 'cleanup rule');
    ok_run(tm('flags', 'delete', 'eval-me'), 'cleanup flag');
    $ng->stop;
}

# --- export -> import into a fresh database ---
ok_run(tm('flags', 'create', 'search', '--description', 'new search'), 'one more flag');
$r = ok_run(tm('export'), 'export');
my $export = $r->{out};
my $ex = $r->{json};
is_deeply [ sort keys %$ex ], [qw(flags format rules segments version)], 'export document members';
is_deeply [ map { $_->{name} } @{ $ex->{flags} } ], [qw(new-checkout search)], 'exported flags';
is_deeply [ map { $_->{name} } @{ $ex->{segments} } ], [qw(brazil corp)], 'exported segments';
is_deeply $ex->{rules}, [ { flag_name => 'new-checkout', is_enabled => $T, rules => $DOC } ], 'exported rules';
is_deeply [ sort keys %{ $ex->{flags}[0] } ], [qw(client_visible description is_enabled name)], 'no ids or timestamps; client_visible always written';
spew("$dir/export.json", $export);

# a second database (and Redis db 1) with its own flags and targeting daemons
sub fresh {
    my $db = shift;
    $h->psql("CREATE DATABASE $db");
    my $url = $h->postgres;
    $url =~ s{/togglemaster$}{/$db};
    my %env = (DATABASE_URL => $url, REDIS_URL => $h->redis . '/' . shift, AUTH_SERVICE_URL => $auth);
    my ($h1, $f) = replica($h, 'flags', %env);
    my ($h2, $t) = replica($h, 'targeting', %env);
    return ({ TOGGLEMASTER_FLAGS_URL => $f, TOGGLEMASTER_TARGETING_URL => $t }, $h1, $h2);
}
my ($B, @hb) = fresh('tm_b', 1);
my %B = (env => $B);
$r = ok_run(tm(\%B, 'import', "$dir/export.json"), 'import into the fresh database');
like $r->{out}, qr/^segments: 2 created, 0 updated, 0 unchanged$/m, 'segments created';
like $r->{out}, qr/^flags: 2 created, 0 updated, 0 unchanged$/m, 'flags created';
like $r->{out}, qr/^rules: 1 created, 0 updated, 0 unchanged$/m, 'rules created';
$r = ok_run(tm(\%B, 'export'), 'export the fresh database');
is $r->{out}, $export, 'the same export, byte for byte';
my $stamps = sub { join ',', map { $_->{updated_at} } map { @{ tm(\%B, $_, 'list')->{json} } } qw(flags segments rules) };
my $st0 = $stamps->();
$r = ok_run(tm(\%B, 'import', "$dir/export.json"), 're-import');
like $r->{out}, qr/^segments: 0 created, 0 updated, 2 unchanged\nflags: 0 created, 0 updated, 2 unchanged\nrules: 0 created, 0 updated, 1 unchanged$/m,
    're-import changes nothing';
is $stamps->(), $st0, 're-import wrote nothing (updated_at unchanged)';
ok_run(tm(\%B, 'flags', 'disable', 'new-checkout'), 'drift: a flag disabled in B');
$r = ok_run(tm(\%B, 'import', "$dir/export.json"), 'import again');
like $r->{out}, qr/^updated flag "new-checkout"$/m, 'the drifted flag is updated';
like $r->{out}, qr/^flags: 0 created, 1 updated, 1 unchanged$/m, '... and only it';
is tm(\%B, 'export')->{out}, $export, 'export equal again';
$r = ok_run(tm({ env => { %$B, TOGGLEMASTER_API_KEY => undef } }, 'import', "$dir/export.json", '--dry-run'), 'import --dry-run needs no key');
is_deeply $r->{json}, $ex, '--dry-run prints the checked document';

# bad ToggleMaster files: nothing changes
my $st1 = $stamps->();
my $bad_tm = $J->decode($export);
push @{ $bad_tm->{flags} }, { name => 'late-flag', is_enabled => $T };
$bad_tm->{rules}[0]{rules}{strategies}[1]{constraints}[0]{operator} = 'NOPE';
for my $case (
    [ $bad_tm, 'a bad rule after good entries', qr/rules\[0\]\.rules\.strategies\[1\]\.constraints\[0\]\.operator: unknown operator "NOPE".*nothing was changed/ ],
    [ { flags => [ { name => 'a' }, { name => 'a' } ] }, 'a name twice', qr/flags\[1\]\.name: "a" appears twice/ ],
    [ { flags => [ { name => 'x y' } ] }, 'a bad name', qr/flags\[0\]\.name/ ],
    [ { flags => [ { name => 'x', colour => 'red' } ] }, 'an unknown field', qr/flags\[0\]: unknown field "colour"/ ],
    [ { format => 'other', flags => [] }, 'another format', qr/format: must be "togglemaster"/ ],
    [ { version => 2 }, 'another version', qr/version/ ],
    [ { segments => [ { name => 's', constraints => [ { contextName => 'ip', operator => 'IP_IN_CIDR', values => ['300.1.1.1'] } ] } ] },
      'a bad segment', qr/segments\[0\]: constraints\[0\]/ ],
    [ { features => [] }, 'an Unleash document', qr/use "tmctl import unleash FILE"/ ],
    [ '{"flags": [}', 'not JSON', qr/not valid JSON/ ],
) {
    my $x = tm(\%B, 'import', jfile('bad-import.json', $case->[0]));
    is $x->{rc}, 1, "import, $case->[1] -> exit 1";
    like $x->{err}, $case->[2], "import, $case->[1] -> message";
}
is tm(\%B, 'import', "$dir/nothing-here.json")->{rc}, 2, 'import of a missing file -> exit 2';
is tm(\%B, 'export')->{out}, $export, 'bad imports changed nothing';
is $stamps->(), $st1, 'bad imports wrote nothing (updated_at unchanged)';
$_->teardown for @hb;

# --- Unleash import into another fresh database ---
my ($C, @hc) = fresh('tm_c', 2);
my %C = (env => $C);
my $UF = 't/data/unleash-features.json';
$r = ok_run(tm(\%C, 'import', 'unleash', $UF), 'import unleash');
like $r->{out}, qr/^segments: 2 created, 0 updated, 0 unchanged\nflags: 4 created, 0 updated, 0 unchanged\nrules: 4 created, 0 updated, 0 unchanged$/m,
    'two segments, four flags, four rules created';
like $r->{err}, qr/warning: feature "new-checkout": control characters \(line breaks\) in the description became spaces/,
    'a warning for the multi-line description';

my %flags = map { $_->{name} => $_ } @{ tm(\%C, 'flags', 'list')->{json} };
is_deeply { map { $_ => [ $flags{$_}{is_enabled} ? 1 : 0, $flags{$_}{description} ] } keys %flags },
    { 'new-checkout' => [ 1, 'The v2 checkout flow. Owned by team payments.' ], 'checkout-upsell' => [ 1, 'Upsell panel on the new checkout' ],
      'legacy-search' => [ 0, '' ], 'maintenance-banner' => [ 1, '' ] }, 'flags: same names, enabled states and descriptions';
my %segs = map { $_->{name} => $_->{constraints} } @{ tm(\%C, 'segments', 'list')->{json} };
is_deeply \%segs, {
    'beta-testers' => [ { contextName => 'beta', operator => 'IN', values => ['true'] } ],
    'segment-2' => [ { contextName => 'remoteAddress', operator => 'IP_IN_CIDR', values => ['203.0.113.0/24'] } ],
}, 'segments: named by their Unleash name, or segment-<id>';
my %rules = map { $_->{flag_name} => $_ } @{ tm(\%C, 'rules', 'list')->{json} };
ok((!grep { !$_->{is_enabled} } values %rules), 'every rule enabled');
is_deeply $rules{'new-checkout'}{rules}, {
    strategies => [
        { name => 'flexibleRollout',
          constraints => [ { contextName => 'country', operator => 'IN', values => [ 'BR', 'PT' ] },
                           { contextName => 'appVersion', operator => 'SEMVER_GT', value => '2.3.0' } ],
          segments => ['beta-testers'],
          rollout => { percentage => 50, stickiness => 'default', groupId => 'new-checkout' },
          variants => [ { name => 'fast', weight => 700, weightType => 'variable', stickiness => 'default', payload => { type => 'string', value => 'fast-path' } },
                        { name => 'safe', weight => 300, weightType => 'variable', stickiness => 'default', payload => { type => 'json', value => '{"retries":3}' } } ] },
        { name => 'userWithId', constraints => [ { contextName => 'userId', operator => 'IN', values => [qw(alice bob carol)] } ] },
        { name => 'remoteAddress', constraints => [ { contextName => 'remoteAddress', operator => 'IP_IN_CIDR', values => [ '10.0.0.0/8', '192.168.1.7' ] } ] },
    ],
    variants => [
        { name => 'blue', weight => 500, weightType => 'variable', stickiness => 'default', payload => { type => 'string', value => '#00f' },
          overrides => [ { contextName => 'userId', values => ['alice'] } ] },
        { name => 'green', weight => 500, weightType => 'variable', stickiness => 'default', payload => { type => 'string', value => '#0f0' } },
    ],
}, 'new-checkout: flexibleRollout (rollout, stickiness, groupId) with constraints, segment and variants; userWithId and remoteAddress as constraints; flag variants with overrides';
is_deeply $rules{'checkout-upsell'}{rules}, {
    dependencies => [ { feature => 'new-checkout', enabled => $T, variants => ['fast'] } ],
    strategies => [
        { name => 'default',
          constraints => [ { contextName => 'currentTime', operator => 'DATE_AFTER', value => '2024-05-01T00:00:00.000Z' },
                           { contextName => 'email', operator => 'STR_ENDS_WITH', values => ['@corp.io'], inverted => $T, caseInsensitive => $T } ],
          segments => [ 'beta-testers', 'segment-2' ] },
        { name => 'gradualRolloutUserId', rollout => { percentage => 20, stickiness => 'userId', groupId => 'upsell' }, disabled => $T },
    ],
}, 'checkout-upsell: a dependency with variants, inverted case-insensitive constraint, two segments, a disabled gradualRolloutUserId';
is_deeply $rules{'legacy-search'}{rules}, {
    dependencies => [ { feature => 'new-checkout', enabled => $F } ],
    strategies => [ { name => 'flexibleRollout', constraints => [ { contextName => 'plan', operator => 'NUM_GTE', value => '3' } ],
                      rollout => { percentage => 25, stickiness => 'sessionId', groupId => 'legacy-search' } } ],
}, 'legacy-search: numeric rollout, sessionId stickiness, a dependency on the parent being off';
is_deeply $rules{'maintenance-banner'}{rules}, {
    variants => [ { name => 'banner', weight => 1000, weightType => 'variable', stickiness => 'default',
                    payload => { type => 'json', value => '{"text":"Maintenance at 22:00 UTC"}' } } ],
}, 'maintenance-banner: no strategies (on for everyone), one variant';
is $h->redis_cmd('SELECT', 0) // 'OK', 'OK', 'redis reachable';

my $cexport = tm(\%C, 'export')->{out};
my $cst = join ',', map { $_->{updated_at} } map { @{ tm(\%C, $_, 'list')->{json} } } qw(flags segments rules);
$r = ok_run(tm(\%C, 'import', 'unleash', $UF), 're-import unleash');
like $r->{out}, qr/^segments: 0 created, 0 updated, 2 unchanged\nflags: 0 created, 0 updated, 4 unchanged\nrules: 0 created, 0 updated, 4 unchanged$/m,
    're-import of the Unleash document is idempotent';
is join(',', map { $_->{updated_at} } map { @{ tm(\%C, $_, 'list')->{json} } } qw(flags segments rules)), $cst, 'nothing rewritten';
$r = ok_run(tm({ env => { %$C, TOGGLEMASTER_API_KEY => undef } }, 'import', 'unleash', $UF, '--dry-run'), 'import unleash --dry-run');
is $r->{json}{rules}[0]{flag_name}, 'new-checkout', '--dry-run prints the converted document';

# bad Unleash files: exit 1 with a message, nothing changed
my $u = $J->decode(slurp($UF));
my $mut = sub { my $code = shift; my $d = $J->decode($J->encode($u)); $code->($d); $d };
for my $case (
    [ $mut->(sub { $_[0]{features}[2]{strategies}[0]{name} = 'myCustomStrategy' }), 'a custom strategy',
      qr/features\[2\]\.strategies\[0\]\.name: strategy "myCustomStrategy" has no ToggleMaster equivalent/ ],
    [ $mut->(sub { $_[0]{features}[3]{name} = 'tilde~name' }), 'a name ToggleMaster does not accept',
      qr/features\[3\]\.name: "tilde~name" is not a ToggleMaster flag name/ ],
    [ $mut->(sub { $_[0]{features}[0]{strategies}[0]{parameters}{rollout} = 'half' }), 'a bad rollout',
      qr/features\[0\]\.strategies\[0\]\.parameters\.rollout: must be a number from 0 to 100/ ],
    [ $mut->(sub { $_[0]{features}[2]{dependencies}[0]{feature} = '' }), 'a bad dependency', qr/dependencies\[0\]\.feature/ ],
    [ $mut->(sub { push @{ $_[0]{features} }, $_[0]{features}[0] }), 'a feature twice', qr/features\[4\]\.name: "new-checkout" appears twice/ ],
    [ { version => 2, toggles => [] }, 'not a client-features document', qr/no "features" array/ ],
    [ '{"version": 2, "features": [', 'not JSON', qr/not valid JSON/ ],
) {
    my $x = tm(\%C, 'import', 'unleash', jfile('bad-unleash.json', $case->[0]));
    is $x->{rc}, 1, "import unleash, $case->[1] -> exit 1";
    like $x->{err}, $case->[2], "import unleash, $case->[1] -> message";
}
is tm(\%C, 'import', 'unleash', "$dir/none.json")->{rc}, 2, 'import unleash of a missing file -> exit 2';
is tm(\%C, 'export')->{out}, $cexport, 'bad Unleash files changed nothing';

# --skip-unknown drops custom strategies (with a warning)
my $custom = $mut->(sub {
    $_[0]{features}[2]{strategies}[0]{name} = 'myCustomStrategy';
    push @{ $_[0]{features}[0]{strategies} }, { name => 'myCustomStrategy', parameters => {}, constraints => [] };
});
$r = ok_run(tm(\%C, 'import', 'unleash', jfile('custom.json', $custom), '--skip-unknown'), 'import unleash --skip-unknown');
like $r->{err}, qr/strategy "myCustomStrategy" has no ToggleMaster equivalent: skipped/, 'skipped strategies are reported';
like $r->{out}, qr/^updated rule "legacy-search"$/m, 'legacy-search updated';
like $r->{out}, qr/^rules: 0 created, 1 updated, 3 unchanged$/m, 'new-checkout unchanged (its custom strategy was dropped)';
is_deeply tm(\%C, 'rules', 'get', 'legacy-search')->{json}{rules}{strategies}, [ { name => 'skipped', rollout => { percentage => 0 } } ],
    'a flag whose every strategy was skipped matches no one';

# What Unleash's clients evaluate as "never matches" is imported so, with a
# warning naming the flag: a constraint that does not compile is kept,
# marked "invalid"; a strategy naming a segment id the document lacks is
# disabled; addresses of an IP list that do not parse are dropped.
my $lenient = $mut->(sub {
    $_[0]{features}[0]{strategies}[0]{constraints}[1]{operator} = 'SEMVER_SOON';
    $_[0]{features}[1]{strategies}[0]{segments} = [ 1, 9 ];
    $_[0]{segments}[1]{constraints}[0]{values} = [ 'nope/99' ];
    $_[0]{features}[0]{strategies}[2]{parameters}{IPs} = '10.0.0.0/8, 10.bad, 192.168.1.7';
});
$r = ok_run(tm(\%C, 'import', 'unleash', jfile('lenient.json', $lenient)), 'import unleash of what Unleash evaluates as never matching');
like $r->{err}, qr/warning: feature "new-checkout": features\[0\]\.strategies\[0\]\.constraints\[1\]: operator: unknown operator "SEMVER_SOON".*never matches/,
    'unknown operator: a warning naming the flag';
like $r->{err}, qr/warning: feature "checkout-upsell": features\[1\]\.strategies\[0\]\.segments\[1\]: no segment with id 9.*never matches/,
    'unknown segment id: a warning naming the flag';
like $r->{err}, qr/warning: feature "new-checkout": .*"10\.bad" is not an address or CIDR: ignored/, 'a bad address in a list: ignored, with a warning';
like $r->{err}, qr/warning: segments\[1\]\.constraints\[0\]: values\[0\]: "nope\/99" is not an IPv4 or IPv6 address/, 'a segment\'s bad constraint: a warning';
my $nc = tm(\%C, 'rules', 'get', 'new-checkout')->{json}{rules}{strategies};
is_deeply $nc->[0]{constraints}[1], { contextName => 'appVersion', operator => 'SEMVER_SOON', value => '2.3.0',
    invalid => 'operator: unknown operator "SEMVER_SOON"; accepted: IN, NOT_IN, STR_{STARTS_WITH,ENDS_WITH,CONTAINS}, NUM_{EQ,LT,LTE,GT,GTE}, DATE_{BEFORE,AFTER}, SEMVER_{EQ,LT,LTE,GT,GTE}, REGEX, IP_IN_CIDR, IN_CIDR' },
    'stored as it came, marked "invalid" with the reason';
is_deeply $nc->[2]{constraints}[0]{values}, [ '10.0.0.0/8', '192.168.1.7' ], 'the address list without the bad one';
my $cu = tm(\%C, 'rules', 'get', 'checkout-upsell')->{json}{rules}{strategies}[0];
is_deeply [ $cu->{disabled}, $cu->{segments} ], [ $T, ['beta-testers'] ], 'the strategy with an unknown segment: disabled, the known segment kept';
is tm(\%C, 'segments', 'get', 'segment-2')->{json}{constraints}[0]{invalid}, 'values[0]: "nope/99" is not an IPv4 or IPv6 address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)',
    'the segment\'s constraint marked "invalid"';
# the admin API stays strict for rules written by hand
$r = tm(\%C, 'rules', 'set', 'legacy-search', jfile('strict.json', { strategies => [ { constraints => [ { contextName => 'v', operator => 'SEMVER_SOON', value => '1.0.0' } ] } ] }));
is $r->{rc}, 1, 'rules set with an unknown operator -> exit 1';
like $r->{err}, qr/strategies\[0\]\.constraints\[0\]\.operator: unknown operator "SEMVER_SOON"/, '... the operator named';
$_->teardown for @hc;

# --- hygiene ---
unlike $all_output, qr/\Q$KEY\E/, 'the API key never appears in any output';
unlike $all_output, qr/Sanitizer|runtime error:/, 'no sanitizer report from tmctl';

done_testing;
