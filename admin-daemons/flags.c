/* togglemaster-flags (port 8002): creates, lists, reads, updates and deletes
 * feature flags. PostgreSQL holds them; every committed change is published
 * to Redis (tm:flags) for the edge. Every route but /health* needs an API key. */
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

static void create(const tm_body *b, tm_resp *resp);
static void update(const tm_body *b, tm_resp *resp);

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
    .body = TM_BODY_FLAG,
    .create = create,
    .update = update,
};

static void create(const tm_body *b, tm_resp *resp)
{
    const char *p[] = { b->name, b->description ? b->description : "",
                        b->enabled ? "true" : "false" };
    tm_store_write(&store, resp, 1,
                   "INSERT INTO flags (name, description, is_enabled)"
                   " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING " FLAG_JSON,
                   3, p, b->name);
}

/* Absent members stay as they are (NULL: coalesce keeps the column). */
static void update(const tm_body *b, tm_resp *resp)
{
    const char *p[] = { b->name, b->description,
                        b->has_enabled ? (b->enabled ? "true" : "false") : NULL };
    tm_store_write(&store, resp, 0,
                   "UPDATE flags SET description = coalesce($2, description),"
                   " is_enabled = coalesce($3::boolean, is_enabled),"
                   " updated_at = clock_timestamp()"
                   " WHERE name = $1 RETURNING " FLAG_JSON, 3, p, b->name);
}

int main(int argc, char **argv)
{
    return tm_store_main(&store, argc, argv);
}
