#!/usr/bin/env perl
# The environment limit (TM_ENV_MAX, 64 with the default; what one edge
# snapshot holds): the flags daemon creates the 64th and refuses the 65th
# with a 409 JSON error, changing nothing; the edge serves all 64, and a
# 65th written into tm:envs behind the daemon's back is refused with a
# logged error (its key and location answer 404) while the 64 others keep
# their answers; the snapshot file holds the 64 and reloads them with
# Redis down.
use strict; use warnings;
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use TM::Admin qw(new_key);

my $MAX = 64;
my $h = TM::Harness->new;
my $M = 'master-limit-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my $tg = $h->daemon('targeting', AUTH_SERVICE_URL => $auth);
my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, TARGETING_SERVICE_URL => $tg);
my %A = (Authorization => 'Bearer ' . new_key($h, $auth, $M, 'limit-admin')->{key});
my $T = JSON::PP::true;

my @envs = map { sprintf 'env%02d', $_ } 1 .. $MAX - 1;
my $created = 0;
for (@envs) { $created++ if $h->req(POST => "$flags/environments", \%A, { name => $_ })->{status} == 201 }
is $created, $MAX - 1, "the daemon creates environments up to $MAX with the default";
my $r = $h->req(POST => "$flags/environments", \%A, { name => 'one-too-many' });
is $r->{status}, 409, "the " . ($MAX + 1) . "th: 409";
like $r->{json}{error}, qr/^at most $MAX environments .*"one-too-many"/, '... a JSON error saying why' or diag $r->{content};
is scalar @{ $h->req(GET => "$flags/environments", \%A)->{json} }, $MAX, '... nothing created';
ok !$h->redis_cmd('HEXISTS', 'tm:envs', 'one-too-many'), '... nor published';
is $h->req(POST => "$flags/environments", \%A, { name => 'env01' })->{status}, 409, 'an existing name: still 409';
like $h->req(POST => "$flags/environments", \%A, { name => 'env01' })->{json}{error}, qr/already exists/, '... saying so';
$h->req(DELETE => "$flags/environments/env63", \%A);
is $h->req(POST => "$flags/environments", \%A, { name => 'env63' })->{status}, 201, 'room again after a deletion';

# the last environment: a flag on there, a server key for it
my $last = $envs[-1];
is $h->req(POST => "$flags/flags?environment=$last", \%A, { name => 'edge', is_enabled => $T })->{status}, 201,
    "a flag in $last";
my $KEY = $h->req(POST => "$auth/admin/keys", { Authorization => "Bearer $M" },
                  { name => 's', scope => 'server', environment => $last })->{json}{key};
ok $KEY, "a server key for $last";

my $ng = TM::Nginx->new($h, server => <<'CONF');
        location = /k/evaluate { togglemaster_api_key on; togglemaster_evaluate; }
        location = /x/evaluate { togglemaster_environment extra; togglemaster_evaluate; }
CONF
$ng->start;
sub ev { my ($path, $key) = @_;
         my $r = $h->req(GET => $ng->url("$path?user_id=u1&flag_name=edge"), $key ? { 'X-API-Key' => $key } : {});
         return $r->{status} == 200 ? ($r->{json}{result} ? 1 : 0) : "status $r->{status}" }
ok $h->wait_until(10, sub { ev('/k/evaluate', $KEY) eq '1' }), "the edge serves the ${MAX}th environment";

# a 65th behind the daemons' back, as they would write it (stopped, so
# that their reconciliation does not take it out again)
$h->stop($_) for qw(flags targeting auth);
$h->redis_cmd('HSET', 'tm:envs', 'extra', TM::Nginx::env_json('extra', 99));
$h->redis_cmd('HSET', 'tm:flags@extra', 'edge', TM::Nginx::env_flag_json('edge', 1));
$h->redis_cmd('SADD', 'tm:ready', 'flag@extra', 'rule@extra');
my $XKEY = 'tm_key_extra' . ('x' x 40);
$h->redis_cmd('HSET', 'tm:keys:v2', sha256_hex($XKEY), TM::Nginx::key2_json(server => 'extra'));
my $v = $h->redis_cmd('INCR', 'tm:version');
$h->redis_cmd('PUBLISH', 'tm:changes', encode_json({ version => $v + 0, kind => 'env', op => 'upsert', name => 'extra' }));
$v = $h->redis_cmd('INCR', 'tm:version');
$h->redis_cmd('PUBLISH', 'tm:changes', encode_json({ version => $v + 0, kind => 'key2', op => 'upsert', name => sha256_hex($XKEY) }));
ok $h->wait_until(10, sub { $ng->error_log =~ /environment "extra" refused: a snapshot holds at most $MAX environments/ }),
    'a ' . ($MAX + 1) . 'th in tm:envs: refused, logged';
ok $h->wait_until(10, sub { ev('/k/evaluate', $XKEY) eq 'status 404' }), '... its key: 404 (its environment does not exist)';
is ev('/x/evaluate'), 'status 404', '... its location: 404';
is ev('/k/evaluate', $KEY), 1, "... the ${MAX}th still served";
unlike $ng->error_log, qr/\[(alert|emerg|crit)\]/, '... no alerts';

# the file holds the 64 and reloads them with Redis down
my $file = $ng->snapshot_file;
sub file_doc { open my $f, '<', $file or return {}; local $/; eval { decode_json(<$f>) } // {} }
ok $h->wait_until(10, sub { (file_doc()->{version} // -1) >= $v }), 'snapshot file written';
is scalar keys %{ file_doc()->{envs} }, $MAX, "it holds $MAX environments";
is file_doc()->{keys2}{ sha256_hex($XKEY) }, '{"scope":"server","environment":"extra"}',
    "... and the refused one's key, with its environment's name";
diag sprintf 'snapshot file: %d bytes for %d environments', -s $file, $MAX;
$h->stop('redis');
$ng->restart;
ok $h->wait_until(10, sub { $ng->error_log =~ /loaded snapshot file .*, $MAX environments/ }), "Redis down: $MAX environments loaded";
is ev('/k/evaluate', $KEY), 1, "... the ${MAX}th served from the file";
is ev('/k/evaluate', $XKEY), 'status 404', '... the refused one still refused (its key: 404)';
is ev('/x/evaluate'), 'status 404', '... (its location: 404)';
unlike $ng->error_log, qr/\[(alert|emerg|crit)\]/, 'no alerts';

done_testing;
