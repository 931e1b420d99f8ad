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
#include <stdint.h>
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

/* POST /webhooks/<id>/deliveries/<delivery id>/redeliver: a finished
 * (delivered or failed) delivery's body queued again under a new delivery
 * id, so a receiver that deduplicates still takes it. It goes after the
 * endpoint's pending rows: it is an old change sent again. */
static void redeliver(tm_resp *resp, const char *id, const char *sub)
{
    static const char pre[] = "deliveries/", suf[] = "/redeliver";
    size_t n = strlen(sub), pl = sizeof pre - 1, sl = sizeof suf - 1;
    char did[72];
    if (n <= pl + sl || n - pl - sl >= sizeof did || strcmp(sub + n - sl, suf) != 0) {
        tm_resp_error(resp, 404, "no route: POST /webhooks/%s/deliveries/<delivery id>/redeliver",
                      id);
        return;
    }
    snprintf(did, sizeof did, "%.*s", (int) (n - pl - sl), sub + pl);
    if (strspn(did, "0123456789abcdef-") != strlen(did)) {
        tm_resp_error(resp, 400, "a delivery id is a UUID (GET /webhooks/%s/deliveries)", id);
        return;
    }
    const char *p[] = { id, service, did };
    PGresult *res;
    tm_db_status s = tm_db_exec("WITH d AS (SELECT o.webhook_id, o.service, o.body, o.status"
                                "   FROM webhook_outbox o JOIN webhooks w ON w.id = o.webhook_id"
                                "   WHERE w.id = $1::integer AND w.service = $2"
                                "   AND o.delivery_id = $3),"
                                " n AS (INSERT INTO webhook_outbox (webhook_id, service,"
                                "   delivery_id, body) SELECT webhook_id, service,"
                                "   gen_random_uuid()::text, body FROM d WHERE status <> 'pending'"
                                "   RETURNING delivery_id)"
                                " SELECT (SELECT status FROM d), (SELECT delivery_id FROM n)",
                                3, p, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    if (PQgetisnull(res, 0, 0)) {
        tm_resp_error(resp, 404, "webhook %s has no delivery %s", id, did);
    } else if (PQgetisnull(res, 0, 1)) {
        tm_resp_error(resp, 409, "delivery %s is still pending: it is being tried", did);
    } else {
        json_t *j = json_pack("{s:s,s:s}", "delivery_id", PQgetvalue(res, 0, 1), "redelivers", did);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (text) {
            tm_resp_raw(resp, 202, text);
        } else {
            tm_resp_error(resp, 500, "out of memory");
        }
        free(text);
        json_decref(j);
    }
    PQclear(res);
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
    } else if (sub && strncmp(sub, "deliveries/", 11) == 0 && strcmp(m, "POST") == 0) {
        redeliver(resp, id, sub);
    } else {
        tm_resp_error(resp, sub && strcmp(sub, "ping") && strncmp(sub, "deliveries", 10) ? 404 : 405,
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

/* A round claims, per endpoint, up to PER_WEBHOOK pending rows in id order
 * for at most ROUND_WEBHOOKS endpoints whose oldest pending row is due;
 * the endpoints are sent to in parallel, each endpoint's rows one after
 * the other. A row not delivered ends its endpoint's chain for the round,
 * so an endpoint never receives a change before an earlier one it has not
 * accepted (per-endpoint order); no new send starts after ROUND_MS, so a
 * slow endpoint cannot hold the others' next changes for long. */
enum { ROUND_WEBHOOKS = 64, PER_WEBHOOK = 32, ROUND_MS = 1000 };
/* pg_try_advisory_xact_lock(class, webhook id): one replica per endpoint
 * at a time, so replicas neither send one row twice nor reorder. */
#define OUTBOX_LOCK_CLASS "1953330039"

/* The claimed rows' columns. */
enum { C_ID, C_DELIVERY, C_BODY, C_URL, C_SECRET, C_ATTEMPTS, C_EXPIRED, C_WEBHOOK, C_DUE };

typedef struct {
    int outcome;             /* -1 not tried; else as verdict() */
    char err[256];
    CURL *h;
    struct curl_slist *hs;
} try_state;

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void) p; (void) u;
    return s * n;
}

/* The signed POST of one row (res row i), ready for curl_multi; NULL with
 * t->err set. */
static CURL *request(const PGresult *res, int i, try_state *t)
{
    const char *body = PQgetvalue(res, i, C_BODY), *secret = PQgetvalue(res, i, C_SECRET);
    char sig[160], hdr_sig[200], hdr_id[120];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    long now = (long) time(NULL);
    size_t blen = strlen(body);
    size_t len = (size_t) snprintf(NULL, 0, "%ld.", now) + blen;
    char *signed_text = malloc(len + 1);
    if (signed_text == NULL) {
        snprintf(t->err, sizeof t->err, "out of memory");
        return NULL;
    }
    snprintf(signed_text, len + 1, "%ld.%s", now, body);
    int ok = HMAC(EVP_sha256(), secret, (int) strlen(secret),
                  (const unsigned char *) signed_text, len, mac, &maclen) != NULL;
    free(signed_text);
    if (!ok) {
        snprintf(t->err, sizeof t->err, "cannot sign");
        return NULL;
    }
    tm_hex(mac, maclen, sig);
    snprintf(hdr_sig, sizeof hdr_sig, "X-ToggleMaster-Signature: t=%ld,v1=%s", now, sig);
    snprintf(hdr_id, sizeof hdr_id, "X-ToggleMaster-Delivery: %s",
             PQgetvalue(res, i, C_DELIVERY));
    const char *lines[] = { "Content-Type: application/json", hdr_sig, hdr_id,
                            "User-Agent: ToggleMaster-Webhooks/1", "Expect:" };
    CURL *h = curl_easy_init();
    for (size_t k = 0; h && k < sizeof lines / sizeof lines[0]; k++) {
        struct curl_slist *n = curl_slist_append(t->hs, lines[k]);
        if (n == NULL) {
            curl_slist_free_all(t->hs);
            t->hs = NULL;
            break;
        }
        t->hs = n;
    }
    if (h == NULL || t->hs == NULL) {
        curl_slist_free_all(t->hs);
        t->hs = NULL;
        curl_easy_cleanup(h);
        snprintf(t->err, sizeof t->err, "out of memory");
        return NULL;
    }
    curl_easy_setopt(h, CURLOPT_URL, PQgetvalue(res, i, C_URL));
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, t->hs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);   /* res outlives the transfer */
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long) blen);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_PRIVATE, (void *) (intptr_t) i);
    return h;
}

/* A finished attempt: 0 delivered; 1 to retry (unreachable, timeout, 5xx,
 * 408, 429); 2 refused for good (another status). err says what happened. */
static int verdict(CURL *h, CURLcode rc, char *err, size_t errsize)
{
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK) {
        snprintf(err, errsize, "%s", curl_easy_strerror(rc));
        return 1;
    }
    snprintf(err, errsize, "HTTP %ld", status);
    if (status >= 200 && status <= 299) return 0;
    if (status >= 500 || status == 408 || status == 429) return 1;
    return 2;
}

/* Starts row i's attempt; a row that cannot be started is an outcome (1). */
static int start(CURLM *m, const PGresult *res, int i, try_state *t)
{
    t[i].h = request(res, i, &t[i]);
    if (t[i].h == NULL || curl_multi_add_handle(m, t[i].h) != CURLM_OK) {
        if (t[i].h) snprintf(t[i].err, sizeof t[i].err, "cannot start the request");
        curl_easy_cleanup(t[i].h);
        curl_slist_free_all(t[i].hs);
        t[i].h = NULL;
        t[i].hs = NULL;
        t[i].outcome = 1;
        return 0;
    }
    return 1;
}

static long elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long) (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* Sends the claimed rows (ordered by endpoint, then id): each endpoint's
 * first row if due, and after each delivery the endpoint's next row if it
 * is due too (a row is never sent before its next_at). */
static void send_rows(const PGresult *res, try_state *t)
{
    int n = PQntuples(res), running = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CURLM *m = curl_multi_init();
    for (int i = 0; i < n && m; i++) {
        int head = i == 0 || strcmp(PQgetvalue(res, i, C_WEBHOOK), PQgetvalue(res, i - 1, C_WEBHOOK));
        if (head && PQgetvalue(res, i, C_DUE)[0] == 't') {
            running += start(m, res, i, t);
        }
    }
    while (running > 0) {
        int still, left;
        CURLMsg *msg;
        if (curl_multi_perform(m, &still) != CURLM_OK) {
            break;   /* the handles are cleaned below; untried rows stay pending */
        }
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE) continue;
            void *priv = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            int i = (int) (intptr_t) priv;
            t[i].outcome = verdict(msg->easy_handle, msg->data.result, t[i].err, sizeof t[i].err);
            curl_multi_remove_handle(m, t[i].h);
            curl_easy_cleanup(t[i].h);
            curl_slist_free_all(t[i].hs);
            t[i].h = NULL;
            t[i].hs = NULL;
            running--;
            if (t[i].outcome == 0 && i + 1 < n && !stopping && elapsed_ms(&t0) < ROUND_MS
                && strcmp(PQgetvalue(res, i, C_WEBHOOK), PQgetvalue(res, i + 1, C_WEBHOOK)) == 0
                && PQgetvalue(res, i + 1, C_DUE)[0] == 't') {
                running += start(m, res, i + 1, t);
            }
        }
        /* Waits for the sockets or curl's own timers (a handle just added
         * wakes it at once); only after the finished transfers were read. */
        if (running > 0 && curl_multi_poll(m, NULL, 0, 100, NULL) != CURLM_OK) {
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        if (t[i].h) {   /* only after a curl_multi failure: not tried */
            curl_multi_remove_handle(m, t[i].h);
            curl_easy_cleanup(t[i].h);
            curl_slist_free_all(t[i].hs);
            t[i].outcome = -1;
        }
    }
    curl_multi_cleanup(m);
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

/* Each tried row's outcome, in the round's transaction. -1 on a database
 * error (the caller rolls back: the rows stay pending, sent again later). */
static int record(const PGresult *res, const try_state *t)
{
    for (int i = 0; i < PQntuples(res); i++) {
        if (t[i].outcome < 0) continue;
        long attempts = strtol(PQgetvalue(res, i, C_ATTEMPTS), NULL, 10) + 1;
        const char *status = t[i].outcome == 0 ? "delivered"
                           : (t[i].outcome == 2 || PQgetvalue(res, i, C_EXPIRED)[0] == 't')
                           ? "failed" : "pending";
        char delay[24];
        snprintf(delay, sizeof delay, "%ld", next_delay_ms(attempts));
        const char *u[] = { PQgetvalue(res, i, C_ID), status, t[i].outcome ? t[i].err : NULL,
                            delay };
        PGresult *r;
        if (tm_db_exec("UPDATE webhook_outbox SET status = $2, attempts = attempts + 1,"
                       " last_error = $3, next_at = now() + make_interval(secs => $4::float8 / 1000),"
                       " delivered_at = CASE WHEN $2 = 'delivered' THEN now() END"
                       " WHERE id = $1::bigint", 4, u, &r) != TM_DB_OK) {
            return -1;
        }
        PQclear(r);
        if (t[i].outcome) {
            TM_WARN("webhook delivery %s: attempt %ld: %s%s", PQgetvalue(res, i, C_DELIVERY),
                    attempts, t[i].err, strcmp(status, "failed") == 0 ? ": given up" : "");
        }
    }
    return 0;
}

/* In the open transaction: locks the endpoints whose oldest pending row is
 * due (skipping those another replica holds), then claims their first
 * rows. The rows are read by a second statement, after the locks are held,
 * so it sees whatever the previous holder's round committed. NULL when
 * there is nothing to send (*err 0) or the database failed (*err -1). */
static PGresult *claim(int *err)
{
    char retry[24], per[16], most[16];
    snprintf(retry, sizeof retry, "%ld", retry_seconds);
    snprintf(per, sizeof per, "%d", PER_WEBHOOK);
    snprintf(most, sizeof most, "%d", ROUND_WEBHOOKS);
    const char *lp[] = { service, most };
    PGresult *res;
    *err = -1;
    /* Each endpoint's oldest pending row, through the (webhook_id, id)
     * pending index: a cost per endpoint, whatever the backlog. The LIMITed
     * subquery is not flattened, so only the endpoints picked are tried for
     * a lock. */
    if (tm_db_exec("SELECT array_agg(wid)::text FROM (SELECT wid FROM (SELECT w.id AS wid, h.id,"
                   "   h.next_at FROM webhooks w CROSS JOIN LATERAL (SELECT id, next_at"
                   "   FROM webhook_outbox o WHERE o.webhook_id = w.id AND o.status = 'pending'"
                   "   ORDER BY id LIMIT 1) h WHERE w.service = $1 AND h.next_at <= now()"
                   "  ORDER BY h.next_at, h.id LIMIT $2::integer) d"
                   " WHERE pg_try_advisory_xact_lock(" OUTBOX_LOCK_CLASS ", d.wid)) l",
                   2, lp, &res) != TM_DB_OK) {
        return NULL;
    }
    char *mine = PQgetisnull(res, 0, 0) ? NULL : strdup(PQgetvalue(res, 0, 0));
    int none = PQgetisnull(res, 0, 0);
    PQclear(res);
    if (none || mine == NULL) {
        *err = none ? 0 : -1;
        return NULL;
    }
    const char *p[] = { mine, retry, per };
    tm_db_status s = tm_db_exec("SELECT o.id, o.delivery_id, o.body, w.url, w.secret, o.attempts,"
                   " o.created_at < now() - make_interval(secs => $2::integer), o.webhook_id,"
                   " o.next_at <= now()"
                   " FROM unnest($1::integer[]) AS m (wid) JOIN webhooks w ON w.id = m.wid"
                   " CROSS JOIN LATERAL (SELECT * FROM webhook_outbox x"
                   "   WHERE x.webhook_id = m.wid AND x.status = 'pending'"
                   "   ORDER BY x.id LIMIT $3::integer FOR UPDATE SKIP LOCKED) o"
                   " ORDER BY o.webhook_id, o.id", 3, p, &res);
    free(mine);
    if (s != TM_DB_OK) {
        return NULL;
    }
    *err = 0;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return NULL;
    }
    return res;
}

/* One round in one transaction: claim, send, record. The rows tried, 0
 * when none was due, -1 when the database could not be asked. A daemon
 * killed mid-round leaves its rows pending (the transaction dies with it):
 * at-least-once. */
static int deliver_round(void)
{
    if (tm_db_begin() != TM_DB_OK) {
        return -1;
    }
    int err;
    PGresult *res = claim(&err);
    if (res == NULL) {
        tm_db_rollback();
        return err;
    }
    int n = PQntuples(res), tried = 0;
    try_state *t = calloc((size_t) n, sizeof *t);
    if (t == NULL) {
        PQclear(res);
        tm_db_rollback();
        return -1;
    }
    for (int i = 0; i < n; i++) t[i].outcome = -1;
    send_rows(res, t);
    for (int i = 0; i < n; i++) tried += t[i].outcome >= 0;
    if (record(res, t) != 0) {
        tm_db_rollback();
    } else {
        tm_db_commit();
    }
    free(t);
    PQclear(res);
    return tried;
}

static void *run(void *arg)
{
    (void) arg;
    while (!stopping) {
        int rc = deliver_round();
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
