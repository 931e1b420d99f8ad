#!/usr/bin/env perl
# The event streams' etag under single changes (issue 14, browser latency):
# a change of one flag among many updates the environment's digest by
# hashing that flag only (snapshot.c keeps each flag's digest; the part's is
# their XOR). What must hold: every kind of single change (flag upsert, a
# flag added in the middle of the name order, a rule, a delete) gives a new
# etag and event; the same content again gives the same etag; a resync that
# finds the same content sends nothing; and the etag reached by single
# changes is the one a fresh worker computes from a full load of the same
# Redis. Evaluations around an added flag stay right (the part is sorted
# again only when a flag was added). Real nginx + Redis, one worker.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex hmac_sha256_hex);
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $h = TM::Harness->new;
$h->redis;
my $J = TM::Harness->json;
my $SECRET = 'sse-delta-secret-0123456789abcdef012';
my $KEY = 'tm_key_delta' . ('x' x 40);
my $N = 2000;

$h->redis_cmd('HSET', 'tm:envs', $_->[0], TM::Nginx::env_json(@$_)) for ['default', 1], ['staging', 2];
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($KEY), TM::Nginx::key2_json(server => 'staging', 2));
{   # N flags in staging, every third on, through redis-cli's pipe
    open my $p, '|-', 'redis-cli -p ' . $h->port('redis') . ' --pipe >/dev/null' or die "redis-cli: $!";
    for my $i (1 .. $N) {
        my @c = ('HSET', 'tm:flags@staging', sprintf('f-%05d', $i),
                 TM::Nginx::env_flag_json(sprintf('f-%05d', $i), $i % 3 == 0, 1));
        print $p '*' . @c . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @c);
    }
    close $p or die "redis-cli --pipe failed\n";
}
$h->redis_cmd('SET', 'tm:version', 5);
$h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2 flag@staging rule@staging));

sub publish { my %m = @_; my $v = $h->redis_cmd('INCR', 'tm:version'); $h->redis_cmd('PUBLISH', 'tm:changes', $J->encode({ version => $v + 0, %m })); $v }

my $ng = TM::Nginx->new($h, workers => 1, http => qq{    togglemaster_sse_secret "$SECRET";\n}, server => <<'CONF');
        location /k/ofrep/v1/ { togglemaster_api_key server; togglemaster_ofrep; }
        location = /sse { togglemaster_sse on; }
CONF
$ng->start;

sub flag {   # staging's answer for one flag: its value, or the error code
    my $r = $h->req(POST => $ng->url("/k/ofrep/v1/evaluate/flags/$_[0]"), { 'X-API-Key' => $KEY },
                    { context => { targetingKey => 'u1' } });
    return $r->{status} == 200 ? ($r->{json}{value} ? 'on' : 'off') : ($r->{json}{errorCode} // $r->{status});
}
ok $h->wait_until(10, sub { flag('f-02000') eq 'off' }), "staging holds $N flags";

my $exp = int(time) + 600;
my $path = "/sse?token=$exp.staging." . hmac_sha256_hex("tm-sse-v1\nstaging\n$exp", $SECRET);

# The stream's current event, asked with Last-Event-ID: $after (the worker
# answers at once when its last change is newer): [id, etag], or undef when
# nothing comes within $secs. The etag is "<id>-<md5>" (lib/tm_sse_meta.h):
# the md5 part is of the content, which is what these checks compare.
sub current {
    my ($after, $secs) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ng->port, Timeout => 5) or die "connect: $!";
    print $s "GET $path HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nLast-Event-ID: $after\r\n\r\n";
    my ($buf, $sel, $end) = ('', IO::Select->new($s), time + ($secs // 3));
    while ($buf !~ /^id: \d+\nevent: message\ndata: \{.*\}\n\n/m && time < $end) {
        last unless $sel->can_read($end - time) && sysread $s, $buf, 65536, length $buf;
    }
    close $s;
    my ($id, $data) = $buf =~ /^id: (\d+)\nevent: message\ndata: (\{.*\})\n\n/m or return undef;
    my $etag = $J->decode($data)->{etag};
    my ($eid, $md5) = $etag =~ /^(\d+)-([0-9a-f]{32})$/ or return [ $id, "malformed: $etag" ];
    return [ $id, $eid == $id ? $md5 : "id $eid in the etag, $id in the event" ];
}
# After a change published as version $v: the event it brought.
sub after {
    my $v = shift;
    my $e;
    $h->wait_until(5, sub { $e = current(0, 1); $e && $e->[0] >= $v });
    return $e // [0, ''];
}

my $e0 = current(0);
ok $e0, 'an event for a stream that has seen nothing';
like $e0->[1], qr/^[0-9a-f]{32}$/, 'with an etag';

# one flag in the middle changes
my $orig = $h->redis_cmd('HGET', 'tm:flags@staging', 'f-01000');
$h->redis_cmd('HSET', 'tm:flags@staging', 'f-01000', TM::Nginx::env_flag_json('f-01000', 1, 1));
my $v = publish(kind => 'flag', environment => 'staging', op => 'upsert', name => 'f-01000');
my $e1 = after($v);
is $e1->[0], $v, 'a flag changed: an event with its version';
isnt $e1->[1], $e0->[1], '... and a new etag';
is flag('f-01000'), 'on', '... the change is served';

# the same bytes again: the etag is of the content, not of the history
$h->redis_cmd('HSET', 'tm:flags@staging', 'f-01000', $orig);
$v = publish(kind => 'flag', environment => 'staging', op => 'upsert', name => 'f-01000');
my $e2 = after($v);
is $e2->[0], $v, 'changed back: an event';
is $e2->[1], $e0->[1], '... whose etag is the first one again';

# written again unchanged: no event
$h->redis_cmd('HSET', 'tm:flags@staging', 'f-01000', $orig);
publish(kind => 'flag', environment => 'staging', op => 'upsert', name => 'f-01000');
sleep 0.5;
is current($e2->[0], 0.5), undef, 'the same object written again: no event';

# a flag added between two others in name order
$h->redis_cmd('HSET', 'tm:flags@staging', 'f-01000a', TM::Nginx::env_flag_json('f-01000a', 1, 1));
$v = publish(kind => 'flag', environment => 'staging', op => 'upsert', name => 'f-01000a');
my $e3 = after($v);
is $e3->[0], $v, 'a flag added in the middle: an event';
isnt $e3->[1], $e2->[1], '... and a new etag';
is_deeply [ map { flag($_) } qw(f-00999 f-01000 f-01000a f-01001 f-01002 f-00001 f-02000) ],
          [qw(on off on off on off off)], 'the flags around it, and the first and last, evaluate as they are';
my @keys = map { $_->{key} } @{ $h->req(POST => $ng->url('/k/ofrep/v1/evaluate/flags'), { 'X-API-Key' => $KEY },
                                        { context => { targetingKey => 'u1' } })->{json}{flags} // [] };
is_deeply [ @keys[999 .. 1001] ], [qw(f-01000 f-01000a f-01001)], 'bulk answers list it in name order';
is_deeply \@keys, [ sort @keys ], '... all of them';

# a rule for one flag
$h->redis_cmd('HSET', 'tm:rules@staging', 'f-00003',
              TM::Nginx::rule_json('f-00003', { type => 'PERCENTAGE', value => 0 }, 1));
$v = publish(kind => 'rule', environment => 'staging', op => 'upsert', name => 'f-00003');
my $e4 = after($v);
is $e4->[0], $v, 'a rule: an event';
isnt $e4->[1], $e3->[1], '... and a new etag';
is flag('f-00003'), 'off', '... the rule is served (0 %)';

# a flag deleted
$h->redis_cmd('HDEL', 'tm:flags@staging', 'f-01500');
$v = publish(kind => 'flag', environment => 'staging', op => 'delete', name => 'f-01500');
my $e5 = after($v);
is $e5->[0], $v, 'a flag deleted: an event';
isnt $e5->[1], $e4->[1], '... and a new etag';
is flag('f-01500'), 'FLAG_NOT_FOUND', '... it is gone';
is flag('f-01501'), 'off', '... its neighbour is not (off, as it was)';

# a resync of the hash finds the same content: nothing to tell
publish(kind => 'flag', environment => 'staging', op => 'resync');
sleep 0.8;
is current($e5->[0], 0.5), undef, 'a resync that changes nothing: no event';

# a fresh worker loads everything at once: the same etag. Its id is the
# version it loaded (the resync's, past the delete's): the old worker,
# still up for a moment, would answer with the delete's
$h->signal(HUP => 'nginx');
my $full;
$h->wait_until(10, sub { $full = current(0, 1); $full && $full->[0] > $e5->[0] });
ok $full && $full->[0] > $e5->[0], 'after a reload, the new worker\'s event for a stream that has seen nothing';
is $full->[1], $e5->[1], 'the etag of a full load is the one single changes reached';

unlike $ng->error_log, qr/\[(alert|crit|emerg)\]|AddressSanitizer|runtime error/, 'no alerts or sanitizer reports';
done_testing;
