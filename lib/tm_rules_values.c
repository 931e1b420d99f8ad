/* Value parsing and comparison for the rule engine: numbers, RFC 3339
 * dates, semantic versions, IP addresses and CIDRs, and the sorted string
 * lists. Compilation parses operands with these once; evaluation parses
 * the context value with the same code, so both read a value alike. */
#include "tm_rules_int.h"

#include <arpa/inet.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NUM_TEXT_MAX 64
#define IP_TEXT_MAX 64

int tm_str_cmp(const void *a, const void *b)
{
    const tm_str *x = a, *y = b;
    if (x->len != y->len) {
        return x->len < y->len ? -1 : 1;
    }
    return memcmp(x->s, y->s, x->len);
}

int tm_str_sorted_has(const tm_str *v, size_t n, const char *s, size_t len)
{
    tm_str key = { s, len };
    return n && bsearch(&key, v, n, sizeof key, tm_str_cmp) != NULL;
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* A whole number, spaces around allowed; 0 or -1. Plain decimals of up to
 * 15 digits take Clinger's fast path (exact integer over an exact power of
 * ten: one correctly rounded division), the rest strtod. */
int tm_parse_number(const char *s, size_t len, double *out)
{
    static const double pow10[] = {
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15
    };
    size_t i = 0, nd = 0, frac = 0;
    int neg = 0, dot = 0;
    uint64_t m = 0;
    if (len && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i++;
    }
    for (; i < len; i++) {
        if (is_digit(s[i])) {
            m = m * 10 + (uint64_t) (s[i] - '0');
            nd++;
            frac += dot;
        } else if (s[i] == '.' && !dot) {
            dot = 1;
        } else {
            break;
        }
    }
    if (i == len && nd > 0 && nd <= 15) {
        double d = (double) m / pow10[frac];
        *out = neg ? -d : d;
        return 0;
    }

    char buf[NUM_TEXT_MAX];
    if (len == 0 || len >= sizeof buf) {
        return -1;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    double d = strtod(buf, &end);
    if (end == buf) {
        return -1;
    }
    while (*end == ' ' || *end == '\t') {
        end++;
    }
    if (*end != '\0' || !isfinite(d)) {
        return -1;
    }
    *out = d;
    return 0;
}

static int digits(const char *s, size_t len, size_t *i, int n, int *out)
{
    int v = 0;
    for (int k = 0; k < n; k++, (*i)++) {
        if (*i >= len || !is_digit(s[*i])) {
            return -1;
        }
        v = v * 10 + (s[*i] - '0');
    }
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* RFC 3339 / ISO 8601: YYYY-MM-DD[(T| )HH:MM[:SS[.frac]]][Z|(+|-)HH[:]MM],
 * no zone meaning UTC; milliseconds since the epoch. */
int tm_parse_date(const char *s, size_t len, int64_t *ms)
{
    size_t i = 0;
    int y, mo, d, h = 0, mi = 0, sec = 0, frac = 0;
    if (digits(s, len, &i, 4, &y) || i >= len || s[i++] != '-'
        || digits(s, len, &i, 2, &mo) || i >= len || s[i++] != '-'
        || digits(s, len, &i, 2, &d)) {
        return -1;
    }
    static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap)) {
        return -1;
    }
    int64_t offset = 0;
    if (i < len && (s[i] == 'T' || s[i] == 't' || s[i] == ' ')) {
        i++;
        if (digits(s, len, &i, 2, &h) || i >= len || s[i++] != ':'
            || digits(s, len, &i, 2, &mi)) {
            return -1;
        }
        if (i < len && s[i] == ':') {
            i++;
            if (digits(s, len, &i, 2, &sec)) {
                return -1;
            }
            if (i < len && (s[i] == '.' || s[i] == ',')) {
                i++;
                int nd = 0;
                while (i < len && is_digit(s[i])) {
                    if (nd < 3) {
                        frac = frac * 10 + (s[i] - '0');
                    }
                    nd++;
                    i++;
                }
                if (nd == 0) {
                    return -1;
                }
                for (; nd < 3; nd++) {
                    frac *= 10;
                }
            }
        }
        if (h > 23 || mi > 59 || sec > 60) {
            return -1;
        }
        if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
            i++;
        } else if (i < len && (s[i] == '+' || s[i] == '-')) {
            int sign = s[i++] == '-' ? -1 : 1, oh, om;
            if (digits(s, len, &i, 2, &oh)) {
                return -1;
            }
            if (i < len && s[i] == ':') {
                i++;
            }
            if (digits(s, len, &i, 2, &om) || oh > 23 || om > 59) {
                return -1;
            }
            offset = sign * (oh * 3600 + om * 60);
        }
    }
    if (i != len) {
        return -1;
    }
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    *ms = secs * 1000 + frac;
    return 0;
}

static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || (len > 1 && s[0] == '0') || len > 19) {
        return -1;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i])) {
            return -1;
        }
        v = v * 10 + (uint64_t) (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int all_digits(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i])) {
            return 0;
        }
    }
    return 1;
}

static int ident_char(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

/* Dot-separated non-empty identifiers; numeric prerelease ones without
 * leading zeros. */
static int idents_valid(const char *s, size_t len, int prerelease)
{
    size_t start = 0;
    for (size_t k = 0; k <= len; k++) {
        if (k == len || s[k] == '.') {
            size_t l = k - start;
            if (l == 0 || (prerelease && l > 1 && s[start] == '0'
                           && all_digits(s + start, l))) {
                return -1;
            }
            start = k + 1;
        } else if (!ident_char(s[k])) {
            return -1;
        }
    }
    return 0;
}

/* Semantic Versioning 2.0.0, MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] (a
 * leading 'v' is not one); v->pre points into s. */
int tm_parse_semver(const char *s, size_t len, tm_semver *v)
{
    const char *plus = memchr(s, '+', len);
    size_t end = plus ? (size_t) (plus - s) : len;
    const char *dash = memchr(s, '-', end);
    size_t core = dash ? (size_t) (dash - s) : end;
    uint64_t *parts[3] = { &v->major, &v->minor, &v->patch };
    size_t i = 0;
    for (int k = 0; k < 3; k++) {
        size_t j = core;
        if (k < 2) {
            const char *dot = memchr(s + i, '.', core - i);
            if (dot == NULL) {
                return -1;
            }
            j = (size_t) (dot - s);
        }
        if (parse_u64(s + i, j - i, parts[k]) != 0) {
            return -1;
        }
        i = j + 1;
    }
    v->pre = dash ? dash + 1 : NULL;
    v->prelen = dash ? end - core - 1 : 0;
    if (dash && idents_valid(v->pre, v->prelen, 1) != 0) {
        return -1;
    }
    if (plus && idents_valid(plus + 1, len - end - 1, 0) != 0) {
        return -1;
    }
    return 0;
}

static int cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

int tm_semver_cmp(const tm_semver *a, const tm_semver *b)
{
    int c = cmp_u64(a->major, b->major);
    if (c == 0) {
        c = cmp_u64(a->minor, b->minor);
    }
    if (c == 0) {
        c = cmp_u64(a->patch, b->patch);
    }
    if (c != 0) {
        return c;
    }
    if (!a->pre || !b->pre) {           /* a release ranks above its prereleases */
        return a->pre ? -1 : b->pre ? 1 : 0;
    }
    size_t i = 0, j = 0;
    for (;;) {
        if (i >= a->prelen || j >= b->prelen) {
            return i >= a->prelen ? (j >= b->prelen ? 0 : -1) : 1;
        }
        size_t ie = i, je = j;
        while (ie < a->prelen && a->pre[ie] != '.') {
            ie++;
        }
        while (je < b->prelen && b->pre[je] != '.') {
            je++;
        }
        const char *x = a->pre + i, *y = b->pre + j;
        size_t xl = ie - i, yl = je - j;
        int xn = all_digits(x, xl), yn = all_digits(y, yl);
        if (xn && yn) {
            c = xl != yl ? (xl < yl ? -1 : 1) : memcmp(x, y, xl);
        } else if (xn || yn) {
            c = xn ? -1 : 1;            /* numeric identifiers rank lower */
        } else {
            c = memcmp(x, y, xl < yl ? xl : yl);
            if (c == 0) {
                c = xl < yl ? -1 : xl > yl;
            }
        }
        if (c != 0) {
            return c < 0 ? -1 : 1;
        }
        i = ie + 1;
        j = je + 1;
    }
}

/* Dotted-quad IPv4, as inet_pton reads it (no leading zeros but "0"). */
static int parse_ipv4(const char *s, size_t len, unsigned char addr[4])
{
    size_t i = 0;
    for (int k = 0; k < 4; k++) {
        if (k > 0 && (i >= len || s[i++] != '.')) {
            return -1;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < len && is_digit(s[i]) && i - start < 3) {
            v = v * 10 + (unsigned) (s[i++] - '0');
        }
        if (i == start || v > 255 || (s[start] == '0' && i - start > 1)) {
            return -1;
        }
        addr[k] = (unsigned char) v;
    }
    return i == len ? 0 : -1;
}

/* An IPv4 or IPv6 address; IPv4-mapped IPv6 addresses become IPv4. */
int tm_parse_ip(const char *s, size_t len, unsigned char addr[16], int *v6)
{
    char buf[IP_TEXT_MAX];
    if (len == 0 || len >= sizeof buf) {
        return -1;
    }
    if (memchr(s, ':', len) == NULL) {
        *v6 = 0;
        return parse_ipv4(s, len, addr);
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET6, buf, addr) != 1) {
        return -1;
    }
    static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (memcmp(addr, mapped, 12) == 0) {
        memmove(addr, addr + 12, 4);
        *v6 = 0;
    } else {
        *v6 = 1;
    }
    return 0;
}

static int prefix_match(const unsigned char *a, const unsigned char *b, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, bytes) != 0) {
        return 0;
    }
    if (rest == 0) {
        return 1;
    }
    unsigned char mask = (unsigned char) (0xff << (8 - rest));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

int tm_parse_cidr(const char *s, size_t len, tm_cidr *c)
{
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t) (slash - s) : len;
    int v6;
    memset(c, 0, sizeof *c);
    if (tm_parse_ip(s, alen, c->addr, &v6) != 0) {
        return -1;
    }
    unsigned max = v6 ? 128 : 32, bits = max;
    if (slash) {
        const char *p = slash + 1;
        size_t plen = len - alen - 1;
        if (plen == 0 || plen > 3 || !all_digits(p, plen)) {
            return -1;
        }
        bits = 0;
        for (size_t i = 0; i < plen; i++) {
            bits = bits * 10 + (unsigned) (p[i] - '0');
        }
        if (bits > max) {
            return -1;
        }
        /* "::ffff:10.0.0.0/104" is 10.0.0.0/8 */
        if (!v6 && memchr(s, ':', alen)) {
            if (bits < 96) {
                return -1;
            }
            bits -= 96;
        }
    }
    c->v6 = (unsigned char) v6;
    c->bits = (unsigned char) bits;
    return 0;
}

int tm_cidr_contains(const tm_cidr *c, const unsigned char addr[16], int v6)
{
    return c->v6 == v6 && prefix_match(addr, c->addr, c->bits);
}
