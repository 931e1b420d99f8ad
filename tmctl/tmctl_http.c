#include "tmctl_http.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t tmctl_http_interrupted;

static CURL *curl;
static struct curl_slist *headers;
static long timeout_s = 30;
static int max_retries;
static unsigned jitter_seed;

/* A Retry-After beyond this is not waited for: the answer is returned. */
#define RETRY_AFTER_MAX 60
#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS 8000

int tmctl_http_init(const char *key, long timeout, int retries)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "tmctl: cannot initialise libcurl\n");
        return -1;
    }
    curl = curl_easy_init();
    if (curl == NULL) {
        fprintf(stderr, "tmctl: cannot initialise libcurl\n");
        return -1;
    }
    timeout_s = timeout;
    max_retries = retries;
    /* jitter only spreads clients apart: time and pid are random enough */
    jitter_seed = (unsigned) time(NULL) ^ ((unsigned) getpid() << 16);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (h) {
        headers = h;
        h = curl_slist_append(headers, "Accept: application/json");
    }
    if (h && key) {
        size_t n = strlen("Authorization: Bearer ") + strlen(key) + 1;
        char *line = malloc(n);
        if (line == NULL) {
            h = NULL;
        } else {
            snprintf(line, n, "Authorization: Bearer %s", key);
            h = curl_slist_append(headers, line);
            /* the copy curl keeps is freed with the list; wipe ours */
            memset(line, 0, n);
            free(line);
        }
    }
    if (h == NULL) {
        fprintf(stderr, "tmctl: out of memory\n");
        return -1;
    }
    return 0;
}

void tmctl_http_cleanup(void)
{
    if (curl) {
        curl_easy_cleanup(curl);
        curl = NULL;
    }
    curl_slist_free_all(headers);
    headers = NULL;
    curl_global_cleanup();
}

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} sink;

static size_t on_data(char *data, size_t size, size_t nmemb, void *ud)
{
    sink *s = ud;
    size_t n = size * nmemb;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n + 1) {
            cap *= 2;
        }
        char *p = realloc(s->p, cap);
        if (p == NULL) {
            s->failed = 1;
            return 0;   /* curl stops with CURLE_WRITE_ERROR */
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, data, n);
    s->len += n;
    s->p[s->len] = '\0';
    return n;
}

/* One exchange. 0 with *r filled and *retry_after the server's Retry-After
 * in seconds (-1: none), or -1 (message on stderr). */
static int send_once(const char *method, const char *url, const char *text, tmctl_resp *r,
                     long *retry_after)
{
    memset(r, 0, sizeof *r);
    *retry_after = -1;
    sink s = { NULL, 0, 0, 0 };
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_reset(curl);
    int bad = curl_easy_setopt(curl, CURLOPT_URL, url) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_WRITEDATA, &s) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout_s) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, timeout_s < 10 ? timeout_s : 10L) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK
        || (text && (curl_easy_setopt(curl, CURLOPT_POSTFIELDS, text) != CURLE_OK
                     || curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) strlen(text)) != CURLE_OK))
        || (strcmp(method, "HEAD") == 0 && curl_easy_setopt(curl, CURLOPT_NOBODY, 1L) != CURLE_OK);
    CURLcode rc = bad ? CURLE_FAILED_INIT : curl_easy_perform(curl);
    if (rc != CURLE_OK) {
        fprintf(stderr, "tmctl: %s %s: %s\n", method, url,
                s.failed ? "out of memory" : errbuf[0] ? errbuf : curl_easy_strerror(rc));
        free(s.p);
        return -1;
    }
    curl_off_t after = 0;
    if (curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status) != CURLE_OK) {
        r->status = 0;
    }
    /* libcurl reads both forms (seconds, HTTP date); 0 when absent */
    if (curl_easy_getinfo(curl, CURLINFO_RETRY_AFTER, &after) == CURLE_OK && after > 0) {
        *retry_after = after > RETRY_AFTER_MAX ? RETRY_AFTER_MAX + 1 : (long) after;
    }
    if (s.p == NULL) {
        s.p = strdup("");
        if (s.p == NULL) {
            fprintf(stderr, "tmctl: out of memory\n");
            return -1;
        }
    }
    r->body = s.p;
    r->len = s.len;
    r->json = s.len ? json_loadb(s.p, s.len, JSON_DECODE_ANY, NULL) : NULL;
    return 0;
}

/* How long to wait before retry number n (1, 2, ...): the server's
 * Retry-After, else the backoff for n, plus up to half of it at random.
 * -1: do not retry (the server asked for longer than we wait). */
static long retry_wait_ms(int n, long retry_after)
{
    long base;
    if (retry_after > RETRY_AFTER_MAX) {
        return -1;
    }
    if (retry_after >= 0) {
        base = retry_after * 1000;
    } else {
        base = BACKOFF_FIRST_MS;
        for (int i = 1; i < n && base < BACKOFF_MAX_MS; i++) {
            base *= 2;
        }
        if (base > BACKOFF_MAX_MS) {
            base = BACKOFF_MAX_MS;
        }
    }
    long spread = base / 2 > 100 ? base / 2 : 100;
    return base + (long) (rand_r(&jitter_seed) % (spread + 1));
}

static void sleep_ms(long ms)
{
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&t, &t) != 0 && errno == EINTR && !tmctl_http_interrupted) {
        /* the rest of the wait */
    }
}

int tmctl_http(const char *method, const char *url, const json_t *body, tmctl_resp *r)
{
    char *text = NULL;
    if (body) {
        text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15));
        if (text == NULL) {
            memset(r, 0, sizeof *r);
            fprintf(stderr, "tmctl: out of memory\n");
            return -1;
        }
    }
    int rc;
    for (int n = 1;; n++) {
        long retry_after;
        rc = send_once(method, url, text, r, &retry_after);
        if (rc != 0 || (r->status != 429 && r->status != 503) || n > max_retries
            || tmctl_http_interrupted) {
            break;
        }
        long ms = retry_wait_ms(n, retry_after);
        if (ms < 0) {
            break;
        }
        fprintf(stderr, "tmctl: %s %s: %ld, retrying in %.1f s (%d of %d)\n", method, url,
                r->status, ms / 1000.0, n, max_retries);
        sleep_ms(ms);
        if (tmctl_http_interrupted) {
            break;   /* with the answer that made us wait */
        }
        tmctl_resp_free(r);
    }
    free(text);
    return rc;
}

void tmctl_resp_free(tmctl_resp *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

void tmctl_api_error(const char *what, const tmctl_resp *r)
{
    const char *msg = NULL, *code = NULL;
    if (json_is_object(r->json)) {
        msg = json_string_value(json_object_get(r->json, "error"));
        if (msg == NULL) {   /* OFREP: {"errorCode","errorDetails"} */
            code = json_string_value(json_object_get(r->json, "errorCode"));
            msg = json_string_value(json_object_get(r->json, "errorDetails"));
        }
    }
    if (msg || code) {
        fprintf(stderr, "tmctl: %s: %ld %s%s%s\n", what, r->status, code ? code : "",
                code && msg ? ": " : "", msg ? msg : "");
    } else {
        /* not one of ours (a proxy's page?): its first line, cut short */
        int n = 0;
        while (n < 200 && r->body && r->body[n] && r->body[n] != '\n' && r->body[n] != '\r') {
            n++;
        }
        fprintf(stderr, "tmctl: %s: HTTP %ld%s%.*s\n", what, r->status, n ? " " : "", n,
                r->body ? r->body : "");
    }
}
