#include "tm_records.h"

#include <stdio.h>
#include <string.h>

static int say(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s", msg);
    }
    return -1;
}

/* A JSON object, or NULL. Duplicate members are refused: which of two
 * is_enabled values counts would otherwise be jansson's choice. */
static json_t *object(const char *json, size_t len)
{
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    if (doc != NULL && !json_is_object(doc)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

int tm_flag_record_parse(const char *json, size_t len, int *client_visible)
{
    json_t *doc = object(json, len);
    json_t *v = json_object_get(doc, "is_enabled");
    json_t *cv = json_object_get(doc, "client_visible");
    int rc = json_is_boolean(v) ? json_is_true(v) : -1;
    if (cv != NULL && !json_is_boolean(cv)) {
        rc = -1;
    }
    *client_visible = rc >= 0 && json_is_true(cv);
    json_decref(doc);
    return rc;
}

int tm_flag_record_enabled(const char *json, size_t len)
{
    int cv;
    return tm_flag_record_parse(json, len, &cv);
}

int tm_rule_record_parse(const char *json, size_t len, int *enabled,
                         tm_rule **rule, char *err, size_t errlen)
{
    *rule = NULL;
    json_t *doc = object(json, len);
    json_t *en = json_object_get(doc, "is_enabled");
    json_t *rules = json_object_get(doc, "rules");
    if (!json_is_boolean(en) || !json_is_object(rules)) {
        json_decref(doc);
        return say(err, errlen, "not an object with is_enabled and rules");
    }
    *enabled = json_is_true(en);
    *rule = tm_rule_compile(rules, err, errlen);
    json_decref(doc);
    return 0;
}

tm_segment *tm_segment_record_compile(const char *json, size_t len,
                                      char *err, size_t errlen)
{
    static const char *const members[] = { "name", "description", "constraints" };

    json_t *doc = object(json, len);
    if (doc == NULL) {
        say(err, errlen, "not a JSON object");
        return NULL;
    }
    json_t *sdoc = json_object();
    if (sdoc == NULL) {
        json_decref(doc);
        say(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
        json_t *v = json_object_get(doc, members[i]);
        if (v && json_object_set(sdoc, members[i], v) != 0) {
            json_decref(sdoc);
            json_decref(doc);
            say(err, errlen, "out of memory");
            return NULL;
        }
    }
    tm_segment *seg = tm_segment_compile(sdoc, err, errlen);
    json_decref(sdoc);
    json_decref(doc);
    return seg;
}

int tm_env_record_parse(const char *field, size_t flen, const char *json,
                        size_t len)
{
    if (!tm_env_name_valid(field, flen)) {
        return -1;
    }
    json_t *doc = object(json, len);
    json_t *name = json_object_get(doc, "name");
    json_t *def = json_object_get(doc, "is_default");
    int rc = -1;
    if (json_is_string(name) && json_is_boolean(def)
        && json_string_length(name) == flen
        && memcmp(json_string_value(name), field, flen) == 0) {
        rc = json_is_true(def);
    }
    json_decref(doc);
    return rc;
}

void tm_change_parse(const char *json, size_t len, tm_change *c)
{
    memset(c, 0, sizeof *c);
    c->op = TM_CHANGE_RELOAD;
    c->doc = json_loadb(json, len, 0, NULL);

    json_t *kind = json_object_get(c->doc, "kind");
    json_t *op = json_object_get(c->doc, "op");
    json_t *name = json_object_get(c->doc, "name");
    json_t *env = json_object_get(c->doc, "environment");

    if (env != NULL && !json_is_null(env) && !json_is_string(env)) {
        return;     /* which environment is unknown: reload everything */
    }
    if (json_is_string(env)) {
        c->env = json_string_value(env);
        c->env_len = json_string_length(env);
    }
    if (json_is_string(kind)) {
        c->kind = json_string_value(kind);
        c->kind_len = json_string_length(kind);
    }
    if (!json_is_string(op) || !json_is_string(name)) {
        return;
    }
    if (strcmp(json_string_value(op), "upsert") == 0) {
        c->op = TM_CHANGE_UPSERT;
    } else if (strcmp(json_string_value(op), "delete") == 0) {
        c->op = TM_CHANGE_DELETE;
    } else {
        return;
    }
    c->name = json_string_value(name);
    c->name_len = json_string_length(name);
}

void tm_change_done(tm_change *c)
{
    json_decref(c->doc);
    c->doc = NULL;
}
