/* The rule language and the evaluation decision, shared by the targeting
 * daemon (validation) and the nginx module (evaluation). No I/O, and
 * neither tm_decide() nor tm_evaluate() allocates, so both are safe on
 * nginx's request path. docs/rules.md describes the documents. */
#ifndef TM_RULES_H
#define TM_RULES_H
#include "tm_context.h"

#include <jansson.h>
#include <stddef.h>

#define TM_RULE_TYPES_ACCEPTED "PERCENTAGE, USER_LIST"
#define TM_USER_LIST_MAX_VALUES 10000
#define TM_USER_VALUE_MAX_LEN 1024

typedef enum {
    TM_RULE_PERCENTAGE = 1,
    TM_RULE_USER_LIST,
    TM_RULE_STRATEGIES   /* {"strategies","variants","dependencies"} */
} tm_rule_type;

/* A compiled strategies document or segment: private to lib/tm_rules*.c. */
typedef struct tm_program tm_program;
typedef struct tm_segment tm_segment;

typedef struct {
    const char *s;
    size_t len;
} tm_str;

typedef struct {
    tm_rule_type type;
    double percentage;   /* PERCENTAGE: 0..100, bucket < percentage */
    tm_str *users;       /* USER_LIST: sorted by (len, bytes) for bsearch */
    size_t nusers;
    char *arena;         /* one block holding every user string */
    tm_program *program; /* STRATEGIES: strategies, variants, dependencies */
} tm_rule;

typedef enum {
    TM_REASON_UNKNOWN = 0,     /* flag not found */
    TM_REASON_DISABLED,        /* flag exists but is off */
    TM_REASON_STATIC,          /* on, no active rule */
    TM_REASON_TARGETING_MATCH, /* a targeting rule matched */
    TM_REASON_SPLIT,           /* percentage rollout */
    TM_REASON_DEFAULT,         /* a rule applied and did not match */
    TM_REASON_ERROR            /* rule unusable: original semantics say false */
} tm_reason;

typedef struct {
    int value;
    tm_reason reason;
} tm_decision;

/* Flag state as the snapshot knows it. */
typedef enum {
    TM_FLAG_MISSING = -1,
    TM_FLAG_OFF = 0,
    TM_FLAG_ON = 1
} tm_flag_state;

/* Checks a rules document, the original {"type":...} ones and the
 * strategies format; 0 if valid, else -1 with a message for a 400 that
 * starts with the path to the bad part, e.g.
 * strategies[1].constraints[0].operator: unknown operator "FOO"; ... */
int tm_rules_check(const json_t *doc, char *err, size_t errlen);

/* Compiles a document (checked here again); NULL with err on failure. */
tm_rule *tm_rule_compile(const json_t *doc, char *err, size_t errlen);
void tm_rule_free(tm_rule *r);

/* The decision, in the original order:
 *  1. flag missing or off -> false;  2. no rule or rule off -> true;
 *  3. PERCENTAGE -> sha1 bucket < value;  USER_LIST -> user listed;
 *  4. rule present but unusable (rule == NULL, rule_present) -> false. */
tm_decision tm_decide(tm_flag_state flag, int rule_present, int rule_enabled,
                      const tm_rule *rule, const char *user, size_t ulen,
                      const char *flag_name, size_t flen);

/* "STATIC", "SPLIT", ... as OFREP names them. */
const char *tm_reason_name(tm_reason r);

/* ---- Segments: named constraint sets, {"name","constraints":[...]} ---- */

int tm_segment_check(const json_t *doc, char *err, size_t errlen);
tm_segment *tm_segment_compile(const json_t *doc, char *err, size_t errlen);
void tm_segment_free(tm_segment *s);
const char *tm_segment_name(const tm_segment *s);
/* 1 if every constraint holds for ctx (an empty segment matches all). */
int tm_segment_match(const tm_segment *s, const tm_context *ctx);

/* ---- Evaluation with a context ---- */

/* One flag as the snapshot knows it. rule_present with rule == NULL means
 * the stored document did not compile: ERROR, value false (as tm_decide). */
typedef struct {
    const char *name;
    size_t len;
    tm_flag_state state;
    int rule_present;
    int rule_enabled;
    const tm_rule *rule;
} tm_flag_view;

/* What tm_evaluate may ask the caller, all optional (NULL). */
typedef struct {
    void *ud;
    /* The compiled segment called name, or NULL if unknown: a strategy that
     * references an unknown segment does not match. */
    const tm_segment *(*segment)(void *ud, const char *name, size_t len);
    /* Fills *out for the flag called name (for dependencies); 0, or -1 if
     * there is no such flag (the dependency is then unmet). Dependencies are
     * one level deep, as Unleash's: a parent with dependencies of its own
     * is never satisfied, so evaluation never recurses further. */
    int (*flag)(void *ud, const char *name, size_t len, tm_flag_view *out);
    /* Randomness for "random" stickiness (and a context without any
     * stickiness value); NULL: a per-thread xorshift. */
    uint32_t (*random)(void *ud);
} tm_eval_env;

typedef enum {
    TM_PAYLOAD_NONE = 0,
    TM_PAYLOAD_STRING,    /* payload is the raw string (JSON-escape it) */
    TM_PAYLOAD_JSON,      /* payload is compact JSON text */
    TM_PAYLOAD_NUMBER,    /* payload is a JSON number's text */
    TM_PAYLOAD_BOOLEAN    /* "true" or "false" */
} tm_payload_type;

/* Pointers point into the compiled rule (NUL-terminated): valid while it is. */
typedef struct {
    int value;                  /* the flag's on/off: OFREP metadata.enabled */
    tm_reason reason;
    const char *variant;        /* NULL: no variant */
    size_t variant_len;
    tm_payload_type payload_type;
    const char *payload;        /* NULL when payload_type is NONE */
    size_t payload_len;
    int strategy;               /* index of the matching strategy, else -1 */
    const char *error;          /* reason ERROR: why, a static string */
    unsigned long cost;         /* units of the evaluation budget it used */
} tm_eval_result;

/* What one evaluation may cost, in units (about 1 ms of CPU at worst,
 * docs/rules.md "Worst cases"): every part of the document and of its
 * segments and parents that it reads is paid for before it runs. An
 * evaluation that would exceed it stops there: false, reason ERROR, error
 * "over the evaluation budget". */
#define TM_EVAL_BUDGET 1000000u
#define TM_EVAL_OVER_BUDGET "over the evaluation budget"

/* Evaluations of this process stopped by the budget since it started
 * (every thread; a relaxed atomic counter), for /metrics. */
unsigned long tm_rules_over_budget(void);

/* ---- A budget for the evaluations of one request ----
 * A request that evaluates many flags (bulk OFREP: every flag of an
 * environment) pays them all from one budget, so that what it costs is
 * bounded whatever the number of flags and their rules: each evaluation
 * may spend at most TM_EVAL_BUDGET, and at most what the request has left.
 * Planned like the evaluation budget: every step is paid before it runs. */

/* The default, in evaluation budgets (about 20 ms of CPU at worst), and
 * the most a configuration may allow. */
#define TM_REQUEST_BUDGET_DEFAULT 20u
#define TM_REQUEST_BUDGET_MAX 1000u
#define TM_EVAL_OVER_REQUEST_BUDGET \
    "over the request's evaluation budget: too many costly flags in one request"

typedef struct {
    uint64_t left;          /* units the request may still spend */
    unsigned long refused;  /* its evaluations stopped by it */
} tm_request_budget;

void tm_request_budget_init(tm_request_budget *rb, uint64_t units);

/* Evaluations of this process stopped by their request's budget since it
 * started (as tm_rules_over_budget), for /metrics. */
unsigned long tm_rules_over_request_budget(void);

/* Evaluates flag for ctx (ctx may be NULL: no identity, no attributes).
 *  1. flag missing -> false, UNKNOWN; off -> false, DISABLED;
 *  2. no rule or rule off -> true, STATIC; rule unusable -> false, ERROR;
 *  3. PERCENTAGE / USER_LIST -> as tm_decide with ctx's identity;
 *  4. strategies documents: dependencies, then the first matching strategy,
 *     then variants; see docs/rules.md for values and reasons;
 *  5. over TM_EVAL_BUDGET -> false, ERROR, error TM_EVAL_OVER_BUDGET.
 * Never allocates; returns out->value. */
int tm_evaluate(const tm_flag_view *flag, const tm_context *ctx,
                const tm_eval_env *env, tm_eval_result *out);

/* tm_evaluate, paid from rb too (rb NULL: tm_evaluate). The evaluation may
 * spend the smaller of TM_EVAL_BUDGET and rb->left, and what it spent
 * (out->cost) is taken from rb->left. Stopped because rb->left was the
 * smaller: false, ERROR, error TM_EVAL_OVER_REQUEST_BUDGET, rb->refused
 * and tm_rules_over_request_budget() count it; otherwise as tm_evaluate.
 * What an evaluation costs depends on the flag and the context alone
 * (ctx->now_ms included), except where a rule with random stickiness
 * decides which strategies are tried next: for the same flags, evaluated
 * in the same order with the same context, the same ones are refused.
 * Flags without an active rule cost nothing: they are never refused. */
int tm_evaluate_in(const tm_flag_view *flag, const tm_context *ctx,
                   const tm_eval_env *env, tm_request_budget *rb,
                   tm_eval_result *out);

/* Names a rule refers to, so a writer can check they exist (the targeting
 * daemon) or a reader can resolve them ahead (the module). NULL past the
 * end; index from 0. */
const char *tm_rule_segment_ref(const tm_rule *r, size_t i, size_t *len);
const char *tm_rule_dependency_ref(const tm_rule *r, size_t i, size_t *len);
#endif
