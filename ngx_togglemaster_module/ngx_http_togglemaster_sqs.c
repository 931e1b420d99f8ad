/*
 * SQS SendMessageBatch (JSON protocol) from an nginx worker: one HTTP/1.1
 * connection per worker on nginx's event loop (ngx_event_connect_peer,
 * timers for connect, send and read), kept alive between requests, TLS
 * with nginx's OpenSSL layer for https endpoints. Signed with lib's SigV4
 * (tm_aws_json_request); replies parsed by lib (tm_sqs_parse_batch_result,
 * tm_aws_parse_error). The endpoint is resolved at configuration time, in
 * the master: a worker never calls getaddrinfo().
 *
 * One request at a time; events.c decides what goes and what a failure
 * means for its messages.
 */

#include "ngx_http_togglemaster_module.h"
#include "ngx_http_togglemaster_creds.h"
#include "tm_aws.h"

#include <stdlib.h>


#define NGX_HTTP_TOGGLEMASTER_SQS_REPLY_MAX  (1024 * 1024)
#define NGX_HTTP_TOGGLEMASTER_SQS_IDLE       30000


typedef struct {
    ngx_str_t                    queue_url;   /* NUL-terminated */
    tm_aws_endpoint              ep;
    void                        *creds;       /* creds.c's configuration */
    ngx_addr_t                  *addrs;
    ngx_uint_t                   naddrs;
    ngx_str_t                    sni;         /* empty for an IP address */
    ngx_uint_t                   https;
#if (NGX_SSL)
    ngx_ssl_t                   *ssl;
    ngx_uint_t                   verify;
#endif
} ngx_http_togglemaster_sqs_conf_t;


typedef struct {
    ngx_http_togglemaster_sqs_conf_t  *conf;
    ngx_log_t                         *log;

    ngx_peer_connection_t              peer;
    ngx_connection_t                  *c;
    ngx_uint_t                         addr;

    ngx_http_togglemaster_msg_t       *msgs[TM_SQS_MAX_BATCH];
    ngx_uint_t                         nmsgs;

    u_char                            *out;
    size_t                             out_len;
    size_t                             out_sent;

    u_char                            *in;
    size_t                             in_len;
    size_t                             in_cap;

    ngx_msec_t                         timeout;

    unsigned                           busy:1;
    unsigned                           connected:1;
    unsigned                           reused:1;
    unsigned                           resent:1;
} ngx_http_togglemaster_sqs_t;


static ngx_http_togglemaster_sqs_t  ngx_http_togglemaster_sqs;


static ngx_int_t ngx_http_togglemaster_sqs_connect(void);
static void ngx_http_togglemaster_sqs_write(ngx_event_t *wev);
static void ngx_http_togglemaster_sqs_read(ngx_event_t *rev);


/* ---- configuration (master) -------------------------------------------- */

static char *
ngx_http_togglemaster_sqs_env(const char *name)
{
    char  *v;

    v = getenv(name);

    return (v && *v) ? v : NULL;
}


static ngx_int_t
ngx_http_togglemaster_sqs_endpoint(ngx_http_togglemaster_sqs_conf_t *sc,
    ngx_str_t *url, const char *region, char *err, size_t errlen)
{
    char             scheme[8], buf[512];
    tm_aws_endpoint *ep = &sc->ep;

    if (url->len >= sizeof(buf)) {
        ngx_cpystrn((u_char *) err, (u_char *) "endpoint URL too long",
                    errlen);
        return NGX_ERROR;
    }

    ngx_cpystrn((u_char *) buf, url->data, url->len + 1);
    ngx_memzero(ep, sizeof(tm_aws_endpoint));

    if (tm_aws_url_split(buf, scheme, sizeof(scheme), ep->host,
                         sizeof(ep->host), ep->path, sizeof(ep->path))
        != 0)
    {
        ngx_cpystrn((u_char *) err,
                    (u_char *) "must be http(s)://host[:port][/path]",
                    errlen);
        return NGX_ERROR;
    }

    ngx_cpystrn((u_char *) ep->region, (u_char *) region,
                sizeof(ep->region));
    ngx_cpystrn((u_char *) ep->signing_name, (u_char *) "sqs",
                sizeof(ep->signing_name));
    ngx_cpystrn((u_char *) ep->target_prefix, (u_char *) "AmazonSQS",
                sizeof(ep->target_prefix));
    ep->custom = 1;

    (void) ngx_snprintf((u_char *) ep->url, sizeof(ep->url) - 1, "%s://%s%s%Z",
                        scheme, ep->host, ep->path);

    return NGX_OK;
}


char *
ngx_http_togglemaster_sqs_conf(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf)
{
    u_char                            *p;
    char                              *v, err[256], region[64];
    ngx_str_t                          s;
    ngx_url_t                          u;
    ngx_http_togglemaster_sqs_conf_t  *sc;
#if (NGX_SSL)
    ngx_pool_cleanup_t                *cln;
#endif

    sc = ngx_pcalloc(cf->pool, sizeof(ngx_http_togglemaster_sqs_conf_t));
    if (sc == NULL) {
        return NGX_CONF_ERROR;
    }

    tmcf->sqs = sc;

    /* the queue: the directive, else the original service's AWS_SQS_URL */
    s = tmcf->sqs_queue_url;

    if (s.len == 0) {
        v = ngx_http_togglemaster_sqs_env("AWS_SQS_URL");
        if (v == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"togglemaster_events on\" needs "
                               "\"togglemaster_sqs_queue_url\" (or "
                               "AWS_SQS_URL in nginx's environment)");
            return NGX_CONF_ERROR;
        }

        s.data = (u_char *) v;
        s.len = ngx_strlen(v);
    }

    sc->queue_url.data = ngx_pnalloc(cf->pool, s.len + 1);
    if (sc->queue_url.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_cpystrn(sc->queue_url.data, s.data, s.len + 1);
    sc->queue_url.len = s.len;

    if (!tm_text_valid((char *) s.data, s.len)
        || ngx_strlchr(s.data, s.data + s.len, '"')
        || ngx_strlchr(s.data, s.data + s.len, '\\'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "bad SQS queue URL \"%V\"",
                           &s);
        return NGX_CONF_ERROR;
    }

    /* region and endpoint the way the AWS SDKs find them; the directives
     * win over the environment */
    if (tmcf->aws_region.len) {
        if (tmcf->aws_region.len >= sizeof(region)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "bad AWS region \"%V\"",
                               &tmcf->aws_region);
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn((u_char *) region, tmcf->aws_region.data,
                    tmcf->aws_region.len + 1);

    } else {
        tm_aws_region((char *) sc->queue_url.data, region, sizeof(region));
    }

    if (tm_aws_endpoint_resolve(&sc->ep, "sqs", region,
                                (char *) sc->queue_url.data, err, sizeof(err))
        != 0)
    {
        if (tmcf->aws_endpoint.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "SQS endpoint: %s", err);
            return NGX_CONF_ERROR;
        }
    }

    if (tmcf->aws_endpoint.len
        && ngx_http_togglemaster_sqs_endpoint(sc, &tmcf->aws_endpoint, region,
                                              err, sizeof(err))
           != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "togglemaster_aws_endpoint \"%V\": %s",
                           &tmcf->aws_endpoint, err);
        return NGX_CONF_ERROR;
    }

    /* credentials, found here in the master: nginx clears the workers'
     * environment */
    if (ngx_http_togglemaster_creds_conf(cf, tmcf, region, sc->ep.custom,
                                         &sc->creds)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    sc->https = ngx_strncmp(sc->ep.url, "https://", 8) == 0;

    /* resolved here, once: workers never call the resolver */
    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url.data = (u_char *) sc->ep.host;
    u.url.len = ngx_strlen(sc->ep.host);
    u.default_port = sc->https ? 443 : 80;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "SQS endpoint \"%s\": %s", sc->ep.url,
                           u.err ? u.err : "no address");
        return NGX_CONF_ERROR;
    }

    sc->addrs = u.addrs;
    sc->naddrs = u.naddrs;

    if (u.host.len && u.host.data[0] != '['
        && ngx_inet_addr(u.host.data, u.host.len) == INADDR_NONE)
    {
        sc->sni.data = ngx_pnalloc(cf->pool, u.host.len + 1);
        if (sc->sni.data == NULL) {
            return NGX_CONF_ERROR;
        }

        p = ngx_cpymem(sc->sni.data, u.host.data, u.host.len);
        *p = '\0';
        sc->sni.len = u.host.len;
    }

    if (sc->https) {
#if (NGX_SSL)
        sc->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
        if (sc->ssl == NULL) {
            return NGX_CONF_ERROR;
        }

        sc->ssl->log = cf->log;

        if (ngx_ssl_create(sc->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (cln == NULL) {
            ngx_ssl_cleanup_ctx(sc->ssl);
            return NGX_CONF_ERROR;
        }

        cln->handler = ngx_ssl_cleanup_ctx;
        cln->data = sc->ssl;

        sc->verify = tmcf->events_ssl_verify;

        if (sc->verify) {
            if (tmcf->events_ssl_ca.len) {
                if (ngx_ssl_trusted_certificate(cf, sc->ssl,
                                                &tmcf->events_ssl_ca, 5)
                    != NGX_OK)
                {
                    return NGX_CONF_ERROR;
                }

            } else if (SSL_CTX_set_default_verify_paths(sc->ssl->ctx) != 1) {
                ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                              "SSL_CTX_set_default_verify_paths() failed");
                return NGX_CONF_ERROR;
            }
        }
#else
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "SQS endpoint \"%s\" needs nginx built with SSL",
                           sc->ep.url);
        return NGX_CONF_ERROR;
#endif
    }

    return NGX_CONF_OK;
}


/* ---- the connection ---------------------------------------------------- */

static void
ngx_http_togglemaster_sqs_close_connection(ngx_http_togglemaster_sqs_t *s)
{
    ngx_connection_t  *c;

    c = s->c;
    if (c == NULL) {
        return;
    }

    s->c = NULL;
    s->connected = 0;

    ngx_http_togglemaster_http_close(c);
}


/* Closes an outbound connection of ours (SQS, credentials) and its pool,
 * without waiting for a TLS close_notify. */
void
ngx_http_togglemaster_http_close(ngx_connection_t *c)
{
    ngx_pool_t  *pool;

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


/* Hands the messages back to events.c; nothing of them stays here. */
static void
ngx_http_togglemaster_sqs_finish(ngx_http_togglemaster_sqs_t *s, ngx_int_t rc)
{
    ngx_uint_t                    n;
    ngx_http_togglemaster_msg_t  *msgs[TM_SQS_MAX_BATCH];

    n = s->nmsgs;
    ngx_memcpy(msgs, s->msgs, n * sizeof(ngx_http_togglemaster_msg_t *));

    s->nmsgs = 0;
    s->busy = 0;

    if (s->out) {
        ngx_free(s->out);
        s->out = NULL;
    }

    if (n) {
        ngx_http_togglemaster_events_done(msgs, n, rc);
    }
}


static void
ngx_http_togglemaster_sqs_error(ngx_uint_t kind)
{
    if (ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(
                   &ngx_http_togglemaster_shm->events.errors[kind], 1);
    }
}


static void
ngx_http_togglemaster_sqs_fail(ngx_http_togglemaster_sqs_t *s,
    ngx_uint_t kind, const char *why)
{
    ngx_uint_t  i, n;

    /* a kept-alive connection the other side closed meanwhile: once more
     * on a new one, which is no failure of the request */
    if (s->reused && !s->resent && s->in_len == 0
        && kind == NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT)
    {
        ngx_http_togglemaster_sqs_close_connection(s);
        s->resent = 1;

        if (ngx_http_togglemaster_sqs_connect() == NGX_OK) {
            return;
        }
    }

    ngx_http_togglemaster_sqs_error(kind);

    for (n = 0, i = 0; i < s->nmsgs; i++) {
        n += s->msgs[i]->nevents;
    }

    ngx_log_error(NGX_LOG_WARN, s->log, 0,
                  "togglemaster: SQS SendMessageBatch to %V: %s; %ui "
                  "evaluation events will be retried",
                  &s->conf->addrs[s->addr % s->conf->naddrs].name, why, n);

    ngx_http_togglemaster_sqs_close_connection(s);

    /* the next try goes to the next address, if there are several */
    s->addr++;

    ngx_http_togglemaster_sqs_finish(s, NGX_ERROR);
}


static void
ngx_http_togglemaster_sqs_idle(ngx_http_togglemaster_sqs_t *s)
{
    ngx_connection_t  *c = s->c;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    /* an idle connection neither keeps an exiting worker alive nor
     * survives ngx_close_idle_connections() */
    c->idle = 1;
    c->read->cancelable = 1;
    ngx_add_timer(c->read, NGX_HTTP_TOGGLEMASTER_SQS_IDLE);

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_togglemaster_sqs_close_connection(s);
    }
}


static void
ngx_http_togglemaster_sqs_active(ngx_http_togglemaster_sqs_t *s)
{
    ngx_connection_t  *c = s->c;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    c->idle = 0;
    c->read->cancelable = 0;
}


#if (NGX_SSL)

static void
ngx_http_togglemaster_sqs_handshaked(ngx_connection_t *c)
{
    long                          rc;
    ngx_http_togglemaster_sqs_t  *s = c->data;

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->timedout || c->write->timedout) {
        ngx_http_togglemaster_sqs_fail(s, NGX_HTTP_TOGGLEMASTER_SQS_ERR_TIMEOUT,
                                       "TLS handshake timed out");
        return;
    }

    if (!c->ssl->handshaked) {
        ngx_http_togglemaster_sqs_fail(s, NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT,
                                       "TLS handshake failed");
        return;
    }

    if (s->conf->verify) {
        rc = SSL_get_verify_result(c->ssl->connection);

        if (rc != X509_V_OK) {
            ngx_log_error(NGX_LOG_ERR, c->log, 0,
                          "togglemaster: SQS certificate verify error: "
                          "(%l:%s)", rc, X509_verify_cert_error_string(rc));
            ngx_http_togglemaster_sqs_fail(s,
                NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT,
                "certificate not trusted");
            return;
        }

        if (s->conf->sni.len
            && ngx_ssl_check_host(c, &s->conf->sni) != NGX_OK)
        {
            ngx_http_togglemaster_sqs_fail(s,
                NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT,
                "certificate does not match the host");
            return;
        }
    }

    c->read->handler = ngx_http_togglemaster_sqs_read;
    c->write->handler = ngx_http_togglemaster_sqs_write;

    ngx_http_togglemaster_sqs_write(c->write);
}


static void
ngx_http_togglemaster_sqs_ssl(ngx_http_togglemaster_sqs_t *s)
{
    ngx_int_t          rc;
    ngx_connection_t  *c = s->c;

    if (ngx_ssl_create_connection(s->conf->ssl, c, NGX_SSL_CLIENT) != NGX_OK) {
        ngx_http_togglemaster_sqs_fail(s, NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT,
                                       "cannot start TLS");
        return;
    }

    if (s->conf->sni.len
        && SSL_set_tlsext_host_name(c->ssl->connection,
                                    (char *) s->conf->sni.data)
           == 0)
    {
        ngx_http_togglemaster_sqs_fail(s, NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT,
                                       "cannot set SNI");
        return;
    }

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        if (!c->write->timer_set) {
            ngx_add_timer(c->write, s->timeout);
        }

        c->ssl->handler = ngx_http_togglemaster_sqs_handshaked;
        return;
    }

    ngx_http_togglemaster_sqs_handshaked(c);
}

#endif


static void
ngx_http_togglemaster_sqs_write(ngx_event_t *wev)
{
    int                           err;
    ssize_t                       n;
    socklen_t                     len;
    ngx_connection_t             *c = wev->data;
    ngx_http_togglemaster_sqs_t  *s = c->data;

    if (wev->timedout) {
        ngx_http_togglemaster_sqs_fail(s, NGX_HTTP_TOGGLEMASTER_SQS_ERR_TIMEOUT,
                                       s->connected ? "sending timed out"
                                                    : "connect timed out");
        return;
    }

    if (!s->busy) {
        return;
    }

    if (!s->connected) {
        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1)
        {
            err = ngx_socket_errno;
        }

        if (err) {
            ngx_log_error(NGX_LOG_INFO, c->log, err,
                          "togglemaster: connect() to %V failed",
                          s->peer.name);
            ngx_http_togglemaster_sqs_fail(s,
                NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT, "connect() failed");
            return;
        }

        s->connected = 1;

        if (wev->timer_set) {
            ngx_del_timer(wev);
        }

#if (NGX_SSL)
        if (s->conf->https && c->ssl == NULL) {
            ngx_http_togglemaster_sqs_ssl(s);
            return;
        }
#endif
    }

    while (s->out_sent < s->out_len) {
        n = c->send(c, s->out + s->out_sent, s->out_len - s->out_sent);

        if (n == NGX_ERROR) {
            ngx_http_togglemaster_sqs_fail(s,
                NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT, "send() failed");
            return;
        }

        if (n == NGX_AGAIN) {
            if (!wev->timer_set) {
                ngx_add_timer(wev, s->timeout);
            }

            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_togglemaster_sqs_fail(s,
                    NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT, "event error");
            }

            return;
        }

        s->out_sent += n;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    if (!c->read->timer_set) {
        ngx_add_timer(c->read, s->timeout);
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_togglemaster_sqs_fail(s, NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT,
                                       "event error");
    }
}


/* ---- the reply --------------------------------------------------------- */

typedef ngx_http_togglemaster_http_reply_t  ngx_http_togglemaster_sqs_reply_t;


static u_char *
ngx_http_togglemaster_sqs_line(u_char *p, u_char *last)
{
    for ( /* void */ ; p + 1 < last; p++) {
        if (p[0] == '\r' && p[1] == '\n') {
            return p;
        }
    }

    return NULL;
}


/* Chunked body at p..last: NGX_AGAIN until it is complete, then decoded
 * in place. */
static ngx_int_t
ngx_http_togglemaster_sqs_chunked(u_char *p, u_char *last, size_t *len)
{
    u_char     *q, *eol, *out;
    size_t      size;
    ngx_int_t   pass;

    for (pass = 0; pass < 2; pass++) {
        q = p;
        out = p;

        for ( ;; ) {
            eol = ngx_http_togglemaster_sqs_line(q, last);
            if (eol == NULL) {
                return NGX_AGAIN;
            }

            size = 0;
            for ( /* void */ ; q < eol && *q != ';'; q++) {
                if (*q >= '0' && *q <= '9') {
                    size = size * 16 + (*q - '0');

                } else if ((*q | 0x20) >= 'a' && (*q | 0x20) <= 'f') {
                    size = size * 16 + ((*q | 0x20) - 'a' + 10);

                } else if (*q != ' ') {
                    return NGX_ERROR;
                }

                if (size > NGX_HTTP_TOGGLEMASTER_SQS_REPLY_MAX) {
                    return NGX_ERROR;
                }
            }

            q = eol + 2;

            if (size == 0) {
                /* trailers up to an empty line */
                for ( ;; ) {
                    eol = ngx_http_togglemaster_sqs_line(q, last);
                    if (eol == NULL) {
                        return NGX_AGAIN;
                    }

                    if (eol == q) {
                        break;
                    }

                    q = eol + 2;
                }

                break;
            }

            if ((size_t) (last - q) < size + 2) {
                return NGX_AGAIN;
            }

            if (pass == 1) {
                out = ngx_movemem(out, q, size);
            }

            q += size + 2;
        }

        if (pass == 1) {
            *len = out - p;
        }
    }

    return NGX_OK;
}


/* An HTTP/1.x reply in in..in + len (creds.c's too). */
ngx_int_t
ngx_http_togglemaster_http_parse(u_char *in, size_t len, ngx_uint_t eof,
    ngx_http_togglemaster_http_reply_t *r)
{
    u_char      *p, *last, *eol, *colon, *v;
    size_t       n, vlen;
    off_t        clen;
    ngx_int_t    rc;
    ngx_uint_t   http11, chunked, close, keepalive;

    p = in;
    last = in + len;

    /* HTTP/1.1 200 OK */
    eol = ngx_http_togglemaster_sqs_line(p, last);
    if (eol == NULL) {
        return len > 8192 ? NGX_ERROR : NGX_AGAIN;
    }

    if (eol - p < 12 || ngx_strncmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ') {
        return NGX_ERROR;
    }

    http11 = p[7] == '1';
    r->status = ngx_atoi(p + 9, 3);
    if (r->status == (ngx_uint_t) NGX_ERROR || r->status < 100) {
        return NGX_ERROR;
    }

    clen = -1;
    chunked = 0;
    close = 0;
    keepalive = 0;
    r->query_error[0] = '\0';

    for (p = eol + 2; /* void */ ; p = eol + 2) {
        eol = ngx_http_togglemaster_sqs_line(p, last);
        if (eol == NULL) {
            return (last - in > 65536) ? NGX_ERROR : NGX_AGAIN;
        }

        if (eol == p) {
            p += 2;
            break;
        }

        colon = ngx_strlchr(p, eol, ':');
        if (colon == NULL) {
            continue;
        }

        n = colon - p;
        for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++) {
            /* void */
        }

        vlen = eol - v;

        if (n == 14 && ngx_strncasecmp(p, (u_char *) "Content-Length", 14)
                       == 0)
        {
            clen = ngx_atoof(v, vlen);
            if (clen == NGX_ERROR) {
                return NGX_ERROR;
            }

        } else if (n == 17
                   && ngx_strncasecmp(p, (u_char *) "Transfer-Encoding", 17)
                      == 0)
        {
            chunked = ngx_strlcasestrn(v, eol, (u_char *) "chunked", 7 - 1)
                      != NULL;

        } else if (n == 10
                   && ngx_strncasecmp(p, (u_char *) "Connection", 10) == 0)
        {
            close = ngx_strlcasestrn(v, eol, (u_char *) "close", 5 - 1)
                    != NULL;
            keepalive = ngx_strlcasestrn(v, eol, (u_char *) "keep-alive",
                                         10 - 1)
                        != NULL;

        } else if (n == 18
                   && ngx_strncasecmp(p, (u_char *) "x-amzn-query-error", 18)
                      == 0)
        {
            ngx_cpystrn((u_char *) r->query_error, v,
                        ngx_min(vlen + 1, sizeof(r->query_error)));
        }
    }

    r->keepalive = http11 ? !close : keepalive;
    r->body = p;

    if (chunked) {
        rc = ngx_http_togglemaster_sqs_chunked(p, last, &r->len);
        if (rc == NGX_AGAIN && eof) {
            return NGX_ERROR;
        }

        return rc;
    }

    if (clen >= 0) {
        if (last - p < clen) {
            return eof ? NGX_ERROR : NGX_AGAIN;
        }

        r->len = (size_t) clen;
        return NGX_OK;
    }

    if (r->status == 204 || r->status == 304 || r->status < 200) {
        r->len = 0;
        return NGX_OK;
    }

    /* until the end of the connection */
    if (!eof) {
        return NGX_AGAIN;
    }

    r->keepalive = 0;
    r->len = last - p;

    return NGX_OK;
}


static void
ngx_http_togglemaster_sqs_reply(ngx_http_togglemaster_sqs_t *s,
    ngx_http_togglemaster_sqs_reply_t *r)
{
    char                  err[128];
    ngx_int_t             rc;
    ngx_uint_t            i, k, idx, sender;
    tm_aws_error          e;
    tm_sqs_batch_result  *br;

    /* the connection first: what follows may queue the next request */
    if (r->keepalive && s->in_len == (size_t) (r->body - s->in) + r->len) {
        ngx_http_togglemaster_sqs_idle(s);

    } else {
        ngx_http_togglemaster_sqs_close_connection(s);
    }

    if (r->status != 200) {
        tm_aws_parse_error((long) r->status, (char *) r->body, r->len,
                           r->query_error[0] ? r->query_error : NULL, &e);
        ngx_http_togglemaster_sqs_error(NGX_HTTP_TOGGLEMASTER_SQS_ERR_HTTP);

        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "togglemaster: SQS SendMessageBatch: HTTP %ui %s: %s; "
                      "will retry", r->status, e.code, e.message);

        if (r->status == 403
            && (ngx_strcmp(e.code, "ExpiredToken") == 0
                || ngx_strcmp(e.code, "InvalidClientTokenId") == 0
                || ngx_strcmp(e.code, "UnrecognizedClientException") == 0))
        {
            ngx_http_togglemaster_creds_rejected(e.code);
        }

        ngx_http_togglemaster_sqs_finish(s, NGX_ERROR);
        return;
    }

    br = ngx_alloc(sizeof(tm_sqs_batch_result), s->log);
    if (br == NULL) {
        ngx_http_togglemaster_sqs_finish(s, NGX_ERROR);
        return;
    }

    rc = tm_sqs_parse_batch_result((char *) r->body, r->len, br, err,
                                   sizeof(err));
    if (rc != 0) {
        ngx_free(br);
        ngx_http_togglemaster_sqs_error(NGX_HTTP_TOGGLEMASTER_SQS_ERR_REPLY);
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "togglemaster: SQS SendMessageBatch: %s; will retry",
                      err);
        ngx_http_togglemaster_sqs_finish(s, NGX_ERROR);
        return;
    }

    /* entries are "m0".."m9"; one that is in neither list is retried */
    for (i = 0; i < s->nmsgs; i++) {
        s->msgs[i]->status = NGX_HTTP_TOGGLEMASTER_MSG_RETRY;
    }

    for (k = 0; k < br->nok + br->nfailed; k++) {
        sender = 0;

        if (k < br->nok) {
            idx = ngx_atoi((u_char *) br->ok[k] + 1,
                           ngx_strlen(br->ok[k]) - 1);

        } else {
            i = k - br->nok;
            idx = ngx_atoi((u_char *) br->failed[i].id + 1,
                           ngx_strlen(br->failed[i].id) - 1);
            sender = br->failed[i].sender_fault;

            ngx_http_togglemaster_sqs_error(
                NGX_HTTP_TOGGLEMASTER_SQS_ERR_ENTRY);
            ngx_log_error(NGX_LOG_WARN, s->log, 0,
                          "togglemaster: SQS refused a message of events: "
                          "%s: %s; %s", br->failed[i].code,
                          br->failed[i].message,
                          sender ? "dropped" : "will retry");
        }

        if (idx == (ngx_uint_t) NGX_ERROR || idx >= s->nmsgs) {
            continue;
        }

        s->msgs[idx]->status = (k < br->nok)
                               ? NGX_HTTP_TOGGLEMASTER_MSG_SENT
                               : sender ? NGX_HTTP_TOGGLEMASTER_MSG_REJECTED
                                        : NGX_HTTP_TOGGLEMASTER_MSG_RETRY;
    }

    ngx_free(br);

    if (ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_togglemaster_shm->events.batches,
                                    1);
    }

    ngx_http_togglemaster_sqs_finish(s, NGX_OK);
}


static void
ngx_http_togglemaster_sqs_read(ngx_event_t *rev)
{
    u_char                             *p, buf[1];
    size_t                              cap;
    ssize_t                             n;
    ngx_int_t                           rc;
    ngx_uint_t                          eof;
    ngx_connection_t                   *c = rev->data;
    ngx_http_togglemaster_sqs_t        *s = c->data;
    ngx_http_togglemaster_sqs_reply_t   r;

    if (!s->busy) {
        /* idle: timeout, nginx closing idle connections, or the other
         * side closed it */
        if (c->close || rev->timedout) {
            eof = c->close;
            ngx_http_togglemaster_sqs_close_connection(s);

            /* a graceful stop closes idle connections first: the earliest
             * word of it a module gets, so the flush starts now */
            if (eof && (ngx_exiting || ngx_quit)) {
                ngx_http_togglemaster_events_wake();
            }

            return;
        }

        n = c->recv(c, buf, 1);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_togglemaster_sqs_close_connection(s);
            }

            return;
        }

        ngx_http_togglemaster_sqs_close_connection(s);
        return;
    }

    if (c->close) {
        ngx_http_togglemaster_sqs_fail(s, NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT,
                                       "worker shutting down");
        return;
    }

    if (rev->timedout) {
        ngx_http_togglemaster_sqs_fail(s, NGX_HTTP_TOGGLEMASTER_SQS_ERR_TIMEOUT,
                                       "no reply in time");
        return;
    }

    for ( ;; ) {
        if (s->in_cap - s->in_len < 4096) {
            cap = ngx_max(s->in_cap * 2, 16384);

            if (cap > NGX_HTTP_TOGGLEMASTER_SQS_REPLY_MAX) {
                ngx_http_togglemaster_sqs_fail(s,
                    NGX_HTTP_TOGGLEMASTER_SQS_ERR_REPLY, "reply too large");
                return;
            }

            p = ngx_alloc(cap, s->log);
            if (p == NULL) {
                ngx_http_togglemaster_sqs_fail(s,
                    NGX_HTTP_TOGGLEMASTER_SQS_ERR_REPLY, "out of memory");
                return;
            }

            if (s->in) {
                ngx_memcpy(p, s->in, s->in_len);
                ngx_free(s->in);
            }

            s->in = p;
            s->in_cap = cap;
        }

        n = c->recv(c, s->in + s->in_len, s->in_cap - s->in_len);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_togglemaster_sqs_fail(s,
                    NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT, "event error");
            }

            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_togglemaster_sqs_fail(s,
                NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT, "recv() failed");
            return;
        }

        eof = (n == 0);
        s->in_len += eof ? 0 : (size_t) n;

        if (eof && s->in_len == 0) {
            ngx_http_togglemaster_sqs_fail(s,
                NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT,
                "connection closed before a reply");
            return;
        }

        rc = ngx_http_togglemaster_http_parse(s->in, s->in_len, eof, &r);

        if (rc == NGX_OK) {
            ngx_http_togglemaster_sqs_reply(s, &r);
            return;
        }

        if (rc == NGX_ERROR) {
            ngx_http_togglemaster_sqs_fail(s,
                NGX_HTTP_TOGGLEMASTER_SQS_ERR_REPLY,
                eof ? "connection closed in the middle of a reply"
                    : "malformed HTTP reply");
            return;
        }

        if (eof) {
            ngx_http_togglemaster_sqs_fail(s,
                NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT,
                "connection closed in the middle of a reply");
            return;
        }
    }
}


static ngx_int_t
ngx_http_togglemaster_sqs_connect(void)
{
    ngx_int_t                     rc;
    ngx_addr_t                   *addr;
    ngx_connection_t             *c;
    ngx_http_togglemaster_sqs_t  *s = &ngx_http_togglemaster_sqs;

    addr = &s->conf->addrs[s->addr % s->conf->naddrs];

    ngx_memzero(&s->peer, sizeof(ngx_peer_connection_t));
    s->peer.sockaddr = addr->sockaddr;
    s->peer.socklen = addr->socklen;
    s->peer.name = &addr->name;
    s->peer.get = ngx_event_get_peer;
    s->peer.log = s->log;
    s->peer.log_error = NGX_ERROR_INFO;   /* our own warning says it */
    s->peer.tries = 1;

    rc = ngx_event_connect_peer(&s->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        if (s->peer.connection) {
            ngx_close_connection(s->peer.connection);
        }

        return NGX_ERROR;
    }

    c = s->peer.connection;
    c->data = s;
    c->read->handler = ngx_http_togglemaster_sqs_read;
    c->write->handler = ngx_http_togglemaster_sqs_write;

    c->pool = ngx_create_pool(1024, s->log);
    if (c->pool == NULL) {
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    s->c = c;
    s->connected = 0;
    s->reused = 0;
    s->out_sent = 0;
    s->in_len = 0;

    ngx_add_timer(c->write, s->timeout);

    if (rc == NGX_OK) {
        /* connected at once (loopback): carry on from the event loop */
        ngx_post_event(c->write, &ngx_posted_events);
    }

    return NGX_OK;
}


/* Starts one SendMessageBatch with msgs. NGX_OK: events.c hears back
 * through ngx_http_togglemaster_events_done(); else nothing started
 * (NGX_DECLINED: no credentials yet). */
ngx_int_t
ngx_http_togglemaster_sqs_send(ngx_http_togglemaster_msg_t **msgs,
    ngx_uint_t n, ngx_msec_t timeout)
{
    char                         *body, err[256];
    u_char                       *p;
    size_t                        len, hlen;
    ngx_uint_t                    i;
    tm_aws_request                req;
    const tm_aws_creds           *creds;
    ngx_http_togglemaster_sqs_t  *s = &ngx_http_togglemaster_sqs;

    if (s->busy || n == 0 || n > TM_SQS_MAX_BATCH) {
        return NGX_ERROR;
    }

    /* the keys of the moment: temporary ones change under us */
    creds = ngx_http_togglemaster_creds_get();
    if (creds == NULL) {
        return NGX_DECLINED;
    }

    /* the body by hand: messages are escaped already, a JSON library would
     * only copy them once more */
    len = sizeof("{\"QueueUrl\":\"\",\"Entries\":[]}") + s->conf->queue_url.len;

    for (i = 0; i < n; i++) {
        len += sizeof(",{\"Id\":\"m0\",\"MessageBody\":\"\"}") + msgs[i]->len;
    }

    body = malloc(len);   /* tm_aws_json_request() frees it */
    if (body == NULL) {
        return NGX_ERROR;
    }

    p = (u_char *) body;
    p = ngx_cpymem(p, "{\"QueueUrl\":\"", sizeof("{\"QueueUrl\":\"") - 1);
    p = ngx_cpymem(p, s->conf->queue_url.data, s->conf->queue_url.len);
    p = ngx_cpymem(p, "\",\"Entries\":[", sizeof("\",\"Entries\":[") - 1);

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "%s{\"Id\":\"m%ui\",\"MessageBody\":\"",
                        i ? "," : "", i);
        p = ngx_cpymem(p, msgs[i]->data, msgs[i]->len);
        *p++ = '"';
        *p++ = '}';
    }

    *p++ = ']';
    *p++ = '}';
    *p = '\0';

    if (tm_aws_json_request(&req, &s->conf->ep, creds,
                            "SendMessageBatch", body, ngx_time(), err,
                            sizeof(err))
        != 0)
    {
        ngx_log_error(NGX_LOG_ERR, s->log, 0,
                      "togglemaster: cannot sign the SQS request: %s", err);
        return NGX_ERROR;
    }

    hlen = sizeof("POST  HTTP/1.1\r\nContent-Length: \r\n\r\n") - 1
           + ngx_strlen(s->conf->ep.path) + NGX_SIZE_T_LEN;

    for (i = 0; i < req.nheaders; i++) {
        hlen += ngx_strlen(req.headers[i]) + 2;
    }

    s->out = ngx_alloc(hlen + req.body_len, s->log);
    if (s->out == NULL) {
        tm_aws_request_free(&req);
        return NGX_ERROR;
    }

    p = ngx_sprintf(s->out, "POST %s HTTP/1.1\r\n", s->conf->ep.path);

    for (i = 0; i < req.nheaders; i++) {
        p = ngx_sprintf(p, "%s\r\n", req.headers[i]);
    }

    p = ngx_sprintf(p, "Content-Length: %uz\r\n\r\n", req.body_len);
    p = ngx_cpymem(p, req.body, req.body_len);

    s->out_len = p - s->out;
    s->out_sent = 0;
    s->in_len = 0;
    s->timeout = timeout;
    s->resent = 0;

    tm_aws_request_free(&req);

    ngx_memcpy(s->msgs, msgs, n * sizeof(ngx_http_togglemaster_msg_t *));
    s->nmsgs = n;
    s->busy = 1;

    if (ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(
                   &ngx_http_togglemaster_shm->events.requests, 1);
    }

    if (s->c) {
        ngx_http_togglemaster_sqs_active(s);
        s->reused = 1;
        ngx_post_event(s->c->write, &ngx_posted_events);
        return NGX_OK;
    }

    if (ngx_http_togglemaster_sqs_connect() != NGX_OK) {
        ngx_http_togglemaster_sqs_error(NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT);
        s->addr++;
        s->nmsgs = 0;
        s->busy = 0;
        ngx_free(s->out);
        s->out = NULL;
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_http_togglemaster_sqs_busy(void)
{
    return ngx_http_togglemaster_sqs.busy;
}


void
ngx_http_togglemaster_sqs_init(ngx_cycle_t *cycle,
    ngx_http_togglemaster_main_conf_t *tmcf)
{
    ngx_http_togglemaster_sqs_t  *s = &ngx_http_togglemaster_sqs;

    ngx_memzero(s, sizeof(ngx_http_togglemaster_sqs_t));
    s->conf = tmcf->sqs;
    s->log = cycle->log;
    s->addr = ngx_worker;   /* workers spread over the addresses */

    ngx_http_togglemaster_creds_init(cycle, s->conf->creds);
}


/* Closes the connection; messages in flight go back to events.c as not
 * attempted. */
void
ngx_http_togglemaster_sqs_close(void)
{
    ngx_http_togglemaster_sqs_t  *s = &ngx_http_togglemaster_sqs;

    ngx_http_togglemaster_sqs_close_connection(s);

    if (s->busy) {
        ngx_http_togglemaster_sqs_finish(s, NGX_DECLINED);
    }

    if (s->in) {
        ngx_free(s->in);
        s->in = NULL;
        s->in_cap = 0;
        s->in_len = 0;
    }
}
