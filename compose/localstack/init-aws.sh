#!/bin/bash
# Creates what ToggleMaster needs in SQS and DynamoDB, an emulator's or AWS's:
# the events queue, its dead-letter queue (a message received 5 times without
# being deleted moves there) and the analytics table. Safe to run again.
#
# LocalStack runs it from /etc/localstack/init/ready.d (with awslocal). With
# the aws CLI it works against any emulator, or real AWS when
# AWS_ENDPOINT_URL is unset:
#   AWS_ENDPOINT_URL=http://127.0.0.1:4566 compose/localstack/init-aws.sh
# scripts/aws-init.sh does the same for `make run` with curl alone (no aws
# CLI on a developer machine); keep the names and the redrive policy alike.
set -euo pipefail

region=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
queue=${TM_QUEUE_NAME:-togglemaster-events}
dlq=${TM_DLQ_NAME:-$queue-dlq}
table=${AWS_DYNAMODB_TABLE:-ToggleMasterAnalytics}
usage_table=${AWS_DYNAMODB_USAGE_TABLE:-ToggleMasterUsage}
max_receive=${TM_MAX_RECEIVE_COUNT:-5}
ready_file=${TM_READY_FILE:-/tmp/togglemaster-aws-ready}

if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
  # An emulator at that address; it accepts any keys, the CLI wants some.
  export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
  export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
  aws=(aws --endpoint-url "$AWS_ENDPOINT_URL" --region "$region")
elif command -v awslocal >/dev/null 2>&1; then
  aws=(awslocal --region "$region")       # inside LocalStack
else
  aws=(aws --region "$region")            # real AWS, with your credentials
fi

rm -f "$ready_file"

# create-queue returns the existing queue when its attributes match; giving
# none here and setting them after keeps a second run from failing.
dlq_url=$("${aws[@]}" sqs create-queue --queue-name "$dlq" --query QueueUrl --output text)
"${aws[@]}" sqs set-queue-attributes --queue-url "$dlq_url" \
  --attributes MessageRetentionPeriod=1209600
dlq_arn=$("${aws[@]}" sqs get-queue-attributes --queue-url "$dlq_url" \
  --attribute-names QueueArn --query Attributes.QueueArn --output text)

queue_url=$("${aws[@]}" sqs create-queue --queue-name "$queue" --query QueueUrl --output text)
# The worker long-polls 20 s and writes in batches: 60 s of invisibility
# leaves it room to store a message's events before SQS hands it out again.
"${aws[@]}" sqs set-queue-attributes --queue-url "$queue_url" --attributes "$(printf \
  '{"VisibilityTimeout":"60","RedrivePolicy":"{\\"deadLetterTargetArn\\":\\"%s\\",\\"maxReceiveCount\\":\\"%s\\"}"}' \
  "$dlq_arn" "$max_receive")"

if ! "${aws[@]}" dynamodb describe-table --table-name "$table" >/dev/null 2>&1; then
  "${aws[@]}" dynamodb create-table --table-name "$table" \
    --attribute-definitions AttributeName=event_id,AttributeType=S \
    --key-schema AttributeName=event_id,KeyType=HASH \
    --billing-mode PAY_PER_REQUEST >/dev/null
fi
"${aws[@]}" dynamodb wait table-exists --table-name "$table"
# Usage aggregates and their per-message markers (docs/usage.md)
if ! "${aws[@]}" dynamodb describe-table --table-name "$usage_table" >/dev/null 2>&1; then
  "${aws[@]}" dynamodb create-table --table-name "$usage_table" \
    --attribute-definitions AttributeName=pk,AttributeType=S AttributeName=sk,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
    --billing-mode PAY_PER_REQUEST >/dev/null
fi
"${aws[@]}" dynamodb wait table-exists --table-name "$usage_table"
"${aws[@]}" dynamodb update-time-to-live --table-name "$usage_table" \
  --time-to-live-specification Enabled=true,AttributeName=expires >/dev/null 2>&1 || true

echo "init-aws: queue $queue_url (dead letters: $dlq after $max_receive receives), table $table, usage table $usage_table"
touch "$ready_file"
