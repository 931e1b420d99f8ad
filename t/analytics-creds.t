#!/usr/bin/env perl
# Where the analytics worker gets AWS credentials, against a real moto server:
# IRSA (web identity token -> STS AssumeRoleWithWebIdentity), container
# credentials (EKS Pod Identity) refreshed before they expire, and a clear
# refusal to start with none.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::AWS;
use IO::Socket::INET;
use POSIX qw(strftime _exit);

my $h = TM::Harness->new;
my $moto = $h->moto;
my $aws = TM::AWS->new($moto);
my $table = 'Events';
my $p = $aws->create_pipeline(queue => 'creds-q', table => $table, max_receive => 3, visibility => 2);
my $dir = $h->dir;
my %base = (AWS_ENDPOINT_URL => $moto, AWS_SQS_URL => $p->{queue_url}, AWS_DYNAMODB_TABLE => $table,
            AWS_REGION => 'us-east-1', BIND_ADDR => '127.0.0.1', TM_SQS_WAIT_SECONDS => 1, TM_POLLERS => 1);
delete @ENV{qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE
               AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_CONTAINER_CREDENTIALS_FULL_URI
               AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_AUTHORIZATION_TOKEN
               AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)};

sub event { $aws->json->encode({ user_id => $_[0], flag_name => 'f', result => JSON::PP::true,
                                 timestamp => '2026-11-22T10:00:00Z' }) }
sub stored { my $u = shift; $h->wait_until(15, sub { grep { $_->{user_id} eq $u } @{ $aws->scan($table) } }) }
sub write_file { my ($path, $text) = @_; open my $f, '>', $path or die "$path: $!"; print $f $text; close $f }

# --- IRSA ---------------------------------------------------------------------
write_file("$dir/web-token", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.sig\n");
$h->start('analytics', undef, %base, AWS_WEB_IDENTITY_TOKEN_FILE => "$dir/web-token",
          AWS_ROLE_ARN => 'arn:aws:iam::123456789012:role/togglemaster-analytics',
          AWS_ROLE_SESSION_NAME => 'tm-test');
$aws->send($p->{queue_url}, event('irsa-user'));
ok stored('irsa-user'), 'IRSA: event stored with credentials from STS';
like $h->log('analytics'), qr/credentials refreshed from web identity \(IRSA\) \(key ASIA/,
    'IRSA: temporary credentials from AssumeRoleWithWebIdentity';
unlike $h->log('analytics'), qr/dummy keys/, 'IRSA: no dummy keys';
$h->stop('analytics');

# --- container credentials, refreshed before expiry ----------------------------
my $srv = IO::Socket::INET->new(Listen => 10, LocalAddr => '127.0.0.1', LocalPort => 0, ReuseAddr => 1)
    or die "listen: $!";
my $cport = $srv->sockport;
my $child = fork // die "fork: $!";
if (!$child) {
    # A credentials endpoint: checks the token, hands out keys that expire
    # 302 s from now, i.e. 2 s before the worker's 5-minute refresh margin.
    while (my $c = $srv->accept) {
        my ($req, $n) = ('', 0);
        while (defined(my $l = <$c>)) { $req .= $l; last if $l eq "\r\n" || ++$n > 100 }
        my ($auth) = $req =~ /^Authorization:\s*(.*?)\r?$/mi;
        if (open my $f, '>>', "$dir/container-requests") { print $f ($auth // '-') . "\n"; close $f }
        my $ok = ($auth // '') eq 'pod-identity-token';
        my $body = $ok ? JSON::PP->new->encode({ AccessKeyId => 'ASIACONTAINER', SecretAccessKey => 'sk',
                       Token => 'container-session-token',
                       Expiration => strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + 302)) })
                       : '{"message":"forbidden"}';
        print $c 'HTTP/1.1 ' . ($ok ? '200 OK' : '403 Forbidden') . "\r\nContent-Type: application/json\r\n"
            . 'Content-Length: ' . length($body) . "\r\nConnection: close\r\n\r\n$body";
        close $c;
    }
    _exit(0);
}
close $srv;
write_file("$dir/pod-token", "pod-identity-token\n");
$h->start('analytics', undef, %base, AWS_CONTAINER_CREDENTIALS_FULL_URI => "http://127.0.0.1:$cport/v1/credentials",
          AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE => "$dir/pod-token");
$aws->send($p->{queue_url}, event('pod-user'));
ok stored('pod-user'), 'Pod Identity: event stored with container credentials';
sub requests { open my $f, '<', "$dir/container-requests" or return (); my @l = <$f>; chomp @l; @l }
ok $h->wait_until(10, sub { requests() >= 2 }), 'credentials refreshed before they expire: ' . scalar(requests()) . ' fetches';
is_deeply [grep { $_ ne 'pod-identity-token' } requests()], [], 'authorization token from the token file on every fetch';
$aws->send($p->{queue_url}, event('pod-user-2'));
ok stored('pod-user-2'), 'still storing after refreshes';
$h->stop('analytics');
kill 'KILL', $child;
waitpid $child, 0;

# --- the container rules of lib/tm_aws: the token goes nowhere else ------------
# A recorder stands for "evil": it logs every request it gets.
sub recorder {
    my ($addr) = @_;
    my $s = IO::Socket::INET->new(Listen => 10, LocalAddr => $addr, LocalPort => 0, ReuseAddr => 1)
        or return;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        while (my $c = $s->accept) {
            my ($req, $n) = ('', 0);
            while (defined(my $l = <$c>)) { $req .= $l; last if $l eq "\r\n" || ++$n > 100 }
            if (open my $f, '>>', "$dir/evil-requests") { print $f $req; close $f }
            close $c;
        }
        _exit(0);
    }
    return ($pid, $s->sockport);
}
sub evil { open my $f, '<', "$dir/evil-requests" or return ''; local $/; <$f> // '' }

# runs the worker with this environment for a few seconds; returns its log
sub run_worker {
    my (%env) = @_;
    my $log = "$dir/worker-rules.log";
    unlink $log;
    my $bin = ($ENV{TM_BUILD} // "$TM::Harness::ROOT/build") . '/analytics-worker/togglemaster-analytics';
    my $pid = fork // die;
    if (!$pid) {
        %ENV = (%ENV, %base, PORT => TM::Harness::free_port(), %env);
        open STDOUT, '>', $log; open STDERR, '>&', \*STDOUT;
        exec $bin or _exit(127);
    }
    sleep 4;
    kill 'TERM', $pid; waitpid $pid, 0;
    open my $f, '<', $log or return ''; local $/; return <$f> // '';
}

my ($rpid, $rport) = recorder('127.0.0.1');
my $out = run_worker(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI => "\@127.0.0.1:$rport/v1/credentials",
                     AWS_CONTAINER_AUTHORIZATION_TOKEN => 'secret-pod-token');
is evil(), '', 'relative URI "@host:port/x": nothing reaches that host (joined with a /)';
unlike evil(), qr/secret-pod-token/, '... the token least of all';

$out = run_worker(AWS_CONTAINER_CREDENTIALS_FULL_URI => "http://127.0.0.1:$rport/v1/credentials",
                  AWS_CONTAINER_AUTHORIZATION_TOKEN => "secret-pod-token\r\nX-Injected: yes");
unlike evil(), qr/X-Injected/, 'a token with a line break is never sent';
like $out, qr/authorization token holds a line break/, '... and the log says why';
kill 'KILL', $rpid; waitpid $rpid, 0;

# a non-local address of this machine, if it has one: plain http refused
my $probe = IO::Socket::INET->new(Proto => 'udp', PeerAddr => '10.255.255.255', PeerPort => 9);
my $ip = $probe ? $probe->sockhost : '';
SKIP: {
    skip 'no non-loopback address here', 2 unless $ip && $ip !~ /^127\./ && $ip ne '0.0.0.0';
    my ($epid, $eport) = recorder($ip);
    skip "cannot listen on $ip", 2 unless $epid;
    unlink "$dir/evil-requests";
    $out = run_worker(AWS_CONTAINER_CREDENTIALS_FULL_URI => "http://$ip:$eport/v1/credentials",
                      AWS_CONTAINER_AUTHORIZATION_TOKEN => 'secret-pod-token');
    is evil(), '', "plain http to $ip (not loopback, not the ECS/EKS agents): nothing sent";
    like $out, qr/plain http goes only to loopback/, '... and the log says why';
    kill 'KILL', $epid; waitpid $epid, 0;
}

# --- none at all, real AWS endpoints: refuse to start --------------------------
{
    local %ENV = (%ENV, PORT => TM::Harness::free_port(), AWS_REGION => 'us-east-1',
                  AWS_SQS_URL => 'https://sqs.us-east-1.amazonaws.com/123456789012/q');
    delete @ENV{qw(AWS_ENDPOINT_URL AWS_ENDPOINT_URL_SQS AWS_ENDPOINT_URL_DYNAMODB)};
    my $bin = ($ENV{TM_BUILD} // "$TM::Harness::ROOT/build") . '/analytics-worker/togglemaster-analytics';
    my $out = `$bin 2>&1`;
    isnt $? >> 8, 0, 'no credentials: exits non-zero';
    like $out, qr/no AWS credentials: set AWS_ACCESS_KEY_ID/, 'and says what to set';
}

$h->teardown;
done_testing;
