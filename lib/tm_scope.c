#include "tm_scope.h"
#include "tm_names.h"

#include <jansson.h>
#include <string.h>

static const char *const names[] = { "admin", "readonly", "server", "client" };

const char *tm_scope_name(tm_scope s)
{
    return (unsigned) s < sizeof names / sizeof names[0] ? names[s] : "unknown";
}

int tm_scope_parse(const char *s, size_t len, tm_scope *out)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0) {
            *out = (tm_scope) i;
            return 0;
        }
    }
    return -1;
}

int tm_scope_has_environment(tm_scope s)
{
    return s == TM_SCOPE_SERVER || s == TM_SCOPE_CLIENT;
}

int tm_key_record_parse(const char *json, size_t len, tm_scope *scope,
                        char *env, size_t envsize)
{
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *sc = json_object_get(doc, "scope"), *e = json_object_get(doc, "environment");
    int rc = -1;
    if (json_is_object(doc) && json_is_string(sc) && envsize > 0
        && tm_scope_parse(json_string_value(sc), json_string_length(sc), scope) == 0
        && *scope != TM_SCOPE_ADMIN) {
        if (!tm_scope_has_environment(*scope)) {
            rc = e == NULL || json_is_null(e) ? 0 : -1;
            env[0] = '\0';
        } else if (json_is_string(e) && json_string_length(e) < envsize
                   && tm_env_name_valid(json_string_value(e), json_string_length(e))) {
            memcpy(env, json_string_value(e), json_string_length(e) + 1);
            rc = 0;
        }
    }
    json_decref(doc);
    return rc;
}
