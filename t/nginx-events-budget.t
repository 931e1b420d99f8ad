#!/usr/bin/env perl
# The event buffer has a byte budget (togglemaster_events_buffer_size), not
# only a count: with SQS unreachable, events with 1 KB identities fill it and
# further ones are dropped with reason "buffer_bytes"; the buffers' size
# (togglemaster_events_buffer_bytes) never exceeds the budget, and every
# evaluation is still answered. A budget below two SQS messages is refused
# when the configuration is read.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $h = TM::Harness->new;
delete @ENV{qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE AWS_ENDPOINT_URL
               AWS_ENDPOINT_URL_SQS AWS_SQS_URL AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN
               AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)};
my $dead = TM::Harness::free_port();   # nothing listens: SQS is down
my $events = sub {
    my $size = shift;
    return <<"CONF";
    togglemaster_events on;
    togglemaster_sqs_queue_url http://127.0.0.1:$dead/000000000000/q;
    togglemaster_aws_endpoint http://127.0.0.1:$dead;
    togglemaster_aws_region us-east-1;
    togglemaster_events_buffer 100000;
    togglemaster_events_buffer_size $size;
    togglemaster_events_batch 10 100ms;
    togglemaster_events_timeout 1s;
    togglemaster_events_attempts 1000;
    togglemaster_events_backoff_max 300ms;
CONF
};

# --- parse-time validation ---
my $bad = TM::Nginx->new($h, redis => 0, http => $events->('100k'));
my $env = TM::Nginx::shell_env($h);
my $out = `$env nginx -t -p ${\ $bad->dir} -c ${\ $bad->dir}/nginx.conf 2>&1`;
isnt $?, 0, 'togglemaster_events_buffer_size 100k: nginx -t fails';
like $out, qr/togglemaster_events_buffer_size.*must be at least 512k/, '... saying why' or diag $out;
$bad = TM::Nginx->new($h, redis => 0, http => $events->('lots'));
$out = `$env nginx -t -p ${\ $bad->dir} -c ${\ $bad->dir}/nginx.conf 2>&1`;
isnt $?, 0, 'a value that is not a size: refused too';

# --- the budget holds ---
my $budget = 1024 * 1024;
my $ng = TM::Nginx->new($h, redis => 0, http => $events->('1m'))->start;
my $user = 'u' x 1000;
my ($n, $ok) = (2000, 0);
for my $i (1 .. $n) {
    $ok++ if $h->req(GET => $ng->url("/evaluate?user_id=$user$i&flag_name=f"))->{status} == 200;
}
is $ok, $n, "$n evaluations with 1 KB identities answered while SQS is down";
my $m = $ng->metrics;
my $dropped = $m->{'togglemaster_events_dropped_total{reason="buffer_bytes"}'} // 0;
ok $dropped > 0, "events dropped for the byte budget: $dropped";
is $m->{'togglemaster_events_dropped_total{reason="buffer_full"}'} // 0, 0, '... not for the count';
my $bytes = TM::Nginx::m_sum($m, 'togglemaster_events_buffer_bytes');
ok $bytes > $budget / 2 && $bytes <= $budget, "buffers hold $bytes bytes, within the 1 MiB budget";
my $held = TM::Nginx::m_sum($m, 'togglemaster_events_buffered');
is $held + $dropped, $n, "every event is held ($held) or counted as dropped";
done_testing;
