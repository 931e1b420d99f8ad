#!/usr/bin/env perl
# Bulk admin work through the gateway (nginx-conf/dev.conf as `make run`
# starts it) and the brute-force limit: requests with a valid API key are
# never refused by it, so `tmctl import` of 1,000 flags with rules lands
# whole; a flood with a wrong or missing key from one address still gets
# 429. Then tmctl against limits it cannot avoid (an nginx in front of the
# same daemons): it waits as Retry-After says and backs off with jitter on
# 503, and an import stopped anyway (retries exhausted, Ctrl-C) says what
# it changed: exactly the objects that are on the server.
use strict; use warnings;
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep time);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Stack;

my $h = TM::Harness->new;
my $s = TM::Stack->new(master_key => 'imp-master');
plan skip_all => 'the nginx module is not built' unless -s $s->dir . '/nginx.pid';
ok $s->started, 'run.sh start' or diag $s->output;
my $J = $h->json;
my $dir = $h->dir;
my $G = $s->url('INGRESS');
my $TMCTL = ($ENV{TM_BUILD} || 'build') . '/tmctl/tmctl';

my $key = $h->req(POST => "$G/auth/admin/keys", { Authorization => 'Bearer imp-master' }, { name => 'imp' })->{json}{key};
ok $key, 'an API key through the gateway';
my %K = (Authorization => "Bearer $key");
ok $h->wait_until(10, sub { $h->req(GET => "$G/flags/flags", \%K)->{status} == 200 }), 'the gateway knows the key';

sub slurp { my $p = shift; open my $f, '<', $p or return ''; local $/; my $x = <$f>; $x // '' }
sub spew { my ($p, $x) = @_; open my $f, '>', $p or die "$p: $!"; print $f $x; close $f; $p }

# Starts tmctl with env (undef removes a variable); returns its pid. Output
# goes to $dir/<tag>.out and .err.
sub tm_start {
    my ($tag, $env, @args) = @_;
    my %env = (TOGGLEMASTER_API_KEY => $key, TOGGLEMASTER_FLAGS_URL => undef, TOGGLEMASTER_TARGETING_URL => undef,
               TOGGLEMASTER_AUTH_URL => undef, TOGGLEMASTER_EVAL_URL => undef, TOGGLEMASTER_URL => $G, %$env);
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        for my $k (keys %env) {
            if (defined $env{$k}) { $ENV{$k} = $env{$k} } else { delete $ENV{$k} }
        }
        open STDIN, '<', '/dev/null' or POSIX::_exit(126);
        open STDOUT, '>', "$dir/$tag.out" or POSIX::_exit(126);
        open STDERR, '>', "$dir/$tag.err" or POSIX::_exit(126);
        exec $TMCTL, @args or POSIX::_exit(127);
    }
    return $pid;
}
sub tm_wait {
    my ($tag, $pid) = @_;
    waitpid $pid, 0;
    return { rc => $? >> 8, out => slurp("$dir/$tag.out"), err => slurp("$dir/$tag.err") };
}
sub tm { my ($tag, $env, @args) = @_; tm_wait($tag, tm_start($tag, $env, @args)) }

# An export document of n flags named <prefix>-NNNN, each with a rule.
sub doc {
    my ($prefix, $n) = @_;
    my (@flags, @rules);
    for my $i (0 .. $n - 1) {
        my $name = sprintf '%s-%04d', $prefix, $i;
        push @flags, { name => $name, description => "flag $i", is_enabled => JSON::PP::true };
        my $rule = $i % 3 == 0 ? { type => 'PERCENTAGE', value => $i % 101 }
                 : $i % 3 == 1 ? { type => 'USER_LIST', values => [ 'alice', "u$i" ] }
                 : { strategies => [ { constraints => [ { contextName => 'country', operator => 'IN', values => ['BR'] } ] } ] };
        push @rules, { flag_name => $name, is_enabled => JSON::PP::true, rules => $rule };
    }
    return { format => 'togglemaster', version => 1, flags => \@flags, segments => [], rules => \@rules };
}

# The server's flags (and rules) whose names start with prefix.
sub flags_named { my $p = shift; [ sort map { $_->{name} } grep { index($_->{name}, $p) == 0 } @{ $h->req(GET => "$G/flags/flags", \%K)->{json} || [] } ] }
sub rules_named { my $p = shift; return +{ map { $_->{flag_name} => $_ } grep { index($_->{flag_name}, $p) == 0 } @{ $h->req(GET => "$G/targeting/rules", \%K)->{json} || [] } } }

# --- 1,000 flags with rules through the gateway ---
my $doc = doc('bulk', 1000);
spew("$dir/bulk.json", $J->encode($doc));
my $t0 = time;
my $r = tm('bulk', {}, 'import', "$dir/bulk.json");
my $secs = time - $t0;
is $r->{rc}, 0, 'tmctl import of 1,000 flags with rules through the gateway: exit 0' or diag substr($r->{err}, 0, 2000);
like $r->{out}, qr/^flags: 1000 created, 0 updated, 0 unchanged$/m, '... 1000 flags created';
like $r->{out}, qr/^rules: 1000 created, 0 updated, 0 unchanged$/m, '... 1000 rules created';
unlike $r->{err}, qr/429|retrying/, '... never refused by the rate limit (no retry)';
diag sprintf 'imported 1,000 flags + 1,000 rules through the gateway in %.1f s', $secs;
my @want = map { $_->{name} } @{ $doc->{flags} };
is_deeply flags_named('bulk-'), \@want, 'all 1,000 flags are on the server';
my $rules = rules_named('bulk-');
is scalar(keys %$rules), 1000, 'all 1,000 rules are on the server';
my @differ = grep { $J->encode($rules->{ $_->{flag_name} }{rules} // {}) ne $J->encode($_->{rules}) } @{ $doc->{rules} };
is scalar(@differ), 0, '... each as imported' or diag $J->encode($differ[0]);
# live at the edge: USER_LIST flags are on for alice and off for bob
ok $h->wait_until(10, sub { ($h->req(GET => "$G/evaluate/evaluate?user_id=alice&flag_name=bulk-0997", \%K)->{json}{result} // 0) == 1 }),
    'the last flags evaluate at the edge';
is $h->req(GET => "$G/evaluate/evaluate?user_id=bob&flag_name=bulk-0997", \%K)->{json}{result}, JSON::PP::false, '... as their rule says';
$r = tm('again', {}, 'import', "$dir/bulk.json");
is $r->{rc}, 0, 'the same import again: exit 0';
like $r->{out}, qr/^flags: 0 created, 0 updated, 1000 unchanged$/m, '... changes nothing';

# --- a flood with a wrong or missing key from one address still gets 429 ---
for my $case (['a wrong key', { Authorization => 'Bearer tm_key_guess' }], ['no key', {}]) {
    my ($what, $hdr) = @$case;
    sleep 3;   # the limiter refills at 20 r/s
    my %seen;
    $seen{ $h->req(GET => "$G/flags/flags", $hdr)->{status} }++ for 1 .. 300;
    ok(($seen{429} // 0) >= 100, "300 requests with $what: rate limited (" . join(', ', map { "$_ x $seen{$_}" } sort keys %seen) . ')');
    ok !grep({ $_ != 401 && $_ != 429 } keys %seen), '... only 401 and 429';
    $r = $h->req(GET => "$G/targeting/rules", $hdr);
    is $r->{status}, 429, "... the same address right after: 429 on /targeting too";
    like $r->{json}{error}, qr/too many requests/, '... a JSON error';
    # the same address with a valid key is served meanwhile
    my %ok;
    $ok{ $h->req(GET => "$G/flags/flags/bulk-0001", \%K)->{status} }++ for 1 .. 100;
    is_deeply \%ok, { 200 => 100 }, "... while requests with a valid key from it are all served";
}
# a revoked key is a wrong key
{
    my $A = $s->url('AUTH');
    my $k2 = $h->req(POST => "$A/admin/keys", { Authorization => 'Bearer imp-master' }, { name => 'revoked' })->{json};
    my %K2 = (Authorization => "Bearer $k2->{key}");
    ok $h->wait_until(10, sub { $h->req(GET => "$G/flags/flags/bulk-0001", \%K2)->{status} == 200 }), 'a second key works at the gateway';
    is $h->req(DELETE => "$A/admin/keys/$k2->{id}", { Authorization => 'Bearer imp-master' })->{status}, 204, '... revoked';
    ok $h->wait_until(10, sub { $h->req(GET => "$G/flags/flags/bulk-0001", \%K2)->{status} != 200 }), '... refused at the gateway';
    sleep 3;
    my %seen;
    $seen{ $h->req(GET => "$G/flags/flags", \%K2)->{status} }++ for 1 .. 300;
    ok(($seen{429} // 0) >= 100, '300 requests with the revoked key: rate limited (' . join(', ', map { "$_ x $seen{$_}" } sort keys %seen) . ')');
}

# the master key is checked by auth, not at the edge: /auth/admin/ counts
# every request, a valid API key in place of the master key included
my %seen;
$seen{ $h->req(POST => "$G/auth/admin/keys", \%K, { name => 'x' })->{status} }++ for 1 .. 300;
ok(($seen{429} // 0) >= 100, 'guessing the master key with a valid API key: rate limited (' . join(', ', map { "$_ x $seen{$_}" } sort keys %seen) . ')');
ok !grep({ $_ != 403 && $_ != 429 } keys %seen), '... only 403 and 429';

# --- tmctl against limits it cannot avoid ---
my ($fp, $tp) = ($s->port('FLAGS'), $s->port('TARGETING'));
my $ng = TM::Nginx->new($h, redis => 0, http => <<'HTTP', server => <<"SERVER");
    limit_req_zone \$binary_remote_addr zone=steady:1m rate=5r/s;
    limit_req_zone \$binary_remote_addr zone=drained:1m rate=1r/s;
    limit_req_status 429;
HTTP
        location /steady/fl/ { limit_req zone=steady burst=5 nodelay; add_header Retry-After 1 always; proxy_pass http://127.0.0.1:$fp/; }
        location /steady/tg/ { limit_req zone=steady burst=5 nodelay; add_header Retry-After 1 always; proxy_pass http://127.0.0.1:$tp/; }
        location /drained/fl/ { limit_req zone=drained burst=8 nodelay; add_header Retry-After 1 always; proxy_pass http://127.0.0.1:$fp/; }
        location /drained/tg/ { limit_req zone=drained burst=8 nodelay; add_header Retry-After 1 always; proxy_pass http://127.0.0.1:$tp/; }
        location /down/ { return 503 '{"error":"the database is away"}'; }
SERVER
$ng->start;
my $N = $ng->url('');
sub via { my $zone = shift; (TOGGLEMASTER_FLAGS_URL => "$N/$zone/fl", TOGGLEMASTER_TARGETING_URL => "$N/$zone/tg") }

# 429 with Retry-After: 1 -> every wait at least 1 s, and everything lands
spew("$dir/steady.json", $J->encode(doc('steady', 10)));
$r = tm('steady', { via('steady') }, 'import', "$dir/steady.json");
is $r->{rc}, 0, 'import through a limit of 5 r/s: exit 0' or diag $r->{err};
my @waits = $r->{err} =~ /: 429, retrying in ([\d.]+) s \(\d+ of 6\)/g;
ok @waits, 'tmctl met 429 and retried (' . scalar(@waits) . ' times)' or diag $r->{err};
ok !(grep { $_ < 1 || $_ > 1.5 } @waits), "each wait is Retry-After (1 s) plus up to half of it: @waits";
is scalar @{ flags_named('steady-') }, 10, '... all 10 flags landed';
is scalar(keys %{ rules_named('steady-') }), 10, '... and their rules';

# 503 without Retry-After: exponential backoff with jitter, then the answer
$r = tm('down', { TOGGLEMASTER_FLAGS_URL => "$N/down" }, 'flags', 'list', '--retries', '3');
is $r->{rc}, 1, 'a service answering 503: exit 1 once the retries are spent';
@waits = $r->{err} =~ /: 503, retrying in ([\d.]+) s/g;
is scalar(@waits), 3, '... after 3 retries' or diag $r->{err};
ok $waits[0] >= 0.5 && $waits[0] <= 0.75 && $waits[1] >= 1 && $waits[1] <= 1.5 && $waits[2] >= 2 && $waits[2] <= 3,
    "... waiting 0.5, 1, 2 s, each plus up to half: @waits";
like $r->{err}, qr/503 the database is away/, "... and says the server's last answer";
$r = tm('down0', { TOGGLEMASTER_FLAGS_URL => "$N/down" }, 'flags', 'list', '--retries', '0');
unlike $r->{err}, qr/retrying/, '--retries 0: no retry';

# an import stopped by a 429 it may not retry says what it changed
spew("$dir/drained.json", $J->encode(doc('drained', 10)));
$r = tm('drained', { via('drained') }, 'import', "$dir/drained.json", '--retries', '0');
is $r->{rc}, 1, 'import meeting 429 with --retries 0: exit 1';
my @created = $r->{out} =~ /^created flag "([^"]+)"$/mg;
is_deeply flags_named('drained-'), [ sort @created ], 'the flags it printed as created are exactly those on the server ('
    . scalar(@created) . ')';
ok @created >= 1 && @created < 10, '... some, not all';
my $at = sprintf 'drained-%04d', scalar @created;
like $r->{err}, qr/^tmctl: import stopped at flag "\Q$at\E": it is unchanged$/m, '... names the flag it stopped at';
like $r->{err}, qr/^tmctl: changed before that \(each printed above\): segments 0 created, 0 updated; flags ${\ scalar @created} created, 0 updated; rules 0 created, 0 updated$/m,
    '... counts what it changed';
like $r->{err}, qr/^tmctl: not reached: ${\ (9 - @created)} flags, 10 rules after it; the same import again applies what is left/m,
    '... and what it did not reach';

# Ctrl-C while waiting for a retry: it stops there and says what it changed
sleep 1.5;
my $pid = tm_start('sigint', { via('drained') }, 'import', "$dir/drained.json");
ok $h->wait_until(20, sub { slurp("$dir/sigint.err") =~ /^tmctl: (PUT|POST) .*retrying/m }), 'a second import waits to retry a write';
sleep 0.2;
kill 'INT', $pid;
$r = tm_wait('sigint', $pid);
is $r->{rc}, 1, 'Ctrl-C: exit 1';
like $r->{err}, qr/^tmctl: import interrupted at (flag|rule) "drained-\d+": it is unchanged$/m, '... says where'
    or diag $r->{err};
my @now = $r->{out} =~ /^created flag "([^"]+)"$/mg;
is_deeply flags_named('drained-'), [ sort @created, @now ], '... and what it printed as created is what is on the server';
like $r->{err}, qr/flags ${\ scalar @now} created/, '... counted';

$ng->stop;
ok $s->stop, 'run.sh stop';
done_testing;
