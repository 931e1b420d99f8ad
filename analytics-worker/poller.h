/* One poller: long-poll SQS, store the events in DynamoDB, delete what is
 * stored. Several run side by side, each with its own connection. */
#ifndef TMW_POLLER_H
#define TMW_POLLER_H
#include "tm_aws.h"

#include <stdatomic.h>

typedef struct {
    char queue_url[1024];
    char table[256];
    char usage_table[256];   /* aggregates; "" when TM_USAGE_AGGREGATES=0 */
    tm_aws_endpoint sqs;
    tm_aws_endpoint ddb;
    int wait_seconds;        /* ReceiveMessage WaitTimeSeconds, 0..20 */
    int max_messages;        /* 1..10 */
    int visibility_timeout;  /* -1: the queue's own */
    int poison_visibility;   /* poison messages made visible again after this; -1: untouched */
    int write_attempts;      /* BatchWriteItem attempts per batch before giving up */
    long backoff_base_ms;
    long backoff_max_ms;
    atomic_long max_receive;    /* the queue's maxReceiveCount, 0 if unknown/none */
    atomic_int queue_checked;
    atomic_int probing;         /* one poller probes DynamoDB while it is down */
    atomic_int stop;
} tmw_config;

typedef struct {
    tmw_config *cfg;
    int id;
} tmw_poller_arg;

void *tmw_poller_run(void *arg);

/* Sleeps up to ms, in slices, returning early once cfg->stop is set. */
void tmw_sleep_ms(tmw_config *cfg, long ms);
#endif
