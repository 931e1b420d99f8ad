#!/usr/bin/env perl
# Bulk OFREP's worst case at the edge: one POST /ofrep/v1/evaluate/flags over
# an environment of N REGEX-bomb flags (each just within one evaluation
# budget for a 1 KiB identity) and N plain IN ["x"] flags, with the default
# togglemaster_request_budget (20) and with 1000 (every flag paid: how it
# was before the request budget), for a 1 KiB and a 1-byte identity. Times
# are curl's, so the client's JSON parsing does not count (not pass/fail).
#   perl -I t/lib bench/edge-bulk.pl [N] [REQUESTS]
use strict; use warnings;
use JSON::PP;
use TM::Harness;
use TM::Nginx;

my ($N, $REQ) = (@ARGV, 1000, 7)[0, 1];
die "curl is needed\n" unless grep { -x "$_/curl" } split /:/, $ENV{PATH};

my $h = TM::Harness->new;
$h->redis;
my %doc = (
    w => { strategies => [ { constraints => [
        { contextName => 'userId', operator => 'REGEX', value => '(?:a|b)*?a*+c|!!' } ] } ] },
    p => { strategies => [ { constraints => [
        { contextName => 'userId', operator => 'IN', values => ['x'] } ] } ] },
);
my (@flags, @rules);
for my $i (0 .. $N - 1) {
    for my $k (sort keys %doc) {
        my $name = sprintf '%s%05d', $k, $i;
        push @flags, $name, TM::Nginx::flag_json($name, 1);
        push @rules, $name, TM::Nginx::rule_json($name, $doc{$k}, 1);
    }
}
$h->redis_cmd('HSET', 'tm:flags', @flags);
$h->redis_cmd('HSET', 'tm:rules', @rules);
$h->redis_cmd('SET', 'tm:version', 5);
TM::Nginx::mark_ready($h);
my $ng = TM::Nginx->new($h, workers => 1, timeout => '5s', server => <<'CONF');
        location /all/ofrep/v1/ { togglemaster_ofrep; togglemaster_request_budget 1000; }
CONF
$ng->start;
$h->wait_until(60, sub { eval { $ng->evaluate('u', 'p00000'); 1 } }) or die "no snapshot\n";

my $body = $h->dir . '/body.json';
my $out = $h->dir . '/out.json';
printf "%d REGEX-bomb flags + %d IN [\"x\"] flags, one worker, %d requests each:\n", $N, $N, $REQ;
for my $c ([ 'budget 20 (default)', '/ofrep/v1/evaluate/flags' ],
           [ 'budget 1000 (as before)', '/all/ofrep/v1/evaluate/flags' ]) {
    for my $user (('a' x 1023) . '!', 'u') {
        open my $fh, '>', $body or die "$body: $!";
        print $fh encode_json({ context => { targetingKey => $user } });
        close $fh;
        my @t = sort { $a <=> $b } map {
            `curl -s -o $out -w '%{time_total}' -X POST --data-binary \@$body ${\ $ng->url($c->[1])}`
        } 1 .. $REQ;
        my $json = do { local (@ARGV, $/) = ($out); <> } // '';
        my $refused = () = $json =~ /request's evaluation budget/g;
        printf "  %-24s %4d-byte identity: median %7.1f ms, %d flags refused\n",
               $c->[0], length $user, $t[@t / 2] * 1000, $refused;
    }
}
$h->teardown;
