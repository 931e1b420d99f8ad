/* lib/tm_regex: meaning (JavaScript-like PCRE2), refusals, and the bounds:
 * catastrophic patterns over the longest subject end within a generous CPU
 * bound with TM_REGEX_LIMIT, legitimate ones still answer. */
#include "tap.h"
#include "tm_regex.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

static tm_regex *C(const char *pat, unsigned flags)
{
    char err[256] = "";
    tm_regex *re = tm_regex_compile(pat, strlen(pat), flags, err, sizeof err);
    if (re == NULL) {
        printf("# compile \"%s\": %s\n", pat, err);
    }
    return re;
}

/* Status of pat against s, or -1 if pat does not compile. */
static int M(const char *pat, unsigned flags, const char *s, size_t len)
{
    tm_regex *re = C(pat, flags);
    if (re == NULL) {
        return -1;
    }
    int st = tm_regex_match(re, s, len);
    tm_regex_free(re);
    return st;
}

#define MS(pat, s) M(pat, 0, s, strlen(s))

static int refused(const char *pat, size_t len, const char *want)
{
    char err[256] = "";
    tm_regex *re = tm_regex_compile(pat, len, 0, err, sizeof err);
    if (re != NULL) {
        tm_regex_free(re);
        printf("# \"%.60s\" compiled\n", pat);
        return 0;
    }
    if (strstr(err, want) == NULL) {
        printf("# error \"%s\" lacks \"%s\"\n", err, want);
        return 0;
    }
    return 1;
}

static double cpu_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static char *fill(size_t n, const char *unit, const char *tail)
{
    char *s = malloc(n + 1);
    size_t ul = strlen(unit), tl = strlen(tail);
    for (size_t i = 0; i < n; i++) {
        s[i] = unit[i % ul];
    }
    memcpy(s + n - tl, tail, tl);
    s[n] = '\0';
    return s;
}

static void semantics(void)
{
    is_int(MS("^/api/v[0-9]+/", "/api/v2/users"), TM_REGEX_MATCH, "anchored match");
    is_int(MS("^/api/v[0-9]+/", "/web/api/v2/"), TM_REGEX_NOMATCH, "anchored: no match inside");
    is_int(MS("v[0-9]+/", "/web/api/v2/"), TM_REGEX_MATCH, "unanchored: found inside");
    is_int(MS("a|^b", "xb"), TM_REGEX_NOMATCH, "top-level alternation keeps its ^");
    is_int(MS("a|^b", "bx"), TM_REGEX_MATCH, "top-level alternation: ^b at the start");
    is_int(MS("c$", "abc\n"), TM_REGEX_NOMATCH, "$ only at the very end (JavaScript)");
    is_int(MS("a.c", "a\nc"), TM_REGEX_NOMATCH, ". does not match \\n");
    is_int(MS("a.c", "a\rc"), TM_REGEX_NOMATCH, ". does not match \\r");
    is_int(MS("\\u00e9t\\u00E9", "\xc3\xa9t\xc3\xa9"), TM_REGEX_MATCH, "\\uHHHH escapes (JavaScript)");
    is_int(MS("^.$", "\xc3\xa9"), TM_REGEX_MATCH, "UTF-8: . is one character");
    is_int(M("^\xc3\x89T\xc3\x89$", TM_REGEX_ICASE, "\xc3\xa9t\xc3\xa9", 5), TM_REGEX_MATCH,
           "caseInsensitive folds Unicode letters");
    is_int(MS("^\xc3\x89T\xc3\x89$", "\xc3\xa9t\xc3\xa9"), TM_REGEX_NOMATCH, "case-sensitive by default");
    is_int(MS("(?<=@)corp\\.io$", "ann@corp.io"), TM_REGEX_MATCH, "lookbehind");
    is_int(MS("(?<y>\\d{4})-", "2024-"), TM_REGEX_MATCH, "named groups");
    is_int(MS("\\(*x", "((x"), TM_REGEX_MATCH, "\\(* is a literal paren repeated, not a verb");
    is_int(MS("[(*]x", "*x"), TM_REGEX_MATCH, "(* inside a class is literal");
    is_int(MS("(?#(*SKIP)x", "x"), TM_REGEX_MATCH, "(* inside a (?#...) comment is ignored");
    is_int(MS("a\\Q)(*", "a)(*"), TM_REGEX_MATCH, "an unterminated \\Q quotes to the end");
    is_int(MS("", "anything"), TM_REGEX_MATCH, "the empty pattern matches");
    is_int(MS("b", ""), TM_REGEX_NOMATCH, "an empty subject");
    is_int(M("a\0b", 0, "xa\0b", 4), TM_REGEX_MATCH, "NUL bytes in pattern and subject");
    is_int(MS(".*foo", "xx\nfoo"), TM_REGEX_MATCH, ".* on a later line (one start per line)");
    is_int(MS("(?m)^foo", "x\r\nfoo"), TM_REGEX_MATCH, "(?m)^ after CRLF");
    is_int(MS("x", "\xff" "x"), TM_REGEX_BAD_SUBJECT, "a subject that is not UTF-8 does not match");
    is_int(MS("[", "x"), -1, "an unterminated class does not compile");
}

static void refusals(void)
{
    char big[TM_REGEX_MAX_PATTERN + 2];
    memset(big, 'a', sizeof big);
    ok(refused(big, TM_REGEX_MAX_PATTERN + 1, "at most 1024 bytes"), "1025-byte pattern refused");
    tm_regex *re = tm_regex_compile(big, TM_REGEX_MAX_PATTERN, 0, NULL, 0);
    ok(re != NULL, "1024-byte pattern accepted");
    tm_regex_free(re);

    ok(refused("a)|(b", 5, "offset 1: "), "unbalanced ) refused, with its offset");
    ok(refused("(a", 2, "missing closing parenthesis"), "missing ) refused");
    ok(refused("a(*SKIP)b", 9, "not supported"), "(*SKIP) refused");
    ok(refused("(*NO_JIT)a", 10, "not supported"), "(*NO_JIT) refused");
    ok(refused("(*LIMIT_MATCH=9999999)a", 23, "not supported"), "(*LIMIT_MATCH=...) refused");
    ok(refused("(*NO_START_OPT).*x", 18, "not supported"), "(*NO_START_OPT) refused");
    ok(refused("(a)\\1", 5, "backreferences"), "a numbered backreference refused");
    ok(refused("(?<y>a)\\k<y>", 12, "backreferences"), "a named backreference refused");
    ok(refused("a\\Cb", 4, "\\C is disabled"), "\\C refused");
    ok(refused("(?x)a#c", 7, "# comment"), "a trailing # comment refused (it would hide the wrapper)");
    const char *bomb = "((a{1,100}){1,100}){1,100}";
    ok(refused(bomb, strlen(bomb), "expand too far"), "((a{1,100}){1,100}){1,100} refused");
    char deep[80] = "";
    for (int i = 0; i < 33; i++) {
        strcat(deep, "(");
    }
    strcat(deep, "a");
    for (int i = 0; i < 33; i++) {
        strcat(deep, ")");
    }
    ok(refused(deep, strlen(deep), "at most 32 levels"), "33 nested parentheses refused");
    /* 62 KiB of bytecode: over TM_REGEX_MAX_CODE with its JIT code */
    char wide[400] = "(?:";
    for (int i = 0; i < 20; i++) {
        sprintf(wide + strlen(wide), "[%c-z]{1,250}", 'a' + i);
    }
    strcat(wide, "){1,80}");
    ok(refused(wide, strlen(wide), "-byte limit"), "a pattern compiling past 64 KiB refused");
}

typedef struct {
    const char *pat;
    const char *unit, *tail;     /* subject: unit repeated, ending in tail */
} bomb;

static void bounds(void)
{
    static const bomb bombs[] = {
        { "((a{1,50}){1,50}){1,20}b", "a", "" },        /* the issue's */
        { "((a{1,50}){1,50}){1,20}b|!", "a", "" },
        { "(a+)+$", "a", "!" },
        { "(a|a)*$|!!", "a", "!" },
        { "(?:a|b)*?a*+c|!!", "a", "!" },               /* n^3 unwrapped */
        { "(?:.)*?[^c]*+c|!!", "a", "!" },
        { "(?:x|a)*?a{100,1000}+c|!!", "a", "!" },
        { "(.*a){12}$|!!", "a", "!" },
        { ".*.*.*.*=.*", "x", "" },                    /* startline */
        { "(?i)(?:.)*?\\p{Ll}*+c|!!", "\xc3\xa9", "" },
    };
    char *s4k = fill(4096, "a", "");
    char *s1k = fill(TM_REGEX_MAX_SUBJECT, "a", "");
    int all_long = 1, all_fast = 1, all_limited = 1;
    double worst = 0;
    for (size_t i = 0; i < sizeof bombs / sizeof bombs[0]; i++) {
        tm_regex *re = C(bombs[i].pat, 0);
        if (re == NULL) {
            ok(0, "bomb %s compiles", bombs[i].pat);
            continue;
        }
        all_long &= tm_regex_match(re, s4k, 4096) == TM_REGEX_TOO_LONG;
        char *s = fill(TM_REGEX_MAX_SUBJECT, bombs[i].unit, bombs[i].tail);
        double t0 = cpu_ms();
        tm_regex_status st = tm_regex_match(re, s, strlen(s));
        double t = cpu_ms() - t0;
        worst = t > worst ? t : worst;
        if (st != TM_REGEX_LIMIT && st != TM_REGEX_NOMATCH) {
            printf("# %s: %s\n", bombs[i].pat, tm_regex_status_name(st));
            all_limited = 0;
        }
        /* generous: the old POSIX matcher took seconds; valgrind and ASan
         * slow JIT code down tens of times */
        if (t > 250) {
            printf("# %s: %.1f ms\n", bombs[i].pat, t);
            all_fast = 0;
        }
        free(s);
        tm_regex_free(re);
    }
    printf("# worst bomb over %d bytes: %.3f ms CPU\n", TM_REGEX_MAX_SUBJECT, worst);
    ok(all_long, "every bomb: a 4 KiB subject is TM_REGEX_TOO_LONG");
    ok(all_limited, "every bomb over 1024 bytes: no match (limit or definite)");
    ok(all_fast, "every bomb over 1024 bytes: < 250 ms CPU (worst %.3f ms)", worst);

    /* a 'b' up front defeats PCRE2's "required character" shortcut */
    char *b1k = fill(TM_REGEX_MAX_SUBJECT, "a", "");
    b1k[0] = 'b';
    is_int(MS("((a{1,50}){1,50}){1,20}b", b1k), TM_REGEX_LIMIT, "the issue's pattern hits the limit");
    is_int(MS("((a{1,50}){1,50}){1,20}b", s1k), TM_REGEX_NOMATCH, "... and without a 'b', a definite no");
    free(b1k);
    is_int(M("a", 0, s1k, TM_REGEX_MAX_SUBJECT + 1), TM_REGEX_TOO_LONG, "1025 bytes: too long");
    is_int(M("a", 0, s1k, TM_REGEX_MAX_SUBJECT), TM_REGEX_MATCH, "1024 bytes: matched");

    /* legitimate patterns over the longest subject still answer */
    char *mail = fill(TM_REGEX_MAX_SUBJECT, "x", "@corp.com");
    char *rnd = fill(TM_REGEX_MAX_SUBJECT, "abcdefghijklmnop.-_@0123456789 /", "");
    is_int(MS("^(a|b)*$", s1k), TM_REGEX_MATCH, "^(a|b)*$ over 1024 bytes (JIT stack)");
    is_int(MS(".*@corp\\.com$", mail), TM_REGEX_MATCH, ".*@corp\\.com$ over 1024 bytes");
    is_int(MS("@corp\\.com$", mail), TM_REGEX_MATCH, "@corp\\.com$ over 1024 bytes");
    is_int(MS("^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$", mail), TM_REGEX_MATCH, "an e-mail pattern");
    is_int(MS("(foo|bar|baz)", rnd), TM_REGEX_NOMATCH, "(foo|bar|baz) over 1024 bytes: definite no");
    is_int(MS("^.*admin.*$", rnd), TM_REGEX_NOMATCH, "^.*admin.*$ over 1024 bytes: definite no");
    is_int(MS("[aeiou]{3}", rnd), TM_REGEX_NOMATCH, "[aeiou]{3} over 1024 bytes: definite no");
    free(mail);
    free(rnd);
    free(s1k);
    free(s4k);
}

static void *thread_main(void *arg)
{
    const tm_regex *re = arg;
    long good = 0;
    for (int i = 0; i < 2000; i++) {
        good += tm_regex_match(re, "user-42@corp.io", 15) == TM_REGEX_MATCH
                && tm_regex_match(re, "user-42@corp.iox", 16) == TM_REGEX_NOMATCH;
    }
    return (void *) good;
}

static void threads(void)
{
    tm_regex *re = C("^user-\\d+@corp\\.io$", 0);
    pthread_t t[4];
    int started = 0;
    for (int i = 0; re && i < 4; i++) {
        started += pthread_create(&t[i], NULL, thread_main, re) == 0;
    }
    long total = 0;
    for (int i = 0; i < started; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (long) r;
    }
    is_int(total, 4 * 2000, "4 threads match one compiled pattern at once");
    tm_regex_free(re);
}

int main(void)
{
    semantics();
    refusals();
    bounds();
    threads();
    tm_regex *re = C("x", 0);
    printf("# JIT: %s\n", re && tm_regex_jit(re) ? "yes" : "no");
    ok(re && tm_regex_size(re) > 0 && tm_regex_size(re) <= TM_REGEX_MAX_CODE, "tm_regex_size");
    tm_regex_free(re);
    is_str(tm_regex_status_name(TM_REGEX_LIMIT), "limit", "status names");

    tm_regex_stats a, b;
    tm_regex *q = C("(?:a|b)*?a*+c|!!", 0);
    char *s = fill(TM_REGEX_MAX_SUBJECT, "a", "!");
    tm_regex_stats_get(&a);
    tm_regex_match(q, s, TM_REGEX_MAX_SUBJECT);
    tm_regex_match(q, s, TM_REGEX_MAX_SUBJECT + 1);
    tm_regex_match(q, s, TM_REGEX_MAX_SUBJECT + 1);
    tm_regex_match(q, "\xff", 1);
    tm_regex_match(q, "x", 1);
    tm_regex_stats_get(&b);
    ok(b.limit - a.limit == 1 && b.too_long - a.too_long == 2 && b.bad_subject - a.bad_subject == 1,
       "tm_regex_stats counts each bound hit, and nothing else");
    free(s);
    tm_regex_free(q);
    return tap_done();
}
