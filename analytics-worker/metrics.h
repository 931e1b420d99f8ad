/* The worker's counters, shared by the pollers and rendered on /metrics in
 * the Prometheus text format. Lock-free: C11 atomics. */
#ifndef TMW_METRICS_H
#define TMW_METRICS_H
#include <stdatomic.h>

typedef struct {
    atomic_ullong receives;          /* ReceiveMessage calls that answered */
    atomic_ullong messages_received;
    atomic_ullong events_received;
    atomic_ullong events_stored;      /* items DynamoDB accepted */
    atomic_ullong events_duplicate;   /* same event_id twice in one batch: stored once */
    atomic_ullong events_retried;     /* items sent again (unprocessed, throttled, errors) */
    atomic_ullong events_failed;      /* items given up on for now; their messages stay queued */
    atomic_ullong messages_deleted;
    atomic_ullong delete_failures;
    atomic_ullong messages_poison;    /* receives of a message that cannot be parsed */
    atomic_ullong messages_dead_lettered; /* poison on its last receive: SQS moves it to the DLQ next */
    atomic_ullong sqs_requests;
    atomic_ullong dynamodb_requests;
    atomic_ullong sqs_errors;
    atomic_ullong dynamodb_errors;
    atomic_ullong dynamodb_throttled;
    atomic_ullong usage_txns;         /* aggregate transactions applied */
    atomic_ullong usage_txns_repeated; /* cancelled by their marker: applied before */
    atomic_ullong usage_txns_failed;  /* not applied for now; their messages stay queued */
    atomic_ullong usage_summaries;    /* bulk-evaluation summaries received */
    atomic_ullong usage_skipped;      /* events not countable (bad name or timestamp) */
    atomic_ullong usage_reads;        /* usage API requests answered */
    atomic_llong oldest_age_ms;       /* age of the oldest message in the latest receive */
    atomic_int sqs_ok;                /* last SQS call answered */
    atomic_int dynamodb_ok;           /* last DynamoDB write went through */
    atomic_int pollers_running;
} tmw_metrics;

extern tmw_metrics tmw_m;

#define TMW_INC(field, n) atomic_fetch_add(&tmw_m.field, (unsigned long long) (n))

/* The exposition text (malloc'd), or NULL on OOM. */
char *tmw_metrics_render(void);
#endif
