#include "aws_client.h"
#include "metrics.h"
#include "tm_log.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- credentials -------------------------------------------------------- */

static struct {
    pthread_mutex_t lock;
    tm_aws_creds cur;
    tm_aws_creds_source source;
    char region[64];
    time_t next_try;     /* after a failed refresh, wait before the next */
} creds = { .lock = PTHREAD_MUTEX_INITIALIZER };

static char *read_file_trimmed(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    char *buf = malloc(65536);
    size_t n = buf ? fread(buf, 1, 65535, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return NULL;
    }
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) {
        n--;
    }
    buf[n] = '\0';
    return buf;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    tmw_http *h = ud;
    size_t n = size * nmemb;
    if (h->body_len + n > 16 * 1024 * 1024) {
        return 0; /* no AWS reply we use is that large */
    }
    char *nb = realloc(h->body, h->body_len + n + 1);
    if (!nb) {
        return 0;
    }
    memcpy(nb + h->body_len, data, n);
    h->body = nb;
    h->body_len += n;
    nb[h->body_len] = '\0';
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    tmw_http *h = ud;
    size_t n = size * nmemb;
    static const char name[] = "x-amzn-query-error:";
    if (n > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
        const char *v = data + sizeof name - 1;
        size_t vl = n - (sizeof name - 1);
        while (vl && (*v == ' ' || *v == '\t')) {
            v++;
            vl--;
        }
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' ')) {
            vl--;
        }
        if (vl >= sizeof h->query_error) {
            vl = sizeof h->query_error - 1;
        }
        memcpy(h->query_error, v, vl);
        h->query_error[vl] = '\0';
    }
    return n;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void) dt; (void) dn; (void) ut; (void) un;
    const atomic_int *flag = ud;
    return flag && atomic_load(flag) ? 1 : 0;
}

static void reset(tmw_http *h)
{
    free(h->body);
    h->body = NULL;
    h->body_len = 0;
    h->status = 0;
    h->query_error[0] = '\0';
    h->curl_error[0] = '\0';
}

/* Plain http carries the container token only to the addresses
 * tm_aws_container_addr_ok allows; checked on the address curl is about to
 * connect to, so a host name, a redirect of DNS or "user@host" in the URL
 * cannot lead it elsewhere. */
static curl_socket_t open_local_only(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void) ud;
    if (purpose != CURLSOCKTYPE_IPCXN || !tm_aws_container_addr_ok(&a->addr)) {
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype, a->protocol);
}

/* One plain HTTP exchange (credentials fetches and AWS calls alike). */
static int perform(tmw_http *h, const char *method, const char *url,
                   struct curl_slist *headers, const char *body, size_t body_len,
                   long timeout_s, int abortable)
{
    CURL *c = h->curl;
    reset(h);
    curl_easy_reset(c);
    int ok = curl_easy_setopt(c, CURLOPT_URL, url) == CURLE_OK
        && curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK
        && curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L) == CURLE_OK
        && curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s) == CURLE_OK
        && curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers) == CURLE_OK
        && curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK
        && curl_easy_setopt(c, CURLOPT_WRITEDATA, h) == CURLE_OK
        && curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK
        && curl_easy_setopt(c, CURLOPT_HEADERDATA, h) == CURLE_OK
        && curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->curl_error) == CURLE_OK
        && curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
    if (ok && strcmp(method, "POST") == 0) {
        ok = curl_easy_setopt(c, CURLOPT_POST, 1L) == CURLE_OK
             && curl_easy_setopt(c, CURLOPT_POSTFIELDS, body) == CURLE_OK
             && curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_len) == CURLE_OK;
    }
    if (ok && h->local_only) {
        /* no proxy either: it would carry the token on */
        ok = curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_local_only) == CURLE_OK
             && curl_easy_setopt(c, CURLOPT_PROXY, "") == CURLE_OK
             && curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, 1L) == CURLE_OK
             && curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
    }
    if (ok && abortable && h->abort_flag) {
        ok = curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress) == CURLE_OK
             && curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *) h->abort_flag) == CURLE_OK
             && curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) == CURLE_OK;
    }
    if (!ok) {
        snprintf(h->curl_error, sizeof h->curl_error, "curl setup failed");
        return -1;
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        if (!h->curl_error[0]) {
            snprintf(h->curl_error, sizeof h->curl_error, "%s", curl_easy_strerror(rc));
        }
        h->status = 0;
        return -1;
    }
    if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &h->status) != CURLE_OK) {
        h->status = 0;
        return -1;
    }
    if (!h->body) {
        h->body = calloc(1, 1);
        if (!h->body) {
            return -1;
        }
    }
    return 0;
}

int tmw_http_init(tmw_http *h, const atomic_int *abort_flag)
{
    memset(h, 0, sizeof *h);
    h->abort_flag = abort_flag;
    h->curl = curl_easy_init();
    return h->curl ? 0 : -1;
}

void tmw_http_cleanup(tmw_http *h)
{
    if (h->curl) {
        curl_easy_cleanup(h->curl);
    }
    free(h->body);
    memset(h, 0, sizeof *h);
}

/* Container credentials (EKS Pod Identity, ECS): the rules of lib/tm_aws,
 * as the nginx module applies them. */
static int fetch_container(tmw_http *h, tm_aws_creds *out, char *err, size_t errlen)
{
    char url[2048];
    if (tm_aws_container_url(getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
                             getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
                             url, sizeof url, err, errlen) != 0) {
        return -1;
    }
    char *token = NULL;
    const char *tf = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    if (tf && *tf) {
        token = read_file_trimmed(tf);
        if (!token) {
            snprintf(err, errlen, "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %s", tf);
            return -1;
        }
    } else if (getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN")) {
        token = strdup(getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
        if (!token) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    if (token && !tm_aws_header_value_ok(token, strlen(token))) {
        free(token);
        snprintf(err, errlen, "the container authorization token holds a line break");
        return -1;
    }
    h->local_only = strncasecmp(url, "https://", 8) != 0;
    struct curl_slist *hs = NULL;
    char *auth = NULL;
    if (token) {
        size_t n = strlen(token) + 32;
        auth = malloc(n);
        if (!auth) {
            free(token);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        snprintf(auth, n, "Authorization: %s", token);
        struct curl_slist *t = curl_slist_append(hs, auth);
        if (!t) {
            free(auth);
            free(token);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        hs = t;
    }
    int rc = perform(h, "GET", url, hs, NULL, 0, 10, 0);
    h->local_only = 0;
    curl_slist_free_all(hs);
    free(auth);
    free(token);
    if (rc != 0 || h->status != 200) {
        snprintf(err, errlen, "container credentials from %s: HTTP %ld %s%s", url, h->status,
                 h->curl_error, rc != 0 && strstr(url, "https://") != url
                 ? " (plain http goes only to loopback, 169.254.170.2, 169.254.170.23"
                   " or fd00:ec2::23)" : "");
        return -1;
    }
    return tm_aws_creds_parse_container(h->body, h->body_len, out, err, errlen);
}

/* IRSA: AssumeRoleWithWebIdentity with the projected token, unsigned. */
static int fetch_web_identity(tmw_http *h, tm_aws_creds *out, char *err, size_t errlen)
{
    const char *tf = getenv("AWS_WEB_IDENTITY_TOKEN_FILE"), *role = getenv("AWS_ROLE_ARN");
    const char *sess = getenv("AWS_ROLE_SESSION_NAME");
    char session[64];
    if (sess && *sess) {
        snprintf(session, sizeof session, "%s", sess);
    } else {
        snprintf(session, sizeof session, "togglemaster-analytics-%ld", (long) getpid());
    }
    tm_aws_endpoint ep;
    if (tm_aws_endpoint_resolve(&ep, "sts", creds.region, NULL, err, errlen) != 0) {
        return -1;
    }
    char *token = tf ? read_file_trimmed(tf) : NULL;
    if (!token) {
        snprintf(err, errlen, "cannot read AWS_WEB_IDENTITY_TOKEN_FILE %s", tf ? tf : "(unset)");
        return -1;
    }
    char *form = tm_aws_sts_web_identity_form(role, session, token);
    free(token);
    if (!form) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/x-www-form-urlencoded");
    if (!hs) {
        free(form);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = perform(h, "POST", ep.url, hs, form, strlen(form), 15, 0);
    curl_slist_free_all(hs);
    free(form);
    if (rc != 0 || h->status != 200) {
        tm_aws_error e;
        tm_aws_parse_error(h->status, h->body, h->body_len, NULL, &e);
        snprintf(err, errlen, "STS AssumeRoleWithWebIdentity: %s %s %s", e.code, e.message,
                 h->curl_error);
        return -1;
    }
    return tm_aws_creds_parse_sts(h->body, h->body_len, out, err, errlen);
}

/* Called with the lock held. */
static int refresh_locked(char *err, size_t errlen)
{
    time_t now = time(NULL);
    if (now < creds.next_try) {
        snprintf(err, errlen, "waiting before the next credentials refresh");
        return -1;
    }
    tmw_http h;
    if (tmw_http_init(&h, NULL) != 0) {
        snprintf(err, errlen, "curl init failed");
        return -1;
    }
    tm_aws_creds fresh = { 0 };
    int rc = creds.source == TM_AWS_CREDS_CONTAINER ? fetch_container(&h, &fresh, err, errlen)
                                                    : fetch_web_identity(&h, &fresh, err, errlen);
    tmw_http_cleanup(&h);
    if (rc != 0) {
        creds.next_try = now + 5;
        tm_aws_creds_free(&fresh);
        return -1;
    }
    tm_aws_creds_free(&creds.cur);
    creds.cur = fresh;
    TM_INFO("AWS credentials refreshed from %s (key %.4s..., expires in %lds)",
            tm_aws_creds_source_name(creds.source), creds.cur.access_key,
            creds.cur.expires ? (long) (creds.cur.expires - now) : -1L);
    return 0;
}

int tmw_creds_init(const char *region, int emulator, char *err, size_t errlen)
{
    snprintf(creds.region, sizeof creds.region, "%s", region);
    creds.source = tm_aws_creds_detect();
    switch (creds.source) {
    case TM_AWS_CREDS_ENV:
        return tm_aws_creds_from_env(&creds.cur, err, errlen);
    case TM_AWS_CREDS_WEB_IDENTITY:
    case TM_AWS_CREDS_CONTAINER:
        if (pthread_mutex_lock(&creds.lock) != 0) {
            snprintf(err, errlen, "mutex");
            return -1;
        }
        if (refresh_locked(err, errlen) != 0) {
            /* Not fatal: the pollers retry, and /health/ready says so. */
            TM_WARN("AWS credentials from %s not available yet: %s",
                    tm_aws_creds_source_name(creds.source), err);
        }
        pthread_mutex_unlock(&creds.lock);
        return 0;
    case TM_AWS_CREDS_NONE:
    case TM_AWS_CREDS_STATIC:
        break;
    }
    if (emulator) {
        /* Emulators accept any keys; they read region and account from them. */
        TM_WARN("no AWS credentials in the environment; using dummy keys for the emulator");
        creds.source = TM_AWS_CREDS_STATIC;
        if (tm_aws_creds_set(&creds.cur, TM_AWS_CREDS_STATIC, "test", "test", NULL, 0) != 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    snprintf(err, errlen, "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
             "or AWS_WEB_IDENTITY_TOKEN_FILE+AWS_ROLE_ARN (IRSA), or "
             "AWS_CONTAINER_CREDENTIALS_FULL_URI (Pod Identity)");
    return -1;
}

int tmw_creds_get(tm_aws_creds *copy)
{
    memset(copy, 0, sizeof *copy);
    if (pthread_mutex_lock(&creds.lock) != 0) {
        return -1;
    }
    time_t now = time(NULL);
    if ((creds.source == TM_AWS_CREDS_WEB_IDENTITY || creds.source == TM_AWS_CREDS_CONTAINER)
        && tm_aws_creds_stale(&creds.cur, now)) {
        char err[512];
        if (refresh_locked(err, sizeof err) != 0 && now < creds.next_try - 4) {
            TM_WARN("AWS credentials refresh failed: %s", err);
        }
    }
    int rc = -1;
    /* Keys past their expiry are useless; keys inside the margin still work. */
    if (creds.cur.access_key && (!creds.cur.expires || creds.cur.expires > now)) {
        rc = tm_aws_creds_set(copy, creds.cur.source, creds.cur.access_key,
                              creds.cur.secret_key, creds.cur.session_token, creds.cur.expires);
    }
    pthread_mutex_unlock(&creds.lock);
    return rc;
}

void tmw_creds_shutdown(void)
{
    if (pthread_mutex_lock(&creds.lock) == 0) {
        tm_aws_creds_free(&creds.cur);
        pthread_mutex_unlock(&creds.lock);
    }
}

/* ---- signed calls --------------------------------------------------------- */

int tmw_aws_call(tmw_http *h, const tm_aws_endpoint *ep, const char *op, char *body,
                 long timeout_s, int abortable, tm_aws_error *e)
{
    char err[256];
    tm_aws_creds c;
    if (tmw_creds_get(&c) != 0) {
        free(body);
        reset(h);
        tm_aws_parse_error(0, NULL, 0, NULL, e);
        snprintf(e->code, sizeof e->code, "NoCredentials");
        snprintf(e->message, sizeof e->message, "no usable AWS credentials");
        return -1;
    }
    tm_aws_request r;
    int rc = tm_aws_json_request(&r, ep, &c, op, body, time(NULL), err, sizeof err);
    tm_aws_creds_free(&c);
    if (rc != 0) {
        reset(h);
        tm_aws_parse_error(0, NULL, 0, NULL, e);
        e->retryable = 0;
        snprintf(e->code, sizeof e->code, "RequestBuild");
        snprintf(e->message, sizeof e->message, "%s", err);
        return -1;
    }
    struct curl_slist *hs = NULL;
    for (size_t i = 0; i < r.nheaders; i++) {
        struct curl_slist *t = curl_slist_append(hs, r.headers[i]);
        if (!t) {
            curl_slist_free_all(hs);
            tm_aws_request_free(&r);
            tm_aws_parse_error(0, NULL, 0, NULL, e);
            snprintf(e->message, sizeof e->message, "out of memory");
            return -1;
        }
        hs = t;
    }
    /* libcurl would add "Expect: 100-continue" to larger bodies: a round trip for nothing. */
    struct curl_slist *t = curl_slist_append(hs, "Expect:");
    if (t) {
        hs = t;
    }
    if (strcmp(ep->signing_name, "sqs") == 0) {
        TMW_INC(sqs_requests, 1);
    } else if (strcmp(ep->signing_name, "dynamodb") == 0) {
        TMW_INC(dynamodb_requests, 1);
    }
    rc = perform(h, "POST", r.url, hs, r.body, r.body_len, timeout_s, abortable);
    curl_slist_free_all(hs);
    tm_aws_request_free(&r);
    if (rc == 0 && h->status >= 200 && h->status < 300) {
        return 0;
    }
    tm_aws_parse_error(h->status, h->body, h->body_len, h->query_error, e);
    if (h->status == 0 && h->curl_error[0]) {
        snprintf(e->message, sizeof e->message, "%s", h->curl_error);
    }
    return -1;
}
