#include "tm_publish.h"
#include "tm_env.h"
#include "tm_log.h"
#include "tm_redis.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static tm_redis_config cfg;
static int enabled;
/* One connection per thread: a connection is one conversation. */
static _Thread_local tm_redis *rc;
static _Thread_local time_t rc_retry_after;
/* Closes a thread's connection when the thread exits. */
static pthread_key_t rc_key;

static void free_at_thread_exit(void *c)
{
    tm_redis_free(c);
}

/* Atomic write + version bump + notification (docs/redis-layout.md). */
static const char publish_lua[] =
    "if ARGV[2] == 'upsert' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])"
    " else redis.call('HDEL', KEYS[1], ARGV[1]) end "
    "local v = redis.call('INCR', KEYS[2]) "
    "redis.call('PUBLISH', ARGV[5], cjson.encode({version = v, kind = ARGV[4],"
    " op = ARGV[2], name = ARGV[1]})) "
    "return v";

/* After a reconciliation: list the kind as ready; if anything changed, or
 * the kind was not listed (Redis restarted or flushed), tell the edge. */
static const char resync_lua[] =
    "local added = redis.call('SADD', KEYS[2], ARGV[1]) "
    "if ARGV[3] == '0' and added == 0 then return 0 end "
    "local v = redis.call('INCR', KEYS[1]) "
    "redis.call('PUBLISH', ARGV[2], cjson.encode({version = v, kind = ARGV[1],"
    " op = 'resync'})) "
    "return v";

/* Kinds this process reconciles, to notice quickly when Redis loses them. */
static const char *reconciled_kinds[8];
static int nreconciled;

int tm_publish_init(const char *redis_url)
{
    if (redis_url == NULL || *redis_url == '\0') {
        TM_WARN("REDIS_URL not set: changes will not reach the edge");
        return 0;
    }
    char err[300];
    /* rediss:// only: the CA bundle (default: the system's) and the name
     * the certificate must carry (default: the URL's host) */
    if (tm_redis_config_init(&cfg, redis_url, tm_env("REDIS_CA_FILE", NULL),
                             tm_env("REDIS_TLS_SERVER_NAME", NULL), err, sizeof err) != 0) {
        TM_ERROR("%s", err);
        return -1;
    }
    if (pthread_key_create(&rc_key, free_at_thread_exit) != 0) {
        tm_redis_config_free(&cfg);
        return -1;
    }
    TM_INFO("redis: %s%s", cfg.where, cfg.tls ? " (TLS)" : "");
    enabled = 1;
    return 0;
}

const char *tm_publish_hash(const char *kind)
{
    if (strcmp(kind, "flag") == 0) return TM_REDIS_FLAGS;
    if (strcmp(kind, "rule") == 0) return TM_REDIS_RULES;
    if (strcmp(kind, "key") == 0) return TM_REDIS_KEYS;
    if (strcmp(kind, "segment") == 0) return TM_REDIS_SEGMENTS;
    return NULL;
}

static void drop(void)
{
    if (rc) {
        tm_redis_free(rc);
        rc = NULL;
        pthread_setspecific(rc_key, NULL);
    }
}

void tm_publish_close(void)
{
    drop();
    if (enabled) {
        tm_redis_config_free(&cfg);
        enabled = 0;
    }
}

static tm_redis *get(void)
{
    if (!enabled) {
        return NULL;
    }
    if (rc && tm_redis_errstr(rc)[0] == '\0') {
        return rc;
    }
    drop();
    /* After a failure, wait a second before trying again so a Redis outage
     * costs requests nothing but a check of the clock. */
    time_t now = time(NULL);
    if (now < rc_retry_after) {
        return NULL;
    }
    char err[300];
    rc = tm_redis_connect(&cfg, err, sizeof err);
    if (rc == NULL) {
        /* the edge keeps its snapshot, the daemons PostgreSQL; this line
         * says what to fix (address, password, certificate) */
        TM_WARN("redis %s: %s", cfg.where, err);
        rc_retry_after = now + 1;
        return NULL;
    }
    pthread_setspecific(rc_key, rc);
    return rc;
}

/* Runs a command; on a transport error drops the connection. */
static redisReply *command(int argc, const char **argv, const size_t *lens)
{
    tm_redis *c = get();
    if (c == NULL) {
        return NULL;
    }
    redisReply *r = tm_redis_command(c, argc, argv, lens);
    if (r == NULL) {
        TM_WARN("redis %s: %s", cfg.where, tm_redis_errstr(c));
        drop();
        rc_retry_after = time(NULL) + 1;
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        TM_WARN("redis: %s: %s", argv[0], r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

int tm_publish_all_ready(void)
{
    for (int i = 0; i < nreconciled; i++) {
        const char *argv[] = { "SISMEMBER", TM_REDIS_READY, reconciled_kinds[i] };
        size_t lens[] = { 9, strlen(TM_REDIS_READY), strlen(reconciled_kinds[i]) };
        redisReply *r = command(3, argv, lens);
        if (r == NULL) {
            return 1;   /* unreachable: reconciling now would not help */
        }
        int member = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        freeReplyObject(r);
        if (!member) {
            return 0;
        }
    }
    return 1;
}

long long tm_publish(const char *kind, const char *field, const char *json)
{
    const char *hash = tm_publish_hash(kind);
    if (hash == NULL || !enabled) {
        return -1;
    }
    const char *argv[] = { "EVAL", publish_lua, "2", hash, TM_REDIS_VERSION, field,
                           json ? "upsert" : "delete", json ? json : "", kind,
                           TM_REDIS_CHANNEL };
    size_t lens[10];
    for (int i = 0; i < 10; i++) lens[i] = strlen(argv[i]);
    redisReply *r = command(10, argv, lens);
    if (r == NULL) {
        TM_WARN("redis: %s %s not published; reconciliation will repair it", kind,
                strcmp(kind, "key") == 0 ? "(key hash)" : field);
        return -1;
    }
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return v;
}

int tm_publish_key_known(const char *key_hash)
{
    const char *argv[] = { "HEXISTS", TM_REDIS_KEYS, key_hash };
    size_t lens[] = { 7, strlen(TM_REDIS_KEYS), strlen(key_hash) };
    redisReply *r = command(3, argv, lens);
    if (r == NULL) {
        return -1;
    }
    int known = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return known;
}

static int item_cmp(const void *a, const void *b)
{
    return strcmp(((const tm_pub_item *) a)->field, ((const tm_pub_item *) b)->field);
}

/* Set (or delete) a field only if it still holds what reconciliation saw. */
static const char cas_lua[] =
    "local cur = redis.call('HGET', KEYS[1], ARGV[1]) "
    "if ARGV[2] == '1' then if cur ~= ARGV[3] then return 0 end "
    "elseif cur then return 0 end "
    "if ARGV[4] == '1' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[5]) "
    "else redis.call('HDEL', KEYS[1], ARGV[1]) end "
    "return 1";

static int append_cas(tm_redis *c, const char *hash, const char *field,
                      const char *seen, const char *want)
{
    const char *argv[] = { "EVAL", cas_lua, "1", hash, field, seen ? "1" : "0",
                           seen ? seen : "", want ? "1" : "0", want ? want : "" };
    size_t lens[9];
    for (int i = 0; i < 9; i++) lens[i] = strlen(argv[i]);
    return tm_redis_append(c, 9, argv, lens);
}

int tm_publish_reconcile(const char *kind, tm_pub_loader load,
                         void (*free_owner)(void *owner))
{
    const char *hash = tm_publish_hash(kind);
    if (hash == NULL || !enabled) {
        return -1;
    }
    const char *hargv[] = { "HGETALL", hash };
    size_t hlens[] = { 7, strlen(hash) };
    redisReply *all = command(2, hargv, hlens);
    if (all == NULL) {
        return -1;
    }
    tm_pub_item *want = NULL;
    size_t n = 0;
    void *owner = NULL;
    if (all->type != REDIS_REPLY_ARRAY || load(&want, &n, &owner) != 0) {
        freeReplyObject(all);
        return -1;
    }
    qsort(want, n, sizeof *want, item_cmp);

    tm_redis *c = get();
    int queued = 0, changed = 0, failed = c == NULL;
    /* Fields in Redis that the database lacks, or holds differently. */
    for (size_t i = 0; i + 1 < all->elements && !failed; i += 2) {
        redisReply *f = all->element[i], *v = all->element[i + 1];
        tm_pub_item key = { f->str, NULL };
        tm_pub_item *w = bsearch(&key, want, n, sizeof *want, item_cmp);
        if (w && strcmp(w->json, v->str) == 0) {
            w->json = NULL;   /* in sync */
            continue;
        }
        failed = append_cas(c, hash, f->str, v->str, w ? w->json : NULL) != 0;
        if (w) {
            w->json = NULL;
        }
        queued++;
    }
    /* Fields the database has and Redis lacks. */
    for (size_t i = 0; i < n && !failed; i++) {
        if (want[i].json) {
            failed = append_cas(c, hash, want[i].field, NULL, want[i].json) != 0;
            queued++;
        }
    }
    /* Pipelined: one round trip for all the fixes. */
    for (int i = 0; i < queued && !failed; i++) {
        redisReply *rr;
        if (tm_redis_reply(c, &rr) != 0) {
            TM_WARN("redis %s: %s", cfg.where, tm_redis_errstr(c));
            failed = 1;
            break;
        }
        if (rr->type == REDIS_REPLY_INTEGER && rr->integer == 1) {
            changed++;
        }
        freeReplyObject(rr);
    }
    free(want);
    free_owner(owner);
    freeReplyObject(all);
    if (failed) {
        drop();
        return -1;
    }
    const char *argv[] = { "EVAL", resync_lua, "2", TM_REDIS_VERSION, TM_REDIS_READY, kind,
                           TM_REDIS_CHANNEL, changed ? "1" : "0" };
    size_t lens[8];
    for (int i = 0; i < 8; i++) lens[i] = strlen(argv[i]);
    redisReply *r = command(8, argv, lens);
    if (r == NULL) {
        return -1;
    }
    if (changed || (r->type == REDIS_REPLY_INTEGER && r->integer > 0)) {
        TM_INFO("reconcile: %d %s field(s) repaired in Redis; %s marked ready",
                changed, kind, kind);
    }
    freeReplyObject(r);
    int known = 0;
    for (int i = 0; i < nreconciled; i++) {
        known |= strcmp(reconciled_kinds[i], kind) == 0;
    }
    if (!known && nreconciled < (int) (sizeof reconciled_kinds / sizeof reconciled_kinds[0])) {
        reconciled_kinds[nreconciled++] = kind;
    }
    return changed;
}
