#include "metrics.h"
#include "tm_buf.h"

tmw_metrics tmw_m;

static void counter(tm_buf *b, const char *name, const char *help, unsigned long long v)
{
    tm_buf_addf(b, "# HELP togglemaster_analytics_%s %s\n# TYPE togglemaster_analytics_%s counter\n"
                "togglemaster_analytics_%s %llu\n", name, help, name, name, v);
}

static void gauge(tm_buf *b, const char *name, const char *help, double v)
{
    tm_buf_addf(b, "# HELP togglemaster_analytics_%s %s\n# TYPE togglemaster_analytics_%s gauge\n"
                "togglemaster_analytics_%s %.3f\n", name, help, name, name, v);
}

char *tmw_metrics_render(void)
{
    tm_buf b = TM_BUF_INIT;
    counter(&b, "receives_total", "ReceiveMessage calls answered by SQS.",
            atomic_load(&tmw_m.receives));
    counter(&b, "messages_received_total", "SQS messages received (redeliveries included).",
            atomic_load(&tmw_m.messages_received));
    counter(&b, "events_received_total", "Events found in received messages.",
            atomic_load(&tmw_m.events_received));
    counter(&b, "events_stored_total", "Events written to DynamoDB.",
            atomic_load(&tmw_m.events_stored));
    counter(&b, "events_duplicate_total", "Events repeated within one batch, written once.",
            atomic_load(&tmw_m.events_duplicate));
    counter(&b, "events_retried_total", "Event writes retried (unprocessed items, throttling, errors).",
            atomic_load(&tmw_m.events_retried));
    counter(&b, "events_failed_total", "Event writes given up for now; their messages stay on the queue.",
            atomic_load(&tmw_m.events_failed));
    counter(&b, "messages_deleted_total", "Messages deleted after all their events were stored.",
            atomic_load(&tmw_m.messages_deleted));
    counter(&b, "delete_failures_total", "Messages whose delete failed (they come back; writes are idempotent).",
            atomic_load(&tmw_m.delete_failures));
    counter(&b, "messages_poison_total", "Receives of messages that cannot be parsed (left for the redrive policy).",
            atomic_load(&tmw_m.messages_poison));
    counter(&b, "messages_dead_lettered_total", "Poison messages on their last receive: SQS moves them to the dead-letter queue.",
            atomic_load(&tmw_m.messages_dead_lettered));
    counter(&b, "sqs_requests_total", "Requests sent to SQS.", atomic_load(&tmw_m.sqs_requests));
    counter(&b, "dynamodb_requests_total", "Requests sent to DynamoDB.",
            atomic_load(&tmw_m.dynamodb_requests));
    counter(&b, "sqs_errors_total", "Failed SQS calls.", atomic_load(&tmw_m.sqs_errors));
    counter(&b, "dynamodb_errors_total", "Failed DynamoDB calls.", atomic_load(&tmw_m.dynamodb_errors));
    counter(&b, "dynamodb_throttled_total", "DynamoDB calls refused for throughput.",
            atomic_load(&tmw_m.dynamodb_throttled));
    counter(&b, "usage_transactions_total", "Aggregate transactions (TransactWriteItems) applied.",
            atomic_load(&tmw_m.usage_txns));
    counter(&b, "usage_transactions_repeated_total",
            "Aggregate transactions refused by their marker: the message was counted before.",
            atomic_load(&tmw_m.usage_txns_repeated));
    counter(&b, "usage_transactions_failed_total",
            "Aggregate transactions not applied for now; their messages stay on the queue.",
            atomic_load(&tmw_m.usage_txns_failed));
    counter(&b, "usage_summaries_total", "Bulk-evaluation summaries received.",
            atomic_load(&tmw_m.usage_summaries));
    counter(&b, "usage_events_skipped_total",
            "Events stored raw but not counted in aggregates (flag or environment not a valid name, bad timestamp).",
            atomic_load(&tmw_m.usage_skipped));
    counter(&b, "usage_reads_total", "Usage API requests answered.", atomic_load(&tmw_m.usage_reads));
    gauge(&b, "oldest_message_age_seconds", "Age of the oldest message in the latest receive.",
          (double) atomic_load(&tmw_m.oldest_age_ms) / 1000.0);
    gauge(&b, "sqs_up", "1 when the last SQS call answered.", atomic_load(&tmw_m.sqs_ok));
    gauge(&b, "dynamodb_up", "1 when the last DynamoDB write went through.",
          atomic_load(&tmw_m.dynamodb_ok));
    gauge(&b, "pollers", "Pollers running.", atomic_load(&tmw_m.pollers_running));
    return tm_buf_steal(&b);
}
