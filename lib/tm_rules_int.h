/* Private to lib/tm_rules*.c: the compiled form of strategies documents and
 * segments, and what the engine's parts share. Callers include tm_rules.h
 * only.
 *
 *   tm_rules.c         rule documents: check, compile, free, refs
 *   tm_rules_legacy.c  the original {"type":"PERCENTAGE"|"USER_LIST"} ones
 *   tm_rules_values.c  value parsing: numbers, dates, versions, addresses
 *   tm_rules_ops.c     the operator table: one entry per operator, with
 *                      what each costs (the evaluation budget)
 *   tm_rules_trie.c    the STR_ operators' matcher: a trie, Aho-Corasick
 *   tm_rules_compile.c the arena; strategies documents and segments
 *                      -> the compiled form
 *   tm_rules_eval.c    evaluation: no allocation, no I/O, a budget
 *
 * Compilation does all the parsing, so that evaluation only compares. */
#ifndef TM_RULES_INT_H
#define TM_RULES_INT_H
#include "tm_rules.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define TM_MAX_STRATEGIES 256
#define TM_MAX_CONSTRAINTS 64
#define TM_MAX_SEGMENT_REFS 32
#define TM_MAX_VARIANTS 100
#define TM_MAX_OVERRIDES 100
#define TM_MAX_DEPENDENCIES 16
#define TM_MAX_VARIANT_WEIGHT 1000000
#define TM_MAX_FIELD_NAME 100
#define TM_MAX_PAYLOAD_LEN 65536
#define TM_MAX_OPERAND_LEN 1024     /* a single operand: number, date, pattern */
#define TM_MAX_INVALID_LEN 512      /* why a constraint is marked "invalid" */

/* ---- Allocation: everything of one compiled document, freed at once ---- */

typedef struct tm_block tm_block;
typedef struct tm_cleanup tm_cleanup;

typedef struct {
    tm_block *blocks;
    tm_cleanup *cleanups;   /* run before the blocks go, newest first */
} tm_arena;

/* n zeroed bytes, 16-aligned; NULL when out of memory. */
void *tm_arena_alloc(tm_arena *a, size_t n);
/* Has fn(p) called when the arena is freed (e.g. a compiled regex);
 * 0, or -1 when out of memory (fn is then not called: the caller frees). */
int tm_arena_on_free(tm_arena *a, void (*fn)(void *), void *p);
void tm_arena_free(tm_arena *a);

/* ---- Strings ---- */

static inline unsigned char tm_ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char) (c | 0x20) : c;
}

/* Order by (len, bytes): bsearch needs no NUL and compares lengths first. */
int tm_str_cmp(const void *a, const void *b);
int tm_str_sorted_has(const tm_str *v, size_t n, const char *s, size_t len);

/* ---- Value parsing (tm_rules_values.c): 0, or -1 if s is not one ---- */

typedef struct {
    uint64_t major, minor, patch;
    const char *pre;    /* prerelease identifiers, without '-'; NULL: none */
    size_t prelen;
} tm_semver;

typedef struct {
    unsigned char addr[16];
    unsigned char v6;
    unsigned char bits;
} tm_cidr;

/* A number, spaces around it allowed. */
int tm_parse_number(const char *s, size_t len, double *out);
/* RFC 3339 / ISO 8601 date or date-time, in milliseconds since the epoch. */
int tm_parse_date(const char *s, size_t len, int64_t *ms);
/* SemVer 2.0.0 (no leading 'v', as Unleash); v->pre points into s. */
int tm_parse_semver(const char *s, size_t len, tm_semver *v);
int tm_semver_cmp(const tm_semver *a, const tm_semver *b);
/* An IPv4 or IPv6 address; IPv4-mapped IPv6 becomes IPv4 (*v6 = 0). */
int tm_parse_ip(const char *s, size_t len, unsigned char addr[16], int *v6);
/* An address, or a network in CIDR notation. */
int tm_parse_cidr(const char *s, size_t len, tm_cidr *c);
int tm_cidr_contains(const tm_cidr *c, const unsigned char addr[16], int v6);

/* ---- The compiled form ---- */

/* How a context name is looked up: the identity has two names. */
typedef enum { F_ATTR, F_USER_ID, F_TARGETING_KEY, F_CURRENT_TIME } tm_field_kind;

typedef struct {
    tm_str name;
    tm_field_kind kind;
} tm_field;

typedef struct tm_op_def tm_op_def;

typedef struct {
    tm_field field;
    const tm_op_def *op;
    unsigned char inverted, icase;
    tm_str *values;     /* list operands: as given, lowercased if icase */
    size_t nvalues;
    tm_cidr *cidrs;
    size_t ncidrs;
    double num;
    int64_t ms;
    tm_semver semver;
    void *compiled;     /* the operator's own compiled operand (a regex) */
} tm_constraint;

typedef struct {
    tm_constraint *c;
    size_t n;
} tm_constraints;

struct tm_segment {
    tm_arena arena;
    const char *name;
    tm_constraints cs;
};

typedef struct {
    tm_field field;
    tm_str *values;     /* sorted */
    size_t nvalues;
} tm_override;

typedef struct {
    tm_str name;
    uint32_t weight;
    tm_payload_type ptype;
    tm_str payload;
    tm_override *overrides;
    size_t noverrides;
} tm_variant;

/* Stickiness: the default chain, random, or a context field. */
typedef enum { S_DEFAULT, S_RANDOM, S_FIELD } tm_sticky_kind;

typedef struct {
    tm_sticky_kind kind;
    tm_field field;
} tm_sticky;

typedef struct {
    tm_variant *v;
    size_t n;
    uint32_t total;
    size_t nweighted;   /* variants with weight > 0 */
    int has_overrides;
    int has_sticky;     /* variants[0].stickiness given */
    tm_sticky sticky;
} tm_variants;

typedef struct {
    tm_constraints cs;
    tm_str *segments;
    uint16_t *segidx;   /* segments[i] is the program's segrefs[segidx[i]] */
    size_t nsegments;
    int disabled;
    int has_rollout;
    double percentage;
    tm_sticky sticky;
    tm_str group;       /* s == NULL: the flag's name */
    tm_variants variants;
} tm_strategy;

typedef struct {
    tm_str feature;
    int enabled;
    tm_str *variants;
    size_t nvariants;
} tm_dependency;

struct tm_program {
    tm_arena arena;
    tm_strategy *s;
    size_t ns;
    tm_variants variants;
    tm_dependency *deps;
    size_t ndeps;
    tm_str *segrefs;    /* distinct segment names, for tm_rule_segment_ref */
    size_t nsegrefs;    /* at most TM_MAX_STRATEGIES * TM_MAX_SEGMENT_REFS */
};

/* ---- Compilation state: the arena and the path to the part at hand ---- */

typedef struct {
    tm_arena *a;
    char *err;
    size_t errlen;
    const char *root;   /* what the path is relative to: "rules", "segment" */
    char path[256];
    size_t plen;
    uint64_t worst;     /* sum of tm_constraint_worst of what is compiled */
} tm_cc;

/* Writes "<path>: <message>" to err; returns -1. */
int tm_cc_fail(tm_cc *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int tm_cc_oom(tm_cc *c);
/* Appends ".key" or "[i]" to the path; returns the mark tm_cc_pop restores. */
size_t tm_cc_push_key(tm_cc *c, const char *key);
size_t tm_cc_push_index(tm_cc *c, size_t i);
void tm_cc_pop(tm_cc *c, size_t mark);
/* A NUL-terminated copy of s in the arena. */
int tm_cc_copy_str(tm_cc *c, const char *s, size_t len, tm_str *out);

/* Copies msg to err (if any); returns -1. */
int tm_rules_fail(char *err, size_t errlen, const char *msg);

/* Legacy documents (tm_rules_legacy.c): the document has "type". */
int tm_legacy_check(const json_t *doc, char *err, size_t errlen);
/* Fills r from a checked document; on failure frees r, returns NULL. */
tm_rule *tm_legacy_compile(const json_t *doc, tm_rule *r, char *err, size_t errlen);

/* Strategies documents (tm_rules_compile.c). */
tm_program *tm_program_compile(const json_t *doc, char *err, size_t errlen);
void tm_program_free(tm_program *p);

/* ---- Operators (tm_rules_ops.c) ----
 * Adding an operator is one entry in the table there plus its match
 * function; the compile hooks are shared by operators of one operand kind. */

typedef enum {
    TM_OPERAND_LIST,    /* "values": strings ("value": a one-string list) */
    TM_OPERAND_ONE      /* "value" ("values": a one-element list) */
} tm_operand_kind;

/* A single operand as the document gives it. */
/* ---- The evaluation budget (tm_rules_eval.c) ----
 * Every part of an evaluation that reads the context or the document takes
 * units from one budget before it runs (its upper bound, tm_op_def.cost),
 * so that no document and no context can make one evaluation cost more
 * than TM_EVAL_BUDGET units (tm_rules.h). A unit is about 1 ns of CPU at
 * worst: bench/worst_bench prints ns per unit for every worst case, and
 * the prices (COST_*) are set so that none is above 1. */

typedef struct {
    uint64_t used;
    uint64_t limit;     /* TM_EVAL_BUDGET, or less: what a request has left */
    int over;           /* a take failed: the evaluation is over budget */
} tm_budget;

/* Takes n units; 1 if they fit under b->limit, else 0 and b->over is set. */
int tm_budget_take(tm_budget *b, uint64_t n);

/* ---- Tries (tm_rules_trie.c): the needles of a STR_ constraint ---- */

typedef struct tm_trie tm_trie;

/* Builds k->compiled from k's non-empty values (already lowercased when
 * icase): read backwards if reverse (ENDS_WITH), with failure links if
 * links (CONTAINS). 0, or -1 via tm_cc_oom. */
int tm_trie_compile(tm_cc *c, tm_constraint *k, int reverse, int links);
/* 1 if a needle is a prefix of s (a suffix, for a reversed trie); at most
 * min(len, longest needle) steps. icase folds s's ASCII letters. */
int tm_trie_prefix(const tm_trie *t, const char *s, size_t len, int icase);
/* 1 if a needle occurs in s (a trie with links); at most 2 * len steps. */
int tm_trie_inside(const tm_trie *t, const char *s, size_t len, int icase);
/* The longest needle's length. */
size_t tm_trie_depth(const tm_trie *t);

typedef struct {
    const char *s;      /* the string, or NULL when a JSON number */
    size_t len;
    double num;         /* the JSON number when s == NULL */
} tm_operand;

struct tm_op_def {
    const char *name;
    tm_operand_kind operand;
    unsigned char numbers;  /* ONE: a JSON number is accepted */
    unsigned char icase;    /* caseInsensitive applies (ASCII folding) */
    /* Prepares k from its operand, the path pointing at it. LIST: k->values
     * are filled; one is the single string when the document gave "value",
     * NULL for "values". ONE: one is the operand. NULL: nothing to prepare.
     * 0, or -1 via tm_cc_fail. */
    int (*compile)(tm_cc *c, tm_constraint *k, const tm_operand *one);
    /* 1 if the context value s holds; never allocates. The budget has
     * already paid cost(k, len); a match whose cost is only known while it
     * runs (REGEX) takes more from b, and answers 0 when b runs out. */
    int (*match)(const tm_constraint *k, const char *s, size_t len, tm_budget *b);
    /* What an absent context value gives; NULL: it does not hold. */
    int (*absent)(const tm_constraint *k, const tm_context *ctx);
    /* Units that bound match's work on a len-byte value; NULL: none. */
    uint64_t (*cost)(const tm_constraint *k, size_t len);
};

/* What a constraint marked "invalid" compiles to: it never holds. */
extern const tm_op_def tm_op_never;

/* What evaluating k can cost at most, whatever the context (values of
 * TM_CONTEXT_MAX_VALUE_LEN bytes, REGEX at its match limit): for the
 * document bound, TM_DOC_COST_MAX. */
uint64_t tm_constraint_worst(const tm_constraint *k);

/* A document (with its own constraints only: segments and dependencies are
 * separate documents) whose worst case is over this is refused: it could
 * only answer ERROR for any context reaching its later parts. */
#define TM_DOC_COST_MAX (64ull * TM_EVAL_BUDGET)

/* The operator called name, or NULL. */
const tm_op_def *tm_op_find(const char *name, size_t len);
/* The accepted operator names for an error message, grouped by prefix
 * ("NUM_{EQ,LT}") so that a whole error fits callers' 256 bytes. */
void tm_ops_accepted(char *buf, size_t len);

/* ---- Evaluation helpers shared with the operators (tm_rules_eval.c) ---- */

/* The evaluation's clock: ctx->now_ms, else the real time (ctx may be NULL). */
int64_t tm_eval_now_ms(const tm_context *ctx);
#endif
