#include "tm_publish.h"
#include "tm_env.h"
#include "tm_log.h"
#include "tm_names.h"
#include "tm_redis.h"

#include <pthread.h>
#include <stdio.h>
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
    "local m = {version = v, kind = ARGV[4], op = ARGV[2], name = ARGV[1]} "
    "if ARGV[6] ~= '' then m.environment = ARGV[6] end "
    "redis.call('PUBLISH', ARGV[5], cjson.encode(m)) "
    "return v";

/* After a reconciliation: list the kind as ready; if anything changed, or
 * the kind was not listed (Redis restarted or flushed), tell the edge. */
static const char resync_lua[] =
    "local added = redis.call('SADD', KEYS[2], ARGV[1]) "
    "if ARGV[3] == '0' and added == 0 then return 0 end "
    "local v = redis.call('INCR', KEYS[1]) "
    "local m = {version = v, kind = ARGV[4], op = 'resync'} "
    "if ARGV[5] ~= '' then m.environment = ARGV[5] end "
    "redis.call('PUBLISH', ARGV[2], cjson.encode(m)) "
    "return v";

/* Kinds this process reconciles (e.g. "flag", "flag@staging"), to notice
 * quickly when Redis loses them. Past the table's size a kind is still
 * reconciled every period, just not watched each second. */
enum { WATCHED_MAX = 128, WATCHED_LEN = TM_NAME_MAX + 16 };
static char reconciled_kinds[WATCHED_MAX][WATCHED_LEN];
static int nreconciled;

/* The hash of kind in env (NULL or the default: the kind's own hash) into
 * buf; NULL for an unknown kind. */
static const char *hash_for(const char *kind, const char *env, char *buf, size_t size)
{
    const char *base = tm_publish_hash(kind);
    if (base == NULL || env == NULL || strcmp(env, TM_ENV_DEFAULT) == 0) {
        return base;
    }
    int w = snprintf(buf, size, "%s@%s", base, env);
    return w > 0 && (size_t) w < size ? buf : NULL;
}

int tm_publish_init(const char *redis_url)
{
    if (redis_url == NULL || *redis_url == '\0') {
        TM_WARN("REDIS_URL not set: changes will not reach the edge");
        return 0;
    }
    char err[300];
    /* rediss:// only: the CA bundle (default: the system's) and the name
     * the certificate must carry (default: the URL's host) */
    /* a host name is looked up by a thread of its own, never by a request
     * thread, at start and every TM_REDIS_RESOLVE_SECONDS (tm_resolve.h) */
    if (tm_redis_config_init(&cfg, redis_url, tm_env("REDIS_CA_FILE", NULL),
                             tm_env("REDIS_TLS_SERVER_NAME", NULL),
                             tm_env_long("TM_REDIS_RESOLVE_SECONDS", 5, 1, 3600),
                             err, sizeof err) != 0) {
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
    if (strcmp(kind, "env") == 0) return TM_REDIS_ENVS;
    if (strcmp(kind, "key2") == 0) return TM_REDIS_KEYS_V2;
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

void tm_publish_reconcile_begin(void)
{
    nreconciled = 0;
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
    return tm_publish_env(kind, NULL, field, json);
}

long long tm_publish_env(const char *kind, const char *env, const char *field,
                         const char *json)
{
    char buf[WATCHED_LEN + 16];
    const char *hash = hash_for(kind, env, buf, sizeof buf);
    if (hash == NULL || !enabled) {
        return -1;
    }
    const char *argv[] = { "EVAL", publish_lua, "2", hash, TM_REDIS_VERSION, field,
                           json ? "upsert" : "delete", json ? json : "", kind,
                           TM_REDIS_CHANNEL, hash == buf ? env : "" };
    size_t lens[11];
    for (int i = 0; i < 11; i++) lens[i] = strlen(argv[i]);
    redisReply *r = command(11, argv, lens);
    if (r == NULL) {
        TM_WARN("redis: %s %s not published; reconciliation will repair it", kind,
                strncmp(kind, "key", 3) == 0 ? "(key hash)" : field);
        return -1;
    }
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return v;
}

int tm_publish_hexists(const char *hash, const char *field)
{
    const char *argv[] = { "HEXISTS", hash, field };
    size_t lens[] = { 7, strlen(hash), strlen(field) };
    redisReply *r = command(3, argv, lens);
    if (r == NULL) {
        return -1;
    }
    int known = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return known;
}

static int field_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

int tm_publish_hkeys(const char *hash, char ***fields, size_t *n)
{
    *fields = NULL;
    *n = 0;
    const char *argv[] = { "HKEYS", hash };
    size_t lens[] = { 5, strlen(hash) };
    redisReply *r = command(2, argv, lens);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r) {
            freeReplyObject(r);
        }
        return -1;
    }
    char **out = calloc(r->elements ? r->elements : 1, sizeof *out);
    size_t k = 0;
    for (size_t i = 0; out && i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_STRING && !(out[k++] = strndup(e->str, e->len))) {
            while (k > 0) {
                free(out[--k]);
            }
            free(out);
            out = NULL;
        }
    }
    freeReplyObject(r);
    if (!out) {
        return -1;
    }
    qsort(out, k, sizeof *out, field_cmp);
    *fields = out;
    *n = k;
    return 0;
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

/* Reconciles hash; ready is its tm:ready member, kind and env (NULL or
 * "") what the resync message says. */
static int reconcile_hash(const char *hash, const char *ready, const char *kind,
                          const char *env, int watch, tm_pub_loader load,
                          void (*free_owner)(void *owner))
{
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
    const char *argv[] = { "EVAL", resync_lua, "2", TM_REDIS_VERSION, TM_REDIS_READY, ready,
                           TM_REDIS_CHANNEL, changed ? "1" : "0", kind, env ? env : "" };
    size_t lens[10];
    for (int i = 0; i < 10; i++) lens[i] = strlen(argv[i]);
    redisReply *r = command(10, argv, lens);
    if (r == NULL) {
        return -1;
    }
    if (changed || (r->type == REDIS_REPLY_INTEGER && r->integer > 0)) {
        TM_INFO("reconcile: %d %s field(s) repaired in Redis; %s marked ready",
                changed, ready, ready);
    }
    freeReplyObject(r);
    int known = !watch;
    for (int i = 0; i < nreconciled && !known; i++) {
        known |= strcmp(reconciled_kinds[i], ready) == 0;
    }
    if (!known && nreconciled < WATCHED_MAX && strlen(ready) < WATCHED_LEN) {
        strcpy(reconciled_kinds[nreconciled++], ready);
    }
    return changed;
}

int tm_publish_reconcile(const char *kind, tm_pub_loader load,
                         void (*free_owner)(void *owner))
{
    return reconcile_hash(tm_publish_hash(kind), kind, kind, NULL, 1, load, free_owner);
}

static int reconcile_in_env(const char *kind, const char *env, int watch, tm_pub_loader load,
                            void (*free_owner)(void *owner))
{
    char buf[WATCHED_LEN + 16], ready[WATCHED_LEN];
    int w = snprintf(ready, sizeof ready, "%s@%s", kind, env);
    if (w < 0 || (size_t) w >= sizeof ready) {
        return -1;
    }
    return reconcile_hash(hash_for(kind, env, buf, sizeof buf), ready, kind, env, watch, load,
                          free_owner);
}

int tm_publish_reconcile_env(const char *kind, const char *env, tm_pub_loader load,
                             void (*free_owner)(void *owner))
{
    return reconcile_in_env(kind, env, 1, load, free_owner);
}

int tm_publish_fill_env(const char *kind, const char *env, tm_pub_loader load,
                        void (*free_owner)(void *owner))
{
    return reconcile_in_env(kind, env, 0, load, free_owner);
}

/* Drop <hash>@<env> and its readiness; tell the edge. */
static const char drop_lua[] =
    "redis.call('DEL', KEYS[1]) redis.call('SREM', KEYS[2], ARGV[1]) "
    "local v = redis.call('INCR', KEYS[3]) "
    "redis.call('PUBLISH', ARGV[2], cjson.encode({version = v, kind = ARGV[3],"
    " environment = ARGV[4], op = 'resync'})) "
    "return v";

long long tm_publish_drop_env(const char *kind, const char *env)
{
    char buf[WATCHED_LEN + 16], ready[WATCHED_LEN];
    const char *hash = hash_for(kind, env, buf, sizeof buf);
    int w = snprintf(ready, sizeof ready, "%s@%s", kind, env);
    if (hash != buf || !enabled || w < 0 || (size_t) w >= sizeof ready) {
        return -1;
    }
    const char *argv[] = { "EVAL", drop_lua, "3", hash, TM_REDIS_READY, TM_REDIS_VERSION,
                           ready, TM_REDIS_CHANNEL, kind, env };
    size_t lens[10];
    for (int i = 0; i < 10; i++) lens[i] = strlen(argv[i]);
    redisReply *r = command(10, argv, lens);
    if (r == NULL) {
        return -1;
    }
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return v;
}

/* -2: tm:envs not reconciled (cannot tell); else HEXISTS. */
static const char env_known_lua[] =
    "if redis.call('SISMEMBER', KEYS[2], 'env') == 0 then return -2 end "
    "return redis.call('HEXISTS', KEYS[1], ARGV[1])";

int tm_publish_env_known(const char *env)
{
    if (strcmp(env, TM_ENV_DEFAULT) == 0) {
        return 1;
    }
    const char *argv[] = { "EVAL", env_known_lua, "2", TM_REDIS_ENVS, TM_REDIS_READY, env };
    size_t lens[6];
    for (int i = 0; i < 6; i++) lens[i] = strlen(argv[i]);
    redisReply *r = command(6, argv, lens);
    if (r == NULL) {
        return -1;
    }
    int known = r->type == REDIS_REPLY_INTEGER ? (int) r->integer : -2;
    freeReplyObject(r);
    return known < 0 ? -1 : known;
}

static const char env_names_lua[] =
    "if redis.call('SISMEMBER', KEYS[2], 'env') == 0 then return false end "
    "return redis.call('HKEYS', KEYS[1])";

void tm_publish_free_names(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++) {
        free(names[i]);
    }
    free(names);
}

int tm_publish_env_names(char ***names, size_t *n)
{
    const char *argv[] = { "EVAL", env_names_lua, "2", TM_REDIS_ENVS, TM_REDIS_READY };
    size_t lens[5];
    for (int i = 0; i < 5; i++) lens[i] = strlen(argv[i]);
    *names = NULL;
    *n = 0;
    redisReply *r = command(5, argv, lens);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r) freeReplyObject(r);
        return -1;
    }
    *names = calloc(r->elements ? r->elements : 1, sizeof **names);
    int rc = *names ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING || strcmp(e->str, TM_ENV_DEFAULT) == 0
            || !tm_env_name_valid(e->str, e->len)) {
            continue;   /* the default has the plain hashes; junk is skipped */
        }
        if (((*names)[*n] = strdup(e->str)) == NULL) {
            rc = -1;
        } else {
            (*n)++;
        }
    }
    freeReplyObject(r);
    if (rc != 0) {
        tm_publish_free_names(*names, *n);
        *names = NULL;
        *n = 0;
    }
    return rc;
}

/* An admin key (tm:keys) answers 'admin'; a scoped one its v2 record. */
static const char key_lookup_lua[] =
    "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'admin' end "
    "return redis.call('HGET', KEYS[2], ARGV[1])";

int tm_publish_key_lookup(const char *key_hash, tm_scope *scope, char *env, size_t envsize)
{
    const char *argv[] = { "EVAL", key_lookup_lua, "2", TM_REDIS_KEYS, TM_REDIS_KEYS_V2,
                           key_hash };
    size_t lens[6];
    for (int i = 0; i < 6; i++) lens[i] = strlen(argv[i]);
    redisReply *r = command(6, argv, lens);
    if (r == NULL) {
        return -1;
    }
    int found = 0;
    if (r->type == REDIS_REPLY_STRING && strcmp(r->str, "admin") == 0) {
        *scope = TM_SCOPE_ADMIN;
        if (envsize) env[0] = '\0';
        found = 1;
    } else if (r->type == REDIS_REPLY_STRING) {
        found = tm_key_record_parse(r->str, r->len, scope, env, envsize) == 0;
        if (!found) {
            TM_WARN("redis: malformed %s record: the key is refused", TM_REDIS_KEYS_V2);
        }
    }
    freeReplyObject(r);
    return found;
}

static const char key_record_lua[] =
    "local v = redis.call('HGET', KEYS[1], ARGV[1]) "
    "if v then return v end return redis.call('HGET', KEYS[2], ARGV[1])";

char *tm_publish_key_record(const char *key_hash)
{
    const char *argv[] = { "EVAL", key_record_lua, "2", TM_REDIS_KEYS, TM_REDIS_KEYS_V2,
                           key_hash };
    size_t lens[6];
    for (int i = 0; i < 6; i++) lens[i] = strlen(argv[i]);
    redisReply *r = command(6, argv, lens);
    if (r == NULL) {
        return NULL;
    }
    char *out = r->type == REDIS_REPLY_STRING ? strndup(r->str, r->len) : NULL;
    freeReplyObject(r);
    return out;
}

void tm_publish_key_used(const char *key_hash, long long now)
{
    char ts[24];
    snprintf(ts, sizeof ts, "%lld", now);
    const char *argv[] = { "HSET", TM_REDIS_KEYS_USED, key_hash, ts };
    size_t lens[4];
    for (int i = 0; i < 4; i++) lens[i] = strlen(argv[i]);
    redisReply *r = command(4, argv, lens);
    if (r) {
        freeReplyObject(r);
    }
}

/* Remove a use only if it is still the one applied. */
static const char use_done_lua[] =
    "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then"
    " return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";

int tm_publish_take_uses(int (*apply)(const char *key_hash, const char *unix_time))
{
    const char *hargv[] = { "HGETALL", TM_REDIS_KEYS_USED };
    size_t hlens[] = { 7, strlen(TM_REDIS_KEYS_USED) };
    redisReply *all = command(2, hargv, hlens);
    if (all == NULL || all->type != REDIS_REPLY_ARRAY) {
        if (all) freeReplyObject(all);
        return -1;
    }
    int applied = 0;
    for (size_t i = 0; i + 1 < all->elements; i += 2) {
        redisReply *f = all->element[i], *v = all->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING
            || apply(f->str, v->str) != 0) {
            continue;
        }
        applied++;
        const char *argv[] = { "EVAL", use_done_lua, "1", TM_REDIS_KEYS_USED, f->str, v->str };
        size_t lens[6];
        for (int k = 0; k < 6; k++) lens[k] = strlen(argv[k]);
        redisReply *r = command(6, argv, lens);
        if (r) freeReplyObject(r);
    }
    freeReplyObject(all);
    return applied;
}
