#!/usr/bin/env perl
# auth refuses a weak MASTER_KEY (shorter than 16 bytes, or the published
# default) unless TOGGLEMASTER_ENV=development says it is a local stack.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;

my $h = TM::Harness->new;
my $bin = ($ENV{TM_BUILD} || "$TM::Harness::ROOT/build") . '/admin-daemons/togglemaster-auth';

# Runs auth with this environment until it exits (a refusal is immediate);
# returns (exit status, output). A daemon that starts is killed after 5 s.
sub run_auth {
    my (%env) = @_;
    local %ENV = (%ENV, DATABASE_URL => $h->postgres, BIND_ADDR => '127.0.0.1',
                  PORT => TM::Harness::free_port(), %env);
    my $out = $h->dir . '/auth-run.log';
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', $out or die; open STDERR, '>&', \*STDOUT or die;
        exec $bin or die "exec $bin: $!";
    }
    my $left = 50;
    while ($left-- > 0) {
        last if waitpid($pid, 1) == $pid;   # WNOHANG
        select undef, undef, undef, 0.1;
    }
    my $rc;
    if ($left < 0) { kill 'TERM', $pid; waitpid($pid, 0); $rc = 'running' } else { $rc = $? >> 8 }
    open my $f, '<', $out or die; local $/; my $log = <$f>;
    return ($rc, $log);
}

my ($rc, $log) = run_auth(MASTER_KEY => 'short-key', TOGGLEMASTER_ENV => '');
is $rc, 2, 'a 9-byte master key: auth refuses to start';
like $log, qr/MASTER_KEY is shorter than 16 bytes/, 'and says why';
unlike $log, qr/short-key/, 'without logging the key';

($rc, $log) = run_auth(MASTER_KEY => 'x' x 15, TOGGLEMASTER_ENV => 'production');
is $rc, 2, '15 bytes, TOGGLEMASTER_ENV=production: refused';

($rc, $log) = run_auth(MASTER_KEY => 'admin-secreto-123', TOGGLEMASTER_ENV => '');
is $rc, 2, 'the published default key: refused outside development';
like $log, qr/published default/, 'and says why';

($rc, $log) = run_auth(MASTER_KEY => 'x' x 16, TOGGLEMASTER_ENV => '');
is $rc, 'running', '16 bytes: auth starts' or diag $log;

# A development stack keeps the original local setups working.
my $auth = $h->daemon('auth', MASTER_KEY => 'm', TOGGLEMASTER_ENV => 'development');
my $r = $h->req(POST => "$auth/admin/keys", { Authorization => 'Bearer m' }, { name => 'dev' });
is $r->{status}, 201, 'TOGGLEMASTER_ENV=development: a 1-byte key works';
$h->stop('auth');

$auth = $h->daemon('auth', MASTER_KEY => 'admin-secreto-123', TOGGLEMASTER_ENV => 'development');
$r = $h->req(POST => "$auth/admin/keys", { Authorization => 'Bearer admin-secreto-123' }, { name => 'dev' });
is $r->{status}, 201, 'and so does the published default';

done_testing;
