#!/usr/bin/env perl
# tm_db never runs a statement twice: a connection lost while a statement is
# out (it may have committed) answers 503, and no second backend runs it; a
# connection the server closed while idle is replaced before sending, so the
# next request simply works. Backends are killed with pg_terminate_backend.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use Time::HiRes qw(sleep);
use POSIX qw(_exit);

my $h = TM::Harness->new;
my $M = 'master-test-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M, TM_RECONCILE_SECONDS => 3600);
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, TM_RECONCILE_SECONDS => 3600, TM_HTTP_THREADS => 1);
my $key = $h->req(POST => "$auth/admin/keys", { Authorization => "Bearer $M" }, { name => 'k' })->{json}{key};
my %K = (Authorization => "Bearer $key");
is $h->req(POST => "$flags/flags", \%K, { name => 'warm' })->{status}, 201, 'a flag (the connection is up)';

# --- idle connection killed: replaced before sending ---
$h->psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'togglemaster' AND pid <> pg_backend_pid()");
sleep 0.3;
is $h->req(POST => "$flags/flags", \%K, { name => 'after-idle-kill' })->{status}, 201,
    'after the server closed the idle connection, the next POST works (new connection first)';

# --- connection killed while the INSERT waits on a lock ---
my ($bin) = sort glob('/usr/lib/postgresql/*/bin');
my $port = $h->port('postgres');
my $locker = fork // die;
if (!$locker) {
    exec "$bin/psql", '-X', '-q', '-h', '127.0.0.1', '-p', $port, '-U', 'postgres', '-d', 'togglemaster',
         '-c', 'BEGIN; LOCK TABLE flags IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;' or _exit(1);
}
sleep 0.5;
my $poster = fork // die;
if (!$poster) {
    my $r = $h->req(POST => "$flags/flags", \%K, { name => 'mid-flight' });
    open my $f, '>', $h->dir . '/mid-flight.status' or _exit(1); print $f $r->{status}; close $f;
    _exit(0);   # not exit: the harness's END would stop the services
}
my $waiting = "SELECT pid FROM pg_stat_activity WHERE application_name = 'togglemaster' AND query LIKE '%INSERT INTO flags (%'";
ok $h->wait_until(3, sub { $h->psql($waiting) =~ /^\d+$/ }), 'the INSERT is out, waiting on the lock';
my $pid = $h->psql($waiting);
$h->psql("SELECT pg_terminate_backend($pid)");
waitpid $poster, 0;
my $status = do { open my $f, '<', $h->dir . '/mid-flight.status' or die; local $/; <$f> };
is $status, 503, 'the connection lost mid-statement: 503, outcome unknown to the daemon';
is $h->psql($waiting), '', 'and no other backend runs the INSERT again';
waitpid $locker, 0;
is $h->psql("SELECT count(*) FROM flags WHERE name = 'mid-flight'"), '0', 'the killed INSERT did not commit; the client may retry';
is $h->req(POST => "$flags/flags", \%K, { name => 'mid-flight' })->{status}, 201, '... and its retry creates it';
like $h->log('flags'), qr/connection lost during a statement/, 'logged';
done_testing;
