/* Stream tokens as they arrive in a URL: any bytes. A token that checks
 * must name a valid environment, and remaking it must give it back. */
#include "tm_sse_token.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned char secret[] = "fuzz-secret";
    char again[TM_SSE_TOKEN_MAX + 1];
    const char *env;
    size_t elen;
    int64_t exp;

    int rc = tm_sse_token_check((const char *) data, size, secret,
                                sizeof secret - 1, 0, &env, &elen, &exp,
                                NULL, 0);
    if (rc == TM_SSE_TOKEN_OK) {
        if (!tm_env_name_valid(env, elen)) {
            abort();
        }
        size_t n = tm_sse_token_make(again, secret, sizeof secret - 1, env,
                                     elen, exp, NULL, 0);
        if (n != size || memcmp(again, data, size) != 0) {
            abort();
        }
    }
    return 0;
}
