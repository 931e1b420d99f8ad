#!/usr/bin/env perl
# The cost of targeting at the edge: /evaluate throughput for a flag with
# five constraints (IN, STR_ENDS_WITH case-insensitive, SEMVER_GTE,
# IP_IN_CIDR, NUM_LT), a segment, a 50 % rollout and three weighted variants
# with payloads, against a plain boolean flag, in the same nginx, same run,
# same worker count (not pass/fail). Both requests carry the same context in
# their query; a third round asks the plain flag without it. Rounds
# alternate so machine noise hits all alike. Goal: targeted within 2x of
# plain (ratio >= 0.5).
#   perl -I t/lib bench/edge-targeting.pl [SECONDS_PER_ROUND] [ROUNDS]
use strict; use warnings;
use TM::Harness;
use TM::Nginx;

my ($SECS, $ROUNDS) = (@ARGV, 3, 3)[0, 1];
die "wrk is needed (apt-get install wrk)\n" unless grep { -x "$_/wrk" } split /:/, $ENV{PATH};

my $h = TM::Harness->new;
$h->redis;
my $ng = TM::Nginx->new($h, workers => 1, timeout => '5s');
TM::Nginx::set_flag($h, 'plain', 1);
TM::Nginx::set_segment($h, 'adults', [ { contextName => 'age', operator => 'NUM_GTE', value => 18 } ]);
TM::Nginx::set_flag($h, 'targeted', 1);
TM::Nginx::set_rule($h, 'targeted', {
    strategies => [ {
        segments => ['adults'],
        constraints => [
            { contextName => 'country', operator => 'IN', values => [qw(BR PT AR MX CL)] },
            { contextName => 'email', operator => 'STR_ENDS_WITH', values => ['@corp.io', '@example.com'],
              caseInsensitive => JSON::PP::true },
            { contextName => 'appVersion', operator => 'SEMVER_GTE', value => '2.3.0' },
            { contextName => 'remoteAddress', operator => 'IP_IN_CIDR', values => ['10.0.0.0/8', '192.168.0.0/16'] },
            { contextName => 'age', operator => 'NUM_LT', value => 65 },
        ],
        rollout => { percentage => 50, stickiness => 'default' },
    } ],
    variants => [ map { { name => $_, weight => 333, payload => { type => 'json', value => qq({"theme":"$_"}) } } }
                  qw(red green blue) ],
});
$ng->start;

my $ctx = 'country=BR&email=ann%40Corp.io&appVersion=2.4.1&remoteAddress=10.1.2.3&age=30';
# a user inside the 50 %: the whole rule runs, variant included
my $user;
for my $i (1 .. 200) {
    my $r = $h->req(GET => $ng->url("/evaluate?user_id=user-$i&flag_name=targeted&$ctx"));
    if ($r->{json} && $r->{json}{result} && $r->{json}{variant}) { $user = "user-$i"; last }
}
die "targeted flag never on (not synced?):\n" . $ng->error_log unless $user;
$h->wait_until(5, sub { $ng->evaluate($user, 'plain') }) or die "nginx did not sync\n";

sub wrk {
    my $path = shift;
    my $out = `wrk -t1 -c32 -d${SECS}s --latency '${\ $ng->url($path)}' 2>&1`;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    my ($p99, $unit) = $out =~ /99%\s+([\d.]+)(us|ms|s)/;
    my ($non2xx) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    die "wrk failed:\n$out" unless $rps;
    $p99 *= { us => 0.001, ms => 1, s => 1000 }->{$unit} if defined $p99;
    return ($rps, $p99 // 0, $non2xx // 0);
}

my %path = (
    plain         => "/evaluate?user_id=$user&flag_name=plain",
    'plain+ctx'   => "/evaluate?user_id=$user&flag_name=plain&$ctx",
    targeted      => "/evaluate?user_id=$user&flag_name=targeted&$ctx",
);
my @order = ('plain', 'plain+ctx', 'targeted');
my (%rps, %p99, $errors);
for (1 .. $ROUNDS) {
    for my $k (@order) {
        my ($r, $p, $x) = wrk($path{$k});
        push @{ $rps{$k} }, $r; push @{ $p99{$k} }, $p; $errors += $x;
    }
}
my $med = sub { my @v = sort { $a <=> $b } @_; $v[$#v / 2] };
my %m = map { $_ => $med->(@{ $rps{$_} }) } @order;
printf "edge %-10s %8.0f req/s p99 %.2f ms\n", $_, $m{$_}, $med->(@{ $p99{$_} }) for @order;
printf "edge targeting: targeted/plain %.2f, targeted/plain+ctx %.2f (goal >= 0.50: within 2x)%s\n",
    $m{targeted} / $m{plain}, $m{targeted} / $m{'plain+ctx'}, $errors ? " ($errors non-2xx!)" : '';
