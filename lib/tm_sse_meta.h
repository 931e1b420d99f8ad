/* The change metadata of OFREP event streams (ADR-0008): what a
 * refetchEvaluation event carries, and what a client sends back, as query
 * parameters, on the bulk refetch that event triggers (flagConfigEtag and
 * flagConfigLastModified in the ADR; sseEtag and sseLastModified in its
 * earlier drafts).
 *
 * etag: "<id>-<md5>". id: the snapshot version at which the stream's
 * environment last changed, decimal, 1 to 19 digits, no sign or leading
 * zero, > 0 (every edge computes the same one, so a refetch can tell an
 * edge that is behind the one that sent the event); md5: 32 lowercase hex
 * digits of what the environment evaluates. Read back with or without one
 * pair of surrounding double quotes (the usual ETag form).
 *
 * lastModified: unix seconds, decimal, in events. Read back as unix seconds
 * (at most 19 digits), as ISO 8601 UTC or with an offset
 * (2026-02-20T21:28:18Z, 2026-02-20T21:28:18.5+01:00) or as an HTTP-date
 * (IMF-fixdate: Fri, 20 Feb 2026 21:28:18 GMT), the forms the ADR allows. */
#ifndef TM_SSE_META_H
#define TM_SSE_META_H

#include <stddef.h>
#include <stdint.h>

/* the longest etag, without quotes: 19 + 1 + 32 */
#define TM_SSE_ETAG_MAX  52

/* Writes the etag of (id > 0, md5) into out (room for TM_SSE_ETAG_MAX + 1
 * bytes, NUL-terminated); returns its length, 0 if id <= 0. */
size_t tm_sse_etag_make(char *out, int64_t id, const unsigned char md5[16]);

/* Reads s[0..len): 0 with *id and md5 set, else -1 with err (may be NULL)
 * saying why; nothing is set then. */
int tm_sse_etag_parse(const char *s, size_t len, int64_t *id,
                      unsigned char md5[16], char *err, size_t errlen);

/* Reads s[0..len) in any of the forms above: 0 with *t (unix seconds, UTC;
 * a fraction of a second is dropped), else -1 with err saying why. */
int tm_sse_last_modified_parse(const char *s, size_t len, int64_t *t,
                               char *err, size_t errlen);

#endif
