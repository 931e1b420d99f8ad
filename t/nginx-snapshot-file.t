#!/usr/bin/env perl
# The snapshot file: created 0600 and never through a link planted at its
# temporary name; fsync'ed (file, then directory after the rename); a
# truncated, corrupt (checksum) or incomplete file is refused whole with a
# log line, never half-loaded; an older module's file (no checksum) loads.
use strict; use warnings;
use Test::More;
use lib 't/lib';
use TM::Harness;
use TM::Nginx;
use JSON::PP;
use Time::HiRes qw(sleep);

my $h = TM::Harness->new;
$h->redis;
TM::Nginx::set_flag($h, $_, 1, quiet => 1) for qw(alpha beta);
$h->redis_cmd('SET', 'tm:version', 10);

# nginx runs under strace (when there is one) to see the file's system calls
my $ng = TM::Nginx->new($h);
my $sout = $h->dir . '/strace.out';
my $strace = -x '/usr/bin/strace' && !system('/usr/bin/strace -o /dev/null true 2>/dev/null') ? '/usr/bin/strace' : undef;
my @cmd = ('nginx', '-p', $ng->dir, '-c', $ng->dir . '/nginx.conf', '-g', 'daemon off;');
unshift @cmd, $strace, '-f', '-qq', '-e', 'trace=openat,fsync,rename', '-o', $sout if $strace;
my $npid = fork // die "fork: $!";
if (!$npid) {
    %ENV = (%ENV, TM::Nginx::san_env($h));
    open STDOUT, '>>', $h->dir . '/nginx-strace.log'; open STDERR, '>&', \*STDOUT;
    exec @cmd or exit 1;
}
END { if ($npid) { kill 'KILL', $npid; waitpid $npid, 0 } }
$ng->wait_up;

my $file = $ng->snapshot_file;
sub slurp { open my $f, '<', shift or return ''; local $/; <$f> // '' }
sub file_version { my $d = eval { decode_json(slurp($file)) }; $d ? $d->{version} : -1 }
ok $h->wait_until(5, sub { file_version() == 10 }), 'snapshot file written';
is((stat $file)[2] & 07777, 0600, 'mode 0600');
like slurp($file), qr/,"crc32":"[0-9a-f]{8}"\}\n\z/, 'it ends with its checksum';

# --- a link planted at the worker's temporary name is not written through ---
my $master = TM::Harness::read_pid($ng->dir, 'nginx');
my ($worker) = grep { $_ != $master } map { (split)[0] } `ps -o pid= --ppid $master`;
ok $worker, "worker pid $worker";
my $victim = $h->dir . '/victim';
{ open my $f, '>', $victim or die; print $f "precious\n"; close $f }
symlink $victim, "$file.tmp.$worker" or die "symlink: $!";

TM::Nginx::set_flag($h, 'gamma', 1);
ok $h->wait_until(5, sub { file_version() >= 11 }), 'the next write went through';
is slurp($victim), "precious\n", 'the planted link\'s target is untouched';
ok !-l $file && -f $file, 'the file is a regular file, not the link';
is((stat $file)[2] & 07777, 0600, 'still 0600');

# --- fsync: the file before the rename, its directory after ---
kill 'QUIT', $master;
waitpid $npid, 0;
$npid = 0;
SKIP: {
    skip 'no strace', 3 unless $strace;
    my $tr = slurp($sout);
    # the calls in order: "open-tmp FD FLAGS", "fsync FD", "rename", "open-dir FD FLAGS"
    my @seq;
    my $dir = $ng->dir;
    for (split /\n/, $tr) {
        if (/openat\([^,]*, "\Q$file\E\.tmp\.\d+", ([^,)]*)[^)]*\) = (\d+)/) { push @seq, "open-tmp $2 $1" }
        elsif (/openat\([^,]*, "\Q$dir\E", ([^,)]*)[^)]*\) = (\d+)/) { push @seq, "open-dir $2 $1" }
        elsif (/fsync\((\d+)\)/) { push @seq, "fsync $1" }
        elsif (/rename\([^)]*"\Q$file\E"\)/) { push @seq, 'rename' }
    }
    my $seq = join ' / ', @seq;
    ok scalar(@seq), 'strace saw the writes';
    like $seq, qr{open-tmp \d+ O_WRONLY\|O_CREAT\|O_EXCL\|O_NOFOLLOW\|O_CLOEXEC}, 'the temporary file: O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC' or diag $seq;
    like $seq, qr{open-tmp (\d+) \S+ / fsync \1 / rename / open-dir (\d+) \S+ / fsync \2}, 'fsync of the file, rename, fsync of its directory' or diag $seq;
}

my $good = slurp($file);
my $ng2 = TM::Nginx->new($h, redis => 0);

# restarts nginx without Redis on the given file content; returns whether
# alpha answers true (the file loaded) and the new log lines
sub boot_with {
    my ($content) = @_;
    my $before = length $ng2->error_log;
    { open my $f, '>', $file or die; print $f $content; close $f }
    $ng2->start;
    my $on = $ng2->evaluate('u', 'alpha');
    $ng2->stop;
    return ($on, substr($ng2->error_log, $before));
}

my ($on, $log) = boot_with($good);
is $on, 1, 'the good file loads (Redis down)';
like $log, qr/loaded snapshot file/, '... logged';

($on, $log) = boot_with(substr($good, 0, int(length($good) / 2)));
is $on, 0, 'a truncated file is refused';
like $log, qr/snapshot file "\Q$file\E" unreadable \(truncated\?\).*refused/, '... with a log line';

(my $flipped = $good) =~ s/(beta":"\{.*?\\"is_enabled\\":)true/${1}fals/ or die 'no beta in the file';
($on, $log) = boot_with($flipped);
is $on, 0, 'a file corrupt inside an object (still valid JSON) is refused whole';
like $log, qr/snapshot file "\Q$file\E" fails its checksum \(corrupt\): refused/, '... with a log line';

# an older module's file: no checksum
my $doc = decode_json($good);
delete $doc->{crc32};
my $legacy = JSON::PP->new->canonical->encode($doc) . "\n";
($on, $log) = boot_with($legacy);
is $on, 1, 'an older module\'s file without a checksum still loads';

$doc->{rules} = 5;
($on, $log) = boot_with(JSON::PP->new->canonical->encode($doc));
is $on, 0, 'a file whose "rules" is not a hash is refused, not half-loaded';
like $log, qr/lacks a hash of objects: refused/, '... with a log line';

delete $doc->{rules};
$doc->{flags}{delta} = 7;
($on, $log) = boot_with(JSON::PP->new->canonical->encode($doc));
is $on, 0, 'a file holding a non-string object is refused';

done_testing;
