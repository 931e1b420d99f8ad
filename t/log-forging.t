#!/usr/bin/env perl
# Log forging: text from a request or from Redis never starts a log line of
# its own. A daemon logs the (decoded) request path with line breaks escaped;
# the nginx module escapes names it read from Redis.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $h = TM::Harness->new;
my $FORGED = '2030-01-01T00:00:00.000Z ERROR auth: forged';

# --- a daemon's request log ---
my $flags = $h->daemon('flags');
my $r = $h->req(GET => "$flags/flags/x%0A2030-01-01T00:00:00.000Z%20ERROR%20auth:%20forged%0D%1B[2J");
ok $r->{status} >= 400 && $r->{status} < 500, "the request is refused ($r->{status})";
ok $h->wait_until(3, sub { $h->log('flags') =~ /forged/ }), 'the request was logged';
my $log = $h->log('flags');
unlike $log, qr/^\Q$FORGED\E/m, 'no forged line in the daemon log';
like $log, qr{GET /flags/x\\n\Q$FORGED\E\\r\\x1b\[2J \d{3} }, 'the path is logged on one line, escaped';

# --- the nginx module: a malformed flag whose name holds a line break ---
my $ng = TM::Nginx->new($h)->start;
TM::Nginx::set_flag($h, 'good', 1);
ok $h->wait_until(5, sub { $ng->evaluate('u', 'good') }), 'nginx serves';
my $name = "bad\n2030/01/01 00:00:00 [emerg] 1#1: forged";
TM::Nginx::set_raw($h, 'tm:flags', $name, '{"is_enabled": tru');
TM::Nginx::set_flag($h, 'after', 1);
ok $h->wait_until(5, sub { $ng->evaluate('u', 'after') }), 'the change after it applied';
ok $h->wait_until(3, sub { $ng->error_log =~ /malformed flag/ }), 'the malformed flag was logged';
my $el = $ng->error_log;
unlike $el, qr/^2030\/01\/01 00:00:00 \[emerg\]/m, 'no forged line in the nginx error log';
like $el, qr/malformed flag(?: name)? "bad\\n2030\/01\/01 00:00:00 \[emerg\] 1#1: forged" skipped/, 'the name is escaped';

done_testing;
