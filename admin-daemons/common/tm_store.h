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

#include <jansson.h>

typedef struct {
    const char *collection;   /* "/flags" */
    const char *kind;         /* publication kind: "flag", "rule" */
    const char *what;         /* for messages: "flag", "targeting rule" */
    /* No parameters; one row, one column: the JSON array of every row. */
    const char *sql_list;
    /* $1 = name; one column, the row's JSON; no row when absent. */
    const char *sql_get;
    /* $1 = name; returns a row when something was deleted. */
    const char *sql_delete;
    /* The body was checked by the daemon: runs the INSERT ... ON CONFLICT
     * DO NOTHING RETURNING <json> (create) or UPDATE ... RETURNING <json>
     * (update) through tm_store_write(). name is the path's on update. */
    void (*create)(const tm_req *req, tm_resp *resp);
    void (*update)(const tm_req *req, tm_resp *resp, const char *name);
} tm_store;

/* The tm_handler of a resource daemon: ctx is a const tm_store *. Checks the
 * API key on every route, routes, validates the name in the path. */
void tm_store_handle(void *ctx, const tm_req *req, tm_resp *resp);

/* Runs a write whose only column is the row's JSON. No row means the name
 * exists already (create: 409) or does not exist (update: 404). Otherwise
 * publishes the JSON under name and answers 201 (create) or 200 (update). */
void tm_store_write(const tm_store *st, tm_resp *resp, int create, const char *sql,
                    int nparams, const char *const *params, const char *name);

/* A database status as a JSON error response (503, 409, 400 or 500). */
void tm_store_db_error(tm_resp *resp, tm_db_status s);

/* Reconciliation loader body: sql returns rows of (field, json). Fills the
 * tm_pub_loader outputs; *owner is the PGresult (tm_store_free_result). */
int tm_store_load(const char *sql, tm_pub_item **items, size_t *n, void **owner);
void tm_store_free_result(void *owner);

/* --- checks on request bodies; each fills resp with a 400 and returns
 *     -1 (or NULL) on failure --- */

/* Every member of obj is one of allowed (NULL-terminated). */
int tm_json_only(const json_t *obj, const char *const *allowed, tm_resp *resp);

/* An optional boolean member: 1 present (*val set), 0 absent, -1 not a bool. */
int tm_json_opt_bool(const json_t *obj, const char *key, int *val, tm_resp *resp);

/* A required member holding a valid flag name (tm_flag_name_valid). */
const char *tm_json_name(const json_t *obj, const char *key, tm_resp *resp);

/* On update, a name member may repeat the path's name but not change it:
 * 0 when absent or equal. */
int tm_json_same_name(const json_t *obj, const char *key, const char *name,
                      tm_resp *resp);
#endif
