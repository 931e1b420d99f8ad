#!/usr/bin/env perl
# The original ingress contract through the real gateway: the original
# ingress strips the service prefix (/<service>/<path> reaches that service's
# /<path>), so /flags/flags lists flags, /evaluate/evaluate evaluates and
# /<service>/health (and /health/live, /health/ready) is each service's
# health, without a key. Checked through both shipped configs:
# nginx-conf/dev.conf as `make run` starts it
# (scripts/run.sh on free ports) and nginx-conf/ingress.conf as the gateway
# image's entry point renders it, its upstreams pointed at the same daemons.
# What the gateway answered before at its root (/evaluate, /ofrep/v1/,
# /flags, /flags/<name>) keeps working. Bulk OFREP answers list an event
# stream (issue 14) at the prefix they were asked under, and it opens.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha1);
use File::Path qw(make_path);
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Stack;
use TM::SSE qw(sopen);

my $h = TM::Harness->new;
my $s = TM::Stack->new(master_key => 'gw-master');
plan skip_all => 'the nginx module is not built' unless -s $s->dir . '/nginx.pid';
ok $s->started, 'run.sh start' or diag $s->output;
my $J = $h->json;

# --- nginx-conf/ingress.conf, rendered by compose/gateway-entrypoint.sh ---
my $dir = $h->dir;
my $tmpl = do { local (@ARGV, $/) = ('nginx-conf/ingress.conf'); <> };
my ($eval_port, $gw_port) = (TM::Harness::free_port(), TM::Harness::free_port());
# only addresses change: the daemons of the stack, loopback ports
my $n = 0;
$n += $tmpl =~ s{server (auth|flags|targeting|analytics):\d+;}{'server 127.0.0.1:' . $s->port(uc $1) . ';'}ge;
$n += $tmpl =~ s{listen 8004;}{listen 127.0.0.1:$eval_port;};
$n += $tmpl =~ s{listen 8080;}{listen 127.0.0.1:$gw_port;};
is $n, 6, 'ingress.conf: four upstreams and two listen addresses moved to loopback ports';
open my $f, '>', "$dir/ingress.conf" or die $!;
print $f $tmpl;
close $f;
make_path("$dir/nginx");
# TM_SSE_SECRET: nginx reads it from the environment, as in the containers
my %aws = (AWS_REGION => 'us-east-1', AWS_ACCESS_KEY_ID => 'test', AWS_SECRET_ACCESS_KEY => 'test',
           TM_SSE_SECRET => 'gateway-paths-sse-secret-0123456789abcdef',
           AWS_ENDPOINT_URL => $s->url('AWS'),
           AWS_SQS_URL => $s->url('AWS') . '/000000000000/togglemaster-events');
{
    local %ENV = (%ENV, %aws, TM_NGINX_TEMPLATE => "$dir/ingress.conf", TM_NGINX_DIR => "$dir/render",
                  MODULE => $TM::Nginx::MODULE, RUN => $dir, RESOLVER => '127.0.0.1',
                  REDIS_URL => $s->url('REDIS') =~ s{^http}{redis}r);
    my $out = `${\ TM::Nginx::shell_env($h)} compose/gateway-entrypoint.sh -t 2>&1`;
    is $?, 0, 'the entry point renders ingress.conf and nginx -t accepts it' or diag $out;
    # REDIS_CLUSTER, as the daemons read it, becomes togglemaster_redis's "cluster"
    local $ENV{TM_NGINX_DIR} = "$dir/render-cluster";
    local $ENV{REDIS_CLUSTER} = 1;
    $out = `${\ TM::Nginx::shell_env($h)} compose/gateway-entrypoint.sh -t 2>&1`;
    is $?, 0, 'REDIS_CLUSTER=1: nginx -t accepts the rendered config' or diag $out;
    my $conf = do { local (@ARGV, $/) = ("$dir/render-cluster/nginx.conf"); <> } // '';
    like $conf, qr/togglemaster_redis "redis:[^"]*" cluster;/, '  with "togglemaster_redis ... cluster"';
    $ENV{REDIS_CLUSTER} = 'yes';
    $out = `${\ TM::Nginx::shell_env($h)} compose/gateway-entrypoint.sh -t 2>&1`;
    is $? >> 8, 2, 'REDIS_CLUSTER=yes: the entry point refuses it';
    like $out, qr/REDIS_CLUSTER must be 1/, '  and says why';
}
system('cp', "$dir/render/nginx.conf", "$dir/nginx/nginx.conf") == 0 or die 'cp failed';
# as root, nginx workers run as nobody and write the snapshot file there
system('chown', '-R', 'nobody', "$dir/nginx") if $> == 0;
$h->start('nginx', $gw_port, %aws, TM::Nginx::san_env($h));

my %GW = ('dev.conf' => $s->url('INGRESS'), 'ingress.conf' => "http://127.0.0.1:$gw_port");

my $key = $h->req(POST => $s->url('AUTH') . '/admin/keys', { Authorization => 'Bearer gw-master' },
                  { name => 'gw' })->{json}{key};
ok $key, 'an API key';
my %K = (Authorization => "Bearer $key");
for my $conf (sort keys %GW) {
    ok $h->wait_until(10, sub { $h->req(GET => "$GW{$conf}/flags/flags", \%K)->{status} == 200 }),
        "$conf: the gateway knows the key";
}

# the original bucket: uint32_be(sha1(user + flag)[0..4]) % 100
sub bucket { unpack('N', substr(sha1($_[0] . $_[1]), 0, 4)) % 100 }

sub is_health {
    my ($url, $name) = @_;
    my $r = $h->req(GET => $url);
    is $r->{status}, 200, "$name: 200 without a key";
    is_deeply $r->{json}, { status => 'ok' }, "$name: {\"status\":\"ok\"}";
}

for my $conf (sort keys %GW) {
    my $G = $GW{$conf};
    my $name = "gw-$conf" =~ s/\W/-/gr;

    # --- health of every service under its prefix ---
    for my $svc (qw(flags evaluate auth targeting analytics)) {
        is_health("$G/$svc/health$_", "$conf: GET /$svc/health$_") for '', '/live', '/ready';
    }

    # --- the flags service under /flags ---
    my $r = $h->req(POST => "$G/flags/flags", \%K, { name => $name, description => 'via the ingress', is_enabled => JSON::PP::true });
    is $r->{status}, 201, "$conf: POST /flags/flags -> 201";
    is_deeply [ sort keys %{ $r->{json} || {} } ], [qw(created_at description id is_enabled name updated_at)], "$conf: ... the row";
    is $r->{json}{name}, $name, "$conf: ... named";
    my $created = $r->{json}{updated_at};
    is $h->req(POST => "$G/flags/flags", \%K, { name => $name })->{status}, 409, "$conf: POST /flags/flags duplicate -> 409";
    $r = $h->req(POST => "$G/flags/flags", \%K, {});
    is $r->{status}, 400, "$conf: POST /flags/flags without a name -> 400";
    ok $r->{json}{error}, "$conf: ... a JSON error";
    $r = $h->req(GET => "$G/flags/flags", \%K);
    is $r->{status}, 200, "$conf: GET /flags/flags -> 200";
    ok((grep { $_->{name} eq $name } @{ $r->{json} || [] }), "$conf: ... lists the flag");
    my @names = map { $_->{name} } @{ $r->{json} || [] };
    is_deeply \@names, [ sort @names ], "$conf: ... ordered by name";
    $r = $h->req(GET => "$G/flags/flags/$name", \%K);
    is $r->{status}, 200, "$conf: GET /flags/flags/<name> -> 200";
    is $r->{json}{description}, 'via the ingress', "$conf: ... the row";
    is $h->req(GET => "$G/flags/flags/no-such-flag", \%K)->{status}, 404, "$conf: GET /flags/flags/<unknown> -> 404";
    $r = $h->req(PUT => "$G/flags/flags/$name", \%K, { description => 'changed' });
    is $r->{status}, 200, "$conf: PUT /flags/flags/<name> -> 200";
    is $r->{json}{description}, 'changed', "$conf: ... changed";
    isnt $r->{json}{updated_at}, $created, "$conf: ... updated_at moved";
    is $h->req(PUT => "$G/flags/flags/$name", \%K, {})->{status}, 400, "$conf: PUT /flags/flags/<name> with nothing -> 400";
    is $h->req(PUT => "$G/flags/flags/no-such-flag", \%K, { is_enabled => JSON::PP::true })->{status}, 404,
        "$conf: PUT /flags/flags/<unknown> -> 404";
    $r = $h->req(GET => "$G/flags/flags");
    is $r->{status}, 401, "$conf: GET /flags/flags without a key -> 401";
    ok $r->{json}{error}, "$conf: ... a JSON error";

    # --- targeting under /targeting, auth under /auth ---
    is $h->req(POST => "$G/targeting/rules", \%K, { flag_name => $name, rules => { type => 'PERCENTAGE', value => 30 } })->{status},
        201, "$conf: POST /targeting/rules -> 201";
    is $h->req(GET => "$G/targeting/rules/$name", \%K)->{json}{rules}{value}, 30, "$conf: GET /targeting/rules/<name>";
    is $h->req(GET => "$G/auth/validate", \%K)->{status}, 200, "$conf: GET /auth/validate -> 200";
    is $h->req(GET => "$G/auth/validate", { Authorization => 'Bearer tm_key_wrong' })->{status}, 401,
        "$conf: GET /auth/validate with a wrong key -> 401";
    is $h->req(POST => "$G/auth/admin/keys", { Authorization => 'Bearer gw-master' }, { name => "k-$name" })->{status}, 201,
        "$conf: POST /auth/admin/keys -> 201";

    # --- the evaluation service under /evaluate ---
    my @users = map { "user$_" } 1 .. 20;
    my %want = map { $_ => (bucket($_, $name) < 30 ? JSON::PP::true : JSON::PP::false) } @users;
    ok((grep { $want{$_} } @users) && (grep { !$want{$_} } @users), "$conf: the users fall on both sides of 30");
    my $evaluate = sub { $h->req(GET => "$G/evaluate/evaluate?user_id=$_[0]&flag_name=$name", \%K) };
    # the edge learns of the rule through Redis pub/sub within milliseconds
    ok $h->wait_until(10, sub { !grep { ($evaluate->($_)->{json}{result} // -1) ne $want{$_} } @users }),
        "$conf: GET /evaluate/evaluate answers the rule";
    $r = $evaluate->('user1');
    is $r->{status}, 200, "$conf: GET /evaluate/evaluate -> 200";
    is_deeply $r->{json}, { flag_name => $name, user_id => 'user1', result => $want{user1} }, "$conf: ... the original answer";
    $r = $h->req(GET => "$G/evaluate/evaluate?user_id=u", \%K);
    is $r->{status}, 400, "$conf: GET /evaluate/evaluate without flag_name -> 400";
    is $h->req(GET => "$G/evaluate/evaluate?user_id=u&flag_name=$name")->{status}, 401, "$conf: ... without a key -> 401";
    $r = $h->req(POST => "$G/evaluate/ofrep/v1/evaluate/flags/$name", \%K, { context => { targetingKey => 'user1' } });
    is $r->{status}, 200, "$conf: POST /evaluate/ofrep/v1/evaluate/flags/<name> -> 200";
    is $r->{json}{key}, $name, "$conf: ... OFREP";

    # --- what the gateway answered at its root before ---
    $r = $h->req(GET => "$G/evaluate?user_id=user1&flag_name=$name", \%K);
    is_deeply $r->{json}, { flag_name => $name, user_id => 'user1', result => $want{user1} }, "$conf: GET /evaluate at the root";
    $r = $h->req(POST => "$G/ofrep/v1/evaluate/flags/$name", \%K, { context => { targetingKey => 'user1' } });
    is $r->{json}{value}, $want{user1}, "$conf: OFREP at the root";

    # --- the event streams bulk OFREP answers list, at either prefix ---
    for my $prefix ('', '/evaluate') {
        $r = $h->req(POST => "$G$prefix/ofrep/v1/evaluate/flags", \%K, { context => { targetingKey => 'user1' } });
        my $url = ($r->{json}{eventStreams} // [])->[0]{url} // '';
        like $url, qr{^\Q$G\E(?:/evaluate)?/ofrep/v1/stream\?token=}, "$conf: bulk OFREP at '$prefix/ofrep/v1' lists a stream on this gateway";
        like $url, qr{^\Q$G$prefix\E/ofrep/v1/stream\?}, "$conf: ... under the same prefix" if $conf eq 'ingress.conf';
        my $st = $url ? sopen($url) : {};
        is $st->{status}, 200, "$conf: ... which opens";
        like $st->{head} // '', qr{^Content-Type: text/event-stream}mi, "$conf: ... as an event stream";
        close $st->{s} if $st->{s};
    }
    is $h->req(GET => "$G/ofrep/v1/stream?token=forged")->{status}, 401, "$conf: a forged stream token: 401";
    ok((grep { $_->{name} eq $name } @{ $h->req(GET => "$G/flags", \%K)->{json} || [] }), "$conf: GET /flags at the root lists");
    is $h->req(GET => "$G/flags/$name", \%K)->{json}{name}, $name, "$conf: GET /flags/<name> at the root";
    is $h->req(GET => "$G/health")->{status}, 200, "$conf: GET /health at the root";

    # --- environments (the flags daemon's /environments) under /flags ---
    my $env = "gw-env-$conf" =~ s/\.conf$//r;
    $r = $h->req(POST => "$G/flags/environments", \%K, { name => $env });
    is $r->{status}, 201, "$conf: POST /flags/environments -> 201";
    ok((grep { $_->{name} eq 'default' } @{ $h->req(GET => "$G/flags/environments", \%K)->{json} || [] }),
       "$conf: GET /flags/environments lists the default environment");
    is $h->req(PUT => "$G/flags/flags/$name?environment=$env", \%K, { is_enabled => JSON::PP::true })->{status}, 200,
        "$conf: PUT /flags/flags/<name>?environment= -> 200";
    is $h->req(DELETE => "$G/flags/environments/$env", \%K)->{status}, 409,
        "$conf: DELETE /flags/environments/<non-empty> -> 409";
    is $h->req(DELETE => "$G/flags/environments/$env?confirm=$env", \%K)->{status}, 204,
        "$conf: ... with ?confirm=<name> -> 204";
    is $h->req(GET => "$G/flags/environments")->{status}, 401, "$conf: GET /flags/environments without a key -> 401";

    # --- the audit trails (docs/audit.md): /flags/audit is the daemon's, not a flag's ---
    $r = $h->req(GET => "$G/flags/audit?name=$name&environment=$env", \%K);
    is $r->{status}, 200, "$conf: GET /flags/audit -> 200";
    is(($r->{json}{records} || [])->[0]{name}, $name, "$conf: GET /flags/audit: the flags daemon's trail");
    $r = $h->req(GET => "$G/targeting/audit?limit=1", \%K);
    ok $r->{status} == 200 && ref $r->{json}{records} eq 'ARRAY', "$conf: GET /targeting/audit -> the targeting trail";
    is ref $h->req(GET => "$G/flags/webhooks", \%K)->{json}, 'ARRAY', "$conf: GET /flags/webhooks -> the flags daemon's endpoints";

    # --- delete ---
    $r = $h->req(DELETE => "$G/flags/flags/$name", \%K);
    is $r->{status}, 204, "$conf: DELETE /flags/flags/<name> -> 204";
    is $r->{content} // '', '', "$conf: ... empty body";
    is $h->req(DELETE => "$G/flags/flags/$name", \%K)->{status}, 404, "$conf: DELETE again -> 404";
    is $h->req(GET => "$G/flags/flags/$name", \%K)->{status}, 404, "$conf: GET after delete -> 404";
}

# a flag named like a route is reached under the original prefix
my $G = $GW{'ingress.conf'};
is $h->req(POST => "$G/flags/flags", \%K, { name => 'health', is_enabled => JSON::PP::true })->{status}, 201,
    'a flag named "health"';
is $h->req(GET => "$G/flags/flags/health", \%K)->{json}{name}, 'health', '... is /flags/flags/health';
is_deeply $h->req(GET => "$G/flags/health")->{json}, { status => 'ok' }, '... while /flags/health is the health check';

$h->stop('nginx');
ok $s->stop, 'run.sh stop';
done_testing;
