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
 * A stream costs what an idle keepalive connection costs, not a request:
 * once the response header is out, the request is logged and freed with
 * its pool and header buffers (as nginx's keepalive path does), and the
 * connection is left holding a small stream state in its own pool. Its
 * read handler only notices the client closing; its write event's timer is
 * the heartbeat.
 *
 * The event's etag is "<id>-<md5 of what the environment evaluates>"
 * (lib/tm_sse_meta.h): a refetch that sends it back is answered once this
 * worker's snapshot has that version (refetch.c).
 *
 * Streams never wait: an event or heartbeat is written straight to the
 * socket, and a client whose send buffer cannot take it whole is dropped
 * (it reconnects and refetches). An event is formatted once per
 * environment and change, and each stream gets it in one send, a batch of
 * streams per turn of the event loop. Streams are idle connections for
 * nginx, so a reload or graceful stop closes them. A stream ends, cleanly
 * (the last chunk, then the connection closes), when its token expires:
 * the client's reconnect is refused (401) and the client evaluates again
 * for a new URL.
 */

#include "ngx_http_togglemaster_module.h"

#include <ngx_md5.h>

#include "tm_sse_meta.h"
#include "tm_sse_token.h"


/* an event framed as one chunk (size line, text, CRLF) fits this: its
 * text is at most ~180 bytes (three 64-bit numbers and an md5 in hex) */
#define NGX_HTTP_TOGGLEMASTER_SSE_CHUNK  224

/* what a stream reads of its client at a time, on the stack: a client has
 * nothing to say on a stream, so this only has to notice it closing */
#define NGX_HTTP_TOGGLEMASTER_SSE_READ   256

/* streams a fan-out writes before the worker goes back to its other
 * connections: ~5-10 ms of sends on the 2-core test machine */
#define NGX_HTTP_TOGGLEMASTER_SSE_BATCH  512

/* stream URLs expire on a boundary of a quarter of the token lifetime, so
 * that bulk answers within it name the same URL (and carry the same ETag,
 * which covers the URL) and clients keep their stream */
#define NGX_HTTP_TOGGLEMASTER_SSE_STEPS  4


/* What a worker knows of each environment of the current snapshot, with
 * the event its streams get, framed once. */
typedef struct {
    u_char                       md5[16];     /* of what it evaluates */
    int64_t                      id;          /* version it last changed at */
    time_t                       modified;
    size_t                       len;         /* of chunk */
    size_t                       head;        /* chunk's size line */
    u_char                       chunk[NGX_HTTP_TOGGLEMASTER_SSE_CHUNK];
} ngx_http_togglemaster_sse_env_t;


/* A stream, in its connection's pool (c->data once the request is gone);
 * the environment's name follows it. */
typedef struct {
    ngx_queue_t                  queue;
    ngx_connection_t            *connection;
    ngx_msec_t                   interval;
    time_t                       expiry;      /* the token's */
    ngx_str_t                    env;
    ngx_uint_t                   env_gen;     /* env_index's epart generation */
    ngx_uint_t                   env_index;
    int64_t                      last_id;     /* of the last event it has */
    unsigned                     chunked:1;
    unsigned                     broken:1;    /* dropped mid-write */
    unsigned                     released:1;  /* its request is gone */
    unsigned                     ended:1;     /* the last chunk is sent */
} ngx_http_togglemaster_sse_stream_t;


static ngx_http_togglemaster_sse_env_t  ngx_http_togglemaster_sse_envs[
                                            NGX_HTTP_TOGGLEMASTER_MAX_ENVS];
static ngx_uint_t   ngx_http_togglemaster_sse_nenvs;
static ngx_queue_t  ngx_http_togglemaster_sse_streams;
/* streams counted against togglemaster_sse_max_connections: listed ones
 * and those whose request is not released yet */
static ngx_uint_t   ngx_http_togglemaster_sse_open;

/* A fan-out under way: the next stream it visits (NULL: none under way),
 * the swap it started at, the events it wrote; its event continues it on
 * the next turn of the event loop. */
static ngx_queue_t     *ngx_http_togglemaster_sse_cursor;
static struct timespec  ngx_http_togglemaster_sse_t0;
static ngx_uint_t       ngx_http_togglemaster_sse_sent;
static ngx_event_t      ngx_http_togglemaster_sse_fanout_ev;


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


static void
ngx_http_togglemaster_sse_count_events(ngx_uint_t n)
{
    if (n && ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_togglemaster_shm->sse_events,
                                    n);
    }
}


/* Writes a chunk whole to the client (HTTP/1.0 gets the text alone: the
 * chunk without its size line and final CRLF), or fails: a stream never
 * waits on a full send buffer. */
static ngx_int_t
ngx_http_togglemaster_sse_write(ngx_http_togglemaster_sse_stream_t *s,
    u_char *chunk, size_t len, size_t head)
{
    ssize_t            n;
    ngx_connection_t  *c;

    c = s->connection;

    if (s->broken || c->error) {
        return NGX_ERROR;
    }

    if (!s->chunked) {
        chunk += head;
        len -= head + 2;
    }

    n = c->send(c, chunk, len);

    if (n == (ssize_t) len) {
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


/* The stream leaves the worker's list and its connection closes. In a
 * graceful stop the last chunk ends the answer properly. */
static void
ngx_http_togglemaster_sse_close(ngx_http_togglemaster_sse_stream_t *s)
{
    ngx_connection_t  *c = s->connection;

    static u_char  last[] = "0" CRLF CRLF;

    if (ngx_exiting && s->chunked && !s->broken && !s->ended && !c->error) {
        (void) c->send(c, last, sizeof(last) - 1);
    }

    /* a fan-out under way steps past it */
    if (ngx_http_togglemaster_sse_cursor == &s->queue) {
        ngx_http_togglemaster_sse_cursor = ngx_queue_next(&s->queue);
    }

    ngx_queue_remove(&s->queue);
    ngx_http_togglemaster_sse_open--;
    ngx_http_togglemaster_sse_count_open();

    ngx_http_close_connection(c);
}


/* The heartbeat timer (the connection's write event's) also ends the
 * stream when its token expires: the next heartbeat, or the expiry if
 * sooner. */
static void
ngx_http_togglemaster_sse_arm(ngx_http_togglemaster_sse_stream_t *s)
{
    ngx_msec_t   left;
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    left = (tp->sec >= s->expiry) ? 1
           : (ngx_msec_t) (s->expiry - tp->sec) * 1000 - tp->msec;

    ngx_add_timer(s->connection->write, ngx_min(left, s->interval));
}


/* The token expired: the answer ends with its last chunk and the
 * connection closes (the request that could have kept it alive is gone).
 * The client's reconnect with this URL gets a 401; the web provider then
 * evaluates again and connects to the new URL. */
static void
ngx_http_togglemaster_sse_expire(ngx_http_togglemaster_sse_stream_t *s)
{
    ngx_connection_t  *c = s->connection;

    static u_char  last[] = "0" CRLF CRLF;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "togglemaster sse: token expired, ending the stream "
                   "of \"%V\"", &s->env);

    if (s->chunked && !s->broken && !c->error) {
        (void) c->send(c, last, sizeof(last) - 1);
    }

    s->ended = 1;
    ngx_http_togglemaster_sse_close(s);
}


/* The heartbeat is the timer of the connection's write event; the socket
 * becoming writable again means nothing to a stream. */
static void
ngx_http_togglemaster_sse_heartbeat(ngx_event_t *wev)
{
    ngx_connection_t                    *c = wev->data;
    ngx_http_togglemaster_sse_stream_t  *s = c->data;

    static u_char  beat[] = "3" CRLF ":\n\n" CRLF;

    if (!wev->timedout) {
        return;
    }

    wev->timedout = 0;

    if (ngx_time() >= s->expiry) {
        ngx_http_togglemaster_sse_expire(s);
        return;
    }

    if (ngx_http_togglemaster_sse_write(s, beat, sizeof(beat) - 1, 3)
        != NGX_OK)
    {
        ngx_http_togglemaster_sse_close(s);
        return;
    }

    ngx_http_togglemaster_sse_arm(s);
}


/* The client closing its end, or nginx closing idle connections on reload
 * and graceful stop (c->close). Whatever a client sends is dropped. */
static void
ngx_http_togglemaster_sse_read(ngx_event_t *rev)
{
    u_char                               buf[NGX_HTTP_TOGGLEMASTER_SSE_READ];
    ssize_t                              n;
    ngx_connection_t                    *c = rev->data;
    ngx_http_togglemaster_sse_stream_t  *s = c->data;

    if (c->close) {
        ngx_http_togglemaster_sse_close(s);
        return;
    }

    while (rev->ready) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == 0 || n == NGX_ERROR) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                           "togglemaster sse: client closed the stream");
            ngx_http_togglemaster_sse_close(s);
            return;
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_togglemaster_sse_close(s);
    }
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
 * the stream has: NGX_OK if it did, NGX_DECLINED if there was none to
 * send, NGX_ERROR if the write failed (the caller closes the stream). */
static ngx_int_t
ngx_http_togglemaster_sse_notify(ngx_http_togglemaster_sse_stream_t *s)
{
    ngx_uint_t                        i;
    ngx_http_togglemaster_sse_env_t  *e;

    i = ngx_http_togglemaster_sse_env_index(s);

    if (i == NGX_HTTP_TOGGLEMASTER_ENV_NONE
        || i >= ngx_http_togglemaster_sse_nenvs)
    {
        return NGX_DECLINED;
    }

    e = &ngx_http_togglemaster_sse_envs[i];

    if (e->id <= s->last_id) {
        return NGX_DECLINED;
    }

    if (ngx_http_togglemaster_sse_write(s, e->chunk, e->len, e->head)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    s->last_id = e->id;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, s->connection->log, 0,
                   "togglemaster sse: event %L for \"%V\"", e->id, &s->env);

    return NGX_OK;
}


/* The event of an environment's change, framed as a chunk, once. */
static void
ngx_http_togglemaster_sse_format(ngx_http_togglemaster_sse_env_t *e)
{
    u_char  text[NGX_HTTP_TOGGLEMASTER_SSE_CHUNK - 8], *p, *last;
    char    etag[TM_SSE_ETAG_MAX + 1];
    size_t  n;

    last = text + sizeof(text);
    n = tm_sse_etag_make(etag, e->id, e->md5);

    p = ngx_slprintf(text, last, "id: %L\nevent: message\n"
                     "data: {\"type\":\"refetchEvaluation\",\"etag\":\"%*s\","
                     "\"lastModified\":%T}\n\n", e->id, n, etag, e->modified);

    /* a size line of 4 bytes at most and CRLF fit around the text */
    e->head = ngx_sprintf(e->chunk, "%xz" CRLF, (size_t) (p - text))
              - e->chunk;
    e->len = ngx_cpymem(e->chunk + e->head, text, p - text) - e->chunk;
    e->chunk[e->len++] = CR;
    e->chunk[e->len++] = LF;
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


/* microseconds since from (CLOCK_MONOTONIC) */
static int64_t
ngx_http_togglemaster_sse_usec(struct timespec *from)
{
    struct timespec  now;

    if (clock_gettime(CLOCK_MONOTONIC, &now) == -1) {
        return 0;
    }

    return (int64_t) (now.tv_sec - from->tv_sec) * 1000000
           + (now.tv_nsec - from->tv_nsec) / 1000;
}


/* Every stream listed gets its environment's event if it lacks it: one
 * send of the chunk formatted at the swap, nothing allocated. A batch of
 * streams per turn of the event loop, so that requests on the worker's
 * other connections wait one batch, not the whole fan-out. Records the
 * time from the swap to the last write. */
static void
ngx_http_togglemaster_sse_fanout(ngx_event_t *ev)
{
    int64_t                              usec;
    ngx_int_t                            rc;
    ngx_uint_t                           n, sent;
    ngx_queue_t                         *q, *end;
    ngx_http_togglemaster_sse_stream_t  *s;

    end = ngx_queue_sentinel(&ngx_http_togglemaster_sse_streams);
    sent = 0;

    for (n = 0;
         ngx_http_togglemaster_sse_cursor != end
         && n < NGX_HTTP_TOGGLEMASTER_SSE_BATCH;
         n++)
    {
        /* step first: a stream whose write fails leaves the list */
        q = ngx_http_togglemaster_sse_cursor;
        ngx_http_togglemaster_sse_cursor = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_http_togglemaster_sse_stream_t, queue);

        rc = ngx_http_togglemaster_sse_notify(s);

        if (rc == NGX_OK) {
            ngx_http_togglemaster_sse_sent++;
            sent++;

        } else if (rc == NGX_ERROR) {
            ngx_http_togglemaster_sse_close(s);
        }
    }

    ngx_http_togglemaster_sse_count_events(sent);

    if (ngx_http_togglemaster_sse_cursor != end) {
        /* after the next wait for events, not in this turn */
        ngx_post_event(&ngx_http_togglemaster_sse_fanout_ev,
                       &ngx_posted_next_events);
        return;
    }

    ngx_http_togglemaster_sse_cursor = NULL;
    usec = ngx_http_togglemaster_sse_usec(&ngx_http_togglemaster_sse_t0);

    if (ngx_http_togglemaster_shm
        && ngx_worker < NGX_HTTP_TOGGLEMASTER_MAX_WORKERS)
    {
        ngx_http_togglemaster_shm->workers[ngx_worker].sse_fanout_usec = usec;
        ngx_http_togglemaster_shm->workers[ngx_worker].sse_fanout_events =
            ngx_http_togglemaster_sse_sent;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "togglemaster sse: %ui events sent in %L us after the "
                   "swap", ngx_http_togglemaster_sse_sent, usec);
}


/* Called once snap is current in place of old (either may be NULL),
 * before old is freed:
 * an environment whose parts are the same objects is unchanged; one with
 * new parts is compared by content, so a resync that rebuilt the same
 * flags sends nothing. A changed one gets its event formatted; then the
 * streams hear of what changed. */
void
ngx_http_togglemaster_sse_swapped(ngx_http_togglemaster_snapshot_t *old,
    ngx_http_togglemaster_snapshot_t *snap)
{
    u_char                              segs[16];
    ngx_uint_t                          i, j, same_envs, changed;
    struct timespec                     t0;
    ngx_http_togglemaster_sse_env_t     envs[NGX_HTTP_TOGGLEMASTER_MAX_ENVS];
    ngx_http_togglemaster_sse_env_t    *e, *prev;

    if (snap == NULL || snap->epart == NULL) {
        return;
    }

    if (clock_gettime(CLOCK_MONOTONIC, &t0) == -1) {
        ngx_memzero(&t0, sizeof(struct timespec));
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
        ngx_http_togglemaster_sse_format(e);
        changed = 1;
    }

    ngx_memcpy(ngx_http_togglemaster_sse_envs, envs,
               snap->nenvs * sizeof(ngx_http_togglemaster_sse_env_t));
    ngx_http_togglemaster_sse_nenvs = snap->nenvs;

    /* the list is there once sse_init ran; no stream counts before */
    if (!changed || ngx_http_togglemaster_sse_open == 0
        || ngx_queue_empty(&ngx_http_togglemaster_sse_streams))
    {
        return;
    }

    /* from the first stream again, should one be under way: those it
     * visited need this change too; the others get one event, this one */
    ngx_http_togglemaster_sse_cursor =
        ngx_queue_head(&ngx_http_togglemaster_sse_streams);
    ngx_http_togglemaster_sse_t0 = t0;
    ngx_http_togglemaster_sse_sent = 0;

    if (ngx_http_togglemaster_sse_fanout_ev.posted) {
        ngx_delete_posted_event(&ngx_http_togglemaster_sse_fanout_ev);
    }

    ngx_http_togglemaster_sse_fanout(&ngx_http_togglemaster_sse_fanout_ev);
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


/* A stream whose request ends before it was released (its connection
 * goes too) stops counting against the cap. */
static void
ngx_http_togglemaster_sse_abandon(void *data)
{
    ngx_http_togglemaster_sse_stream_t  *s = data;

    if (!s->released) {
        ngx_http_togglemaster_sse_open--;
        ngx_http_togglemaster_sse_count_open();
    }
}


/* What the request held in the connection's pool and nothing else frees
 * before the connection closes: the client header buffer, large header
 * buffers, the TLS buffer. Their nginx-internal chains stay. */
static void
ngx_http_togglemaster_sse_shrink(ngx_connection_t *c,
    ngx_http_connection_t *hc)
{
    ngx_chain_t  *cl;

    if (c->buffer) {
        (void) ngx_pfree(c->pool, c->buffer->start);
        c->buffer = NULL;
    }

    for (cl = hc->busy; cl; cl = cl->next) {
        (void) ngx_pfree(c->pool, cl->buf->start);
    }

    for (cl = hc->free; cl; cl = cl->next) {
        (void) ngx_pfree(c->pool, cl->buf->start);
    }

    hc->busy = NULL;
    hc->nbusy = 0;
    hc->free = NULL;

#if (NGX_HTTP_SSL)
    if (c->ssl) {
        ngx_ssl_free_buffer(c);
    }
#endif
}


/* The write event posted by sse_start, once the content phase is over:
 * the request is logged (200 and its header's bytes) and freed with its
 * pool, and the connection becomes the stream's (c->data). nginx's request
 * handler, which called this, then sees c->destroyed and leaves the
 * connection alone. */
static void
ngx_http_togglemaster_sse_release(ngx_http_request_t *r)
{
    ngx_flag_t                           nodelay;
    ngx_connection_t                    *c;
    ngx_http_connection_t               *hc;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_togglemaster_ctx_t         *ctx;
    ngx_http_togglemaster_sse_stream_t  *s;

    c = r->connection;
    hc = r->http_connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_togglemaster_module);
    s = ctx->sse;
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    nodelay = clcf->tcp_nodelay;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "togglemaster sse: releasing the request");

    s->released = 1;
    ngx_http_free_request(r, 0);

    c->data = s;
    c->log->action = "sending events";
    c->read->handler = ngx_http_togglemaster_sse_read;
    c->write->handler = ngx_http_togglemaster_sse_heartbeat;
    /* a graceful stop does not wait for the next heartbeat */
    c->write->cancelable = 1;
    /* nginx closes idle connections on reload and graceful stop */
    c->idle = 1;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    ngx_http_togglemaster_sse_shrink(c, hc);

    ngx_queue_insert_tail(&ngx_http_togglemaster_sse_streams, &s->queue);

    /* a request that began before a graceful stop ends as the others
     * did: nginx closed idle connections already */
    if (ngx_exiting
        /* events are small and must not wait for an ACK (Nagle) */
        || (nodelay && ngx_tcp_nodelay(c) != NGX_OK)
        || ngx_handle_read_event(c->read, 0) != NGX_OK)
    {
        ngx_http_togglemaster_sse_close(s);
        return;
    }

    /* a reconnect that missed a change hears of it at once, and so does
     * a stream that missed a swap while it was not listed yet */
    switch (ngx_http_togglemaster_sse_notify(s)) {

    case NGX_ERROR:
        ngx_http_togglemaster_sse_close(s);
        return;

    case NGX_OK:
        ngx_http_togglemaster_sse_count_events(1);
        break;

    default:
        break;
    }

    ngx_http_togglemaster_sse_arm(s);

    /* the client may have closed already: its edge is gone */
    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }
}


/* Sends the header and has the request released once the content phase
 * is over (sse_release): the stream then holds no request. Its state
 * lives in the connection's pool. */
static ngx_int_t
ngx_http_togglemaster_sse_start(ngx_http_request_t *r, ngx_str_t *env,
    time_t expiry)
{
    int64_t                              last;
    ngx_uint_t                           i;
    ngx_connection_t                    *c;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_togglemaster_ctx_t         *ctx;
    ngx_http_togglemaster_loc_conf_t    *tmlcf;
    ngx_http_togglemaster_sse_stream_t  *s;

    c = r->connection;

    /* the connection is handed over: only the main request owns it */
    if (r != r->main) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "togglemaster: an event stream cannot be a "
                      "subrequest");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    tmlcf = ngx_http_get_module_loc_conf(r, ngx_http_togglemaster_module);

    ctx = ngx_http_togglemaster_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s = ngx_pcalloc(c->pool,
                    sizeof(ngx_http_togglemaster_sse_stream_t) + env->len);
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (s == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s->connection = c;
    s->env.data = (u_char *) (s + 1);
    s->env.len = env->len;
    ngx_memcpy(s->env.data, env->data, env->len);
    s->interval = tmlcf->sse_heartbeat;
    s->expiry = expiry;
    s->env_index = NGX_HTTP_TOGGLEMASTER_ENV_NONE;
    ngx_queue_init(&s->queue);
    ctx->sse = s;

    ngx_http_togglemaster_sse_open++;
    ngx_http_togglemaster_sse_count_open();

    cln->handler = ngx_http_togglemaster_sse_abandon;
    cln->data = s;

    if (ngx_http_togglemaster_sse_header(r) != NGX_OK) {
        return NGX_ERROR;
    }

    s->chunked = r->chunked;

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

    /* the request cannot be freed under the content phase that runs this:
     * it is, from the write event posted for this turn of the event loop.
     * Until then nothing else reads from the client. */
    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_togglemaster_sse_release;
    ngx_post_event(c->write, &ngx_posted_events);
    r->main->count++;

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
    ngx_http_togglemaster_sse_cursor = NULL;
    ngx_memzero(&ngx_http_togglemaster_sse_fanout_ev, sizeof(ngx_event_t));
    ngx_http_togglemaster_sse_fanout_ev.handler =
        ngx_http_togglemaster_sse_fanout;
    ngx_http_togglemaster_sse_fanout_ev.log = ngx_cycle->log;
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

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_sse_fanout_seconds The last change's fan-out "
        "in a worker: from the snapshot swap to its last stream's write.\n"
        "# TYPE togglemaster_sse_fanout_seconds gauge\n");

    for (i = 0; i < workers; i++) {
        if (sh->workers[i].pid) {
            p = ngx_slprintf(p, last,
                    "togglemaster_sse_fanout_seconds{worker=\"%ui\"} "
                    "%uA.%06uA\n", i, sh->workers[i].sse_fanout_usec / 1000000,
                    sh->workers[i].sse_fanout_usec % 1000000);
        }
    }

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_sse_fanout_events Events the last fan-out in "
        "a worker wrote.\n"
        "# TYPE togglemaster_sse_fanout_events gauge\n");

    for (i = 0; i < workers; i++) {
        if (sh->workers[i].pid) {
            p = ngx_slprintf(p, last,
                             "togglemaster_sse_fanout_events{worker=\"%ui\"} "
                             "%uA\n", i, sh->workers[i].sse_fanout_events);
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
