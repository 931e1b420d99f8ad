/*
 * Metrics in shared memory, so that any worker answers the scrape for all.
 * Per-flag counters live in a fixed open-addressing table; a flag gets its
 * slot while a snapshot is built (off the request path), requests only do
 * atomic adds. Names clients send for unknown flags share one slot, so a
 * client cannot grow the table.
 */

#include "ngx_http_togglemaster_module.h"
#include "ngx_http_togglemaster_creds.h"
#include "tm_regex.h"


ngx_http_togglemaster_shm_t  *ngx_http_togglemaster_shm;


ngx_int_t
ngx_http_togglemaster_shm_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t              *shpool;
    ngx_http_togglemaster_shm_t  *sh;

    if (data) {
        zone->data = data;
        ngx_http_togglemaster_shm = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        ngx_http_togglemaster_shm = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_alloc(shpool, sizeof(ngx_http_togglemaster_shm_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(sh, sizeof(ngx_http_togglemaster_shm_t));

    shpool->data = sh;
    zone->data = sh;
    ngx_http_togglemaster_shm = sh;

    return NGX_OK;
}


#define NGX_HTTP_TOGGLEMASTER_COUNTER_PROBES  64


ngx_uint_t
ngx_http_togglemaster_counter_slot(u_char *name, size_t len)
{
    ngx_uint_t                        i, n;
    ngx_http_togglemaster_counter_t  *c;

    if (ngx_http_togglemaster_shm == NULL || len > TM_NAME_MAX) {
        return NGX_HTTP_TOGGLEMASTER_SLOT_UNKNOWN;
    }

    i = 1 + ngx_murmur_hash2(name, len)
            % (NGX_HTTP_TOGGLEMASTER_COUNTER_SLOTS - 1);

    /* Probes are bounded, for lookups and claims alike (so a name is never
     * further from its home): once the table is full, a flag without a
     * slot costs 64 probes, not a walk over every slot, which took a
     * first load of 10,000 flags 300 ms in one step. */
    for (n = 1; n <= NGX_HTTP_TOGGLEMASTER_COUNTER_PROBES; n++) {
        c = &ngx_http_togglemaster_shm->counters[i];

        if (c->state == 0 && ngx_atomic_cmp_set(&c->state, 0, 1)) {
            c->len = (u_char) len;
            ngx_memcpy(c->name, name, len);
            ngx_memory_barrier();
            c->state = 2;
            return i;
        }

        /* another worker is writing this slot's name: a few cycles */
        while (c->state == 1) {
            ngx_cpu_pause();
        }

        if (c->len == len && ngx_memcmp(c->name, name, len) == 0) {
            return i;
        }

        i = (i == NGX_HTTP_TOGGLEMASTER_COUNTER_SLOTS - 1) ? 1 : i + 1;
    }

    return NGX_HTTP_TOGGLEMASTER_SLOT_UNKNOWN;
}


void
ngx_http_togglemaster_count(ngx_uint_t slot, ngx_uint_t on)
{
    ngx_http_togglemaster_counter_t  *c;

    if (ngx_http_togglemaster_shm == NULL) {
        return;
    }

    c = &ngx_http_togglemaster_shm->counters[slot];
    (void) ngx_atomic_fetch_add(on ? &c->on : &c->off, 1);
}


/*
 * Adds what lib's counters (this process's: REGEX bounds hit, evaluations
 * over budget) gained since the last call to the shared ones: called after
 * each evaluation, it costs five loads when nothing happened.
 */
void
ngx_http_togglemaster_engine_count(void)
{
    unsigned long                  over, over_request;
    tm_regex_stats                 now;
    ngx_http_togglemaster_shm_t   *sh;

    static tm_regex_stats          seen;
    static unsigned long           seen_over, seen_over_request;

    sh = ngx_http_togglemaster_shm;
    if (sh == NULL) {
        return;
    }

    over = tm_rules_over_budget();
    over_request = tm_rules_over_request_budget();

    if (over != seen_over) {
        (void) ngx_atomic_fetch_add(&sh->rules_over_budget,
                                    over - seen_over);
        seen_over = over;
    }

    if (over_request != seen_over_request) {
        (void) ngx_atomic_fetch_add(&sh->rules_over_request_budget,
                                    over_request - seen_over_request);
        seen_over_request = over_request;
    }

    tm_regex_stats_get(&now);

    if (now.too_long != seen.too_long) {
        (void) ngx_atomic_fetch_add(&sh->regex_too_long,
                                    now.too_long - seen.too_long);
    }

    if (now.limit != seen.limit) {
        (void) ngx_atomic_fetch_add(&sh->regex_limit, now.limit - seen.limit);
    }

    if (now.bad_subject != seen.bad_subject) {
        (void) ngx_atomic_fetch_add(&sh->regex_bad_subject,
                                    now.bad_subject - seen.bad_subject);
    }

    seen = now;
}


void
ngx_http_togglemaster_worker_state(ngx_uint_t state)
{
    ngx_http_togglemaster_worker_stat_t  *w;

    if (ngx_http_togglemaster_shm == NULL
        || ngx_worker >= NGX_HTTP_TOGGLEMASTER_MAX_WORKERS)
    {
        return;
    }

    w = &ngx_http_togglemaster_shm->workers[ngx_worker];

    w->pid = ngx_pid;
    w->state = state;

    if (ngx_http_togglemaster_current) {
        w->version = (ngx_atomic_uint_t) ngx_http_togglemaster_current->version;
    }

    if (state == 2) {
        w->synced_at = ngx_time();
    }
}


#define NGX_HTTP_TOGGLEMASTER_LINE  (TM_NAME_MAX * 6 + 128)


static const char  *ngx_http_togglemaster_drop_reasons[] = {
    "buffer_full",          /* the worker's buffer was full */
    "retries_exhausted",    /* SQS failed every attempt */
    "rejected",             /* SQS refused the message (sender fault) */
    "shutdown",             /* still buffered when the worker exited */
    "no_user_id",           /* evaluated without an identity */
    "too_long",             /* user_id or flag_name over 1024 bytes */
    "invalid",              /* not UTF-8 text SQS accepts */
    "no_memory",
    "buffer_bytes"          /* the worker's buffer reached its byte budget */
};

static const char  *ngx_http_togglemaster_sqs_errors[] = {
    "connect", "timeout", "http", "entry", "reply"
};


/* What bounded the rules engine's work (lib/tm_rules.h, lib/tm_regex.h). */
static u_char *
ngx_http_togglemaster_metrics_rules(u_char *p, u_char *last,
    ngx_http_togglemaster_shm_t *sh)
{
    return ngx_slprintf(p, last,
        "# HELP togglemaster_regex_unmatched_total REGEX constraints "
        "answered no match because a bound was hit: value over 1024 bytes "
        "(too_long), match budget (limit), value not UTF-8 (bad_subject).\n"
        "# TYPE togglemaster_regex_unmatched_total counter\n"
        "togglemaster_regex_unmatched_total{reason=\"too_long\"} %uA\n"
        "togglemaster_regex_unmatched_total{reason=\"limit\"} %uA\n"
        "togglemaster_regex_unmatched_total{reason=\"bad_subject\"} %uA\n"
        "# HELP togglemaster_rules_over_budget_total Evaluations stopped by "
        "their evaluation budget (false, reason ERROR).\n"
        "# TYPE togglemaster_rules_over_budget_total counter\n"
        "togglemaster_rules_over_budget_total %uA\n"
        "# HELP togglemaster_rules_over_request_budget_total Evaluations "
        "refused because their request's budget was spent "
        "(togglemaster_request_budget).\n"
        "# TYPE togglemaster_rules_over_request_budget_total counter\n"
        "togglemaster_rules_over_request_budget_total %uA\n",
        sh->regex_too_long, sh->regex_limit, sh->regex_bad_subject,
        sh->rules_over_budget, sh->rules_over_request_budget);
}


static u_char *
ngx_http_togglemaster_metrics_events(u_char *p, u_char *last,
    ngx_http_togglemaster_shm_t *sh, ngx_uint_t workers)
{
    ngx_uint_t                            i;
    ngx_http_togglemaster_events_stat_t  *e = &sh->events;

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_events_produced_total Evaluation events "
        "produced.\n"
        "# TYPE togglemaster_events_produced_total counter\n"
        "togglemaster_events_produced_total %uA\n"
        "# HELP togglemaster_events_sent_total Events SQS accepted.\n"
        "# TYPE togglemaster_events_sent_total counter\n"
        "togglemaster_events_sent_total %uA\n"
        "# HELP togglemaster_events_failed_total Events in a send attempt "
        "that failed (retried, or dropped after the last attempt).\n"
        "# TYPE togglemaster_events_failed_total counter\n"
        "togglemaster_events_failed_total %uA\n"
        "# HELP togglemaster_events_dropped_total Events that will never "
        "reach SQS, by reason.\n"
        "# TYPE togglemaster_events_dropped_total counter\n",
        e->produced, e->sent, e->failed);

    for (i = 0; i < NGX_HTTP_TOGGLEMASTER_DROP_N; i++) {
        p = ngx_slprintf(p, last,
                         "togglemaster_events_dropped_total{reason=\"%s\"} "
                         "%uA\n",
                         ngx_http_togglemaster_drop_reasons[i],
                         e->dropped[i]);
    }

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_events_buffer_bytes Bytes of the buffers holding "
        "them (togglemaster_events_buffer_size bounds it).\n"
        "# TYPE togglemaster_events_buffer_bytes gauge\n");

    for (i = 0; i < workers; i++) {
        if (sh->workers[i].pid) {
            p = ngx_slprintf(p, last,
                             "togglemaster_events_buffer_bytes{worker=\"%ui\"} "
                             "%uA\n", i, sh->workers[i].events_bytes);
        }
    }

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_events_buffered Events held by the worker "
        "(waiting, in flight or to be retried).\n"
        "# TYPE togglemaster_events_buffered gauge\n");

    for (i = 0; i < workers; i++) {
        if (sh->workers[i].pid) {
            p = ngx_slprintf(p, last,
                             "togglemaster_events_buffered{worker=\"%ui\"} "
                             "%uA\n", i, sh->workers[i].events_buffered);
        }
    }

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_sqs_requests_total SendMessageBatch requests "
        "made.\n"
        "# TYPE togglemaster_sqs_requests_total counter\n"
        "togglemaster_sqs_requests_total %uA\n"
        "# HELP togglemaster_events_batches_sent_total SendMessageBatch "
        "requests SQS answered with 200.\n"
        "# TYPE togglemaster_events_batches_sent_total counter\n"
        "togglemaster_events_batches_sent_total %uA\n"
        "# HELP togglemaster_sqs_messages_sent_total SQS messages (batch "
        "envelopes) accepted.\n"
        "# TYPE togglemaster_sqs_messages_sent_total counter\n"
        "togglemaster_sqs_messages_sent_total %uA\n"
        "# HELP togglemaster_sqs_errors_total SQS errors by kind.\n"
        "# TYPE togglemaster_sqs_errors_total counter\n",
        e->requests, e->batches, e->messages);

    for (i = 0; i < NGX_HTTP_TOGGLEMASTER_SQS_ERR_N; i++) {
        p = ngx_slprintf(p, last,
                         "togglemaster_sqs_errors_total{kind=\"%s\"} %uA\n",
                         ngx_http_togglemaster_sqs_errors[i], e->errors[i]);
    }

    return p;
}

/*
 * Room for the whole body: a line per flag and result, nine per worker
 * (the gauges by worker: snapshot and sync, events, credentials, SSE),
 * 8 KiB for the rest. A flag that gets its slot meanwhile may not fit:
 * ngx_slprintf() stops at the end, and the next scrape has room for it.
 */
static size_t
ngx_http_togglemaster_metrics_size(ngx_http_togglemaster_shm_t *sh,
    ngx_uint_t workers)
{
    ngx_uint_t  i, n;

    n = 0;
    for (i = 0; i < NGX_HTTP_TOGGLEMASTER_COUNTER_SLOTS; i++) {
        if (i == 0 || sh->counters[i].state == 2) {
            n++;
        }
    }

    return 8192 + (n * 2 + workers * 9) * NGX_HTTP_TOGGLEMASTER_LINE;
}


/* Evaluations by flag and result; slot 0 is the flags the snapshot lacks. */
static u_char *
ngx_http_togglemaster_metrics_flags(u_char *p, u_char *last,
    ngx_http_togglemaster_shm_t *sh)
{
    ngx_uint_t                        i;
    ngx_http_togglemaster_counter_t  *c;

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_evaluations_total Flag evaluations by flag and "
        "result (flag=\"\" counts flags unknown to the snapshot).\n"
        "# TYPE togglemaster_evaluations_total counter\n");

    for (i = 0; i < NGX_HTTP_TOGGLEMASTER_COUNTER_SLOTS; i++) {
        c = &sh->counters[i];

        if (i != 0 && c->state != 2) {
            continue;
        }

        /* flag names are [A-Za-z0-9_.:-]: nothing to escape */
        p = ngx_slprintf(p, last,
            "togglemaster_evaluations_total{flag=\"%*s\",result=\"true\"} %uA\n"
            "togglemaster_evaluations_total{flag=\"%*s\",result=\"false\"} %uA\n",
            (size_t) (i ? c->len : 0), c->name, c->on,
            (size_t) (i ? c->len : 0), c->name, c->off);
    }

    return p;
}


/* Each running worker's snapshot: version, age and Redis sync state. */
static u_char *
ngx_http_togglemaster_metrics_workers(u_char *p, u_char *last,
    ngx_http_togglemaster_shm_t *sh, ngx_uint_t workers)
{
    time_t                                now;
    ngx_uint_t                            i;
    ngx_http_togglemaster_worker_stat_t  *w;

    now = ngx_time();

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_snapshot_version tm:version of the worker's "
        "snapshot.\n"
        "# TYPE togglemaster_snapshot_version gauge\n");

    for (i = 0; i < workers; i++) {
        w = &sh->workers[i];
        if (w->pid) {
            p = ngx_slprintf(p, last,
                    "togglemaster_snapshot_version{worker=\"%ui\"} %uA\n",
                    i, w->version);
        }
    }

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_snapshot_age_seconds Seconds since the worker "
        "last confirmed its snapshot against Redis.\n"
        "# TYPE togglemaster_snapshot_age_seconds gauge\n");

    for (i = 0; i < workers; i++) {
        w = &sh->workers[i];
        if (w->pid && w->synced_at) {
            p = ngx_slprintf(p, last,
                    "togglemaster_snapshot_age_seconds{worker=\"%ui\"} %T\n",
                    i, now - (time_t) w->synced_at);
        }
    }

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_redis_sync_state 0 disconnected, 1 connecting, "
        "2 synced.\n"
        "# TYPE togglemaster_redis_sync_state gauge\n");

    for (i = 0; i < workers; i++) {
        w = &sh->workers[i];
        if (w->pid) {
            p = ngx_slprintf(p, last,
                    "togglemaster_redis_sync_state{worker=\"%ui\"} %uA\n",
                    i, w->state);
        }
    }

    return p;
}


/* Counters shared by the workers: Redis sync, malformed objects, keys
 * refused at the edge. */
static u_char *
ngx_http_togglemaster_metrics_sync(u_char *p, u_char *last,
    ngx_http_togglemaster_shm_t *sh)
{
    return ngx_slprintf(p, last,
        "# TYPE togglemaster_redis_reconnects_total counter\n"
        "togglemaster_redis_reconnects_total %uA\n"
        "# TYPE togglemaster_redis_syncs_total counter\n"
        "togglemaster_redis_syncs_total %uA\n"
        "# TYPE togglemaster_redis_sync_errors_total counter\n"
        "togglemaster_redis_sync_errors_total %uA\n"
        "# TYPE togglemaster_malformed_objects_total counter\n"
        "togglemaster_malformed_objects_total %uA\n"
        "# TYPE togglemaster_api_key_denied_total counter\n"
        "togglemaster_api_key_denied_total %uA\n",
        sh->reconnects, sh->syncs, sh->sync_errors, sh->malformed,
        sh->key_denied);
}


static ngx_int_t
ngx_http_togglemaster_metrics_send(ngx_http_request_t *r, u_char *body,
    u_char *end)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = end - body;
    ngx_str_set(&r->headers_out.content_type, "text/plain; version=0.0.4");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body;
    b->last = end;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_togglemaster_metrics_handler(ngx_http_request_t *r)
{
    u_char                       *body, *p, *last;
    size_t                        size;
    ngx_int_t                     rc;
    ngx_uint_t                    workers;
    ngx_core_conf_t              *ccf;
    ngx_http_togglemaster_shm_t  *sh;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    sh = ngx_http_togglemaster_shm;
    if (sh == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);
    workers = ngx_min((ngx_uint_t) ccf->worker_processes,
                      NGX_HTTP_TOGGLEMASTER_MAX_WORKERS);

    size = ngx_http_togglemaster_metrics_size(sh, workers);

    body = ngx_pnalloc(r->pool, size);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = body + size;

    p = ngx_http_togglemaster_metrics_flags(body, last, sh);
    p = ngx_http_togglemaster_metrics_workers(p, last, sh, workers);
    p = ngx_http_togglemaster_metrics_sync(p, last, sh);
    p = ngx_http_togglemaster_metrics_rules(p, last, sh);
    p = ngx_http_togglemaster_metrics_events(p, last, sh, workers);
    p = ngx_http_togglemaster_creds_metrics(p, last, workers);
    p = ngx_http_togglemaster_sse_metrics(p, last, workers);

    return ngx_http_togglemaster_metrics_send(r, body, p);
}
