/* The objects the edge reads from Redis (docs/redis-layout.md), parsed in
 * one place so they can be fuzzed away from nginx:
 *   tm:flags     field -> {"is_enabled":bool, ...}
 *   tm:rules     field -> {"is_enabled":bool,"rules":{...}, ...}
 *   tm:segments  field -> {"name":..,"description":..,"constraints":[..], ...}
 *   tm:envs      field -> {"id":..,"name":<field>,"is_default":bool}
 *   tm:keys:v2   field -> {"id":..,"name":..,"scope":..,"environment":..}
 *                (tm_scope.h)
 *   tm:changes   message {"version":v,"kind":..,"op":..,"name":..,
 *                         "environment":..}
 * Every object must be a JSON object without duplicate members; anything
 * else is malformed (the edge skips it and keeps the last good version). */
#ifndef TM_RECORDS_H
#define TM_RECORDS_H
#include "tm_rules.h"
#include "tm_names.h"
#include "tm_scope.h"

#include <jansson.h>
#include <stddef.h>

/* A tm:flags value: 1 enabled, 0 disabled, -1 malformed. */
int tm_flag_record_enabled(const char *json, size_t len);
/* The same, and *client_visible: 1 if "client_visible" is true, 0 if it is
 * false or absent (older daemons); a non-boolean value is malformed. */
int tm_flag_record_parse(const char *json, size_t len, int *client_visible);

/* A tm:rules value: 0 with *enabled and *rule set, or -1 if malformed. A
 * well-formed rule that does not compile (an unknown type, say) gives
 * *rule == NULL with the reason in err: the original semantics answer false
 * for it. *rule is freed with tm_rule_free(). */
int tm_rule_record_parse(const char *json, size_t len, int *enabled,
                         tm_rule **rule, char *err, size_t errlen);

/* A tm:segments value compiled from its name, description and constraints
 * (ids and timestamps are not part of what tm_segment_compile() takes);
 * NULL if malformed or it does not compile, with the reason in err. */
tm_segment *tm_segment_record_compile(const char *json, size_t len,
                                      char *err, size_t errlen);

/* A tm:envs value for the environment called field: 1 if it is the
 * default environment, 0 if not, -1 if malformed (not an object, "name"
 * not the field, is_default not a boolean, or the field not a valid name). */
int tm_env_record_parse(const char *field, size_t flen, const char *json,
                        size_t len);

/* tm:keys:v2 values are read by tm_key_record_parse() (tm_scope.h), shared
 * with the daemons' key checks. */

/* A tm:changes message. An upsert or a delete of a named object may be
 * applied as a delta; anything else reloads the kind's hash (or every hash
 * when the kind is missing). Strings point into doc until tm_change_done(). */
typedef enum { TM_CHANGE_RELOAD, TM_CHANGE_UPSERT, TM_CHANGE_DELETE } tm_change_op;

typedef struct {
    const char *kind;       /* NULL when absent or not a string, or when
                               "environment" is there but not a string */
    size_t kind_len;
    const char *env;        /* "environment": NULL when absent or null */
    size_t env_len;
    tm_change_op op;
    const char *name;       /* set for TM_CHANGE_UPSERT and _DELETE */
    size_t name_len;
    json_t *doc;
} tm_change;

void tm_change_parse(const char *json, size_t len, tm_change *c);
void tm_change_done(tm_change *c);
#endif
