#!/usr/bin/env perl
# Unleash's client specification (npm @unleash/client-specification 6.1.0,
# installed by scripts/deps.sh into build/test-deps): for each spec file,
# its `state` goes through `tmctl import unleash` into real daemons
# (PostgreSQL, Redis), and every case is evaluated through OFREP at nginx
# with the module, comparing the flag's on/off (metadata.enabled) and, for
# variant cases, the variant and its payload. Unleash's "disabled" variant
# is OFREP's "on"/"off" (no variant of the rule), see docs/rules.md.
#
# The cases we deliberately do not share are listed in docs/rules.md
# ("Unleash's client specification"); this test reads that table: a listed
# case must fail (else the table is stale), any other case must pass.
use strict; use warnings;
use Test::More;
use POSIX ();
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key);

my $VERSION = '6.1.0';
my $SPEC = "$TM::Harness::ROOT/build/test-deps/node_modules/\@unleash/client-specification";
plan skip_all => 'nginx module not built' unless -f $TM::Nginx::MODULE;
unless (-f "$SPEC/package.json") {
    fail("the specification is installed ($SPEC): run scripts/deps.sh (make test does)");
    done_testing;
    exit;
}

my $h = TM::Harness->new;
my $J = $h->json;
my $T = JSON::PP::true;
my $M = 'master-spec-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $fl = $h->daemon('flags', AUTH_SERVICE_URL => $auth, TM_UNICODE_NAMES => 1);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth, TM_UNICODE_NAMES => 1);
my $KEY = new_key($h, $auth, $M, 'unleash-spec')->{key};
my %AUTH = (Authorization => "Bearer $KEY");
my $ng = TM::Nginx->new($h)->start;
my $dir = $h->dir;
my $TMCTL = ($ENV{TM_BUILD} || 'build') . '/tmctl/tmctl';

sub slurp { my $p = shift; open my $f, '<', $p or die "$p: $!"; local $/; my $s = <$f>; $s }

is $J->decode(slurp("$SPEC/package.json"))->{version}, $VERSION, "specification version $VERSION";

# Documented exceptions: rows "| `file` | case description | reason |" of
# the table in docs/rules.md's section "Unleash's client specification".
my %EXCEPTION;
{
    my $doc = slurp("$TM::Harness::ROOT/docs/rules.md");
    my ($table) = $doc =~ /^## Unleash's client specification\n(.*?)(?=^#|\z)/ms;
    ok defined $table, "docs/rules.md has the section \"Unleash's client specification\"";
    $EXCEPTION{"$1\t$2"} = 1 while ($table // '') =~ /^\| `([^`]+)` \| (.+?) \| .+ \|$/mg;
}

# tmctl import unleash FILE against the daemons; {rc, out, err}.
sub import_state {
    my $file = shift;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $ENV{TOGGLEMASTER_FLAGS_URL} = $fl;
        $ENV{TOGGLEMASTER_TARGETING_URL} = $tg;
        $ENV{TOGGLEMASTER_AUTH_URL} = $auth;
        $ENV{TOGGLEMASTER_API_KEY} = $KEY;
        delete @ENV{qw(TOGGLEMASTER_URL TOGGLEMASTER_EVAL_URL)};
        open STDOUT, '>', "$dir/import.out" or POSIX::_exit(126);
        open STDERR, '>', "$dir/import.err" or POSIX::_exit(126);
        exec $TMCTL, 'import', 'unleash', $file or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    return { rc => $? >> 8, out => slurp("$dir/import.out"), err => slurp("$dir/import.err") };
}

sub path_name { my $b = shift; $b =~ s/([^A-Za-z0-9_.~:-])/sprintf '%%%02X', ord $1/ge; $b }

# Everything the previous file imported goes: rules, flags, then segments.
sub wipe {
    for ([ "$tg/rules", 'flag_name' ], [ "$fl/flags", 'name' ], [ "$tg/segments", 'name' ]) {
        my ($url, $key) = @$_;
        my $list = $h->req(GET => $url, \%AUTH)->{json} || [];
        for my $row (@$list) {
            is $h->req(DELETE => "$url/" . path_name($row->{$key}), \%AUTH)->{status}, 204,
                "DELETE $url/" . path_name($row->{$key});
        }
    }
}

# nginx has applied every change before this one: a marker flag it sees.
my $marker = 0;
sub sync_edge {
    my $name = 'spec-sync-' . ++$marker;
    $h->req(POST => "$fl/flags", \%AUTH, { name => $name, is_enabled => $T })->{status} == 201 or die "marker flag";
    my $ok = $h->wait_until(10, sub { $h->req(POST => $ng->url("/ofrep/v1/evaluate/flags/$name"), {}, { context => {} })->{status} == 200 });
    $h->req(DELETE => "$fl/flags/$name", \%AUTH);
    return $ok;
}

sub ofrep {
    my ($flag, $context) = @_;
    return $h->req(POST => $ng->url('/ofrep/v1/evaluate/flags/' . path_name($flag)), {}, { context => $context || {} });
}

# Unleash's expected payload against OFREP's typed value.
sub same_payload {
    my ($want, $got) = @_;
    return 1 unless $want;
    my ($type, $v) = @$want{qw(type value)};
    return $type eq 'json' ? $J->encode($J->decode($v)) eq $J->encode($got)
         : $type eq 'number' ? defined $got && !ref $got && $got == $v
         : defined $got && !ref $got && $got eq $v;
}

# 1 if the OFREP answer r is what the case expects; else 0 and why.
sub check_case {
    my ($case, $r, $variant) = @_;
    my $want = $case->{expectedResult};
    my $j = $r->{json} || {};
    my $enabled = $r->{status} == 200 ? ($j->{metadata}{enabled} ? 1 : 0)
                : ($j->{errorCode} // '') eq 'FLAG_NOT_FOUND' ? 0 : undef;
    return (0, "status $r->{status}: $r->{content}") unless defined $enabled;
    return ($enabled == ($want ? 1 : 0), "enabled $enabled") unless $variant;
    my $feature = $want->{feature_enabled} // $want->{enabled};
    return (0, "enabled $enabled, expected " . ($feature ? 1 : 0)) if defined $feature && $enabled != ($feature ? 1 : 0);
    my $got = $j->{variant} // '';
    if ($want->{name} eq 'disabled') {
        return (($got eq 'on' || $got eq 'off' || $got eq ''), "variant \"$got\"");
    }
    return (0, "variant \"$got\"") unless $got eq $want->{name};
    return (same_payload($want->{payload}, $j->{value}), 'payload ' . $J->encode($j->{value}));
}

my ($total, $pass, $excepted) = (0, 0, 0);
our $TODO;
my @files = @{ $J->decode(slurp("$SPEC/specifications/index.json")) };
is scalar @files, 22, 'the specification has 22 files';
for my $file (@files) {
    my $spec = $J->decode(slurp("$SPEC/specifications/$file"));
    wipe();
    my $state = "$dir/state.json";
    open my $f, '>', $state or die; print $f $J->encode($spec->{state}); close $f;
    my $imp = import_state($state);
    is $imp->{rc}, 0, "$file: tmctl import unleash" or diag $imp->{err};
    note "$file: $_" for grep { /warning/ } split /\n/, $imp->{err};
    ok sync_edge(), "$file: nginx caught up";
    my @cases = ((map { [ $_, 0 ] } @{ $spec->{tests} || [] }), (map { [ $_, 1 ] } @{ $spec->{variantTests} || [] }));
    for (@cases) {
        my ($case, $variant) = @$_;
        $total++;
        my ($ok, $why) = check_case($case, ofrep($case->{toggleName}, $case->{context}), $variant);
        my $name = "$file: $case->{description}";
        if ($EXCEPTION{"$file\t$case->{description}"}) {
            $excepted++;
            ok !$ok, "$name (documented exception: still fails)";
        } else {
            $pass++ if $ok;
            ok $ok, $name or diag "$why; context " . $J->encode($case->{context});
        }
    }
}
is $total, 279, 'the specification has 279 cases';

# The admin API stays strict for rules written by hand: a constraint that
# does not compile is a 400 that changes nothing, unless it says it is
# "invalid" (what an import keeps), and then it never matches at the edge.
{
    wipe();
    is $h->req(POST => "$fl/flags", \%AUTH, { name => 'strict', is_enabled => $T })->{status}, 201, 'flag for the strict rules';
    my $bad = { contextName => 'v', operator => 'SEMVER_SOON', value => '1.0.0' };
    my $r = $h->req(POST => "$tg/rules", \%AUTH, { flag_name => 'strict', rules => { strategies => [ { constraints => [ $bad ] } ] } });
    is $r->{status}, 400, 'unknown operator written by hand -> 400';
    like $r->{json}{error} // '', qr/strategies\[0\]\.constraints\[0\]\.operator: unknown operator "SEMVER_SOON"/, '... naming it';
    is $h->req(GET => "$tg/rules/strict", \%AUTH)->{status}, 404, '... and nothing stored';
    $r = $h->req(POST => "$tg/rules", \%AUTH, { flag_name => 'strict', rules => { strategies => [
        { constraints => [ { %$bad, inverted => $T, invalid => 'operator: unknown operator' } ] },
        { constraints => [ { contextName => 'plan', operator => 'IN', values => ['pro'] } ] } ] } });
    is $r->{status}, 201, 'the same marked "invalid" -> 201';
    ok sync_edge(), 'nginx caught up';
    is ofrep('strict', { v => '1.0.0' })->{json}{value}, JSON::PP::false, 'the invalid constraint never matches, inverted or not';
    is ofrep('strict', { plan => 'pro' })->{json}{value}, $T, 'the next strategy still does';
    wipe();
}

# Unleash's UTF-8 names, beyond OFREP: the daemons' paths (percent-encoded),
# tmctl, and the module's bulk answer.
{
    my $name = "Feature.UTF-8.Hell\xc3\xb8_W\xc3\xb8rld";
    is $h->req(POST => "$fl/flags", \%AUTH, qq({"name":"$name","is_enabled":true}))->{status}, 201, 'UTF-8 name created';
    my $r = $h->req(GET => "$fl/flags/" . path_name($name), \%AUTH);
    is_deeply [ $r->{status}, $r->{json}{name} ], [ 200, $name ], 'GET by its percent-encoded name';
    is $h->req(PUT => "$fl/flags/" . path_name($name), \%AUTH, { description => 'd' })->{status}, 200, 'PUT by it';
    is $h->req(GET => "$fl/flags/Feature.UTF-8.Hell%C3%B8%20x", \%AUTH)->{status}, 400, 'a space is still no name';
    is $h->req(GET => "$fl/flags/Feature.UTF-8.Hell%C3", \%AUTH)->{status}, 400, 'broken UTF-8 is no name';
    my $pid = fork // die;
    if (!$pid) {
        @ENV{qw(TOGGLEMASTER_FLAGS_URL TOGGLEMASTER_API_KEY)} = ($fl, $KEY);
        open STDOUT, '>', "$dir/get.out"; open STDERR, '>', "$dir/get.err";
        exec $TMCTL, 'flags', 'get', $name or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    is $? >> 8, 0, 'tmctl flags get with a UTF-8 name';
    is eval { $J->decode(slurp("$dir/get.out"))->{description} }, 'd', '... finds it';
    ok sync_edge(), 'nginx caught up';
    $r = $h->req(POST => $ng->url('/ofrep/v1/evaluate/flags'), {}, { context => {} });
    ok((grep { $_->{key} eq $name && $_->{value} } @{ $r->{json}{flags} || [] }), 'OFREP bulk carries it');
    is $h->req(DELETE => "$fl/flags/" . path_name($name), \%AUTH)->{status}, 204, 'DELETE by it';
}
diag "unleash spec: $pass/$total cases pass, $excepted documented exceptions";

done_testing;
