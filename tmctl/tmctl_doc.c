#include "tmctl_doc.h"
#include "tm_names.h"
#include "tm_rules.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int tmctl_same(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b)) {
            return json_integer_value(a) == json_integer_value(b);
        }
        return json_number_value(a) == json_number_value(b);
    }
    if (json_typeof(a) != json_typeof(b)) {
        return 0;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) {
            return 0;
        }
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!tmctl_same(json_array_get(a, i), json_array_get(b, i))) {
                return 0;
            }
        }
        return 1;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b)) {
            return 0;
        }
        const char *k;
        json_t *v;
        json_object_foreach((json_t *) a, k, v) {
            json_t *w = json_object_get(b, k);
            if (w == NULL || !tmctl_same(v, w)) {
                return 0;
            }
        }
        return 1;
    }
    return json_equal((json_t *) a, (json_t *) b);
}

/* ------------------------------------------------------------------ */
/* ToggleMaster documents                                             */
/* ------------------------------------------------------------------ */

/* Every key of obj is in allowed (NULL-terminated); else err names it. */
static int only_keys(const json_t *obj, const char *const *allowed, const char *where,
                     char *err, size_t errlen)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *) obj, k, v) {
        const char *const *a = allowed;
        while (*a && strcmp(*a, k) != 0) {
            a++;
        }
        if (*a == NULL) {
            fail(err, errlen, "%s: unknown field \"%.64s\"", where, k);
            return -1;
        }
    }
    return 0;
}

/* A name member: valid per tm_name_valid_unicode (the server may be stricter). */
static const char *get_name(const json_t *obj, const char *key, const char *where,
                            char *err, size_t errlen)
{
    json_t *j = json_object_get(obj, key);
    if (!json_is_string(j) || !tm_name_valid_unicode(json_string_value(j), json_string_length(j))) {
        fail(err, errlen, "%s.%s: required: 1 to %d characters: " TM_NAME_CHARSET_UNICODE,
             where, key, TM_NAME_MAX);
        return NULL;
    }
    return json_string_value(j);
}

/* An optional description: "" when absent (or null). */
static const char *get_description(const json_t *obj, const char *where, char *err, size_t errlen)
{
    json_t *j = json_object_get(obj, "description");
    if (j == NULL || json_is_null(j)) {
        return "";
    }
    if (!json_is_string(j) || !tm_text_valid(json_string_value(j), json_string_length(j))) {
        fail(err, errlen, "%s.description: must be UTF-8 text without control characters", where);
        return NULL;
    }
    return json_string_value(j);
}

static int get_bool(const json_t *obj, const char *key, int dflt, const char *where,
                    int *out, char *err, size_t errlen)
{
    json_t *j = json_object_get(obj, key);
    if (j == NULL) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(j)) {
        fail(err, errlen, "%s.%s: must be true or false", where, key);
        return -1;
    }
    *out = json_is_true(j);
    return 0;
}

/* An optional array member: the array, an empty one when absent, NULL on error. */
static json_t *get_array(const json_t *obj, const char *key, char *err, size_t errlen)
{
    json_t *j = json_object_get(obj, key);
    if (j == NULL) {
        return json_array();
    }
    if (!json_is_array(j)) {
        fail(err, errlen, "%s: must be an array", key);
        return NULL;
    }
    return json_incref(j);
}

/* 1 if name is already among the key members of the objects in arr. */
static int has_name(const json_t *arr, const char *key, const char *name)
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        if (strcmp(json_string_value(json_object_get(o, key)), name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* client_visible: the server lists it only when true, so an export (check
 * 0) always writes it; a file written before it existed has none, and its
 * import leaves the flag's visibility as the server has it. */
static json_t *norm_flag(const json_t *f, int check, const char *where, char *err, size_t errlen)
{
    static const char *const keys[] = { "name", "description", "is_enabled", "client_visible",
                                        "id", "created_at", "updated_at", NULL };
    if (!json_is_object(f)) {
        fail(err, errlen, "%s: must be an object {\"name\",\"description\",\"is_enabled\","
             "\"client_visible\"?}", where);
        return NULL;
    }
    const char *name, *desc;
    int enabled, visible;
    if (only_keys(f, keys, where, err, errlen) != 0
        || (name = get_name(f, "name", where, err, errlen)) == NULL
        || (desc = get_description(f, where, err, errlen)) == NULL
        || get_bool(f, "is_enabled", 0, where, &enabled, err, errlen) != 0
        || get_bool(f, "client_visible", -1, where, &visible, err, errlen) != 0) {
        return NULL;
    }
    json_t *out = json_pack("{s:s, s:s, s:b}", "name", name, "description", desc,
                            "is_enabled", enabled);
    if (out != NULL && (visible >= 0 || !check)
        && json_object_set_new(out, "client_visible", json_boolean(visible > 0)) != 0) {
        json_decref(out);
        out = NULL;
    }
    if (out == NULL) {
        fail(err, errlen, "out of memory");
    }
    return out;
}

static json_t *norm_segment(const json_t *s, int check, const char *where, char *err, size_t errlen)
{
    static const char *const keys[] = { "name", "description", "constraints",
                                        "id", "created_at", "updated_at", NULL };
    if (!json_is_object(s)) {
        fail(err, errlen, "%s: must be an object {\"name\",\"description\",\"constraints\"}", where);
        return NULL;
    }
    const char *name, *desc;
    if (only_keys(s, keys, where, err, errlen) != 0
        || (name = get_name(s, "name", where, err, errlen)) == NULL
        || (desc = get_description(s, where, err, errlen)) == NULL) {
        return NULL;
    }
    json_t *cons = json_object_get(s, "constraints");
    json_t *out = json_pack("{s:s, s:s, s:O}", "name", name, "description", desc,
                            "constraints", cons ? cons : json_null());
    if (out == NULL) {
        fail(err, errlen, "out of memory");
        return NULL;
    }
    if (cons == NULL && json_object_set_new(out, "constraints", json_array()) != 0) {
        fail(err, errlen, "out of memory");
        json_decref(out);
        return NULL;
    }
    char e[256];
    if (check && tm_segment_check(out, e, sizeof e) != 0) {
        fail(err, errlen, "%s: %s", where, e);
        json_decref(out);
        return NULL;
    }
    return out;
}

static json_t *norm_rule(const json_t *r, int check, const char *where, char *err, size_t errlen)
{
    static const char *const keys[] = { "flag_name", "is_enabled", "rules",
                                        "id", "created_at", "updated_at", NULL };
    if (!json_is_object(r)) {
        fail(err, errlen, "%s: must be an object {\"flag_name\",\"is_enabled\",\"rules\"}", where);
        return NULL;
    }
    const char *name;
    int enabled;
    if (only_keys(r, keys, where, err, errlen) != 0
        || (name = get_name(r, "flag_name", where, err, errlen)) == NULL
        || get_bool(r, "is_enabled", 1, where, &enabled, err, errlen) != 0) {
        return NULL;
    }
    json_t *doc = json_object_get(r, "rules");
    char e[256];
    if (doc == NULL) {
        fail(err, errlen, "%s.rules: required: a rule document", where);
        return NULL;
    }
    if (check && tm_rules_check(doc, e, sizeof e) != 0) {
        fail(err, errlen, "%s.rules.%s", where, e);
        return NULL;
    }
    return json_pack("{s:s, s:b, s:O}", "flag_name", name, "is_enabled", enabled, "rules", doc);
}

typedef json_t *(*norm_fn)(const json_t *, int, const char *, char *, size_t);

/* Normalises every element of in[key] into a new array; names unique. */
static json_t *norm_list(const json_t *in, const char *key, const char *name_key,
                         norm_fn fn, int check, char *err, size_t errlen)
{
    json_t *arr = get_array(in, key, err, errlen);
    json_t *out = json_array();
    if (arr == NULL || out == NULL) {
        json_decref(arr);
        json_decref(out);
        if (arr && !out) fail(err, errlen, "out of memory");
        return NULL;
    }
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        char where[64];
        snprintf(where, sizeof where, "%s[%zu]", key, i);
        json_t *n = fn(e, check, where, err, errlen);
        if (n == NULL) {
            goto bad;
        }
        const char *name = json_string_value(json_object_get(n, name_key));
        if (has_name(out, name_key, name)) {
            fail(err, errlen, "%s.%s: \"%s\" appears twice", where, name_key, name);
            json_decref(n);
            goto bad;
        }
        if (json_array_append_new(out, n) != 0) {
            fail(err, errlen, "out of memory");
            goto bad;
        }
    }
    json_decref(arr);
    return out;
bad:
    json_decref(arr);
    json_decref(out);
    return NULL;
}

static json_t *normalize(const json_t *in, int check, char *err, size_t errlen)
{
    static const char *const keys[] = { "format", "version", "flags", "segments", "rules", NULL };
    if (!json_is_object(in)) {
        fail(err, errlen, "the document must be a JSON object {\"format\":\"" TMCTL_FORMAT
             "\",\"version\":1,\"flags\",\"segments\",\"rules\"}");
        return NULL;
    }
    if (json_object_get(in, "features")) {
        fail(err, errlen, "this is an Unleash client-features document: use"
             " \"tmctl import unleash FILE\"");
        return NULL;
    }
    if (only_keys(in, keys, "document", err, errlen) != 0) {
        return NULL;
    }
    json_t *fmt = json_object_get(in, "format"), *ver = json_object_get(in, "version");
    if (fmt && (!json_is_string(fmt) || strcmp(json_string_value(fmt), TMCTL_FORMAT) != 0)) {
        fail(err, errlen, "format: must be \"" TMCTL_FORMAT "\"");
        return NULL;
    }
    if (ver && (!json_is_integer(ver) || json_integer_value(ver) != TMCTL_VERSION)) {
        fail(err, errlen, "version: this tmctl reads version %d", TMCTL_VERSION);
        return NULL;
    }
    json_t *flags = norm_list(in, "flags", "name", norm_flag, check, err, errlen);
    json_t *segs = flags ? norm_list(in, "segments", "name", norm_segment, check, err, errlen) : NULL;
    json_t *rules = segs ? norm_list(in, "rules", "flag_name", norm_rule, check, err, errlen) : NULL;
    if (rules == NULL) {
        json_decref(flags);
        json_decref(segs);
        return NULL;
    }
    json_t *out = json_pack("{s:s, s:i, s:o, s:o, s:o}", "format", TMCTL_FORMAT,
                            "version", TMCTL_VERSION, "flags", flags, "segments", segs,
                            "rules", rules);
    if (out == NULL) {
        fail(err, errlen, "out of memory");
    }
    return out;
}

json_t *tmctl_doc_normalize(const json_t *in, char *err, size_t errlen)
{
    return normalize(in, 1, err, errlen);
}

json_t *tmctl_doc_from_rows(const json_t *flags, const json_t *segments,
                            const json_t *rules, char *err, size_t errlen)
{
    json_t *in = json_pack("{s:O, s:O, s:O}", "flags", flags, "segments", segments,
                           "rules", rules);
    if (in == NULL) {
        fail(err, errlen, "unexpected answer from the server (not arrays)");
        return NULL;
    }
    /* What the server stored is exported as it is, checked or not. */
    json_t *out = normalize(in, 0, err, errlen);
    json_decref(in);
    return out;
}

/* ------------------------------------------------------------------ */
/* Unleash client-features documents                                  */
/* ------------------------------------------------------------------ */

typedef struct {
    char *err;
    size_t errlen;
    int skip_unknown;
    json_t *segnames;   /* {"<id>": "name"} */
    const char *feature;
} uctx;

static void warn(const uctx *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn(const uctx *u, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tmctl: warning: ");
    if (u->feature) {
        fprintf(stderr, "feature \"%s\": ", u->feature);
    }
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* A non-empty string member, or NULL (absent, null, empty, not a string). */
static const char *opt_str(const json_t *o, const char *key)
{
    json_t *j = json_object_get(o, key);
    return json_is_string(j) && json_string_length(j) ? json_string_value(j) : NULL;
}

/* Copies the members of src named in keys into dst, skipping nulls. */
static int copy_members(json_t *dst, const json_t *src, const char *const *keys)
{
    for (; *keys; keys++) {
        json_t *v = json_object_get(src, *keys);
        if (v && !json_is_null(v) && json_object_set(dst, *keys, v) != 0) {
            return -1;
        }
    }
    return 0;
}

/* One element of an Unleash array as ours: a new object, or NULL when
 * memory ran out. */
typedef json_t *(*conv_one)(const json_t *in);

/* An optional Unleash array of objects (member `what` of `where`), each
 * converted by one: [] when absent or null; NULL with err when it is not an
 * array of objects, or when memory ran out. */
static json_t *conv_array(const uctx *u, const json_t *arr, const char *where,
                          const char *what, conv_one one)
{
    json_t *out = json_array();
    if (out == NULL) {
        fail(u->err, u->errlen, "out of memory");
        return NULL;
    }
    if (arr == NULL || json_is_null(arr)) {
        return out;
    }
    if (!json_is_array(arr)) {
        fail(u->err, u->errlen, "%s.%s: must be an array", where, what);
        json_decref(out);
        return NULL;
    }
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        if (!json_is_object(e)) {
            fail(u->err, u->errlen, "%s.%s[%zu]: must be an object", where, what, i);
            json_decref(out);
            return NULL;
        }
        if (json_array_append_new(out, one(e)) != 0) {
            fail(u->err, u->errlen, "out of memory");
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* An Unleash constraint -> ours: contextName and operator as they are (the
 * operators map 1:1), "values" when it has any or "value" is absent,
 * "value" when given, inverted/caseInsensitive only when true. */
static json_t *conv_constraint(const json_t *c)
{
    json_t *n = json_object();
    json_t *values = json_object_get(c, "values"), *value = json_object_get(c, "value");
    int has_value = value && !json_is_null(value)
                    && !(json_is_string(value) && json_string_length(value) == 0);
    int rc = n == NULL
        || json_object_set(n, "contextName", json_object_get(c, "contextName")
                                             ? json_object_get(c, "contextName") : json_null()) != 0
        || json_object_set(n, "operator", json_object_get(c, "operator")
                                          ? json_object_get(c, "operator") : json_null()) != 0
        || (json_is_array(values) && (json_array_size(values) || !has_value)
            && json_object_set(n, "values", values) != 0)
        || (values && !json_is_array(values) && !json_is_null(values)
            && json_object_set(n, "values", values) != 0)
        || (has_value && json_object_set(n, "value", value) != 0)
        || (!has_value && !values && json_object_set_new(n, "values", json_array()) != 0)
        || (json_is_true(json_object_get(c, "inverted"))
            && json_object_set_new(n, "inverted", json_true()) != 0)
        || (json_is_true(json_object_get(c, "caseInsensitive"))
            && json_object_set_new(n, "caseInsensitive", json_true()) != 0);
    if (rc) {
        json_decref(n);
        return NULL;
    }
    return n;
}

static json_t *conv_constraints(const uctx *u, const json_t *arr, const char *where)
{
    return conv_array(u, arr, where, "constraints", conv_constraint);
}

/* 0 if the constraint c compiles; else -1 with why (relative to it). */
static int constraint_check(const json_t *c, char *why, size_t len)
{
    static const char prefix[] = "strategies[0].constraints[0]";
    char e[256];
    json_t *doc = json_pack("{s:[{s:[O]}]}", "strategies", "constraints", c);
    if (doc == NULL) {
        snprintf(why, len, "out of memory");
        return -1;
    }
    int rc = tm_rules_check(doc, e, sizeof e);
    json_decref(doc);
    if (rc != 0) {
        const char *p = strncmp(e, prefix, sizeof prefix - 1) == 0 ? e + sizeof prefix - 1 : e;
        snprintf(why, len, "%s", *p == '.' ? p + 1 : *p == ':' ? p + 2 : p);
        /* it quotes the document, cut anywhere: keep it storable text */
        if (!tm_text_valid(why, strlen(why))) {
            for (char *q = why; *q; q++) {
                if ((unsigned char) *q >= 0x80 || (unsigned char) *q < 0x20) {
                    *q = '?';
                }
            }
        }
    }
    return rc;
}

/* Unleash's clients skip the values of an IP list they cannot read: so do
 * we, with a warning. 1 if some were dropped (and some remain). */
static int drop_bad_addresses(const uctx *u, json_t *c, const char *where)
{
    const char *op = json_string_value(json_object_get(c, "operator"));
    json_t *vals = json_object_get(c, "values");
    if (op == NULL || (strcmp(op, "IN_CIDR") != 0 && strcmp(op, "IP_IN_CIDR") != 0)
        || !json_is_array(vals)) {
        return 0;
    }
    json_t *good = json_array();
    size_t i, dropped = 0;
    json_t *v;
    json_array_foreach(vals, i, v) {
        char why[256];
        json_t *one = json_pack("{s:s, s:s, s:[O]}", "contextName", "x", "operator", op,
                                "values", v);
        if (one && constraint_check(one, why, sizeof why) != 0) {
            warn(u, "%s: %s: \"%.64s\" is not an address or CIDR: ignored, as Unleash does",
                 where, op, json_is_string(v) ? json_string_value(v) : "(not a string)");
            dropped++;
        } else if (good == NULL || one == NULL || json_array_append(good, v) != 0) {
            json_decref(good);
            good = NULL;
        }
        json_decref(one);
    }
    int rc = good && dropped && json_array_size(good)
             && json_object_set(c, "values", good) == 0;
    json_decref(good);
    return rc;
}

/* Fail closed per constraint, as Unleash's clients do: a constraint that
 * does not compile (unknown operator, bad pattern, version or address) is
 * kept, marked "invalid" with the reason, and never matches; the flag stays.
 * 0, or -1 when memory ran out. */
static int fail_closed(const uctx *u, json_t *cons, const char *where)
{
    size_t i;
    json_t *c;
    json_array_foreach(cons, i, c) {
        char why[256], cw[160];
        snprintf(cw, sizeof cw, "%s.constraints[%zu]", where, i);
        if (constraint_check(c, why, sizeof why) == 0) {
            continue;
        }
        if (drop_bad_addresses(u, c, cw) && constraint_check(c, why, sizeof why) == 0) {
            continue;
        }
        warn(u, "%s: %s: this constraint never matches (as in Unleash)", cw, why);
        if (json_object_set_new(c, "invalid", json_string(why)) != 0) {
            fail(u->err, u->errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* The members of in named in keys, without an empty array member `empty`
 * (Unleash sends [] where ours would mean "none allowed"). */
static json_t *conv_copy(const json_t *in, const char *const *keys, const char *empty)
{
    json_t *n = json_object();
    if (n == NULL || copy_members(n, in, keys) != 0) {
        json_decref(n);
        return NULL;
    }
    json_t *e = json_object_get(n, empty);
    if (json_is_array(e) && json_array_size(e) == 0) {
        json_object_del(n, empty);
    }
    return n;
}

static json_t *conv_variant(const json_t *v)
{
    static const char *const keys[] = { "name", "weight", "stickiness", "payload",
                                        "overrides", "weightType", NULL };
    return conv_copy(v, keys, "overrides");
}

static json_t *conv_variants(const uctx *u, const json_t *arr, const char *where)
{
    return conv_array(u, arr, where, "variants", conv_variant);
}

/* "a, b,c" -> ["a","b","c"] (Unleash splits on commas and trims). */
static json_t *split_list(const char *s)
{
    json_t *out = json_array();
    while (out && s && *s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t) (end - s) : strlen(s);
        const char *a = s, *b = s + len;
        while (a < b && (*a == ' ' || *a == '\t' || *a == '\n' || *a == '\r')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\n' || b[-1] == '\r')) b--;
        if (b > a && json_array_append_new(out, json_stringn(a, (size_t) (b - a))) != 0) {
            json_decref(out);
            return NULL;
        }
        s = end ? end + 1 : s + len;
    }
    return out;
}

/* A percentage parameter: a number or a numeric string, 0..100. */
static int get_percent(const uctx *u, const json_t *params, const char *key, const char *where,
                       double *out)
{
    json_t *j = json_object_get(params, key);
    double p = NAN;
    if (j == NULL || json_is_null(j)) {
        *out = 100;   /* Unleash's UI always sets it; absent means everyone */
        return 0;
    }
    if (json_is_number(j)) {
        p = json_number_value(j);
    } else if (json_is_string(j) && json_string_length(j)) {
        char *end;
        p = strtod(json_string_value(j), &end);
        if (*end != '\0') {
            p = NAN;
        }
    }
    if (!(p >= 0 && p <= 100)) {
        fail(u->err, u->errlen, "%s.parameters.%s: must be a number from 0 to 100", where, key);
        return -1;
    }
    *out = p;
    return 0;
}

static json_t *rollout(double pct, const char *stickiness, const char *group)
{
    json_t *r = json_object();
    if (r == NULL
        || json_object_set_new(r, "percentage", pct == floor(pct) ? json_integer((json_int_t) pct)
                                                                  : json_real(pct)) != 0
        || json_object_set_new(r, "stickiness", json_string(stickiness)) != 0
        || (group && json_object_set_new(r, "groupId", json_string(group)) != 0)) {
        json_decref(r);
        return NULL;
    }
    return r;
}

static json_t *list_constraint(const char *ctx, const char *op, const char *list, int ci)
{
    json_t *vals = split_list(list);
    json_t *c = vals ? json_pack("{s:s, s:s, s:o}", "contextName", ctx, "operator", op,
                                 "values", vals) : NULL;
    if (c && ci && json_object_set_new(c, "caseInsensitive", json_true()) != 0) {
        json_decref(c);
        return NULL;
    }
    return c;
}

/* A strategy's segment ids -> our names, set on st. An id the document
 * lacks sets *missing: Unleash's clients never match such a strategy.
 * 0, or -1 with err. */
static int conv_segment_ids(const uctx *u, const json_t *segs, const char *where, json_t *st,
                            int *missing)
{
    if (segs == NULL || json_is_null(segs)) {
        return 0;
    }
    if (!json_is_array(segs)) {
        fail(u->err, u->errlen, "%s.segments: must be an array of segment ids", where);
        return -1;
    }
    json_t *names = json_array();
    size_t i;
    json_t *id;
    int oom = names == NULL;
    json_array_foreach(segs, i, id) {
        if (oom) {
            break;
        }
        char key[32];
        if (json_is_integer(id)) {
            snprintf(key, sizeof key, "%lld", (long long) json_integer_value(id));
        } else if (json_is_string(id) && json_string_length(id) < sizeof key) {
            snprintf(key, sizeof key, "%s", json_string_value(id));
        } else {
            key[0] = '\0';
        }
        json_t *nm = json_object_get(u->segnames, key);
        if (nm == NULL) {
            warn(u, "%s.segments[%zu]: no segment with id %s in the document's"
                 " \"segments\": this strategy never matches (disabled)", where, i,
                 key[0] ? key : "(not a number)");
            *missing = 1;
        } else {
            oom = json_array_append(names, nm) != 0;
        }
    }
    if (!oom && json_array_size(names)) {
        oom = json_object_set(st, "segments", names) != 0;
    }
    json_decref(names);
    if (oom) {
        fail(u->err, u->errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* One strategy; *out NULL (and 0 returned) when it is skipped. */
static int conv_strategy(const uctx *u, const json_t *s, const char *where, json_t **out)
{
    *out = NULL;
    if (!json_is_object(s)) {
        fail(u->err, u->errlen, "%s: must be an object", where);
        return -1;
    }
    const char *name = opt_str(s, "name");
    if (name == NULL) {
        fail(u->err, u->errlen, "%s.name: required: the strategy's name", where);
        return -1;
    }
    json_t *params = json_object_get(s, "parameters");
    if (params && !json_is_null(params) && !json_is_object(params)) {
        fail(u->err, u->errlen, "%s.parameters: must be an object", where);
        return -1;
    }
    if (params == NULL || json_is_null(params)) {
        params = NULL;
    }
    json_t *cons = conv_constraints(u, json_object_get(s, "constraints"), where);
    if (cons == NULL) {
        return -1;
    }
    json_t *st = json_pack("{s:s}", "name", name), *extra = NULL, *roll = NULL;
    double pct;
    const char *group = params ? opt_str(params, "groupId") : NULL;
    int rc = 0, oom = 0, missing = 0;
    if (st == NULL) {
        oom = 1;
    } else if (strcmp(name, "default") == 0) {
        /* everyone (matching the constraints) */
    } else if (strcmp(name, "flexibleRollout") == 0) {
        const char *stick = params ? opt_str(params, "stickiness") : NULL;
        if ((rc = get_percent(u, params, "rollout", where, &pct)) == 0) {
            oom = (roll = rollout(pct, stick ? stick : "default", group)) == NULL;
        }
    } else if (strcmp(name, "gradualRolloutUserId") == 0
               || strcmp(name, "gradualRolloutSessionId") == 0
               || strcmp(name, "gradualRolloutRandom") == 0) {
        const char *stick = name[14] == 'U' ? "userId" : name[14] == 'S' ? "sessionId" : "random";
        if ((rc = get_percent(u, params, "percentage", where, &pct)) == 0) {
            if (group == NULL && stick[0] != 'r') {
                warn(u, "%s: no groupId: the flag's name is used, so buckets may differ"
                     " from Unleash's (which hashes an empty group)", where);
            }
            oom = (roll = rollout(pct, stick, group)) == NULL;
        }
    } else if (strcmp(name, "userWithId") == 0) {
        oom = (extra = list_constraint("userId", "IN",
                                       params ? opt_str(params, "userIds") : NULL, 0)) == NULL;
    } else if (strcmp(name, "remoteAddress") == 0) {
        oom = (extra = list_constraint("remoteAddress", "IP_IN_CIDR",
                                       params ? opt_str(params, "IPs") : NULL, 0)) == NULL;
    } else if (strcmp(name, "applicationHostname") == 0) {
        warn(u, "%s: applicationHostname becomes a constraint on the context field"
             " \"hostname\": give it in the evaluation context", where);
        oom = (extra = list_constraint("hostname", "IN",
                                       params ? opt_str(params, "hostNames") : NULL, 1)) == NULL;
    } else if (u->skip_unknown) {
        warn(u, "%s: strategy \"%s\" has no ToggleMaster equivalent: skipped", where, name);
        json_decref(st);
        json_decref(cons);
        return 0;
    } else {
        fail(u->err, u->errlen, "%s.name: strategy \"%s\" has no ToggleMaster equivalent"
             " (built in: default, flexibleRollout, userWithId, gradualRolloutUserId,"
             " gradualRolloutSessionId, gradualRolloutRandom, remoteAddress,"
             " applicationHostname); --skip-unknown drops such strategies", where, name);
        rc = -1;
    }
    if (!rc && !oom && extra && json_array_append_new(cons, extra) != 0) {
        oom = 1;
    }
    extra = NULL;
    if (!rc && !oom && fail_closed(u, cons, where) != 0) {
        rc = -1;
    }
    if (!rc && !oom && json_array_size(cons) && json_object_set(st, "constraints", cons) != 0) {
        oom = 1;
    }
    if (!rc && !oom) {
        rc = conv_segment_ids(u, json_object_get(s, "segments"), where, st, &missing);
    }
    if (!rc && !oom && roll) {
        oom = json_object_set(st, "rollout", roll) != 0;
    }
    json_t *vars = (!rc && !oom) ? conv_variants(u, json_object_get(s, "variants"), where) : NULL;
    if (!rc && !oom) {
        if (vars == NULL) {
            rc = -1;
        } else if (json_array_size(vars)) {
            oom = json_object_set(st, "variants", vars) != 0;
        }
    }
    if (!rc && !oom && (missing || json_is_true(json_object_get(s, "disabled")))) {
        oom = json_object_set_new(st, "disabled", json_true()) != 0;
    }
    json_decref(vars);
    json_decref(roll);
    json_decref(cons);
    if (oom && !rc) {
        fail(u->err, u->errlen, "out of memory");
    }
    if (rc || oom) {
        json_decref(st);
        return -1;
    }
    *out = st;
    return 0;
}

static json_t *conv_dependency(const json_t *d)
{
    static const char *const keys[] = { "feature", "enabled", "variants", NULL };
    return conv_copy(d, keys, "variants");
}

static json_t *conv_dependencies(const uctx *u, const json_t *arr, const char *where)
{
    return conv_array(u, arr, where, "dependencies", conv_dependency);
}

/* Unleash descriptions may hold line breaks; ours are one line of text. */
static char *one_line(const uctx *u, const char *s)
{
    char *d = strdup(s);
    int changed = 0;
    for (char *p = d; p && *p; p++) {
        if ((unsigned char) *p < 0x20 || *p == 0x7f) {
            *p = ' ';
            changed = 1;
        }
    }
    if (changed) {
        warn(u, "control characters (line breaks) in the description became spaces");
    }
    return d;
}

static int conv_segments(uctx *u, const json_t *arr, json_t *out)
{
    if (arr == NULL || json_is_null(arr)) {
        return 0;
    }
    if (!json_is_array(arr)) {
        fail(u->err, u->errlen, "segments: must be an array");
        return -1;
    }
    size_t i;
    json_t *s;
    json_array_foreach(arr, i, s) {
        char where[64];
        snprintf(where, sizeof where, "segments[%zu]", i);
        json_t *id = json_object_get(s, "id");
        if (!json_is_object(s) || !json_is_integer(id)) {
            fail(u->err, u->errlen, "%s.id: required: the segment's number", where);
            return -1;
        }
        char key[32], fallback[48];
        snprintf(key, sizeof key, "%lld", (long long) json_integer_value(id));
        snprintf(fallback, sizeof fallback, "segment-%s", key);
        if (json_object_get(u->segnames, key)) {
            fail(u->err, u->errlen, "%s.id: %s appears twice", where, key);
            return -1;
        }
        const char *name = opt_str(s, "name");
        if (name && !tm_name_valid_unicode(name, strlen(name))) {
            warn(u, "%s: Unleash segment name \"%.100s\" is not a ToggleMaster name"
                 " (" TM_NAME_CHARSET_UNICODE "): imported as \"%s\"", where, name, fallback);
            name = NULL;
        } else if (name && has_name(out, "name", name)) {
            warn(u, "%s: segment name \"%s\" is used twice: this one is imported as \"%s\"",
                 where, name, fallback);
            name = NULL;
        }
        if (name == NULL) {
            name = fallback;
        }
        if (has_name(out, "name", name)) {
            fail(u->err, u->errlen, "%s: segment name \"%s\" is used twice", where, name);
            return -1;
        }
        json_t *cons = conv_constraints(u, json_object_get(s, "constraints"), where);
        if (cons && fail_closed(u, cons, where) != 0) {
            json_decref(cons);
            return -1;
        }
        const char *d = opt_str(s, "description");
        char *desc = one_line(u, d ? d : "");
        json_t *seg = cons && desc ? json_pack("{s:s, s:s, s:o}", "name", name, "description",
                                               desc, "constraints", cons) : NULL;
        free(desc);
        if (seg == NULL) {
            if (cons) fail(u->err, u->errlen, "out of memory");
            return -1;
        }
        char e[256];
        if (tm_segment_check(seg, e, sizeof e) != 0) {
            fail(u->err, u->errlen, "%s (id %s): %s", where, key, e);
            json_decref(seg);
            return -1;
        }
        if (json_array_append_new(out, seg) != 0
            || json_object_set_new(u->segnames, key, json_string(name)) != 0) {
            fail(u->err, u->errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

static int conv_feature(uctx *u, const json_t *f, size_t i, json_t *flags, json_t *rules)
{
    char where[64];
    snprintf(where, sizeof where, "features[%zu]", i);
    if (!json_is_object(f)) {
        fail(u->err, u->errlen, "%s: must be an object", where);
        return -1;
    }
    json_t *jn = json_object_get(f, "name");
    if (!json_is_string(jn)) {
        fail(u->err, u->errlen, "%s.name: required: the feature's name", where);
        return -1;
    }
    const char *name = json_string_value(jn);
    if (!tm_name_valid_unicode(name, json_string_length(jn))) {
        fail(u->err, u->errlen, "%s.name: \"%.100s\" is not a ToggleMaster flag name: 1 to %d"
             " characters: " TM_NAME_CHARSET_UNICODE, where, name, TM_NAME_MAX);
        return -1;
    }
    if (has_name(flags, "name", name)) {
        fail(u->err, u->errlen, "%s.name: \"%s\" appears twice", where, name);
        return -1;
    }
    u->feature = name;
    json_t *en = json_object_get(f, "enabled");
    if (en && !json_is_boolean(en)) {
        fail(u->err, u->errlen, "%s.enabled: must be true or false", where);
        return -1;
    }
    const char *d = opt_str(f, "description");
    char *desc = one_line(u, d ? d : "");
    json_t *flag = desc ? json_pack("{s:s, s:s, s:b}", "name", name, "description", desc,
                                    "is_enabled", json_is_true(en)) : NULL;
    free(desc);
    if (flag == NULL || json_array_append_new(flags, flag) != 0) {
        fail(u->err, u->errlen, "out of memory");
        return -1;
    }

    json_t *doc = json_object(), *strategies = json_array();
    json_t *vars = NULL, *deps = NULL;
    int rc = -1;
    if (doc == NULL || strategies == NULL) {
        fail(u->err, u->errlen, "out of memory");
        goto done;
    }
    json_t *ss = json_object_get(f, "strategies");
    if (ss && !json_is_null(ss) && !json_is_array(ss)) {
        fail(u->err, u->errlen, "%s.strategies: must be an array", where);
        goto done;
    }
    size_t j;
    json_t *s;
    json_array_foreach(ss, j, s) {
        char sw[112];
        snprintf(sw, sizeof sw, "%s.strategies[%zu]", where, j);
        json_t *st;
        if (conv_strategy(u, s, sw, &st) != 0) {
            goto done;
        }
        if (st && json_array_append_new(strategies, st) != 0) {
            fail(u->err, u->errlen, "out of memory");
            goto done;
        }
    }
    if (json_array_size(ss) && json_array_size(strategies) == 0) {
        /* every strategy skipped: stay off rather than on for everyone */
        json_t *none = json_pack("{s:s, s:{s:i}}", "name", "skipped", "rollout", "percentage", 0);
        if (none == NULL || json_array_append_new(strategies, none) != 0) {
            fail(u->err, u->errlen, "out of memory");
            goto done;
        }
        warn(u, "every strategy was skipped: the flag matches no one");
    }
    if ((vars = conv_variants(u, json_object_get(f, "variants"), where)) == NULL
        || (deps = conv_dependencies(u, json_object_get(f, "dependencies"), where)) == NULL) {
        goto done;
    }
    if ((json_array_size(deps) && json_object_set(doc, "dependencies", deps) != 0)
        || (json_array_size(strategies) && json_object_set(doc, "strategies", strategies) != 0)
        || (json_array_size(vars) && json_object_set(doc, "variants", vars) != 0)) {
        fail(u->err, u->errlen, "out of memory");
        goto done;
    }
    char e[256];
    if (tm_rules_check(doc, e, sizeof e) != 0) {
        fail(u->err, u->errlen, "%s (\"%s\"): %s", where, name, e);
        goto done;
    }
    json_t *rule = json_pack("{s:s, s:b, s:O}", "flag_name", name, "is_enabled", 1, "rules", doc);
    if (rule == NULL || json_array_append_new(rules, rule) != 0) {
        fail(u->err, u->errlen, "out of memory");
        goto done;
    }
    rc = 0;
done:
    json_decref(doc);
    json_decref(strategies);
    json_decref(vars);
    json_decref(deps);
    u->feature = NULL;
    return rc;
}

/* Index of the object in arr whose member key equals v (a string or an
 * integer), or -1. */
static long find_by(const json_t *arr, const char *key, const json_t *v)
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        json_t *w = json_object_get(o, key);
        if (w && v && json_equal(w, (json_t *) v)) {
            return (long) i;
        }
    }
    return -1;
}

/* Replaces the element of arr with the same key as o, or appends o. */
static int upsert(json_t *arr, const char *key, json_t *o)
{
    long at = find_by(arr, key, json_object_get(o, key));
    return at >= 0 ? json_array_set(arr, (size_t) at, o) : json_array_append(arr, o);
}

/* One delta event applied to features/segments; 0, or -1 with err. */
static int apply_event(const json_t *ev, size_t i, json_t *features, json_t *segments,
                       char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *x;
    long at;
    if (type == NULL) {
        fail(err, errlen, "events[%zu].type: required", i);
        return -1;
    }
    if (strcmp(type, "hydration") == 0) {
        json_t *fs = json_object_get(ev, "features"), *ss = json_object_get(ev, "segments");
        return json_array_clear(features) || json_array_clear(segments)
               || (json_is_array(fs) && json_array_extend(features, fs))
               || (json_is_array(ss) && json_array_extend(segments, ss)) ? -1 : 0;
    }
    if (strcmp(type, "feature-updated") == 0 && json_is_object(x = json_object_get(ev, "feature"))) {
        return upsert(features, "name", x);
    }
    if (strcmp(type, "segment-updated") == 0 && json_is_object(x = json_object_get(ev, "segment"))) {
        return upsert(segments, "id", x);
    }
    if (strcmp(type, "feature-removed") == 0) {
        at = find_by(features, "name", json_object_get(ev, "featureName"));
        return at >= 0 ? json_array_remove(features, (size_t) at) : 0;
    }
    if (strcmp(type, "segment-removed") == 0) {
        at = find_by(segments, "id", json_object_get(ev, "segmentId"));
        return at >= 0 ? json_array_remove(segments, (size_t) at) : 0;
    }
    fail(err, errlen, "events[%zu]: unknown or incomplete event \"%.40s\" (known: hydration,"
         " feature-updated, feature-removed, segment-updated, segment-removed)", i, type);
    return -1;
}

/* A delta API document ({"events":[...]}, Unleash's /api/client/delta) as
 * the client-features document its events add up to; NULL with err. */
static json_t *delta_to_features(const json_t *in, char *err, size_t errlen)
{
    json_t *events = json_object_get(in, "events");
    json_t *features = json_array(), *segments = json_array(), *out = NULL;
    size_t i;
    json_t *ev;
    if (features == NULL || segments == NULL) {
        fail(err, errlen, "out of memory");
        goto done;
    }
    json_array_foreach(events, i, ev) {
        err[0] = '\0';
        if (!json_is_object(ev) || apply_event(ev, i, features, segments, err, errlen) != 0) {
            if (err[0] == '\0') {
                fail(err, errlen, json_is_object(ev) ? "out of memory"
                     : "events[%zu]: must be an object", i);
            }
            goto done;
        }
    }
    out = json_pack("{s:O, s:O}", "features", features, "segments", segments);
    if (out == NULL) {
        fail(err, errlen, "out of memory");
    }
done:
    json_decref(features);
    json_decref(segments);
    return out;
}

static json_t *convert_features(const json_t *in, int skip_unknown, char *err, size_t errlen);

json_t *tmctl_unleash_convert(const json_t *in, int skip_unknown, char *err, size_t errlen)
{
    if (json_is_object(in) && json_is_array(json_object_get(in, "events"))
        && json_object_get(in, "features") == NULL) {
        json_t *doc = delta_to_features(in, err, errlen);
        json_t *out = doc ? convert_features(doc, skip_unknown, err, errlen) : NULL;
        json_decref(doc);
        return out;
    }
    return convert_features(in, skip_unknown, err, errlen);
}

static json_t *convert_features(const json_t *in, int skip_unknown, char *err, size_t errlen)
{
    json_t *features = json_object_get(in, "features");
    if (!json_is_object(in) || !json_is_array(features)) {
        fail(err, errlen, "not an Unleash client-features document: no \"features\" array"
             " (export it from Unleash's /api/client/features), nor a delta document"
             " (\"events\", /api/client/delta)");
        return NULL;
    }
    uctx u = { err, errlen, skip_unknown, json_object(), NULL };
    json_t *flags = json_array(), *segs = json_array(), *rules = json_array(), *out = NULL;
    if (u.segnames == NULL || flags == NULL || segs == NULL || rules == NULL) {
        fail(err, errlen, "out of memory");
        goto done;
    }
    if (conv_segments(&u, json_object_get(in, "segments"), segs) != 0) {
        goto done;
    }
    size_t i;
    json_t *f;
    json_array_foreach(features, i, f) {
        if (conv_feature(&u, f, i, flags, rules) != 0) {
            goto done;
        }
    }
    json_t *doc = json_pack("{s:O, s:O, s:O}", "flags", flags, "segments", segs, "rules", rules);
    if (doc == NULL) {
        fail(err, errlen, "out of memory");
        goto done;
    }
    out = tmctl_doc_normalize(doc, err, errlen);
    json_decref(doc);
done:
    json_decref(u.segnames);
    json_decref(flags);
    json_decref(segs);
    json_decref(rules);
    return out;
}
