#include "tm_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reserve(tm_buf *b, size_t extra)
{
    if (b->failed) {
        return -1;
    }
    if (extra > (size_t) -1 / 2 - b->len) {
        b->failed = 1;
        return -1;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void tm_buf_add(tm_buf *b, const void *data, size_t n)
{
    if (reserve(b, n) != 0) {
        return;
    }
    if (n) {
        memcpy(b->p + b->len, data, n);
    }
    b->len += n;
    b->p[b->len] = '\0';
}

void tm_buf_adds(tm_buf *b, const char *s)
{
    tm_buf_add(b, s, strlen(s));
}

void tm_buf_addc(tm_buf *b, char c)
{
    tm_buf_add(b, &c, 1);
}

void tm_buf_addf(tm_buf *b, const char *fmt, ...)
{
    va_list ap;
    char small[256];

    if (b->failed) {
        return;
    }
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if ((size_t) n < sizeof small) {
        tm_buf_add(b, small, (size_t) n);
        return;
    }
    if (reserve(b, (size_t) n) != 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t) n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t) n;
}

char *tm_buf_steal(tm_buf *b)
{
    if (b->failed) {
        tm_buf_free(b);
        return NULL;
    }
    char *p = b->p;
    if (!p) {
        p = calloc(1, 1);
    }
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

void tm_buf_free(tm_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}
