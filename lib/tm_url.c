#include "tm_url.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* %XX-decodes s[0..n) into dst (cap bytes, NUL-terminated); an invalid
 * escape stays as written, since raw passwords are pasted as they are.
 * -1 if it does not fit or decodes to a control character (AUTH takes
 * any byte, but a NUL or a line break there is surely a mistake). */
static int decode(char *dst, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s[i];
        if (c == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            c = (unsigned char) (hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || o + 1 >= cap) {
            return -1;
        }
        dst[o++] = (char) c;
    }
    dst[o] = '\0';
    return 0;
}

/* digits only, in [min, max] */
static int number(const char *s, size_t n, long min, long max, long *out)
{
    long v = 0;
    if (n == 0 || n > 6) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static int userinfo(const char *s, size_t n, tm_redis_url *out, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', n);
    const char *pw = colon ? colon + 1 : s;
    size_t pwlen = (size_t) (s + n - pw);
    if (colon && colon > s
        && decode(out->user, sizeof out->user, s, (size_t) (colon - s)) != 0) {
        return fail(err, errlen, "the user is too long or holds a control character");
    }
    if (pwlen == 0) {
        return fail(err, errlen, "the password before '@' is empty");
    }
    if (decode(out->password, sizeof out->password, pw, pwlen) != 0) {
        return fail(err, errlen, "the password is too long or holds a control character");
    }
    return 0;
}

/* host[:port][/db] */
static int hostpart(const char *p, const char *end, tm_redis_url *out, char *err,
                    size_t errlen)
{
    const char *h = p, *hend;
    if (p < end && *p == '[') {
        hend = memchr(p, ']', (size_t) (end - p));
        if (hend == NULL) {
            return fail(err, errlen, "an IPv6 address lacks its ']'");
        }
        h = p + 1;
        p = hend + 1;
    } else {
        while (p < end && *p != ':' && *p != '/') {
            p++;
        }
        hend = p;
    }
    size_t hlen = (size_t) (hend - h);
    if (hlen == 0) {
        return fail(err, errlen, "the host is missing");
    }
    if (hlen >= sizeof out->host) {
        return fail(err, errlen, "the host is longer than %zu bytes", sizeof out->host - 1);
    }
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char) h[i];
        if (c <= 0x20 || c == 0x7f || c == '@' || c == '[' || c == ']' || c == '%'
            || c == '?' || c == '#') {
            return fail(err, errlen, "the host holds a character a host name cannot have");
        }
    }
    memcpy(out->host, h, hlen);
    out->host[hlen] = '\0';

    long v;
    if (p < end && *p == ':') {
        const char *q = ++p;
        while (p < end && *p != '/') {
            p++;
        }
        if (number(q, (size_t) (p - q), 1, 65535, &v) != 0) {
            return fail(err, errlen, "the port must be a number from 1 to 65535");
        }
        out->port = (int) v;
    }
    if (p < end && *p == '/') {
        p++;
        if (p < end) {
            if (number(p, (size_t) (end - p), 0, TM_REDIS_DB_MAX, &v) != 0) {
                return fail(err, errlen, "the path must be a database number from 0 to %d "
                            "(\"/3\"), with nothing after it", TM_REDIS_DB_MAX);
            }
            out->db = (int) v;
        }
        p = end;
    }
    if (p != end) {
        return fail(err, errlen, "unexpected text after the host");
    }
    return 0;
}

int tm_redis_url_parse(const char *url, size_t len, tm_redis_url *out,
                       char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (errlen) {
        err[0] = '\0';
    }
    if (memchr(url, '\0', len)) {
        return fail(err, errlen, "the URL holds a NUL byte");
    }
    const char *end = url + len, *p = url;
    if (len > 5 && memcmp(url, "unix:", 5) == 0) {
        size_t n = len - 5;
        if (n == 0 || url[5] != '/' || n >= sizeof out->unix_path) {
            return fail(err, errlen, "unix: needs an absolute socket path of at most %zu bytes",
                        sizeof out->unix_path - 1);
        }
        memcpy(out->unix_path, url + 5, n);
        out->unix_path[n] = '\0';
        return 0;
    }
    if (len >= 8 && memcmp(url, "redis://", 8) == 0) {
        p += 8;
    } else if (len >= 9 && memcmp(url, "rediss://", 9) == 0) {
        out->tls = 1;
        p += 9;
    } else if (memmem(url, len, "://", 3)) {
        return fail(err, errlen, "the scheme must be redis:// or rediss://");
    }
    /* The last '@': a password pasted raw may hold '@' or '/'. */
    const char *at = NULL;
    for (const char *q = p; q < end; q++) {
        if (*q == '@') {
            at = q;
        }
    }
    if (at) {
        if (p == url) {
            return fail(err, errlen, "a user or password needs redis:// or rediss://");
        }
        if (userinfo(p, (size_t) (at - p), out, err, errlen) != 0) {
            return -1;
        }
        p = at + 1;
    }
    return hostpart(p, end, out, err, errlen);
}

void tm_redis_url_describe(const tm_redis_url *u, char *buf, size_t buflen)
{
    if (buflen == 0) {
        return;
    }
    if (u->unix_path[0]) {
        snprintf(buf, buflen, "unix:%s", u->unix_path);
        return;
    }
    int v6 = strchr(u->host, ':') != NULL;
    snprintf(buf, buflen, "%s://%s%s%s%s%s%s:%d/%d", u->tls ? "rediss" : "redis",
             u->user, u->password[0] ? ":***" : "", u->user[0] || u->password[0] ? "@" : "",
             v6 ? "[" : "", u->host, v6 ? "]" : "", u->port, u->db);
}
