package TM::Unit;
# Runs a C unit test binary (TAP on stdout) from the build under test:
# $TM_BUILD (build-san/ under `make test`), else build/. $TM_UNIT_PREFIX puts
# a command in front of it (t/unit-valgrind.t uses valgrind).
use strict; use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);

our $ROOT = abs_path(dirname(__FILE__) . '/../../..');

sub run {
    my ($name, @args) = @_;
    my $bin = ($ENV{TM_BUILD} // "$ROOT/build") . "/t/unit/$name";
    my @prefix = split ' ', ($ENV{TM_UNIT_PREFIX} // '');
    exec @prefix, $bin, @args or die "cannot run $bin: $!";
}
1;
