/* The usage read API of the analytics service (docs/usage.md):
 *   GET /flags/<name>/usage?environment=&from=&to=&granularity=hour|day
 *   GET /usage/stale?environment=&days=N&limit=&after=
 * answered from the aggregates with DynamoDB Query, never a Scan. Flags and
 * environments are known from Redis (tm:flags, tm:envs), API keys as the
 * flags daemon checks them (admin-daemons/common/tm_apikey). */
#ifndef TMW_USAGE_API_H
#define TMW_USAGE_API_H
#include "poller.h"
#include "tm_http.h"

/* 1 when req is a usage route (resp filled), else 0 (resp untouched). */
int tmw_usage_route(const tmw_config *cfg, const tm_req *req, tm_resp *resp);
#endif
