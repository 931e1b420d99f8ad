#!/usr/bin/env perl
# Request bodies on every exit of the module's handlers: a request with a
# body that is refused early (405, 404, 400, 401, the require gate, 413) or
# answered without reading it (GET with a body) must not leave its body on
# the connection, where it would be parsed as the next pipelined request.
# Each case: [request with a body that is itself a request] + [follow-up],
# pipelined on one keep-alive connection; exactly two answers must come back.
use strict; use warnings;
use Test::More;
use IO::Socket::INET;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $h = TM::Harness->new;
$h->redis;
TM::Nginx::set_flag($h, 'on', 1, quiet => 1);
$h->redis_cmd('SET', 'tm:version', 7);

my $ng = TM::Nginx->new($h, server => <<'CONF');
        location = /keyed { togglemaster_api_key on; togglemaster_health; }
        location /gated/ { togglemaster_require no-such-flag; }
        location /small/ofrep/v1/ { client_max_body_size 16; togglemaster_ofrep; }
CONF
$ng->start;
ok $h->wait_until(5, sub { $ng->evaluate('u', 'on') }), 'nginx serves';

# The smuggled request: were it parsed, a third answer (404 for /smuggled)
# would come back.
my $SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

sub request {
    my ($method, $path, $body, %hdr) = @_;
    my $r = "$method $path HTTP/1.1\r\nHost: x\r\n";
    $r .= "$_: $hdr{$_}\r\n" for sort keys %hdr;
    $r .= 'Content-Length: ' . length($body) . "\r\n" if defined $body;
    return "$r\r\n" . ($body // '');
}

# Sends the two requests at once; returns the statuses of all answers read
# until nginx closes (the follow-up says Connection: close).
sub pipelined {
    my ($first) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ng->port, Timeout => 10)
        or die "connect: $!";
    print $s $first . request(GET => '/health', undef, Connection => 'close');
    my $buf = '';
    my $end = time + 10;
    while (time < $end) {
        my $n = sysread($s, $buf, 65536, length $buf);
        last unless $n;
    }
    close $s;
    my @st;
    while ($buf =~ s{^HTTP/1\.1 (\d{3})[^\r\n]*\r\n(.*?)\r\n\r\n}{}s) {
        my ($status, $hdrs) = ($1, $2);
        push @st, $status;
        my ($len) = $hdrs =~ /^content-length:\s*(\d+)/mi;
        if (defined $len) {
            substr($buf, 0, $len) = '';
        } elsif ($hdrs =~ /^transfer-encoding:\s*chunked/mi) {
            $buf =~ s/^.*?\r\n0\r\n\r\n//s;
        }
    }
    return join ' ', @st;
}

my @cases = (
    [ 'evaluate: POST → 405',           request(POST => '/evaluate?user_id=u&flag_name=on', $SMUGGLED), '405 200' ],
    [ 'evaluate: GET with a body, bad query → 400', request(GET => '/evaluate?user_id=u', $SMUGGLED), '400 200' ],
    [ 'evaluate: GET with a body → 200', request(GET => '/evaluate?user_id=u&flag_name=on', $SMUGGLED), '200 200' ],
    [ 'evaluate: chunked POST → 405',   "POST /evaluate?user_id=u&flag_name=on HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                          . sprintf("%x\r\n%s\r\n0\r\n\r\n", length $SMUGGLED, $SMUGGLED), '405 200' ],
    [ 'OFREP: GET with a body → 405',   request(GET => '/ofrep/v1/evaluate/flags/on', $SMUGGLED), '405 200' ],
    [ 'OFREP: unknown path → 404',      request(POST => '/ofrep/v1/nope', $SMUGGLED), '404 200' ],
    [ 'OFREP: bad body → 400',          request(POST => '/ofrep/v1/evaluate/flags/on', $SMUGGLED), '400 200' ],
    [ 'OFREP: body over 64 KiB → 400',  request(POST => '/ofrep/v1/evaluate/flags/on', $SMUGGLED . (' ' x 70000)), '400 200' ],
    [ 'OFREP: over client_max_body_size → 413', request(POST => '/small/ofrep/v1/evaluate/flags/on', $SMUGGLED), '413' ],  # nginx closes after a 413,
    [ 'health: POST → 405',             request(POST => '/health', $SMUGGLED), '405 200' ],
    [ 'health: GET with a body → 200',  request(GET => '/health', $SMUGGLED), '200 200' ],
    [ 'metrics: POST → 405',            request(POST => '/metrics', $SMUGGLED), '405 200' ],
    [ 'metrics: GET with a body → 200', request(GET => '/metrics', $SMUGGLED), '200 200' ],
    [ 'API key missing → 401',          request(POST => '/keyed', $SMUGGLED), '401 200' ],
    [ 'API key wrong → 401',            request(POST => '/keyed', $SMUGGLED, Authorization => 'Bearer tm_key_nope'), '401 200' ],
    [ 'require gate closed → 404',      request(POST => '/gated/x', $SMUGGLED), '404 200' ],
);
for my $c (@cases) {
    my ($name, $req, $want) = @$c;
    is pipelined($req), $want, "$name, then the follow-up; the body is never a request";
}

done_testing;
