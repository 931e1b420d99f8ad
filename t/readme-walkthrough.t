#!/usr/bin/env perl
# README's walkthrough runs as written: the shell blocks marked
# ```sh walkthrough are taken from README.md in order and fed, one command at
# a time, to one bash (so variables carry over, as in a user's shell) against
# a fresh stack started by scripts/run.sh. The stack runs on free ports in a
# temp dir, so a developer's own `make run` is left alone: the blocks'
# default ports (localhost:8001 ... 8080) are replaced by the stack's, and
# nothing else. Every command must exit 0 (curl with --fail-with-body, so an
# HTTP error is a failure) and print what the README promises.
use strict; use warnings;
use Test::More;
use IO::Select;
use IPC::Open3;
use JSON::PP;
use Time::HiRes qw(sleep time);
use lib 't/lib';
use TM::Harness;
use TM::Stack;

my $readme = do { local (@ARGV, $/) = ("$TM::Harness::ROOT/README.md"); <> };
my @blocks = $readme =~ /^```sh walkthrough\n(.*?)^```$/msg;
cmp_ok scalar @blocks, '>=', 3, 'README has its walkthrough blocks (' . scalar(@blocks) . ')';

# One command per entry: continuation lines and here-documents joined.
my @cmds;
for my $block (@blocks) {
    my ($cur, $heredoc) = ('', undef);
    for my $line (split /\n/, $block) {
        if (defined $heredoc) {
            $cur .= "$line\n";
            next if $line ne $heredoc;
            push @cmds, $cur;
            ($cur, $heredoc) = ('', undef);
            next;
        }
        next if $cur eq '' && $line =~ /^\s*(#.*)?$/;
        $cur .= "$line\n";
        if ($line =~ /<<-?\s*'?(\w+)'?/) { $heredoc = $1; next }
        next if $line =~ /\\$/;
        push @cmds, $cur;
        $cur = '';
    }
    is $cur, '', 'every command of the block is complete';
}

my $s = TM::Stack->new(master_key => 'admin-secreto-123');   # make run's default
plan skip_all => 'the nginx module is not built' unless -s $s->dir . '/nginx.pid';
ok $s->started, 'run.sh start' or diag $s->output;

# the default ports of make run -> this stack's
my %port = (8001 => 'AUTH', 8002 => 'FLAGS', 8003 => 'TARGETING', 8004 => 'EVAL', 8005 => 'ANALYTICS', 8080 => 'INGRESS');
my @unknown;
for (@cmds) {
    s{\b(localhost|127\.0\.0\.1):(\d+)\b}{ $port{$2} ? "$1:" . $s->port($port{$2}) : do { push @unknown, $2; "$1:$2" } }ge;
    # the build under test (make test: build-san/)
    s{\$PWD/build/}{$ENV{TM_BUILD}/}g if $ENV{TM_BUILD};
}
is_deeply \@unknown, [], 'the walkthrough uses only make run\'s ports';

# one bash for the whole walkthrough, stderr with stdout, a clean environment
my %env = %ENV;
delete @env{ grep { /^(TOGGLEMASTER_|MASTER_KEY$|KEY$)/ } keys %env };
$env{TMPDIR} = $s->dir;
my ($in, $out);
chdir $TM::Harness::ROOT or die "chdir: $!";   # the user's shell is in the repository
my $pid = do { local %ENV = %env; open3($in, $out, undef, 'bash', '--noprofile', '--norc') };
$in->autoflush(1);
my $sel = IO::Select->new($out);
my $buf = '';

# Runs one command; returns (exit status, output).
sub sh {
    my $cmd = shift;
    print $in "$cmd\nprintf '\\n\@\@RC %d\\n' \$?\n";
    my $end = time + 60;
    until ($buf =~ /\n\@\@RC (\d+)\n/) {
        my $left = $end - time;
        return (-1, "$buf(no answer in 60 s)") if $left <= 0 || !$sel->can_read($left);
        sysread($out, $buf, 65536, length $buf) or return (-1, "$buf(bash exited)");
    }
    $buf =~ s/\A(.*?)\n\@\@RC (\d+)\n//s;
    return ($2, $1);
}
sh('set -o pipefail; curl() { command curl --fail-with-body "$@"; }');

my $J = JSON::PP->new;
sub json_of { my $x = eval { $J->decode($_[0]) }; $x }
# What the README promises, in order: [command pattern, check of the output,
# retry (an evaluation may run before the edge has the change, a few
# milliseconds after the write)]
my @expect = (
    [ qr/^KEY=\$\(curl .*\/admin\/keys/, sub { (sh('printf "%s\n" "$KEY"'))[1] =~ /^tm_key_[0-9a-f]{64}\n?$/ } ],
    [ qr/^curl -s -X POST \S+\/flags -H/, sub { (json_of($_[0]) // {})->{name} eq 'new-checkout' } ],
    [ qr/^curl -s -X POST \S+\/rules -H/, sub { ((json_of($_[0]) // {})->{rules} // {})->{value} == 25 } ],
    [ qr/\/evaluate\?user_id=alice&flag_name=new-checkout/, sub { $_[0] eq '{"flag_name":"new-checkout","user_id":"alice","result":false}' }, 1 ],
    [ qr/^curl -s \S+\/flags\/flags -H/, sub { grep { $_->{name} eq 'new-checkout' } @{ json_of($_[0]) // [] } } ],
    [ qr/-X PUT \S+\/flags\/flags\/new-checkout/, sub { (json_of($_[0]) // {})->{description} eq 'v2 checkout, through the ingress' } ],
    [ qr/\/targeting\/rules\/new-checkout/, sub { (json_of($_[0]) // {})->{flag_name} eq 'new-checkout' } ],
    [ qr/\/flags\/health/, sub { $_[0] eq '{"status":"ok"}' } ],
    [ qr/\/evaluate\/evaluate\?user_id=carol&flag_name=new-checkout/, sub { $_[0] eq '{"flag_name":"new-checkout","user_id":"carol","result":true}' }, 1 ],
    [ qr/^tmctl flags create dark-mode/, sub { (json_of($_[0]) // {})->{name} eq 'dark-mode' } ],
    [ qr/^tmctl rules set dark-mode/, sub { (json_of($_[0]) // {})->{flag_name} eq 'dark-mode' } ],
    [ qr/^tmctl eval dark-mode --user alice/, sub { my $x = json_of($_[0]) // {}; $x->{reason} && $x->{reason} eq 'TARGETING_MATCH' && $x->{value} }, 1 ],
    [ qr/^tmctl export .* tmctl import/, sub { $_[0] =~ /^flags: 0 created, 0 updated, 2 unchanged$/m && $_[0] =~ /^rules: 0 created, 0 updated, 2 unchanged$/m } ],
    [ qr/^tmctl import unleash/, sub { $_[0] =~ /^created flag "beta-banner"$/m } ],
);

for my $cmd (@cmds) {
    (my $first = $cmd) =~ s/\n.*//s;
    my ($rc, $output) = sh($cmd);
    my ($e) = @expect && $cmd =~ $expect[0][0] ? shift @expect : ();
    if ($e && $e->[2]) {
        my $end = time + 10;
        while (!($rc == 0 && $e->[1]->($output)) && time < $end) {
            sleep 0.1;
            ($rc, $output) = sh($cmd);
        }
    }
    is $rc, 0, "exit 0: $first" or diag $output;
    unlike $output, qr/"error"/, "no error: $first";
    ok $e->[1]->($output), "prints what README says: $first" or diag $output if $e;
}
is scalar(@expect), 0, 'every promised step is in the walkthrough, in order'
    or diag 'missing: ' . join(', ', map { "$_->[0]" } @expect);

close $in;
waitpid $pid, 0;
ok $s->stop, 'run.sh stop';
done_testing;
