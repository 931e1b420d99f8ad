/* The admin API's request bodies (flags, targeting rules, segments, API
 * keys), parsed and checked before anything is written: every rule of what
 * a body may hold lives here, away from libmicrohttpd and PostgreSQL, so
 * it is unit-tested and fuzzed (fuzz/fuzz_admin.c) as the daemons run it.
 * Messages are the 400s the daemons answer with. */
#ifndef TM_BODIES_H
#define TM_BODIES_H
#include "tm_scope.h"

#include <jansson.h>
#include <stddef.h>

typedef enum {
    TM_BODY_FLAG,       /* {name, description?, is_enabled?, client_visible?} /flags */
    TM_BODY_RULE,       /* {flag_name, rules, is_enabled?}              /rules */
    TM_BODY_SEGMENT,    /* {name, constraints, description?}            /segments */
    TM_BODY_KEY,        /* {name, scope?, environment?}: name printable UTF-8,
                         * not a flag name; environment exactly for the
                         * server and client scopes                     /admin/keys */
    TM_BODY_ENV,        /* {name}: an environment name                  /environments */
    TM_BODY_PROMOTE,    /* {from, to}: two different environment names /flags/{name}/promote */
    TM_BODY_WEBHOOK     /* {url, secret, kinds?, environments?, format?}: url
                         * http(s), at most 2048 printable ASCII bytes; secret
                         * 16 to 256 printable ASCII bytes (both required on
                         * create); kinds null (all) or 1 to 16 of flag, rule,
                         * segment, environment, key, webhook; environments null or 1
                         * to 16 environment names; format json or slack
                         * (docs/audit.md)                               /webhooks */
} tm_body_kind;

/* A checked body. Strings point into the JSON object it came from; doc
 * (rules or constraints as compact JSON), kinds and envs are malloc'ed:
 * tm_body_free(). */
typedef struct {
    const char *name;        /* create: the body's; update: the path's */
    const char *description; /* NULL when absent */
    int has_enabled;
    int enabled;             /* when absent: false for flags, true for rules */
    char *doc;               /* rules / constraints, NULL when absent */
    int has_visible;         /* flags: client_visible given */
    int visible;             /* when absent: false */
    tm_scope scope;          /* keys: TM_SCOPE_ADMIN when absent */
    const char *environment; /* keys: set exactly for server and client */
    const char *from, *to;   /* promotion */
    const char *url, *secret, *format;  /* webhooks: NULL when absent */
    int has_kinds, has_envs; /* webhooks: the member was given */
    char *kinds, *envs;      /* webhooks: the arrays as compact JSON; NULL: all */
} tm_body;

/* The raw bytes of a request body as a JSON object (duplicate members and
 * NUL bytes refused); NULL with a message in err. */
json_t *tm_body_parse(const char *bytes, size_t len, char *err, size_t errlen);

/* Checks obj as the body of a create (path_name NULL) or of an update of
 * the object called path_name (the name member may repeat it, not change
 * it). 0 with out filled; else -1 with *status (400, or 500 when memory
 * ran out) and a message in err, and nothing to free. */
int tm_body_check(tm_body_kind kind, const json_t *obj, const char *path_name,
                  tm_body *out, int *status, char *err, size_t errlen);

void tm_body_free(tm_body *b);
#endif
