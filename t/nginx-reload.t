#!/usr/bin/env perl
# `nginx -s reload` under load: no failed request, no wrong answer (new
# workers start from the snapshot file, then Redis).
use strict; use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX qw(_exit);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $h = TM::Harness->new;
$h->redis;
TM::Nginx::set_flag($h, 'roll', 1, quiet => 1);
TM::Nginx::set_rule($h, 'roll', { type => 'PERCENTAGE', value => 40 }, 1, quiet => 1);
$h->redis_cmd('SET', 'tm:version', 7);

my $ng = TM::Nginx->new($h, workers => 2);
$ng->start;
ok $h->wait_until(5, sub { -s $ng->snapshot_file }), 'snapshot file written';

my $out = $h->dir . '/load.out';
my @kids;
for my $k (1 .. 3) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my ($ok, $bad, $wrong) = (0, 0, 0);
        my $end = time + 3;
        my $i = 0;
        while (time < $end) {
            my $u = "k$k-" . $i++;
            my $r = $h->req(GET => $ng->url("/evaluate?user_id=$u&flag_name=roll"));
            if ($r->{status} != 200 || !$r->{json}) { $bad++; next }
            $wrong++ if ($r->{json}{result} ? 1 : 0) != (TM::Nginx::bucket($u, 'roll') < 40 ? 1 : 0);
            $ok++;
        }
        open my $f, '>>', $out or _exit(1);
        print $f "$ok $bad $wrong\n";
        close $f;
        _exit(0);
    }
    push @kids, $pid;
}
for (1 .. 4) {
    sleep 0.5;
    $h->signal(HUP => 'nginx');
}
waitpid $_, 0 for @kids;
my ($ok, $bad, $wrong) = (0, 0, 0);
open my $f, '<', $out or die;
while (<$f>) { my @n = split; $ok += $n[0]; $bad += $n[1]; $wrong += $n[2] }
ok $ok > 100, "$ok requests answered during 4 reloads";
is $bad, 0, 'no failed request';
is $wrong, 0, 'no wrong answer';
like $ng->error_log, qr/reconfiguring/, 'nginx did reload';
unlike $ng->error_log, qr/\[(alert|emerg|crit)\]/, 'no alerts in the error log';
done_testing;
