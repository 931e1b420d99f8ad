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
#include <stdint.h>
#include <time.h>

#define DOC_MAX (64 * 1024)     /* TM_HTTP_MAX_BODY of the daemons */
#define TM_MAX_NAME 100         /* a context name */

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

/* CPU seconds of one evaluation, over as many as fit in secs (at least 2);
 * *last: the last one's result. */
static double measure(const tm_flag_view *f, const tm_context *ctx,
                      const tm_eval_env *env, double secs, tm_eval_result *last)
{
    long n = 0;
    double t0 = cpu_s(), t;
    do {
        sink += tm_evaluate(f, ctx, env, last);
        n++;
        t = cpu_s() - t0;
    } while (t < secs || n < 2);
    return t / (double) n;
}

static double base_s;

static void report(const char *name, const char *what, double s, const tm_eval_result *r)
{
    if (base_s == 0) {
        base_s = s;
    }
    printf("%-20s %10.1f us %8.0fx %8lu units %5.2f ns/unit %-15s %s\n", name, s * 1e6,
           s / base_s, r->cost, r->cost ? s * 1e9 / (double) r->cost : 0,
           tm_reason_name(r->reason), what);
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

static void eval_ctx(const char *name, const char *what, buf *doc, const tm_context *ctx,
                     const tm_eval_env *env, double secs)
{
    tm_rule *r = rule(doc);
    tm_flag_view f = { "bench", 5, TM_FLAG_ON, 1, 1, r };
    tm_eval_result res;
    double t = measure(&f, ctx, env, secs, &res);
    report(name, what, t, &res);
    tm_rule_free(r);
    doc->len = 0;
}

static void eval_case(const char *name, const char *what, buf *doc, const char *value,
                      const tm_eval_env *env, double secs)
{
    tm_attr a = { "v", 1, value, strlen(value) };
    tm_context ctx;
    tm_context_init(&ctx, "u", 1, &a, 1);
    eval_ctx(name, what, doc, &ctx, env, secs);
}

static void one_constraint(buf *d, const char *op, const char *operand)
{
    put(d, "{\"strategies\":[{\"constraints\":[{\"contextName\":\"v\",\"operator\":\"%s\",%s}]}]}",
        op, operand);
}

static const char *bomb = "(?:a|b)*?a*+c|!!";

/* Each operator at its worst, one constraint. */
static void operators(buf *d, double secs, const char *v4k, const char *v1k)
{
    char what[160];
    one_constraint(d, "IN", "\"values\":[\"x\"]");
    eval_case("trivial", "IN [\"x\"], 1-byte value (the baseline)", d, "u", NULL, secs);

    size_t n = list_doc(d, "IN", "aaaaaaaaaaaaaa", 1);
    snprintf(what, sizeof what, "%zu values, caseInsensitive, 15-byte value sharing their prefix", n);
    eval_case("IN", what, d, "AAAAAAAAAAAAAAA", NULL, secs);
    n = list_doc(d, "STR_STARTS_WITH", "aaaaaaaaab", 1);
    snprintf(what, sizeof what, "%zu prefixes of 11 bytes, caseInsensitive, 4096-byte value", n);
    eval_case("STR_STARTS_WITH", what, d, v4k, NULL, secs);
    n = list_doc(d, "STR_ENDS_WITH", "baaaaaaaaa", 1);
    snprintf(what, sizeof what, "%zu suffixes of 11 bytes, caseInsensitive, 4096-byte value", n);
    eval_case("STR_ENDS_WITH", what, d, v4k, NULL, secs);
    n = list_doc(d, "STR_CONTAINS", "aaaaaaaaab", 0);
    snprintf(what, sizeof what, "%zu needles \"aaaaaaaaab<digit>\", 4096-byte value of 'a'", n);
    eval_case("STR_CONTAINS", what, d, v4k, NULL, secs);
    list_doc(d, "STR_CONTAINS", "aaaaaaaaab", 1);
    eval_case("STR_CONTAINS icase", "the same, caseInsensitive", d, v4k, NULL, secs);
    n = list_doc(d, "IP_IN_CIDR", "10.1.2.0/2", 0);
    snprintf(what, sizeof what, "%zu CIDRs, an address outside them all", n);
    eval_case("IP_IN_CIDR", what, d, "192.168.1.1", NULL, secs);

    char *digits = repeat(TM_CONTEXT_MAX_VALUE_LEN, '1', "");
    one_constraint(d, "NUM_LT", "\"value\":5");
    eval_case("NUM_LT", "one operand, a 4096-digit value", d, digits, NULL, secs);
    one_constraint(d, "SEMVER_GT", "\"value\":\"1.2.3\"");
    eval_case("SEMVER_GT", "one operand, a 4096-digit value", d, digits, NULL, secs);
    one_constraint(d, "DATE_AFTER", "\"value\":\"2024-01-01\"");
    eval_case("DATE_AFTER", "one operand, a 4096-digit value", d, digits, NULL, secs);
    free(digits);

    char operand[64];
    snprintf(operand, sizeof operand, "\"value\":\"%s\"", bomb);
    one_constraint(d, "REGEX", operand);
    snprintf(what, sizeof what, "%s over a 1024-byte value (match limit)", bomb);
    eval_case("REGEX", what, d, v1k, NULL, secs);
    one_constraint(d, "REGEX", operand);
    eval_case("REGEX too long", "the same over a 4096-byte value (not matched)", d, v4k, NULL, secs);
}

/* Inverted constraints (each holds, so the next one runs), 64 per strategy
 * with a rollout of 0 (so the next strategy runs), as many as fit in a
 * 64 KiB document or as asked. */
static size_t inverted_doc(buf *d, const char *one, size_t max)
{
    size_t total = 0;
    put(d, "{\"strategies\":[");
    for (int s = 0; d->len + strlen(one) * 2 + 64 < DOC_MAX && s < 256 && total < max; s++) {
        put(d, "%s{\"constraints\":", s ? "," : "");
        total += constraints(d, one, max - total < 64 ? max - total : 64, DOC_MAX - d->len - 64);
        put(d, ",\"rollout\":{\"percentage\":0}}");
    }
    put(d, "]}");
    return total;
}

static void refused(const char *name, buf *d)
{
    char err[256];
    json_t *j = parse(d);
    tm_rule *r = tm_rule_compile(j, err, sizeof err);
    json_decref(j);
    printf("%-20s %10s %9s %14s %13s %-15s %s\n", name, "-", "-", "-", "-",
           r ? "ACCEPTED" : "refused", r ? "(should be refused)" : err);
    tm_rule_free(r);
    d->len = 0;
}

/* Many constraints in one document. */
static void documents(buf *d, double secs, const char *v4k, const char *v1k)
{
    char one[200], what[160];
    snprintf(one, sizeof one, "{\"contextName\":\"v\",\"operator\":\"REGEX\",\"value\":\"%s\","
             "\"inverted\":true}", bomb);
    size_t n = inverted_doc(d, one, SIZE_MAX);
    snprintf(what, sizeof what, "%zu inverted REGEX bombs in one 64 KiB document", n);
    refused("REGEX x document", d);
    n = inverted_doc(d, one, 64);
    snprintf(what, sizeof what, "%zu inverted REGEX bombs (the document bound), 1024-byte value", n);
    eval_case("REGEX x 64", what, d, v1k, NULL, secs);

    n = inverted_doc(d, "{\"contextName\":\"v\",\"operator\":\"STR_CONTAINS\",\"values\":[\"b\"],"
                     "\"inverted\":true}", SIZE_MAX);
    snprintf(what, sizeof what, "%zu inverted STR_CONTAINS [\"b\"], 4096-byte value", n);
    eval_case("constraints x strat", what, d, v4k, NULL, secs);

    /* lookups: 256 attributes whose names differ from the field's last byte */
    static char names[TM_CONTEXT_MAX_ATTRS][TM_MAX_NAME + 1];
    static tm_attr attrs[TM_CONTEXT_MAX_ATTRS];
    for (size_t i = 0; i < TM_CONTEXT_MAX_ATTRS; i++) {
        memset(names[i], 'n', TM_MAX_NAME);
        names[i][TM_MAX_NAME - 1] = (char) ('A' + i % 26);
        attrs[i] = (tm_attr) { names[i], TM_MAX_NAME, "x", 1 };
    }
    char field[TM_MAX_NAME + 1];
    memset(field, 'n', TM_MAX_NAME);
    field[TM_MAX_NAME] = '\0';
    snprintf(one, sizeof one, "{\"contextName\":\"%s\",\"operator\":\"NOT_IN\",\"values\":[\"x\"]}",
             field);
    n = inverted_doc(d, one, SIZE_MAX);
    tm_context ctx;
    tm_context_init(&ctx, "u", 1, attrs, TM_CONTEXT_MAX_ATTRS);
    snprintf(what, sizeof what, "%zu NOT_IN on an absent 100-byte name, 256 attributes", n);
    eval_ctx("context lookups", what, d, &ctx, NULL, secs);
}

/* A segment (or a parent flag's document): STR_CONTAINS with as many
 * needles as fit in 64 KiB, none found in the value. */
static json_t *heavy_constraints(void)
{
    buf b = { 0 };
    list_doc(&b, "STR_CONTAINS", "aaaaaaaaab", 0);
    json_t *j = parse(&b);
    free(b.s);
    json_t *cs = json_object_get(json_array_get(json_object_get(j, "strategies"), 0),
                                 "constraints");
    json_incref(cs);
    json_decref(j);
    return cs;
}

static void segments(buf *d, double secs, const char *v4k, env_data *ed, const tm_eval_env *env)
{
    char what[160];
    put(d, "{\"strategies\":[");
    for (int s = 0; s < 256; s++) {
        put(d, "%s{\"segments\":[", s ? "," : "");
        for (int k = 0; k < 32; k++) {
            put(d, "%s\"h\"", k ? "," : "");
        }
        put(d, "]}");
    }
    put(d, "]}");
    eval_case("segment refs", "256 strategies x 32 refs to one STR_CONTAINS segment (4669 "
              "needles): decided once", d, v4k, env, secs);

    put(d, "{\"strategies\":[");
    size_t n = 0;
    for (int s = 0; s < 256 && d->len + 300 < DOC_MAX; s++) {
        put(d, "%s{\"segments\":[", s ? "," : "");
        for (int k = 0; k < 32; k++, n++) {
            put(d, "%s\"%zx\"", k ? "," : "", n);
        }
        put(d, "]}");
    }
    put(d, "]}");
    (void) ed;
    snprintf(what, sizeof what, "%zu distinct segments, each STR_CONTAINS (4669 needles)", n);
    eval_case("distinct segments", what, d, v4k, env, secs);
}

/* 16 dependencies on 16 parents, each parent a heavy document. */
static void dependencies(buf *d, double secs, const char *v4k, env_data *ed,
                         const tm_eval_env *env, json_t *heavy)
{
    static char names[16][8];
    tm_rule *parents[16];
    char err[256];
    json_t *doc = json_pack("{s:[{s:O}]}", "strategies", "constraints", heavy);
    for (int i = 0; i < 16; i++) {
        snprintf(names[i], sizeof names[i], "p%d", i);
        parents[i] = doc ? tm_rule_compile(doc, err, sizeof err) : NULL;
        if (parents[i] == NULL) {
            fprintf(stderr, "worst_bench: parent: %s\n", err);
            exit(1);
        }
        ed->flags[i] = (tm_flag_view) { names[i], strlen(names[i]), TM_FLAG_ON, 1, 1, parents[i] };
    }
    json_decref(doc);
    ed->nflags = 16;
    put(d, "{\"dependencies\":[");
    for (int i = 0; i < 16; i++) {
        put(d, "%s{\"feature\":\"p%d\",\"enabled\":false}", i ? "," : "", i);
    }
    put(d, "]}");
    eval_case("dependencies", "16 parents, each a STR_CONTAINS document of 4669 needles "
              "(one level deep, as Unleash)", d, v4k, env, secs);
    for (int i = 0; i < 16; i++) {
        tm_rule_free(parents[i]);
    }
    ed->nflags = 0;
}

/* CPU seconds of one bulk request over nflags copies of f (as the module's
 * bulk OFREP: one request budget of budgets evaluation budgets; 0: none,
 * as before it had one); *units: what it paid, *refused: flags refused. */
static double bulk_request(const tm_flag_view *f, const tm_context *ctx, size_t nflags,
                           unsigned budgets, double secs, uint64_t *units,
                           unsigned long *refused)
{
    tm_eval_result res;
    long n = 0;
    double t0 = cpu_s(), t;
    do {
        tm_request_budget rb;
        tm_request_budget_init(&rb, (uint64_t) budgets * TM_EVAL_BUDGET);
        *units = 0;
        for (size_t i = 0; i < nflags; i++) {
            sink += tm_evaluate_in(f, ctx, NULL, budgets ? &rb : NULL, &res);
            *units += res.cost;
        }
        *refused = rb.refused;
        n++;
        t = cpu_s() - t0;
    } while (t < secs || n < 2);
    return t / (double) n;
}

/* Bulk OFREP evaluates every flag: nflags worst documents in one request,
 * with and without the request budget, against nflags trivial ones. */
static void bulk(buf *d, double secs, const char *v1k, size_t nflags)
{
    /* the REGEX bomb at its whole limit: within one budget, and the most
     * CPU per unit of the documents that are */
    char operand[64];
    snprintf(operand, sizeof operand, "\"value\":\"%s\"", bomb);
    one_constraint(d, "REGEX", operand);
    tm_rule *worst = rule(d);
    d->len = 0;
    put(d, "{\"strategies\":[{\"constraints\":[{\"contextName\":\"v\",\"operator\":\"IN\","
        "\"values\":[\"x\"]}]}]}");
    tm_rule *plain = rule(d);
    d->len = 0;
    tm_flag_view fw = { "bench", 5, TM_FLAG_ON, 1, 1, worst };
    tm_flag_view fp = { "bench", 5, TM_FLAG_ON, 1, 1, plain };
    tm_attr a = { "v", 1, v1k, strlen(v1k) };
    tm_context ctx;
    tm_context_init(&ctx, "u", 1, &a, 1);
    uint64_t units;
    unsigned long refused;
    double tp = bulk_request(&fp, &ctx, nflags, TM_REQUEST_BUDGET_DEFAULT, secs, &units, &refused);
    printf("%-20s %10.1f us %8s %10llu units %20s %zu flags of IN [\"x\"], %lu refused\n",
           "bulk plain", tp * 1e6, "1x", (unsigned long long) units, "", nflags, refused);
    /* the worst flags: a REGEX bomb over a 1024-byte value each */
    double tw = bulk_request(&fw, &ctx, nflags, 0, secs, &units, &refused);
    printf("%-20s %10.1f us %7.0fx %10llu units %20s %zu worst flags, no request budget (before)\n",
           "bulk worst", tw * 1e6, tw / tp, (unsigned long long) units, "", nflags);
    tw = bulk_request(&fw, &ctx, nflags, TM_REQUEST_BUDGET_DEFAULT, secs, &units, &refused);
    printf("%-20s %10.1f us %7.0fx %10llu units %20s %zu worst flags, request budget %u: "
           "%lu refused\n", "bulk worst, budget", tw * 1e6, tw / tp, (unsigned long long) units,
           "", nflags, TM_REQUEST_BUDGET_DEFAULT, refused);
    fflush(stdout);
    tm_rule_free(worst);
    tm_rule_free(plain);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 0.3;
    if (secs <= 0) {
        fprintf(stderr, "usage: worst_bench [SECONDS]\n");
        return 2;
    }
    buf d = { 0 };
    char *v4k = repeat(TM_CONTEXT_MAX_VALUE_LEN, 'a', "");
    char *v1k = repeat(TM_REGEX_MAX_SUBJECT, 'a', "!");
    printf("%-20s %13s %9s %14s %13s %-15s %s\n", "case", "CPU/eval", "ratio", "budget",
           "price", "reason", "what");
    operators(&d, secs, v4k, v1k);
    documents(&d, secs, v4k, v1k);

    char err[256];
    json_t *heavy = heavy_constraints();
    json_t *seg_doc = json_pack("{s:s, s:O}", "name", "heavy", "constraints", heavy);
    tm_segment *seg = seg_doc ? tm_segment_compile(seg_doc, err, sizeof err) : NULL;
    json_decref(seg_doc);
    if (seg == NULL) {
        fprintf(stderr, "worst_bench: segment: %s\n", err);
        return 1;
    }
    env_data ed = { .seg = seg };
    tm_eval_env env = { .ud = &ed, .segment = env_segment, .flag = env_flag };
    segments(&d, secs, v4k, &ed, &env);
    dependencies(&d, secs, v4k, &ed, &env, heavy);
    bulk(&d, secs, v1k, 1000);

    json_decref(heavy);
    tm_segment_free(seg);
    free(d.s);
    free(v1k);
    free(v4k);
    return 0;
}
