#include "tm_sigv4.h"
#include "tm_buf.h"
#include "tm_hash.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s", msg);
    }
    return -1;
}

static int unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
           || c == '~';
}

static void encode_into(tm_buf *b, const char *s, size_t n, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            tm_buf_addc(b, (char) c);
        } else {
            char e[3] = { '%', hex[c >> 4], hex[c & 15] };
            tm_buf_add(b, e, 3);
        }
    }
}

char *tm_sigv4_uri_encode(const char *s, size_t len, int keep_slash)
{
    tm_buf b = TM_BUF_INIT;
    encode_into(&b, s, len, keep_slash);
    return tm_buf_steal(&b);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Percent-decodes; a '%' not followed by two hex digits stays literal. */
static void decode_into(tm_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0
            && (lo = hexval(s[i + 2])) >= 0) {
            tm_buf_addc(b, (char) (hi << 4 | lo));
            i += 2;
        } else {
            tm_buf_addc(b, s[i]);
        }
    }
}

/* The canonical URI: dot segments resolved, empty segments dropped, a
 * trailing '/' kept, each segment percent-encoded. */
static int canonical_uri(tm_buf *b, const char *path, size_t len)
{
    if (!path || len == 0) {
        tm_buf_addc(b, '/');
        return 0;
    }
    size_t maxseg = 1;
    for (size_t i = 0; i < len; i++) {
        maxseg += path[i] == '/';
    }
    struct seg { const char *s; size_t n; } *segs = malloc(maxseg * sizeof *segs);
    if (!segs) {
        return -1;
    }
    size_t nseg = 0, i = 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && path[j] != '/') {
            j++;
        }
        const char *s = path + i;
        size_t n = j - i;
        if (n == 0 || (n == 1 && s[0] == '.')) {
            /* skip */
        } else if (n == 2 && s[0] == '.' && s[1] == '.') {
            if (nseg) {
                nseg--;
            }
        } else {
            segs[nseg].s = s;
            segs[nseg].n = n;
            nseg++;
        }
        i = j + 1;
    }
    for (size_t k = 0; k < nseg; k++) {
        tm_buf_addc(b, '/');
        encode_into(b, segs[k].s, segs[k].n, 0);
    }
    if (nseg == 0 || path[len - 1] == '/') {
        tm_buf_addc(b, '/');
    }
    free(segs);
    return 0;
}

typedef struct {
    char *k;
    char *v;
} qparam;

static int qparam_cmp(const void *a, const void *b)
{
    const qparam *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : strcmp(x->v, y->v);
}

/* Decodes then re-encodes one query component. */
static char *requote(const char *s, size_t n)
{
    tm_buf raw = TM_BUF_INIT;
    decode_into(&raw, s, n);
    if (!tm_buf_ok(&raw)) {
        tm_buf_free(&raw);
        return NULL;
    }
    char *out = tm_sigv4_uri_encode(raw.p ? raw.p : "", raw.len, 0);
    tm_buf_free(&raw);
    return out;
}

static int canonical_query(tm_buf *b, const char *q, size_t len)
{
    if (!q || len == 0) {
        return 0;
    }
    size_t max = 1;
    for (size_t i = 0; i < len; i++) {
        max += q[i] == '&';
    }
    qparam *ps = calloc(max, sizeof *ps);
    if (!ps) {
        return -1;
    }
    size_t np = 0, i = 0;
    int rc = 0;
    while (i <= len && rc == 0) {
        size_t j = i;
        while (j < len && q[j] != '&') {
            j++;
        }
        if (j > i) {
            const char *eq = memchr(q + i, '=', j - i);
            size_t klen = eq ? (size_t) (eq - (q + i)) : j - i;
            ps[np].k = requote(q + i, klen);
            ps[np].v = eq ? requote(eq + 1, (size_t) (q + j - eq - 1)) : requote("", 0);
            if (!ps[np].k || !ps[np].v) {
                rc = -1;
            }
            np++;
        }
        i = j + 1;
    }
    if (rc == 0) {
        qsort(ps, np, sizeof *ps, qparam_cmp);
        for (size_t k = 0; k < np; k++) {
            if (k) {
                tm_buf_addc(b, '&');
            }
            tm_buf_adds(b, ps[k].k);
            tm_buf_addc(b, '=');
            tm_buf_adds(b, ps[k].v);
        }
    }
    for (size_t k = 0; k < np; k++) {
        free(ps[k].k);
        free(ps[k].v);
    }
    free(ps);
    return rc;
}

typedef struct {
    char *name;  /* lowercase */
    tm_buf value;
} chdr;

static int chdr_cmp(const void *a, const void *b)
{
    return strcmp(((const chdr *) a)->name, ((const chdr *) b)->name);
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Appends a value trimmed, with inner whitespace runs collapsed to one space. */
static void add_trimmed(tm_buf *b, const char *v, size_t n)
{
    size_t i = 0;
    while (i < n && is_ws(v[i])) {
        i++;
    }
    while (n > i && is_ws(v[n - 1])) {
        n--;
    }
    int in_ws = 0;
    for (; i < n; i++) {
        if (is_ws(v[i])) {
            in_ws = 1;
            continue;
        }
        if (in_ws) {
            tm_buf_addc(b, ' ');
            in_ws = 0;
        }
        tm_buf_addc(b, v[i]);
    }
}

static char *lower_name(const char *s, size_t n)
{
    while (n && is_ws(*s)) {
        s++;
        n--;
    }
    while (n && is_ws(s[n - 1])) {
        n--;
    }
    if (n == 0) {
        return NULL;
    }
    char *out = malloc(n + 1);
    if (!out) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char) (c - 'A' + 'a') : c;
    }
    out[n] = '\0';
    return out;
}

static chdr *find_hdr(chdr *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(h[i].name, name) == 0) {
            return &h[i];
        }
    }
    return NULL;
}

static int add_hdr(chdr *h, size_t *n, const char *name, size_t nlen,
                   const char *value, size_t vlen, char *err, size_t errlen)
{
    char *lname = lower_name(name, nlen);
    if (!lname) {
        return fail(err, errlen, nlen ? "out of memory" : "empty header name");
    }
    chdr *e = find_hdr(h, *n, lname);
    if (e) {
        free(lname);
        tm_buf_addc(&e->value, ',');
    } else {
        e = &h[(*n)++];
        e->name = lname;
        e->value = (tm_buf) TM_BUF_INIT;
        tm_buf_add(&e->value, "", 0);
    }
    add_trimmed(&e->value, value, vlen);
    return tm_buf_ok(&e->value) ? 0 : fail(err, errlen, "out of memory");
}

static int hmac(const void *key, size_t klen, const void *msg, size_t mlen,
                unsigned char out[32])
{
    unsigned int olen = 0;
    if (!HMAC(EVP_sha256(), key, (int) klen, msg, mlen, out, &olen) || olen != 32) {
        return -1;
    }
    return 0;
}

int tm_sigv4_signing_key(const char *secret, const char *date8,
                         const char *region, const char *service,
                         unsigned char key[32])
{
    size_t slen = strlen(secret);
    char *k0 = malloc(slen + 5);
    if (!k0) {
        return -1;
    }
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, secret, slen + 1);
    unsigned char a[32], b[32];
    int rc = hmac(k0, slen + 4, date8, strlen(date8), a);
    OPENSSL_cleanse(k0, slen + 4);
    free(k0);
    rc = rc ? rc : hmac(a, 32, region, strlen(region), b);
    rc = rc ? rc : hmac(b, 32, service, strlen(service), a);
    rc = rc ? rc : hmac(a, 32, "aws4_request", 12, key);
    OPENSSL_cleanse(a, sizeof a);
    OPENSSL_cleanse(b, sizeof b);
    return rc;
}

void tm_sigv4_amz_date(time_t t, char out[TM_AMZ_DATE_LEN + 1])
{
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        memset(&tm, 0, sizeof tm);
    }
    if (strftime(out, TM_AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) != TM_AMZ_DATE_LEN) {
        memcpy(out, "19700101T000000Z", TM_AMZ_DATE_LEN + 1);
    }
}

static int amz_date_valid(const char *d)
{
    if (!d || strlen(d) != TM_AMZ_DATE_LEN || d[8] != 'T' || d[15] != 'Z') {
        return 0;
    }
    for (int i = 0; i < 15; i++) {
        if (i != 8 && (d[i] < '0' || d[i] > '9')) {
            return 0;
        }
    }
    return 1;
}

static int field_ok(const char *s)
{
    return s && *s && !strchr(s, '/') && !strchr(s, '\n');
}

void tm_sigv4_result_free(tm_sigv4_result *r)
{
    if (!r) {
        return;
    }
    free(r->canonical_request);
    free(r->string_to_sign);
    free(r->signed_headers);
    free(r->authorization);
    memset(r, 0, sizeof *r);
}

int tm_sigv4_sign(const tm_sigv4_params *p, const char *method,
                  const char *path, size_t path_len,
                  const char *query, size_t query_len,
                  const tm_sigv4_header *headers, size_t nheaders,
                  const void *payload, size_t payload_len,
                  tm_sigv4_result *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!p || !field_ok(p->access_key) || !p->secret_key || !*p->secret_key
        || !field_ok(p->region) || !field_ok(p->service)) {
        return fail(err, errlen, "sigv4: access key, secret key, region and service are required");
    }
    if (!amz_date_valid(p->amz_date)) {
        return fail(err, errlen, "sigv4: amz_date must look like 20150830T123600Z");
    }
    if (!method || !*method) {
        return fail(err, errlen, "sigv4: method required");
    }
    int with_token = p->session_token && *p->session_token;

    /* Room for every given header plus X-Amz-Date and the token. */
    chdr *h = calloc(nheaders + 2, sizeof *h);
    if (!h) {
        return fail(err, errlen, "out of memory");
    }
    size_t nh = 0;
    int rc = 0;
    for (size_t i = 0; i < nheaders && rc == 0; i++) {
        rc = add_hdr(h, &nh, headers[i].name, headers[i].name_len,
                     headers[i].value, headers[i].value_len, err, errlen);
    }
    if (rc == 0 && !find_hdr(h, nh, "x-amz-date")) {
        rc = add_hdr(h, &nh, "x-amz-date", 10, p->amz_date, TM_AMZ_DATE_LEN, err, errlen);
        out->add_amz_date = p->amz_date;
    }
    if (rc == 0 && with_token) {
        chdr *t = find_hdr(h, nh, "x-amz-security-token");
        if (!t) {
            out->add_security_token = p->session_token;
            if (!p->token_unsigned) {
                rc = add_hdr(h, &nh, "x-amz-security-token", 20, p->session_token,
                             strlen(p->session_token), err, errlen);
            }
        }
    }

    unsigned char md[SHA256_DIGEST_LENGTH];
    tm_buf creq = TM_BUF_INIT, sh = TM_BUF_INIT, sts = TM_BUF_INIT, az = TM_BUF_INIT;
    if (rc == 0) {
        qsort(h, nh, sizeof *h, chdr_cmp);
        SHA256(payload ? payload : (const void *) "", payload_len, md);
        tm_hex(md, sizeof md, out->payload_hash);

        tm_buf_adds(&creq, method);
        tm_buf_addc(&creq, '\n');
        if (canonical_uri(&creq, path, path_len) != 0) {
            rc = fail(err, errlen, "out of memory");
        }
        tm_buf_addc(&creq, '\n');
        if (rc == 0 && canonical_query(&creq, query, query_len) != 0) {
            rc = fail(err, errlen, "out of memory");
        }
        tm_buf_addc(&creq, '\n');
        for (size_t i = 0; i < nh; i++) {
            tm_buf_adds(&creq, h[i].name);
            tm_buf_addc(&creq, ':');
            tm_buf_add(&creq, h[i].value.p, h[i].value.len);
            tm_buf_addc(&creq, '\n');
            if (i) {
                tm_buf_addc(&sh, ';');
            }
            tm_buf_adds(&sh, h[i].name);
        }
        tm_buf_addc(&creq, '\n');
        tm_buf_add(&creq, sh.p ? sh.p : "", sh.len);
        tm_buf_addc(&creq, '\n');
        tm_buf_adds(&creq, out->payload_hash);
        if (rc == 0 && (!tm_buf_ok(&creq) || !tm_buf_ok(&sh))) {
            rc = fail(err, errlen, "out of memory");
        }
    }

    char date8[9];
    if (rc == 0) {
        char creq_hash[65];
        memcpy(date8, p->amz_date, 8);
        date8[8] = '\0';
        SHA256((const unsigned char *) creq.p, creq.len, md);
        tm_hex(md, sizeof md, creq_hash);
        tm_buf_addf(&sts, TM_SIGV4_ALGORITHM "\n%s\n%s/%s/%s/aws4_request\n%s",
                    p->amz_date, date8, p->region, p->service, creq_hash);
        unsigned char key[32], sig[32];
        if (tm_sigv4_signing_key(p->secret_key, date8, p->region, p->service, key) != 0
            || !tm_buf_ok(&sts) || hmac(key, sizeof key, sts.p, sts.len, sig) != 0) {
            rc = fail(err, errlen, "sigv4: HMAC failed");
        } else {
            tm_hex(sig, sizeof sig, out->signature);
        }
        OPENSSL_cleanse(key, sizeof key);
    }
    if (rc == 0) {
        tm_buf_addf(&az, TM_SIGV4_ALGORITHM " Credential=%s/%s/%s/%s/aws4_request, "
                    "SignedHeaders=%s, Signature=%s", p->access_key, date8,
                    p->region, p->service, sh.p, out->signature);
        out->canonical_request = tm_buf_steal(&creq);
        out->string_to_sign = tm_buf_steal(&sts);
        out->signed_headers = tm_buf_steal(&sh);
        out->authorization = tm_buf_steal(&az);
        if (!out->canonical_request || !out->string_to_sign || !out->signed_headers
            || !out->authorization) {
            rc = fail(err, errlen, "out of memory");
        }
    }
    tm_buf_free(&creq);
    tm_buf_free(&sh);
    tm_buf_free(&sts);
    tm_buf_free(&az);
    for (size_t i = 0; i < nh; i++) {
        free(h[i].name);
        tm_buf_free(&h[i].value);
    }
    free(h);
    if (rc != 0) {
        tm_sigv4_result_free(out);
    }
    return rc;
}
