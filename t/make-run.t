#!/usr/bin/env perl
# `make run` end to end: scripts/run.sh starts the whole stack (on free ports
# and in a temp dir here, so a developer's own stack is left alone), the
# original contract's flows work with plain HTTP, and stop leaves nothing
# running.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use File::Temp qw(tempdir);

my $h = TM::Harness->new;   # for req() and free ports only
my $dir = tempdir('tm-run-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TM_KEEP});
chmod 0755, $dir;
my %port = map { $_ => TM::Harness::free_port() } qw(PG REDIS AWS AUTH FLAGS TARGETING EVAL ANALYTICS INGRESS);
local %ENV = (%ENV, TM_RUN_DIR => $dir, MASTER_KEY => 'run-master',
              map { ("TM_${_}_PORT" => $port{$_}) } keys %port);
delete @ENV{qw(DATABASE_URL REDIS_URL AUTH_SERVICE_URL AWS_SQS_URL AWS_ENDPOINT_URL)};

my $out = `scripts/run.sh start 2>&1`;
my $started = $? == 0;
END { system("scripts/run.sh stop >/dev/null 2>&1") if $dir && $ENV{TM_RUN_DIR} }
ok $started, 'run.sh start succeeds' or diag $out;
like $out, qr{auth\s+http://127\.0\.0\.1:$port{AUTH}}, 'prints where auth listens';
like $out, qr{flags\s+http://127\.0\.0\.1:$port{FLAGS}}, 'prints where flags listens';
like $out, qr{MASTER_KEY: \(from your environment\)}, 'says where MASTER_KEY comes from';
for my $name (qw(postgres redis moto auth flags targeting)) {
    ok -s "$dir/$name.pid", "$name.pid written";
}

my ($A, $F, $T) = map { "http://127.0.0.1:$port{$_}" } qw(AUTH FLAGS TARGETING);
my $r = $h->req(POST => "$A/admin/keys", { Authorization => 'Bearer run-master' }, { name => 'run-test' });
is $r->{status}, 201, 'create a key';
my %K = (Authorization => "Bearer $r->{json}{key}");
is $h->req(POST => "$F/flags", \%K, { name => 'new-checkout', is_enabled => JSON::PP::true })->{status}, 201, 'create a flag';
is $h->req(POST => "$T/rules", \%K, { flag_name => 'new-checkout', rules => { type => 'PERCENTAGE', value => 30 } })->{status}, 201, 'create a rule';
is $h->req(GET => "$F/flags/new-checkout", \%K)->{json}{is_enabled}, JSON::PP::true, 'read the flag back';
is $h->req(GET => "$T/rules/new-checkout", \%K)->{json}{rules}{value}, 30, 'read the rule back';

if (-s "$dir/nginx.pid") {
    my $url = "http://127.0.0.1:$port{EVAL}/evaluate?user_id=user1&flag_name=new-checkout";
    # The edge learns of the rule through Redis pub/sub within milliseconds.
    my $e = $h->wait_until(5, sub { my $x = $h->req(GET => $url, \%K); $x->{json} && defined $x->{json}{result} && !$x->{json}{result} ? $x : undef })
        || $h->req(GET => $url, \%K);
    is $e->{status}, 200, 'evaluate through nginx';
    # sha1("user1new-checkout") bucket is 36 (t/unit/test_rules.c): 36 < 30 is false
    is_deeply $e->{json}, { flag_name => 'new-checkout', user_id => 'user1', result => JSON::PP::false }, 'evaluation result';
}

my @pids;
for my $file (glob "$dir/*.pid") {
    open my $fh, '<', $file or next;
    my $pid = <$fh>;
    chomp $pid;
    push @pids, $pid;
}
$out = `scripts/run.sh stop 2>&1`;
is $?, 0, 'run.sh stop succeeds';
ok !(grep { kill 0, $_ } @pids), 'nothing left running after stop';
ok !glob("$dir/*.pid"), 'pid files removed';
done_testing;
