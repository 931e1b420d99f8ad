#include "tm_store.h"
#include "tm_apikey.h"
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

static void list(const tm_store *st, tm_resp *resp)
{
    PGresult *res;
    tm_db_status s = tm_db_exec(st->sql_list, 0, NULL, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    tm_resp_raw(resp, 200, PQgetvalue(res, 0, 0));
    PQclear(res);
}

static void get(const tm_store *st, tm_resp *resp, const char *name)
{
    const char *p[] = { name };
    PGresult *res;
    tm_db_status s = tm_db_exec(st->sql_get, 1, p, &res);
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    if (PQntuples(res) == 0) {
        tm_resp_error(resp, 404, "no %s named \"%s\"", st->what, name);
    } else {
        tm_resp_raw(resp, 200, PQgetvalue(res, 0, 0));
    }
    PQclear(res);
}

static void del(const tm_store *st, tm_resp *resp, const char *name)
{
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
        tm_resp_error(resp, 404, "no %s named \"%s\"", st->what, name);
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
        tm_resp_error(resp, 409, "a %s named \"%s\" already exists", st->what, name);
        return;
    }
    if (s != TM_DB_OK) {
        tm_store_db_error(resp, s);
        return;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        if (create) {
            tm_resp_error(resp, 409, "a %s named \"%s\" already exists", st->what, name);
        } else {
            tm_resp_error(resp, 404, "no %s named \"%s\"", st->what, name);
        }
        return;
    }
    const char *json = PQgetvalue(res, 0, 0);
    tm_publish(st->kind, name, json);
    TM_INFO("%s %s %s", st->what, name, create ? "created" : "updated");
    tm_resp_raw(resp, create ? 201 : 200, json);
    PQclear(res);
}

static void not_allowed(tm_resp *resp, const char *method, const char *route,
                        const char *allow)
{
    tm_resp_error(resp, 405, "method %s not allowed on %s", method, route);
    resp->extra_header_name = "Allow";
    resp->extra_header_value = strdup(allow);
}

void tm_store_handle(void *ctx, const tm_req *req, tm_resp *resp)
{
    const tm_store *st = ctx;
    if (!tm_apikey_check(req, resp)) {
        return;
    }
    const char *m = req->method, *path = req->path;
    size_t cl = strlen(st->collection);
    if (strncmp(path, st->collection, cl) != 0 || (path[cl] != '\0' && path[cl] != '/')) {
        tm_resp_error(resp, 404, "no route for %s %.200s", m, path);
        return;
    }
    if (path[cl] == '\0') {
        if (strcmp(m, "POST") == 0) return st->create(req, resp);
        if (strcmp(m, "GET") == 0) return list(st, resp);
        not_allowed(resp, m, st->collection, "GET, POST");
        return;
    }
    const char *name = path + cl + 1;
    if (!tm_flag_name_valid(name, strlen(name))) {
        tm_resp_error(resp, 400, "the name in the path must be 1 to %d characters: "
                      TM_NAME_CHARSET, TM_NAME_MAX);
        return;
    }
    if (strcmp(m, "GET") == 0) return get(st, resp, name);
    if (strcmp(m, "PUT") == 0) return st->update(req, resp, name);
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

int tm_json_only(const json_t *obj, const char *const *allowed, tm_resp *resp)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *) obj, key, val) {
        const char *const *a = allowed;
        while (*a && strcmp(*a, key) != 0) {
            a++;
        }
        if (*a == NULL) {
            tm_resp_error(resp, 400, "unknown field \"%.64s\"", key);
            return -1;
        }
    }
    return 0;
}

int tm_json_opt_bool(const json_t *obj, const char *key, int *val, tm_resp *resp)
{
    json_t *j = json_object_get(obj, key);
    if (j == NULL) {
        return 0;
    }
    if (!json_is_boolean(j)) {
        tm_resp_error(resp, 400, "\"%s\" must be true or false", key);
        return -1;
    }
    *val = json_is_true(j);
    return 1;
}

const char *tm_json_name(const json_t *obj, const char *key, tm_resp *resp)
{
    json_t *j = json_object_get(obj, key);
    if (!json_is_string(j)) {
        tm_resp_error(resp, 400, "\"%s\" is required and must be a string", key);
        return NULL;
    }
    const char *name = json_string_value(j);
    if (!tm_flag_name_valid(name, json_string_length(j))) {
        tm_resp_error(resp, 400, "\"%s\" must be 1 to %d characters: " TM_NAME_CHARSET,
                      key, TM_NAME_MAX);
        return NULL;
    }
    return name;
}

int tm_json_same_name(const json_t *obj, const char *key, const char *name,
                      tm_resp *resp)
{
    json_t *j = json_object_get(obj, key);
    if (j == NULL || (json_is_string(j) && strcmp(json_string_value(j), name) == 0)) {
        return 0;
    }
    tm_resp_error(resp, 400, "\"%s\" cannot be changed: create a new one and delete this one",
                  key);
    return -1;
}
