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

int tm_text_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *) s, *end = p + len;
    while (p < end) {
        unsigned char c = *p;
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
                return 0;
            }
            if (c == 0x7f) {
                return 0;
            }
            p++;
            continue;
        }
        size_t n;
        unsigned cp;
        if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; }
        else return 0;
        if ((size_t) (end - p) <= n) {
            return 0;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff))
            || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
        p += n + 1;
    }
    return 1;
}
