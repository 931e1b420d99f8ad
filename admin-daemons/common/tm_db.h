/* PostgreSQL access for the daemons: one connection per HTTP thread, opened
 * lazily, re-opened after a failure, plus versioned schema migrations.
 * A database host given by name (DATABASE_URL, or PGHOST when the URL has
 * none) is looked up by a resolver thread (tm_resolve.h), never by a request
 * thread: connections get its addresses as libpq's hostaddr, next to host
 * (which TLS verify-full still checks). */
#ifndef TM_DB_H
#define TM_DB_H
#include <libpq-fe.h>
#include <stddef.h>

typedef enum {
    TM_DB_OK = 0,
    TM_DB_UNAVAILABLE,     /* cannot reach the database: answer 503 */
    TM_DB_CONFLICT,        /* unique violation: answer 409 */
    TM_DB_BAD_INPUT,       /* the database rejected the data: answer 400 */
    TM_DB_ERROR            /* anything else: answer 500 and log */
} tm_db_status;

/* database_url: a libpq URI (postgresql://...), a key=value string, or a
 * bare database name; libpq's PG* variables fill what it leaves out.
 * Starts a resolver thread per host name (re-resolving every
 * resolve_every_s seconds, and soon after a connection to the cached
 * addresses fails). 0, or -1 with err filled (never the password): not a
 * connection string libpq accepts, or a thread that did not start. */
int tm_db_init(const char *database_url, long resolve_every_s, char *err, size_t errlen);

/* Stops the resolver threads (after the HTTP threads stopped). */
void tm_db_shutdown(void);

/* Runs a parameterised statement on this thread's connection. A host name
 * not resolved yet gives TM_DB_UNAVAILABLE at once. On TM_DB_OK
 * *out holds the result (PQclear it). A connection the server closed while
 * idle is replaced before sending; one lost while the statement was out
 * gives TM_DB_UNAVAILABLE, never a second run (it may have committed). */
tm_db_status tm_db_exec(const char *sql, int nparams, const char *const *params,
                        PGresult **out);

/* A transaction on this thread's connection, so that a change and its
 * audit record (tm_audit.h) commit together or not at all. While one is
 * open, a connection found dead is not replaced (the next statement would
 * run outside the transaction): tm_db_exec answers TM_DB_UNAVAILABLE.
 * Every tm_db_begin() that returned TM_DB_OK is ended by tm_db_commit()
 * or tm_db_rollback(); a failed commit has rolled back (or, connection
 * lost, may have committed: the caller answers 503 as for any statement). */
tm_db_status tm_db_begin(void);
tm_db_status tm_db_commit(void);
void tm_db_rollback(void);

/* 1 if a trivial query succeeds. */
int tm_db_ping(void);

typedef struct {
    int version;
    const char *sql;
} tm_migration;

/* Applies the component's migrations not yet recorded, under an advisory lock
 * so that replicas starting together do not race. 0 on success. */
int tm_db_migrate(const char *component, const tm_migration *m, int n);

/* Closes this thread's connection (at thread or process exit). */
void tm_db_close(void);
#endif
