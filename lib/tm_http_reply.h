/* HTTP/1.x replies as the edge reads them from SQS, STS and the EKS Pod
 * Identity agent over its own non-blocking connections: status line, the
 * few headers that matter (Content-Length, Transfer-Encoding: chunked,
 * Connection, x-amzn-query-error), and the body — by length, chunked, or to
 * the end of the connection. Pure C so it is fuzzed (fuzz/fuzz_http.c);
 * the module feeds it what it has read so far. */
#ifndef TM_HTTP_REPLY_H
#define TM_HTTP_REPLY_H
#include <stddef.h>

#define TM_HTTP_REPLY_LINE_MAX    8192          /* the status line */
#define TM_HTTP_REPLY_HEADERS_MAX 65536         /* status line + headers */
#define TM_HTTP_REPLY_CHUNK_MAX   (1024 * 1024) /* one chunk */

typedef struct {
    int status;
    size_t body_off;        /* the body is buf[body_off .. body_off + body_len) */
    size_t body_len;
    int keepalive;          /* the connection may carry another request */
    char query_error[128];  /* x-amzn-query-error (SQS's JSON protocol), or "" */
} tm_http_reply;

/* Parses buf[0..len), what has arrived so far; eof: the peer has closed.
 * 1 when the reply is complete (a chunked body is then decoded in place,
 * so buf changes); 0 while the status line or headers are incomplete (at
 * eof: the connection died before a reply); -1 when it is malformed, too
 * large, or its body was cut short by eof. */
int tm_http_reply_parse(char *buf, size_t len, int eof, tm_http_reply *r);
#endif
