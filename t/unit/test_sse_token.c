/* lib/tm_sse_token: the stream token format, its signature (against an
 * HMAC-SHA256 computed independently, by Python's hmac) and every way a
 * token is refused. */
#include "tap.h"
#include "tm_sse_token.h"

#define SECRET ((const unsigned char *) "s3cret")
#define SLEN 6
#define WANT "1700000000.prod." \
    "88b9ea87f7c457d055acab7e952789e4cac27443c67decc3f19fccdc83200fb1"

static int check(const char *tok, int64_t now)
{
    const char *env;
    size_t elen;
    int64_t exp;
    char err[64];
    return tm_sse_token_check(tok, strlen(tok), SECRET, SLEN, now, &env,
                              &elen, &exp, err, sizeof err);
}

int main(void)
{
    char tok[TM_SSE_TOKEN_MAX + 1], bad[2 * TM_SSE_TOKEN_MAX], err[64];
    const char *env;
    size_t n, elen;
    int64_t exp;

    n = tm_sse_token_make(tok, SECRET, SLEN, "prod", 4, 1700000000, err,
                          sizeof err);
    is_int(n, strlen(WANT), "token length");
    is_str(tok, WANT, "token matches an independent HMAC-SHA256");

    is_int(tm_sse_token_check(tok, n, SECRET, SLEN, 1699999999, &env, &elen,
                              &exp, err, sizeof err),
           TM_SSE_TOKEN_OK, "valid before expiry");
    ok(elen == 4 && memcmp(env, "prod", 4) == 0, "environment returned");
    is_int(exp, 1700000000, "expiry returned");

    is_int(check(tok, 1700000000), TM_SSE_TOKEN_EXPIRED, "expired at expiry");
    is_int(tm_sse_token_check(tok, n, (const unsigned char *) "other", 5,
                              0, &env, &elen, &exp, err, sizeof err),
           TM_SSE_TOKEN_FORGED, "another secret: forged");
    is_str(err, "invalid stream token", "forged: says so");

    /* change the environment, keep the signature */
    snprintf(bad, sizeof bad, "1700000000.prox.%s", tok + 16);
    is_int(check(bad, 0), TM_SSE_TOKEN_FORGED, "other environment: forged");
    snprintf(bad, sizeof bad, "1800000000.prod.%s", tok + 16);
    is_int(check(bad, 0), TM_SSE_TOKEN_FORGED, "later expiry: forged");
    snprintf(bad, sizeof bad, "%s", tok);
    bad[n - 1] = bad[n - 1] == '0' ? '1' : '0';
    is_int(check(bad, 0), TM_SSE_TOKEN_FORGED, "one signature digit off");

    is_int(check("", 0), TM_SSE_TOKEN_MALFORMED, "empty");
    is_int(check("garbage", 0), TM_SSE_TOKEN_MALFORMED, "garbage");
    snprintf(bad, sizeof bad, "01700000000.prod.%s", tok + 16);
    is_int(check(bad, 0), TM_SSE_TOKEN_MALFORMED, "leading zero");
    snprintf(bad, sizeof bad, "-1.prod.%s", tok + 16);
    is_int(check(bad, 0), TM_SSE_TOKEN_MALFORMED, "negative expiry");
    snprintf(bad, sizeof bad, "99999999999999999999.prod.%s", tok + 16);
    is_int(check(bad, 0), TM_SSE_TOKEN_MALFORMED, "expiry overflow");
    snprintf(bad, sizeof bad, "1700000000..%s", tok + 16);
    is_int(check(bad, 0), TM_SSE_TOKEN_MALFORMED, "empty environment");
    snprintf(bad, sizeof bad, "1700000000.pr/d.%s", tok + 16);
    is_int(check(bad, 0), TM_SSE_TOKEN_MALFORMED, "invalid environment");
    snprintf(bad, sizeof bad, "%s0", tok);
    is_int(check(bad, 0), TM_SSE_TOKEN_MALFORMED, "signature too long");

    /* dotted environments parse: the signature is the last 64 bytes */
    n = tm_sse_token_make(tok, SECRET, SLEN, "eu.prod", 7, 42, err,
                          sizeof err);
    ok(n > 0, "dotted environment: made");
    is_int(tm_sse_token_check(tok, n, SECRET, SLEN, 41, &env, &elen, &exp,
                              err, sizeof err),
           TM_SSE_TOKEN_OK, "dotted environment: valid");
    ok(elen == 7 && memcmp(env, "eu.prod", 7) == 0, "dotted environment back");

    is_int(tm_sse_token_make(tok, SECRET, 0, "prod", 4, 42, err, sizeof err),
           0, "no secret: refused");
    is_int(tm_sse_token_make(tok, SECRET, SLEN, "a b", 3, 42, err, sizeof err),
           0, "bad environment: refused");
    is_int(tm_sse_token_make(tok, SECRET, SLEN, "prod", 4, 0, err, sizeof err),
           0, "bad expiry: refused");
    return tap_done();
}
