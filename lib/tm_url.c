#include "tm_url.h"

#include <stdlib.h>
#include <string.h>

static int copy(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap) {
        return -1;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

int tm_redis_url_parse(const char *url, tm_redis_url *out)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(url, "redis://", 8) != 0) {
        return -1;
    }
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t) (at - p));
        const char *pw = colon ? colon + 1 : p;
        if (copy(out->password, sizeof out->password, pw, (size_t) (at - pw)) != 0) {
            return -1;
        }
        p = at + 1;
    }
    size_t hlen = strcspn(p, ":/");
    if (hlen == 0 || copy(out->host, sizeof out->host, p, hlen) != 0) {
        return -1;
    }
    p += hlen;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535) {
            return -1;
        }
        out->port = (int) port;
        p = end;
    }
    if (*p == '/') {
        p++;
        if (*p) {
            char *end;
            long db = strtol(p, &end, 10);
            if (end == p || *end || db < 0 || db > 1000) {
                return -1;
            }
            out->db = (int) db;
            p = end;
        }
    }
    return *p == '\0' ? 0 : -1;
}
