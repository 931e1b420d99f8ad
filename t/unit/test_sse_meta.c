/* lib/tm_sse_meta: the etag and lastModified of OFREP event-stream events,
 * as written and as read back from a refetch's query. */
#include "tap.h"
#include "tm_sse_meta.h"

static int etag(const char *s, int64_t *id, unsigned char *md5)
{
    char err[96];
    return tm_sse_etag_parse(s, strlen(s), id, md5, err, sizeof err);
}

static int64_t lm(const char *s)
{
    int64_t t = -7;
    char err[96];
    return tm_sse_last_modified_parse(s, strlen(s), &t, err, sizeof err) == 0
           ? t : -1;
}

int main(void)
{
    unsigned char md5[16], back[16];
    char out[TM_SSE_ETAG_MAX + 1], err[96];
    int64_t id = 0;
    size_t n;

    for (int i = 0; i < 16; i++) {
        md5[i] = (unsigned char) (i * 17);
    }
    n = tm_sse_etag_make(out, 42, md5);
    is_str(out, "42-00112233445566778899aabbccddeeff", "etag: <id>-<md5>");
    is_int(n, strlen(out), "etag length");
    is_int(tm_sse_etag_make(out, 0, md5), 0, "etag of id 0: refused");
    n = tm_sse_etag_make(out, INT64_MAX, md5);
    is_int(n, TM_SSE_ETAG_MAX, "the longest etag fits TM_SSE_ETAG_MAX");

    is_int(etag("42-00112233445566778899aabbccddeeff", &id, back), 0,
           "etag read back");
    ok(id == 42 && memcmp(back, md5, 16) == 0, "... id and md5");
    is_int(etag("\"7-00112233445566778899aabbccddeeff\"", &id, back), 0,
           "quoted etag read back");
    is_int(id, 7, "... id");
    is_int(etag("00112233445566778899aabbccddeeff", &id, back), -1,
           "md5 alone: refused");
    is_int(etag("0-00112233445566778899aabbccddeeff", &id, back), -1,
           "id 0: refused");
    is_int(etag("07-00112233445566778899aabbccddeeff", &id, back), -1,
           "leading zero: refused");
    is_int(etag("-1-00112233445566778899aabbccddeeff", &id, back), -1,
           "negative: refused");
    is_int(etag("9223372036854775808-00112233445566778899aabbccddeeff", &id,
                back), -1, "past INT64_MAX: refused");
    is_int(etag("42-00112233445566778899AABBCCDDEEFF", &id, back), -1,
           "uppercase hex: refused");
    is_int(etag("42-00112233445566778899aabbccddeef", &id, back), -1,
           "31 digits: refused");
    is_int(etag("42-00112233445566778899aabbccddeeff0", &id, back), -1,
           "33 digits: refused");
    is_int(etag("\"42-00112233445566778899aabbccddeeff", &id, back), -1,
           "one quote: refused");
    is_int(etag("", &id, back), -1, "empty: refused");
    id = 5;
    is_int(tm_sse_etag_parse("abc", 3, &id, back, err, sizeof err), -1,
           "garbage: refused");
    is_int(id, 5, "... nothing set");
    ok(strstr(err, "<version>-<32 hex digits>") != NULL,
           "... saying what an etag is");

    is_int(lm("1771622898"), 1771622898, "unix seconds");
    is_int(lm("0"), 0, "0");
    is_int(lm("2026-02-20T21:28:18Z"), 1771622898, "ISO 8601 UTC");
    is_int(lm("2026-02-20T22:28:18+01:00"), 1771622898, "ISO 8601 +01:00");
    is_int(lm("2026-02-20T20:28:18.250-01:00"), 1771622898,
           "ISO 8601 with a fraction, -01:00");
    is_int(lm("Fri, 20 Feb 2026 21:28:18 GMT"), 1771622898, "HTTP-date");
    is_int(lm("2024-02-29T00:00:00Z"), 1709164800, "a leap day");
    is_int(lm("1970-01-01T00:00:00Z"), 0, "the epoch");
    is_int(lm("2023-02-29T00:00:00Z"), -1, "Feb 29 of a common year: refused");
    is_int(lm("2026-13-01T00:00:00Z"), -1, "month 13: refused");
    is_int(lm("2026-02-20T24:00:00Z"), -1, "hour 24: refused");
    is_int(lm("2026-02-20T21:28:18"), -1, "no zone: refused");
    is_int(lm("2026-02-20T21:28:18.Z"), -1, "empty fraction: refused");
    is_int(lm("1969-12-31T23:59:59Z"), -1, "before the epoch: refused");
    is_int(lm("1970-01-01T00:30:00+01:00"), -1, "before the epoch by offset: refused");
    is_int(lm("Fri, 20 Feb 2026 21:28:18 UTC"), -1, "HTTP-date not GMT: refused");
    is_int(lm("Fri, 20 Foo 2026 21:28:18 GMT"), -1, "no such month: refused");
    is_int(lm("-5"), -1, "negative: refused");
    is_int(lm("017"), -1, "leading zero: refused");
    is_int(lm("12345678901234567890"), -1, "20 digits: refused");
    is_int(lm(""), -1, "empty: refused");
    is_int(lm("yesterday"), -1, "words: refused");

    return tap_done();
}
