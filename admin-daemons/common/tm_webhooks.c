#include "tm_webhooks.h"
#include "tm_audit.h"
#include "tm_bodies.h"
#include "tm_env.h"
#include "tm_hash.h"
#include "tm_log.h"
#include "tm_sql.h"
#include "tm_store.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *service = "";
static long timeout_ms = 5000, connect_ms = 2000, backoff_ms = 1000, retry_seconds = 86400;
static pthread_t thread;
static int started;
static atomic_int stopping;

#define WEBHOOK_JSON "json_build_object('id', id, 'url', url, 'kinds', kinds," \
    " 'environments', environments, 'format', format," \
    " 'created_at', " TM_SQL_TS("created_at") ")"
#define DELIVERY_JSON "json_build_object('delivery_id', delivery_id, 'status', status," \
    " 'attempts', attempts, 'last_error', last_error," \
    " 'created_at', " TM_SQL_TS("created_at") ", 'next_at', " TM_SQL_TS("next_at") "," \
    " 'delivered_at', " TM_SQL_TS("delivered_at") ", 'body', body::json)"

/* ---- the API ---- */

/* One statement's single JSON cell as the answer; no row: 404. */
static void answer(tm_resp *resp, int status, const char *sql, int n, const char *const *p)
{
    PGresult *res;
    tm_db_status s = tm_db_exec(sql, n, p, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    if (PQntuples(res) == 0) {
        tm_resp_error(resp, 404, "no webhook %s", p[0]);
    } else {
        tm_resp_raw(resp, status, PQgetvalue(res, 0, 0));
    }
    PQclear(res);
}

/* What the audit trail keeps of an endpoint: its listing with its id as
 * the record's name, and never the secret: "secret" is "set" after a
 * create, "changed" after an update that changed it, null otherwise (so an
 * update that changes nothing leaves equal images and no record). */
#define WEBHOOK_AUDIT_JSON(secret) "json_build_object('name', id::text, 'id', id," \
    " 'url', url, 'kinds', kinds, 'environments', environments, 'format', format," \
    " 'secret', " secret ")::text"

/* A create, update or delete of an endpoint with its audit record, in one
 * transaction (tm_audit_apply). sql's first column is the answer (no row:
 * 404), its second the audited image after the change (create, update).
 * id is NULL on create. */
static void audited(tm_resp *resp, int status, const char *action, const char *id,
                    const char *sql, int n, const char *const *p)
{
    const char *bp[] = { id, service };
    tm_audit_change c = {
        .action = action, .kind = "webhook", .name = id,
        .before_sql = id ? "SELECT " WEBHOOK_AUDIT_JSON("NULL::text") " FROM webhooks"
                           " WHERE id = $1::integer AND service = $2" : NULL,
        .nbefore = 2, .before_params = bp,
        .sql = sql, .nparams = n, .params = p,
        .after_col = strcmp(action, "delete") != 0 ? 1 : -1,
    };
    PGresult *res;
    tm_db_status s = tm_audit_apply(&c, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    if (PQntuples(res) == 0) {
        tm_resp_error(resp, 404, "no webhook %s", id ? id : "");
    } else if (status == 204) {
        tm_resp_empty(resp, 204);
    } else {
        tm_resp_raw(resp, status, PQgetvalue(res, 0, 0));
    }
    PQclear(res);
}

/* The kinds and environments members: absent, null (all) or a JSON array. */
#define WEBHOOK_ARRAY(has, json, old) "CASE WHEN NOT " has "::boolean THEN " old \
    " WHEN " json "::json IS NULL THEN NULL" \
    " ELSE ARRAY(SELECT json_array_elements_text(" json "::json)) END"

/* POST (id NULL) or PUT of an endpoint; the body checked in lib/tm_bodies.c. */
static void write_endpoint(const tm_req *req, tm_resp *resp, const char *id)
{
    char err[512];
    int status;
    tm_body b;
    json_t *obj = tm_req_json_object(req, resp);
    if (obj == NULL) {
        return;
    }
    if (tm_body_check(TM_BODY_WEBHOOK, obj, id, &b, &status, err, sizeof err) != 0) {
        tm_resp_error(resp, status, "%s", err);
        json_decref(obj);
        return;
    }
    const char *p[] = { id ? id : service, b.url, b.secret, b.format,
                        b.has_kinds ? "t" : "f", b.kinds, b.has_envs ? "t" : "f", b.envs,
                        service };
    if (id == NULL) {
        audited(resp, 201, "create", NULL, "INSERT INTO webhooks (service, url, secret, format,"
                " kinds, environments) VALUES ($1, $2, $3, coalesce($4, 'json'), "
                WEBHOOK_ARRAY("$5", "$6", "NULL") ", " WEBHOOK_ARRAY("$7", "$8", "NULL") ")"
                " RETURNING " WEBHOOK_JSON "::text, " WEBHOOK_AUDIT_JSON("'set'"), 8, p);
    } else {
        /* o: the row as it was (the FROM list sees it before the update),
         * to tell whether the secret changed without ever returning it. */
        audited(resp, 200, "update", id, "UPDATE webhooks SET url = coalesce($2, url),"
                " secret = coalesce($3, secret), format = coalesce($4, format),"
                " kinds = " WEBHOOK_ARRAY("$5", "$6", "kinds") ","
                " environments = " WEBHOOK_ARRAY("$7", "$8", "environments")
                " FROM (SELECT secret AS old_secret FROM webhooks"
                "   WHERE id = $1::integer AND service = $9) o"
                " WHERE id = $1::integer AND service = $9"
                " RETURNING " WEBHOOK_JSON "::text, " WEBHOOK_AUDIT_JSON(
                    "CASE WHEN secret IS DISTINCT FROM o.old_secret THEN 'changed' END"), 9, p);
    }
    tm_body_free(&b);
    json_decref(obj);
}

static void ping(tm_resp *resp, const char *id)
{
    const char *p[] = { id, service };
    answer(resp, 202, "INSERT INTO webhook_outbox (webhook_id, service, delivery_id, body)"
           " SELECT id, service, gen_random_uuid()::text, CASE WHEN format = 'slack'"
           "   THEN json_build_object('text', 'ToggleMaster ping (' || service || ')')::text"
           "   ELSE json_build_object('event', 'ping', 'service', service, 'webhook_id', id)::text"
           " END FROM webhooks WHERE id = $1::integer AND service = $2"
           " RETURNING json_build_object('delivery_id', delivery_id)::text", 2, p);
}

static void one(const tm_req *req, tm_resp *resp, const char *id, const char *sub)
{
    const char *m = req->method, *p[] = { id, service };
    if (sub == NULL && strcmp(m, "GET") == 0) {
        answer(resp, 200, "SELECT " WEBHOOK_JSON "::text FROM webhooks"
               " WHERE id = $1::integer AND service = $2", 2, p);
    } else if (sub == NULL && strcmp(m, "PUT") == 0) {
        write_endpoint(req, resp, id);
    } else if (sub == NULL && strcmp(m, "DELETE") == 0) {
        audited(resp, 204, "delete", id, "DELETE FROM webhooks"
                " WHERE id = $1::integer AND service = $2 RETURNING '{}'", 2, p);
    } else if (sub && strcmp(sub, "ping") == 0 && strcmp(m, "POST") == 0) {
        ping(resp, id);
    } else if (sub && strcmp(sub, "deliveries") == 0 && strcmp(m, "GET") == 0) {
        answer(resp, 200, "SELECT (SELECT coalesce(json_agg(d ORDER BY n DESC), '[]')::text"
               " FROM (SELECT id AS n, " DELIVERY_JSON " AS d FROM webhook_outbox"
               "   WHERE webhook_id = w.id ORDER BY id DESC LIMIT 100) x)"
               " FROM webhooks w WHERE w.id = $1::integer AND w.service = $2", 2, p);
    } else {
        tm_resp_error(resp, sub && strcmp(sub, "ping") && strcmp(sub, "deliveries") ? 404 : 405,
                      "no route for %s %.200s", m, req->path);
    }
}

int tm_webhooks_route(const tm_req *req, tm_resp *resp)
{
    const char *path = req->path;
    if (strncmp(path, "/webhooks", 9) != 0 || (path[9] != '\0' && path[9] != '/')) {
        return 0;
    }
    if (path[9] == '\0') {
        if (strcmp(req->method, "GET") == 0) {
            const char *p[] = { service };
            answer(resp, 200, "SELECT coalesce(json_agg(" WEBHOOK_JSON " ORDER BY id), '[]')::text"
                   " FROM webhooks WHERE service = $1", 1, p);
        } else if (strcmp(req->method, "POST") == 0) {
            write_endpoint(req, resp, NULL);
        } else {
            tm_resp_error(resp, 405, "method %s not allowed on /webhooks", req->method);
        }
        return 1;
    }
    char id[16];
    const char *rest = path + 10, *slash = strchr(rest, '/');
    size_t n = slash ? (size_t) (slash - rest) : strlen(rest);
    if (n == 0 || n > 9 || strspn(rest, "0123456789") != n || rest[0] == '0') {
        tm_resp_error(resp, 400, "a webhook id is a positive integer");
        return 1;
    }
    snprintf(id, sizeof id, "%.*s", (int) n, rest);
    one(req, resp, id, slash ? slash + 1 : NULL);
    return 1;
}

/* ---- delivery ---- */

typedef struct {
    char id[24], delivery_id[64];
    const char *body, *url, *secret;
    long attempts;
    int expired;
} claim;

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void) p; (void) u;
    return s * n;
}

/* One attempt. 0 delivered; 1 to retry (unreachable, timeout, 5xx, 408,
 * 429); 2 refused for good (another status). err says what happened. */
static int attempt(const claim *c, char *err, size_t errsize)
{
    char sig[160], hdr_sig[200], hdr_id[120];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    long now = (long) time(NULL);
    size_t blen = strlen(c->body);
    size_t len = (size_t) snprintf(NULL, 0, "%ld.", now) + blen;
    char *signed_text = malloc(len + 1);
    if (signed_text == NULL) {
        snprintf(err, errsize, "out of memory");
        return 1;
    }
    snprintf(signed_text, len + 1, "%ld.%s", now, c->body);
    int ok = HMAC(EVP_sha256(), c->secret, (int) strlen(c->secret),
                  (const unsigned char *) signed_text, len, mac, &maclen) != NULL;
    free(signed_text);
    if (!ok) {
        snprintf(err, errsize, "cannot sign");
        return 1;
    }
    tm_hex(mac, maclen, sig);
    snprintf(hdr_sig, sizeof hdr_sig, "X-ToggleMaster-Signature: t=%ld,v1=%s", now, sig);
    snprintf(hdr_id, sizeof hdr_id, "X-ToggleMaster-Delivery: %s", c->delivery_id);
    CURL *h = curl_easy_init();
    struct curl_slist *hs = NULL, *t;
    const char *lines[] = { "Content-Type: application/json", hdr_sig, hdr_id,
                            "User-Agent: ToggleMaster-Webhooks/1", "Expect:" };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        t = curl_slist_append(hs, lines[i]);
        if (t == NULL) break;
        hs = t;
    }
    if (h == NULL || hs == NULL) {
        curl_slist_free_all(hs);
        curl_easy_cleanup(h);
        snprintf(err, errsize, "out of memory");
        return 1;
    }
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long) blen);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hs);
    curl_easy_cleanup(h);
    if (rc != CURLE_OK) {
        snprintf(err, errsize, "%s", curl_easy_strerror(rc));
        return 1;
    }
    snprintf(err, errsize, "HTTP %ld", status);
    if (status >= 200 && status <= 299) return 0;
    if (status >= 500 || status == 408 || status == 429) return 1;
    return 2;
}

/* The next try's delay: backoff_ms doubling per attempt, at most an hour,
 * times a random factor in [0.5, 1) so that retries spread out. */
static long next_delay_ms(long attempts)
{
    long d = backoff_ms;
    for (long i = 1; i < attempts && d < 3600000L; i++) d *= 2;
    if (d > 3600000L) d = 3600000L;
    unsigned short r = 0;
    if (tm_random_bytes(&r, sizeof r) != 0) r = 32768;
    return d / 2 + (long) ((double) (d / 2) * (double) r / 65536.0);
}

/* Claims a due row (skipping rows another replica holds), tries it, and
 * records the outcome, in one transaction. 1 when a row was handled, 0
 * when none was due, -1 when the database could not be asked. */
static int deliver_one(void)
{
    char retry[24];
    snprintf(retry, sizeof retry, "%ld", retry_seconds);
    const char *p[] = { service, retry };
    if (tm_db_begin() != TM_DB_OK) {
        return -1;
    }
    PGresult *res;
    if (tm_db_exec("SELECT o.id, o.delivery_id, o.body, w.url, w.secret, o.attempts,"
                   " o.created_at < now() - make_interval(secs => $2::integer)"
                   " FROM webhook_outbox o JOIN webhooks w ON w.id = o.webhook_id"
                   " WHERE o.service = $1 AND o.status = 'pending' AND o.next_at <= now()"
                   " ORDER BY o.next_at, o.id LIMIT 1 FOR UPDATE OF o SKIP LOCKED",
                   2, p, &res) != TM_DB_OK) {
        tm_db_rollback();
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        tm_db_rollback();
        return 0;
    }
    claim c = { .body = PQgetvalue(res, 0, 2), .url = PQgetvalue(res, 0, 3),
                .secret = PQgetvalue(res, 0, 4),
                .attempts = strtol(PQgetvalue(res, 0, 5), NULL, 10) + 1,
                .expired = PQgetvalue(res, 0, 6)[0] == 't' };
    snprintf(c.id, sizeof c.id, "%s", PQgetvalue(res, 0, 0));
    snprintf(c.delivery_id, sizeof c.delivery_id, "%s", PQgetvalue(res, 0, 1));
    char err[256], delay[24];
    int outcome = attempt(&c, err, sizeof err);
    PQclear(res);
    const char *status = outcome == 0 ? "delivered"
                       : (outcome == 2 || c.expired) ? "failed" : "pending";
    snprintf(delay, sizeof delay, "%ld", next_delay_ms(c.attempts));
    const char *u[] = { c.id, status, outcome ? err : NULL, delay };
    if (tm_db_exec("UPDATE webhook_outbox SET status = $2, attempts = attempts + 1,"
                   " last_error = $3, next_at = now() + make_interval(secs => $4::float8 / 1000),"
                   " delivered_at = CASE WHEN $2 = 'delivered' THEN now() END"
                   " WHERE id = $1::bigint", 4, u, &res) != TM_DB_OK) {
        tm_db_rollback();
        return 0;
    }
    PQclear(res);
    if (tm_db_commit() != TM_DB_OK) {
        return 0;
    }
    if (outcome) {
        TM_WARN("webhook delivery %s: attempt %ld: %s%s", c.delivery_id, c.attempts, err,
                strcmp(status, "failed") == 0 ? ": given up" : "");
    }
    return 1;
}

static void *run(void *arg)
{
    (void) arg;
    while (!stopping) {
        int rc = deliver_one();
        /* Idle: look again soon; the database away: not in a tight loop
         * (each try logs), but still stopping promptly. */
        for (int i = 0; rc <= 0 && i < (rc < 0 ? 10 : 1) && !stopping; i++) {
            struct timespec ts = { 0, 200 * 1000 * 1000 };
            nanosleep(&ts, NULL);
        }
    }
    tm_db_close();
    return NULL;
}

int tm_webhooks_start(const char *daemon_name)
{
    service = daemon_name;
    timeout_ms = tm_env_long("TM_WEBHOOK_TIMEOUT_MS", 5000, 100, 60000);
    connect_ms = tm_env_long("TM_WEBHOOK_CONNECT_TIMEOUT_MS", 2000, 100, 60000);
    backoff_ms = tm_env_long("TM_WEBHOOK_BACKOFF_MS", 1000, 10, 3600000);
    retry_seconds = tm_env_long("TM_WEBHOOK_RETRY_SECONDS", 86400, 1, 30L * 86400);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    stopping = 0;
    if (pthread_create(&thread, NULL, run, NULL) != 0) {
        TM_ERROR("cannot start the webhook delivery thread");
        return -1;
    }
    started = 1;
    return 0;
}

void tm_webhooks_stop(void)
{
    if (started) {
        stopping = 1;
        pthread_join(thread, NULL);
        started = 0;
    }
}
