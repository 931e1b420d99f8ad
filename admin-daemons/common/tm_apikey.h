/* API-key check for the flags and targeting daemons. The auth daemon keeps
 * the set of active key hashes in Redis (tm:keys for admin keys, tm:keys:v2
 * with the scope for the others), so a check is one local lookup, not a
 * call to auth. A key Redis does not know (Redis flushed,
 * down, or the key is bad) is asked of auth's /validate when
 * AUTH_SERVICE_URL is set. Revocation removes the hash at once. */
#ifndef TM_APIKEY_H
#define TM_APIKEY_H
#include "tm_http.h"

void tm_apikey_init(const char *auth_service_url);

/* 1 if the request carries a valid key whose scope allows the method on the
 * admin API (admin: every method; readonly: GET and HEAD; server and
 * client: nothing, docs/environments.md); otherwise fills resp (401, 403
 * naming the scope the route needs and the key's, or 503) and returns 0.
 * A key's use is noted in Redis at most once a minute per process
 * (tm:keys:used; the auth daemon folds it into last_used_at). */
int tm_apikey_check(const tm_req *req, tm_resp *resp);

/* The hash of the key the current request on this thread passed
 * tm_apikey_check() with, NULL if none; for the audit trail's actor, which
 * looks up its id and name, never stores it. tm_apikey_forget() clears it
 * (at the start of each request). */
const char *tm_apikey_checked_hash(void);
void tm_apikey_forget(void);
#endif
