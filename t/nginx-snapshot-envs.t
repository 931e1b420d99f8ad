#!/usr/bin/env perl
# The snapshot file keeps every environment and every scoped key
# (ngx_http_togglemaster_file.c, invariant 2): with Redis down, a restarted
# nginx answers /evaluate and OFREP in a non-default environment with its
# server and client keys, each key keeps its scope (never admin), a key
# revoked before the file was written stays revoked; a corrupt or
# malformed file is refused whole; an older module's file (no
# environments) still loads; the previous release's module reading this
# file serves the default environment and refuses scoped keys.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;

my $h = TM::Harness->new;
$h->redis;
my $J = JSON::PP->new->canonical;
my ($T, $F) = (JSON::PP::true, JSON::PP::false);

sub env_flag { TM::Nginx::env_flag_json(@_) }
sub rule { my ($name, $pct) = @_; TM::Nginx::rule_json($name, { type => 'PERCENTAGE', value => $pct }) }
sub publish { my %m = @_; my $v = $h->redis_cmd('INCR', 'tm:version'); $h->redis_cmd('PUBLISH', 'tm:changes', $J->encode({ version => $v + 0, %m })); $v }

my %K = map { $_ => "tm_key_$_" . ('x' x 40) } qw(admin stg prod client ro revoked);
$h->redis_cmd('HSET', 'tm:keys', sha256_hex($K{admin}), '{"id":1,"name":"admin"}');
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{stg}), TM::Nginx::key2_json(server => 'staging'));
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{prod}), TM::Nginx::key2_json(server => 'production'));
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{client}), TM::Nginx::key2_json(client => 'staging'));
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{ro}), TM::Nginx::key2_json(readonly => undef));
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($K{revoked}), TM::Nginx::key2_json(server => 'staging'));
$h->redis_cmd('HSET', 'tm:envs', 'default', TM::Nginx::env_json('default', 1));
$h->redis_cmd('HSET', 'tm:envs', 'staging', TM::Nginx::env_json('staging', 2));
$h->redis_cmd('HSET', 'tm:envs', 'production', TM::Nginx::env_json('production', 3));
# the default: checkout off, def-on on; staging: checkout on, only-staging,
# banner (client-visible), secret (not), beta (on, rule 0 %); production:
# checkout off, ramp (on, rule 100 %)
$h->redis_cmd('HSET', 'tm:flags', 'checkout', TM::Nginx::flag_json('checkout', 0));
$h->redis_cmd('HSET', 'tm:flags', 'def-on', TM::Nginx::flag_json('def-on', 1));
$h->redis_cmd('HSET', 'tm:flags@staging', $_->[0], env_flag(@$_))
    for [checkout => 1], ['only-staging' => 1], [banner => 1, 1], [secret => 1, 0], [beta => 1];
$h->redis_cmd('HSET', 'tm:rules@staging', 'beta', rule(beta => 0));
$h->redis_cmd('HSET', 'tm:flags@production', $_->[0], env_flag(@$_)) for [checkout => 0], [ramp => 1];
$h->redis_cmd('HSET', 'tm:rules@production', 'ramp', rule(ramp => 100));
$h->redis_cmd('SADD', 'tm:ready', qw(flag rule key segment env key2 flag@staging rule@staging flag@production rule@production));
$h->redis_cmd('SET', 'tm:version', 10);

my $server = <<'CONF';
        location = /k/evaluate { togglemaster_api_key on; togglemaster_evaluate; }
        location /k/ofrep/v1/ { togglemaster_api_key server client; togglemaster_ofrep; }
        location /c/ofrep/v1/ { togglemaster_api_key client; togglemaster_ofrep; }
        location = /stg/evaluate { togglemaster_environment staging; togglemaster_evaluate; }
        location = /ro { togglemaster_api_key readonly; togglemaster_health; }
CONF
my $ng = TM::Nginx->new($h, server => $server);
$ng->start;

sub ev { my ($path, $key, $flag) = @_;
         my $r = $h->req(GET => $ng->url("$path?user_id=u1&flag_name=$flag"), $key ? { 'X-API-Key' => $key } : {});
         return $r->{status} == 200 ? ($r->{json}{result} ? 1 : 0) : "status $r->{status}" }
sub of { my ($path, $key, $flag) = @_;
         $h->req(POST => $ng->url($path . (defined $flag ? "/$flag" : '')), $key ? { 'X-API-Key' => $key } : {},
                 { context => { targetingKey => 'u1' } }) }

ok $h->wait_until(5, sub { ev('/k/evaluate', $K{stg}, 'checkout') eq '1' }), 'Redis up: staging served';
is ev('/k/evaluate', $K{revoked}, 'checkout'), 1, '... the key about to be revoked still works';

# revoked while nginx runs: the file written after it must not hold it
$h->redis_cmd('HDEL', 'tm:keys:v2', sha256_hex($K{revoked}));
my $v = publish(kind => 'key2', op => 'delete', name => sha256_hex($K{revoked}));
ok $h->wait_until(5, sub { ev('/k/evaluate', $K{revoked}, 'checkout') eq 'status 401' }), 'revoked: 401';

my $file = $ng->snapshot_file;
sub slurp { open my $f, '<', shift or return ''; local $/; <$f> // '' }
sub file_doc { eval { decode_json(slurp($file)) } // {} }
ok $h->wait_until(5, sub { (file_doc()->{version} // -1) == $v }), "snapshot file written at version $v";
my $doc = file_doc();
is_deeply [ sort keys %{ $doc->{envs} } ], [qw(default production staging)], 'the file holds every environment';
is_deeply [ sort keys %{ $doc->{environments} } ], [qw(production staging)], "... and the others' flags and rules";
is_deeply [ sort keys %{ $doc->{environments}{staging}{flags} } ], [qw(banner beta checkout only-staging secret)],
    "... staging's flags";
ok $doc->{environments}{production}{rules}{ramp}, "... production's rule";
is_deeply [ keys %{ $doc->{keys} } ], [ sha256_hex($K{admin}) ], '"keys": the admin key only (what older modules read)';
is_deeply [ sort keys %{ $doc->{keys2} } ], [ sort map { sha256_hex($K{$_}) } qw(stg prod client ro) ],
    '"keys2": the scoped keys, not the revoked one';
my $good = slurp($file);

# --- Redis down, nginx restarted: everything from the file -------------------
$h->stop('redis');
$ng->restart;
is ev('/k/evaluate', $K{stg}, 'checkout'), 1, 'Redis down, restarted: staging server key, staging (on)';
is ev('/k/evaluate', $K{prod}, 'checkout'), 0, '... production server key, production (off)';
is ev('/k/evaluate', $K{admin}, 'checkout'), 0, '... admin key, the default (off)';
is ev('/k/evaluate', $K{prod}, 'only-staging'), 0, '... production key never sees a staging-only flag';
is ev('/k/evaluate', $K{prod}, 'ramp'), 1, "... production's rule (100 %) applies";
is ev('/k/evaluate', $K{stg}, 'beta'), 0, "... staging's rule (0 %) applies";
is ev('/stg/evaluate', undef, 'only-staging'), 1, '... togglemaster_environment staging, keyless';
is ev('/k/evaluate', $K{revoked}, 'checkout'), 'status 401', '... the revoked key stays revoked';
is ev('/k/evaluate', 'tm_key_unknown', 'checkout'), 'status 401', '... an unknown key: 401';
is ev('/k/evaluate', $K{client}, 'checkout'), 'status 403', '... a client key keeps its scope (403 on /evaluate, never admin)';
is ev('/k/evaluate', $K{ro}, 'checkout'), 'status 403', '... a readonly key too';
is $h->req(GET => $ng->url('/ro'), { 'X-API-Key' => $K{ro} })->{status}, 200, '... readonly accepted where it is allowed';
my $r = of('/k/ofrep/v1/evaluate/flags', $K{stg}, 'only-staging');
is $r->{status}, 200, 'OFREP, staging server key';
is $r->{json}{value}, $T, '... right value';
$r = of('/k/ofrep/v1/evaluate/flags', $K{stg});
is_deeply [ sort map { $_->{key} } @{ $r->{json}{flags} } ], [qw(banner beta checkout only-staging secret)],
    "OFREP bulk, staging server key: staging's flags";
$r = of('/k/ofrep/v1/evaluate/flags', $K{prod}, 'ramp');
is $r->{json}{value}, $T, 'OFREP, production key: its rule';
$r = of('/c/ofrep/v1/evaluate/flags', $K{client}, 'banner');
is $r->{status}, 200, 'OFREP, client key, client-visible flag';
is $r->{json}{value}, $T, '... on';
$r = of('/c/ofrep/v1/evaluate/flags', $K{client}, 'secret');
is $r->{status}, 404, 'OFREP, client key, hidden flag: 404';
is $r->{json}{errorCode}, 'FLAG_NOT_FOUND', '... FLAG_NOT_FOUND';
is of('/c/ofrep/v1/evaluate/flags', $K{stg}, 'banner')->{status}, 403, '... a server key on a client-only location: 403';
like $ng->error_log, qr/loaded snapshot file "\Q$file\E", version $v, 2 flags, 5 keys, 3 environments/,
    'the load is logged with its environments';

# restarts nginx (Redis down) on the given file content; the log lines
sub boot_with {
    my ($content) = @_;
    my $before = length $ng->error_log;
    # stopped first: a worker writes the file as it exits
    $ng->stop;
    { open my $f, '>', $file or die; print $f $content; close $f }
    $ng->start;
    # the worker reads the file after the port is up: wait for its word
    $h->wait_until(10, sub { substr($ng->error_log, $before) =~ /snapshot file/ });
    return substr($ng->error_log, $before);
}

# --- a corrupt file is refused whole -------------------------------------------
(my $flipped = $good) =~ s/("staging":\{"flags":\{.*?"checkout":"\{.*?\\"is_enabled\\":)true/${1}fals/
    or die 'no staging checkout in the file';
my $log = boot_with($flipped);
like $log, qr/snapshot file "\Q$file\E" fails its checksum \(corrupt\): refused/, 'a corrupt staging flag: refused';
isnt ev('/k/evaluate', $K{stg}, 'checkout'), 1, '... staging not served';
isnt ev('/evaluate', undef, 'def-on'), 1, '... nor the default: nothing of it is used';

# the same without the checksum (a legacy file), but structurally wrong
my $bad = decode_json($good);
delete $bad->{crc32};
$bad->{environments}{staging}{flags} = 5;
$log = boot_with($J->encode($bad));
like $log, qr/holds an environment that is not two hashes of objects: refused/, 'an environment that is not hashes: refused';
isnt ev('/evaluate', undef, 'def-on'), 1, '... whole';
$bad = decode_json($good);
delete $bad->{crc32};
$bad->{keys2}{ sha256_hex($K{stg}) } = {};
$log = boot_with($J->encode($bad));
like $log, qr/holds an object that is not a string: refused/, 'a scoped key that is not a string: refused';
isnt ev('/evaluate', undef, 'def-on'), 1, '... whole';

# --- an older module's file: no environments, no scoped keys ---------------------
my $old = decode_json($good);
delete @$old{qw(crc32 envs keys2 environments)};
boot_with($J->encode($old));
is ev('/evaluate', undef, 'def-on'), 1, "an older module's file loads: the default";
is ev('/k/evaluate', $K{admin}, 'checkout'), 0, '... its admin key';
is ev('/k/evaluate', $K{stg}, 'checkout'), 'status 401', '... scoped keys unknown (401)';
is ev('/stg/evaluate', undef, 'checkout'), 'status 404', '... other environments unknown (404)';
unlike $ng->error_log, qr/\[(alert|emerg|crit)\]/, 'no alerts';
$ng->stop;

# --- the previous release's module reading this file -----------------------------
my $OLD_REV = '25fe147';
SKIP: {
    skip 'not a git checkout with the previous release', 5
        if system("git -C '$TM::Harness::ROOT' cat-file -e $OLD_REV 2>/dev/null");
    my $BUILD = $ENV{TM_BUILD} // "$TM::Harness::ROOT/build";
    my $so = `'$TM::Harness::ROOT/scripts/build-old-edge.sh' $OLD_REV '$BUILD/old-edge-$OLD_REV'`;
    chomp $so;
    ok -f $so, "the previous release's module built ($OLD_REV)";
    # it knows neither togglemaster_environment nor scope lists
    $ng = TM::Nginx->new($h, module => $so, server => <<'CONF');
        location = /k/evaluate { togglemaster_api_key on; togglemaster_evaluate; }
CONF
    boot_with($good);
    is ev('/evaluate', undef, 'def-on'), 1, 'old module, new file: the default environment';
    is ev('/k/evaluate', $K{admin}, 'checkout'), 0, '... the admin key, default (off)';
    is ev('/k/evaluate', $K{stg}, 'checkout'), 'status 401', '... a scoped key is refused, never admin';
    is ev('/k/evaluate', $K{client}, 'checkout'), 'status 401', '... a client key too';
    $ng->stop;
}

done_testing;
