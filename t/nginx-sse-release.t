#!/usr/bin/env perl
# An event stream holds its connection, not a request (issue 14's memory
# goal): once the header is out the request is logged and freed with its
# header buffers. Such streams still get events and heartbeats, over
# HTTP/1.0 (unframed), TLS, with large headers, with a pipelined request
# or bytes sent after the request; the client closing (or half-closing) is
# noticed; a graceful stop ends them with the last chunk and does not wait
# for a heartbeat. stub_status and the access log show the request gone;
# /metrics the last fan-out. Real nginx + Redis.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(hmac_sha256_hex);
use IPC::Open2;
use Socket qw(SHUT_WR);
use Time::HiRes qw(time sleep);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::SSE qw(sopen sheader spump events nevents wait_events);

my $h = TM::Harness->new;
$h->redis;
my $J = TM::Harness->json;
my $SECRET = 'sse-release-secret-0123456789abcdef';

$h->redis_cmd('HSET', 'tm:envs', $_->[0], TM::Nginx::env_json(@$_)) for ['default', 1], ['staging', 2];
$h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', 1, 1));
$h->redis_cmd('SET', 'tm:version', 3);
$h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2 flag@staging rule@staging));

sub set_banner {
    my $on = shift;
    $h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', $on, 1));
    my $v = $h->redis_cmd('INCR', 'tm:version');
    $h->redis_cmd('PUBLISH', 'tm:changes', $J->encode({ version => $v + 0, kind => 'flag',
                  environment => 'staging', op => 'upsert', name => 'banner' }));
    return $v;
}

my $tls = $h->tls_files;
my $tls_port = TM::Harness::free_port();
my $access = $h->dir . '/sse-access.log';
my $ng = TM::Nginx->new($h, http => "togglemaster_sse_secret \"$SECRET\";", server => <<"CONF");
        listen 127.0.0.1:$tls_port ssl;
        ssl_certificate $tls/redis.pem;
        ssl_certificate_key $tls/redis.key;
        location = /status { stub_status; }
        location = /sse {
            access_log $access;
            togglemaster_sse on;
            togglemaster_sse_heartbeat 1s;
        }
        location = /sse-quiet { togglemaster_sse on; togglemaster_sse_heartbeat 1h; }
CONF
$ng->start;
ok $h->wait_until(10, sub { TM::Nginx::m_sum($ng->metrics, 'togglemaster_snapshot_version') >= 3 }), 'nginx synced';

my $exp = int(time) + 600;
my $tok = "$exp.staging." . hmac_sha256_hex("tm-sse-v1\nstaging\n$exp", $SECRET);
my $url = $ng->url("/sse?token=$tok");

# --- six streams of different shapes ---
my %S;
$S{plain} = sopen($url);
$S{http10} = sopen($url, http10 => 1);
# past client_header_buffer_size (1k): nginx moves it into a large buffer
$S{large} = sopen($url, headers => 'Cookie: c=' . ('x' x 6000) . "\r\n");
$S{pipelined} = sopen($url, after => "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
$S{chatty} = sopen($url);
my $tpid = open2(my $tout, my $tin, 'sh', '-c',
    "exec openssl s_client -quiet -connect 127.0.0.1:$tls_port -servername localhost 2>/dev/null");
print $tin "GET /sse?token=$tok HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n";
$tin->flush;
$S{tls} = sheader({ s => $tout, raw => '', text => '', eof => 0 });
is $S{$_}{status}, 200, "$_ stream: 200" for sort keys %S;
unlike $S{http10}{head}, qr/^Transfer-Encoding/mi, 'HTTP/1.0: not chunked';
like $S{tls}{head}, qr/^Transfer-Encoding: chunked/mi, 'TLS: chunked';
syswrite $S{chatty}{s}, "hello\n" x 200;   # a client has nothing to say; this is dropped

ok $h->wait_until(5, sub { TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_streams') == 6 }), 'six streams open';

# the requests are gone: nginx counts the streams' connections, but no
# request of theirs is reading or writing
my $st = $h->req(GET => $ng->url('/status'))->{content} // '';
my ($active) = $st =~ /Active connections: (\d+)/;
my ($reading, $writing) = $st =~ /Reading: (\d+) Writing: (\d+)/;
cmp_ok $active, '>=', 7, 'stub_status: the six streams are connections' or diag $st;
is $writing, 1, '... and one request writes (this one), none for the streams' or diag $st;
is $reading, 0, '... none reads';
# and logged when the stream began, with its status
my $lines = $h->wait_until(5, sub { open my $f, '<', $access or return 0; my @l = grep { m{"GET /sse\?token=} } <$f>; @l >= 6 ? \@l : 0 }) || [];
is scalar(@$lines), 6, 'the access log has the six streams while they are open';
is scalar(grep { /" 200 / } @$lines), 6, '... each 200';

# --- one change: every stream gets it once ---
my $v = set_banner(0);
for my $k (sort keys %S) {
    is wait_events($S{$k}, 1), 1, "$k: the event";
    is events($S{$k})->[0], $v, "$k: its id";
}
like $S{http10}{text}, qr/\A(?::\n\n)*id: $v\nevent: message\ndata: \{[^\r]*\}\n\n/, 'HTTP/1.0: the event unframed';
unlike $S{pipelined}{text}, qr/HTTP\/1\.1/, 'the pipelined request is not answered on the stream';
my $m = $ng->metrics;
is TM::Nginx::m_sum($m, 'togglemaster_sse_fanout_events'), 6, 'metrics: the last fan-out wrote six events';
my ($fanout) = TM::Nginx::m_all($m, 'togglemaster_sse_fanout_seconds');
ok defined $fanout && $fanout >= 0 && $fanout < 10, "metrics: its duration ($fanout s)";
cmp_ok TM::Nginx::m_sum($m, 'togglemaster_sse_events_sent_total'), '>=', 6, 'metrics: events sent';

# --- heartbeats go on ---
spump($_, 0.1) for values %S;
my %before = map { $_ => scalar(() = $S{$_}{text} =~ /^:\n\n/mg) } keys %S;
my $end = time + 2.5;
while (time < $end) { spump($_, 0.1) for values %S }
for my $k (sort keys %S) {
    my $n = () = $S{$k}{text} =~ /^:\n\n/mg;
    cmp_ok $n - $before{$k}, '>=', 1, "$k: heartbeats";
}

# --- a fan-out past one batch (512 streams a turn of the event loop) ---
my @many = map { sopen($url, no_wait => 1) } 1 .. 600;
sheader($_) for @many;
is scalar(grep { ($_->{status} // 0) == 200 } @many), 600, '600 more streams: 200';
ok $h->wait_until(5, sub { TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_streams') == 606 }), '606 streams open';
my $v2 = set_banner(1);
my $got = 0;
for my $st (@many) {
    $got++ if wait_events($st, 1, 2) == 1 && events($st)->[0] == $v2;
}
for my $st (values %S) {
    $got++ if wait_events($st, 2, 2) == 2 && events($st)->[2] == $v2;
}
spump($_, 0.01) for @many;
$got -= grep { nevents($_) != 1 } @many;
is $got, 606, 'every stream got the change once, past the first batch too';
is TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_fanout_events'), 606, 'metrics: the fan-out wrote 606 events';
close $_->{s} for @many;
ok $h->wait_until(5, sub { TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_streams') == 6 }), 'they leave the count';

# --- the client going is noticed ---
close $S{large}{s};
close $S{chatty}{s};
shutdown $S{pipelined}{s}, SHUT_WR;   # half-closed: the client is done
ok $h->wait_until(5, sub { TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_streams') == 3 }),
    'closed and half-closed streams leave the count';
spump($S{pipelined}, 3);
ok $S{pipelined}{eof}, '... the half-closed one is closed by nginx';
kill 'TERM', $tpid;
waitpid $tpid, 0;
ok $h->wait_until(5, sub { TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_streams') == 2 }),
    'the TLS client going is noticed';

# --- graceful stop: the last chunk, and no waiting for a heartbeat ---
my $quiet = sopen($ng->url("/sse-quiet?token=$tok"));
is $quiet->{status}, 200, 'a stream with a 1h heartbeat';
my $pid = $h->pid('nginx');
my $t0 = time;
$h->signal(QUIT => 'nginx');
spump($_, 5) for $S{plain}, $S{http10}, $quiet;
ok $S{plain}{eof} && $S{plain}{last_chunk}, 'graceful stop: the stream ends with the last chunk';
ok $quiet->{eof} && $quiet->{last_chunk}, '... so does the one whose heartbeat is an hour away';
ok $S{http10}{eof}, '... the HTTP/1.0 one is closed';
ok $h->wait_until(10, sub { !kill 0, $pid }), 'nginx exits (within a generous 10 s bound, not an hour)';
my $log = $ng->error_log;
unlike $log, qr/\[(alert|crit|emerg)\]|AddressSanitizer|runtime error|LeakSanitizer/, 'no alerts (no socket left open) or sanitizer reports';
done_testing;
