/*
 * The module's outbound HTTP/1.1 client (SQS, AWS credentials): one
 * request at a time on one connection, on nginx's event loop
 * (ngx_event_connect_peer, nginx timers, ngx_ssl with certificate and host
 * verification), never blocking the worker. The endpoint is resolved at
 * configuration time, in the master: a worker never calls getaddrinfo().
 */

#ifndef NGX_HTTP_TOGGLEMASTER_HTTP_H
#define NGX_HTTP_TOGGLEMASTER_HTTP_H

#include "ngx_http_togglemaster_module.h"


/* why a request failed */
typedef enum {
    NGX_HTTP_TOGGLEMASTER_HTTP_OK = 0,
    NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT,    /* connect, TLS, send, recv */
    NGX_HTTP_TOGGLEMASTER_HTTP_TIMEOUT,
    NGX_HTTP_TOGGLEMASTER_HTTP_REPLY,      /* malformed or too large */
    NGX_HTTP_TOGGLEMASTER_HTTP_CLOSING     /* nginx closed it (exiting) */
} ngx_http_togglemaster_http_err_e;


/* Where requests go: resolved, SNI and TLS context made once. The Redis
 * client uses its addresses part too (addrs to resolve_ev). */
typedef struct {
    const char                  *name;        /* for the log: "SQS" */
    ngx_addr_t                  *addrs;
    ngx_uint_t                   naddrs;
    ngx_str_t                    sni;         /* empty for an IP address */
    ngx_uint_t                   https;
#if (NGX_SSL)
    ngx_ssl_t                   *ssl;
    ngx_uint_t                   verify;
#endif

    /* with "resolver" at http level, a host name is resolved again on
     * the event loop (nginx's resolver) as its answer expires */
    ngx_str_t                    host;        /* NUL-terminated */
    in_port_t                    port;
    ngx_resolver_t              *resolver;
    ngx_msec_t                   resolver_timeout;
    ngx_event_t                  resolve_ev;
    ngx_log_t                   *log;
    ngx_addr_t                  *resolved;    /* worker-owned, in use */
    ngx_addr_t                  *retired;     /* the previous answer */
} ngx_http_togglemaster_http_endpoint_t;


/* An HTTP/1.x reply; body points into the client's buffer. */
typedef struct {
    ngx_uint_t                   status;
    u_char                      *body;
    size_t                       len;
    ngx_uint_t                   keepalive;
    char                         query_error[128];  /* as tm_http_reply */
} ngx_http_togglemaster_http_reply_t;


typedef struct ngx_http_togglemaster_http_s  ngx_http_togglemaster_http_t;

/* The end of a request: err NGX_HTTP_TOGGLEMASTER_HTTP_OK with r, else
 * why (r NULL). The connection is closed or idle by then, and h ready for
 * the next request. */
typedef void (*ngx_http_togglemaster_http_done_pt)(
    ngx_http_togglemaster_http_t *h, ngx_uint_t err, const char *why,
    ngx_http_togglemaster_http_reply_t *r);

/* nginx closed the idle kept-alive connection (a graceful stop) */
typedef void (*ngx_http_togglemaster_http_closed_pt)(
    ngx_http_togglemaster_http_t *h);


struct ngx_http_togglemaster_http_s {
    /* set by the user before the first request */
    ngx_http_togglemaster_http_endpoint_t  *ep;
    ngx_log_t                              *log;
    ngx_http_togglemaster_http_done_pt      done;
    ngx_http_togglemaster_http_closed_pt    closed;    /* may be NULL */
    void                                   *data;
    ngx_uint_t                              addr;      /* next address */
    size_t                                  in_size;   /* first buffer */
    size_t                                  in_max;    /* largest reply */
    ngx_msec_t                              idle;      /* keepalive time */

    /* cancelable: a graceful stop closes the connection at once and its
     * timers do not keep an exiting worker alive; keepalive: keep the
     * connection for the next request when the reply allows it */
    unsigned                                cancelable:1;
    unsigned                                keepalive:1;

    /* the request of the moment; its bytes stay the caller's */
    u_char                                 *out;
    size_t                                  out_len;
    size_t                                  out_sent;
    ngx_msec_t                              timeout;

    ngx_peer_connection_t                   peer;
    ngx_connection_t                       *c;

    /* the peer's address and its text, copied at connect: the endpoint's
     * answer they came from is freed two re-resolutions later, while the
     * connection (and peer.name, logged on failure) may live on */
    ngx_sockaddr_t                          peer_sockaddr;
    ngx_str_t                               peer_name;
    u_char                                  peer_text[NGX_SOCKADDR_STRLEN];

    u_char                                 *in;
    size_t                                  in_len;
    size_t                                  in_cap;

    unsigned                                busy:1;
    unsigned                                connected:1;
    unsigned                                reused:1;
    unsigned                                resent:1;
};


/* The endpoint at url (host: its host[:port] part), in the master: what
 * names it in configuration errors ("SQS endpoint"). With https, a TLS
 * context, verifying as togglemaster_events_ssl_verify says against
 * togglemaster_events_ssl_trusted_certificate, and against the system's
 * CAs when there is none or when system_cas is set. */
#if (NGX_SSL)
ngx_ssl_t *ngx_http_togglemaster_ssl_create(ngx_conf_t *cf);
#endif
char *ngx_http_togglemaster_http_endpoint(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf, const char *what,
    const char *url, const char *host, ngx_uint_t system_cas,
    ngx_http_togglemaster_http_endpoint_t *ep);

/* With a "resolver" at http level (called in the master, from a directive
 * or init_main_conf): workers resolve host (kept, NUL-terminated) again
 * through it, the addresses taking port. 1 if so, 0 without a resolver.
 * ep's addresses may be empty (naddrs 0) until the first answer: the
 * Redis client's peer is such an endpoint, its name not known yet to the
 * system at start. */
ngx_uint_t ngx_http_togglemaster_http_endpoint_resolver(ngx_conf_t *cf,
    ngx_http_togglemaster_http_endpoint_t *ep, ngx_str_t *host,
    in_port_t port);

/* In a worker: keep ep's addresses current when it has a resolver
 * (NGX_OK otherwise too); and stop doing so. */
void ngx_http_togglemaster_http_endpoint_start(
    ngx_http_togglemaster_http_endpoint_t *ep, ngx_log_t *log);
void ngx_http_togglemaster_http_endpoint_stop(
    ngx_http_togglemaster_http_endpoint_t *ep);

/* Sends out..out + len: on the kept-alive connection if there is one, else
 * on a new one to ep->addrs[addr]. NGX_OK: h->done() follows, never from
 * here; NGX_ERROR: no connection could be started (addr moves on). */
ngx_int_t ngx_http_togglemaster_http_start(ngx_http_togglemaster_http_t *h,
    u_char *out, size_t len, ngx_msec_t timeout);

/* Closes the connection, if any, without calling h->done(). */
void ngx_http_togglemaster_http_abort(ngx_http_togglemaster_http_t *h);

/* Aborts and frees (wiped) the reply buffer. */
void ngx_http_togglemaster_http_free(ngx_http_togglemaster_http_t *h);

/* NGX_OK (r filled; a chunked body decoded in place), NGX_AGAIN (read
 * more) or NGX_ERROR. */
ngx_int_t ngx_http_togglemaster_http_parse(u_char *in, size_t len,
    ngx_uint_t eof, ngx_http_togglemaster_http_reply_t *r);


#endif /* NGX_HTTP_TOGGLEMASTER_HTTP_H */
