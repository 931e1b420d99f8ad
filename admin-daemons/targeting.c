/* togglemaster-targeting (port 8003): one targeting rule document per flag.
 * Documents are checked against the rule language lib/ evaluates
 * (tm_rules_check), stored as JSONB and published to Redis (tm:rules) for
 * the edge. Every route but /health* needs an API key. */
#include "tm_rules.h"
#include "tm_sql.h"
#include "tm_store.h"

#include <stdlib.h>

static const tm_migration migrations[] = {
    /* IF NOT EXISTS: the original service's database already has it. */
    { 1, "CREATE TABLE IF NOT EXISTS targeting_rules ("
         " id SERIAL PRIMARY KEY,"
         " flag_name VARCHAR(100) UNIQUE NOT NULL,"
         " is_enabled BOOLEAN DEFAULT TRUE,"
         " rules JSONB NOT NULL,"
         " created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),"
         " updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW())" },
};

/* A rule as responses, Redis and reconciliation see it (one expression). */
#define RULE_JSON "json_build_object('id', id, 'flag_name', flag_name," \
    " 'is_enabled', coalesce(is_enabled, TRUE), 'rules', rules," \
    " 'created_at', " TM_SQL_TS("created_at") ", 'updated_at', " TM_SQL_TS("updated_at") ")::text"

static void create(const json_t *body, tm_resp *resp, const char *name);
static void update(const json_t *body, tm_resp *resp, const char *name);
static const char *const fields[] = { "flag_name", "rules", "is_enabled", NULL };

static const tm_store store = {
    .name = "targeting",
    .default_port = 8003,
    .migrations = migrations,
    .nmigrations = sizeof migrations / sizeof migrations[0],
    .collection = "/rules",
    .kind = "rule",
    .what = "targeting rule for flag",
    .sql_list = "SELECT " TM_SQL_JSON_ARRAY(RULE_JSON, "flag_name") " FROM targeting_rules",
    .sql_get = "SELECT " RULE_JSON " FROM targeting_rules WHERE flag_name = $1",
    .sql_delete = "DELETE FROM targeting_rules WHERE flag_name = $1 RETURNING id",
    .sql_load = "SELECT flag_name, " RULE_JSON " FROM targeting_rules",
    .name_field = "flag_name",
    .fields = fields,
    .create = create,
    .update = update,
};

/* "rules": a document of the rule language, as compact JSON text (free it).
 * 1 present (*out set), 0 absent, -1 bad (resp filled). */
static int get_rules(const json_t *body, char **out, tm_resp *resp)
{
    json_t *j = json_object_get(body, "rules");
    if (j == NULL) {
        return 0;
    }
    char err[256];
    if (tm_rules_check(j, err, sizeof err) != 0) {
        tm_resp_error(resp, 400, "%s", err);
        return -1;
    }
    *out = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
    if (*out == NULL) {
        tm_resp_error(resp, 500, "out of memory");
        return -1;
    }
    return 1;
}

static void create(const json_t *body, tm_resp *resp, const char *name)
{
    char *rules = NULL;
    int enabled = 1, has_rules = get_rules(body, &rules, resp);
    if (has_rules == 0) {
        tm_resp_error(resp, 400, "\"rules\" is required: a JSON object such as"
                      " {\"type\":\"PERCENTAGE\",\"value\":25}");
    } else if (has_rules > 0 && tm_json_opt_bool(body, "is_enabled", &enabled, resp) >= 0) {
        const char *p[] = { name, rules, enabled ? "true" : "false" };
        tm_store_write(&store, resp, 1,
                       "INSERT INTO targeting_rules (flag_name, rules, is_enabled)"
                       " VALUES ($1, $2::jsonb, $3) ON CONFLICT DO NOTHING"
                       " RETURNING " RULE_JSON, 3, p, name);
    }
    free(rules);
}

static void update(const json_t *body, tm_resp *resp, const char *name)
{
    char *rules = NULL;
    int enabled = 0, has_rules = get_rules(body, &rules, resp), has_enabled = 0;
    if (has_rules >= 0
        && (has_enabled = tm_json_opt_bool(body, "is_enabled", &enabled, resp)) >= 0) {
        if (!has_rules && !has_enabled) {
            tm_resp_error(resp, 400, "nothing to update: send \"rules\" and/or \"is_enabled\"");
        } else {
            const char *p[] = { name, rules, has_enabled ? (enabled ? "true" : "false") : NULL };
            tm_store_write(&store, resp, 0,
                           "UPDATE targeting_rules SET rules = coalesce($2::jsonb, rules),"
                           " is_enabled = coalesce($3::boolean, is_enabled),"
                           " updated_at = clock_timestamp()"
                           " WHERE flag_name = $1 RETURNING " RULE_JSON, 3, p, name);
        }
    }
    free(rules);
}

int main(int argc, char **argv)
{
    return tm_store_main(&store, argc, argv);
}
