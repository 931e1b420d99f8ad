#!/usr/bin/env perl
# A stream dropped because its client does not read (its send buffer full)
# is closed at once, not when the client next sends something: the drop
# happens in a snapshot swap, outside the connection's own handler (issue
# 14). Real nginx + Redis.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(time sleep);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::SSE qw(sopen spump nevents);
my $h = TM::Harness->new; $h->redis; my $J = TM::Harness->json;
my $KEY = 'tm_key_stg' . ('x' x 40);
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($KEY), TM::Nginx::key2_json(client => 'staging', 2));
$h->redis_cmd('HSET', 'tm:envs', $_->[0], TM::Nginx::env_json(@$_)) for ['default', 1], ['staging', 2];
$h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', 0, 1));
$h->redis_cmd('SET', 'tm:version', 5);
$h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2 flag@staging rule@staging));
my $slow = TM::Harness::free_port();
my $ng = TM::Nginx->new($h, http => 'togglemaster_sse_secret "drop-secret-0123456789abcdef0123456";', server => <<"CONF");
        listen 127.0.0.1:$slow sndbuf=4k;
        togglemaster_sse_url "http://\$http_host/sse";
        location = /sse { togglemaster_sse on; togglemaster_sse_heartbeat 1s; }
        location /k/ofrep/v1/ { togglemaster_api_key client; togglemaster_ofrep; }
CONF
$ng->start;
sub bulk { $h->req(POST => $ng->url('/k/ofrep/v1/evaluate/flags'), { 'X-API-Key' => $KEY }, { context => { targetingKey => 'u' } }) }
$h->wait_until(10, sub { (bulk()->{json}{flags} // [])->[0] });
my $url = bulk()->{json}{eventStreams}[0]{url};
my $A = sopen($url);
my $S = sopen($url, port => $slow, rcvbuf => 1024);
for my $i (1 .. 400) {
    $h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', $i % 2, 1));
    my $v = $h->redis_cmd('INCR', 'tm:version');
    $h->redis_cmd('PUBLISH', 'tm:changes', $J->encode({ version => $v + 0, kind => 'flag', environment => 'staging', op => 'upsert', name => 'banner' }));
    spump($A, 0.005);
    last if TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_clients_dropped_total') >= 1;
}
is TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_clients_dropped_total'), 1, 'the client that does not read is dropped';
ok $h->wait_until(3, sub { TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_streams') == 1 }),
    '... and its stream closed at once (the reading one stays)';
ok !$A->{eof}, 'the reading client is still connected';
my $before = nevents($A);
$h->redis_cmd('HSET', 'tm:flags@staging', 'other', TM::Nginx::env_flag_json('other', 1, 1));
my $v = $h->redis_cmd('INCR', 'tm:version');
$h->redis_cmd('PUBLISH', 'tm:changes', $J->encode({ version => $v + 0, kind => 'flag', environment => 'staging', op => 'upsert', name => 'other' }));
my $end = time + 5;
spump($A, 0.05) while nevents($A) <= $before && time < $end;
cmp_ok nevents($A), '>', $before, '... and keeps getting events';
close $S->{s};
close $A->{s};
unlike $ng->error_log, qr/\[(alert|crit|emerg)\]|AddressSanitizer|runtime error/, 'no alerts or sanitizer reports';
done_testing;
