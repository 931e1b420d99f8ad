#include "tm_db.h"
#include "tm_log.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *db_url;
static _Thread_local PGconn *conn;
static _Thread_local int in_tx;   /* tm_db_begin() .. commit/rollback */
/* A key whose destructor closes a thread's connection when the HTTP layer's
 * threads exit, so a stop leaves no connection (and no leak) behind. */
static pthread_key_t conn_key;
static pthread_once_t conn_key_once = PTHREAD_ONCE_INIT;

static void close_at_thread_exit(void *c)
{
    PQfinish(c);
}

static void make_key(void)
{
    pthread_key_create(&conn_key, close_at_thread_exit);
}

void tm_db_init(const char *database_url)
{
    db_url = database_url;
    pthread_once(&conn_key_once, make_key);
}

void tm_db_close(void)
{
    if (conn) {
        PQfinish(conn);
        conn = NULL;
        pthread_setspecific(conn_key, NULL);
    }
}

/* The first line of a libpq message, in buf (strtok would write into
 * libpq's string and is not thread-safe). */
static const char *first_line(char *buf, size_t size, const char *msg)
{
    snprintf(buf, size, "%.*s", (int) strcspn(msg ? msg : "", "\n"), msg ? msg : "");
    return buf;
}

/* 1 when an idle connection looks alive. Between statements the server
 * sends nothing we asked for, so anything readable (its "terminating
 * connection" error, EOF, a reset) means it closed the connection: polled
 * without blocking, before a statement is sent. A false alarm only costs a
 * new connection. */
static int idle_alive(PGconn *c)
{
    struct pollfd p = { .fd = PQsocket(c), .events = POLLIN };
    if (PQstatus(c) != CONNECTION_OK || p.fd < 0) {
        return 0;
    }
    return poll(&p, 1, 0) == 0;
}

/* A connection, checked before anything is sent on it: one the server
 * closed while idle (restart, failover, pg_terminate_backend) is replaced,
 * the statement not having run. */
static PGconn *get_conn(void)
{
    char line[256];
    if (conn && idle_alive(conn)) {
        return conn;
    }
    tm_db_close();
    if (in_tx) {
        return NULL;   /* the transaction died with its connection */
    }
    const char *keys[] = { "dbname", "connect_timeout", "application_name", NULL };
    const char *vals[] = { db_url, "3", "togglemaster", NULL };
    conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        /* The message may include the host but never a password. */
        TM_WARN("database: cannot connect: %s",
                conn ? first_line(line, sizeof line, PQerrorMessage(conn)) : "out of memory");
        tm_db_close();
        return NULL;
    }
    pthread_setspecific(conn_key, conn);
    return conn;
}

static tm_db_status classify(PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state == NULL) {
        return TM_DB_UNAVAILABLE;
    }
    if (strcmp(state, "23505") == 0) {
        return TM_DB_CONFLICT;
    }
    /* Class 22 (data exception) and 23 (integrity) are the client's data. */
    if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0) {
        return TM_DB_BAD_INPUT;
    }
    /* Class 08 (connection), 57 (operator intervention: shutdown), 53 (resources). */
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0
        || strncmp(state, "53", 2) == 0) {
        return TM_DB_UNAVAILABLE;
    }
    return TM_DB_ERROR;
}

tm_db_status tm_db_exec(const char *sql, int nparams, const char *const *params,
                        PGresult **out)
{
    char line[256];
    *out = NULL;
    PGconn *c = get_conn();
    if (c == NULL) {
        return TM_DB_UNAVAILABLE;
    }
    PGresult *res = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        *out = res;
        return TM_DB_OK;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        /* Lost while the statement was out: it may have committed, so it
         * is not run again (a POST would answer 409, a DELETE 404). The
         * caller answers 503; the next statement gets a new connection. */
        TM_WARN("database: connection lost during a statement: %s",
                first_line(line, sizeof line, PQerrorMessage(c)));
        PQclear(res);
        tm_db_close();
        return TM_DB_UNAVAILABLE;
    }
    tm_db_status s = classify(res);
    if (s == TM_DB_ERROR || s == TM_DB_UNAVAILABLE) {
        TM_ERROR("database: %s", first_line(line, sizeof line, PQresultErrorMessage(res)));
    }
    PQclear(res);
    return s;
}

tm_db_status tm_db_begin(void)
{
    PGresult *res;
    tm_db_status s = tm_db_exec("BEGIN", 0, NULL, &res);
    if (s == TM_DB_OK) {
        PQclear(res);
        in_tx = 1;
    }
    return s;
}

void tm_db_rollback(void)
{
    if (!in_tx) {
        return;   /* ended already: nothing to roll back */
    }
    in_tx = 0;
    if (conn && PQstatus(conn) == CONNECTION_OK) {
        PQclear(PQexec(conn, "ROLLBACK"));
    }
}

tm_db_status tm_db_commit(void)
{
    PGresult *res;
    tm_db_status s = tm_db_exec("COMMIT", 0, NULL, &res);
    in_tx = 0;
    if (s == TM_DB_OK) {
        /* A COMMIT of a transaction that had failed answers ROLLBACK. */
        int rolled_back = strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
        PQclear(res);
        return rolled_back ? TM_DB_ERROR : TM_DB_OK;
    }
    tm_db_rollback();
    return s;
}

int tm_db_ping(void)
{
    PGresult *res;
    if (tm_db_exec("SELECT 1", 0, NULL, &res) != TM_DB_OK) {
        return 0;
    }
    PQclear(res);
    return 1;
}

static int run(PGconn *c, const char *sql, int n, const char *const *p)
{
    char line[256];
    PGresult *res = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        TM_ERROR("migration: %s", first_line(line, sizeof line, PQresultErrorMessage(res)));
    }
    PQclear(res);
    return ok ? 0 : -1;
}

int tm_db_migrate(const char *component, const tm_migration *m, int n)
{
    PGconn *c = get_conn();
    if (c == NULL) {
        return -1;
    }
    if (run(c, "BEGIN", 0, NULL) != 0
        || run(c, "SELECT pg_advisory_xact_lock(7464776)", 0, NULL) != 0
        || run(c, "CREATE TABLE IF NOT EXISTS tm_schema_migrations ("
                  " component text NOT NULL, version integer NOT NULL,"
                  " applied_at timestamptz NOT NULL DEFAULT now(),"
                  " PRIMARY KEY (component, version))", 0, NULL) != 0) {
        run(c, "ROLLBACK", 0, NULL);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char ver[16];
        snprintf(ver, sizeof ver, "%d", m[i].version);
        const char *p[] = { component, ver };
        PGresult *res = PQexecParams(c, "SELECT 1 FROM tm_schema_migrations"
                                        " WHERE component = $1 AND version = $2",
                                     2, NULL, p, NULL, NULL, 0);
        int done = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
        int failed = PQresultStatus(res) != PGRES_TUPLES_OK;
        PQclear(res);
        if (failed) {
            run(c, "ROLLBACK", 0, NULL);
            return -1;
        }
        if (done) {
            continue;
        }
        if (run(c, m[i].sql, 0, NULL) != 0
            || run(c, "INSERT INTO tm_schema_migrations (component, version)"
                      " VALUES ($1, $2)", 2, p) != 0) {
            run(c, "ROLLBACK", 0, NULL);
            return -1;
        }
        TM_INFO("migration %s/%d applied", component, m[i].version);
    }
    return run(c, "COMMIT", 0, NULL);
}
