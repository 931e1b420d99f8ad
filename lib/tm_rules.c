/* Rule documents: the original PERCENTAGE / USER_LIST ones and the
 * strategies format (docs/rules.md), checked, compiled and evaluated.
 *
 * Everything the nginx module needs is in this file, tm_hash.c and
 * tm_names.c (the three lib sources it compiles). Compilation does all the
 * parsing (numbers, dates, versions, CIDRs, regular expressions), so that
 * evaluation only compares, and never allocates. */
#include "tm_rules.h"
#include "tm_hash.h"
#include "tm_names.h"

#include <arpa/inet.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s", msg);
    }
    return -1;
}

/* ===================================================================== */
/* The original documents: {"type":"PERCENTAGE"|"USER_LIST", ...}         */
/* ===================================================================== */

static int check_keys(const json_t *doc, const char *const *allowed,
                      char *err, size_t errlen)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *) doc, key, val) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++) {
            if (strcmp(key, *a) == 0) {
                ok = 1;
                break;
            }
        }
        if (!ok) {
            char msg[200];
            snprintf(msg, sizeof msg, "rules: unknown field \"%.64s\"", key);
            return fail(err, errlen, msg);
        }
    }
    return 0;
}

static int typed_check(const json_t *doc, char *err, size_t errlen)
{
    json_t *type = json_object_get(doc, "type");
    if (!json_is_string(type)) {
        return fail(err, errlen, "rules.type must be a string, one of: "
                    TM_RULE_TYPES_ACCEPTED);
    }
    const char *t = json_string_value(type);
    if (strcmp(t, "PERCENTAGE") == 0) {
        static const char *const allowed[] = { "type", "value", NULL };
        if (check_keys(doc, allowed, err, errlen) != 0) {
            return -1;
        }
        json_t *v = json_object_get(doc, "value");
        if (!json_is_number(v)) {
            return fail(err, errlen, "PERCENTAGE rules need a numeric \"value\" from 0 to 100");
        }
        double d = json_number_value(v);
        if (!isfinite(d) || d < 0 || d > 100) {
            return fail(err, errlen, "PERCENTAGE \"value\" must be between 0 and 100");
        }
        return 0;
    }
    if (strcmp(t, "USER_LIST") == 0) {
        static const char *const allowed[] = { "type", "values", NULL };
        if (check_keys(doc, allowed, err, errlen) != 0) {
            return -1;
        }
        json_t *vals = json_object_get(doc, "values");
        if (!json_is_array(vals)) {
            return fail(err, errlen, "USER_LIST rules need \"values\": an array of user ids (strings)");
        }
        if (json_array_size(vals) > TM_USER_LIST_MAX_VALUES) {
            return fail(err, errlen, "USER_LIST \"values\" holds at most 10000 user ids");
        }
        size_t i;
        json_t *u;
        json_array_foreach(vals, i, u) {
            if (!json_is_string(u)) {
                return fail(err, errlen, "USER_LIST \"values\" must contain only strings");
            }
            if (json_string_length(u) > TM_USER_VALUE_MAX_LEN) {
                return fail(err, errlen, "USER_LIST user ids are at most 1024 bytes");
            }
        }
        return 0;
    }
    char msg[200];
    snprintf(msg, sizeof msg, "unknown rule type \"%.32s\"; accepted types: "
             TM_RULE_TYPES_ACCEPTED, t);
    return fail(err, errlen, msg);
}

/* Sorted by (len, bytes): bsearch needs no NUL and compares lengths first. */
static int str_cmp(const void *a, const void *b)
{
    const tm_str *x = a, *y = b;
    if (x->len != y->len) {
        return x->len < y->len ? -1 : 1;
    }
    return memcmp(x->s, y->s, x->len);
}

static int str_sorted_has(const tm_str *v, size_t n, const char *s, size_t len)
{
    tm_str key = { s, len };
    return n && bsearch(&key, v, n, sizeof key, str_cmp) != NULL;
}

static tm_rule *typed_compile(const json_t *doc, tm_rule *r, char *err, size_t errlen)
{
    const char *t = json_string_value(json_object_get(doc, "type"));
    if (strcmp(t, "PERCENTAGE") == 0) {
        r->type = TM_RULE_PERCENTAGE;
        r->percentage = json_number_value(json_object_get(doc, "value"));
        return r;
    }

    r->type = TM_RULE_USER_LIST;
    json_t *vals = json_object_get(doc, "values");
    size_t n = json_array_size(vals), total = 0, i;
    json_t *u;
    json_array_foreach(vals, i, u) {
        total += json_string_length(u);
    }
    r->users = calloc(n ? n : 1, sizeof *r->users);
    r->arena = malloc(total ? total : 1);
    if (r->users == NULL || r->arena == NULL) {
        tm_rule_free(r);
        fail(err, errlen, "out of memory");
        return NULL;
    }
    size_t off = 0;
    json_array_foreach(vals, i, u) {
        size_t len = json_string_length(u);
        memcpy(r->arena + off, json_string_value(u), len);
        r->users[i].s = r->arena + off;
        r->users[i].len = len;
        off += len;
    }
    r->nusers = n;
    qsort(r->users, n, sizeof *r->users, str_cmp);
    return r;
}

/* ===================================================================== */
/* Compiled form of the strategies format                                */
/* ===================================================================== */

#define MAX_STRATEGIES 256
#define MAX_CONSTRAINTS 64
#define MAX_SEGMENT_REFS 32
#define MAX_VARIANTS 100
#define MAX_OVERRIDES 100
#define MAX_DEPENDENCIES 16
#define MAX_VARIANT_WEIGHT 1000000
#define MAX_NAME_LEN 100
#define MAX_PAYLOAD_LEN 65536
#define MAX_REGEX_LEN 1024
#define NUM_TEXT_MAX 64
#define IP_TEXT_MAX 64

/* Allocations of one compiled document: freed together. */
typedef struct tm_block {
    struct tm_block *next;
    size_t used, cap;
} tm_block;

typedef struct tm_regex {
    regex_t re;
    struct tm_regex *next;
} tm_regex;

typedef struct {
    tm_block *blocks;
    tm_regex *regexes;
} tm_arena;

#define BLOCK_HDR ((sizeof(tm_block) + 15) & ~(size_t) 15)

static void *arena_alloc(tm_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t) 15;
    if (a->blocks == NULL || a->blocks->cap - a->blocks->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        tm_block *b = malloc(BLOCK_HDR + cap);
        if (b == NULL) {
            return NULL;
        }
        b->next = a->blocks;
        b->used = 0;
        b->cap = cap;
        a->blocks = b;
    }
    void *p = (char *) a->blocks + BLOCK_HDR + a->blocks->used;
    a->blocks->used += n;
    memset(p, 0, n);
    return p;
}

static void arena_free(tm_arena *a)
{
    for (tm_regex *r = a->regexes; r; r = r->next) {
        regfree(&r->re);
    }
    for (tm_block *b = a->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    a->blocks = NULL;
    a->regexes = NULL;
}

typedef enum {
    OP_IN, OP_NOT_IN,
    OP_STR_STARTS_WITH, OP_STR_ENDS_WITH, OP_STR_CONTAINS,
    OP_NUM_EQ, OP_NUM_LT, OP_NUM_LTE, OP_NUM_GT, OP_NUM_GTE,
    OP_DATE_BEFORE, OP_DATE_AFTER,
    OP_SEMVER_EQ, OP_SEMVER_LT, OP_SEMVER_LTE, OP_SEMVER_GT, OP_SEMVER_GTE,
    OP_REGEX, OP_IP_IN_CIDR
} tm_op;

typedef enum { K_LIST, K_STR, K_NUM, K_DATE, K_SEMVER, K_REGEX, K_CIDR } tm_op_kind;

static const struct {
    const char *name;
    tm_op_kind kind;
} ops[] = {
    [OP_IN] = { "IN", K_LIST },
    [OP_NOT_IN] = { "NOT_IN", K_LIST },
    [OP_STR_STARTS_WITH] = { "STR_STARTS_WITH", K_STR },
    [OP_STR_ENDS_WITH] = { "STR_ENDS_WITH", K_STR },
    [OP_STR_CONTAINS] = { "STR_CONTAINS", K_STR },
    [OP_NUM_EQ] = { "NUM_EQ", K_NUM },
    [OP_NUM_LT] = { "NUM_LT", K_NUM },
    [OP_NUM_LTE] = { "NUM_LTE", K_NUM },
    [OP_NUM_GT] = { "NUM_GT", K_NUM },
    [OP_NUM_GTE] = { "NUM_GTE", K_NUM },
    [OP_DATE_BEFORE] = { "DATE_BEFORE", K_DATE },
    [OP_DATE_AFTER] = { "DATE_AFTER", K_DATE },
    [OP_SEMVER_EQ] = { "SEMVER_EQ", K_SEMVER },
    [OP_SEMVER_LT] = { "SEMVER_LT", K_SEMVER },
    [OP_SEMVER_LTE] = { "SEMVER_LTE", K_SEMVER },
    [OP_SEMVER_GT] = { "SEMVER_GT", K_SEMVER },
    [OP_SEMVER_GTE] = { "SEMVER_GTE", K_SEMVER },
    [OP_REGEX] = { "REGEX", K_REGEX },
    [OP_IP_IN_CIDR] = { "IP_IN_CIDR", K_CIDR },
};
#define NOPS (sizeof ops / sizeof ops[0])
/* Grouped so that a whole error fits the 256 bytes callers give it. */
#define OPS_ACCEPTED "IN, NOT_IN, STR_{STARTS_WITH,ENDS_WITH,CONTAINS}, " \
    "NUM_{EQ,LT,LTE,GT,GTE}, DATE_{BEFORE,AFTER}, SEMVER_{EQ,LT,LTE,GT,GTE}, " \
    "REGEX, IP_IN_CIDR"

/* How a context name is looked up: the identity has two names. */
typedef enum { F_ATTR, F_USER_ID, F_TARGETING_KEY, F_CURRENT_TIME } tm_field_kind;

typedef struct {
    tm_str name;
    tm_field_kind kind;
} tm_field;

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

typedef struct {
    tm_field field;
    tm_op op;
    unsigned char inverted, icase;
    tm_str *values;     /* K_LIST: sorted; K_STR: as given; lowercased if icase */
    size_t nvalues;
    tm_cidr *cidrs;
    size_t ncidrs;
    double num;
    int64_t ms;
    tm_semver semver;
    regex_t *re;
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
    size_t nsegrefs;
};

/* ===================================================================== */
/* Value parsing, shared by compilation and evaluation                    */
/* ===================================================================== */

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char) (c | 0x20) : c;
}

/* A whole number, spaces around allowed; 0 or -1. Plain decimals of up to
 * 15 digits take Clinger's fast path (exact integer over an exact power of
 * ten: one correctly rounded division), the rest strtod. */
static int parse_number(const char *s, size_t len, double *out)
{
    static const double pow10[] = {
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15
    };
    size_t i = 0, nd = 0, frac = 0;
    int neg = 0, dot = 0;
    uint64_t m = 0;
    if (len && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i++;
    }
    for (; i < len; i++) {
        if (is_digit(s[i])) {
            m = m * 10 + (uint64_t) (s[i] - '0');
            nd++;
            frac += dot;
        } else if (s[i] == '.' && !dot) {
            dot = 1;
        } else {
            break;
        }
    }
    if (i == len && nd > 0 && nd <= 15) {
        double d = (double) m / pow10[frac];
        *out = neg ? -d : d;
        return 0;
    }

    char buf[NUM_TEXT_MAX];
    if (len == 0 || len >= sizeof buf) {
        return -1;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    double d = strtod(buf, &end);
    if (end == buf) {
        return -1;
    }
    while (*end == ' ' || *end == '\t') {
        end++;
    }
    if (*end != '\0' || !isfinite(d)) {
        return -1;
    }
    *out = d;
    return 0;
}

static int digits(const char *s, size_t len, size_t *i, int n, int *out)
{
    int v = 0;
    for (int k = 0; k < n; k++, (*i)++) {
        if (*i >= len || !is_digit(s[*i])) {
            return -1;
        }
        v = v * 10 + (s[*i] - '0');
    }
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* RFC 3339 / ISO 8601: YYYY-MM-DD[(T| )HH:MM[:SS[.frac]]][Z|(+|-)HH[:]MM],
 * no zone meaning UTC; milliseconds since the epoch. */
static int parse_date(const char *s, size_t len, int64_t *ms)
{
    size_t i = 0;
    int y, mo, d, h = 0, mi = 0, sec = 0, frac = 0;
    if (digits(s, len, &i, 4, &y) || i >= len || s[i++] != '-'
        || digits(s, len, &i, 2, &mo) || i >= len || s[i++] != '-'
        || digits(s, len, &i, 2, &d)) {
        return -1;
    }
    static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap)) {
        return -1;
    }
    int64_t offset = 0;
    if (i < len && (s[i] == 'T' || s[i] == 't' || s[i] == ' ')) {
        i++;
        if (digits(s, len, &i, 2, &h) || i >= len || s[i++] != ':'
            || digits(s, len, &i, 2, &mi)) {
            return -1;
        }
        if (i < len && s[i] == ':') {
            i++;
            if (digits(s, len, &i, 2, &sec)) {
                return -1;
            }
            if (i < len && (s[i] == '.' || s[i] == ',')) {
                i++;
                int nd = 0;
                while (i < len && is_digit(s[i])) {
                    if (nd < 3) {
                        frac = frac * 10 + (s[i] - '0');
                    }
                    nd++;
                    i++;
                }
                if (nd == 0) {
                    return -1;
                }
                for (; nd < 3; nd++) {
                    frac *= 10;
                }
            }
        }
        if (h > 23 || mi > 59 || sec > 60) {
            return -1;
        }
        if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
            i++;
        } else if (i < len && (s[i] == '+' || s[i] == '-')) {
            int sign = s[i++] == '-' ? -1 : 1, oh, om;
            if (digits(s, len, &i, 2, &oh)) {
                return -1;
            }
            if (i < len && s[i] == ':') {
                i++;
            }
            if (digits(s, len, &i, 2, &om) || oh > 23 || om > 59) {
                return -1;
            }
            offset = sign * (oh * 3600 + om * 60);
        }
    }
    if (i != len) {
        return -1;
    }
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    *ms = secs * 1000 + frac;
    return 0;
}

static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || (len > 1 && s[0] == '0') || len > 19) {
        return -1;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i])) {
            return -1;
        }
        v = v * 10 + (uint64_t) (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int all_digits(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i])) {
            return 0;
        }
    }
    return 1;
}

static int ident_char(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

/* Dot-separated non-empty identifiers; numeric prerelease ones without
 * leading zeros. */
static int idents_valid(const char *s, size_t len, int prerelease)
{
    size_t start = 0;
    for (size_t k = 0; k <= len; k++) {
        if (k == len || s[k] == '.') {
            size_t l = k - start;
            if (l == 0 || (prerelease && l > 1 && s[start] == '0'
                           && all_digits(s + start, l))) {
                return -1;
            }
            start = k + 1;
        } else if (!ident_char(s[k])) {
            return -1;
        }
    }
    return 0;
}

/* Semantic Versioning 2.0.0, MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], an
 * optional leading 'v' allowed; v->pre points into s. */
static int parse_semver(const char *s, size_t len, tm_semver *v)
{
    if (len && (s[0] == 'v' || s[0] == 'V')) {
        s++;
        len--;
    }
    const char *plus = memchr(s, '+', len);
    size_t end = plus ? (size_t) (plus - s) : len;
    const char *dash = memchr(s, '-', end);
    size_t core = dash ? (size_t) (dash - s) : end;
    uint64_t *parts[3] = { &v->major, &v->minor, &v->patch };
    size_t i = 0;
    for (int k = 0; k < 3; k++) {
        size_t j = core;
        if (k < 2) {
            const char *dot = memchr(s + i, '.', core - i);
            if (dot == NULL) {
                return -1;
            }
            j = (size_t) (dot - s);
        }
        if (parse_u64(s + i, j - i, parts[k]) != 0) {
            return -1;
        }
        i = j + 1;
    }
    v->pre = dash ? dash + 1 : NULL;
    v->prelen = dash ? end - core - 1 : 0;
    if (dash && idents_valid(v->pre, v->prelen, 1) != 0) {
        return -1;
    }
    if (plus && idents_valid(plus + 1, len - end - 1, 0) != 0) {
        return -1;
    }
    return 0;
}

static int cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

static int semver_cmp(const tm_semver *a, const tm_semver *b)
{
    int c = cmp_u64(a->major, b->major);
    if (c == 0) {
        c = cmp_u64(a->minor, b->minor);
    }
    if (c == 0) {
        c = cmp_u64(a->patch, b->patch);
    }
    if (c != 0) {
        return c;
    }
    if (!a->pre || !b->pre) {           /* a release ranks above its prereleases */
        return a->pre ? -1 : b->pre ? 1 : 0;
    }
    size_t i = 0, j = 0;
    for (;;) {
        if (i >= a->prelen || j >= b->prelen) {
            return i >= a->prelen ? (j >= b->prelen ? 0 : -1) : 1;
        }
        size_t ie = i, je = j;
        while (ie < a->prelen && a->pre[ie] != '.') {
            ie++;
        }
        while (je < b->prelen && b->pre[je] != '.') {
            je++;
        }
        const char *x = a->pre + i, *y = b->pre + j;
        size_t xl = ie - i, yl = je - j;
        int xn = all_digits(x, xl), yn = all_digits(y, yl);
        if (xn && yn) {
            c = xl != yl ? (xl < yl ? -1 : 1) : memcmp(x, y, xl);
        } else if (xn || yn) {
            c = xn ? -1 : 1;            /* numeric identifiers rank lower */
        } else {
            c = memcmp(x, y, xl < yl ? xl : yl);
            if (c == 0) {
                c = xl < yl ? -1 : xl > yl;
            }
        }
        if (c != 0) {
            return c < 0 ? -1 : 1;
        }
        i = ie + 1;
        j = je + 1;
    }
}

/* Dotted-quad IPv4, as inet_pton reads it (no leading zeros but "0"). */
static int parse_ipv4(const char *s, size_t len, unsigned char addr[4])
{
    size_t i = 0;
    for (int k = 0; k < 4; k++) {
        if (k > 0 && (i >= len || s[i++] != '.')) {
            return -1;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < len && is_digit(s[i]) && i - start < 3) {
            v = v * 10 + (unsigned) (s[i++] - '0');
        }
        if (i == start || v > 255 || (s[start] == '0' && i - start > 1)) {
            return -1;
        }
        addr[k] = (unsigned char) v;
    }
    return i == len ? 0 : -1;
}

/* An IPv4 or IPv6 address; IPv4-mapped IPv6 addresses become IPv4. */
static int parse_ip(const char *s, size_t len, unsigned char addr[16], int *v6)
{
    char buf[IP_TEXT_MAX];
    if (len == 0 || len >= sizeof buf) {
        return -1;
    }
    if (memchr(s, ':', len) == NULL) {
        *v6 = 0;
        return parse_ipv4(s, len, addr);
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET6, buf, addr) != 1) {
        return -1;
    }
    static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (memcmp(addr, mapped, 12) == 0) {
        memmove(addr, addr + 12, 4);
        *v6 = 0;
    } else {
        *v6 = 1;
    }
    return 0;
}

static int prefix_match(const unsigned char *a, const unsigned char *b, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, bytes) != 0) {
        return 0;
    }
    if (rest == 0) {
        return 1;
    }
    unsigned char mask = (unsigned char) (0xff << (8 - rest));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

static int parse_cidr(const char *s, size_t len, tm_cidr *c)
{
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t) (slash - s) : len;
    int v6;
    memset(c, 0, sizeof *c);
    if (parse_ip(s, alen, c->addr, &v6) != 0) {
        return -1;
    }
    unsigned max = v6 ? 128 : 32, bits = max;
    if (slash) {
        const char *p = slash + 1;
        size_t plen = len - alen - 1;
        if (plen == 0 || plen > 3 || !all_digits(p, plen)) {
            return -1;
        }
        bits = 0;
        for (size_t i = 0; i < plen; i++) {
            bits = bits * 10 + (unsigned) (p[i] - '0');
        }
        if (bits > max) {
            return -1;
        }
        /* "::ffff:10.0.0.0/104" is 10.0.0.0/8 */
        if (!v6 && memchr(s, ':', alen)) {
            if (bits < 96) {
                return -1;
            }
            bits -= 96;
        }
    }
    c->v6 = (unsigned char) v6;
    c->bits = (unsigned char) bits;
    return 0;
}

/* ===================================================================== */
/* Compilation, with a path to the bad part in every error               */
/* ===================================================================== */

typedef struct {
    tm_arena *a;
    char *err;
    size_t errlen;
    const char *root;   /* what the path is relative to: "rules", "segment" */
    char path[256];
    size_t plen;
} cc;

static int cfail(cc *c, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        int n = snprintf(c->err, c->errlen, "%s: ", c->plen ? c->path : c->root);
        if (n >= 0 && (size_t) n < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + n, c->errlen - (size_t) n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

/* Appends ".key" or "[i]" to the path; returns the mark to restore. */
static size_t push_key(cc *c, const char *key)
{
    size_t mark = c->plen;
    int n = snprintf(c->path + mark, sizeof c->path - mark, "%s%s", mark ? "." : "", key);
    if (n > 0) {
        c->plen += (size_t) n < sizeof c->path - mark ? (size_t) n : sizeof c->path - mark - 1;
    }
    return mark;
}

static size_t push_index(cc *c, size_t i)
{
    size_t mark = c->plen;
    int n = snprintf(c->path + mark, sizeof c->path - mark, "[%zu]", i);
    if (n > 0) {
        c->plen += (size_t) n < sizeof c->path - mark ? (size_t) n : sizeof c->path - mark - 1;
    }
    return mark;
}

static void pop(cc *c, size_t mark)
{
    c->plen = mark;
    c->path[mark] = '\0';
}

static int oom(cc *c)
{
    return cfail(c, "out of memory");
}

static int only_keys(cc *c, const json_t *obj, const char *const *allowed,
                     const char *accepted)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *) obj, key, val) {
        const char *const *a = allowed;
        while (*a && strcmp(key, *a) != 0) {
            a++;
        }
        if (*a == NULL) {
            return cfail(c, "unknown field \"%.64s\"; accepted: %s", key, accepted);
        }
    }
    return 0;
}

static int copy_str(cc *c, const char *s, size_t len, tm_str *out)
{
    char *p = arena_alloc(c->a, len + 1);
    if (p == NULL) {
        return oom(c);
    }
    memcpy(p, s, len);
    p[len] = '\0';
    out->s = p;
    out->len = len;
    return 0;
}

/* A required or optional (v == NULL) string field: text, 1..max bytes. */
static int get_text(cc *c, const json_t *obj, const char *key, int required,
                    size_t max, tm_str *out)
{
    json_t *v = json_object_get(obj, key);
    out->s = NULL;
    out->len = 0;
    if (v == NULL && !required) {
        return 0;
    }
    size_t mark = push_key(c, key);
    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > max
        || !tm_text_valid(json_string_value(v), json_string_length(v))) {
        cfail(c, "%s a non-empty string of at most %zu bytes",
              v ? "must be" : "required:", max);
        return -1;
    }
    pop(c, mark);
    return copy_str(c, json_string_value(v), json_string_length(v), out);
}

static int get_bool(cc *c, const json_t *obj, const char *key, int dflt, int *out)
{
    json_t *v = json_object_get(obj, key);
    *out = dflt;
    if (v == NULL) {
        return 0;
    }
    if (!json_is_boolean(v)) {
        size_t mark = push_key(c, key);
        cfail(c, "must be true or false");
        pop(c, mark);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int get_array(cc *c, const json_t *obj, const char *key, size_t max,
                     const char *what, json_t **out)
{
    json_t *v = json_object_get(obj, key);
    *out = v;
    if (v == NULL) {
        return 0;
    }
    size_t mark = push_key(c, key);
    if (!json_is_array(v)) {
        return cfail(c, "must be an array of %s", what);
    }
    if (json_array_size(v) > max) {
        return cfail(c, "holds at most %zu %s", max, what);
    }
    pop(c, mark);
    return 0;
}

static void field_of(const tm_str *name, tm_field *f)
{
    f->name = *name;
    if (name->len == 6 && memcmp(name->s, "userId", 6) == 0) {
        f->kind = F_USER_ID;
    } else if (name->len == 12 && memcmp(name->s, "targetingKey", 12) == 0) {
        f->kind = F_TARGETING_KEY;
    } else if (name->len == 11 && memcmp(name->s, "currentTime", 11) == 0) {
        f->kind = F_CURRENT_TIME;
    } else {
        f->kind = F_ATTR;
    }
}

static void lower(char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        s[i] = (char) ascii_lower((unsigned char) s[i]);
    }
}

/* An array of strings (each at most TM_USER_VALUE_MAX_LEN) into the arena. */
static int string_list(cc *c, const json_t *arr, int icase, tm_str **out, size_t *n)
{
    size_t count = json_array_size(arr), i;
    json_t *v;
    *out = arena_alloc(c->a, (count ? count : 1) * sizeof **out);
    if (*out == NULL) {
        return oom(c);
    }
    json_array_foreach(arr, i, v) {
        size_t mark = push_index(c, i);
        if (!json_is_string(v)) {
            return cfail(c, "must be a string");
        }
        if (json_string_length(v) > TM_USER_VALUE_MAX_LEN) {
            return cfail(c, "values are at most %d bytes", TM_USER_VALUE_MAX_LEN);
        }
        pop(c, mark);
        if (copy_str(c, json_string_value(v), json_string_length(v), &(*out)[i]) != 0) {
            return -1;
        }
        if (icase) {
            lower((char *) (*out)[i].s, (*out)[i].len);
        }
    }
    *n = count;
    return 0;
}

/* The single operand of NUM_/DATE_/SEMVER_/REGEX: "value", or "values"
 * holding exactly one; strings, and numbers for NUM_. */
static int single_value(cc *c, const json_t *con, const char *op, int numbers_ok,
                        const char **s, size_t *len, double *num, int *is_num,
                        const char **key)
{
    const json_t *v = json_object_get(con, "value");
    *key = "value";
    *is_num = 0;
    if (v == NULL || (json_is_string(v) && json_string_length(v) == 0)) {
        const json_t *vals = json_object_get(con, "values");
        if (json_is_array(vals) && json_array_size(vals) == 1) {
            v = json_array_get(vals, 0);
            *key = "values[0]";
        }
    }
    if (v == NULL) {
        return cfail(c, "%s needs \"value\"", op);
    }
    size_t mark = push_key(c, *key);
    if (numbers_ok && json_is_number(v)) {
        *num = json_number_value(v);
        *is_num = 1;
        if (!isfinite(*num)) {
            return cfail(c, "must be a finite number");
        }
    } else if (json_is_string(v)) {
        *s = json_string_value(v);
        *len = json_string_length(v);
        if (*len > MAX_REGEX_LEN) {
            return cfail(c, "at most %d bytes", MAX_REGEX_LEN);
        }
    } else {
        return cfail(c, numbers_ok ? "must be a number" : "must be a string");
    }
    pop(c, mark);
    return 0;
}

static int compile_constraint(cc *c, const json_t *con, tm_constraint *k)
{
    static const char *const keys[] = {
        "contextName", "operator", "values", "value", "inverted", "caseInsensitive", NULL
    };
    if (!json_is_object(con)) {
        return cfail(c, "must be an object {\"contextName\", \"operator\", \"values\"|\"value\"}");
    }
    if (only_keys(c, con, keys, "contextName, operator, values, value, inverted, "
                  "caseInsensitive") != 0) {
        return -1;
    }
    tm_str name;
    if (get_text(c, con, "contextName", 1, MAX_NAME_LEN, &name) != 0) {
        return -1;
    }
    field_of(&name, &k->field);

    json_t *opj = json_object_get(con, "operator");
    size_t mark = push_key(c, "operator");
    if (!json_is_string(opj)) {
        return cfail(c, "required: one of " OPS_ACCEPTED);
    }
    size_t op = 0;
    while (op < NOPS && strcmp(ops[op].name, json_string_value(opj)) != 0) {
        op++;
    }
    if (op == NOPS) {
        return cfail(c, "unknown operator \"%.32s\"; accepted: " OPS_ACCEPTED,
                     json_string_value(opj));
    }
    pop(c, mark);
    k->op = (tm_op) op;

    int inv, icase;
    if (get_bool(c, con, "inverted", 0, &inv) != 0
        || get_bool(c, con, "caseInsensitive", 0, &icase) != 0) {
        return -1;
    }
    k->inverted = (unsigned char) inv;
    /* Only string comparisons have a case; elsewhere the flag is accepted
     * (Unleash sends it on every constraint) and means nothing. */
    tm_op_kind kind = ops[op].kind;
    k->icase = (unsigned char) (icase && (kind == K_LIST || kind == K_STR || kind == K_REGEX));

    json_t *vals = json_object_get(con, "values");
    if (vals && get_array(c, con, "values", TM_USER_LIST_MAX_VALUES, "strings", &vals) != 0) {
        return -1;
    }
    json_t *val = json_object_get(con, "value");

    if (kind == K_LIST || kind == K_STR || kind == K_CIDR) {
        json_t *one = NULL;     /* "value" standing for a one-string list */
        int single = vals == NULL;
        if (single) {
            if (!json_is_string(val)) {
                return cfail(c, "%s needs \"values\": an array of strings", ops[op].name);
            }
            one = json_array();
            if (one == NULL || json_array_append(one, val) != 0) {
                json_decref(one);
                return oom(c);
            }
            vals = one;
        } else if (val && !json_is_string(val)) {
            mark = push_key(c, "value");
            return cfail(c, "must be a string");
        }
        mark = push_key(c, single ? "value" : "values");
        int rc = string_list(c, vals, k->icase, &k->values, &k->nvalues);
        json_decref(one);
        if (rc != 0) {
            return -1;
        }
        if (kind == K_LIST) {
            qsort(k->values, k->nvalues, sizeof *k->values, str_cmp);
        } else if (kind == K_CIDR) {
            k->cidrs = arena_alloc(c->a, (k->nvalues ? k->nvalues : 1) * sizeof *k->cidrs);
            if (k->cidrs == NULL) {
                return oom(c);
            }
            for (size_t i = 0; i < k->nvalues; i++) {
                if (parse_cidr(k->values[i].s, k->values[i].len, &k->cidrs[i]) != 0) {
                    size_t m2 = single ? c->plen : push_index(c, i);
                    cfail(c, "\"%.64s\" is not an IPv4 or IPv6 address or CIDR "
                          "(e.g. 10.0.0.0/8, 2001:db8::/32)", k->values[i].s);
                    pop(c, m2);
                    return -1;
                }
            }
            k->ncidrs = k->nvalues;
        }
        pop(c, mark);
        return 0;
    }
    if (vals && val == NULL && json_array_size(vals) != 1) {
        return cfail(c, "%s takes one operand: \"value\"", ops[op].name);
    }

    const char *s = NULL, *key;
    size_t len = 0;
    double num = 0;
    int is_num;
    if (single_value(c, con, ops[op].name, kind == K_NUM, &s, &len, &num, &is_num, &key) != 0) {
        return -1;
    }
    mark = push_key(c, key);
    switch (kind) {
    case K_NUM:
        if (!is_num && parse_number(s, len, &num) != 0) {
            return cfail(c, "%s needs a number, got \"%.32s\"", ops[op].name, s);
        }
        k->num = num;
        break;
    case K_DATE:
        if (parse_date(s, len, &k->ms) != 0) {
            return cfail(c, "\"%.40s\" is not an RFC 3339 date "
                         "(e.g. 2024-05-01T12:00:00Z)", s);
        }
        break;
    case K_SEMVER: {
        tm_str copy = { NULL, 0 };
        if (copy_str(c, s, len, &copy) != 0) {
            return -1;
        }
        if (parse_semver(copy.s, copy.len, &k->semver) != 0) {
            return cfail(c, "\"%.40s\" is not a semantic version "
                         "(MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD])", s);
        }
        break;
    }
    case K_REGEX: {
        char *pat = arena_alloc(c->a, len + 1);
        tm_regex *r = arena_alloc(c->a, sizeof *r);
        if (pat == NULL || r == NULL) {
            return oom(c);
        }
        if (memchr(s, '\0', len)) {
            return cfail(c, "a regular expression cannot hold NUL");
        }
        memcpy(pat, s, len);
        int rc = regcomp(&r->re, pat, REG_EXTENDED | REG_NOSUB | (k->icase ? REG_ICASE : 0));
        if (rc != 0) {
            char msg[128];
            regerror(rc, &r->re, msg, sizeof msg);
            return cfail(c, "invalid regular expression (POSIX extended): %s", msg);
        }
        r->next = c->a->regexes;
        c->a->regexes = r;
        k->re = &r->re;
        break;
    }
    default:
        break;
    }
    pop(c, mark);
    return 0;
}

static int compile_constraints(cc *c, const json_t *obj, tm_constraints *cs)
{
    json_t *arr;
    if (get_array(c, obj, "constraints", MAX_CONSTRAINTS, "constraints", &arr) != 0) {
        return -1;
    }
    cs->n = 0;
    if (arr == NULL) {
        return 0;
    }
    cs->c = arena_alloc(c->a, (json_array_size(arr) ? json_array_size(arr) : 1) * sizeof *cs->c);
    if (cs->c == NULL) {
        return oom(c);
    }
    size_t m1 = push_key(c, "constraints"), i;
    json_t *con;
    json_array_foreach(arr, i, con) {
        size_t m2 = push_index(c, i);
        if (compile_constraint(c, con, &cs->c[i]) != 0) {
            return -1;
        }
        pop(c, m2);
    }
    pop(c, m1);
    cs->n = json_array_size(arr);
    return 0;
}

static int compile_sticky(cc *c, const json_t *obj, tm_sticky *st, int *given)
{
    tm_str s;
    if (get_text(c, obj, "stickiness", 0, MAX_NAME_LEN, &s) != 0) {
        return -1;
    }
    *given = s.s != NULL;
    st->kind = S_DEFAULT;
    if (s.s == NULL || strcmp(s.s, "default") == 0) {
        return 0;
    }
    if (strcmp(s.s, "random") == 0) {
        st->kind = S_RANDOM;
        return 0;
    }
    st->kind = S_FIELD;
    field_of(&s, &st->field);
    return 0;
}

static int compile_payload(cc *c, const json_t *p, tm_variant *v)
{
    static const char *const keys[] = { "type", "value", NULL };
    if (!json_is_object(p)) {
        return cfail(c, "must be an object {\"type\", \"value\"}");
    }
    if (only_keys(c, p, keys, "type, value") != 0) {
        return -1;
    }
    const char *type = json_string_value(json_object_get(p, "type"));
    json_t *val = json_object_get(p, "value");
    size_t mark = push_key(c, "type");
    if (type == NULL) {
        return cfail(c, "required: string, json, number or boolean");
    }
    if (strcmp(type, "string") == 0 || strcmp(type, "csv") == 0) {
        v->ptype = TM_PAYLOAD_STRING;
    } else if (strcmp(type, "json") == 0) {
        v->ptype = TM_PAYLOAD_JSON;
    } else if (strcmp(type, "number") == 0) {
        v->ptype = TM_PAYLOAD_NUMBER;
    } else if (strcmp(type, "boolean") == 0) {
        v->ptype = TM_PAYLOAD_BOOLEAN;
    } else {
        return cfail(c, "unknown payload type \"%.32s\"; accepted: string, json, number, "
                     "boolean, csv", type);
    }
    pop(c, mark);
    mark = push_key(c, "value");
    if (val == NULL) {
        return cfail(c, "required");
    }
    /* Unleash sends every payload as a string; native JSON is accepted too.
     * What is stored is ready to print: JSON text, or the raw string. */
    json_t *native = NULL;
    char *text = NULL;
    const char *s = json_string_value(val);
    if (v->ptype == TM_PAYLOAD_STRING) {
        if (s == NULL) {
            return cfail(c, "a string payload needs a string value");
        }
        if (json_string_length(val) > MAX_PAYLOAD_LEN) {
            return cfail(c, "at most %d bytes", MAX_PAYLOAD_LEN);
        }
        if (copy_str(c, s, json_string_length(val), &v->payload) != 0) {
            return -1;
        }
        pop(c, mark);
        return 0;
    }
    if (s) {
        json_error_t je;
        native = json_loadb(s, json_string_length(val), JSON_DECODE_ANY, &je);
        if (native == NULL) {
            return cfail(c, "not valid JSON text: %.80s", je.text);
        }
    } else {
        native = json_incref(val);
    }
    int ok = v->ptype == TM_PAYLOAD_JSON
             || (v->ptype == TM_PAYLOAD_NUMBER && json_is_number(native))
             || (v->ptype == TM_PAYLOAD_BOOLEAN && json_is_boolean(native));
    if (!ok) {
        json_decref(native);
        return cfail(c, "must be a %s", v->ptype == TM_PAYLOAD_NUMBER ? "number" : "boolean");
    }
    text = json_dumps(native, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    json_decref(native);
    if (text == NULL) {
        return oom(c);
    }
    size_t tlen = strlen(text);
    int rc = tlen > MAX_PAYLOAD_LEN ? cfail(c, "at most %d bytes", MAX_PAYLOAD_LEN)
             : copy_str(c, text, tlen, &v->payload);
    /* jansson's allocator, which a host (the nginx module) may replace */
    json_free_t jfree;
    json_get_alloc_funcs(NULL, &jfree);
    jfree(text);
    if (rc == 0) {
        pop(c, mark);
    }
    return rc;
}

static int compile_overrides(cc *c, const json_t *arr, tm_variant *v)
{
    v->overrides = arena_alloc(c->a, (json_array_size(arr) ? json_array_size(arr) : 1)
                                     * sizeof *v->overrides);
    if (v->overrides == NULL) {
        return oom(c);
    }
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        static const char *const keys[] = { "contextName", "values", NULL };
        size_t mark = push_index(c, i);
        tm_override *ov = &v->overrides[i];
        if (!json_is_object(o)) {
            return cfail(c, "must be an object {\"contextName\", \"values\"}");
        }
        tm_str name;
        json_t *vals;
        if (only_keys(c, o, keys, "contextName, values") != 0
            || get_text(c, o, "contextName", 1, MAX_NAME_LEN, &name) != 0
            || get_array(c, o, "values", TM_USER_LIST_MAX_VALUES, "strings", &vals) != 0) {
            return -1;
        }
        if (vals == NULL) {
            return cfail(c, "required: \"values\", an array of strings");
        }
        field_of(&name, &ov->field);
        size_t m2 = push_key(c, "values");
        if (string_list(c, vals, 0, &ov->values, &ov->nvalues) != 0) {
            return -1;
        }
        pop(c, m2);
        qsort(ov->values, ov->nvalues, sizeof *ov->values, str_cmp);
        pop(c, mark);
    }
    v->noverrides = json_array_size(arr);
    return 0;
}

static int compile_variant(cc *c, const json_t *o, tm_variant *v, tm_variants *vs, size_t idx)
{
    static const char *const keys[] = {
        "name", "weight", "stickiness", "payload", "overrides", "weightType", NULL
    };
    if (!json_is_object(o)) {
        return cfail(c, "must be an object {\"name\", \"weight\", ...}");
    }
    if (only_keys(c, o, keys, "name, weight, stickiness, payload, overrides, weightType") != 0
        || get_text(c, o, "name", 1, MAX_NAME_LEN, &v->name) != 0) {
        return -1;
    }
    for (size_t j = 0; j < idx; j++) {
        if (str_cmp(&vs->v[j].name, &v->name) == 0) {
            size_t mark = push_key(c, "name");
            cfail(c, "duplicate variant name \"%.64s\"", v->name.s);
            pop(c, mark);
            return -1;
        }
    }
    json_t *w = json_object_get(o, "weight");
    size_t mark = push_key(c, "weight");
    if (!json_is_integer(w) || json_integer_value(w) < 0
        || json_integer_value(w) > MAX_VARIANT_WEIGHT) {
        return cfail(c, "must be an integer from 0 to %d", MAX_VARIANT_WEIGHT);
    }
    pop(c, mark);
    v->weight = (uint32_t) json_integer_value(w);

    tm_sticky st;
    int given;
    if (compile_sticky(c, o, &st, &given) != 0) {
        return -1;
    }
    if (idx == 0) {                     /* Unleash: the first variant's counts */
        vs->sticky = st;
        vs->has_sticky = given;
    }
    json_t *wt = json_object_get(o, "weightType");
    if (wt && !json_is_string(wt)) {
        mark = push_key(c, "weightType");
        return cfail(c, "must be a string (\"variable\" or \"fix\"; informational)");
    }
    json_t *p = json_object_get(o, "payload");
    if (p) {
        mark = push_key(c, "payload");
        if (compile_payload(c, p, v) != 0) {
            return -1;
        }
        pop(c, mark);
    }
    json_t *ovs;
    if (get_array(c, o, "overrides", MAX_OVERRIDES, "overrides", &ovs) != 0) {
        return -1;
    }
    if (ovs) {
        mark = push_key(c, "overrides");
        if (compile_overrides(c, ovs, v) != 0) {
            return -1;
        }
        pop(c, mark);
    }
    return 0;
}

static int compile_variants(cc *c, const json_t *obj, tm_variants *vs)
{
    json_t *arr;
    if (get_array(c, obj, "variants", MAX_VARIANTS, "variants", &arr) != 0) {
        return -1;
    }
    memset(vs, 0, sizeof *vs);
    if (arr == NULL || json_array_size(arr) == 0) {
        return 0;
    }
    vs->v = arena_alloc(c->a, json_array_size(arr) * sizeof *vs->v);
    if (vs->v == NULL) {
        return oom(c);
    }
    size_t m1 = push_key(c, "variants"), i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        size_t m2 = push_index(c, i);
        if (compile_variant(c, o, &vs->v[i], vs, i) != 0) {
            return -1;
        }
        vs->total += vs->v[i].weight;
        vs->nweighted += vs->v[i].weight > 0;
        vs->has_overrides |= vs->v[i].noverrides > 0;
        pop(c, m2);
    }
    pop(c, m1);
    vs->n = json_array_size(arr);
    return 0;
}

static int compile_rollout(cc *c, const json_t *r, tm_strategy *s)
{
    static const char *const keys[] = { "percentage", "stickiness", "groupId", NULL };
    if (!json_is_object(r)) {
        return cfail(c, "must be an object {\"percentage\", \"stickiness\", \"groupId\"}");
    }
    if (only_keys(c, r, keys, "percentage, stickiness, groupId") != 0) {
        return -1;
    }
    json_t *p = json_object_get(r, "percentage");
    size_t mark = push_key(c, "percentage");
    if (!json_is_number(p) || !(json_number_value(p) >= 0) || json_number_value(p) > 100) {
        return cfail(c, "must be a number from 0 to 100");
    }
    pop(c, mark);
    s->has_rollout = 1;
    s->percentage = json_number_value(p);
    int given;
    return compile_sticky(c, r, &s->sticky, &given) != 0
           || get_text(c, r, "groupId", 0, MAX_NAME_LEN, &s->group) != 0 ? -1 : 0;
}

static int add_segref(cc *c, tm_program *p, const tm_str *name)
{
    for (size_t i = 0; i < p->nsegrefs; i++) {
        if (str_cmp(&p->segrefs[i], name) == 0) {
            return 0;
        }
    }
    if ((p->nsegrefs & (p->nsegrefs - 1)) == 0) {   /* 0, 1, 2, 4...: grow */
        size_t cap = p->nsegrefs ? p->nsegrefs * 2 : 1;
        tm_str *n = arena_alloc(c->a, cap * sizeof *n);
        if (n == NULL) {
            return oom(c);
        }
        if (p->nsegrefs) {
            memcpy(n, p->segrefs, p->nsegrefs * sizeof *n);
        }
        p->segrefs = n;
    }
    p->segrefs[p->nsegrefs++] = *name;
    return 0;
}

static int compile_strategy(cc *c, const json_t *o, tm_strategy *s, tm_program *p)
{
    static const char *const keys[] = {
        "name", "constraints", "segments", "rollout", "variants", "disabled", NULL
    };
    if (!json_is_object(o)) {
        return cfail(c, "must be an object {\"constraints\", \"segments\", \"rollout\", "
                     "\"variants\"}");
    }
    tm_str name;
    if (only_keys(c, o, keys, "name, constraints, segments, rollout, variants, disabled") != 0
        || get_text(c, o, "name", 0, MAX_NAME_LEN, &name) != 0
        || get_bool(c, o, "disabled", 0, &s->disabled) != 0
        || compile_constraints(c, o, &s->cs) != 0) {
        return -1;
    }
    json_t *segs;
    if (get_array(c, o, "segments", MAX_SEGMENT_REFS, "segment names", &segs) != 0) {
        return -1;
    }
    if (segs) {
        size_t m1 = push_key(c, "segments");
        if (string_list(c, segs, 0, &s->segments, &s->nsegments) != 0) {
            return -1;
        }
        for (size_t i = 0; i < s->nsegments; i++) {
            if (!tm_flag_name_valid(s->segments[i].s, s->segments[i].len)) {
                push_index(c, i);
                return cfail(c, "segment names are 1..%d of " TM_NAME_CHARSET, TM_NAME_MAX);
            }
            if (add_segref(c, p, &s->segments[i]) != 0) {
                return -1;
            }
        }
        pop(c, m1);
    }
    json_t *r = json_object_get(o, "rollout");
    if (r) {
        size_t m1 = push_key(c, "rollout");
        if (compile_rollout(c, r, s) != 0) {
            return -1;
        }
        pop(c, m1);
    }
    if (compile_variants(c, o, &s->variants) != 0) {
        return -1;
    }
    if (!s->variants.has_sticky) {      /* strategy variants follow the rollout */
        s->variants.sticky = s->sticky;
    }
    return 0;
}

static int compile_dependency(cc *c, const json_t *o, tm_dependency *d)
{
    static const char *const keys[] = { "feature", "enabled", "variants", NULL };
    if (!json_is_object(o)) {
        return cfail(c, "must be an object {\"feature\", \"enabled\", \"variants\"}");
    }
    if (only_keys(c, o, keys, "feature, enabled, variants") != 0) {
        return -1;
    }
    json_t *f = json_object_get(o, "feature");
    size_t mark = push_key(c, "feature");
    if (!json_is_string(f) || !tm_flag_name_valid(json_string_value(f), json_string_length(f))) {
        return cfail(c, "required: a flag name, 1..%d of " TM_NAME_CHARSET, TM_NAME_MAX);
    }
    pop(c, mark);
    if (copy_str(c, json_string_value(f), json_string_length(f), &d->feature) != 0
        || get_bool(c, o, "enabled", 1, &d->enabled) != 0) {
        return -1;
    }
    json_t *vars;
    if (get_array(c, o, "variants", MAX_VARIANTS, "variant names", &vars) != 0) {
        return -1;
    }
    if (vars) {
        mark = push_key(c, "variants");
        if (!d->enabled && json_array_size(vars)) {
            return cfail(c, "only meaningful with \"enabled\": true");
        }
        if (string_list(c, vars, 0, &d->variants, &d->nvariants) != 0) {
            return -1;
        }
        qsort(d->variants, d->nvariants, sizeof *d->variants, str_cmp);
        pop(c, mark);
    }
    return 0;
}

static int compile_program(cc *c, const json_t *doc, tm_program *p)
{
    static const char *const keys[] = { "strategies", "variants", "dependencies", NULL };
    if (only_keys(c, doc, keys, "strategies, variants, dependencies (or \"type\" for "
                  TM_RULE_TYPES_ACCEPTED " documents)") != 0) {
        return -1;
    }
    json_t *arr;
    if (get_array(c, doc, "strategies", MAX_STRATEGIES, "strategy objects", &arr) != 0) {
        return -1;
    }
    if (arr && json_array_size(arr)) {
        p->s = arena_alloc(c->a, json_array_size(arr) * sizeof *p->s);
        if (p->s == NULL) {
            return oom(c);
        }
        size_t m1 = push_key(c, "strategies"), i;
        json_t *o;
        json_array_foreach(arr, i, o) {
            size_t m2 = push_index(c, i);
            if (compile_strategy(c, o, &p->s[i], p) != 0) {
                return -1;
            }
            pop(c, m2);
        }
        pop(c, m1);
        p->ns = json_array_size(arr);
    }
    if (compile_variants(c, doc, &p->variants) != 0) {
        return -1;
    }
    if (get_array(c, doc, "dependencies", MAX_DEPENDENCIES, "dependencies", &arr) != 0) {
        return -1;
    }
    if (arr && json_array_size(arr)) {
        p->deps = arena_alloc(c->a, json_array_size(arr) * sizeof *p->deps);
        if (p->deps == NULL) {
            return oom(c);
        }
        size_t m1 = push_key(c, "dependencies"), i;
        json_t *o;
        json_array_foreach(arr, i, o) {
            size_t m2 = push_index(c, i);
            if (compile_dependency(c, o, &p->deps[i]) != 0) {
                return -1;
            }
            pop(c, m2);
        }
        pop(c, m1);
        p->ndeps = json_array_size(arr);
    }
    return 0;
}

static tm_program *program_compile(const json_t *doc, char *err, size_t errlen)
{
    tm_arena a = { NULL, NULL };
    tm_program *p = arena_alloc(&a, sizeof *p);
    if (p == NULL) {
        fail(err, errlen, "out of memory");
        return NULL;
    }
    cc c = { &a, err, errlen, "rules", "", 0 };
    if (compile_program(&c, doc, p) != 0) {
        arena_free(&a);
        return NULL;
    }
    p->arena = a;
    return p;
}

static void program_free(tm_program *p)
{
    if (p) {
        tm_arena a = p->arena;      /* p lives in its own arena */
        arena_free(&a);
    }
}

/* A document without "type" is a strategies document. */
static int is_typed(const json_t *doc)
{
    return json_object_get(doc, "type") != NULL;
}

int tm_rules_check(const json_t *doc, char *err, size_t errlen)
{
    if (!json_is_object(doc)) {
        return fail(err, errlen, "rules must be a JSON object");
    }
    if (is_typed(doc)) {
        return typed_check(doc, err, errlen);
    }
    tm_program *p = program_compile(doc, err, errlen);
    if (p == NULL) {
        return -1;
    }
    program_free(p);
    return 0;
}

tm_rule *tm_rule_compile(const json_t *doc, char *err, size_t errlen)
{
    if (!json_is_object(doc)) {
        fail(err, errlen, "rules must be a JSON object");
        return NULL;
    }
    if (is_typed(doc) && typed_check(doc, err, errlen) != 0) {
        return NULL;
    }
    tm_rule *r = calloc(1, sizeof *r);
    if (r == NULL) {
        fail(err, errlen, "out of memory");
        return NULL;
    }
    if (is_typed(doc)) {
        return typed_compile(doc, r, err, errlen);
    }
    r->type = TM_RULE_STRATEGIES;
    r->program = program_compile(doc, err, errlen);
    if (r->program == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

void tm_rule_free(tm_rule *r)
{
    if (r == NULL) {
        return;
    }
    program_free(r->program);
    free(r->users);
    free(r->arena);
    free(r);
}

const char *tm_rule_segment_ref(const tm_rule *r, size_t i, size_t *len)
{
    if (r == NULL || r->program == NULL || i >= r->program->nsegrefs) {
        return NULL;
    }
    *len = r->program->segrefs[i].len;
    return r->program->segrefs[i].s;
}

const char *tm_rule_dependency_ref(const tm_rule *r, size_t i, size_t *len)
{
    if (r == NULL || r->program == NULL || i >= r->program->ndeps) {
        return NULL;
    }
    *len = r->program->deps[i].feature.len;
    return r->program->deps[i].feature.s;
}

/* ---- segments ---- */

static int segment_compile_into(cc *c, const json_t *doc, tm_segment *s)
{
    static const char *const keys[] = { "name", "constraints", "description", NULL };
    if (!json_is_object(doc)) {
        return cfail(c, "must be a JSON object {\"name\", \"constraints\"}");
    }
    if (only_keys(c, doc, keys, "name, constraints, description") != 0) {
        return -1;
    }
    json_t *name = json_object_get(doc, "name");
    if (!json_is_string(name) || !tm_flag_name_valid(json_string_value(name),
                                                     json_string_length(name))) {
        push_key(c, "name");
        return cfail(c, "required: 1..%d of " TM_NAME_CHARSET, TM_NAME_MAX);
    }
    json_t *desc = json_object_get(doc, "description");
    if (desc && !json_is_string(desc)) {
        push_key(c, "description");
        return cfail(c, "must be a string");
    }
    tm_str n = { NULL, 0 };
    if (copy_str(c, json_string_value(name), json_string_length(name), &n) != 0) {
        return -1;
    }
    s->name = n.s;
    return compile_constraints(c, doc, &s->cs);
}

tm_segment *tm_segment_compile(const json_t *doc, char *err, size_t errlen)
{
    tm_arena a = { NULL, NULL };
    tm_segment *s = arena_alloc(&a, sizeof *s);
    if (s == NULL) {
        fail(err, errlen, "out of memory");
        return NULL;
    }
    cc c = { &a, err, errlen, "segment", "", 0 };
    if (segment_compile_into(&c, doc, s) != 0) {
        arena_free(&a);
        return NULL;
    }
    s->arena = a;
    return s;
}

int tm_segment_check(const json_t *doc, char *err, size_t errlen)
{
    tm_segment *s = tm_segment_compile(doc, err, errlen);
    int rc = s ? 0 : -1;
    tm_segment_free(s);
    return rc;
}

void tm_segment_free(tm_segment *s)
{
    if (s) {
        tm_arena a = s->arena;
        arena_free(&a);
    }
}

const char *tm_segment_name(const tm_segment *s)
{
    return s->name;
}

/* ===================================================================== */
/* Evaluation: no allocation, no I/O                                      */
/* ===================================================================== */

typedef struct {
    const tm_context *ctx;
    const tm_eval_env *env;
    int depth;
} ev;

static int64_t now_ms(const tm_context *ctx)
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

static int has_prefix(const char *s, size_t len, const tm_str *p, int icase)
{
    if (p->len > len) {
        return 0;
    }
    if (!icase) {
        return memcmp(s, p->s, p->len) == 0;
    }
    for (size_t i = 0; i < p->len; i++) {
        if (ascii_lower((unsigned char) s[i]) != (unsigned char) p->s[i]) {
            return 0;
        }
    }
    return 1;
}

static int contains(const char *s, size_t len, const tm_str *p, int icase)
{
    if (p->len == 0) {
        return 1;
    }
    for (size_t i = 0; i + p->len <= len; i++) {
        if (has_prefix(s + i, len - i, p, icase)) {
            return 1;
        }
    }
    return 0;
}

static int match_regex(const regex_t *re, const char *s, size_t len)
{
#ifdef REG_STARTEND
    regmatch_t m = { 0, (regoff_t) len };
    return regexec(re, s, 1, &m, REG_STARTEND) == 0;
#else
    char buf[TM_CONTEXT_MAX_VALUE_LEN + 1];
    if (len >= sizeof buf || memchr(s, '\0', len)) {
        return 0;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    return regexec(re, buf, 0, NULL, 0) == 0;
#endif
}

static int match_op(const tm_constraint *k, const char *s, size_t len)
{
    switch (k->op) {
    case OP_IN:
    case OP_NOT_IN: {
        int in;
        if (k->icase) {
            char buf[TM_USER_VALUE_MAX_LEN];
            if (len > sizeof buf) {
                in = 0;
            } else {
                for (size_t i = 0; i < len; i++) {
                    buf[i] = (char) ascii_lower((unsigned char) s[i]);
                }
                in = str_sorted_has(k->values, k->nvalues, buf, len);
            }
        } else {
            in = str_sorted_has(k->values, k->nvalues, s, len);
        }
        return k->op == OP_IN ? in : !in;
    }
    case OP_STR_STARTS_WITH:
    case OP_STR_ENDS_WITH:
    case OP_STR_CONTAINS:
        for (size_t i = 0; i < k->nvalues; i++) {
            const tm_str *p = &k->values[i];
            if (p->len == 0) {
                continue;               /* as Unleash: "" is no pattern */
            }
            int m = k->op == OP_STR_STARTS_WITH ? has_prefix(s, len, p, k->icase)
                    : k->op == OP_STR_ENDS_WITH
                    ? p->len <= len && has_prefix(s + len - p->len, p->len, p, k->icase)
                    : contains(s, len, p, k->icase);
            if (m) {
                return 1;
            }
        }
        return 0;
    case OP_NUM_EQ:
    case OP_NUM_LT:
    case OP_NUM_LTE:
    case OP_NUM_GT:
    case OP_NUM_GTE: {
        double d;
        if (parse_number(s, len, &d) != 0) {
            return 0;
        }
        switch (k->op) {
        case OP_NUM_EQ: return d == k->num;
        case OP_NUM_LT: return d < k->num;
        case OP_NUM_LTE: return d <= k->num;
        case OP_NUM_GT: return d > k->num;
        default: return d >= k->num;
        }
    }
    case OP_DATE_BEFORE:
    case OP_DATE_AFTER: {
        int64_t ms;
        if (parse_date(s, len, &ms) != 0) {
            return 0;
        }
        return k->op == OP_DATE_BEFORE ? ms < k->ms : ms > k->ms;
    }
    case OP_SEMVER_EQ:
    case OP_SEMVER_LT:
    case OP_SEMVER_LTE:
    case OP_SEMVER_GT:
    case OP_SEMVER_GTE: {
        tm_semver v;
        if (parse_semver(s, len, &v) != 0) {
            return 0;
        }
        int c = semver_cmp(&v, &k->semver);
        switch (k->op) {
        case OP_SEMVER_EQ: return c == 0;
        case OP_SEMVER_LT: return c < 0;
        case OP_SEMVER_LTE: return c <= 0;
        case OP_SEMVER_GT: return c > 0;
        default: return c >= 0;
        }
    }
    case OP_REGEX:
        return match_regex(k->re, s, len);
    case OP_IP_IN_CIDR: {
        unsigned char addr[16];
        int v6;
        if (parse_ip(s, len, addr, &v6) != 0) {
            return 0;
        }
        for (size_t i = 0; i < k->ncidrs; i++) {
            if (k->cidrs[i].v6 == v6 && prefix_match(addr, k->cidrs[i].addr, k->cidrs[i].bits)) {
                return 1;
            }
        }
        return 0;
    }
    }
    return 0;
}

/* Unleash's rules: an absent (or empty) field satisfies only NOT_IN;
 * DATE_ operators on currentTime use the clock when it is absent; then
 * "inverted" negates the outcome. */
static int constraint_holds(const tm_constraint *k, const tm_context *ctx)
{
    tm_str v;
    int r;
    if (field_value(ctx, &k->field, &v) == 0) {
        r = match_op(k, v.s, v.len);
    } else if (k->field.kind == F_CURRENT_TIME
               && (k->op == OP_DATE_BEFORE || k->op == OP_DATE_AFTER)) {
        int64_t ms = now_ms(ctx);
        r = k->op == OP_DATE_BEFORE ? ms < k->ms : ms > k->ms;
    } else {
        r = k->op == OP_NOT_IN;
    }
    return r ^ k->inverted;
}

static int constraints_hold(const tm_constraints *cs, const tm_context *ctx)
{
    for (size_t i = 0; i < cs->n; i++) {
        if (!constraint_holds(&cs->c[i], ctx)) {
            return 0;
        }
    }
    return 1;
}

int tm_segment_match(const tm_segment *s, const tm_context *ctx)
{
    return constraints_hold(&s->cs, ctx ? ctx : &empty_ctx);
}

static uint32_t next_random(const tm_eval_env *env)
{
    if (env && env->random) {
        return env->random(env->ud);
    }
    static _Thread_local uint32_t x;
    if (x == 0) {
        x = (uint32_t) (uintptr_t) &x ^ (uint32_t) now_ms(NULL) ^ 0x9e3779b9u;
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
        if (field_value(e->ctx, &user_id, out) == 0
            || field_value(e->ctx, &session_id, out) == 0
            || (variants && field_value(e->ctx, &remote, out) == 0)) {
            return 0;
        }
        break;
    case S_FIELD:
        if (field_value(e->ctx, &st->field, out) == 0) {
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

static int override_matches(const tm_override *o, const tm_context *ctx)
{
    tm_str v;
    return field_value(ctx, &o->field, &v) == 0
           && str_sorted_has(o->values, o->nvalues, v.s, v.len);
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
                if (override_matches(&vs->v[i].overrides[j], e->ctx)) {
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

static int segments_hold(const ev *e, const tm_strategy *s)
{
    for (size_t i = 0; i < s->nsegments; i++) {
        const tm_segment *seg = e->env && e->env->segment
            ? e->env->segment(e->env->ud, s->segments[i].s, s->segments[i].len) : NULL;
        if (seg == NULL || !constraints_hold(&seg->cs, e->ctx)) {
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
    if (s->percentage >= 100) {
        return 1;
    }
    if (!(s->percentage > 0)) {
        return 0;
    }
    char rnd[RANDOM_TEXT];
    tm_str sv;
    if (sticky_value(e, &s->sticky, 0, rnd, &sv) != 0) {
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

/* 1 if met, 0 if not, -1 on error (out set). */
static int dependency_met(const ev *e, const tm_dependency *d, tm_eval_result *out)
{
    tm_flag_view pv;
    if (e->env == NULL || e->env->flag == NULL
        || e->env->flag(e->env->ud, d->feature.s, d->feature.len, &pv) != 0) {
        return 0;                       /* an unknown parent is never on */
    }
    int max = e->env->max_depth > 0 ? e->env->max_depth : TM_EVAL_MAX_DEPTH;
    if (e->depth + 1 > max) {
        set_error(out, "dependency chain too deep (a cycle?)");
        return -1;
    }
    ev pe = { e->ctx, e->env, e->depth + 1 };
    tm_eval_result pr;
    eval_flag(&pe, &pv, &pr);
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
    return d->nvariants == 0
           || (pr.variant && str_sorted_has(d->variants, d->nvariants,
                                            pr.variant, pr.variant_len));
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
        size_t i;
        for (i = 0; i < p->ns; i++) {
            const tm_strategy *s = &p->s[i];
            const tm_str *g = s->group.s ? &s->group : &flag_group;
            if (!s->disabled && constraints_hold(&s->cs, e->ctx)
                && segments_hold(e, s) && rollout_holds(e, s, g)) {
                break;
            }
        }
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
            out->value = str_sorted_has(r->users, r->nusers, id.s, id.len);
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

int tm_evaluate(const tm_flag_view *flag, const tm_context *ctx,
                const tm_eval_env *env, tm_eval_result *out)
{
    ev e = { ctx ? ctx : &empty_ctx, env, 0 };
    eval_flag(&e, flag, out);
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
