package TM::AWS;
# A small SQS + DynamoDB client for tests, speaking the JSON protocol to an
# emulator (moto server). Emulators do not check signatures but take the
# region and account from the credential scope, so requests carry one.
# Perl core modules only.
#
#   my $aws = TM::AWS->new($h->moto);
#   my $q = $aws->create_pipeline(queue => 'ev', table => 'T', max_receive => 3, visibility => 2);
#   $aws->send($q->{queue_url}, '{"user_id":...}');
#   my $items = $aws->scan('T');
use strict;
use warnings;
use HTTP::Tiny;
use JSON::PP;

my $JSON = JSON::PP->new->canonical->allow_nonref;

sub new {
    my ($class, $endpoint, %o) = @_;
    $endpoint =~ s{/$}{};
    return bless { ep => $endpoint, region => $o{region} // 'us-east-1',
                   key => $o{key} // 'test',
                   http => HTTP::Tiny->new(timeout => $o{timeout} // 30, keep_alive => 0) }, $class;
}

# Returns the decoded reply; dies on an error unless the error code is listed
# in $ok (then returns { error => CODE }).
sub call {
    my ($self, $svc, $target, $body, @ok) = @_;
    my $r = $self->{http}->request(POST => "$self->{ep}/", {
        headers => {
            'Content-Type' => 'application/x-amz-json-1.0',
            'X-Amz-Target' => $target,
            Authorization => "AWS4-HMAC-SHA256 Credential=$self->{key}/20260101/$self->{region}/$svc/aws4_request, SignedHeaders=host, Signature=0",
        },
        content => $JSON->encode($body // {}),
    });
    my $j = length($r->{content} // '') ? eval { $JSON->decode($r->{content}) } : {};
    if (!$r->{success}) {
        my $code = ($j && $j->{__type}) // "HTTP$r->{status}";
        $code =~ s/.*#//;
        return { error => $code } if grep { $_ eq $code } @ok;
        die "TM::AWS $target: $r->{status} $code " . ($r->{content} // '') . "\n";
    }
    return $j // {};
}

sub sqs { my ($self, $op, $body, @ok) = @_; $self->call(sqs => "AmazonSQS.$op", $body, @ok) }
sub ddb { my ($self, $op, $body, @ok) = @_; $self->call(dynamodb => "DynamoDB_20120810.$op", $body, @ok) }

sub create_queue {
    my ($self, $name, %attrs) = @_;
    my $r = $self->sqs(CreateQueue => { QueueName => $name, %attrs ? (Attributes => \%attrs) : () });
    return $r->{QueueUrl};
}

sub queue_attr {
    my ($self, $url, $name) = @_;
    return $self->sqs(GetQueueAttributes => { QueueUrl => $url, AttributeNames => [$name] })
        ->{Attributes}{$name};
}

# Messages in the queue, visible or in flight.
sub queue_depth {
    my ($self, $url) = @_;
    my $a = $self->sqs(GetQueueAttributes => { QueueUrl => $url,
        AttributeNames => ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'] })
        ->{Attributes};
    return ($a->{ApproximateNumberOfMessages} // 0) + ($a->{ApproximateNumberOfMessagesNotVisible} // 0);
}

sub create_table {
    my ($self, $table) = @_;
    $self->ddb(CreateTable => {
        TableName => $table,
        AttributeDefinitions => [{ AttributeName => 'event_id', AttributeType => 'S' }],
        KeySchema => [{ AttributeName => 'event_id', KeyType => 'HASH' }],
        BillingMode => 'PAY_PER_REQUEST',
    }, 'ResourceInUseException');
}

# The usage aggregates table (docs/usage.md): keys pk (S) and sk (S).
sub create_usage_table {
    my ($self, $table) = @_;
    $self->ddb(CreateTable => {
        TableName => $table,
        AttributeDefinitions => [{ AttributeName => 'pk', AttributeType => 'S' },
                                 { AttributeName => 'sk', AttributeType => 'S' }],
        KeySchema => [{ AttributeName => 'pk', KeyType => 'HASH' },
                      { AttributeName => 'sk', KeyType => 'RANGE' }],
        BillingMode => 'PAY_PER_REQUEST',
    }, 'ResourceInUseException');
}

sub delete_table { my ($self, $table) = @_; $self->ddb(DeleteTable => { TableName => $table }) }

# Queue, DLQ (redrive after max_receive receives), table and the usage
# table (usage_table, default ToggleMasterUsage, the worker's default).
sub create_pipeline {
    my ($self, %o) = @_;
    my $dlq = $self->create_queue("$o{queue}-dlq");
    my $arn = $self->queue_attr($dlq, 'QueueArn');
    my $q = $self->create_queue($o{queue},
        VisibilityTimeout => "" . ($o{visibility} // 30),
        RedrivePolicy => $JSON->encode({ deadLetterTargetArn => $arn,
                                         maxReceiveCount => "" . ($o{max_receive} // 5) }));
    $self->create_table($o{table}) if $o{table};
    $self->create_usage_table($o{usage_table} // 'ToggleMasterUsage') if $o{table};
    return { queue_url => $q, dlq_url => $dlq };
}

sub send {
    my ($self, $url, $body) = @_;
    return $self->sqs(SendMessage => { QueueUrl => $url, MessageBody => $body })->{MessageId};
}

# Up to 10 bodies in one SendMessageBatch; dies if any entry failed.
sub send_batch {
    my ($self, $url, @bodies) = @_;
    my $i = 0;
    my $r = $self->sqs(SendMessageBatch => { QueueUrl => $url,
        Entries => [map { { Id => 'e' . $i++, MessageBody => $_ } } @bodies] });
    die "SendMessageBatch failed: " . $JSON->encode($r->{Failed}) . "\n" if @{ $r->{Failed} // [] };
    return [map { $_->{MessageId} } @{ $r->{Successful} }];
}

# Every item of the table, as plain hashes ({S} and {BOOL} unwrapped).
sub scan {
    my ($self, $table) = @_;
    my (@items, $start);
    do {
        my $r = $self->ddb(Scan => { TableName => $table, $start ? (ExclusiveStartKey => $start) : () });
        for my $it (@{ $r->{Items} // [] }) {
            push @items, { map { my $v = $it->{$_}; ($_ => exists $v->{S} ? $v->{S}
                                  : exists $v->{BOOL} ? ($v->{BOOL} ? 1 : 0) : $v) } keys %$it };
        }
        $start = $r->{LastEvaluatedKey};
    } while ($start);
    return \@items;
}

sub json { $JSON }

1;
