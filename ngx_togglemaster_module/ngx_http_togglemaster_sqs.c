/*
 * SQS SendMessageBatch (JSON protocol) from an nginx worker: one HTTP/1.1
 * connection per worker on nginx's event loop (http.c), kept alive
 * between requests, TLS for https endpoints. Signed with lib's SigV4
 * (tm_aws_json_request); replies parsed by lib (tm_sqs_parse_batch_result,
 * tm_aws_parse_error). The endpoint is resolved at configuration time, in
 * the master: a worker never calls getaddrinfo().
 *
 * One request at a time; events.c decides what goes and what a failure
 * means for its messages.
 */

#include "ngx_http_togglemaster_module.h"
#include "ngx_http_togglemaster_creds.h"
#include "ngx_http_togglemaster_http.h"
#include "tm_aws.h"

#include <stdlib.h>


#define NGX_HTTP_TOGGLEMASTER_SQS_REPLY_MIN  16384
#define NGX_HTTP_TOGGLEMASTER_SQS_REPLY_MAX  (1024 * 1024)
#define NGX_HTTP_TOGGLEMASTER_SQS_IDLE       30000


typedef struct {
    ngx_str_t                    queue_url;   /* NUL-terminated */
    tm_aws_endpoint              ep;
    void                        *creds;       /* creds.c's configuration */
    ngx_http_togglemaster_http_endpoint_t
                                 target;
} ngx_http_togglemaster_sqs_conf_t;


typedef struct {
    ngx_http_togglemaster_sqs_conf_t  *conf;
    ngx_log_t                         *log;

    ngx_http_togglemaster_http_t       http;

    ngx_http_togglemaster_msg_t       *msgs[TM_SQS_MAX_BATCH];
    ngx_uint_t                         nmsgs;

    u_char                            *out;
    size_t                             out_len;

    unsigned                           busy:1;
} ngx_http_togglemaster_sqs_t;


static ngx_http_togglemaster_sqs_t  ngx_http_togglemaster_sqs;


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
    char                              *v, err[256], region[64];
    ngx_str_t                          s;
    ngx_http_togglemaster_sqs_conf_t  *sc;

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

    sc->target.name = "SQS";

    return ngx_http_togglemaster_http_endpoint(cf, tmcf, "SQS endpoint",
                                               sc->ep.url, sc->ep.host, 0,
                                               &sc->target);
}


/* ---- the request ------------------------------------------------------- */

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
ngx_http_togglemaster_sqs_reply(ngx_http_togglemaster_sqs_t *s,
    ngx_http_togglemaster_http_reply_t *r)
{
    char                  err[128];
    char                  ecode[NGX_HTTP_TOGGLEMASTER_LOG_ESC_LEN];
    char                  emsg[NGX_HTTP_TOGGLEMASTER_LOG_ESC_LEN];
    ngx_int_t             rc;
    ngx_uint_t            i, k, idx, sender;
    tm_aws_error          e;
    tm_sqs_batch_result  *br;

    if (r->status != 200) {
        tm_aws_parse_error((long) r->status, (char *) r->body, r->len,
                           r->query_error[0] ? r->query_error : NULL, &e);
        ngx_http_togglemaster_sqs_error(NGX_HTTP_TOGGLEMASTER_SQS_ERR_HTTP);

        /* the code and message are the peer's text */
        tm_log_escape(ecode, sizeof(ecode), e.code, ngx_strlen(e.code));
        tm_log_escape(emsg, sizeof(emsg), e.message, ngx_strlen(e.message));
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "togglemaster: SQS SendMessageBatch: HTTP %ui %s: %s; "
                      "will retry", r->status, ecode, emsg);

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
            tm_log_escape(ecode, sizeof(ecode), br->failed[i].code,
                          ngx_strlen(br->failed[i].code));
            tm_log_escape(emsg, sizeof(emsg), br->failed[i].message,
                          ngx_strlen(br->failed[i].message));
            ngx_log_error(NGX_LOG_WARN, s->log, 0,
                          "togglemaster: SQS refused a message of events: "
                          "%s: %s; %s", ecode, emsg,
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


/* The end of a request (http.c): the connection is idle or closed by now,
 * and a kept-alive one found closed was retried on a new one already. */
static void
ngx_http_togglemaster_sqs_handler(ngx_http_togglemaster_http_t *h,
    ngx_uint_t err, const char *why, ngx_http_togglemaster_http_reply_t *r)
{
    ngx_uint_t                    i, n, kind;
    ngx_http_togglemaster_sqs_t  *s = h->data;

    if (err == NGX_HTTP_TOGGLEMASTER_HTTP_OK) {
        ngx_http_togglemaster_sqs_reply(s, r);
        return;
    }

    switch (err) {
    case NGX_HTTP_TOGGLEMASTER_HTTP_TIMEOUT:
        kind = NGX_HTTP_TOGGLEMASTER_SQS_ERR_TIMEOUT;
        break;
    case NGX_HTTP_TOGGLEMASTER_HTTP_REPLY:
        kind = NGX_HTTP_TOGGLEMASTER_SQS_ERR_REPLY;
        break;
    default:
        kind = NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT;
    }

    ngx_http_togglemaster_sqs_error(kind);

    for (n = 0, i = 0; i < s->nmsgs; i++) {
        n += s->msgs[i]->nevents;
    }

    ngx_log_error(NGX_LOG_WARN, s->log, 0,
                  "togglemaster: SQS SendMessageBatch to %V: %s; %ui "
                  "evaluation events will be retried", h->peer.name, why, n);

    ngx_http_togglemaster_sqs_finish(s, NGX_ERROR);
}


/* nginx closed the idle connection: a graceful stop closes idle
 * connections first, the earliest word of it a module gets, so the flush
 * starts now */
static void
ngx_http_togglemaster_sqs_closed(ngx_http_togglemaster_http_t *h)
{
    if (ngx_exiting || ngx_quit) {
        ngx_http_togglemaster_events_wake();
    }
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

    tm_aws_request_free(&req);

    ngx_memcpy(s->msgs, msgs, n * sizeof(ngx_http_togglemaster_msg_t *));
    s->nmsgs = n;
    s->busy = 1;

    if (ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(
                   &ngx_http_togglemaster_shm->events.requests, 1);
    }

    if (ngx_http_togglemaster_http_start(&s->http, s->out, s->out_len, timeout)
        != NGX_OK)
    {
        ngx_http_togglemaster_sqs_error(NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT);
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

    s->http.ep = &s->conf->target;
    s->http.log = cycle->log;
    s->http.done = ngx_http_togglemaster_sqs_handler;
    s->http.closed = ngx_http_togglemaster_sqs_closed;
    s->http.data = s;
    s->http.addr = ngx_worker;   /* workers spread over the addresses */
    s->http.in_size = NGX_HTTP_TOGGLEMASTER_SQS_REPLY_MIN;
    s->http.in_max = NGX_HTTP_TOGGLEMASTER_SQS_REPLY_MAX;
    s->http.idle = NGX_HTTP_TOGGLEMASTER_SQS_IDLE;
    s->http.keepalive = 1;

    ngx_http_togglemaster_http_endpoint_start(&s->conf->target, cycle->log);

    ngx_http_togglemaster_creds_init(cycle, s->conf->creds);
}


/* Closes the connection; messages in flight go back to events.c as not
 * attempted. */
void
ngx_http_togglemaster_sqs_close(void)
{
    ngx_http_togglemaster_sqs_t  *s = &ngx_http_togglemaster_sqs;

    ngx_http_togglemaster_http_abort(&s->http);

    if (s->busy) {
        ngx_http_togglemaster_sqs_finish(s, NGX_DECLINED);
    }

    ngx_http_togglemaster_http_free(&s->http);
    ngx_http_togglemaster_http_endpoint_stop(&s->conf->target);
}
