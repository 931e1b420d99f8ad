/*
 * Bulk OFREP refetches that an event stream triggered (ADR-0008): the
 * client sends back the event's etag and lastModified as query parameters
 * (flagConfigEtag and flagConfigLastModified; sseEtag and sseLastModified
 * in the ADR's drafts), in the forms lib/tm_sse_meta.h describes.
 *
 * The etag names the snapshot version at which the environment changed.
 * Another worker, or another edge, may have told the client before this
 * worker's snapshot has that version: answering at once would hand the
 * client the old values, and it would not ask again until the next event.
 * So such a request waits, without blocking: it is parked until a snapshot
 * swap brings the version (the swap posts its answer), or until
 * togglemaster_sse_refetch_wait has passed (a timer), when it is answered
 * with what the worker has and marked stale (ofrep.c).
 */

#include "ngx_http_togglemaster_module.h"

#include "tm_sse_meta.h"


/* a query value longer than this is not one of ours */
#define NGX_HTTP_TOGGLEMASTER_REFETCH_ARG_MAX  128


typedef struct {
    ngx_queue_t                          queue;
    ngx_event_t                          ev;
    ngx_http_request_t                  *r;
    int64_t                              id;
    ngx_http_togglemaster_refetch_pt     answer;
    unsigned                             queued:1;
} ngx_http_togglemaster_refetch_wait_t;


/* set up already: a swap may come before the worker's init */
static ngx_queue_t  ngx_http_togglemaster_refetch_waiting = {
    &ngx_http_togglemaster_refetch_waiting,
    &ngx_http_togglemaster_refetch_waiting
};


/* The first present of two argument names, URL-decoded (a form's '+' is a
 * space) into the request pool: NGX_OK, NGX_DECLINED if absent, NGX_ERROR
 * if too long (*msg says so) or out of memory (*msg NULL). */
static ngx_int_t
ngx_http_togglemaster_refetch_arg(ngx_http_request_t *r, const char *name,
    const char *alt, ngx_str_t *out, const char **msg)
{
    u_char     *dst, *src;
    ngx_str_t   raw;
    ngx_uint_t  i;

    *msg = NULL;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK
        && ngx_http_arg(r, (u_char *) alt, ngx_strlen(alt), &raw) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (raw.len > NGX_HTTP_TOGGLEMASTER_REFETCH_ARG_MAX) {
        *msg = "an event's etag or lastModified is not that long";
        return NGX_ERROR;
    }

    out->data = ngx_pnalloc(r->pool, raw.len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, raw.data, raw.len);

    for (i = 0; i < raw.len; i++) {
        if (out->data[i] == '+') {
            out->data[i] = ' ';
        }
    }

    src = out->data;
    dst = out->data;
    ngx_unescape_uri(&dst, &src, raw.len, 0);
    out->len = dst - out->data;

    return NGX_OK;
}


/* lib's message, in the request pool: *msg, or NULL if out of memory */
static ngx_int_t
ngx_http_togglemaster_refetch_bad(ngx_http_request_t *r, const char *err,
    const char **msg)
{
    u_char  *p;
    size_t   len;

    len = ngx_strlen(err) + 1;

    p = ngx_pnalloc(r->pool, len);
    if (p != NULL) {
        ngx_memcpy(p, err, len);
    }

    *msg = (const char *) p;

    return NGX_ERROR;
}


ngx_int_t
ngx_http_togglemaster_refetch_args(ngx_http_request_t *r,
    ngx_http_togglemaster_ctx_t *ctx, const char **msg)
{
    char        err[128];
    int64_t     t;
    ngx_int_t   rc;
    ngx_str_t   v;

    rc = ngx_http_togglemaster_refetch_arg(r, "flagConfigEtag", "sseEtag",
                                           &v, msg);
    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_OK) {
        if (tm_sse_etag_parse((char *) v.data, v.len, &ctx->refetch_id,
                              ctx->refetch_md5, err, sizeof(err))
            != 0)
        {
            return ngx_http_togglemaster_refetch_bad(r, err, msg);
        }

        ctx->refetch = 1;
    }

    rc = ngx_http_togglemaster_refetch_arg(r, "flagConfigLastModified",
                                           "sseLastModified", &v, msg);
    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    /* validated, never compared: each worker stamps a change with its own
     * clock when it sees it, so only the etag's version orders changes */
    if (rc == NGX_OK) {
        if (tm_sse_last_modified_parse((char *) v.data, v.len, &t, err,
                                       sizeof(err))
            != 0)
        {
            return ngx_http_togglemaster_refetch_bad(r, err, msg);
        }

        ctx->refetch_lm = 1;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_http_togglemaster_refetch_behind(ngx_http_togglemaster_ctx_t *ctx,
    ngx_uint_t env_index)
{
    int64_t                            id;
    u_char                            *md5;
    ngx_http_togglemaster_snapshot_t  *snap = ngx_http_togglemaster_current;

    if (!ctx->refetch) {
        return 0;
    }

    if (snap && snap->version >= ctx->refetch_id) {
        return 0;
    }

    /* versions a snapshot never had (a Redis that started over): what the
     * environment evaluates is what the event announced */
    if (snap
        && ngx_http_togglemaster_sse_env_change(env_index, &id, &md5)
           == NGX_OK
        && ngx_memcmp(md5, ctx->refetch_md5, 16) == 0)
    {
        return 0;
    }

    return 1;
}


static void
ngx_http_togglemaster_refetch_wake(ngx_event_t *ev)
{
    ngx_connection_t                      *c;
    ngx_http_request_t                    *r;
    ngx_http_togglemaster_ctx_t           *ctx;
    ngx_http_togglemaster_refetch_wait_t  *w = ev->data;

    r = w->r;
    c = r->connection;

    if (w->queued) {
        ngx_queue_remove(&w->queue);
        w->queued = 0;
    }

    if (ev->timer_set) {
        ngx_del_timer(ev);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_togglemaster_module);
    ctx->refetch_waited = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "togglemaster refetch: answering (wanted %L, %s)",
                   w->id, ev->timedout ? "timed out" : "caught up");

    ev->timedout = 0;
    r->read_event_handler = ngx_http_block_reading;

    ngx_http_finalize_request(r, w->answer(r));
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_togglemaster_refetch_cleanup(void *data)
{
    ngx_http_togglemaster_refetch_wait_t  *w = data;

    if (w->queued) {
        ngx_queue_remove(&w->queue);
        w->queued = 0;
    }

    if (w->ev.timer_set) {
        ngx_del_timer(&w->ev);
    }

    if (w->ev.posted) {
        ngx_delete_posted_event(&w->ev);
    }
}


ngx_int_t
ngx_http_togglemaster_refetch_wait(ngx_http_request_t *r, ngx_msec_t wait,
    ngx_http_togglemaster_refetch_pt answer)
{
    ngx_pool_cleanup_t                    *cln;
    ngx_http_togglemaster_ctx_t           *ctx;
    ngx_http_togglemaster_refetch_wait_t  *w;

    ctx = ngx_http_get_module_ctx(r, ngx_http_togglemaster_module);

    w = ngx_pcalloc(r->pool, sizeof(ngx_http_togglemaster_refetch_wait_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (w == NULL || cln == NULL) {
        return NGX_ERROR;
    }

    w->r = r;
    w->id = ctx->refetch_id;
    w->answer = answer;
    w->ev.handler = ngx_http_togglemaster_refetch_wake;
    w->ev.data = w;
    w->ev.log = r->connection->log;

    cln->handler = ngx_http_togglemaster_refetch_cleanup;
    cln->data = w;

    ngx_queue_insert_tail(&ngx_http_togglemaster_refetch_waiting, &w->queue);
    w->queued = 1;
    ngx_add_timer(&w->ev, wait);

    /* the answer finalizes the request once more; a client that goes
     * meanwhile ends it (the cleanup above takes it off the list) */
    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "togglemaster refetch: waiting up to %M ms for version %L",
                   wait, w->id);

    return NGX_OK;
}


/* snap is current: requests waiting for a version it has are answered on
 * the next turn of the event loop (the swap may be deep in a sync). */
void
ngx_http_togglemaster_refetch_swapped(ngx_http_togglemaster_snapshot_t *snap)
{
    ngx_queue_t                           *q, *next;
    ngx_http_togglemaster_refetch_wait_t  *w;

    if (snap == NULL) {
        return;
    }

    for (q = ngx_queue_head(&ngx_http_togglemaster_refetch_waiting);
         q != ngx_queue_sentinel(&ngx_http_togglemaster_refetch_waiting);
         q = next)
    {
        next = ngx_queue_next(q);
        w = ngx_queue_data(q, ngx_http_togglemaster_refetch_wait_t, queue);

        if (w->id > snap->version) {
            continue;
        }

        ngx_queue_remove(&w->queue);
        w->queued = 0;

        if (w->ev.timer_set) {
            ngx_del_timer(&w->ev);
        }

        ngx_post_event(&w->ev, &ngx_posted_events);
    }
}


void
ngx_http_togglemaster_refetch_init(void)
{
    ngx_queue_init(&ngx_http_togglemaster_refetch_waiting);
}
