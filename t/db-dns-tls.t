#!/usr/bin/env perl
# With DATABASE_URL's host resolved by the daemon's resolver thread and given
# to libpq as hostaddr, sslmode=verify-full still checks the certificate
# against the host *name*: PostgreSQL here has a certificate naming only
# tm-tls-db.test (no IP address). Reached as tm-tls-db.test (TM::SlowDNS
# answering 127.0.0.1) the daemon connects over TLS; reached as localhost,
# the same address, the certificate does not name it and the daemon answers
# 503.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Admin qw(new_key);
use TM::SlowDNS;

my $h = TM::Harness->new;
my $dir = $h->dir . '/pgtls';
mkdir $dir or die "$dir: $!";
my $NAME = 'tm-tls-db.test';
my $key = '-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';
open my $ext, '>', "$dir/ext.cnf" or die "ext.cnf: $!";
print $ext "subjectAltName=DNS:$NAME\n";
close $ext;
for my $cmd ("openssl req -x509 $key -days 2 -subj /CN=tm-pg-ca -keyout $dir/ca.key -out $dir/ca.pem",
             "openssl req $key -subj /CN=$NAME -keyout $dir/server.key -out $dir/server.csr",
             "openssl x509 -req -in $dir/server.csr -CA $dir/ca.pem -CAkey $dir/ca.key -CAcreateserial "
             . "-days 2 -extfile $dir/ext.cnf -out $dir/server.pem") {
    system("$cmd >/dev/null 2>&1") == 0 or BAIL_OUT("openssl: $cmd");
}
chmod 0644, "$dir/server.pem", "$dir/ca.pem";
my $pg = $h->start('postgres', undef, TM_PG_TLS_DIR => $dir);
my $dns = TM::SlowDNS->new($h->dir, $NAME);
my $M = 'master-db-tls-key';
my $auth = $h->daemon('auth', MASTER_KEY => $M);
my %K = (Authorization => 'Bearer ' . new_key($h, $auth, $M, 'db-tls')->{key});
my $tls = "sslmode=verify-full&sslrootcert=$dir/ca.pem";

my $flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, $dns->env,
                       DATABASE_URL => "postgresql://postgres\@$NAME:$pg/togglemaster?$tls");
is $h->req(POST => "$flags/flags", \%K, { name => 'tls-ok' })->{status}, 201,
    'verify-full, host named by the certificate, address from the resolver thread: 201';
ok $dns->calls >= 1, '... the name was looked up (through TM::SlowDNS)';
like $h->log('flags'), qr/database: \Q$NAME\E resolved/, '... by the resolver thread';
ok $h->psql("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
            . " WHERE s.ssl AND a.application_name = 'togglemaster'") >= 1, '... over TLS';
$h->stop('flags');

$flags = $h->daemon('flags', AUTH_SERVICE_URL => $auth, TM_SKIP_MIGRATE => 1,
                    DATABASE_URL => "postgresql://postgres\@localhost:$pg/togglemaster?$tls");
my $r = $h->req(POST => "$flags/flags", \%K, { name => 'tls-wrong-name' });
is $r->{status}, 503, 'verify-full, host "localhost" (same address, not in the certificate): 503';
ok $r->{json} && $r->{json}{error}, '... a JSON error';
like $h->log('flags'), qr/does not match host name "localhost"/, '... libpq checked the name, not the address';
is $h->psql("SELECT count(*) FROM flags WHERE name = 'tls-wrong-name'"), 0, '... nothing written';
done_testing;
