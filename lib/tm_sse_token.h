/* Stream tokens: what an OFREP event-stream URL carries instead of an API
 * key (URLs end up in logs). A token names one environment and expires; it
 * is signed with a per-installation secret, so any worker (or any edge of
 * the installation) checks it without state.
 *
 *   <expiry>.<environment>.<signature>
 *
 * expiry: unix seconds, decimal without sign or leading zero (at most 19
 * digits); environment: a valid environment name (tm_env_name_valid, which
 * may itself hold dots); signature: 64 lowercase hex digits,
 * HMAC-SHA256(secret, "tm-sse-v1\n" environment "\n" expiry).
 * Every byte is URL-safe: the token goes into a query string as it is. */
#ifndef TM_SSE_TOKEN_H
#define TM_SSE_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "tm_names.h"

/* the longest token: 19 + 1 + TM_NAME_MAX + 1 + 64 */
#define TM_SSE_TOKEN_MAX  (19 + 1 + TM_NAME_MAX + 1 + 64)

enum {
    TM_SSE_TOKEN_OK = 0,
    TM_SSE_TOKEN_MALFORMED,    /* not of the form above */
    TM_SSE_TOKEN_FORGED,       /* well formed, signature wrong */
    TM_SSE_TOKEN_EXPIRED       /* signature right, expiry <= now */
};

/* Writes the token for env (a valid environment name) expiring at expiry
 * (> 0) into out (room for TM_SSE_TOKEN_MAX + 1 bytes, NUL-terminated).
 * Returns its length, or 0 on bad arguments (err says why). */
size_t tm_sse_token_make(char *out, const unsigned char *secret, size_t slen,
                         const char *env, size_t elen, int64_t expiry,
                         char *err, size_t errlen);

/* Checks tok[0..len) against secret at time now. TM_SSE_TOKEN_OK: *env and
 * *elen point at the environment's name inside tok, *expiry is set. Else one
 * of the codes above, with err (may be NULL) saying why; nothing is set. */
int tm_sse_token_check(const char *tok, size_t len,
                       const unsigned char *secret, size_t slen, int64_t now,
                       const char **env, size_t *elen, int64_t *expiry,
                       char *err, size_t errlen);

#endif
