#!/usr/bin/env perl
# /metrics names every flag: every shipped nginx configuration serves it only
# where the cluster scrapes it. In nginx-conf/*.conf a server with
# togglemaster_metrics either allows loopback only (allow 127.0.0.1; deny
# all) or listens on a port that the gateway's Kubernetes Service does not
# publish; that port is the one the pods' scrape annotations name. And the
# public 8004 server of ingress.conf serves no metrics at all.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;

my $root = $TM::Harness::ROOT;
sub slurp { open my $f, '<', shift or die "$_[0]: $!"; local $/; <$f> }

# the gateway Service's published ports and the pod's scrape annotation
my $gw = slurp("$root/k8s/base/gateway.yaml");
my ($svc) = $gw =~ /kind: Service\n(.*?)(?:\n---|\z)/s;
my %published = map { $_ => 1 } ($svc // '') =~ /\bport: (\d+)/g;
ok %published, 'gateway Service ports: ' . join(' ', sort keys %published);
my ($scrape) = $gw =~ /prometheus\.io\/port: "(\d+)"/;
ok $scrape, "the gateway pods carry a scrape annotation (port " . ($scrape // '?') . ')';
ok !$published{$scrape // 0}, '... on a port the LoadBalancer Service does not publish';
my $sp = $scrape // 'none';
like $gw, qr/containerPort: \Q$sp\E\b/, '... and the container declares it';

# each server block of each shipped config
for my $conf (glob "$root/nginx-conf/*.conf") {
    my $text = slurp($conf);
    (my $name = $conf) =~ s{.*/}{};
    my @servers;
    while ($text =~ /^\s*server\s*[{]/mg) {
        my ($start, $depth, $i) = (pos($text), 1, pos($text));
        while ($depth && $i < length $text) {
            my $c = substr $text, $i++, 1;
            $depth++ if $c eq chr 123;
            $depth-- if $c eq chr 125;
        }
        push @servers, substr $text, $start, $i - $start;
    }
    ok @servers, "$name: " . scalar(@servers) . ' servers';
    for my $s (@servers) {
        next unless $s =~ /togglemaster_metrics/;
        my ($port) = $s =~ /listen\s+(?:[\d.]+:)?(\S+?);/;
        my ($loc) = $s =~ /(location\s*=\s*\/metrics\s*[{][^}]*[}])/;
        my $local = ($loc // '') =~ /allow 127\.0\.0\.1;\s*deny all;/;
        my $private = $port =~ /^\d+$/ && !$published{$port} && $port == ($scrape // 0);
        ok $local || $private || $port =~ /^@/ && $local,
           "$name: metrics on listen $port are " . ($local ? 'loopback only' : $private ? 'on the unpublished scrape port' : 'PUBLIC');
    }
}

# the shipped ingress.conf: 8004 no longer answers /metrics
my $ingress = slurp("$root/nginx-conf/ingress.conf");
unlike(($ingress =~ /listen 8004;(.*?)\n    \}/s)[0] // '', qr/togglemaster_metrics/, 'ingress.conf: the 8004 server has no metrics');
done_testing;
