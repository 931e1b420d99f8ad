#!/usr/bin/env perl
# Abuse of the admin daemons: slow clients (slowloris) cannot starve a
# daemon, oversized headers and bodies are refused, a flood of bad master
# keys changes nothing. (The per-address rate limit lives at the edge:
# nginx-conf/*.conf, tested in t/edge-limits.t.)
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

$SIG{PIPE} = "IGNORE";   # the daemon closes the connections it refuses
my $h = TM::Harness->new;
my $auth = $h->daemon('auth', MASTER_KEY => 'm');
my $port = $h->port('auth');

# --- slowloris: 300 connections that send half a request and then trickle ---
# From 127.0.0.2, so the per-address connection limit (200) bites the
# attacker, not the well-behaved client on 127.0.0.1.
my @slow;
for (1 .. 300) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  LocalAddr => '127.0.0.2', Timeout => 2) or last;
    print $s "GET /health HTTP/1.1\r\nHost: x\r\n";
    push @slow, $s;
}
ok @slow >= 150, 'opened ' . scalar(@slow) . ' slow connections';
for my $round (1 .. 3) {
    print $_ "X-Slow-$round: 1\r\n" for @slow;   # keep them alive, never finish
    my $t = time;
    my $r = $h->req(GET => "$auth/health");
    my $ms = (time - $t) * 1000;
    is $r->{status}, 200, "round $round: a normal client is served while slow clients hang on";
    ok $ms < 2000, sprintf('round %d: in %.0f ms', $round, $ms);
    sleep 0.3;
}
my $t = time;
my $r = $h->req(POST => "$auth/admin/keys", { Authorization => 'Bearer m' }, { name => 'during-slowloris' });
is $r->{status}, 201, 'a write succeeds during the attack';
close $_ for @slow;

# --- oversized headers: refused with a 4xx, the daemon lives on ---
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5) or die;
print $s "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " . ('a' x 100_000) . "\r\n\r\n";
my $status = <$s> // '';
like $status, qr{^HTTP/1\.[01] (4\d\d)}, "100 KB header refused: $status";
close $s;
is $h->req(GET => "$auth/health")->{status}, 200, 'daemon still healthy after a huge header';

# --- a long body is refused without being buffered whole ---
$r = $h->req(POST => "$auth/admin/keys", { Authorization => 'Bearer m' }, 'x' x (2 * 1024 * 1024));
is $r->{status}, 413, '2 MiB body -> 413';

# --- many wrong master keys: all 403, nothing written, still serving ---
my $before = $h->psql('SELECT count(*) FROM api_keys');
my %seen;
$seen{ $h->req(POST => "$auth/admin/keys", { Authorization => "Bearer guess-$_" }, { name => 'x' })->{status} }++ for 1 .. 200;
is_deeply \%seen, { 403 => 200 }, '200 wrong master keys -> 200 x 403';
is $h->psql('SELECT count(*) FROM api_keys'), $before, 'nothing written';
is $h->req(GET => "$auth/health")->{status}, 200, 'still healthy';
unlike $h->log('auth'), qr/guess-\d/, 'presented keys never logged';
done_testing;
