#!/usr/bin/env perl
# The admin daemons never resolve DATABASE_URL's host on a request thread: a
# resolver thread does (at start, every TM_DB_RESOLVE_SECONDS, and soon after
# a connection to the cached addresses failed), and libpq gets its addresses
# as hostaddr. TM::SlowDNS plays the DNS of one name (stalled, failing, or
# answering an address of our choice). While it stalls, requests needing new
# connections answer at once; while the name has no address yet, requests
# get a quick 503 with Retry-After; an address that changed is followed
# after a connection to the old one failed. The daemon connects as its own
# role (dnstest) so that its backends can be told from the others.
use strict; use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Select;
use IO::Socket::INET;
use POSIX qw(_exit);
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key);
use TM::SlowDNS;

my $h = TM::Harness->new;
my $M = 'master-db-dns-key';
$h->postgres;
my $pg = $h->port('postgres');
my $NAME = 'tm-slow-db.test';
my $dns = TM::SlowDNS->new($h->dir, $NAME);
$h->psql('CREATE ROLE dnstest LOGIN SUPERUSER');
my $URL = "postgresql://dnstest\@$NAME:$pg/togglemaster";

my $auth = $h->daemon('auth', MASTER_KEY => $M);
my %K = (Authorization => 'Bearer ' . new_key($h, $auth, $M, 'db-dns')->{key});
sub create { $h->req(POST => "$_[0]/flags", \%K, { name => $_[1], is_enabled => JSON::PP::true }) }
sub backends { $h->psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'dnstest'$_[0]") }
sub kill_backends { $h->psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'dnstest'") }

# --- resolved at start, then DNS stalls: new connections need no lookup ---
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, DATABASE_URL => $URL, TM_DB_RESOLVE_SECONDS => 1,
                       TM_HTTP_THREADS => 4, $dns->env);
is create($flags, 'warm')->{status}, 201, 'a daemon whose DATABASE_URL names its host works';
like $h->log('flags'), qr/database: \Q$NAME\E resolved/, 'the resolution is logged';
$dns->stall;
my $n = $dns->calls;
ok $h->wait_until(5, sub { $dns->calls > $n }), 'the periodic lookup is now stuck';
$n = $dns->calls;
my $t_stall = $h->psql('SELECT now()');
ok kill_backends() >= 1, 'its connections are closed by the server';
sleep 0.3;
my ($slow, $bad, $worst) = (0, 0, 0);
for my $i (1 .. 20) {
    my $t0 = time;
    my $r = create($flags, "stall-$i");
    my $dt = time - $t0;
    $worst = $dt if $dt > $worst;
    $slow++ if $dt > 1;
    $bad++ unless $r->{status} == 201;
}
is $slow, 0, sprintf('20 creations while DNS stalls: none slower than 1 s (worst %.0f ms)', $worst * 1000);
is $bad, 0, '... all 201';
ok backends(" AND backend_start > '$t_stall'") >= 1, '... over connections opened while DNS stalled';
is $dns->calls, $n, 'no request looked the name up (the one stuck lookup is the resolver\'s)';

# --- DNS fails: the last good addresses stay in use ---
$dns->fail;
$dns->stall(0);
ok $h->wait_until(10, sub { $dns->calls >= $n + 3 }), 'lookups now fail (and are retried)';
kill_backends();
sleep 0.3;
is create($flags, 'failing-dns')->{status}, 201, 'a new connection while lookups fail uses the last address';
my @warned = $h->log('flags') =~ /cannot resolve \Q$NAME\E/g;
is scalar @warned, 1, 'the failing lookups are logged once, not each time';
$dns->fail(0);
my $t0 = time;
$h->stop('flags');
ok time - $t0 < 4, 'the daemon stops promptly (resolver thread joined)';

# --- no address yet: a quick 503 with Retry-After, then service ---
# (the PG* form: a key=value DATABASE_URL without host, PGHOST naming it)
$dns->stall;
$flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, DATABASE_URL => 'dbname=togglemaster user=dnstest',
                    PGHOST => $NAME, PGPORT => $pg, TM_SKIP_MIGRATE => 1, TM_DB_RESOLVE_SECONDS => 1, $dns->env);
($slow, $worst) = (0, 0);
my (%st, %retry, $json);
for my $i (1 .. 5) {
    my $t1 = time;
    my $r = $i % 2 ? create($flags, "early-$i") : $h->req(GET => "$flags/flags", \%K);
    my $dt = time - $t1;
    $worst = $dt if $dt > $worst;
    $slow++ if $dt > 1;
    $st{ $r->{status} }++;
    $retry{ $r->{headers}{'retry-after'} // 'none' }++;
    $json++ if ref $r->{json} eq 'HASH' && ($r->{json}{error} // '') =~ /database/;
}
is $slow, 0, sprintf('5 requests before the name resolves: none slower than 1 s (worst %.0f ms)', $worst * 1000);
is_deeply \%st, { 503 => 5 }, '... each a 503';
is_deeply \%retry, { 1 => 5 }, '... with Retry-After: 1';
is $json, 5, '... and a JSON error naming the database';
is $h->req(GET => "$flags/health/ready")->{status}, 503, '/health/ready says not ready';
like $h->log('flags'), qr/database host \Q$NAME\E not resolved yet/, 'the log says why';
is $h->req(GET => "$flags/flags/early-1", \%K)->{status}, 503, 'nothing was half-written meanwhile (still 503)';
$dns->stall(0);
ok $h->wait_until(10, sub { create($flags, 'resolved-late')->{status} == 201 }),
    'once the name resolves, requests are served';
is $h->req(GET => "$flags/flags/early-1", \%K)->{status}, 404, '... and the flags refused with 503 do not exist';
$h->stop('flags');

# --- the address changes: followed after a connection to the old one fails ---
# A relay on 127.0.0.2 (PostgreSQL listens on 127.0.0.1 only) stands for the
# old server; it notes each connection it relays in relayed.
sub relay {
    my $pid = fork // die "fork: $!";
    return $pid if $pid;
    setpgrp(0, 0);
    my $l = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.2', LocalPort => $pg, ReuseAddr => 1)
        or _exit(1);
    while (my $c = $l->accept) {
        next if fork;
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $pg) or _exit(1);
        open my $f, '>>', $h->dir . '/relayed' or _exit(1);
        print $f "x\n";
        close $f;
        my $sel = IO::Select->new($c, $s);
        while (my @r = $sel->can_read) {
            for my $from (@r) {
                my $to = $from == $c ? $s : $c;
                sysread($from, my $buf, 65536) or _exit(0);
                syswrite($to, $buf) // _exit(0);
            }
        }
        _exit(0);
    }
    _exit(0);
}
my $relay = relay();
sub relayed { open my $f, '<', $h->dir . '/relayed' or return 0; my @l = <$f>; scalar @l }
ok $h->wait_until(5, sub { IO::Socket::INET->new(PeerAddr => '127.0.0.2', PeerPort => $pg) }), 'the relay listens';
my $r0 = relayed();
$dns->answer_with('127.0.0.2');
$flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, DATABASE_URL => $URL, TM_SKIP_MIGRATE => 1,
                    TM_DB_RESOLVE_SECONDS => 3600, $dns->env);
is create($flags, 'via-old')->{status}, 201, 'a flag through the old address';
ok relayed() > $r0, '... through the relay';
$n = $dns->calls;
sleep 1.1;   # past the resolver's minimum gap between two lookups
is $dns->calls, $n, 'no periodic lookup (TM_DB_RESOLVE_SECONDS=3600)';
$dns->answer_with('127.0.0.1');
kill 'KILL', -$relay;
waitpid $relay, 0;
my (%seen, $try);
ok $h->wait_until(10, sub { my $s = create($flags, 'via-new-' . ++$try)->{status}; $seen{$s}++; $s == 201 }),
    'requests are served again through the new address';
ok !(grep { $_ != 201 && $_ != 503 } keys %seen), '... meanwhile only 503s (' . join(',', sort keys %seen) . ')';
ok $dns->calls > $n, 'the failed connection made the resolver look the name up again';
like $h->log('flags'), qr/database: \Q$NAME\E resolved \(new addresses\)/, 'the new addresses are logged';
$h->stop('flags');

# --- a DATABASE_URL libpq would refuse stops the daemon at start ---
my $bin = ($ENV{TM_BUILD} // 'build') . '/admin-daemons/togglemaster-flags';
my $out = `DATABASE_URL='postgresql://u:secret\@h:5432/db?nosuch=1' PORT=1 AUTH_SERVICE_URL=http://127.0.0.1:1 $bin 2>&1`;
is $? >> 8, 2, 'an unknown URI parameter: exit 2 at start';
like $out, qr/DATABASE_URL is not a connection string libpq accepts/, '... saying so';
unlike $out, qr/secret/, '... without the password';
$out = `DATABASE_URL='postgresql://u\@a,b,c,d,e/db' PORT=1 AUTH_SERVICE_URL=http://127.0.0.1:1 $bin 2>&1`;
is $? >> 8, 2, 'more hosts than supported: exit 2';
like $out, qr/at most 4 hosts/, '... saying so';
done_testing;
