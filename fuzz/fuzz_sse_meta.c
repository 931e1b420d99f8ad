/* An event's etag and lastModified as a refetch's query brings them back:
 * any bytes (the first byte picks the parser). An etag that parses must be
 * made again byte for byte (without its quotes); a time is never negative. */
#include "tm_sse_meta.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char again[TM_SSE_ETAG_MAX + 1], err[128];
    unsigned char md5[16];
    const char *s;
    size_t len, n;
    int64_t id, t;

    if (size == 0) {
        return 0;
    }
    s = (const char *) data + 1;
    len = size - 1;

    if (data[0] & 1) {
        if (tm_sse_last_modified_parse(s, len, &t, err, sizeof err) == 0
            && t < 0) {
            abort();
        }
        return 0;
    }

    if (tm_sse_etag_parse(s, len, &id, md5, err, sizeof err) == 0) {
        if (len >= 2 && s[0] == '"') {
            s++;
            len -= 2;
        }
        n = tm_sse_etag_make(again, id, md5);
        if (n != len || memcmp(again, s, len) != 0) {
            abort();
        }
    }
    return 0;
}
