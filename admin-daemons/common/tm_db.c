#include "tm_db.h"
#include "tm_log.h"
#include "tm_resolve.h"

#include <arpa/inet.h>
#include <netinet/in.h>
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

/* The hosts of DATABASE_URL (a list, host=a,b: libpq tries each in turn),
 * each with its port and, for a name, the resolver of its addresses. */
enum { DB_HOSTS_MAX = 4, DB_ENTRIES_MAX = DB_HOSTS_MAX * TM_ADDRS_MAX, DB_HOST_LEN = 256 };
typedef struct {
    char host[DB_HOST_LEN];
    char port[16];
    tm_resolver *names;    /* a name; NULL: a socket or an IP, given as is */
} db_host;
static db_host hosts[DB_HOSTS_MAX];
static int nhosts;         /* 0: no name to look up: libpq gets the URL alone */

/* Splits a libpq comma-separated list into out (at most max entries of
 * DB_HOST_LEN); the count, or -1 when too many or too long. */
static int split_list(const char *s, char out[][DB_HOST_LEN], int max)
{
    int n = 0;
    for (;;) {
        size_t len = strcspn(s, ",");
        if (n == max || len >= DB_HOST_LEN) {
            return -1;
        }
        snprintf(out[n++], DB_HOST_LEN, "%.*s", (int) len, s);
        if (s[len] == '\0') {
            return n;
        }
        s += len + 1;
    }
}

/* host, port and whether hostaddr or service is set, as libpq will see
 * them: from the connection string, else its PG* variables. A URI or a
 * key=value string is parsed; anything else is a bare database name. */
typedef struct {
    char host[DB_HOSTS_MAX * DB_HOST_LEN], port[DB_HOSTS_MAX * 16];
    int given_elsewhere;   /* hostaddr or a service file decides */
} db_target;

static const char *pick(const char *given, const char *var)
{
    return given && *given ? given : getenv(var);
}

static int target_of(const char *url, db_target *t, char *err, size_t errlen)
{
    const char *host = NULL, *port = NULL, *hostaddr = NULL, *service = NULL;
    PQconninfoOption *opts = NULL;
    memset(t, 0, sizeof *t);
    if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0
        || strchr(url, '=')) {
        char *msg = NULL;
        opts = PQconninfoParse(url, &msg);
        if (opts == NULL) {
            /* libpq's message may quote the string, password included */
            snprintf(err, errlen, "DATABASE_URL is not a connection string libpq accepts");
            PQfreemem(msg);
            return -1;
        }
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            const char **v = strcmp(o->keyword, "host") == 0 ? &host
                             : strcmp(o->keyword, "port") == 0 ? &port
                             : strcmp(o->keyword, "hostaddr") == 0 ? &hostaddr
                             : strcmp(o->keyword, "service") == 0 ? &service : NULL;
            if (v) {
                *v = o->val;
            }
        }
    }
    int had_host = host && *host;
    host = pick(host, "PGHOST");
    port = pick(port, "PGPORT");
    hostaddr = pick(hostaddr, "PGHOSTADDR");
    service = pick(service, "PGSERVICE");
    t->given_elsewhere = (hostaddr && *hostaddr) || (service && *service && !had_host);
    int fits = snprintf(t->host, sizeof t->host, "%s", host ? host : "") < (int) sizeof t->host
               && snprintf(t->port, sizeof t->port, "%s", port ? port : "") < (int) sizeof t->port;
    PQconninfoFree(opts);
    if (!fits) {
        snprintf(err, errlen, "DATABASE_URL: host or port list too long");
        return -1;
    }
    return 0;
}

/* A socket path (libpq: absolute, or @ for the abstract namespace), the
 * default socket (empty) or an IP address: nothing to look up. */
static int needs_lookup(const char *host)
{
    return host[0] != '\0' && host[0] != '/' && host[0] != '@' && !tm_is_ip(host);
}

int tm_db_init(const char *database_url, long resolve_every_s, char *err, size_t errlen)
{
    static char hl[DB_HOSTS_MAX][DB_HOST_LEN], pl[DB_HOSTS_MAX][DB_HOST_LEN];
    db_url = database_url;
    pthread_once(&conn_key_once, make_key);
    db_target t;
    if (target_of(database_url, &t, err, errlen) != 0) {
        return -1;
    }
    if (t.given_elsewhere || (!needs_lookup(t.host) && strchr(t.host, ',') == NULL)) {
        return 0;   /* libpq connects without DNS, or decides alone */
    }
    int nh = split_list(t.host, hl, DB_HOSTS_MAX);
    int np = split_list(t.port, pl, DB_HOSTS_MAX);
    if (nh < 0 || np < 0 || (np != 1 && np != nh)) {
        snprintf(err, errlen, "DATABASE_URL: at most %d hosts, and one port or one per host",
                 DB_HOSTS_MAX);
        return -1;
    }
    for (int i = 0; i < nh; i++) {
        const char *port = *pl[np == 1 ? 0 : i] ? pl[np == 1 ? 0 : i] : "5432";   /* libpq's default */
        char *end;
        long pn = strtol(port, &end, 10);
        if (*end || pn < 1 || pn > 65535) {
            snprintf(err, errlen, "DATABASE_URL: bad port \"%.16s\"", port);
            tm_db_shutdown();
            return -1;
        }
        db_host *h = &hosts[nhosts++];
        snprintf(h->host, sizeof h->host, "%s", hl[i]);
        snprintf(h->port, sizeof h->port, "%ld", pn);
        if (needs_lookup(h->host)) {
            h->names = tm_resolver_start("database", h->host, (int) pn, resolve_every_s,
                                         err, errlen);
            if (h->names == NULL) {
                tm_db_shutdown();
                return -1;
            }
        }
    }
    return 0;
}

void tm_db_shutdown(void)
{
    for (int i = 0; i < nhosts; i++) {
        tm_resolver_stop(hosts[i].names);
        hosts[i].names = NULL;
    }
    nhosts = 0;
}

/* After a failed connection: the names may point elsewhere now. */
static void refresh_hosts(void)
{
    for (int i = 0; i < nhosts; i++) {
        if (hosts[i].names) {
            tm_resolver_refresh(hosts[i].names);
        }
    }
}

/* Appends "item" to a comma-separated list. */
static void list_add(char *list, size_t size, const char *item)
{
    size_t used = strlen(list);
    snprintf(list + used, size - used, "%s%s", used ? "," : "", item);
}

static int addr_text(const struct sockaddr_storage *sa, char *buf, size_t size)
{
    const void *a = sa->ss_family == AF_INET ? (const void *) &((const struct sockaddr_in *) sa)->sin_addr
                    : (const void *) &((const struct sockaddr_in6 *) sa)->sin6_addr;
    return inet_ntop(sa->ss_family, a, buf, (socklen_t) size) ? 0 : -1;
}

/* Connects: with names, libpq gets one host/hostaddr/port entry per cached
 * address, so it never resolves; NULL with why filled when no name has an
 * address yet. */
static PGconn *connect_db(char *why, size_t whylen)
{
    char hl[DB_ENTRIES_MAX * (DB_HOST_LEN + 1)] = "", al[DB_ENTRIES_MAX * (INET6_ADDRSTRLEN + 1)] = "";
    char pl[DB_ENTRIES_MAX * 16] = "";
    int entries = 0;
    for (int i = 0; i < nhosts; i++) {
        const db_host *h = &hosts[i];
        tm_addr_list l = { 0 };
        if (h->names) {
            tm_resolver_get(h->names, &l);
        }
        for (int k = 0; k < (h->names ? l.n : 1); k++) {
            char ip[INET6_ADDRSTRLEN] = "";
            if (h->names && addr_text(&l.sa[k], ip, sizeof ip) != 0) {
                continue;
            }
            list_add(hl, sizeof hl, h->host);
            list_add(al, sizeof al, ip);   /* "": libpq uses host as is */
            list_add(pl, sizeof pl, h->port);
            entries++;
        }
    }
    if (nhosts && entries == 0) {
        snprintf(why, whylen, "database host %.200s not resolved yet", hosts[0].host);
        return NULL;
    }
    /* dbname first: what it expands to is overridden by what follows */
    const char *keys[] = { "dbname", "connect_timeout", "application_name",
                           "host", "hostaddr", "port", NULL };
    const char *vals[] = { db_url, "3", "togglemaster", hl, al, pl, NULL };
    if (nhosts == 0) {
        keys[3] = NULL;
    }
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL) {
        snprintf(why, whylen, "out of memory");
    }
    return c;
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
    conn = connect_db(line, sizeof line);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        /* The message may include the host but never a password. */
        TM_WARN("database: cannot connect: %s",
                conn ? first_line(line, sizeof line, PQerrorMessage(conn)) : line);
        tm_db_close();
        refresh_hosts();
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
        refresh_hosts();
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
