#include "tm_http.h"
#include "tm_bodies.h"
#include "tm_log.h"
#include "tm_names.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#if MHD_VERSION < 0x00097002
typedef int MHD_Result_t;
#else
typedef enum MHD_Result MHD_Result_t;
#endif

struct tm_http {
    struct MHD_Daemon *mhd;
    tm_http_config cfg;
};

/* Per-request state kept across libmicrohttpd's upload callbacks. */
typedef struct {
    struct timespec start;
    char *body;
    size_t len;
    int too_large;
} req_state;

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double) (t1.tv_sec - t0->tv_sec) * 1e3 + (double) (t1.tv_nsec - t0->tv_nsec) / 1e6;
}

const char *tm_req_header(const tm_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *tm_req_query(const tm_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *tm_req_bearer(const tm_req *req, size_t *len)
{
    const char *h = tm_req_header(req, "Authorization");
    if (h == NULL) {
        return NULL;
    }
    while (*h == ' ') h++;
    if (strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        while (*h == ' ') h++;
    }
    size_t n = strlen(h);
    while (n && h[n - 1] == ' ') n--;
    if (n == 0) {
        return NULL;
    }
    *len = n;
    return h;
}

void tm_resp_raw(tm_resp *resp, int status, const char *json_text)
{
    free(resp->body);
    resp->status = status;
    resp->body = strdup(json_text);
    resp->body_len = resp->body ? strlen(resp->body) : 0;
    resp->content_type = "application/json";
    if (resp->body == NULL) {
        resp->status = 500;
    }
}

void tm_resp_json(tm_resp *resp, int status, json_t *json)
{
    char *text = json ? json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(json);
    free(resp->body);
    resp->status = text ? status : 500;
    resp->body = text;
    resp->body_len = text ? strlen(text) : 0;
    resp->content_type = "application/json";
}

void tm_resp_error(tm_resp *resp, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* A message quoting client input may have been cut inside a UTF-8
     * sequence (or quote bad bytes): JSON needs valid UTF-8. */
    if (!tm_text_valid(msg, strlen(msg))) {
        for (unsigned char *p = (unsigned char *) msg; *p; p++) {
            if (*p < 0x20 || *p >= 0x7f) *p = '?';
        }
    }
    tm_resp_json(resp, status, json_pack("{s:s}", "error", msg));
}

void tm_resp_empty(tm_resp *resp, int status)
{
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    resp->status = status;
}

void tm_resp_text(tm_resp *resp, int status, const char *content_type, char *text)
{
    free(resp->body);
    resp->status = text ? status : 500;
    resp->body = text;
    resp->body_len = text ? strlen(text) : 0;
    resp->content_type = content_type;
}

json_t *tm_req_json_object(const tm_req *req, tm_resp *resp)
{
    char err[256];
    json_t *j = tm_body_parse(req->body, req->body_len, err, sizeof err);
    if (j == NULL) {
        tm_resp_error(resp, 400, "%s", err);
    }
    return j;
}

static MHD_Result_t send_resp(struct MHD_Connection *conn, tm_resp *r)
{
    struct MHD_Response *mr;
    if (r->body) {
        mr = MHD_create_response_from_buffer(r->body_len, r->body, MHD_RESPMEM_MUST_FREE);
        if (mr) {
            r->body = NULL;   /* now owned by libmicrohttpd */
        }
    } else {
        mr = MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT);
    }
    if (mr == NULL) {
        return MHD_NO;
    }
    if (r->status != 204 && r->status != 304) {
        MHD_add_response_header(mr, "Content-Type",
                                r->content_type ? r->content_type : "application/json");
    }
    if (r->extra_header_name && r->extra_header_value) {
        MHD_add_response_header(mr, r->extra_header_name, r->extra_header_value);
    }
    /* A 503 is a dependency that is away for now (database unreachable, its
     * host not resolved yet, Redis down): clients (tmctl, the gateway) may
     * retry, and this says when. */
    if (r->status == 503 && !(r->extra_header_name
                              && strcasecmp(r->extra_header_name, "Retry-After") == 0)) {
        MHD_add_response_header(mr, "Retry-After", "1");
    }
    MHD_Result_t rc = MHD_queue_response(conn, (unsigned) r->status, mr);
    MHD_destroy_response(mr);
    return rc;
}

static void health(struct tm_http *srv, const char *path, tm_resp *resp)
{
    if (strcmp(path, "/health/ready") == 0
        && srv->cfg.ready && !srv->cfg.ready(srv->cfg.ctx)) {
        tm_resp_json(resp, 503, json_pack("{s:s,s:s}", "status", "unavailable", "error",
                                          srv->cfg.not_ready_reason ? srv->cfg.not_ready_reason
                                                                    : "a dependency is unreachable"));
        return;
    }
    tm_resp_raw(resp, 200, "{\"status\":\"ok\"}");
}

static MHD_Result_t on_request(void *cls, struct MHD_Connection *conn,
                               const char *url, const char *method,
                               const char *version, const char *upload_data,
                               size_t *upload_size, void **con_cls)
{
    struct tm_http *srv = cls;
    req_state *st = *con_cls;
    (void) version;

    if (st == NULL) {
        st = calloc(1, sizeof *st);
        if (st == NULL) {
            return MHD_NO;
        }
        clock_gettime(CLOCK_MONOTONIC, &st->start);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > TM_HTTP_MAX_BODY) {
            st->too_large = 1;
        }
        *con_cls = st;
        return MHD_YES;
    }
    if (*upload_size) {
        /* Bodies over the limit are read and dropped, then answered 413. */
        if (!st->too_large && st->len + *upload_size <= TM_HTTP_MAX_BODY) {
            char *nb = realloc(st->body, st->len + *upload_size + 1);
            if (nb == NULL) {
                st->too_large = 1;
            } else {
                st->body = nb;
                memcpy(st->body + st->len, upload_data, *upload_size);
                st->len += *upload_size;
                st->body[st->len] = '\0';
            }
        } else {
            st->too_large = 1;
        }
        *upload_size = 0;
        return MHD_YES;
    }

    tm_resp resp = { 0 };
    if (st->too_large) {
        tm_resp_error(&resp, 413, "request body exceeds %d bytes", TM_HTTP_MAX_BODY);
    } else if (strcmp(url, "/health") == 0 || strcmp(url, "/health/live") == 0
               || strcmp(url, "/health/ready") == 0 || strcmp(url, "/health/startup") == 0) {
        health(srv, url, &resp);
    } else {
        tm_req req = { method, url, st->body ? st->body : "", st->len, conn };
        srv->cfg.handler(srv->cfg.ctx, &req, &resp);
        if (resp.status == 0) {
            tm_resp_error(&resp, 500, "internal error: no response");
        }
    }
    TM_INFO("%s %s %d %.1fms", method, url, resp.status, ms_since(&st->start));
    MHD_Result_t rc = send_resp(conn, &resp);
    free(resp.body);
    free(resp.extra_header_value);
    return rc;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void) cls; (void) conn; (void) toe;
    req_state *st = *con_cls;
    if (st) {
        free(st->body);
        free(st);
        *con_cls = NULL;
    }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void) cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    TM_WARN("http: %s", msg);
}

struct tm_http *tm_http_start(const tm_http_config *cfg)
{
    struct tm_http *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        return NULL;
    }
    srv->cfg = *cfg;

    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t) cfg->port);
    const char *bind = cfg->bind_addr ? cfg->bind_addr : "0.0.0.0";
    if (inet_pton(AF_INET, bind, &sa.sin_addr) != 1) {
        TM_ERROR("BIND_ADDR \"%s\" is not an IPv4 address", bind);
        free(srv);
        return NULL;
    }
    unsigned threads = cfg->threads ? cfg->threads : 4;
    /* A small pool of polling threads, each serving many connections, with a
     * connection timeout: slow clients cannot pin a thread each. */
    srv->mhd = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG,
        (uint16_t) cfg->port, NULL, NULL, on_request, srv,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &sa,
        MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 15,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned) 1000,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned) 200,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) (32 * 1024),
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_END);
    if (srv->mhd == NULL) {
        TM_ERROR("cannot listen on %s:%u", bind, cfg->port);
        free(srv);
        return NULL;
    }
    TM_INFO("listening on %s:%u (%u threads)", bind, cfg->port, threads);
    return srv;
}

void tm_http_stop(struct tm_http *srv)
{
    if (srv) {
        MHD_stop_daemon(srv->mhd);
        free(srv);
    }
}
