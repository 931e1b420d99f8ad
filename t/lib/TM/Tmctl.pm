package TM::Tmctl;
# Runs the built tmctl ($TM_BUILD/tmctl/tmctl) with an environment:
# tmctl($h, \%env, @args) -> {rc, out, err, json}. A variable whose value
# is undef is removed, so a test states exactly which URLs and keys tmctl
# sees; stdin is /dev/null.
use strict; use warnings;
use POSIX ();
use Exporter 'import';
our @EXPORT_OK = qw(tmctl);

sub _slurp { my $p = shift; open my $f, '<', $p or return ''; local $/; my $s = <$f>; $s // '' }

sub tmctl {
    my ($h, $env, @args) = @_;
    my $bin = ($ENV{TM_BUILD} || 'build') . '/tmctl/tmctl';
    my $dir = $h->dir;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        for my $k (keys %$env) {
            if (defined $env->{$k}) { $ENV{$k} = $env->{$k} } else { delete $ENV{$k} }
        }
        open STDIN, '<', '/dev/null' or POSIX::_exit(126);
        open STDOUT, '>', "$dir/tmctl.out" or POSIX::_exit(126);
        open STDERR, '>', "$dir/tmctl.err" or POSIX::_exit(126);
        exec $bin, @args or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $r = { rc => $? >> 8, out => _slurp("$dir/tmctl.out"), err => _slurp("$dir/tmctl.err") };
    $r->{json} = eval { $h->json->decode($r->{out}) };
    return $r;
}
1;
