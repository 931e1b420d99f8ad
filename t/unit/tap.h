/* Minimal TAP producer for C unit tests run under prove. */
#ifndef TM_TAP_H
#define TM_TAP_H
#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

#define ok(cond, ...) do { \
        tap_n++; \
        if (cond) { printf("ok %d - ", tap_n); } \
        else { printf("not ok %d - ", tap_n); tap_failed++; } \
        printf(__VA_ARGS__); printf("\n"); \
        if (!(cond)) { printf("#   failed at %s:%d\n", __FILE__, __LINE__); } \
    } while (0)

#define is_int(got, want, ...) do { \
        long long g_ = (long long) (got), w_ = (long long) (want); \
        ok(g_ == w_, __VA_ARGS__); \
        if (g_ != w_) { printf("#   got %lld, want %lld\n", g_, w_); } \
    } while (0)

#define is_str(got, want, ...) do { \
        const char *g_ = (got), *w_ = (want); \
        int same_ = g_ && w_ && strcmp(g_, w_) == 0; \
        ok(same_, __VA_ARGS__); \
        if (!same_) { printf("#   got  \"%s\"\n#   want \"%s\"\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)"); } \
    } while (0)

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}
#endif
