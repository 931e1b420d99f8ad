/* OFREP evaluation request bodies as the edge reads them (lib/tm_context.c,
 * tm_context_from_ofrep): any bytes a client may POST. What parses keeps the
 * limits the edge promises; what fails says why, with an OFREP error code. */
#include "tm_context.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tm_context c;
    const char *code = NULL;
    char err[160] = "";

    if (tm_context_from_ofrep(&c, (const char *) data, size, &code, err, sizeof err) != 0) {
        if (code == NULL || err[0] == '\0'
            || (strcmp(code, "PARSE_ERROR") != 0 && strcmp(code, "INVALID_CONTEXT") != 0)
            || c.nattrs != 0 || c.owned != NULL) {
            __builtin_trap();
        }
        return 0;
    }
    if (c.nattrs > TM_CONTEXT_MAX_ATTRS || (c.key && c.key_len > TM_CONTEXT_MAX_KEY_LEN)) {
        __builtin_trap();
    }
    for (size_t i = 0; i < c.nattrs; i++) {
        const tm_attr *a = &c.attrs[i];
        if (a->value_len > TM_CONTEXT_MAX_VALUE_LEN) {
            __builtin_trap();
        }
        /* the identity is one of the attributes, and every attribute with
         * a value is found by its name */
        if (a->value_len && tm_context_get(&c, a->name, a->name_len) == NULL) {
            __builtin_trap();
        }
    }
    if (c.key) {
        const tm_attr *t = tm_context_get(&c, "targetingKey", 12);
        const tm_attr *u = tm_context_get(&c, "userId", 6);
        const tm_attr *id = t ? t : u;
        if (id == NULL || id->value != c.key || id->value_len != c.key_len) {
            __builtin_trap();
        }
    }
    tm_context_free(&c);
    return 0;
}
