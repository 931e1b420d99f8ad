/* The Redis key schema the admin daemons write and the nginx module reads
 * (docs/redis-layout.md), defined once for both, and the cluster replies
 * both follow (MOVED, ASK).
 *
 * Two modes:
 * - standalone: the keys as they always were, "tm:flags", "tm:version"...
 *   (old edges and existing Redis data read them);
 * - cluster (Redis Cluster, ElastiCache Serverless): the same names with
 *   the hash tag "{tm}" ("{tm}:flags"), so every key hashes to one slot and
 *   every script (EVAL over several keys) and transaction (MULTI/EXEC)
 *   stays single-slot instead of failing with CROSSSLOT.
 * Both sides must use the same mode: the daemons read REDIS_CLUSTER=1, the
 * module "togglemaster_redis <url> cluster". A cluster has database 0 only.
 *
 * The channel is "tm:changes" in both modes: classic pub/sub is not keyed,
 * and a cluster broadcasts a PUBLISH to every node, so a subscriber may be
 * connected to any node.
 */
#ifndef TM_REDIS_KEYS_H
#define TM_REDIS_KEYS_H

#include <stddef.h>

#define TM_REDIS_CHANNEL "tm:changes"

typedef enum {
    TM_RKEY_VERSION,      /* string: INCR on every change */
    TM_RKEY_FLAGS,        /* hash: flag name -> JSON */
    TM_RKEY_RULES,        /* hash: flag name -> rules JSON */
    TM_RKEY_KEYS,         /* hash: admin key hash -> record */
    TM_RKEY_SEGMENTS,     /* hash: segment name -> JSON */
    TM_RKEY_ENVS,         /* hash: environment name -> record */
    TM_RKEY_KEYS_V2,      /* hash: scoped key hash -> record */
    TM_RKEY_KEYS_USED,    /* hash: key hash -> unix time of last use */
    TM_RKEY_READY,        /* set: kinds reconciled since Redis started */
    /* an environment's hash is the prefix followed by its name,
     * "tm:flags@staging"; the default environment's is TM_RKEY_FLAGS */
    TM_RKEY_FLAGS_AT,
    TM_RKEY_RULES_AT,
    TM_RKEY_COUNT
} tm_redis_key;

/* The key's name in the mode (cluster: 0 standalone, 1 cluster); a static
 * string. NULL for a value out of range. */
const char *tm_redis_key_name(tm_redis_key key, int cluster);

/* The cluster slot of a key (Redis Cluster's CRC16, XMODEM, of the key or
 * of its {hash tag}), 0..16383. */
unsigned tm_redis_key_slot(const char *key, size_t len);

/* A redirect from a cluster node: "MOVED <slot> <host>:<port>" (the slot
 * lives there now: go there for good) or "ASK <slot> <host>:<port>" (this
 * one command: send ASKING then the command there). */
typedef struct {
    int ask;                  /* 1 ASK, 0 MOVED */
    unsigned slot;
    char host[256];           /* an IP address or a name, no brackets;
                               * "" when the node said ":<port>": the
                               * host of the connection that got it */
    int port;
} tm_redis_redirect;

/* Reads the text of an error reply (without the leading '-'). 1 when it is
 * a well-formed MOVED or ASK, filling *out; 0 when it is another error;
 * -1 when it starts with MOVED or ASK but the rest is malformed (slot over
 * 16383, port out of 1..65535, a host too long or "?" (a node that does
 * not know the address), trailing text). */
int tm_redis_redirect_parse(const char *err, size_t len, tm_redis_redirect *out);

#endif
