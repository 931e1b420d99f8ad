/* Compilation of strategies documents and segments into the compiled form
 * (tm_rules_int.h), with a path to the bad part in every error. Operands
 * are compiled by the operator table's hooks (tm_rules_ops.c). */
#include "tm_rules_int.h"
#include "tm_names.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- The arena ---- */

struct tm_block {
    struct tm_block *next;
    size_t used, cap;
};

struct tm_cleanup {
    void (*fn)(void *);
    void *p;
    struct tm_cleanup *next;
};

/* Blocks keep 16-byte alignment after their header. */
#define BLOCK_HDR ((sizeof(tm_block) + 15) & ~(size_t) 15)

void *tm_arena_alloc(tm_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t) 15;
    if (a->blocks == NULL || a->blocks->cap - a->blocks->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        tm_block *b = malloc(BLOCK_HDR + cap);
        if (b == NULL) {
            return NULL;
        }
        b->next = a->blocks;
        b->used = 0;
        b->cap = cap;
        a->blocks = b;
    }
    void *p = (char *) a->blocks + BLOCK_HDR + a->blocks->used;
    a->blocks->used += n;
    memset(p, 0, n);
    return p;
}

int tm_arena_on_free(tm_arena *a, void (*fn)(void *), void *p)
{
    tm_cleanup *cl = tm_arena_alloc(a, sizeof *cl);
    if (cl == NULL) {
        return -1;
    }
    cl->fn = fn;
    cl->p = p;
    cl->next = a->cleanups;
    a->cleanups = cl;
    return 0;
}

void tm_arena_free(tm_arena *a)
{
    for (tm_cleanup *cl = a->cleanups; cl; cl = cl->next) {
        cl->fn(cl->p);
    }
    for (tm_block *b = a->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    a->blocks = NULL;
    a->cleanups = NULL;
}

/* ---- Compilation state ---- */

int tm_cc_fail(tm_cc *c, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        int n = snprintf(c->err, c->errlen, "%s: ", c->plen ? c->path : c->root);
        if (n >= 0 && (size_t) n < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + n, c->errlen - (size_t) n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

/* Appends ".key" or "[i]" to the path; returns the mark to restore. */
size_t tm_cc_push_key(tm_cc *c, const char *key)
{
    size_t mark = c->plen;
    int n = snprintf(c->path + mark, sizeof c->path - mark, "%s%s", mark ? "." : "", key);
    if (n > 0) {
        c->plen += (size_t) n < sizeof c->path - mark ? (size_t) n : sizeof c->path - mark - 1;
    }
    return mark;
}

size_t tm_cc_push_index(tm_cc *c, size_t i)
{
    size_t mark = c->plen;
    int n = snprintf(c->path + mark, sizeof c->path - mark, "[%zu]", i);
    if (n > 0) {
        c->plen += (size_t) n < sizeof c->path - mark ? (size_t) n : sizeof c->path - mark - 1;
    }
    return mark;
}

void tm_cc_pop(tm_cc *c, size_t mark)
{
    c->plen = mark;
    c->path[mark] = '\0';
}

int tm_cc_oom(tm_cc *c)
{
    return tm_cc_fail(c, "out of memory");
}

static int only_keys(tm_cc *c, const json_t *obj, const char *const *allowed,
                     const char *accepted)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *) obj, key, val) {
        const char *const *a = allowed;
        while (*a && strcmp(key, *a) != 0) {
            a++;
        }
        if (*a == NULL) {
            return tm_cc_fail(c, "unknown field \"%.64s\"; accepted: %s", key, accepted);
        }
    }
    return 0;
}

int tm_cc_copy_str(tm_cc *c, const char *s, size_t len, tm_str *out)
{
    char *p = tm_arena_alloc(c->a, len + 1);
    if (p == NULL) {
        return tm_cc_oom(c);
    }
    memcpy(p, s, len);
    p[len] = '\0';
    out->s = p;
    out->len = len;
    return 0;
}

/* A required or optional (v == NULL) string field: text, 1..max bytes. */
static int get_text(tm_cc *c, const json_t *obj, const char *key, int required,
                    size_t max, tm_str *out)
{
    json_t *v = json_object_get(obj, key);
    out->s = NULL;
    out->len = 0;
    if (v == NULL && !required) {
        return 0;
    }
    size_t mark = tm_cc_push_key(c, key);
    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > max
        || !tm_text_valid(json_string_value(v), json_string_length(v))) {
        tm_cc_fail(c, "%s a non-empty string of at most %zu bytes",
              v ? "must be" : "required:", max);
        return -1;
    }
    tm_cc_pop(c, mark);
    return tm_cc_copy_str(c, json_string_value(v), json_string_length(v), out);
}

static int get_bool(tm_cc *c, const json_t *obj, const char *key, int dflt, int *out)
{
    json_t *v = json_object_get(obj, key);
    *out = dflt;
    if (v == NULL) {
        return 0;
    }
    if (!json_is_boolean(v)) {
        size_t mark = tm_cc_push_key(c, key);
        tm_cc_fail(c, "must be true or false");
        tm_cc_pop(c, mark);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int get_array(tm_cc *c, const json_t *obj, const char *key, size_t max,
                     const char *what, json_t **out)
{
    json_t *v = json_object_get(obj, key);
    *out = v;
    if (v == NULL) {
        return 0;
    }
    size_t mark = tm_cc_push_key(c, key);
    if (!json_is_array(v)) {
        return tm_cc_fail(c, "must be an array of %s", what);
    }
    if (json_array_size(v) > max) {
        return tm_cc_fail(c, "holds at most %zu %s", max, what);
    }
    tm_cc_pop(c, mark);
    return 0;
}

static void field_of(const tm_str *name, tm_field *f)
{
    f->name = *name;
    if (name->len == 6 && memcmp(name->s, "userId", 6) == 0) {
        f->kind = F_USER_ID;
    } else if (name->len == 12 && memcmp(name->s, "targetingKey", 12) == 0) {
        f->kind = F_TARGETING_KEY;
    } else if (name->len == 11 && memcmp(name->s, "currentTime", 11) == 0) {
        f->kind = F_CURRENT_TIME;
    } else {
        f->kind = F_ATTR;
    }
}

static void lower(char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        s[i] = (char) tm_ascii_lower((unsigned char) s[i]);
    }
}

/* An array of strings (each at most TM_USER_VALUE_MAX_LEN) into the arena. */
static int string_list(tm_cc *c, const json_t *arr, int icase, tm_str **out, size_t *n)
{
    size_t count = json_array_size(arr), i;
    json_t *v;
    *out = tm_arena_alloc(c->a, (count ? count : 1) * sizeof **out);
    if (*out == NULL) {
        return tm_cc_oom(c);
    }
    json_array_foreach(arr, i, v) {
        size_t mark = tm_cc_push_index(c, i);
        if (!json_is_string(v)) {
            return tm_cc_fail(c, "must be a string");
        }
        if (json_string_length(v) > TM_USER_VALUE_MAX_LEN) {
            return tm_cc_fail(c, "values are at most %d bytes", TM_USER_VALUE_MAX_LEN);
        }
        tm_cc_pop(c, mark);
        if (tm_cc_copy_str(c, json_string_value(v), json_string_length(v), &(*out)[i]) != 0) {
            return -1;
        }
        if (icase) {
            lower((char *) (*out)[i].s, (*out)[i].len);
        }
    }
    *n = count;
    return 0;
}

/* The single operand of NUM_/DATE_/SEMVER_/REGEX: "value", or "values"
 * holding exactly one; strings, and numbers for NUM_. */
static int single_value(tm_cc *c, const json_t *con, const char *op, int numbers_ok,
                        const char **s, size_t *len, double *num, int *is_num,
                        const char **key)
{
    const json_t *v = json_object_get(con, "value");
    *key = "value";
    *is_num = 0;
    if (v == NULL || (json_is_string(v) && json_string_length(v) == 0)) {
        const json_t *vals = json_object_get(con, "values");
        if (json_is_array(vals) && json_array_size(vals) == 1) {
            v = json_array_get(vals, 0);
            *key = "values[0]";
        }
    }
    if (v == NULL) {
        return tm_cc_fail(c, "%s needs \"value\"", op);
    }
    size_t mark = tm_cc_push_key(c, *key);
    if (numbers_ok && json_is_number(v)) {
        *num = json_number_value(v);
        *is_num = 1;
        if (!isfinite(*num)) {
            return tm_cc_fail(c, "must be a finite number");
        }
    } else if (json_is_string(v)) {
        *s = json_string_value(v);
        *len = json_string_length(v);
        if (*len > TM_MAX_OPERAND_LEN) {
            return tm_cc_fail(c, "at most %d bytes", TM_MAX_OPERAND_LEN);
        }
    } else {
        return tm_cc_fail(c, numbers_ok ? "must be a number" : "must be a string");
    }
    tm_cc_pop(c, mark);
    return 0;
}
/* A list operand: "values", or a single string in "value". */
static int compile_list_operand(tm_cc *c, const json_t *con, tm_constraint *k)
{
    json_t *vals = json_object_get(con, "values");
    json_t *val = json_object_get(con, "value");
    json_t *one = NULL;     /* "value" standing for a one-string list */
    int single = vals == NULL;
    if (single) {
        if (!json_is_string(val)) {
            return tm_cc_fail(c, "%s needs \"values\": an array of strings", k->op->name);
        }
        one = json_array();
        if (one == NULL || json_array_append(one, val) != 0) {
            json_decref(one);
            return tm_cc_oom(c);
        }
        vals = one;
    } else if (val && !json_is_string(val)) {
        tm_cc_push_key(c, "value");
        return tm_cc_fail(c, "must be a string");
    }
    size_t mark = tm_cc_push_key(c, single ? "value" : "values");
    int rc = string_list(c, vals, k->icase, &k->values, &k->nvalues);
    json_decref(one);
    if (rc != 0) {
        return -1;
    }
    tm_operand op = { single ? k->values[0].s : NULL, single ? k->values[0].len : 0, 0 };
    if (k->op->compile && k->op->compile(c, k, single ? &op : NULL) != 0) {
        return -1;
    }
    tm_cc_pop(c, mark);
    return 0;
}

/* A single operand: "value", or "values" holding exactly one. */
static int compile_one_operand(tm_cc *c, const json_t *con, tm_constraint *k)
{
    json_t *vals = json_object_get(con, "values");
    if (vals && json_object_get(con, "value") == NULL && json_array_size(vals) != 1) {
        return tm_cc_fail(c, "%s takes one operand: \"value\"", k->op->name);
    }
    const char *s = NULL, *key;
    size_t len = 0;
    double num = 0;
    int is_num;
    if (single_value(c, con, k->op->name, k->op->numbers, &s, &len, &num, &is_num, &key) != 0) {
        return -1;
    }
    size_t mark = tm_cc_push_key(c, key);
    tm_operand op = { is_num ? NULL : s, len, num };
    if (k->op->compile && k->op->compile(c, k, &op) != 0) {
        return -1;
    }
    tm_cc_pop(c, mark);
    return 0;
}

static int compile_operator(tm_cc *c, const json_t *con, tm_constraint *k)
{
    json_t *opj = json_object_get(con, "operator");
    size_t mark = tm_cc_push_key(c, "operator");
    char accepted[200];
    if (!json_is_string(opj)) {
        tm_ops_accepted(accepted, sizeof accepted);
        return tm_cc_fail(c, "required: one of %s", accepted);
    }
    k->op = tm_op_find(json_string_value(opj), json_string_length(opj));
    if (k->op == NULL) {
        tm_ops_accepted(accepted, sizeof accepted);
        return tm_cc_fail(c, "unknown operator \"%.32s\"; accepted: %s",
                          json_string_value(opj), accepted);
    }
    tm_cc_pop(c, mark);
    return 0;
}

/* A constraint marked "invalid" (what an import could not use, kept as it
 * came): its other members are not read, and it never holds, inverted or
 * not, as Unleash's clients treat a constraint they cannot evaluate. */
static int compile_invalid(tm_cc *c, const json_t *con, tm_constraint *k)
{
    tm_str why;
    if (get_text(c, con, "invalid", 1, TM_MAX_INVALID_LEN, &why) != 0) {
        return -1;
    }
    static const tm_str none = { "", 0 };
    field_of(&none, &k->field);
    k->op = &tm_op_never;
    return 0;
}

static int compile_constraint(tm_cc *c, const json_t *con, tm_constraint *k)
{
    static const char *const keys[] = {
        "contextName", "operator", "values", "value", "inverted", "caseInsensitive",
        "invalid", NULL
    };
    if (!json_is_object(con)) {
        return tm_cc_fail(c, "must be an object {\"contextName\", \"operator\", "
                          "\"values\"|\"value\"}");
    }
    if (only_keys(c, con, keys, "contextName, operator, values, value, inverted, "
                  "caseInsensitive, invalid") != 0) {
        return -1;
    }
    if (json_object_get(con, "invalid")) {
        return compile_invalid(c, con, k);
    }
    tm_str name;
    if (get_text(c, con, "contextName", 1, TM_MAX_FIELD_NAME, &name) != 0
        || compile_operator(c, con, k) != 0) {
        return -1;
    }
    field_of(&name, &k->field);

    int inv, icase;
    if (get_bool(c, con, "inverted", 0, &inv) != 0
        || get_bool(c, con, "caseInsensitive", 0, &icase) != 0) {
        return -1;
    }
    k->inverted = (unsigned char) inv;
    /* Only string comparisons have a case; elsewhere the flag is accepted
     * (Unleash sends it on every constraint) and means nothing. */
    k->icase = (unsigned char) (icase && k->op->icase);

    json_t *vals = json_object_get(con, "values");
    if (vals && get_array(c, con, "values", TM_USER_LIST_MAX_VALUES, "strings", &vals) != 0) {
        return -1;
    }
    return k->op->operand == TM_OPERAND_LIST ? compile_list_operand(c, con, k)
           : compile_one_operand(c, con, k);
}

static int compile_constraints(tm_cc *c, const json_t *obj, tm_constraints *cs)
{
    json_t *arr;
    if (get_array(c, obj, "constraints", TM_MAX_CONSTRAINTS, "constraints", &arr) != 0) {
        return -1;
    }
    cs->n = 0;
    if (arr == NULL) {
        return 0;
    }
    cs->c = tm_arena_alloc(c->a, (json_array_size(arr) ? json_array_size(arr) : 1) * sizeof *cs->c);
    if (cs->c == NULL) {
        return tm_cc_oom(c);
    }
    size_t m1 = tm_cc_push_key(c, "constraints"), i;
    json_t *con;
    json_array_foreach(arr, i, con) {
        size_t m2 = tm_cc_push_index(c, i);
        if (compile_constraint(c, con, &cs->c[i]) != 0) {
            return -1;
        }
        c->worst += tm_constraint_worst(&cs->c[i]);
        tm_cc_pop(c, m2);
    }
    tm_cc_pop(c, m1);
    cs->n = json_array_size(arr);
    return 0;
}

static int compile_sticky(tm_cc *c, const json_t *obj, tm_sticky *st, int *given)
{
    tm_str s;
    if (get_text(c, obj, "stickiness", 0, TM_MAX_FIELD_NAME, &s) != 0) {
        return -1;
    }
    *given = s.s != NULL;
    st->kind = S_DEFAULT;
    if (s.s == NULL || strcmp(s.s, "default") == 0) {
        return 0;
    }
    if (strcmp(s.s, "random") == 0) {
        st->kind = S_RANDOM;
        return 0;
    }
    st->kind = S_FIELD;
    field_of(&s, &st->field);
    return 0;
}

static int compile_payload(tm_cc *c, const json_t *p, tm_variant *v)
{
    static const char *const keys[] = { "type", "value", NULL };
    if (!json_is_object(p)) {
        return tm_cc_fail(c, "must be an object {\"type\", \"value\"}");
    }
    if (only_keys(c, p, keys, "type, value") != 0) {
        return -1;
    }
    const char *type = json_string_value(json_object_get(p, "type"));
    json_t *val = json_object_get(p, "value");
    size_t mark = tm_cc_push_key(c, "type");
    if (type == NULL) {
        return tm_cc_fail(c, "required: string, json, number or boolean");
    }
    if (strcmp(type, "string") == 0 || strcmp(type, "csv") == 0) {
        v->ptype = TM_PAYLOAD_STRING;
    } else if (strcmp(type, "json") == 0) {
        v->ptype = TM_PAYLOAD_JSON;
    } else if (strcmp(type, "number") == 0) {
        v->ptype = TM_PAYLOAD_NUMBER;
    } else if (strcmp(type, "boolean") == 0) {
        v->ptype = TM_PAYLOAD_BOOLEAN;
    } else {
        return tm_cc_fail(c, "unknown payload type \"%.32s\"; accepted: string, json, number, "
                     "boolean, csv", type);
    }
    tm_cc_pop(c, mark);
    mark = tm_cc_push_key(c, "value");
    if (val == NULL) {
        return tm_cc_fail(c, "required");
    }
    /* Unleash sends every payload as a string; native JSON is accepted too.
     * What is stored is ready to print: JSON text, or the raw string. */
    json_t *native = NULL;
    char *text = NULL;
    const char *s = json_string_value(val);
    if (v->ptype == TM_PAYLOAD_STRING) {
        if (s == NULL) {
            return tm_cc_fail(c, "a string payload needs a string value");
        }
        if (json_string_length(val) > TM_MAX_PAYLOAD_LEN) {
            return tm_cc_fail(c, "at most %d bytes", TM_MAX_PAYLOAD_LEN);
        }
        if (tm_cc_copy_str(c, s, json_string_length(val), &v->payload) != 0) {
            return -1;
        }
        tm_cc_pop(c, mark);
        return 0;
    }
    if (s) {
        json_error_t je;
        native = json_loadb(s, json_string_length(val), JSON_DECODE_ANY, &je);
        if (native == NULL) {
            return tm_cc_fail(c, "not valid JSON text: %.80s", je.text);
        }
    } else {
        native = json_incref(val);
    }
    int ok = v->ptype == TM_PAYLOAD_JSON
             || (v->ptype == TM_PAYLOAD_NUMBER && json_is_number(native))
             || (v->ptype == TM_PAYLOAD_BOOLEAN && json_is_boolean(native));
    if (!ok) {
        json_decref(native);
        return tm_cc_fail(c, "must be a %s", v->ptype == TM_PAYLOAD_NUMBER ? "number" : "boolean");
    }
    text = json_dumps(native, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    json_decref(native);
    if (text == NULL) {
        return tm_cc_oom(c);
    }
    size_t tlen = strlen(text);
    int rc = tlen > TM_MAX_PAYLOAD_LEN ? tm_cc_fail(c, "at most %d bytes", TM_MAX_PAYLOAD_LEN)
             : tm_cc_copy_str(c, text, tlen, &v->payload);
    /* jansson's allocator, which a host (the nginx module) may replace */
    json_free_t jfree;
    json_get_alloc_funcs(NULL, &jfree);
    jfree(text);
    if (rc == 0) {
        tm_cc_pop(c, mark);
    }
    return rc;
}

static int compile_overrides(tm_cc *c, const json_t *arr, tm_variant *v)
{
    v->overrides = tm_arena_alloc(c->a, (json_array_size(arr) ? json_array_size(arr) : 1)
                                     * sizeof *v->overrides);
    if (v->overrides == NULL) {
        return tm_cc_oom(c);
    }
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        static const char *const keys[] = { "contextName", "values", NULL };
        size_t mark = tm_cc_push_index(c, i);
        tm_override *ov = &v->overrides[i];
        if (!json_is_object(o)) {
            return tm_cc_fail(c, "must be an object {\"contextName\", \"values\"}");
        }
        tm_str name;
        json_t *vals;
        if (only_keys(c, o, keys, "contextName, values") != 0
            || get_text(c, o, "contextName", 1, TM_MAX_FIELD_NAME, &name) != 0
            || get_array(c, o, "values", TM_USER_LIST_MAX_VALUES, "strings", &vals) != 0) {
            return -1;
        }
        if (vals == NULL) {
            return tm_cc_fail(c, "required: \"values\", an array of strings");
        }
        field_of(&name, &ov->field);
        size_t m2 = tm_cc_push_key(c, "values");
        if (string_list(c, vals, 0, &ov->values, &ov->nvalues) != 0) {
            return -1;
        }
        tm_cc_pop(c, m2);
        qsort(ov->values, ov->nvalues, sizeof *ov->values, tm_str_cmp);
        tm_cc_pop(c, mark);
    }
    v->noverrides = json_array_size(arr);
    return 0;
}

static int compile_variant(tm_cc *c, const json_t *o, tm_variant *v, tm_variants *vs, size_t idx)
{
    static const char *const keys[] = {
        "name", "weight", "stickiness", "payload", "overrides", "weightType", NULL
    };
    if (!json_is_object(o)) {
        return tm_cc_fail(c, "must be an object {\"name\", \"weight\", ...}");
    }
    if (only_keys(c, o, keys, "name, weight, stickiness, payload, overrides, weightType") != 0
        || get_text(c, o, "name", 1, TM_MAX_FIELD_NAME, &v->name) != 0) {
        return -1;
    }
    for (size_t j = 0; j < idx; j++) {
        if (tm_str_cmp(&vs->v[j].name, &v->name) == 0) {
            size_t mark = tm_cc_push_key(c, "name");
            tm_cc_fail(c, "duplicate variant name \"%.64s\"", v->name.s);
            tm_cc_pop(c, mark);
            return -1;
        }
    }
    json_t *w = json_object_get(o, "weight");
    size_t mark = tm_cc_push_key(c, "weight");
    if (!json_is_integer(w) || json_integer_value(w) < 0
        || json_integer_value(w) > TM_MAX_VARIANT_WEIGHT) {
        return tm_cc_fail(c, "must be an integer from 0 to %d", TM_MAX_VARIANT_WEIGHT);
    }
    tm_cc_pop(c, mark);
    v->weight = (uint32_t) json_integer_value(w);

    tm_sticky st;
    int given;
    if (compile_sticky(c, o, &st, &given) != 0) {
        return -1;
    }
    if (idx == 0) {                     /* Unleash: the first variant's counts */
        vs->sticky = st;
        vs->has_sticky = given;
    }
    json_t *wt = json_object_get(o, "weightType");
    if (wt && !json_is_string(wt)) {
        mark = tm_cc_push_key(c, "weightType");
        return tm_cc_fail(c, "must be a string (\"variable\" or \"fix\"; informational)");
    }
    json_t *p = json_object_get(o, "payload");
    if (p) {
        mark = tm_cc_push_key(c, "payload");
        if (compile_payload(c, p, v) != 0) {
            return -1;
        }
        tm_cc_pop(c, mark);
    }
    json_t *ovs;
    if (get_array(c, o, "overrides", TM_MAX_OVERRIDES, "overrides", &ovs) != 0) {
        return -1;
    }
    if (ovs) {
        mark = tm_cc_push_key(c, "overrides");
        if (compile_overrides(c, ovs, v) != 0) {
            return -1;
        }
        tm_cc_pop(c, mark);
    }
    return 0;
}

static int compile_variants(tm_cc *c, const json_t *obj, tm_variants *vs)
{
    json_t *arr;
    if (get_array(c, obj, "variants", TM_MAX_VARIANTS, "variants", &arr) != 0) {
        return -1;
    }
    memset(vs, 0, sizeof *vs);
    if (arr == NULL || json_array_size(arr) == 0) {
        return 0;
    }
    vs->v = tm_arena_alloc(c->a, json_array_size(arr) * sizeof *vs->v);
    if (vs->v == NULL) {
        return tm_cc_oom(c);
    }
    size_t m1 = tm_cc_push_key(c, "variants"), i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        size_t m2 = tm_cc_push_index(c, i);
        if (compile_variant(c, o, &vs->v[i], vs, i) != 0) {
            return -1;
        }
        vs->total += vs->v[i].weight;
        vs->nweighted += vs->v[i].weight > 0;
        vs->has_overrides |= vs->v[i].noverrides > 0;
        tm_cc_pop(c, m2);
    }
    tm_cc_pop(c, m1);
    vs->n = json_array_size(arr);
    return 0;
}

static int compile_rollout(tm_cc *c, const json_t *r, tm_strategy *s)
{
    static const char *const keys[] = { "percentage", "stickiness", "groupId", NULL };
    if (!json_is_object(r)) {
        return tm_cc_fail(c, "must be an object {\"percentage\", \"stickiness\", \"groupId\"}");
    }
    if (only_keys(c, r, keys, "percentage, stickiness, groupId") != 0) {
        return -1;
    }
    json_t *p = json_object_get(r, "percentage");
    size_t mark = tm_cc_push_key(c, "percentage");
    if (!json_is_number(p) || !(json_number_value(p) >= 0) || json_number_value(p) > 100) {
        return tm_cc_fail(c, "must be a number from 0 to 100");
    }
    tm_cc_pop(c, mark);
    s->has_rollout = 1;
    s->percentage = json_number_value(p);
    int given;
    return compile_sticky(c, r, &s->sticky, &given) != 0
           || get_text(c, r, "groupId", 0, TM_MAX_FIELD_NAME, &s->group) != 0 ? -1 : 0;
}

/* Adds name to the program's distinct segment names; *idx: its index. */
static int add_segref(tm_cc *c, tm_program *p, const tm_str *name, uint16_t *idx)
{
    for (size_t i = 0; i < p->nsegrefs; i++) {
        if (tm_str_cmp(&p->segrefs[i], name) == 0) {
            *idx = (uint16_t) i;
            return 0;
        }
    }
    if ((p->nsegrefs & (p->nsegrefs - 1)) == 0) {   /* 0, 1, 2, 4...: grow */
        size_t cap = p->nsegrefs ? p->nsegrefs * 2 : 1;
        tm_str *n = tm_arena_alloc(c->a, cap * sizeof *n);
        if (n == NULL) {
            return tm_cc_oom(c);
        }
        if (p->nsegrefs) {
            memcpy(n, p->segrefs, p->nsegrefs * sizeof *n);
        }
        p->segrefs = n;
    }
    *idx = (uint16_t) p->nsegrefs;   /* < TM_MAX_STRATEGIES * TM_MAX_SEGMENT_REFS */
    p->segrefs[p->nsegrefs++] = *name;
    return 0;
}

static int compile_strategy(tm_cc *c, const json_t *o, tm_strategy *s, tm_program *p)
{
    static const char *const keys[] = {
        "name", "constraints", "segments", "rollout", "variants", "disabled", NULL
    };
    if (!json_is_object(o)) {
        return tm_cc_fail(c, "must be an object {\"constraints\", \"segments\", \"rollout\", "
                     "\"variants\"}");
    }
    tm_str name;
    if (only_keys(c, o, keys, "name, constraints, segments, rollout, variants, disabled") != 0
        || get_text(c, o, "name", 0, TM_MAX_FIELD_NAME, &name) != 0
        || get_bool(c, o, "disabled", 0, &s->disabled) != 0
        || compile_constraints(c, o, &s->cs) != 0) {
        return -1;
    }
    json_t *segs;
    if (get_array(c, o, "segments", TM_MAX_SEGMENT_REFS, "segment names", &segs) != 0) {
        return -1;
    }
    if (segs) {
        size_t m1 = tm_cc_push_key(c, "segments");
        if (string_list(c, segs, 0, &s->segments, &s->nsegments) != 0) {
            return -1;
        }
        s->segidx = tm_arena_alloc(c->a, (s->nsegments ? s->nsegments : 1) * sizeof *s->segidx);
        if (s->segidx == NULL) {
            return tm_cc_oom(c);
        }
        for (size_t i = 0; i < s->nsegments; i++) {
            if (!tm_name_valid_unicode(s->segments[i].s, s->segments[i].len)) {
                tm_cc_push_index(c, i);
                return tm_cc_fail(c, "segment names are 1..%d bytes of " TM_NAME_CHARSET_UNICODE, TM_NAME_MAX);
            }
            if (add_segref(c, p, &s->segments[i], &s->segidx[i]) != 0) {
                return -1;
            }
        }
        tm_cc_pop(c, m1);
    }
    json_t *r = json_object_get(o, "rollout");
    if (r) {
        size_t m1 = tm_cc_push_key(c, "rollout");
        if (compile_rollout(c, r, s) != 0) {
            return -1;
        }
        tm_cc_pop(c, m1);
    }
    if (compile_variants(c, o, &s->variants) != 0) {
        return -1;
    }
    if (!s->variants.has_sticky) {      /* strategy variants follow the rollout */
        s->variants.sticky = s->sticky;
    }
    return 0;
}

static int compile_dependency(tm_cc *c, const json_t *o, tm_dependency *d)
{
    static const char *const keys[] = { "feature", "enabled", "variants", NULL };
    if (!json_is_object(o)) {
        return tm_cc_fail(c, "must be an object {\"feature\", \"enabled\", \"variants\"}");
    }
    if (only_keys(c, o, keys, "feature, enabled, variants") != 0) {
        return -1;
    }
    json_t *f = json_object_get(o, "feature");
    size_t mark = tm_cc_push_key(c, "feature");
    if (!json_is_string(f) || !tm_name_valid_unicode(json_string_value(f), json_string_length(f))) {
        return tm_cc_fail(c, "required: a flag name, 1..%d bytes of " TM_NAME_CHARSET_UNICODE, TM_NAME_MAX);
    }
    tm_cc_pop(c, mark);
    if (tm_cc_copy_str(c, json_string_value(f), json_string_length(f), &d->feature) != 0
        || get_bool(c, o, "enabled", 1, &d->enabled) != 0) {
        return -1;
    }
    json_t *vars;
    if (get_array(c, o, "variants", TM_MAX_VARIANTS, "variant names", &vars) != 0) {
        return -1;
    }
    if (vars) {
        mark = tm_cc_push_key(c, "variants");
        if (!d->enabled && json_array_size(vars)) {
            return tm_cc_fail(c, "only meaningful with \"enabled\": true");
        }
        if (string_list(c, vars, 0, &d->variants, &d->nvariants) != 0) {
            return -1;
        }
        qsort(d->variants, d->nvariants, sizeof *d->variants, tm_str_cmp);
        tm_cc_pop(c, mark);
    }
    return 0;
}

static int compile_program(tm_cc *c, const json_t *doc, tm_program *p)
{
    static const char *const keys[] = { "strategies", "variants", "dependencies", NULL };
    if (only_keys(c, doc, keys, "strategies, variants, dependencies (or \"type\" for "
                  TM_RULE_TYPES_ACCEPTED " documents)") != 0) {
        return -1;
    }
    json_t *arr;
    if (get_array(c, doc, "strategies", TM_MAX_STRATEGIES, "strategy objects", &arr) != 0) {
        return -1;
    }
    if (arr && json_array_size(arr)) {
        p->s = tm_arena_alloc(c->a, json_array_size(arr) * sizeof *p->s);
        if (p->s == NULL) {
            return tm_cc_oom(c);
        }
        size_t m1 = tm_cc_push_key(c, "strategies"), i;
        json_t *o;
        json_array_foreach(arr, i, o) {
            size_t m2 = tm_cc_push_index(c, i);
            if (compile_strategy(c, o, &p->s[i], p) != 0) {
                return -1;
            }
            tm_cc_pop(c, m2);
        }
        tm_cc_pop(c, m1);
        p->ns = json_array_size(arr);
    }
    if (compile_variants(c, doc, &p->variants) != 0) {
        return -1;
    }
    if (get_array(c, doc, "dependencies", TM_MAX_DEPENDENCIES, "dependencies", &arr) != 0) {
        return -1;
    }
    if (arr && json_array_size(arr)) {
        p->deps = tm_arena_alloc(c->a, json_array_size(arr) * sizeof *p->deps);
        if (p->deps == NULL) {
            return tm_cc_oom(c);
        }
        size_t m1 = tm_cc_push_key(c, "dependencies"), i;
        json_t *o;
        json_array_foreach(arr, i, o) {
            size_t m2 = tm_cc_push_index(c, i);
            if (compile_dependency(c, o, &p->deps[i]) != 0) {
                return -1;
            }
            tm_cc_pop(c, m2);
        }
        tm_cc_pop(c, m1);
        p->ndeps = json_array_size(arr);
    }
    return 0;
}

/* A document whose constraints, at their worst, add up to more than
 * TM_DOC_COST_MAX is refused: most contexts reaching its later parts would
 * exhaust the evaluation budget. */
static int within_bound(tm_cc *c)
{
    if (c->worst <= TM_DOC_COST_MAX) {
        return 0;
    }
    return tm_cc_fail(c, "its constraints could cost up to %llu units in one evaluation, "
                      "over the limit of %llu (%llu evaluation budgets of %u units): use "
                      "fewer REGEX constraints, or fewer values",
                      (unsigned long long) c->worst, (unsigned long long) TM_DOC_COST_MAX,
                      (unsigned long long) (TM_DOC_COST_MAX / TM_EVAL_BUDGET), TM_EVAL_BUDGET);
}

tm_program *tm_program_compile(const json_t *doc, char *err, size_t errlen)
{
    tm_arena a = { NULL, NULL };
    tm_program *p = tm_arena_alloc(&a, sizeof *p);
    if (p == NULL) {
        tm_rules_fail(err, errlen, "out of memory");
        return NULL;
    }
    tm_cc c = { &a, err, errlen, "rules", "", 0, 0 };
    if (compile_program(&c, doc, p) != 0 || within_bound(&c) != 0) {
        tm_arena_free(&a);
        return NULL;
    }
    p->arena = a;
    return p;
}

void tm_program_free(tm_program *p)
{
    if (p) {
        tm_arena a = p->arena;      /* p lives in its own arena */
        tm_arena_free(&a);
    }
}

/* ---- Segments ---- */

static int segment_compile_into(tm_cc *c, const json_t *doc, tm_segment *s)
{
    static const char *const keys[] = { "name", "constraints", "description", NULL };
    if (!json_is_object(doc)) {
        return tm_cc_fail(c, "must be a JSON object {\"name\", \"constraints\"}");
    }
    if (only_keys(c, doc, keys, "name, constraints, description") != 0) {
        return -1;
    }
    json_t *name = json_object_get(doc, "name");
    if (!json_is_string(name) || !tm_name_valid_unicode(json_string_value(name),
                                                     json_string_length(name))) {
        tm_cc_push_key(c, "name");
        return tm_cc_fail(c, "required: 1..%d bytes of " TM_NAME_CHARSET_UNICODE, TM_NAME_MAX);
    }
    json_t *desc = json_object_get(doc, "description");
    if (desc && !json_is_string(desc)) {
        tm_cc_push_key(c, "description");
        return tm_cc_fail(c, "must be a string");
    }
    tm_str n = { NULL, 0 };
    if (tm_cc_copy_str(c, json_string_value(name), json_string_length(name), &n) != 0) {
        return -1;
    }
    s->name = n.s;
    return compile_constraints(c, doc, &s->cs);
}

tm_segment *tm_segment_compile(const json_t *doc, char *err, size_t errlen)
{
    tm_arena a = { NULL, NULL };
    tm_segment *s = tm_arena_alloc(&a, sizeof *s);
    if (s == NULL) {
        tm_rules_fail(err, errlen, "out of memory");
        return NULL;
    }
    tm_cc c = { &a, err, errlen, "segment", "", 0, 0 };
    if (segment_compile_into(&c, doc, s) != 0 || within_bound(&c) != 0) {
        tm_arena_free(&a);
        return NULL;
    }
    s->arena = a;
    return s;
}

int tm_segment_check(const json_t *doc, char *err, size_t errlen)
{
    tm_segment *s = tm_segment_compile(doc, err, errlen);
    int rc = s ? 0 : -1;
    tm_segment_free(s);
    return rc;
}

void tm_segment_free(tm_segment *s)
{
    if (s) {
        tm_arena a = s->arena;
        tm_arena_free(&a);
    }
}

const char *tm_segment_name(const tm_segment *s)
{
    return s->name;
}
