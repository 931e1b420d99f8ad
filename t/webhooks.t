#!/usr/bin/env perl
# Change notifications (docs/audit.md) against a local receiver that first
# refuses (503), then hangs, then accepts: every change is delivered once
# accepted, signed (HMAC-SHA256 of "t.body" under the endpoint's secret),
# with a delivery id; admin requests stay fast meanwhile; a daemon killed
# with rows pending delivers them after its restart; two replicas never
# deliver one row twice; the API checks its input; Slack payloads.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key replica);
use Digest::SHA qw(hmac_sha256_hex);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);

my $h = TM::Harness->new;
my $M = 'master-test-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my %W = (TM_WEBHOOK_BACKOFF_MS => 100, TM_WEBHOOK_TIMEOUT_MS => 1000,
         TM_WEBHOOK_CONNECT_TIMEOUT_MS => 500);
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, %W);
my $J = $h->json;
my $key = new_key($h, $auth, $M, 'hooks-admin');
my %A = (Authorization => "Bearer $key->{key}");
sub req { $h->req(@_) }

# --- receivers: each has its mode in a file (503, hang, ok) and logs what
# it accepted, one JSON line per request, in another ---
my $dir = $h->dir;
my ($mode_file, $log_file) = ("$dir/recv.mode", "$dir/recv.log");
sub set_mode { my ($file, $m) = @_; open my $f, '>', "$file.tmp" or die; print $f $m; close $f; rename "$file.tmp", $file }
sub mode { set_mode($mode_file, $_[0]) }
my @recv_pids;
END { kill 'KILL', $_ for @recv_pids }
sub receiver {
    my ($mfile, $lfile) = @_;
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 64, ReuseAddr => 1)
        or die "listen: $!";
    my $pid = fork // die;
    if ($pid == 0) {
        $SIG{ALRM} = sub { POSIX::_exit(0) };
        alarm 300;   # bounded: the receiver ends by itself
        while (my $c = $srv->accept) {
            local $/ = "\r\n";
            my (%hd, $line);
            my $req = <$c> // next;
            my ($path) = $req =~ m{^POST (\S+)};
            while (defined($line = <$c>) && $line ne "\r\n") {
                $line =~ s/\r\n$//;
                my ($k, $v) = split /:\s*/, $line, 2;
                $hd{ lc $k } = $v;
            }
            my $body = '';
            read($c, $body, $hd{'content-length'} // 0);
            my $mode = 'ok';
            if (open my $mf, '<', $mfile) { $mode = <$mf> // 'ok'; close $mf }
            if ($mode eq 'hang') { sleep 3; close $c; next }
            if ($mode eq '503') { print $c "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"; close $c; next }
            open my $lf, '>>', $lfile;
            print $lf JSON::PP->new->canonical->encode({ sig => $hd{'x-togglemaster-signature'},
                id => $hd{'x-togglemaster-delivery'}, body => $body, path => $path }), "\n";
            close $lf;
            print $c "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            close $c;
        }
        POSIX::_exit(0);
    }
    push @recv_pids, $pid;
    my $port = $srv->sockport;
    close $srv;
    return $port;
}
mode('503');
my $port = receiver($mode_file, $log_file);

sub received {
    open my $f, '<', $_[0] // $log_file or return [];
    my @r = map { $J->decode($_) } <$f>;
    return \@r;
}

# --- the API: bad input changes nothing ---
my $SECRET = 'whsec-0123456789abcdef';
my $n0 = $h->psql('SELECT count(*) FROM webhooks');
for my $case (
    [ { secret => $SECRET }, 'no url' ],
    [ { url => "http://127.0.0.1:$port/" }, 'no secret' ],
    [ { url => 'ftp://x/', secret => $SECRET }, 'not http' ],
    [ { url => "http://127.0.0.1:$port/ x", secret => $SECRET }, 'space in url' ],
    [ { url => "http://127.0.0.1:$port/", secret => 'short' }, 'short secret' ],
    [ { url => "http://127.0.0.1:$port/", secret => $SECRET, kinds => ['flags'] }, 'unknown kind' ],
    [ { url => "http://127.0.0.1:$port/", secret => $SECRET, kinds => [] }, 'empty kinds' ],
    [ { url => "http://127.0.0.1:$port/", secret => $SECRET, environments => ['a b'] }, 'bad environment' ],
    [ { url => "http://127.0.0.1:$port/", secret => $SECRET, format => 'xml' }, 'bad format' ],
    [ { url => "http://127.0.0.1:$port/", secret => $SECRET, extra => 1 }, 'unknown member' ],
) {
    my $r = req(POST => "$flags/webhooks", \%A, $case->[0]);
    is $r->{status}, 400, "POST /webhooks: $case->[1] -> 400";
    ok $r->{json}{error}, "$case->[1]: JSON error";
}
is req(POST => "$flags/webhooks", \%A, 'not json')->{status}, 400, 'not JSON -> 400';
is req(GET => "$flags/webhooks/abc", \%A)->{status}, 400, 'bad id -> 400';
is req(GET => "$flags/webhooks/999", \%A)->{status}, 404, 'unknown id -> 404';
is req(DELETE => "$flags/webhooks/999", \%A)->{status}, 404, 'delete unknown -> 404';
is req(GET => "$flags/webhooks")->{status}, 401, 'no key -> 401';
is $h->psql('SELECT count(*) FROM webhooks'), $n0, 'nothing written';

my $r = req(POST => "$flags/webhooks", \%A, { url => "http://127.0.0.1:$port/hook", secret => $SECRET, kinds => ['flag'] });
is $r->{status}, 201, 'endpoint registered';
my $hook = $r->{json};
ok !exists $hook->{secret}, 'the secret is never shown';
is_deeply $hook->{kinds}, ['flag'], 'kinds filter';
is scalar @{ req(GET => "$flags/webhooks", \%A)->{json} }, 1, 'listed';
unlike req(GET => "$flags/webhooks", \%A)->{content}, qr/\Q$SECRET\E/, 'no secret in the list';

# --- refused (503), then hanging, then accepting; admin latency meanwhile ---
my @lat;
sub timed { my $t = time; my $r = req(@_); push @lat, time - $t; $r }
is timed(POST => "$flags/flags", \%A, { name => "hook-$_" })->{status}, 201, "flag hook-$_ created (receiver refusing)"
    for 1 .. 3;
# Per-endpoint order: the oldest change is retried; the later ones wait
# behind it (deliveries are listed newest first).
ok $h->wait_until(15, sub {
    my $d = req(GET => "$flags/webhooks/$hook->{id}/deliveries", \%A)->{json} || [];
    @$d == 3 && $d->[2]{attempts} >= 2 }), 'the oldest retried while refused';
my $d = req(GET => "$flags/webhooks/$hook->{id}/deliveries", \%A)->{json};
is $d->[2]{status}, 'pending', 'still pending';
is $d->[2]{last_error}, 'HTTP 503', 'last error: HTTP 503';
is_deeply [ map { "$_->{status} $_->{attempts}" } @$d[0, 1] ], [ 'pending 0', 'pending 0' ],
    'the later changes wait behind it, not sent before it';
mode('hang');
is timed(PUT => "$flags/flags/hook-$_", \%A, { is_enabled => JSON::PP::true })->{status}, 200,
    "flag hook-$_ enabled (receiver hanging)" for 1 .. 3;
ok $h->wait_until(15, sub {
    grep { ($_->{last_error} // '') =~ /timeout|timed out/i } @{ req(GET => "$flags/webhooks/$hook->{id}/deliveries", \%A)->{json} || [] } }),
    'a hanging receiver times out';
is timed(DELETE => "$flags/flags/hook-3", \%A)->{status}, 204, 'flag deleted (receiver hanging)';
my $max = (sort { $b <=> $a } @lat)[0];
cmp_ok $max, '<', 0.9, sprintf('admin requests never wait for the receiver (max %.3f s < its 1 s timeout)', $max);
mode('ok');
ok $h->wait_until(30, sub { !grep { $_->{status} ne 'delivered' } @{ req(GET => "$flags/webhooks/$hook->{id}/deliveries", \%A)->{json} || [] } }),
    'all delivered once accepted';
my $got = received();
my %by_id;
$by_id{ $_->{id} }++ for @$got;
# At least once: a request the receiver read only after the daemon had
# timed out on it (its backlog while it hung) is sent again; receivers
# deduplicate on the delivery id.
is scalar(keys %by_id), 7, 'seven changes, seven delivery ids accepted';
my $n_got = @$got;
sleep 1.5;
is scalar @{ received() }, $n_got, 'nothing more is sent once accepted';
my %seen;
$got = [ grep { !$seen{ $_->{id} }++ } @$got ];
my $good = 0;
for my $g (@$got) {
    my ($t, $v1) = ($g->{sig} // '') =~ /^t=(\d+),v1=([0-9a-f]{64})$/;
    $good++ if $v1 && $v1 eq hmac_sha256_hex("$t.$g->{body}", $SECRET) && abs(time - $t) < 120;
}
is $good, scalar @$got, 'every signature verifies (t + "." + body, HMAC-SHA256)';
my @order = map { $J->decode($_->{body})->{record}{id} } @$got;
is_deeply \@order, [ sort { $a <=> $b } @order ], 'received in the order of the changes';
my @events = sort map { my $b = $J->decode($_->{body}); "$b->{event} $b->{record}{name}" } @$got;
is_deeply \@events, [ sort(map("flag.create hook-$_", 1 .. 3), map("flag.update hook-$_", 1 .. 3), 'flag.delete hook-3') ],
    'the records: creates, updates, the delete';
my ($upd) = grep { $J->decode($_->{body})->{event} eq 'flag.update' } @$got;
my $rec = $J->decode($upd->{body})->{record};
ok !$rec->{before}{is_enabled} && $rec->{after}{is_enabled}, 'payload carries before and after';
is $rec->{actor}{name}, 'hooks-admin', 'and the actor';

# --- filters: an environment the endpoint does not watch is not sent ---
is req(PUT => "$flags/webhooks/$hook->{id}", \%A, { environments => ['production'] })->{status}, 200, 'filter set';
my $before = scalar @{ received() };
is req(PUT => "$flags/flags/hook-1", \%A, { description => 'x' })->{status}, 200, 'change in default';
is $h->psql("SELECT count(*) FROM webhook_outbox WHERE webhook_id = $hook->{id} AND status = 'pending'"), 0,
    'filtered out: no outbox row';
is req(PUT => "$flags/webhooks/$hook->{id}", \%A, { environments => undef })->{status}, 200, 'filter cleared';

# --- ping, Slack format ---
$r = req(POST => "$flags/webhooks", \%A, { url => "http://127.0.0.1:$port/slack", secret => $SECRET, format => 'slack' });
is $r->{status}, 201, 'slack endpoint';
my $slack = $r->{json}{id};
$r = req(POST => "$flags/webhooks/$slack/ping", \%A);
is $r->{status}, 202, 'ping accepted';
my $ping_id = $r->{json}{delivery_id};
ok $h->wait_until(10, sub { grep { ($_->{id} // '') eq $ping_id } @{ received() } }), 'ping delivered';
is req(PUT => "$flags/flags/hook-2", \%A, { is_enabled => JSON::PP::false })->{status}, 200, 'a change for slack';
ok $h->wait_until(10, sub { grep { $_->{body} =~ /"text"/ && $_->{body} =~ /hook-2/ } @{ received() } }),
    'slack payload delivered';
my ($s) = grep { $_->{body} =~ /hook-2/ && $_->{body} =~ /"text"/ } @{ received() };
is_deeply [ sort keys %{ $J->decode($s->{body}) } ], ['text'], 'slack payload: {"text": ...}';
like $J->decode($s->{body})->{text}, qr/hooks-admin: update flag "hook-2"/, 'slack text says who did what';
is req(DELETE => "$flags/webhooks/$slack", \%A)->{status}, 204, 'slack endpoint deleted';

# --- kill -9 with a delivery pending: delivered after the restart ---
mode('503');
is req(POST => "$flags/flags", \%A, { name => 'after-kill' })->{status}, 201, 'change while refused';
ok $h->wait_until(10, sub { $h->psql("SELECT attempts FROM webhook_outbox o WHERE body LIKE '%after-kill%'") >= 1 }),
    'attempted once';
$h->signal('KILL', 'flags');
sleep 0.3;
mode('ok');
$h->restart('flags');
ok $h->wait_until(15, sub { grep { $_->{body} =~ /after-kill/ } @{ received() } }), 'delivered after kill -9 and restart';
# The outcome is committed when the daemon's round ends, just after the receiver answered.
ok $h->wait_until(10, sub { $h->psql("SELECT status FROM webhook_outbox WHERE body LIKE '%after-kill%'") eq 'delivered' }),
    'marked delivered';

# --- a burst through two replicas sharing the outbox, to two endpoints:
# rows are claimed in batches (per endpoint, in order), an endpoint is
# served by one replica at a time: no row delivered by both, none out of
# order ---
my ($h2, $flags2) = replica($h, 'flags', AUTH_SERVICE_URL => $auth, %W);
my $second = req(POST => "$flags/webhooks", \%A, { url => "http://127.0.0.1:$port/second", secret => $SECRET, kinds => ['flag'] })->{json}{id};
ok $second, 'a second endpoint';
$before = scalar @{ received() };
my $BURST = 200;
my $t_burst = time;
for my $i (1 .. $BURST) {
    req(PUT => ($i % 2 ? $flags : $flags2) . "/flags/hook-1", \%A, { description => "rev $i" });
}
my $t_written = time;
ok $h->wait_until(60, sub { scalar @{ received() } >= $before + 2 * $BURST
    && $h->psql("SELECT count(*) FROM webhook_outbox WHERE status = 'pending'") == 0 }), "$BURST changes x 2 endpoints delivered";
diag sprintf('burst: %d changes written in %.2f s; all %d deliveries done %.2f s after the last write',
             $BURST, $t_written - $t_burst, 2 * $BURST, time - $t_written);
# The receiver always accepts here, so at-least-once is exactly once.
my @since = @{ received() }[ $before .. $#{ received() } ];
%by_id = ();
$by_id{ $_->{id} }++ for @since;
is scalar(grep { $_ > 1 } values %by_id), 0, 'no delivery id received twice with two replicas';
is scalar @since, 2 * $BURST, 'one request per change and endpoint';
for my $path ('hook', 'second') {
    my @revs = map { $J->decode($_->{body})->{record}{after}{description} } grep { $_->{path} eq "/$path" } @since;
    is_deeply \@revs, [ map { "rev $_" } 1 .. $BURST ], "/$path received the burst in order";
}
is $h->psql("SELECT count(DISTINCT attempts) FROM webhook_outbox WHERE status = 'delivered'"
            . " AND body LIKE '%rev %'"), 1, 'each in one attempt';
is req(DELETE => "$flags/webhooks/$second", \%A)->{status}, 204, 'second endpoint deleted';
is req(GET => "$flags2/health")->{status}, 200, 'the replica was up throughout';
$h2->teardown;

# --- an endpoint that hangs does not hold another's deliveries: each
# endpoint's rows go in their own chain, the chains in parallel ---
my $port2 = receiver("$dir/recv2.mode", "$dir/recv2.log");
my $fast = req(POST => "$flags/webhooks", \%A, { url => "http://127.0.0.1:$port2/fast", secret => $SECRET, kinds => ['flag'] })->{json}{id};
ok $fast, 'an endpoint on a second receiver';
mode('hang');
is req(PUT => "$flags/flags/hook-1", \%A, { description => "while hanging $_" })->{status}, 200, "change $_ while the first hangs"
    for 1 .. 10;
my $t_hang = time;
ok $h->wait_until(5, sub { @{ received("$dir/recv2.log") } >= 10 }),
    'the other endpoint has its 10 changes within 5 s (not after 10 of the first one\'s 1 s timeouts)';
diag sprintf('second endpoint: 10 deliveries in %.2f s while the first hangs', time - $t_hang);
is_deeply [ map { $J->decode($_->{body})->{record}{after}{description} } @{ received("$dir/recv2.log") } ],
    [ map { "while hanging $_" } 1 .. 10 ], 'in order, once each';
mode('ok');
ok $h->wait_until(40, sub { $h->psql("SELECT count(*) FROM webhook_outbox WHERE status = 'pending'") == 0 }),
    'the first endpoint catches up once it answers';
is req(DELETE => "$flags/webhooks/$fast", \%A)->{status}, 204, 'second receiver\'s endpoint deleted';

# --- given up after the retry window: failed, visible ---
$h->{env}{flags}{TM_WEBHOOK_RETRY_SECONDS} = 2;
$h->restart('flags');
mode('503');
is req(POST => "$flags/flags", \%A, { name => 'doomed' })->{status}, 201, 'change while refused';
ok $h->wait_until(20, sub { grep { $_->{status} eq 'failed' } @{ req(GET => "$flags/webhooks/$hook->{id}/deliveries", \%A)->{json} || [] } }),
    'marked failed after the retry window';
($d) = grep { $_->{status} eq 'failed' } @{ req(GET => "$flags/webhooks/$hook->{id}/deliveries", \%A)->{json} };
ok $d->{attempts} >= 2 && $d->{last_error} eq 'HTTP 503', "failed delivery shows attempts ($d->{attempts}) and last error";

# --- deleting an endpoint drops its outbox ---
is req(DELETE => "$flags/webhooks/$hook->{id}", \%A)->{status}, 204, 'endpoint deleted';
is req(GET => "$flags/webhooks/$hook->{id}/deliveries", \%A)->{status}, 404, 'its deliveries are gone with it';

done_testing;
