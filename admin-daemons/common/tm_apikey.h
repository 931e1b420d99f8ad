/* API-key check for the flags and targeting daemons. The auth daemon keeps
 * the set of active key hashes in Redis (tm:keys), so a check is one local
 * HEXISTS, not a call to auth. A key Redis does not know (Redis flushed,
 * down, or the key is bad) is asked of auth's /validate when
 * AUTH_SERVICE_URL is set. Revocation removes the hash at once. */
#ifndef TM_APIKEY_H
#define TM_APIKEY_H
#include "tm_http.h"

void tm_apikey_init(const char *auth_service_url);

/* 1 if the request carries a valid key; otherwise fills resp (401/503) and
 * returns 0. */
int tm_apikey_check(const tm_req *req, tm_resp *resp);
#endif
