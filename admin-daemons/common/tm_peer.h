/* Calls from one admin daemon to another on behalf of a request (the flags
 * daemon asks the targeting daemon to copy or delete rules): the caller's
 * own API key goes along, so the peer checks its scope as if the caller had
 * asked it directly. */
#ifndef TM_PEER_H
#define TM_PEER_H
#include "tm_http.h"

#include <curl/curl.h>
#include <jansson.h>

/* The largest answer read (a rules list of one environment). */
#define TM_PEER_MAX_BODY (32 * 1024 * 1024)

typedef struct {
    long status;    /* 0 when the peer could not be reached */
    json_t *json;   /* the answer parsed, NULL when empty or not JSON */
} tm_peer_resp;

/* method base+path (path holds only checked names and query parameters)
 * with body (NULL: none) as JSON and req's Authorization (or X-API-Key).
 * 0 with *out filled (any status: free with tm_peer_resp_free), -1 when
 * the peer could not be reached or answered too much (logged). */
int tm_peer_call(const tm_req *req, const char *method, const char *base, const char *path,
                 const json_t *body, tm_peer_resp *out);
void tm_peer_resp_free(tm_peer_resp *r);

/* One bounded HTTP exchange with another ToggleMaster service (this file's
 * peer calls; the auth daemon's /validate, tm_apikey.c): method (NULL: GET,
 * or POST with a body) url with headers (may be NULL) and body (NULL: none),
 * within timeout_ms (connect_ms to connect), without signals (the daemons
 * are threaded). The answer's bytes go to write(..., ud). CURLE_OK with
 * *status the HTTP status, or why it failed (curl_easy_strerror). */
CURLcode tm_peer_exchange(const char *method, const char *url, struct curl_slist *headers,
                          const char *body, long timeout_ms, long connect_ms,
                          curl_write_callback write, void *ud, long *status);

/* The peer's error message, or a placeholder: for 502 answers. */
const char *tm_peer_error(const tm_peer_resp *r);
#endif
