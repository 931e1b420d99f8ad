#include "tm_peer.h"
#include "tm_buf.h"
#include "tm_log.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    tm_buf buf;
    int too_large;
} sink;

static size_t collect(char *p, size_t s, size_t n, void *u)
{
    sink *k = u;
    if (k->buf.len + s * n > TM_PEER_MAX_BODY) {
        k->too_large = 1;
        return 0;   /* curl stops: CURLE_WRITE_ERROR */
    }
    tm_buf_add(&k->buf, p, s * n);
    return tm_buf_ok(&k->buf) ? s * n : 0;
}

/* "Authorization: <the caller's value>", or from X-API-Key. */
static struct curl_slist *auth_header(const tm_req *req)
{
    const char *a = tm_req_header(req, "Authorization");
    const char *x = tm_req_header(req, "X-API-Key");
    tm_buf h = TM_BUF_INIT;
    if (a) {
        tm_buf_addf(&h, "Authorization: %s", a);
    } else if (x) {
        tm_buf_addf(&h, "X-API-Key: %s", x);
    }
    char *line = tm_buf_steal(&h);
    struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *l2 = l && line ? curl_slist_append(l, line) : l;
    free(line);
    return l2;
}

CURLcode tm_peer_exchange(const char *method, const char *url, struct curl_slist *headers,
                          const char *body, long timeout_ms, long connect_ms,
                          curl_write_callback write, void *ud, long *status)
{
    *status = 0;
    CURL *c = curl_easy_init();
    if (c == NULL) {
        return CURLE_OUT_OF_MEMORY;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (method) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, ud);
    CURLcode cc = curl_easy_perform(c);
    if (cc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    }
    curl_easy_cleanup(c);
    return cc;
}

int tm_peer_call(const tm_req *req, const char *method, const char *base, const char *path,
                 const json_t *body, tm_peer_resp *out)
{
    out->status = 0;
    out->json = NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    tm_buf url = TM_BUF_INIT;
    tm_buf_addf(&url, "%s%s", base, path);
    char *u = tm_buf_steal(&url);
    struct curl_slist *h = auth_header(req);
    sink k = { TM_BUF_INIT, 0 };
    int rc = -1;
    if (u && h && (body == NULL || text)) {
        CURLcode cc = tm_peer_exchange(method, u, h, text, 10000L, 2000L, collect, &k, &out->status);
        if (cc == CURLE_OK) {
            out->json = k.buf.len ? json_loadb(k.buf.p, k.buf.len, 0, NULL) : NULL;
            rc = 0;
        } else {
            TM_WARN("peer %s %s: %s", method, base,
                    k.too_large ? "answer too large" : curl_easy_strerror(cc));
        }
    }
    tm_buf_free(&k.buf);
    curl_slist_free_all(h);
    free(u);
    free(text);
    return rc;
}

void tm_peer_resp_free(tm_peer_resp *r)
{
    json_decref(r->json);
    r->json = NULL;
}

const char *tm_peer_error(const tm_peer_resp *r)
{
    const char *e = json_string_value(json_object_get(r->json, "error"));
    return e ? e : r->status ? "no message" : "unreachable";
}
