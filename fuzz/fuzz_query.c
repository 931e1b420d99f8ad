/* /evaluate query strings (lib/tm_query.c, what the edge parses for every
 * request). Beyond not crashing: what parses must be within the limits the
 * edge promises, and re-encoding the parsed query and parsing it again must
 * give back exactly the same identity, flag and attributes. */
#include "tm_names.h"
#include "tm_query.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* %XX for every byte: the strictest encoding, decoded back to s. */
static char *put_encoded(char *p, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s[i];
        *p++ = '%';
        *p++ = hex[c >> 4];
        *p++ = hex[c & 15];
    }
    return p;
}

static int same(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *args = (const char *) data;

    /* decoding never lengthens, and text without '%' or '+' is itself */
    char *dec = malloc(size + 1);
    if (dec == NULL) {
        return 0;
    }
    size_t dlen = tm_query_decode(dec, args, size);
    if (dlen > size) {
        __builtin_trap();
    }
    if (memchr(args, '%', size) == NULL && memchr(args, '+', size) == NULL
        && !same(dec, dlen, args, size)) {
        __builtin_trap();
    }
    free(dec);

    char *buf = malloc(size + 1);
    size_t max = tm_query_max_attrs(args, size);
    tm_attr *attrs = malloc(max * sizeof *attrs);
    if (buf == NULL || attrs == NULL || max == 0 || max > TM_CONTEXT_MAX_ATTRS) {
        free(buf);
        free(attrs);
        return 0;
    }
    tm_query q;
    const char *why = NULL;
    if (tm_query_parse(args, size, buf, attrs, &q, &why) != 0) {
        if (why == NULL || *why == '\0') {
            __builtin_trap();
        }
        free(buf);
        free(attrs);
        return 0;
    }

    if (q.user_len == 0 || q.user_len > TM_QUERY_IDENTITY_MAX || q.flag_len == 0
        || !tm_text_valid(q.user, q.user_len) || !tm_text_valid(q.flag, q.flag_len)
        || q.nattrs > max) {
        __builtin_trap();
    }
    size_t need = 0;
    for (size_t i = 0; i < q.nattrs; i++) {
        const tm_attr *a = &q.attrs[i];
        if (a->name_len == 0 || a->value_len > TM_CONTEXT_MAX_VALUE_LEN
            || a->name < buf || a->value + a->value_len > buf + size) {
            __builtin_trap();
        }
        need += 3 * (a->name_len + a->value_len) + 2;
    }

    /* the round trip */
    need += 3 * (q.user_len + q.flag_len) + sizeof "user_id=&flag_name=";
    char *enc = malloc(need);
    char *buf2 = malloc(need);
    tm_attr *attrs2 = malloc(TM_CONTEXT_MAX_ATTRS * sizeof *attrs2);
    if (enc && buf2 && attrs2) {
        char *p = enc;
        memcpy(p, "user_id=", 8);
        p = put_encoded(p + 8, q.user, q.user_len);
        memcpy(p, "&flag_name=", 11);
        p = put_encoded(p + 11, q.flag, q.flag_len);
        for (size_t i = 0; i < q.nattrs; i++) {
            *p++ = '&';
            p = put_encoded(p, q.attrs[i].name, q.attrs[i].name_len);
            *p++ = '=';
            p = put_encoded(p, q.attrs[i].value, q.attrs[i].value_len);
        }
        tm_query q2;
        if (tm_query_parse(enc, (size_t) (p - enc), buf2, attrs2, &q2, &why) != 0
            || !same(q.user, q.user_len, q2.user, q2.user_len)
            || !same(q.flag, q.flag_len, q2.flag, q2.flag_len)
            || q.nattrs != q2.nattrs) {
            __builtin_trap();
        }
        for (size_t i = 0; i < q.nattrs; i++) {
            if (!same(q.attrs[i].name, q.attrs[i].name_len, q2.attrs[i].name, q2.attrs[i].name_len)
                || !same(q.attrs[i].value, q.attrs[i].value_len, q2.attrs[i].value,
                         q2.attrs[i].value_len)) {
                __builtin_trap();
            }
        }
    }
    free(enc);
    free(buf2);
    free(attrs2);
    free(buf);
    free(attrs);
    return 0;
}
