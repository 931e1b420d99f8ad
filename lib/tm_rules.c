#include "tm_rules.h"
#include "tm_hash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s", msg);
    }
    return -1;
}

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
            return fail(err, errlen, msg);
        }
    }
    return 0;
}

int tm_rules_check(const json_t *doc, char *err, size_t errlen)
{
    if (!json_is_object(doc)) {
        return fail(err, errlen, "rules must be a JSON object");
    }
    json_t *type = json_object_get(doc, "type");
    if (!json_is_string(type)) {
        return fail(err, errlen, "rules.type must be a string, one of: "
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
            return fail(err, errlen, "PERCENTAGE rules need a numeric \"value\" from 0 to 100");
        }
        double d = json_number_value(v);
        if (!isfinite(d) || d < 0 || d > 100) {
            return fail(err, errlen, "PERCENTAGE \"value\" must be between 0 and 100");
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
            return fail(err, errlen, "USER_LIST rules need \"values\": an array of user ids (strings)");
        }
        if (json_array_size(vals) > TM_USER_LIST_MAX_VALUES) {
            return fail(err, errlen, "USER_LIST \"values\" holds at most 10000 user ids");
        }
        size_t i;
        json_t *u;
        json_array_foreach(vals, i, u) {
            if (!json_is_string(u)) {
                return fail(err, errlen, "USER_LIST \"values\" must contain only strings");
            }
            if (json_string_length(u) > TM_USER_VALUE_MAX_LEN) {
                return fail(err, errlen, "USER_LIST user ids are at most 1024 bytes");
            }
        }
        return 0;
    }
    char msg[200];
    snprintf(msg, sizeof msg, "unknown rule type \"%.32s\"; accepted types: "
             TM_RULE_TYPES_ACCEPTED, t);
    return fail(err, errlen, msg);
}

static int str_cmp(const void *a, const void *b)
{
    const tm_str *x = a, *y = b;
    if (x->len != y->len) {
        return x->len < y->len ? -1 : 1;
    }
    return memcmp(x->s, y->s, x->len);
}

tm_rule *tm_rule_compile(const json_t *doc, char *err, size_t errlen)
{
    if (tm_rules_check(doc, err, errlen) != 0) {
        return NULL;
    }
    tm_rule *r = calloc(1, sizeof *r);
    if (r == NULL) {
        fail(err, errlen, "out of memory");
        return NULL;
    }
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
        fail(err, errlen, "out of memory");
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
    qsort(r->users, n, sizeof *r->users, str_cmp);
    return r;
}

void tm_rule_free(tm_rule *r)
{
    if (r == NULL) {
        return;
    }
    free(r->users);
    free(r->arena);
    free(r);
}

tm_decision tm_decide(tm_flag_state flag, int rule_present, int rule_enabled,
                      const tm_rule *rule, const char *user, size_t ulen,
                      const char *flag_name, size_t flen)
{
    tm_decision d = { 0, TM_REASON_UNKNOWN };

    if (flag == TM_FLAG_MISSING) {
        return d;
    }
    if (flag == TM_FLAG_OFF) {
        d.reason = TM_REASON_DISABLED;
        return d;
    }
    if (!rule_present || !rule_enabled) {
        d.value = 1;
        d.reason = TM_REASON_STATIC;
        return d;
    }
    if (rule == NULL) {
        d.reason = TM_REASON_ERROR;
        return d;
    }
    switch (rule->type) {
    case TM_RULE_PERCENTAGE:
        d.value = (double) tm_percentage_bucket(user, ulen, flag_name, flen)
                  < rule->percentage;
        d.reason = TM_REASON_SPLIT;
        return d;
    case TM_RULE_USER_LIST: {
        tm_str key = { user, ulen };
        d.value = rule->nusers
                  && bsearch(&key, rule->users, rule->nusers, sizeof key, str_cmp) != NULL;
        d.reason = d.value ? TM_REASON_TARGETING_MATCH : TM_REASON_DEFAULT;
        return d;
    }
    }
    d.reason = TM_REASON_ERROR;
    return d;
}

const char *tm_reason_name(tm_reason r)
{
    switch (r) {
    case TM_REASON_DISABLED: return "DISABLED";
    case TM_REASON_STATIC: return "STATIC";
    case TM_REASON_TARGETING_MATCH: return "TARGETING_MATCH";
    case TM_REASON_SPLIT: return "SPLIT";
    case TM_REASON_DEFAULT: return "DEFAULT";
    case TM_REASON_ERROR: return "ERROR";
    case TM_REASON_UNKNOWN: break;
    }
    return "UNKNOWN";
}
