/* AWS Signature Version 4 (header signing, HMAC-SHA256). Pure computation:
 * the caller owns the HTTP request and sends the headers this returns.
 *
 * Follows the published SigV4 algorithm for every service but S3: the path
 * is normalised (".", "..", repeated '/') and percent-encoded byte by byte
 * (so an already-escaped path is escaped again, as the AWS SDKs do); query
 * parameters are decoded, re-encoded and sorted; header names are lowercased,
 * values trimmed with inner whitespace runs collapsed, repeated headers joined
 * with ',' in the order given. Checked against the AWS SigV4 test suite
 * (t/unit/test_sigv4.c). */
#ifndef TM_SIGV4_H
#define TM_SIGV4_H
#include <stddef.h>
#include <time.h>

#define TM_SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define TM_AMZ_DATE_LEN 16 /* 20150830T123600Z */

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} tm_sigv4_header;

typedef struct {
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL or "" without temporary credentials */
    const char *region;        /* us-east-1 */
    const char *service;       /* sqs, dynamodb, sts, ... */
    const char *amz_date;      /* YYYYMMDDTHHMMSSZ, UTC */
    /* 0: the token is a signed header (what SQS, DynamoDB and STS expect);
     * 1: it is sent but left out of the signature (a few old services). */
    int token_unsigned;
} tm_sigv4_params;

typedef struct {
    char *canonical_request;
    char *string_to_sign;
    char *signed_headers;   /* "host;x-amz-date" */
    char *authorization;    /* value of the Authorization header */
    char signature[65];
    char payload_hash[65];
    /* Headers the signer added because the caller did not pass them; the
     * caller must send them too (NULL when not added). */
    const char *add_amz_date;       /* X-Amz-Date value */
    const char *add_security_token; /* X-Amz-Security-Token value */
} tm_sigv4_result;

/* Signs one request. path is the request path before '?' as sent on the
 * wire (NULL or empty means "/"); query is what follows '?' (may be NULL).
 * The headers should include Host. X-Amz-Date and X-Amz-Security-Token are
 * added to the signature when missing (see add_* in the result).
 * Returns 0, or -1 with a message in err (bad parameters, out of memory).
 * Free the result with tm_sigv4_result_free() in both cases. */
int tm_sigv4_sign(const tm_sigv4_params *p, const char *method,
                  const char *path, size_t path_len,
                  const char *query, size_t query_len,
                  const tm_sigv4_header *headers, size_t nheaders,
                  const void *payload, size_t payload_len,
                  tm_sigv4_result *out, char *err, size_t errlen);

void tm_sigv4_result_free(tm_sigv4_result *r);

/* The signing key: HMAC chain over "AWS4"+secret, date (YYYYMMDD), region,
 * service, "aws4_request". 0 on success. */
int tm_sigv4_signing_key(const char *secret, const char *date8,
                         const char *region, const char *service,
                         unsigned char key[32]);

/* Formats t as an X-Amz-Date (UTC); out gets 16 chars + NUL. */
void tm_sigv4_amz_date(time_t t, char out[TM_AMZ_DATE_LEN + 1]);

/* Percent-encodes s the SigV4 way (unreserved A-Z a-z 0-9 - . _ ~ kept,
 * everything else %XX uppercase; '/' kept when keep_slash). Appends to a
 * malloc'd NUL-terminated string returned to the caller; NULL on OOM. */
char *tm_sigv4_uri_encode(const char *s, size_t len, int keep_slash);
#endif
