#include "tm_bodies.h"
#include "tm_names.h"
#include "tm_rules.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The members each kind may hold and the one that names it. */
static const char *const flag_fields[] = { "name", "description", "is_enabled", "client_visible",
                                           NULL };
static const char *const rule_fields[] = { "flag_name", "rules", "is_enabled", NULL };
static const char *const segment_fields[] = { "name", "description", "constraints", NULL };
static const char *const env_fields[] = { "name", NULL };
static const char *const promote_fields[] = { "from", "to", NULL };
static const char *const webhook_fields[] = { "url", "secret", "kinds", "environments", "format",
                                              NULL };
static const char *const webhook_kinds[] = { "flag", "rule", "segment", "environment", "key",
                                             "webhook", NULL };

typedef struct {
    int *status;
    char *err;
    size_t errlen;
} why;

static int fail(why *w, int status, const char *fmt, ...)
{
    va_list ap;
    *w->status = status;
    if (w->err && w->errlen) {
        va_start(ap, fmt);
        vsnprintf(w->err, w->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

json_t *tm_body_parse(const char *bytes, size_t len, char *err, size_t errlen)
{
    json_error_t e;
    const char *msg = "request body must be a JSON object";
    if (len == 0) {
        snprintf(err, errlen, "%s", msg);
        return NULL;
    }
    if (memchr(bytes, '\0', len) != NULL) {
        snprintf(err, errlen, "request body contains a NUL byte");
        return NULL;
    }
    json_t *j = json_loadb(bytes, len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL) {
        snprintf(err, errlen, "malformed JSON at line %d column %d: %s", e.line, e.column,
                 e.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(err, errlen, "%s", msg);
        return NULL;
    }
    return j;
}

static int only(const json_t *obj, const char *const *allowed, why *w)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *) obj, key, val) {
        const char *const *a = allowed;
        while (*a && strcmp(*a, key) != 0) {
            a++;
        }
        if (*a == NULL) {
            return fail(w, 400, "unknown field \"%.64s\"", key);
        }
    }
    return 0;
}

/* The name member: required and a valid flag name on create; on update
 * absent or the path's name. */
static int name_of(const json_t *obj, const char *key, const char *path_name,
                   const char **out, why *w)
{
    json_t *j = json_object_get(obj, key);
    if (path_name) {
        if (j == NULL || (json_is_string(j) && strcmp(json_string_value(j), path_name) == 0)) {
            *out = path_name;
            return 0;
        }
        return fail(w, 400, "\"%s\" cannot be changed: create a new one and delete this one",
                    key);
    }
    if (!json_is_string(j)) {
        return fail(w, 400, "\"%s\" is required and must be a string", key);
    }
    if (!tm_name_valid(json_string_value(j), json_string_length(j))) {
        return fail(w, 400, "\"%s\" must be 1 to %d bytes: %s", key, TM_NAME_MAX,
                    tm_name_charset());
    }
    *out = json_string_value(j);
    return 0;
}

/* 1 present (*val set), 0 absent, -1 not a boolean. */
static int opt_bool(const json_t *obj, const char *key, int *val, why *w)
{
    json_t *j = json_object_get(obj, key);
    if (j == NULL) {
        return 0;
    }
    if (!json_is_boolean(j)) {
        return fail(w, 400, "\"%s\" must be true or false", key);
    }
    *val = json_is_true(j);
    return 1;
}

/* description, optional text; prefix tells the member as messages name it. */
static int opt_text(const json_t *obj, const char *key, const char *prefix,
                    const char **out, why *w)
{
    json_t *j = json_object_get(obj, key);
    *out = NULL;
    if (j == NULL) {
        return 0;
    }
    if (!json_is_string(j)) {
        return fail(w, 400, "%s must be a string", prefix);
    }
    if (!tm_text_valid(json_string_value(j), json_string_length(j))) {
        return fail(w, 400, "%s must be UTF-8 text without control characters", prefix);
    }
    *out = json_string_value(j);
    return 1;
}

/* Compact JSON text of v, as stored (15 significant digits, as before). */
static int dump(const json_t *v, char **out, why *w)
{
    *out = json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(15));
    return *out ? 0 : fail(w, 500, "out of memory");
}

static int flag_body(const json_t *obj, const char *path_name, tm_body *b, why *w)
{
    int has_desc;
    if (only(obj, flag_fields, w) != 0 || name_of(obj, "name", path_name, &b->name, w) != 0
        || (has_desc = opt_text(obj, "description", "\"description\"", &b->description, w)) < 0
        || (b->has_enabled = opt_bool(obj, "is_enabled", &b->enabled, w)) < 0
        || (b->has_visible = opt_bool(obj, "client_visible", &b->visible, w)) < 0) {
        return -1;
    }
    if (path_name && !has_desc && !b->has_enabled && !b->has_visible) {
        return fail(w, 400, "nothing to update: send \"description\", \"is_enabled\""
                    " and/or \"client_visible\"");
    }
    return 0;
}

static int rule_body(const json_t *obj, const char *path_name, tm_body *b, why *w)
{
    char msg[256];
    if (only(obj, rule_fields, w) != 0 || name_of(obj, "flag_name", path_name, &b->name, w) != 0) {
        return -1;
    }
    b->enabled = 1;
    json_t *rules = json_object_get(obj, "rules");
    if (rules) {
        if (tm_rules_check(rules, msg, sizeof msg) != 0) {
            return fail(w, 400, "%s", msg);
        }
        if (dump(rules, &b->doc, w) != 0) {
            return -1;
        }
    } else if (path_name == NULL) {
        return fail(w, 400, "\"rules\" is required: a JSON object such as"
                    " {\"type\":\"PERCENTAGE\",\"value\":25}");
    }
    if ((b->has_enabled = opt_bool(obj, "is_enabled", &b->enabled, w)) < 0) {
        return -1;
    }
    if (path_name && rules == NULL && !b->has_enabled) {
        return fail(w, 400, "nothing to update: send \"rules\" and/or \"is_enabled\"");
    }
    return 0;
}

/* A segment is checked as lib/ will compile it: {name, constraints (or []),
 * description}. */
static int segment_body(const json_t *obj, const char *path_name, tm_body *b, why *w)
{
    char msg[256];
    if (only(obj, segment_fields, w) != 0 || name_of(obj, "name", path_name, &b->name, w) != 0) {
        return -1;
    }
    json_t *cons = json_object_get(obj, "constraints");
    json_t *desc = json_object_get(obj, "description");
    if (path_name == NULL && cons == NULL) {
        return fail(w, 400, "\"constraints\" is required: an array such as"
                    " [{\"contextName\":\"country\",\"operator\":\"IN\",\"values\":[\"BR\"]}]");
    }
    if (path_name && cons == NULL && desc == NULL) {
        return fail(w, 400, "nothing to update: send \"constraints\" and/or \"description\"");
    }
    if (opt_text(obj, "description", "description:", &b->description, w) < 0) {
        return -1;
    }
    json_t *doc = json_object();
    int bad = doc == NULL
              || json_object_set_new(doc, "name", json_string(b->name)) != 0
              || (cons ? json_object_set(doc, "constraints", cons)
                       : json_object_set_new(doc, "constraints", json_array())) != 0
              || (desc && json_object_set(doc, "description", desc) != 0);
    if (bad) {
        json_decref(doc);
        return fail(w, 500, "out of memory");
    }
    int rc = tm_segment_check(doc, msg, sizeof msg);
    json_decref(doc);
    if (rc != 0) {
        return fail(w, 400, "%s", msg);
    }
    return cons ? dump(cons, &b->doc, w) : 0;
}

/* An environment name member: required, a valid environment name. */
static int env_member(const json_t *obj, const char *key, const char **out, why *w)
{
    json_t *j = json_object_get(obj, key);
    if (!json_is_string(j)) {
        return fail(w, 400, "\"%s\" is required and must be an environment name", key);
    }
    if (!tm_env_name_valid(json_string_value(j), json_string_length(j))) {
        return fail(w, 400, "\"%s\" must be 1 to %d characters: " TM_NAME_CHARSET
                    ", and not \"" TM_ENV_ALL "\"", key, TM_NAME_MAX);
    }
    *out = json_string_value(j);
    return 0;
}

/* scope and environment of a key: server and client keys belong to exactly
 * one environment, admin and readonly keys to none. */
static int key_scope(const json_t *obj, tm_body *b, why *w)
{
    json_t *s = json_object_get(obj, "scope"), *e = json_object_get(obj, "environment");
    b->scope = TM_SCOPE_ADMIN;
    if (s && (!json_is_string(s)
              || tm_scope_parse(json_string_value(s), json_string_length(s), &b->scope) != 0)) {
        return fail(w, 400, "\"scope\" must be \"admin\", \"readonly\", \"server\" or \"client\"");
    }
    if (!tm_scope_has_environment(b->scope)) {
        if (e && !json_is_null(e)) {
            return fail(w, 400, "a %s key has no \"environment\": it acts on every environment",
                        tm_scope_name(b->scope));
        }
        return 0;
    }
    if (e == NULL || json_is_null(e)) {
        return fail(w, 400, "a %s key needs an \"environment\"", tm_scope_name(b->scope));
    }
    return env_member(obj, "environment", &b->environment, w);
}

/* API key names are labels for people: printable UTF-8, not flag names. */
static int key_body(const json_t *obj, tm_body *b, why *w)
{
    json_t *j = json_object_get(obj, "name");
    if (!json_is_string(j)) {
        return fail(w, 400, "\"name\" is required and must be a string");
    }
    size_t len = json_string_length(j);
    if (len == 0 || len > TM_NAME_MAX || !tm_text_valid(json_string_value(j), len)) {
        return fail(w, 400, "\"name\" must be 1 to 100 bytes of printable UTF-8");
    }
    b->name = json_string_value(j);
    return key_scope(obj, b, w);
}

static int env_body(const json_t *obj, tm_body *b, why *w)
{
    return only(obj, env_fields, w) != 0 ? -1 : env_member(obj, "name", &b->name, w);
}

static int promote_body(const json_t *obj, tm_body *b, why *w)
{
    if (only(obj, promote_fields, w) != 0 || env_member(obj, "from", &b->from, w) != 0
        || env_member(obj, "to", &b->to, w) != 0) {
        return -1;
    }
    if (strcmp(b->from, b->to) == 0) {
        return fail(w, 400, "\"from\" and \"to\" name the same environment");
    }
    return 0;
}

/* Printable ASCII (no space when !spaces), min to max bytes. */
static int ascii(const char *s, size_t min, size_t max, int spaces)
{
    size_t n = strlen(s);
    for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
        if (*p < (spaces ? 0x20 : 0x21) || *p > 0x7e) return 0;
    }
    return n >= min && n <= max;
}

static int webhook_kind_known(const char *k)
{
    for (size_t i = 0; webhook_kinds[i]; i++) {
        if (strcmp(k, webhook_kinds[i]) == 0) return 1;
    }
    return 0;
}

/* kinds or environments: null (all) or 1 to 16 names, kept as compact JSON. */
static int webhook_list(const json_t *obj, const char *member, int *has, char **out, why *w)
{
    json_t *v = json_object_get(obj, member), *e;
    size_t i;
    *has = v != NULL;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 16) {
        return fail(w, 400, "\"%s\" must be null (all) or an array of 1 to 16 names", member);
    }
    json_array_foreach(v, i, e) {
        const char *s = json_string_value(e);
        int ok = s && (strcmp(member, "kinds") == 0 ? webhook_kind_known(s)
                                                   : tm_env_name_valid(s, strlen(s)));
        if (!ok) {
            return fail(w, 400, strcmp(member, "kinds") == 0
                        ? "\"kinds\": element %zu is not flag, rule, segment, environment, key or webhook"
                        : "\"environments\": element %zu is not an environment name", i);
        }
    }
    *out = json_dumps(v, JSON_COMPACT);
    return *out ? 0 : fail(w, 500, "out of memory");
}

static int webhook_body(const json_t *obj, int create, tm_body *b, why *w)
{
    json_t *u = json_object_get(obj, "url"), *s = json_object_get(obj, "secret");
    json_t *f = json_object_get(obj, "format");
    if (only(obj, webhook_fields, w) != 0) {
        return -1;
    }
    if (create && (u == NULL || s == NULL)) {
        return fail(w, 400, "\"url\" and \"secret\" are required");
    }
    b->url = json_string_value(u);
    b->secret = json_string_value(s);
    b->format = json_string_value(f);
    if (u && (b->url == NULL || !ascii(b->url, 8, 2048, 0)
              || (strncmp(b->url, "http://", 7) != 0 && strncmp(b->url, "https://", 8) != 0)
              || strlen(b->url) <= (b->url[4] == 's' ? 8u : 7u))) {
        return fail(w, 400, "\"url\" must be an http:// or https:// URL of at most 2048"
                    " printable ASCII bytes");
    }
    if (s && (b->secret == NULL || !ascii(b->secret, 16, 256, 1))) {
        return fail(w, 400, "\"secret\" must be 16 to 256 printable ASCII bytes");
    }
    if (f && (b->format == NULL || (strcmp(b->format, "json") != 0
                                    && strcmp(b->format, "slack") != 0))) {
        return fail(w, 400, "\"format\" must be \"json\" or \"slack\"");
    }
    if (webhook_list(obj, "kinds", &b->has_kinds, &b->kinds, w) != 0
        || webhook_list(obj, "environments", &b->has_envs, &b->envs, w) != 0) {
        return -1;
    }
    return 0;
}

int tm_body_check(tm_body_kind kind, const json_t *obj, const char *path_name,
                  tm_body *out, int *status, char *err, size_t errlen)
{
    why w = { status, err, errlen };
    memset(out, 0, sizeof *out);
    *status = 0;
    int rc;
    if (!json_is_object(obj)) {
        return fail(&w, 400, "request body must be a JSON object");
    }
    switch (kind) {
    case TM_BODY_FLAG:
        rc = flag_body(obj, path_name, out, &w);
        break;
    case TM_BODY_RULE:
        rc = rule_body(obj, path_name, out, &w);
        break;
    case TM_BODY_SEGMENT:
        rc = segment_body(obj, path_name, out, &w);
        break;
    case TM_BODY_KEY:
        rc = key_body(obj, out, &w);
        break;
    case TM_BODY_ENV:
        rc = env_body(obj, out, &w);
        break;
    case TM_BODY_PROMOTE:
        rc = promote_body(obj, out, &w);
        break;
    case TM_BODY_WEBHOOK:
        rc = webhook_body(obj, path_name == NULL, out, &w);
        break;
    default:
        rc = fail(&w, 500, "unknown body kind");
    }
    if (rc != 0) {
        tm_body_free(out);
    }
    return rc;
}

void tm_body_free(tm_body *b)
{
    if (b) {
        free(b->doc);
        free(b->kinds);
        free(b->envs);
        b->doc = b->kinds = b->envs = NULL;
    }
}
