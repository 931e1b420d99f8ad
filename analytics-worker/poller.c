#include "poller.h"
#include "aws_client.h"
#include "metrics.h"
#include "tm_events.h"
#include "tm_hash.h"
#include "tm_log.h"
#include "tm_usage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One distinct event of the batch in hand. Its DynamoDB item is kept as
 * compact JSON text, not as a jansson tree, and copied as it is into the
 * BatchWriteItem that carries it: a receive holds up to 10 messages of up
 * to 1000 events, and as trees (an object per item and per attribute, a
 * hashtable each) they took about 3 KiB per event — some 30 MiB per poller
 * for one full receive, which glibc then keeps in that poller's arena for
 * good (RSS at the high-water mark: 78 MiB with 2 pollers after a backlog,
 * against a 128 MiB limit in k8s). As text an event takes about 200 bytes. */
typedef struct {
    char *item;             /* DynamoDB item, compact JSON */
    char *event_id;
    int stored;
} uitem;

static void uitems_free(uitem *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(items[i].item);
        free(items[i].event_id);
    }
    free(items);
}

/* One received message and what it needs done before deletion: its events
 * stored, and its aggregates applied. */
typedef struct {
    tm_sqs_message *m;
    int poison;
    size_t *deps;           /* indices into the uitem array */
    size_t ndeps;
    tm_usage_batch *usage;  /* its aggregates; NULL when they are off */
    int counted;            /* every aggregate transaction applied (now or before) */
} mstate;

typedef struct {
    tmw_config *cfg;
    int id;
    tmw_http http;
    unsigned long long rng;
} poller;

void tmw_sleep_ms(tmw_config *cfg, long ms)
{
    while (ms > 0 && !atomic_load(&cfg->stop)) {
        long slice = ms < 50 ? ms : 50;
        struct timespec ts = { 0, slice * 1000000L };
        nanosleep(&ts, NULL);
        ms -= slice;
    }
}

static unsigned long long next_rand(poller *p)
{
    /* xorshift64*: jitter only, no secrecy needed. */
    p->rng ^= p->rng >> 12;
    p->rng ^= p->rng << 25;
    p->rng ^= p->rng >> 27;
    return p->rng * 2685821657736338717ULL;
}

/* Exponential backoff with jitter: half the step fixed, half random. */
static long backoff_ms(poller *p, int attempt)
{
    long d = p->cfg->backoff_base_ms;
    for (int i = 0; i < attempt && d < p->cfg->backoff_max_ms; i++) {
        d *= 2;
    }
    if (d > p->cfg->backoff_max_ms) {
        d = p->cfg->backoff_max_ms;
    }
    long half = d / 2;
    return half + (half > 0 ? (long) (next_rand(p) % (unsigned long long) (half + 1)) : 0);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void log_error(poller *p, const char *what, const tm_aws_error *e)
{
    TM_WARN("poller %d: %s failed: HTTP %ld %s: %s", p->id, what, e->status, e->code, e->message);
}

/* Reads the queue's redrive policy once, so poison messages on their last
 * receive can be counted and a queue without a DLQ is reported. */
static void check_queue(poller *p)
{
    tmw_config *cfg = p->cfg;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&cfg->queue_checked, &expected, 1)) {
        return;
    }
    static const char *const names[] = { "RedrivePolicy", NULL };
    tm_aws_error e;
    if (tmw_aws_call(&p->http, &cfg->sqs, "GetQueueAttributes",
                     tm_sqs_get_attributes_body(cfg->queue_url, names), 30, 0, &e) != 0) {
        log_error(p, "GetQueueAttributes", &e);
        atomic_store(&cfg->queue_checked, 0);
        return;
    }
    atomic_store(&tmw_m.sqs_ok, 1);
    char *rp = tm_sqs_parse_attribute(p->http.body, p->http.body_len, "RedrivePolicy");
    long max = tm_sqs_redrive_max_receive(rp);
    atomic_store(&cfg->max_receive, max);
    if (max > 0) {
        TM_INFO("queue %s: redrive policy moves a message to its dead-letter queue after %ld receives",
                cfg->queue_url, max);
    } else {
        TM_WARN("queue %s has no redrive policy: a poison message would be received forever; "
                "give it a dead-letter queue (scripts/aws-init.sh does)", cfg->queue_url);
    }
    free(rp);
}

/* While DynamoDB is failing, pollers stop taking messages (each receive
 * would count toward maxReceiveCount and push good events to the DLQ); one
 * of them probes the table until it answers. Returns 1 when writes may go on. */
static int dynamodb_gate(poller *p, int *attempt)
{
    tmw_config *cfg = p->cfg;
    if (atomic_load(&tmw_m.dynamodb_ok)) {
        return 1;
    }
    int expected = 0;
    if (atomic_compare_exchange_strong(&cfg->probing, &expected, 1)) {
        tm_aws_error e;
        int ok = tmw_aws_call(&p->http, &cfg->ddb, "DescribeTable", tm_ddb_table_body(cfg->table),
                              30, 0, &e) == 0
                 && (!cfg->usage_table[0]
                     || tmw_aws_call(&p->http, &cfg->ddb, "DescribeTable",
                                     tm_ddb_table_body(cfg->usage_table), 30, 0, &e) == 0);
        if (ok) {
            TM_INFO("DynamoDB tables %s%s%s answer again; resuming", cfg->table,
                    cfg->usage_table[0] ? " and " : "", cfg->usage_table);
            atomic_store(&tmw_m.dynamodb_ok, 1);
            *attempt = 0;
        } else {
            TM_DEBUG("poller %d: DynamoDB probe: %s", p->id, e.code);
        }
        atomic_store(&cfg->probing, 0);
        if (ok) {
            return 1;
        }
    }
    tmw_sleep_ms(cfg, backoff_ms(p, (*attempt)++));
    return 0;
}

/* Short, printable excerpt of a message body for the log. */
static void excerpt(const char *s, size_t n, char *out, size_t outlen)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 5 < outlen; i++) {
        unsigned char c = (unsigned char) s[i];
        out[j++] = (c >= 0x20 && c < 0x7f) ? (char) c : '?';
    }
    if (n > outlen - 5 && j + 4 <= outlen) {
        memcpy(out + j, "...", 3);
        j += 3;
    }
    out[j] = '\0';
}

static void handle_poison(poller *p, mstate *ms, const char *why)
{
    tmw_config *cfg = p->cfg;
    char ex[160];
    excerpt(ms->m->body, ms->m->body_len, ex, sizeof ex);
    long max = atomic_load(&cfg->max_receive);
    TMW_INC(messages_poison, 1);
    if (max > 0 && ms->m->receive_count >= max) {
        TMW_INC(messages_dead_lettered, 1);
        TM_WARN("poison message %s (receive %ld of %ld, goes to the dead-letter queue next): %s; body: %s",
                ms->m->message_id, ms->m->receive_count, max, why, ex);
    } else {
        TM_WARN("poison message %s (receive %ld%s): %s; body: %s", ms->m->message_id,
                ms->m->receive_count, max > 0 ? "" : ", no redrive policy", why, ex);
    }
    /* Let it come back at once so it reaches maxReceiveCount (and the DLQ)
     * without waiting out the visibility timeout each time. */
    if (cfg->poison_visibility >= 0 && max > 0) {
        tm_aws_error e;
        if (tmw_aws_call(&p->http, &cfg->sqs, "ChangeMessageVisibility",
                         tm_sqs_change_visibility_body(cfg->queue_url, ms->m->receipt_handle,
                                                       cfg->poison_visibility), 30, 0, &e) != 0) {
            log_error(p, "ChangeMessageVisibility", &e);
        }
    }
}

/* Counts a message's events and summaries into its aggregates batch. 0, or
 * -1 on out of memory. */
static int count_usage(poller *p, mstate *ms, const json_t *events, const json_t *summaries)
{
    if (!p->cfg->usage_table[0]) {
        return 0;
    }
    if (!(ms->usage = tm_usage_batch_new())) {
        return -1;
    }
    size_t j;
    json_t *x;
    json_array_foreach(events, j, x) {
        int r = tm_usage_add_event(ms->usage, x);
        if (r < 0) {
            return -1;
        }
        TMW_INC(usage_skipped, r);
    }
    TMW_INC(usage_summaries, json_array_size(summaries));
    json_array_foreach(summaries, j, x) {
        int r = tm_usage_add_summary(ms->usage, x);
        if (r < 0) {
            return -1;
        }
        if (r > 0) {
            TM_WARN("poller %d: message %s: a summary without a countable flag", p->id,
                    ms->m->message_id);
        }
    }
    return 0;
}

/* Parses every message into distinct items. 0, or -1 on out of memory. */
static int collect(poller *p, mstate *ms, size_t nm, uitem **items_out, size_t *nitems)
{
    json_t *index = json_object();   /* event_id -> position in items */
    size_t cap = 0, n = 0;
    uitem *items = NULL;
    int rc = index ? 0 : -1;
    for (size_t i = 0; i < nm && rc == 0; i++) {
        char err[300];
        json_t *summaries;
        json_t *events = tm_events_parse_message(ms[i].m->body, ms[i].m->body_len,
                                                 ms[i].m->message_id, &summaries, err, sizeof err);
        if (!events) {
            ms[i].poison = 1;
            handle_poison(p, &ms[i], err);
            continue;
        }
        size_t ne = json_array_size(events);
        TMW_INC(events_received, ne);
        ms[i].deps = malloc((ne ? ne : 1) * sizeof *ms[i].deps);
        if (!ms[i].deps || count_usage(p, &ms[i], events, summaries) != 0) {
            rc = -1;
        }
        json_decref(summaries);
        size_t j;
        json_t *ev;
        json_array_foreach(events, j, ev) {
            if (rc != 0) {
                break;
            }
            const char *id = json_string_value(json_object_get(ev, "event_id"));
            json_t *pos = json_object_get(index, id);
            if (pos) {
                TMW_INC(events_duplicate, 1);
                ms[i].deps[ms[i].ndeps++] = (size_t) json_integer_value(pos);
                continue;
            }
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 64;
                uitem *ni = realloc(items, nc * sizeof *ni);
                if (!ni) {
                    rc = -1;
                    break;
                }
                items = ni;
                cap = nc;
            }
            json_t *item = tm_event_to_item(ev);
            char *text = item ? json_dumps(item, JSON_COMPACT) : NULL;
            json_decref(item);
            char *eid = text && id ? strdup(id) : NULL;
            if (!eid || json_object_set_new(index, id, json_integer((json_int_t) n)) != 0) {
                free(text);
                free(eid);
                rc = -1;
                break;
            }
            items[n].item = text;
            items[n].event_id = eid;
            items[n].stored = 0;
            ms[i].deps[ms[i].ndeps++] = n;
            n++;
        }
        json_decref(events);
    }
    json_decref(index);
    *items_out = items;
    *nitems = n;
    return rc;
}

/* Writes every item, 25 at a time, retrying what DynamoDB leaves unprocessed
 * and retryable errors with backoff. Items left unstored keep their messages
 * on the queue. */
static void store(poller *p, uitem *items, size_t n)
{
    tmw_config *cfg = p->cfg;
    size_t *pending = malloc((n ? n : 1) * sizeof *pending);
    if (!pending) {
        TM_ERROR("out of memory");
        TMW_INC(events_failed, n);
        return;
    }
    size_t np = 0;
    for (size_t i = 0; i < n; i++) {
        pending[np++] = i;
    }
    int attempt = 0;
    while (np > 0) {
        size_t k = np < TM_DDB_MAX_BATCH_WRITE ? np : TM_DDB_MAX_BATCH_WRITE;
        const char *texts[TM_DDB_MAX_BATCH_WRITE];
        for (size_t i = 0; i < k; i++) {
            texts[i] = items[pending[i]].item;
        }
        char *body = tm_ddb_batch_write_body_text(cfg->table, texts, k);
        if (!body) {
            TM_ERROR("poller %d: out of memory building a DynamoDB batch", p->id);
            break;
        }
        tm_aws_error e;
        int rc = tmw_aws_call(&p->http, &cfg->ddb, "BatchWriteItem", body, 30, 0, &e);
        size_t left = k;
        if (rc == 0) {
            json_t *un = tm_ddb_parse_unprocessed(p->http.body, p->http.body_len, cfg->table);
            if (!un) {
                TM_WARN("poller %d: BatchWriteItem reply not understood; retrying", p->id);
            } else {
                json_t *unset = json_object();
                size_t ui;
                json_t *it;
                json_array_foreach(un, ui, it) {
                    const char *id = json_string_value(json_object_get(json_object_get(it, "event_id"), "S"));
                    if (id && unset) {
                        json_object_set_new(unset, id, json_true());
                    }
                }
                left = 0;
                for (size_t i = 0; i < k; i++) {
                    uitem *u = &items[pending[i]];
                    if (unset && !json_object_get(unset, u->event_id)) {
                        u->stored = 1;
                    } else {
                        left++;
                    }
                }
                TMW_INC(events_stored, k - left);
                json_decref(unset);
                json_decref(un);
            }
            atomic_store(&tmw_m.dynamodb_ok, 1);
        } else {
            TMW_INC(dynamodb_errors, 1);
            if (e.throttling) {
                TMW_INC(dynamodb_throttled, 1);
            }
            log_error(p, "BatchWriteItem", &e);
            if (!e.retryable) {
                atomic_store(&tmw_m.dynamodb_ok, 0);
                break;
            }
        }
        /* Drop what is stored from the pending list. */
        size_t w = 0;
        for (size_t i = 0; i < np; i++) {
            if (!items[pending[i]].stored) {
                pending[w++] = pending[i];
            }
        }
        np = w;
        if (left == 0) {
            attempt = 0;
            continue;
        }
        TMW_INC(events_retried, left);
        if (++attempt >= cfg->write_attempts || atomic_load(&cfg->stop)) {
            if (attempt >= cfg->write_attempts) {
                atomic_store(&tmw_m.dynamodb_ok, 0);
            }
            break;
        }
        tmw_sleep_ms(cfg, backoff_ms(p, attempt));
    }
    if (np > 0) {
        TMW_INC(events_failed, np);
        TM_WARN("poller %d: %zu events not stored; their messages stay on the queue", p->id, np);
    }
    free(pending);
}

static int all_stored(const mstate *ms, const uitem *items)
{
    int all = !ms->poison && ms->deps != NULL;
    for (size_t j = 0; all && j < ms->ndeps; j++) {
        all = items[ms->deps[j]].stored;
    }
    return all;
}

/* Outcome of one aggregate transaction: 0 applied (now, or before: its
 * marker exists), 1 worth retrying, -1 not (the message stays queued). */
static int txn_outcome(poller *p, int rc, const tm_aws_error *e)
{
    char code[64];
    if (rc == 0) {
        TMW_INC(usage_txns, 1);
        return 0;
    }
    TMW_INC(dynamodb_errors, 1);
    if (strcmp(e->code, "TransactionCanceledException") == 0
        && tm_ddb_cancel_reason(p->http.body, p->http.body_len, 0, code, sizeof code) == 0) {
        if (strcmp(code, "ConditionalCheckFailed") == 0) {
            TMW_INC(usage_txns_repeated, 1);
            return 0;
        }
        /* the marker was fine: another action failed (TransactionConflict,
         * ThrottlingError...) or a reason we retry the same way */
        for (size_t i = 1; tm_ddb_cancel_reason(p->http.body, p->http.body_len, i, code,
                                                 sizeof code) == 0; i++) {
            if (strcmp(code, "None") != 0 && strcmp(code, "TransactionConflict") != 0
                && strcmp(code, "ThrottlingError") != 0
                && strcmp(code, "ProvisionedThroughputExceeded") != 0) {
                TM_WARN("poller %d: aggregate transaction refused: %s", p->id, code);
                return -1;
            }
        }
        return 1;
    }
    if (e->throttling) {
        TMW_INC(dynamodb_throttled, 1);
    }
    log_error(p, "TransactWriteItems", e);
    if (strcmp(e->code, "TransactionInProgressException") == 0 || e->retryable) {
        return 1;
    }
    atomic_store(&tmw_m.dynamodb_ok, 0);   /* table missing, access denied: probe it */
    return -1;
}

/* Applies the aggregates of one message, transaction by transaction, with
 * retries. 0 when all are applied. */
static int apply_usage(poller *p, tm_usage_batch *b)
{
    tmw_config *cfg = p->cfg;
    size_t n = tm_usage_txns(b);
    for (size_t i = 0; i < n; i++) {
        int attempt = 0, r = 1;
        while (r == 1) {
            char *body = tm_usage_txn_body(b, cfg->usage_table, i);
            if (!body) {
                TM_ERROR("poller %d: out of memory building an aggregate transaction", p->id);
                return -1;
            }
            tm_aws_error e;
            r = txn_outcome(p, tmw_aws_call(&p->http, &cfg->ddb, "TransactWriteItems", body, 30,
                                            0, &e), &e);
            if (r == 1 && (++attempt >= cfg->write_attempts || atomic_load(&cfg->stop))) {
                r = -1;
            }
            if (r == 1) {
                tmw_sleep_ms(cfg, backoff_ms(p, attempt));
            }
        }
        if (r != 0) {
            TMW_INC(usage_txns_failed, n - i);
            return -1;
        }
    }
    return 0;
}

/* Aggregates of the messages whose events are stored (the others come back
 * whole; their transactions would only be refused by the markers then). */
static void count_stored(poller *p, mstate *ms, size_t nm, const uitem *items)
{
    for (size_t i = 0; i < nm; i++) {
        if (!ms[i].usage) {
            ms[i].counted = 1;
        } else if (all_stored(&ms[i], items) && apply_usage(p, ms[i].usage) == 0) {
            ms[i].counted = 1;
        } else if (all_stored(&ms[i], items)) {
            TM_WARN("poller %d: message %s: aggregates not applied; it stays on the queue",
                    p->id, ms[i].m->message_id);
        }
    }
}

static void delete_stored(poller *p, mstate *ms, size_t nm, uitem *items)
{
    tmw_config *cfg = p->cfg;
    tm_sqs_entry e[TM_SQS_MAX_BATCH];
    char ids[TM_SQS_MAX_BATCH][24];
    size_t ne = 0;
    for (size_t i = 0; i < nm; i++) {
        if (all_stored(&ms[i], items) && ms[i].counted && ne < TM_SQS_MAX_BATCH) {
            snprintf(ids[ne], sizeof ids[ne], "m%zu", i);
            e[ne].id = ids[ne];
            e[ne].value = ms[i].m->receipt_handle;
            ne++;
        }
    }
    if (ne == 0) {
        return;
    }
    tm_aws_error err;
    if (tmw_aws_call(&p->http, &cfg->sqs, "DeleteMessageBatch",
                     tm_sqs_delete_batch_body(cfg->queue_url, e, ne), 30, 0, &err) != 0) {
        TMW_INC(sqs_errors, 1);
        TMW_INC(delete_failures, ne);
        log_error(p, "DeleteMessageBatch", &err);
        return;
    }
    tm_sqs_batch_result r;
    char perr[128];
    if (tm_sqs_parse_batch_result(p->http.body, p->http.body_len, &r, perr, sizeof perr) != 0) {
        TM_WARN("poller %d: DeleteMessageBatch reply: %s", p->id, perr);
        TMW_INC(delete_failures, ne);
        return;
    }
    TMW_INC(messages_deleted, r.nok);
    for (size_t i = 0; i < r.nfailed; i++) {
        TMW_INC(delete_failures, 1);
        TM_WARN("poller %d: delete of %s failed: %s %s (it will come back; its items are idempotent)",
                p->id, r.failed[i].id, r.failed[i].code, r.failed[i].message);
    }
}

/* One receive and everything that follows it. Returns -1 when SQS failed. */
static int poll_once(poller *p)
{
    tmw_config *cfg = p->cfg;
    tm_aws_error e;
    char *body = tm_sqs_receive_body(cfg->queue_url, cfg->max_messages, cfg->wait_seconds,
                                     cfg->visibility_timeout);
    if (tmw_aws_call(&p->http, &cfg->sqs, "ReceiveMessage", body, cfg->wait_seconds + 15,
                     1, &e) != 0) {
        if (atomic_load(&cfg->stop)) {
            return 0; /* long poll abandoned for shutdown: nothing was taken */
        }
        TMW_INC(sqs_errors, 1);
        atomic_store(&tmw_m.sqs_ok, 0);
        log_error(p, "ReceiveMessage", &e);
        return -1;
    }
    atomic_store(&tmw_m.sqs_ok, 1);
    TMW_INC(receives, 1);
    tm_sqs_message *msgs;
    size_t nm;
    char err[200];
    if (tm_sqs_parse_receive(p->http.body, p->http.body_len, &msgs, &nm, err, sizeof err) != 0) {
        TMW_INC(sqs_errors, 1);
        TM_WARN("poller %d: %s", p->id, err);
        return -1;
    }
    if (nm == 0) {
        atomic_store(&tmw_m.oldest_age_ms, 0);
        return 0;
    }
    TMW_INC(messages_received, nm);
    long long oldest = 0, now = now_ms();
    for (size_t i = 0; i < nm; i++) {
        if (msgs[i].sent_ms > 0 && now - msgs[i].sent_ms > oldest) {
            oldest = now - msgs[i].sent_ms;
        }
    }
    atomic_store(&tmw_m.oldest_age_ms, oldest);

    mstate *ms = calloc(nm, sizeof *ms);
    uitem *items = NULL;
    size_t nitems = 0;
    if (!ms) {
        TM_ERROR("out of memory");
        tm_sqs_messages_free(msgs, nm);
        return 0;
    }
    for (size_t i = 0; i < nm; i++) {
        ms[i].m = &msgs[i];
    }
    if (collect(p, ms, nm, &items, &nitems) != 0) {
        TM_ERROR("poller %d: out of memory parsing a batch; leaving it on the queue", p->id);
    } else {
        if (nitems > 0) {
            store(p, items, nitems);
        }
        count_stored(p, ms, nm, items);
        delete_stored(p, ms, nm, items);
    }
    uitems_free(items, nitems);
    for (size_t i = 0; i < nm; i++) {
        free(ms[i].deps);
        tm_usage_batch_free(ms[i].usage);
    }
    free(ms);
    tm_sqs_messages_free(msgs, nm);
    return 0;
}

void *tmw_poller_run(void *arg)
{
    tmw_poller_arg *a = arg;
    poller p = { .cfg = a->cfg, .id = a->id };
    if (tmw_http_init(&p.http, &p.cfg->stop) != 0) {
        TM_ERROR("poller %d: curl init failed", p.id);
        return NULL;
    }
    if (tm_random_bytes(&p.rng, sizeof p.rng) != 0 || p.rng == 0) {
        p.rng = 0x9e3779b97f4a7c15ULL ^ (unsigned long long) a->id;
    }
    atomic_fetch_add(&tmw_m.pollers_running, 1);
    TM_INFO("poller %d: polling %s", p.id, p.cfg->queue_url);
    int sqs_attempt = 0, ddb_attempt = 0;
    while (!atomic_load(&p.cfg->stop)) {
        if (!atomic_load(&p.cfg->queue_checked)) {
            check_queue(&p);
        }
        if (!dynamodb_gate(&p, &ddb_attempt)) {
            continue;
        }
        if (poll_once(&p) != 0) {
            tmw_sleep_ms(p.cfg, backoff_ms(&p, sqs_attempt++));
        } else {
            sqs_attempt = 0;
        }
    }
    atomic_fetch_sub(&tmw_m.pollers_running, 1);
    tmw_http_cleanup(&p.http);
    TM_INFO("poller %d: stopped", p.id);
    return NULL;
}
