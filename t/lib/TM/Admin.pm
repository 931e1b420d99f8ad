package TM::Admin;
# Helpers for the admin-daemon tests (flags.t, targeting.t) on top of
# TM::Harness: API keys from a real auth daemon, a second replica of a daemon,
# a tm:changes subscriber, and concurrent requests.
use strict;
use warnings;
use Exporter 'import';
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);
use TM::Harness;

our @EXPORT_OK = qw(new_key replica subscriber change race);

# Creates an API key through the auth daemon; returns {id, name, key}.
sub new_key {
    my ($h, $auth, $master, $name) = @_;
    my $r = $h->req(POST => "$auth/admin/keys", { Authorization => "Bearer $master" }, { name => $name });
    die "cannot create key: $r->{status}\n" unless $r->{status} == 201;
    return $r->{json};
}

# A second instance of daemon $name sharing $h's PostgreSQL and Redis (the
# harness keeps one pid file per name, so it lives in its own run dir).
# Returns (harness, base URL); $harness->teardown stops it.
sub replica {
    my ($h, $name, %env) = @_;
    my $h2 = TM::Harness->new;
    $h2->{ports}{$_} = $h->port($_) for qw(postgres redis);
    $h2->{$_} = $h->{$_} for qw(redis_url redis_password redis_tls redis_tls_port redis_ca);
    return ($h2, $h2->daemon($name, %env));
}

# A raw RESP connection subscribed to tm:changes (on the node at $port of a
# cluster, if given).
sub subscriber {
    my ($h, $port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port // $h->port('redis'), Timeout => 5)
        or die "subscribe: $!";
    print $s "*2\r\n\$9\r\nSUBSCRIBE\r\n\$10\r\ntm:changes\r\n";
    TM::Harness::_resp($s);   # [subscribe, tm:changes, 1]
    return $s;
}

# The notification carrying version $v (earlier ones skipped), decoded;
# undef if none comes within 3 s.
sub change {
    my ($h, $s, $v) = @_;
    local $SIG{ALRM} = sub { die "timeout\n" };
    for (1 .. 100) {
        alarm 3;
        my $m = eval { TM::Harness::_resp($s) };
        alarm 0;
        return undef unless $m;
        my $c = $h->json->decode($m->[2]);
        return $c if $c->{version} >= $v;
    }
    return undef;
}

# Sends the same request to every URL in @$urls at the same instant, each
# from its own process; returns the statuses in order.
sub race {
    my ($h, $urls, $method, $headers, $body) = @_;
    my $at = time + 0.3;
    my @kids;
    for my $u (@$urls) {
        pipe(my $rd, my $wr) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            close $rd;
            my $st = eval {
                sleep($at - time) if $at > time;
                $h->req($method => $u, $headers, $body)->{status};
            } // 0;
            print $wr $st;
            close $wr;
            POSIX::_exit(0);   # no END blocks: the parent owns the services
        }
        close $wr;
        push @kids, [ $pid, $rd ];
    }
    my @st;
    for my $k (@kids) {
        my $fh = $k->[1];
        local $/;
        push @st, scalar(<$fh>) || 0;
        waitpid $k->[0], 0;
    }
    return @st;
}

1;
