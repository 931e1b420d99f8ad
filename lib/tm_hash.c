#include "tm_hash.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <string.h>

void tm_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

void tm_sha256_hex(const void *data, size_t len, char out[TM_SHA256_HEX_LEN + 1])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data, len, md);
    tm_hex(md, sizeof md, out);
}

unsigned tm_percentage_bucket(const char *user, size_t ulen,
                              const char *flag, size_t flen)
{
    SHA_CTX ctx;
    unsigned char md[SHA_DIGEST_LENGTH];

    /* SHA1_* is deprecated in OpenSSL 3 but is the cheapest one-shot path
     * without allocation; EVP would allocate per call. */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    SHA1_Init(&ctx);
    SHA1_Update(&ctx, user, ulen);
    SHA1_Update(&ctx, flag, flen);
    SHA1_Final(md, &ctx);
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
    uint32_t v = ((uint32_t) md[0] << 24) | ((uint32_t) md[1] << 16)
                 | ((uint32_t) md[2] << 8) | (uint32_t) md[3];
    return v % 100;
}

int tm_consttime_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen) {
        return 0;
    }
    return CRYPTO_memcmp(a, b, alen) == 0;
}

int tm_random_bytes(void *buf, size_t n)
{
    return RAND_bytes(buf, (int) n) == 1 ? 0 : -1;
}
