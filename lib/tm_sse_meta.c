#include "tm_sse_meta.h"

#include <stdio.h>
#include <string.h>

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s", msg);
    }
}

/* a decimal of 1..19 digits without sign or leading zero, > 0 */
static int read_positive(const char *s, size_t len, int64_t *v)
{
    uint64_t n = 0;

    if (len == 0 || len > 19 || (s[0] == '0' && len > 1)) {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        n = n * 10 + (uint64_t) (s[i] - '0');
    }
    if (n == 0 || n > INT64_MAX) {
        return -1;
    }
    *v = (int64_t) n;
    return 0;
}

size_t tm_sse_etag_make(char *out, int64_t id, const unsigned char md5[16])
{
    static const char digits[] = "0123456789abcdef";
    int n;

    if (id <= 0) {
        return 0;
    }
    n = snprintf(out, TM_SSE_ETAG_MAX + 1, "%lld-", (long long) id);
    if (n < 0 || n + 32 > TM_SSE_ETAG_MAX) {
        return 0;
    }
    for (size_t i = 0; i < 16; i++) {
        out[n + 2 * i] = digits[md5[i] >> 4];
        out[n + 2 * i + 1] = digits[md5[i] & 0x0f];
    }
    out[n + 32] = '\0';
    return (size_t) n + 32;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

int tm_sse_etag_parse(const char *s, size_t len, int64_t *id,
                      unsigned char md5[16], char *err, size_t errlen)
{
    const char *dash;
    unsigned char bin[16];
    int64_t v;

    if (len >= 2 && s[0] == '"' && s[len - 1] == '"') {
        s++;
        len -= 2;
    }
    dash = len ? memchr(s, '-', len) : NULL;
    if (dash == NULL || read_positive(s, (size_t) (dash - s), &v) != 0
        || len - (size_t) (dash - s) - 1 != 32) {
        set_err(err, errlen, "the etag of an event is <version>-<32 hex "
                "digits>");
        return -1;
    }
    for (size_t i = 0; i < 16; i++) {
        int hi = hex_digit(dash[1 + 2 * i]), lo = hex_digit(dash[2 + 2 * i]);
        if (hi < 0 || lo < 0) {
            set_err(err, errlen, "the etag of an event is <version>-<32 hex "
                    "digits>");
            return -1;
        }
        bin[i] = (unsigned char) (hi << 4 | lo);
    }
    *id = v;
    memcpy(md5, bin, sizeof bin);
    return 0;
}

/* n digits at s as a number, or -1 */
static int digits_at(const char *s, size_t n)
{
    int v = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* seconds since 1970-01-01 of a UTC civil time already range-checked
 * except for the day of the month; -1 if that day does not exist */
static int64_t civil_seconds(int y, int mon, int d, int h, int mi, int sec)
{
    static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30,
                                 31 };
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    int64_t days = 0;

    if (d < 1 || d > mdays[mon - 1] + (mon == 2 && leap)) {
        return -1;
    }
    for (int yy = 1970; yy < y; yy++) {
        days += 365 + ((yy % 4 == 0 && yy % 100 != 0) || yy % 400 == 0);
    }
    for (int m = 1; m < mon; m++) {
        days += mdays[m - 1] + (m == 2 && leap);
    }
    days += d - 1;
    return ((days * 24 + h) * 60 + mi) * 60 + sec;
}

static int check_time(int y, int mon, int h, int mi, int sec)
{
    return y >= 1970 && mon >= 1 && mon <= 12 && h >= 0 && h <= 23
           && mi >= 0 && mi <= 59 && sec >= 0 && sec <= 59;
}

/* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */
static int64_t iso8601(const char *s, size_t len)
{
    int y, mon, d, h, mi, sec, oh, om;
    size_t i = 19;
    int64_t t, off = 0;

    if (len < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T'
        || s[13] != ':' || s[16] != ':') {
        return -1;
    }
    y = digits_at(s, 4);
    mon = digits_at(s + 5, 2);
    d = digits_at(s + 8, 2);
    h = digits_at(s + 11, 2);
    mi = digits_at(s + 14, 2);
    sec = digits_at(s + 17, 2);
    if (y < 0 || mon < 0 || d < 0 || h < 0 || mi < 0 || sec < 0
        || !check_time(y, mon, h, mi, sec)) {
        return -1;
    }
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        if (i == start) {
            return -1;
        }
    }
    if (i + 1 == len && s[i] == 'Z') {
        off = 0;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-')
               && s[i + 3] == ':') {
        oh = digits_at(s + i + 1, 2);
        om = digits_at(s + i + 4, 2);
        if (oh < 0 || om < 0 || oh > 23 || om > 59) {
            return -1;
        }
        off = (int64_t) (oh * 60 + om) * 60 * (s[i] == '+' ? 1 : -1);
    } else {
        return -1;
    }
    t = civil_seconds(y, mon, d, h, mi, sec);
    return t < 0 || t - off < 0 ? -1 : t - off;
}

/* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
static int64_t http_date(const char *s, size_t len)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    static const char wdays[] = "MonTueWedThuFriSatSun";
    int y, mon = 0, d, h, mi, sec;
    int wday_ok = 0;

    if (len != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' '
        || s[11] != ' ' || s[16] != ' ' || s[19] != ':' || s[22] != ':'
        || memcmp(s + 25, " GMT", 4) != 0) {
        return -1;
    }
    for (int i = 0; i < 7; i++) {
        wday_ok |= memcmp(s, wdays + 3 * i, 3) == 0;
    }
    for (int i = 0; i < 12; i++) {
        if (memcmp(s + 8, months + 3 * i, 3) == 0) {
            mon = i + 1;
        }
    }
    d = digits_at(s + 5, 2);
    y = digits_at(s + 12, 4);
    h = digits_at(s + 17, 2);
    mi = digits_at(s + 20, 2);
    sec = digits_at(s + 23, 2);
    if (!wday_ok || mon == 0 || d < 0 || y < 0 || h < 0 || mi < 0 || sec < 0
        || !check_time(y, mon, h, mi, sec)) {
        return -1;
    }
    return civil_seconds(y, mon, d, h, mi, sec);
}

int tm_sse_last_modified_parse(const char *s, size_t len, int64_t *t,
                               char *err, size_t errlen)
{
    int64_t v;

    if (len == 1 && s[0] == '0') {
        *t = 0;
        return 0;
    }
    if (read_positive(s, len, &v) == 0) {
        *t = v;
        return 0;
    }
    v = iso8601(s, len);
    if (v < 0) {
        v = http_date(s, len);
    }
    if (v < 0) {
        set_err(err, errlen, "lastModified is unix seconds, an ISO 8601 "
                "date-time or an HTTP-date");
        return -1;
    }
    *t = v;
    return 0;
}
