/*
 * Bulk evaluations as summaries. An OFREP bulk request evaluates every
 * flag; one raw event per flag made a page load against 300 flags cost 300
 * DynamoDB items, and 10,000 flags filled the event buffer within a few
 * requests. With togglemaster_events_bulk summary (the default) a bulk
 * evaluation only increments this worker's counters for the flag
 * (evaluations, true, false, per variant), and every
 * togglemaster_events_batch time the counters leave as summaries in
 * envelope version 2 (docs/events.md), which the analytics worker adds to
 * its usage aggregates. A bulk request thus costs a few increments per
 * flag and no buffer; SQS and DynamoDB see one entry per flag per flush,
 * whatever the request rate.
 *
 * Counters are kept per environment and flag; a message holds a summary
 * per environment (docs/events.md: "environment" absent for the default).
 *
 * Bounded: at most NGX_HTTP_TOGGLEMASTER_SUMMARY_FLAGS distinct
 * environment-flag pairs per flush (more are dropped and counted), and the summary messages go
 * through the events buffer's byte budget like any message. In the events
 * counters (produced, sent, dropped) a summary counts one event per flag it
 * holds.
 */

#include "ngx_http_togglemaster_module.h"


#define NGX_HTTP_TOGGLEMASTER_SUMMARY_FLAGS     16384
#define NGX_HTTP_TOGGLEMASTER_SUMMARY_VARIANTS  4
/* the most one flag can add to a summary: its name and variants escaped */
#define NGX_HTTP_TOGGLEMASTER_SUMMARY_FLAG_MAX  \
    (128 + (NGX_HTTP_TOGGLEMASTER_SUMMARY_VARIANTS + 1) * (6 * TM_NAME_MAX + 32))
#define NGX_HTTP_TOGGLEMASTER_SUMMARY_MSG_MAX   (256 * 1024 - 1024)


typedef struct {
    u_char                      *name;
    size_t                       len;
    uint64_t                     n;
} ngx_http_togglemaster_sum_variant_t;


typedef struct {
    u_char                      *name;     /* env then flag; NULL: free */
    size_t                       elen;     /* the environment's length */
    size_t                       len;      /* the flag's length */
    ngx_uint_t                   hash;
    ngx_uint_t                   done;     /* written by this flush */
    uint64_t                     n;
    uint64_t                     t;
    uint64_t                     f;
    ngx_http_togglemaster_sum_variant_t
                                 v[NGX_HTTP_TOGGLEMASTER_SUMMARY_VARIANTS];
} ngx_http_togglemaster_sum_t;


static struct {
    ngx_http_togglemaster_sum_t  *slot;
    ngx_uint_t                    cap;      /* a power of two, or 0 */
    ngx_uint_t                    used;
    ngx_msec_t                    first;    /* when the first count came */
} ngx_http_togglemaster_sums;


static void
ngx_http_togglemaster_summary_reset(void)
{
    ngx_uint_t                    i, k;
    ngx_http_togglemaster_sum_t  *e;

    for (i = 0; i < ngx_http_togglemaster_sums.cap; i++) {
        e = &ngx_http_togglemaster_sums.slot[i];

        if (e->name == NULL) {
            continue;
        }

        ngx_free(e->name);

        for (k = 0; k < NGX_HTTP_TOGGLEMASTER_SUMMARY_VARIANTS; k++) {
            if (e->v[k].name) {
                ngx_free(e->v[k].name);
            }
        }
    }

    if (ngx_http_togglemaster_sums.slot) {
        ngx_free(ngx_http_togglemaster_sums.slot);
    }

    ngx_memzero(&ngx_http_togglemaster_sums,
                sizeof(ngx_http_togglemaster_sums));
}


/* Doubles the table (or makes its first one); existing entries move. */
static ngx_int_t
ngx_http_togglemaster_summary_grow(ngx_log_t *log)
{
    ngx_uint_t                    i, j, cap;
    ngx_http_togglemaster_sum_t  *slot, *e;

    cap = ngx_http_togglemaster_sums.cap ? ngx_http_togglemaster_sums.cap * 2
                                         : 256;

    slot = ngx_calloc(cap * sizeof(ngx_http_togglemaster_sum_t), log);
    if (slot == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < ngx_http_togglemaster_sums.cap; i++) {
        e = &ngx_http_togglemaster_sums.slot[i];

        if (e->name == NULL) {
            continue;
        }

        for (j = e->hash & (cap - 1); slot[j].name; j = (j + 1) & (cap - 1)) {
            /* linear probing */
        }

        slot[j] = *e;
    }

    if (ngx_http_togglemaster_sums.slot) {
        ngx_free(ngx_http_togglemaster_sums.slot);
    }

    ngx_http_togglemaster_sums.slot = slot;
    ngx_http_togglemaster_sums.cap = cap;

    return NGX_OK;
}


static ngx_uint_t
ngx_http_togglemaster_summary_hash(ngx_str_t *env, u_char *flag, size_t flen)
{
    size_t      i;
    ngx_uint_t  hash;

    hash = ngx_hash_key(env->data, env->len);
    hash = ngx_hash(hash, '/');

    for (i = 0; i < flen; i++) {
        hash = ngx_hash(hash, flag[i]);
    }

    return hash;
}


static ngx_uint_t
ngx_http_togglemaster_summary_is(ngx_http_togglemaster_sum_t *e,
    ngx_uint_t hash, ngx_str_t *env, u_char *flag, size_t flen)
{
    return e->hash == hash && e->elen == env->len && e->len == flen
           && ngx_memcmp(e->name, env->data, env->len) == 0
           && ngx_memcmp(e->name + env->len, flag, flen) == 0;
}


/* The entry of flag in env, created when new; NULL when the table is full
 * or memory is short. */
static ngx_http_togglemaster_sum_t *
ngx_http_togglemaster_summary_entry(ngx_str_t *env, u_char *flag, size_t flen,
    ngx_log_t *log)
{
    ngx_uint_t                    hash, j, mask;
    ngx_http_togglemaster_sum_t  *e;

    hash = ngx_http_togglemaster_summary_hash(env, flag, flen);

    if (ngx_http_togglemaster_sums.cap) {
        mask = ngx_http_togglemaster_sums.cap - 1;

        for (j = hash & mask; ngx_http_togglemaster_sums.slot[j].name;
             j = (j + 1) & mask)
        {
            e = &ngx_http_togglemaster_sums.slot[j];

            if (ngx_http_togglemaster_summary_is(e, hash, env, flag, flen)) {
                return e;
            }
        }
    }

    if (ngx_http_togglemaster_sums.used >= NGX_HTTP_TOGGLEMASTER_SUMMARY_FLAGS)
    {
        return NULL;
    }

    /* at most half full, so probes stay short */
    if (2 * (ngx_http_togglemaster_sums.used + 1)
        > ngx_http_togglemaster_sums.cap
        && ngx_http_togglemaster_summary_grow(log) != NGX_OK)
    {
        return NULL;
    }

    mask = ngx_http_togglemaster_sums.cap - 1;

    for (j = hash & mask; ngx_http_togglemaster_sums.slot[j].name;
         j = (j + 1) & mask)
    {
        /* the free slot */
    }

    e = &ngx_http_togglemaster_sums.slot[j];

    e->name = ngx_alloc(env->len + flen, log);
    if (e->name == NULL) {
        return NULL;
    }

    ngx_memcpy(ngx_cpymem(e->name, env->data, env->len), flag, flen);
    e->elen = env->len;
    e->len = flen;
    e->hash = hash;
    ngx_http_togglemaster_sums.used++;

    return e;
}


static void
ngx_http_togglemaster_summary_variant(ngx_http_togglemaster_sum_t *e,
    const char *variant, ngx_log_t *log)
{
    size_t       len;
    ngx_uint_t   k;

    len = ngx_strlen(variant);

    for (k = 0; k < NGX_HTTP_TOGGLEMASTER_SUMMARY_VARIANTS; k++) {
        if (e->v[k].name == NULL) {
            e->v[k].name = ngx_alloc(len ? len : 1, log);
            if (e->v[k].name == NULL) {
                return;
            }

            ngx_memcpy(e->v[k].name, variant, len);
            e->v[k].len = len;
        }

        if (e->v[k].len == len && ngx_memcmp(e->v[k].name, variant, len) == 0)
        {
            e->v[k].n++;
            return;
        }
    }

    /* more variants than kept: n, t and f still count it */
}


void
ngx_http_togglemaster_summary_count(u_char *flag, size_t flen,
    tm_decision *d, const char *variant, ngx_str_t *env, ngx_log_t *log)
{
    ngx_str_t                     none = ngx_null_string;
    ngx_http_togglemaster_sum_t  *e;

    if (env == NULL) {
        env = &none;
    }

    if (flen == 0 || flen > TM_NAME_MAX || env->len > TM_NAME_MAX) {
        ngx_http_togglemaster_events_lost(NGX_HTTP_TOGGLEMASTER_DROP_INVALID,
                                          1);
        return;
    }

    e = ngx_http_togglemaster_summary_entry(env, flag, flen, log);
    if (e == NULL) {
        ngx_http_togglemaster_events_lost(
            NGX_HTTP_TOGGLEMASTER_DROP_BUFFER_FULL, 1);
        return;
    }

    if (e->n == 0 && ngx_http_togglemaster_sums.used == 1) {
        ngx_http_togglemaster_sums.first = ngx_current_msec;
        ngx_http_togglemaster_events_wake();   /* arms the flush timer */
    }

    e->n++;

    if (d->value) {
        e->t++;

    } else {
        e->f++;
    }

    if (variant && *variant) {
        ngx_http_togglemaster_summary_variant(e, variant, log);
    }
}


ngx_msec_t
ngx_http_togglemaster_summary_due(void)
{
    return ngx_http_togglemaster_sums.used ? ngx_http_togglemaster_sums.first
                                           : 0;
}


/* Opens one environment's summary (e's): id, time, environment. */
static u_char *
ngx_http_togglemaster_summary_open(u_char *p, ngx_http_togglemaster_sum_t *e)
{
    p = ngx_cpymem(p, "{\"summary_id\":\"", sizeof("{\"summary_id\":\"") - 1);
    p = ngx_http_togglemaster_events_uuid(p);
    p = ngx_cpymem(p, "\",\"timestamp\":\"", sizeof("\",\"timestamp\":\"") - 1);
    p = ngx_http_togglemaster_events_timestamp(p);
    *p++ = '"';

    if (e->elen) {
        p = ngx_cpymem(p, ",\"environment\":", sizeof(",\"environment\":") - 1);
        p = ngx_http_togglemaster_json_str(p, e->name, e->elen);
    }

    return ngx_cpymem(p, ",\"flags\":{", sizeof(",\"flags\":{") - 1);
}


#define NGX_HTTP_TOGGLEMASTER_SUMMARY_HEAD                                    \
    "{\"v\":2,\"events\":[],\"summaries\":["
/* a summary's own bytes besides its flags: id, time, environment */
#define NGX_HTTP_TOGGLEMASTER_SUMMARY_OPEN_MAX  (160 + 6 * TM_NAME_MAX)


static u_char *
ngx_http_togglemaster_summary_flag(u_char *p, ngx_http_togglemaster_sum_t *e)
{
    ngx_uint_t  k;

    p = ngx_http_togglemaster_json_str(p, e->name + e->elen, e->len);
    p = ngx_sprintf(p, ":{\"n\":%uL,\"t\":%uL,\"f\":%uL", e->n, e->t, e->f);

    for (k = 0; k < NGX_HTTP_TOGGLEMASTER_SUMMARY_VARIANTS && e->v[k].name; k++)
    {
        p = ngx_cpymem(p, k ? "," : ",\"variants\":{",
                       k ? 1 : sizeof(",\"variants\":{") - 1);
        p = ngx_http_togglemaster_json_str(p, e->v[k].name, e->v[k].len);
        p = ngx_sprintf(p, ":%uL", e->v[k].n);
    }

    if (k) {
        *p++ = '}';
    }

    *p++ = '}';
    return p;
}


/* Writes, from slot i on, every flag of slot i's environment not written
 * yet into summaries of that environment, starting messages as they fill;
 * returns where the message being written continues. */
static u_char *
ngx_http_togglemaster_summary_env(u_char *raw, u_char *p, ngx_uint_t i,
    ngx_uint_t *nflags)
{
    ngx_uint_t                    j, first;
    ngx_http_togglemaster_sum_t  *e, *x;

    e = &ngx_http_togglemaster_sums.slot[i];

    if (*nflags) {
        *p++ = ',';
    }

    p = ngx_http_togglemaster_summary_open(p, e);
    first = 1;

    for (j = i; j < ngx_http_togglemaster_sums.cap; j++) {
        x = &ngx_http_togglemaster_sums.slot[j];

        if (x->name == NULL || x->done || x->elen != e->elen
            || ngx_memcmp(x->name, e->name, e->elen) != 0)
        {
            continue;
        }

        if ((size_t) (p - raw) + NGX_HTTP_TOGGLEMASTER_SUMMARY_FLAG_MAX
            + NGX_HTTP_TOGGLEMASTER_SUMMARY_OPEN_MAX
            > NGX_HTTP_TOGGLEMASTER_SUMMARY_MSG_MAX)
        {
            p = ngx_cpymem(p, "}}]}", 4);
            ngx_http_togglemaster_events_queue_raw(raw, p - raw, *nflags);
            p = ngx_cpymem(raw, NGX_HTTP_TOGGLEMASTER_SUMMARY_HEAD,
                           sizeof(NGX_HTTP_TOGGLEMASTER_SUMMARY_HEAD) - 1);
            p = ngx_http_togglemaster_summary_open(p, e);
            *nflags = 0;
            first = 1;
        }

        if (!first) {
            *p++ = ',';
        }

        p = ngx_http_togglemaster_summary_flag(p, x);
        x->done = 1;
        first = 0;
        (*nflags)++;
    }

    return ngx_cpymem(p, "}}", 2);
}


/* Turns the counters into summary messages when they are due (or now,
 * when force), and empties the table. */
void
ngx_http_togglemaster_summary_flush(ngx_msec_t every, ngx_uint_t force,
    ngx_log_t *log)
{
    u_char                       *raw, *p;
    ngx_uint_t                    i, nflags;
    ngx_http_togglemaster_sum_t  *e;

    if (ngx_http_togglemaster_sums.used == 0
        || (!force && (ngx_msec_int_t) (ngx_current_msec
                                        - ngx_http_togglemaster_sums.first)
                      < (ngx_msec_int_t) every))
    {
        return;
    }

    raw = ngx_alloc(NGX_HTTP_TOGGLEMASTER_SUMMARY_MSG_MAX, log);
    if (raw == NULL) {
        ngx_http_togglemaster_events_lost(NGX_HTTP_TOGGLEMASTER_DROP_NO_MEMORY,
                                          ngx_http_togglemaster_sums.used);
        ngx_http_togglemaster_summary_reset();
        return;
    }

    p = ngx_cpymem(raw, NGX_HTTP_TOGGLEMASTER_SUMMARY_HEAD,
                   sizeof(NGX_HTTP_TOGGLEMASTER_SUMMARY_HEAD) - 1);
    nflags = 0;

    /* a pass per environment with counts (a few; at most 64) */
    for (i = 0; i < ngx_http_togglemaster_sums.cap; i++) {
        e = &ngx_http_togglemaster_sums.slot[i];

        if (e->name == NULL || e->done) {
            continue;
        }

        if ((size_t) (p - raw) + NGX_HTTP_TOGGLEMASTER_SUMMARY_FLAG_MAX
            + NGX_HTTP_TOGGLEMASTER_SUMMARY_OPEN_MAX
            > NGX_HTTP_TOGGLEMASTER_SUMMARY_MSG_MAX)
        {
            p = ngx_cpymem(p, "]}", 2);
            ngx_http_togglemaster_events_queue_raw(raw, p - raw, nflags);
            p = ngx_cpymem(raw, NGX_HTTP_TOGGLEMASTER_SUMMARY_HEAD,
                           sizeof(NGX_HTTP_TOGGLEMASTER_SUMMARY_HEAD) - 1);
            nflags = 0;
        }

        p = ngx_http_togglemaster_summary_env(raw, p, i, &nflags);
    }

    p = ngx_cpymem(p, "]}", 2);
    ngx_http_togglemaster_events_queue_raw(raw, p - raw, nflags);

    ngx_free(raw);
    ngx_http_togglemaster_summary_reset();
}


void
ngx_http_togglemaster_summary_exit(void)
{
    if (ngx_http_togglemaster_sums.used) {
        ngx_http_togglemaster_events_lost(NGX_HTTP_TOGGLEMASTER_DROP_SHUTDOWN,
                                          ngx_http_togglemaster_sums.used);
    }

    ngx_http_togglemaster_summary_reset();
}
