/* The evaluation context: who is asking (the identity: /evaluate's user_id,
 * OFREP's targetingKey) and what else is known about the request, as named
 * attributes (Unleash's userId, sessionId, remoteAddress, environment,
 * appName, currentTime, and any property).
 *
 * Two ways to build one:
 *  - tm_context_init() over a caller-owned tm_attr array: no allocation, for
 *    the nginx request path (names and values may point into ngx_str_t data,
 *    they need no NUL);
 *  - tm_context_from_json() from an OFREP "context" object: one allocation,
 *    released by tm_context_free().
 * Lookups are inline so lib/tm_rules.c needs nothing from tm_context.c. */
#ifndef TM_CONTEXT_H
#define TM_CONTEXT_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TM_CONTEXT_MAX_ATTRS 256
#define TM_CONTEXT_MAX_VALUE_LEN 4096

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} tm_attr;

typedef struct {
    const char *key;        /* identity; NULL when there is none */
    size_t key_len;
    const tm_attr *attrs;   /* searched in order: the first of a name wins */
    size_t nattrs;
    int64_t now_ms;         /* currentTime when no attribute gives it;
                               0: the clock at evaluation */
    void *owned;            /* tm_context_from_json's block, else NULL */
} tm_context;

static inline void tm_context_init(tm_context *c, const char *key, size_t key_len,
                                   const tm_attr *attrs, size_t nattrs)
{
    c->key = key;
    c->key_len = key_len;
    c->attrs = attrs;
    c->nattrs = nattrs;
    c->now_ms = 0;
    c->owned = NULL;
}

/* The first attribute called name with a value; NULL if there is none.
 * Empty values count as absent, as an unset nginx variable is empty, so an
 * empty one does not hide a later one of the same name (a query's "a=&a=x",
 * a top-level member and one in "properties"). */
static inline const tm_attr *tm_context_get(const tm_context *c,
                                            const char *name, size_t len)
{
    for (size_t i = 0; i < c->nattrs; i++) {
        const tm_attr *a = &c->attrs[i];
        if (a->value_len && a->name_len == len && memcmp(a->name, name, len) == 0) {
            return a;
        }
    }
    return NULL;
}

/* Builds c from an OFREP/Unleash-style context object:
 *   targetingKey -> identity (else userId is the identity too);
 *   strings as they are, integers and reals as their shortest JSON text,
 *   booleans as "true"/"false"; null skipped;
 *   "properties": {...} flattened into attributes (Unleash's custom fields);
 *   other objects and arrays skipped (no operator compares them).
 * 0 on success; -1 with a message for a 400 (not an object, too many
 * attributes, a value over TM_CONTEXT_MAX_VALUE_LEN, out of memory). */
int tm_context_from_json(tm_context *c, const json_t *obj, char *err, size_t errlen);

/* The longest identity (targetingKey), as for /evaluate's user_id. */
#define TM_CONTEXT_MAX_KEY_LEN 4096

/* An OFREP evaluation request body, {"context": {...}} (context may be
 * absent or null), into c as tm_context_from_json() builds it; a
 * targetingKey must be a string of at most TM_CONTEXT_MAX_KEY_LEN bytes.
 * 0 on success; -1 with *code the OFREP error code ("PARSE_ERROR" when the
 * body is not a JSON object, else "INVALID_CONTEXT") and a message in err.
 * The JSON is parsed with jansson's current allocator; c's block is
 * malloc'ed, released by tm_context_free(). */
int tm_context_from_ofrep(tm_context *c, const char *body, size_t len,
                          const char **code, char *err, size_t errlen);

/* Frees what tm_context_from_json allocated; harmless on an init'ed one. */
void tm_context_free(tm_context *c);
#endif
