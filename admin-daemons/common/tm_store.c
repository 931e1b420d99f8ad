#include "tm_store.h"
#include "tm_apikey.h"
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

/* GET on the collection (name NULL) or on one row. */
static void query(const tm_store *st, tm_resp *resp, const char *sql, const char *name)
{
    const char *p[] = { name };
    PGresult *res;
    tm_db_status s = tm_db_exec(sql, name ? 1 : 0, name ? p : NULL, &res);
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

static void del(const tm_store *st, tm_resp *resp, const char *name)
{
    if (st->before_delete && st->before_delete(resp, name) != 0) {
        return;
    }
    const char *p[] = { name };
    PGresult *res;
    tm_db_status s = tm_db_exec(st->sql_delete, 1, p, &res);
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
    tm_publish(st->kind, name, NULL);
    TM_INFO("%s %s deleted", st->what, name);
    tm_resp_empty(resp, 204);
}

void tm_store_write(const tm_store *st, tm_resp *resp, int create, const char *sql,
                    int nparams, const char *const *params, const char *name)
{
    PGresult *res;
    tm_db_status s = tm_db_exec(sql, nparams, params, &res);
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
    tm_publish(st->kind, name, json);
    TM_INFO("%s %s %s", st->what, name, create ? "created" : "updated");
    tm_resp_raw(resp, create ? 201 : 200, json);
    PQclear(res);
}

/* POST (path_name NULL) or PUT: the body checked in lib/tm_bodies.c, then
 * the daemon's write. */
static void with_body(const tm_store *st, const tm_req *req, tm_resp *resp,
                      const char *path_name)
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
        st->create(&b, resp);
    } else {
        st->update(&b, resp);
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
    if (!tm_apikey_check(req, resp)) {
        return;
    }
    const char *m = req->method, *path = req->path;
    const tm_store *st = route(ctx, path);
    if (st == NULL) {
        tm_resp_error(resp, 404, "no route for %s %.200s", m, path);
        return;
    }
    size_t cl = strlen(st->collection);
    if (path[cl] == '\0') {
        if (strcmp(m, "POST") == 0) return with_body(st, req, resp, NULL);
        if (strcmp(m, "GET") == 0) return query(st, resp, st->sql_list, NULL);
        not_allowed(resp, m, st->collection, "GET, POST");
        return;
    }
    const char *name = path + cl + 1;
    if (!tm_name_valid(name, strlen(name))) {
        tm_resp_error(resp, 400, "the name in the path must be 1 to %d bytes: %s",
                      TM_NAME_MAX, tm_name_charset());
        return;
    }
    if (strcmp(m, "GET") == 0) return query(st, resp, st->sql_get, name);
    if (strcmp(m, "PUT") == 0) return with_body(st, req, resp, name);
    if (strcmp(m, "DELETE") == 0) return del(st, resp, name);
    not_allowed(resp, m, "this resource", "GET, PUT, DELETE");
}

int tm_store_load(const char *sql, tm_pub_item **items, size_t *n, void **owner)
{
    PGresult *res;
    if (tm_db_exec(sql, 0, NULL, &res) != TM_DB_OK) {
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

static int load(tm_pub_item **items, size_t *n, void **owner)
{
    return tm_store_load(loading->sql_load, items, n, owner);
}

static void reconcile(void)
{
    for (loading = served; loading; loading = loading->next) {
        tm_publish_reconcile(loading->kind, load, tm_store_free_result);
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
        .handler = handle,
        .ctx = (void *) st,
        .reconcile = reconcile,
        .check_env = check_env,
    };
    return tm_daemon_main(&d, argc, argv);
}
