/* The constraint operators: one table entry each (name, operand, hooks),
 * and their match functions. The compile hooks turn an operand into what
 * the match function compares with, once, at compile time; a match
 * function reads the context value and compares, without allocating. */
#include "tm_rules_int.h"
#include "tm_regex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Compile hooks, shared by the operators of one kind ---- */

static int compile_sorted(tm_cc *c, tm_constraint *k, const tm_operand *one)
{
    (void) c;
    (void) one;
    qsort(k->values, k->nvalues, sizeof *k->values, tm_str_cmp);
    return 0;
}

static int compile_cidrs(tm_cc *c, tm_constraint *k, const tm_operand *one)
{
    k->cidrs = tm_arena_alloc(c->a, (k->nvalues ? k->nvalues : 1) * sizeof *k->cidrs);
    if (k->cidrs == NULL) {
        return tm_cc_oom(c);
    }
    for (size_t i = 0; i < k->nvalues; i++) {
        if (tm_parse_cidr(k->values[i].s, k->values[i].len, &k->cidrs[i]) != 0) {
            size_t mark = one ? c->plen : tm_cc_push_index(c, i);
            tm_cc_fail(c, "\"%.64s\" is not an IPv4 or IPv6 address or CIDR "
                       "(e.g. 10.0.0.0/8, 2001:db8::/32)", k->values[i].s);
            tm_cc_pop(c, mark);
            return -1;
        }
    }
    k->ncidrs = k->nvalues;
    return 0;
}

static int compile_number(tm_cc *c, tm_constraint *k, const tm_operand *one)
{
    if (one->s == NULL) {
        k->num = one->num;
        return 0;
    }
    if (tm_parse_number(one->s, one->len, &k->num) != 0) {
        return tm_cc_fail(c, "%s needs a number, got \"%.32s\"", k->op->name, one->s);
    }
    return 0;
}

static int compile_date(tm_cc *c, tm_constraint *k, const tm_operand *one)
{
    if (tm_parse_date(one->s, one->len, &k->ms) != 0) {
        return tm_cc_fail(c, "\"%.40s\" is not an RFC 3339 date "
                          "(e.g. 2024-05-01T12:00:00Z)", one->s);
    }
    return 0;
}

/* The operand may start with 'v' (rules written by hand did); a context
 * value may not, as Unleash's clients read versions. */
static int compile_semver(tm_cc *c, tm_constraint *k, const tm_operand *one)
{
    tm_str copy;        /* the prerelease points into it */
    size_t v = one->len && (one->s[0] == 'v' || one->s[0] == 'V');
    if (tm_cc_copy_str(c, one->s + v, one->len - v, &copy) != 0) {
        return -1;
    }
    if (tm_parse_semver(copy.s, copy.len, &k->semver) != 0) {
        return tm_cc_fail(c, "\"%.40s\" is not a semantic version "
                          "(MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD])", one->s);
    }
    return 0;
}

/* ---- Lists and strings ---- */

static int in_list(const tm_constraint *k, const char *s, size_t len)
{
    if (!k->icase) {
        return tm_str_sorted_has(k->values, k->nvalues, s, len);
    }
    char buf[TM_USER_VALUE_MAX_LEN];    /* no listed value is longer */
    if (len > sizeof buf) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        buf[i] = (char) tm_ascii_lower((unsigned char) s[i]);
    }
    return tm_str_sorted_has(k->values, k->nvalues, buf, len);
}

static int match_in(const tm_constraint *k, const char *s, size_t len, tm_budget *b)
{
    (void) b;
    return in_list(k, s, len);
}

static int match_not_in(const tm_constraint *k, const char *s, size_t len, tm_budget *b)
{
    (void) b;
    return !in_list(k, s, len);
}

/* Unleash: an absent value is "not in" any list. */
static int absent_holds(const tm_constraint *k, const tm_context *ctx)
{
    (void) k;
    (void) ctx;
    return 1;
}

/* STR_ operators: the needles in a trie (tm_rules_trie.c), so that one
 * match reads the value once, whatever the number of needles. */

static int compile_prefix(tm_cc *c, tm_constraint *k, const tm_operand *one)
{
    (void) one;
    return tm_trie_compile(c, k, 0, 0);
}

static int compile_suffix(tm_cc *c, tm_constraint *k, const tm_operand *one)
{
    (void) one;
    return tm_trie_compile(c, k, 1, 0);
}

static int compile_inside(tm_cc *c, tm_constraint *k, const tm_operand *one)
{
    (void) one;
    return tm_trie_compile(c, k, 0, 1);
}

static int match_starts_with(const tm_constraint *k, const char *s, size_t len, tm_budget *b)
{
    (void) b;
    return tm_trie_prefix(k->compiled, s, len, k->icase);
}

static int match_ends_with(const tm_constraint *k, const char *s, size_t len, tm_budget *b)
{
    (void) b;
    return tm_trie_prefix(k->compiled, s, len, k->icase);
}

static int match_contains(const tm_constraint *k, const char *s, size_t len, tm_budget *b)
{
    (void) b;
    return tm_trie_inside(k->compiled, s, len, k->icase);
}

/* ---- Numbers, dates, versions: a value that does not parse never holds ---- */

#define NUM_MATCH(fn, op) \
    static int fn(const tm_constraint *k, const char *s, size_t len, tm_budget *b) \
    { \
        (void) b; \
        double d; \
        return tm_parse_number(s, len, &d) == 0 && d op k->num; \
    }
NUM_MATCH(match_num_eq, ==)
NUM_MATCH(match_num_lt, <)
NUM_MATCH(match_num_lte, <=)
NUM_MATCH(match_num_gt, >)
NUM_MATCH(match_num_gte, >=)

static int match_date_before(const tm_constraint *k, const char *s, size_t len, tm_budget *b)
{
    (void) b;
    int64_t ms;
    return tm_parse_date(s, len, &ms) == 0 && ms < k->ms;
}

static int match_date_after(const tm_constraint *k, const char *s, size_t len, tm_budget *b)
{
    (void) b;
    int64_t ms;
    return tm_parse_date(s, len, &ms) == 0 && ms > k->ms;
}

/* currentTime absent from the context: the evaluation's clock. */
static int absent_date_before(const tm_constraint *k, const tm_context *ctx)
{
    return k->field.kind == F_CURRENT_TIME && tm_eval_now_ms(ctx) < k->ms;
}

static int absent_date_after(const tm_constraint *k, const tm_context *ctx)
{
    return k->field.kind == F_CURRENT_TIME && tm_eval_now_ms(ctx) > k->ms;
}

#define SEMVER_MATCH(fn, op) \
    static int fn(const tm_constraint *k, const char *s, size_t len, tm_budget *b) \
    { \
        (void) b; \
        tm_semver v; \
        return tm_parse_semver(s, len, &v) == 0 && tm_semver_cmp(&v, &k->semver) op 0; \
    }
SEMVER_MATCH(match_semver_eq, ==)
SEMVER_MATCH(match_semver_lt, <)
SEMVER_MATCH(match_semver_lte, <=)
SEMVER_MATCH(match_semver_gt, >)
SEMVER_MATCH(match_semver_gte, >=)

static int match_cidr(const tm_constraint *k, const char *s, size_t len, tm_budget *b)
{
    (void) b;
    unsigned char addr[16];
    int v6;
    if (tm_parse_ip(s, len, addr, &v6) != 0) {
        return 0;
    }
    for (size_t i = 0; i < k->ncidrs; i++) {
        if (tm_cidr_contains(&k->cidrs[i], addr, v6)) {
            return 1;
        }
    }
    return 0;
}

/* ---- Regular expressions: bounded PCRE2 (lib/tm_regex.h), compiled once ---- */

/* A step of PCRE2's match limit at its most expensive (JIT), in units. */
#define COST_REGEX_STEP 150

/* The first limit of a search over len bytes: the (?s:.*?) wrapper of
 * tm_regex takes a step per start position, and ordinary patterns take
 * about one more per byte at most ([A-Z]+[0-9]{2,} needs 1187 on 1024
 * bytes): they get a second try. One search at the pattern's whole limit
 * still fits in the budget after the first try, whatever len. */
static unsigned regex_first_steps(size_t len)
{
    size_t n = 64 + len;
    return n < TM_REGEX_MATCH_LIMIT ? (unsigned) n : TM_REGEX_MATCH_LIMIT;
}

_Static_assert((64ull + TM_REGEX_MAX_SUBJECT + TM_REGEX_MATCH_LIMIT) * COST_REGEX_STEP
               < TM_EVAL_BUDGET * 95ull / 100, "one whole REGEX search fits in a budget");

static void regex_release(void *re)
{
    tm_regex_free(re);
}

static int compile_regex(tm_cc *c, tm_constraint *k, const tm_operand *one)
{
    char why[200];
    tm_regex *re = tm_regex_compile(one->s, one->len, k->icase ? TM_REGEX_ICASE : 0,
                                    why, sizeof why);
    if (re == NULL) {
        return tm_cc_fail(c, "%s", why);
    }
    if (tm_arena_on_free(c->a, regex_release, re) != 0) {
        tm_regex_free(re);
        return tm_cc_oom(c);
    }
    k->compiled = re;
    return 0;
}

/* A REGEX search first gets a small step limit, paid up front (cost_regex):
 * enough for an ordinary pattern, which scans a value in about one step
 * per byte. Only when that runs out does it get the pattern's whole limit,
 * paid from the budget first; if the budget cannot pay, the evaluation is
 * over budget. Anything but a match (a bound hit included, which tm_regex
 * counts for /metrics) is "does not hold". */
static int match_regex(const tm_constraint *k, const char *s, size_t len, tm_budget *b)
{
    unsigned first = regex_first_steps(len);
    tm_regex_status st = tm_regex_match_limit(k->compiled, s, len, first);
    if (st == TM_REGEX_LIMIT && first < TM_REGEX_MATCH_LIMIT) {
        if (!tm_budget_take(b, (uint64_t) TM_REGEX_MATCH_LIMIT * COST_REGEX_STEP)) {
            return 0;
        }
        st = tm_regex_match_limit(k->compiled, s, len, TM_REGEX_MATCH_LIMIT);
    }
    return tm_regex_count(st) == TM_REGEX_MATCH;
}

/* ---- Costs: upper bounds of a match, in budget units (tm_rules_int.h) ----
 * The unit prices are calibrated with bench/worst_bench: each is the worst
 * measured cost of one step, in ns, rounded up. */

#define COST_LIST_BYTE 1        /* a byte of a bsearch comparison or lowering */
#define COST_LIST_PROBE 8       /* one bsearch probe */
#define COST_TRIE_STEP 3        /* one trie step (a binary search on edges) */
#define COST_PARSE_BYTE 2       /* a byte of a number, date, version, address */
#define COST_CIDR 4             /* one CIDR compared */

static unsigned log2_ceil(size_t n)
{
    unsigned l = 1;
    while (n > 1) {
        n >>= 1;
        l++;
    }
    return l;
}

static uint64_t cost_list(const tm_constraint *k, size_t len)
{
    return (uint64_t) log2_ceil(k->nvalues) * (COST_LIST_PROBE + len * COST_LIST_BYTE)
           + (k->icase ? len * COST_LIST_BYTE : 0);
}

static uint64_t cost_prefix(const tm_constraint *k, size_t len)
{
    size_t depth = tm_trie_depth(k->compiled);
    return (uint64_t) (len < depth ? len : depth) * COST_TRIE_STEP;
}

static uint64_t cost_inside(const tm_constraint *k, size_t len)
{
    (void) k;
    return (uint64_t) len * 2 * COST_TRIE_STEP;
}

static uint64_t cost_parse(const tm_constraint *k, size_t len)
{
    (void) k;
    return (uint64_t) len * COST_PARSE_BYTE;
}

static uint64_t cost_cidr(const tm_constraint *k, size_t len)
{
    return (uint64_t) len * COST_PARSE_BYTE + (uint64_t) k->ncidrs * COST_CIDR;
}

static uint64_t cost_regex(const tm_constraint *k, size_t len)
{
    (void) k;
    if (len > TM_REGEX_MAX_SUBJECT) {
        return 1;       /* refused before any step */
    }
    return (uint64_t) regex_first_steps(len) * COST_REGEX_STEP;
}

/* ---- The table ---- */

#define LIST TM_OPERAND_LIST
#define ONE TM_OPERAND_ONE

/* name, operand, JSON numbers accepted, caseInsensitive applies,
 * compile, match, absent, cost */
static const tm_op_def ops[] = {
    { "IN", LIST, 0, 1, compile_sorted, match_in, NULL, cost_list },
    { "NOT_IN", LIST, 0, 1, compile_sorted, match_not_in, absent_holds, cost_list },
    { "STR_STARTS_WITH", LIST, 0, 1, compile_prefix, match_starts_with, NULL, cost_prefix },
    { "STR_ENDS_WITH", LIST, 0, 1, compile_suffix, match_ends_with, NULL, cost_prefix },
    { "STR_CONTAINS", LIST, 0, 1, compile_inside, match_contains, NULL, cost_inside },
    { "NUM_EQ", ONE, 1, 0, compile_number, match_num_eq, NULL, cost_parse },
    { "NUM_LT", ONE, 1, 0, compile_number, match_num_lt, NULL, cost_parse },
    { "NUM_LTE", ONE, 1, 0, compile_number, match_num_lte, NULL, cost_parse },
    { "NUM_GT", ONE, 1, 0, compile_number, match_num_gt, NULL, cost_parse },
    { "NUM_GTE", ONE, 1, 0, compile_number, match_num_gte, NULL, cost_parse },
    { "DATE_BEFORE", ONE, 0, 0, compile_date, match_date_before, absent_date_before, cost_parse },
    { "DATE_AFTER", ONE, 0, 0, compile_date, match_date_after, absent_date_after, cost_parse },
    { "SEMVER_EQ", ONE, 0, 0, compile_semver, match_semver_eq, NULL, cost_parse },
    { "SEMVER_LT", ONE, 0, 0, compile_semver, match_semver_lt, NULL, cost_parse },
    { "SEMVER_LTE", ONE, 0, 0, compile_semver, match_semver_lte, NULL, cost_parse },
    { "SEMVER_GT", ONE, 0, 0, compile_semver, match_semver_gt, NULL, cost_parse },
    { "SEMVER_GTE", ONE, 0, 0, compile_semver, match_semver_gte, NULL, cost_parse },
    { "REGEX", ONE, 0, 1, compile_regex, match_regex, NULL, cost_regex },
    { "IP_IN_CIDR", LIST, 0, 0, compile_cidrs, match_cidr, NULL, cost_cidr },
    { "IN_CIDR", LIST, 0, 0, compile_cidrs, match_cidr, NULL, cost_cidr },    /* Unleash's name */
};

uint64_t tm_constraint_worst(const tm_constraint *k)
{
    uint64_t c = k->op->cost ? k->op->cost(k, TM_CONTEXT_MAX_VALUE_LEN) : 0;
    if (k->op->match == match_regex) {
        c = (uint64_t) (regex_first_steps(TM_REGEX_MAX_SUBJECT) + TM_REGEX_MATCH_LIMIT)
            * COST_REGEX_STEP;
    }
    return c;
}

static int match_never(const tm_constraint *k, const char *s, size_t len, tm_budget *b)
{
    (void) b;
    (void) k;
    (void) s;
    (void) len;
    return 0;
}

const tm_op_def tm_op_never = { "(invalid)", LIST, 0, 0, NULL, match_never, NULL, NULL };
#define NOPS (sizeof ops / sizeof ops[0])

const tm_op_def *tm_op_find(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPS; i++) {
        if (strlen(ops[i].name) == len && memcmp(ops[i].name, name, len) == 0) {
            return &ops[i];
        }
    }
    return NULL;
}

/* Length of the "XXX_" group prefix of a name, 0 if none. */
static size_t group_prefix(const char *name)
{
    const char *u = strchr(name, '_');
    return u ? (size_t) (u - name) + 1 : 0;
}

static int same_group(size_t i, size_t j)
{
    size_t p = group_prefix(ops[i].name);
    return p && j < NOPS && group_prefix(ops[j].name) == p
           && memcmp(ops[i].name, ops[j].name, p) == 0;
}

/* Appends n bytes of s, as many as fit with the NUL. */
static void append(char *buf, size_t len, size_t *off, const char *s, size_t n)
{
    size_t room = len - *off - 1;
    n = n < room ? n : room;
    memcpy(buf + *off, s, n);
    *off += n;
    buf[*off] = '\0';
}

void tm_ops_accepted(char *buf, size_t len)
{
    size_t off = 0;
    if (len == 0) {
        return;
    }
    buf[0] = '\0';
    for (size_t i = 0; i < NOPS; ) {
        size_t j = i + 1, p = group_prefix(ops[i].name);
        while (same_group(i, j)) {
            j++;
        }
        if (i) {
            append(buf, len, &off, ", ", 2);
        }
        if (j - i == 1) {
            append(buf, len, &off, ops[i].name, strlen(ops[i].name));
        } else {
            append(buf, len, &off, ops[i].name, p);
            for (size_t k = i; k < j; k++) {
                append(buf, len, &off, k == i ? "{" : ",", 1);
                append(buf, len, &off, ops[k].name + p, strlen(ops[k].name + p));
            }
            append(buf, len, &off, "}", 1);
        }
        i = j;
    }
}
