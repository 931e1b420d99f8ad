#!/usr/bin/env perl
# The fuzz corpora, mutated, through the real servers: /evaluate query
# strings and OFREP bodies into nginx (the module's glue around the lib
# parsers), admin bodies into the flags, targeting and auth daemons. Every
# answer is a 2xx or a 4xx with a JSON error — never a 5xx, a crash or a
# hang — and the harness fails the file on any sanitizer report. Seeded, so
# a failure replays: TM_GARBAGE_SEED=<n>.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key);

my $SEED = $ENV{TM_GARBAGE_SEED} // 20261122;
my $N = $ENV{TM_GARBAGE_N} // 150;      # mutants per seed file
srand($SEED);
diag "seed $SEED, $N mutants per seed input";

my $h = TM::Harness->new;
my $M = 'garbage-master';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth);
my $targeting = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my %K = (Authorization => 'Bearer ' . new_key($h, $auth, $M, 'garbage')->{key});
# through the API: the flags daemon's reconciliation owns tm:flags
is $h->req(POST => "$flags/flags", \%K, { name => $_, is_enabled => \1 })->{status}, 201, "flag $_ created"
    for qw(f new-ui garbage-probe);
my $ng = TM::Nginx->new($h);
$ng->start;
ok $h->wait_until(5, sub { $ng->evaluate('u', 'garbage-probe') }), 'the edge has the flags';

my @SPICE = (split(//, q{"{}[],:%&=+\\}), "\0", "\xff", "\xc3", "\n", ' ', '1e999', '-', '"x":');
sub mutate {
    my $s = shift;
    for (1 .. 1 + int rand 4) {
        my $at = length $s ? int rand length $s : 0;
        my $op = int rand 4;
        if ($op == 0 && length $s) { substr($s, $at, 1) = chr(ord(substr $s, $at, 1) ^ (1 << int rand 8)) }
        elsif ($op == 1) { substr($s, $at, 0) = $SPICE[rand @SPICE] }
        elsif ($op == 2 && length $s) { substr($s, $at, 1 + int rand 8) = '' }
        else { substr($s, $at, 0) = substr($s, int rand(length($s) || 1), 1 + int rand 16) }
    }
    return $s;
}
sub seeds {
    my $dir = shift;
    return map { open my $f, '<:raw', $_ or die "$_: $!"; local $/; scalar <$f> } sort glob "fuzz/corpus/$dir/*";
}
# bytes that cannot stand in a request line are %-escaped; '%', '+', '&' stay raw
sub in_url { my $s = shift; $s =~ s/([^!-~]|#)/sprintf '%%%02X', ord $1/ge; $s }

my (%seen, @bad);
sub check {
    my ($what, $r, $input) = @_;
    $seen{$r->{status}}++;
    my $ok = $r->{status} < 500
        && ($r->{status} < 400 || ($r->{json} && ($r->{json}{error} || $r->{json}{errorCode})));
    push @bad, "$what: $r->{status} " . substr($r->{content} // '', 0, 200) . ' <- ' . unpack('H*', substr $input, 0, 120)
        unless $ok;
}

for my $q (seeds('query')) {
    for (1 .. $N) {
        my $m = mutate($q);
        check('GET /evaluate', $h->req(GET => $ng->url('/evaluate?' . in_url($m))), $m);
    }
}
for my $body (seeds('ofrep')) {
    for (1 .. $N) {
        my $m = mutate($body);
        check('OFREP single', $h->req(POST => $ng->url('/ofrep/v1/evaluate/flags/f'), {}, $m), $m);
        check('OFREP bulk', $h->req(POST => $ng->url('/ofrep/v1/evaluate/flags'), {}, $m), $m) if $_ % 3 == 0;
    }
}
# fuzz/corpus/admin: the first byte picks the kind (0 flag, 1 rule,
# 2 segment, 3 key) and, with bit 2, an update of "path-name"
my @routes = ([$flags, '/flags'], [$targeting, '/rules'], [$targeting, '/segments'], [$auth, '/admin/keys']);
for my $seed (seeds('admin')) {
    my $sel = ord substr $seed, 0, 1;
    my ($base, $path) = @{ $routes[$sel % 4] };
    my $update = $sel & 4 && $sel % 4 != 3;
    my %auth = $sel % 4 == 3 ? (Authorization => "Bearer $M") : %K;
    for (1 .. $N) {
        my $m = mutate(substr $seed, 1);
        check("admin $path", $h->req($update ? (PUT => "$base$path/path-name") : (POST => "$base$path"), \%auth, $m), $m);
    }
}

my $total = 0;
$total += $_ for values %seen;
diag 'statuses: ' . join(', ', map { "$_ x$seen{$_}" } sort keys %seen);
ok $total > 1000, "$total mutated requests sent";
is scalar(@bad), 0, 'no 5xx, and every 4xx a JSON error' or diag join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)];
ok((grep { $_ >= 200 && $_ < 300 } keys %seen), 'some mutants were still valid (the inputs reach past the first check)');
for my $u ($auth, $flags, $targeting) {
    is $h->req(GET => "$u/health")->{status}, 200, "$u healthy afterwards";
}
is $h->req(GET => $ng->url('/health'))->{status}, 200, 'nginx healthy afterwards';
is $ng->evaluate('u', 'garbage-probe'), 1, '... and still evaluating (a flag no mutant names)';
unlike $ng->error_log, qr/\[(alert|emerg)\]|exited on signal/, 'no worker crashed';
done_testing;
