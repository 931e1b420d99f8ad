/* Publication of committed objects to Redis for the edge (docs/redis-layout.md).
 * Redis is a copy: when it is down, writes still succeed and reconciliation
 * repairs it later, so every call here is best effort and never blocks long. */
#ifndef TM_PUBLISH_H
#define TM_PUBLISH_H
#include <stddef.h>

#define TM_REDIS_FLAGS "tm:flags"
#define TM_REDIS_RULES "tm:rules"
#define TM_REDIS_KEYS "tm:keys"
#define TM_REDIS_SEGMENTS "tm:segments"
#define TM_REDIS_VERSION "tm:version"
#define TM_REDIS_CHANNEL "tm:changes"
/* Set of kinds reconciled into this Redis since it started (or was flushed):
 * the edge only takes a hash whose kind is listed, so a restarted, empty or
 * half-refilled Redis never replaces a good snapshot with a partial one. */
#define TM_REDIS_READY "tm:ready"

/* 0 on success; -1 if REDIS_URL is malformed. NULL or "" disables Redis. */
int tm_publish_init(const char *redis_url);

/* Sets hash[field] = json (upsert) or deletes it (json == NULL), bumps
 * tm:version and notifies tm:changes, atomically. Returns the new version,
 * or -1 if Redis could not be reached (logged). kind: "flag", "rule", "key",
 * "segment". */
long long tm_publish(const char *kind, const char *field, const char *json);

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

/* HEXISTS tm:keys <hash>: 1 present, 0 absent, -1 Redis unreachable. */
int tm_publish_key_known(const char *key_hash);

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

/* Redis hash name for a kind, or NULL. */
const char *tm_publish_hash(const char *kind);
#endif
