/*
 * Per-worker Redis sync. Two connections: one SUBSCRIBEd to tm:changes, one
 * for commands. After the subscription is confirmed (so no change can slip
 * between load and subscribe) the command connection loads everything. A
 * message reloads the hash it names (the other parts of the snapshot are
 * shared); a periodic GET tm:version that disagrees with the snapshot
 * reloads all (unless a message explains it: below). Loads never overlap:
 * changes during a load queue one more.
 *
 * A load never stalls the worker: MULTI/GET tm:version/SMEMBERS tm:ready/
 * HLEN.../EXEC, then each hash by HSCAN in chunks, one chunk per callback
 * (so per event-loop turn), fed into a snapshot builder; then GET
 * tm:version again, and the finished snapshot replaces the current one at
 * once. A change while the hashes are scanned may or may not be seen by
 * the scan; its message arrives meanwhile and queues a reload of its hash
 * after this load, and the snapshot keeps the version read at the start,
 * so the periodic check would also catch up. A load is never restarted:
 * constant writes could starve it.
 *
 * A check that disagrees proves nothing while the message of a change is
 * on its way: the daemons bump tm:version and publish in one script, so
 * the GET may have read the version of a change whose message comes with
 * the reply or just after it. So a disagreement waits up to CHECK_GRACE for
 * a message: one that came during the check or comes meanwhile is applied
 * (adopting the version it reads, as any applied change does) and the
 * next check decides; only without one is everything reloaded. Otherwise
 * a change now and then waited behind a full load.
 *
 * Any error, timeout or failed connection (redis.c says why: connect, TLS,
 * AUTH, SELECT, I/O) drops both connections, logs the reason and retries
 * with exponential backoff and jitter. Meanwhile the current snapshot keeps
 * serving. With "togglemaster_redis ... cluster", a MOVED instead redoes
 * both connections at once on the node it names (sync_moved).
 *
 * The command connection also carries the edge's reports of keys' last use
 * (HSET tm:keys:used, replies ignored): see sync_key_used at the end.
 */

#include "ngx_http_togglemaster_module.h"
#include "ngx_http_togglemaster_redis.h"
#include "tm_hash.h"
#include "tm_records.h"
#include "tm_redis_keys.h"


#define NGX_HTTP_TOGGLEMASTER_DOWN        0
#define NGX_HTTP_TOGGLEMASTER_CONNECTING  1
#define NGX_HTTP_TOGGLEMASTER_SYNCED      2

#define NGX_HTTP_TOGGLEMASTER_BACKOFF_MIN 100
#define NGX_HTTP_TOGGLEMASTER_CHECK_GRACE 20    /* ms: see the top */
#define NGX_HTTP_TOGGLEMASTER_FILE_DELAY  1000

#define NGX_HTTP_TOGGLEMASTER_ALL                                            \
    (((ngx_uint_t) 1 << NGX_HTTP_TOGGLEMASTER_NKINDS) - 1)

#define NGX_HTTP_TOGGLEMASTER_CURSOR_LEN  24    /* an unsigned 64-bit */
#define NGX_HTTP_TOGGLEMASTER_DELTAS      64    /* pending single changes */
#define NGX_HTTP_TOGGLEMASTER_DELTA_NAME  128   /* flag names, key hashes */

/* Keys' last use (tm:keys:used): a key is reported at most once a minute
 * by each worker, remembered in a fixed table of SETS x WAYS entries (a
 * set chosen by the key's hash), so the bookkeeping never grows. */
#define NGX_HTTP_TOGGLEMASTER_USE_PERIOD  60    /* seconds */
#define NGX_HTTP_TOGGLEMASTER_USE_SETS    256
#define NGX_HTTP_TOGGLEMASTER_USE_WAYS    4


/* What a kind is called (tm:ready, messages), its hash (lib/tm_redis_keys.h:
 * hash is its name in the configured mode, set by sync_init), and how many
 * fields an HSCAN asks for: a chunk must cost the worker at most a few ms. */
typedef struct {
    ngx_str_t                           name;
    tm_redis_key                        key;
    ngx_uint_t                          count;
    const char                         *hash;
} ngx_http_togglemaster_kind_t;


static ngx_http_togglemaster_kind_t  ngx_http_togglemaster_kinds[] = {
    { ngx_string("flag"), TM_RKEY_FLAGS, 500, NULL },        /* FLAGS */
    { ngx_string("rule"), TM_RKEY_RULES, 250, NULL },        /* RULES */
    { ngx_string("key"), TM_RKEY_KEYS, 1000, NULL },         /* KEYS */
    { ngx_string("segment"), TM_RKEY_SEGMENTS, 250, NULL },  /* SEGMENTS */
    { ngx_string("env"), TM_RKEY_ENVS, 0, NULL },     /* ENVS: HGETALL, few */
    { ngx_string("key2"), TM_RKEY_KEYS_V2, 1000, NULL },     /* KEYS2 */
    /* one hash per non-default environment: tm:flags@<env>; in tm:ready
     * as flag@<env>, in messages as "flag" with "environment" */
    { ngx_null_string, TM_RKEY_FLAGS_AT, 500, NULL },        /* EFLAGS */
    { ngx_null_string, TM_RKEY_RULES_AT, 250, NULL },        /* ERULES */
};

/* A key's name in the configured mode (tm:version or {tm}:version...). */
#define ngx_http_togglemaster_sync_key(k)                                    \
    tm_redis_key_name(k, (int) ngx_http_togglemaster_sync.conf->redis_cluster)

/* Redirects followed in a row before a cluster counts as failing. */
#define NGX_HTTP_TOGGLEMASTER_HOPS        5

#define ngx_http_togglemaster_bit(k)  ((ngx_uint_t) 1 << (k))
#define NGX_HTTP_TOGGLEMASTER_EKINDS                                         \
    (ngx_http_togglemaster_bit(NGX_HTTP_TOGGLEMASTER_EFLAGS)                 \
     | ngx_http_togglemaster_bit(NGX_HTTP_TOGGLEMASTER_ERULES))
/* kinds whose hash is sized by an HLEN at the start of a load */
#define NGX_HTTP_TOGGLEMASTER_HLEN_KINDS                                     \
    (NGX_HTTP_TOGGLEMASTER_ALL & ~NGX_HTTP_TOGGLEMASTER_EKINDS              \
     & ~ngx_http_togglemaster_bit(NGX_HTTP_TOGGLEMASTER_ENVS))


/* One object changed ({"op":"upsert|delete","kind","name"}): one HGET. */
typedef struct {
    ngx_uint_t                          kind;
    size_t                              len;
    u_char                              name[NGX_HTTP_TOGGLEMASTER_DELTA_NAME];
    ngx_str_t                           env;     /* EFLAGS, ERULES */
    u_char                              env_data[TM_NAME_MAX];
} ngx_http_togglemaster_delta_t;


typedef struct {
    ngx_http_togglemaster_main_conf_t  *conf;
    ngx_log_t                          *log;

    ngx_http_togglemaster_redis_t      *cmd;
    ngx_http_togglemaster_redis_t      *sub;

    /* the cluster node that owns the slot of {tm}, as the last MOVED said
     * (both connections go there); hops: redirects since the last load */
    ngx_http_togglemaster_redis_node_t  node;
    ngx_uint_t                          hops;
    unsigned                            node_known:1;

    ngx_event_t                         op_timer;
    ngx_event_t                         retry_timer;
    ngx_event_t                         check_timer;
    ngx_event_t                         file_timer;
    ngx_event_t                         grace_timer;

    ngx_msec_t                          backoff;
    ngx_uint_t                          state;
    int64_t                             written;     /* file version */

    ngx_uint_t                          loading;    /* kinds in flight */
    ngx_uint_t                          reload;     /* kinds queued */

    /* the load in progress */
    ngx_http_togglemaster_builder_t    *builder;
    ngx_uint_t                          scan;       /* kinds left to scan */
    ngx_uint_t                          skipped;    /* not in tm:ready */
    int64_t                             version;    /* when it began */
    ngx_msec_t                          started;
    ngx_msec_t                          longest;    /* longest chunk */
    ngx_uint_t                          chunks;
    u_char                              cursor[NGX_HTTP_TOGGLEMASTER_CURSOR_LEN];

    /* the non-default environments tm:envs named when the load began:
     * their tm:flags@ and tm:rules@ hashes are scanned in turn */
    ngx_str_t                           envs[NGX_HTTP_TOGGLEMASTER_MAX_ENVS];
    u_char                              env_data[NGX_HTTP_TOGGLEMASTER_MAX_ENVS]
                                                [TM_NAME_MAX];
    ngx_uint_t                          nenvs;
    ngx_uint_t                          scan_env;

    /* single changes: the first `applying` are in flight, the rest queued */
    ngx_http_togglemaster_delta_t       deltas[NGX_HTTP_TOGGLEMASTER_DELTAS];
    ngx_uint_t                          ndeltas;
    ngx_uint_t                          applying;

    unsigned                            checking:1;
    unsigned                            heard:1;    /* a message, checking */
    unsigned                            exiting:1;
    unsigned                            file_written:1;
    unsigned                            file_dirty:1;
    unsigned                            need_all:1;  /* Redis was empty */
} ngx_http_togglemaster_sync_t;


static ngx_http_togglemaster_sync_t  ngx_http_togglemaster_sync;


typedef struct {
    u_char                              bin[32];    /* the key's SHA-256 */
    time_t                              sent;       /* 0: free */
} ngx_http_togglemaster_use_t;

static ngx_http_togglemaster_use_t
    ngx_http_togglemaster_uses[NGX_HTTP_TOGGLEMASTER_USE_SETS]
                              [NGX_HTTP_TOGGLEMASTER_USE_WAYS];


static void ngx_http_togglemaster_sync_start(void);
static void ngx_http_togglemaster_sync_fail(const char *why);
static ngx_int_t ngx_http_togglemaster_sync_feed(ngx_uint_t kind,
    ngx_str_t *env, redisReply *a);


static void
ngx_http_togglemaster_sync_set_state(ngx_uint_t state)
{
    ngx_http_togglemaster_sync.state = state;
    ngx_http_togglemaster_worker_state(state);
}


static void
ngx_http_togglemaster_sync_drop(ngx_http_togglemaster_redis_t **prc)
{
    ngx_http_togglemaster_redis_t  *rc;

    rc = *prc;
    *prc = NULL;

    if (rc) {
        ngx_http_togglemaster_redis_close(rc);
    }
}


/* Both connections go, and whatever was in flight with them. */
static void
ngx_http_togglemaster_sync_down(void)
{
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    ngx_http_togglemaster_sync_drop(&s->cmd);
    ngx_http_togglemaster_sync_drop(&s->sub);

    s->loading = 0;
    s->reload = 0;
    s->checking = 0;
    s->heard = 0;
    s->ndeltas = 0;     /* the reconnect loads everything */

    if (s->grace_timer.timer_set) {
        ngx_del_timer(&s->grace_timer);
    }
    s->applying = 0;

    ngx_http_togglemaster_builder_abort(s->builder);
    s->builder = NULL;

    if (s->op_timer.timer_set) {
        ngx_del_timer(&s->op_timer);
    }

    ngx_http_togglemaster_sync_set_state(NGX_HTTP_TOGGLEMASTER_DOWN);
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

    /* the next attempt asks the configured node who owns the slot now
     * (after a failover, the one we knew may be gone) */
    s->node_known = 0;
    s->hops = 0;

    ngx_http_togglemaster_sync_down();

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


static void ngx_http_togglemaster_sync_load(ngx_uint_t kinds);
static ngx_int_t ngx_http_togglemaster_sync_multi(void);


static void
ngx_http_togglemaster_sync_file_saved(int64_t version, ngx_int_t rc)
{
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (rc == NGX_OK) {
        s->file_written = 1;
        s->written = version;
    }

    /* a newer snapshot went live meanwhile */
    if (s->file_dirty && !s->exiting && !s->file_timer.timer_set) {
        ngx_add_timer(&s->file_timer, NGX_HTTP_TOGGLEMASTER_FILE_DELAY);
    }
}


/* Saves the current snapshot unless the file has it already; a save still
 * running keeps the file dirty and its end schedules the next one. */
static void
ngx_http_togglemaster_sync_write_file(ngx_event_t *ev)
{
    ngx_int_t                      rc;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (!s->file_dirty || ngx_http_togglemaster_current == NULL) {
        return;
    }

    if (s->file_written && s->written == ngx_http_togglemaster_current->version)
    {
        s->file_dirty = 0;
        return;
    }

    if (s->exiting) {
        /* nginx's thread pools are gone by now: write here */
        s->file_dirty = 0;
        (void) ngx_http_togglemaster_file_write(&s->conf->snapshot_file,
                                                ngx_http_togglemaster_current,
                                                s->log);
        return;
    }

    rc = ngx_http_togglemaster_file_save(s->conf,
                                         ngx_http_togglemaster_current,
                                         s->log,
                                         ngx_http_togglemaster_sync_file_saved);
    if (rc != NGX_BUSY) {
        s->file_dirty = 0;
    }
}


/* The kind called name ("flag", "rule", "key"), or -1. */
static ngx_int_t
ngx_http_togglemaster_sync_kind(const char *name, size_t len)
{
    ngx_uint_t                     k;
    ngx_http_togglemaster_kind_t  *kd;

    for (k = 0; k < NGX_HTTP_TOGGLEMASTER_NKINDS; k++) {
        kd = &ngx_http_togglemaster_kinds[k];

        if (kd->name.len && kd->name.len == len
            && ngx_strncmp(kd->name.data, name, len) == 0)
        {
            return (ngx_int_t) k;
        }
    }

    return -1;
}


/* The kinds listed in tm:ready, as a bit mask. */
static ngx_uint_t
ngx_http_togglemaster_sync_ready(redisReply *r)
{
    size_t       i;
    ngx_int_t    k;
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

        k = ngx_http_togglemaster_sync_kind(m->str, m->len);

        if (k >= 0) {
            mask |= (ngx_uint_t) 1 << k;
        }
    }

    return mask;
}


/* 1 if tm:ready lists <prefix><env> ("flag@staging"). */
static ngx_uint_t
ngx_http_togglemaster_sync_ready_env(redisReply *r, const char *prefix,
    ngx_str_t *env)
{
    size_t       i, plen;
    redisReply  *m;

    plen = ngx_strlen(prefix);

    for (i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        m = r->element[i];

        if (m->type == REDIS_REPLY_STRING && m->len == plen + env->len
            && ngx_strncmp(m->str, prefix, plen) == 0
            && ngx_strncmp(m->str + plen, env->data, env->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* The kinds reconciled into this Redis: the listed ones, and the
 * environments' flags and rules once every environment's are. */
static ngx_uint_t
ngx_http_togglemaster_sync_ready_all(redisReply *r)
{
    ngx_uint_t                     i, ready, eflags, erules;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    ready = ngx_http_togglemaster_sync_ready(r) & ~NGX_HTTP_TOGGLEMASTER_EKINDS;
    eflags = 1;
    erules = 1;

    for (i = 0; i < s->nenvs; i++) {
        eflags &= ngx_http_togglemaster_sync_ready_env(r, "flag@", &s->envs[i]);
        erules &= ngx_http_togglemaster_sync_ready_env(r, "rule@", &s->envs[i]);
    }

    if (eflags) {
        ready |= ngx_http_togglemaster_bit(NGX_HTTP_TOGGLEMASTER_EFLAGS);
    }

    if (erules) {
        ready |= ngx_http_togglemaster_bit(NGX_HTTP_TOGGLEMASTER_ERULES);
    }

    return ready;
}


/* HGETALL tm:envs: the non-default environments into s->envs. */
static void
ngx_http_togglemaster_sync_envs(redisReply *r)
{
    int                            def;
    size_t                         i;
    redisReply                    *f, *v;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    s->nenvs = 0;
    s->scan_env = 0;

    for (i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        f = r->element[i];
        v = r->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING
            || s->nenvs == NGX_HTTP_TOGGLEMASTER_MAX_ENVS - 1)
        {
            continue;
        }

        /* malformed ones are logged when the builder meets them */
        def = tm_env_record_parse(f->str, f->len, v->str, v->len);
        if (def != 0) {
            continue;
        }

        ngx_memcpy(s->env_data[s->nenvs], f->str, f->len);
        s->envs[s->nenvs].data = s->env_data[s->nenvs];
        s->envs[s->nenvs].len = f->len;
        s->nenvs++;
    }
}


/* 1 if the current snapshot has something of this kind to keep while
 * Redis lacks it: the original kinds as before; an environment or a
 * scoped key for the new ones (an edge upgraded before the daemons, whose
 * Redis never has them, must not reload everything on every change). */
static ngx_uint_t
ngx_http_togglemaster_sync_holds(ngx_uint_t k)
{
    ngx_http_togglemaster_snapshot_t  *cur = ngx_http_togglemaster_current;

    if (cur == NULL) {
        return 0;
    }

    switch (k) {

    case NGX_HTTP_TOGGLEMASTER_ENVS:
    case NGX_HTTP_TOGGLEMASTER_EFLAGS:
    case NGX_HTTP_TOGGLEMASTER_ERULES:
        return cur->nenvs > 1;

    case NGX_HTTP_TOGGLEMASTER_KEYS2:
        return cur->kpart->nv2 > 0;
    }

    return cur->nflags || cur->nkeys;
}


static void ngx_http_togglemaster_sync_apply(void);


/* After a load or a check: what was queued meanwhile. Returns 0 if idle. */
static ngx_uint_t
ngx_http_togglemaster_sync_next(void)
{
    ngx_uint_t                     kinds;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    kinds = s->reload;
    s->reload = 0;

    if (kinds) {
        ngx_http_togglemaster_sync_load(kinds);
        return 1;
    }

    if (s->ndeltas) {
        ngx_http_togglemaster_sync_apply();
        return 1;
    }

    return 0;
}


/* A new snapshot went live. */
static void
ngx_http_togglemaster_sync_swapped(void)
{
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    s->backoff = NGX_HTTP_TOGGLEMASTER_BACKOFF_MIN;
    s->hops = 0;
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
}


static void ngx_http_togglemaster_sync_scan(void);


/* the lowest kind in a non-empty mask */
static ngx_uint_t
ngx_http_togglemaster_sync_first(ngx_uint_t kinds)
{
    ngx_uint_t  k;

    for (k = 0; !(kinds & ((ngx_uint_t) 1 << k)); k++) { /* void */ }

    return k;
}


/*
 * The kinds of a load to skip: a hash whose kind the daemons have not
 * reconciled into this Redis yet (tm:ready) may be partial (a restarted
 * Redis refills as writes and reconciliations arrive), so we keep serving
 * our copy of that kind. Needs s->envs of this load (the environments'
 * hashes are ready when every environment's is).
 */
static ngx_uint_t
ngx_http_togglemaster_sync_skipped(ngx_uint_t kinds, redisReply *members)
{
    ngx_uint_t                     k, ready, skipped;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    ready = ngx_http_togglemaster_sync_ready_all(members);
    skipped = 0;

    for (k = 0; k < NGX_HTTP_TOGGLEMASTER_NKINDS; k++) {
        if ((kinds & ~ready & ngx_http_togglemaster_bit(k))
            && ngx_http_togglemaster_sync_holds(k))
        {
            skipped |= ngx_http_togglemaster_bit(k);
        }
    }

    if (skipped) {
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "togglemaster: redis %V not reconciled yet for%s%s%s"
                      "%s%s%s; keeping those parts of snapshot version %L",
                      &s->conf->redis, (skipped & 1) ? " flags" : "",
                      (skipped & 2) ? " rules" : "", (skipped & 4) ? " keys" : "",
                      (skipped & 0x10) ? " environments" : "",
                      (skipped & 0x20) ? " scoped keys" : "",
                      (skipped & 0xc0) ? " environments' flags" : "",
                      ngx_http_togglemaster_current->version);
        s->need_all = 1;
    }

    return skipped;
}


/* The HLEN replies of a load's first step (from element 3 of r) as the
 * builder's size hints; NGX_ERROR once the sync has failed. */
static ngx_int_t
ngx_http_togglemaster_sync_hints(ngx_uint_t kinds, redisReply *r,
    ngx_uint_t *hint)
{
    ngx_uint_t  e, k;

    for (e = 3, k = 0; k < NGX_HTTP_TOGGLEMASTER_NKINDS; k++) {
        hint[k] = 0;

        if (kinds & NGX_HTTP_TOGGLEMASTER_HLEN_KINDS
            & ngx_http_togglemaster_bit(k))
        {
            if (r->element[e]->type == REDIS_REPLY_ERROR) {
                ngx_http_togglemaster_sync_fail("a tm: key has the wrong "
                                                "type");
                return NGX_ERROR;
            }

            hint[k] = (ngx_uint_t) ngx_max(ngx_http_togglemaster_sync_int(
                                               r->element[e]), 0);
            e++;
        }
    }

    return NGX_OK;
}


/* The first step of a load: version, ready kinds and sizes, together. */
static void
ngx_http_togglemaster_sync_began(ngx_http_togglemaster_redis_t *ac,
    redisReply *reply)
{
    redisReply                    *r = reply;
    ngx_uint_t                     k, kinds, n, skipped;
    ngx_uint_t                     hint[NGX_HTTP_TOGGLEMASTER_NKINDS];
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (ac != s->cmd) {
        return;
    }

    kinds = s->loading;

    if (s->op_timer.timer_set) {
        ngx_del_timer(&s->op_timer);
    }

    /* version, ready kinds, environments, then one HLEN per hash loaded */
    for (n = 3, k = 0; k < NGX_HTTP_TOGGLEMASTER_NKINDS; k++) {
        n += ((kinds & NGX_HTTP_TOGGLEMASTER_HLEN_KINDS) >> k) & 1;
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements != n
        || r->element[2]->type == REDIS_REPLY_ERROR)
    {
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
                      "togglemaster: redis %V has no %s (empty or "
                      "flushed); keeping snapshot version %L",
                      &s->conf->redis,
                      ngx_http_togglemaster_sync_key(TM_RKEY_VERSION),
                      ngx_http_togglemaster_current->version);

        /* whatever refills Redis, the next load must take all of it */
        s->need_all = 1;
        s->loading = 0;
        ngx_http_togglemaster_sync_set_state(NGX_HTTP_TOGGLEMASTER_SYNCED);
        (void) ngx_http_togglemaster_sync_next();
        return;
    }

    ngx_http_togglemaster_sync_envs(r->element[2]);
    skipped = ngx_http_togglemaster_sync_skipped(kinds, r->element[1]);

    if (ngx_http_togglemaster_sync_hints(kinds, r, hint) != NGX_OK) {
        return;
    }

    s->version = ngx_http_togglemaster_sync_int(r->element[0]);
    s->skipped = skipped;
    s->scan = kinds & ~skipped;
    s->chunks = 0;
    s->longest = 0;
    ngx_cpystrn(s->cursor, (u_char *) "0", sizeof(s->cursor));

    ngx_time_update();
    s->started = ngx_current_msec;

    s->builder = ngx_http_togglemaster_builder_start(
                     ngx_http_togglemaster_current, s->scan, s->scan, hint,
                     s->log);
    if (s->builder == NULL) {
        ngx_http_togglemaster_sync_fail("out of memory");
        return;
    }

    /* the environments came whole with the first step */
    if (s->scan & ngx_http_togglemaster_bit(NGX_HTTP_TOGGLEMASTER_ENVS)) {
        if (ngx_http_togglemaster_sync_feed(NGX_HTTP_TOGGLEMASTER_ENVS, NULL,
                                            r->element[2])
            != NGX_OK)
        {
            return;
        }

        s->scan &= ~ngx_http_togglemaster_bit(NGX_HTTP_TOGGLEMASTER_ENVS);
    }

    if (s->nenvs == 0) {
        s->scan &= ~NGX_HTTP_TOGGLEMASTER_EKINDS;
    }

    ngx_http_togglemaster_sync_scan();
}


/* Field/value pairs of kind (of environment env) into the builder;
 * NGX_ERROR once the sync has failed. */
static ngx_int_t
ngx_http_togglemaster_sync_feed(ngx_uint_t kind, ngx_str_t *env,
    redisReply *a)
{
    size_t                         i;
    ngx_str_t                      field, value;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    for (i = 0; a->type == REDIS_REPLY_ARRAY && i + 1 < a->elements; i += 2) {
        if (a->element[i]->type != REDIS_REPLY_STRING
            || a->element[i + 1]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        field.data = (u_char *) a->element[i]->str;
        field.len = a->element[i]->len;
        value.data = (u_char *) a->element[i + 1]->str;
        value.len = a->element[i + 1]->len;

        if (ngx_http_togglemaster_builder_set_env(s->builder, kind, env,
                                                  &field, &value)
            != NGX_OK)
        {
            ngx_http_togglemaster_sync_fail("out of memory");
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* One chunk of the hash being scanned, into the builder. */
static void
ngx_http_togglemaster_sync_chunk(ngx_http_togglemaster_redis_t *ac,
    redisReply *reply)
{
    redisReply                    *r = reply, *c, *a;
    ngx_msec_t                     t0, t;
    ngx_uint_t                     kind;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (ac != s->cmd || s->builder == NULL) {
        return;
    }

    if (s->op_timer.timer_set) {
        ngx_del_timer(&s->op_timer);
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2
        || r->element[0]->type != REDIS_REPLY_STRING
        || r->element[0]->len >= NGX_HTTP_TOGGLEMASTER_CURSOR_LEN
        || r->element[1]->type != REDIS_REPLY_ARRAY
        || r->element[1]->elements % 2)
    {
        ngx_http_togglemaster_sync_fail(r->type == REDIS_REPLY_ERROR
                                        ? "a tm: key has the wrong type"
                                        : "unexpected HSCAN reply");
        return;
    }

    ngx_time_update();
    t0 = ngx_current_msec;

    kind = ngx_http_togglemaster_sync_first(s->scan);
    c = r->element[0];
    a = r->element[1];

    if (ngx_http_togglemaster_sync_feed(kind,
            (NGX_HTTP_TOGGLEMASTER_EKINDS & ngx_http_togglemaster_bit(kind))
            ? &s->envs[s->scan_env] : NULL, a)
        != NGX_OK)
    {
        return;
    }

    ngx_cpystrn(s->cursor, (u_char *) c->str, c->len + 1);

    if (c->len == 1 && c->str[0] == '0') {
        /* this hash is done; an environment's kind goes on with the next
         * environment's hash */
        if ((NGX_HTTP_TOGGLEMASTER_EKINDS & ngx_http_togglemaster_bit(kind))
            && ++s->scan_env < s->nenvs)
        {
            /* void */

        } else {
            s->scan &= ~ngx_http_togglemaster_bit(kind);
            s->scan_env = 0;
        }
    }

    ngx_time_update();
    t = ngx_current_msec - t0;
    s->longest = ngx_max(s->longest, t);
    s->chunks++;

    ngx_http_togglemaster_sync_scan();
}


/* The last step: the version again, then the new snapshot goes live. */
static void
ngx_http_togglemaster_sync_loaded(ngx_http_togglemaster_redis_t *ac,
    redisReply *reply)
{
    redisReply                        *r = reply;
    int64_t                            v;
    ngx_msec_t                         t0;
    ngx_uint_t                         kinds, reused, compiled;
    ngx_http_togglemaster_sync_t      *s = &ngx_http_togglemaster_sync;
    ngx_http_togglemaster_snapshot_t  *snap;

    if (ac != s->cmd || s->builder == NULL) {
        return;
    }

    kinds = s->loading;

    if (s->op_timer.timer_set) {
        ngx_del_timer(&s->op_timer);
    }

    if (r->type == REDIS_REPLY_ERROR) {
        ngx_http_togglemaster_sync_fail(r->str);
        return;
    }

    v = ngx_http_togglemaster_sync_int(r);

    if (v != s->version) {
        ngx_log_error(NGX_LOG_INFO, s->log, 0,
                      "togglemaster: %s moved from %L to %L during "
                      "the load; their messages reload what changed",
                      ngx_http_togglemaster_sync_key(TM_RKEY_VERSION),
                      s->version, v);
    }

    ngx_time_update();
    t0 = ngx_current_msec;

    ngx_http_togglemaster_builder_stats(s->builder, &reused, &compiled);

    snap = ngx_http_togglemaster_builder_finish(s->builder, s->version);
    s->builder = NULL;

    if (snap == NULL) {
        ngx_http_togglemaster_sync_fail("snapshot build failed");
        return;
    }

    ngx_http_togglemaster_snapshot_swap(snap);

    ngx_time_update();
    s->longest = ngx_max(s->longest, ngx_current_msec - t0);

    ngx_log_error(NGX_LOG_INFO, s->log, 0,
                  "togglemaster: snapshot version %L built in %M ms "
                  "(reloaded %s%s%s), %ui flags, %ui keys; %ui chunks, "
                  "longest step %M ms, %ui objects reused, %ui parsed",
                  snap->version, ngx_current_msec - s->started,
                  (kinds & 1) ? "flags " : "", (kinds & 2) ? "rules " : "",
                  (kinds & 4) ? "keys" : "", snap->nflags, snap->nkeys,
                  s->chunks, s->longest, reused, compiled);

    s->loading = 0;

    if (kinds == NGX_HTTP_TOGGLEMASTER_ALL && !s->skipped) {
        s->need_all = 0;
    }

    ngx_http_togglemaster_sync_swapped();
    (void) ngx_http_togglemaster_sync_next();
}


/* The next HSCAN, or, once every hash is in, the closing version read. */
static void
ngx_http_togglemaster_sync_scan(void)
{
    int                            rc;
    ngx_str_t                     *env;
    ngx_uint_t                     kind;
    ngx_http_togglemaster_kind_t  *kd;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    static ngx_str_t  empty = ngx_string("");

    if (s->scan == 0) {
        rc = ngx_http_togglemaster_redis_command(s->cmd,
                 ngx_http_togglemaster_sync_loaded, "GET %s",
                 ngx_http_togglemaster_sync_key(TM_RKEY_VERSION));

    } else {
        kind = ngx_http_togglemaster_sync_first(s->scan);
        kd = &ngx_http_togglemaster_kinds[kind];
        env = (NGX_HTTP_TOGGLEMASTER_EKINDS & ngx_http_togglemaster_bit(kind))
              ? &s->envs[s->scan_env] : &empty;

        rc = ngx_http_togglemaster_redis_command(s->cmd,
                 ngx_http_togglemaster_sync_chunk, "HSCAN %s%b %s COUNT %u",
                 kd->hash, env->data, env->len, s->cursor,
                 (unsigned) kd->count);
    }

    if (rc != NGX_OK) {
        ngx_http_togglemaster_sync_fail("cannot send the load");
        return;
    }

    ngx_add_timer(&s->op_timer, s->conf->timeout);
}


/* How a load and a batch of changes begin: in one transaction with what
 * they read, the version and the kinds reconciled (tm:ready). */
static ngx_int_t
ngx_http_togglemaster_sync_multi(void)
{
    ngx_http_togglemaster_redis_t  *rc = ngx_http_togglemaster_sync.cmd;

    if (ngx_http_togglemaster_redis_command(rc, NULL, "MULTI") != NGX_OK
        || ngx_http_togglemaster_redis_command(rc, NULL, "GET %s",
               ngx_http_togglemaster_sync_key(TM_RKEY_VERSION))
           != NGX_OK
        || ngx_http_togglemaster_redis_command(rc, NULL, "SMEMBERS %s",
               ngx_http_togglemaster_sync_key(TM_RKEY_READY))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_togglemaster_sync_load(ngx_uint_t kinds)
{
    ngx_uint_t                     k, n;
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

    /* queued changes of these kinds: the whole hash is read after them */
    for (k = 0, n = 0; k < s->ndeltas; k++) {
        if (!(kinds & ((ngx_uint_t) 1 << s->deltas[k].kind))) {
            s->deltas[n++] = s->deltas[k];
        }
    }

    s->ndeltas = n;

    if (ngx_http_togglemaster_sync_multi() != NGX_OK
        || ngx_http_togglemaster_redis_command(s->cmd, NULL, "HGETALL %s",
               ngx_http_togglemaster_sync_key(TM_RKEY_ENVS))
           != NGX_OK)
    {
        ngx_http_togglemaster_sync_fail("cannot send the load");
        return;
    }

    for (k = 0; k < NGX_HTTP_TOGGLEMASTER_NKINDS; k++) {
        if ((kinds & NGX_HTTP_TOGGLEMASTER_HLEN_KINDS
             & ngx_http_togglemaster_bit(k))
            && ngx_http_togglemaster_redis_command(s->cmd, NULL, "HLEN %s",
                   ngx_http_togglemaster_kinds[k].hash)
               != NGX_OK)
        {
            ngx_http_togglemaster_sync_fail("cannot send the load");
            return;
        }
    }

    if (ngx_http_togglemaster_redis_command(s->cmd,
            ngx_http_togglemaster_sync_began, "EXEC")
        != NGX_OK)
    {
        ngx_http_togglemaster_sync_fail("cannot send the load");
        return;
    }

    ngx_add_timer(&s->op_timer, s->conf->timeout);
}


/* 1 if the delta's hash is reconciled (tm:ready, or its kind@env). */
static ngx_uint_t
ngx_http_togglemaster_sync_delta_ready(ngx_http_togglemaster_delta_t *d,
    redisReply *members, ngx_uint_t ready)
{
    if (d->kind == NGX_HTTP_TOGGLEMASTER_EFLAGS) {
        return ngx_http_togglemaster_sync_ready_env(members, "flag@", &d->env);
    }

    if (d->kind == NGX_HTTP_TOGGLEMASTER_ERULES) {
        return ngx_http_togglemaster_sync_ready_env(members, "rule@", &d->env);
    }

    return (ready & ngx_http_togglemaster_bit(d->kind)) != 0;
}


/* One queued change into b: the object is deleted, then set again if
 * Redis still has it (e: its HGET reply). */
static ngx_int_t
ngx_http_togglemaster_sync_put(ngx_http_togglemaster_builder_t *b,
    ngx_http_togglemaster_delta_t *d, redisReply *e)
{
    ngx_str_t  name, value, *env;

    name.data = d->name;
    name.len = d->len;
    env = d->env.len ? &d->env : NULL;

    if (ngx_http_togglemaster_builder_del_env(b, d->kind, env, &name)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (e->type != REDIS_REPLY_STRING) {
        return NGX_OK;      /* gone: deleted */
    }

    value.data = (u_char *) e->str;
    value.len = e->len;

    return ngx_http_togglemaster_builder_set_env(b, d->kind, env, &name,
                                                 &value);
}


/* The first n queued changes over cur (r: the EXEC reply, whose version
 * is not nil): the new snapshot, or NULL once the sync has failed. A
 * change of a kind not reconciled yet is left out and asks for a full
 * load (see the full load's skipped kinds). */
static ngx_http_togglemaster_snapshot_t *
ngx_http_togglemaster_sync_patch(ngx_http_togglemaster_snapshot_t *cur,
    redisReply *r, ngx_uint_t n)
{
    ngx_uint_t                         i, kinds, ready;
    ngx_http_togglemaster_sync_t      *s = &ngx_http_togglemaster_sync;
    ngx_http_togglemaster_builder_t   *b;
    ngx_http_togglemaster_snapshot_t  *snap;

    ready = ngx_http_togglemaster_sync_ready(r->element[1]);
    kinds = 0;

    for (i = 0; i < n; i++) {
        if (ngx_http_togglemaster_sync_delta_ready(&s->deltas[i],
                                                   r->element[1], ready))
        {
            kinds |= ngx_http_togglemaster_bit(s->deltas[i].kind);

        } else {
            s->need_all = 1;
        }
    }

    b = ngx_http_togglemaster_builder_start(cur, 0, kinds, NULL, s->log);
    if (b == NULL) {
        ngx_http_togglemaster_sync_fail("out of memory");
        return NULL;
    }

    for (i = 0; i < n; i++) {
        if (ngx_http_togglemaster_sync_delta_ready(&s->deltas[i],
                                                   r->element[1], ready)
            && ngx_http_togglemaster_sync_put(b, &s->deltas[i],
                                              r->element[2 + i])
               != NGX_OK)
        {
            ngx_http_togglemaster_builder_abort(b);
            ngx_http_togglemaster_sync_fail("out of memory");
            return NULL;
        }
    }

    snap = ngx_http_togglemaster_builder_finish(b,
               ngx_http_togglemaster_sync_int(r->element[0]));
    if (snap == NULL) {
        ngx_http_togglemaster_sync_fail("snapshot build failed");
    }

    return snap;
}


/* The queued single changes, all at once: MULTI, GET tm:version, SMEMBERS
 * tm:ready, one HGET each, EXEC. The next snapshot copies the current one's
 * touched part and changes them: no parsing, no sorting unless a flag was
 * added, and only the changed flags hashed for the event streams' etag
 * (snapshot.c), about a millisecond for 10,000 flags. */
static void
ngx_http_togglemaster_sync_applied(ngx_http_togglemaster_redis_t *ac,
    redisReply *reply)
{
    redisReply                        *r = reply;
    ngx_msec_t                         t0;
    ngx_uint_t                         n;
    ngx_http_togglemaster_sync_t      *s = &ngx_http_togglemaster_sync;
    ngx_http_togglemaster_snapshot_t  *snap, *cur;

    if (ac != s->cmd) {
        return;
    }

    if (s->op_timer.timer_set) {
        ngx_del_timer(&s->op_timer);
    }

    n = s->applying;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != n + 2) {
        ngx_http_togglemaster_sync_fail(r->type == REDIS_REPLY_ERROR
                                        ? r->str : "unexpected load reply");
        return;
    }

    cur = ngx_http_togglemaster_current;

    ngx_time_update();
    t0 = ngx_current_msec;

    if (r->element[0]->type == REDIS_REPLY_NIL) {
        /* emptied meanwhile: as for a load, keep what we have */
        s->need_all = 1;
        snap = NULL;

    } else {
        snap = ngx_http_togglemaster_sync_patch(cur, r, n);
        if (snap == NULL) {
            return;
        }
    }

    /* the ones applied leave the queue; newer ones wait their turn */
    ngx_memmove(s->deltas, &s->deltas[n],
                (s->ndeltas - n) * sizeof(ngx_http_togglemaster_delta_t));
    s->ndeltas -= n;
    s->applying = 0;
    s->loading = 0;

    if (snap) {
        ngx_http_togglemaster_snapshot_swap(snap);

        ngx_time_update();
        ngx_log_error(NGX_LOG_INFO, s->log, 0,
                      "togglemaster: snapshot version %L: %ui change%s "
                      "applied in %M ms", snap->version, n,
                      n == 1 ? "" : "s", ngx_current_msec - t0);

        ngx_http_togglemaster_sync_swapped();

    } else {
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "togglemaster: redis %V has no %s (empty or "
                      "flushed); keeping snapshot version %L",
                      &s->conf->redis,
                      ngx_http_togglemaster_sync_key(TM_RKEY_VERSION),
                      cur ? cur->version : -1);
    }

    (void) ngx_http_togglemaster_sync_next();
}


static void
ngx_http_togglemaster_sync_apply(void)
{
    ngx_uint_t                      i, kinds;
    ngx_http_togglemaster_delta_t  *d;
    ngx_http_togglemaster_sync_t   *s = &ngx_http_togglemaster_sync;

    if (s->cmd == NULL || s->ndeltas == 0) {
        return;
    }

    for (kinds = 0, i = 0; i < s->ndeltas; i++) {
        kinds |= (ngx_uint_t) 1 << s->deltas[i].kind;
    }

    s->loading = kinds;
    s->applying = s->ndeltas;

    if (ngx_http_togglemaster_sync_multi() != NGX_OK) {
        ngx_http_togglemaster_sync_fail("cannot send the changes");
        return;
    }

    for (i = 0; i < s->applying; i++) {
        d = &s->deltas[i];

        if (ngx_http_togglemaster_redis_command(s->cmd, NULL, "HGET %s%b %b",
                ngx_http_togglemaster_kinds[d->kind].hash,
                d->env.data, d->env.len, d->name, d->len)
            != NGX_OK)
        {
            ngx_http_togglemaster_sync_fail("cannot send the changes");
            return;
        }
    }

    if (ngx_http_togglemaster_redis_command(s->cmd,
            ngx_http_togglemaster_sync_applied, "EXEC")
        != NGX_OK)
    {
        ngx_http_togglemaster_sync_fail("cannot send the changes");
        return;
    }

    ngx_add_timer(&s->op_timer, s->conf->timeout);
}


/* The check is over: what it or the messages meanwhile queued. */
static void
ngx_http_togglemaster_sync_checked(void)
{
    ngx_http_togglemaster_sync.heard = 0;

    if (!ngx_http_togglemaster_sync_next()) {
        /* the snapshot is confirmed current */
        ngx_http_togglemaster_sync_set_state(NGX_HTTP_TOGGLEMASTER_SYNCED);
    }
}


static void
ngx_http_togglemaster_sync_versioned(ngx_http_togglemaster_redis_t *ac,
    redisReply *reply)
{
    redisReply                    *r = reply;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (ac != s->cmd) {
        return;
    }

    s->checking = 0;

    if (s->op_timer.timer_set) {
        ngx_del_timer(&s->op_timer);
    }

    if (r->type == REDIS_REPLY_ERROR) {
        ngx_http_togglemaster_sync_fail(r->str);
        return;
    }

    if (ngx_http_togglemaster_current == NULL) {
        s->reload = NGX_HTTP_TOGGLEMASTER_ALL;

    } else if (ngx_http_togglemaster_sync_int(r)
               != ngx_http_togglemaster_current->version && !s->heard)
    {
        /* still "checking": a message meanwhile is queued, and ends the
         * wait (sync_message) */
        s->checking = 1;
        ngx_add_timer(&s->grace_timer, NGX_HTTP_TOGGLEMASTER_CHECK_GRACE);
        return;
    }

    ngx_http_togglemaster_sync_checked();
}


/* No message came for the version a check read (a message would have
 * ended the wait): one was lost. */
static void
ngx_http_togglemaster_sync_grace(ngx_event_t *ev)
{
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    s->checking = 0;
    s->reload = NGX_HTTP_TOGGLEMASTER_ALL;

    ngx_http_togglemaster_sync_checked();
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

    if (ngx_http_togglemaster_redis_command(s->cmd,
            ngx_http_togglemaster_sync_versioned, "GET %s",
            ngx_http_togglemaster_sync_key(TM_RKEY_VERSION))
        != NGX_OK)
    {
        ngx_http_togglemaster_sync_fail("cannot send the version check");
        return;
    }

    s->checking = 1;
    s->heard = 0;
    ngx_add_timer(&s->op_timer, s->conf->timeout);
}


/* Queues one changed object; 0 if it must be a reload of its hash. */
static ngx_uint_t
ngx_http_togglemaster_sync_delta(ngx_uint_t kind, const char *name,
    size_t len, tm_change *c)
{
    ngx_uint_t                      ekind;
    ngx_http_togglemaster_delta_t  *d;
    ngx_http_togglemaster_sync_t   *s = &ngx_http_togglemaster_sync;

    ekind = (NGX_HTTP_TOGGLEMASTER_EKINDS & ngx_http_togglemaster_bit(kind))
            != 0;

    if (ngx_http_togglemaster_current == NULL || s->need_all
        || kind == NGX_HTTP_TOGGLEMASTER_SEGMENTS    /* few: reloaded */
        || kind == NGX_HTTP_TOGGLEMASTER_ENVS
        || (ekind && (c->env_len == 0 || c->env_len > TM_NAME_MAX))
        || len == 0 || len > NGX_HTTP_TOGGLEMASTER_DELTA_NAME
        || s->ndeltas == NGX_HTTP_TOGGLEMASTER_DELTAS
        || (s->reload & ((ngx_uint_t) 1 << kind)))
    {
        return 0;
    }

    d = &s->deltas[s->ndeltas++];
    d->kind = kind;
    d->len = len;
    ngx_memcpy(d->name, name, len);
    d->env.data = d->env_data;
    d->env.len = ekind ? c->env_len : 0;

    if (d->env.len) {                   /* c->env is NULL without one */
        ngx_memcpy(d->env_data, c->env, d->env.len);
    }

    if (!s->loading && !s->checking && s->cmd) {
        ngx_http_togglemaster_sync_apply();
    }

    return 1;
}


/* A flag or rule change with "environment" other than the default is of
 * that environment's hash (EFLAGS, ERULES). */
static ngx_int_t
ngx_http_togglemaster_sync_env_kind(ngx_int_t k, tm_change *c)
{
    ngx_str_t                         *def;
    ngx_http_togglemaster_snapshot_t  *cur = ngx_http_togglemaster_current;

    if (c->env == NULL
        || (k != NGX_HTTP_TOGGLEMASTER_FLAGS
            && k != NGX_HTTP_TOGGLEMASTER_RULES))
    {
        return k;
    }

    def = (cur && cur->epart) ? &cur->epart->names[0] : NULL;

    if (def && def->len == c->env_len
        && ngx_strncmp(def->data, c->env, c->env_len) == 0)
    {
        return k;
    }

    return k == NGX_HTTP_TOGGLEMASTER_FLAGS ? NGX_HTTP_TOGGLEMASTER_EFLAGS
                                            : NGX_HTTP_TOGGLEMASTER_ERULES;
}


/* {"version":v,"kind":"flag|rule|key|key2|env","op":...,"name":...,
 * "environment":...}: an upsert or a delete is applied as a delta (one
 * HGET), anything else reloads the hash it names (an environment's kind:
 * every environment's hash). No echo suppression by version: a load of one hash may
 * already carry the version of a change to another hash whose message is
 * still on its way. */
static void
ngx_http_togglemaster_sync_message(redisReply *payload)
{
    ngx_int_t    k;
    tm_change    c;
    ngx_uint_t   kinds;

    kinds = NGX_HTTP_TOGGLEMASTER_ALL;

    if (ngx_http_togglemaster_sync.checking) {
        ngx_http_togglemaster_sync.heard = 1;
    }

    if (ngx_http_togglemaster_sync.grace_timer.timer_set) {
        /* the message a disagreeing check waited for: the check is over,
         * and this change goes out at once */
        ngx_del_timer(&ngx_http_togglemaster_sync.grace_timer);
        ngx_http_togglemaster_sync.checking = 0;
        ngx_http_togglemaster_sync.heard = 0;
    }

    if (payload->type == REDIS_REPLY_STRING) {
        /* read by lib/tm_records.c, fuzzed there */
        tm_change_parse(payload->str, payload->len, &c);

        k = c.kind ? ngx_http_togglemaster_sync_kind(c.kind, c.kind_len) : -1;
        k = ngx_http_togglemaster_sync_env_kind(k, &c);

        if (k >= 0) {
            kinds = ngx_http_togglemaster_bit(k);

            /* a new or deleted environment: its hashes, and the keys'
             * environment indexes (snapshot.c), come with it */
            if (k == NGX_HTTP_TOGGLEMASTER_ENVS) {
                kinds |= NGX_HTTP_TOGGLEMASTER_EKINDS;
            }

            if (c.op != TM_CHANGE_RELOAD
                && ngx_http_togglemaster_sync_delta((ngx_uint_t) k, c.name,
                                                    c.name_len, &c))
            {
                kinds = 0;
            }
        }

        tm_change_done(&c);
    }

    if (ngx_http_togglemaster_current == NULL) {
        kinds = NGX_HTTP_TOGGLEMASTER_ALL;
    }

    if (kinds) {
        ngx_http_togglemaster_sync_load(kinds);
    }
}


static void
ngx_http_togglemaster_sync_subscribed(ngx_http_togglemaster_redis_t *ac,
    redisReply *reply)
{
    redisReply                    *r = reply;
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (ac != s->sub) {
        return;
    }

    if (r->type == REDIS_REPLY_ERROR) {
        ngx_http_togglemaster_sync_fail(r->str);    /* NOAUTH, NOPERM... */
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


/*
 * A MOVED: the slot of {tm} is served by another node of the cluster; both
 * connections are redone there at once, and the step that met the redirect
 * runs again from the start (a load or a batch of changes is one
 * transaction: it cannot go on half on one node). NGX_DECLINED when it
 * cannot be followed (an ASK: the slot is migrating, and a transaction
 * cannot span two nodes; too many hops; a host name): the caller fails,
 * and the retry after the backoff finds the slot settled.
 */
static ngx_int_t
ngx_http_togglemaster_sync_moved(ngx_http_togglemaster_redis_t *rc)
{
    ngx_int_t                            n;
    ngx_http_togglemaster_redis_node_t   node;
    ngx_http_togglemaster_sync_t        *s = &ngx_http_togglemaster_sync;

    n = ngx_http_togglemaster_redis_redirected(rc, &node);

    if (n == NGX_ERROR) {
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "togglemaster: redis %V: a redirect to a host name "
                      "is not followed: have the cluster announce IP "
                      "addresses (cluster-preferred-endpoint-type ip)",
                      &s->conf->redis);
    }

    if (n != NGX_OK || node.ask || s->hops >= NGX_HTTP_TOGGLEMASTER_HOPS
        || s->exiting)
    {
        return NGX_DECLINED;
    }

    s->hops++;
    s->node = node;
    s->node.name.data = s->node.text;
    s->node_known = 1;

    ngx_log_error(NGX_LOG_INFO, s->log, 0,
                  "togglemaster: redis %V: MOVED: slot %ui of the {tm} keys "
                  "is served by %V; reconnecting there", &s->conf->redis,
                  node.slot, &s->node.name);

    ngx_http_togglemaster_sync_down();

    if (!s->retry_timer.timer_set) {
        ngx_add_timer(&s->retry_timer, 1);
    }

    return NGX_OK;
}


/* A connection failed (connect, TLS, AUTH, SELECT, I/O), or was told to go
 * to another node: both go, and the reason goes to the log. */
static void
ngx_http_togglemaster_sync_lost(ngx_http_togglemaster_redis_t *rc,
    const char *why)
{
    ngx_http_togglemaster_sync_t  *s = &ngx_http_togglemaster_sync;

    if (rc != s->cmd && rc != s->sub) {
        return;
    }

    if (ngx_http_togglemaster_sync_moved(rc) == NGX_OK) {
        return;
    }

    ngx_http_togglemaster_sync_fail(why);
}


static void
ngx_http_togglemaster_sync_start(void)
{
    ngx_http_togglemaster_sync_t        *s = &ngx_http_togglemaster_sync;
    ngx_http_togglemaster_redis_node_t  *node;

    ngx_http_togglemaster_sync_set_state(NGX_HTTP_TOGGLEMASTER_CONNECTING);

    node = s->node_known ? &s->node : NULL;

    s->sub = ngx_http_togglemaster_redis_connect(s->conf, s->log,
                 ngx_http_togglemaster_sync_lost, node);
    if (s->sub == NULL) {
        ngx_http_togglemaster_sync_fail("cannot connect");
        return;
    }

    s->cmd = ngx_http_togglemaster_redis_connect(s->conf, s->log,
                 ngx_http_togglemaster_sync_lost, node);
    if (s->cmd == NULL) {
        ngx_http_togglemaster_sync_fail("cannot connect");
        return;
    }

    if (ngx_http_togglemaster_redis_subscribe(s->sub,
                                      ngx_http_togglemaster_sync_subscribed,
                                      TM_REDIS_CHANNEL)
        != NGX_OK)
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
    ngx_uint_t                         k;
    ngx_http_togglemaster_sync_t      *s = &ngx_http_togglemaster_sync;
    ngx_http_togglemaster_snapshot_t  *snap;

    ngx_memzero(s, sizeof(ngx_http_togglemaster_sync_t));
    s->conf = tmcf;

    for (k = 0; k < NGX_HTTP_TOGGLEMASTER_NKINDS; k++) {
        ngx_http_togglemaster_kinds[k].hash = ngx_http_togglemaster_sync_key(
                                             ngx_http_togglemaster_kinds[k].key);
    }
    s->log = cycle->log;
    s->backoff = NGX_HTTP_TOGGLEMASTER_BACKOFF_MIN;

    ngx_http_togglemaster_sync_timer(&s->op_timer,
                                     ngx_http_togglemaster_sync_op_timeout,
                                     cycle->log);
    ngx_http_togglemaster_sync_timer(&s->retry_timer,
                                     ngx_http_togglemaster_sync_retry,
                                     cycle->log);
    ngx_http_togglemaster_sync_timer(&s->grace_timer,
                                     ngx_http_togglemaster_sync_grace,
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

    /* a host not resolved yet fails the first connects: the retries
     * find its addresses once nginx's resolver has them */
    ngx_http_togglemaster_redis_start(tmcf, cycle->log);
    ngx_http_togglemaster_sync_start();

    ngx_add_timer(&s->check_timer, tmcf->check_interval);

    return NGX_OK;
}


/*
 * The edge's half of keys' last use: the daemons record theirs, and auth
 * folds tm:keys:used into api_keys.last_used_at. Fire-and-forget on the
 * command connection (the reply is ignored); nothing is remembered while
 * Redis is down, so the first request once it is back reports the key.
 * When the key's set is full of keys reported this minute, the use is not
 * reported now but by a later request: a busy set never exceeds the rate.
 */
void
ngx_http_togglemaster_sync_key_used(u_char *bin, ngx_log_t *log)
{
    char                            hex[TM_SHA256_HEX_LEN + 1];
    time_t                          now;
    ngx_uint_t                      i;
    ngx_http_togglemaster_use_t    *set, *slot;
    ngx_http_togglemaster_sync_t   *s = &ngx_http_togglemaster_sync;

    if (s->state != NGX_HTTP_TOGGLEMASTER_SYNCED || s->cmd == NULL) {
        return;
    }

    now = ngx_time();

    /* a SHA-256 is uniform: its first byte picks the set */
    set = ngx_http_togglemaster_uses[bin[0] % NGX_HTTP_TOGGLEMASTER_USE_SETS];
    slot = NULL;

    for (i = 0; i < NGX_HTTP_TOGGLEMASTER_USE_WAYS; i++) {
        if (set[i].sent && ngx_memcmp(set[i].bin, bin, 32) == 0) {
            if (now - set[i].sent < NGX_HTTP_TOGGLEMASTER_USE_PERIOD) {
                return;
            }

            slot = &set[i];
            break;
        }

        if (slot == NULL
            && now - set[i].sent >= NGX_HTTP_TOGGLEMASTER_USE_PERIOD)
        {
            slot = &set[i];     /* free, or reported long enough ago */
        }
    }

    if (slot == NULL) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                       "togglemaster: key use not reported: table busy");
        return;
    }

    tm_hex(bin, 32, hex);

    if (ngx_http_togglemaster_redis_command(s->cmd, NULL, "HSET %s %s %lld",
            ngx_http_togglemaster_sync_key(TM_RKEY_KEYS_USED), hex,
            (long long) now)
        != NGX_OK)
    {
        /* as for the version check: a command half queued (out of memory)
         * would desynchronise the replies, so start again */
        ngx_http_togglemaster_sync_fail("cannot send a key's use");
        return;
    }

    ngx_memcpy(slot->bin, bin, 32);
    slot->sent = now;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "togglemaster: HSET %s %s %T",
                   ngx_http_togglemaster_sync_key(TM_RKEY_KEYS_USED), hex, now);
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

    if (s->grace_timer.timer_set) {
        ngx_del_timer(&s->grace_timer);
    }

    if (s->file_timer.timer_set) {
        ngx_del_timer(&s->file_timer);
    }

    ngx_http_togglemaster_redis_stop(s->conf);

    /* a pending write still happens: the next start needs it */
    ngx_http_togglemaster_sync_write_file(&s->file_timer);

    ngx_http_togglemaster_sync_drop(&s->cmd);
    ngx_http_togglemaster_sync_drop(&s->sub);

    ngx_http_togglemaster_builder_abort(s->builder);
    s->builder = NULL;

    ngx_http_togglemaster_snapshot_swap(NULL);
}
