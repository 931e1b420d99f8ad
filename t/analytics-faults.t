#!/usr/bin/env perl
# The analytics worker when DynamoDB pushes back and when it dies mid-batch:
# a proxy in front of moto's DynamoDB answers BatchWriteItem first with
# throttling, then with UnprocessedItems; every event still lands exactly
# once. Then the worker is killed (SIGKILL) while busy and restarted: no
# event lost, none duplicated.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::AWS;
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(_exit);

my $h = TM::Harness->new;
my $moto = $h->moto;
my $aws = TM::AWS->new($moto);
my $table = 'Faults';
my $p = $aws->create_pipeline(queue => 'faults-q', table => $table, max_receive => 10, visibility => 2);
my $q = $p->{queue_url};
my $dir = $h->dir;
my $J = JSON::PP->new->canonical;

# --- a DynamoDB that throttles, then leaves items unprocessed ----------------
my $srv = IO::Socket::INET->new(Listen => 10, LocalAddr => '127.0.0.1', LocalPort => 0, ReuseAddr => 1)
    or die "listen: $!";
my $proxy = "http://127.0.0.1:" . $srv->sockport;
my $child = fork // die "fork: $!";
if (!$child) {
    my $http = HTTP::Tiny->new(timeout => 30, keep_alive => 0);
    my $batch = 0;
    while (my $c = $srv->accept) {
        my ($head, %hd) = ('');
        while (defined(my $l = <$c>)) { last if $l eq "\r\n"; $head .= $l;
            $hd{lc $1} = $2 if $l =~ /^([^:]+):\s*(.*?)\r?\n$/ }
        my $body = '';
        read($c, $body, $hd{'content-length'} // 0);
        my ($status, $reply) = (200, undef);
        my $target = $hd{'x-amz-target'} // '';
        my $req = eval { $J->decode($body) } // {};
        if ($target eq 'DynamoDB_20120810.BatchWriteItem') {
            $batch++;
            if (open my $f, '>>', "$dir/ddb-calls") { print $f scalar(@{ $req->{RequestItems}{$table} // [] }) . "\n"; close $f }
            if ($batch == 1) {
                ($status, $reply) = (400, '{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"slow down"}');
            } elsif ($batch == 2) {
                # Store only the first item; hand the rest back.
                my @reqs = @{ $req->{RequestItems}{$table} };
                my $first = shift @reqs;
                $body = $J->encode({ RequestItems => { $table => [$first] } });
                my $r = $http->request(POST => "$moto/", { headers => { map { $_ => $hd{$_} } grep { /^(x-amz-target|content-type|authorization|x-amz-date)$/ } keys %hd }, content => $body });
                $reply = $J->encode({ UnprocessedItems => @reqs ? { $table => \@reqs } : {} });
            }
        }
        if (!defined $reply) {
            my $r = $http->request(POST => "$moto/", { headers => { map { $_ => $hd{$_} } grep { /^(x-amz-target|content-type|authorization|x-amz-date)$/ } keys %hd }, content => $body });
            ($status, $reply) = ($r->{status}, $r->{content});
        }
        print $c "HTTP/1.1 $status X\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: "
            . length($reply) . "\r\nConnection: close\r\n\r\n$reply";
        close $c;
    }
    _exit(0);
}
close $srv;

my %env = (AWS_ENDPOINT_URL => $moto, AWS_ENDPOINT_URL_DYNAMODB => $proxy, AWS_SQS_URL => $q,
           AWS_DYNAMODB_TABLE => $table, AWS_REGION => 'us-east-1', AWS_ACCESS_KEY_ID => 'test',
           AWS_SECRET_ACCESS_KEY => 'test', BIND_ADDR => '127.0.0.1', TM_SQS_WAIT_SECONDS => 1,
           TM_POLLERS => 1, TM_BACKOFF_BASE_MS => 20, TM_BACKOFF_MAX_MS => 200);
my $port = $h->start('analytics', undef, %env);
my $base = "http://127.0.0.1:$port";
sub metric {
    my $r = $h->req(GET => "$base/metrics");
    return $r->{content} =~ /^togglemaster_analytics_\Q$_[0]\E (\S+)$/m ? $1 + 0 : undef;
}
sub count { scalar @{ $aws->scan($table) } }
my $n = 0;
sub envelope { my $k = shift; $J->encode({ v => 1, events => [map { { event_id => sprintf('evt-%06d', $n++),
    user_id => "u$_", flag_name => 'f', result => JSON::PP::true, timestamp => '2026-11-22T10:00:00Z' } } 1 .. $k] }) }

$aws->send($q, envelope(5));
ok $h->wait_until(15, sub { $aws->queue_depth($q) == 0 }), 'message consumed';
is count(), 5, 'all 5 events stored despite throttling and unprocessed items';
open my $f, '<', "$dir/ddb-calls" or die;
my @calls = map { chomp; $_ } <$f>;
is_deeply \@calls, [5, 5, 4], 'throttled -> all 5 again -> only the 4 unprocessed resent';
is metric('dynamodb_throttled_total'), 1, 'throttling counted';
is metric('events_retried_total'), 9, 'retries counted (5 after throttling, 4 unprocessed)';
is metric('events_stored_total'), 5, 'stored counted once each';
is metric('events_failed_total'), 0, 'nothing failed';
$h->stop('analytics');

# --- killed mid-batch and restarted: nothing lost, nothing doubled -----------
delete $env{AWS_ENDPOINT_URL_DYNAMODB};
$h->start('analytics', $port, %env, TM_POLLERS => 2);
for (1 .. 6) { $aws->send_batch($q, map { envelope(50) } 1 .. 10) }   # 60 messages, 3000 events
my $total = 5 + 3000;
$h->wait_until(20, sub { (metric('events_stored_total') // 0) >= 300 });
$h->signal(KILL => 'analytics');
my $at_kill = count();
cmp_ok $at_kill, '<', $total, "killed mid-way ($at_kill of $total stored)";
$h->stop('analytics');
$h->start('analytics', $port, %env, TM_POLLERS => 2);
ok $h->wait_until(40, sub { $aws->queue_depth($q) == 0 }), 'queue drained after restart';
is count(), $total, "exactly $total items: no loss, no duplicates";
is $aws->queue_depth($p->{dlq_url}), 0, 'nothing dead-lettered';

kill 'KILL', $child;
waitpid $child, 0;
$h->teardown;
done_testing;
