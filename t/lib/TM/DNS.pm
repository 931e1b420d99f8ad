package TM::DNS;
# A small DNS server on 127.0.0.1 (UDP) for nginx's "resolver": every A
# query gets the address last given to answer_with, TTL 1 s; with none yet
# (or ''), an empty answer (NOERROR, no record: the name does not resolve).
# AAAA and other types get no record. It runs in a child process, killed
# when the object goes.
use strict; use warnings;
use IO::Socket::INET;
use POSIX qw(_exit);

sub new {
    my ($class, $dir) = @_;
    my $self = bless { answer => "$dir/dns-answer", parent => $$ }, $class;
    $self->answer_with('');
    my $udp = IO::Socket::INET->new(Proto => 'udp', LocalAddr => '127.0.0.1', LocalPort => 0)
        or die "udp: $!";
    $self->{port} = $udp->sockport;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $self->_serve($udp);
        _exit(0);
    }
    $self->{pid} = $pid;
    return $self;
}

sub port { $_[0]{port} }

# The address A queries get from now on ('' for none).
sub answer_with {
    my ($self, $ip) = @_;
    my $f = $self->{answer};
    open my $o, '>', "$f.tmp" or die "$f.tmp: $!";
    print $o $ip;
    close $o or die "$f.tmp: $!";
    rename "$f.tmp", $f or die "rename $f: $!";
}

sub _serve {
    my ($self, $udp) = @_;
    while (1) {
        my $peer = $udp->recv(my $pkt, 512) // next;
        next if length $pkt < 17;
        my ($id) = unpack 'n', $pkt;
        my $i = 12;
        $i += 1 + ord substr($pkt, $i, 1) while $i < length $pkt && ord substr($pkt, $i, 1);
        my $question = substr $pkt, 12, $i + 5 - 12;
        my ($qtype) = unpack 'n', substr($pkt, $i + 1, 2);
        open my $f, '<', $self->{answer} or next;
        chomp(my $ip = <$f> // '');
        my $an = $qtype == 1 && $ip =~ /^\d+\.\d+\.\d+\.\d+$/
            ? pack('n n n N n', 0xc00c, 1, 1, 1, 4) . pack('C4', split /\./, $ip) : '';
        $udp->send(pack('n n n n n n', $id, 0x8180, 1, $an ? 1 : 0, 0, 0) . $question . $an, 0, $peer);
    }
}

sub DESTROY {
    my $self = shift;
    return unless $self->{pid} && $$ == $self->{parent};
    kill 'KILL', $self->{pid};
    waitpid $self->{pid}, 0;
}

1;
