/*
 * OFREP event streams (ADR-0008): bulk answers name a stream URL carrying a
 * signed, expiring token (lib/tm_sse_token.h); the stream location
 * (togglemaster_sse on) holds the connection open and sends
 *
 *   id: <id>
 *   event: message
 *   data: {"type":"refetchEvaluation","etag":"...","lastModified":<unix>}
 *
 * whenever a new snapshot changes what the stream's environment evaluates
 * (its flags, or the segments every environment shares), and an SSE
 * comment every heartbeat. The id is the snapshot version at which the
 * environment last changed: every worker computes the same one, so a
 * client reconnecting elsewhere with Last-Event-ID is told at once when it
 * missed something.
 *
 * The event's etag is "<id>-<md5 of what the environment evaluates>"
 * (lib/tm_sse_meta.h): a refetch that sends it back is answered once this
 * worker's snapshot has that version (refetch.c).
 *
 * Streams never wait: an event or heartbeat is written straight to the
 * socket, and a client whose send buffer cannot take it whole is dropped
 * (it reconnects and refetches). Streams are idle connections for nginx,
 * so a reload or graceful stop closes them. A stream ends, cleanly, when
 * its token expires: the client's reconnect is refused (401) and the
 * client evaluates again for a new URL.
 */

#include "ngx_http_togglemaster_module.h"

#include <ngx_md5.h>

#include "tm_sse_meta.h"
#include "tm_sse_token.h"


/* an event's text, framed as one chunk, fits this */
#define NGX_HTTP_TOGGLEMASTER_SSE_FRAME  512

/* stream URLs expire on a boundary of a quarter of the token lifetime, so
 * that bulk answers within it name the same URL (and carry the same ETag,
 * which covers the URL) and clients keep their stream */
#define NGX_HTTP_TOGGLEMASTER_SSE_STEPS  4


/* What a worker knows of each environment of the current snapshot. */
typedef struct {
    u_char                       md5[16];     /* of what it evaluates */
    int64_t                      id;          /* version it last changed at */
    time_t                       modified;
} ngx_http_togglemaster_sse_env_t;


typedef struct {
    ngx_queue_t                  queue;
    ngx_http_request_t          *r;
    ngx_event_t                  heartbeat;
    ngx_msec_t                   interval;
    time_t                       expiry;      /* the token's */
    ngx_str_t                    env;
    ngx_uint_t                   env_gen;     /* env_index's epart generation */
    ngx_uint_t                   env_index;
    int64_t                      last_id;     /* of the last event it has */
    unsigned                     broken:1;    /* dropped mid-write */
    unsigned                     ended:1;     /* the last chunk is sent */
} ngx_http_togglemaster_sse_stream_t;


static ngx_http_togglemaster_sse_env_t  ngx_http_togglemaster_sse_envs[
                                            NGX_HTTP_TOGGLEMASTER_MAX_ENVS];
static ngx_uint_t   ngx_http_togglemaster_sse_nenvs;
static ngx_queue_t  ngx_http_togglemaster_sse_streams;
static ngx_uint_t   ngx_http_togglemaster_sse_open;


static void
ngx_http_togglemaster_sse_count_open(void)
{
    if (ngx_http_togglemaster_shm
        && ngx_worker < NGX_HTTP_TOGGLEMASTER_MAX_WORKERS)
    {
        ngx_http_togglemaster_shm->workers[ngx_worker].sse_open =
            ngx_http_togglemaster_sse_open;
    }
}


/* Writes data whole to the client, or fails: a stream never waits on a
 * full send buffer. HTTP/1.1 answers are chunked (the header said so). */
static ngx_int_t
ngx_http_togglemaster_sse_write(ngx_http_togglemaster_sse_stream_t *s,
    u_char *data, size_t len)
{
    u_char             frame[NGX_HTTP_TOGGLEMASTER_SSE_FRAME + 32], *p;
    ssize_t            n;
    ngx_connection_t  *c;

    c = s->r->connection;

    if (s->broken || c->error || len > NGX_HTTP_TOGGLEMASTER_SSE_FRAME) {
        return NGX_ERROR;
    }

    p = frame;

    if (s->r->chunked) {
        p = ngx_sprintf(p, "%xz" CRLF, len);
    }

    p = ngx_cpymem(p, data, len);

    if (s->r->chunked) {
        *p++ = CR; *p++ = LF;
    }

    n = c->send(c, frame, p - frame);

    if (n == p - frame) {
        return NGX_OK;
    }

    /* a part went out, or none could: the stream is cut either way */
    s->broken = 1;

    if (n != NGX_ERROR && ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_togglemaster_shm->sse_dropped,
                                    1);
    }

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "togglemaster: event stream dropped: client not reading");

    return NGX_ERROR;
}


/* Called from a timer or a snapshot swap, not from the connection's own
 * handler: the request nginx posts to end it must be run here, or the
 * connection stays open until the client next sends something. */
static void
ngx_http_togglemaster_sse_drop(ngx_http_togglemaster_sse_stream_t *s)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r = s->r;

    c = r->connection;
    s->broken = 1;

    ngx_http_finalize_request(r, NGX_ERROR);
    ngx_http_run_posted_requests(c);
}


/* The heartbeat timer also ends the stream when its token expires: the
 * next heartbeat, or the expiry if sooner. */
static void
ngx_http_togglemaster_sse_arm(ngx_http_togglemaster_sse_stream_t *s)
{
    ngx_msec_t   left;
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    left = (tp->sec >= s->expiry) ? 1
           : (ngx_msec_t) (s->expiry - tp->sec) * 1000 - tp->msec;

    ngx_add_timer(&s->heartbeat, ngx_min(left, s->interval));
}


/* The token expired: the answer ends as any does (the last chunk through
 * nginx's filters), and the connection may serve the client's next
 * request. Its reconnect with this URL gets a 401, the web provider then
 * evaluates again and connects to the new URL. */
static void
ngx_http_togglemaster_sse_expire(ngx_http_togglemaster_sse_stream_t *s)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r = s->r;

    c = r->connection;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "togglemaster sse: token expired, ending the stream "
                   "of \"%V\"", &s->env);

    s->ended = 1;
    r->read_event_handler = ngx_http_block_reading;

    ngx_http_finalize_request(r, ngx_http_send_special(r, NGX_HTTP_LAST));
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_togglemaster_sse_heartbeat(ngx_event_t *ev)
{
    ngx_http_togglemaster_sse_stream_t  *s = ev->data;

    static u_char  beat[] = ":\n\n";

    if (ngx_time() >= s->expiry) {
        ngx_http_togglemaster_sse_expire(s);
        return;
    }

    if (ngx_http_togglemaster_sse_write(s, beat, sizeof(beat) - 1)
        != NGX_OK)
    {
        ngx_http_togglemaster_sse_drop(s);
        return;
    }

    ngx_http_togglemaster_sse_arm(s);
}


/* The pool of a stream's request goes: the stream leaves the worker's
 * list. In a graceful stop the last chunk ends the answer properly. */
static void
ngx_http_togglemaster_sse_cleanup(void *data)
{
    ngx_http_togglemaster_sse_stream_t  *s = data;

    static u_char  last[] = "0" CRLF CRLF;

    if (s->heartbeat.timer_set) {
        ngx_del_timer(&s->heartbeat);
    }

    if (ngx_exiting && s->r->chunked && !s->broken && !s->ended
        && !s->r->connection->error)
    {
        (void) s->r->connection->send(s->r->connection, last,
                                      sizeof(last) - 1);
    }

    ngx_queue_remove(&s->queue);
    ngx_http_togglemaster_sse_open--;
    ngx_http_togglemaster_sse_count_open();
}


/* The stream's environment in the current snapshot, or ENV_NONE. */
static ngx_uint_t
ngx_http_togglemaster_sse_env_index(ngx_http_togglemaster_sse_stream_t *s)
{
    ngx_http_togglemaster_snapshot_t  *snap = ngx_http_togglemaster_current;

    if (snap == NULL || snap->epart == NULL) {
        return NGX_HTTP_TOGGLEMASTER_ENV_NONE;
    }

    if (s->env_gen != snap->epart->generation) {
        s->env_index = ngx_http_togglemaster_env_index(snap, s->env.data,
                                                       s->env.len);
        s->env_gen = snap->epart->generation;
    }

    return s->env_index;
}


/* Sends the refetch event if the environment changed after the last one
 * the stream has: NGX_OK, or NGX_ERROR if the write failed (the caller
 * drops the stream). */
static ngx_int_t
ngx_http_togglemaster_sse_notify(ngx_http_togglemaster_sse_stream_t *s)
{
    u_char                           buf[NGX_HTTP_TOGGLEMASTER_SSE_FRAME];
    u_char                          *p;
    char                             etag[TM_SSE_ETAG_MAX + 1];
    size_t                           n;
    ngx_uint_t                       i;
    ngx_http_togglemaster_sse_env_t  *e;

    i = ngx_http_togglemaster_sse_env_index(s);

    if (i == NGX_HTTP_TOGGLEMASTER_ENV_NONE
        || i >= ngx_http_togglemaster_sse_nenvs)
    {
        return NGX_OK;
    }

    e = &ngx_http_togglemaster_sse_envs[i];

    if (e->id <= s->last_id) {
        return NGX_OK;
    }

    n = tm_sse_etag_make(etag, e->id, e->md5);

    p = ngx_sprintf(buf, "id: %L\nevent: message\n"
                    "data: {\"type\":\"refetchEvaluation\",\"etag\":\"%*s\","
                    "\"lastModified\":%T}\n\n", e->id, n, etag, e->modified);

    if (ngx_http_togglemaster_sse_write(s, buf, p - buf) != NGX_OK) {
        return NGX_ERROR;
    }

    s->last_id = e->id;

    if (ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_togglemaster_shm->sse_events,
                                    1);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, s->r->connection->log, 0,
                   "togglemaster sse: event %L for \"%V\"", e->id, &s->env);

    return NGX_OK;
}


/* What an environment evaluates: its flags (the part's digest, which a
 * change of one flag updates without hashing the others: snapshot.c) and
 * the shared segments. */
static void
ngx_http_togglemaster_sse_fingerprint(ngx_http_togglemaster_flags_t *fp,
    u_char *segments_md5, u_char *md5)
{
    ngx_md5_t  ctx;

    static u_char  none[16];

    ngx_md5_init(&ctx);
    ngx_md5_update(&ctx, segments_md5, 16);
    ngx_md5_update(&ctx, fp ? fp->digest : none, 16);
    ngx_md5_final(md5, &ctx);
}


static void
ngx_http_togglemaster_sse_segments_md5(ngx_http_togglemaster_segments_t *sp,
    u_char *md5)
{
    ngx_uint_t  i;
    ngx_md5_t   ctx;

    ngx_md5_init(&ctx);

    for (i = 0; sp && i < sp->nsegs; i++) {
        ngx_md5_update(&ctx, &sp->segs[i].name.len, sizeof(size_t));
        ngx_md5_update(&ctx, sp->segs[i].name.data, sp->segs[i].name.len);
        ngx_md5_update(&ctx, &sp->segs[i].json.len, sizeof(size_t));
        ngx_md5_update(&ctx, sp->segs[i].json.data, sp->segs[i].json.len);
    }

    ngx_md5_final(md5, &ctx);
}


/* Called once snap is current in place of old (either may be NULL),
 * before old is freed:
 * an environment whose parts are the same objects is unchanged; one with
 * new parts is compared by content, so a resync that rebuilt the same
 * flags sends nothing. Then the streams hear of what changed. */
void
ngx_http_togglemaster_sse_swapped(ngx_http_togglemaster_snapshot_t *old,
    ngx_http_togglemaster_snapshot_t *snap)
{
    u_char                              segs[16];
    ngx_uint_t                          i, j, same_envs, changed;
    ngx_queue_t                        *q, *next;
    ngx_http_togglemaster_sse_env_t     envs[NGX_HTTP_TOGGLEMASTER_MAX_ENVS];
    ngx_http_togglemaster_sse_env_t    *e, *prev;
    ngx_http_togglemaster_sse_stream_t *s;

    if (snap == NULL || snap->epart == NULL) {
        return;
    }

    if (old && old->epart == NULL) {
        old = NULL;
    }

    same_envs = old && old->epart == snap->epart;
    ngx_http_togglemaster_sse_segments_md5(snap->spart, segs);
    changed = 0;

    for (i = 0; i < snap->nenvs; i++) {
        e = &envs[i];

        j = same_envs ? i
            : ngx_http_togglemaster_env_index(old, snap->epart->names[i].data,
                                              snap->epart->names[i].len);
        prev = (j < ngx_http_togglemaster_sse_nenvs)
               ? &ngx_http_togglemaster_sse_envs[j] : NULL;

        if (prev && old->fparts[j] == snap->fparts[i]
            && old->spart == snap->spart)
        {
            *e = *prev;
            continue;
        }

        ngx_http_togglemaster_sse_fingerprint(snap->fparts[i], segs, e->md5);

        if (prev && ngx_memcmp(prev->md5, e->md5, 16) == 0) {
            *e = *prev;
            continue;
        }

        /* versions only grow; should one not, ids still must */
        e->id = (prev && snap->version <= prev->id) ? prev->id + 1
                                                    : snap->version;
        e->modified = ngx_time();
        changed = 1;
    }

    ngx_memcpy(ngx_http_togglemaster_sse_envs, envs,
               snap->nenvs * sizeof(ngx_http_togglemaster_sse_env_t));
    ngx_http_togglemaster_sse_nenvs = snap->nenvs;

    if (!changed || ngx_http_togglemaster_sse_open == 0) {
        return;
    }

    for (q = ngx_queue_head(&ngx_http_togglemaster_sse_streams);
         q != ngx_queue_sentinel(&ngx_http_togglemaster_sse_streams);
         q = next)
    {
        /* a stream dropped meanwhile leaves the list: step first */
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_http_togglemaster_sse_stream_t, queue);

        if (ngx_http_togglemaster_sse_notify(s) != NGX_OK) {
            ngx_http_togglemaster_sse_drop(s);
        }
    }
}


static ngx_int_t
ngx_http_togglemaster_sse_refuse(ngx_http_request_t *r, ngx_uint_t status,
    const char *msg)
{
    ngx_int_t  rc;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_togglemaster_send_error(r, status, msg);
}


/* The token of the request's "token" argument: NGX_OK with the
 * environment's name in env (request pool) and the token's expiry, else
 * the answer's message. */
static ngx_int_t
ngx_http_togglemaster_sse_token(ngx_http_request_t *r, ngx_str_t *env,
    time_t *expires, const char **msg)
{
    int                                 rc;
    size_t                              elen;
    int64_t                             expiry;
    ngx_str_t                           tok;
    const char                         *e;
    ngx_http_togglemaster_main_conf_t  *tmcf;

    tmcf = ngx_http_get_module_main_conf(r, ngx_http_togglemaster_module);

    if (ngx_http_arg(r, (u_char *) "token", 5, &tok) != NGX_OK
        || tok.len == 0)
    {
        *msg = "a stream token is required (the URL of a bulk evaluation's "
               "eventStreams)";
        return NGX_DECLINED;
    }

    rc = tm_sse_token_check((char *) tok.data, tok.len, tmcf->sse_secret.data,
                            tmcf->sse_secret.len, (int64_t) ngx_time(), &e,
                            &elen, &expiry, NULL, 0);

    switch (rc) {

    case TM_SSE_TOKEN_OK:
        env->data = (u_char *) e;
        env->len = elen;
        *expires = (time_t) expiry;
        return NGX_OK;

    case TM_SSE_TOKEN_EXPIRED:
        *msg = "stream token expired: evaluate the flags again for a new "
               "stream URL";
        return NGX_DECLINED;

    default:
        *msg = "invalid stream token";
        return NGX_DECLINED;
    }
}


/* The response header, sent now: later writes go straight to the socket,
 * so nothing may stay buffered in nginx. */
static ngx_int_t
ngx_http_togglemaster_sse_header(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    static ngx_str_t  no_cache = ngx_string("no-cache");
    static ngx_str_t  no = ngx_string("no");

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    ngx_str_set(&r->headers_out.content_type, "text/event-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_togglemaster_add_header(r, "Cache-Control", &no_cache)
        != NGX_OK
        /* proxies in front must not buffer the stream either */
        || ngx_http_togglemaster_add_header(r, "X-Accel-Buffering", &no)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_send_special(r, NGX_HTTP_FLUSH) == NGX_ERROR
        || r->out || r->connection->buffered)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* Last-Event-ID: the id of the last event the client had, or 0 (sends
 * the current state's event at once, as a reconnect after an unknown gap
 * must). */
static int64_t
ngx_http_togglemaster_sse_last_id(ngx_http_request_t *r)
{
    int64_t           id;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {
        if (i >= part->nelts) {
            if (part->next == NULL) {
                return -1;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Last-Event-ID") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Last-Event-ID",
                               h[i].key.len) == 0)
        {
            id = ngx_atoof(h[i].value.data, h[i].value.len);
            return id > 0 ? id : 0;
        }
    }
}


static ngx_int_t
ngx_http_togglemaster_sse_start(ngx_http_request_t *r, ngx_str_t *env,
    time_t expiry)
{
    int64_t                              last;
    ngx_uint_t                           i;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_togglemaster_loc_conf_t    *tmlcf;
    ngx_http_togglemaster_sse_stream_t  *s;

    tmlcf = ngx_http_get_module_loc_conf(r, ngx_http_togglemaster_module);

    s = ngx_pcalloc(r->pool, sizeof(ngx_http_togglemaster_sse_stream_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (s == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s->r = r;
    s->env = *env;
    s->interval = tmlcf->sse_heartbeat;
    s->expiry = expiry;
    s->env_index = NGX_HTTP_TOGGLEMASTER_ENV_NONE;
    s->heartbeat.handler = ngx_http_togglemaster_sse_heartbeat;
    s->heartbeat.data = s;
    s->heartbeat.log = r->connection->log;
    /* a graceful stop does not wait for the next heartbeat */
    s->heartbeat.cancelable = 1;

    ngx_queue_insert_tail(&ngx_http_togglemaster_sse_streams, &s->queue);
    ngx_http_togglemaster_sse_open++;
    ngx_http_togglemaster_sse_count_open();

    cln->handler = ngx_http_togglemaster_sse_cleanup;
    cln->data = s;

    if (ngx_http_togglemaster_sse_header(r) != NGX_OK) {
        return NGX_ERROR;
    }

    /* without Last-Event-ID the client has just evaluated: what is
     * current is what it has */
    last = ngx_http_togglemaster_sse_last_id(r);
    i = ngx_http_togglemaster_sse_env_index(s);

    if (last >= 0) {
        s->last_id = last;

    } else if (i != NGX_HTTP_TOGGLEMASTER_ENV_NONE
               && i < ngx_http_togglemaster_sse_nenvs)
    {
        s->last_id = ngx_http_togglemaster_sse_envs[i].id;
    }

    /* a reconnect that missed a change hears of it at once */
    if (ngx_http_togglemaster_sse_notify(s) != NGX_OK) {
        return NGX_ERROR;
    }

    /* nginx closes idle connections on reload and graceful stop; its
     * read handler then ends the request (c->close) */
    r->connection->idle = 1;
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;
    r->main->count++;

    ngx_http_togglemaster_sse_arm(s);

    return NGX_DONE;
}


ngx_int_t
ngx_http_togglemaster_sse_handler(ngx_http_request_t *r)
{
    time_t                             expiry;
    ngx_int_t                          rc;
    ngx_str_t                          env;
    const char                        *msg;
    ngx_table_elt_t                   *h;
    ngx_http_togglemaster_loc_conf_t  *tmlcf;

    tmlcf = ngx_http_get_module_loc_conf(r, ngx_http_togglemaster_module);

    /* EventSource from a page of another origin */
    rc = ngx_http_togglemaster_cors(r, tmlcf);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (r->method != NGX_HTTP_GET) {
        return ngx_http_togglemaster_sse_refuse(r, NGX_HTTP_NOT_ALLOWED,
                                                "use GET");
    }

    if (ngx_http_togglemaster_sse_token(r, &env, &expiry, &msg) != NGX_OK) {
        return ngx_http_togglemaster_sse_refuse(r, NGX_HTTP_UNAUTHORIZED, msg);
    }

    /* events are written to the socket as they are: HTTP/2 and 3 frame
     * theirs (bulk answers over them list no stream) */
    if (r->http_version > NGX_HTTP_VERSION_11) {
        return ngx_http_togglemaster_sse_refuse(r, NGX_HTTP_BAD_REQUEST,
                   "event streams are served over HTTP/1.x only: connect "
                   "with HTTP/1.1, or poll the bulk evaluation");
    }

    if (ngx_http_togglemaster_sse_open >= tmlcf->sse_max) {
        if (ngx_http_togglemaster_shm) {
            (void) ngx_atomic_fetch_add(
                       &ngx_http_togglemaster_shm->sse_refused, 1);
        }

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        ngx_str_set(&h->value, "5");

        return ngx_http_togglemaster_sse_refuse(r,
                   NGX_HTTP_SERVICE_UNAVAILABLE,
                   "too many event streams on this worker: retry later");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_togglemaster_sse_start(r, &env, expiry);
}


/* ,"eventStreams":[{"type":"sse","url":"...","inactivityDelaySec":N}] for
 * a bulk answer in environment env, or an empty string where the location
 * lists no stream, or the request came over HTTP/2 or 3: the stream would
 * be refused there (the handler), and without a stream listed the client
 * keeps polling instead of retrying a stream it cannot have. */
ngx_int_t
ngx_http_togglemaster_sse_streams_json(ngx_http_request_t *r,
    ngx_str_t *env, ngx_str_t *out)
{
    u_char                             *p;
    char                                tok[TM_SSE_TOKEN_MAX + 1];
    size_t                              n;
    time_t                              expiry, step;
    ngx_str_t                           url;
    ngx_http_togglemaster_loc_conf_t   *tmlcf;
    ngx_http_togglemaster_main_conf_t  *tmcf;

    tmlcf = ngx_http_get_module_loc_conf(r, ngx_http_togglemaster_module);
    tmcf = ngx_http_get_module_main_conf(r, ngx_http_togglemaster_module);

    out->len = 0;

    if (tmlcf->sse_url == NULL || r->http_version > NGX_HTTP_VERSION_11) {
        return NGX_OK;
    }

    if (ngx_http_complex_value(r, tmlcf->sse_url, &url) != NGX_OK) {
        return NGX_ERROR;
    }

    /* lives token_ttl at least, a quarter more at most */
    step = ngx_max(tmcf->sse_token_ttl / NGX_HTTP_TOGGLEMASTER_SSE_STEPS, 1);
    expiry = ngx_time() + tmcf->sse_token_ttl;
    expiry += step - expiry % step;

    n = tm_sse_token_make(tok, tmcf->sse_secret.data, tmcf->sse_secret.len,
                          (char *) env->data, env->len, (int64_t) expiry,
                          NULL, 0);
    if (n == 0) {
        return NGX_ERROR;
    }

    out->data = ngx_pnalloc(r->pool,
                    sizeof(",\"eventStreams\":[{\"type\":\"sse\",\"url\":"
                           ",\"inactivityDelaySec\":}]") - 1
                    + ngx_http_togglemaster_json_str_len(url.data, url.len)
                    + sizeof("?token=") - 1 + n + NGX_INT_T_LEN);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(out->data, ",\"eventStreams\":[{\"type\":\"sse\",\"url\":",
                   sizeof(",\"eventStreams\":[{\"type\":\"sse\",\"url\":") - 1);

    /* the URL and its token in one JSON string: the token's bytes need no
     * escape, the URL's are escaped as it is copied */
    p = ngx_http_togglemaster_json_str(p, url.data, url.len);
    p--;
    p = ngx_sprintf(p, "%stoken=%*s\"",
                    ngx_strlchr(url.data, url.data + url.len, '?') ? "&" : "?",
                    n, tok);

    p = ngx_sprintf(p, ",\"inactivityDelaySec\":%ui}]",
                    tmlcf->sse_inactivity);

    out->len = p - out->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_togglemaster_sse_env_change(ngx_uint_t i, int64_t *id,
    u_char **md5)
{
    if (i >= ngx_http_togglemaster_sse_nenvs) {
        return NGX_DECLINED;
    }

    *id = ngx_http_togglemaster_sse_envs[i].id;
    *md5 = ngx_http_togglemaster_sse_envs[i].md5;

    return NGX_OK;
}


void
ngx_http_togglemaster_sse_init(void)
{
    ngx_queue_init(&ngx_http_togglemaster_sse_streams);
    ngx_http_togglemaster_sse_open = 0;
    ngx_http_togglemaster_sse_nenvs = 0;
    ngx_http_togglemaster_sse_count_open();
}


u_char *
ngx_http_togglemaster_sse_metrics(u_char *p, u_char *last,
    ngx_uint_t workers)
{
    ngx_uint_t                     i;
    ngx_http_togglemaster_shm_t   *sh = ngx_http_togglemaster_shm;

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_sse_streams Event streams open, per worker.\n"
        "# TYPE togglemaster_sse_streams gauge\n");

    for (i = 0; i < workers; i++) {
        if (sh->workers[i].pid) {
            p = ngx_slprintf(p, last,
                             "togglemaster_sse_streams{worker=\"%ui\"} %uA\n",
                             i, sh->workers[i].sse_open);
        }
    }

    return ngx_slprintf(p, last,
        "# HELP togglemaster_sse_events_sent_total Refetch events written "
        "to streams.\n"
        "# TYPE togglemaster_sse_events_sent_total counter\n"
        "togglemaster_sse_events_sent_total %uA\n"
        "# HELP togglemaster_sse_clients_dropped_total Streams cut because "
        "the client did not take a write whole (send buffer full).\n"
        "# TYPE togglemaster_sse_clients_dropped_total counter\n"
        "togglemaster_sse_clients_dropped_total %uA\n"
        "# HELP togglemaster_sse_refused_total Streams refused at "
        "togglemaster_sse_max_connections.\n"
        "# TYPE togglemaster_sse_refused_total counter\n"
        "togglemaster_sse_refused_total %uA\n",
        sh->sse_events, sh->sse_dropped, sh->sse_refused);
}


/* togglemaster_sse_secret <secret> | env:<NAME>: at least 32 bytes; from
 * the environment, it stays out of the configuration file. */
char *
ngx_http_togglemaster_sse_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_togglemaster_main_conf_t *tmcf = conf;

    char       *v, name[256];
    ngx_str_t  *value;

    if (tmcf->sse_secret.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len > 4 && ngx_strncmp(value[1].data, "env:", 4) == 0) {
        if (value[1].len - 4 >= sizeof(name)) {
            return "names too long a variable";
        }

        ngx_memcpy(name, value[1].data + 4, value[1].len - 4);
        name[value[1].len - 4] = '\0';

        v = getenv(name);
        if (v == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "environment variable \"%s\" is not set",
                               name);
            return NGX_CONF_ERROR;
        }

        tmcf->sse_secret.len = ngx_strlen(v);
        tmcf->sse_secret.data = ngx_pnalloc(cf->pool, tmcf->sse_secret.len);
        if (tmcf->sse_secret.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(tmcf->sse_secret.data, v, tmcf->sse_secret.len);

    } else {
        tmcf->sse_secret = value[1];
    }

    if (tmcf->sse_secret.len < 32) {
        return "must be at least 32 bytes";
    }

    return NGX_CONF_OK;
}


char *
ngx_http_togglemaster_sse_conf(ngx_conf_t *cf,
    ngx_http_togglemaster_loc_conf_t *conf,
    ngx_http_togglemaster_loc_conf_t *prev)
{
    ngx_http_togglemaster_main_conf_t  *tmcf;

    /* togglemaster_sse itself is not inherited: it names one location */
    ngx_conf_init_value(conf->sse, 0);
    ngx_conf_merge_msec_value(conf->sse_heartbeat, prev->sse_heartbeat,
                              15000);
    ngx_conf_merge_uint_value(conf->sse_inactivity, prev->sse_inactivity,
                              120);
    ngx_conf_merge_uint_value(conf->sse_max, prev->sse_max, 10000);
    ngx_conf_merge_ptr_value(conf->sse_url, prev->sse_url, NULL);
    ngx_conf_merge_msec_value(conf->sse_refetch_wait, prev->sse_refetch_wait,
                              1000);

    /* the token is the stream's credential: an inherited
     * togglemaster_api_key would ask EventSource for a key it cannot send */
    if (conf->sse) {
        conf->api_key = 0;
    }

    tmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_togglemaster_module);

    if ((conf->sse || conf->sse_url) && tmcf->sse_secret.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "togglemaster_sse and togglemaster_sse_url need "
                           "togglemaster_sse_secret");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
