/* The original rule documents, {"type":"PERCENTAGE","value":N} and
 * {"type":"USER_LIST","values":[...]}: checked and compiled here, evaluated
 * by tm_rules_eval.c with the original buckets. */
#include "tm_rules_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_keys(const json_t *doc, const char *const *allowed,
                      char *err, size_t errlen)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *) doc, key, val) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++) {
            if (strcmp(key, *a) == 0) {
                ok = 1;
                break;
            }
        }
        if (!ok) {
            char msg[200];
            snprintf(msg, sizeof msg, "rules: unknown field \"%.64s\"", key);
            return tm_rules_fail(err, errlen, msg);
        }
    }
    return 0;
}

int tm_legacy_check(const json_t *doc, char *err, size_t errlen)
{
    json_t *type = json_object_get(doc, "type");
    if (!json_is_string(type)) {
        return tm_rules_fail(err, errlen, "rules.type must be a string, one of: "
                    TM_RULE_TYPES_ACCEPTED);
    }
    const char *t = json_string_value(type);
    if (strcmp(t, "PERCENTAGE") == 0) {
        static const char *const allowed[] = { "type", "value", NULL };
        if (check_keys(doc, allowed, err, errlen) != 0) {
            return -1;
        }
        json_t *v = json_object_get(doc, "value");
        if (!json_is_number(v)) {
            return tm_rules_fail(err, errlen, "PERCENTAGE rules need a numeric \"value\" from 0 to 100");
        }
        double d = json_number_value(v);
        if (!isfinite(d) || d < 0 || d > 100) {
            return tm_rules_fail(err, errlen, "PERCENTAGE \"value\" must be between 0 and 100");
        }
        return 0;
    }
    if (strcmp(t, "USER_LIST") == 0) {
        static const char *const allowed[] = { "type", "values", NULL };
        if (check_keys(doc, allowed, err, errlen) != 0) {
            return -1;
        }
        json_t *vals = json_object_get(doc, "values");
        if (!json_is_array(vals)) {
            return tm_rules_fail(err, errlen, "USER_LIST rules need \"values\": an array of user ids (strings)");
        }
        if (json_array_size(vals) > TM_USER_LIST_MAX_VALUES) {
            return tm_rules_fail(err, errlen, "USER_LIST \"values\" holds at most 10000 user ids");
        }
        size_t i;
        json_t *u;
        json_array_foreach(vals, i, u) {
            if (!json_is_string(u)) {
                return tm_rules_fail(err, errlen, "USER_LIST \"values\" must contain only strings");
            }
            if (json_string_length(u) > TM_USER_VALUE_MAX_LEN) {
                return tm_rules_fail(err, errlen, "USER_LIST user ids are at most 1024 bytes");
            }
        }
        return 0;
    }
    char msg[200];
    snprintf(msg, sizeof msg, "unknown rule type \"%.32s\"; accepted types: "
             TM_RULE_TYPES_ACCEPTED, t);
    return tm_rules_fail(err, errlen, msg);
}

tm_rule *tm_legacy_compile(const json_t *doc, tm_rule *r, char *err, size_t errlen)
{
    const char *t = json_string_value(json_object_get(doc, "type"));
    if (strcmp(t, "PERCENTAGE") == 0) {
        r->type = TM_RULE_PERCENTAGE;
        r->percentage = json_number_value(json_object_get(doc, "value"));
        return r;
    }

    r->type = TM_RULE_USER_LIST;
    json_t *vals = json_object_get(doc, "values");
    size_t n = json_array_size(vals), total = 0, i;
    json_t *u;
    json_array_foreach(vals, i, u) {
        total += json_string_length(u);
    }
    r->users = calloc(n ? n : 1, sizeof *r->users);
    r->arena = malloc(total ? total : 1);
    if (r->users == NULL || r->arena == NULL) {
        tm_rule_free(r);
        tm_rules_fail(err, errlen, "out of memory");
        return NULL;
    }
    size_t off = 0;
    json_array_foreach(vals, i, u) {
        size_t len = json_string_length(u);
        memcpy(r->arena + off, json_string_value(u), len);
        r->users[i].s = r->arena + off;
        r->users[i].len = len;
        off += len;
    }
    r->nusers = n;
    qsort(r->users, n, sizeof *r->users, tm_str_cmp);
    return r;
}
