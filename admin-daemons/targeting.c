/* togglemaster-targeting (port 8003): one targeting rule document per flag
 * (/rules), and the segments rules refer to (/segments). Documents are
 * checked against the rule language lib/ evaluates (tm_rules_check,
 * tm_segment_check), stored as JSONB and published to Redis (tm:rules,
 * tm:segments) for the edge. Every route but /health* needs an API key. */
#include "tm_buf.h"
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

/* A rule as responses, Redis and reconciliation see it (one expression). */
#define RULE_JSON "json_build_object('id', id, 'flag_name', flag_name," \
    " 'is_enabled', coalesce(is_enabled, TRUE), 'rules', rules," \
    " 'created_at', " TM_SQL_TS("created_at") ", 'updated_at', " TM_SQL_TS("updated_at") ")::text"

/* A segment, likewise. */
#define SEGMENT_JSON "json_build_object('id', id, 'name', name," \
    " 'description', description, 'constraints', constraints," \
    " 'created_at', " TM_SQL_TS("created_at") ", 'updated_at', " TM_SQL_TS("updated_at") ")::text"

static void create(const tm_body *b, tm_resp *resp);
static void update(const tm_body *b, tm_resp *resp);
static void segment_create(const tm_body *b, tm_resp *resp);
static void segment_update(const tm_body *b, tm_resp *resp);
static int segment_before_delete(tm_resp *resp, const char *name);

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
    .collection = "/rules",
    .kind = "rule",
    .what = "targeting rule for flag",
    .sql_list = "SELECT " TM_SQL_JSON_ARRAY(RULE_JSON, "flag_name") " FROM targeting_rules",
    .sql_get = "SELECT " RULE_JSON " FROM targeting_rules WHERE flag_name = $1",
    .sql_delete = "DELETE FROM targeting_rules WHERE flag_name = $1 RETURNING id",
    .sql_load = "SELECT flag_name, " RULE_JSON " FROM targeting_rules",
    .body = TM_BODY_RULE,
    .create = create,
    .update = update,
    .next = &segments,
};

/* Bodies are checked in lib/tm_bodies.c: b->doc is the rules or the
 * constraints document as compact JSON, already checked against the rule
 * language lib/ evaluates. */

static void create(const tm_body *b, tm_resp *resp)
{
    const char *p[] = { b->name, b->doc, b->enabled ? "true" : "false" };
    tm_store_write(&store, resp, 1,
                   "INSERT INTO targeting_rules (flag_name, rules, is_enabled)"
                   " VALUES ($1, $2::jsonb, $3) ON CONFLICT DO NOTHING"
                   " RETURNING " RULE_JSON, 3, p, b->name);
}

/* Absent members stay as they are (NULL: coalesce keeps the column). */
static void update(const tm_body *b, tm_resp *resp)
{
    const char *p[] = { b->name, b->doc,
                        b->has_enabled ? (b->enabled ? "true" : "false") : NULL };
    tm_store_write(&store, resp, 0,
                   "UPDATE targeting_rules SET rules = coalesce($2::jsonb, rules),"
                   " is_enabled = coalesce($3::boolean, is_enabled),"
                   " updated_at = clock_timestamp()"
                   " WHERE flag_name = $1 RETURNING " RULE_JSON, 3, p, b->name);
}

/* ---- segments ---- */

static void segment_create(const tm_body *b, tm_resp *resp)
{
    const char *p[] = { b->name, b->description ? b->description : "", b->doc };
    tm_store_write(&segments, resp, 1,
                   "INSERT INTO segments (name, description, constraints)"
                   " VALUES ($1, $2, $3::jsonb) ON CONFLICT DO NOTHING"
                   " RETURNING " SEGMENT_JSON, 3, p, b->name);
}

static void segment_update(const tm_body *b, tm_resp *resp)
{
    const char *p[] = { b->name, b->description, b->doc };
    tm_store_write(&segments, resp, 0,
                   "UPDATE segments SET description = coalesce($2, description),"
                   " constraints = coalesce($3::jsonb, constraints),"
                   " updated_at = clock_timestamp()"
                   " WHERE name = $1 RETURNING " SEGMENT_JSON, 3, p, b->name);
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
