#include "tm_names.h"

#include <string.h>

int tm_flag_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > TM_NAME_MAX) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'
              || c == ':')) {
            return 0;
        }
    }
    return 1;
}

int tm_env_name_valid(const char *name, size_t len)
{
    return tm_flag_name_valid(name, len)
           && !(len == sizeof TM_ENV_ALL - 1 && memcmp(name, TM_ENV_ALL, len) == 0);
}

/* One UTF-8 sequence at p (before end): its code point and length, or 0. */
static size_t utf8_next(const unsigned char *p, const unsigned char *end, unsigned *cp)
{
    unsigned char c = *p;
    size_t n;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) { n = 1; *cp = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) { n = 2; *cp = c & 0x0f; }
    else if (c >= 0xf0 && c <= 0xf4) { n = 3; *cp = c & 0x07; }
    else return 0;
    if ((size_t) (end - p) <= n) {
        return 0;
    }
    for (size_t i = 1; i <= n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        *cp = (*cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 2 && *cp < 0x800) || (n == 3 && (*cp < 0x10000 || *cp > 0x10ffff))
        || (*cp >= 0xd800 && *cp <= 0xdfff)) {
        return 0;
    }
    return n + 1;
}

/* Non-ASCII code points that are not spaces, controls or invisible. */
static int visible_non_ascii(unsigned cp)
{
    return cp > 0xa0 && cp != 0xad && !(cp >= 0x2000 && cp <= 0x206f) && cp != 0x3000
           && cp != 0xfeff && !(cp >= 0xfff0 && cp <= 0xffff);
}

int tm_name_valid_unicode(const char *name, size_t len)
{
    const unsigned char *p = (const unsigned char *) name, *end = p + len;
    if (len == 0 || len > TM_NAME_MAX) {
        return 0;
    }
    while (p < end) {
        unsigned cp;
        size_t n = utf8_next(p, end, &cp);
        if (n == 0 || (n == 1 && !tm_flag_name_valid((const char *) p, 1))
            || (n > 1 && !visible_non_ascii(cp))) {
            return 0;
        }
        p += n;
    }
    return 1;
}

/* Written once at start (tm_names_allow_unicode), read after. */
static int allow_unicode;

void tm_names_allow_unicode(int on)
{
    allow_unicode = on != 0;
}

int tm_name_valid(const char *name, size_t len)
{
    return allow_unicode ? tm_name_valid_unicode(name, len) : tm_flag_name_valid(name, len);
}

const char *tm_name_charset(void)
{
    return allow_unicode ? TM_NAME_CHARSET_UNICODE : TM_NAME_CHARSET;
}

int tm_text_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *) s, *end = p + len;
    while (p < end) {
        unsigned cp;
        size_t n = utf8_next(p, end, &cp);
        if (n == 0 || (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0x7f) {
            return 0;
        }
        p += n;
    }
    return 1;
}
