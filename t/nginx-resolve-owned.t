#!/usr/bin/env perl
# The SQS client keeps its own copy of the peer's address and name: the
# endpoint's DNS answer they came from is freed two re-resolutions later,
# while a kept-alive connection lives on and its failure is logged with the
# peer's name. Here: a connection is made to the first answer (127.0.0.2),
# the DNS answer changes twice (that answer is freed), then the next batch
# on the same connection times out and is logged. The log must name
# 127.0.0.2 (and, under ASan, nothing reads freed memory).
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::DNS;
use TM::Nginx;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

my $h = TM::Harness->new;
my $dir = $h->dir;
delete @ENV{qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE AWS_ENDPOINT_URL
               AWS_ENDPOINT_URL_SQS AWS_SQS_URL AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN
               AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)};
my @kids;
END { for (@kids) { kill 'KILL', $_; waitpid $_, 0 } }

# --- DNS (TM::DNS): A records as the test says, TTL 1 s ---
my $dns = TM::DNS->new($dir);
$dns->answer_with('127.0.0.2');
my $dport = $dns->port;
my $pid;

# --- SQS on 127.0.0.2: answers the first batch (keep-alive), then reads
# and never answers, so the next batch on that connection times out ---
my $srv = IO::Socket::INET->new(Listen => 5, LocalAddr => '127.0.0.2', LocalPort => 0, ReuseAddr => 1)
    or die "listen 127.0.0.2: $!";
my $sport = $srv->sockport;
$pid = fork // die "fork: $!";
if (!$pid) {
    my $answered = 0;
    while (my $c = $srv->accept) {
        my $buf = '';
        while (1) {
            my $n = sysread($c, $buf, 65536, length $buf) or last;
            next unless $buf =~ /\r\n\r\n/;
            my ($len) = $buf =~ /^content-length:\s*(\d+)/mi;
            my $hl = index($buf, "\r\n\r\n") + 4;
            next if length($buf) < $hl + ($len // 0);
            my $body = substr $buf, $hl, $len // 0;
            $buf = substr $buf, $hl + ($len // 0);
            next if $answered++;   # the second and later: silence
            my $ok = join ',', map { qq({"Id":"$_","MessageId":"id-$_","MD5OfMessageBody":"x"}) }
                               $body =~ /"Id"\s*:\s*"(m\d+)"/g;
            my $reply = qq({"Successful":[$ok],"Failed":[]});
            print $c "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
                   . "Content-Length: " . length($reply) . "\r\n\r\n$reply";
        }
    }
    exit 0;
}
push @kids, $pid;
close $srv;

my $ng = TM::Nginx->new($h, redis => 0, workers => 1, http => <<"CONF");
    resolver 127.0.0.1:$dport valid=1s ipv6=off;
    resolver_timeout 1s;
    togglemaster_events on;
    togglemaster_sqs_queue_url http://localhost:$sport/000000000000/q;
    togglemaster_aws_endpoint http://localhost:$sport;
    togglemaster_aws_region us-east-1;
    togglemaster_events_batch 10 100ms;
    togglemaster_events_timeout 1s;
    togglemaster_events_attempts 100;
    togglemaster_events_backoff_max 300ms;
CONF
$ng->start;

ok $h->wait_until(10, sub { $ng->error_log =~ /"localhost" now resolves to 127\.0\.0\.2:$sport/ }),
    'the worker resolved the endpoint: 127.0.0.2';
is $h->req(GET => $ng->url('/evaluate?user_id=a&flag_name=f'))->{status}, 200, 'an evaluation';
ok $h->wait_until(10, sub { ($ng->metrics->{togglemaster_events_sent_total} // 0) == 1 }),
    '... its event went to 127.0.0.2 (the connection stays open)';

$dns->answer_with('127.0.0.4');
ok $h->wait_until(10, sub { $ng->error_log =~ /now resolves to 127\.0\.0\.4:$sport/ }), 'DNS answer changed once';
$dns->answer_with('127.0.0.5');
ok $h->wait_until(10, sub { $ng->error_log =~ /now resolves to 127\.0\.0\.5:$sport/ }),
    'and twice: the first answer is freed';

is $h->req(GET => $ng->url('/evaluate?user_id=b&flag_name=f'))->{status}, 200, 'another evaluation';
ok $h->wait_until(10, sub { $ng->error_log =~ /SQS SendMessageBatch to / }),
    '... its batch went on the kept-alive connection and timed out';
my ($to) = $ng->error_log =~ /SQS SendMessageBatch to (.*?): /;
is $to, "127.0.0.2:$sport", 'the failure names the peer of that connection, intact';
done_testing;
