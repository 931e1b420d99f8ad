#!/usr/bin/env perl
# tmctl and environments (docs/environments.md): env list/create/delete,
# --environment / TOGGLEMASTER_ENVIRONMENT on flags and rules, promote,
# per-environment export and import, keys with scope; usage errors exit 2
# and change nothing.
use strict; use warnings;
use Test::More;
use JSON::PP ();
use POSIX ();
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key);

my $h = TM::Harness->new;
my $M = 'master-test-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my $fl = $h->daemon('flags', AUTH_SERVICE_URL => $auth, TARGETING_SERVICE_URL => $tg);
my $BUILD = $ENV{TM_BUILD} || 'build';
my $TMCTL = "$BUILD/tmctl/tmctl";
my $KEY = new_key($h, $auth, $M, 'tmctl-env')->{key};
my %K = (Authorization => "Bearer $KEY");
my $J = $h->json;
my $dir = $h->dir;

sub slurp { my $p = shift; open my $f, '<', $p or return ''; local $/; my $s = <$f>; $s // '' }
sub spew { my ($p, $s) = @_; open my $f, '>', $p or die "$p: $!"; print $f $s; close $f; $p }
my %DIRECT = (TOGGLEMASTER_FLAGS_URL => $fl, TOGGLEMASTER_TARGETING_URL => $tg, TOGGLEMASTER_AUTH_URL => $auth,
              TOGGLEMASTER_URL => undef, TOGGLEMASTER_ENVIRONMENT => undef, TOGGLEMASTER_MASTER_KEY => undef);
sub tm {
    my $o = ref $_[0] eq 'HASH' ? shift : {};
    my %env = (%DIRECT, TOGGLEMASTER_API_KEY => $KEY, %{ $o->{env} || {} });
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        for my $k (keys %env) { if (defined $env{$k}) { $ENV{$k} = $env{$k} } else { delete $ENV{$k} } }
        open STDIN, '<', '/dev/null' or POSIX::_exit(126);
        open STDOUT, '>', "$dir/tm.out" or POSIX::_exit(126);
        open STDERR, '>', "$dir/tm.err" or POSIX::_exit(126);
        exec $TMCTL, @_ or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $r = { rc => $? >> 8, out => slurp("$dir/tm.out"), err => slurp("$dir/tm.err") };
    $r->{json} = eval { $J->decode($r->{out}) };
    return $r;
}
sub ok_run { my ($r, $name) = @_; is $r->{rc}, 0, "$name: exit 0" or diag "stderr: $r->{err}"; $r }
sub envs { join ',', map { $_->{name} } @{ $h->req(GET => "$fl/environments", \%K)->{json} } }

# --- env ---
my $r = ok_run(tm(qw(env list)), 'env list');
is_deeply [ map { $_->{name} } @{ $r->{json} } ], ['default'], 'lists the default';
$r = ok_run(tm(qw(env create staging)), 'env create staging');
is $r->{json}{name}, 'staging', 'prints the environment';
ok_run(tm(qw(env create production)), 'env create production');
$r = tm(qw(env create staging));
is $r->{rc}, 1, 'duplicate: exit 1';
like $r->{err}, qr/409/, 'the server\'s 409 shown';
for my $bad ([qw(env create all)], [ 'env', 'create', 'a b' ], [qw(env create)], [qw(env rename x)],
             [qw(env delete staging --from x)]) {
    is tm(@$bad)->{rc}, 2, "usage: tmctl @$bad -> 2";
}
is envs(), 'default,production,staging', 'usage errors changed nothing';

# --- --environment on flags and rules ---
ok_run(tm(qw(flags create checkout --description v2)), 'flag created (default)');
$r = ok_run(tm(qw(flags enable checkout --environment staging)), 'enable in staging');
ok $r->{json}{is_enabled}, 'on in staging';
ok !ok_run(tm(qw(flags get checkout)), 'get default')->{json}{is_enabled}, 'off in default';
$r = ok_run(tm({ env => { TOGGLEMASTER_ENVIRONMENT => 'staging' } }, qw(flags get checkout)), 'get via TOGGLEMASTER_ENVIRONMENT');
ok $r->{json}{is_enabled}, 'TOGGLEMASTER_ENVIRONMENT picks staging';
spew("$dir/rule.json", '{"type":"PERCENTAGE","value":30}');
ok_run(tm('rules', 'set', 'checkout', "$dir/rule.json", '--environment', 'staging'), 'rules set in staging');
is $h->req(GET => "$tg/rules/checkout?environment=staging", \%K)->{json}{rules}{value}, 30, 'rule stored in staging';
is $h->req(GET => "$tg/rules/checkout", \%K)->{status}, 404, 'not in default';
$r = tm(qw(flags list --environment nope));
is $r->{rc}, 1, 'unknown environment: exit 1';
like $r->{err}, qr/404.*no environment "nope"/, 'the 404 shown';
is tm(qw(flags list --environment), 'a b')->{rc}, 2, 'bad environment name: usage';

# --- promote ---
$r = ok_run(tm(qw(promote checkout --from staging --to production)), 'promote');
ok $r->{json}{flag}{is_enabled}, 'state promoted';
is $r->{json}{rule}{rules}{value}, 30, 'rule promoted';
is $h->req(GET => "$tg/rules/checkout?environment=production", \%K)->{json}{rules}{value}, 30, 'production rule';
is tm(qw(promote checkout --from staging))->{rc}, 2, 'promote without --to: usage';
is tm(qw(promote checkout --from staging --to all))->{rc}, 2, 'promote to all: usage';
$r = tm(qw(promote checkout --from staging --to nope));
is $r->{rc}, 1, 'promote to an unknown environment: exit 1';

# --- per-environment export / import ---
$r = ok_run(tm(qw(export --environment staging)), 'export staging');
my $ex = $r->{json};
is_deeply [ map { [ $_->{name}, $_->{is_enabled} ? 1 : 0 ] } @{ $ex->{flags} } ], [ [ 'checkout', 1 ] ], 'staging state exported';
is_deeply [ map { $_->{flag_name} } @{ $ex->{rules} } ], ['checkout'], 'staging rules exported';
my $dflt = ok_run(tm(qw(export)), 'export default')->{json};
ok !$dflt->{flags}[0]{is_enabled} && !@{ $dflt->{rules} }, 'default export: off, no rules';
ok_run(tm(qw(env create qa)), 'env create qa');
spew("$dir/staging.json", $J->encode($ex));
$r = ok_run(tm('import', "$dir/staging.json", '--environment', 'qa'), 'import into qa');
like $r->{out}, qr/flags: 0 created, 1 updated/, 'the flag exists: its qa state updated';
like $r->{out}, qr/rules: 1 created/, 'rule created in qa';
ok $h->req(GET => "$fl/flags/checkout?environment=qa", \%K)->{json}{is_enabled}, 'qa state on';
is $h->req(GET => "$tg/rules/checkout?environment=qa", \%K)->{json}{rules}{value}, 30, 'qa rule';
ok !$h->req(GET => "$fl/flags/checkout", \%K)->{json}{is_enabled}, 'default untouched by the import';
$r = ok_run(tm('import', "$dir/staging.json", '--environment', 'qa'), 're-import');
like $r->{out}, qr/flags: 0 created, 0 updated, 1 unchanged/, 're-import changes nothing';

# --- client_visible in export / import ---
my ($T, $F) = (JSON::PP::true, JSON::PP::false);
sub visible { $h->req(GET => "$fl/flags/checkout", \%K)->{json}{client_visible} ? 1 : 0 }
ok exists $dflt->{flags}[0]{client_visible} && !$dflt->{flags}[0]{client_visible},
   'export writes client_visible even while false';
is $h->req(PUT => "$fl/flags/checkout", \%K, { client_visible => $T })->{status}, 200, 'made client_visible';
$r = ok_run(tm(qw(export --environment staging)), 'export after client_visible');
ok $r->{json}{flags}[0]{client_visible}, 'client_visible true exported';
my $vis = $r->{json};
is $h->req(PUT => "$fl/flags/checkout", \%K, { client_visible => $F })->{status}, 200, 'hidden again';
spew("$dir/vis.json", $J->encode($vis));
$r = ok_run(tm('import', "$dir/vis.json", '--environment', 'staging'), 'import client_visible');
like $r->{out}, qr/flags: 0 created, 1 updated/, 'only client_visible differed: updated';
is visible(), 1, 'import made the flag client_visible';
$r = ok_run(tm('import', "$dir/vis.json", '--environment', 'staging'), 're-import client_visible');
like $r->{out}, qr/flags: 0 created, 0 updated, 1 unchanged/, 're-import with client_visible changes nothing';
my $old = $J->decode($J->encode($vis));
delete $_->{client_visible} for @{ $old->{flags} };
spew("$dir/old.json", $J->encode($old));
$r = ok_run(tm('import', "$dir/old.json", '--environment', 'staging'), 'a file without client_visible imports');
like $r->{out}, qr/flags: 0 created, 0 updated, 1 unchanged/, 'a file without client_visible: unchanged';
is visible(), 1, 'a file without client_visible leaves it as it was';
$vis->{flags}[0]{client_visible} = 'yes';
spew("$dir/bad.json", $J->encode($vis));
$r = tm('import', "$dir/bad.json", '--environment', 'staging');
isnt $r->{rc}, 0, 'client_visible not a boolean: refused';
like $r->{err}, qr/client_visible: must be true or false.*nothing was changed/, 'says why';
$vis->{flags}[0]{client_visible} = $F;
spew("$dir/hide.json", $J->encode($vis));
$r = ok_run(tm('import', "$dir/hide.json", '--environment', 'staging'), 'import client_visible false');
like $r->{out}, qr/flags: 0 created, 1 updated/, 'false differs: updated';
is visible(), 0, 'import hid the flag';
$r = ok_run(tm('import', "$dir/hide.json", '--environment', 'staging'), 're-import false');
like $r->{out}, qr/flags: 0 created, 0 updated, 1 unchanged/, 'false against a server that omits it: unchanged';

# --- env delete ---
$r = tm(qw(env delete qa));
is $r->{rc}, 1, 'non-empty without --confirm: exit 1';
like $r->{err}, qr/409.*confirm/, 'the 409 says how';
like envs(), qr/qa/, 'still there';
$r = ok_run(tm(qw(env delete qa --confirm)), 'env delete --confirm');
like $r->{out}, qr/deleted environment "qa"/, 'says so';
is envs(), 'default,production,staging', 'gone';
is tm(qw(env delete default))->{rc}, 1, 'the default cannot be deleted';

# --- keys ---
my %MK = (env => { TOGGLEMASTER_MASTER_KEY => $M });
$r = ok_run(tm(\%MK, qw(keys create web --scope client --environment staging)), 'keys create client');
is_deeply [ @{ $r->{json} }{qw(scope environment)} ], [qw(client staging)], 'scope and environment';
like $r->{json}{key}, qr/^tm_key_/, 'the key is shown once';
my $id = $r->{json}{id};
$r = ok_run(tm(\%MK, qw(keys list)), 'keys list');
my ($web) = grep { $_->{name} eq 'web' } @{ $r->{json} };
is_deeply [ @$web{qw(scope environment)} ], [qw(client staging)], 'listed with scope';
unlike $r->{out}, qr/tm_key_/, 'no key in the list';
is tm(qw(keys list))->{rc}, 2, 'keys without the master key: usage';
$r = tm(\%MK, qw(keys create x --scope server));
is $r->{rc}, 1, 'server key without environment: exit 1 (400)';
like $r->{err}, qr/400.*environment/, 'the 400 names the environment';
is tm(\%MK, qw(keys revoke abc))->{rc}, 2, 'revoke a non-number: usage';
ok_run(tm(\%MK, 'keys', 'revoke', $id), 'keys revoke');
is $h->psql("SELECT is_active FROM api_keys WHERE id = $id"), 'f', 'revoked';

$h->teardown;
done_testing;
