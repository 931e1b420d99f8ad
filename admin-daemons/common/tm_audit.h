/* The audit trail (docs/audit.md): every change an admin daemon makes is
 * recorded in its own database's audit_log, in the same transaction as the
 * change, with who made it, from where, and the object before and after.
 *
 * The HTTP layer serves one request per thread at a time, so the request's
 * context (request id, client address, actor) is kept per thread:
 * tm_audit_request() at the start of each request, the actor once the key
 * or master key is checked, then tm_audit_record() inside the change's
 * transaction (tm_db_begin). Never stored: a key, a key hash, the master key.
 */
#ifndef TM_AUDIT_H
#define TM_AUDIT_H
#include "tm_db.h"
#include "tm_http.h"

/* The schema, recorded under the component "<daemon>-audit" so the
 * original components' migration lists stay as they were. */
extern const tm_migration tm_audit_migrations[];
extern const int tm_audit_nmigrations;

/* The records are the daemon's (a column names it, so daemons sharing one
 * database, as in the tests, still each serve their own). Reads TM_TRUSTED_PROXIES (comma-separated addresses or CIDR networks
 * whose X-Forwarded-For is believed) and TM_AUDIT_RETENTION_DAYS
 * (default 365). -1 with a message logged when either is malformed. */
int tm_audit_init(const char *daemon_name);

/* Starts a request's context: the request id (X-Request-Id when it is 1 to
 * 128 printable ASCII bytes, else a new UUID), the client address (the
 * socket peer, or the nearest address in X-Forwarded-For that is not a
 * trusted proxy when the peer is one), no actor yet. */
void tm_audit_request(const tm_req *req);
/* The actor is the key tm_apikey_check() accepted for this request (its
 * id and name are looked up from the auth daemon's publication when a
 * record is written), or the master key once this is called. */
void tm_audit_actor_master(void);

/* Inserts the record inside the caller's open transaction. before and
 * after are JSON texts or NULL (created: no before; deleted: no after);
 * env may be NULL for objects without an environment (keys, segments). */
tm_db_status tm_audit_record(const char *action, const char *kind, const char *name,
                             const char *env, const char *before, const char *after);

/* One change to apply with its record. */
typedef struct {
    const char *action;       /* "create", "update", "delete", "revoke", "promote" ... */
    const char *kind;         /* "flag", "rule", "segment", "environment", "key" */
    /* The object's name; NULL: the "name" member of the after (else
     * before) JSON. Given, writers of one object are serialised by a
     * transaction-scoped advisory lock, so the before image is the one the
     * change replaced. */
    const char *name;
    const char *env;          /* NULL when the object has none */
    /* Optional: one row, its first column the object as it is before. */
    const char *before_sql;
    int nbefore;
    const char *const *before_params;
    /* The change; it changed something when it returns a row. */
    const char *sql;
    int nparams;
    const char *const *params;
    int after_col;            /* the column of that row holding the after JSON; -1: none */
    /* Optional, instead of after_col: one row, its first column the object
     * after the change, read after it (a statement's own final SELECT sees
     * the tables as they were before its data-modifying WITH parts). */
    const char *after_sql;
    int nafter;
    const char *const *after_params;
} tm_audit_change;

/* Runs c->before_sql, c->sql and the record in one transaction: both
 * commit or neither. No row from c->sql: nothing changed, nothing is
 * recorded, the transaction rolled back. A before and after that are the
 * same text: committed, not recorded. On TM_DB_OK *out holds c->sql's
 * result (PQclear it); otherwise NULL. */
tm_db_status tm_audit_apply(const tm_audit_change *c, PGresult **out);

/* GET /audit: filters kind, name, actor (a key's name or id, or
 * "master key"), environment, since, until (RFC 3339), cursor (from the
 * previous page's next_cursor), limit (1..1000, default 100). Newest first:
 * {"records": [...], "next_cursor": "<id>" or null}. */
void tm_audit_get(const tm_req *req, tm_resp *resp);

/* Deletes records, and webhook deliveries no longer pending, older than
 * the retention, 1000 rows per statement so no lock is held long; does the
 * work at most once a minute (call it often). */
void tm_audit_prune(void);
#endif
