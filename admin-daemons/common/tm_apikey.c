#include "tm_apikey.h"
#include "tm_hash.h"
#include "tm_log.h"
#include "tm_publish.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *auth_url;

void tm_apikey_init(const char *auth_service_url)
{
    auth_url = auth_service_url && *auth_service_url ? auth_service_url : NULL;
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void) p; (void) u;
    return s * n;
}

/* 1 valid, 0 invalid, -1 auth unreachable. */
static int ask_auth(const char *key, size_t len)
{
    CURL *c = curl_easy_init();
    if (c == NULL) {
        return -1;
    }
    char url[1024], hdr[600];
    snprintf(url, sizeof url, "%s/validate", auth_url);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %.*s", (int) len, key);
    struct curl_slist *h = curl_slist_append(NULL, hdr);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        TM_WARN("auth service unreachable at %s: %s", auth_url, curl_easy_strerror(rc));
        return -1;
    }
    if (status == 200) return 1;
    if (status == 401 || status == 403) return 0;
    return -1;
}

int tm_apikey_check(const tm_req *req, tm_resp *resp)
{
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
    int known = tm_publish_key_known(hash);
    if (known == 1) {
        return 1;
    }
    if (auth_url) {
        int v = ask_auth(key, len);
        if (v == 1) return 1;
        if (v == 0) known = 0;
        else known = -1;
    }
    if (known == 0) {
        tm_resp_error(resp, 401, "invalid API key");
    } else {
        tm_resp_error(resp, 503, "cannot check the API key right now: Redis and the auth service are unreachable");
    }
    return 0;
}
