package TM::SlowDNS;
# A misbehaving DNS for one host name, as a daemon's getaddrinfo sees it: a
# small LD_PRELOAD library, built here, answers getaddrinfo(<name>) with the
# address last given to answer_with (127.0.0.1 at first), blocks while
# stall() is in force (a dropped query: glibc waits out its timeout) and
# fails (EAI_AGAIN) while fail() is. Every call for the name is counted
# (calls). Other names go to the real getaddrinfo.
# TM::DNS is a DNS server for nginx's "resolver"; glibc asks the servers of
# /etc/resolv.conf, which a test may not change, hence this library.
#   my $dns = TM::SlowDNS->new($h->dir, 'db.test');
#   $h->daemon('flags', DATABASE_URL => "postgresql://postgres\@db.test:$port/x", $dns->env);
use strict; use warnings;

sub new {
    my ($class, $dir, $name) = @_;
    my $self = bless { name => $name, gate => "$dir/dns-gate", fail => "$dir/dns-fail",
                       calls => "$dir/dns-calls", answer => "$dir/dns-answer", so => "$dir/slowdns.so" }, $class;
    open my $c, '>', "$dir/slowdns.c" or die "slowdns.c: $!";
    print $c <<"C";
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <string.h>
#include <unistd.h>
typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
/* getaddrinfo("$name"): one line per call in the calls file; blocks while
 * the gate exists, fails while the fail file exists, else answers the
 * address in the answer file (127.0.0.1 without one) */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    gai_fn real = (gai_fn) dlsym(RTLD_NEXT, "getaddrinfo");
    if (node == NULL || strcmp(node, "$name") != 0) {
        return real(node, service, hints, res);
    }
    int fd = open("$self->{calls}", O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        (void) !write(fd, "x\\n", 2);
        close(fd);
    }
    while (access("$self->{gate}", F_OK) == 0) {
        usleep(10000);
    }
    if (access("$self->{fail}", F_OK) == 0) {
        return EAI_AGAIN;
    }
    char ip[64] = "127.0.0.1";
    fd = open("$self->{answer}", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, ip, sizeof ip - 1);
        ip[n > 0 ? n : 0] = '\\0';
        close(fd);
    }
    struct addrinfo h = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST };
    if (hints) {
        h.ai_socktype = hints->ai_socktype;
        h.ai_protocol = hints->ai_protocol;
    }
    return real(ip, service, &h, res);
}
C
    close $c or die "slowdns.c: $!";
    system('cc', '-shared', '-fPIC', '-o', $self->{so}, "$dir/slowdns.c", '-ldl') == 0
        or die "TM::SlowDNS: cannot build $self->{so}";
    return $self;
}

sub name { $_[0]{name} }

# The environment a daemon needs to use it (ASan must tolerate a library
# loaded before its runtime).
sub env {
    my $self = shift;
    my $asan = join ':', grep { $_ } $ENV{ASAN_OPTIONS}, 'verify_asan_link_order=0';
    return (LD_PRELOAD => $self->{so}, ASAN_OPTIONS => $asan);
}

sub _touch { open my $f, '>', $_[0] or die "$_[0]: $!"; close $f }
sub _rm { unlink $_[0]; die "$_[0]: still there" if -e $_[0] }

# Lookups of the name block (1) or answer again (0).
sub stall { my ($self, $on) = @_; $on // 1 ? _touch($self->{gate}) : _rm($self->{gate}) }

# Lookups of the name fail (1) or answer again (0).
sub fail { my ($self, $on) = @_; $on // 1 ? _touch($self->{fail}) : _rm($self->{fail}) }

# The address lookups answer from now on.
sub answer_with {
    my ($self, $ip) = @_;
    open my $o, '>', "$self->{answer}.tmp" or die "$self->{answer}.tmp: $!";
    print $o $ip;
    close $o or die "$self->{answer}.tmp: $!";
    rename "$self->{answer}.tmp", $self->{answer} or die "rename $self->{answer}: $!";
}

# How many times getaddrinfo was called for the name (all processes).
sub calls {
    my $self = shift;
    open my $f, '<', $self->{calls} or return 0;
    my @l = <$f>;
    return scalar @l;
}

1;
