/* The worker's side of AWS: one libcurl handle per thread performing the
 * signed requests lib/tm_aws builds, and the process-wide credentials,
 * refreshed before they expire. */
#ifndef TMW_AWS_CLIENT_H
#define TMW_AWS_CLIENT_H
#include "tm_aws.h"

#include <stdatomic.h>

/* Credentials shared by every thread. */
int tmw_creds_init(const char *region, int emulator, char *err, size_t errlen);
/* A private copy of current credentials, refreshed first when stale.
 * 0, or -1 when none can be had (the copy is left empty). */
int tmw_creds_get(tm_aws_creds *copy);
void tmw_creds_shutdown(void);

typedef struct {
    void *curl;
    long status;            /* HTTP status, 0 when no answer */
    char *body;             /* reply body, NUL-terminated */
    size_t body_len;
    char query_error[160];  /* x-amzn-query-error header */
    char curl_error[256];
    const atomic_int *abort_flag; /* when set, a long poll in flight is abandoned */
    int local_only;         /* the next exchange connects only where
                               tm_aws_container_addr_ok allows */
} tmw_http;

int tmw_http_init(tmw_http *h, const atomic_int *abort_flag);
void tmw_http_cleanup(tmw_http *h);

/* Signs and performs <op> on ep with body (taken over). timeout_s bounds the
 * whole exchange; abortable lets the stop flag end it early (long polls).
 * Returns 0 on a 2xx reply (h->body holds it), else -1 with *e filled. */
int tmw_aws_call(tmw_http *h, const tm_aws_endpoint *ep, const char *op, char *body,
                 long timeout_s, int abortable, tm_aws_error *e);
#endif
