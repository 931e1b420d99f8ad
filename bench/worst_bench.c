/* Worst cases of one evaluation, per operator and per composition, within
 * what the targeting API accepts (a rule or segment document of at most
 * 64 KiB, the daemons' body limit; a context value of at most 4096 bytes,
 * 1024 for REGEX). Not a test: it prints, for each case, the CPU time of
 * one evaluation and its ratio to a trivial rule measured in the same run
 * (machines are shared and noisy: compare within a run).
 *
 *   worst_bench [SECONDS]     each case runs for about SECONDS (default 0.3)
 *
 * docs/rules.md ("Worst cases") gives the figures and what bounds them. */
#include "tm_context.h"
#include "tm_regex.h"
#include "tm_rules.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DOC_MAX (64 * 1024)     /* TM_HTTP_MAX_BODY of the daemons */

typedef struct {
    char *s;
    size_t len, cap;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        exit(1);
    }
    if (b->len + (size_t) n + 1 > b->cap) {
        b->cap = (b->len + (size_t) n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        if (b->s == NULL) {
            exit(1);
        }
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t) n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t) n;
}

static json_t *parse(const buf *b)
{
    json_error_t je;
    json_t *j = json_loadb(b->s, b->len, 0, &je);
    if (j == NULL) {
        fprintf(stderr, "worst_bench: bad document: %s\n", je.text);
        exit(1);
    }
    return j;
}

static tm_rule *rule(const buf *b)
{
    char err[256];
    json_t *j = parse(b);
    tm_rule *r = tm_rule_compile(j, err, sizeof err);
    json_decref(j);
    if (r == NULL) {
        fprintf(stderr, "worst_bench: cannot compile (%zu bytes): %s\n", b->len, err);
        exit(1);
    }
    return r;
}

/* A constraints array of n copies of one constraint, in at most max bytes;
 * returns how many fit. */
static size_t constraints(buf *b, const char *one, size_t n, size_t max)
{
    size_t i = 0, start = b->len;
    put(b, "[");
    while (i < n && b->len - start + strlen(one) + 2 < max) {
        put(b, "%s%s", i ? "," : "", one);
        i++;
    }
    put(b, "]");
    return i;
}

/* {"strategies":[{"constraints":[<values>]}]} with a list operator whose
 * "values" are as many copies of value as fit in a 64 KiB document. */
static size_t list_doc(buf *b, const char *op, const char *value, int icase)
{
    put(b, "{\"strategies\":[{\"constraints\":[{\"contextName\":\"v\",\"operator\":\"%s\","
        "\"caseInsensitive\":%s,\"values\":[", op, icase ? "true" : "false");
    size_t n = 0;
    while (b->len + strlen(value) + 64 < DOC_MAX && n < TM_USER_LIST_MAX_VALUES) {
        put(b, "%s\"%s%zu\"", n ? "," : "", value, n % 10);
        n++;
    }
    put(b, "]}]}]}");
    return n;
}

/* ---- environment: segments and flags by name ---- */

typedef struct {
    const tm_segment *seg;
    tm_flag_view flags[16];
    size_t nflags;
} env_data;

static const tm_segment *env_segment(void *ud, const char *name, size_t len)
{
    (void) name;
    (void) len;
    return ((env_data *) ud)->seg;
}

static int env_flag(void *ud, const char *name, size_t len, tm_flag_view *out)
{
    env_data *e = ud;
    for (size_t i = 0; i < e->nflags; i++) {
        if (e->flags[i].len == len && memcmp(e->flags[i].name, name, len) == 0) {
            *out = e->flags[i];
            return 0;
        }
    }
    return -1;
}

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

static volatile int sink;

/* CPU seconds of one evaluation, over as many as fit in secs (at least 2). */
static double measure(const tm_flag_view *f, const tm_context *ctx,
                      const tm_eval_env *env, double secs)
{
    tm_eval_result r;
    long n = 0;
    double t0 = cpu_s(), t;
    do {
        sink += tm_evaluate(f, ctx, env, &r);
        n++;
        t = cpu_s() - t0;
    } while (t < secs || n < 2);
    return t / (double) n;
}

static double base_s;

static void report(const char *name, const char *what, double s)
{
    if (base_s == 0) {
        base_s = s;
    }
    printf("%-22s %12.1f us/eval %11.0fx trivial  %s\n", name, s * 1e6, s / base_s, what);
    fflush(stdout);
}

static char *repeat(size_t n, char c, const char *tail)
{
    char *s = malloc(n + 1);
    if (s == NULL) {
        exit(1);
    }
    memset(s, c, n);
    memcpy(s + n - strlen(tail), tail, strlen(tail));
    s[n] = '\0';
    return s;
}

static void eval_case(const char *name, const char *what, buf *doc, const char *value,
                      const tm_eval_env *env, double secs)
{
    tm_rule *r = rule(doc);
    tm_flag_view f = { "bench", 5, TM_FLAG_ON, 1, 1, r };
    tm_attr a = { "v", 1, value, strlen(value) };
    tm_context ctx;
    tm_context_init(&ctx, "u", 1, &a, 1);
    report(name, what, measure(&f, &ctx, env, secs));
    tm_rule_free(r);
    doc->len = 0;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 0.3;
    if (secs <= 0) {
        fprintf(stderr, "usage: worst_bench [SECONDS]\n");
        return 2;
    }
    buf d = { 0 };
    char what[160];
    char *v4k = repeat(TM_CONTEXT_MAX_VALUE_LEN, 'a', "");
    char *v1k = repeat(TM_REGEX_MAX_SUBJECT, 'a', "!");

    put(&d, "{\"strategies\":[{\"constraints\":[{\"contextName\":\"v\",\"operator\":\"IN\",\"values\":[\"x\"]}]}]}");
    eval_case("trivial", "IN [\"x\"], 1-byte value (the baseline)", &d, "u", NULL, secs);

    size_t n = list_doc(&d, "IN", "aaaaaaaaaaaaaa", 1);
    snprintf(what, sizeof what, "%zu values, caseInsensitive, 15-byte value sharing their prefix", n);
    eval_case("IN", what, &d, "AAAAAAAAAAAAAAA", NULL, secs);

    n = list_doc(&d, "STR_STARTS_WITH", "aaaaaaaaab", 1);
    snprintf(what, sizeof what, "%zu prefixes of 11 bytes, caseInsensitive, 4096-byte value", n);
    eval_case("STR_STARTS_WITH", what, &d, v4k, NULL, secs);

    n = list_doc(&d, "STR_CONTAINS", "aaaaaaaaab", 0);
    snprintf(what, sizeof what, "%zu needles \"aaaaaaaaab<digit>\", 4096-byte value of 'a'", n);
    eval_case("STR_CONTAINS", what, &d, v4k, NULL, secs);

    n = list_doc(&d, "STR_CONTAINS", "aaaaaaaaab", 1);
    snprintf(what, sizeof what, "the same, caseInsensitive");
    eval_case("STR_CONTAINS icase", what, &d, v4k, NULL, secs);

    n = list_doc(&d, "IP_IN_CIDR", "10.1.2.0/2", 0);
    snprintf(what, sizeof what, "%zu CIDRs, an address outside them all", n);
    eval_case("IP_IN_CIDR", what, &d, "192.168.1.1", NULL, secs);

    char *digits = repeat(TM_CONTEXT_MAX_VALUE_LEN, '1', "");
    put(&d, "{\"strategies\":[{\"constraints\":[{\"contextName\":\"v\",\"operator\":\"NUM_LT\",\"value\":5}]}]}");
    eval_case("NUM_LT", "one operand, a 4096-digit value", &d, digits, NULL, secs);
    put(&d, "{\"strategies\":[{\"constraints\":[{\"contextName\":\"v\",\"operator\":\"SEMVER_GT\",\"value\":\"1.2.3\"}]}]}");
    eval_case("SEMVER_GT", "one operand, a 4096-digit value", &d, digits, NULL, secs);
    put(&d, "{\"strategies\":[{\"constraints\":[{\"contextName\":\"v\",\"operator\":\"DATE_AFTER\",\"value\":\"2024-01-01\"}]}]}");
    eval_case("DATE_AFTER", "one operand, a 4096-digit value", &d, digits, NULL, secs);

    const char *bomb = "(?:a|b)*?a*+c|!!";
    put(&d, "{\"strategies\":[{\"constraints\":[{\"contextName\":\"v\",\"operator\":\"REGEX\",\"value\":\"%s\"}]}]}", bomb);
    snprintf(what, sizeof what, "%s over a 1024-byte value (match limit)", bomb);
    eval_case("REGEX", what, &d, v1k, NULL, secs);
    put(&d, "{\"strategies\":[{\"constraints\":[{\"contextName\":\"v\",\"operator\":\"REGEX\",\"value\":\"%s\"}]}]}", bomb);
    eval_case("REGEX too long", "the same over a 4096-byte value (not matched)", &d, v4k, NULL, secs);

    /* many bounded REGEX in one document: inverted, so each holds and the
     * next one runs; 64 per strategy, as many strategies as fit */
    char one[160];
    snprintf(one, sizeof one, "{\"contextName\":\"v\",\"operator\":\"REGEX\",\"value\":\"%s\",\"inverted\":true}", bomb);
    put(&d, "{\"strategies\":[");
    size_t total = 0;
    for (int s = 0; d.len + strlen(one) * 2 + 64 < DOC_MAX && s < 256; s++) {
        put(&d, "%s{\"constraints\":", s ? "," : "");
        total += constraints(&d, one, 64, DOC_MAX - d.len - 64);
        put(&d, ",\"rollout\":{\"percentage\":0}}");
    }
    put(&d, "]}");
    snprintf(what, sizeof what, "%zu inverted bombs in one 64 KiB document", total);
    eval_case("REGEX x document", what, &d, v1k, NULL, secs);

    /* segments: the same heavy segment referenced by every strategy */
    buf sd = { 0 };
    n = list_doc(&sd, "STR_CONTAINS", "aaaaaaaaab", 0);
    char err[256];
    json_t *sj = parse(&sd);
    json_t *cs = json_object_get(json_array_get(json_object_get(sj, "strategies"), 0), "constraints");
    json_t *seg_doc = json_pack("{s:s, s:O}", "name", "heavy", "constraints", cs);
    tm_segment *seg = tm_segment_compile(seg_doc, err, sizeof err);
    json_decref(seg_doc);
    json_decref(sj);
    if (seg == NULL) {
        fprintf(stderr, "worst_bench: segment: %s\n", err);
        return 1;
    }
    env_data ed = { .seg = seg };
    tm_eval_env env = { .ud = &ed, .segment = env_segment, .flag = env_flag };
    put(&d, "{\"strategies\":[");
    for (int s = 0; s < 16; s++) {
        put(&d, "%s{\"segments\":[\"heavy\"]}", s ? "," : "");
    }
    put(&d, "]}");
    snprintf(what, sizeof what, "16 strategies x 1 ref to a STR_CONTAINS segment (%zu needles); "
             "the API allows 256 x 32", n);
    eval_case("segment refs", what, &d, v4k, &env, secs);

    /* dependencies: a chain of 8 flags, each listing its parent 16 times */
    static char names[8][8];
    tm_rule *chain[8];
    for (int i = 7; i >= 0; i--) {
        snprintf(names[i], sizeof names[i], "d%d", i);
        d.len = 0;
        if (i == 7) {
            put(&d, "{}");
        } else {
            put(&d, "{\"dependencies\":[");
            for (int k = 0; k < 16; k++) {
                put(&d, "%s{\"feature\":\"d%d\",\"enabled\":true}", k ? "," : "", i + 1);
            }
            put(&d, "]}");
        }
        chain[i] = rule(&d);
        ed.flags[i] = (tm_flag_view) { names[i], strlen(names[i]), TM_FLAG_ON, 1, 1, chain[i] };
    }
    ed.nflags = 8;
    d.len = 0;
    put(&d, "{\"dependencies\":[{\"feature\":\"d1\"}]}");
    eval_case("dependency chain", "depth 7, 16 dependencies per flag (16^6 parent "
              "evaluations unless memoized)", &d, "u", &env, secs);
    for (int i = 0; i < 8; i++) {
        tm_rule_free(chain[i]);
    }

    tm_segment_free(seg);
    free(sd.s);
    free(d.s);
    free(digits);
    free(v1k);
    free(v4k);
    return 0;
}
