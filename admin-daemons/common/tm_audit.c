#include "tm_audit.h"
#include "tm_apikey.h"
#include "tm_buf.h"
#include "tm_env.h"
#include "tm_events.h"
#include "tm_log.h"
#include "tm_publish.h"
#include "tm_rules_int.h"   /* tm_parse_ip, tm_parse_cidr, tm_parse_date */
#include "tm_sql.h"
#include "tm_webhooks.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const tm_migration tm_audit_migrations[] = {
    /* json, not jsonb: before and after stay the exact texts the API served. */
    { 1, "CREATE TABLE IF NOT EXISTS audit_log ("
         " id BIGSERIAL PRIMARY KEY,"
         " service TEXT NOT NULL,"
         " at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),"
         " actor_id INTEGER,"
         " actor_name TEXT NOT NULL,"
         " action TEXT NOT NULL,"
         " kind TEXT NOT NULL,"
         " name TEXT NOT NULL,"
         " environment TEXT,"
         " before JSON,"
         " after JSON,"
         " request_id TEXT NOT NULL,"
         " client_address TEXT)" },
    /* Retention deletes by age; pages are read newest first per service,
     * the filters most asked for are by object. */
    { 2, "CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at)" },
    { 3, "CREATE INDEX IF NOT EXISTS audit_log_service ON audit_log (service, id)" },
    { 4, "CREATE INDEX IF NOT EXISTS audit_log_object ON audit_log (service, kind, name, id)" },
    { 5, TM_WEBHOOKS_SQL_ENDPOINTS },
    { 6, TM_WEBHOOKS_SQL_OUTBOX },
    { 7, TM_WEBHOOKS_SQL_OUTBOX_INDEX },
    { 8, TM_WEBHOOKS_SQL_OUTBOX_PENDING_INDEX },
};
const int tm_audit_nmigrations = sizeof tm_audit_migrations / sizeof tm_audit_migrations[0];

#define MASTER_ACTOR "master key"
#define UNKNOWN_ACTOR "unknown key"

enum { MAX_PROXIES = 64, REQUEST_ID_MAX = 128, ADDR_MAX = 64 };
static tm_cidr proxies[MAX_PROXIES];
static size_t nproxies;
static long retention_days = 365;
static const char *service = "";

static _Thread_local struct {
    char request_id[REQUEST_ID_MAX + 1];
    char client[ADDR_MAX];
    int master;
    int resolved;          /* actor_id and actor_name are set */
    char actor_id[24], actor_name[256];
} ctx;

int tm_audit_init(const char *daemon_name)
{
    service = daemon_name;
    retention_days = tm_env_long("TM_AUDIT_RETENTION_DAYS", 365, 1, 36500);
    const char *s = tm_env("TM_TRUSTED_PROXIES", "");
    nproxies = 0;
    while (*s) {
        size_t n = strcspn(s, ",");
        const char *p = s;
        size_t len = n;
        while (len && *p == ' ') { p++; len--; }
        while (len && p[len - 1] == ' ') len--;
        if (len) {
            if (nproxies == MAX_PROXIES || tm_parse_cidr(p, len, &proxies[nproxies]) != 0) {
                TM_ERROR("TM_TRUSTED_PROXIES: \"%.*s\" is not an address or CIDR network"
                         " (at most %d of them)", (int) len, p, MAX_PROXIES);
                return -1;
            }
            nproxies++;
        }
        s += n + (s[n] == ',');
    }
    return 0;
}

static int trusted(const char *addr, size_t len)
{
    unsigned char a[16];
    int v6;
    if (tm_parse_ip(addr, len, a, &v6) != 0) {
        return 0;
    }
    for (size_t i = 0; i < nproxies; i++) {
        if (tm_cidr_contains(&proxies[i], a, v6)) {
            return 1;
        }
    }
    return 0;
}

static void peer_address(const tm_req *req, char *out, size_t size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    out[0] = '\0';
    if (ci == NULL || ci->client_addr == NULL) {
        return;
    }
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *) (const void *) sa)->sin_addr, out,
                  (socklen_t) size);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) (const void *) sa)->sin6_addr, out,
                  (socklen_t) size);
    }
}

/* From the right of X-Forwarded-For, each hop appended by a trusted proxy
 * is skipped: the first address that is not a proxy is the client. A hop
 * that is not an address ends the walk (what is left of it is forgeable). */
static void forwarded_client(const char *xff, char *out, size_t size)
{
    size_t end = strlen(xff);
    while (end > 0) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',') start--;
        const char *p = xff + start;
        size_t len = end - start;
        while (len && *p == ' ') { p++; len--; }
        while (len && p[len - 1] == ' ') len--;
        unsigned char a[16];
        int v6;
        if (len == 0 || len >= size || tm_parse_ip(p, len, a, &v6) != 0) {
            return;
        }
        snprintf(out, size, "%.*s", (int) len, p);
        if (!trusted(p, len)) {
            return;
        }
        end = start ? start - 1 : 0;
    }
}

static int printable(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        if ((unsigned char) s[n] < 0x21 || (unsigned char) s[n] > 0x7e) return 0;
    }
    return n > 0 && n <= REQUEST_ID_MAX;
}

void tm_audit_request(const tm_req *req)
{
    memset(&ctx, 0, sizeof ctx);
    const char *rid = tm_req_header(req, "X-Request-Id");
    if (rid && printable(rid)) {
        snprintf(ctx.request_id, sizeof ctx.request_id, "%s", rid);
    } else if (tm_uuid_v4(ctx.request_id) != 0) {
        snprintf(ctx.request_id, sizeof ctx.request_id, "unknown");
    }
    tm_apikey_forget();
    peer_address(req, ctx.client, sizeof ctx.client);
    const char *xff = tm_req_header(req, "X-Forwarded-For");
    if (xff && ctx.client[0] && trusted(ctx.client, strlen(ctx.client))) {
        forwarded_client(xff, ctx.client, sizeof ctx.client);
    }
}

void tm_audit_actor_master(void)
{
    ctx.master = 1;
    ctx.resolved = 0;
}

#define RECORD_JSON "json_build_object('id', id::text, 'at', " TM_SQL_TS("at") "," \
    " 'actor', json_build_object('id', actor_id, 'name', actor_name)," \
    " 'action', action, 'kind', kind, 'name', name, 'environment', environment," \
    " 'before', before, 'after', after, 'request_id', request_id," \
    " 'client_address', client_address)::text"

/* A record as a webhook's payload (p: the record's row as RECORD_JSON rec
 * and its columns; w: the endpoint): the record, or for Slack one line. */
#define PAYLOAD_SQL "CASE WHEN w.format = 'slack' THEN json_build_object('text'," \
    " format('[%s] %s: %s %s \"%s\"%s', p.service, p.actor_name, p.action, p.kind, p.name," \
    "        coalesce(' in ' || p.environment, '')))::text" \
    " ELSE json_build_object('event', p.kind || '.' || p.action, 'service', p.service," \
    "   'record', p.rec::json)::text END"

/* The key's id and name as the auth daemon published them. */
static void key_actor(const char *hash, char *id, size_t idsize, char *name, size_t namesize)
{
    snprintf(name, namesize, "%s", UNKNOWN_ACTOR);
    id[0] = '\0';
    char *rec = tm_publish_key_record(hash);
    json_t *j = rec ? json_loads(rec, 0, NULL) : NULL;
    free(rec);
    json_t *jid = json_object_get(j, "id"), *jname = json_object_get(j, "name");
    if (json_is_integer(jid) && json_is_string(jname)) {
        snprintf(id, idsize, "%" JSON_INTEGER_FORMAT, json_integer_value(jid));
        snprintf(name, namesize, "%s", json_string_value(jname));
    }
    json_decref(j);
}

/* The actor, once per request: tm_audit_apply() asks before its
 * transaction begins, so no Redis round trip happens while it holds locks. */
static void resolve_actor(void)
{
    if (ctx.resolved) {
        return;
    }
    ctx.actor_id[0] = '\0';
    if (ctx.master) {
        snprintf(ctx.actor_name, sizeof ctx.actor_name, "%s", MASTER_ACTOR);
    } else if (tm_apikey_checked_hash()) {
        key_actor(tm_apikey_checked_hash(), ctx.actor_id, sizeof ctx.actor_id,
                  ctx.actor_name, sizeof ctx.actor_name);
    } else {
        snprintf(ctx.actor_name, sizeof ctx.actor_name, "%s", UNKNOWN_ACTOR);
    }
    ctx.resolved = 1;
}

tm_db_status tm_audit_record(const char *action, const char *kind, const char *name,
                             const char *env, const char *before, const char *after)
{
    resolve_actor();
    const char *p[] = { ctx.actor_id[0] ? ctx.actor_id : NULL, ctx.actor_name, action, kind, name, env, before, after,
                        ctx.request_id[0] ? ctx.request_id : "unknown",
                        ctx.client[0] ? ctx.client : NULL, service };
    PGresult *res;
    /* The record and, for each endpoint of this daemon whose filters take
     * it, its outbox row: one statement, in the change's transaction. */
    tm_db_status s = tm_db_exec("WITH a AS (INSERT INTO audit_log (actor_id, actor_name, action,"
                                " kind, name, environment, before, after, request_id,"
                                " client_address, service) VALUES ($1::integer, $2, $3, $4, $5,"
                                " $6, $7::json, $8::json, $9, $10, $11) RETURNING *),"
                                " p AS (SELECT " RECORD_JSON " AS rec, service, actor_name, action,"
                                "   kind, name, environment FROM a)"
                                " INSERT INTO webhook_outbox (webhook_id, service, delivery_id, body)"
                                " SELECT w.id, w.service, gen_random_uuid()::text, " PAYLOAD_SQL
                                " FROM p JOIN webhooks w ON w.service = p.service"
                                " AND (w.kinds IS NULL OR p.kind = ANY (w.kinds))"
                                " AND (w.environments IS NULL OR p.environment = ANY (w.environments))",
                                11, p, &res);
    if (s == TM_DB_OK) {
        PQclear(res);
    }
    return s;
}

/* The name member of a JSON text, copied into out; "" when absent. */
static void json_name(const char *json, char *out, size_t size)
{
    json_t *j = json ? json_loads(json, 0, NULL) : NULL;
    json_t *n = json_object_get(j, "name");
    snprintf(out, size, "%s", json_is_string(n) ? json_string_value(n) : "");
    json_decref(j);
}

static tm_db_status apply_in_tx(const tm_audit_change *c, PGresult **before, PGresult **out)
{
    tm_db_status s = TM_DB_OK;
    if (c->name) {
        const char *lp[] = { c->kind, c->name };
        PGresult *res;
        s = tm_db_exec("SELECT pg_advisory_xact_lock(hashtext($1 || ':' || $2))", 2, lp, &res);
        if (s == TM_DB_OK) {
            PQclear(res);
        }
    }
    if (s == TM_DB_OK && c->before_sql) {
        s = tm_db_exec(c->before_sql, c->nbefore, c->before_params, before);
    }
    if (s == TM_DB_OK) {
        s = tm_db_exec(c->sql, c->nparams, c->params, out);
    }
    if (s != TM_DB_OK || PQntuples(*out) == 0) {
        return s;
    }
    PGresult *after = NULL;
    if (c->after_sql) {
        s = tm_db_exec(c->after_sql, c->nafter, c->after_params, &after);
        if (s != TM_DB_OK) {
            return s;
        }
    }
    const char *b = *before && PQntuples(*before) ? PQgetvalue(*before, 0, 0) : NULL;
    const char *a = after ? (PQntuples(after) ? PQgetvalue(after, 0, 0) : NULL)
                  : c->after_col >= 0 ? PQgetvalue(*out, 0, c->after_col) : NULL;
    if (b && a && strcmp(b, a) == 0) {
        PQclear(after);
        return TM_DB_OK;   /* changed nothing (a key revoked again): no record */
    }
    char name[512];
    if (c->name) {
        snprintf(name, sizeof name, "%s", c->name);
    } else {
        json_name(a ? a : b, name, sizeof name);
    }
    s = tm_audit_record(c->action, c->kind, name, c->env, b, a);
    PQclear(after);
    return s;
}

tm_db_status tm_audit_apply(const tm_audit_change *c, PGresult **out)
{
    *out = NULL;
    resolve_actor();
    tm_db_status s = tm_db_begin();
    if (s != TM_DB_OK) {
        return s;
    }
    PGresult *before = NULL;
    s = apply_in_tx(c, &before, out);
    if (s == TM_DB_OK && PQntuples(*out) > 0) {
        s = tm_db_commit();
    }
    tm_db_rollback();   /* a no-op after the commit */
    PQclear(before);
    if (s != TM_DB_OK) {
        PQclear(*out);
        *out = NULL;
    }
    return s;
}

/* A time filter as milliseconds since the epoch (text), or an error. */
static int time_param(const tm_req *req, const char *q, char *out, size_t size,
                      const char **param, tm_resp *resp)
{
    const char *v = tm_req_query(req, q);
    int64_t ms;
    *param = NULL;
    if (v == NULL) {
        return 0;
    }
    if (tm_parse_date(v, strlen(v), &ms) != 0) {
        tm_resp_error(resp, 400, "%s must be an RFC 3339 date or time, e.g."
                      " 2026-12-01T00:00:00Z", q);
        return -1;
    }
    snprintf(out, size, "%lld", (long long) ms);
    *param = out;
    return 0;
}

static int int_param(const tm_req *req, const char *q, long max, long *out, tm_resp *resp)
{
    const char *v = tm_req_query(req, q);
    if (v == NULL) {
        return 0;
    }
    char *end;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end || n < 1 || n > max) {
        tm_resp_error(resp, 400, "%s must be an integer from 1 to %ld", q, max);
        return -1;
    }
    *out = n;
    return 0;
}

/* The page's JSON from rows of (record json, id); limit + 1 rows were asked
 * for, the extra one telling that there is a next page. */
static void page(tm_resp *resp, PGresult *res, long limit)
{
    int rows = PQntuples(res), more = rows > limit;
    int shown = more ? (int) limit : rows;
    tm_buf b = TM_BUF_INIT;
    tm_buf_adds(&b, "{\"records\":[");
    for (int i = 0; i < shown; i++) {
        if (i) tm_buf_addc(&b, ',');
        tm_buf_adds(&b, PQgetvalue(res, i, 0));
    }
    if (more) {
        tm_buf_addf(&b, "],\"next_cursor\":\"%s\"}", PQgetvalue(res, shown - 1, 1));
    } else {
        tm_buf_adds(&b, "],\"next_cursor\":null}");
    }
    char *text = tm_buf_steal(&b);
    if (text == NULL) {
        tm_resp_error(resp, 500, "out of memory");
        return;
    }
    tm_resp_raw(resp, 200, text);
    free(text);
}

void tm_audit_get(const tm_req *req, tm_resp *resp)
{
    if (strcmp(req->method, "GET") != 0) {
        tm_resp_error(resp, 405, "method %s not allowed on /audit", req->method);
        return;
    }
    char since[24], until[24], cursor[24], limits[24];
    const char *ps, *pu;
    long cur = 0, limit = 100;
    if (time_param(req, "since", since, sizeof since, &ps, resp) != 0
        || time_param(req, "until", until, sizeof until, &pu, resp) != 0
        || int_param(req, "cursor", 9223372036854775807L, &cur, resp) != 0
        || int_param(req, "limit", 1000, &limit, resp) != 0) {
        return;
    }
    snprintf(cursor, sizeof cursor, "%ld", cur);
    snprintf(limits, sizeof limits, "%ld", limit + 1);
    const char *p[] = { tm_req_query(req, "kind"), tm_req_query(req, "name"),
                        tm_req_query(req, "actor"), tm_req_query(req, "environment"),
                        ps, pu, cur ? cursor : NULL, limits, service };
    PGresult *res;
    tm_db_status s = tm_db_exec("SELECT " RECORD_JSON ", id FROM audit_log"
                                " WHERE service = $9 AND ($1::text IS NULL OR kind = $1)"
                                " AND ($2::text IS NULL OR name = $2)"
                                " AND ($3::text IS NULL OR actor_name = $3 OR actor_id::text = $3)"
                                " AND ($4::text IS NULL OR environment = $4)"
                                " AND ($5::float8 IS NULL OR at >= to_timestamp($5::float8 / 1000))"
                                " AND ($6::float8 IS NULL OR at < to_timestamp($6::float8 / 1000))"
                                " AND ($7::bigint IS NULL OR id < $7::bigint)"
                                " ORDER BY id DESC LIMIT $8::integer", 9, p, &res);
    if (s != TM_DB_OK) {
        tm_resp_error(resp, s == TM_DB_UNAVAILABLE ? 503 : s == TM_DB_BAD_INPUT ? 400 : 500,
                      "cannot read the audit trail right now");
        return;
    }
    page(resp, res, limit);
    PQclear(res);
}

/* Runs sql ($1 = retention days, $2 = service; deletes at most 1000 rows)
 * until it deletes fewer, at most 100 times, so a large backlog cannot
 * hold the main thread. The rows deleted, or -1. */
static long prune_batches(const char *sql, const char *const *p)
{
    long total = 0;
    for (int round = 0; round < 100; round++) {
        PGresult *res;
        if (tm_db_exec(sql, 2, p, &res) != TM_DB_OK) {
            return -1;
        }
        long n = strtol(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        total += n;
        if (n < 1000) {
            break;
        }
    }
    return total;
}

void tm_audit_prune(void)
{
    static time_t next;
    time_t now = time(NULL);
    if (now < next) {
        return;
    }
    next = now + 60;
    char days[24];
    snprintf(days, sizeof days, "%ld", retention_days);
    const char *p[] = { days, service };
    long records = prune_batches("DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log"
                                 " WHERE service = $2"
                                 " AND at < now() - make_interval(days => $1::integer)"
                                 " LIMIT 1000)", p);
    /* Deliveries done with (delivered or failed) go after the same time;
     * pending ones stay whatever their age. */
    long deliveries = prune_batches("DELETE FROM webhook_outbox WHERE id IN (SELECT id"
                                    " FROM webhook_outbox WHERE service = $2"
                                    " AND status <> 'pending'"
                                    " AND created_at < now() - make_interval(days => $1::integer)"
                                    " LIMIT 1000)", p);
    if (records > 0 || deliveries > 0) {
        TM_INFO("audit: %ld records and %ld webhook deliveries older than %ld days pruned",
                records > 0 ? records : 0, deliveries > 0 ? deliveries : 0, retention_days);
    }
}
