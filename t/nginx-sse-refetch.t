#!/usr/bin/env perl
# The refetch an event stream triggers (ADR-0008, issue 14): the client sends
# the event's etag and lastModified back on the bulk request
# (flagConfigEtag / flagConfigLastModified, or sseEtag / sseLastModified).
# They are validated (bad: 400 OFREP error), and the etag's version means
# "the client was told of this change": a worker whose snapshot has not
# reached it yet (here: the change is in Redis, its PUBLISH held back) parks
# the request without blocking and answers once the snapshot catches up,
# or after togglemaster_sse_refetch_wait with what it has, marked stale.
# Such answers are never to be cached. Real nginx + Redis.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(time sleep);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::SSE qw(sopen spump events wait_events send_request read_reply);

my $h = TM::Harness->new;
$h->redis;
my $J = TM::Harness->json;
my $SECRET = 'sse-refetch-secret-0123456789abcdef';
my $KEY = 'tm_key_stg' . ('x' x 40);

$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($KEY), TM::Nginx::key2_json(client => 'staging', 2));
$h->redis_cmd('HSET', 'tm:envs', $_->[0], TM::Nginx::env_json(@$_)) for ['default', 1], ['staging', 2];
$h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', 0, 1));
$h->redis_cmd('SET', 'tm:version', 5);
$h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2 flag@staging rule@staging));

# the change reaches Redis at once; the workers hear of it when it is published
sub write_change { my $on = shift; $h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', $on, 1)); $h->redis_cmd('INCR', 'tm:version') }
sub publish { my $v = shift; $h->redis_cmd('PUBLISH', 'tm:changes', $J->encode({ version => $v + 0, kind => 'flag', environment => 'staging', op => 'upsert', name => 'banner' })) }

# the periodic version check would find a held-back change by itself: not
# within this test
my $ng = TM::Nginx->new($h, check_interval => '60s', http => <<"CONF", server => <<'CONF');
    togglemaster_sse_secret "$SECRET";
CONF
        togglemaster_sse_url "http://$http_host/sse";
        location = /sse { togglemaster_sse on; }
        location /k/ofrep/v1/ { togglemaster_api_key client; togglemaster_ofrep; togglemaster_sse_refetch_wait 3s; }
        location /nowait/ofrep/v1/ { togglemaster_api_key client; togglemaster_ofrep; togglemaster_sse_refetch_wait 0; }
CONF
$ng->start;

my $CTX = { context => { targetingKey => 'u1' } };
sub bulk_url { my ($q, $loc) = @_; $ng->url(($loc // '/k') . '/ofrep/v1/evaluate/flags' . ($q // '')) }
sub bulk { my ($q, $hdr, $loc) = @_; $h->req(POST => bulk_url($q, $loc), { 'X-API-Key' => $KEY, %{ $hdr || {} } }, $CTX) }
sub value { my $r = shift; (($r->{json} // {})->{flags} // [])->[0]{value} }
sub q_etag { '?flagConfigEtag=' . uri_escape(shift) . (@_ ? '&flagConfigLastModified=' . uri_escape(shift) : '') }
my $MD5 = '0' x 32;
sub uri_escape { my $s = shift; $s =~ s/([^A-Za-z0-9\-._~])/sprintf '%%%02X', ord $1/ge; $s }

ok $h->wait_until(10, sub { defined value(bulk()) }), 'staging evaluates';
my $plain = bulk();
is $plain->{headers}{'cache-control'}, undef, 'a plain bulk answer: no Cache-Control';
my $url = $plain->{json}{eventStreams}[0]{url};

# --- the event's etag: <version>-<md5>, the same one a refetch sends back ---
my $A = sopen($url);
is $A->{status}, 200, 'stream open';
my $v6 = write_change(1);
publish($v6);
is wait_events($A, 1), 1, 'a change: an event';
my $ev = $J->decode(events($A)->[1]);
like $ev->{etag}, qr/^\d+-[0-9a-f]{32}$/, 'etag: <version>-<32 hex digits>';
is((split /-/, $ev->{etag})[0], events($A)->[0], '... the version being the event id');
my $t0 = time;
my $r = bulk(q_etag($ev->{etag}, $ev->{lastModified}));
is $r->{status}, 200, 'the refetch the event triggers (the real provider\'s parameters): 200';
ok time - $t0 < 2, '... at once: this worker has the version';
is value($r), $J->true, '... with the new value';
is $r->{headers}{'cache-control'}, 'no-store', '... not to be cached';
ok !exists $r->{headers}{'tm-stale'} && !exists $r->{json}{metadata}, '... and not stale';
$r = bulk("?sseEtag=" . uri_escape("\"$ev->{etag}\"") . "&sseLastModified=$ev->{lastModified}");
is $r->{status}, 200, 'sseEtag (quoted, as an ETag) and sseLastModified: 200';
is $r->{headers}{'cache-control'}, 'no-store', '... not to be cached';
my $etag = $r->{headers}{etag};
$r = bulk(q_etag($ev->{etag}), { 'If-None-Match' => $etag });
is $r->{status}, 304, 'with If-None-Match of the same answer: 304';
is $r->{headers}{'cache-control'}, 'no-store', '... not to be cached either';

# --- a worker behind the event: it waits for the snapshot, without blocking ---
my $v7 = write_change(0);
my $c = send_request(POST => bulk_url(q_etag("$v7-$MD5", int time)), { 'X-API-Key' => $KEY }, $CTX);
my $early = read_reply($c, 0.5);
is $early->{status}, undef, 'told of a version this worker does not have: no answer yet';
$t0 = time;
$r = bulk();
is $r->{status}, 200, 'meanwhile the worker answers others';
ok time - $t0 < 2, '... at once (it is not blocked)';
is value($r), $J->true, '... with what it has (the change is not published yet)';
my $published = time;
publish($v7);
my $late = read_reply($c, 5);
note sprintf 'answered %.1f ms after the PUBLISH', ($c->{sent} + $late->{at} - $published) * 1000;
is $late->{status}, 200, 'the change published: the waiting refetch is answered';
is $late->{json}{flags}[0]{value}, $J->false, '... with the new value, not the stale one';
ok $late->{at} < 2.5, '... as the snapshot caught up, before the 3 s bound';
is $late->{headers}{'cache-control'}, 'no-store', '... not to be cached';
ok !exists $late->{headers}{'tm-stale'}, '... and not marked stale';
is wait_events($A, 2), 2, 'the stream heard of it too';

# --- past the bound: what the worker has, said to be stale ---
my $far = $v7 + 100;
$c = send_request(POST => bulk_url(q_etag("$far-$MD5")), { 'X-API-Key' => $KEY }, $CTX);
$r = read_reply($c, 8);
is $r->{status}, 200, 'a version that never comes: answered';
ok $r->{at} >= 2.5 && $r->{at} < 6, sprintf('... after the 3 s bound (%.1f s)', $r->{at});
is $r->{json}{flags}[0]{value}, $J->false, '... with what the worker has';
is $r->{headers}{'tm-stale'}, "version=$v7; wanted=$far", '... TM-Stale says so';
is_deeply $r->{json}{metadata}, { stale => $J->true, snapshotVersion => $v7, eventVersion => $far }, '... as does the metadata';
is $r->{headers}{'cache-control'}, 'no-store', '... not to be cached';
like $r->{json}{eventStreams}[0]{url} // '', qr/token=/, '... still listing the stream';

$t0 = time;
$r = bulk(q_etag("$far-$MD5"), {}, '/nowait');
ok time - $t0 < 1.5, 'togglemaster_sse_refetch_wait 0: no wait';
is $r->{headers}{'tm-stale'}, "version=$v7; wanted=$far", '... stale at once';

# what the environment evaluates is what the event named: not behind, even
# with a version this worker never had (a Redis that started over)
my $now_ev = sopen($url, last_id => 0);
wait_events($now_ev, 1);
my ($md5) = $J->decode(events($now_ev)->[1])->{etag} =~ /-([0-9a-f]{32})$/;
close $now_ev->{s};
$r = bulk(q_etag("$far-$md5"), {}, '/nowait');
ok !exists $r->{headers}{'tm-stale'}, 'a later version with the current md5: not stale';

# a client that goes while its refetch waits
$c = send_request(POST => bulk_url(q_etag("$far-$MD5")), { 'X-API-Key' => $KEY }, $CTX);
sleep 0.3;
close $c->{s};
sleep 3;
is bulk()->{status}, 200, 'a client gone while waiting: the worker goes on';

# --- bad values: a 400 OFREP error, nothing evaluated ---
for my $bad (['flagConfigEtag=abc', 'etag'], ['flagConfigEtag=0-' . $MD5, 'etag'],
             ['sseEtag=12', 'etag'], ['flagConfigEtag=12-' . ('A' x 32), 'etag'],
             ['flagConfigEtag=' . ('1' x 200), 'long'],
             ['flagConfigLastModified=yesterday', 'lastModified'], ['sseLastModified=-1', 'lastModified'],
             ['flagConfigLastModified=2026-02-30T00:00:00Z', 'lastModified'],
             ['flagConfigEtag=&x=1', 'etag']) {
    my ($q, $what) = @$bad;
    $r = bulk("?$q");
    is $r->{status}, 400, "$q: 400";
    is $r->{json}{errorCode}, 'PARSE_ERROR', '... errorCode PARSE_ERROR';
    like $r->{json}{errorDetails} // '', $what eq 'long' ? qr/not that long/ : qr/\Q$what\E/, "... saying what is wrong with the $what";
}
for my $good ('1771622898', '2026-02-20T21:28:18Z', '2026-02-20T22:28:18%2B01:00', 'Fri,+20+Feb+2026+21:28:18+GMT',
              'Fri%2C%2020%20Feb%202026%2021%3A28%3A18%20GMT') {
    is bulk("?flagConfigLastModified=$good")->{status}, 200, "flagConfigLastModified=$good: accepted";
}

# --- bad directive values stop nginx at start ---
sub conf_error {
    my ($loc) = @_;
    my $f = $h->dir . '/bad.conf';
    open my $fh, '>', $f or die;
    print $fh "load_module $TM::Nginx::MODULE;\nerror_log stderr;\nevents {}\nhttp {\n"
            . "server { listen 127.0.0.1:1; location /o/ { togglemaster_ofrep; $loc } } }\n";
    close $fh;
    my $out = `@{[ TM::Nginx::shell_env($h) ]} nginx -t -c $f -p @{[ $h->dir ]} -e stderr 2>&1`;
    return $? ? $out : '';
}
is conf_error('togglemaster_sse_refetch_wait 500ms;'), '', 'refetch wait 500ms: fine';
like conf_error('togglemaster_sse_refetch_wait 11s;'), qr/must be 0\.\.10s/, 'refetch wait 11s: refused';
like conf_error('togglemaster_sse_refetch_wait soon;'), qr/invalid value/, 'refetch wait "soon": refused';

close $A->{s};
unlike $ng->error_log, qr/\[(alert|crit|emerg)\]|AddressSanitizer|runtime error/, 'no alerts or sanitizer reports';
done_testing;
