/* HTTP/1.x replies (lib/tm_http_reply.c) as SQS, STS or the Pod Identity
 * agent — or anything listening where they should be — may send them to the
 * edge, in whole or cut anywhere. The body found lies inside what arrived,
 * and a reply complete without the connection's end is the same reply with it. */
#include "tm_http_reply.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *a = malloc(size + 1), *b = malloc(size + 1);
    if (a == NULL || b == NULL) {
        free(a);
        free(b);
        return 0;
    }
    memcpy(a, data, size);
    memcpy(b, data, size);

    tm_http_reply ra, rb;
    int rc = tm_http_reply_parse(a, size, 0, &ra);
    if (rc < -1 || rc > 1) {
        __builtin_trap();
    }
    if (rc == 1) {
        if (ra.body_off > size || ra.body_len > size - ra.body_off
            || ra.status < 100 || ra.status > 999
            || strnlen(ra.query_error, sizeof ra.query_error) == sizeof ra.query_error) {
            __builtin_trap();
        }
        if (tm_http_reply_parse(b, size, 1, &rb) != 1 || rb.status != ra.status
            || rb.body_len != ra.body_len
            || memcmp(a + ra.body_off, b + rb.body_off, ra.body_len) != 0) {
            __builtin_trap();
        }
    }

    /* what has arrived so far: half of it */
    memcpy(b, data, size);
    rc = tm_http_reply_parse(b, size / 2, 0, &rb);
    if (rc == 1 && (rb.body_off > size / 2 || rb.body_len > size / 2 - rb.body_off)) {
        __builtin_trap();
    }
    free(a);
    free(b);
    return 0;
}
