/* togglemaster-targeting (port 8003): one targeting rule document per flag
 * (/rules), and the segments rules refer to (/segments). Documents are
 * checked against the rule language lib/ evaluates (tm_rules_check,
 * tm_segment_check), stored as JSONB and published to Redis (tm:rules,
 * tm:segments) for the edge. Every route but /health* needs an API key. */
#include "tm_audit.h"
#include "tm_buf.h"
#include "tm_log.h"
#include "tm_names.h"
#include "tm_rules.h"
#include "tm_sql.h"
#include "tm_store.h"

#include <stdlib.h>
#include <string.h>

static const tm_migration migrations[] = {
    /* IF NOT EXISTS: the original service's database already has it. */
    { 1, "CREATE TABLE IF NOT EXISTS targeting_rules ("
         " id SERIAL PRIMARY KEY,"
         " flag_name VARCHAR(100) UNIQUE NOT NULL,"
         " is_enabled BOOLEAN DEFAULT TRUE,"
         " rules JSONB NOT NULL,"
         " created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),"
         " updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW())" },
    { 2, "CREATE TABLE IF NOT EXISTS segments ("
         " id SERIAL PRIMARY KEY,"
         " name VARCHAR(100) UNIQUE NOT NULL,"
         " description TEXT NOT NULL DEFAULT '',"
         " constraints JSONB NOT NULL DEFAULT '[]',"
         " created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),"
         " updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW())" },
};

/* The environments feature (docs/environments.md). */
static const tm_migration env_migrations[] = {
    /* Environments (docs/environments.md): a rule per flag and environment;
     * existing rows are the default environment's. */
    { 1, "ALTER TABLE targeting_rules ADD COLUMN IF NOT EXISTS"
         " environment VARCHAR(100) NOT NULL DEFAULT 'default'" },
    { 2, "ALTER TABLE targeting_rules DROP CONSTRAINT IF EXISTS targeting_rules_flag_name_key" },
    { 3, "CREATE UNIQUE INDEX IF NOT EXISTS targeting_rules_flag_env"
         " ON targeting_rules (flag_name, environment)" },
};

/* A rule as responses, Redis and reconciliation see it (one expression). */
#define RULE_JSON "json_build_object('id', id, 'flag_name', flag_name," \
    " 'is_enabled', coalesce(is_enabled, TRUE), 'rules', rules," \
    " 'created_at', " TM_SQL_TS("created_at") ", 'updated_at', " TM_SQL_TS("updated_at") ")::text"

/* A segment, likewise. */
#define SEGMENT_JSON "json_build_object('id', id, 'name', name," \
    " 'description', description, 'constraints', constraints," \
    " 'created_at', " TM_SQL_TS("created_at") ", 'updated_at', " TM_SQL_TS("updated_at") ")::text"

static void create(const tm_body *b, const char *env, tm_resp *resp);
static void update(const tm_body *b, const char *env, tm_resp *resp);
static void segment_create(const tm_body *b, const char *env, tm_resp *resp);
static void segment_update(const tm_body *b, const char *env, tm_resp *resp);
static int segment_before_delete(tm_resp *resp, const char *name);
static int purge_environment(const tm_req *req, tm_resp *resp);

static const tm_store segments = {
    .collection = "/segments",
    .kind = "segment",
    .what = "segment",
    .sql_list = "SELECT " TM_SQL_JSON_ARRAY(SEGMENT_JSON, "name") " FROM segments",
    .sql_get = "SELECT " SEGMENT_JSON " FROM segments WHERE name = $1",
    .sql_delete = "DELETE FROM segments WHERE name = $1 RETURNING id",
    .sql_load = "SELECT name, " SEGMENT_JSON " FROM segments",
    .body = TM_BODY_SEGMENT,
    .create = segment_create,
    .update = segment_update,
    .before_delete = segment_before_delete,
};

static const tm_store store = {
    .name = "targeting",
    .default_port = 8003,
    .migrations = migrations,
    .nmigrations = sizeof migrations / sizeof migrations[0],
    .env_migrations = env_migrations,
    .nenv_migrations = sizeof env_migrations / sizeof env_migrations[0],
    .collection = "/rules",
    .kind = "rule",
    .what = "targeting rule for flag",
    .per_env = 1,
    .sql_list = "SELECT " TM_SQL_JSON_ARRAY(RULE_JSON, "flag_name") " FROM targeting_rules"
                " WHERE environment = $1",
    .sql_get = "SELECT " RULE_JSON " FROM targeting_rules WHERE flag_name = $1"
               " AND environment = $2",
    .sql_delete = "DELETE FROM targeting_rules WHERE flag_name = $1 AND environment = $2"
                  " RETURNING id",
    .sql_load = "SELECT flag_name, " RULE_JSON " FROM targeting_rules"
                " WHERE environment = '" TM_ENV_DEFAULT "'",
    .sql_load_env = "SELECT flag_name, " RULE_JSON " FROM targeting_rules WHERE environment = $1",
    /* The flags daemon owns the environments; it publishes them in tm:envs. */
    .env_exists = tm_publish_env_known,
    .env_names = tm_publish_env_names,
    .body = TM_BODY_RULE,
    .create = create,
    .update = update,
    .special = purge_environment,
    .next = &segments,
};

/* Bodies are checked in lib/tm_bodies.c: b->doc is the rules or the
 * constraints document as compact JSON, already checked against the rule
 * language lib/ evaluates. */

static void create(const tm_body *b, const char *env, tm_resp *resp)
{
    const char *p[] = { b->name, b->doc, b->enabled ? "true" : "false", env };
    tm_store_write(&store, resp, 1,
                   "INSERT INTO targeting_rules (flag_name, rules, is_enabled, environment)"
                   " VALUES ($1, $2::jsonb, $3, $4) ON CONFLICT DO NOTHING"
                   " RETURNING " RULE_JSON, 4, p, b->name, env);
}

/* Absent members stay as they are (NULL: coalesce keeps the column). */
static void update(const tm_body *b, const char *env, tm_resp *resp)
{
    const char *p[] = { b->name, b->doc,
                        b->has_enabled ? (b->enabled ? "true" : "false") : NULL, env };
    tm_store_write(&store, resp, 0,
                   "UPDATE targeting_rules SET rules = coalesce($2::jsonb, rules),"
                   " is_enabled = coalesce($3::boolean, is_enabled),"
                   " updated_at = clock_timestamp()"
                   " WHERE flag_name = $1 AND environment = $4 RETURNING " RULE_JSON,
                   4, p, b->name, env);
}

/* DELETE /rules?environment=E&confirm=E: every rule of E goes, with its
 * hash (the flags daemon calls it when E is deleted). Not for the default
 * environment; E need not exist any more, so a retry after a partial
 * failure succeeds. */
static int purge_environment(const tm_req *req, tm_resp *resp)
{
    const char *env = tm_req_query(req, "environment");
    if (strcmp(req->path, "/rules") != 0 || strcmp(req->method, "DELETE") != 0 || env == NULL) {
        return 0;
    }
    const char *confirm = tm_req_query(req, "confirm");
    if (!tm_env_name_valid(env, strlen(env)) || strcmp(env, TM_ENV_DEFAULT) == 0) {
        tm_resp_error(resp, 400, "environment must name an environment other than the default");
        return 1;
    }
    if (confirm == NULL || strcmp(confirm, env) != 0) {
        tm_resp_error(resp, 409, "deleting every rule of environment \"%s\" needs ?confirm=%s",
                      env, env);
        return 1;
    }
    const char *p[] = { env };
    PGresult *res;
    /* One record for the purge (the rules as they were, as a JSON array). */
    tm_audit_change c = {
        .action = "delete-all", .kind = store.kind, .name = "*", .env = env,
        .before_sql = "SELECT json_agg(rules ORDER BY flag_name)::text FROM targeting_rules"
                      " WHERE environment = $1",
        .nbefore = 1, .before_params = p,
        .sql = "WITH d AS (DELETE FROM targeting_rules WHERE environment = $1 RETURNING 1)"
               " SELECT count(*) FROM d HAVING count(*) > 0",
        .nparams = 1, .params = p, .after_col = -1,
    };
    tm_db_status s = tm_audit_apply(&c, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return 1;
    }
    const char *n = PQntuples(res) ? PQgetvalue(res, 0, 0) : "0";
    tm_resp_json(resp, 200, json_pack("{s:s,s:I}", "environment", env, "deleted",
                                      (json_int_t) strtoll(n, NULL, 10)));
    PQclear(res);
    tm_publish_drop_env(store.kind, env);
    TM_INFO("rules of environment %s deleted", env);
    return 1;
}

/* ---- segments ---- */

static void segment_create(const tm_body *b, const char *env, tm_resp *resp)
{
    (void) env;   /* segments are shared by every environment */
    const char *p[] = { b->name, b->description ? b->description : "", b->doc };
    tm_store_write(&segments, resp, 1,
                   "INSERT INTO segments (name, description, constraints)"
                   " VALUES ($1, $2, $3::jsonb) ON CONFLICT DO NOTHING"
                   " RETURNING " SEGMENT_JSON, 3, p, b->name, NULL);
}

static void segment_update(const tm_body *b, const char *env, tm_resp *resp)
{
    (void) env;
    const char *p[] = { b->name, b->description, b->doc };
    tm_store_write(&segments, resp, 0,
                   "UPDATE segments SET description = coalesce($2, description),"
                   " constraints = coalesce($3::jsonb, constraints),"
                   " updated_at = clock_timestamp()"
                   " WHERE name = $1 RETURNING " SEGMENT_JSON, 3, p, b->name, NULL);
}

/* 1 if the stored rule document text refers to segment name, 0 if not or
 * if it does not compile (then it refers to nothing the edge would use). */
static int rule_uses_segment(const char *rules_text, const char *name)
{
    json_t *doc = json_loads(rules_text, JSON_DECODE_ANY, NULL);
    if (doc == NULL) {
        return 0;
    }
    char err[256];
    tm_rule *r = tm_rule_compile(doc, err, sizeof err);
    json_decref(doc);
    int used = 0;
    size_t nlen = strlen(name), len = 0;
    const char *ref;
    for (size_t i = 0; r && !used && (ref = tm_rule_segment_ref(r, i, &len)) != NULL; i++) {
        used = len == nlen && memcmp(ref, name, len) == 0;
    }
    tm_rule_free(r);
    return used;
}

/* A segment that stored rules refer to is not deleted: 409 naming the
 * flags whose rules use it. (A rule written between this check and the
 * DELETE may still refer to it; an unknown segment never matches, so such
 * a rule fails closed.) */
static int segment_before_delete(tm_resp *resp, const char *name)
{
    enum { SHOWN = 300 };   /* bytes of names in the message */
    const char *p[] = { name };
    PGresult *res;
    /* strpos: a cheap filter; compilation decides. */
    tm_db_status s = tm_db_exec("SELECT flag_name, rules::text FROM targeting_rules"
                                " WHERE strpos(rules::text, $1) > 0"
                                " ORDER BY flag_name COLLATE \"C\"", 1, p, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return -1;
    }
    tm_buf names = TM_BUF_INIT;
    int used = 0, shown = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        if (!rule_uses_segment(PQgetvalue(res, i, 1), name)) {
            continue;
        }
        if (names.len < SHOWN) {   /* error messages are short: the rest as a count */
            tm_buf_addf(&names, "%s\"%s\"", used ? ", " : "", PQgetvalue(res, i, 0));
            shown++;
        }
        used++;
    }
    PQclear(res);
    if (used == 0) {
        tm_buf_free(&names);
        return 0;
    }
    if (used > shown) {
        tm_buf_addf(&names, " and %d more", used - shown);
    }
    char *list = tm_buf_steal(&names);
    if (list == NULL) {
        tm_resp_error(resp, 500, "out of memory");
        return -1;
    }
    tm_resp_error(resp, 409, "segment \"%s\" is used by the rules of flag%s %s;"
                  " remove it from them first", name, used > 1 ? "s" : "", list);
    free(list);
    return -1;
}

int main(int argc, char **argv)
{
    return tm_store_main(&store, argc, argv);
}
