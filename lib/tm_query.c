#include "tm_query.h"
#include "tm_names.h"

#include <string.h>

size_t tm_query_max_attrs(const char *args, size_t len)
{
    size_t n = 1;
    for (size_t i = 0; i < len && n < TM_CONTEXT_MAX_ATTRS; i++) {
        n += (args[i] == '&');
    }
    return n;
}

static int hex(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

size_t tm_query_decode(char *dst, const char *src, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (src[i] == '+') {
            dst[o++] = ' ';
        } else if (src[i] == '%' && i + 2 < len
                   && (hi = hex(src[i + 1])) >= 0 && (lo = hex(src[i + 2])) >= 0) {
            dst[o++] = (char) (hi << 4 | lo);
            i += 2;
        } else {
            dst[o++] = src[i];
        }
    }
    return o;
}

static int fail(const char **why, const char *msg)
{
    *why = msg;
    return -1;
}

int tm_query_parse(const char *args, size_t len, char *buf, tm_attr *attrs,
                   tm_query *q, const char **why)
{
    const char *end = args + len;
    const char *attr_why = NULL;
    char *out = buf;

    memset(q, 0, sizeof *q);
    q->attrs = attrs;

    for (const char *p = args; p < end; ) {
        const char *amp = memchr(p, '&', (size_t) (end - p));
        if (amp == NULL) {
            amp = end;
        }
        const char *eq = memchr(p, '=', (size_t) (amp - p));
        const char *nend = eq ? eq : amp;
        const char *val = eq ? eq + 1 : amp;

        /* Name and value decoded one after the other into buf: each pair
         * takes no more bytes than it had, so buf never overflows. */
        char *name = out;
        size_t name_len = tm_query_decode(name, p, (size_t) (nend - p));
        char *value = name + name_len;
        size_t value_len = tm_query_decode(value, val, (size_t) (amp - val));
        out = value + value_len;
        p = amp + 1;

        if (name_len == 0) {
            continue;
        }
        if (name_len == 7 && memcmp(name, "user_id", 7) == 0) {
            if (q->user == NULL) {
                q->user = value;
                q->user_len = value_len;
            }
            continue;
        }
        if (name_len == 9 && memcmp(name, "flag_name", 9) == 0) {
            if (q->flag == NULL) {
                q->flag = value;
                q->flag_len = value_len;
            }
            continue;
        }
        /* attribute errors are told after the identity's, as before */
        if (attr_why) {
            continue;
        }
        if (value_len > TM_CONTEXT_MAX_VALUE_LEN) {
            attr_why = "a context attribute is longer than 4096 bytes";
        } else if (q->nattrs == TM_CONTEXT_MAX_ATTRS) {
            attr_why = "at most 256 context attributes";
        } else {
            attrs[q->nattrs++] = (tm_attr) { name, name_len, value, value_len };
        }
    }

    /* An empty user_id or flag_name is a missing one, as it was. */
    if (q->user_len == 0 || q->flag_len == 0) {
        return fail(why, "user_id and flag_name are required");
    }
    if (q->user_len > TM_QUERY_IDENTITY_MAX) {
        return fail(why, "user_id is longer than 4096 bytes");
    }
    if (!tm_text_valid(q->user, q->user_len) || !tm_text_valid(q->flag, q->flag_len)) {
        return fail(why, "user_id and flag_name must be UTF-8 text "
                         "without control characters");
    }
    return attr_why ? fail(why, attr_why) : 0;
}
