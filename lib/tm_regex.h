/* Bounded regular expressions: the REGEX operator's matcher, shared by the
 * targeting daemon (validation) and the nginx module (evaluation).
 *
 * PCRE2 (JIT where the platform has it) with every cost capped, so that no
 * pattern and no subject can make one match cost more than a small bound
 * (docs/rules.md, "Worst cases"; bench/engine_bench measures it):
 *  - a pattern is at most TM_REGEX_MAX_PATTERN bytes, nests parentheses at
 *    most TM_REGEX_MAX_NEST deep and compiles (bytecode + JIT code) to at
 *    most TM_REGEX_MAX_CODE bytes: compiling costs at most a few ms;
 *  - a subject longer than TM_REGEX_MAX_SUBJECT bytes is not matched;
 *  - one match takes at most TM_REGEX_MATCH_LIMIT backtracking steps in all
 *    (whatever the start positions, see tm_regex.c), a bounded JIT stack
 *    and interpreter heap.
 * A subject over a bound gives "no match" with a status saying which, so the
 * caller can count it.
 *
 * Syntax and meaning are PCRE2's, as close to JavaScript's (Unleash's) as it
 * gets: UTF-8 with Unicode case folding, \uHHHH and \u{H..} escapes, '$' only
 * at the very end, '.' not matching '\n'. Refused because they change the
 * search or are not bounded: backtracking verbs and start-of-pattern options
 * ("(*SKIP)", "(*NO_JIT)", ...), \C, and backreferences (as Unleash's
 * server refuses them).
 *
 * A compiled tm_regex is immutable: any number of threads may match it at
 * once. Matching uses a per-thread scratch (JIT stack, match data) that the
 * first tm_regex_compile() or tm_regex_match() on a thread creates, and
 * frees when the thread exits. After that, JIT matching never allocates;
 * PCRE2's interpreter (a platform without JIT) may grow the thread's frame
 * vector, up to its heap limit (512 KiB). */
#ifndef TM_REGEX_H
#define TM_REGEX_H

#include <stddef.h>

#define TM_REGEX_MAX_PATTERN 1024       /* bytes */
#define TM_REGEX_MAX_SUBJECT 1024       /* bytes; longer: TM_REGEX_TOO_LONG */
#define TM_REGEX_MAX_NEST 32            /* nested parentheses */
#define TM_REGEX_MAX_CODE (64 * 1024)   /* bytecode + JIT code, bytes */
#define TM_REGEX_MATCH_LIMIT 5000       /* PCRE2 match limit per match */

/* tm_regex_compile() flags */
#define TM_REGEX_ICASE 1u               /* caseInsensitive */

typedef struct tm_regex tm_regex;

typedef enum {
    TM_REGEX_NOMATCH = 0,
    TM_REGEX_MATCH = 1,
    TM_REGEX_TOO_LONG,      /* subject over TM_REGEX_MAX_SUBJECT: no match */
    TM_REGEX_LIMIT,         /* a match budget ran out: no match */
    TM_REGEX_BAD_SUBJECT    /* subject not UTF-8 (or no memory): no match */
} tm_regex_status;

/* Compiles pat[0..len) (NUL bytes allowed, no terminator needed). NULL with
 * a message for a 400 in err, e.g.
 *   "invalid regular expression at offset 3: missing closing parenthesis"
 *   "compiles to 300000 bytes, over the 262144-byte limit (...)". */
tm_regex *tm_regex_compile(const char *pat, size_t len, unsigned flags,
                           char *err, size_t errlen);
void tm_regex_free(tm_regex *re);

/* Searches s[0..len) (unanchored unless the pattern anchors). Only
 * TM_REGEX_MATCH means a match; every other status is "no match". */
tm_regex_status tm_regex_match(const tm_regex *re, const char *s, size_t len);

/* As tm_regex_match with at most limit steps (capped at the pattern's own
 * TM_REGEX_MATCH_LIMIT), and not counted in tm_regex_stats: for a caller
 * that spends a budget of its own, tries a small limit first and counts
 * the final status with tm_regex_count(). */
tm_regex_status tm_regex_match_limit(const tm_regex *re, const char *s, size_t len,
                                     unsigned limit);
/* Counts st in tm_regex_stats as tm_regex_match does; returns st. */
tm_regex_status tm_regex_count(tm_regex_status st);

/* Bytes the compiled pattern holds (bytecode + JIT code), for budgets. */
size_t tm_regex_size(const tm_regex *re);

/* 1 if matching runs JIT code, 0 if PCRE2's interpreter (no JIT here). */
int tm_regex_jit(const tm_regex *re);

/* "no_match", "too_long", ... for logs and metrics labels. */
const char *tm_regex_status_name(tm_regex_status st);

/* Matches of this process answered "no match" because of a bound, by
 * status, since it started (every thread; relaxed atomic counters). The
 * nginx module adds their growth to /metrics after each evaluation. */
typedef struct {
    unsigned long too_long;     /* TM_REGEX_TOO_LONG */
    unsigned long limit;        /* TM_REGEX_LIMIT */
    unsigned long bad_subject;  /* TM_REGEX_BAD_SUBJECT */
} tm_regex_stats;

void tm_regex_stats_get(tm_regex_stats *out);
#endif
