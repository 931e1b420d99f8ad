/* Evaluation cost of lib's engine, in one run (not a test):
 *   plain       a flag that is on, no rule (the boolean flag)
 *   percentage  the original {"type":"PERCENTAGE"} rule (SHA-1 bucket)
 *   targeted    five constraints (IN, STR_ENDS_WITH, SEMVER_GTE,
 *               IP_IN_CIDR, NUM_LT), a 50% rollout and three weighted
 *               variants with payloads, as Unleash users write them
 * Each case evaluates the same 1024 rotating contexts (built without
 * allocation, as the nginx module builds them) and prints ns/evaluation,
 * evaluations/s and its cost relative to the plain flag (and to the
 * original percentage rule).
 *
 *   engine_bench [ITERATIONS]              all cases (default 2000000 each)
 *   engine_bench --only CASE ITERATIONS    one case, for callgrind:
 *     valgrind --tool=callgrind --callgrind-out-file=/dev/null \
 *       engine_bench --only targeted 100000
 *   instructions/evaluation = (Ir at 200000 - Ir at 100000) / 100000. */
#include "tm_context.h"
#include "tm_rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NCTX 1024

static const char *const targeted_doc =
    "{\"strategies\":[{\"constraints\":["
    "{\"contextName\":\"country\",\"operator\":\"IN\",\"values\":[\"BR\",\"PT\",\"AR\",\"MX\",\"CL\"]},"
    "{\"contextName\":\"email\",\"operator\":\"STR_ENDS_WITH\",\"values\":[\"@corp.io\",\"@example.com\"],"
    " \"caseInsensitive\":true},"
    "{\"contextName\":\"appVersion\",\"operator\":\"SEMVER_GTE\",\"value\":\"2.3.0\"},"
    "{\"contextName\":\"remoteAddress\",\"operator\":\"IP_IN_CIDR\",\"values\":[\"10.0.0.0/8\",\"192.168.0.0/16\"]},"
    "{\"contextName\":\"age\",\"operator\":\"NUM_LT\",\"value\":65}],"
    "\"rollout\":{\"percentage\":50,\"stickiness\":\"default\"}}],"
    "\"variants\":["
    "{\"name\":\"blue\",\"weight\":334,\"payload\":{\"type\":\"string\",\"value\":\"#00f\"}},"
    "{\"name\":\"green\",\"weight\":333,\"payload\":{\"type\":\"json\",\"value\":\"{\\\"c\\\":\\\"#0f0\\\"}\"}},"
    "{\"name\":\"red\",\"weight\":333,\"payload\":{\"type\":\"string\",\"value\":\"#f00\"}}]}";

typedef struct {
    char user[16];
    tm_attr attrs[6];
    tm_context ctx;
} bench_ctx;

static bench_ctx ctxs[NCTX];

static void make_contexts(void)
{
    static const char *const countries[] = { "BR", "PT", "US", "MX" };
    for (int i = 0; i < NCTX; i++) {
        bench_ctx *b = &ctxs[i];
        snprintf(b->user, sizeof b->user, "user-%d", i);
        /* three in four match every constraint, so most evaluations walk
         * all five and then the rollout and the variants */
        const char *country = countries[i % 4];
        b->attrs[0] = (tm_attr) { "userId", 6, b->user, strlen(b->user) };
        b->attrs[1] = (tm_attr) { "country", 7, country, 2 };
        b->attrs[2] = (tm_attr) { "email", 5, "Someone@Corp.io", 15 };
        b->attrs[3] = (tm_attr) { "appVersion", 10, "2.4.1", 5 };
        b->attrs[4] = (tm_attr) { "remoteAddress", 13, "10.20.30.40", 11 };
        b->attrs[5] = (tm_attr) { "age", 3, "37", 2 };
        tm_context_init(&b->ctx, b->user, strlen(b->user), b->attrs, 6);
    }
}

static tm_rule *compile(const char *doc)
{
    char err[256];
    json_error_t je;
    json_t *j = json_loads(doc, 0, &je);
    tm_rule *r = j ? tm_rule_compile(j, err, sizeof err) : NULL;
    json_decref(j);
    if (r == NULL) {
        fprintf(stderr, "engine_bench: cannot compile: %s\n", j ? err : je.text);
        exit(1);
    }
    return r;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static volatile unsigned sink;

/* Seconds for n evaluations; counts ons and variants so nothing is elided. */
static double run(const tm_flag_view *f, long n, unsigned *on, unsigned *variants)
{
    tm_eval_result r;
    unsigned ons = 0, vars = 0;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        ons += (unsigned) tm_evaluate(f, &ctxs[i & (NCTX - 1)].ctx, NULL, &r);
        vars += r.variant != NULL;
    }
    double t = now_s() - t0;
    sink = ons + vars;
    *on = ons;
    *variants = vars;
    return t;
}

int main(int argc, char **argv)
{
    long n = 2000000;
    const char *only = NULL;
    if (argc >= 3 && strcmp(argv[1], "--only") == 0) {
        only = argv[2];
        n = argc >= 4 ? atol(argv[3]) : 100000;
    } else if (argc >= 2) {
        n = atol(argv[1]);
    }
    if (n <= 0) {
        fprintf(stderr, "usage: engine_bench [ITERATIONS] | --only plain|percentage|targeted N\n");
        return 2;
    }
    make_contexts();
    tm_rule *pct = compile("{\"type\":\"PERCENTAGE\",\"value\":50}");
    tm_rule *tgt = compile(targeted_doc);
    const struct {
        const char *name;
        tm_flag_view f;
    } cases[] = {
        { "plain", { "bench-flag", 10, TM_FLAG_ON, 0, 0, NULL } },
        { "percentage", { "bench-flag", 10, TM_FLAG_ON, 1, 1, pct } },
        { "targeted", { "bench-flag", 10, TM_FLAG_ON, 1, 1, tgt } },
    };
    double base = 0, sha1 = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (only && strcmp(only, cases[i].name) != 0) {
            continue;
        }
        unsigned on, vars;
        run(&cases[i].f, n / 10 + 1, &on, &vars);       /* warm up */
        double t = run(&cases[i].f, n, &on, &vars);
        double ns = t * 1e9 / (double) n;
        if (i == 0) {
            base = ns;
        } else if (i == 1) {
            sha1 = ns;
        }
        printf("%-11s %9.1f ns/eval %12.0f evals/s  on %5.1f%%  variant %5.1f%%",
               cases[i].name, ns, (double) n / t, 100.0 * on / (double) n,
               100.0 * vars / (double) n);
        if (base > 0 && i > 0) {
            printf("  %6.1fx plain", ns / base);
        }
        if (sha1 > 0 && i > 1) {
            printf("  %4.2fx percentage", ns / sha1);
        }
        printf("\n");
    }
    tm_rule_free(pct);
    tm_rule_free(tgt);
    return 0;
}
