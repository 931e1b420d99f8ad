#!/usr/bin/env perl
# Where the nginx module's SQS producer gets AWS credentials, on a real
# moto server and real nginx:
# - IRSA: the web identity token goes to moto's STS (AssumeRoleWithWebIdentity);
#   events reach SQS signed with the temporary keys (a logging proxy in front
#   of moto records the Authorization and X-Amz-Security-Token headers);
# - EKS Pod Identity: a fake credentials endpoint hands out keys that expire
#   302 s later, i.e. 2 s past the 5-minute refresh margin: every worker
#   refreshes them before they expire, re-reads the token file each time,
#   and signs with the newest keys;
# - a token file that cannot be read yet (a FIFO): read in a thread, so
#   evaluations answer meanwhile;
# - a stalled credentials endpoint (SIGSTOP): evaluations answer at once,
#   events wait in the buffer, and go once credentials come.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::AWS;
use IO::Socket::INET;
use POSIX qw(strftime _exit);
use Time::HiRes qw(time sleep);

my $h = TM::Harness->new;
my $moto = $h->moto;
my $aws = TM::AWS->new($moto);
my $q = $aws->create_queue('tm-creds-events');
my $dir = $h->dir;
$SIG{PIPE} = 'IGNORE';

my @AWS_ENV = qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE
                 AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_ROLE_SESSION_NAME
                 AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
                 AWS_CONTAINER_AUTHORIZATION_TOKEN AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
                 AWS_ENDPOINT_URL AWS_ENDPOINT_URL_SQS AWS_ENDPOINT_URL_STS AWS_SQS_URL);
delete @ENV{@AWS_ENV};

sub write_file { my ($path, $text) = @_; open my $f, '>', $path or die "$path: $!"; print $f $text; close $f }
sub read_lines { my $path = shift; open my $f, '<', $path or return (); my @l = <$f>; chomp @l; @l }

my @kids;
sub spawn {   # a child process running $code; killed at the end
    my $code = shift;
    my $pid = fork // die "fork: $!";
    if (!$pid) { $code->(); _exit(0) }
    push @kids, $pid;
    return $pid;
}
END { kill 'KILL', @kids if @kids; waitpid $_, 0 for @kids }

sub listener {
    return IO::Socket::INET->new(Listen => 64, LocalAddr => '127.0.0.1', LocalPort => 0, ReuseAddr => 1)
        || die "listen: $!";
}

sub read_request {   # headers and body of one HTTP/1.1 request, or undef
    my $c = shift;
    my ($head, $n) = ('', 0);
    while (defined(my $l = <$c>)) { $head .= $l; last if $l eq "\r\n" || ++$n > 200 }
    return undef unless $head =~ /\r\n\r\n$/;
    my ($len) = $head =~ /^Content-Length:\s*(\d+)/mi;
    my $body = '';
    read($c, $body, $len) if $len;
    return ($head, $body);
}

# A logging proxy in front of moto: one request per connection, the
# credential headers of each SQS request appended to $log with moto's status.
sub sqs_proxy {
    my $log = shift;
    my $srv = listener();
    my $port = $srv->sockport;
    my ($mhost, $mport) = $moto =~ m{^http://([^:/]+):(\d+)};
    spawn(sub {
        while (my $c = $srv->accept) {
            my ($head, $body) = read_request($c) or do { close $c; next };
            my ($key) = $head =~ /^Authorization:.*Credential=([^\/]+)\//mi;
            my ($tok) = $head =~ /^X-Amz-Security-Token:\s*(\S+)/mi;
            $head =~ s/^Connection:.*\r\n//mig;
            $head =~ s/\r\n\r\n$/\r\nConnection: close\r\n\r\n/;
            my $m = IO::Socket::INET->new(PeerAddr => $mhost, PeerPort => $mport) or do { close $c; next };
            print $m $head, $body;
            my $reply = '';
            while (1) { my $k = sysread($m, my $buf, 65536); last unless $k; $reply .= $buf }
            close $m;
            my ($status) = $reply =~ m{^HTTP/1\.\d (\d+)};
            $reply =~ s/^Connection:.*\r\n//mig;
            $reply =~ s/\r\n/\r\nConnection: close\r\n/;
            if (open my $f, '>>', $log) { print $f join(' ', $key // '-', $tok // '-', $status // 0), "\n"; close $f }
            print $c $reply;
            close $c;
        }
    });
    return "http://127.0.0.1:$port";
}


sub events_conf {
    my ($endpoint, $extra) = @_;
    return <<"CONF" . ($extra // '');
    togglemaster_events on;
    togglemaster_sqs_queue_url $q;
    togglemaster_aws_endpoint $endpoint;
    togglemaster_aws_region us-east-1;
    togglemaster_events_batch 50 200ms;
    togglemaster_events_timeout 2s;
    togglemaster_events_backoff_max 500ms;
CONF
}

sub evaluate_many {   # n evaluations; returns the slowest in seconds
    my ($ng, $prefix, $n) = @_;
    my ($max, $fail) = (0, 0);
    for my $i (1 .. $n) {
        my $t0 = time;
        my $r = $h->req(GET => $ng->url("/evaluate?user_id=$prefix-$i&flag_name=f"));
        $fail++ unless ($r->{status} // 0) == 200;
        $max = time - $t0 if time - $t0 > $max;
    }
    is $fail, 0, "$n evaluations answered ($prefix)";
    return $max;
}

# --- IRSA: web identity token -> moto's STS -> signed SQS requests ------------
{
    my $log = "$dir/irsa-sqs.log";
    my $proxy = sqs_proxy($log);
    write_file("$dir/web-token", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.sig\n");
    local @ENV{qw(AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_ROLE_SESSION_NAME AWS_ENDPOINT_URL_STS)} =
        ("$dir/web-token", 'arn:aws:iam::123456789012:role/togglemaster-edge', 'tm-edge-test', $moto);
    my $ng = TM::Nginx->new($h, redis => 0, workers => 2, http => events_conf($proxy));
    $ng->start;
    my $before = $aws->queue_depth($q);
    evaluate_many($ng, 'irsa', 40);
    ok $h->wait_until(20, sub { ($ng->metrics->{togglemaster_events_sent_total} // 0) == 40 }),
        'IRSA: 40 events sent to SQS';
    my $m = $ng->metrics;
    is $m->{'togglemaster_aws_credentials_source{source="web_identity"}'}, 1, 'metrics: source web_identity';
    cmp_ok $m->{togglemaster_aws_credentials_refreshes_total}, '>=', 1, 'metrics: credentials fetched';
    is $m->{togglemaster_aws_credentials_refresh_errors_total}, 0, 'metrics: no refresh errors';
    my @exp = TM::Nginx::m_all($m, 'togglemaster_aws_credentials_expiry_seconds');
    is scalar @exp, 2, 'expiry reported per worker';
    ok !grep({ $_ < 3000 || $_ > 3600 } grep { $_ } @exp), "expiry in seconds: @exp (moto's STS: 1 hour)";
    my @reqs = read_lines($log);
    ok @reqs >= 1, scalar(@reqs) . ' SendMessageBatch requests through the proxy';
    is_deeply [grep { !/^ASIA\w+ \S{20,} 200$/ } @reqs], [],
        'every request signed with a temporary STS key (ASIA...), with its session token, and accepted';
    my @keys = $ng->error_log =~ /AWS credentials from web identity \(IRSA\): key (ASIA\w+)\.\.\./g;
    ok @keys >= 2, "STS handed out temporary keys to both workers (@keys ...)";
    is_deeply [grep { my $r = $_; !grep { index($r, $_) == 0 } @keys } @reqs], [],
        'the requests carry the keys the workers fetched';
    cmp_ok $aws->queue_depth($q) - $before, '>=', 1, 'messages are in the queue';
    unlike $ng->error_log, qr/dummy keys/, 'no dummy keys';
    $ng->stop;
}

# --- IRSA with the token file stalled: read in a thread, never on the loop ----
{
    my $fifo = "$dir/web-token-fifo";
    POSIX::mkfifo($fifo, 0600) or die "mkfifo: $!";
    local @ENV{qw(AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_ENDPOINT_URL_STS)} =
        ($fifo, 'arn:aws:iam::123456789012:role/togglemaster-edge', $moto);
    my $ng = TM::Nginx->new($h, redis => 0, workers => 1, http => events_conf($moto));
    $ng->start;
    sleep 0.3;                           # the first fetch has begun: open() blocks
    my $slowest = evaluate_many($ng, 'fifo', 30);
    cmp_ok $slowest, '<', 0.5, sprintf('token file unreadable (a FIFO nobody writes): evaluations still answer, slowest %.0f ms', $slowest * 1000);
    is $ng->metrics->{togglemaster_aws_credentials_refreshes_total}, 0, '... no credentials yet';
    # the "disk" comes back: the token arrives, the thread reads it
    open my $w, '>', $fifo or die "fifo: $!";
    print $w "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmaWZvIn0.sig\n";
    close $w;
    ok $h->wait_until(20, sub { ($ng->metrics->{togglemaster_events_sent_total} // 0) == 30 }),
        '... then credentials come from STS and the 30 events go';
    like $ng->error_log, qr/AWS credentials from web identity \(IRSA\): key ASIA/, 'temporary keys fetched';
    $ng->stop;
}

# --- IRSA with STS over https (nginx terminating TLS in front of moto) --------
{
    my $tdir = "$dir/tls";
    mkdir $tdir;
    my ($tls, $server, $cert) = TM::Nginx::tls_proxy($tdir, $moto);
    local @ENV{qw(AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_ENDPOINT_URL_STS)} =
        ("$dir/web-token", 'arn:aws:iam::123456789012:role/togglemaster-edge', "https://localhost:$tls");
    my $ng = TM::Nginx->new($h, redis => 0, server => $server,
        http => events_conf($moto, "    togglemaster_events_ssl_trusted_certificate $cert;\n"));
    $ng->start;
    evaluate_many($ng, 'irsa-tls', 10);
    ok $h->wait_until(20, sub { ($ng->metrics->{togglemaster_events_sent_total} // 0) == 10 }),
        'STS over https, certificate and host name verified: 10 events sent';
    like $ng->error_log, qr/AWS credentials from web identity \(IRSA\): key ASIA/, 'temporary keys from STS over TLS';
    $ng->stop;

    # the same STS without trusting its certificate: no credentials, no sending
    $ng->{http} = events_conf($moto);
    $ng->write_conf;
    $ng->start;
    evaluate_many($ng, 'irsa-untrusted', 5);
    ok $h->wait_until(10, sub { ($ng->metrics->{togglemaster_aws_credentials_refresh_errors_total} // 0) >= 1 }),
        'untrusted STS certificate: refresh error counted';
    like $ng->error_log, qr/AWS credentials endpoint certificate verify error/, 'verify error logged';
    my $m = $ng->metrics;
    is $m->{togglemaster_sqs_requests_total}, 0, 'nothing sent without credentials';
    is TM::Nginx::m_sum($m, 'togglemaster_events_buffered'), 5, 'the events wait';
    $ng->stop;
}

# --- EKS Pod Identity: short-lived keys, refreshed before they expire ---------
sub creds_server {   # fake Pod Identity agent; returns (url, pid)
    my ($log, $ttl) = @_;
    my $srv = listener();
    my $port = $srv->sockport;
    my $pid = spawn(sub {
        my $n = 0;
        while (my $c = $srv->accept) {
            my ($head) = read_request($c) or do { close $c; next };
            my ($auth) = $head =~ /^Authorization:\s*(.*?)\r?$/mi;
            my $ok = ($auth // '') =~ /^pod-identity-token-\d+$/;
            $n++ if $ok;
            my $body = $ok
                ? JSON::PP->new->encode({ AccessKeyId => sprintf('ASIAPOD%04d', $n), SecretAccessKey => "sk$n",
                      Token => "pod-session-token-$n", AccountId => '123456789012',
                      Expiration => strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + $ttl)) })
                : '{"message":"forbidden"}';
            my $wrote = print $c 'HTTP/1.1 ' . ($ok ? '200 OK' : '403 Forbidden')
                . "\r\nContent-Type: application/json\r\nContent-Length: " . length($body)
                . "\r\nConnection: close\r\n\r\n$body";
            if (open my $f, '>>', $log) { print $f(($auth // '-') . ($wrote ? '' : ' (gone)') . "\n"); close $f }
            close $c;
        }
    });
    return ("http://127.0.0.1:$port/v1/credentials", $pid);
}

{
    my $log = "$dir/pod-sqs.log";
    my $proxy = sqs_proxy($log);
    my ($url) = creds_server("$dir/pod-requests", 302);
    write_file("$dir/pod-token", "pod-identity-token-1\n");
    local @ENV{qw(AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)} =
        ($url, "$dir/pod-token");
    my $ng = TM::Nginx->new($h, redis => 0, workers => 2, http => events_conf($proxy));
    $ng->start;
    evaluate_many($ng, 'pod', 30);
    ok $h->wait_until(20, sub { ($ng->metrics->{togglemaster_events_sent_total} // 0) == 30 }),
        'Pod Identity: 30 events sent';
    my $m = $ng->metrics;
    is $m->{'togglemaster_aws_credentials_source{source="container"}'}, 1, 'metrics: source container';
    my $r0 = $m->{togglemaster_aws_credentials_refreshes_total};
    write_file("$dir/pod-token", "pod-identity-token-2\n");   # the kubelet rotates it
    ok $h->wait_until(15, sub { $ng->metrics->{togglemaster_aws_credentials_refreshes_total} >= $r0 + 6 }),
        'keys expiring in 302 s: refreshed 2 s later, again and again';
    $m = $ng->metrics;
    diag "refreshes: $m->{togglemaster_aws_credentials_refreshes_total}, "
        . "errors: $m->{togglemaster_aws_credentials_refresh_errors_total}";
    is $m->{togglemaster_aws_credentials_refresh_errors_total}, 0, 'no refresh errors';
    my @exp = TM::Nginx::m_all($m, 'togglemaster_aws_credentials_expiry_seconds');
    ok @exp == 2 && !grep({ $_ < 295 || $_ > 302 } @exp), "never close to expiry: @exp s left";
    my @auth = read_lines("$dir/pod-requests");
    is_deeply [grep { !/^pod-identity-token-[12]$/ } @auth], [], 'authorization token from the token file on every fetch';
    ok grep({ $_ eq 'pod-identity-token-2' } @auth), 'the rotated token file is read again at refresh';

    evaluate_many($ng, 'pod-late', 30);
    ok $h->wait_until(20, sub { ($ng->metrics->{togglemaster_events_sent_total} // 0) == 60 }),
        'still sending after the refreshes';
    my @reqs = read_lines($log);
    is_deeply [grep { !/^ASIAPOD(\d+) pod-session-token-(\d+) 200$/ || $1 != $2 } @reqs], [],
        'every request signed with a key from the endpoint, its own session token, accepted';
    my ($last) = $reqs[-1] =~ /^ASIAPOD(\d+)/;
    cmp_ok $last, '>', 2, "the last requests use a refreshed key (ASIAPOD$last)";
    $ng->stop;
}

# --- a stalled credentials endpoint: no hang, events wait, then go ------------
{
    my $log = "$dir/stall-sqs.log";
    my $proxy = sqs_proxy($log);
    my ($url, $cpid) = creds_server("$dir/stall-requests", 3600);
    kill 'STOP', $cpid;   # accepts (the kernel does), never answers
    write_file("$dir/pod-token", "pod-identity-token-1\n");
    local @ENV{qw(AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)} =
        ($url, "$dir/pod-token");
    my $ng = TM::Nginx->new($h, redis => 0, workers => 1,
                            http => events_conf($proxy, "    togglemaster_events_exit_timeout 500ms;\n"));
    $ng->start;
    my $t_end = time + 2;
    my ($n, $max) = (0, 0);
    while (time < $t_end) {
        my $t0 = time;
        my $r = $h->req(GET => $ng->url("/evaluate?user_id=stall-$n&flag_name=f"));
        $n++ if ($r->{status} // 0) == 200;
        $max = time - $t0 if time - $t0 > $max;
    }
    cmp_ok $n, '>', 50, "$n evaluations in 2 s while the credentials endpoint is stalled";
    cmp_ok $max, '<', 0.2, sprintf('slowest %.1f ms', $max * 1000);
    my $m = $ng->metrics;
    is TM::Nginx::m_sum($m, 'togglemaster_events_buffered'), $n,
        'their events wait in the buffer';
    is $m->{togglemaster_sqs_requests_total}, 0, 'no SQS request without credentials';
    is TM::Nginx::m_sum($m, 'togglemaster_events_dropped_total'), 0, 'nothing dropped';
    is_deeply [TM::Nginx::m_all($m, 'togglemaster_aws_credentials_expiry_seconds')], [0], 'expiry 0: no credentials';
    ok $h->wait_until(10, sub { $ng->metrics->{togglemaster_aws_credentials_refresh_errors_total} >= 1 }),
        'the fetch timed out: refresh error counted';
    like $ng->error_log, qr/AWS credentials from container credentials .*: no reply in time; retrying in \d+ ms, evaluation events wait/,
        'and logged, with the retry';
    kill 'CONT', $cpid;
    ok $h->wait_until(20, sub { ($ng->metrics->{togglemaster_events_sent_total} // 0) == $n }),
        "endpoint back: the $n waiting events are sent";
    $m = $ng->metrics;
    is TM::Nginx::m_sum($m, 'togglemaster_events_dropped_total'), 0, 'none dropped';
    cmp_ok $m->{togglemaster_aws_credentials_refreshes_total}, '>=', 1, 'credentials fetched';
    $ng->stop;

    # stalled again, at a graceful stop: the worker does not wait for it
    kill 'STOP', $cpid;
    $ng->start;
    $h->req(GET => $ng->url("/evaluate?user_id=quit-$_&flag_name=f")) for 1 .. 5;
    my $pid = $h->pid('nginx');
    my $t0 = time;
    kill 'QUIT', $pid;
    $h->wait_until(10, sub { !kill 0, $pid });
    my $took = time - $t0;
    ok !kill(0, $pid), sprintf('QUIT with a credentials fetch in flight: exited in %.2f s', $took);
    cmp_ok $took, '<', 3, 'not held by the fetch';
    like $ng->error_log, qr/5 evaluation events dropped: worker exiting/, 'the 5 waiting events counted as dropped at exit';
    kill 'CONT', $cpid;
}

# --- configuration -------------------------------------------------------------
{
    my $ng = TM::Nginx->new($h, redis => 0,
        http => "    togglemaster_events on;\n    togglemaster_sqs_queue_url https://sqs.eu-west-1.amazonaws.com/123456789012/q;\n");
    my $out = `@{[TM::Nginx::shell_env($h)]} nginx -t -p $ng->{dir} -c $ng->{dir}/nginx.conf 2>&1`;
    like $out, qr/no AWS credentials: .*AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN \(IRSA\).*Pod Identity/,
        'real AWS without credentials: says what to set';
    local @ENV{qw(AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_ENDPOINT_URL_STS)} =
        ("$dir/web-token", 'arn:aws:iam::123456789012:role/r', 'ftp://sts.example');
    $out = `@{[TM::Nginx::shell_env($h)]} nginx -t -p $ng->{dir} -c $ng->{dir}/nginx.conf 2>&1`;
    like $out, qr/STS endpoint: endpoint URL must be http/, 'bad AWS_ENDPOINT_URL_STS: clear error';
    delete @ENV{qw(AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_ENDPOINT_URL_STS)};
    local $ENV{AWS_CONTAINER_CREDENTIALS_FULL_URI} = 'http://10.1.2.3/v1/credentials';
    $out = `@{[TM::Nginx::shell_env($h)]} nginx -t -p $ng->{dir} -c $ng->{dir}/nginx.conf 2>&1`;
    like $out, qr/container credentials endpoint .*http only to a loopback address/,
        'container credentials over plain http to another host: refused, as the SDKs do';
    local $ENV{AWS_CONTAINER_CREDENTIALS_FULL_URI} = 'http://169.254.170.23/v1/credentials';
    $out = `@{[TM::Nginx::shell_env($h)]} nginx -t -p $ng->{dir} -c $ng->{dir}/nginx.conf 2>&1`;
    like $out, qr/AWS credentials for SQS: container credentials, from "http:\/\/169\.254\.170\.23\//,
        "EKS Pod Identity's address is fine";
    unlike $out, qr/http only to a loopback/, '... not refused';
}

done_testing;
