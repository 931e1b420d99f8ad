#!/usr/bin/env perl
# `make run` end to end: scripts/run.sh starts the whole stack (on free ports
# and in a temp dir here, so a developer's own stack is left alone), the
# original contract's flows work with plain HTTP, and stop leaves nothing
# running.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Stack;

my $h = TM::Harness->new;   # for req() only
my $s = TM::Stack->new(master_key => 'run-master');
my $dir = $s->dir;
ok $s->started, 'run.sh start succeeds' or diag $s->output;
my $out = $s->output;
like $out, qr{auth\s+http://127\.0\.0\.1:${\ $s->port('AUTH')}}, 'prints where auth listens';
like $out, qr{flags\s+http://127\.0\.0\.1:${\ $s->port('FLAGS')}}, 'prints where flags listens';
like $out, qr{MASTER_KEY: \(from your environment\)}, 'says where MASTER_KEY comes from';
for my $name (qw(postgres redis moto auth flags targeting)) {
    ok -s "$dir/$name.pid", "$name.pid written";
}

my ($A, $F, $T) = map { $s->url($_) } qw(AUTH FLAGS TARGETING);
my $r = $h->req(POST => "$A/admin/keys", { Authorization => 'Bearer run-master' }, { name => 'run-test' });
is $r->{status}, 201, 'create a key';
my %K = (Authorization => "Bearer $r->{json}{key}");
is $h->req(POST => "$F/flags", \%K, { name => 'new-checkout', is_enabled => JSON::PP::true })->{status}, 201, 'create a flag';
is $h->req(POST => "$T/rules", \%K, { flag_name => 'new-checkout', rules => { type => 'PERCENTAGE', value => 30 } })->{status}, 201, 'create a rule';
is $h->req(GET => "$F/flags/new-checkout", \%K)->{json}{is_enabled}, JSON::PP::true, 'read the flag back';
is $h->req(GET => "$T/rules/new-checkout", \%K)->{json}{rules}{value}, 30, 'read the rule back';

if (-s "$dir/nginx.pid") {
    for my $port (map { $s->port($_) } qw(EVAL INGRESS)) {
        my $url = "http://127.0.0.1:$port/evaluate?user_id=user1&flag_name=new-checkout";
        # The edge learns of the rule through Redis pub/sub within milliseconds.
        my $e = $h->wait_until(5, sub { my $x = $h->req(GET => $url, \%K); $x->{json} && defined $x->{json}{result} && !$x->{json}{result} ? $x : undef })
            || $h->req(GET => $url, \%K);
        is $e->{status}, 200, "evaluate through nginx on $port";
        # sha1("user1new-checkout") bucket is 36 (t/unit/test_rules.c): 36 < 30 is false
        is_deeply $e->{json}, { flag_name => 'new-checkout', user_id => 'user1', result => JSON::PP::false }, 'evaluation result';
    }
    my $I = $s->url('INGRESS');
    is $h->req(GET => "$I/flags/new-checkout", \%K)->{json}{name}, 'new-checkout', 'ingress /flags reaches the flags daemon';
    is $h->req(GET => "$I/targeting/rules/new-checkout", \%K)->{json}{flag_name}, 'new-checkout', 'ingress /targeting reaches targeting';
    is $h->req(POST => "$I/auth/admin/keys", { Authorization => 'Bearer run-master' }, { name => 'via-ingress' })->{status}, 201, 'ingress /auth reaches auth';
    is $h->req(GET => "$I/flags", {})->{status}, 401, 'ingress requires an API key';
}

my @pids = $s->pids;
ok $s->stop, 'run.sh stop succeeds';
ok !(grep { kill 0, $_ } @pids), 'nothing left running after stop';
ok !glob("$dir/*.pid"), 'pid files removed';

# A REDIS_URL of yours (a password, a database, TLS) is where the daemons
# publish and where nginx syncs from: make run starts no Redis of its own and
# never prints the password. nginx used a fixed 127.0.0.1:REDIS_PORT before,
# so it never saw what the daemons wrote.
my $hr = TM::Harness->new(redis_password => 'run-pw', redis_tls => 1);
my $tls_url = $hr->redis;                      # rediss://:run-pw@127.0.0.1:<tls>
my $plain = $hr->port('redis');
for my $c ([ "redis://:run-pw\@127.0.0.1:$plain/2", 2, {} ],
           [ "$tls_url/3", 3, { REDIS_CA_FILE => $hr->redis_ca } ]) {
    my ($url, $db, $extra) = @$c;
    my $s2 = TM::Stack->new(master_key => 'run-master', env => { REDIS_URL => $url, %$extra });
    my $label = $url =~ s/run-pw/***/r;
    ok $s2->started, "REDIS_URL=$label make run: starts" or diag $s2->output;
    unlike $s2->output, qr/run-pw/, '... the password is not printed';
    like $s2->output, qr/Redis\s+\Q$label\E\s+\(yours: REDIS_URL\)/, '... it says which Redis';
    ok !-e $s2->dir . '/redis.pid', '... and starts none of its own';
    SKIP: {
        skip 'nginx is not part of this stack', 4 unless -s $s2->dir . '/nginx.pid';
        my $A2 = $s2->url('AUTH');
        my $k = $h->req(POST => "$A2/admin/keys", { Authorization => 'Bearer run-master' }, { name => "db$db" });
        my %K2 = (Authorization => 'Bearer ' . ($k->{json}{key} // ''));
        is $h->req(POST => $s2->url('FLAGS') . '/flags', \%K2,
                   { name => "yours-$db", is_enabled => JSON::PP::true })->{status}, 201, '... create a flag';
        ok $hr->redis_cmd_in($db, 'HEXISTS', 'tm:flags', "yours-$db"), "... the daemons wrote database $db";
        my $url_e = $s2->url('EVAL') . "/evaluate?user_id=u&flag_name=yours-$db";
        my $e = $h->wait_until(15, sub { my $x = $h->req(GET => $url_e, \%K2); $x->{json} && $x->{json}{result} ? $x : undef });
        ok $e, "... nginx evaluates it: it syncs from database $db of that Redis"
            or diag explain $h->req(GET => $url_e, \%K2);
        unlike do { local (@ARGV, $/) = ($s2->dir . '/nginx/nginx.conf'); <> } // '', qr/run-pw/,
            "... nginx.conf does not hold the password";
    }
    ok $s2->stop, '... stops';
}

# A stack the script never stops (make soak, make load keep theirs in a
# file-scoped variable) is stopped at exit, restarted services included, and
# the script's exit status is kept.
my $child = <<'PERL';
use TM::Stack;
our $s = TM::Stack->new(master_key => 'exit-master');
exit 9 unless $s->started && $s->restart('redis');
print join(' ', $s->pids), "\n";
exit 3;
PERL
my $script = "$dir.exit.pl";
open my $fh, '>', $script or die "$script: $!";
print $fh $child;
close $fh;
my $left = `$^X -I t/lib $script`;
unlink $script;
is $? >> 8, 3, 'exit status kept by the stop at exit';
my @child_pids = split ' ', $left // '';
cmp_ok scalar @child_pids, '>=', 6, 'the stack ran (pids of its services)';
ok !(grep { kill 0, $_ } @child_pids), 'nothing left running after the script exits';
done_testing;
