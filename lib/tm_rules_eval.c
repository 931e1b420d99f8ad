/* Evaluation of compiled rules: no allocation, no I/O, so that it can run
 * on nginx's request path, and a budget (tm_rules_int.h) so that it ends
 * soon whatever the document and the context. Operators' match functions
 * and what they cost are in tm_rules_ops.c. */
#include "tm_rules_int.h"
#include "tm_hash.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Prices of the evaluation's own steps, in budget units (calibrated with
 * bench/worst_bench as the operators' are). */
#define COST_FLAG 400           /* evaluating a flag, before its document */
#define COST_LOOKUP 8           /* a context lookup, plus per attribute: */
#define COST_ATTR 3
#define COST_REF 32             /* a segment or parent flag looked up by name, */
#define COST_BYTE 1             /* plus per byte of the name; a hashed byte */

/* Segments already decided in this evaluation of a program, by their index
 * in its segrefs: each is evaluated once however often it is referenced. */
#define MEMO_BYTES ((TM_MAX_STRATEGIES * TM_MAX_SEGMENT_REFS + 7) / 8)

typedef struct {
    unsigned char known[MEMO_BYTES];
    unsigned char holds[MEMO_BYTES];
} seg_memo;

typedef struct {
    const tm_context *ctx;
    const tm_eval_env *env;
    tm_budget *b;
} ev;

static atomic_ulong stat_over_budget;
static atomic_ulong stat_over_request;

int tm_budget_take(tm_budget *b, uint64_t n)
{
    if (b->over || n > b->limit - b->used) {
        b->over = 1;
        return 0;
    }
    b->used += n;
    return 1;
}

unsigned long tm_rules_over_budget(void)
{
    return atomic_load_explicit(&stat_over_budget, memory_order_relaxed);
}

unsigned long tm_rules_over_request_budget(void)
{
    return atomic_load_explicit(&stat_over_request, memory_order_relaxed);
}

int64_t tm_eval_now_ms(const tm_context *ctx)
{
    if (ctx && ctx->now_ms) {
        return ctx->now_ms;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const tm_context empty_ctx = { NULL, 0, NULL, 0, 0, NULL };

/* The value of a context field; 0 if present (non-empty), -1 if absent. */
static int field_value(const tm_context *ctx, const tm_field *f, tm_str *out)
{
    const tm_attr *a;
    switch (f->kind) {
    case F_USER_ID:
        if ((a = tm_context_get(ctx, "userId", 6)) == NULL) {
            break;
        }
        out->s = a->value;
        out->len = a->value_len;
        return 0;
    case F_TARGETING_KEY:
        if ((a = tm_context_get(ctx, "targetingKey", 12)) == NULL) {
            break;
        }
        out->s = a->value;
        out->len = a->value_len;
        return 0;
    default:
        if ((a = tm_context_get(ctx, f->name.s, f->name.len)) == NULL) {
            return -1;
        }
        out->s = a->value;
        out->len = a->value_len;
        return 0;
    }
    /* userId and targetingKey both fall back to the identity */
    if (ctx->key && ctx->key_len) {
        out->s = ctx->key;
        out->len = ctx->key_len;
        return 0;
    }
    return -1;
}

/* A context lookup, paid first: 0 and out set if present, -1 if absent or
 * over budget (then b->over). */
static int lookup(const ev *e, const tm_field *f, tm_str *out)
{
    if (!tm_budget_take(e->b, COST_LOOKUP + (uint64_t) e->ctx->nattrs * COST_ATTR)) {
        return -1;
    }
    return field_value(e->ctx, f, out);
}

/* Unleash's rules: an absent (or empty) field satisfies only NOT_IN, and
 * DATE_ operators on currentTime use the clock (the operators' absent
 * hooks); then "inverted" negates the outcome. Over budget: 0, inverted or
 * not (the evaluation's answer is then ERROR anyway). */
static int constraint_holds(const ev *e, const tm_constraint *k)
{
    tm_str v;
    int r;
    if (lookup(e, &k->field, &v) == 0) {
        if (!tm_budget_take(e->b, k->op->cost ? k->op->cost(k, v.len) : 0)) {
            return 0;
        }
        r = k->op->match(k, v.s, v.len, e->b);
    } else {
        r = k->op->absent ? k->op->absent(k, e->ctx) : 0;
    }
    return e->b->over ? 0 : r ^ k->inverted;
}

static int constraints_hold(const ev *e, const tm_constraints *cs)
{
    for (size_t i = 0; i < cs->n; i++) {
        if (!constraint_holds(e, &cs->c[i])) {
            return 0;
        }
    }
    return 1;
}

/* Alone, a segment gets a budget of its own: over it, it does not hold. */
int tm_segment_match(const tm_segment *s, const tm_context *ctx)
{
    tm_budget b = { 0, TM_EVAL_BUDGET, 0 };
    ev e = { ctx ? ctx : &empty_ctx, NULL, &b };
    return constraints_hold(&e, &s->cs) && !b.over;
}

static uint32_t next_random(const tm_eval_env *env)
{
    if (env && env->random) {
        return env->random(env->ud);
    }
    static _Thread_local uint32_t x;
    if (x == 0) {
        x = (uint32_t) (uintptr_t) &x ^ (uint32_t) tm_eval_now_ms(NULL) ^ 0x9e3779b9u;
        x = x ? x : 1;
    }
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

#define RANDOM_TEXT 12

/* The value a rollout or variant choice sticks to. Default: userId, then
 * sessionId (then remoteAddress for variants), else random. A named field
 * that is absent: -1 for a rollout (Unleash then says no), random for
 * variants. */
static int sticky_value(const ev *e, const tm_sticky *st, int variants,
                        char rnd[RANDOM_TEXT], tm_str *out)
{
    static const tm_field user_id = { { "userId", 6 }, F_USER_ID };
    static const tm_field session_id = { { "sessionId", 9 }, F_ATTR };
    static const tm_field remote = { { "remoteAddress", 13 }, F_ATTR };
    switch (st->kind) {
    case S_DEFAULT:
        if (lookup(e, &user_id, out) == 0 || lookup(e, &session_id, out) == 0
            || (variants && lookup(e, &remote, out) == 0)) {
            return 0;
        }
        break;
    case S_FIELD:
        if (lookup(e, &st->field, out) == 0) {
            return 0;
        }
        if (!variants) {
            return -1;
        }
        break;
    case S_RANDOM:
        break;
    }
    int n = snprintf(rnd, RANDOM_TEXT, "%u", (unsigned) (next_random(e->env) % 100000u));
    out->s = rnd;
    out->len = n > 0 ? (size_t) n : 0;
    return 0;
}

static int override_matches(const ev *e, const tm_override *o)
{
    tm_str v;
    return lookup(e, &o->field, &v) == 0
           && tm_budget_take(e->b, (uint64_t) (v.len + COST_LOOKUP) * 16)
           && tm_str_sorted_has(o->values, o->nvalues, v.s, v.len);
}

/* Hashing a stickiness value with its group (rollouts, variants). A random
 * value (sticky_value's rnd) is paid at its longest, so that the length of
 * the draw does not change what the evaluation costs (which flags of a
 * request its budget covers, tm_evaluate_in). */
static int pay_hash(const ev *e, const tm_str *sv, const char *rnd, const tm_str *group)
{
    size_t len = sv->s == rnd ? RANDOM_TEXT : sv->len;
    return tm_budget_take(e->b, (uint64_t) (len + group->len) * COST_BYTE);
}

/* Picks a variant: an override first, then by weight on
 * normalizedValue(stickiness, group, total, 86028157). 1 by override,
 * 2 by weight, 0 none. */
static int pick_variant(const ev *e, const tm_variants *vs, const tm_str *group,
                        const tm_variant **out)
{
    *out = NULL;
    if (vs->has_overrides) {
        for (size_t i = 0; i < vs->n; i++) {
            for (size_t j = 0; j < vs->v[i].noverrides; j++) {
                if (override_matches(e, &vs->v[i].overrides[j])) {
                    *out = &vs->v[i];
                    return 1;
                }
            }
        }
    }
    if (vs->total == 0) {
        return 0;
    }
    char rnd[RANDOM_TEXT];
    tm_str sv;
    sticky_value(e, &vs->sticky, 1, rnd, &sv);
    if (!pay_hash(e, &sv, rnd, group)) {
        return 0;
    }
    uint32_t target = tm_unleash_normalized(sv.s, sv.len, group->s, group->len,
                                            vs->total, TM_UNLEASH_VARIANT_SEED);
    uint32_t acc = 0;
    for (size_t i = 0; i < vs->n; i++) {
        if (vs->v[i].weight == 0) {
            continue;
        }
        acc += vs->v[i].weight;
        if (acc >= target) {
            *out = &vs->v[i];
            return 2;
        }
    }
    return 0;
}

static void set_variant(tm_eval_result *out, const tm_variant *v)
{
    out->variant = v->name.s;
    out->variant_len = v->name.len;
    out->payload_type = v->ptype;
    out->payload = v->payload.s;
    out->payload_len = v->payload.len;
}

static int segment_holds(const ev *e, const tm_strategy *s, size_t i)
{
    const tm_str *name = &s->segments[i];
    if (!tm_budget_take(e->b, COST_REF + name->len * COST_BYTE)) {
        return 0;
    }
    const tm_segment *seg = e->env && e->env->segment
        ? e->env->segment(e->env->ud, name->s, name->len) : NULL;
    return seg != NULL && constraints_hold(e, &seg->cs);
}

static int segments_hold(const ev *e, const tm_strategy *s, seg_memo *m)
{
    for (size_t i = 0; i < s->nsegments; i++) {
        size_t at = s->segidx[i] / 8;
        unsigned char bit = (unsigned char) (1u << (s->segidx[i] % 8));
        if (!(m->known[at] & bit)) {
            if (segment_holds(e, s, i)) {
                m->holds[at] |= bit;
            }
            if (e->b->over) {
                return 0;       /* not known: it was not decided */
            }
            m->known[at] |= bit;
        }
        if (!(m->holds[at] & bit)) {
            return 0;
        }
    }
    return 1;
}

static int rollout_holds(const ev *e, const tm_strategy *s, const tm_str *group)
{
    if (!s->has_rollout) {
        return 1;
    }
    if (!(s->percentage > 0)) {
        return 0;
    }
    tm_str sv;
    if (s->percentage >= 100) {
        /* a stickiness field the context lacks says no, even at 100 % */
        return s->sticky.kind != S_FIELD || lookup(e, &s->sticky.field, &sv) == 0;
    }
    char rnd[RANDOM_TEXT];
    if (sticky_value(e, &s->sticky, 0, rnd, &sv) != 0 || !pay_hash(e, &sv, rnd, group)) {
        return 0;
    }
    return tm_unleash_normalized(sv.s, sv.len, group->s, group->len, 100,
                                 TM_UNLEASH_STRATEGY_SEED) <= s->percentage;
}

static void eval_flag(const ev *e, const tm_flag_view *f, tm_eval_result *out);

static void set_error(tm_eval_result *out, const char *why)
{
    out->value = 0;
    out->reason = TM_REASON_ERROR;
    out->error = why;
    out->variant = NULL;
    out->payload = NULL;
    out->payload_type = TM_PAYLOAD_NONE;
}

/* 1 if the flag's rule has dependencies of its own. */
static int has_dependencies(const tm_flag_view *f)
{
    return f->state == TM_FLAG_ON && f->rule_present && f->rule_enabled && f->rule
           && f->rule->type == TM_RULE_STRATEGIES && f->rule->program
           && f->rule->program->ndeps > 0;
}

/* As Unleash: one level only, so a parent with dependencies of its own (a
 * chain, or a cycle) is never satisfied; a parent on without a variant has
 * Unleash's "disabled" variant. 1 if met, 0 if not, -1 on error (out set). */
static int dependency_met(const ev *e, const tm_dependency *d, tm_eval_result *out)
{
    tm_flag_view pv;
    if (!tm_budget_take(e->b, COST_REF + d->feature.len * COST_BYTE)) {
        return 0;
    }
    if (e->env == NULL || e->env->flag == NULL
        || e->env->flag(e->env->ud, d->feature.s, d->feature.len, &pv) != 0) {
        return 0;                       /* an unknown parent is never on */
    }
    if (has_dependencies(&pv)) {
        return 0;
    }
    tm_eval_result pr;
    eval_flag(e, &pv, &pr);
    if (pr.reason == TM_REASON_ERROR) {
        set_error(out, pr.error ? pr.error : "a dependency could not be evaluated");
        return -1;
    }
    if (!d->enabled) {
        return !pr.value;
    }
    if (!pr.value) {
        return 0;
    }
    if (d->nvariants == 0) {
        return 1;
    }
    return pr.variant ? tm_str_sorted_has(d->variants, d->nvariants, pr.variant, pr.variant_len)
           : tm_str_sorted_has(d->variants, d->nvariants, "disabled", 8);
}

/* The first strategy that holds, or p->ns. */
static size_t first_strategy(const ev *e, const tm_program *p, const tm_str *flag_group)
{
    seg_memo memo;
    size_t nbytes = (p->nsegrefs + 7) / 8;
    memset(memo.known, 0, nbytes);
    memset(memo.holds, 0, nbytes);
    for (size_t i = 0; i < p->ns; i++) {
        const tm_strategy *s = &p->s[i];
        const tm_str *g = s->group.s ? &s->group : flag_group;
        if (!s->disabled && constraints_hold(e, &s->cs)
            && segments_hold(e, s, &memo) && rollout_holds(e, s, g)) {
            return i;
        }
    }
    return p->ns;
}

static void eval_program(const ev *e, const tm_program *p, const tm_flag_view *f,
                         tm_eval_result *out)
{
    for (size_t i = 0; i < p->ndeps; i++) {
        int met = dependency_met(e, &p->deps[i], out);
        if (met < 0) {
            return;
        }
        if (!met) {
            out->reason = TM_REASON_DEFAULT;
            return;
        }
    }
    tm_str flag_group = { f->name ? f->name : "", f->name ? f->len : 0 };
    const tm_variants *vs = &p->variants;
    const tm_str *group = &flag_group;
    if (p->ns == 0) {
        out->value = 1;
        out->reason = TM_REASON_STATIC;
    } else {
        size_t i = first_strategy(e, p, &flag_group);
        if (i == p->ns) {
            out->reason = TM_REASON_DEFAULT;
            return;
        }
        const tm_strategy *s = &p->s[i];
        out->value = 1;
        out->strategy = (int) i;
        out->reason = s->has_rollout && s->percentage < 100 ? TM_REASON_SPLIT
                      : s->cs.n || s->nsegments ? TM_REASON_TARGETING_MATCH
                      : TM_REASON_STATIC;
        if (s->variants.n) {
            vs = &s->variants;
            group = s->group.s ? &s->group : &flag_group;
        }
    }
    const tm_variant *v;
    int how = pick_variant(e, vs, group, &v);
    if (v) {
        set_variant(out, v);
        if (how == 1) {
            out->reason = TM_REASON_TARGETING_MATCH;
        } else if (vs->nweighted > 1) {
            out->reason = TM_REASON_SPLIT;
        }
    }
}

static void eval_flag(const ev *e, const tm_flag_view *f, tm_eval_result *out)
{
    memset(out, 0, sizeof *out);
    out->strategy = -1;
    out->reason = TM_REASON_UNKNOWN;
    if (f->state == TM_FLAG_MISSING) {
        return;
    }
    if (f->state == TM_FLAG_OFF) {
        out->reason = TM_REASON_DISABLED;
        return;
    }
    if (!f->rule_present || !f->rule_enabled) {
        out->value = 1;
        out->reason = TM_REASON_STATIC;
        return;
    }
    if (!tm_budget_take(e->b, COST_FLAG)) {
        return;
    }
    const tm_rule *r = f->rule;
    if (r == NULL) {
        set_error(out, "the flag's rule document is unusable");
        return;
    }
    switch (r->type) {
    case TM_RULE_PERCENTAGE:
    case TM_RULE_USER_LIST: {
        tm_str id = { "", 0 };
        static const tm_field user_id = { { "userId", 6 }, F_USER_ID };
        if (e->ctx->key) {
            id.s = e->ctx->key;
            id.len = e->ctx->key_len;
        } else {
            field_value(e->ctx, &user_id, &id);
        }
        if (r->type == TM_RULE_PERCENTAGE) {
            out->value = (double) tm_percentage_bucket(id.s, id.len, f->name, f->len)
                         < r->percentage;
            out->reason = TM_REASON_SPLIT;
        } else {
            out->value = tm_str_sorted_has(r->users, r->nusers, id.s, id.len);
            out->reason = out->value ? TM_REASON_TARGETING_MATCH : TM_REASON_DEFAULT;
        }
        return;
    }
    case TM_RULE_STRATEGIES:
        if (r->program) {
            eval_program(e, r->program, f, out);
            return;
        }
        break;
    }
    set_error(out, "unknown rule type");
}

/* One evaluation with at most limit units (<= TM_EVAL_BUDGET); 1 if it
 * ran out of them (out is then ERROR, without its reason). */
static int evaluate(const tm_flag_view *flag, const tm_context *ctx,
                    const tm_eval_env *env, uint64_t limit, tm_eval_result *out)
{
    tm_budget b = { 0, limit, 0 };
    ev e = { ctx ? ctx : &empty_ctx, env, &b };
    eval_flag(&e, flag, out);
    if (b.over) {
        set_error(out, NULL);
    }
    out->cost = b.used;
    return b.over;
}

int tm_evaluate(const tm_flag_view *flag, const tm_context *ctx,
                const tm_eval_env *env, tm_eval_result *out)
{
    if (evaluate(flag, ctx, env, TM_EVAL_BUDGET, out)) {
        out->error = TM_EVAL_OVER_BUDGET;
        atomic_fetch_add_explicit(&stat_over_budget, 1, memory_order_relaxed);
    }
    return out->value;
}

void tm_request_budget_init(tm_request_budget *rb, uint64_t units)
{
    rb->left = units;
    rb->refused = 0;
}

int tm_evaluate_in(const tm_flag_view *flag, const tm_context *ctx,
                   const tm_eval_env *env, tm_request_budget *rb,
                   tm_eval_result *out)
{
    if (rb == NULL) {
        return tm_evaluate(flag, ctx, env, out);
    }
    uint64_t limit = rb->left < TM_EVAL_BUDGET ? rb->left : TM_EVAL_BUDGET;
    int over = evaluate(flag, ctx, env, limit, out);
    rb->left -= out->cost;
    if (over && limit < TM_EVAL_BUDGET) {
        out->error = TM_EVAL_OVER_REQUEST_BUDGET;
        rb->refused++;
        atomic_fetch_add_explicit(&stat_over_request, 1, memory_order_relaxed);
    } else if (over) {
        out->error = TM_EVAL_OVER_BUDGET;
        atomic_fetch_add_explicit(&stat_over_budget, 1, memory_order_relaxed);
    }
    return out->value;
}

tm_decision tm_decide(tm_flag_state flag, int rule_present, int rule_enabled,
                      const tm_rule *rule, const char *user, size_t ulen,
                      const char *flag_name, size_t flen)
{
    tm_flag_view f = { flag_name, flen, flag, rule_present, rule_enabled, rule };
    tm_context ctx;
    tm_eval_result r;
    tm_context_init(&ctx, user, ulen, NULL, 0);
    tm_evaluate(&f, &ctx, NULL, &r);
    tm_decision d = { r.value, r.reason };
    return d;
}

const char *tm_reason_name(tm_reason r)
{
    switch (r) {
    case TM_REASON_DISABLED: return "DISABLED";
    case TM_REASON_STATIC: return "STATIC";
    case TM_REASON_TARGETING_MATCH: return "TARGETING_MATCH";
    case TM_REASON_SPLIT: return "SPLIT";
    case TM_REASON_DEFAULT: return "DEFAULT";
    case TM_REASON_ERROR: return "ERROR";
    case TM_REASON_UNKNOWN: break;
    }
    return "UNKNOWN";
}
