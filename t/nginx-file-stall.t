#!/usr/bin/env perl
# The snapshot file is written off the event loop: with its write stalled
# (the temp file is a FIFO nobody reads, so open() blocks), the worker keeps
# answering, and takes changes; once the disk "comes back" the write ends.
# A synchronous write would hang the worker here.
use strict; use warnings;
use Test::More;
use POSIX qw(mkfifo);
use Time::HiRes qw(time sleep);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $h = TM::Harness->new;
$h->redis;
TM::Nginx::set_flag($h, 'alpha', 1, quiet => 1);
$h->redis_cmd('SET', 'tm:version', 1);

my $ng = TM::Nginx->new($h, workers => 1, check_interval => '200ms');
$ng->start;
my $file = $ng->snapshot_file;
ok $h->wait_until(5, sub { -s $file }), 'snapshot file written once';
like $ng->error_log, qr/snapshot file "[^"]+" written, version \d+, in \d+ ms/, 'write logged';

# the worker's pid names its temp file
open my $pf, '<', "$ng->{dir}/nginx.pid" or die "nginx.pid: $!";
chomp(my $master = <$pf>);
my ($worker) = grep { /^\d+$/ } split /\s+/, `pgrep -P $master`;
ok $worker, "worker pid $worker";
my $fifo = "$file.tmp.$worker";
ok mkfifo($fifo, 0600), 'the temp file is a FIFO: the next write blocks in open()';

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

# the disk comes back: read the FIFO, the write completes and is renamed
open my $rd, '<', $fifo or die "fifo: $!";
my $doc = do { local $/; <$rd> };
close $rd;
like $doc, qr/^\{"version":$v,"flags":\{.*"alpha"/s, 'the stalled write carried the snapshot it started with';
ok $h->wait_until(5, sub { $ng->error_log =~ /version $v, in \d+ ms/ }), 'the stalled write finished';
# its end starts the next save (one at a time), which renames a regular
# file over the FIFO with the later change
ok $h->wait_until(5, sub { -f $file && !-p $file && do { open my $f, '<', $file; local $/; <$f> =~ /"beta"/ } }),
    'then the newer snapshot is written, with the later change';
done_testing;
