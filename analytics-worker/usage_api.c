#include "usage_api.h"
#include "aws_client.h"
#include "metrics.h"
#include "tm_apikey.h"
#include "tm_log.h"
#include "tm_names.h"
#include "tm_publish.h"
#include "tm_usage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Pages of one Query followed at most: a range is at most 744 hourly items
 * (~150 bytes each), one page of 1 MB holds them all. */
#define MAX_PAGES 20
#define STALE_LIMIT_DEFAULT 50
#define STALE_LIMIT_MAX 200

/* A parameter, NULL when absent or empty. */
static const char *param(const tm_req *req, const char *name)
{
    const char *v = tm_req_query(req, name);
    return v && *v ? v : NULL;
}

/* The environment asked for: "default" when absent, else one Redis lists
 * in tm:envs (docs/environments.md). 0, or -1 with resp filled. */
static int environment(const tm_req *req, tm_resp *resp, const char **env)
{
    const char *e = param(req, "environment");
    *env = e ? e : TM_USAGE_DEFAULT_ENV;
    if (!e || strcmp(e, TM_USAGE_DEFAULT_ENV) == 0) {
        return 0;
    }
    if (!tm_name_valid_unicode(e, strlen(e))) {
        tm_resp_error(resp, 400, "environment: not a valid name");
        return -1;
    }
    int known = tm_publish_hexists(tm_publish_hash("env"), e);
    if (known < 0) {
        tm_resp_error(resp, 503, "cannot check the environment right now: Redis is unreachable");
        return -1;
    }
    if (!known) {
        tm_resp_error(resp, 404, "unknown environment %s", e);
        return -1;
    }
    return 0;
}

/* Every page of one Query on pk into s. 0, or -1 with resp filled (503). */
static int query(const tmw_config *cfg, tmw_http *h, const char *pk, const char *sk_from,
                 const char *sk_to, int forward, int limit, tm_usage_series *s, tm_resp *resp)
{
    json_t *start = NULL;
    for (int page = 0; page < MAX_PAGES; page++) {
        char *body = tm_ddb_query_body(cfg->usage_table, "pk", pk, "sk", sk_from, sk_to, forward,
                                       limit, start);
        json_decref(start);
        start = NULL;
        tm_aws_error e;
        if (!body || tmw_aws_call(h, &cfg->ddb, "Query", body, 10, 0, &e) != 0) {
            if (body) {
                TM_WARN("usage: Query failed: HTTP %ld %s: %s", e.status, e.code, e.message);
                TMW_INC(dynamodb_errors, 1);
                if (e.throttling) {
                    TMW_INC(dynamodb_throttled, 1);
                }
            }
            tm_resp_error(resp, 503, "usage data unavailable right now (DynamoDB: %s); retry later",
                          body ? e.code : "out of memory");
            return -1;
        }
        json_t *items = tm_ddb_parse_query(h->body, h->body_len, &start);
        if (!items) {
            tm_resp_error(resp, 503, "usage data unavailable right now (DynamoDB reply not understood)");
            return -1;
        }
        int rc = tm_usage_series_add(s, items);
        json_decref(items);
        if (rc != 0) {
            TM_WARN("usage: an item of %s is not an aggregate; skipped", pk);
        }
        if (!start || limit > 0) {
            json_decref(start);
            return 0;
        }
    }
    json_decref(start);
    tm_resp_error(resp, 503, "usage data: too many pages for one range");
    return -1;
}

/* 1 when the request may read usage; else resp is filled. */
static int allowed(const tm_req *req, tm_resp *resp)
{
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        tm_resp_error(resp, 405, "use GET");
        return 0;
    }
    /* The daemons' check: admin and readonly keys may GET, server and
     * client keys get a 403 naming their scope (docs/environments.md). */
    return tm_apikey_check(req, resp);
}

/* 0 when flag is a known flag, else -1 with resp filled. */
static int known_flag(const char *flag, tm_resp *resp)
{
    if (!tm_name_valid_unicode(flag, strlen(flag))) {
        tm_resp_error(resp, 400, "not a valid flag name");
        return -1;
    }
    int known = tm_publish_hexists(tm_publish_hash("flag"), flag);
    if (known < 0) {
        tm_resp_error(resp, 503, "cannot check the flag right now: Redis is unreachable");
        return -1;
    }
    if (!known) {
        tm_resp_error(resp, 404, "flag not found");
        return -1;
    }
    return 0;
}

static void flag_usage(const tmw_config *cfg, const char *flag, const tm_req *req, tm_resp *resp)
{
    const char *env;
    char err[200], pk[TM_NAME_MAX * 2 + 2], a[14], b[14], from[21], to[21];
    tm_usage_range r;
    if (known_flag(flag, resp) != 0 || environment(req, resp, &env) != 0) {
        return;
    }
    if (tm_usage_parse_range(param(req, "from"), param(req, "to"), param(req, "granularity"),
                             time(NULL), &r, err, sizeof err) != 0) {
        tm_resp_error(resp, 400, "%s", err);
        return;
    }
    tm_usage_series s;
    tmw_http h;
    if (tm_usage_pk(env, flag, pk, sizeof pk) != 0 || tm_usage_series_init(&s, &r) != 0) {
        tm_resp_error(resp, 500, "out of memory");
        return;
    }
    if (tmw_http_init(&h, NULL) != 0) {
        tm_usage_series_free(&s);
        tm_resp_error(resp, 503, "usage data unavailable right now (HTTP client)");
        return;
    }
    tm_usage_hour(r.from, a);
    tm_usage_hour(r.to - 3600, b);
    if (query(cfg, &h, pk, a, b, 1, 0, &s, resp) == 0) {
        json_t *j = tm_usage_series_json(&s);
        tm_usage_time(r.from, from);
        tm_usage_time(r.to, to);
        if (j && json_object_update_missing_new(j, json_pack("{s:s, s:s, s:s, s:s, s:s, s:n}",
                "flag", flag, "environment", env, "granularity", r.step == 3600 ? "hour" : "day",
                "from", from, "to", to, "distinct_users")) == 0) {
            TMW_INC(usage_reads, 1);
            tm_resp_json(resp, 200, j);
        } else {
            json_decref(j);
            tm_resp_error(resp, 500, "out of memory");
        }
    }
    tmw_http_cleanup(&h);
    tm_usage_series_free(&s);
}

/* The evidence for one flag over the window, or NULL when it is not stale
 * (or on error: *failed set and resp filled). */
static json_t *stale_check(const tmw_config *cfg, tmw_http *h, const char *env, const char *flag,
                           const tm_usage_range *r, int days, tm_resp *resp, int *failed)
{
    char pk[TM_NAME_MAX * 2 + 2], a[14], b[14], reason[160];
    tm_usage_series s;
    if (tm_usage_pk(env, flag, pk, sizeof pk) != 0) {
        return NULL;    /* a name Redis holds but we cannot key: never counted */
    }
    if (tm_usage_series_init(&s, r) != 0) {
        tm_resp_error(resp, 500, "out of memory");
        *failed = 1;
        return NULL;
    }
    tm_usage_hour(r->from, a);
    tm_usage_hour(r->to - 3600, b);
    int rc = query(cfg, h, pk, a, b, 1, 0, &s, resp);
    if (rc == 0 && s.total.n == 0 && r->from - 3600 >= 946684800) {
        /* unused in the window: when was it last evaluated? the newest older item */
        tm_usage_hour(r->from - 3600, b);
        rc = query(cfg, h, pk, "2000-01-01T00", b, 0, 1, &s, resp);
    }
    json_t *out = NULL;
    size_t nv = json_object_size(s.total.variants);
    if (rc != 0) {
        *failed = 1;
    } else if (s.total.n == 0) {
        snprintf(reason, sizeof reason, "no evaluation in %d days", days);
    } else if ((s.total.t == 0 || s.total.f == 0) && nv <= 1) {
        snprintf(reason, sizeof reason, "every evaluation in %d days answered %s%s%s", days,
                 s.total.t ? "true" : "false", nv ? " with variant " : "",
                 nv ? json_object_iter_key(json_object_iter(s.total.variants)) : "");
    } else {
        reason[0] = '\0';
    }
    if (rc == 0 && reason[0]) {
        char last[21];
        if (s.last >= 0) {
            tm_usage_time(s.last, last);
        }
        out = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:O}", "flag", flag, "reason", reason,
                        "last_evaluated", s.last >= 0 ? json_string(last) : json_null(),
                        "evaluations", (json_int_t) s.total.n, "true", (json_int_t) s.total.t,
                        "false", (json_int_t) s.total.f, "variants", s.total.variants);
        if (!out) {
            tm_resp_error(resp, 500, "out of memory");
            *failed = 1;
        }
    }
    tm_usage_series_free(&s);
    return out;
}

static int stale_limit(const tm_req *req, tm_resp *resp, int *limit)
{
    const char *l = param(req, "limit");
    *limit = STALE_LIMIT_DEFAULT;
    if (!l) {
        return 0;
    }
    char *end;
    long v = strtol(l, &end, 10);
    if (*end || l[0] == '+' || l[0] == '-' || l[0] == ' ' || v < 1 || v > STALE_LIMIT_MAX) {
        tm_resp_error(resp, 400, "limit must be a whole number from 1 to %d", STALE_LIMIT_MAX);
        return -1;
    }
    *limit = (int) v;
    return 0;
}

/* The flags after the cursor, up to limit of them, checked in name order. */
static void stale_list(const tmw_config *cfg, const char *env, int days, int limit,
                       const char *after, tm_resp *resp)
{
    char **names;
    size_t n, i = 0;
    tmw_http h;
    if (tm_publish_hkeys(tm_publish_hash("flag"), &names, &n) != 0) {
        tm_resp_error(resp, 503, "cannot list the flags right now: Redis is unreachable");
        return;
    }
    time_t now = time(NULL);
    tm_usage_range r = { .to = now - now % 3600 + 3600, .step = 86400 };
    r.from = r.to - (time_t) days * 86400;
    json_t *stale = json_array();
    int failed = !stale || tmw_http_init(&h, NULL) != 0, checked = 0;
    if (failed) {
        tm_resp_error(resp, 503, "usage data unavailable right now");
    }
    while (i < n && after && strcmp(names[i], after) <= 0) {
        i++;
    }
    for (; !failed && i < n && checked < limit; i++, checked++) {
        json_t *ev = stale_check(cfg, &h, env, names[i], &r, days, resp, &failed);
        if (ev && json_array_append_new(stale, ev) != 0) {
            tm_resp_error(resp, 500, "out of memory");
            failed = 1;
        }
    }
    if (!failed) {
        char from[21];
        tm_usage_time(r.from, from);
        json_t *j = json_pack("{s:s, s:i, s:s, s:i, s:O, s:o}", "environment", env, "days", days,
                              "since", from, "checked", checked, "stale", stale, "next",
                              i < n ? json_string(names[i - 1]) : json_null());
        TMW_INC(usage_reads, 1);
        tm_resp_json(resp, j ? 200 : 500, j ? j : json_pack("{s:s}", "error", "out of memory"));
    }
    if (stale) {
        tmw_http_cleanup(&h);
    }
    json_decref(stale);
    for (size_t k = 0; k < n; k++) {
        free(names[k]);
    }
    free(names);
}

static void usage_stale(const tmw_config *cfg, const tm_req *req, tm_resp *resp)
{
    const char *env;
    char err[200];
    int days, limit;
    if (environment(req, resp, &env) != 0 || stale_limit(req, resp, &limit) != 0) {
        return;
    }
    if (tm_usage_parse_days(param(req, "days"), &days, err, sizeof err) != 0) {
        tm_resp_error(resp, 400, "%s", err);
        return;
    }
    stale_list(cfg, env, days, limit, param(req, "after"), resp);
}

int tmw_usage_route(const tmw_config *cfg, const tm_req *req, tm_resp *resp)
{
    static const char flags[] = "/flags/", usage[] = "/usage";
    const char *p = req->path;
    size_t len = strlen(p);
    int stale = strcmp(p, "/usage/stale") == 0;
    int per_flag = strncmp(p, flags, sizeof flags - 1) == 0 && len > sizeof flags - 1 + sizeof usage - 1
                   && strcmp(p + len - (sizeof usage - 1), usage) == 0;
    if (!stale && !per_flag) {
        return 0;
    }
    if (!allowed(req, resp)) {
        return 1;
    }
    if (!cfg->usage_table[0]) {
        tm_resp_error(resp, 404, "usage aggregates are off (TM_USAGE_AGGREGATES=0)");
        return 1;
    }
    if (stale) {
        usage_stale(cfg, req, resp);
        return 1;
    }
    size_t nl = len - (sizeof flags - 1) - (sizeof usage - 1);
    char *flag = strndup(p + sizeof flags - 1, nl);
    if (!flag) {
        tm_resp_error(resp, 500, "out of memory");
        return 1;
    }
    flag_usage(cfg, flag, req, resp);
    free(flag);
    return 1;
}
