/* lib/tm_sigv4: every case of the AWS SigV4 test suite, plus the pieces.
 * Usage: test_sigv4 <dir of the suite> (t/unit-sigv4.t passes
 * t/data/aws-sigv4, vendored with its LICENSE and NOTICE). Each case directory <name>/ holds
 * <name>.req (the request), .creq, .sts and .authz (what we must produce). */
#include "tap.h"
#include "tm_sigv4.h"

#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>

#define AK "AKIDEXAMPLE"
#define SK "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
/* The suite's README for get-vanilla-with-session-token gives this token and
 * expects it signed although the .req does not carry it. */
#define VANILLA_TOKEN "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"

/* Cases we do not run, each with the reason printed in the TAP output. */
static const struct { const char *name, *why; } skipped[] = {
    { NULL, NULL }
};

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n < cap - 1) {
            break;
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len) {
        *len = n;
    }
    return buf;
}

static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r')) {
        s[--n] = '\0';
    }
}

#define MAXH 32
typedef struct {
    char method[16];
    char *target;
    char *names[MAXH];
    char *values[MAXH];
    size_t nh;
    const char *body;
    size_t body_len;
} parsed_req;

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static void req_free(parsed_req *r)
{
    free(r->target);
    for (size_t i = 0; i < r->nh; i++) {
        free(r->names[i]);
        free(r->values[i]);
    }
}

/* Parses a .req file in place: request line, headers (folded lines joined
 * with a space), blank line, body. */
static int parse_req(char *text, size_t len, parsed_req *r)
{
    memset(r, 0, sizeof *r);
    char *end = text + len, *p = text;
    char *nl = memchr(p, '\n', (size_t) (end - p));
    char *line_end = nl ? nl : end;
    char *sp1 = memchr(p, ' ', (size_t) (line_end - p));
    char *sp2 = line_end;
    while (sp2 > p && *--sp2 != ' ') {
    }
    if (!sp1 || sp2 <= sp1 || (size_t) (sp1 - p) >= sizeof r->method) {
        return -1;
    }
    memcpy(r->method, p, (size_t) (sp1 - p));
    r->target = dupn(sp1 + 1, (size_t) (sp2 - sp1 - 1));
    p = nl ? nl + 1 : end;
    while (p < end) {
        nl = memchr(p, '\n', (size_t) (end - p));
        line_end = nl ? nl : end;
        size_t n = (size_t) (line_end - p);
        if (n && p[n - 1] == '\r') {
            n--;
        }
        if (n == 0) {
            p = nl ? nl + 1 : end;
            break;
        }
        if ((*p == ' ' || *p == '\t') && r->nh) {
            char *prev = r->values[r->nh - 1];
            size_t pl = strlen(prev);
            char *v = realloc(prev, pl + n + 2);
            if (!v) {
                return -1;
            }
            v[pl] = ' ';
            memcpy(v + pl + 1, p, n);
            v[pl + 1 + n] = '\0';
            r->values[r->nh - 1] = v;
        } else {
            char *colon = memchr(p, ':', n);
            if (!colon || r->nh == MAXH) {
                return -1;
            }
            r->names[r->nh] = dupn(p, (size_t) (colon - p));
            r->values[r->nh] = dupn(colon + 1, n - (size_t) (colon - p) - 1);
            r->nh++;
        }
        p = nl ? nl + 1 : end;
    }
    r->body = p;
    r->body_len = (size_t) (end - p);
    return r->target ? 0 : -1;
}

static void check_expected(const char *dir, const char *name, const char *ext,
                           const char *got)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    char *want = slurp(path, NULL);
    if (!want) {
        ok(0, "%s: read %s", name, path);
        return;
    }
    chomp(want);
    is_str(got, want, "%s: .%s", name, ext);
    free(want);
}

static int ncases;

static void run_case(const char *dir, const char *name)
{
    for (size_t i = 0; skipped[i].name; i++) {
        if (strcmp(skipped[i].name, name) == 0) {
            printf("ok %d # skip %s: %s\n", ++tap_n, name, skipped[i].why);
            return;
        }
    }
    ncases++;
    char path[4096];
    size_t len;
    snprintf(path, sizeof path, "%s/%s.req", dir, name);
    char *text = slurp(path, &len);
    parsed_req r;
    if (!text || parse_req(text, len, &r) != 0) {
        ok(0, "%s: parse %s", name, path);
        free(text);
        return;
    }
    char *q = strchr(r.target, '?');
    size_t plen = q ? (size_t) (q - r.target) : strlen(r.target);
    tm_sigv4_header hs[MAXH];
    for (size_t i = 0; i < r.nh; i++) {
        hs[i] = (tm_sigv4_header) { r.names[i], strlen(r.names[i]), r.values[i], strlen(r.values[i]) };
    }
    tm_sigv4_params p = { AK, SK, NULL, "us-east-1", "service", "20150830T123600Z", 0 };
    char *sts_token = NULL;
    if (strcmp(name, "get-vanilla-with-session-token") == 0) {
        p.session_token = VANILLA_TOKEN;
    } else if (strcmp(name, "post-sts-header-after") == 0) {
        /* The token from the suite's readme, sent but not signed. */
        char rp[4096];
        snprintf(rp, sizeof rp, "%s/../readme.txt", dir);
        char *readme = slurp(rp, NULL);
        char *t = readme ? strstr(readme, "AQoD") : NULL;
        if (t) {
            size_t n = strcspn(t, " \r\n");
            sts_token = dupn(t, n);
        }
        free(readme);
        p.session_token = sts_token;
        p.token_unsigned = 1;
        ok(sts_token != NULL, "%s: token from readme.txt", name);
    }
    tm_sigv4_result out;
    char err[256] = "";
    int rc = tm_sigv4_sign(&p, r.method, r.target, plen, q ? q + 1 : NULL,
                           q ? strlen(q + 1) : 0, hs, r.nh, r.body, r.body_len,
                           &out, err, sizeof err);
    ok(rc == 0, "%s: signs %s", name, err);
    if (rc == 0) {
        check_expected(dir, name, "creq", out.canonical_request);
        check_expected(dir, name, "sts", out.string_to_sign);
        check_expected(dir, name, "authz", out.authorization);
        if (p.session_token) {
            /* The caller is told to send the token header. */
            is_str(out.add_security_token, p.session_token, "%s: token header to send", name);
        }
    }
    tm_sigv4_result_free(&out);
    free(sts_token);
    req_free(&r);
    free(text);
}

static int walk(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d) {
        return -1;
    }
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.req", dir, base);
    struct stat st;
    if (depth > 0 && stat(path, &st) == 0) {
        run_case(dir, base);
    }
    /* Sorted for a stable TAP order. */
    struct dirent **list;
    closedir(d);
    int n = scandir(dir, &list, NULL, alphasort);
    if (n < 0) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (list[i]->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
            if (stat(path, &st) == 0 && S_ISDIR(st.st_mode) && depth < 4) {
                walk(path, depth + 1);
            }
        }
        free(list[i]);
    }
    free(list);
    return 0;
}

static void unit_checks(void)
{
    unsigned char key[32];
    char hex[65];
    int krc = tm_sigv4_signing_key(SK, "20150830", "us-east-1", "iam", key);
    ok(krc == 0, "signing key");
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[key[i] >> 4];
        hex[2 * i + 1] = digits[key[i] & 15];
    }
    hex[64] = '\0';
    /* The derived key of the AWS documentation's IAM example. */
    is_str(hex, "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9", "signing key value");

    char d[TM_AMZ_DATE_LEN + 1];
    tm_sigv4_amz_date(1440938160, d);
    is_str(d, "20150830T123600Z", "amz date");

    char *e = tm_sigv4_uri_encode("a b/c~\xe1\x88\xb4%", 10, 1);
    is_str(e, "a%20b/c~%E1%88%B4%25", "uri encode keeping /");
    free(e);
    e = tm_sigv4_uri_encode("a/b", 3, 0);
    is_str(e, "a%2Fb", "uri encode escaping /");
    free(e);

    tm_sigv4_params p = { AK, SK, NULL, "us-east-1", "sqs", "2015-08-30", 0 };
    tm_sigv4_result out;
    char err[128] = "";
    tm_sigv4_header h = { "Host", 4, "sqs.us-east-1.amazonaws.com", 27 };
    int rc = tm_sigv4_sign(&p, "POST", "/", 1, NULL, 0, &h, 1, "{}", 2, &out, err, sizeof err);
    ok(rc != 0 && strstr(err, "amz_date"), "bad date rejected: %s", err);
    tm_sigv4_result_free(&out);
    p.amz_date = "20150830T123600Z";
    p.secret_key = "";
    rc = tm_sigv4_sign(&p, "POST", "/", 1, NULL, 0, &h, 1, "{}", 2, &out, err, sizeof err);
    ok(rc != 0, "empty secret rejected: %s", err);
    tm_sigv4_result_free(&out);
    p.secret_key = SK;
    tm_sigv4_header empty = { "", 0, "x", 1 };
    rc = tm_sigv4_sign(&p, "POST", "/", 1, NULL, 0, &empty, 1, "", 0, &out, err, sizeof err);
    ok(rc != 0, "empty header name rejected: %s", err);
    tm_sigv4_result_free(&out);

    /* X-Amz-Date is added when missing; path and query edge cases. */
    const char *path = "/a/./b/../c//d%2F", *query = "b=2&a&=x&&a=1";
    rc = tm_sigv4_sign(&p, "GET", path, strlen(path), query, strlen(query), &h, 1, NULL, 0,
                       &out, err, sizeof err);
    ok(rc == 0, "sign edge cases");
    is_str(out.add_amz_date, "20150830T123600Z", "x-amz-date added");
    ok(out.add_security_token == NULL, "no token header without token");
    const char *want = "GET\n/a/c/d%252F\n=x&a=&a=1&b=2\nhost:sqs.us-east-1.amazonaws.com\n"
                       "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n";
    ok(out.canonical_request && strncmp(out.canonical_request, want, strlen(want)) == 0,
       "canonical request edge cases");
    is_str(out.signed_headers, "host;x-amz-date", "signed headers");
    tm_sigv4_result_free(&out);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : getenv("TM_SIGV4_VECTORS");
    unit_checks();
    if (!dir) {
        ok(0, "vector directory given (argv[1] or TM_SIGV4_VECTORS)");
        return tap_done();
    }
    int walked = walk(dir, 0); /* ok() evaluates its condition twice */
    ok(walked == 0, "read %s", dir);
    printf("# %d AWS SigV4 suite cases run\n", ncases);
    ok(ncases >= 30, "the whole suite was found (%d cases)", ncases);
    return tap_done();
}
