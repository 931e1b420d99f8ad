/* togglemaster-flags (port 8002): creates, lists, reads, updates and deletes
 * feature flags. PostgreSQL holds them; every committed change is published
 * to Redis (tm:flags) for the edge. Every route but /health* needs an API key. */
#include "tm_names.h"
#include "tm_sql.h"
#include "tm_store.h"


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

/* A flag as responses, Redis and reconciliation see it: one expression, so
 * the three agree byte for byte. coalesce: the original's columns allowed NULL. */
#define FLAG_JSON "json_build_object('id', id, 'name', name," \
    " 'description', coalesce(description, ''), 'is_enabled', coalesce(is_enabled, FALSE)," \
    " 'created_at', " TM_SQL_TS("created_at") ", 'updated_at', " TM_SQL_TS("updated_at") ")::text"

static void create(const json_t *body, tm_resp *resp, const char *name);
static void update(const json_t *body, tm_resp *resp, const char *name);
static const char *const fields[] = { "name", "description", "is_enabled", NULL };

static const tm_store store = {
    .name = "flags",
    .default_port = 8002,
    .migrations = migrations,
    .nmigrations = sizeof migrations / sizeof migrations[0],
    .collection = "/flags",
    .kind = "flag",
    .what = "flag",
    .sql_list = "SELECT " TM_SQL_JSON_ARRAY(FLAG_JSON, "name") " FROM flags",
    .sql_get = "SELECT " FLAG_JSON " FROM flags WHERE name = $1",
    .sql_delete = "DELETE FROM flags WHERE name = $1 RETURNING id",
    .sql_load = "SELECT name, " FLAG_JSON " FROM flags",
    .name_field = "name",
    .fields = fields,
    .create = create,
    .update = update,
};

/* "description": optional string of printable UTF-8. 1 present, 0 absent, -1 bad. */
static int get_description(const json_t *body, const char **out, tm_resp *resp)
{
    json_t *j = json_object_get(body, "description");
    if (j == NULL) {
        return 0;
    }
    if (!json_is_string(j)) {
        tm_resp_error(resp, 400, "\"description\" must be a string");
        return -1;
    }
    if (!tm_text_valid(json_string_value(j), json_string_length(j))) {
        tm_resp_error(resp, 400, "\"description\" must be UTF-8 text without control characters");
        return -1;
    }
    *out = json_string_value(j);
    return 1;
}

static void create(const json_t *body, tm_resp *resp, const char *name)
{
    const char *description = "";
    int enabled = 0;
    if (get_description(body, &description, resp) >= 0
        && tm_json_opt_bool(body, "is_enabled", &enabled, resp) >= 0) {
        const char *p[] = { name, description, enabled ? "true" : "false" };
        tm_store_write(&store, resp, 1,
                       "INSERT INTO flags (name, description, is_enabled)"
                       " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING " FLAG_JSON,
                       3, p, name);
    }
}

static void update(const json_t *body, tm_resp *resp, const char *name)
{
    const char *description = NULL;
    int enabled = 0, has_desc, has_enabled;
    if ((has_desc = get_description(body, &description, resp)) < 0
        || (has_enabled = tm_json_opt_bool(body, "is_enabled", &enabled, resp)) < 0) {
        return;
    }
    if (!has_desc && !has_enabled) {
        tm_resp_error(resp, 400, "nothing to update: send \"description\" and/or \"is_enabled\"");
        return;
    }
    const char *p[] = { name, description, has_enabled ? (enabled ? "true" : "false") : NULL };
    tm_store_write(&store, resp, 0,
                   "UPDATE flags SET description = coalesce($2, description),"
                   " is_enabled = coalesce($3::boolean, is_enabled),"
                   " updated_at = clock_timestamp()"
                   " WHERE name = $1 RETURNING " FLAG_JSON, 3, p, name);
}

int main(int argc, char **argv)
{
    return tm_store_main(&store, argc, argv);
}
