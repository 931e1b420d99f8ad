/* A growable byte buffer with a sticky error flag: append freely, check
 * tm_buf_ok() (or the NULL from tm_buf_steal()) once at the end. */
#ifndef TM_BUF_H
#define TM_BUF_H
#include <stddef.h>

typedef struct {
    char *p;      /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    int failed;   /* an allocation failed; further appends are ignored */
} tm_buf;

#define TM_BUF_INIT { NULL, 0, 0, 0 }

void tm_buf_add(tm_buf *b, const void *data, size_t n);
void tm_buf_adds(tm_buf *b, const char *s);
void tm_buf_addc(tm_buf *b, char c);
void tm_buf_addf(tm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int tm_buf_ok(const tm_buf *b) { return !b->failed; }
/* Returns the NUL-terminated contents (caller frees) and empties b; NULL if
 * any append failed (b is freed then too). An empty buffer gives "". */
char *tm_buf_steal(tm_buf *b);
void tm_buf_free(tm_buf *b);
#endif
