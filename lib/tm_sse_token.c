#include "tm_sse_token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#define SIG_HEX  64

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s", msg);
    }
}

/* hex signature of (env, expiry) into hex[SIG_HEX]; 0 on success */
static int sign(char *hex, const unsigned char *secret, size_t slen,
                const char *env, size_t elen, int64_t expiry)
{
    static const char digits[] = "0123456789abcdef";
    char msg[16 + TM_NAME_MAX + 32];
    unsigned char mac[32];
    unsigned int mlen = 0;
    int n;

    n = snprintf(msg, sizeof msg, "tm-sse-v1\n%.*s\n%lld", (int) elen, env,
                 (long long) expiry);
    if (n < 0 || (size_t) n >= sizeof msg) {
        return -1;
    }
    if (!HMAC(EVP_sha256(), secret, (int) slen, (const unsigned char *) msg,
              (size_t) n, mac, &mlen) || mlen != sizeof mac) {
        return -1;
    }
    for (size_t i = 0; i < sizeof mac; i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 0x0f];
    }
    return 0;
}

size_t tm_sse_token_make(char *out, const unsigned char *secret, size_t slen,
                         const char *env, size_t elen, int64_t expiry,
                         char *err, size_t errlen)
{
    char hex[SIG_HEX];
    int n;

    if (slen == 0 || slen > INT32_MAX) {
        set_err(err, errlen, "no secret");
        return 0;
    }
    if (!tm_env_name_valid(env, elen)) {
        set_err(err, errlen, "invalid environment name");
        return 0;
    }
    if (expiry <= 0) {
        set_err(err, errlen, "invalid expiry");
        return 0;
    }
    if (sign(hex, secret, slen, env, elen, expiry) != 0) {
        set_err(err, errlen, "HMAC failed");
        return 0;
    }
    n = snprintf(out, TM_SSE_TOKEN_MAX + 1, "%lld.%.*s.%.*s",
                 (long long) expiry, (int) elen, env, SIG_HEX, hex);
    if (n < 0 || n > TM_SSE_TOKEN_MAX) {
        set_err(err, errlen, "token too long");
        return 0;
    }
    return (size_t) n;
}

/* the expiry at tok[0..len): decimal, no leading zero, fits int64 */
static int parse_expiry(const char *s, size_t len, int64_t *v)
{
    int64_t n = 0;

    if (len == 0 || len > 19 || s[0] == '0') {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        if (n > (INT64_MAX - (s[i] - '0')) / 10) {
            return -1;
        }
        n = n * 10 + (s[i] - '0');
    }
    *v = n;
    return 0;
}

int tm_sse_token_check(const char *tok, size_t len,
                       const unsigned char *secret, size_t slen, int64_t now,
                       const char **env, size_t *elen, int64_t *expiry,
                       char *err, size_t errlen)
{
    char hex[SIG_HEX];
    const char *dot, *e;
    size_t el;
    int64_t exp;

    if (tok == NULL || len > TM_SSE_TOKEN_MAX || len < SIG_HEX + 4) {
        set_err(err, errlen, "malformed stream token");
        return TM_SSE_TOKEN_MALFORMED;
    }
    dot = memchr(tok, '.', len);
    if (dot == NULL || tok[len - SIG_HEX - 1] != '.'
        || dot >= tok + len - SIG_HEX - 1
        || parse_expiry(tok, (size_t) (dot - tok), &exp) != 0) {
        set_err(err, errlen, "malformed stream token");
        return TM_SSE_TOKEN_MALFORMED;
    }
    e = dot + 1;
    el = (size_t) (tok + len - SIG_HEX - 1 - e);
    if (!tm_env_name_valid(e, el)) {
        set_err(err, errlen, "malformed stream token");
        return TM_SSE_TOKEN_MALFORMED;
    }
    if (slen == 0 || slen > INT32_MAX
        || sign(hex, secret, slen, e, el, exp) != 0) {
        set_err(err, errlen, "stream tokens cannot be checked");
        return TM_SSE_TOKEN_FORGED;
    }
    /* constant time: the comparison must not tell how much of a guess was
     * right */
    if (CRYPTO_memcmp(hex, tok + len - SIG_HEX, SIG_HEX) != 0) {
        set_err(err, errlen, "invalid stream token");
        return TM_SSE_TOKEN_FORGED;
    }
    if (exp <= now) {
        set_err(err, errlen, "stream token expired");
        return TM_SSE_TOKEN_EXPIRED;
    }
    *env = e;
    *elen = el;
    *expiry = exp;
    return TM_SSE_TOKEN_OK;
}
