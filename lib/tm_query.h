/* The /evaluate query string (?user_id=..&flag_name=..&<attribute>=..), as
 * the original service read it with Flask's request.args: names match
 * exactly, the first of a name wins, '+' is a space and %XX a byte (an
 * invalid escape stays as it is written). Everything that is neither
 * user_id nor flag_name becomes an evaluation-context attribute.
 *
 * No allocation: the caller gives a buffer of len bytes (decoding never
 * lengthens text) and room for tm_query_max_attrs(args, len) attributes, so the
 * nginx module can take both from the request pool. */
#ifndef TM_QUERY_H
#define TM_QUERY_H
#include "tm_context.h"

#include <stddef.h>

/* The longest user_id, as for an OFREP targetingKey. */
#define TM_QUERY_IDENTITY_MAX 4096

typedef struct {
    const char *user;       /* decoded, not NUL-terminated */
    size_t user_len;
    const char *flag;
    size_t flag_len;
    tm_attr *attrs;         /* the caller's array, attrs[0..nattrs) used */
    size_t nattrs;
} tm_query;

/* How many attributes args can give: its '&'-separated pairs, at most
 * TM_CONTEXT_MAX_ATTRS (a query with more is refused). */
size_t tm_query_max_attrs(const char *args, size_t len);

/* Decodes one query component in place of itself into dst (dst may be src);
 * returns the decoded length, never more than len. */
size_t tm_query_decode(char *dst, const char *src, size_t len);

/* Parses args (without the '?') into q. buf holds at least len bytes and
 * attrs at least tm_query_max_attrs(args, len) entries. 0 on success; -1 with
 * *why, a message for a 400, when user_id or flag_name is missing or empty,
 * either is not UTF-8 text without control characters, user_id is longer
 * than TM_QUERY_IDENTITY_MAX, an attribute value is longer than
 * TM_CONTEXT_MAX_VALUE_LEN or there are more than TM_CONTEXT_MAX_ATTRS. */
int tm_query_parse(const char *args, size_t len, char *buf, tm_attr *attrs,
                   tm_query *q, const char **why);
#endif
