/* SigV4 canonicalisation over arbitrary requests. Input lines: method, path,
 * query, then "name:value" headers until an empty line; the rest is the payload. */
#include "tm_sigv4.h"

#include <stdint.h>
#include <string.h>

static const char *line(const char **p, const char *end, size_t *len)
{
    const char *s = *p;
    const char *nl = memchr(s, '\n', (size_t) (end - s));
    const char *e = nl ? nl : end;
    *len = (size_t) (e - s);
    *p = nl ? nl + 1 : end;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *) data, *end = p + size;
    char method[16];
    size_t mlen, plen, qlen;
    const char *m = line(&p, end, &mlen);
    if (mlen == 0 || mlen >= sizeof method || memchr(m, '\0', mlen)) {
        return 0;
    }
    memcpy(method, m, mlen);
    method[mlen] = '\0';
    const char *path = line(&p, end, &plen);
    const char *query = line(&p, end, &qlen);

    tm_sigv4_header h[16];
    size_t nh = 0, l;
    while (p < end && nh < 16) {
        const char *s = line(&p, end, &l);
        if (l == 0) {
            break;
        }
        const char *colon = memchr(s, ':', l);
        if (colon == NULL) {
            continue;
        }
        h[nh].name = s;
        h[nh].name_len = (size_t) (colon - s);
        h[nh].value = colon + 1;
        h[nh].value_len = l - h[nh].name_len - 1;
        nh++;
    }
    tm_sigv4_params prm = { 0 };
    prm.access_key = "AKIDEXAMPLE";
    prm.secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    prm.region = "us-east-1";
    prm.service = "service";
    prm.amz_date = "20150830T123600Z";
    tm_sigv4_result r;
    char err[256];
    tm_sigv4_sign(&prm, method, path, plen, query, qlen, h, nh, p, (size_t) (end - p),
                  &r, err, sizeof err);
    tm_sigv4_result_free(&r);
    return 0;
}
