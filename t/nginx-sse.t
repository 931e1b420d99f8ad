#!/usr/bin/env perl
# OFREP event streams served by the module (issue 14): bulk answers list a
# stream URL with a signed token (never the API key); the stream sends a
# refetchEvaluation event when the caller's environment changes and none
# for other environments, heartbeats as SSE comments, Last-Event-ID on
# reconnect; expired, forged and missing tokens get 401, the per-worker cap
# 503 + Retry-After; a client that never reads is dropped while others keep
# flowing; a reload closes streams cleanly; Redis down keeps streams open
# and quiet, and its return brings one event. Real nginx + Redis.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex hmac_sha256_hex);
use Time::HiRes qw(time sleep);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::SSE qw(sopen spump events nevents wait_events);

my $h = TM::Harness->new;
$h->redis;
my $J = TM::Harness->json;
my $SECRET = 'sse-test-secret-0123456789abcdef0123';

my %K = map { $_ => "tm_key_$_" . ('x' x 40) } qw(stg prod);
# what the daemons hold; written again when Redis comes back empty
sub populate {
    my ($stg_banner, $prod_banner, $version) = @_;
    $h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{stg}), TM::Nginx::key2_json(client => 'staging', 2));
    $h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{prod}), TM::Nginx::key2_json(server => 'production', 3));
    $h->redis_cmd('HSET', 'tm:envs', $_->[0], TM::Nginx::env_json(@$_)) for ['default', 1], ['staging', 2], ['production', 3];
    $h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', $stg_banner, 1));
    $h->redis_cmd('HSET', 'tm:flags@production', 'banner', TM::Nginx::env_flag_json('banner', $prod_banner, 1));
    $h->redis_cmd('HSET', 'tm:flags', 'banner', TM::Nginx::env_flag_json('banner', 0, 1));
    $h->redis_cmd('SET', 'tm:version', $version);
    $h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2 flag@staging rule@staging
                                         flag@production rule@production));
}
populate(1, 0, 3);

sub publish { my %m = @_; my $v = $h->redis_cmd('INCR', 'tm:version'); $h->redis_cmd('PUBLISH', 'tm:changes', $J->encode({ version => $v + 0, %m })); $v }
sub set_env_flag {
    my ($env, $name, $on) = @_;
    $h->redis_cmd('HSET', "tm:flags\@$env", $name, TM::Nginx::env_flag_json($name, $on, 1));
    return publish(kind => 'flag', environment => $env, op => 'upsert', name => $name);
}

my $slow_port = TM::Harness::free_port();
my $ng = TM::Nginx->new($h, http => <<"CONF", server => <<"CONF");
    togglemaster_sse_secret "$SECRET";
CONF
        # a tiny send buffer on this port: a client that never reads fills it
        listen 127.0.0.1:$slow_port sndbuf=4k;
        togglemaster_sse_url "http://\$http_host/sse";
        location /k/ofrep/v1/ { togglemaster_api_key server client; togglemaster_ofrep; }
        # an API key asked for around it does not apply: the token is the
        # stream's credential
        location = /sse-keyed { togglemaster_api_key on; togglemaster_sse on; }
        location = /sse {
            togglemaster_sse on;
            togglemaster_sse_heartbeat 1s;
            togglemaster_sse_max_connections 6;
        }
CONF
$ng->start;

sub bulk {
    my ($key, $hdr) = @_;
    return $h->req(POST => $ng->url('/k/ofrep/v1/evaluate/flags'), { 'X-API-Key' => $key, %{ $hdr || {} } },
                   { context => { targetingKey => 'u1' } });
}

ok $h->wait_until(10, sub { (bulk($K{stg})->{json}{flags} // [])->[0] }), 'staging evaluates';

# --- the stream URL in bulk answers ---
my $b = bulk($K{stg});
is $b->{status}, 200, 'bulk: 200';
my $es = $b->{json}{eventStreams};
is ref $es, 'ARRAY', 'bulk lists eventStreams';
is $es->[0]{type}, 'sse', 'type sse';
is $es->[0]{inactivityDelaySec}, 120, 'inactivityDelaySec: the default 120';
my $url = $es->[0]{url} // '';
like $url, qr{^http://127\.0\.0\.1:\d+/sse\?token=\d+\.staging\.[0-9a-f]{64}$}, 'url: the stream with a staging token';
unlike $url, qr/\Q$K{stg}\E|tm_key/, 'no API key in the URL';
my $etag = $b->{headers}{etag};
is bulk($K{stg}, { 'If-None-Match' => $etag })->{status}, 304, 'the ETag still matches (the same stream URL within a quarter of the token lifetime)';
my $prod_url = bulk($K{prod})->{json}{eventStreams}[0]{url} // '';
like $prod_url, qr{token=\d+\.production\.}, 'a production key gets a production stream';
# (their meaning: t/nginx-sse-refetch.t)
my $b2 = $h->req(POST => $ng->url('/k/ofrep/v1/evaluate/flags?sseEtag=%221-' . ('0' x 32) . '%22&sseLastModified=1700000000'),
                 { 'X-API-Key' => $K{stg} }, { context => { targetingKey => 'u1' } });
is $b2->{status}, 200, 'bulk accepts sseEtag and sseLastModified';
is_deeply $b2->{json}{flags}, $b->{json}{flags}, '... and answers the same flags';

# --- tokens ---
my ($tok) = $url =~ /token=(\S+)$/;
my $base = $ng->url('/sse?token=');
sub token { my ($exp, $env, $secret) = @_; $exp = int $exp; "$exp.$env." . hmac_sha256_hex("tm-sse-v1\n$env\n$exp", $secret // $SECRET) }
my $r = $h->req(GET => $ng->url('/sse'));
is $r->{status}, 401, 'no token: 401';
like $r->{json}{error} // '', qr/token is required/, '... saying so';
$r = $h->req(GET => $base . token(time - 5, 'staging'));
is $r->{status}, 401, 'expired token: 401';
like $r->{json}{error} // '', qr/expired/, '... saying it expired';
$r = $h->req(GET => $base . token(time + 600, 'staging', 'another-secret-another-secret-xx'));
is $r->{status}, 401, 'token of another secret: 401';
like $r->{json}{error} // '', qr/invalid stream token/, '... invalid';
(my $other_env = $tok) =~ s/\.staging\./.production./;
is $h->req(GET => $base . $other_env)->{status}, 401, 'staging signature on a production token: 401';
is $h->req(GET => $base . 'garbage')->{status}, 401, 'garbage: 401';
is $h->req(POST => $url, {}, '{}')->{status}, 405, 'POST to the stream: 405';

my $keyed = sopen($ng->url('/sse-keyed?token=' . token(time + 600, 'staging')));
is $keyed->{status}, 200, 'togglemaster_api_key does not apply to a stream location';
close $keyed->{s};

# --- bad directive values stop nginx at start ---
sub conf_error {
    my ($http, $loc) = @_;
    my $f = $h->dir . '/bad.conf';
    open my $c, '>', $f or die;
    print $c "load_module $TM::Nginx::MODULE;\nerror_log stderr;\nevents {}\nhttp {\n$http\n"
           . "server { listen 127.0.0.1:1; location = /s { $loc } } }\n";
    close $c;
    my $out = `@{[ TM::Nginx::shell_env($h) ]} nginx -t -c $f -p @{[ $h->dir ]} -e stderr 2>&1`;
    return $? ? $out : '';
}
my $sec = "togglemaster_sse_secret $SECRET;";
is conf_error($sec, 'togglemaster_sse on;'), '', 'a good stream location passes nginx -t';
like conf_error($sec, 'togglemaster_sse on; togglemaster_sse_heartbeat 0;'), qr/must be 1s\.\.1h/, 'heartbeat 0: refused';
like conf_error($sec, 'togglemaster_sse on; togglemaster_sse_heartbeat soon;'), qr/invalid value/, 'heartbeat "soon": refused';
like conf_error($sec, 'togglemaster_sse on; togglemaster_sse_max_connections 0;'), qr/must be between 1 and/, 'max_connections 0: refused';
like conf_error($sec, 'togglemaster_sse on; togglemaster_sse_max_connections many;'), qr/invalid number/, 'max_connections "many": refused';
like conf_error($sec, 'togglemaster_sse_inactivity_delay 100000; togglemaster_ofrep;'), qr/must be between 0 and 86400/, 'inactivity delay past a day: refused';
like conf_error($sec, 'togglemaster_sse maybe;'), qr/invalid value/, 'togglemaster_sse maybe: refused';
like conf_error('togglemaster_sse_secret short;', 'togglemaster_sse on;'), qr/at least 32 bytes/, 'a short secret: refused';
like conf_error('togglemaster_sse_secret env:TM_NO_SUCH_VARIABLE;', 'togglemaster_sse on;'), qr/is not set/, 'a secret from a missing variable: refused';
like conf_error('', 'togglemaster_sse on;'), qr/need togglemaster_sse_secret/, 'a stream without a secret: refused';
like conf_error("$sec togglemaster_sse_token_ttl 4s;", 'togglemaster_sse on;'), qr/must be 5s\.\.7d/, 'token ttl 4s: refused';
{
    local $ENV{TM_SSE_TEST_SECRET} = 'x' x 40;
    is conf_error('togglemaster_sse_secret env:TM_SSE_TEST_SECRET;', 'togglemaster_sse on;'), '', 'a secret from the environment';
}

# --- events ---
my $indep = sopen($base . token(time + 600, 'staging'));
is $indep->{status}, 200, 'a token made independently (HMAC-SHA256 of the documented message) is accepted';
close $indep->{s};
my $A = sopen($url);
is $A->{status}, 200, 'stream: 200';
like $A->{head}, qr{^Content-Type: text/event-stream}mi, 'text/event-stream';
like $A->{head}, qr{^Access-Control-Allow-Origin: \*}mi, 'CORS for browsers';
my $P = sopen($prod_url);
is $P->{status}, 200, 'production stream: 200';
spump($_, 0.3) for $A, $P;
is nevents($A), 0, 'no event on connect without Last-Event-ID (the client has just evaluated)';

my $v1 = set_env_flag('staging', 'banner', 0);
is wait_events($A, 1), 1, 'a staging change: one event on the staging stream';
my @ev = @{ events($A) };
is $ev[0], $v1, 'its id is the version of the change';
my $d = eval { $J->decode($ev[1]) } // {};
is $d->{type}, 'refetchEvaluation', 'type refetchEvaluation';
like $d->{etag} // '', qr/^\Q$v1\E-[0-9a-f]{32}$/, 'an etag: <version>-<md5>';
ok abs(($d->{lastModified} // 0) - time) < 30, 'lastModified: now, unix seconds';
spump($P, 0.5);
is nevents($P), 0, 'no event on the production stream';

set_env_flag('production', 'banner', 1);
is wait_events($P, 1), 1, 'a production change: the production stream hears it';
spump($A, 0.5);
is nevents($A), 1, '... the staging one does not';

# the same object written again changes nothing
$h->redis_cmd('HSET', 'tm:flags@staging', 'banner', TM::Nginx::env_flag_json('banner', 0, 1));
publish(kind => 'flag', environment => 'staging', op => 'upsert', name => 'banner');
spump($A, 0.8);
is nevents($A), 1, 'a write that changes nothing: no event';

# heartbeats
my $before = () = $A->{text} =~ /^:\n\n/mg;
spump($A, 2.3);
my $after = () = $A->{text} =~ /^:\n\n/mg;
cmp_ok $after - $before, '>=', 1, 'heartbeat comments every second';

# Last-Event-ID
my $L = sopen($url, last_id => $v1 - 1);
is wait_events($L, 1, 3), 1, 'Last-Event-ID older than the last change: an event at once';
is events($L)->[0], $v1, '... with that change\'s id';
my $L2 = sopen($url, last_id => $v1);
spump($L2, 0.5);
is nevents($L2), 0, 'Last-Event-ID of the last change: nothing';
close $_->{s} for $L, $L2;

# --- the cap: 6 per worker ---
my @extra = map { sopen($url) } 1 .. 3;   # A, P + 3 = 5
is $_->{status}, 200, 'stream under the cap' for @extra;
my $sixth = sopen($url);
is $sixth->{status}, 200, 'the sixth: 200';
$r = $h->req(GET => $url);
is $r->{status}, 503, 'past the cap: 503';
like $r->{headers}{'retry-after'} // '', qr/^\d+$/, '... with Retry-After';
like $r->{json}{error} // '', qr/too many event streams/, '... saying why';
my $m = $ng->metrics;
is TM::Nginx::m_sum($m, 'togglemaster_sse_streams'), 6, 'metrics: 6 open streams';
cmp_ok TM::Nginx::m_sum($m, 'togglemaster_sse_refused_total'), '>=', 1, 'metrics: refused';
close $_->{s} for @extra, $sixth;
ok $h->wait_until(5, sub { TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_streams') == 2 }),
    'closed streams leave the count';

# --- a stalled client is dropped, the others keep flowing ---
my $stalled = sopen($url, port => $slow_port, rcvbuf => 1024);
is $stalled->{status}, 200, 'a client that will never read: connected';
my $seen = nevents($A);
my $changes = 0;
my $dropped_at;
for my $i (1 .. 400) {
    set_env_flag('staging', 'banner', $i % 2);
    $changes++;
    spump($A, 0.005);
    if (TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_clients_dropped_total') >= 1) { $dropped_at = $i; last }
}
ok $dropped_at, "the stalled client was dropped (after $changes changes)";
my $stg_now = $dropped_at % 2 ? 0 : 1;
set_env_flag('staging', 'banner', $stg_now);
$changes++;
my $want_id = $h->redis_cmd('GET', 'tm:version');
my $end = time + 5;
spump($A, 0.05) while (events($A)->[-2] // 0) != $want_id && time < $end;
cmp_ok nevents($A), '>', $seen, 'the reading client keeps getting events';
is events($A)->[-2], $want_id, '... up to the last change';
cmp_ok TM::Nginx::m_sum($ng->metrics, 'togglemaster_sse_events_sent_total'), '>', 3, 'metrics: events sent';
close $stalled->{s};

# --- Redis down: streams stay open and quiet; it comes back: one event ---
$h->stop('redis');
spump($A, 2.5);
ok !$A->{eof}, 'Redis down: the stream stays open';
my $n0 = nevents($A);
is $n0, nevents($A), 'no event while the snapshot is unchanged';
like substr($A->{text}, -3), qr/:\n\n$/, 'heartbeats go on';
$h->restart('redis');
spump($A, 1.5);
is nevents($A), $n0, 'Redis back, empty: no event (nothing is ready, the snapshot stays)';
# the daemons write everything again, with one change made meanwhile
my $prod_before = nevents($P);
populate($stg_now ? 0 : 1, 1, 10000);
publish(kind => 'flag', environment => 'staging', op => 'upsert', name => 'banner');
is wait_events($A, $n0 + 1, 10), $n0 + 1, 'Redis caught up with a change: one event';
spump($A, 2);
is nevents($A), $n0 + 1, '... only one';
spump($P, 0.2);
is nevents($P), $prod_before, 'production, unchanged through it all: no event';

# --- reload: streams end cleanly, clients reconnect to the new workers ---
$h->signal(HUP => 'nginx');
spump($A, 5) until $A->{eof} || !defined $A->{s};
ok $A->{eof}, 'reload: the stream is closed';
ok $A->{last_chunk}, '... with the last chunk (a clean end)';
my $again = sopen($url);
is $again->{status}, 200, 'reconnecting after the reload: 200';
close $again->{s};
close $P->{s};

unlike $ng->error_log, qr/\[(alert|crit|emerg)\]|AddressSanitizer|runtime error/, 'no alerts or sanitizer reports';

# --- before any snapshot (no Redis, no file): the default's stream ---
$ng->stop;
my $bare = TM::Nginx->new($h, redis => 0, snapshot => 0, http => "togglemaster_sse_secret \"$SECRET\";",
                          server => 'togglemaster_sse_url "http://$http_host/sse"; location = /sse { togglemaster_sse on; }');
$bare->start;
$r = $h->req(POST => $bare->url('/ofrep/v1/evaluate/flags'), {}, { context => { targetingKey => 'u' } });
is $r->{status}, 200, 'no snapshot yet: bulk 200';
like $r->{json}{eventStreams}[0]{url} // '', qr/token=\d+\.default\./, '... listing the default environment\'s stream';
my $early = sopen($r->{json}{eventStreams}[0]{url});
is $early->{status}, 200, '... which opens';
close $early->{s};
unlike $bare->error_log, qr/\[(alert|crit|emerg)\]|AddressSanitizer|runtime error/, 'no alerts or sanitizer reports';
done_testing;
