/* Publication of committed objects to Redis for the edge (docs/redis-layout.md).
 * Redis is a copy: when it is down, writes still succeed and reconciliation
 * repairs it later, so every call here is best effort and never blocks long. */
#ifndef TM_PUBLISH_H
#define TM_PUBLISH_H
#include "tm_redis_keys.h"
#include "tm_scope.h"

#include <stddef.h>

/* The keys are lib/tm_redis_keys.h's, in the mode REDIS_CLUSTER says
 * (1: Redis Cluster, every key in the slot of {tm}; 0 or unset: the
 * standalone tm: keys). tm:ready, a set of the kinds reconciled into this
 * Redis since it started (or was flushed), lets the edge take only a hash
 * whose kind is listed, so a restarted, empty or half-refilled Redis never
 * replaces a good snapshot with a partial one.
 *
 * In cluster mode a MOVED reply is followed (the node that owns the slot
 * serves the process's next connections) and an ASK is answered on that
 * node with ASKING, at most TM_PUBLISH_HOPS redirects per command.
 *
 * 0 on success; -1 if REDIS_URL is malformed, REDIS_CLUSTER is not 0 or 1,
 * or cluster mode is asked with a database other than 0. NULL or ""
 * disables Redis. */
int tm_publish_init(const char *redis_url);

#define TM_PUBLISH_HOPS 5

/* Sets hash[field] = json (upsert) or deletes it (json == NULL), bumps
 * tm:version and notifies tm:changes, atomically. Returns the new version,
 * or -1 if Redis could not be reached (logged). kind: "flag", "rule", "key",
 * "segment". */
long long tm_publish(const char *kind, const char *field, const char *json);

/* The same in one environment: env NULL or TM_ENV_DEFAULT is tm_publish();
 * otherwise the hash is <hash>@<env> (kinds "flag" and "rule") and the
 * message carries "environment":env. */
long long tm_publish_env(const char *kind, const char *env, const char *field,
                         const char *json);

/* An environment was deleted: drops <hash>@<env> and its tm:ready entry,
 * bumps the version and publishes a resync of kind in env. -1 if Redis
 * could not be reached (reconciliation does not recreate it: the
 * environment is gone). */
long long tm_publish_drop_env(const char *kind, const char *env);

/* Whether environment env exists, as tm:envs says: 1 yes (always for the
 * default), 0 no, -1 cannot tell (Redis unreachable, or tm:envs not
 * reconciled yet: the flags daemon owns it). */
int tm_publish_env_known(const char *env);

/* The non-default environments tm:envs lists: 0 with a malloc'd array of
 * malloc'd names (tm_publish_free_names); -1 when it cannot tell (as above). */
int tm_publish_env_names(char ***names, size_t *n);
void tm_publish_free_names(char **names, size_t n);

/* One row of the source of truth, for reconciliation. */
typedef struct {
    const char *field;
    const char *json;
} tm_pub_item;

/* Loads the source of truth: fills *items (malloc'd array; strings owned by
 * *owner, released with free_owner). 0 on success, -1 on failure. */
typedef int (*tm_pub_loader)(tm_pub_item **items, size_t *n, void **owner);

/* Makes the hash equal to what load() returns: HSET missing or changed
 * fields, HDEL extra ones. Redis is read *before* the database and every
 * fix is a compare-and-set, so a write racing with reconciliation is never
 * overwritten by an older row. If anything changed, bumps the version and
 * publishes a resync. Returns fields changed, or -1 (Redis or DB down). */
int tm_publish_reconcile(const char *kind, tm_pub_loader load,
                         void (*free_owner)(void *owner));

/* The key whose hash is key_hash: 1 found with *scope (admin in tm:keys, or
 * a tm:keys:v2 record, env filled for server and client keys), 0 unknown or
 * a malformed record, -1 Redis unreachable. One round trip. */
int tm_publish_key_lookup(const char *key_hash, tm_scope *scope, char *env, size_t envsize);
/* The record the auth daemon published for an active key (its id and name
 * as JSON, never the key or its hash), malloc'd; NULL when Redis does not
 * know the key or cannot be asked. For the audit trail's actor. */
char *tm_publish_key_record(const char *key_hash);

/* Notes that the key was used now (HSET tm:keys:used <hash> <unix time>);
 * callers rate-limit it. Best effort. */
void tm_publish_key_used(const char *key_hash, long long now);

/* Folds tm:keys:used into the database: apply(hash, unix_time) for each
 * field; a field applied (apply returned 0) is removed unless a newer use
 * replaced it meanwhile. Returns how many were applied, or -1. */
int tm_publish_take_uses(int (*apply)(const char *key_hash, const char *unix_time));

/* Same as tm_publish_reconcile in one environment (env not the default):
 * the hash <hash>@<env>, the tm:ready kind "<kind>@<env>". */
int tm_publish_reconcile_env(const char *kind, const char *env, tm_pub_loader load,
                             void (*free_owner)(void *owner));

/* The same for a new environment, from a request's thread: the kind is
 * marked ready but not watched (the next round watches it). */
int tm_publish_fill_env(const char *kind, const char *env, tm_pub_loader load,
                        void (*free_owner)(void *owner));

/* Starts a reconciliation round: the kinds watched by tm_publish_all_ready()
 * become those reconciled from now on (an environment deleted since the
 * last round is no longer watched). */
void tm_publish_reconcile_begin(void);

/* HEXISTS hash field: 1 present, 0 absent, -1 Redis unreachable. */
int tm_publish_hexists(const char *hash, const char *field);

/* The fields of hash (HKEYS), sorted bytewise: *fields is a malloc'd array
 * of malloc'd strings (free each, then the array). 0, or -1 when Redis is
 * unreachable or on OOM. */
int tm_publish_hkeys(const char *hash, char ***fields, size_t *n);

/* 1 when every kind this process reconciles is listed in tm:ready (or Redis
 * is unreachable: nothing to do now); 0 when Redis lost one (restart, flush)
 * and a reconciliation should run at once. */
int tm_publish_all_ready(void);

/* Closes the calling thread's connection. */
void tm_publish_close(void);

/* Redis hash name for a kind ("flag", "rule", "key", "segment", "env",
 * "key2"), in the mode tm_publish_init chose, or NULL. */
const char *tm_publish_hash(const char *kind);
#endif
