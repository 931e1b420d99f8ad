#!/usr/bin/env perl
# tmctl webhooks (list, add, update, remove, ping, deliveries) against real
# daemons, with the README's receiver example (docs/examples/
# webhook-receiver.py) as the endpoint: a real delivery passes its
# signature check and is printed once; a replayed delivery id is printed
# once; a forged, stale or missing signature is refused (401), which the
# daemon records as a failed delivery. Usage errors exit 2, refusals 1, and
# neither changes anything; the secret is never printed.
use strict; use warnings;
use Test::More;
use POSIX ();
use Digest::SHA qw(hmac_sha256_hex);
use IO::Socket::INET;
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key);
use TM::Tmctl qw(tmctl);

plan skip_all => 'no python3' if system('python3 -c "import http.server" 2>/dev/null') != 0;

my $h = TM::Harness->new;
my $M = 'master-test-key';
my %W = (TM_WEBHOOK_BACKOFF_MS => 100, TM_WEBHOOK_TIMEOUT_MS => 2000);
my $auth = $h->daemon('auth', MASTER_KEY => $M, %W);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth, %W);
my $fl = $h->daemon('flags', AUTH_SERVICE_URL => $auth, TARGETING_SERVICE_URL => $tg, %W);
my $KEY = new_key($h, $auth, $M, 'hook-keeper')->{key};
my %K = (Authorization => "Bearer $KEY");
my $J = $h->json;
my $dir = $h->dir;
my $SECRET = 'a-long-random-secret-for-tests';
my %ENV0 = (TOGGLEMASTER_FLAGS_URL => $fl, TOGGLEMASTER_TARGETING_URL => $tg, TOGGLEMASTER_AUTH_URL => $auth,
            TOGGLEMASTER_URL => undef, TOGGLEMASTER_API_KEY => $KEY, TOGGLEMASTER_MASTER_KEY => undef,
            TOGGLEMASTER_WEBHOOK_SECRET => undef, TOGGLEMASTER_ENVIRONMENT => undef);
my $printed = '';
sub tm { my $o = ref $_[0] eq 'HASH' ? shift : {}; my $r = tmctl($h, { %ENV0, %$o }, @_); $printed .= $r->{out} . $r->{err}; $r }
sub ok_run { my ($r, $name) = @_; is $r->{rc}, 0, "$name: exit 0" or diag "stderr: $r->{err}"; $r }
sub slurp { my $p = shift; open my $f, '<', $p or return ''; local $/; my $s = <$f>; $s // '' }

# --- the README's receiver, as shipped ---
my $EXAMPLE = 'docs/examples/webhook-receiver.py';
my ($readme_block) = slurp('README.md') =~ /```python\n(# A webhook receiver.*?)```/s;
is $readme_block, slurp($EXAMPLE), "README's receiver example is $EXAMPLE, verbatim";
my $port = $h->free_port;
my $out_file = "$dir/receiver.out";
my $rpid = fork // die;
if (!$rpid) {
    $ENV{WEBHOOK_SECRET} = $SECRET;
    open STDOUT, '>', $out_file or POSIX::_exit(126);
    open STDERR, '>', "$dir/receiver.err" or POSIX::_exit(126);
    exec 'python3', $EXAMPLE, $port or POSIX::_exit(127);
}
END { kill 'TERM', $rpid if $rpid }
ok $h->wait_until(10, sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") }), 'the receiver listens'
    or diag slurp("$dir/receiver.err");
sub printed_bodies { [ map { $J->decode($_) } grep { /\S/ } split /\n/, slurp($out_file) ] }

# --- usage errors: exit 2, nothing sent ---
for my $case (
    [ [qw(webhooks add http://127.0.0.1:9/)], 'add without a secret', qr/secret/ ],
    [ [qw(webhooks remove abc)], 'remove a non-number', qr/positive numbers/ ],
    [ [qw(webhooks remove 0)], 'remove id 0', qr/positive numbers/ ],
    [ [qw(webhooks list --service nope)], 'unknown service', qr/--service must be/ ],
    [ [qw(webhooks deliveries 1 --limit 0)], '--limit 0', qr/--limit/ ],
    [ [qw(webhooks deliveries 1 --limit 101)], '--limit 101', qr/--limit/ ],
    [ [qw(webhooks list --since 2026-01-01)], 'an option it does not take', qr/does not take --since/ ],
    [ [qw(webhooks list --secret), $SECRET], 'list --secret', qr/does not take --secret/ ],
    [ [qw(webhooks update 1)], 'update with nothing to change', qr/nothing to change/ ],
    [ ['webhooks', 'update', '1', '--kinds', 'flag,,rule'], 'an empty name in a list', qr/--kinds/ ],
    [ [qw(webhooks add)], 'add without a URL', qr/usage: tmctl webhooks add URL/ ],
    [ [qw(webhooks frob)], 'unknown verb', qr/unknown webhooks command/ ],
) {
    my ($args, $what, $msg) = @$case;
    my $r = tm(@$args);
    is $r->{rc}, 2, "$what: exit 2";
    like $r->{err}, $msg, "$what: says why";
}
my $r = tm({ TOGGLEMASTER_API_KEY => undef }, qw(webhooks list));
is $r->{rc}, 2, 'no key: exit 2';
like $r->{err}, qr/no API key/, 'no key: says so';
is $h->psql('SELECT count(*) FROM webhooks'), 0, 'usage errors changed nothing';

# --- refusals from the server: exit 1 with its message, nothing changed ---
for my $case (
    [ [qw(webhooks add ftp://x/ --secret), $SECRET], 'a URL that is not http(s)', qr/400/ ],
    [ [qw(webhooks add http://127.0.0.1:9/ --secret short)], 'a short secret', qr/400.*secret/ ],
    [ [qw(webhooks add http://127.0.0.1:9/ --secret), $SECRET, qw(--kinds flags)], 'an unknown kind', qr/400.*kinds/ ],
    [ [qw(webhooks add http://127.0.0.1:9/ --secret), $SECRET, qw(--format xml)], 'a bad format', qr/400/ ],
    [ [qw(webhooks remove 999)], 'remove an unknown id', qr/404/ ],
    [ [qw(webhooks deliveries 999)], 'deliveries of an unknown id', qr/404/ ],
    [ [qw(webhooks ping 999)], 'ping an unknown id', qr/404/ ],
) {
    my ($args, $what, $msg) = @$case;
    $r = tm(@$args);
    is $r->{rc}, 1, "$what: exit 1";
    like $r->{err}, $msg, "$what: the server's message";
}
$r = tm({ TOGGLEMASTER_API_KEY => 'tm_wrong' }, qw(webhooks list));
is $r->{rc}, 1, 'a wrong key: exit 1';
is $h->psql('SELECT count(*) FROM webhooks'), 0, 'refusals changed nothing';

# --- add, list ---
$r = ok_run(tm({ TOGGLEMASTER_WEBHOOK_SECRET => $SECRET }, qw(webhooks add), "http://127.0.0.1:$port/hook",
               '--kinds', 'flag,webhook'), 'add (secret from TOGGLEMASTER_WEBHOOK_SECRET)');
my $id = $r->{json}{id};
ok $id, "the endpoint as JSON (id $id)";
is_deeply $r->{json}{kinds}, ['flag', 'webhook'], '--kinds as a list';
is $r->{json}{environments}, undef, 'no --environments: all';
$r = ok_run(tm(qw(webhooks list)), 'list');
like $r->{out}, qr/^ID\s+FORMAT\s+KINDS\s+ENVIRONMENTS\s+URL$/m, 'list: a table header';
like $r->{out}, qr/^\Q$id\E\s+json\s+flag,webhook\s+all\s+\Qhttp:\/\/127.0.0.1:$port\/hook\E$/m, 'list: the endpoint';
$r = ok_run(tm(qw(webhooks list --json)), 'list --json');
is scalar @{ $r->{json} || [] }, 1, 'list --json: one endpoint';

# --- a real delivery, verified by the example ---
is $h->req(POST => "$fl/flags", \%K, { name => 'checkout' })->{status}, 201, 'a flag created';
ok $h->wait_until(15, sub { grep { ($_->{event} // '') eq 'flag.create' } @{ printed_bodies() } }),
    'the receiver verified the delivery and printed it';
my ($got) = grep { ($_->{event} // '') eq 'flag.create' } @{ printed_bodies() };
is "$got->{service} $got->{record}{name} $got->{record}{actor}{name}", 'flags checkout hook-keeper',
    'the change: service, flag, actor';
$r = ok_run(tm(qw(webhooks deliveries), $id), 'deliveries');
like $r->{out}, qr/^DELIVERY\s+STATUS\s+ATTEMPTS\s+CREATED\s+EVENT\s+LAST ERROR$/m, 'deliveries: a table header';
like $r->{out}, qr/^[0-9a-f-]{36}\s+delivered\s+1\s+\S+\s+flag\.create\s+-$/m, 'deliveries: delivered, one attempt';
$r = ok_run(tm(qw(webhooks ping), $id), 'ping');
my $ping = $r->{json}{delivery_id};
ok $ping, 'ping: its delivery id';
ok $h->wait_until(15, sub { grep { ($_->{event} // '') eq 'ping' } @{ printed_bodies() } }), 'the ping printed';
$r = ok_run(tm(qw(webhooks deliveries), $id, qw(--json --limit 1)), 'deliveries --json --limit 1');
is scalar @{ $r->{json} || [] }, 1, '--limit 1: one';
is "$r->{json}[0]{delivery_id} $r->{json}[0]{status}", "$ping delivered", 'newest first: the ping, delivered';

# --- the example's checks, by hand: dedup, replay window, forgery ---
sub post_signed {
    my ($body, $t, $delivery, $secret) = @_;
    my %hd = ('Content-Type' => 'application/json', 'X-ToggleMaster-Delivery' => $delivery);
    $hd{'X-ToggleMaster-Signature'} = "t=$t,v1=" . hmac_sha256_hex("$t.$body", $secret) if defined $secret;
    return $h->req(POST => "http://127.0.0.1:$port/hook", \%hd, $body)->{status};
}
my $n = @{ printed_bodies() };
my $body = '{"event":"flag.update","service":"flags","record":{"name":"by-hand"}}';
is post_signed($body, time, 'dup-1', $SECRET), 204, 'a signed delivery: 204';
is post_signed($body, time, 'dup-1', $SECRET), 204, 'the same delivery id again: 204';
is scalar @{ printed_bodies() }, $n + 1, 'printed once (deduplicated on the delivery id)';
is post_signed($body, time - 3600, 'old-1', $SECRET), 401, 'an hour-old timestamp: 401 (replay)';
is post_signed($body, time, 'forged-1', 'another-secret-entirely'), 401, 'signed with another secret: 401';
is post_signed($body, time, 'nosig-1', undef), 401, 'no signature: 401';
is $h->req(POST => "http://127.0.0.1:$port/hook", { 'X-ToggleMaster-Signature' => 'garbage' }, $body)->{status}, 401,
    'a malformed signature: 401';
is scalar @{ printed_bodies() }, $n + 1, 'none of them printed';

# --- update: a wrong secret makes the receiver refuse; the daemon shows it ---
$r = ok_run(tm(qw(webhooks update), $id, qw(--secret), 'not-the-receivers-secret'), 'update --secret');
unlike $r->{out}, qr/not-the-receivers-secret/, 'the secret is not printed';
is $h->req(PUT => "$fl/flags/checkout", \%K, { is_enabled => JSON::PP::true })->{status}, 200, 'a change';
ok $h->wait_until(15, sub {
    grep { $_->{status} eq 'failed' } @{ tm(qw(webhooks deliveries), $id, '--json')->{json} || [] } }),
    'refused by the receiver (401): failed';
$r = ok_run(tm(qw(webhooks deliveries), $id), 'deliveries after the refusal');
like $r->{out}, qr/^\S+\s+failed\s+1\s+\S+\s+flag\.update\s+HTTP 401$/m, 'deliveries: failed, HTTP 401';
$r = ok_run(tm(qw(audit --kind webhook --json)), 'the audit trail of the endpoint');
is_deeply [ map { $_->{action} . ' ' . ($_->{after}{secret} // '-') } @{ $r->{json} || [] } ],
    [ 'update changed', 'create set' ], 'audited: created (secret set), updated (secret changed)';
$r = ok_run(tm(qw(webhooks update), $id, '--secret', $SECRET, '--kinds', 'all', '--format', 'slack',
               '--endpoint', "http://127.0.0.1:$port/slack"), 'update the rest');
is "$r->{json}{format} $r->{json}{url}", "slack http://127.0.0.1:$port/slack", '--format and --endpoint';
is $r->{json}{kinds}, undef, '--kinds all: null';
$r = ok_run(tm(qw(webhooks update), $id, '--environments', 'production,staging'), 'update --environments');
is_deeply $r->{json}{environments}, ['production', 'staging'], '--environments as a list';

# --- redeliver: the refused change again, now that the secret is right ---
my ($failed) = grep { $_->{status} eq 'failed' } @{ tm(qw(webhooks deliveries), $id, '--json')->{json} || [] };
$r = ok_run(tm(qw(webhooks redeliver), $id, $failed->{delivery_id}), 'redeliver the failed one');
isnt $r->{json}{delivery_id}, $failed->{delivery_id}, 'under a new delivery id';
is $r->{json}{redelivers}, $failed->{delivery_id}, 'naming the one it sends again';
ok $h->wait_until(15, sub { grep { ($_->{event} // '') eq 'flag.update' } @{ printed_bodies() } }),
    'the receiver verified and printed it';
$r = tm(qw(webhooks redeliver), $id, 'not-a-uuid');
is $r->{rc}, 2, 'redeliver a malformed delivery id: exit 2';
$r = tm(qw(webhooks redeliver), $id, '00000000-0000-0000-0000-000000000000');
is $r->{rc}, 1, 'redeliver an unknown delivery: exit 1';
like $r->{err}, qr/404.*no delivery/, 'the server says so';
$h->psql("INSERT INTO webhook_outbox (webhook_id, service, delivery_id, body, next_at)"
         . " VALUES ($id, 'flags', 'abcdef00-0000-4000-8000-00000000beef', '{}', now() + interval '1 day')");
$r = tm(qw(webhooks redeliver), $id, 'abcdef00-0000-4000-8000-00000000beef');
is $r->{rc}, 1, 'redeliver a pending one: exit 1';
like $r->{err}, qr/409.*still pending/, 'it is still being tried: 409';
$h->psql("DELETE FROM webhook_outbox WHERE delivery_id = 'abcdef00-0000-4000-8000-00000000beef'");

# --- other services; auth with the master key alone ---
$r = ok_run(tm(qw(webhooks add --service targeting), "http://127.0.0.1:$port/t", '--secret', $SECRET), 'add --service targeting');
is $h->psql("SELECT service FROM webhooks WHERE id = $r->{json}{id}"), 'targeting', 'registered with targeting';
$r = ok_run(tm({ TOGGLEMASTER_API_KEY => undef, TOGGLEMASTER_MASTER_KEY => $M },
               qw(webhooks add --service auth), "http://127.0.0.1:$port/k", '--secret', $SECRET, '--kinds', 'key'),
            'add --service auth with the master key');
my $aid = $r->{json}{id};
$r = ok_run(tm({ TOGGLEMASTER_API_KEY => undef }, '--master-key', $M, qw(webhooks list --service auth --json)),
            'list --service auth --master-key');
is_deeply [ map { $_->{id} } @{ $r->{json} } ], [$aid], 'auth lists its own';
is scalar @{ tm(qw(webhooks list --json))->{json} }, 1, 'flags lists only its own';

# --- remove ---
$r = ok_run(tm(qw(webhooks remove), $id), 'remove');
is $r->{out}, "removed webhook $id\n", 'remove: says so';
$r = tm(qw(webhooks remove), $id);
is $r->{rc}, 1, 'remove again: exit 1';
like $r->{err}, qr/404/, 'remove again: 404';
like ok_run(tm(qw(webhooks list)), 'list after remove')->{out}, qr/^no webhooks$/m, 'list: none left';
unlike $printed, qr/\Q$SECRET\E|not-the-receivers-secret/, 'no secret in anything tmctl printed';
unlike $printed, qr/\Q$KEY\E|\Q$M\E/, 'nor a key';

done_testing;
