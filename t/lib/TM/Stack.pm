package TM::Stack;
# The whole `make run` stack (scripts/run.sh) on free ports in a temp dir,
# stopped when the object goes away: for t/make-run.t, `make load` and
# `make soak`, so a developer's own stack on the standard ports is left alone.
#   my $s = TM::Stack->new(master_key => 'm');   # starts it
#   TM::Stack->new(env => { REDIS_URL => ... })   # environment for run.sh
#   $s->url('auth'), $s->port('EVAL'), $s->dir, $s->output, $s->stop
use strict; use warnings;
use File::Temp qw(tempdir);
use Scalar::Util qw(weaken);
use TM::Harness;

our @NAMES = qw(PG REDIS AWS AUTH FLAGS TARGETING EVAL ANALYTICS INGRESS);

# Stacks not stopped yet. A stack held in a file-scoped variable (make soak,
# make load) used to be stopped only by DESTROY in global destruction, after
# File::Temp's END block had removed its directory and pid files: run.sh stop
# then found nothing to stop and every process but PostgreSQL (which exits
# when its data directory goes) stayed running. END blocks run last-defined
# first, so this one stops them while the pid files are still there.
my %live;
END {
    local $?;   # keep the script's exit status
    $_->stop for grep { defined } values %live;
}

sub new {
    my ($class, %o) = @_;
    my $dir = tempdir('tm-stack-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TM_KEEP});
    chmod 0755, $dir;
    my %port = map { $_ => TM::Harness::free_port() } @NAMES;
    my $self = bless { dir => $dir, port => \%port, master_key => $o{master_key} // 'stack-master' }, $class;
    $self->{env} = { TM_RUN_DIR => $dir, MASTER_KEY => $self->{master_key},
                     map { ("TM_${_}_PORT" => $port{$_}) } @NAMES };
    $self->{given} = $o{env} // {};
    $self->{output} = $self->run('start');
    $self->{started} = $? == 0;
    weaken($live{"$self"} = $self);
    return $self;
}

sub run {
    my ($self, $what) = @_;
    local %ENV = (%ENV, %{ $self->{env} });
    delete @ENV{qw(DATABASE_URL REDIS_URL REDIS_CA_FILE REDIS_TLS_SERVER_NAME AUTH_SERVICE_URL
                   AWS_SQS_URL AWS_ENDPOINT_URL)};
    %ENV = (%ENV, %{ $self->{given} });
    return scalar `$TM::Harness::ROOT/scripts/run.sh $what 2>&1`;
}

# Restarts one service of the stack (redis, moto, ...) on its port.
sub restart {
    my ($self, $name) = @_;
    my %svc_port = (postgres => 'PG', redis => 'REDIS', moto => 'AWS', auth => 'AUTH',
                    flags => 'FLAGS', targeting => 'TARGETING', analytics => 'ANALYTICS');
    local %ENV = (%ENV, %{ $self->{env} });
    system("$TM::Harness::ROOT/scripts/svc.sh", 'stop', $name, $self->{dir}) == 0 or return 0;
    return system("$TM::Harness::ROOT/scripts/svc.sh", 'start', $name, $self->{dir},
                  $self->port($svc_port{$name})) == 0;
}

sub started { $_[0]{started} }
sub output  { $_[0]{output} }
sub dir     { $_[0]{dir} }
sub port    { $_[0]{port}{ uc $_[1] } }
sub url     { my ($self, $name) = @_; 'http://127.0.0.1:' . $self->port($name) }
sub master_key { $_[0]{master_key} }

sub pid { my ($self, $name) = @_; TM::Harness::read_pid($self->{dir}, $name) }

sub pids { my $self = shift; map { $self->pid($_) // () } map { m{/(\w+)\.pid$} ? $1 : () } glob "$self->{dir}/*.pid" }

sub stop {
    my $self = shift;
    return if $self->{stopped}++;
    delete $live{"$self"};
    $self->{stop_output} = $self->run('stop');
    return $? == 0;
}

sub DESTROY { local $?; $_[0]->stop }
1;
