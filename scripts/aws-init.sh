#!/usr/bin/env bash
# Creates what the analytics pipeline needs on an AWS-protocol endpoint (moto
# server, LocalStack): the events queue, its dead-letter queue wired with a
# redrive policy, and the DynamoDB table. Safe to run again: existing
# resources are kept and their attributes brought up to date.
#
#   scripts/aws-init.sh [ENDPOINT]     default: $AWS_ENDPOINT_URL, else http://127.0.0.1:4566
#
# Environment (all optional):
#   AWS_SQS_URL          the queue's name is its last path segment
#   TM_SQS_QUEUE_NAME    queue name when AWS_SQS_URL is unset (togglemaster-events)
#   TM_SQS_DLQ_NAME      dead-letter queue name (<queue>-dlq)
#   TM_DLQ_MAX_RECEIVE   receives before a message moves to the DLQ (5)
#   TM_SQS_VISIBILITY_TIMEOUT  the queue's visibility timeout in seconds (30)
#   AWS_DYNAMODB_TABLE   table name (ToggleMasterAnalytics), partition key event_id (S)
#   AWS_DYNAMODB_USAGE_TABLE  usage aggregates (ToggleMasterUsage), keys pk (S) + sk (S),
#                        TTL on expires (docs/usage.md)
#   AWS_REGION           region (us-east-1); AWS_ACCESS_KEY_ID picks the emulator's account
# Prints the queue URL, the DLQ URL and the table name. Not for real AWS:
# there, create these with your infrastructure tooling (see docs/events.md).
# compose/localstack/init-aws.sh does the same inside the LocalStack image,
# which has the aws CLI but neither perl nor this repository; this one needs
# only bash, curl and perl, which make run and the tests already have.
set -euo pipefail

endpoint=${1:-${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}}
endpoint=${endpoint%/}
region=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
key=${AWS_ACCESS_KEY_ID:-test}
if [ -n "${AWS_SQS_URL:-}" ]; then queue=${AWS_SQS_URL##*/}; else queue=${TM_SQS_QUEUE_NAME:-togglemaster-events}; fi
dlq=${TM_SQS_DLQ_NAME:-$queue-dlq}
max_receive=${TM_DLQ_MAX_RECEIVE:-5}
visibility=${TM_SQS_VISIBILITY_TIMEOUT:-30}
table=${AWS_DYNAMODB_TABLE:-ToggleMasterAnalytics}
usage_table=${AWS_DYNAMODB_USAGE_TABLE:-ToggleMasterUsage}

for v in "$queue" "$dlq" "$table" "$usage_table"; do
  [[ $v =~ ^[A-Za-z0-9_.-]{1,80}$ ]] || { echo "aws-init: bad name \"$v\"" >&2; exit 2; }
done
[[ $max_receive =~ ^[0-9]+$ && $visibility =~ ^[0-9]+$ ]] || { echo "aws-init: bad number" >&2; exit 2; }

# call SERVICE TARGET JSON -> prints the reply; fails on HTTP >= 400 unless
# the error code is in $ok_errors. Emulators do not check signatures but read
# the region and account from the credential scope, so we send one.
ok_errors=""
call() {
  local svc=$1 target=$2 body=$3 out status
  out=$(curl -sS --max-time 30 -w '\n%{http_code}' -X POST "$endpoint/" \
    -H "Content-Type: application/x-amz-json-1.0" -H "X-Amz-Target: $target" \
    -H "Authorization: AWS4-HMAC-SHA256 Credential=$key/20260101/$region/$svc/aws4_request, SignedHeaders=host, Signature=0" \
    --data-binary "$body") || { echo "aws-init: $endpoint unreachable" >&2; return 1; }
  status=${out##*$'\n'}
  out=${out%$'\n'*}
  if [ "$status" -ge 400 ]; then
    local code; code=$(json_get "$out" __type); code=${code##*#}
    if [ -n "$ok_errors" ] && [[ " $ok_errors " == *" $code "* ]]; then return 0; fi
    echo "aws-init: $target: HTTP $status $out" >&2
    return 1
  fi
  printf '%s' "$out"
}

# json_get JSON KEY[.KEY...] -> the value (strings raw)
json_get() {
  perl -MJSON::PP -e '
    my $j = eval { JSON::PP->new->decode($ARGV[0]) } // {};
    for my $k (split /\./, $ARGV[1]) { $j = ref $j eq "HASH" ? $j->{$k} : undef }
    print defined $j ? $j : "";' "$1" "$2"
}

create_queue() {
  local url
  url=$(json_get "$(call sqs AmazonSQS.CreateQueue "{\"QueueName\":\"$1\"}")" QueueUrl)
  [ -n "$url" ] || { echo "aws-init: CreateQueue $1 gave no QueueUrl" >&2; return 1; }
  printf '%s' "$url"
}

dlq_url=$(create_queue "$dlq")
dlq_arn=$(json_get "$(call sqs AmazonSQS.GetQueueAttributes \
  "{\"QueueUrl\":\"$dlq_url\",\"AttributeNames\":[\"QueueArn\"]}")" Attributes.QueueArn)
[ -n "$dlq_arn" ] || { echo "aws-init: no ARN for $dlq" >&2; exit 1; }
queue_url=$(create_queue "$queue")
policy="{\\\"deadLetterTargetArn\\\":\\\"$dlq_arn\\\",\\\"maxReceiveCount\\\":\\\"$max_receive\\\"}"
call sqs AmazonSQS.SetQueueAttributes "{\"QueueUrl\":\"$queue_url\",\"Attributes\":{\"RedrivePolicy\":\"$policy\",\"VisibilityTimeout\":\"$visibility\"}}" >/dev/null

ok_errors="ResourceInUseException"
call dynamodb DynamoDB_20120810.CreateTable "{\"TableName\":\"$table\",
  \"AttributeDefinitions\":[{\"AttributeName\":\"event_id\",\"AttributeType\":\"S\"}],
  \"KeySchema\":[{\"AttributeName\":\"event_id\",\"KeyType\":\"HASH\"}],
  \"BillingMode\":\"PAY_PER_REQUEST\"}" >/dev/null
call dynamodb DynamoDB_20120810.CreateTable "{\"TableName\":\"$usage_table\",
  \"AttributeDefinitions\":[{\"AttributeName\":\"pk\",\"AttributeType\":\"S\"},{\"AttributeName\":\"sk\",\"AttributeType\":\"S\"}],
  \"KeySchema\":[{\"AttributeName\":\"pk\",\"KeyType\":\"HASH\"},{\"AttributeName\":\"sk\",\"KeyType\":\"RANGE\"}],
  \"BillingMode\":\"PAY_PER_REQUEST\"}" >/dev/null
ok_errors=""
# markers and old aggregates expire (TTL); emulators may not delete them
call dynamodb DynamoDB_20120810.UpdateTimeToLive "{\"TableName\":\"$usage_table\",
  \"TimeToLiveSpecification\":{\"Enabled\":true,\"AttributeName\":\"expires\"}}" >/dev/null 2>&1 || true

echo "queue      $queue_url"
echo "dlq        $dlq_url (after $max_receive receives)"
echo "table      $table"
echo "usage      $usage_table"
