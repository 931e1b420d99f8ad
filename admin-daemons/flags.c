/* togglemaster-flags (port 8002): creates, lists, reads, updates and deletes
 * feature flags, and the environments their state lives in
 * (docs/environments.md). PostgreSQL holds them; every committed change is
 * published to Redis (tm:flags, tm:flags@<env>, tm:envs) for the edge.
 * Every route but /health* needs an API key. */
#include "tm_audit.h"
#include "tm_env.h"
#include "tm_log.h"
#include "tm_names.h"
#include "tm_peer.h"
#include "tm_sql.h"
#include "tm_store.h"

#include <stdlib.h>
#include <string.h>

static const tm_migration migrations[] = {
    /* IF NOT EXISTS: the original service's database already has it. */
    { 1, "CREATE TABLE IF NOT EXISTS flags ("
         " id SERIAL PRIMARY KEY,"
         " name VARCHAR(100) UNIQUE NOT NULL,"
         " description TEXT NOT NULL DEFAULT '',"
         " is_enabled BOOLEAN NOT NULL DEFAULT FALSE,"
         " created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),"
         " updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW())" },
};

/* The environments feature (docs/environments.md). */
static const tm_migration env_migrations[] = {
    /* Environments: flags.is_enabled stays the default environment's state
     * (what the original queries read); flag_states holds the others'. */
    { 1, "CREATE TABLE IF NOT EXISTS environments ("
         " id SERIAL PRIMARY KEY,"
         " name VARCHAR(100) UNIQUE NOT NULL,"
         " is_default BOOLEAN NOT NULL DEFAULT FALSE,"
         " created_at TIMESTAMPTZ NOT NULL DEFAULT NOW())" },
    { 2, "CREATE UNIQUE INDEX IF NOT EXISTS environments_one_default"
         " ON environments (is_default) WHERE is_default" },
    { 3, "INSERT INTO environments (name, is_default) VALUES ('" TM_ENV_DEFAULT "', TRUE)"
         " ON CONFLICT DO NOTHING" },
    { 4, "CREATE TABLE IF NOT EXISTS flag_states ("
         " flag_id INTEGER NOT NULL REFERENCES flags (id) ON DELETE CASCADE,"
         " environment_id INTEGER NOT NULL REFERENCES environments (id) ON DELETE CASCADE,"
         " is_enabled BOOLEAN NOT NULL DEFAULT FALSE,"
         " updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),"
         " PRIMARY KEY (flag_id, environment_id))" },
    { 5, "ALTER TABLE flags ADD COLUMN IF NOT EXISTS client_visible BOOLEAN NOT NULL DEFAULT FALSE" },
};

/* A flag in one environment (f: flags, e: environments, s: flag_states) as
 * responses, Redis and reconciliation see it: one expression, so the three
 * agree byte for byte. A member at its default is left out (strip_nulls):
 * client_visible appears only when true, so original clients see the
 * original row. coalesce: the original's columns allowed NULL. */
#define FLAG_JSON "json_strip_nulls(json_build_object('id', f.id, 'name', f.name," \
    " 'description', coalesce(f.description, '')," \
    " 'is_enabled', CASE WHEN e.is_default THEN coalesce(f.is_enabled, FALSE)" \
    "                    ELSE coalesce(s.is_enabled, FALSE) END," \
    " 'client_visible', CASE WHEN f.client_visible THEN TRUE END," \
    " 'created_at', " TM_SQL_TS("f.created_at") "," \
    " 'updated_at', " TM_SQL_TS("(CASE WHEN e.is_default OR s.updated_at IS NULL" \
    "   THEN f.updated_at ELSE greatest(f.updated_at, s.updated_at) END)") "))::text"
/* The rows FLAG_JSON reads, in the environment named by env (an SQL term). */
#define FLAG_FROM(env) " FROM flags f JOIN environments e ON e.name = " env \
    " LEFT JOIN flag_states s ON s.flag_id = f.id AND s.environment_id = e.id"

#define ENV_PUB_JSON "json_build_object('id', id, 'name', name, 'is_default', is_default)::text"
#define ENV_ROW_JSON "json_build_object('id', id, 'name', name, 'is_default', is_default," \
    " 'created_at', " TM_SQL_TS("created_at") ")"

/* The targeting daemon, for the rules of promotions and deleted
 * environments (TARGETING_SERVICE_URL); NULL: those routes answer 503. */
static const char *targeting_url;

static void create(const tm_body *b, const char *env, tm_resp *resp);
static void update(const tm_body *b, const char *env, tm_resp *resp);
static void publish_everywhere(const char *name, const char *env, const char *json);
static int env_exists(const char *env);
static int env_names(char ***names, size_t *n);
static int special(const tm_req *req, tm_resp *resp);
static void reconcile_envs_hash(void);

static const tm_store store = {
    .name = "flags",
    .default_port = 8002,
    .migrations = migrations,
    .nmigrations = sizeof migrations / sizeof migrations[0],
    .env_migrations = env_migrations,
    .nenv_migrations = sizeof env_migrations / sizeof env_migrations[0],
    .collection = "/flags",
    .kind = "flag",
    .what = "flag",
    .per_env = 1,
    .sql_list = "SELECT " TM_SQL_JSON_ARRAY(FLAG_JSON, "f.name") FLAG_FROM("$1"),
    .sql_get = "SELECT " FLAG_JSON FLAG_FROM("$2") " WHERE f.name = $1",
    /* A flag is defined once: deleting it deletes it in every environment. */
    .sql_delete = "DELETE FROM flags f USING environments e WHERE f.name = $1 AND e.name = $2"
                  " RETURNING f.id",
    .sql_load = "SELECT f.name, " FLAG_JSON FLAG_FROM("'" TM_ENV_DEFAULT "'"),
    .sql_load_env = "SELECT f.name, " FLAG_JSON FLAG_FROM("$1"),
    .env_exists = env_exists,
    .env_names = env_names,
    .body = TM_BODY_FLAG,
    .create = create,
    .update = update,
    .publish = publish_everywhere,
    .special = special,
    .reconcile_extra = reconcile_envs_hash,
};

static const char *boolstr(int has, int v)
{
    return has ? (v ? "true" : "false") : NULL;
}

/* In a non-default environment is_enabled is that environment's state; the
 * default environment's stays false (a flag starts off everywhere else). */
static void create(const tm_body *b, const char *env, tm_resp *resp)
{
    const char *p[] = { b->name, b->description ? b->description : "",
                        b->enabled ? "true" : "false", b->visible ? "true" : "false", env };
    tm_store_write(&store, resp, 1,
                   "WITH e AS (SELECT id, is_default FROM environments WHERE name = $5),"
                   " f AS (INSERT INTO flags (name, description, is_enabled, client_visible)"
                   "   SELECT $1, $2, $3::boolean AND e.is_default, $4 FROM e"
                   "   ON CONFLICT DO NOTHING RETURNING *),"
                   " s AS (INSERT INTO flag_states (flag_id, environment_id, is_enabled)"
                   "   SELECT f.id, e.id, $3 FROM f, e WHERE NOT e.is_default RETURNING *)"
                   " SELECT " FLAG_JSON " FROM f CROSS JOIN e LEFT JOIN s ON TRUE",
                   5, p, b->name, env);
}

/* Absent members stay as they are (NULL: coalesce keeps the column). The
 * definition (description, client_visible) is shared by every environment;
 * is_enabled is env's. A write of a non-default environment's is_enabled
 * alone leaves the flags row as it was (updated_at too, which the other
 * environments' JSON reads), so it is published in env only: one message,
 * not one per environment, each costing a Redis round trip here and a
 * snapshot update in every edge worker ahead of the change that matters
 * (the kill switch's latency to browsers, bench/sse.pl). */
static void update(const tm_body *b, const char *env, tm_resp *resp)
{
    const char *p[] = { b->name, b->description, boolstr(b->has_enabled, b->enabled),
                        boolstr(b->has_visible, b->visible), env };
    tm_store in_env = store;
    if (strcmp(env, TM_ENV_DEFAULT) != 0 && b->description == NULL && !b->has_visible) {
        in_env.publish = NULL;   /* tm_publish_env(kind, env, ...) */
    }
    tm_store_write(&in_env, resp, 0,
                   "WITH e AS (SELECT id, is_default FROM environments WHERE name = $5),"
                   " f AS (UPDATE flags SET description = coalesce($2, description),"
                   "   client_visible = coalesce($4::boolean, client_visible),"
                   "   is_enabled = CASE WHEN e.is_default THEN coalesce($3::boolean, is_enabled)"
                   "                ELSE is_enabled END,"
                   "   updated_at = CASE WHEN e.is_default OR $2 IS NOT NULL OR $4 IS NOT NULL"
                   "                THEN clock_timestamp() ELSE updated_at END"
                   "   FROM e WHERE name = $1 RETURNING flags.*),"
                   " s AS (INSERT INTO flag_states (flag_id, environment_id, is_enabled, updated_at)"
                   "   SELECT f.id, e.id, coalesce($3::boolean, FALSE), clock_timestamp()"
                   "   FROM f, e WHERE NOT e.is_default"
                   "   ON CONFLICT (flag_id, environment_id) DO UPDATE"
                   "   SET is_enabled = coalesce($3::boolean, flag_states.is_enabled),"
                   "   updated_at = clock_timestamp() RETURNING *)"
                   " SELECT " FLAG_JSON " FROM f CROSS JOIN e LEFT JOIN s ON TRUE",
                   5, p, b->name, env);
}

/* A write may change the flag in every environment (its description is
 * shared): each environment's hash gets the flag as it is now. If the
 * database cannot say, at least env's gets json; reconciliation does the
 * rest. */
static void publish_everywhere(const char *name, const char *env, const char *json)
{
    const char *p[] = { name };
    PGresult *res;
    tm_db_status s = json
        ? tm_db_exec("SELECT e.name, " FLAG_JSON " FROM flags f CROSS JOIN environments e"
                     " LEFT JOIN flag_states s ON s.flag_id = f.id AND s.environment_id = e.id"
                     " WHERE f.name = $1", 1, p, &res)
        : tm_db_exec("SELECT name, NULL FROM environments", 0, NULL, &res);
    if (s != TM_DB_OK) {
        tm_publish_env(store.kind, env, name, json);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        tm_publish_env(store.kind, PQgetvalue(res, i, 0), name,
                       json ? PQgetvalue(res, i, 1) : NULL);
    }
    PQclear(res);
}

static int env_exists(const char *env)
{
    const char *p[] = { env };
    PGresult *res;
    if (tm_db_exec("SELECT 1 FROM environments WHERE name = $1", 1, p, &res) != TM_DB_OK) {
        return -1;
    }
    int n = PQntuples(res);
    PQclear(res);
    return n > 0;
}

static int env_names(char ***names, size_t *n)
{
    PGresult *res;
    *names = NULL;
    *n = 0;
    if (tm_db_exec("SELECT name FROM environments WHERE NOT is_default", 0, NULL, &res)
        != TM_DB_OK) {
        return -1;
    }
    int rows = PQntuples(res);
    *names = calloc(rows ? (size_t) rows : 1, sizeof **names);
    for (int i = 0; *names && i < rows; i++) {
        if (((*names)[i] = strdup(PQgetvalue(res, i, 0))) == NULL) {
            break;
        }
        (*n)++;
    }
    PQclear(res);
    if (*names == NULL || *n != (size_t) rows) {
        tm_publish_free_names(*names, *n);
        *names = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

/* ---- reconciliation of tm:envs, and filling a new environment's hashes ---- */

static int load_envs(tm_pub_item **items, size_t *n, void **owner)
{
    return tm_store_load("SELECT name, " ENV_PUB_JSON " FROM environments", items, n, owner);
}

static void reconcile_envs_hash(void)
{
    tm_publish_reconcile("env", load_envs, tm_store_free_result);
}

/* The environment being filled on this thread (loaders take no argument). */
static _Thread_local const char *filling;

static int load_new_env_flags(tm_pub_item **items, size_t *n, void **owner)
{
    const char *p[] = { filling };
    return tm_store_load_params(store.sql_load_env, 1, p, items, n, owner);
}

/* A new environment has no rule: its tm:rules@ hash is empty, and ready. */
static int load_nothing(tm_pub_item **items, size_t *n, void **owner)
{
    *items = malloc(sizeof **items);
    *n = 0;
    *owner = NULL;
    return *items ? 0 : -1;
}

static void free_nothing(void *owner)
{
    (void) owner;
}

/* ---- /environments ---- */

static void env_list(tm_resp *resp)
{
    PGresult *res;
    tm_db_status s = tm_db_exec("SELECT coalesce(json_agg(" ENV_ROW_JSON
                                " ORDER BY name COLLATE \"C\"), '[]')::text FROM environments",
                                0, NULL, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    tm_resp_raw(resp, 200, PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* Its hashes are filled before tm:envs names it, so an edge that sees the
 * environment finds every flag (off) and no rule, both ready; and the
 * targeting daemon accepts rules for it only then. */
static void env_create(const tm_req *req, tm_resp *resp)
{
    char err[256];
    int status;
    tm_body b;
    json_t *obj = tm_req_json_object(req, resp);
    if (obj == NULL) {
        return;
    }
    if (tm_body_check(TM_BODY_ENV, obj, NULL, &b, &status, err, sizeof err) != 0) {
        tm_resp_error(resp, status, "%s", err);
        json_decref(obj);
        return;
    }
    char max[16];
    snprintf(max, sizeof max, "%d", TM_ENV_MAX);
    const char *p[] = { b.name, max };
    PGresult *res;
    /* no more than an edge snapshot holds (two creations racing from two
     * replicas could pass together: the edge then refuses the extra one
     * with a logged error) */
    tm_audit_change c = {
        .action = "create", .kind = "environment", .name = b.name,
        .sql = "INSERT INTO environments (name) SELECT $1"
               " WHERE (SELECT count(*) FROM environments) < $2::int"
               " ON CONFLICT DO NOTHING"
               " RETURNING " ENV_PUB_JSON ", " ENV_ROW_JSON "::text",
        .nparams = 2, .params = p, .after_col = 1,
    };
    tm_db_status s = tm_audit_apply(&c, &res);
    if (s != TM_DB_OK || PQntuples(res) == 0) {
        /* nothing inserted: the name is taken, or there is no room */
        int exists = s == TM_DB_OK ? env_exists(b.name) : 1;
        if (exists == 0) {
            tm_resp_error(resp, 409, "at most %d environments (what the edge serves);"
                          " delete one before creating \"%s\"", TM_ENV_MAX, b.name);
        } else if (exists < 0) {
            tm_store_db_error(resp, TM_DB_UNAVAILABLE);
        } else if (s == TM_DB_OK || s == TM_DB_CONFLICT) {
            tm_resp_error(resp, 409, "an environment \"%s\" already exists", b.name);
        } else {
            tm_store_db_error(resp, s);
        }
        if (s == TM_DB_OK) PQclear(res);
        json_decref(obj);
        return;
    }
    filling = b.name;
    tm_publish_fill_env(store.kind, b.name, load_new_env_flags, tm_store_free_result);
    tm_publish_fill_env("rule", b.name, load_nothing, free_nothing);
    filling = NULL;
    tm_publish("env", b.name, PQgetvalue(res, 0, 0));
    TM_INFO("environment %s created", b.name);
    tm_resp_raw(resp, 201, PQgetvalue(res, 0, 1));
    PQclear(res);
    json_decref(obj);
}

/* How many flag states env holds: -1 when the database cannot say. */
static long env_states(const char *env)
{
    const char *p[] = { env };
    PGresult *res;
    if (tm_db_exec("SELECT count(*) FROM flag_states s JOIN environments e"
                   " ON e.id = s.environment_id WHERE e.name = $1", 1, p, &res) != TM_DB_OK) {
        return -1;
    }
    long n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n;
}

/* A non-empty environment goes only with ?confirm=<name>; its rules go
 * first (through the targeting daemon, with the caller's key), then its
 * states with it. Answers 502 and deletes nothing here if the rules could
 * not be deleted. */
static void env_delete(const tm_req *req, tm_resp *resp, const char *name)
{
    if (!tm_env_name_valid(name, strlen(name))) {
        tm_resp_error(resp, 400, "the environment name in the path must be 1 to %d characters: "
                      TM_NAME_CHARSET, TM_NAME_MAX);
        return;
    }
    if (strcmp(name, TM_ENV_DEFAULT) == 0) {
        tm_resp_error(resp, 409, "the default environment cannot be deleted");
        return;
    }
    int known = env_exists(name);
    if (known <= 0) {
        if (known == 0) tm_resp_error(resp, 404, "no environment \"%s\"", name);
        else tm_resp_error(resp, 503, "database unavailable, try again shortly");
        return;
    }
    if (targeting_url == NULL) {
        tm_resp_error(resp, 503, "deleting an environment deletes its rules too:"
                      " set TARGETING_SERVICE_URL on the flags service");
        return;
    }
    char path[256];
    snprintf(path, sizeof path, "/rules?environment=%s", name);
    tm_peer_resp pr;
    if (tm_peer_call(req, "GET", targeting_url, path, NULL, &pr) != 0 || pr.status != 200
        || !json_is_array(pr.json)) {
        tm_resp_error(resp, 502, "cannot count the rules of environment \"%s\": targeting: %s",
                      name, tm_peer_error(&pr));
        tm_peer_resp_free(&pr);
        return;
    }
    size_t rules = json_array_size(pr.json);
    tm_peer_resp_free(&pr);
    long states = env_states(name);
    const char *confirm = tm_req_query(req, "confirm");
    if (states < 0) {
        tm_resp_error(resp, 503, "database unavailable, try again shortly");
        return;
    }
    if ((states || rules) && (confirm == NULL || strcmp(confirm, name) != 0)) {
        tm_resp_error(resp, 409, "environment \"%s\" holds %ld flag state%s and %zu rule%s:"
                      " delete it with ?confirm=%s", name, states, states == 1 ? "" : "s",
                      rules, rules == 1 ? "" : "s", name);
        return;
    }
    snprintf(path, sizeof path, "/rules?environment=%s&confirm=%s", name, name);
    if (tm_peer_call(req, "DELETE", targeting_url, path, NULL, &pr) != 0 || pr.status != 200) {
        tm_resp_error(resp, pr.status == 403 ? 403 : 502,
                      "the rules of environment \"%s\" were not deleted: targeting: %s",
                      name, tm_peer_error(&pr));
        tm_peer_resp_free(&pr);
        return;
    }
    tm_peer_resp_free(&pr);
    const char *p[] = { name };
    PGresult *res;
    tm_audit_change c = {
        .action = "delete", .kind = "environment", .name = name,
        .before_sql = "SELECT " ENV_ROW_JSON "::text FROM environments WHERE name = $1",
        .nbefore = 1, .before_params = p,
        .sql = "DELETE FROM environments WHERE name = $1 AND NOT is_default RETURNING id",
        .nparams = 1, .params = p, .after_col = -1,
    };
    tm_db_status s = tm_audit_apply(&c, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    PQclear(res);
    tm_publish("env", name, NULL);
    tm_publish_drop_env(store.kind, name);
    TM_INFO("environment %s deleted", name);
    tm_resp_empty(resp, 204);
}

/* ---- promotion ---- */

/* Makes env to's rule for name what env from's is (rule: from's row, NULL
 * when from has none). 0, or -1 with resp filled. *out: to's rule row
 * (NULL when none). */
static int copy_rule(const tm_req *req, tm_resp *resp, const char *name, const json_t *rule,
                     const char *to, json_t **out)
{
    char path[512];
    tm_peer_resp pr;
    *out = NULL;
    if (rule == NULL) {
        snprintf(path, sizeof path, "/rules/%s?environment=%s", name, to);
        if (tm_peer_call(req, "DELETE", targeting_url, path, NULL, &pr) == 0
            && (pr.status == 204 || pr.status == 404)) {
            tm_peer_resp_free(&pr);
            return 0;
        }
    } else {
        json_t *body = json_pack("{s:O,s:O}", "rules", json_object_get(rule, "rules"),
                                 "is_enabled", json_object_get(rule, "is_enabled"));
        snprintf(path, sizeof path, "/rules/%s?environment=%s", name, to);
        int rc = body ? tm_peer_call(req, "PUT", targeting_url, path, body, &pr) : -1;
        if (rc == 0 && pr.status == 404) {
            tm_peer_resp_free(&pr);
            rc = json_object_set_new(body, "flag_name", json_string(name)) == 0 ? 0 : -1;
            snprintf(path, sizeof path, "/rules?environment=%s", to);
            rc = rc == 0 ? tm_peer_call(req, "POST", targeting_url, path, body, &pr) : -1;
        }
        json_decref(body);
        if (rc == 0 && (pr.status == 200 || pr.status == 201)) {
            *out = pr.json;
            return 0;
        }
        if (rc != 0) {
            pr.status = 0;
            pr.json = NULL;
        }
    }
    tm_resp_error(resp, pr.status == 403 ? 403 : 502, "the rule of flag \"%s\" was not copied"
                  " to environment \"%s\" (nothing was changed): targeting: %s", name, to,
                  tm_peer_error(&pr));
    tm_peer_resp_free(&pr);
    return -1;
}

/* Copies is_enabled of name from env from to env to; the new row of to. */
static void copy_state(tm_resp *resp, const char *name, const char *from, const char *to,
                       json_t *rule)
{
    const char *p[] = { name, from, to }, *q[] = { name, to };
    PGresult *res;
    /* Recorded as the flag's update in env to, from what it was there. */
    tm_audit_change c = {
        .action = "promote", .kind = store.kind, .name = name, .env = to,
        .before_sql = store.sql_get, .nbefore = 2, .before_params = q,
        .nparams = 3, .params = p, .after_col = -1,
        .sql =
        "WITH src AS (SELECT f.id, CASE WHEN e.is_default THEN coalesce(f.is_enabled, FALSE)"
        "   ELSE coalesce(s.is_enabled, FALSE) END AS en" FLAG_FROM("$2") " WHERE f.name = $1),"
        " dst AS (SELECT id, is_default FROM environments WHERE name = $3),"
        " u1 AS (UPDATE flags SET is_enabled = src.en, updated_at = clock_timestamp()"
        "   FROM src, dst WHERE flags.id = src.id AND dst.is_default RETURNING flags.id),"
        " u2 AS (INSERT INTO flag_states (flag_id, environment_id, is_enabled, updated_at)"
        "   SELECT src.id, dst.id, src.en, clock_timestamp() FROM src, dst WHERE NOT dst.is_default"
        "   ON CONFLICT (flag_id, environment_id) DO UPDATE SET is_enabled = excluded.is_enabled,"
        "   updated_at = excluded.updated_at RETURNING flag_id)"
        " SELECT 1 WHERE (SELECT count(*) FROM u1) + (SELECT count(*) FROM u2) > 0",
        .after_sql = store.sql_get, .nafter = 2, .after_params = q,
    };
    tm_db_status s = tm_audit_apply(&c, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    PQclear(res);
    s = tm_db_exec(store.sql_get, 2, q, &res);
    if (s != TM_DB_OK || PQntuples(res) == 0) {
        if (s == TM_DB_OK) PQclear(res);
        tm_resp_error(resp, s == TM_DB_OK ? 404 : 503, "flag \"%s\" is gone", name);
        return;
    }
    const char *row = PQgetvalue(res, 0, 0);
    tm_publish_env(store.kind, to, name, row);
    json_t *flag = json_loads(row, 0, NULL);
    PQclear(res);
    TM_INFO("flag %s promoted from %s to %s", name, from, to);
    tm_resp_json(resp, 200, json_pack("{s:s,s:s,s:o*,s:O?}", "from", from, "to", to,
                                      "flag", flag, "rule", rule));
}

/* POST /flags/{name}/promote {"from","to"}: to's state and rule become
 * from's. The rule (in the targeting daemon) is copied first: if that
 * fails nothing changed. */
static void promote(const tm_req *req, tm_resp *resp, const char *name)
{
    char err[256], path[512];
    int status;
    tm_body b;
    json_t *obj = tm_req_json_object(req, resp);
    if (obj == NULL) {
        return;
    }
    if (tm_body_check(TM_BODY_PROMOTE, obj, NULL, &b, &status, err, sizeof err) != 0) {
        tm_resp_error(resp, status, "%s", err);
        json_decref(obj);
        return;
    }
    const char *envs[] = { b.from, b.to };
    for (int i = 0; i < 2; i++) {
        int known = strcmp(envs[i], TM_ENV_DEFAULT) == 0 ? 1 : env_exists(envs[i]);
        if (known <= 0) {
            tm_resp_error(resp, known ? 503 : 404, known ? "database unavailable, try again"
                          " shortly" : "no environment \"%s\"", envs[i]);
            json_decref(obj);
            return;
        }
    }
    const char *p[] = { name };
    PGresult *res;
    tm_db_status s = tm_db_exec("SELECT 1 FROM flags WHERE name = $1", 1, p, &res);
    int found = s == TM_DB_OK && PQntuples(res) > 0;
    if (s == TM_DB_OK) PQclear(res);
    if (!found) {
        if (s == TM_DB_OK) tm_resp_error(resp, 404, "no flag \"%s\"", name);
        else tm_store_db_error(resp, s);
    } else if (targeting_url == NULL) {
        tm_resp_error(resp, 503, "promotion copies the rule too: set TARGETING_SERVICE_URL"
                      " on the flags service");
    } else {
        tm_peer_resp pr;
        snprintf(path, sizeof path, "/rules/%s?environment=%s", name, b.from);
        if (tm_peer_call(req, "GET", targeting_url, path, NULL, &pr) != 0
            || (pr.status != 200 && pr.status != 404)) {
            tm_resp_error(resp, pr.status == 403 ? 403 : 502, "cannot read the rule of flag"
                          " \"%s\" in \"%s\" (nothing was changed): targeting: %s", name, b.from,
                          tm_peer_error(&pr));
        } else {
            json_t *rule;
            if (copy_rule(req, resp, name, pr.status == 200 ? pr.json : NULL, b.to, &rule) == 0) {
                copy_state(resp, name, b.from, b.to, rule);
                json_decref(rule);
            }
        }
        tm_peer_resp_free(&pr);
    }
    json_decref(obj);
}

/* GET /flags/{name}?environment=all: {"name","states":{env:{"is_enabled",
 * "rule"}}}, rule null when that environment has none (or, without
 * TARGETING_SERVICE_URL, absent). */
static void all_states(const tm_req *req, tm_resp *resp, const char *name)
{
    const char *p[] = { name };
    PGresult *res;
    tm_db_status s = tm_db_exec("SELECT e.name, CASE WHEN e.is_default THEN"
                                " coalesce(f.is_enabled, FALSE) ELSE coalesce(s.is_enabled, FALSE) END"
                                " FROM flags f CROSS JOIN environments e LEFT JOIN flag_states s"
                                " ON s.flag_id = f.id AND s.environment_id = e.id WHERE f.name = $1"
                                " ORDER BY e.name COLLATE \"C\"", 1, p, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        tm_resp_error(resp, 404, "no flag \"%s\"", name);
        return;
    }
    json_t *states = json_object();
    int bad = states == NULL;
    for (int i = 0; !bad && i < PQntuples(res); i++) {
        const char *env = PQgetvalue(res, i, 0);
        json_t *st = json_pack("{s:b}", "is_enabled", PQgetvalue(res, i, 1)[0] == 't');
        if (st && targeting_url) {
            char path[512];
            tm_peer_resp pr;
            snprintf(path, sizeof path, "/rules/%s?environment=%s", name, env);
            if (tm_peer_call(req, "GET", targeting_url, path, NULL, &pr) != 0
                || (pr.status != 200 && pr.status != 404)) {
                tm_resp_error(resp, pr.status == 403 ? 403 : 502, "cannot read the rule of"
                              " \"%s\" in \"%s\": targeting: %s", name, env, tm_peer_error(&pr));
                bad = 2;
            } else {
                bad = json_object_set(st, "rule", pr.status == 200 ? pr.json : json_null()) != 0;
            }
            tm_peer_resp_free(&pr);
        }
        bad = bad ? bad : st == NULL || json_object_set(states, env, st) != 0;
        json_decref(st);
    }
    PQclear(res);
    if (bad == 0) {
        tm_resp_json(resp, 200, json_pack("{s:s,s:O}", "name", name, "states", states));
    } else if (bad == 1) {
        tm_resp_error(resp, 500, "out of memory");
    }
    json_decref(states);
}

/* Routes beyond the generic /flags ones: 1 when answered. */
static int special(const tm_req *req, tm_resp *resp)
{
    const char *m = req->method, *path = req->path;
    if (strcmp(path, "/environments") == 0) {
        if (strcmp(m, "GET") == 0) env_list(resp);
        else if (strcmp(m, "POST") == 0) env_create(req, resp);
        else tm_resp_error(resp, 405, "method %s not allowed on /environments", m);
        return 1;
    }
    if (strncmp(path, "/environments/", 14) == 0) {
        if (strcmp(m, "DELETE") == 0) env_delete(req, resp, path + 14);
        else tm_resp_error(resp, 405, "method %s not allowed on /environments/{name}", m);
        return 1;
    }
    if (strncmp(path, "/flags/", 7) != 0) {
        return 0;
    }
    const char *name = path + 7, *slash = strchr(name, '/');
    if (slash && strcmp(slash, "/promote") == 0) {
        char n[TM_NAME_MAX + 1];
        size_t len = (size_t) (slash - name);
        if (!tm_name_valid(name, len)) {
            tm_resp_error(resp, 400, "the name in the path must be 1 to %d characters: %s",
                          TM_NAME_MAX, tm_name_charset());
        } else if (strcmp(m, "POST") != 0) {
            tm_resp_error(resp, 405, "method %s not allowed on /flags/{name}/promote", m);
        } else {
            memcpy(n, name, len);
            n[len] = '\0';
            promote(req, resp, n);
        }
        return 1;
    }
    const char *env = tm_req_query(req, "environment");
    if (slash == NULL && strcmp(m, "GET") == 0 && env && strcmp(env, TM_ENV_ALL) == 0
        && tm_name_valid(name, strlen(name))) {
        all_states(req, resp, name);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    targeting_url = tm_env("TARGETING_SERVICE_URL", NULL);
    if (targeting_url && *targeting_url == '\0') {
        targeting_url = NULL;
    }
    return tm_store_main(&store, argc, argv);
}
