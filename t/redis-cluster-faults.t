#!/usr/bin/env perl
# What goes wrong with a cluster. Redirects are bounded: a "cluster node" (a
# fake, in this test) that answers
# every command with a MOVED to itself. The edge follows at most 5 in a row,
# then counts a failure (backoff, the snapshot keeps serving); a daemon
# follows at most 5 per command, then logs the error while its write still
# succeeds (PostgreSQL). A malformed redirect, or one to a host name, is an
# error, not a hop. And cluster mode against a Redis that is not a cluster
# fails clearly on both sides (CLUSTER INFO), the edge serving its snapshot.
use strict; use warnings;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key);

# Replies +OK to AUTH and CLUSTER INFO, the reply given (a RESP error line)
# to the rest.
sub fake_node {
    my ($reply) = @_;
    my $l = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1', LocalPort => 0, ReuseAddr => 1)
        or die "listen: $!";
    my $port = $l->sockport;
    my $pid = fork // die "fork: $!";
    if ($pid) {
        close $l;
        return ($pid, $port);
    }
    my $sel = IO::Select->new($l);
    my %buf;
    while (1) {
        for my $s ($sel->can_read(1)) {
            if ($s == $l) {
                my $c = $l->accept or next;
                $sel->add($c);
                next;
            }
            my $n = sysread($s, my $chunk, 65536);
            if (!$n) { $sel->remove($s); delete $buf{$s}; close $s; next; }
            $buf{$s} .= $chunk;
            # one reply per complete RESP array (command)
            while ($buf{$s} =~ s/^\*(\d+)\r\n//) {
                my ($argc, @args) = ($1);
                for (1 .. $argc) {
                    $buf{$s} =~ s/^\$(\d+)\r\n// or last;
                    my $len = $1;
                    push @args, substr($buf{$s}, 0, $len, '');
                    $buf{$s} =~ s/^\r\n//;
                }
                my $r = uc($args[0] // '') =~ /^(AUTH|CLUSTER)$/ ? "+OK\r\n" : "-" . ($reply =~ s/PORT/$port/r) . "\r\n";
                syswrite($s, $r);
            }
        }
    }
}

my $h = TM::Harness->new;
my @kids;
END { kill 'KILL', @kids if @kids; waitpid($_, 0) for @kids }
my ($pid, $port) = fake_node('MOVED 1234 127.0.0.1:PORT');
push @kids, $pid;
my $URL = "redis://127.0.0.1:$port";

# ---- the edge ----------------------------------------------------------------
my $ng = TM::Nginx->new($h, redis_url => $URL, redis_cluster => 1, redis => 1)->start;
ok $h->wait_until(10, sub { $ng->error_log =~ /MOVED: slot 1234 is at 127\.0\.0\.1:$port; serving snapshot/ }),
    'edge: a sixth MOVED in a row is a failure';
my @hops = $ng->error_log =~ /MOVED: slot 1234 of the \{tm\} keys is served by 127\.0\.0\.1:$port; reconnecting there/g;
my @fails = $ng->error_log =~ /MOVED: slot 1234 is at 127\.0\.0\.1:$port; serving snapshot/g;
ok @hops >= 5, 'after following 5 (' . scalar(@hops) . ' in all)';
ok @hops <= 5 * @fails + 5, '... never more than 5 per failure (' . scalar(@fails) . ' failures)';
is $h->req(GET => $ng->url('/health'))->{status}, 200, 'the edge still answers';
$ng->stop;

# ---- a daemon ----------------------------------------------------------------
my $MASTER = 'redis-hops-master-key-0123456789';
my $A = $h->daemon('auth', MASTER_KEY => $MASTER, REDIS_URL => $URL, REDIS_CLUSTER => 1);
my $key = new_key($h, $A, $MASTER, 'hops');
ok $key->{key}, 'auth: a key created (the write reached PostgreSQL)';
ok $h->wait_until(5, sub { $h->log('auth') =~ /redis: EVAL: MOVED 1234 127\.0\.0\.1:$port/ }),
    'auth: after the hops, the error is logged';
my @d = $h->log('auth') =~ /(MOVED: slot 1234 is at 127\.0\.0\.1:$port; following)/g;
ok @d >= 5, 'auth: it followed the redirect (' . scalar(@d) . ' times)';
$h->stop('auth');

# ---- a malformed redirect -----------------------------------------------------
my ($pid2, $port2) = fake_node('MOVED 99999 127.0.0.1:PORT');
push @kids, $pid2;
$ng = TM::Nginx->new($h, redis_url => "redis://127.0.0.1:$port2", redis_cluster => 1);
$ng->start;
ok $h->wait_until(10, sub { $ng->error_log =~ /a redirect that cannot be followed: MOVED 99999/ }),
    'edge: a malformed MOVED is an error';
$ng->stop;

# ---- a redirect to a host name: not followed (it would need a lookup) -------
my ($pid3, $port3) = fake_node('MOVED 77 localhost:PORT');
push @kids, $pid3;
$ng = TM::Nginx->new($h, redis_url => "redis://127.0.0.1:$port3", redis_cluster => 1);
$ng->start;
ok $h->wait_until(10, sub { $ng->error_log =~ /a redirect to a host name is not followed/ }),
    'edge: a MOVED to a host name is refused with a reason';
unlike $ng->error_log, qr/slot 77 of the \{tm\} keys is served by/, '  and not followed';
$A = $h->daemon('auth', MASTER_KEY => $MASTER, REDIS_URL => "redis://127.0.0.1:$port3", REDIS_CLUSTER => 1);
ok $h->wait_until(5, sub { $h->log('auth') =~ /redirects to the host name localhost; only IP addresses are followed/ }),
    'auth: the same';
$ng->stop;
$h->stop('auth');

# ---- cluster mode, but Redis is not a cluster ---------------------------------
my $single = $h->redis;
$ng = TM::Nginx->new($h, redis_url => $single, redis_cluster => 1);
$ng->start;
ok $h->wait_until(10, sub { $ng->error_log =~ /"cluster" is set, but redis is not a cluster node \(CLUSTER INFO: ERR [^)]*\): remove "cluster"/ }),
    'edge with "cluster" on a standalone Redis: says to remove it';
is $h->req(GET => $ng->url('/health'))->{status}, 200, '  and keeps answering';
$A = $h->daemon('auth', MASTER_KEY => $MASTER, REDIS_URL => $single, REDIS_CLUSTER => 1);
ok $h->wait_until(5, sub { $h->log('auth') =~ /REDIS_CLUSTER=1, but this Redis is not a cluster node \(CLUSTER INFO: ERR/ }),
    'auth with REDIS_CLUSTER=1 on a standalone Redis: says to unset it';
is $h->redis_cmd('DBSIZE'), 0, 'nothing was written there';
done_testing;
