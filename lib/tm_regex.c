/* Bounded regular expressions over PCRE2; the contract is in tm_regex.h.
 *
 * Why the pattern is sometimes rewritten: PCRE2's match limit counts the
 * steps of one start position and starts again from zero at the next, so an
 * unanchored search of an n-byte subject may cost n times the limit, and a
 * pattern such as (?:a|b)*?a*+c costs n^3 on a^n (100 ms for n = 1024).
 * A pattern that PCRE2 anchors itself (^..., \A..., .* in dotall) has one
 * start position; one that starts with .* or ^ in multiline mode
 * ("startline") has one per line, and its limit is shared among the lines.
 * Any other pattern P is compiled as the anchored (?s:.*?)(?:P\E): the
 * unanchored search becomes one start position, so the limit covers all of
 * it. P is compiled alone first, so the wrapper cannot change its meaning
 * (an unbalanced P is refused before; "\E" ends a trailing \Q..., a trailing
 * "#" comment swallows the ")" and is refused). Backtracking verbs would act
 * on the wrapper's single start ((*SKIP), (*PRUNE)), hence refused. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tm_regex.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JIT stack of a thread: ^(a|b)*$ over 1024 bytes needs about 100 KiB. */
#define JIT_STACK_START (32 * 1024)
#define JIT_STACK_MAX (512 * 1024)
/* Interpreter frames (no JIT), KiB: as much as the JIT stack. */
#define HEAP_LIMIT_KIB 512

#define WRAP_HEAD "(?s:.*?)(?:"
#define WRAP_TAIL "\\E)"

struct tm_regex {
    pcre2_code *code;
    uint32_t limit;          /* match limit of one whole search */
    unsigned char startline; /* PCRE2 starts at each line: share the limit */
    unsigned char jit;
    size_t size;
};

/* ---- per-thread scratch ----------------------------------------------- */

typedef struct {
    pcre2_match_context *mc;
    pcre2_match_data *md;
    pcre2_jit_stack *js;
} scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_free(void *p)
{
    scratch *sc = p;
    if (sc == NULL) {
        return;
    }
    pcre2_match_data_free(sc->md);
    pcre2_match_context_free(sc->mc);
    pcre2_jit_stack_free(sc->js);
    free(sc);
}

static void scratch_key_init(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

/* The calling thread's scratch, created on first use; NULL if out of
 * memory. Without a JIT stack (no JIT here) matching uses the heap limit. */
static scratch *scratch_get(void)
{
    if (pthread_once(&scratch_once, scratch_key_init) != 0 || !scratch_key_ok) {
        return NULL;
    }
    scratch *sc = pthread_getspecific(scratch_key);
    if (sc != NULL) {
        return sc;
    }
    sc = calloc(1, sizeof *sc);
    if (sc == NULL) {
        return NULL;
    }
    sc->mc = pcre2_match_context_create(NULL);
    sc->md = pcre2_match_data_create(1, NULL);
    if (sc->mc == NULL || sc->md == NULL
        || pcre2_set_heap_limit(sc->mc, HEAP_LIMIT_KIB) != 0
        || pthread_setspecific(scratch_key, sc) != 0) {
        scratch_free(sc);
        return NULL;
    }
    uint32_t jit = 0;
    if (pcre2_config(PCRE2_CONFIG_JIT, &jit) >= 0 && jit) {
        sc->js = pcre2_jit_stack_create(JIT_STACK_START, JIT_STACK_MAX, NULL);
        if (sc->js == NULL) {
            (void) pthread_setspecific(scratch_key, NULL);
            scratch_free(sc);
            return NULL;
        }
        pcre2_jit_stack_assign(sc->mc, NULL, sc->js);
    }
    return sc;
}

/* ---- compiling -------------------------------------------------------- */

static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Skips a character class starting at pat[i] == '['; returns the index
 * after its ']' (len if unterminated: PCRE2 then refuses the pattern). */
static size_t skip_class(const char *pat, size_t len, size_t i)
{
    i++;
    if (i < len && pat[i] == '^') {
        i++;
    }
    if (i < len && pat[i] == ']') {
        i++;                    /* a leading ']' is literal */
    }
    while (i < len && pat[i] != ']') {
        if (pat[i] == '\\') {
            i += 2;
        } else if (pat[i] == '[' && i + 1 < len && strchr(":.=", pat[i + 1])) {
            const char *end = memchr(pat + i + 2, ']', len - i - 2);
            i = end ? (size_t) (end - pat) + 1 : len;   /* [:alpha:] */
        } else {
            i++;
        }
    }
    return i < len ? i + 1 : len;
}

/* 1 if the pattern holds "(*": a backtracking verb or a start-of-pattern
 * option. Escapes, \Q...\E, classes and (?#...) comments are skipped; in
 * extended mode a "(*" inside a # comment is refused too (harmless). */
static int has_verb(const char *pat, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (pat[i] == '\\') {
            if (i + 1 < len && pat[i + 1] == 'Q') {
                const char *e = memmem(pat + i + 2, len - i - 2, "\\E", 2);
                i = e ? (size_t) (e - pat) + 2 : len;
            } else {
                i += 2;
            }
        } else if (pat[i] == '[') {
            i = skip_class(pat, len, i);
        } else if (pat[i] == '(' && i + 2 < len && pat[i + 1] == '?' && pat[i + 2] == '#') {
            const char *e = memchr(pat + i, ')', len - i);
            i = e ? (size_t) (e - pat) + 1 : len;
        } else if (pat[i] == '(' && i + 1 < len && pat[i + 1] == '*') {
            return 1;
        } else {
            i++;
        }
    }
    return 0;
}

static pcre2_code *compile_one(const char *pat, size_t len, uint32_t opts,
                               pcre2_compile_context *cc, size_t shift,
                               char *err, size_t errlen)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR) pat, len, opts, &code, &off, cc);
    if (re == NULL) {
        PCRE2_UCHAR msg[160];
        if (pcre2_get_error_message(code, msg, sizeof msg) < 0) {
            snprintf((char *) msg, sizeof msg, "PCRE2 error %d", code);
        }
        const char *hint =
            code == PCRE2_ERROR_PATTERN_TOO_LARGE
                ? " (nested counted repeats such as (a{1,100}){1,100} expand too far)"
            : code == PCRE2_ERROR_PARENTHESES_NEST_TOO_DEEP
                ? " (at most 32 levels)" : "";
        fail(err, errlen, "invalid regular expression at offset %zu: %s%s",
             off >= shift ? (size_t) off - shift : 0, (const char *) msg, hint);
    }
    return re;
}

static uint32_t info32(const pcre2_code *re, uint32_t what)
{
    uint32_t v = 0;
    return pcre2_pattern_info(re, what, &v) == 0 ? v : 0;
}

/* The search's code: P itself when PCRE2 starts it once per line at most,
 * else the wrapped, anchored P (see the top of this file). */
static pcre2_code *compile_search(tm_regex *r, pcre2_code *alone, const char *pat,
                                  size_t len, uint32_t opts,
                                  pcre2_compile_context *cc, char *err, size_t errlen)
{
    if ((info32(alone, PCRE2_INFO_ALLOPTIONS) & PCRE2_ANCHORED) != 0) {
        return alone;
    }
    if (info32(alone, PCRE2_INFO_FIRSTCODETYPE) == 2) {
        r->startline = 1;
        return alone;
    }
    pcre2_code_free(alone);
    size_t hl = sizeof WRAP_HEAD - 1, tl = sizeof WRAP_TAIL - 1;
    char *w = malloc(hl + len + tl);
    if (w == NULL) {
        fail(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(w, WRAP_HEAD, hl);
    memcpy(w + hl, pat, len);
    memcpy(w + hl + len, WRAP_TAIL, tl);
    char why[200];
    pcre2_code *re = compile_one(w, hl + len + tl, opts | PCRE2_ANCHORED, cc, hl,
                                 why, sizeof why);
    free(w);
    if (re == NULL) {
        fail(err, errlen, "a pattern cannot end inside \\Q...\\E or a # comment (%s)", why);
    }
    return re;
}

static pcre2_compile_context *compile_context(void)
{
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (cc == NULL
        || pcre2_set_max_pattern_length(cc, TM_REGEX_MAX_PATTERN + 16) != 0
        || pcre2_set_parens_nest_limit(cc, TM_REGEX_MAX_NEST) != 0
        || pcre2_set_newline(cc, PCRE2_NEWLINE_ANYCRLF) != 0
        || pcre2_set_compile_extra_options(cc, PCRE2_EXTRA_ALT_BSUX) != 0) {
        pcre2_compile_context_free(cc);
        return NULL;
    }
    return cc;
}

/* JIT-compiles r->code where the platform allows, then checks the size. */
static int finish(tm_regex *r, char *err, size_t errlen)
{
    size_t code = 0, jit = 0;
    r->jit = pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE) == 0;
    if (pcre2_pattern_info(r->code, PCRE2_INFO_SIZE, &code) != 0
        || (r->jit && pcre2_pattern_info(r->code, PCRE2_INFO_JITSIZE, &jit) != 0)) {
        fail(err, errlen, "cannot size the compiled pattern");
        return -1;
    }
    r->size = code + jit;
    if (r->size > TM_REGEX_MAX_CODE) {
        fail(err, errlen, "compiles to %zu bytes, over the %d-byte limit (simplify "
             "counted repeats such as {1,200} and long alternations)",
             r->size, TM_REGEX_MAX_CODE);
        return -1;
    }
    r->limit = TM_REGEX_MATCH_LIMIT;
    return 0;
}

tm_regex *tm_regex_compile(const char *pat, size_t len, unsigned flags,
                           char *err, size_t errlen)
{
    if (len > TM_REGEX_MAX_PATTERN) {
        fail(err, errlen, "a regular expression is at most %d bytes", TM_REGEX_MAX_PATTERN);
        return NULL;
    }
    if (pat == NULL) {
        pat = "";
    }
    if (has_verb(pat, len)) {
        fail(err, errlen, "\"(*\" items (backtracking verbs, start-of-pattern options) "
             "are not supported; write \\(\\* for the characters");
        return NULL;
    }
    (void) scratch_get();       /* so that this thread's matches never allocate */

    uint32_t opts = PCRE2_UTF | PCRE2_ALT_BSUX | PCRE2_DOLLAR_ENDONLY
                    | PCRE2_NEVER_BACKSLASH_C
                    | ((flags & TM_REGEX_ICASE) ? PCRE2_CASELESS : 0);
    tm_regex *r = calloc(1, sizeof *r);
    pcre2_compile_context *cc = compile_context();
    if (r == NULL || cc == NULL) {
        fail(err, errlen, "out of memory");
        goto failed;
    }
    pcre2_code *alone = compile_one(pat, len, opts, cc, 0, err, errlen);
    if (alone == NULL) {
        goto failed;
    }
    if ((info32(alone, PCRE2_INFO_ALLOPTIONS)
         & (PCRE2_NO_START_OPTIMIZE | PCRE2_NO_DOTSTAR_ANCHOR)) != 0) {
        pcre2_code_free(alone);     /* has_verb() refuses these already */
        fail(err, errlen, "start-of-pattern options are not supported");
        goto failed;
    }
    /* Unleash's server refuses backreferences (its validator is RE2's), and
     * they are the one construct whose steps cost a subject's length each. */
    if (info32(alone, PCRE2_INFO_BACKREFMAX) > 0) {
        pcre2_code_free(alone);
        fail(err, errlen, "backreferences (\\1, \\k<name>) are not supported, as in Unleash");
        goto failed;
    }
    r->code = compile_search(r, alone, pat, len, opts, cc, err, errlen);
    if (r->code == NULL || finish(r, err, errlen) != 0) {
        goto failed;
    }
    pcre2_compile_context_free(cc);
    return r;

failed:
    pcre2_compile_context_free(cc);
    tm_regex_free(r);
    return NULL;
}

void tm_regex_free(tm_regex *re)
{
    if (re != NULL) {
        pcre2_code_free(re->code);
        free(re);
    }
}

/* ---- matching --------------------------------------------------------- */

static atomic_ulong stat_too_long, stat_limit, stat_bad_subject;

tm_regex_status tm_regex_count(tm_regex_status st)
{
    atomic_ulong *c = st == TM_REGEX_TOO_LONG ? &stat_too_long
                      : st == TM_REGEX_LIMIT ? &stat_limit
                      : st == TM_REGEX_BAD_SUBJECT ? &stat_bad_subject : NULL;
    if (c != NULL) {
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
    }
    return st;
}

void tm_regex_stats_get(tm_regex_stats *out)
{
    out->too_long = atomic_load_explicit(&stat_too_long, memory_order_relaxed);
    out->limit = atomic_load_explicit(&stat_limit, memory_order_relaxed);
    out->bad_subject = atomic_load_explicit(&stat_bad_subject, memory_order_relaxed);
}

static tm_regex_status search(const tm_regex *re, const char *s, size_t len, uint32_t limit)
{
    if (len > TM_REGEX_MAX_SUBJECT) {
        return TM_REGEX_TOO_LONG;
    }
    scratch *sc = scratch_get();
    if (sc == NULL) {
        return TM_REGEX_BAD_SUBJECT;
    }
    if (s == NULL) {
        s = "";
    }
    if (limit == 0 || limit > re->limit) {
        limit = re->limit;
    }
    if (re->startline) {
        /* one start per line (ANYCRLF: "\r\n" counted twice is only safer) */
        uint32_t lines = 1;
        for (size_t i = 0; i < len; i++) {
            lines += s[i] == '\n' || s[i] == '\r';
        }
        limit = limit / lines ? limit / lines : 1;
    }
    if (pcre2_set_match_limit(sc->mc, limit) != 0) {
        return TM_REGEX_BAD_SUBJECT;
    }
    int rc = pcre2_match(re->code, (PCRE2_SPTR) s, len, 0, 0, sc->md, sc->mc);
    if (rc >= 0) {
        return TM_REGEX_MATCH;
    }
    switch (rc) {
    case PCRE2_ERROR_NOMATCH:
        return TM_REGEX_NOMATCH;
    case PCRE2_ERROR_MATCHLIMIT:
    case PCRE2_ERROR_DEPTHLIMIT:
    case PCRE2_ERROR_HEAPLIMIT:
    case PCRE2_ERROR_JIT_STACKLIMIT:
    case PCRE2_ERROR_NOMEMORY:
        return TM_REGEX_LIMIT;
    default:
        return TM_REGEX_BAD_SUBJECT;    /* invalid UTF-8 */
    }
}

tm_regex_status tm_regex_match(const tm_regex *re, const char *s, size_t len)
{
    return tm_regex_count(search(re, s, len, re->limit));
}

tm_regex_status tm_regex_match_limit(const tm_regex *re, const char *s, size_t len,
                                     unsigned limit)
{
    return search(re, s, len, limit);
}

size_t tm_regex_size(const tm_regex *re)
{
    return re->size;
}

int tm_regex_jit(const tm_regex *re)
{
    return re->jit;
}

const char *tm_regex_status_name(tm_regex_status st)
{
    switch (st) {
    case TM_REGEX_NOMATCH: return "no_match";
    case TM_REGEX_MATCH: return "match";
    case TM_REGEX_TOO_LONG: return "too_long";
    case TM_REGEX_LIMIT: return "limit";
    case TM_REGEX_BAD_SUBJECT: return "bad_subject";
    }
    return "unknown";
}
