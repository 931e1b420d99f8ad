#include "tm_aws.h"
#include "tm_buf.h"
#include "tm_sigv4.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s", msg);
    }
    return -1;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static void copy(char *dst, size_t n, const char *src, size_t len)
{
    if (n == 0) {
        return;
    }
    if (len >= n) {
        len = n - 1;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* ---- credentials ------------------------------------------------------ */

tm_aws_creds_source tm_aws_creds_detect(void)
{
    if (env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY")) {
        return TM_AWS_CREDS_ENV;
    }
    if (env("AWS_WEB_IDENTITY_TOKEN_FILE") && env("AWS_ROLE_ARN")) {
        return TM_AWS_CREDS_WEB_IDENTITY;
    }
    if (env("AWS_CONTAINER_CREDENTIALS_FULL_URI") || env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")) {
        return TM_AWS_CREDS_CONTAINER;
    }
    return TM_AWS_CREDS_NONE;
}

const char *tm_aws_creds_source_name(tm_aws_creds_source s)
{
    switch (s) {
    case TM_AWS_CREDS_ENV: return "environment";
    case TM_AWS_CREDS_WEB_IDENTITY: return "web identity (IRSA)";
    case TM_AWS_CREDS_CONTAINER: return "container credentials";
    case TM_AWS_CREDS_STATIC: return "static";
    case TM_AWS_CREDS_NONE: break;
    }
    return "none";
}

/* ---- container credentials endpoint ------------------------------------ */

int tm_aws_container_url(const char *full, const char *relative, char *url,
                         size_t size, char *err, size_t errlen)
{
    int n;
    if (full && *full) {
        n = snprintf(url, size, "%s", full);
    } else if (relative && *relative) {
        while (*relative == '/') {
            relative++;
        }
        n = snprintf(url, size, "%s/%s", TM_AWS_CONTAINER_HOST, relative);
    } else {
        return fail(err, errlen, "neither AWS_CONTAINER_CREDENTIALS_FULL_URI nor "
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is set");
    }
    if (n < 0 || (size_t) n >= size) {
        return fail(err, errlen, "container credentials URI too long");
    }
    for (const char *p = url; *p; p++) {
        if ((unsigned char) *p <= ' ' || *p == 0x7f) {
            return fail(err, errlen, "container credentials URI holds a space "
                        "or a control character");
        }
    }
    return 0;
}

int tm_aws_container_addr_ok(const void *addr)
{
    static const unsigned char eks6[16] = { 0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0,
                                            0, 0, 0, 0, 0, 0, 0, 0x23 };
    const struct sockaddr *sa = addr;
    if (sa == NULL) {
        return 0;
    }
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;
        memcpy(&sin, sa, sizeof sin);
        uint32_t a = ntohl(sin.sin_addr.s_addr);
        return (a >> 24) == 127 || a == 0xa9feaa02u || a == 0xa9feaa17u;
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, sa, sizeof sin6);
        return IN6_IS_ADDR_LOOPBACK(&sin6.sin6_addr)
               || memcmp(&sin6.sin6_addr, eks6, sizeof eks6) == 0;
    }
    return 0;
}

int tm_aws_header_value_ok(const char *v, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0') {
            return 0;
        }
    }
    return 1;
}

void tm_aws_creds_free(tm_aws_creds *c)
{
    if (!c) {
        return;
    }
    if (c->secret_key) {
        OPENSSL_cleanse(c->secret_key, strlen(c->secret_key));
    }
    free(c->access_key);
    free(c->secret_key);
    free(c->session_token);
    memset(c, 0, sizeof *c);
}

int tm_aws_creds_set(tm_aws_creds *c, tm_aws_creds_source src, const char *ak,
                     const char *sk, const char *token, time_t expires)
{
    tm_aws_creds n = { 0 };
    n.access_key = strdup(ak);
    n.secret_key = strdup(sk);
    n.session_token = token && *token ? strdup(token) : NULL;
    n.expires = expires;
    n.source = src;
    if (!n.access_key || !n.secret_key || (token && *token && !n.session_token)) {
        tm_aws_creds_free(&n);
        return -1;
    }
    tm_aws_creds_free(c);
    *c = n;
    return 0;
}

int tm_aws_creds_from_env(tm_aws_creds *c, char *err, size_t errlen)
{
    const char *ak = env("AWS_ACCESS_KEY_ID"), *sk = env("AWS_SECRET_ACCESS_KEY");
    if (!ak || !sk) {
        return fail(err, errlen, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set");
    }
    if (tm_aws_creds_set(c, TM_AWS_CREDS_ENV, ak, sk, env("AWS_SESSION_TOKEN"), 0) != 0) {
        return fail(err, errlen, "out of memory");
    }
    return 0;
}

int tm_aws_creds_stale(const tm_aws_creds *c, time_t now)
{
    if (!c->access_key || !c->secret_key) {
        return 1;
    }
    return c->expires != 0 && now + TM_AWS_CREDS_REFRESH_MARGIN >= c->expires;
}

time_t tm_aws_parse_time(const char *s)
{
    int y, mo, d, h, mi, sec, n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6
        || n != 19) {
        return -1;
    }
    const char *p = s + n;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char) *p)) {
            p++;
        }
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, m = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &m) != 2 || m != 5) {
            return -1;
        }
        off = (oh * 3600L + om * 60L) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) {
        return -1;
    }
    struct tm tm = { 0 };
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    return t == (time_t) -1 ? -1 : t - off;
}

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static int creds_from_json(const json_t *o, const char *token_key, tm_aws_creds *c,
                           tm_aws_creds_source src, char *err, size_t errlen)
{
    const char *ak = jstr(o, "AccessKeyId"), *sk = jstr(o, "SecretAccessKey");
    const char *tok = jstr(o, token_key);
    if (!ak || !sk || !*ak || !*sk) {
        return fail(err, errlen, "credentials reply without AccessKeyId/SecretAccessKey");
    }
    json_t *ex = json_object_get(o, "Expiration");
    time_t expires = 0;
    if (json_is_string(ex)) {
        expires = tm_aws_parse_time(json_string_value(ex));
    } else if (json_is_number(ex)) {
        expires = (time_t) json_number_value(ex);
    }
    if (expires < 0) {
        return fail(err, errlen, "credentials reply with a bad Expiration");
    }
    if (tm_aws_creds_set(c, src, ak, sk, tok, expires) != 0) {
        return fail(err, errlen, "out of memory");
    }
    return 0;
}

int tm_aws_creds_parse_container(const char *body, size_t len, tm_aws_creds *c,
                                 char *err, size_t errlen)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return fail(err, errlen, "container credentials reply is not a JSON object");
    }
    int rc = creds_from_json(j, "Token", c, TM_AWS_CREDS_CONTAINER, err, errlen);
    json_decref(j);
    return rc;
}

/* The text of <tag>...</tag> in an XML reply, entities decoded. */
static char *xml_text(const char *body, size_t len, const char *tag)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *a = memmem(body, len, open, strlen(open));
    if (!a) {
        return NULL;
    }
    a += strlen(open);
    const char *b = memmem(a, len - (size_t) (a - body), close, strlen(close));
    if (!b) {
        return NULL;
    }
    static const struct { const char *ent, *ch; } ents[] = {
        { "&amp;", "&" }, { "&lt;", "<" }, { "&gt;", ">" }, { "&quot;", "\"" }, { "&apos;", "'" }
    };
    tm_buf out = TM_BUF_INIT;
    while (a < b) {
        size_t i, k = sizeof ents / sizeof ents[0];
        if (*a == '&') {
            for (i = 0; i < k; i++) {
                size_t el = strlen(ents[i].ent);
                if ((size_t) (b - a) >= el && memcmp(a, ents[i].ent, el) == 0) {
                    tm_buf_adds(&out, ents[i].ch);
                    a += el;
                    break;
                }
            }
            if (i < k) {
                continue;
            }
        }
        tm_buf_addc(&out, *a++);
    }
    return tm_buf_steal(&out);
}

int tm_aws_creds_parse_sts(const char *body, size_t len, tm_aws_creds *c,
                           char *err, size_t errlen)
{
    size_t i = 0;
    while (i < len && isspace((unsigned char) body[i])) {
        i++;
    }
    if (i < len && body[i] == '{') {
        json_t *j = json_loadb(body, len, 0, NULL);
        json_t *cr = json_object_get(json_object_get(json_object_get(j,
                     "AssumeRoleWithWebIdentityResponse"), "AssumeRoleWithWebIdentityResult"),
                     "Credentials");
        int rc = json_is_object(cr)
                 ? creds_from_json(cr, "SessionToken", c, TM_AWS_CREDS_WEB_IDENTITY, err, errlen)
                 : fail(err, errlen, "STS reply without Credentials");
        json_decref(j);
        return rc;
    }
    char *ak = xml_text(body, len, "AccessKeyId"), *sk = xml_text(body, len, "SecretAccessKey");
    char *tok = xml_text(body, len, "SessionToken"), *ex = xml_text(body, len, "Expiration");
    int rc = 0;
    time_t expires = ex ? tm_aws_parse_time(ex) : 0;
    if (!ak || !sk || !*ak || !*sk) {
        rc = fail(err, errlen, "STS reply without AccessKeyId/SecretAccessKey");
    } else if (expires < 0) {
        rc = fail(err, errlen, "STS reply with a bad Expiration");
    } else if (tm_aws_creds_set(c, TM_AWS_CREDS_WEB_IDENTITY, ak, sk, tok, expires) != 0) {
        rc = fail(err, errlen, "out of memory");
    }
    if (sk) {
        OPENSSL_cleanse(sk, strlen(sk));
    }
    free(ak);
    free(sk);
    free(tok);
    free(ex);
    return rc;
}

char *tm_aws_sts_web_identity_form(const char *role_arn, const char *session_name,
                                   const char *token)
{
    if (!role_arn || !session_name || !token) {
        return NULL;
    }
    const char *keys[] = { "RoleArn", "RoleSessionName", "WebIdentityToken" };
    const char *vals[] = { role_arn, session_name, token };
    tm_buf b = TM_BUF_INIT;
    tm_buf_adds(&b, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15");
    for (int i = 0; i < 3; i++) {
        char *e = tm_sigv4_uri_encode(vals[i], strlen(vals[i]), 0);
        if (!e) {
            tm_buf_free(&b);
            return NULL;
        }
        tm_buf_addf(&b, "&%s=%s", keys[i], e);
        free(e);
    }
    return tm_buf_steal(&b);
}

/* ---- endpoints --------------------------------------------------------- */

int tm_aws_url_split(const char *url, char *scheme, size_t slen, char *host,
                     size_t hlen, char *path, size_t plen)
{
    const char *p;
    if (strncmp(url, "https://", 8) == 0) {
        copy(scheme, slen, "https", 5);
        p = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        copy(scheme, slen, "http", 4);
        p = url + 7;
    } else {
        return -1;
    }
    size_t hl = strcspn(p, "/?#");
    if (hl == 0 || hl >= hlen) {
        return -1;
    }
    for (size_t i = 0; i < hl; i++) {
        if (p[i] == '@' || isspace((unsigned char) p[i])) {
            return -1;
        }
    }
    copy(host, hlen, p, hl);
    const char *rest = p + hl;
    size_t rl = *rest == '/' ? strcspn(rest, "?#") : 0;
    if (rl >= plen) {
        return -1;
    }
    if (rl == 0) {
        copy(path, plen, "/", 1);
    } else {
        copy(path, plen, rest, rl);
    }
    return 0;
}

static int is_aws_host(const char *host)
{
    size_t hl = strcspn(host, ":");
    static const char *const suffixes[] = { ".amazonaws.com", ".amazonaws.com.cn", ".api.aws", NULL };
    for (const char *const *s = suffixes; *s; s++) {
        size_t sl = strlen(*s);
        if (hl >= sl && strncmp(host + hl - sl, *s, sl) == 0) {
            return 1;
        }
    }
    return 0;
}

void tm_aws_region(const char *hint_url, char *out, size_t outlen)
{
    const char *r = env("AWS_REGION");
    if (!r) {
        r = env("AWS_DEFAULT_REGION");
    }
    if (r) {
        copy(out, outlen, r, strlen(r));
        return;
    }
    char scheme[8], host[300], big[1024];
    if (hint_url && tm_aws_url_split(hint_url, scheme, sizeof scheme, host, sizeof host,
                                     big, sizeof big) == 0 && is_aws_host(host)) {
        /* sqs.<region>.amazonaws.com or <region>.queue.amazonaws.com */
        const char *a = host, *dot = strchr(a, '.');
        if (dot && strncmp(a, "sqs.", 4) == 0) {
            const char *e = strchr(dot + 1, '.');
            if (e && e > dot + 1) {
                copy(out, outlen, dot + 1, (size_t) (e - dot - 1));
                return;
            }
        } else if (dot && strncmp(dot, ".queue.", 7) == 0) {
            copy(out, outlen, a, (size_t) (dot - a));
            return;
        }
    }
    copy(out, outlen, "us-east-1", 9);
}

int tm_aws_endpoint_resolve(tm_aws_endpoint *ep, const char *service,
                            const char *region, const char *hint_url,
                            char *err, size_t errlen)
{
    memset(ep, 0, sizeof *ep);
    const char *envname, *prefix;
    if (strcmp(service, "sqs") == 0) {
        envname = "AWS_ENDPOINT_URL_SQS";
        prefix = "AmazonSQS";
    } else if (strcmp(service, "dynamodb") == 0) {
        envname = "AWS_ENDPOINT_URL_DYNAMODB";
        prefix = "DynamoDB_20120810";
    } else if (strcmp(service, "sts") == 0) {
        envname = "AWS_ENDPOINT_URL_STS";
        prefix = "";
    } else {
        return fail(err, errlen, "unknown AWS service");
    }
    if (!region || !*region || strlen(region) >= sizeof ep->region) {
        return fail(err, errlen, "bad AWS region");
    }
    for (const char *p = region; *p; p++) {
        if (!(isalnum((unsigned char) *p) || *p == '-')) {
            return fail(err, errlen, "bad AWS region");
        }
    }
    copy(ep->region, sizeof ep->region, region, strlen(region));
    copy(ep->signing_name, sizeof ep->signing_name, service, strlen(service));
    copy(ep->target_prefix, sizeof ep->target_prefix, prefix, strlen(prefix));

    char scheme[8], url[sizeof ep->url];
    const char *src = env(envname);
    if (!src) {
        src = env("AWS_ENDPOINT_URL");
    }
    if (src) {
        ep->custom = 1;
        if (tm_aws_url_split(src, scheme, sizeof scheme, ep->host, sizeof ep->host,
                             ep->path, sizeof ep->path) != 0) {
            return fail(err, errlen, "endpoint URL must be http(s)://host[:port][/path]");
        }
    } else if (hint_url && strcmp(service, "sqs") == 0
               && tm_aws_url_split(hint_url, scheme, sizeof scheme, ep->host,
                                   sizeof ep->host, url, sizeof url) == 0
               && !is_aws_host(ep->host)) {
        /* An emulator's queue URL: its origin is the SQS endpoint. */
        ep->custom = 1;
        copy(ep->path, sizeof ep->path, "/", 1);
    } else {
        int cn = strncmp(region, "cn-", 3) == 0;
        copy(scheme, sizeof scheme, "https", 5);
        if ((size_t) snprintf(ep->host, sizeof ep->host, "%s.%s.amazonaws.com%s", service,
                              region, cn ? ".cn" : "") >= sizeof ep->host) {
            return fail(err, errlen, "bad AWS region");
        }
        copy(ep->path, sizeof ep->path, "/", 1);
    }
    if ((size_t) snprintf(ep->url, sizeof ep->url, "%s://%s%s", scheme, ep->host, ep->path)
        >= sizeof ep->url) {
        return fail(err, errlen, "endpoint URL too long");
    }
    return 0;
}

/* ---- signed requests --------------------------------------------------- */

void tm_aws_request_free(tm_aws_request *r)
{
    if (!r) {
        return;
    }
    free(r->url);
    free(r->body);
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->headers[i]);
    }
    memset(r, 0, sizeof *r);
}

static int add_header(tm_aws_request *r, const char *name, const char *value)
{
    if (r->nheaders == TM_AWS_MAX_HEADERS) {
        return -1;
    }
    tm_buf b = TM_BUF_INIT;
    tm_buf_addf(&b, "%s: %s", name, value);
    char *h = tm_buf_steal(&b);
    if (!h) {
        return -1;
    }
    r->headers[r->nheaders++] = h;
    return 0;
}

int tm_aws_json_request(tm_aws_request *out, const tm_aws_endpoint *ep,
                        const tm_aws_creds *c, const char *op, char *body,
                        time_t now, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!body) {
        return fail(err, errlen, "no request body (bad arguments or out of memory)");
    }
    out->body = body;
    out->body_len = strlen(body);
    if (!c || !c->access_key || !c->secret_key) {
        tm_aws_request_free(out);
        return fail(err, errlen, "no AWS credentials");
    }
    char target[128], date[TM_AMZ_DATE_LEN + 1];
    if ((size_t) snprintf(target, sizeof target, "%s.%s", ep->target_prefix, op) >= sizeof target) {
        tm_aws_request_free(out);
        return fail(err, errlen, "operation name too long");
    }
    tm_sigv4_amz_date(now, date);
    tm_sigv4_header h[] = {
        { "Host", 4, ep->host, strlen(ep->host) },
        { "Content-Type", 12, TM_AWS_JSON_CONTENT_TYPE, strlen(TM_AWS_JSON_CONTENT_TYPE) },
        { "X-Amz-Date", 10, date, TM_AMZ_DATE_LEN },
        { "X-Amz-Target", 12, target, strlen(target) },
    };
    tm_sigv4_params p = { c->access_key, c->secret_key, c->session_token, ep->region,
                          ep->signing_name, date, 0 };
    tm_sigv4_result s;
    if (tm_sigv4_sign(&p, "POST", ep->path, strlen(ep->path), NULL, 0, h, 4,
                      out->body, out->body_len, &s, err, errlen) != 0) {
        tm_aws_request_free(out);
        return -1;
    }
    out->url = strdup(ep->url);
    int rc = out->url ? 0 : -1;
    for (size_t i = 0; i < 4 && rc == 0; i++) {
        rc = add_header(out, h[i].name, h[i].value);
    }
    if (rc == 0 && s.add_security_token) {
        rc = add_header(out, "X-Amz-Security-Token", s.add_security_token);
    }
    if (rc == 0) {
        rc = add_header(out, "Authorization", s.authorization);
    }
    tm_sigv4_result_free(&s);
    if (rc != 0) {
        tm_aws_request_free(out);
        return fail(err, errlen, "out of memory");
    }
    return 0;
}

/* ---- errors ------------------------------------------------------------ */

static void clean_code(char *dst, size_t n, const char *src)
{
    const char *hash = strrchr(src, '#');
    if (hash) {
        src = hash + 1;
    }
    copy(dst, n, src, strcspn(src, ":"));
}

static int is_throttling(const char *code)
{
    static const char *const codes[] = {
        "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
        "RequestThrottledException", "TooManyRequestsException",
        "ProvisionedThroughputExceededException", "RequestLimitExceeded",
        "LimitExceededException", "TransactionInProgressException", "SlowDown",
        "BandwidthLimitExceeded", "EC2ThrottledException", "PriorRequestNotComplete",
        NULL
    };
    for (const char *const *c = codes; *c; c++) {
        if (strcmp(code, *c) == 0) {
            return 1;
        }
    }
    return 0;
}

static int is_transient(const char *code)
{
    static const char *const codes[] = {
        "InternalFailure", "InternalError", "InternalServerError", "ServiceUnavailable",
        "RequestTimeout", "RequestTimeoutException", "IDPCommunicationError", NULL
    };
    for (const char *const *c = codes; *c; c++) {
        if (strcmp(code, *c) == 0) {
            return 1;
        }
    }
    return 0;
}

void tm_aws_parse_error(long status, const char *body, size_t len,
                        const char *query_error_header, tm_aws_error *e)
{
    memset(e, 0, sizeof *e);
    e->status = status;
    json_t *j = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    if (json_is_object(j)) {
        const char *t = jstr(j, "__type");
        if (!t) {
            t = jstr(j, "code");
        }
        if (!t) {
            t = jstr(j, "Code");
        }
        if (t) {
            clean_code(e->code, sizeof e->code, t);
        }
        const char *m = jstr(j, "message");
        if (!m) {
            m = jstr(j, "Message");
        }
        if (m) {
            copy(e->message, sizeof e->message, m, strlen(m));
        }
    } else if (body && len) {
        /* XML (query protocol) or plain text from a proxy. */
        char *code = xml_text(body, len, "Code"), *msg = xml_text(body, len, "Message");
        if (code) {
            clean_code(e->code, sizeof e->code, code);
        }
        if (msg) {
            copy(e->message, sizeof e->message, msg, strlen(msg));
        }
        free(code);
        free(msg);
    }
    json_decref(j);
    if (query_error_header && *query_error_header) {
        size_t cl = strcspn(query_error_header, ";");
        if (!e->code[0]) {
            copy(e->code, sizeof e->code, query_error_header, cl);
        }
        if (query_error_header[cl] == ';' && strncmp(query_error_header + cl + 1, "Sender", 6) == 0) {
            e->sender_fault = 1;
        }
    }
    if (!e->code[0]) {
        snprintf(e->code, sizeof e->code, status ? "HTTP%ld" : "NoResponse", status);
    }
    if (!e->message[0] && len && body) {
        copy(e->message, sizeof e->message, body, len < 200 ? len : 200);
    }
    e->throttling = is_throttling(e->code) || status == 429;
    e->retryable = e->throttling || status == 0 || status >= 500 || is_transient(e->code);
    if (!e->retryable && status >= 400 && status < 500) {
        e->sender_fault = 1;
    }
}

/* ---- SQS ---------------------------------------------------------------- */

static char *dump(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

char *tm_sqs_receive_body(const char *queue_url, int max_messages, int wait_seconds,
                          int visibility_timeout)
{
    if (!queue_url || max_messages < 1 || max_messages > TM_SQS_MAX_BATCH
        || wait_seconds < 0 || wait_seconds > 20) {
        return NULL;
    }
    json_t *j = json_pack("{s:s, s:i, s:i, s:[ss], s:[ss]}", "QueueUrl", queue_url,
                          "MaxNumberOfMessages", max_messages, "WaitTimeSeconds", wait_seconds,
                          "AttributeNames", "ApproximateReceiveCount", "SentTimestamp",
                          "MessageSystemAttributeNames", "ApproximateReceiveCount", "SentTimestamp");
    if (j && visibility_timeout >= 0
        && json_object_set_new(j, "VisibilityTimeout", json_integer(visibility_timeout)) != 0) {
        json_decref(j);
        return NULL;
    }
    return dump(j);
}

static int entry_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 80) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!(isalnum((unsigned char) id[i]) || id[i] == '-' || id[i] == '_')) {
            return 0;
        }
    }
    return 1;
}

static char *batch_body(const char *queue_url, const tm_sqs_entry *e, size_t n,
                        const char *value_key)
{
    if (!queue_url || !e || n == 0 || n > TM_SQS_MAX_BATCH) {
        return NULL;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        if (!entry_id_ok(e[i].id) || !e[i].value) {
            json_decref(arr);
            return NULL;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(e[k].id, e[i].id) == 0) {
                json_decref(arr);
                return NULL;
            }
        }
        json_t *o = json_pack("{s:s, s:s}", "Id", e[i].id, value_key, e[i].value);
        if (!o || json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr ? dump(json_pack("{s:s, s:o}", "QueueUrl", queue_url, "Entries", arr)) : NULL;
}

char *tm_sqs_delete_batch_body(const char *queue_url, const tm_sqs_entry *e, size_t n)
{
    return batch_body(queue_url, e, n, "ReceiptHandle");
}

char *tm_sqs_send_batch_body(const char *queue_url, const tm_sqs_entry *e, size_t n)
{
    return batch_body(queue_url, e, n, "MessageBody");
}

char *tm_sqs_change_visibility_body(const char *queue_url, const char *receipt_handle,
                                    int timeout)
{
    if (!queue_url || !receipt_handle || timeout < 0 || timeout > 43200) {
        return NULL;
    }
    return dump(json_pack("{s:s, s:s, s:i}", "QueueUrl", queue_url,
                          "ReceiptHandle", receipt_handle, "VisibilityTimeout", timeout));
}

char *tm_sqs_get_attributes_body(const char *queue_url, const char *const *names)
{
    if (!queue_url || !names) {
        return NULL;
    }
    json_t *arr = json_array();
    for (const char *const *n = names; arr && *n; n++) {
        if (json_array_append_new(arr, json_string(*n)) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr ? dump(json_pack("{s:s, s:o}", "QueueUrl", queue_url, "AttributeNames", arr)) : NULL;
}

char *tm_sqs_queue_url_body(const char *queue_name)
{
    return queue_name ? dump(json_pack("{s:s}", "QueueName", queue_name)) : NULL;
}

void tm_sqs_messages_free(tm_sqs_message *m, size_t n)
{
    if (!m) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(m[i].message_id);
        free(m[i].receipt_handle);
        free(m[i].body);
    }
    free(m);
}

/* An attribute value as a number; SQS sends strings, emulators sometimes numbers. */
static long long attr_num(const json_t *attrs, const char *k)
{
    json_t *v = json_object_get(attrs, k);
    if (json_is_integer(v)) {
        return json_integer_value(v);
    }
    if (json_is_real(v)) {
        return (long long) json_real_value(v);
    }
    const char *s = json_string_value(v);
    return s ? strtoll(s, NULL, 10) : 0;
}

int tm_sqs_parse_receive(const char *body, size_t len, tm_sqs_message **msgs,
                         size_t *n, char *err, size_t errlen)
{
    *msgs = NULL;
    *n = 0;
    json_t *j = json_loadb(body ? body : "", len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        /* An empty 200 reply is what some emulators send for no messages. */
        size_t i = 0;
        while (body && i < len && isspace((unsigned char) body[i])) {
            i++;
        }
        return i == len ? 0 : fail(err, errlen, "ReceiveMessage reply is not a JSON object");
    }
    json_t *arr = json_object_get(j, "Messages");
    if (!arr || json_is_null(arr)) {
        json_decref(j);
        return 0;
    }
    if (!json_is_array(arr)) {
        json_decref(j);
        return fail(err, errlen, "ReceiveMessage reply: Messages is not an array");
    }
    size_t cnt = json_array_size(arr);
    if (cnt == 0) {
        json_decref(j);
        return 0;
    }
    tm_sqs_message *m = calloc(cnt, sizeof *m);
    if (!m) {
        json_decref(j);
        return fail(err, errlen, "out of memory");
    }
    int rc = 0;
    for (size_t i = 0; i < cnt && rc == 0; i++) {
        json_t *o = json_array_get(arr, i);
        const char *id = jstr(o, "MessageId"), *rh = jstr(o, "ReceiptHandle");
        json_t *b = json_object_get(o, "Body");
        if (!id || !rh) {
            rc = fail(err, errlen, "ReceiveMessage reply: message without MessageId or ReceiptHandle");
            break;
        }
        const char *bs = json_is_string(b) ? json_string_value(b) : "";
        size_t bl = json_is_string(b) ? json_string_length(b) : 0;
        m[i].message_id = strdup(id);
        m[i].receipt_handle = strdup(rh);
        m[i].body = malloc(bl + 1);
        if (!m[i].message_id || !m[i].receipt_handle || !m[i].body) {
            rc = fail(err, errlen, "out of memory");
            break;
        }
        memcpy(m[i].body, bs, bl);
        m[i].body[bl] = '\0';
        m[i].body_len = bl;
        json_t *attrs = json_object_get(o, "Attributes");
        m[i].receive_count = (long) attr_num(attrs, "ApproximateReceiveCount");
        m[i].sent_ms = attr_num(attrs, "SentTimestamp");
    }
    json_decref(j);
    if (rc != 0) {
        tm_sqs_messages_free(m, cnt);
        return rc;
    }
    *msgs = m;
    *n = cnt;
    return 0;
}

static int truthy(const json_t *v)
{
    if (json_is_boolean(v)) {
        return json_is_true(v);
    }
    const char *s = json_string_value(v);
    return s && (strcasecmp(s, "true") == 0 || strcmp(s, "1") == 0);
}

int tm_sqs_parse_batch_result(const char *body, size_t len, tm_sqs_batch_result *r,
                              char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    json_t *j = json_loadb(body ? body : "", len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return fail(err, errlen, "batch reply is not a JSON object");
    }
    json_t *ok = json_object_get(j, "Successful"), *bad = json_object_get(j, "Failed");
    size_t i;
    json_t *v;
    json_array_foreach(ok, i, v) {
        const char *id = jstr(v, "Id");
        if (id && r->nok < TM_SQS_MAX_BATCH) {
            copy(r->ok[r->nok++], sizeof r->ok[0], id, strlen(id));
        }
    }
    json_array_foreach(bad, i, v) {
        const char *id = jstr(v, "Id");
        if (id && r->nfailed < TM_SQS_MAX_BATCH) {
            const char *code = jstr(v, "Code"), *msg = jstr(v, "Message");
            size_t k = r->nfailed++;
            copy(r->failed[k].id, sizeof r->failed[k].id, id, strlen(id));
            if (code) {
                clean_code(r->failed[k].code, sizeof r->failed[k].code, code);
            }
            if (msg) {
                copy(r->failed[k].message, sizeof r->failed[k].message, msg, strlen(msg));
            }
            r->failed[k].sender_fault = truthy(json_object_get(v, "SenderFault"));
        }
    }
    json_decref(j);
    return 0;
}

char *tm_sqs_parse_attribute(const char *body, size_t len, const char *name)
{
    json_t *j = json_loadb(body ? body : "", len, 0, NULL);
    json_t *v = json_object_get(json_object_get(j, "Attributes"), name);
    char *out = NULL;
    if (json_is_string(v)) {
        out = strdup(json_string_value(v));
    } else if (v) {
        out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    }
    json_decref(j);
    return out;
}

long tm_sqs_redrive_max_receive(const char *redrive_policy)
{
    if (!redrive_policy) {
        return 0;
    }
    json_t *j = json_loads(redrive_policy, 0, NULL);
    json_t *v = json_object_get(j, "maxReceiveCount");
    long n = 0;
    if (json_is_integer(v)) {
        n = (long) json_integer_value(v);
    } else if (json_is_string(v)) {
        n = strtol(json_string_value(v), NULL, 10);
    }
    json_decref(j);
    return n > 0 ? n : 0;
}

/* ---- DynamoDB ----------------------------------------------------------- */

char *tm_ddb_batch_write_body(const char *table, const json_t *items)
{
    size_t n = json_array_size(items);
    if (!table || !*table || n == 0 || n > TM_DDB_MAX_BATCH_WRITE) {
        return NULL;
    }
    json_t *reqs = json_array();
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
        json_t *o = json_is_object(it) ? json_pack("{s:{s:O}}", "PutRequest", "Item", it) : NULL;
        if (!o || !reqs || json_array_append_new(reqs, o) != 0) {
            json_decref(reqs);
            return NULL;
        }
    }
    return reqs ? dump(json_pack("{s:{s:o}}", "RequestItems", table, reqs)) : NULL;
}

char *tm_ddb_batch_write_body_text(const char *table, const char *const *items, size_t n)
{
    if (!table || !*table || !items || n == 0 || n > TM_DDB_MAX_BATCH_WRITE) {
        return NULL;
    }
    json_t *name = json_string(table);
    char *quoted = name ? json_dumps(name, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(name);
    if (!quoted) {
        return NULL;
    }
    tm_buf b = TM_BUF_INIT;
    tm_buf_adds(&b, "{\"RequestItems\":{");
    tm_buf_adds(&b, quoted);
    tm_buf_adds(&b, ":[");
    /* jansson's allocator, which a host (the nginx module) may replace */
    json_free_t jfree;
    json_get_alloc_funcs(NULL, &jfree);
    jfree(quoted);
    for (size_t i = 0; i < n; i++) {
        if (!items[i] || items[i][0] != '{') {   /* an object, at least by its look */
            tm_buf_free(&b);
            return NULL;
        }
        tm_buf_adds(&b, i ? ",{\"PutRequest\":{\"Item\":" : "{\"PutRequest\":{\"Item\":");
        tm_buf_adds(&b, items[i]);
        tm_buf_adds(&b, "}}");
    }
    tm_buf_adds(&b, "]}}");
    return tm_buf_steal(&b);
}

char *tm_ddb_table_body(const char *table)
{
    return table && *table ? dump(json_pack("{s:s}", "TableName", table)) : NULL;
}

json_t *tm_ddb_parse_unprocessed(const char *body, size_t len, const char *table)
{
    json_t *j = json_loadb(body ? body : "", len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    json_t *out = json_array();
    json_t *reqs = json_object_get(json_object_get(j, "UnprocessedItems"), table);
    size_t i;
    json_t *r;
    json_array_foreach(reqs, i, r) {
        json_t *item = json_object_get(json_object_get(r, "PutRequest"), "Item");
        if (out && json_is_object(item) && json_array_append(out, item) != 0) {
            json_decref(out);
            out = NULL;
        }
    }
    json_decref(j);
    return out;
}

char *tm_ddb_query_body(const char *table, const char *pk_name, const char *pk,
                        const char *sk_name, const char *sk_from, const char *sk_to,
                        int forward, int limit, const json_t *start)
{
    if (!table || !*table || !pk_name || !pk || !sk_name || !sk_from || !sk_to || limit < 0
        || (start && !json_is_object(start))) {
        return NULL;
    }
    json_t *q = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:{s:s}, s:{s:s}, s:{s:s}}, s:b}",
                          "TableName", table,
                          "KeyConditionExpression", "#p = :p AND #s BETWEEN :a AND :b",
                          "ExpressionAttributeNames", "#p", pk_name, "#s", sk_name,
                          "ExpressionAttributeValues", ":p", "S", pk, ":a", "S", sk_from,
                          ":b", "S", sk_to,
                          "ScanIndexForward", forward);
    if (q && limit > 0 && json_object_set_new(q, "Limit", json_integer(limit)) != 0) {
        json_decref(q);
        return NULL;
    }
    if (q && start && json_object_set(q, "ExclusiveStartKey", (json_t *) start) != 0) {
        json_decref(q);
        return NULL;
    }
    return q ? dump(q) : NULL;
}

json_t *tm_ddb_parse_query(const char *body, size_t len, json_t **last_key)
{
    *last_key = NULL;
    json_t *j = json_loadb(body ? body : "", len, 0, NULL);
    json_t *items = json_object_get(j, "Items");
    if (!json_is_array(items)) {
        json_decref(j);
        return NULL;
    }
    json_incref(items);
    json_t *lk = json_object_get(j, "LastEvaluatedKey");
    if (json_is_object(lk) && json_object_size(lk) > 0) {
        *last_key = json_incref(lk);
    }
    json_decref(j);
    return items;
}

int tm_ddb_cancel_reason(const char *body, size_t len, size_t i, char *code, size_t codelen)
{
    json_t *j = json_loadb(body ? body : "", len, 0, NULL);
    json_t *r = json_array_get(json_object_get(j, "CancellationReasons"), i);
    const char *c = json_string_value(json_object_get(r, "Code"));
    int rc = -1;
    if (c && codelen > 0) {
        snprintf(code, codelen, "%s", c);
        rc = 0;
    }
    json_decref(j);
    return rc;
}
