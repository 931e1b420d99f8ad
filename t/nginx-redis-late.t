#!/usr/bin/env perl
# A togglemaster_redis host that does not resolve when nginx starts (a
# stopped compose container's name is not in compose's DNS) does not stop
# nginx when there is a "resolver" at http level: the worker serves the
# snapshot file and resolves the name through nginx's resolver until it
# answers, then connects and follows Redis. A small DNS server here
# (TM::DNS) answers the name only when the test says so. Without a
# resolver, nginx refuses to start and says to set one; a bad URL fails
# whatever the DNS says.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::DNS;

my $h = TM::Harness->new;
my $dir = $h->dir;
$h->redis;
my $rport = $h->port('redis');
my $NAME = 'tm-redis-late.test';

# nginx -t on n's configuration: (exit status, output)
sub nginx_t {
    my $n = shift;
    local %ENV = (%ENV, TM::Nginx::san_env($h));
    my $out = `nginx -t -p $n->{dir} -c $n->{dir}/nginx.conf 2>&1`;
    return ($? >> 8, $out);
}

# --- a snapshot file, written by a gateway that could reach Redis ----------
TM::Nginx::set_flag($h, 'alpha', 1);
my $ng = TM::Nginx->new($h)->start;
ok $h->wait_until(10, sub { $ng->evaluate('u1', 'alpha') == 1 }), 'a first gateway follows Redis: alpha on';
ok $h->wait_until(10, sub { -s $ng->snapshot_file }), '... and writes its snapshot file';
$ng->stop;

# --- the name does not resolve yet ------------------------------------------
my $dns = TM::DNS->new($dir);
my $resolver = "resolver 127.0.0.1:" . $dns->port . " valid=1s ipv6=off;\n    resolver_timeout 1s;\n";
TM::Nginx::set_flag($h, 'alpha', 0);                 # the gateway cannot see this yet

my $late = TM::Nginx->new($h, redis_url => "redis://$NAME:$rport/0", http => $resolver);
my ($rc, $out) = nginx_t($late);
is $rc, 0, 'nginx -t accepts the configuration' or diag $out;
like $out, qr/\[warn\].*redis "[^"]*\Q$NAME\E[^"]*": host not found; the workers resolve it/,
    '... with a warning';
ok eval { $late->start; 1 }, 'nginx starts while its Redis host does not resolve' or diag $@;
is $late->evaluate('u1', 'alpha'), 1, '... and serves the snapshot file: alpha still on';
ok $h->wait_until(10, sub { $late->error_log =~ /cannot resolve "\Q$NAME\E" yet/ }),
    '... the worker asks the resolver and says the name does not resolve yet';
is $late->evaluate('u1', 'alpha'), 1, '... still the snapshot, Redis unreachable by name';

# --- the name resolves: the worker connects and picks up Redis's state -------
$dns->answer_with('127.0.0.1');
ok $h->wait_until(15, sub { $late->error_log =~ /"\Q$NAME\E" now resolves to 127\.0\.0\.1:$rport/ }),
    'once the DNS answers, the worker has the address';
ok $h->wait_until(15, sub { $late->evaluate('u1', 'alpha') == 0 }), '... connects and loads Redis: alpha off';
TM::Nginx::set_flag($h, 'beta', 1);
ok $h->wait_until(10, sub { $late->evaluate('u1', 'beta') == 1 }), '... and follows a change made in Redis';
unlike $late->error_log, qr/\[(alert|emerg|crit)\]/, 'no alerts';
$late->stop;

# --- without a resolver: a clear start-up error -----------------------------
my $bare = TM::Nginx->new($h, redis_url => "redis://$NAME:$rport/0");
($rc, $out) = nginx_t($bare);
isnt $rc, 0, 'without a resolver, nginx -t fails';
like $out, qr/\[emerg\].*no address for redis .*host not found.*"resolver" at http level/,
    '... saying the host was not found and a "resolver" would let it start';

# --- a bad URL fails even with a resolver -----------------------------------
my $badport = TM::Nginx->new($h, redis_url => "redis://$NAME:99999/0", http => $resolver);
($rc, $out) = nginx_t($badport);
isnt $rc, 0, 'a bad port fails the configuration, resolver or not';
like $out, qr/\[emerg\].*togglemaster_redis/, '... with an emerg about togglemaster_redis';

done_testing;
