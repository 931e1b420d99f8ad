/* tmctl's HTTP layer: one libcurl handle (keep-alive between requests), the
 * API key as a bearer token, JSON bodies in and out. The key is only ever
 * put in the Authorization header: never printed, never in a URL. */
#ifndef TMCTL_HTTP_H
#define TMCTL_HTTP_H
#include <jansson.h>
#include <signal.h>
#include <stddef.h>

/* Set from a signal handler: a retry wait ends and no retry follows. */
extern volatile sig_atomic_t tmctl_http_interrupted;

typedef struct {
    long status;
    char *body;      /* NUL-terminated (maybe ""); malloc'd */
    size_t len;
    json_t *json;    /* the body parsed, NULL when it is not JSON */
} tmctl_resp;

/* key may be NULL (no Authorization header). timeout in seconds; retries:
 * how many times a request answered 429 or 503 is sent again (0: never).
 * 0 or -1. */
int tmctl_http_init(const char *key, long timeout, int retries);
void tmctl_http_cleanup(void);

/* Sends method url with body (NULL: none) as compact JSON. 0 with *r filled
 * (any status), or -1 when the server could not be reached (message on
 * stderr). Free r with tmctl_resp_free.
 * A 429 or 503 means the request was not served (a rate limit, a database
 * away), so it is sent again, up to the retries given to tmctl_http_init:
 * after the server's Retry-After when it sends one, else after an
 * exponential backoff (0.5 s doubling, at most 8 s), with random jitter
 * either way so that many clients do not come back at once; each wait is
 * said on stderr. The last answer is returned whatever it is. */
int tmctl_http(const char *method, const char *url, const json_t *body, tmctl_resp *r);
void tmctl_resp_free(tmctl_resp *r);

/* "tmctl: <what>: <status> <the server's message>" on stderr. */
void tmctl_api_error(const char *what, const tmctl_resp *r);
#endif
