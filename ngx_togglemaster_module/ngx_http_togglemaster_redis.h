/*
 * A Redis connection on nginx's event loop: nginx connects
 * (ngx_event_connect_peer) and, for rediss://, does TLS (ngx_ssl, the
 * certificate and server name checked); hiredis only formats commands and
 * parses replies (its reader). AUTH and SELECT from the URL go first, so
 * the user's commands run as the URL's user in the URL's database (with
 * "cluster": CLUSTER INFO instead of SELECT, which fails on a Redis that
 * is not a cluster node).
 *
 * Commands are queued and sent from a posted event, and every callback
 * runs from an event handler, never from inside a call made by the user:
 * a callback may close the connection (its own or another).
 */

#ifndef NGX_HTTP_TOGGLEMASTER_REDIS_H
#define NGX_HTTP_TOGGLEMASTER_REDIS_H

#include <hiredis/hiredis.h>

#include "ngx_http_togglemaster_module.h"


typedef struct ngx_http_togglemaster_redis_s  ngx_http_togglemaster_redis_t;

/* One reply, in the order the commands were queued; it is freed after the
 * callback returns. */
typedef void (*ngx_http_togglemaster_redis_reply_pt)(
    ngx_http_togglemaster_redis_t *rc, redisReply *r);

/* The connection failed (connect, TLS, AUTH, SELECT, I/O, protocol): why,
 * in words for the log. Called once; no reply callback follows. The user
 * closes rc. */
typedef void (*ngx_http_togglemaster_redis_error_pt)(
    ngx_http_togglemaster_redis_t *rc, const char *why);


/* In a worker: keep the Redis host's addresses current through nginx's
 * resolver when there is one (see ngx_http_togglemaster_redis_conf); and
 * stop. */
void ngx_http_togglemaster_redis_start(
    ngx_http_togglemaster_main_conf_t *tmcf, ngx_log_t *log);
void ngx_http_togglemaster_redis_stop(
    ngx_http_togglemaster_main_conf_t *tmcf);

/* A node of a Redis Cluster that a redirect named. */
typedef struct {
    ngx_sockaddr_t                         sockaddr;
    socklen_t                              socklen;
    ngx_str_t                              name;         /* for the log */
    u_char                                 text[NGX_SOCKADDR_STRLEN];
    ngx_uint_t                             slot;
    unsigned                               ask:1;
} ngx_http_togglemaster_redis_node_t;


/* A connection to togglemaster_redis (its first address), or to node (a
 * cluster's node, with the URL's user, password and TLS server name);
 * NULL (logged) if it cannot start. */
ngx_http_togglemaster_redis_t *ngx_http_togglemaster_redis_connect(
    ngx_http_togglemaster_main_conf_t *tmcf, ngx_log_t *log,
    ngx_http_togglemaster_redis_error_pt error,
    ngx_http_togglemaster_redis_node_t *node);

/* From the error callback: with "togglemaster_redis ... cluster", rc failed
 * because a reply was a MOVED or an ASK (the slot of the {tm} keys lives
 * on another node; the user reconnects there). NGX_OK with *node filled;
 * NGX_DECLINED if rc failed for another reason; NGX_ERROR if the node is
 * named by a host name (not followed: it would need a lookup). Without
 * "cluster", a MOVED, ASK or CROSSSLOT fails rc with a reason that says to
 * set it. */
ngx_int_t ngx_http_togglemaster_redis_redirected(
    ngx_http_togglemaster_redis_t *rc,
    ngx_http_togglemaster_redis_node_t *node);

/* Queues a command (hiredis's format: "HGET %s %b"); handler may be NULL
 * to ignore the reply. NGX_OK or NGX_ERROR (out of memory, closed). */
ngx_int_t ngx_http_togglemaster_redis_command(
    ngx_http_togglemaster_redis_t *rc,
    ngx_http_togglemaster_redis_reply_pt handler, const char *fmt, ...);

/* SUBSCRIBE channel: its confirmation and every message that follows go to
 * handler. */
ngx_int_t ngx_http_togglemaster_redis_subscribe(
    ngx_http_togglemaster_redis_t *rc,
    ngx_http_togglemaster_redis_reply_pt handler, const char *channel);

/* Closes and frees (later, if a callback of rc is running). */
void ngx_http_togglemaster_redis_close(ngx_http_togglemaster_redis_t *rc);

#endif /* NGX_HTTP_TOGGLEMASTER_REDIS_H */
