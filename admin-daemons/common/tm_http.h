/* The daemons' HTTP layer over libmicrohttpd: body limits, JSON responses,
 * health routes, one log line per request. A handler sees a parsed request
 * and fills a response; everything else lives here once. */
#ifndef TM_HTTP_H
#define TM_HTTP_H
#include <jansson.h>
#include <stddef.h>

#define TM_HTTP_MAX_BODY (64 * 1024)

struct MHD_Connection;

typedef struct {
    const char *method;
    const char *path;          /* URL path, percent-decoded, no query */
    const char *body;          /* NUL-terminated copy of the body (may be "") */
    size_t body_len;
    struct MHD_Connection *conn;
} tm_req;

typedef struct {
    int status;
    char *body;                /* malloc'd; NULL for an empty body */
    size_t body_len;
    const char *content_type;  /* default application/json */
    char *extra_header_name;   /* optional single extra header (static string) */
    char *extra_header_value;  /* malloc'd */
} tm_resp;

typedef void (*tm_handler)(void *ctx, const tm_req *req, tm_resp *resp);

typedef struct {
    const char *bind_addr;     /* NULL -> 0.0.0.0 */
    unsigned port;
    unsigned threads;          /* worker threads (each handles many connections) */
    tm_handler handler;
    int (*ready)(void *ctx);   /* /health/ready: 1 ready, 0 not */
    const char *not_ready_reason; /* said in the 503, e.g. "database unreachable" */
    void *ctx;
} tm_http_config;

struct tm_http;

struct tm_http *tm_http_start(const tm_http_config *cfg);
void tm_http_stop(struct tm_http *srv);

const char *tm_req_header(const tm_req *req, const char *name);
const char *tm_req_query(const tm_req *req, const char *name);

/* Responses. json is stolen (decref'd). */
void tm_resp_json(tm_resp *resp, int status, json_t *json);
/* A JSON text produced elsewhere (e.g. by PostgreSQL); copied. */
void tm_resp_raw(tm_resp *resp, int status, const char *json_text);
void tm_resp_error(tm_resp *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void tm_resp_empty(tm_resp *resp, int status);
/* Text body (e.g. Prometheus metrics); text is stolen. */
void tm_resp_text(tm_resp *resp, int status, const char *content_type, char *text);

/* Parses the request body as a JSON object; on failure fills resp with a 400
 * and returns NULL. */
json_t *tm_req_json_object(const tm_req *req, tm_resp *resp);

/* The bearer token from Authorization ("Bearer X" or a bare "X"); NULL if absent. */
const char *tm_req_bearer(const tm_req *req, size_t *len);
#endif
