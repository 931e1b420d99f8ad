#include "tm_http_reply.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The CRLF ending the line at p, or NULL if it has not arrived. */
static const char *line_end(const char *p, const char *last)
{
    for (; p + 1 < last; p++) {
        if (p[0] == '\r' && p[1] == '\n') {
            return p;
        }
    }
    return NULL;
}

/* 1 if the header value v..end holds token, case-insensitively. */
static int has_token(const char *v, const char *end, const char *token)
{
    size_t n = strlen(token);
    for (; v + n <= end; v++) {
        if (strncasecmp(v, token, n) == 0) {
            return 1;
        }
    }
    return 0;
}

/* A chunked body at p..last: 0 until complete, then decoded in place (one
 * pass to check, one to move, so an incomplete body is left untouched). */
static int dechunk(char *p, const char *last, size_t *len)
{
    for (int pass = 0; pass < 2; pass++) {
        char *q = p, *out = p;
        for (;;) {
            const char *eol = line_end(q, last);
            if (eol == NULL) {
                return 0;
            }
            size_t size = 0;
            for (; q < eol && *q != ';'; q++) {
                int c = *q, lc = c | 0x20;
                if (c >= '0' && c <= '9') {
                    size = size * 16 + (size_t) (c - '0');
                } else if (lc >= 'a' && lc <= 'f') {
                    size = size * 16 + (size_t) (lc - 'a' + 10);
                } else if (c != ' ') {
                    return -1;
                }
                if (size > TM_HTTP_REPLY_CHUNK_MAX) {
                    return -1;
                }
            }
            q = (char *) eol + 2;
            if (size == 0) {
                /* trailers, up to an empty line */
                for (;;) {
                    eol = line_end(q, last);
                    if (eol == NULL) {
                        return 0;
                    }
                    if (eol == q) {
                        break;
                    }
                    q = (char *) eol + 2;
                }
                break;
            }
            if ((size_t) (last - q) < size + 2) {
                return 0;
            }
            if (q[size] != '\r' || q[size + 1] != '\n') {
                return -1;      /* the chunk is not the size it said */
            }
            if (pass == 1) {
                memmove(out, q, size);
                out += size;
            }
            q += size + 2;
        }
        if (pass == 1) {
            *len = (size_t) (out - p);
        }
    }
    return 1;
}

/* Content-Length: digits only, no overflow. */
static int content_length(const char *v, const char *end, long long *out)
{
    long long n = 0;
    if (v == end) {
        return -1;
    }
    for (; v < end; v++) {
        if (*v < '0' || *v > '9' || n > (1LL << 40)) {
            return -1;
        }
        n = n * 10 + (*v - '0');
    }
    *out = n;
    return 0;
}

int tm_http_reply_parse(char *buf, size_t len, int eof, tm_http_reply *r)
{
    const char *p = buf, *last = buf + len;
    memset(r, 0, sizeof *r);

    /* HTTP/1.1 200 OK */
    const char *eol = line_end(p, last);
    if (eol == NULL) {
        return len > TM_HTTP_REPLY_LINE_MAX ? -1 : 0;
    }
    if (eol - p < 12 || strncmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ') {
        return -1;
    }
    int http11 = p[7] == '1';
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        r->status = r->status * 10 + (p[i] - '0');
    }
    if (r->status < 100) {
        return -1;
    }

    long long clen = -1;
    int chunked = 0, close = 0, keepalive = 0;
    for (p = eol + 2;; p = eol + 2) {
        eol = line_end(p, last);
        if (eol == NULL) {
            return last - buf > TM_HTTP_REPLY_HEADERS_MAX ? -1 : 0;
        }
        if (eol == p) {
            p += 2;
            break;
        }
        const char *colon = memchr(p, ':', (size_t) (eol - p));
        if (colon == NULL) {
            continue;
        }
        size_t n = (size_t) (colon - p);
        const char *v = colon + 1;
        while (v < eol && (*v == ' ' || *v == '\t')) {
            v++;
        }
        const char *vend = eol;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t')) {
            vend--;
        }
        if (n == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
            if (content_length(v, vend, &clen) != 0) {
                return -1;
            }
        } else if (n == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
            chunked = has_token(v, vend, "chunked");
        } else if (n == 10 && strncasecmp(p, "Connection", 10) == 0) {
            close = has_token(v, vend, "close");
            keepalive = has_token(v, vend, "keep-alive");
        } else if (n == 18 && strncasecmp(p, "x-amzn-query-error", 18) == 0) {
            snprintf(r->query_error, sizeof r->query_error, "%.*s", (int) (vend - v), v);
        }
    }

    r->keepalive = http11 ? !close : keepalive;
    r->body_off = (size_t) (p - buf);

    if (chunked) {
        int rc = dechunk(buf + r->body_off, last, &r->body_len);
        return (rc == 0 && eof) ? -1 : rc;
    }
    if (clen >= 0) {
        if (last - p < clen) {
            return eof ? -1 : 0;
        }
        r->body_len = (size_t) clen;
        return 1;
    }
    if (r->status == 204 || r->status == 304 || r->status < 200) {
        return 1;
    }
    /* the body runs to the end of the connection */
    if (!eof) {
        return 0;
    }
    r->keepalive = 0;
    r->body_len = (size_t) (last - p);
    return 1;
}
