#include "tm_context.h"

#include <stdio.h>
#include <stdlib.h>

#define NUM_TEXT_MAX 32

static int fail(char *err, size_t errlen, const char *msg, const char *name)
{
    if (err && errlen) {
        if (name) {
            snprintf(err, errlen, "context.%.64s: %s", name, msg);
        } else {
            snprintf(err, errlen, "context: %s", msg);
        }
    }
    return -1;
}

/* A message about the request body as a whole, not one context member. */
static int fail_body(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s", msg);
    }
    return -1;
}

/* The text a scalar stands for; 0 with *len, or 1 to skip the value. */
static int scalar_text(const json_t *v, char num[NUM_TEXT_MAX],
                       const char **s, size_t *len)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        *s = json_string_value(v);
        *len = json_string_length(v);
        return 0;
    case JSON_INTEGER:
        *len = (size_t) snprintf(num, NUM_TEXT_MAX, "%" JSON_INTEGER_FORMAT,
                                 json_integer_value(v));
        *s = num;
        return 0;
    case JSON_REAL: {
        /* The shortest of %.15g..%.17g that reads back as the same double,
         * so 0.1 compares as "0.1", not 0.10000000000000001. */
        double d = json_real_value(v);
        for (int prec = 15; prec <= 17; prec++) {
            *len = (size_t) snprintf(num, NUM_TEXT_MAX, "%.*g", prec, d);
            if (strtod(num, NULL) == d) {
                break;
            }
        }
        *s = num;
        return 0;
    }
    case JSON_TRUE:
        *s = "true";
        *len = 4;
        return 0;
    case JSON_FALSE:
        *s = "false";
        *len = 5;
        return 0;
    default:
        return 1;
    }
}

typedef struct {
    tm_attr *attrs;
    size_t n;
    char *data;     /* NULL while counting */
    size_t bytes;
} builder;

static char *put(builder *b, const char *s, size_t len)
{
    char *at = NULL;
    if (b->data) {
        at = b->data + b->bytes;
        memcpy(at, s, len);
        at[len] = '\0';
    }
    b->bytes += len + 1;
    return at;
}

static int add(builder *b, const char *name, const json_t *v,
               char *err, size_t errlen)
{
    char num[NUM_TEXT_MAX];
    const char *s;
    size_t len;
    if (scalar_text(v, num, &s, &len) != 0) {
        return 0;
    }
    if (len > TM_CONTEXT_MAX_VALUE_LEN) {
        return fail(err, errlen, "value longer than 4096 bytes", name);
    }
    if (b->n == TM_CONTEXT_MAX_ATTRS) {
        return fail(err, errlen, "more than 256 attributes", NULL);
    }
    size_t nlen = strlen(name);
    const char *n = put(b, name, nlen);
    const char *val = put(b, s, len);
    if (b->data) {
        b->attrs[b->n] = (tm_attr) { n, nlen, val, len };
    }
    b->n++;
    return 0;
}

static int walk(builder *b, const json_t *obj, int top, char *err, size_t errlen)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *) obj, name, v) {
        if (top && strcmp(name, "properties") == 0 && json_is_object(v)) {
            if (walk(b, v, 0, err, errlen) != 0) {
                return -1;
            }
        } else if (add(b, name, v, err, errlen) != 0) {
            return -1;
        }
    }
    return 0;
}

int tm_context_from_json(tm_context *c, const json_t *obj, char *err, size_t errlen)
{
    tm_context_init(c, NULL, 0, NULL, 0);
    if (!json_is_object(obj)) {
        return fail(err, errlen, "must be a JSON object", NULL);
    }
    builder b = { NULL, 0, NULL, 0 };
    if (walk(&b, obj, 1, err, errlen) != 0) {
        return -1;
    }
    size_t nattrs = b.n, bytes = b.bytes;
    char *block = malloc(nattrs * sizeof(tm_attr) + bytes + 1);
    if (block == NULL) {
        return fail(err, errlen, "out of memory", NULL);
    }
    b = (builder) { (tm_attr *) block, 0, block + nattrs * sizeof(tm_attr), 0 };
    walk(&b, obj, 1, NULL, 0);

    c->attrs = b.attrs;
    c->nattrs = b.n;
    c->owned = block;
    /* The identity: targetingKey, else userId; both stay attributes. */
    const tm_attr *id = tm_context_get(c, "targetingKey", 12);
    if (id == NULL) {
        id = tm_context_get(c, "userId", 6);
    }
    if (id) {
        c->key = id->value;
        c->key_len = id->value_len;
    }
    return 0;
}

int tm_context_from_ofrep(tm_context *c, const char *body, size_t len,
                          const char **code, char *err, size_t errlen)
{
    tm_context_init(c, NULL, 0, NULL, 0);
    *code = "PARSE_ERROR";
    json_t *doc = json_loadb(body, len, 0, NULL);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return fail_body(err, errlen, "the body must be a JSON object");
    }
    *code = "INVALID_CONTEXT";
    int rc = 0;
    json_t *ctx = json_object_get(doc, "context");
    json_t *t = json_object_get(ctx, "targetingKey");
    if (ctx != NULL && !json_is_null(ctx) && !json_is_object(ctx)) {
        rc = fail_body(err, errlen, "\"context\" must be an object");
    } else if (t != NULL && !json_is_null(t)
               && (!json_is_string(t) || json_string_length(t) > TM_CONTEXT_MAX_KEY_LEN)) {
        rc = fail_body(err, errlen, "\"context.targetingKey\" must be a string "
                       "of at most 4096 bytes");
    } else if (json_is_object(ctx)) {
        rc = tm_context_from_json(c, ctx, err, errlen);
    }
    json_decref(doc);
    return rc;
}

void tm_context_free(tm_context *c)
{
    if (c) {
        free(c->owned);
        tm_context_init(c, NULL, 0, NULL, 0);
    }
}
