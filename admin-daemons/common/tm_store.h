/* The shape the flags and targeting daemons share: one table whose rows are
 * named by a flag name, served as a REST resource (POST/GET on the
 * collection, GET/PUT/DELETE on /<collection>/<name>), behind the API-key
 * check, and published to Redis after every committed write.
 *
 * PostgreSQL serialises each row to JSON with one SQL expression per table;
 * the daemons use that same expression for responses, publication and
 * reconciliation, so Redis and the database compare equal byte for byte. */
#ifndef TM_STORE_H
#define TM_STORE_H
#include "tm_db.h"
#include "tm_http.h"
#include "tm_publish.h"
#include "tm_bodies.h"

#include <jansson.h>

typedef struct tm_store {
    const char *name;         /* daemon name: "flags", "targeting" */
    unsigned default_port;
    const tm_migration *migrations;
    int nmigrations;
    const tm_migration *env_migrations;   /* see tm_daemon.h */
    int nenv_migrations;
    const char *collection;   /* "/flags" */
    const char *kind;         /* publication kind: "flag", "rule" */
    const char *what;         /* for messages: "flag", "targeting rule for flag" */
    /* Per-environment stores (flags, rules) take the environment named by
     * ?environment= or X-TM-Environment (absent: TM_ENV_DEFAULT) as one
     * more parameter, the last, of sql_list, sql_get and sql_delete, and
     * of create and update; the others ignore it. */
    int per_env;
    /* No parameters (per_env: $1 = environment); one row, one column: the
     * JSON array of every row. */
    const char *sql_list;
    /* $1 = name ($2 = environment); one column, the row's JSON; no row
     * when absent. */
    const char *sql_get;
    /* $1 = name ($2 = environment); returns a row when something was deleted. */
    const char *sql_delete;
    /* Reconciliation: every row (of the default environment) as (name, json). */
    const char *sql_load;
    /* per_env: the same for the environment $1, reconciled into
     * <hash>@<env> for each environment env_names() gives. */
    const char *sql_load_env;
    /* per_env: 1 if the (non-default) environment exists, 0 if not, -1
     * when it cannot be told now (503). */
    int (*env_exists)(const char *env);
    /* per_env: the non-default environments (tm_publish_free_names). */
    int (*env_names)(char ***names, size_t *n);
    /* What a POST or PUT body holds, checked by lib/tm_bodies.c (the
     * members allowed, the name: required on create, on update it may
     * repeat the path's name, not change it). */
    tm_body_kind body;
    /* Run the INSERT ... ON CONFLICT DO NOTHING RETURNING <json> (create)
     * or UPDATE ... RETURNING <json> (update) of a checked body through
     * tm_store_write(). b->name is valid; env is the environment (checked;
     * TM_ENV_DEFAULT for stores that are not per_env). */
    void (*create)(const tm_body *b, const char *env, tm_resp *resp);
    void (*update)(const tm_body *b, const char *env, tm_resp *resp);
    /* Optional: publishes a committed row (json NULL: deleted) instead of
     * tm_publish_env(kind, env, name, json); the flags daemon republishes a
     * flag in every environment. */
    void (*publish)(const char *name, const char *env, const char *json);
    /* Optional: serves routes of its own before the generic ones (after the
     * key check): 1 when it answered. */
    int (*special)(const tm_req *req, tm_resp *resp);
    /* Optional: reconciles further hashes (tm:envs) before the stores'. */
    void (*reconcile_extra)(void);
    /* Optional: called before a DELETE; 0 goes on, otherwise resp is
     * filled (e.g. a 409) and nothing is deleted. */
    int (*before_delete)(tm_resp *resp, const char *name);
    /* Optional: a further collection served by the same daemon (the
     * targeting daemon's /segments next to /rules). Only the first store's
     * name, port and migrations are used; each store's kind is reconciled. */
    const struct tm_store *next;
} tm_store;

/* The whole daemon: tm_daemon_main() serving st, with the API-key check
 * (AUTH_SERVICE_URL for the /validate fallback) on every route, routing,
 * the name in the path validated, and reconciliation of st->kind's hash
 * (and of every store chained by next). One call per process. */
int tm_store_main(const tm_store *st, int argc, char **argv);

/* Runs a write whose only column is the row's JSON. No row means the name
 * exists already (create: 409) or does not exist (update: 404). Otherwise
 * publishes the JSON under name in env and answers 201 (create) or 200
 * (update). */
void tm_store_write(const tm_store *st, tm_resp *resp, int create, const char *sql,
                    int nparams, const char *const *params, const char *name,
                    const char *env);

/* The environment a request names (?environment= or X-TM-Environment;
 * absent: TM_ENV_DEFAULT), checked with st->env_exists: 0 with *env set, or
 * -1 with resp filled (400 a bad name, 404 unknown, 503 cannot tell).
 * allow_all admits TM_ENV_ALL. */
int tm_store_request_env(const tm_store *st, const tm_req *req, tm_resp *resp,
                         int allow_all, const char **env);

/* Also used by the auth daemon: */

/* A database status as a JSON error response (503, 409, 400 or 500). */
void tm_store_db_error(tm_resp *resp, tm_db_status s);

/* Reconciliation loader body: sql returns rows of (field, json). Fills the
 * tm_pub_loader outputs; *owner is the PGresult (tm_store_free_result). */
int tm_store_load(const char *sql, tm_pub_item **items, size_t *n, void **owner);
/* The same with parameters. */
int tm_store_load_params(const char *sql, int nparams, const char *const *params,
                         tm_pub_item **items, size_t *n, void **owner);
void tm_store_free_result(void *owner);

#endif
