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

/* MurmurHash3 x86_32, fed in pieces so that "<group>:<id>" needs no buffer.
 * Bytes are gathered into little-endian 4-byte blocks across pieces. */
typedef struct {
    uint32_t h;
    uint32_t tail;
    unsigned ntail;
    size_t total;
} tm_mm3;

static inline uint32_t rotl32(uint32_t x, int r)
{
    return (x << r) | (x >> (32 - r));
}

static inline uint32_t mm3_scramble(uint32_t k)
{
    k *= 0xcc9e2d51u;
    k = rotl32(k, 15);
    return k * 0x1b873593u;
}

static inline void mm3_block(tm_mm3 *m, uint32_t k)
{
    m->h ^= mm3_scramble(k);
    m->h = rotl32(m->h, 13);
    m->h = m->h * 5 + 0xe6546b64u;
}

static void mm3_update(tm_mm3 *m, const unsigned char *p, size_t len)
{
    m->total += len;
    while (len && m->ntail) {
        m->tail |= (uint32_t) *p++ << (8 * m->ntail);
        len--;
        if (++m->ntail == 4) {
            mm3_block(m, m->tail);
            m->tail = 0;
            m->ntail = 0;
        }
    }
    for (; len >= 4; p += 4, len -= 4) {
        mm3_block(m, (uint32_t) p[0] | (uint32_t) p[1] << 8
                     | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24);
    }
    for (; len; len--) {
        m->tail |= (uint32_t) *p++ << (8 * m->ntail++);
    }
}

static uint32_t mm3_final(tm_mm3 *m)
{
    uint32_t h = m->h;
    if (m->ntail) {
        h ^= mm3_scramble(m->tail);
    }
    h ^= (uint32_t) m->total;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

uint32_t tm_murmur3_32(const void *data, size_t len, uint32_t seed)
{
    tm_mm3 m = { seed, 0, 0, 0 };
    mm3_update(&m, data, len);
    return mm3_final(&m);
}

uint32_t tm_unleash_normalized(const char *id, size_t idlen,
                               const char *group, size_t glen,
                               uint32_t normalizer, uint32_t seed)
{
    tm_mm3 m = { seed, 0, 0, 0 };
    unsigned char buf[256];
    if (glen + idlen < sizeof buf) {    /* the usual case: one pass, whole blocks */
        memcpy(buf, group, glen);
        buf[glen] = ':';
        memcpy(buf + glen + 1, id, idlen);
        mm3_update(&m, buf, glen + 1 + idlen);
    } else {
        mm3_update(&m, (const unsigned char *) group, glen);
        mm3_update(&m, (const unsigned char *) ":", 1);
        mm3_update(&m, (const unsigned char *) id, idlen);
    }
    return mm3_final(&m) % normalizer + 1;
}
