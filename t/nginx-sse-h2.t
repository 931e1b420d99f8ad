#!/usr/bin/env perl
# OFREP event streams and HTTP/2 (issue 14): events go straight to the
# socket, which an HTTP/2 connection frames, so a stream over HTTP/2 is
# refused with a clear 400, and bulk answers over
# HTTP/2 list no stream: the client keeps polling instead of retrying a
# stream it cannot have. Over HTTP/1.1 on the same server they do. Real
# nginx (h2c with prior knowledge, curl) + Redis.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::SSE qw(sopen);

plan skip_all => 'curl without HTTP/2' unless `curl -V 2>/dev/null` =~ /^Features:.*\bHTTP2\b/m;

my $h = TM::Harness->new;
$h->redis;
my $J = TM::Harness->json;
my $KEY = 'tm_key_stg' . ('x' x 40);
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($KEY), TM::Nginx::key2_json(client => 'staging', 2));
$h->redis_cmd('HSET', 'tm:envs', $_->[0], TM::Nginx::env_json(@$_)) for ['default', 1], ['staging', 2];
$h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', 1, 1));
$h->redis_cmd('SET', 'tm:version', 5);
$h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2 flag@staging rule@staging));

my $h2 = TM::Harness::free_port();
my $ng = TM::Nginx->new($h, http => 'togglemaster_sse_secret "sse-h2-secret-0123456789abcdef012345";',
                        server => <<"CONF");
        listen 127.0.0.1:$h2 http2;
        togglemaster_sse_url "http://\$http_host/sse";
        location = /sse { togglemaster_sse on; }
        location /k/ofrep/v1/ { togglemaster_api_key client; togglemaster_ofrep; }
CONF
$ng->start;

sub curl {
    my ($port, @args) = @_;
    my $out = `curl -s -i --max-time 5 --http2-prior-knowledge @{[ join ' ', map { "'$_'" } @args ]} 2>&1`;
    my ($head, $body) = split /\r\n\r\n/, $out, 2;
    my ($ver, $status) = ($head // '') =~ m{^HTTP/(\S+) (\d+)};
    return { version => $ver, status => $status, head => $head // '', json => scalar eval { $J->decode($body // '') } };
}
my @bulk = ('-X', 'POST', '-H', "X-API-Key: $KEY", '-H', 'Content-Type: application/json',
            '-d', '{"context":{"targetingKey":"u"}}');

ok $h->wait_until(10, sub { ($h->req(POST => $ng->url('/k/ofrep/v1/evaluate/flags'), { 'X-API-Key' => $KEY },
                                     { context => { targetingKey => 'u' } })->{json}{flags} // [])->[0] }), 'staging evaluates';
my $r1 = $h->req(POST => $ng->url('/k/ofrep/v1/evaluate/flags'), { 'X-API-Key' => $KEY }, { context => { targetingKey => 'u' } });
my $url = $r1->{json}{eventStreams}[0]{url} // '';
like $url, qr{/sse\?token=}, 'bulk over HTTP/1.1: a stream is listed';

my $r = curl($h2, @bulk, "http://127.0.0.1:$h2/k/ofrep/v1/evaluate/flags");
is $r->{version}, '2', 'bulk over HTTP/2';
is $r->{status}, 200, '... 200';
is $r->{json}{flags}[0]{value}, $J->true, '... the flags';
ok !exists $r->{json}{eventStreams}, '... and no stream listed (it would be refused)';

my ($token) = $url =~ /token=(\S+)$/;
$r = curl($h2, "http://127.0.0.1:$h2/sse?token=$token");
is $r->{version}, '2', 'the stream over HTTP/2, with a valid token';
is $r->{status}, 400, '... 400';
like $r->{json}{error} // '', qr/HTTP\/1\.x only.*HTTP\/1\.1, or poll/, '... saying to use HTTP/1.1 or poll';
$r = curl($h2, "http://127.0.0.1:$h2/sse?token=forged");
is $r->{status}, 401, 'a forged token over HTTP/2: 401 first';

my $st = sopen($ng->url("/sse?token=$token"));
is $st->{status}, 200, 'the same token over HTTP/1.1: the stream opens';
close $st->{s};

unlike $ng->error_log, qr/\[(alert|crit|emerg)\]|AddressSanitizer|runtime error/, 'no alerts or sanitizer reports';
done_testing;
