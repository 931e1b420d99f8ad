#!/usr/bin/env perl
# With "resolver" at http level, the module resolves the SQS endpoint's host
# name again as its answer expires, with nginx's own non-blocking resolver:
# a changed DNS answer is followed without a reload. A small DNS server here
# answers A queries for the endpoint with an address the test chooses —
# first a dead one (events wait, errors counted, evaluations unaffected),
# then moto's (the waiting events go).
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::AWS;
use TM::DNS;
use Time::HiRes qw(time sleep);

my $h = TM::Harness->new;
my $dir = $h->dir;
my $moto = $h->moto;
my ($mport) = $moto =~ /:(\d+)$/ or die "moto url: $moto";
my $q = TM::AWS->new($moto)->create_queue('tm-resolve');
delete @ENV{qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE AWS_ENDPOINT_URL
               AWS_ENDPOINT_URL_SQS AWS_SQS_URL AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN
               AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)};

# --- the DNS server (TM::DNS): A records as the test says, TTL 1 s ---------
my $dns = TM::DNS->new($dir);
$dns->answer_with('127.0.0.3');         # nothing listens there
my $dport = $dns->port;

my $ng = TM::Nginx->new($h, redis => 0, workers => 1, http => <<"CONF");
    resolver 127.0.0.1:$dport valid=1s ipv6=off;
    resolver_timeout 1s;
    togglemaster_events on;
    togglemaster_sqs_queue_url $q;
    togglemaster_aws_endpoint http://localhost:$mport;
    togglemaster_aws_region us-east-1;
    togglemaster_events_batch 10 100ms;
    togglemaster_events_timeout 1s;
    togglemaster_events_attempts 100;
    togglemaster_events_backoff_max 300ms;
CONF
$ng->start;

# localhost was 127.0.0.1 when the configuration was read; the worker's own
# resolution moves the endpoint to the dead address
ok $h->wait_until(10, sub { $ng->error_log =~ /"localhost" now resolves to 127\.0\.0\.3:$mport/ }),
    'the worker resolved the endpoint again (nginx resolver): now the dead address';
my $bad = 0;
for (1 .. 10) { $bad++ unless $h->req(GET => $ng->url("/evaluate?user_id=u$_&flag_name=f"))->{status} == 200 }
is $bad, 0, '10 evaluations answered';
ok $h->wait_until(10, sub { TM::Nginx::m_sum($ng->metrics, 'togglemaster_sqs_errors_total') >= 1 }),
    '... their events cannot go: SQS errors counted';
is $ng->metrics->{togglemaster_events_sent_total}, 0, '... none sent';

$dns->answer_with('127.0.0.1');
ok $h->wait_until(10, sub { $ng->error_log =~ /"localhost" now resolves to 127\.0\.0\.1:$mport/ }),
    'the DNS answer changed back: followed without a reload';
ok $h->wait_until(15, sub { ($ng->metrics->{togglemaster_events_sent_total} // 0) == 10 }),
    '... and the 10 waiting events went to SQS';
unlike $ng->error_log, qr/\[(alert|emerg)\]/, 'no alerts';
done_testing;
