#!/usr/bin/env perl
# An event stream ends when its token expires (issue 14): the answer ends
# cleanly (the last chunk; the connection can serve the next request), a
# reconnect with the old URL gets 401, and the client's bulk refetch gets a
# new stream URL even with If-None-Match of its last answer (the ETag
# covers the URL: a 304 would leave the client retrying the old one).
# t/sse-browser.t shows the real web provider recovering this way. Real
# nginx + Redis.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex hmac_sha256_hex);
use Time::HiRes qw(time sleep);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::SSE qw(sopen spump events wait_events);

my $h = TM::Harness->new;
$h->redis;
my $J = TM::Harness->json;
my $SECRET = 'sse-expiry-secret-0123456789abcdef0';
my $KEY = 'tm_key_stg' . ('x' x 40);

$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($KEY), TM::Nginx::key2_json(client => 'staging', 2));
$h->redis_cmd('HSET', 'tm:envs', $_->[0], TM::Nginx::env_json(@$_)) for ['default', 1], ['staging', 2];
$h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', 0, 1));
$h->redis_cmd('SET', 'tm:version', 5);
$h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2 flag@staging rule@staging));
sub set_banner {
    my $on = shift;
    $h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', $on, 1));
    my $v = $h->redis_cmd('INCR', 'tm:version');
    $h->redis_cmd('PUBLISH', 'tm:changes', $J->encode({ version => $v + 0, kind => 'flag', environment => 'staging', op => 'upsert', name => 'banner' }));
    return $v;
}

my $ng = TM::Nginx->new($h, http => <<"CONF", server => <<'CONF');
    togglemaster_sse_secret "$SECRET";
    togglemaster_sse_token_ttl 5s;
CONF
        togglemaster_sse_url "http://$http_host/sse";
        location = /sse { togglemaster_sse on; togglemaster_sse_heartbeat 1s; }
        # the default heartbeat, 15 s: the expiry does not wait for it
        location = /sse-quiet { togglemaster_sse on; }
        location /k/ofrep/v1/ { togglemaster_api_key client; togglemaster_ofrep; }
CONF
$ng->start;

sub bulk { my $hdr = shift; $h->req(POST => $ng->url('/k/ofrep/v1/evaluate/flags'), { 'X-API-Key' => $KEY, %{ $hdr || {} } },
                                    { context => { targetingKey => 'u1' } }) }
sub expiry_of { ($_[0] // '') =~ /token=(\d+)\./ ? $1 : 0 }
sub token { my ($exp, $env) = @_; "$exp.$env." . hmac_sha256_hex("tm-sse-v1\n$env\n$exp", $SECRET) }

ok $h->wait_until(10, sub { (bulk()->{json}{flags} // [])->[0] }), 'staging evaluates';
my $b = bulk();
my $url = $b->{json}{eventStreams}[0]{url};
my $exp = expiry_of($url);
my $now = time;
ok $exp >= int($now) + 5 && $exp <= $now + 5 + 1.25 + 1, 'token ttl 5s: the URL lives 5 s, up to a quarter more';
is expiry_of(bulk()->{json}{eventStreams}[0]{url}), $exp, 'a bulk answer just after names the same URL';

my $A = sopen($url);
is $A->{status}, 200, 'stream open';
my $K = sopen($url);
is $K->{status}, 200, 'another on the same URL';
set_banner(1);
is wait_events($A, 1), 1, 'events flow before the expiry';
spump($A, 0.05) until $A->{last_chunk} || $A->{eof} || time > $exp + 3;
my $ended = time;
ok $A->{last_chunk}, 'at the expiry the stream ends with the last chunk (a clean end)';
ok $ended >= $exp && $ended < $exp + 2.5, sprintf('... at the expiry (%.1f s after)', $ended - $exp);
like $A->{text}, qr/^:\n\n/m, '... heartbeats went on until then';

# then the connection closes: a held stream no longer has a request that
# could keep it alive (it was released once the header was out)
spump($K, 0.05) until $K->{last_chunk} || $K->{eof} || time > $exp + 3;
ok $K->{last_chunk}, 'a second stream ended too';
spump($K, 2) unless $K->{eof};
ok $K->{eof}, '... and its connection closed after the last chunk';
close $K->{s};

my $r = $h->req(GET => $url);
is $r->{status}, 401, 'the old URL: 401';
like $r->{json}{error} // '', qr/expired.*evaluate the flags again/, '... saying to evaluate again';
$r = bulk({ 'If-None-Match' => $b->{headers}{etag} });
is $r->{status}, 200, 'the refetch with If-None-Match of the last answer: 200, not 304';
my $new = $r->{json}{eventStreams}[0]{url};
cmp_ok expiry_of($new), '>', $exp, '... naming a new stream URL';
is $r->{json}{flags}[0]{value}, $J->true, '... with the same flags';
my $B = sopen($new);
is $B->{status}, 200, 'the new URL opens';
set_banner(0);
is wait_events($B, 1), 1, '... and brings the next change';
close $B->{s};

# expiry sooner than the heartbeat
my $soon = int(time) + 2;
my $Q = sopen($ng->url('/sse-quiet?token=' . token($soon, 'staging')));
is $Q->{status}, 200, 'a stream whose token expires in 2 s, heartbeat 15 s';
spump($Q, 0.05) until $Q->{last_chunk} || $Q->{eof} || time > $soon + 3;
ok $Q->{last_chunk}, '... ends at the expiry, not at the next heartbeat';
close $Q->{s};

ok $h->wait_until(5, sub { TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_streams') == 0 }), 'metrics: no stream left open';
unlike $ng->error_log, qr/\[(alert|crit|emerg)\]|AddressSanitizer|runtime error/, 'no alerts or sanitizer reports';
done_testing;
