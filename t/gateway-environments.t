#!/usr/bin/env perl
# The scope x route x environment matrix of the edge routes through the
# shipped gateway (nginx-conf/dev.conf as `make run` starts it), with the
# real daemons writing Redis: environments, per-environment flag state and
# keys are made through the admin API, then every edge route (/evaluate and
# OFREP single and bulk, at the root and under /evaluate/) is called with
# every kind of key. A key evaluates in its own environment and no other;
# a scope the route does not take is a 403 naming the scopes; a client key
# sees only client_visible flags. The admin API at the gateway takes admin
# and readonly keys (the daemons check the method) and refuses the
# evaluation scopes.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Stack;

my $h = TM::Harness->new;
my $s = TM::Stack->new(master_key => 'env-master');
plan skip_all => 'the nginx module is not built' unless -s $s->dir . '/nginx.pid';
ok $s->started, 'run.sh start' or diag $s->output;
my $G = $s->url('INGRESS');
my $T = JSON::PP::true;
my $M = { Authorization => 'Bearer env-master' };

sub mint {
    my (%b) = @_;
    my $r = $h->req(POST => "$G/auth/admin/keys", $M, { name => 'k', %b });
    is $r->{status}, 201, "key minted: " . join(' ', map { "$_=$b{$_}" } sort keys %b) or diag $r->{content};
    return $r->{json}{key};
}
my $admin = mint();
my $A = { Authorization => "Bearer $admin" };
ok $h->wait_until(10, sub { $h->req(GET => "$G/flags/flags", $A)->{status} == 200 }), 'the gateway knows the admin key';

# default: checkout off, pay off; staging: checkout on; production: pay on.
# secret: on everywhere, never client_visible.
for my $e (qw(staging production)) {
    is $h->req(POST => "$G/flags/environments", $A, { name => $e })->{status}, 201, "environment $e";
}
is $h->req(POST => "$G/flags/flags", $A, { name => $_->[0], client_visible => $_->[1] })->{status}, 201, "flag $_->[0]"
    for ['checkout', $T], ['pay', $T], ['secret', JSON::PP::false];
my @on = (['checkout', 'staging'], ['pay', 'production'], map { ['secret', $_] } qw(default staging production));
for my $o (@on) {
    my $q = $o->[1] eq 'default' ? '' : "?environment=$o->[1]";
    is $h->req(PUT => "$G/flags/flags/$o->[0]$q", $A, { is_enabled => $T })->{status}, 200, "$o->[0] on in $o->[1]";
}

my %key = (admin => $admin, readonly => mint(scope => 'readonly'));
for my $e (qw(staging production)) {
    $key{"server\@$e"} = mint(scope => 'server', environment => $e);
    $key{"client\@$e"} = mint(scope => 'client', environment => $e);
}
# what each environment answers for (checkout, pay, secret)
my %want = (default => '0 0 1', staging => '1 0 1', production => '0 1 1');

my @eval = ('/evaluate', '/evaluate/evaluate');
my @ofrep = ('/ofrep/v1', '/evaluate/ofrep/v1');
sub hdr { my $k = shift; defined $k ? { Authorization => "Bearer $k" } : {} }
sub evaluate {   # "checkout pay secret" results, or the refusal
    my ($path, $k) = @_;
    my @v;
    for my $f (qw(checkout pay secret)) {
        my $r = $h->req(GET => "$G$path?user_id=u1&flag_name=$f", hdr($k));
        return "$r->{status} " . ($r->{json}{error} // '') if $r->{status} != 200;
        push @v, $r->{json}{result} ? 1 : 0;
    }
    return "@v";
}
sub ofrep_single {
    my ($base, $k) = @_;
    my @v;
    for my $f (qw(checkout pay secret)) {
        my $r = $h->req(POST => "$G$base/evaluate/flags/$f", hdr($k), { context => { targetingKey => 'u1' } });
        if ($r->{status} == 404 && ($r->{json}{errorCode} // '') eq 'FLAG_NOT_FOUND') { push @v, '-'; next }
        return "$r->{status} " . ($r->{json}{error} // $r->{json}{errorCode} // '') if $r->{status} != 200;
        push @v, $r->{json}{value} ? 1 : 0;
    }
    return "@v";
}
sub ofrep_bulk {
    my ($base, $k) = @_;
    my $r = $h->req(POST => "$G$base/evaluate/flags", hdr($k), { context => { targetingKey => 'u1' } });
    return "$r->{status} " . ($r->{json}{error} // '') if $r->{status} != 200;
    my %v = map { $_->{key} => ($_->{value} ? 1 : 0) } @{ $r->{json}{flags} };
    return join ' ', map { $v{$_} // '-' } qw(checkout pay secret);
}

# wait until the edge has every key and state (the last writes)
ok $h->wait_until(10, sub { evaluate('/evaluate', $key{'server@production'}) eq $want{production}
                            && ofrep_bulk('/ofrep/v1', $key{'client@staging'}) =~ /^1 0 -$/ }),
    'the edge has the keys and the states';

my $needs_eval = '403 this route needs the admin or server scope; the key has';
my $needs_ofrep = '403 this route needs the admin, server or client scope; the key has';
my %expect = (   # key => [/evaluate, OFREP single, OFREP bulk]
    admin                 => [$want{default}, $want{default}, $want{default}],
    readonly              => ["$needs_eval readonly", "$needs_ofrep readonly", "$needs_ofrep readonly"],
    'server@staging'      => [$want{staging}, $want{staging}, $want{staging}],
    'server@production'   => [$want{production}, $want{production}, $want{production}],
    'client@staging'      => ["$needs_eval client", '1 0 -', '1 0 -'],
    'client@production'   => ["$needs_eval client", '0 1 -', '0 1 -'],
    none                  => ['401 missing API key', '401 missing API key', '401 missing API key'],
    wrong                 => ['401 invalid API key', '401 invalid API key', '401 invalid API key'],
);
$key{wrong} = 'tm_key_' . ('0' x 40);
for my $who (sort keys %expect) {
    my $k = $key{$who};
    my ($ev, $one, $bulk) = @{ $expect{$who} };
    is evaluate($_, $k), $ev, "GET $_ with $who" for @eval;
    is ofrep_single($_, $k), $one, "OFREP single $_ with $who" for @ofrep;
    is ofrep_bulk($_, $k), $bulk, "OFREP bulk $_ with $who" for @ofrep;
}

# CORS for browsers on OFREP (client keys): a preflight without a key
my $r = $h->req(OPTIONS => "$G/ofrep/v1/evaluate/flags", { Origin => 'https://app.example', 'Access-Control-Request-Method' => 'POST' });
is $r->{status}, 204, 'OFREP preflight: 204 without a key';
is $r->{headers}{'access-control-allow-origin'}, '*', '... any origin (client keys are public)';
like $r->{headers}{'access-control-allow-headers'} // '', qr/Authorization/, '... Authorization allowed';
$r = $h->req(POST => "$G/ofrep/v1/evaluate/flags", { %{ hdr($key{'client@staging'}) }, Origin => 'https://app.example' },
             { context => { targetingKey => 'u1' } });
is $r->{headers}{'access-control-allow-origin'}, '*', 'OFREP answer carries Access-Control-Allow-Origin';

# the admin API through the gateway, per scope
my %admin_api = (   # key => [GET /flags/flags, POST /flags/flags]
    admin               => [200, 201],
    readonly            => [200, 403],
    'server@staging'    => [403, 403],
    'client@production' => [403, 403],
    none                => [401, 401],
);
my $i = 0;
for my $who (sort keys %admin_api) {
    my ($get, $post) = @{ $admin_api{$who} };
    $r = $h->req(GET => "$G/flags/flags", hdr($key{$who}));
    is $r->{status}, $get, "GET /flags/flags with $who: $get";
    $r = $h->req(POST => "$G/flags/flags", hdr($key{$who}), { name => 'made-by-' . $i++ });
    is $r->{status}, $post, "POST /flags/flags with $who: $post";
    like $r->{json}{error} // '', qr/scope; the key has/, '... naming the scope' if $post == 403;
}
$r = $h->req(GET => "$G/flags/flags", $A);
is_deeply [sort map { $_->{name} } @{ $r->{json} }], [qw(checkout made-by-0 pay secret)],
    'only the admin key created a flag';

done_testing;
