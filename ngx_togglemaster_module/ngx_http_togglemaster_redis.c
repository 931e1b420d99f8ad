/*
 * A hiredis async adapter on nginx's event loop: the hiredis socket gets an
 * ngx_connection_t, hiredis's add/del read/write hooks become level-triggered
 * nginx events (hiredis reads at most 16 KiB per call, so edge-triggered
 * events could strand buffered data). Timeouts live in the sync code, as
 * nginx timers: hiredis 0.14 has none.
 */

#include "ngx_http_togglemaster_module.h"
#include "ngx_http_togglemaster_redis.h"

#include <sys/ioctl.h>


/* hiredis reads at most 16 KiB per call; a big HGETALL would take one
 * event-loop turn per 16 KiB. Drain up to this much per read event, which
 * still lets requests in between. */
#define NGX_HTTP_TOGGLEMASTER_READ_BURST  64


typedef struct {
    redisAsyncContext  *ac;
    ngx_connection_t   *c;
    ngx_uint_t         *alive;     /* cleared when hiredis frees us */
} ngx_http_togglemaster_redis_ev_t;


static void
ngx_http_togglemaster_redis_read(ngx_event_t *ev)
{
    int                                n;
    ngx_uint_t                         i, alive;
    ngx_connection_t                  *c = ev->data;
    ngx_http_togglemaster_redis_ev_t  *e = c->data;

    for (i = 0; i < NGX_HTTP_TOGGLEMASTER_READ_BURST; i++) {
        alive = 1;
        e->alive = &alive;

        /* may free the context and e */
        redisAsyncHandleRead(e->ac);

        if (!alive) {
            return;
        }

        e->alive = NULL;

        if (ioctl(c->fd, FIONREAD, &n) == -1 || n <= 0) {
            return;
        }
    }
}


static void
ngx_http_togglemaster_redis_write(ngx_event_t *ev)
{
    ngx_connection_t                  *c = ev->data;
    ngx_http_togglemaster_redis_ev_t  *e = c->data;

    redisAsyncHandleWrite(e->ac);
}


static void
ngx_http_togglemaster_redis_add(ngx_event_t *ev, ngx_int_t event)
{
    if (!ev->active) {
        if (ngx_add_event(ev, event, NGX_LEVEL_EVENT) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                          "togglemaster: cannot watch the redis socket");
        }
    }
}


static void
ngx_http_togglemaster_redis_del(ngx_event_t *ev, ngx_int_t event)
{
    if (ev->active) {
        (void) ngx_del_event(ev, event, 0);
    }

    if (ev->posted) {
        ngx_delete_posted_event(ev);
    }
}


static void
ngx_http_togglemaster_redis_add_read(void *data)
{
    ngx_http_togglemaster_redis_ev_t *e = data;

    ngx_http_togglemaster_redis_add(e->c->read, NGX_READ_EVENT);
}


static void
ngx_http_togglemaster_redis_del_read(void *data)
{
    ngx_http_togglemaster_redis_ev_t *e = data;

    ngx_http_togglemaster_redis_del(e->c->read, NGX_READ_EVENT);
}


static void
ngx_http_togglemaster_redis_add_write(void *data)
{
    ngx_http_togglemaster_redis_ev_t *e = data;

    ngx_http_togglemaster_redis_add(e->c->write, NGX_WRITE_EVENT);
}


static void
ngx_http_togglemaster_redis_del_write(void *data)
{
    ngx_http_togglemaster_redis_ev_t *e = data;

    ngx_http_togglemaster_redis_del(e->c->write, NGX_WRITE_EVENT);
}


/* Called by hiredis before it closes the socket. */
static void
ngx_http_togglemaster_redis_cleanup(void *data)
{
    ngx_http_togglemaster_redis_ev_t *e = data;

    ngx_connection_t  *c;

    c = e->c;

    if (e->alive) {
        *e->alive = 0;
    }

    ngx_http_togglemaster_redis_del(c->read, NGX_READ_EVENT);
    ngx_http_togglemaster_redis_del(c->write, NGX_WRITE_EVENT);

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;   /* hiredis owns and closes the fd */

    /* hiredis 0.14 may call the hooks again while it tears down */
    e->ac->ev.data = NULL;
    e->ac->ev.addRead = NULL;
    e->ac->ev.delRead = NULL;
    e->ac->ev.addWrite = NULL;
    e->ac->ev.delWrite = NULL;
    e->ac->ev.cleanup = NULL;

    ngx_free(e);
}


redisAsyncContext *
ngx_http_togglemaster_redis_connect(ngx_http_togglemaster_main_conf_t *tmcf,
    ngx_log_t *log)
{
    ngx_connection_t                  *c;
    redisAsyncContext                 *ac;
    ngx_http_togglemaster_redis_ev_t  *e;

    /* redis_host is numeric (resolved at configuration time), so hiredis's
     * own getaddrinfo() only parses it and never does a lookup */
    if (tmcf->redis_unix.len) {
        ac = redisAsyncConnectUnix((char *) tmcf->redis_unix.data);

    } else {
        ac = redisAsyncConnect((char *) tmcf->redis_host.data,
                               (int) tmcf->redis_port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "togglemaster: out of memory connecting to redis");
        return NULL;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "togglemaster: redis %V: %s", &tmcf->redis, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }

    e = ngx_calloc(sizeof(ngx_http_togglemaster_redis_ev_t), log);
    if (e == NULL) {
        redisAsyncFree(ac);
        return NULL;
    }

    c = ngx_get_connection(ac->c.fd, log);
    if (c == NULL) {
        ngx_free(e);
        redisAsyncFree(ac);
        return NULL;
    }

    c->data = e;
    c->log = log;
    c->read->log = log;
    c->write->log = log;
    c->read->handler = ngx_http_togglemaster_redis_read;
    c->write->handler = ngx_http_togglemaster_redis_write;

    e->ac = ac;
    e->c = c;

    ac->ev.data = e;
    ac->ev.addRead = ngx_http_togglemaster_redis_add_read;
    ac->ev.delRead = ngx_http_togglemaster_redis_del_read;
    ac->ev.addWrite = ngx_http_togglemaster_redis_add_write;
    ac->ev.delWrite = ngx_http_togglemaster_redis_del_write;
    ac->ev.cleanup = ngx_http_togglemaster_redis_cleanup;

    /* hiredis learns that the non-blocking connect finished from the first
     * writable event */
    ngx_http_togglemaster_redis_add_write(e);

    return ac;
}
