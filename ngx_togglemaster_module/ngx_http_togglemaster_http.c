/*
 * The module's outbound HTTP/1.1 client, shared by the SQS producer
 * (sqs.c) and the AWS credentials fetcher (creds.c): the endpoint resolved
 * and its TLS context made at configuration time; per request a
 * non-blocking connect (ngx_event_connect_peer), TLS with SNI, certificate
 * and host verification (ngx_ssl), the request written and the reply read
 * into a bounded buffer, each step under a timer; the reply parsed here.
 * A kept-alive connection waits idle for the next request, and a request
 * that finds it closed by the other side is sent once more on a new one.
 */

#include "ngx_http_togglemaster_http.h"
#include "tm_http_reply.h"


/* no chunk of a reply is larger than the largest reply we take */


static ngx_int_t ngx_http_togglemaster_http_connect(
    ngx_http_togglemaster_http_t *h);
static void ngx_http_togglemaster_http_write(ngx_event_t *wev);
static void ngx_http_togglemaster_http_read(ngx_event_t *rev);


/* ---- the endpoint (master) --------------------------------------------- */

#if (NGX_SSL)

/* A TLS 1.2+ client context, freed with the configuration's pool: the one
 * constructor of the module's outbound TLS (SQS, STS, Redis). */
ngx_ssl_t *
ngx_http_togglemaster_ssl_create(ngx_conf_t *cf)
{
    ngx_ssl_t           *ssl;
    ngx_pool_cleanup_t  *cln;

    ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (ssl == NULL) {
        return NULL;
    }

    ssl->log = cf->log;

    if (ngx_ssl_create(ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL) != NGX_OK) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(ssl);
        return NULL;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = ssl;

    return ssl;
}


static char *
ngx_http_togglemaster_http_ssl_conf(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf, ngx_uint_t system_cas,
    ngx_http_togglemaster_http_endpoint_t *ep)
{
    ngx_str_t  *ca;

    ep->ssl = ngx_http_togglemaster_ssl_create(cf);
    if (ep->ssl == NULL) {
        return NGX_CONF_ERROR;
    }

    ep->verify = tmcf->events_ssl_verify;

    if (!ep->verify) {
        return NGX_CONF_OK;
    }

    ca = &tmcf->events_ssl_ca;

    if (system_cas || ca->len == 0) {
        if (SSL_CTX_set_default_verify_paths(ep->ssl->ctx) != 1) {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "SSL_CTX_set_default_verify_paths() failed");
            return NGX_CONF_ERROR;
        }
    }

    if (ca->len == 0) {
        return NGX_CONF_OK;
    }

    if (system_cas) {
        /* the system's CAs and this one */
        if (SSL_CTX_load_verify_locations(ep->ssl->ctx, (char *) ca->data,
                                          NULL)
            != 1)
        {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "SSL_CTX_load_verify_locations(\"%V\") failed",
                          ca);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (ngx_ssl_trusted_certificate(cf, ep->ssl, ca, 5) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}

#endif


char *
ngx_http_togglemaster_http_endpoint(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf, const char *what,
    const char *url, const char *host, ngx_uint_t system_cas,
    ngx_http_togglemaster_http_endpoint_t *ep)
{
    u_char     *p;
    ngx_url_t   u;

    ep->https = ngx_strncmp(url, "https://", 8) == 0;

    /* resolved here, with the system's resolver; workers resolve again
     * only through nginx's (below) */
    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url.data = (u_char *) host;
    u.url.len = ngx_strlen(host);
    u.default_port = ep->https ? 443 : 80;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s \"%s\": %s", what, url,
                           u.err ? u.err : "no address");
        return NGX_CONF_ERROR;
    }

    ep->addrs = u.addrs;
    ep->naddrs = u.naddrs;

    if (u.host.len && u.host.data[0] != '['
        && ngx_inet_addr(u.host.data, u.host.len) == INADDR_NONE)
    {
        ep->sni.data = ngx_pnalloc(cf->pool, u.host.len + 1);
        if (ep->sni.data == NULL) {
            return NGX_CONF_ERROR;
        }

        p = ngx_cpymem(ep->sni.data, u.host.data, u.host.len);
        *p = '\0';
        ep->sni.len = u.host.len;

        /* a name: workers resolve it again if there is a resolver */
        (void) ngx_http_togglemaster_http_endpoint_resolver(cf, ep, &ep->sni,
                                               u.port ? u.port
                                                      : u.default_port);
    }

    if (!ep->https) {
        return NGX_CONF_OK;
    }

#if (NGX_SSL)
    return ngx_http_togglemaster_http_ssl_conf(cf, tmcf, system_cas, ep);
#else
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "%s \"%s\" needs nginx built with SSL", what, url);
    return NGX_CONF_ERROR;
#endif
}


/* ---- keeping a host name's addresses current ---------------------------- */

ngx_uint_t
ngx_http_togglemaster_http_endpoint_resolver(ngx_conf_t *cf,
    ngx_http_togglemaster_http_endpoint_t *ep, ngx_str_t *host,
    in_port_t port)
{
    ngx_http_core_loc_conf_t  *clcf;

    /* http level, before the merge: NULL without a "resolver" there */
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->resolver == NULL || clcf->resolver->connections.nelts == 0) {
        return 0;
    }

    ep->host = *host;
    ep->port = port;
    ep->resolver = clcf->resolver;
    ep->resolver_timeout = clcf->resolver_timeout == NGX_CONF_UNSET_MSEC
                           ? 30000 : clcf->resolver_timeout;

    return 1;
}


#define NGX_HTTP_TOGGLEMASTER_HTTP_RESOLVE_MIN  1000
#define NGX_HTTP_TOGGLEMASTER_HTTP_RESOLVE_MAX  300000


static void ngx_http_togglemaster_http_resolve(ngx_event_t *ev);


static void
ngx_http_togglemaster_http_resolve_later(
    ngx_http_togglemaster_http_endpoint_t *ep, time_t valid)
{
    ngx_msec_t  t;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    /* when the answer expires, within bounds */
    t = valid > ngx_time() ? (ngx_msec_t) (valid - ngx_time()) * 1000 : 0;
    t = ngx_max(t, NGX_HTTP_TOGGLEMASTER_HTTP_RESOLVE_MIN);
    t = ngx_min(t, NGX_HTTP_TOGGLEMASTER_HTTP_RESOLVE_MAX);

    ngx_add_timer(&ep->resolve_ev, t);
}


/* 1 if the answer holds the addresses in use, in the same order */
static ngx_uint_t
ngx_http_togglemaster_http_same(ngx_http_togglemaster_http_endpoint_t *ep,
    ngx_resolver_ctx_t *ctx)
{
    ngx_uint_t  i;

    if (ctx->naddrs != ep->naddrs) {
        return 0;
    }

    for (i = 0; i < ctx->naddrs; i++) {
        if (ngx_cmp_sockaddr(ctx->addrs[i].sockaddr, ctx->addrs[i].socklen,
                             ep->addrs[i].sockaddr, ep->addrs[i].socklen, 0)
            != NGX_OK)
        {
            return 0;
        }
    }

    return 1;
}


static void
ngx_http_togglemaster_http_resolved(ngx_resolver_ctx_t *ctx)
{
    u_char                                 *p;
    size_t                                  size;
    ngx_uint_t                              i, n;
    ngx_addr_t                             *addrs;
    ngx_sockaddr_t                         *sa;
    ngx_http_togglemaster_http_endpoint_t  *ep = ctx->data;

    if ((ctx->state != NGX_OK || ctx->naddrs == 0) && ep->naddrs == 0) {
        ngx_log_error(NGX_LOG_WARN, ep->log, 0,
                      "togglemaster: cannot resolve \"%V\" yet: %s",
                      &ep->host, ngx_resolver_strerror(ctx->state));
        goto done;
    }

    if (ctx->state != NGX_OK || ctx->naddrs == 0) {
        ngx_log_error(NGX_LOG_WARN, ep->log, 0,
                      "togglemaster: cannot resolve \"%V\" again: %s; "
                      "keeping its %ui address(es)", &ep->host,
                      ngx_resolver_strerror(ctx->state), ep->naddrs);
        goto done;
    }

    if (ngx_http_togglemaster_http_same(ep, ctx)) {
        goto done;
    }

    /* one block: the addresses, their sockaddrs, their text */
    n = ctx->naddrs;
    size = n * (sizeof(ngx_addr_t) + sizeof(ngx_sockaddr_t)
                + NGX_SOCKADDR_STRLEN);

    addrs = ngx_alloc(size, ep->log);
    if (addrs == NULL) {
        goto done;
    }

    sa = (ngx_sockaddr_t *) (addrs + n);
    p = (u_char *) (sa + n);

    for (i = 0; i < n; i++) {
        ngx_memcpy(&sa[i], ctx->addrs[i].sockaddr, ctx->addrs[i].socklen);
        ngx_inet_set_port(&sa[i].sockaddr, ep->port);

        addrs[i].sockaddr = &sa[i].sockaddr;
        addrs[i].socklen = ctx->addrs[i].socklen;
        addrs[i].name.data = p;
        addrs[i].name.len = ngx_sock_ntop(&sa[i].sockaddr,
                                          ctx->addrs[i].socklen, p,
                                          NGX_SOCKADDR_STRLEN, 1);
        p += NGX_SOCKADDR_STRLEN;
    }

    if (ep->naddrs == 0) {
        /* the name did not resolve at configuration time */
        ngx_log_error(NGX_LOG_NOTICE, ep->log, 0,
                      "togglemaster: \"%V\" now resolves to %V%s",
                      &ep->host, &addrs[0].name, n > 1 ? " and more" : "");

    } else {
        ngx_log_error(NGX_LOG_NOTICE, ep->log, 0,
                      "togglemaster: \"%V\" now resolves to %V%s (was %V%s)",
                      &ep->host, &addrs[0].name, n > 1 ? " and more" : "",
                      &ep->addrs[0].name, ep->naddrs > 1 ? " and more" : "");
    }

    /* a connection started a moment ago may still point into the answer
     * before the current one: that one goes now, the current one next */
    ngx_free(ep->retired);
    ep->retired = ep->resolved;
    ep->resolved = addrs;
    ep->addrs = addrs;
    ep->naddrs = n;

done:

    ngx_http_togglemaster_http_resolve_later(ep, ctx->valid);
    ngx_resolve_name_done(ctx);
}


static void
ngx_http_togglemaster_http_resolve(ngx_event_t *ev)
{
    ngx_resolver_ctx_t                     *ctx;
    ngx_http_togglemaster_http_endpoint_t  *ep = ev->data;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ep->log, 0,
                   "togglemaster: resolving \"%V\"", &ep->host);

    ctx = ngx_resolve_start(ep->resolver, NULL);
    if (ctx == NULL || ctx == NGX_NO_RESOLVER) {
        ngx_log_error(NGX_LOG_WARN, ep->log, 0,
                      "togglemaster: cannot resolve \"%V\" again", &ep->host);
        ngx_http_togglemaster_http_resolve_later(ep, 0);
        return;
    }

    ctx->name = ep->host;
    ctx->handler = ngx_http_togglemaster_http_resolved;
    ctx->data = ep;
    ctx->timeout = ep->resolver_timeout;
    ctx->cancelable = 1;

    /* the handler may run from here (a cached answer), and on failure
     * too: it schedules the next try either way */
    if (ngx_resolve_name(ctx) != NGX_OK) {
        ngx_http_togglemaster_http_resolve_later(ep, 0);
    }
}


void
ngx_http_togglemaster_http_endpoint_start(
    ngx_http_togglemaster_http_endpoint_t *ep, ngx_log_t *log)
{
    ep->log = log;

    if (ep->resolver == NULL) {
        return;
    }

    ep->resolve_ev.handler = ngx_http_togglemaster_http_resolve;
    ep->resolve_ev.data = ep;
    ep->resolve_ev.log = log;
    ep->resolve_ev.cancelable = 1;

    /* a name without addresses yet is asked for at once */
    ngx_add_timer(&ep->resolve_ev,
                  ep->naddrs ? NGX_HTTP_TOGGLEMASTER_HTTP_RESOLVE_MIN : 1);
}


void
ngx_http_togglemaster_http_endpoint_stop(
    ngx_http_togglemaster_http_endpoint_t *ep)
{
    if (ep->resolve_ev.timer_set) {
        ngx_del_timer(&ep->resolve_ev);
    }
}


/* ---- the connection ---------------------------------------------------- */

/* Closes the connection and its pool, without waiting for a TLS
 * close_notify. */
static void
ngx_http_togglemaster_http_close(ngx_http_togglemaster_http_t *h)
{
    ngx_pool_t        *pool;
    ngx_connection_t  *c;

    c = h->c;
    if (c == NULL) {
        return;
    }

    h->c = NULL;
    h->connected = 0;

#if (NGX_SSL)
    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;
        (void) ngx_ssl_shutdown(c);
    }
#endif

    pool = c->pool;
    ngx_close_connection(c);

    if (pool) {
        ngx_destroy_pool(pool);
    }
}


void
ngx_http_togglemaster_http_abort(ngx_http_togglemaster_http_t *h)
{
    ngx_http_togglemaster_http_close(h);

    h->busy = 0;
    h->out = NULL;
    h->out_len = 0;
}


void
ngx_http_togglemaster_http_free(ngx_http_togglemaster_http_t *h)
{
    ngx_http_togglemaster_http_abort(h);

    if (h->in) {
        /* it may have held credentials */
        ngx_explicit_memzero(h->in, h->in_len);
        ngx_free(h->in);
        h->in = NULL;
    }

    h->in_len = 0;
    h->in_cap = 0;
}


/* The request is over: the connection closed or idle already. */
static void
ngx_http_togglemaster_http_end(ngx_http_togglemaster_http_t *h,
    ngx_uint_t err, const char *why, ngx_http_togglemaster_http_reply_t *r)
{
    h->busy = 0;
    h->out = NULL;
    h->out_len = 0;

    h->done(h, err, why, r);
}


static void
ngx_http_togglemaster_http_fail(ngx_http_togglemaster_http_t *h,
    ngx_uint_t err, const char *why)
{
    /* a kept-alive connection the other side closed meanwhile: once more
     * on a new one, which is no failure of the request */
    if (h->reused && !h->resent && h->in_len == 0
        && (err == NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT
            || err == NGX_HTTP_TOGGLEMASTER_HTTP_CLOSING))
    {
        ngx_http_togglemaster_http_close(h);
        h->resent = 1;

        if (ngx_http_togglemaster_http_connect(h) == NGX_OK) {
            return;
        }
    }

    ngx_http_togglemaster_http_close(h);

    /* the next try goes to the next address, if there are several; the
     * failed one stays in h->peer.name */
    h->addr++;

    ngx_http_togglemaster_http_end(h, err, why, NULL);
}


static ngx_int_t
ngx_http_togglemaster_http_connect(ngx_http_togglemaster_http_t *h)
{
    ngx_int_t          rc;
    ngx_addr_t        *addr;
    ngx_connection_t  *c;

    addr = &h->ep->addrs[h->addr % h->ep->naddrs];

    ngx_memcpy(&h->peer_sockaddr, addr->sockaddr, addr->socklen);
    h->peer_name.len = ngx_min(addr->name.len, NGX_SOCKADDR_STRLEN);
    h->peer_name.data = h->peer_text;
    ngx_memcpy(h->peer_text, addr->name.data, h->peer_name.len);

    ngx_memzero(&h->peer, sizeof(ngx_peer_connection_t));
    h->peer.sockaddr = &h->peer_sockaddr.sockaddr;
    h->peer.socklen = addr->socklen;
    h->peer.name = &h->peer_name;
    h->peer.get = ngx_event_get_peer;
    h->peer.log = h->log;
    h->peer.log_error = NGX_ERROR_INFO;   /* the user's warning says it */
    h->peer.tries = 1;

    rc = ngx_event_connect_peer(&h->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        if (h->peer.connection) {
            ngx_close_connection(h->peer.connection);
        }

        return NGX_ERROR;
    }

    c = h->peer.connection;
    c->data = h;
    c->read->handler = ngx_http_togglemaster_http_read;
    c->write->handler = ngx_http_togglemaster_http_write;

    if (h->cancelable) {
        c->idle = 1;
        c->read->cancelable = 1;
        c->write->cancelable = 1;
    }

    c->pool = ngx_create_pool(1024, h->log);
    if (c->pool == NULL) {
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    h->c = c;
    h->connected = 0;
    h->reused = 0;
    h->out_sent = 0;
    h->in_len = 0;

    ngx_add_timer(c->write, h->timeout);

    if (rc == NGX_OK) {
        /* connected at once (loopback): carry on from the event loop */
        ngx_post_event(c->write, &ngx_posted_events);
    }

    return NGX_OK;
}


/* Between requests: an idle connection neither keeps an exiting worker
 * alive nor survives ngx_close_idle_connections(). */
static void
ngx_http_togglemaster_http_idle(ngx_http_togglemaster_http_t *h)
{
    ngx_connection_t  *c = h->c;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    c->idle = 1;
    c->read->cancelable = 1;
    ngx_add_timer(c->read, h->idle);

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_togglemaster_http_close(h);
    }
}


ngx_int_t
ngx_http_togglemaster_http_start(ngx_http_togglemaster_http_t *h,
    u_char *out, size_t len, ngx_msec_t timeout)
{
    ngx_connection_t  *c;

    if (h->busy) {
        return NGX_ERROR;
    }

    h->out = out;
    h->out_len = len;
    h->out_sent = 0;
    h->in_len = 0;
    h->timeout = timeout;
    h->resent = 0;
    h->busy = 1;

    c = h->c;

    if (c) {
        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        c->idle = h->cancelable;
        c->read->cancelable = h->cancelable;

        h->reused = 1;
        ngx_post_event(c->write, &ngx_posted_events);

        return NGX_OK;
    }

    if (ngx_http_togglemaster_http_connect(h) != NGX_OK) {
        h->addr++;
        h->busy = 0;
        h->out = NULL;
        h->out_len = 0;
        return NGX_ERROR;
    }

    return NGX_OK;
}


#if (NGX_SSL)

static void
ngx_http_togglemaster_http_handshaked(ngx_connection_t *c)
{
    long                           rc;
    ngx_http_togglemaster_http_t  *h = c->data;

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->timedout || c->write->timedout) {
        ngx_http_togglemaster_http_fail(h, NGX_HTTP_TOGGLEMASTER_HTTP_TIMEOUT,
                                        "TLS handshake timed out");
        return;
    }

    if (!c->ssl->handshaked) {
        ngx_http_togglemaster_http_fail(h, NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT,
                                        "TLS handshake failed");
        return;
    }

    if (h->ep->verify) {
        rc = SSL_get_verify_result(c->ssl->connection);

        if (rc != X509_V_OK) {
            ngx_log_error(NGX_LOG_ERR, c->log, 0,
                          "togglemaster: %s certificate verify error: "
                          "(%l:%s)", h->ep->name, rc,
                          X509_verify_cert_error_string(rc));
            ngx_http_togglemaster_http_fail(h,
                NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT, "certificate not trusted");
            return;
        }

        if (h->ep->sni.len && ngx_ssl_check_host(c, &h->ep->sni) != NGX_OK) {
            ngx_http_togglemaster_http_fail(h,
                NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT,
                "certificate does not match the host");
            return;
        }
    }

    c->read->handler = ngx_http_togglemaster_http_read;
    c->write->handler = ngx_http_togglemaster_http_write;

    ngx_http_togglemaster_http_write(c->write);
}


static void
ngx_http_togglemaster_http_ssl(ngx_http_togglemaster_http_t *h)
{
    ngx_int_t          rc;
    ngx_connection_t  *c = h->c;

    if (ngx_ssl_create_connection(h->ep->ssl, c, NGX_SSL_CLIENT) != NGX_OK) {
        ngx_http_togglemaster_http_fail(h, NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT,
                                        "cannot start TLS");
        return;
    }

    if (h->ep->sni.len
        && SSL_set_tlsext_host_name(c->ssl->connection,
                                    (char *) h->ep->sni.data)
           == 0)
    {
        ngx_http_togglemaster_http_fail(h, NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT,
                                        "cannot set SNI");
        return;
    }

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        if (!c->write->timer_set) {
            ngx_add_timer(c->write, h->timeout);
        }

        c->ssl->handler = ngx_http_togglemaster_http_handshaked;
        return;
    }

    ngx_http_togglemaster_http_handshaked(c);
}

#endif


static void
ngx_http_togglemaster_http_write(ngx_event_t *wev)
{
    int                            err;
    ssize_t                        n;
    socklen_t                      len;
    ngx_connection_t              *c = wev->data;
    ngx_http_togglemaster_http_t  *h = c->data;

    if (wev->timedout) {
        ngx_http_togglemaster_http_fail(h, NGX_HTTP_TOGGLEMASTER_HTTP_TIMEOUT,
                                        h->connected ? "sending timed out"
                                                     : "connect timed out");
        return;
    }

    if (!h->busy) {
        return;
    }

    if (!h->connected) {
        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1)
        {
            err = ngx_socket_errno;
        }

        if (err) {
            ngx_log_error(NGX_LOG_INFO, c->log, err,
                          "togglemaster: connect() to %V failed",
                          h->peer.name);
            ngx_http_togglemaster_http_fail(h,
                NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT, "connect() failed");
            return;
        }

        h->connected = 1;

        if (wev->timer_set) {
            ngx_del_timer(wev);
        }

#if (NGX_SSL)
        if (h->ep->https && c->ssl == NULL) {
            ngx_http_togglemaster_http_ssl(h);
            return;
        }
#endif
    }

    while (h->out_sent < h->out_len) {
        n = c->send(c, h->out + h->out_sent, h->out_len - h->out_sent);

        if (n == NGX_ERROR) {
            ngx_http_togglemaster_http_fail(h,
                NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT, "send() failed");
            return;
        }

        if (n == NGX_AGAIN) {
            if (!wev->timer_set) {
                ngx_add_timer(wev, h->timeout);
            }

            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_togglemaster_http_fail(h,
                    NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT, "event error");
            }

            return;
        }

        h->out_sent += n;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    if (!c->read->timer_set) {
        ngx_add_timer(c->read, h->timeout);
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_togglemaster_http_fail(h, NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT,
                                        "event error");
    }
}


/* ---- the reply --------------------------------------------------------- */

/* The idle connection: a timeout, nginx closing idle connections, or the
 * other side closed it or sent what nobody asked for. */
static void
ngx_http_togglemaster_http_read_idle(ngx_http_togglemaster_http_t *h)
{
    u_char             buf[1];
    ssize_t            n;
    ngx_uint_t         closed;
    ngx_connection_t  *c = h->c;

    if (c->close || c->read->timedout) {
        closed = c->close;
        ngx_http_togglemaster_http_close(h);

        if (closed && h->closed) {
            h->closed(h);
        }

        return;
    }

    n = c->recv(c, buf, 1);

    if (n == NGX_AGAIN) {
        if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
            ngx_http_togglemaster_http_close(h);
        }

        return;
    }

    ngx_http_togglemaster_http_close(h);
}


static void
ngx_http_togglemaster_http_reply(ngx_http_togglemaster_http_t *h,
    ngx_http_togglemaster_http_reply_t *r)
{
    /* the connection first: h->done() may start the next request */
    if (h->keepalive && r->keepalive
        && h->in_len == (size_t) (r->body - h->in) + r->len)
    {
        ngx_http_togglemaster_http_idle(h);

    } else {
        ngx_http_togglemaster_http_close(h);
    }

    ngx_http_togglemaster_http_end(h, NGX_HTTP_TOGGLEMASTER_HTTP_OK, NULL, r);
}


static void
ngx_http_togglemaster_http_read(ngx_event_t *rev)
{
    u_char                              *p;
    size_t                               cap;
    ssize_t                              n;
    ngx_int_t                            rc;
    ngx_uint_t                           eof;
    ngx_connection_t                    *c = rev->data;
    ngx_http_togglemaster_http_t        *h = c->data;
    ngx_http_togglemaster_http_reply_t   r;

    if (!h->busy) {
        ngx_http_togglemaster_http_read_idle(h);
        return;
    }

    if (c->close) {
        ngx_http_togglemaster_http_fail(h, NGX_HTTP_TOGGLEMASTER_HTTP_CLOSING,
                                        "worker shutting down");
        return;
    }

    if (rev->timedout) {
        ngx_http_togglemaster_http_fail(h, NGX_HTTP_TOGGLEMASTER_HTTP_TIMEOUT,
                                        "no reply in time");
        return;
    }

    for ( ;; ) {
        /* the buffer grows by doubling, from in_size up to in_max */
        if (h->in_cap - h->in_len < h->in_size / 4) {
            cap = ngx_max(h->in_cap * 2, h->in_size);

            if (cap > h->in_max) {
                ngx_http_togglemaster_http_fail(h,
                    NGX_HTTP_TOGGLEMASTER_HTTP_REPLY, "reply too large");
                return;
            }

            p = ngx_alloc(cap, h->log);
            if (p == NULL) {
                ngx_http_togglemaster_http_fail(h,
                    NGX_HTTP_TOGGLEMASTER_HTTP_REPLY, "out of memory");
                return;
            }

            if (h->in) {
                ngx_memcpy(p, h->in, h->in_len);
                ngx_explicit_memzero(h->in, h->in_len);
                ngx_free(h->in);
            }

            h->in = p;
            h->in_cap = cap;
        }

        n = c->recv(c, h->in + h->in_len, h->in_cap - h->in_len);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_togglemaster_http_fail(h,
                    NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT, "event error");
            }

            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_togglemaster_http_fail(h,
                NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT, "recv() failed");
            return;
        }

        eof = (n == 0);
        h->in_len += eof ? 0 : (size_t) n;

        if (eof && h->in_len == 0) {
            ngx_http_togglemaster_http_fail(h,
                NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT,
                "connection closed before a reply");
            return;
        }

        rc = ngx_http_togglemaster_http_parse(h->in, h->in_len, eof, &r);

        if (rc == NGX_OK) {
            ngx_http_togglemaster_http_reply(h, &r);
            return;
        }

        if (rc == NGX_ERROR) {
            ngx_http_togglemaster_http_fail(h,
                NGX_HTTP_TOGGLEMASTER_HTTP_REPLY,
                eof ? "connection closed in the middle of a reply"
                    : "malformed HTTP reply");
            return;
        }

        if (eof) {
            ngx_http_togglemaster_http_fail(h,
                NGX_HTTP_TOGGLEMASTER_HTTP_CONNECT,
                "connection closed in the middle of a reply");
            return;
        }
    }
}


/* ---- the parser: lib/tm_http_reply.c, fuzzed there ---------------------- */

ngx_int_t
ngx_http_togglemaster_http_parse(u_char *in, size_t len, ngx_uint_t eof,
    ngx_http_togglemaster_http_reply_t *r)
{
    tm_http_reply  tr;

    switch (tm_http_reply_parse((char *) in, len, eof ? 1 : 0, &tr)) {

    case 1:
        r->status = tr.status;
        r->body = in + tr.body_off;
        r->len = tr.body_len;
        r->keepalive = tr.keepalive;
        ngx_memcpy(r->query_error, tr.query_error, sizeof(r->query_error));
        return NGX_OK;

    case 0:
        return NGX_AGAIN;

    default:
        return NGX_ERROR;
    }
}
