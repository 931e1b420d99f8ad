/*
 * Per-worker Redis sync. Two connections: one SUBSCRIBEd to tm:changes, one
 * for commands. After the subscription is confirmed (so no change can slip
 * between load and subscribe) the command connection loads everything in
 * one MULTI/EXEC, which gives a consistent version + hashes. A message
 * reloads the hash it names (the other parts of the snapshot are shared);
 * a periodic GET tm:version that disagrees with the snapshot reloads all.
 * Loads never overlap: changes during a load queue one more.
 *
 * Any error or timeout drops both connections and retries with exponential
 * backoff and jitter. Meanwhile the current snapshot keeps serving.
 */

#include "ngx_http_togglemaster_module.h"
#include "ngx_http_togglemaster_redis.h"

#include <jansson.h>


#define NGX_HTTP_TOGGLEMASTER_DOWN        0
#define NGX_HTTP_TOGGLEMASTER_CONNECTING  1
#define NGX_HTTP_TOGGLEMASTER_SYNCED      2

#define NGX_HTTP_TOGGLEMASTER_BACKOFF_MIN 100
#define NGX_HTTP_TOGGLEMASTER_FILE_DELAY  1000

#define NGX_HTTP_TOGGLEMASTER_ALL         0x7


typedef struct {
    ngx_http_togglemaster_main_conf_t  *conf;
    ngx_log_t                          *log;

    redisAsyncContext                  *cmd;
    redisAsyncContext                  *sub;

    ngx_event_t                         op_timer;
    ngx_event_t                         retry_timer;
    ngx_event_t                         check_timer;
    ngx_event_t                         file_timer;

    ngx_msec_t                          backoff;
    ngx_uint_t                          state;
    int64_t                             written;     /* file version */

    ngx_uint_t                          loading;    /* kinds in flight */
    ngx_uint_t                          reload;     /* kinds queued */

    unsigned                            checking:1;
    unsigned                            exiting:1;
    unsigned                            file_written:1;
    unsigned                            file_dirty:1;
    unsigned                            need_all:1;  /* Redis was empty */
} ngx_http_togglemaster_sync_t;


static ngx_http_togglemaster_sync_t  ngx_http_togglemaster_sync;


static void ngx_http_togglemaster_sync_start(void);
static void ngx_http_togglemaster_sync_fail(const char *why);


static void
ngx_http_togglemaster_sync_set_state(ngx_uint_t state)
{
    ngx_http_togglemaster_sync.state = state;
    ngx_http_togglemaster_worker_state(state);
}


static void
ngx_http_togglemaster_sync_drop(redisAsyncContext **pac)
{
    redisAsyncContext  *ac;

    ac = *pac;
    *pac = NULL;    /* its late callbacks see a stranger and do nothing */

    if (ac) {
        redisAsyncFree(ac);
    }
}


static void
ngx_http_togglemaster_sync_fail(const char *why)
{
    ngx_msec_t                     delay;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (s->exiting) {
        return;
    }

    if (s->state != NGX_HTTP_TOGGLEMASTER_DOWN || s->cmd || s->sub) {
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "togglemaster: redis %V: %s; serving snapshot version "
                      "%L until it is back", &s->conf->redis, why,
                      ngx_http_togglemaster_current
                      ? ngx_http_togglemaster_current->version : -1);
    }

    ngx_http_togglemaster_sync_drop(&s->cmd);
    ngx_http_togglemaster_sync_drop(&s->sub);

    s->loading = 0;
    s->reload = 0;
    s->checking = 0;

    if (s->op_timer.timer_set) {
        ngx_del_timer(&s->op_timer);
    }

    ngx_http_togglemaster_sync_set_state(NGX_HTTP_TOGGLEMASTER_DOWN);

    if (ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_togglemaster_shm->sync_errors, 1);
    }

    /* full jitter on the upper half: workers do not reconnect in step */
    delay = s->backoff / 2 + (ngx_msec_t) ngx_random() % (s->backoff / 2 + 1);

    s->backoff = ngx_min(s->backoff * 2, s->conf->backoff_max);

    if (!s->retry_timer.timer_set) {
        ngx_add_timer(&s->retry_timer, delay);
    }
}


static void
ngx_http_togglemaster_sync_op_timeout(ngx_event_t *ev)
{
    ngx_http_togglemaster_sync_fail("timed out");
}


static void
ngx_http_togglemaster_sync_retry(ngx_event_t *ev)
{
    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_togglemaster_shm->reconnects, 1);
    }

    ngx_http_togglemaster_sync_start();
}


static int64_t
ngx_http_togglemaster_sync_int(redisReply *r)
{
    if (r == NULL) {
        return 0;
    }

    if (r->type == REDIS_REPLY_INTEGER) {
        return r->integer;
    }

    if (r->type == REDIS_REPLY_STRING) {
        return strtoll(r->str, NULL, 10);
    }

    return 0;
}


static ngx_int_t
ngx_http_togglemaster_sync_kv(ngx_pool_t *pool, redisReply *r,
    ngx_http_togglemaster_kv_t *kv)
{
    size_t  i;

    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2) {
        return NGX_ERROR;
    }

    kv->present = 1;
    kv->n = 0;
    kv->fields = ngx_palloc(pool, (r->elements / 2 + 1) * sizeof(ngx_str_t));
    kv->values = ngx_palloc(pool, (r->elements / 2 + 1) * sizeof(ngx_str_t));
    if (kv->fields == NULL || kv->values == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i + 1 < r->elements; i += 2) {
        if (r->element[i]->type != REDIS_REPLY_STRING
            || r->element[i + 1]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        kv->fields[kv->n].data = (u_char *) r->element[i]->str;
        kv->fields[kv->n].len = r->element[i]->len;
        kv->values[kv->n].data = (u_char *) r->element[i + 1]->str;
        kv->values[kv->n].len = r->element[i + 1]->len;
        kv->n++;
    }

    return NGX_OK;
}


static void ngx_http_togglemaster_sync_load(ngx_uint_t kinds);


static void
ngx_http_togglemaster_sync_write_file(ngx_event_t *ev)
{
    ngx_msec_t                     t0;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (!s->file_dirty || ngx_http_togglemaster_current == NULL) {
        return;
    }

    s->file_dirty = 0;

    if (s->file_written && s->written == ngx_http_togglemaster_current->version)
    {
        return;
    }

    ngx_time_update();
    t0 = ngx_current_msec;

    if (ngx_http_togglemaster_file_write(&s->conf->snapshot_file,
                                         ngx_http_togglemaster_current,
                                         s->log)
        == NGX_OK)
    {
        s->file_written = 1;
        s->written = ngx_http_togglemaster_current->version;

        ngx_time_update();
        ngx_log_error(NGX_LOG_INFO, s->log, 0,
                      "togglemaster: snapshot file written in %M ms",
                      ngx_current_msec - t0);
    }
}


/* The kinds listed in tm:ready ("flag", "rule", "key"), as a bit mask. */
static ngx_uint_t
ngx_http_togglemaster_sync_ready(redisReply *r)
{
    size_t       i;
    ngx_uint_t   mask;
    redisReply  *m;

    mask = 0;

    if (r->type != REDIS_REPLY_ARRAY) {
        return 0;
    }

    for (i = 0; i < r->elements; i++) {
        m = r->element[i];

        if (m->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (m->len == 4 && ngx_strncmp(m->str, "flag", 4) == 0) {
            mask |= 1 << NGX_HTTP_TOGGLEMASTER_FLAGS;

        } else if (m->len == 4 && ngx_strncmp(m->str, "rule", 4) == 0) {
            mask |= 1 << NGX_HTTP_TOGGLEMASTER_RULES;

        } else if (m->len == 3 && ngx_strncmp(m->str, "key", 3) == 0) {
            mask |= 1 << NGX_HTTP_TOGGLEMASTER_KEYS;
        }
    }

    return mask;
}


static void
ngx_http_togglemaster_sync_loaded(redisAsyncContext *ac, void *reply,
    void *data)
{
    redisReply                        *r = reply;
    ngx_msec_t                         t0;
    ngx_uint_t                         k, e, kinds, n, ready, skipped;
    ngx_pool_t                        *pool;
    ngx_http_togglemaster_kv_t         kv[NGX_HTTP_TOGGLEMASTER_NKINDS];
    ngx_http_togglemaster_sync_t      *s = &ngx_http_togglemaster_sync;
    ngx_http_togglemaster_snapshot_t  *snap;

    if (ac != s->cmd) {
        return;
    }

    kinds = s->loading;
    s->loading = 0;

    if (s->op_timer.timer_set) {
        ngx_del_timer(&s->op_timer);
    }

    if (r == NULL) {
        ngx_http_togglemaster_sync_fail("connection lost during load");
        return;
    }

    /* version, ready kinds, then one reply per hash loaded */
    for (n = 2, k = 0; k < NGX_HTTP_TOGGLEMASTER_NKINDS; k++) {
        n += (kinds >> k) & 1;
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        ngx_http_togglemaster_sync_fail(r->type == REDIS_REPLY_ERROR
                                        ? r->str : "unexpected load reply");
        return;
    }

    /* No tm:version: Redis is empty or was flushed, and the daemons have
     * not reconciled it yet. An empty load would turn every flag off;
     * keep serving what we have until the version reappears. */
    if (r->element[0]->type == REDIS_REPLY_NIL
        && ngx_http_togglemaster_current
        && (ngx_http_togglemaster_current->nflags
            || ngx_http_togglemaster_current->nkeys))
    {
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "togglemaster: redis %V has no tm:version (empty or "
                      "flushed); keeping snapshot version %L",
                      &s->conf->redis, ngx_http_togglemaster_current->version);

        /* whatever refills Redis, the next load must take all of it */
        s->need_all = 1;
        ngx_http_togglemaster_sync_set_state(NGX_HTTP_TOGGLEMASTER_SYNCED);

        if (s->reload) {
            kinds = s->reload;
            s->reload = 0;
            ngx_http_togglemaster_sync_load(kinds);
        }

        return;
    }

    /* A hash whose kind the daemons have not reconciled into this Redis
     * yet (tm:ready) may be partial: a restarted Redis refills as writes
     * and reconciliations arrive. Keep serving our copy of that kind. */
    ready = ngx_http_togglemaster_sync_ready(r->element[1]);
    skipped = 0;

    if (ngx_http_togglemaster_current
        && (ngx_http_togglemaster_current->nflags
            || ngx_http_togglemaster_current->nkeys))
    {
        skipped = kinds & ~ready;
    }

    if (skipped) {
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "togglemaster: redis %V not reconciled yet for%s%s%s; "
                      "keeping those parts of snapshot version %L",
                      &s->conf->redis, (skipped & 1) ? " flags" : "",
                      (skipped & 2) ? " rules" : "", (skipped & 4) ? " keys" : "",
                      ngx_http_togglemaster_current->version);
        s->need_all = 1;
    }

    pool = ngx_create_pool(4096, s->log);
    if (pool == NULL) {
        ngx_http_togglemaster_sync_fail("out of memory");
        return;
    }

    ngx_time_update();
    t0 = ngx_current_msec;

    for (e = 2, k = 0; k < NGX_HTTP_TOGGLEMASTER_NKINDS; k++) {
        kv[k].present = 0;

        if (!(kinds & (1 << k))) {
            continue;
        }

        if (skipped & (1 << k)) {
            e++;
            continue;
        }

        if (ngx_http_togglemaster_sync_kv(pool, r->element[e++], &kv[k])
            != NGX_OK)
        {
            ngx_destroy_pool(pool);
            ngx_http_togglemaster_sync_fail("a tm: key has the wrong type");
            return;
        }
    }

    snap = ngx_http_togglemaster_snapshot_build(
               ngx_http_togglemaster_sync_int(r->element[0]), kv,
               ngx_http_togglemaster_current, s->log);

    ngx_destroy_pool(pool);

    if (snap == NULL) {
        ngx_http_togglemaster_sync_fail("snapshot build failed");
        return;
    }

    ngx_time_update();

    ngx_log_error(NGX_LOG_INFO, s->log, 0,
                  "togglemaster: snapshot version %L built in %M ms "
                  "(reloaded %s%s%s), %ui flags, %ui keys",
                  snap->version, ngx_current_msec - t0,
                  (kinds & 1) ? "flags " : "", (kinds & 2) ? "rules " : "",
                  (kinds & 4) ? "keys" : "", snap->nflags, snap->nkeys);

    ngx_http_togglemaster_snapshot_swap(snap);

    if (kinds == NGX_HTTP_TOGGLEMASTER_ALL && !skipped) {
        s->need_all = 0;
    }

    s->backoff = NGX_HTTP_TOGGLEMASTER_BACKOFF_MIN;
    ngx_http_togglemaster_sync_set_state(NGX_HTTP_TOGGLEMASTER_SYNCED);

    if (ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_togglemaster_shm->syncs, 1);
    }

    /* one worker writes the file, at most once a second: bursts of
     * changes cost one write */
    if (s->conf->snapshot_file.len && ngx_worker == 0) {
        s->file_dirty = 1;

        if (!s->file_timer.timer_set) {
            ngx_add_timer(&s->file_timer, s->file_written
                                          ? NGX_HTTP_TOGGLEMASTER_FILE_DELAY
                                          : 1);
        }
    }

    if (s->reload) {
        kinds = s->reload;
        s->reload = 0;
        ngx_http_togglemaster_sync_load(kinds);
    }
}


static void
ngx_http_togglemaster_sync_load(ngx_uint_t kinds)
{
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (s->cmd == NULL) {
        return;
    }

    if (s->need_all) {
        kinds = NGX_HTTP_TOGGLEMASTER_ALL;
    }

    if (s->loading || s->checking) {
        s->reload |= kinds;
        return;
    }

    s->loading = kinds;

    if (redisAsyncCommand(s->cmd, NULL, NULL, "MULTI") != REDIS_OK
        || redisAsyncCommand(s->cmd, NULL, NULL, "GET tm:version") != REDIS_OK
        || redisAsyncCommand(s->cmd, NULL, NULL, "SMEMBERS tm:ready")
           != REDIS_OK
        || ((kinds & (1 << NGX_HTTP_TOGGLEMASTER_FLAGS))
            && redisAsyncCommand(s->cmd, NULL, NULL, "HGETALL tm:flags")
               != REDIS_OK)
        || ((kinds & (1 << NGX_HTTP_TOGGLEMASTER_RULES))
            && redisAsyncCommand(s->cmd, NULL, NULL, "HGETALL tm:rules")
               != REDIS_OK)
        || ((kinds & (1 << NGX_HTTP_TOGGLEMASTER_KEYS))
            && redisAsyncCommand(s->cmd, NULL, NULL, "HGETALL tm:keys")
               != REDIS_OK)
        || redisAsyncCommand(s->cmd, ngx_http_togglemaster_sync_loaded, NULL,
                             "EXEC")
           != REDIS_OK)
    {
        ngx_http_togglemaster_sync_fail("cannot send the load");
        return;
    }

    ngx_add_timer(&s->op_timer, s->conf->timeout);
}


static void
ngx_http_togglemaster_sync_versioned(redisAsyncContext *ac, void *reply,
    void *data)
{
    redisReply                    *r = reply;
    ngx_uint_t                     kinds;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (ac != s->cmd) {
        return;
    }

    s->checking = 0;

    if (s->op_timer.timer_set) {
        ngx_del_timer(&s->op_timer);
    }

    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        ngx_http_togglemaster_sync_fail("version check failed");
        return;
    }

    if (ngx_http_togglemaster_current == NULL
        || ngx_http_togglemaster_sync_int(r)
           != ngx_http_togglemaster_current->version)
    {
        s->reload = NGX_HTTP_TOGGLEMASTER_ALL;
    }

    if (s->reload) {
        kinds = s->reload;
        s->reload = 0;
        ngx_http_togglemaster_sync_load(kinds);

    } else {
        /* the snapshot is confirmed current */
        ngx_http_togglemaster_sync_set_state(NGX_HTTP_TOGGLEMASTER_SYNCED);
    }
}


static void
ngx_http_togglemaster_sync_check(ngx_event_t *ev)
{
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(ev, s->conf->check_interval);

    if (s->state != NGX_HTTP_TOGGLEMASTER_SYNCED || s->cmd == NULL
        || s->loading || s->checking)
    {
        return;
    }

    if (redisAsyncCommand(s->cmd, ngx_http_togglemaster_sync_versioned, NULL,
                          "GET tm:version")
        != REDIS_OK)
    {
        ngx_http_togglemaster_sync_fail("cannot send the version check");
        return;
    }

    s->checking = 1;
    ngx_add_timer(&s->op_timer, s->conf->timeout);
}


/* {"version":v,"kind":"flag|rule|key","op":...}: reload the hash it names.
 * No echo suppression by version: a load of one hash may already carry the
 * version of a change to another hash whose message is still on its way. */
static void
ngx_http_togglemaster_sync_message(redisReply *payload)
{
    json_t      *doc;
    const char  *kind;
    ngx_uint_t   kinds;

    kinds = NGX_HTTP_TOGGLEMASTER_ALL;

    if (payload->type == REDIS_REPLY_STRING) {
        doc = json_loadb(payload->str, payload->len, 0, NULL);
        kind = json_string_value(json_object_get(doc, "kind"));

        if (kind && ngx_strcmp(kind, "flag") == 0) {
            kinds = 1 << NGX_HTTP_TOGGLEMASTER_FLAGS;

        } else if (kind && ngx_strcmp(kind, "rule") == 0) {
            kinds = 1 << NGX_HTTP_TOGGLEMASTER_RULES;

        } else if (kind && ngx_strcmp(kind, "key") == 0) {
            kinds = 1 << NGX_HTTP_TOGGLEMASTER_KEYS;
        }

        json_decref(doc);
    }

    if (ngx_http_togglemaster_current == NULL) {
        kinds = NGX_HTTP_TOGGLEMASTER_ALL;
    }

    ngx_http_togglemaster_sync_load(kinds);
}


static void
ngx_http_togglemaster_sync_subscribed(redisAsyncContext *ac, void *reply,
    void *data)
{
    redisReply                    *r = reply;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (ac != s->sub) {
        return;
    }

    if (r == NULL) {
        ngx_http_togglemaster_sync_fail("subscription lost");
        return;
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3
        || r->element[0]->type != REDIS_REPLY_STRING)
    {
        ngx_http_togglemaster_sync_fail("unexpected subscription reply");
        return;
    }

    if (ngx_strcmp(r->element[0]->str, "subscribe") == 0) {
        if (s->op_timer.timer_set) {
            ngx_del_timer(&s->op_timer);
        }

        ngx_http_togglemaster_sync_load(NGX_HTTP_TOGGLEMASTER_ALL);
        return;
    }

    if (ngx_strcmp(r->element[0]->str, "message") == 0) {
        ngx_http_togglemaster_sync_message(r->element[2]);
    }
}


static void
ngx_http_togglemaster_sync_connected(const redisAsyncContext *ac, int status)
{
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (status == REDIS_OK) {
        return;
    }

    /* hiredis frees this context itself after we return */
    if (ac == s->cmd) {
        s->cmd = NULL;

    } else if (ac == s->sub) {
        s->sub = NULL;

    } else {
        return;
    }

    ngx_http_togglemaster_sync_fail(ac->errstr ? ac->errstr
                                               : "connect failed");
}


static void
ngx_http_togglemaster_sync_disconnected(const redisAsyncContext *ac,
    int status)
{
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (ac == s->cmd) {
        s->cmd = NULL;

    } else if (ac == s->sub) {
        s->sub = NULL;

    } else {
        return;
    }

    ngx_http_togglemaster_sync_fail(ac->errstr && ac->err ? ac->errstr
                                                          : "disconnected");
}


static redisAsyncContext *
ngx_http_togglemaster_sync_connect(void)
{
    redisAsyncContext             *ac;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    ac = ngx_http_togglemaster_redis_connect(s->conf, s->log);
    if (ac == NULL) {
        return NULL;
    }

    redisAsyncSetConnectCallback(ac, ngx_http_togglemaster_sync_connected);
    redisAsyncSetDisconnectCallback(ac,
                                    ngx_http_togglemaster_sync_disconnected);

    return ac;
}


static void
ngx_http_togglemaster_sync_start(void)
{
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    ngx_http_togglemaster_sync_set_state(NGX_HTTP_TOGGLEMASTER_CONNECTING);

    s->sub = ngx_http_togglemaster_sync_connect();
    if (s->sub == NULL) {
        ngx_http_togglemaster_sync_fail("cannot connect");
        return;
    }

    s->cmd = ngx_http_togglemaster_sync_connect();
    if (s->cmd == NULL) {
        ngx_http_togglemaster_sync_fail("cannot connect");
        return;
    }

    if (redisAsyncCommand(s->sub, ngx_http_togglemaster_sync_subscribed, NULL,
                          "SUBSCRIBE tm:changes")
        != REDIS_OK)
    {
        ngx_http_togglemaster_sync_fail("cannot subscribe");
        return;
    }

    /* covers connect + subscribe */
    ngx_add_timer(&s->op_timer, s->conf->timeout);
}


static void
ngx_http_togglemaster_sync_timer(ngx_event_t *ev, ngx_event_handler_pt h,
    ngx_log_t *log)
{
    ev->handler = h;
    ev->log = log;
    ev->data = &ngx_http_togglemaster_sync;
    ev->cancelable = 1;
}


ngx_int_t
ngx_http_togglemaster_sync_init(ngx_cycle_t *cycle,
    ngx_http_togglemaster_main_conf_t *tmcf)
{
    ngx_http_togglemaster_sync_t      *s = &ngx_http_togglemaster_sync;
    ngx_http_togglemaster_snapshot_t  *snap;

    ngx_memzero(s, sizeof(ngx_http_togglemaster_sync_t));
    s->conf = tmcf;
    s->log = cycle->log;
    s->backoff = NGX_HTTP_TOGGLEMASTER_BACKOFF_MIN;

    ngx_http_togglemaster_sync_timer(&s->op_timer,
                                     ngx_http_togglemaster_sync_op_timeout,
                                     cycle->log);
    ngx_http_togglemaster_sync_timer(&s->retry_timer,
                                     ngx_http_togglemaster_sync_retry,
                                     cycle->log);
    ngx_http_togglemaster_sync_timer(&s->check_timer,
                                     ngx_http_togglemaster_sync_check,
                                     cycle->log);
    ngx_http_togglemaster_sync_timer(&s->file_timer,
                                     ngx_http_togglemaster_sync_write_file,
                                     cycle->log);

    /* serve the last known state at once; Redis may be down */
    if (tmcf->snapshot_file.len && ngx_http_togglemaster_current == NULL) {
        snap = ngx_http_togglemaster_file_load(&tmcf->snapshot_file,
                                               cycle->log);
        if (snap) {
            ngx_http_togglemaster_snapshot_swap(snap);
            s->file_written = 1;
            s->written = snap->version;
        }
    }

    if (tmcf->redis.len == 0) {
        return NGX_OK;
    }

    ngx_http_togglemaster_sync_start();

    ngx_add_timer(&s->check_timer, tmcf->check_interval);

    return NGX_OK;
}


void
ngx_http_togglemaster_sync_exit(ngx_cycle_t *cycle)
{
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    s->exiting = 1;

    if (s->op_timer.timer_set) {
        ngx_del_timer(&s->op_timer);
    }

    if (s->retry_timer.timer_set) {
        ngx_del_timer(&s->retry_timer);
    }

    if (s->check_timer.timer_set) {
        ngx_del_timer(&s->check_timer);
    }

    if (s->file_timer.timer_set) {
        ngx_del_timer(&s->file_timer);
    }

    /* a pending write still happens: the next start needs it */
    ngx_http_togglemaster_sync_write_file(&s->file_timer);

    ngx_http_togglemaster_sync_drop(&s->cmd);
    ngx_http_togglemaster_sync_drop(&s->sub);

    ngx_http_togglemaster_snapshot_swap(NULL);
}
