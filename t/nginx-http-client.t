#!/usr/bin/env perl
# The nginx module's outbound HTTP client (http.c), seen through the SQS
# producer against a scripted HTTP peer that answers as it is told — the
# connection behaviours moto cannot be made to show on cue (the SQS
# protocol itself is tested against moto in t/nginx-events.t):
# - a connection kept alive for the next request;
# - that kept-alive connection closed by the other side after it took the
#   next request: sent once more on a new connection, no error counted;
# - a chunked reply (with a chunk extension), decoded;
# - a reply larger than the client takes: a reply error, counted and
#   logged, and the events go with the next request.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use IO::Socket::INET;
use POSIX qw(_exit);
use Time::HiRes qw(time sleep);

my $h = TM::Harness->new;
my $dir = $h->dir;
$SIG{PIPE} = 'IGNORE';

delete @ENV{qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE
               AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_CONTAINER_CREDENTIALS_FULL_URI
               AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_ENDPOINT_URL AWS_ENDPOINT_URL_SQS
               AWS_SQS_URL)};

my @kids;
END { kill 'KILL', @kids if @kids; waitpid $_, 0 for @kids }

sub read_request {   # headers and body of one HTTP/1.1 request, or ()
    my $c = shift;
    my ($head, $n) = ('', 0);
    while (defined(my $l = <$c>)) { $head .= $l; last if $l eq "\r\n" || ++$n > 200 }
    return () unless $head =~ /\r\n\r\n$/;
    my ($len) = $head =~ /^Content-Length:\s*(\d+)/mi;
    my $body = '';
    read($c, $body, $len) if $len;
    return ($head, $body);
}

# The fake SQS: one connection at a time (one worker), requests numbered
# from 1 across connections, each line of $log "<connection> <request>".
my $log = "$dir/sqs.log";
my $srv = IO::Socket::INET->new(Listen => 8, LocalAddr => '127.0.0.1', LocalPort => 0, ReuseAddr => 1)
    or die "listen: $!";
my $endpoint = 'http://127.0.0.1:' . $srv->sockport;
my $pid = fork // die "fork: $!";
if (!$pid) {
    my ($conn, $k) = (0, 0);
    while (my $c = $srv->accept) {
        $conn++;
        while (my ($head, $body) = read_request($c)) {
            $k++;
            if (open my $f, '>>', $log) { print $f "$conn $k\n"; close $f }
            my @ids = $body =~ /"Id":"(m\d+)"/g;
            my $json = '{"Successful":[' . join(',', map { qq({"Id":"$_","MessageId":"id-$_","MD5OfMessageBody":"x"}) } @ids)
                       . '],"Failed":[]}';
            if ($k == 2) {          # closed with the request unanswered
                last;
            } elsif ($k == 3) {     # chunked
                my $half = int(length($json) / 2);
                printf $c "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
                          . "Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\n\r\n",
                          $half, substr($json, 0, $half), length($json) - $half, substr($json, $half);
            } elsif ($k == 4) {     # more than the 1 MiB the client takes
                my $big = '{"Successful":[],"Failed":[],"Pad":"' . ('x' x (2 * 1024 * 1024)) . '"}';
                print $c "HTTP/1.1 200 OK\r\nContent-Length: " . length($big) . "\r\n\r\n", $big;
                last;
            } else {
                print $c "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
                         . "Content-Length: " . length($json) . "\r\n\r\n", $json;
            }
        }
        close $c;
    }
    _exit(0);
}
push @kids, $pid;
close $srv;

my $ng = TM::Nginx->new($h, redis => 0, http => <<"CONF");
    togglemaster_events on;
    togglemaster_sqs_queue_url $endpoint/123456789012/tm-http-client;
    togglemaster_aws_endpoint $endpoint;
    togglemaster_aws_region us-east-1;
    togglemaster_events_batch 50 200ms;
    togglemaster_events_timeout 2s;
    togglemaster_events_backoff_max 300ms;
CONF
$ng->start;

sub metrics { $ng->metrics }
sub errors { my $m = metrics(); my $s = 0; $s += $m->{$_} for grep { /^togglemaster_sqs_errors_total\{/ } keys %$m; $s }
sub sent { metrics()->{togglemaster_events_sent_total} // 0 }
sub requests { open my $f, '<', $log or return (); my @l = <$f>; chomp @l; @l }
sub evaluate { my ($p, $n) = @_; $h->req(GET => $ng->url("/evaluate?user_id=$p-$_&flag_name=f")) for 1 .. $n }

# 1: the connection kept
evaluate('a', 3);
ok $h->wait_until(10, sub { sent() == 3 }), '3 events sent';
is_deeply [requests()], ['1 1'], 'one request, on connection 1';
is errors(), 0, 'no SQS error';

# 2: the kept-alive connection closed under the next request
evaluate('b', 3);
ok $h->wait_until(10, sub { sent() == 6 }),
    'kept-alive connection closed, then a chunked reply: 3 more events sent';
is_deeply [requests()], ['1 1', '1 2', '2 3'],
    'the next request went on the kept-alive connection, then once more on a new one';
is errors(), 0, 'a resend on a new connection is no error';
is metrics()->{togglemaster_sqs_requests_total}, 2, 'two SendMessageBatch requests counted';

# 3: a reply too large
evaluate('c', 3);
ok $h->wait_until(10, sub { sent() == 9 }), 'after a reply too large: the 3 events sent again';
is metrics()->{'togglemaster_sqs_errors_total{kind="reply"}'}, 1, 'reply too large: one reply error';
like $ng->error_log, qr/SQS SendMessageBatch to 127\.0\.0\.1:\d+: reply too large; 3 evaluation events will be retried/,
    'reply too large: logged';
my @r = requests();
is scalar(@r), 5, 'two more requests';
my ($c4, $c5) = map { (split ' ', $_)[0] } @r[3, 4];
cmp_ok $c5, '>', $c4, 'the retry on a new connection';

$ng->stop;
done_testing;
