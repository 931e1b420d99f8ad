/* API-key scopes (docs/environments.md): what a key may do, and the one
 * place that reads a key record of tm:keys:v2, for the daemons' key checks
 * and the edge alike.
 *   admin     every admin route, every environment (keys without a scope)
 *   readonly  GET on the admin API
 *   server    evaluation in exactly one environment
 *   client    OFREP in exactly one environment, client-visible flags only */
#ifndef TM_SCOPE_H
#define TM_SCOPE_H
#include <stddef.h>

typedef enum {
    TM_SCOPE_ADMIN = 0,
    TM_SCOPE_READONLY,
    TM_SCOPE_SERVER,
    TM_SCOPE_CLIENT
} tm_scope;

/* "admin", "readonly", "server", "client". */
const char *tm_scope_name(tm_scope s);

/* 0 with *out set when s[0..len) names a scope exactly; -1 otherwise. */
int tm_scope_parse(const char *s, size_t len, tm_scope *out);

/* 1 for the evaluation scopes (server, client), which belong to exactly one
 * environment; 0 for admin and readonly, which have none. */
int tm_scope_has_environment(tm_scope s);

/* A tm:keys:v2 value {"id":N,"name":"..","scope":"..","environment":".."|null}.
 * 0 with *scope set and the environment copied into env (NUL-terminated; ""
 * when null) when it is an object without duplicate members whose scope is
 * a known non-admin scope and whose environment is a valid environment name
 * exactly when the scope needs one; -1 (malformed: the key is refused). */
int tm_key_record_parse(const char *json, size_t len, tm_scope *scope,
                        char *env, size_t envsize);
#endif
