#include "tm_store.h"
#include "tm_apikey.h"
#include "tm_audit.h"
#include "tm_webhooks.h"
#include "tm_daemon.h"
#include "tm_log.h"
#include "tm_names.h"

#include <stdlib.h>
#include <string.h>

void tm_store_db_error(tm_resp *resp, tm_db_status s)
{
    if (s == TM_DB_UNAVAILABLE) {
        tm_resp_error(resp, 503, "database unavailable, try again shortly");
    } else if (s == TM_DB_BAD_INPUT) {
        tm_resp_error(resp, 400, "the database rejected the input");
    } else if (s == TM_DB_CONFLICT) {
        tm_resp_error(resp, 409, "conflict");
    } else {
        tm_resp_error(resp, 500, "internal database error");
    }
}

static void publish(const tm_store *st, const char *name, const char *env, const char *json)
{
    if (st->publish) {
        st->publish(name, env, json);
    } else {
        tm_publish_env(st->kind, st->per_env ? env : NULL, name, json);
    }
}

int tm_store_request_env(const tm_store *st, const tm_req *req, tm_resp *resp,
                         int allow_all, const char **env)
{
    const char *v = tm_req_query(req, "environment");
    if (v == NULL) {
        v = tm_req_header(req, "X-TM-Environment");
    }
    *env = TM_ENV_DEFAULT;
    if (v == NULL) {
        return 0;
    }
    if (allow_all && strcmp(v, TM_ENV_ALL) == 0) {
        *env = v;
        return 0;
    }
    if (!tm_env_name_valid(v, strlen(v))) {
        tm_resp_error(resp, 400, "environment must be 1 to %d characters: " TM_NAME_CHARSET
                      " (\"" TM_ENV_ALL "\" only where every environment is asked for)",
                      TM_NAME_MAX);
        return -1;
    }
    int known = strcmp(v, TM_ENV_DEFAULT) == 0 ? 1 : st->env_exists ? st->env_exists(v) : 0;
    if (known == 0) {
        tm_resp_error(resp, 404, "no environment \"%s\"", v);
        return -1;
    }
    if (known < 0) {
        tm_resp_error(resp, 503, "cannot check environment \"%s\" right now: try again shortly", v);
        return -1;
    }
    *env = v;
    return 0;
}

/* GET on the collection (name NULL) or on one row. */
static void query(const tm_store *st, tm_resp *resp, const char *sql, const char *name,
                  const char *env)
{
    const char *p[2];
    int n = 0;
    if (name) p[n++] = name;
    if (st->per_env) p[n++] = env;
    PGresult *res;
    tm_db_status s = tm_db_exec(sql, n, n ? p : NULL, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    if (PQntuples(res) == 0) {
        tm_resp_error(resp, 404, "no %s \"%s\"", st->what, name ? name : "");
    } else {
        tm_resp_raw(resp, 200, PQgetvalue(res, 0, 0));
    }
    PQclear(res);
}

/* The change and its audit record in one transaction (tm_audit.h). */
static tm_db_status audited(const tm_store *st, const char *action, const char *sql,
                            int nparams, const char *const *params, const char *name,
                            const char *env, PGresult **out)
{
    const char *gp[] = { name, env };
    tm_audit_change c = {
        .action = action, .kind = st->kind, .name = name, .env = st->per_env ? env : NULL,
        .before_sql = strcmp(action, "create") != 0 ? st->sql_get : NULL,
        .nbefore = st->per_env ? 2 : 1, .before_params = gp,
        .sql = sql, .nparams = nparams, .params = params,
        .after_col = strcmp(action, "delete") != 0 ? 0 : -1,
    };
    return tm_audit_apply(&c, out);
}

static void del(const tm_store *st, tm_resp *resp, const char *name, const char *env)
{
    if (st->before_delete && st->before_delete(resp, name) != 0) {
        return;
    }
    const char *p[] = { name, env };
    PGresult *res;
    tm_db_status s = audited(st, "delete", st->sql_delete, st->per_env ? 2 : 1, p, name, env,
                             &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    int deleted = PQntuples(res) > 0;
    PQclear(res);
    if (!deleted) {
        tm_resp_error(resp, 404, "no %s \"%s\"", st->what, name);
        return;
    }
    publish(st, name, env, NULL);
    TM_INFO("%s %s deleted", st->what, name);
    tm_resp_empty(resp, 204);
}

void tm_store_write(const tm_store *st, tm_resp *resp, int create, const char *sql,
                    int nparams, const char *const *params, const char *name,
                    const char *env)
{
    PGresult *res;
    tm_db_status s = audited(st, create ? "create" : "update", sql, nparams, params, name,
                             env, &res);
    if (s == TM_DB_CONFLICT) {
        /* ON CONFLICT covers the name; any other unique index lands here. */
        tm_resp_error(resp, 409, "a %s \"%s\" already exists", st->what, name);
        return;
    }
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        if (create) {
            tm_resp_error(resp, 409, "a %s \"%s\" already exists", st->what, name);
        } else {
            tm_resp_error(resp, 404, "no %s \"%s\"", st->what, name);
        }
        return;
    }
    const char *json = PQgetvalue(res, 0, 0);
    publish(st, name, env, json);
    TM_INFO("%s %s %s", st->what, name, create ? "created" : "updated");
    tm_resp_raw(resp, create ? 201 : 200, json);
    PQclear(res);
}

/* POST (path_name NULL) or PUT: the body checked in lib/tm_bodies.c, then
 * the daemon's write. */
static void with_body(const tm_store *st, const tm_req *req, tm_resp *resp,
                      const char *path_name, const char *env)
{
    char err[512];
    int status;
    tm_body b;
    json_t *obj = tm_req_json_object(req, resp);
    if (obj == NULL) {
        return;
    }
    if (tm_body_check(st->body, obj, path_name, &b, &status, err, sizeof err) != 0) {
        tm_resp_error(resp, status, "%s", err);
    } else if (path_name == NULL) {
        st->create(&b, env, resp);
    } else {
        st->update(&b, env, resp);
    }
    tm_body_free(&b);
    json_decref(obj);
}

static void not_allowed(tm_resp *resp, const char *method, const char *route,
                        const char *allow)
{
    tm_resp_error(resp, 405, "method %s not allowed on %s", method, route);
    resp->extra_header_name = "Allow";
    resp->extra_header_value = strdup(allow);
}

/* The store whose collection is path or a prefix of it followed by '/'. */
static const tm_store *route(const tm_store *st, const char *path)
{
    for (; st; st = st->next) {
        size_t cl = strlen(st->collection);
        if (strncmp(path, st->collection, cl) == 0 && (path[cl] == '\0' || path[cl] == '/')) {
            return st;
        }
    }
    return NULL;
}

static void handle(void *ctx, const tm_req *req, tm_resp *resp)
{
    tm_audit_request(req);
    if (!tm_apikey_check(req, resp)) {
        return;
    }
    if (strcmp(req->path, "/audit") == 0) {
        tm_audit_get(req, resp);
        return;
    }
    if (tm_webhooks_route(req, resp)) {
        return;
    }
    const tm_store *top = ctx;
    if (top->special && top->special(req, resp)) {
        return;
    }
    const char *m = req->method, *path = req->path;
    const tm_store *st = route(ctx, path);
    if (st == NULL) {
        tm_resp_error(resp, 404, "no route for %s %.200s", m, path);
        return;
    }
    const char *env = TM_ENV_DEFAULT;
    if (st->per_env && tm_store_request_env(st, req, resp, 0, &env) != 0) {
        return;
    }
    size_t cl = strlen(st->collection);
    if (path[cl] == '\0') {
        if (strcmp(m, "POST") == 0) return with_body(st, req, resp, NULL, env);
        if (strcmp(m, "GET") == 0) return query(st, resp, st->sql_list, NULL, env);
        not_allowed(resp, m, st->collection, "GET, POST");
        return;
    }
    const char *name = path + cl + 1;
    if (!tm_name_valid(name, strlen(name))) {
        tm_resp_error(resp, 400, "the name in the path must be 1 to %d bytes: %s",
                      TM_NAME_MAX, tm_name_charset());
        return;
    }
    if (strcmp(m, "GET") == 0) return query(st, resp, st->sql_get, name, env);
    if (strcmp(m, "PUT") == 0) return with_body(st, req, resp, name, env);
    if (strcmp(m, "DELETE") == 0) return del(st, resp, name, env);
    not_allowed(resp, m, "this resource", "GET, PUT, DELETE");
}

int tm_store_load(const char *sql, tm_pub_item **items, size_t *n, void **owner)
{
    return tm_store_load_params(sql, 0, NULL, items, n, owner);
}

int tm_store_load_params(const char *sql, int nparams, const char *const *params,
                         tm_pub_item **items, size_t *n, void **owner)
{
    PGresult *res;
    if (tm_db_exec(sql, nparams, params, &res) != TM_DB_OK) {
        return -1;
    }
    size_t rows = (size_t) PQntuples(res);
    *items = malloc((rows ? rows : 1) * sizeof **items);
    if (*items == NULL) {
        PQclear(res);
        return -1;
    }
    for (size_t i = 0; i < rows; i++) {
        (*items)[i].field = PQgetvalue(res, (int) i, 0);
        (*items)[i].json = PQgetvalue(res, (int) i, 1);
    }
    *n = rows;
    *owner = res;
    return 0;
}

void tm_store_free_result(void *owner)
{
    PQclear(owner);
}

/* The stores this process serves, and the one being reconciled (the
 * reconciliation callbacks run on the main thread only). */
static const tm_store *served;
static const tm_store *loading;
static const char *loading_env;

static int load(tm_pub_item **items, size_t *n, void **owner)
{
    return tm_store_load(loading->sql_load, items, n, owner);
}

static int load_env(tm_pub_item **items, size_t *n, void **owner)
{
    const char *p[] = { loading_env };
    return tm_store_load_params(loading->sql_load_env, 1, p, items, n, owner);
}

/* Each environment's hash of a per-environment store. */
static void reconcile_envs(const tm_store *st)
{
    char **names;
    size_t n;
    if (st->env_names(&names, &n) != 0) {
        return;   /* cannot tell which now: the next round will */
    }
    for (size_t i = 0; i < n; i++) {
        loading_env = names[i];
        tm_publish_reconcile_env(st->kind, names[i], load_env, tm_store_free_result);
    }
    loading_env = NULL;
    tm_publish_free_names(names, n);
}

static void reconcile(void)
{
    tm_audit_prune();
    tm_publish_reconcile_begin();
    if (served->reconcile_extra) {
        served->reconcile_extra();
    }
    for (loading = served; loading; loading = loading->next) {
        tm_publish_reconcile(loading->kind, load, tm_store_free_result);
        if (loading->per_env && loading->env_names) {
            reconcile_envs(loading);
        }
    }
}

static int check_env(void)
{
    tm_apikey_init(tm_env("AUTH_SERVICE_URL", NULL));
    return 0;
}

int tm_store_main(const tm_store *st, int argc, char **argv)
{
    served = st;
    tm_daemon d = {
        .name = st->name,
        .default_port = st->default_port,
        .migrations = st->migrations,
        .nmigrations = st->nmigrations,
        .env_migrations = st->env_migrations,
        .nenv_migrations = st->nenv_migrations,
        .handler = handle,
        .ctx = (void *) st,
        .reconcile = reconcile,
        .check_env = check_env,
    };
    return tm_daemon_main(&d, argc, argv);
}
