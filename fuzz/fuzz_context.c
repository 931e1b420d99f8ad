/* OFREP request bodies: {"context": {...}} as an SDK sends it, turned into
 * an evaluation context, then looked up attribute by attribute. */
#include "tm_context.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t e;
    json_t *body = json_loadb((const char *) data, size, 0, &e);
    if (body == NULL) {
        return 0;
    }
    json_t *ctx = json_is_object(body) ? json_object_get(body, "context") : NULL;
    tm_context c;
    char err[256];
    if (ctx && tm_context_from_json(&c, ctx, err, sizeof err) == 0) {
        for (size_t i = 0; i < c.nattrs; i++) {
            /* every attribute with a value is found by its name (an empty
             * value counts as absent, as in Unleash) */
            if (c.attrs[i].value_len
                && tm_context_get(&c, c.attrs[i].name, c.attrs[i].name_len) == NULL) {
                __builtin_trap();
            }
        }
        tm_context_free(&c);
    }
    json_decref(body);
    return 0;
}
