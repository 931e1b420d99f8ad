/*
 * The module's Redis client (see the header): configuration (the URL read
 * by lib/tm_url.c, as the daemons read it, resolved in the master, and
 * by the workers through nginx's resolver if there is one at http level;
 * the TLS context), then per connection a non-blocking connect, TLS with
 * SNI and verification, AUTH and SELECT (or CLUSTER INFO), MOVED and ASK
 * replies turned into a redirect for the user, and replies parsed by hiredis's
 * reader and handed to callbacks in order. Timeouts are the sync code's
 * nginx timers, which cover every step.
 */

#include "ngx_http_togglemaster_module.h"
#include "ngx_http_togglemaster_redis.h"
#include "ngx_http_togglemaster_http.h"
#include "tm_url.h"
#include "tm_redis_keys.h"


/* One read event reads at most this many 16 KiB chunks, then lets the
 * requests waiting in this event-loop turn in (a full load arrives in
 * HSCAN chunks anyway). */
#define NGX_HTTP_TOGGLEMASTER_REDIS_BURST  64
#define NGX_HTTP_TOGGLEMASTER_REDIS_CHUNK  16384


/* togglemaster_redis, parsed and resolved */
typedef struct {
    tm_redis_url                           url;
    ngx_http_togglemaster_http_endpoint_t  target;       /* addresses */
    ngx_str_t                              host;         /* as in url */
    in_port_t                              port;
    ngx_uint_t                             unresolved;   /* at start */
    ngx_uint_t                             cluster;      /* "cluster" */
    ngx_str_t                              server_name;  /* NUL-terminated */
    ngx_uint_t                             server_ip;
#if (NGX_SSL)
    ngx_ssl_t                             *ssl;          /* rediss:// */
#endif
} ngx_http_togglemaster_redis_peer_t;


struct ngx_http_togglemaster_redis_s {
    ngx_http_togglemaster_redis_peer_t    *conf;
    ngx_str_t                             *name;         /* for the log */
    ngx_log_t                             *log;
    ngx_peer_connection_t                  peer;
    ngx_connection_t                      *c;

    /* the peer's address, copied: a new answer frees the one it came
     * from two re-resolutions later, while the connection may live on */
    ngx_sockaddr_t                         peer_sockaddr;
    ngx_str_t                              peer_name;
    u_char                                 peer_text[NGX_SOCKADDR_STRLEN];
    redisReader                           *reader;

    /* queued command bytes, sent from out_sent on */
    u_char                                *out;
    size_t                                 out_len;
    size_t                                 out_sent;
    size_t                                 out_cap;

    /* reply callbacks of the commands in flight: a ring */
    ngx_http_togglemaster_redis_reply_pt  *pending;
    ngx_uint_t                             head;
    ngx_uint_t                             npending;
    ngx_uint_t                             cap;

    ngx_http_togglemaster_redis_reply_pt   message;      /* subscribed */
    ngx_http_togglemaster_redis_error_pt   error;

    ngx_uint_t                             running;      /* handlers */
    u_char                                 why[256];

    tm_redis_redirect                      redirect;     /* MOVED, ASK */

    unsigned                               connected:1;
    unsigned                               ready:1;      /* TLS done */
    unsigned                               failed:1;
    unsigned                               closed:1;
    unsigned                               redirected:1;
};


static void ngx_http_togglemaster_redis_send(
    ngx_http_togglemaster_redis_t *rc);
static void ngx_http_togglemaster_redis_write(ngx_event_t *wev);


/* ---- configuration ------------------------------------------------------ */

char *
ngx_http_togglemaster_redis_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_togglemaster_main_conf_t *tmcf = conf;

    char                                 err[160];
    u_char                              *p, *addr;
    size_t                               size;
    ngx_str_t                           *value;
    ngx_url_t                            u;
    ngx_http_togglemaster_redis_peer_t  *rp;

    if (tmcf->redis_peer) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rp = ngx_pcalloc(cf->pool, sizeof(ngx_http_togglemaster_redis_peer_t));
    if (rp == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the URL may hold a password: the messages never repeat it */
    if (tm_redis_url_parse((char *) value[1].data, value[1].len, &rp->url,
                           err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis URL in \"togglemaster_redis\": %s",
                           err);
        return NGX_CONF_ERROR;
    }

    size = sizeof(rp->url.host) + sizeof(rp->url.user) + 64;

    tmcf->redis.data = ngx_pnalloc(cf->pool, size);
    addr = ngx_pnalloc(cf->pool, size);
    if (tmcf->redis.data == NULL || addr == NULL) {
        return NGX_CONF_ERROR;
    }

    tm_redis_url_describe(&rp->url, (char *) tmcf->redis.data, size);
    tmcf->redis.len = ngx_strlen(tmcf->redis.data);

    if (cf->args->nelts == 3) {
        if (ngx_strcmp(value[2].data, "cluster") != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in "
                               "\"togglemaster_redis\": only \"cluster\"",
                               &value[2]);
            return NGX_CONF_ERROR;
        }

        if (rp->url.db != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "togglemaster_redis \"%V\" cluster: a Redis "
                               "Cluster has database 0 only", &tmcf->redis);
            return NGX_CONF_ERROR;
        }

        rp->cluster = 1;
        tmcf->redis_cluster = 1;
    }

    if (rp->url.unix_path[0]) {
        p = ngx_snprintf(addr, size, "unix:%s", rp->url.unix_path);

    } else if (ngx_strchr(rp->url.host, ':')) {
        p = ngx_snprintf(addr, size, "[%s]:%d", rp->url.host, rp->url.port);

    } else {
        p = ngx_snprintf(addr, size, "%s:%d", rp->url.host, rp->url.port);
    }

    /* the syntax first: a bad URL fails whatever the DNS says */
    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url.data = addr;
    u.url.len = p - addr;
    u.default_port = 6379;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid address for redis \"%V\": %s",
                           &tmcf->redis, u.err ? u.err : "unknown error");
        return NGX_CONF_ERROR;
    }

    rp->host.data = (u_char *) rp->url.host;
    rp->host.len = ngx_strlen(rp->url.host);
    rp->port = (in_port_t) rp->url.port;

    /* then the system's resolver, here in the master; a name it does not
     * know (yet: a stopped compose container) is left to the workers,
     * through nginx's resolver, once init_main_conf knows if there is
     * one (ngx_http_togglemaster_redis_conf) */
    if (u.naddrs == 0 && ngx_inet_resolve_host(cf->pool, &u) != NGX_OK) {
        rp->unresolved = 1;
        ngx_log_debug2(NGX_LOG_DEBUG_CORE, cf->log, 0,
                       "togglemaster: redis \"%V\": %s at configuration "
                       "time", &tmcf->redis,
                       u.err ? u.err : "host not found");

    } else {
        rp->target.addrs = u.addrs;
        rp->target.naddrs = u.naddrs;
    }

    tmcf->redis_peer = rp;

    return NGX_CONF_OK;
}


/* With "resolver" at http level, a Redis host name is resolved again in
 * the workers, so a moved Redis is followed; without one, a name the
 * system did not know at start is an error. */
static char *
ngx_http_togglemaster_redis_resolver(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf,
    ngx_http_togglemaster_redis_peer_t *rp)
{
    ngx_uint_t  named;
#if (NGX_HAVE_INET6)
    u_char      buf[16];
#endif

    named = rp->url.unix_path[0] == '\0'
            && ngx_inet_addr(rp->host.data, rp->host.len) == INADDR_NONE;
#if (NGX_HAVE_INET6)
    named = named && ngx_inet6_addr(rp->host.data, rp->host.len, buf)
                     != NGX_OK;
#endif

    if (named
        && ngx_http_togglemaster_http_endpoint_resolver(cf, &rp->target,
                                                        &rp->host, rp->port))
    {
        if (rp->unresolved) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "redis \"%V\": host not found; the workers "
                               "resolve it through \"resolver\" and serve "
                               "the snapshot file meanwhile", &tmcf->redis);
        }

        return NGX_CONF_OK;
    }

    if (rp->unresolved) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no address for redis \"%V\": host not found "
                           "(a \"resolver\" at http level lets nginx start "
                           "and resolve it later)", &tmcf->redis);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


void
ngx_http_togglemaster_redis_start(ngx_http_togglemaster_main_conf_t *tmcf,
    ngx_log_t *log)
{
    ngx_http_togglemaster_redis_peer_t  *rp = tmcf->redis_peer;

    if (rp) {
        ngx_http_togglemaster_http_endpoint_start(&rp->target, log);
    }
}


void
ngx_http_togglemaster_redis_stop(ngx_http_togglemaster_main_conf_t *tmcf)
{
    ngx_http_togglemaster_redis_peer_t  *rp = tmcf->redis_peer;

    if (rp) {
        ngx_http_togglemaster_http_endpoint_stop(&rp->target);
    }
}


#if (NGX_SSL)

/* The TLS context: TLS 1.2+, the trusted certificates (else the system's
 * CAs); the server name is checked per connection. */
static char *
ngx_http_togglemaster_redis_ssl_conf(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf,
    ngx_http_togglemaster_redis_peer_t *rp)
{
    u_char              *p;
    ngx_str_t            name;
#if (NGX_HAVE_INET6)
    u_char               buf[16];
#endif

    if (tmcf->redis_ssl_name.len) {
        name = tmcf->redis_ssl_name;

    } else {
        name.data = (u_char *) rp->url.host;
        name.len = ngx_strlen(rp->url.host);
    }

    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "togglemaster_redis: TLS needs a server name");
        return NGX_CONF_ERROR;
    }

    rp->server_name.data = ngx_pnalloc(cf->pool, name.len + 1);
    if (rp->server_name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(rp->server_name.data, name.data, name.len);
    *p = '\0';
    rp->server_name.len = name.len;

    rp->server_ip = ngx_inet_addr(name.data, name.len) != INADDR_NONE;
#if (NGX_HAVE_INET6)
    rp->server_ip |= ngx_inet6_addr(name.data, name.len, buf) == NGX_OK;
#endif

    rp->ssl = ngx_http_togglemaster_ssl_create(cf);
    if (rp->ssl == NULL) {
        return NGX_CONF_ERROR;
    }

    if (tmcf->redis_ssl_ca.len == 0) {
        if (SSL_CTX_set_default_verify_paths(rp->ssl->ctx) != 1) {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "SSL_CTX_set_default_verify_paths() failed");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (ngx_ssl_trusted_certificate(cf, rp->ssl, &tmcf->redis_ssl_ca, 5)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}

#endif


char *
ngx_http_togglemaster_redis_conf(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf)
{
    ngx_http_togglemaster_redis_peer_t  *rp = tmcf->redis_peer;

    if (rp && ngx_http_togglemaster_redis_resolver(cf, tmcf, rp)
              != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (rp == NULL || !rp->url.tls) {
        if (tmcf->redis_ssl_ca.len || tmcf->redis_ssl_name.len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "togglemaster_redis_ssl_trusted_certificate "
                               "and togglemaster_redis_ssl_server_name need "
                               "a rediss:// togglemaster_redis");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

#if (NGX_SSL)
    return ngx_http_togglemaster_redis_ssl_conf(cf, tmcf, rp);
#else
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "togglemaster_redis \"%V\" needs nginx built with SSL",
                       &tmcf->redis);
    return NGX_CONF_ERROR;
#endif
}


/* ---- the connection's life ---------------------------------------------- */

static void
ngx_http_togglemaster_redis_free(ngx_http_togglemaster_redis_t *rc)
{
    ngx_pool_t        *pool;
    ngx_connection_t  *c = rc->c;

    if (c) {
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

    if (rc->reader) {
        redisReaderFree(rc->reader);
    }

    if (rc->out) {
        ngx_free(rc->out);
    }

    if (rc->pending) {
        ngx_free(rc->pending);
    }

    ngx_free(rc);
}


void
ngx_http_togglemaster_redis_close(ngx_http_togglemaster_redis_t *rc)
{
    if (rc->closed) {
        return;
    }

    rc->closed = 1;

    /* a handler of rc is on the stack: it frees rc as it returns */
    if (rc->running == 0) {
        ngx_http_togglemaster_redis_free(rc);
    }
}


static void
ngx_http_togglemaster_redis_leave(ngx_http_togglemaster_redis_t *rc)
{
    if (--rc->running == 0 && rc->closed) {
        ngx_http_togglemaster_redis_free(rc);
    }
}


/* Tells the user, once; the user closes rc. */
static void
ngx_http_togglemaster_redis_fail(ngx_http_togglemaster_redis_t *rc,
    const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    if (rc->failed || rc->closed) {
        return;
    }

    rc->failed = 1;

    va_start(args, fmt);
    p = ngx_vslprintf(rc->why, rc->why + sizeof(rc->why) - 1, fmt, args);
    va_end(args);
    *p = '\0';

    rc->error(rc, (const char *) rc->why);
}


/* ---- queueing commands -------------------------------------------------- */

static ngx_int_t
ngx_http_togglemaster_redis_append(ngx_http_togglemaster_redis_t *rc,
    const char *cmd, size_t len)
{
    u_char  *out;
    size_t   cap, left;

    left = rc->out_len - rc->out_sent;

    if (rc->out_len + len > rc->out_cap) {
        cap = ngx_max(ngx_max(rc->out_cap * 2, 1024), left + len);

        out = ngx_alloc(cap, rc->log);
        if (out == NULL) {
            return NGX_ERROR;
        }

        if (left) {
            ngx_memcpy(out, rc->out + rc->out_sent, left);
        }

        if (rc->out) {
            ngx_free(rc->out);
        }

        rc->out = out;
        rc->out_cap = cap;
        rc->out_len = left;
        rc->out_sent = 0;
    }

    ngx_memcpy(rc->out + rc->out_len, cmd, len);
    rc->out_len += len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_togglemaster_redis_expect(ngx_http_togglemaster_redis_t *rc,
    ngx_http_togglemaster_redis_reply_pt handler)
{
    ngx_uint_t                             i, cap;
    ngx_http_togglemaster_redis_reply_pt  *p;

    if (rc->npending == rc->cap) {
        cap = ngx_max(rc->cap * 2, 16);

        p = ngx_alloc(cap * sizeof(ngx_http_togglemaster_redis_reply_pt),
                      rc->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < rc->npending; i++) {
            p[i] = rc->pending[(rc->head + i) % rc->cap];
        }

        if (rc->pending) {
            ngx_free(rc->pending);
        }

        rc->pending = p;
        rc->cap = cap;
        rc->head = 0;
    }

    rc->pending[(rc->head + rc->npending) % rc->cap] = handler;
    rc->npending++;

    return NGX_OK;
}


/* cmd goes out from the event loop, after the caller has returned */
static ngx_int_t
ngx_http_togglemaster_redis_queue(ngx_http_togglemaster_redis_t *rc,
    ngx_uint_t expect, ngx_http_togglemaster_redis_reply_pt handler,
    const char *cmd, int len)
{
    if (rc->closed || rc->failed || len < 0) {
        return NGX_ERROR;
    }

    if (ngx_http_togglemaster_redis_append(rc, cmd, (size_t) len) != NGX_OK) {
        return NGX_ERROR;
    }

    if (expect && ngx_http_togglemaster_redis_expect(rc, handler) != NGX_OK) {
        return NGX_ERROR;
    }

    if (rc->ready && !rc->c->write->posted) {
        ngx_post_event(rc->c->write, &ngx_posted_events);
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_togglemaster_redis_command(ngx_http_togglemaster_redis_t *rc,
    ngx_http_togglemaster_redis_reply_pt handler, const char *fmt, ...)
{
    int        len;
    char      *cmd;
    va_list    args;
    ngx_int_t  rv;

    va_start(args, fmt);
    len = redisvFormatCommand(&cmd, fmt, args);
    va_end(args);

    if (len < 0) {
        return NGX_ERROR;
    }

    rv = ngx_http_togglemaster_redis_queue(rc, 1, handler, cmd, len);
    redisFreeCommand(cmd);

    return rv;
}


ngx_int_t
ngx_http_togglemaster_redis_subscribe(ngx_http_togglemaster_redis_t *rc,
    ngx_http_togglemaster_redis_reply_pt handler, const char *channel)
{
    int        len;
    char      *cmd;
    ngx_int_t  rv;

    len = redisFormatCommand(&cmd, "SUBSCRIBE %s", channel);
    if (len < 0) {
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "togglemaster: redis %V: SUBSCRIBE %s", rc->name, channel);

    /* no callback of its own: once the ones queued before it (AUTH,
     * SELECT) have their replies, every reply is the subscription's */
    rc->message = handler;

    rv = ngx_http_togglemaster_redis_queue(rc, 0, NULL, cmd, len);
    redisFreeCommand(cmd);

    return rv;
}


/* ---- AUTH, SELECT, CLUSTER INFO ----------------------------------------- */

static void
ngx_http_togglemaster_redis_authed(ngx_http_togglemaster_redis_t *rc,
    redisReply *r)
{
    tm_redis_url  *u = &rc->conf->url;

    if (r->type == REDIS_REPLY_ERROR) {
        ngx_http_togglemaster_redis_fail(rc, "AUTH%s%s failed: %s",
                                         u->user[0] ? " as " : "", u->user,
                                         r->str);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "togglemaster: redis %V: authenticated", rc->name);
}


static void
ngx_http_togglemaster_redis_selected(ngx_http_togglemaster_redis_t *rc,
    redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        ngx_http_togglemaster_redis_fail(rc, "SELECT %d failed: %s",
                                         rc->conf->url.db, r->str);
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "togglemaster: redis %V: database %d selected",
                   rc->name, rc->conf->url.db);
}


static void
ngx_http_togglemaster_redis_clustered(ngx_http_togglemaster_redis_t *rc,
    redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        ngx_http_togglemaster_redis_fail(rc, "\"cluster\" is set, but redis "
            "is not a cluster node (CLUSTER INFO: %s): remove \"cluster\" "
            "from togglemaster_redis (and REDIS_CLUSTER=1 from the daemons)",
            r->str);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "togglemaster: redis %V: a cluster node", rc->name);
}


/* The first commands, before anything the user queues. */
static ngx_int_t
ngx_http_togglemaster_redis_hello(ngx_http_togglemaster_redis_t *rc)
{
    int            len;
    char          *cmd;
    ngx_int_t      rv;
    tm_redis_url  *u = &rc->conf->url;

    if (u->password[0]) {
        if (u->user[0]) {
            len = redisFormatCommand(&cmd, "AUTH %s %s", u->user,
                                     u->password);
        } else {
            len = redisFormatCommand(&cmd, "AUTH %s", u->password);
        }

        if (len < 0) {
            return NGX_ERROR;
        }

        rv = ngx_http_togglemaster_redis_queue(rc, 1,
                 ngx_http_togglemaster_redis_authed, cmd, len);

        /* the password does not linger in freed memory */
        ngx_explicit_memzero(cmd, len);
        redisFreeCommand(cmd);

        if (rv != NGX_OK) {
            return NGX_ERROR;
        }
    }

    /* a mode that does not match the server fails here, clearly */
    if (rc->conf->cluster) {
        return ngx_http_togglemaster_redis_command(rc,
                   ngx_http_togglemaster_redis_clustered, "CLUSTER INFO");
    }

    if (u->db) {
        return ngx_http_togglemaster_redis_command(rc,
                   ngx_http_togglemaster_redis_selected, "SELECT %d", u->db);
    }

    return NGX_OK;
}


/* ---- replies ------------------------------------------------------------ */

/*
 * An error reply that concerns the connection, not the command: in cluster
 * mode a MOVED or an ASK (the slot of {tm} is served elsewhere: the user
 * asks ngx_http_togglemaster_redis_redirected where, and reconnects there;
 * a transaction's commands would all be refused here anyway); in
 * standalone mode any sign that Redis is a cluster, which the keys' names
 * cannot work with. NGX_ERROR once rc failed.
 */
static ngx_int_t
ngx_http_togglemaster_redis_cluster_error(ngx_http_togglemaster_redis_t *rc,
    redisReply *r)
{
    int                 n;
    tm_redis_redirect  *to = &rc->redirect;

    n = tm_redis_redirect_parse(r->str, r->len, to);

    if (!rc->conf->cluster) {
        if (n != 0 || ngx_strncmp(r->str, "CROSSSLOT", 9) == 0
            || ngx_strncmp(r->str, "CLUSTERDOWN", 11) == 0)
        {
            ngx_http_togglemaster_redis_fail(rc, "%s: redis is a Redis "
                "Cluster: add \"cluster\" to togglemaster_redis (and set "
                "REDIS_CLUSTER=1 for the daemons)", r->str);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (n == 0) {
        return NGX_OK;
    }

    if (n < 0) {
        ngx_http_togglemaster_redis_fail(rc, "a redirect that cannot be "
                                         "followed: %s", r->str);
        return NGX_ERROR;
    }

    rc->redirected = 1;

    ngx_http_togglemaster_redis_fail(rc, "%s slot %ui is at %s:%d",
                                     to->ask ? "ASK:" : "MOVED:",
                                     (ngx_uint_t) to->slot,
                                     to->host[0] ? to->host : "(same host)",
                                     to->port);
    return NGX_ERROR;
}


ngx_int_t
ngx_http_togglemaster_redis_redirected(ngx_http_togglemaster_redis_t *rc,
    ngx_http_togglemaster_redis_node_t *node)
{
    size_t               len;
    in_addr_t            in;
    tm_redis_redirect   *to = &rc->redirect;
    struct sockaddr_in  *sin;
#if (NGX_HAVE_INET6)
    struct in6_addr      in6;
    struct sockaddr_in6 *sin6;
#endif

    if (!rc->redirected) {
        return NGX_DECLINED;
    }

    ngx_memzero(node, sizeof(ngx_http_togglemaster_redis_node_t));
    node->ask = to->ask;
    node->slot = to->slot;

    len = ngx_strlen(to->host);

    if (len == 0) {
        /* ":port": the host this connection went to */
        ngx_memcpy(&node->sockaddr, &rc->peer_sockaddr, rc->peer.socklen);
        node->socklen = rc->peer.socklen;

        if (node->sockaddr.sockaddr.sa_family != AF_INET
#if (NGX_HAVE_INET6)
            && node->sockaddr.sockaddr.sa_family != AF_INET6
#endif
           )
        {
            return NGX_ERROR;
        }

        ngx_inet_set_port(&node->sockaddr.sockaddr, (in_port_t) to->port);
        goto named;
    }

    /* an IP address only: a name would need the resolver, and the
     * clusters announce addresses unless told otherwise */
    in = ngx_inet_addr((u_char *) to->host, len);

    if (in != INADDR_NONE) {
        sin = &node->sockaddr.sockaddr_in;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = in;
        sin->sin_port = htons((in_port_t) to->port);
        node->socklen = sizeof(struct sockaddr_in);
        goto named;
    }

#if (NGX_HAVE_INET6)
    if (ngx_inet6_addr((u_char *) to->host, len, in6.s6_addr) == NGX_OK) {
        sin6 = &node->sockaddr.sockaddr_in6;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = in6;
        sin6->sin6_port = htons((in_port_t) to->port);
        node->socklen = sizeof(struct sockaddr_in6);
        goto named;
    }
#endif

    return NGX_ERROR;

named:

    node->name.data = node->text;
    node->name.len = ngx_sock_ntop(&node->sockaddr.sockaddr, node->socklen,
                                   node->text, NGX_SOCKADDR_STRLEN, 1);
    return NGX_OK;
}


/* Hands every complete reply to its callback; NGX_ERROR once rc failed or
 * was closed. */
static ngx_int_t
ngx_http_togglemaster_redis_dispatch(ngx_http_togglemaster_redis_t *rc)
{
    void                                  *reply;
    ngx_http_togglemaster_redis_reply_pt   handler;

    for ( ;; ) {
        reply = NULL;

        if (redisReaderGetReply(rc->reader, &reply) != REDIS_OK) {
            ngx_http_togglemaster_redis_fail(rc, "protocol error: %s",
                                             rc->reader->errstr);
            return NGX_ERROR;
        }

        if (reply == NULL) {
            return NGX_OK;
        }

        if (((redisReply *) reply)->type == REDIS_REPLY_ERROR
            && ngx_http_togglemaster_redis_cluster_error(rc, reply)
               != NGX_OK)
        {
            freeReplyObject(reply);
            return NGX_ERROR;
        }

        if (rc->npending) {
            handler = rc->pending[rc->head];
            rc->head = (rc->head + 1) % rc->cap;
            rc->npending--;

        } else if (rc->message) {
            handler = rc->message;

        } else {
            freeReplyObject(reply);
            ngx_http_togglemaster_redis_fail(rc, "a reply nobody asked for");
            return NGX_ERROR;
        }

        if (handler) {
            handler(rc, reply);
        }

        freeReplyObject(reply);

        if (rc->failed || rc->closed) {
            return NGX_ERROR;
        }
    }
}


static void
ngx_http_togglemaster_redis_read(ngx_event_t *rev)
{
    ssize_t                         n;
    ngx_uint_t                      i;
    ngx_connection_t               *c = rev->data;
    ngx_http_togglemaster_redis_t  *rc = c->data;

    static u_char  buf[NGX_HTTP_TOGGLEMASTER_REDIS_CHUNK];

    rc->running++;

    if (!rc->connected) {
        /* a refused connect may be reported as readable */
        ngx_http_togglemaster_redis_send(rc);
        goto done;
    }

    for (i = 0; i < NGX_HTTP_TOGGLEMASTER_REDIS_BURST; i++) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_togglemaster_redis_fail(rc, "event error");
            }

            goto done;
        }

        if (n == 0) {
            ngx_http_togglemaster_redis_fail(rc, "redis closed the "
                                             "connection");
            goto done;
        }

        if (n == NGX_ERROR) {
            ngx_http_togglemaster_redis_fail(rc, "recv() failed");
            goto done;
        }

        if (redisReaderFeed(rc->reader, (char *) buf, n) != REDIS_OK) {
            ngx_http_togglemaster_redis_fail(rc, "out of memory");
            goto done;
        }

        if (ngx_http_togglemaster_redis_dispatch(rc) != NGX_OK) {
            goto done;
        }
    }

    /* more may be waiting, in the socket or inside TLS where no event
     * would announce it: after this turn's requests */
    ngx_post_event(rev, &ngx_posted_events);

done:

    ngx_http_togglemaster_redis_leave(rc);
}


/* ---- connecting, TLS, sending ------------------------------------------- */

#if (NGX_SSL)

static void
ngx_http_togglemaster_redis_handshaked(ngx_connection_t *c)
{
    long                            v;
    X509                           *cert;
    ngx_http_togglemaster_redis_t  *rc = c->data;

    rc->running++;

    if (!c->ssl->handshaked) {
        ngx_http_togglemaster_redis_fail(rc, "TLS handshake failed");
        goto done;
    }

    cert = SSL_get_peer_certificate(c->ssl->connection);
    if (cert == NULL) {
        ngx_http_togglemaster_redis_fail(rc, "TLS: no server certificate");
        goto done;
    }

    X509_free(cert);

    /* the chain and the name (set below) as OpenSSL verified them */
    v = SSL_get_verify_result(c->ssl->connection);

    if (v != X509_V_OK) {
        ngx_http_togglemaster_redis_fail(rc, "TLS: certificate not trusted "
                                         "for \"%V\": (%l: %s)",
                                         &rc->conf->server_name, v,
                                         X509_verify_cert_error_string(v));
        goto done;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "togglemaster: redis %V: TLS with \"%V\" verified",
                   rc->name, &rc->conf->server_name);

    rc->ready = 1;
    c->read->handler = ngx_http_togglemaster_redis_read;
    c->write->handler = ngx_http_togglemaster_redis_write;

    ngx_http_togglemaster_redis_send(rc);

done:

    ngx_http_togglemaster_redis_leave(rc);
}


static void
ngx_http_togglemaster_redis_ssl(ngx_http_togglemaster_redis_t *rc)
{
    int                                  ok;
    ngx_int_t                            n;
    ngx_connection_t                    *c = rc->c;
    X509_VERIFY_PARAM                   *param;
    ngx_http_togglemaster_redis_peer_t  *rp = rc->conf;

    if (ngx_ssl_create_connection(rp->ssl, c, NGX_SSL_CLIENT) != NGX_OK) {
        ngx_http_togglemaster_redis_fail(rc, "cannot start TLS");
        return;
    }

    /* OpenSSL checks the name with the chain; the result is read once
     * the handshake is done */
    param = SSL_get0_param(c->ssl->connection);

    if (rp->server_ip) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(param,
                                           (char *) rp->server_name.data);

    } else {
        ok = SSL_set_tlsext_host_name(c->ssl->connection,
                                      (char *) rp->server_name.data)
             && X509_VERIFY_PARAM_set1_host(param,
                                            (char *) rp->server_name.data,
                                            rp->server_name.len);
    }

    if (!ok) {
        ngx_http_togglemaster_redis_fail(rc, "TLS: cannot use the server "
                                         "name \"%V\"", &rp->server_name);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                   "togglemaster: redis %V: TLS handshake", rc->name);

    n = ngx_ssl_handshake(c);

    if (n == NGX_AGAIN) {
        c->ssl->handler = ngx_http_togglemaster_redis_handshaked;
        return;
    }

    ngx_http_togglemaster_redis_handshaked(c);
}

#endif


/* The connect's outcome, then TLS, then whatever is queued. */
static void
ngx_http_togglemaster_redis_send(ngx_http_togglemaster_redis_t *rc)
{
    int                err;
    ssize_t            n;
    socklen_t          len;
    ngx_connection_t  *c = rc->c;

    if (!rc->connected) {
        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
            == -1)
        {
            err = ngx_socket_errno;
        }

        if (err) {
            ngx_http_togglemaster_redis_fail(rc, "connect() to %V failed "
                                             "(%d: %s)", rc->peer.name, err,
                                             strerror(err));
            return;
        }

        rc->connected = 1;

        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rc->log, 0,
                       "togglemaster: redis %V: connected", rc->name);

        /* small pipelined commands go out at once, as hiredis had them */
        if (c->type == SOCK_STREAM && rc->peer.sockaddr->sa_family
                                      != AF_UNIX
            && ngx_tcp_nodelay(c) != NGX_OK)
        {
            ngx_http_togglemaster_redis_fail(rc, "setsockopt(TCP_NODELAY) "
                                             "failed");
            return;
        }

#if (NGX_SSL)
        if (rc->conf->ssl) {
            ngx_http_togglemaster_redis_ssl(rc);
            return;
        }
#endif

        rc->ready = 1;
    }

    if (!rc->ready) {
        return;
    }

    while (rc->out_sent < rc->out_len) {
        n = c->send(c, rc->out + rc->out_sent, rc->out_len - rc->out_sent);

        if (n == NGX_ERROR) {
            ngx_http_togglemaster_redis_fail(rc, "send() failed");
            return;
        }

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                ngx_http_togglemaster_redis_fail(rc, "event error");
            }

            return;
        }

        rc->out_sent += n;
    }

    rc->out_sent = 0;
    rc->out_len = 0;
}


static void
ngx_http_togglemaster_redis_write(ngx_event_t *wev)
{
    ngx_connection_t               *c = wev->data;
    ngx_http_togglemaster_redis_t  *rc = c->data;

    rc->running++;
    ngx_http_togglemaster_redis_send(rc);
    ngx_http_togglemaster_redis_leave(rc);
}


ngx_http_togglemaster_redis_t *
ngx_http_togglemaster_redis_connect(ngx_http_togglemaster_main_conf_t *tmcf,
    ngx_log_t *log, ngx_http_togglemaster_redis_error_pt error,
    ngx_http_togglemaster_redis_node_t *node)
{
    ngx_addr_t                           target;
    ngx_int_t                            n;
    ngx_addr_t                          *addr;
    ngx_connection_t                    *c;
    ngx_http_togglemaster_redis_t       *rc;
    ngx_http_togglemaster_redis_peer_t  *rp = tmcf->redis_peer;

    rc = ngx_calloc(sizeof(ngx_http_togglemaster_redis_t), log);
    if (rc == NULL) {
        return NULL;
    }

    rc->conf = rp;
    rc->name = &tmcf->redis;
    rc->log = log;
    rc->error = error;

    rc->reader = redisReaderCreate();
    if (rc->reader == NULL) {
        ngx_http_togglemaster_redis_free(rc);
        return NULL;
    }

    /* the resolver logs its failures (warn); this is each retry */
    if (node == NULL && rp->target.naddrs == 0) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "togglemaster: redis %V: host not resolved yet",
                      rc->name);
        ngx_http_togglemaster_redis_free(rc);
        return NULL;
    }

    addr = &rp->target.addrs[0];

    if (node) {
        target.sockaddr = &node->sockaddr.sockaddr;
        target.socklen = node->socklen;
        target.name = node->name;
        addr = &target;
    }

    ngx_memcpy(&rc->peer_sockaddr, addr->sockaddr, addr->socklen);
    rc->peer_name.len = ngx_min(addr->name.len, NGX_SOCKADDR_STRLEN);
    rc->peer_name.data = rc->peer_text;
    ngx_memcpy(rc->peer_text, addr->name.data, rc->peer_name.len);

    rc->peer.sockaddr = &rc->peer_sockaddr.sockaddr;
    rc->peer.socklen = addr->socklen;
    rc->peer.name = &rc->peer_name;
    rc->peer.get = ngx_event_get_peer;
    rc->peer.log = log;
    rc->peer.log_error = NGX_ERROR_ERR;
    rc->peer.tries = 1;

    /* a refused connect is logged here, with its reason */
    n = ngx_event_connect_peer(&rc->peer);

    if (n == NGX_ERROR || n == NGX_BUSY || n == NGX_DECLINED) {
        if (rc->peer.connection) {
            ngx_close_connection(rc->peer.connection);
        }

        ngx_http_togglemaster_redis_free(rc);
        return NULL;
    }

    c = rc->peer.connection;
    rc->c = c;

    c->data = rc;
    c->read->handler = ngx_http_togglemaster_redis_read;
    c->write->handler = ngx_http_togglemaster_redis_write;

    c->pool = ngx_create_pool(1024, log);
    if (c->pool == NULL || ngx_http_togglemaster_redis_hello(rc) != NGX_OK) {
        ngx_http_togglemaster_redis_free(rc);
        return NULL;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, log, 0,
                   "togglemaster: redis %V: connecting to %V", rc->name,
                   rc->peer.name);

    if (n == NGX_OK) {
        /* connected at once (loopback): carry on from the event loop */
        ngx_post_event(c->write, &ngx_posted_events);
    }

    return rc;
}
