#include "tm_apikey.h"
#include "tm_hash.h"
#include "tm_log.h"
#include "tm_peer.h"
#include "tm_publish.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *auth_url;

/* Last use reported per key: a small table indexed by the hash's first
 * bytes; a collision only costs an extra report. */
enum { USE_SLOTS = 256, USE_PERIOD = 60 };
static struct {
    char hash[TM_SHA256_HEX_LEN + 1];
    time_t at;
} uses[USE_SLOTS];
static pthread_mutex_t uses_lock = PTHREAD_MUTEX_INITIALIZER;

static void note_use(const char *hash)
{
    time_t now = time(NULL);
    unsigned slot = (unsigned) strtoul((char[]) { hash[0], hash[1], '\0' }, NULL, 16) % USE_SLOTS;
    int report = 0;
    pthread_mutex_lock(&uses_lock);
    if (strcmp(uses[slot].hash, hash) != 0 || now - uses[slot].at >= USE_PERIOD) {
        memcpy(uses[slot].hash, hash, sizeof uses[slot].hash);
        uses[slot].at = now;
        report = 1;
    }
    pthread_mutex_unlock(&uses_lock);
    if (report) {
        tm_publish_key_used(hash, (long long) now);
    }
}

/* The route's needs against the key's scope (docs/environments.md). */
static int scope_allows(const tm_req *req, tm_resp *resp, tm_scope scope)
{
    int read = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    if (scope == TM_SCOPE_ADMIN || (read && scope == TM_SCOPE_READONLY)) {
        return 1;
    }
    tm_resp_error(resp, 403, "this route needs the %s scope; the key has %s",
                  read ? "admin or readonly" : "admin", tm_scope_name(scope));
    return 0;
}

void tm_apikey_init(const char *auth_service_url)
{
    auth_url = auth_service_url && *auth_service_url ? auth_service_url : NULL;
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

typedef struct {
    char buf[1024];
    size_t len;
} small_body;

/* Keeps the first bytes of /validate's answer (it is small). */
static size_t collect(char *p, size_t s, size_t n, void *u)
{
    small_body *b = u;
    size_t room = sizeof b->buf - 1 - b->len, take = s * n < room ? s * n : room;
    memcpy(b->buf + b->len, p, take);
    b->len += take;
    b->buf[b->len] = '\0';
    return s * n;
}

/* The scope /validate's 200 names; an auth daemon of the previous release
 * names none, and all its keys are admin keys. -1 when it names one we do
 * not know. */
static int validated_scope(const small_body *b, tm_scope *scope)
{
    json_t *j = json_loadb(b->buf, b->len, 0, NULL);
    json_t *s = json_object_get(j, "scope");
    int rc = 0;
    *scope = TM_SCOPE_ADMIN;
    if (json_is_string(s)) {
        rc = tm_scope_parse(json_string_value(s), json_string_length(s), scope);
    }
    json_decref(j);
    return rc;
}

/* 1 valid (*scope set), 0 invalid, -1 auth unreachable. */
static int ask_auth(const char *key, size_t len, tm_scope *scope)
{
    small_body body = { .len = 0 };
    char url[1024], hdr[600];
    snprintf(url, sizeof url, "%s/validate", auth_url);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %.*s", (int) len, key);
    struct curl_slist *h = curl_slist_append(NULL, hdr);
    if (h == NULL) {
        return -1;
    }
    long status;
    CURLcode rc = tm_peer_exchange(NULL, url, h, NULL, 2000L, 1000L, collect, &body, &status);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        TM_WARN("auth service unreachable at %s: %s", auth_url, curl_easy_strerror(rc));
        return -1;
    }
    if (status == 200) return validated_scope(&body, scope) == 0 ? 1 : 0;
    if (status == 401 || status == 403) return 0;
    return -1;
}

/* The hash of the key this thread's request was checked with (the HTTP
 * layer serves one request per thread at a time). */
static _Thread_local char checked[TM_SHA256_HEX_LEN + 1];

static void remember(const char *hash)
{
    memcpy(checked, hash, sizeof checked);
}

const char *tm_apikey_checked_hash(void)
{
    return checked[0] ? checked : NULL;
}

void tm_apikey_forget(void)
{
    checked[0] = '\0';
}

int tm_apikey_check(const tm_req *req, tm_resp *resp)
{
    tm_apikey_forget();
    size_t len;
    const char *key = tm_req_bearer(req, &len);
    if (key == NULL) {
        const char *x = tm_req_header(req, "X-API-Key");
        if (x && *x) {
            key = x;
            len = strlen(x);
        }
    }
    if (key == NULL) {
        tm_resp_error(resp, 401, "missing API key: send Authorization: Bearer <key>");
        return 0;
    }
    if (len > 512) {
        tm_resp_error(resp, 401, "invalid API key");
        return 0;
    }
    char hash[TM_SHA256_HEX_LEN + 1];
    tm_sha256_hex(key, len, hash);
    tm_scope scope;
    char env[128];
    int known = tm_publish_key_lookup(hash, &scope, env, sizeof env);
    if (known == 1) {
        note_use(hash);
        remember(hash);
        return scope_allows(req, resp, scope);
    }
    if (auth_url) {
        int v = ask_auth(key, len, &scope);
        if (v == 1) {
            note_use(hash);
            remember(hash);
            return scope_allows(req, resp, scope);
        }
        known = v == 0 ? 0 : -1;
    }
    if (known == 0) {
        tm_resp_error(resp, 401, "invalid API key");
    } else {
        tm_resp_error(resp, 503, "cannot check the API key right now: Redis and the auth service are unreachable");
    }
    return 0;
}
