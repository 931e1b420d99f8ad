package TM::SSE;
# A minimal event-stream client over a raw socket, for the stream tests:
# opens GET <path> (HTTP/1.1 unless http10), reads the header, de-chunks
# what follows into {text}; events() parses "id/event: message/data".
# Also an HTTP request whose answer is read later (a request the server
# parks):
#   my $c = send_request(POST => $url, {hdr => 'v'}, $body);
#   my $r = read_reply($c, 5);              # {status, headers, body, json}
use strict; use warnings;
use Exporter 'import';
use IO::Select;
use JSON::PP;
use Socket qw(PF_INET SOCK_STREAM SOL_SOCKET SO_RCVBUF pack_sockaddr_in inet_aton);
use Time::HiRes qw(time);

our @EXPORT_OK = qw(sopen sheader spump dechunk events nevents wait_events send_request read_reply);

# sopen($url, %o): rcvbuf, port (another port than the URL's), last_id,
# headers (more header lines, CRLF-terminated), after (bytes sent right
# after the request), http10, no_wait (return before the header).
sub sopen {
    my ($u, %o) = @_;
    my ($port, $path) = $u =~ m{^http://127\.0\.0\.1:(\d+)(/\S*)$} or die "url $u";
    socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, $o{rcvbuf}) or die "rcvbuf: $!" if $o{rcvbuf};
    connect($s, pack_sockaddr_in($o{port} // $port, inet_aton('127.0.0.1'))) or die "connect: $!";
    binmode $s;
    syswrite $s, "GET $path HTTP/1." . ($o{http10} ? 0 : 1) . "\r\nHost: 127.0.0.1\r\n"
        . "Accept: text/event-stream\r\nOrigin: http://app.example\r\n"
        . (defined $o{last_id} ? "Last-Event-ID: $o{last_id}\r\n" : '') . ($o{headers} // '') . "\r\n"
        . ($o{after} // '');
    my $st = { s => $s, raw => '', text => '', eof => 0 };
    return $st if $o{no_wait};
    return sheader($st);
}

# Reads the answer's header of a stream whose request was sent on the
# handle {s} (a socket, or a pipe from a TLS client).
sub sheader {
    my $st = shift;
    my $end = time + 5;
    while ($st->{raw} !~ /\r\n\r\n/ && time < $end && !$st->{eof}) { spump($st, 0.2, 1) }
    my ($head, $rest) = split /\r\n\r\n/, $st->{raw}, 2;
    $st->{head} = $head // '';
    ($st->{status}) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    $st->{raw} = $rest // '';
    dechunk($st);
    return $st;
}

# Moves what arrived into {text}: chunk by chunk when the answer is
# chunked ({last_chunk} once the last one came), as it is otherwise.
sub dechunk {
    my $st = shift;
    return unless $st->{head};
    if ($st->{head} !~ /^Transfer-Encoding: chunked/mi) {
        $st->{text} .= $st->{raw};
        $st->{raw} = '';
        return;
    }
    while ($st->{raw} =~ /^([0-9a-fA-F]+)\r\n/) {
        my ($hex, $n) = ($1, hex $1);
        last if length($st->{raw}) < length($hex) + 2 + $n + 2;
        $st->{text} .= substr($st->{raw}, length($hex) + 2, $n);
        $st->{last_chunk} = 1 if $n == 0;
        substr($st->{raw}, 0, length($hex) + 2 + $n + 2) = '';
    }
}

# Reads what the stream sends for $secs (less at EOF; with $once, up to
# the first read).
sub spump {
    my ($st, $secs, $once) = @_;
    my $sel = IO::Select->new($st->{s});
    my $end = time + $secs;
    while (!$st->{eof}) {
        my $left = $end - time;
        last if $left <= 0;
        last unless $sel->can_read($left);
        my $n = sysread $st->{s}, my $buf, 65536;
        if (!$n) { $st->{eof} = 1; last }
        $st->{raw} .= $buf;
        dechunk($st) if defined $st->{head};
        last if $once;
    }
}

# [id, data, id, data, ...] of the events so far
sub events { my $st = shift; [ $st->{text} =~ /^id: (\d+)\nevent: message\ndata: (\{.*\})\n\n/mg ] }
sub nevents { scalar(@{ events($_[0]) }) / 2 }
sub wait_events {
    my ($st, $n, $secs) = @_;
    my $end = time + ($secs // 5);
    spump($st, 0.05, 1) while nevents($st) < $n && time < $end && !$st->{eof};
    return nevents($st);
}

# Sends a request (body: a string or a structure sent as JSON) without
# waiting for the answer; returns the connection for read_reply.
sub send_request {
    my ($method, $url, $hdr, $body) = @_;
    my ($port, $path) = $url =~ m{^http://127\.0\.0\.1:(\d+)(/\S*)$} or die "url $url";
    $body = JSON::PP->new->canonical->encode($body) if ref $body;
    socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
    connect($s, pack_sockaddr_in($port, inet_aton('127.0.0.1'))) or die "connect: $!";
    binmode $s;
    my $req = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
    $req .= "$_: $hdr->{$_}\r\n" for sort keys %{ $hdr || {} };
    $req .= 'Content-Type: application/json' . "\r\nContent-Length: " . length($body) . "\r\n" if defined $body;
    syswrite $s, $req . "\r\n" . ($body // '');
    return { s => $s, raw => '', eof => 0, sent => time };
}

# The answer of a send_request connection (the server closes it), or
# {status => undef} if none came within $secs. headers: lowercase names.
sub read_reply {
    my ($c, $secs) = @_;
    my $sel = IO::Select->new($c->{s});
    my $end = time + $secs;
    while (!$c->{eof} && time < $end) {
        last unless $sel->can_read($end - time);
        my $n = sysread $c->{s}, my $buf, 65536;
        if (!$n) { $c->{eof} = 1; last }
        $c->{raw} .= $buf;
    }
    my ($head, $body) = split /\r\n\r\n/, $c->{raw}, 2;
    my %h;
    for (split /\r\n/, $head // '') { $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/ }
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    return { status => $status, headers => \%h, body => $body, at => time - $c->{sent},
             json => scalar eval { JSON::PP->new->decode($body // "") } };
}

1;
