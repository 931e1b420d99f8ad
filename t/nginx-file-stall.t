#!/usr/bin/env perl
# The snapshot file is written off the event loop: with its write stalled
# (fsync blocks while a gate file exists: a small LD_PRELOAD library built
# here plays the slow disk), the worker keeps answering, and takes changes;
# once the disk "comes back" the write ends. A synchronous write would hang
# the worker here. (The temporary file is created O_EXCL|O_NOFOLLOW, so a
# FIFO planted at its name no longer stalls it: it is replaced.)
use strict; use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $h = TM::Harness->new;
$h->redis;
TM::Nginx::set_flag($h, 'alpha', 1, quiet => 1);
$h->redis_cmd('SET', 'tm:version', 1);

my $gate = $h->dir . '/stall-gate';
my $so = $h->dir . '/stall.so';
open my $c, '>', $h->dir . '/stall.c' or die;
print $c <<"C";
#define _GNU_SOURCE
#include <dlfcn.h>
#include <unistd.h>
/* fsync waits while the gate file exists: a disk that does not answer */
int fsync(int fd)
{
    int (*real)(int) = (int (*)(int)) dlsym(RTLD_NEXT, "fsync");
    while (access("$gate", F_OK) == 0) {
        usleep(10000);
    }
    return real(fd);
}
C
close $c;
is system('cc', '-shared', '-fPIC', '-o', $so, $h->dir . '/stall.c', '-ldl'), 0, 'the slow-disk library builds';

my $ng = TM::Nginx->new($h, workers => 1, check_interval => '200ms');
my %env = TM::Nginx::san_env($h);
$env{LD_PRELOAD} = join ' ', grep { $_ } $env{LD_PRELOAD}, $so;
$h->start('nginx', $ng->port, %env);
$ng->wait_up;
my $file = $ng->snapshot_file;
ok $h->wait_until(5, sub { -s $file }), 'snapshot file written once';
like $ng->error_log, qr/snapshot file "[^"]+" written, version \d+, in \d+ ms/, 'write logged';

{ open my $g, '>', $gate or die; close $g }   # the disk stops answering
TM::Nginx::set_flag($h, 'alpha', 0);    # a new snapshot: a write starts and stalls
my $v = $h->redis_cmd('GET', 'tm:version');
my ($slow, $wrong, $n, $off) = (0, 0, 0, 0);
my $end = time + 3;
while (time < $end) {
    my $t0 = time;
    my $r = $h->req(GET => $ng->url('/evaluate?user_id=u&flag_name=alpha'));
    $n++;
    $slow++ if time - $t0 > 0.5;
    $wrong++ unless $r->{status} == 200;
    $off++ if $r->{json} && !$r->{json}{result};
}
is $slow, 0, "$n evaluations during the stalled write, none slower than 500 ms";
is $wrong, 0, '... all 200';
ok $off > 0, '... and the change applied meanwhile (alpha is off)';
TM::Nginx::set_flag($h, 'beta', 1);     # another change while the write is stuck
ok $h->wait_until(3, sub { $ng->evaluate('u', 'beta') }), 'later changes apply too';
unlike $ng->error_log, qr/version $v, in/, 'the stalled write has not finished';

# the disk comes back: the write completes and is renamed
my $stalled = do { open my $f, '<', $file or die; local $/; <$f> };
unlike $stalled, qr/^\{"version":$v,/, 'meanwhile the file still holds the old snapshot';
unlink $gate or die "unlink: $!";
ok $h->wait_until(5, sub { $ng->error_log =~ /version $v, in \d+ ms/ }), 'the stalled write finished';
# its end starts the next save (one at a time), with the later change
ok $h->wait_until(5, sub { -f $file && do { open my $f, '<', $file; local $/; <$f> =~ /"beta"/ } }),
    'then the newer snapshot is written, with the later change';
done_testing;
