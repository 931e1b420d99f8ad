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
    const char *collection;   /* "/flags" */
    const char *kind;         /* publication kind: "flag", "rule" */
    const char *what;         /* for messages: "flag", "targeting rule for flag" */
    /* No parameters; one row, one column: the JSON array of every row. */
    const char *sql_list;
    /* $1 = name; one column, the row's JSON; no row when absent. */
    const char *sql_get;
    /* $1 = name; returns a row when something was deleted. */
    const char *sql_delete;
    /* Reconciliation: every row as (name, json). */
    const char *sql_load;
    /* What a POST or PUT body holds, checked by lib/tm_bodies.c (the
     * members allowed, the name: required on create, on update it may
     * repeat the path's name, not change it). */
    tm_body_kind body;
    /* Run the INSERT ... ON CONFLICT DO NOTHING RETURNING <json> (create)
     * or UPDATE ... RETURNING <json> (update) of a checked body through
     * tm_store_write(). b->name is valid. */
    void (*create)(const tm_body *b, tm_resp *resp);
    void (*update)(const tm_body *b, tm_resp *resp);
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
 * publishes the JSON under name and answers 201 (create) or 200 (update). */
void tm_store_write(const tm_store *st, tm_resp *resp, int create, const char *sql,
                    int nparams, const char *const *params, const char *name);

/* Also used by the auth daemon: */

/* A database status as a JSON error response (503, 409, 400 or 500). */
void tm_store_db_error(tm_resp *resp, tm_db_status s);

/* Reconciliation loader body: sql returns rows of (field, json). Fills the
 * tm_pub_loader outputs; *owner is the PGresult (tm_store_free_result). */
int tm_store_load(const char *sql, tm_pub_item **items, size_t *n, void **owner);
void tm_store_free_result(void *owner);

#endif
