/* Hashing shared by the daemons, the worker and the nginx module. */
#ifndef TM_HASH_H
#define TM_HASH_H
#include <stddef.h>
#include <stdint.h>

#define TM_SHA256_HEX_LEN 64

/* Lowercase hex SHA-256 of data; out gets 64 chars + NUL. */
void tm_sha256_hex(const void *data, size_t len, char out[TM_SHA256_HEX_LEN + 1]);

/* The original evaluation service's percentage bucket:
 * uint32_be(sha1(user || flag)[0..4]) % 100. Users keep their bucket. */
unsigned tm_percentage_bucket(const char *user, size_t ulen,
                              const char *flag, size_t flen);

/* MurmurHash3 x86_32 of data (Austin Appleby's reference, little-endian
 * blocks), as Unleash's clients use it. */
uint32_t tm_murmur3_32(const void *data, size_t len, uint32_t seed);

/* Seeds Unleash uses: 0 for rollouts, 86028157 for variant selection. */
#define TM_UNLEASH_STRATEGY_SEED 0u
#define TM_UNLEASH_VARIANT_SEED 86028157u

/* Unleash's normalizedValue: murmur3_32("<group>:<id>", seed) % normalizer
 * + 1, so 1..normalizer; hashed without building the joined string.
 * normalizer must be > 0. Rollouts use normalizer 100 and compare <= pct. */
uint32_t tm_unleash_normalized(const char *id, size_t idlen,
                               const char *group, size_t glen,
                               uint32_t normalizer, uint32_t seed);

/* Constant-time equality: the time depends on the lengths, not the bytes. */
int tm_consttime_eq(const void *a, size_t alen, const void *b, size_t blen);

/* Fills buf with n bytes from the OS CSPRNG; 0 on success, -1 on failure. */
int tm_random_bytes(void *buf, size_t n);

/* Lowercase hex of n bytes into out (2n chars + NUL). */
void tm_hex(const unsigned char *in, size_t n, char *out);
#endif
