/* togglemaster-auth (port 8001): issues, lists, validates and revokes API
 * keys. Only SHA-256 hashes are stored; the active set is published to Redis
 * (tm:keys) so the edge and the other daemons check keys locally. */
#include "tm_apikey.h"
#include "tm_audit.h"
#include "tm_webhooks.h"
#include "tm_daemon.h"
#include "tm_hash.h"
#include "tm_log.h"
#include "tm_names.h"
#include "tm_scope.h"
#include "tm_publish.h"
#include "tm_sql.h"
#include "tm_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *master_key;

static const tm_migration migrations[] = {
    { 1, "CREATE TABLE IF NOT EXISTS api_keys ("
         " id SERIAL PRIMARY KEY,"
         " name VARCHAR(100) NOT NULL,"
         " key_hash VARCHAR(64) UNIQUE NOT NULL,"
         " is_active BOOLEAN DEFAULT TRUE,"
         " created_at TIMESTAMPTZ DEFAULT NOW())" },
};

/* Scoped keys (docs/environments.md); existing keys are admin keys. */
static const tm_migration env_migrations[] = {
    { 1, "ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS scope VARCHAR(16) NOT NULL DEFAULT 'admin'"
         " CHECK (scope IN ('admin', 'readonly', 'server', 'client'))" },
    { 2, "ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS environment VARCHAR(100)" },
    { 3, "ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS last_used_at TIMESTAMPTZ" },
};

/* What the edge needs to know about a key (never the key or its hash):
 * admin keys in tm:keys as before, the others in tm:keys:v2 with their
 * scope, so an edge of the previous release refuses them. */
#define KEY_PUB_JSON "json_build_object('id', id, 'name', name)::text"
#define KEY2_PUB_JSON "json_build_object('id', id, 'name', name, 'scope', scope," \
                      " 'environment', environment)::text"
#define KEY_PUB_EITHER "CASE WHEN scope = 'admin' THEN " KEY_PUB_JSON " ELSE " KEY2_PUB_JSON " END"
/* A listed key. Members at their default are left out (admin scope, no
 * environment, never used), so an original key lists as it always did. */
#define KEY_ROW_JSON "json_strip_nulls(json_build_object('id', id, 'name', name," \
    " 'is_active', coalesce(is_active, FALSE), 'created_at', " TM_SQL_TS("created_at") "," \
    " 'scope', CASE WHEN scope <> 'admin' THEN scope END, 'environment', environment," \
    " 'last_used_at', " TM_SQL_TS("last_used_at") "))"

/* The master key mints API keys, so a short or published one is refused,
 * except on a stack that says it is for development (make run, the tests). */
#define MASTER_KEY_MIN_LEN 16
#define MASTER_KEY_PUBLISHED "admin-secreto-123"   /* the original setups' key */

static int check_env(void)
{
    master_key = tm_env("MASTER_KEY", NULL);
    if (master_key == NULL) {
        TM_ERROR("MASTER_KEY is not set: it guards key creation (POST /admin/keys)");
        return -1;
    }
    if (tm_env_is_development()) {
        return 0;
    }
    if (strlen(master_key) < MASTER_KEY_MIN_LEN) {
        TM_ERROR("MASTER_KEY is shorter than %d bytes: use a random one "
                 "(e.g. openssl rand -hex 32), or set TOGGLEMASTER_ENV=development "
                 "on a development stack", MASTER_KEY_MIN_LEN);
        return -1;
    }
    if (strcmp(master_key, MASTER_KEY_PUBLISHED) == 0) {
        TM_ERROR("MASTER_KEY is the published default: use a random one "
                 "(e.g. openssl rand -hex 32), or set TOGGLEMASTER_ENV=development "
                 "on a development stack");
        return -1;
    }
    return 0;
}

static int master_ok(const tm_req *req, tm_resp *resp)
{
    size_t len;
    const char *k = tm_req_bearer(req, &len);
    if (k && tm_consttime_eq(k, len, master_key, strlen(master_key))) {
        tm_audit_actor_master();
        return 1;
    }
    tm_resp_error(resp, 403, "a valid master key is required (Authorization: Bearer <MASTER_KEY>)");
    return 0;
}

/* A key's change and its audit record in one transaction (tm_audit.h).
 * sql returns the row's listing (KEY_ROW_JSON: no key, no hash) as its
 * third column; a revocation's before image is the listing as it was. */
static tm_db_status audited_key(const char *action, const char *sql, int nparams,
                                const char *const *params, PGresult **out)
{
    int revoke = strcmp(action, "revoke") == 0;
    tm_audit_change c = {
        .action = action, .kind = "key", .name = revoke ? NULL : params[0],
        .before_sql = revoke ? "SELECT " KEY_ROW_JSON "::text FROM api_keys WHERE id = $1"
                               " FOR UPDATE" : NULL,
        .nbefore = 1, .before_params = params,
        .sql = sql, .nparams = nparams, .params = params, .after_col = 2,
    };
    return tm_audit_apply(&c, out);
}

static void create_key(const tm_req *req, tm_resp *resp)
{
    if (!master_ok(req, resp)) {
        return;
    }
    json_t *body = tm_req_json_object(req, resp);
    if (body == NULL) {
        return;
    }
    char err[256];
    int status;
    tm_body b;
    if (tm_body_check(TM_BODY_KEY, body, NULL, &b, &status, err, sizeof err) != 0) {
        json_decref(body);
        tm_resp_error(resp, status, "%s", err);
        return;
    }
    const char *name = b.name;
    int known = b.environment ? tm_publish_env_known(b.environment) : 1;
    if (known != 1) {
        if (known == 0) {
            tm_resp_error(resp, 404, "no environment \"%s\"", b.environment);
        } else {
            tm_resp_error(resp, 503, "cannot check environment \"%s\" right now: try again"
                          " shortly", b.environment);
        }
        json_decref(body);
        return;
    }

    unsigned char raw[32];
    char key[7 + 64 + 1], hash[TM_SHA256_HEX_LEN + 1];
    if (tm_random_bytes(raw, sizeof raw) != 0) {
        json_decref(body);
        tm_resp_error(resp, 500, "cannot generate a key: no randomness");
        return;
    }
    memcpy(key, "tm_key_", 7);
    tm_hex(raw, sizeof raw, key + 7);
    tm_sha256_hex(key, strlen(key), hash);

    const char *p[] = { name, hash, tm_scope_name(b.scope), b.environment };
    PGresult *res;
    tm_db_status s = audited_key("create", "INSERT INTO api_keys (name, key_hash, scope, environment)"
                                 " VALUES ($1, $2, $3, $4) RETURNING id, " KEY_PUB_EITHER ", "
                                 KEY_ROW_JSON "::text", 4, p, &res);
    if (s != TM_DB_OK) {
        json_decref(body);
        tm_store_db_error(resp, s);
        return;
    }
    long id = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    tm_publish(b.scope == TM_SCOPE_ADMIN ? "key" : "key2", hash, PQgetvalue(res, 0, 1));
    PQclear(res);
    TM_INFO("api key %ld created (%s)", id, tm_scope_name(b.scope));
    tm_resp_json(resp, 201, json_pack("{s:I,s:s,s:s,s:s,s:s,s:s?}", "id", (json_int_t) id,
                                      "name", name, "key", key,
                                      "message", "Store this key now: it is shown only once.",
                                      "scope", tm_scope_name(b.scope),
                                      "environment", b.environment));
    memset(key, 0, sizeof key);
    json_decref(body);
}

static void list_keys(const tm_req *req, tm_resp *resp)
{
    if (!master_ok(req, resp)) {
        return;
    }
    PGresult *res;
    tm_db_status s = tm_db_exec("SELECT coalesce(json_agg(" KEY_ROW_JSON " ORDER BY id), '[]')::text"
                                " FROM api_keys", 0, NULL, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    tm_resp_raw(resp, 200, PQgetvalue(res, 0, 0));
    PQclear(res);
}

static void revoke_key(const tm_req *req, tm_resp *resp, const char *idstr)
{
    if (!master_ok(req, resp)) {
        return;
    }
    char *end;
    long id = strtol(idstr, &end, 10);
    if (*idstr == '\0' || *end || id <= 0 || id > 2147483647L) {
        tm_resp_error(resp, 400, "key id must be a positive integer");
        return;
    }
    const char *p[] = { idstr };
    PGresult *res;
    tm_db_status s = audited_key("revoke", "UPDATE api_keys SET is_active = FALSE WHERE id = $1"
                                 " RETURNING key_hash, scope, " KEY_ROW_JSON "::text", 1, p, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        tm_resp_error(resp, 404, "no API key with id %ld", id);
        return;
    }
    tm_publish(strcmp(PQgetvalue(res, 0, 1), "admin") == 0 ? "key" : "key2",
               PQgetvalue(res, 0, 0), NULL);
    PQclear(res);
    TM_INFO("api key %ld revoked", id);
    tm_resp_empty(resp, 204);
}

static void validate(const tm_req *req, tm_resp *resp)
{
    size_t len;
    const char *k = tm_req_bearer(req, &len);
    if (k == NULL) {
        tm_resp_error(resp, 401, "missing Authorization header");
        return;
    }
    char hash[TM_SHA256_HEX_LEN + 1];
    tm_sha256_hex(k, len, hash);
    const char *p[] = { hash };
    PGresult *res;
    /* The scope too: the other daemons ask here when Redis does not know
     * the key, and enforce it. */
    tm_db_status s = tm_db_exec("SELECT json_build_object('message', 'valid key', 'scope', scope,"
                                " 'environment', environment)::text"
                                " FROM api_keys WHERE key_hash = $1 AND is_active",
                                1, p, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        tm_resp_error(resp, 401, "invalid or revoked API key");
        return;
    }
    tm_resp_raw(resp, 200, PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* The key changes' trail and their webhooks: the master key, or an API
 * key whose scope allows the method (admin; readonly: GET). */
static void audit(const tm_req *req, tm_resp *resp)
{
    size_t len;
    const char *k = tm_req_bearer(req, &len);
    int master = k && tm_consttime_eq(k, len, master_key, strlen(master_key));
    if (master) {
        tm_audit_actor_master();   /* webhook changes record it as their actor */
    }
    if (master || tm_apikey_check(req, resp)) {
        if (!tm_webhooks_route(req, resp)) {
            tm_audit_get(req, resp);
        }
    }
}

static void handle(void *ctx, const tm_req *req, tm_resp *resp)
{
    (void) ctx;
    const char *m = req->method, *path = req->path;
    tm_audit_request(req);
    if (strcmp(path, "/audit") == 0 || strncmp(path, "/webhooks", 9) == 0) {
        return audit(req, resp);
    }
    if (strcmp(path, "/admin/keys") == 0) {
        if (strcmp(m, "POST") == 0) return create_key(req, resp);
        if (strcmp(m, "GET") == 0) return list_keys(req, resp);
        tm_resp_error(resp, 405, "method %s not allowed on %s", m, path);
        return;
    }
    if (strncmp(path, "/admin/keys/", 12) == 0) {
        if (strcmp(m, "DELETE") == 0) return revoke_key(req, resp, path + 12);
        tm_resp_error(resp, 405, "method %s not allowed on /admin/keys/{id}", m);
        return;
    }
    if (strcmp(path, "/validate") == 0) {
        if (strcmp(m, "GET") == 0) return validate(req, resp);
        tm_resp_error(resp, 405, "method %s not allowed on %s", m, path);
        return;
    }
    tm_resp_error(resp, 404, "no route for %s %s", m, path);
}

/* Reconciliation: the active key hashes in PostgreSQL are the truth. */
static int load_keys(tm_pub_item **items, size_t *n, void **owner)
{
    return tm_store_load("SELECT key_hash, " KEY_PUB_JSON " FROM api_keys"
                         " WHERE is_active AND scope = 'admin'", items, n, owner);
}

static int load_keys2(tm_pub_item **items, size_t *n, void **owner)
{
    return tm_store_load("SELECT key_hash, " KEY2_PUB_JSON " FROM api_keys"
                         " WHERE is_active AND scope <> 'admin'", items, n, owner);
}

/* A use the other daemons noted in Redis (at most once a minute per key
 * and process) becomes last_used_at; never moves it back. */
static int apply_use(const char *key_hash, const char *unix_time)
{
    char *end;
    long long t = strtoll(unix_time, &end, 10);
    if (*unix_time == '\0' || *end || t <= 0 || strlen(key_hash) != TM_SHA256_HEX_LEN) {
        return 0;   /* junk: dropped */
    }
    const char *p[] = { key_hash, unix_time };
    PGresult *res;
    if (tm_db_exec("UPDATE api_keys SET last_used_at = to_timestamp($2::bigint)"
                   " WHERE key_hash = $1 AND (last_used_at IS NULL"
                   " OR last_used_at < to_timestamp($2::bigint))", 2, p, &res) != TM_DB_OK) {
        return -1;
    }
    PQclear(res);
    return 0;
}

static void reconcile(void)
{
    tm_audit_prune();
    tm_publish_reconcile_begin();
    tm_publish_reconcile("key", load_keys, tm_store_free_result);
    tm_publish_reconcile("key2", load_keys2, tm_store_free_result);
    tm_publish_take_uses(apply_use);
}

int main(int argc, char **argv)
{
    tm_daemon d = {
        .name = "auth",
        .default_port = 8001,
        .migrations = migrations,
        .nmigrations = sizeof migrations / sizeof migrations[0],
        .env_migrations = env_migrations,
        .nenv_migrations = sizeof env_migrations / sizeof env_migrations[0],
        .handler = handle,
        .reconcile = reconcile,
        .check_env = check_env,
    };
    return tm_daemon_main(&d, argc, argv);
}
