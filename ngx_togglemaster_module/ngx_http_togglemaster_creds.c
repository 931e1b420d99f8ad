/*
 * AWS credentials for the SQS producer, found the way the AWS SDKs find
 * them: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN], then
 * web identity (IRSA: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN -> STS
 * AssumeRoleWithWebIdentity), then container credentials (EKS Pod
 * Identity, ECS: AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI, with
 * AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or _TOKEN).
 *
 * The environment is read at configuration time, in the master (nginx
 * clears the workers' environment), and the endpoint's addresses are
 * resolved there too: a worker never calls getaddrinfo().
 *
 * Temporary credentials are per worker. A timer fetches them at worker
 * start and again when tm_aws_creds_stale() says so (5 minutes before they
 * expire), with one HTTP(S) request on nginx's event loop (http.c);
 * failures are retried with exponential backoff and jitter. The token
 * file (a projected service account token on a tmpfs in Kubernetes; it
 * rotates, so it is read anew every time) is read in that timer's
 * handler, never on a request. Until the first credentials arrive,
 * events.c keeps its events (its bounded buffer drops and counts what
 * does not fit).
 */

#include "ngx_http_togglemaster_creds.h"
#include "ngx_http_togglemaster_http.h"

#include <stdlib.h>


#define NGX_HTTP_TOGGLEMASTER_CREDS_TIMEOUT      5000    /* ms, per step */
#define NGX_HTTP_TOGGLEMASTER_CREDS_REPLY_MIN    4096
#define NGX_HTTP_TOGGLEMASTER_CREDS_REPLY_MAX    65536
#define NGX_HTTP_TOGGLEMASTER_CREDS_TOKEN_MAX    16384
#define NGX_HTTP_TOGGLEMASTER_CREDS_BACKOFF_BASE 1000
#define NGX_HTTP_TOGGLEMASTER_CREDS_BACKOFF_MAX  60000
#define NGX_HTTP_TOGGLEMASTER_CREDS_REFRESH_MIN  5       /* s */
#define NGX_HTTP_TOGGLEMASTER_CREDS_REFRESH_MAX  86400   /* s */
#define NGX_HTTP_TOGGLEMASTER_CREDS_REJECT_GAP   10      /* s */

/* ECS and EKS's link-local credentials address for a relative URI */
#define NGX_HTTP_TOGGLEMASTER_CONTAINER_URL_MAX  2048


typedef struct {
    ngx_atomic_t                 pid;
    ngx_atomic_t                 expires;     /* unix seconds; 0: none */
} ngx_http_togglemaster_creds_worker_t;

typedef struct {
    ngx_atomic_t                 refreshes;
    ngx_atomic_t                 errors;
    ngx_http_togglemaster_creds_worker_t
                                 workers[NGX_HTTP_TOGGLEMASTER_MAX_WORKERS];
} ngx_http_togglemaster_creds_shm_t;


typedef struct {
    tm_aws_creds_source          source;
    tm_aws_creds                 keys;        /* environment or dummy keys,
                                                 in the conf pool */

    /* web identity */
    char                        *role_arn;
    char                        *token_file;
    char                        *session_name; /* NULL: per worker */

    /* container credentials */
    char                        *auth_token;
    char                        *auth_token_file;

    /* where temporary credentials come from */
    char                        *url;
    char                        *host;        /* Host header */
    char                        *path;        /* request target */
    ngx_http_togglemaster_http_endpoint_t
                                 target;

    ngx_shm_zone_t              *zone;
#if (NGX_THREADS)
    ngx_thread_pool_t           *thread_pool; /* reads the token files */
#endif
} ngx_http_togglemaster_creds_conf_t;


typedef struct {
    ngx_http_togglemaster_creds_conf_t  *conf;
    ngx_http_togglemaster_creds_shm_t   *shm;
    ngx_log_t                           *log;

    tm_aws_creds                         cur;     /* malloc'd by lib */

    ngx_event_t                          timer;

    ngx_http_togglemaster_http_t         http;

    u_char                              *out;     /* may hold the token */
    size_t                               out_len;

#if (NGX_THREADS)
    ngx_thread_task_t                   *task;    /* token file reads */
#endif

    ngx_uint_t                           failures;
    time_t                               started;  /* last fetch */
    char                                 session[64];

    unsigned                             on:1;
    unsigned                             busy:1;
    unsigned                             force:1;
} ngx_http_togglemaster_creds_t;


static ngx_http_togglemaster_creds_t  ngx_http_togglemaster_creds;


static void ngx_http_togglemaster_creds_refresh(ngx_event_t *ev);
static void ngx_http_togglemaster_creds_handler(
    ngx_http_togglemaster_http_t *h, ngx_uint_t err, const char *why,
    ngx_http_togglemaster_http_reply_t *r);


/* ---- configuration (master) -------------------------------------------- */

static char *
ngx_http_togglemaster_creds_strdup(ngx_pool_t *pool, const char *s)
{
    size_t  len;
    char   *p;

    if (s == NULL) {
        return NULL;
    }

    len = ngx_strlen(s);

    p = ngx_pnalloc(pool, len + 1);
    if (p) {
        ngx_memcpy(p, s, len + 1);
    }

    return p;
}


/* An environment variable, NULL when unset or empty (or out of memory) */
static char *
ngx_http_togglemaster_creds_env(ngx_pool_t *pool, const char *name)
{
    char  *v;

    v = getenv(name);
    if (v == NULL || *v == '\0') {
        return NULL;
    }

    return ngx_http_togglemaster_creds_strdup(pool, v);
}


/* a NUL-terminated value for a header line (tm_aws_header_value_ok) */
static ngx_uint_t
ngx_http_togglemaster_creds_header_safe(const char *s)
{
    return tm_aws_header_value_ok(s, ngx_strlen(s));
}


static ngx_int_t
ngx_http_togglemaster_creds_shm_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t                    *shpool;
    ngx_http_togglemaster_creds_shm_t  *sh;

    if (data) {
        zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_alloc(shpool, sizeof(ngx_http_togglemaster_creds_shm_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(sh, sizeof(ngx_http_togglemaster_creds_shm_t));

    shpool->data = sh;
    zone->data = sh;

    return NGX_OK;
}


/* As the AWS SDKs: a container credentials endpoint over plain http must
 * be on this host or the ECS/EKS link-local address, the token would
 * travel in the clear otherwise. */
static ngx_uint_t
ngx_http_togglemaster_creds_local(ngx_addr_t *addrs, ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        if (!tm_aws_container_addr_ok(addrs[i].sockaddr)) {
            return 0;
        }
    }

    return 1;
}


/* The credentials endpoint: split, resolved once, TLS context. */
static char *
ngx_http_togglemaster_creds_target(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf,
    ngx_http_togglemaster_creds_conf_t *cc, const char *url)
{
    u_char      *p;
    char         scheme[8], host[300], path[2048];
    const char  *rest;

    if (tm_aws_url_split(url, scheme, sizeof(scheme), host, sizeof(host),
                         path, sizeof(path))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "AWS credentials endpoint \"%s\": must be "
                           "http(s)://host[:port][/path]", url);
        return NGX_CONF_ERROR;
    }

    /* the request target is the rest of the URL, query included */
    rest = url + (ngx_strncmp(url, "https://", 8) == 0 ? 8 : 7)
           + ngx_strlen(host);

    cc->url = ngx_http_togglemaster_creds_strdup(cf->pool, url);
    cc->host = ngx_http_togglemaster_creds_strdup(cf->pool, host);

    if (*rest == '\0' || *rest == '#') {
        cc->path = "/";

    } else {
        cc->path = ngx_pnalloc(cf->pool, ngx_strlen(rest) + 2);
        if (cc->path) {
            p = (u_char *) cc->path;

            if (*rest == '?') {
                *p++ = '/';
            }

            while (*rest && *rest != '#') {
                *p++ = *rest++;
            }

            *p = '\0';
        }
    }

    if (cc->url == NULL || cc->host == NULL || cc->path == NULL) {
        return NGX_CONF_ERROR;
    }

    if (!ngx_http_togglemaster_creds_header_safe(cc->path)
        || ngx_strchr(cc->path, ' '))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "AWS credentials endpoint \"%s\": bad path", url);
        return NGX_CONF_ERROR;
    }

    /* resolved, and the TLS context against the system's CAs and
     * togglemaster_events_ssl_trusted_certificate, as for SQS */
    cc->target.name = "AWS credentials endpoint";

    if (ngx_http_togglemaster_http_endpoint(cf, tmcf,
                                            "AWS credentials endpoint", url,
                                            cc->host, 1, &cc->target)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (cc->source == TM_AWS_CREDS_CONTAINER && !cc->target.https
        && !ngx_http_togglemaster_creds_local(cc->target.addrs,
                                              cc->target.naddrs))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "AWS container credentials endpoint \"%s\": "
                           "http only to a loopback address, 169.254.170.2 "
                           "or 169.254.170.23 (EKS Pod Identity); use "
                           "https otherwise", url);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* IRSA: the role, the token file (read by the worker, in a thread) and
 * the STS endpoint that exchanges the token for credentials. */
static char *
ngx_http_togglemaster_creds_web_identity(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf,
    ngx_http_togglemaster_creds_conf_t *cc, const char *region)
{
    char              err[256];
    ngx_file_info_t   fi;
    tm_aws_endpoint   ep;

    cc->role_arn = ngx_http_togglemaster_creds_env(cf->pool, "AWS_ROLE_ARN");
    cc->token_file = ngx_http_togglemaster_creds_env(cf->pool,
                                                "AWS_WEB_IDENTITY_TOKEN_FILE");
    cc->session_name = ngx_http_togglemaster_creds_env(cf->pool,
                                                "AWS_ROLE_SESSION_NAME");

    if (cc->role_arn == NULL || cc->token_file == NULL) {
        return NGX_CONF_ERROR;
    }

#if (NGX_THREADS)
    /* the token file is read in a thread: never a disk read on the
     * event loop */
    cc->thread_pool = ngx_thread_pool_add(cf, NULL);
    if (cc->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }
#endif

    if (ngx_file_info(cc->token_file, &fi) == NGX_FILE_ERROR) {
        /* it may appear later (the kubelet writes it); the worker
         * retries, and says so */
        ngx_conf_log_error(NGX_LOG_WARN, cf, ngx_errno,
                           "AWS_WEB_IDENTITY_TOKEN_FILE \"%s\" is not "
                           "readable yet", cc->token_file);
    }

    /* STS: AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, else regional */
    if (tm_aws_endpoint_resolve(&ep, "sts", region, NULL, err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "STS endpoint: %s", err);
        return NGX_CONF_ERROR;
    }

    return ngx_http_togglemaster_creds_target(cf, tmcf, cc, ep.url);
}


/* EKS Pod Identity, ECS: the endpoint's URL and its authorization token
 * (or the file that holds it, read by the worker, in a thread). */
static char *
ngx_http_togglemaster_creds_container(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf,
    ngx_http_togglemaster_creds_conf_t *cc)
{
    char  *url, err[256];

    url = ngx_pnalloc(cf->pool, NGX_HTTP_TOGGLEMASTER_CONTAINER_URL_MAX);
    if (url == NULL) {
        return NGX_CONF_ERROR;
    }

    if (tm_aws_container_url(getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
                             getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
                             url, NGX_HTTP_TOGGLEMASTER_CONTAINER_URL_MAX,
                             err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", err);
        return NGX_CONF_ERROR;
    }

    cc->auth_token_file = ngx_http_togglemaster_creds_env(cf->pool,
                                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    cc->auth_token = ngx_http_togglemaster_creds_env(cf->pool,
                                    "AWS_CONTAINER_AUTHORIZATION_TOKEN");

#if (NGX_THREADS)
    if (cc->auth_token_file) {
        cc->thread_pool = ngx_thread_pool_add(cf, NULL);
        if (cc->thread_pool == NULL) {
            return NGX_CONF_ERROR;
        }
    }
#endif

    if (cc->auth_token
        && !ngx_http_togglemaster_creds_header_safe(cc->auth_token))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "AWS_CONTAINER_AUTHORIZATION_TOKEN holds a "
                           "line break");
        return NGX_CONF_ERROR;
    }

    return ngx_http_togglemaster_creds_target(cf, tmcf, cc, url);
}


/* Keys that do not change: the environment's, or dummy keys for an
 * emulator; copied into the conf pool. No keys at all is an error. */
static char *
ngx_http_togglemaster_creds_static(ngx_conf_t *cf,
    ngx_http_togglemaster_creds_conf_t *cc, ngx_uint_t emulator)
{
    char          err[256];
    tm_aws_creds  c;

    ngx_memzero(&c, sizeof(tm_aws_creds));

    if (cc->source == TM_AWS_CREDS_ENV) {
        if (tm_aws_creds_from_env(&c, err, sizeof(err)) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", err);
            return NGX_CONF_ERROR;
        }

    } else if (emulator) {
        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                           "no AWS credentials in the environment: "
                           "signing SQS requests to the emulator with "
                           "dummy keys");

        if (tm_aws_creds_set(&c, TM_AWS_CREDS_STATIC, "test", "test",
                             NULL, 0)
            != 0)
        {
            return NGX_CONF_ERROR;
        }

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
            "\"togglemaster_events on\": no AWS credentials: set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
            "AWS_SESSION_TOKEN), or AWS_WEB_IDENTITY_TOKEN_FILE and "
            "AWS_ROLE_ARN (IRSA), or AWS_CONTAINER_CREDENTIALS_FULL_URI "
            "(EKS Pod Identity) in nginx's environment");
        return NGX_CONF_ERROR;
    }

    cc->source = c.source;
    cc->keys.source = c.source;
    cc->keys.access_key = ngx_http_togglemaster_creds_strdup(cf->pool,
                                                            c.access_key);
    cc->keys.secret_key = ngx_http_togglemaster_creds_strdup(cf->pool,
                                                            c.secret_key);
    cc->keys.session_token = ngx_http_togglemaster_creds_strdup(cf->pool,
                                                         c.session_token);
    tm_aws_creds_free(&c);

    if (cc->keys.access_key == NULL || cc->keys.secret_key == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_togglemaster_creds_conf(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf, const char *region,
    ngx_uint_t emulator, void **conf)
{
    char                                *rv;
    ngx_str_t                            name = ngx_string("togglemaster_creds");
    ngx_http_togglemaster_creds_conf_t  *cc;

    cc = ngx_pcalloc(cf->pool, sizeof(ngx_http_togglemaster_creds_conf_t));
    if (cc == NULL) {
        return NGX_CONF_ERROR;
    }

    *conf = cc;

    cc->source = tm_aws_creds_detect();

    switch (cc->source) {

    case TM_AWS_CREDS_WEB_IDENTITY:
        rv = ngx_http_togglemaster_creds_web_identity(cf, tmcf, cc, region);
        break;

    case TM_AWS_CREDS_CONTAINER:
        rv = ngx_http_togglemaster_creds_container(cf, tmcf, cc);
        break;

    case TM_AWS_CREDS_ENV:
    default:
        rv = ngx_http_togglemaster_creds_static(cf, cc, emulator);
        break;
    }

    if (rv != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (cc->url) {
        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                           "AWS credentials for SQS: %s, from \"%s\"",
                           tm_aws_creds_source_name(cc->source), cc->url);
    }

    cc->zone = ngx_shared_memory_add(cf, &name,
                         2 * sizeof(ngx_http_togglemaster_creds_shm_t) + 65536,
                         &ngx_http_togglemaster_module);
    if (cc->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    cc->zone->init = ngx_http_togglemaster_creds_shm_init;

    return NGX_CONF_OK;
}


/* ---- the worker's credentials ------------------------------------------ */

static ngx_uint_t
ngx_http_togglemaster_creds_dynamic(ngx_http_togglemaster_creds_t *s)
{
    return s->conf
           && (s->conf->source == TM_AWS_CREDS_WEB_IDENTITY
               || s->conf->source == TM_AWS_CREDS_CONTAINER);
}


const tm_aws_creds *
ngx_http_togglemaster_creds_get(void)
{
    ngx_http_togglemaster_creds_t  *s = &ngx_http_togglemaster_creds;

    if (!s->on) {
        return NULL;
    }

    if (!ngx_http_togglemaster_creds_dynamic(s)) {
        return &s->conf->keys;
    }

    /* keys inside the refresh margin still work; past expiry they do not */
    if (s->cur.access_key == NULL
        || (s->cur.expires && s->cur.expires <= ngx_time()))
    {
        return NULL;
    }

    return &s->cur;
}


static void
ngx_http_togglemaster_creds_gauge(ngx_http_togglemaster_creds_t *s)
{
    if (s->shm && ngx_worker < NGX_HTTP_TOGGLEMASTER_MAX_WORKERS) {
        s->shm->workers[ngx_worker].pid = ngx_pid;
        s->shm->workers[ngx_worker].expires = s->cur.access_key
                                              ? (ngx_atomic_uint_t)
                                                s->cur.expires
                                              : 0;
    }
}


static void
ngx_http_togglemaster_creds_reset(ngx_http_togglemaster_creds_t *s)
{
    ngx_http_togglemaster_http_free(&s->http);

    if (s->out) {
        /* it may hold the token */
        ngx_explicit_memzero(s->out, s->out_len);
        ngx_free(s->out);
        s->out = NULL;
    }

    s->out_len = 0;
    s->busy = 0;
}


/* Next look at the credentials, in ms. */
static void
ngx_http_togglemaster_creds_schedule(ngx_http_togglemaster_creds_t *s,
    ngx_msec_t delay)
{
    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    ngx_add_timer(&s->timer, delay);
}


static ngx_msec_t
ngx_http_togglemaster_creds_next(ngx_http_togglemaster_creds_t *s)
{
    time_t  left, at;

    if (s->cur.expires == 0) {
        return (ngx_msec_t) NGX_HTTP_TOGGLEMASTER_CREDS_REFRESH_MAX * 1000;
    }

    /* when tm_aws_creds_stale() turns true; keys that are stale from the
     * start (shorter-lived than the margin) at half their remaining life,
     * not in a loop */
    left = s->cur.expires - ngx_time();
    at = left - TM_AWS_CREDS_REFRESH_MARGIN;

    if (at < 1) {
        at = ngx_max(left / 2, NGX_HTTP_TOGGLEMASTER_CREDS_REFRESH_MIN);
    }

    at = ngx_min(at, NGX_HTTP_TOGGLEMASTER_CREDS_REFRESH_MAX);

    return (ngx_msec_t) at * 1000;
}


static void
ngx_http_togglemaster_creds_failed(ngx_http_togglemaster_creds_t *s,
    const char *why)
{
    char        ewhy[NGX_HTTP_TOGGLEMASTER_LOG_ESC_LEN];
    ngx_msec_t  backoff;

    ngx_http_togglemaster_creds_reset(s);

    if (s->shm) {
        (void) ngx_atomic_fetch_add(&s->shm->errors, 1);
    }

    s->failures++;

    backoff = ngx_min((ngx_msec_t) NGX_HTTP_TOGGLEMASTER_CREDS_BACKOFF_BASE
                      << ngx_min(s->failures - 1, 10),
                      NGX_HTTP_TOGGLEMASTER_CREDS_BACKOFF_MAX);
    backoff = backoff / 2 + (ngx_msec_t) ngx_random() % (backoff / 2 + 1);

    /* why may quote the credentials endpoint's answer */
    tm_log_escape(ewhy, sizeof(ewhy), why, ngx_strlen(why));

    ngx_log_error(NGX_LOG_WARN, s->log, 0,
                  "togglemaster: AWS credentials from %s (%s): %s; "
                  "retrying in %M ms%s",
                  tm_aws_creds_source_name(s->conf->source), s->conf->url,
                  ewhy, backoff,
                  ngx_http_togglemaster_creds_get()
                  ? "" : ", evaluation events wait meanwhile");

    ngx_http_togglemaster_creds_schedule(s, backoff);
}


static void
ngx_http_togglemaster_creds_done(ngx_http_togglemaster_creds_t *s,
    ngx_http_togglemaster_http_reply_t *r)
{
    u_char        *p, *last, msg[160];
    char           err[256];
    time_t         now;
    ngx_int_t      rc;
    tm_aws_creds   fresh;

    if (r->status != 200) {
        /* the error, printable, for the log: STS XML or a JSON message */
        last = ngx_cpymem(msg, r->body, ngx_min(r->len, sizeof(msg) - 1));
        for (p = msg; p < last; p++) {
            if (*p < 0x20 || *p >= 0x7f) {
                *p = ' ';
            }
        }

        *last = '\0';

        (void) ngx_snprintf((u_char *) err, sizeof(err), "HTTP %ui: %s%Z",
                            r->status, msg);
        ngx_http_togglemaster_creds_failed(s, err);
        return;
    }

    ngx_memzero(&fresh, sizeof(tm_aws_creds));

    if (s->conf->source == TM_AWS_CREDS_WEB_IDENTITY) {
        rc = tm_aws_creds_parse_sts((char *) r->body, r->len, &fresh, err,
                                    sizeof(err));

    } else {
        rc = tm_aws_creds_parse_container((char *) r->body, r->len, &fresh,
                                          err, sizeof(err));
    }

    now = ngx_time();

    if (rc == 0 && fresh.expires && fresh.expires <= now) {
        ngx_cpystrn((u_char *) err, (u_char *) "the credentials have expired "
                    "already (is the clock right?)", sizeof(err));
        rc = -1;
    }

    if (rc != 0) {
        tm_aws_creds_free(&fresh);
        ngx_http_togglemaster_creds_failed(s, err);
        return;
    }

    tm_aws_creds_free(&s->cur);
    s->cur = fresh;

    ngx_http_togglemaster_creds_reset(s);
    s->failures = 0;

    if (s->shm) {
        (void) ngx_atomic_fetch_add(&s->shm->refreshes, 1);
    }

    ngx_http_togglemaster_creds_gauge(s);

    ngx_log_error(NGX_LOG_NOTICE, s->log, 0,
                  "togglemaster: AWS credentials from %s: key %*s..., "
                  "expire in %T s",
                  tm_aws_creds_source_name(s->conf->source),
                  ngx_min(ngx_strlen(s->cur.access_key), 8),
                  s->cur.access_key,
                  s->cur.expires ? s->cur.expires - now : (time_t) -1);

    ngx_http_togglemaster_creds_schedule(s,
                                         ngx_http_togglemaster_creds_next(s));

    /* events held for want of credentials can go now */
    ngx_http_togglemaster_events_wake();
}


/* ---- the request ------------------------------------------------------- */

/* A token file, whitespace trimmed, NUL-terminated, or NULL. A small read
 * from a tmpfs in Kubernetes: done from the refresh timer, never on the
 * request path. */
static u_char *
ngx_http_togglemaster_creds_read_file(const char *path, size_t *len,
    char *err, size_t errlen)
{
    u_char        *buf, *p, *last;
    ssize_t        n;
    size_t         size;
    ngx_fd_t       fd;
    ngx_err_t      e;

    fd = ngx_open_file(path, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        e = ngx_errno;
        (void) ngx_snprintf((u_char *) err, errlen, "cannot open \"%s\": %s%Z",
                            path, strerror(e));
        return NULL;
    }

    buf = ngx_alloc(NGX_HTTP_TOGGLEMASTER_CREDS_TOKEN_MAX + 1,
                    ngx_http_togglemaster_creds.log);
    if (buf == NULL) {
        (void) ngx_close_file(fd);
        ngx_cpystrn((u_char *) err, (u_char *) "out of memory", errlen);
        return NULL;
    }

    size = 0;

    for ( ;; ) {
        n = ngx_read_fd(fd, buf + size,
                        NGX_HTTP_TOGGLEMASTER_CREDS_TOKEN_MAX + 1 - size);

        if (n == -1) {
            e = ngx_errno;
            if (e == NGX_EINTR) {
                continue;
            }

            (void) ngx_snprintf((u_char *) err, errlen,
                                "cannot read \"%s\": %s%Z", path, strerror(e));
            goto failed;
        }

        if (n == 0) {
            break;
        }

        size += n;

        if (size > NGX_HTTP_TOGGLEMASTER_CREDS_TOKEN_MAX) {
            (void) ngx_snprintf((u_char *) err, errlen,
                                "\"%s\" is larger than %d bytes%Z", path,
                                NGX_HTTP_TOGGLEMASTER_CREDS_TOKEN_MAX);
            goto failed;
        }
    }

    (void) ngx_close_file(fd);

    p = buf;
    last = buf + size;

    while (p < last && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t'
                        || last[-1] == '\r' || last[-1] == '\n'))
    {
        last--;
    }

    if (p == last) {
        (void) ngx_snprintf((u_char *) err, errlen, "\"%s\" is empty%Z", path);
        ngx_free(buf);
        return NULL;
    }

    size = last - p;
    ngx_memmove(buf, p, size);
    buf[size] = '\0';
    *len = size;

    return buf;

failed:

    (void) ngx_close_file(fd);
    ngx_explicit_memzero(buf, NGX_HTTP_TOGGLEMASTER_CREDS_TOKEN_MAX + 1);
    ngx_free(buf);

    return NULL;
}


/* The token file this fetch reads, or NULL. */
static char *
ngx_http_togglemaster_creds_token_path(ngx_http_togglemaster_creds_conf_t *cc)
{
    return cc->source == TM_AWS_CREDS_WEB_IDENTITY ? cc->token_file
                                                    : cc->auth_token_file;
}


/* The request bytes into s->out; file_token is the token file's contents
 * (NULL when there is no file), the caller wipes it. */
static ngx_int_t
ngx_http_togglemaster_creds_request(ngx_http_togglemaster_creds_t *s,
    u_char *file_token, size_t file_tlen, char *err, size_t errlen)
{
    u_char                              *token, *p;
    char                                *form;
    size_t                               len, tlen;
    ngx_http_togglemaster_creds_conf_t  *cc = s->conf;

    token = NULL;
    tlen = 0;

    if (cc->source == TM_AWS_CREDS_WEB_IDENTITY) {
        form = tm_aws_sts_web_identity_form(cc->role_arn,
                                            cc->session_name
                                            ? cc->session_name : s->session,
                                            (char *) file_token);

        if (form == NULL) {
            ngx_cpystrn((u_char *) err, (u_char *) "out of memory", errlen);
            return NGX_ERROR;
        }

        len = ngx_strlen(form);

        s->out = ngx_alloc(sizeof("POST  HTTP/1.1\r\nHost: \r\n"
                                  "Content-Type: application/"
                                  "x-www-form-urlencoded; charset=utf-8\r\n"
                                  "Accept: */*\r\n"
                                  "Content-Length: \r\n"
                                  "Connection: close\r\n\r\n")
                           + ngx_strlen(cc->path) + ngx_strlen(cc->host)
                           + NGX_SIZE_T_LEN + len,
                           s->log);
        if (s->out == NULL) {
            ngx_explicit_memzero(form, len);
            free(form);
            ngx_cpystrn((u_char *) err, (u_char *) "out of memory", errlen);
            return NGX_ERROR;
        }

        p = ngx_sprintf(s->out, "POST %s HTTP/1.1\r\nHost: %s\r\n"
                        "Content-Type: application/x-www-form-urlencoded; "
                        "charset=utf-8\r\n"
                        "Accept: */*\r\n"
                        "Content-Length: %uz\r\n"
                        "Connection: close\r\n\r\n", cc->path, cc->host, len);
        p = ngx_cpymem(p, form, len);

        ngx_explicit_memzero(form, len);
        free(form);

        s->out_len = p - s->out;

        return NGX_OK;
    }

    /* container credentials: the token file wins over the token */
    if (file_token) {
        if (!ngx_http_togglemaster_creds_header_safe((char *) file_token)) {
            ngx_cpystrn((u_char *) err, (u_char *) "the authorization token "
                        "file holds a line break", errlen);
            return NGX_ERROR;
        }

        token = file_token;
        tlen = file_tlen;

    } else if (cc->auth_token) {
        token = (u_char *) cc->auth_token;
        tlen = ngx_strlen(cc->auth_token);
    }

    s->out = ngx_alloc(sizeof("GET  HTTP/1.1\r\nHost: \r\n"
                              "Authorization: \r\n"
                              "Accept: application/json\r\n"
                              "Connection: close\r\n\r\n")
                       + ngx_strlen(cc->path) + ngx_strlen(cc->host) + tlen,
                       s->log);

    if (s->out) {
        p = ngx_sprintf(s->out, "GET %s HTTP/1.1\r\nHost: %s\r\n", cc->path,
                        cc->host);

        if (token) {
            p = ngx_sprintf(p, "Authorization: %*s\r\n", tlen, token);
        }

        p = ngx_cpymem(p, "Accept: application/json\r\n"
                       "Connection: close\r\n\r\n",
                       sizeof("Accept: application/json\r\n"
                              "Connection: close\r\n\r\n") - 1);

        s->out_len = p - s->out;
    }

    if (s->out == NULL) {
        ngx_cpystrn((u_char *) err, (u_char *) "out of memory", errlen);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* The end of the fetch. A graceful stop closes the connection at once
 * (it is cancelable): no retry then. */
static void
ngx_http_togglemaster_creds_handler(ngx_http_togglemaster_http_t *h,
    ngx_uint_t err, const char *why, ngx_http_togglemaster_http_reply_t *r)
{
    ngx_http_togglemaster_creds_t  *s = h->data;

    switch (err) {

    case NGX_HTTP_TOGGLEMASTER_HTTP_OK:
        ngx_http_togglemaster_creds_done(s, r);
        return;

    case NGX_HTTP_TOGGLEMASTER_HTTP_CLOSING:
        ngx_http_togglemaster_creds_reset(s);
        return;

    default:
        ngx_http_togglemaster_creds_failed(s, why);
    }
}


/* The request, with the token file's contents if any, then the fetch. */
static void
ngx_http_togglemaster_creds_fetch(ngx_http_togglemaster_creds_t *s,
    u_char *token, size_t tlen)
{
    char  err[512];

    if (ngx_http_togglemaster_creds_request(s, token, tlen, err, sizeof(err))
        != NGX_OK)
    {
        ngx_http_togglemaster_creds_failed(s, err);
        return;
    }

    if (ngx_http_togglemaster_http_start(&s->http, s->out, s->out_len,
                                         NGX_HTTP_TOGGLEMASTER_CREDS_TIMEOUT)
        != NGX_OK)
    {
        ngx_http_togglemaster_creds_failed(s, "cannot connect");
        return;
    }
}


#if (NGX_THREADS)

/* A token file read in a thread of nginx's "default" pool. */
typedef struct {
    char                        *path;
    u_char                      *token;
    size_t                       len;
    char                         err[256];
} ngx_http_togglemaster_creds_read_t;


static void
ngx_http_togglemaster_creds_read_thread(void *data, ngx_log_t *log)
{
    ngx_http_togglemaster_creds_read_t *rd = data;

    rd->token = ngx_http_togglemaster_creds_read_file(rd->path, &rd->len,
                                                      rd->err,
                                                      sizeof(rd->err));
}


/* back on the event loop */
static void
ngx_http_togglemaster_creds_read_done(ngx_event_t *ev)
{
    u_char                              *token;
    ngx_thread_task_t                   *task = ev->data;
    ngx_http_togglemaster_creds_t       *s = &ngx_http_togglemaster_creds;
    ngx_http_togglemaster_creds_read_t  *rd = task->ctx;

    token = rd->token;
    rd->token = NULL;

    if (!s->on || ngx_exiting || ngx_quit || ngx_terminate) {
        s->busy = 0;

    } else if (token == NULL) {
        ngx_http_togglemaster_creds_failed(s, rd->err);

    } else {
        ngx_http_togglemaster_creds_fetch(s, token, rd->len);
    }

    if (token) {
        ngx_explicit_memzero(token, rd->len);
        ngx_free(token);
    }
}

#endif


static void
ngx_http_togglemaster_creds_start(ngx_http_togglemaster_creds_t *s)
{
    char                                *path;
#if (NGX_THREADS)
    ngx_http_togglemaster_creds_read_t  *rd;
#else
    char                                 err[256];
    u_char                              *token;
    size_t                               tlen;
#endif

    s->busy = 1;
    s->force = 0;
    s->started = ngx_time();

    path = ngx_http_togglemaster_creds_token_path(s->conf);

    if (path == NULL) {
        ngx_http_togglemaster_creds_fetch(s, NULL, 0);
        return;
    }

#if (NGX_THREADS)
    if (s->task == NULL) {
        s->task = ngx_thread_task_alloc(ngx_cycle->pool,
                                    sizeof(ngx_http_togglemaster_creds_read_t));
        if (s->task == NULL) {
            ngx_http_togglemaster_creds_failed(s, "out of memory");
            return;
        }

        s->task->handler = ngx_http_togglemaster_creds_read_thread;
        s->task->event.handler = ngx_http_togglemaster_creds_read_done;
        s->task->event.data = s->task;
        s->task->event.log = s->log;
    }

    rd = s->task->ctx;
    rd->path = path;
    rd->token = NULL;
    rd->err[0] = '\0';

    if (ngx_thread_task_post(s->conf->thread_pool, s->task) != NGX_OK) {
        ngx_http_togglemaster_creds_failed(s, "cannot start reading the "
                                           "token file");
    }

#else

    token = ngx_http_togglemaster_creds_read_file(path, &tlen, err,
                                                  sizeof(err));
    if (token == NULL) {
        ngx_http_togglemaster_creds_failed(s, err);
        return;
    }

    ngx_http_togglemaster_creds_fetch(s, token, tlen);

    ngx_explicit_memzero(token, tlen);
    ngx_free(token);

#endif
}


/* The timer: fetch when there are no keys, when they are stale, or when
 * SQS refused them. */
static void
ngx_http_togglemaster_creds_refresh(ngx_event_t *ev)
{
    ngx_http_togglemaster_creds_t  *s = ev->data;

    if (s->busy || ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    if (!s->force && !tm_aws_creds_stale(&s->cur, ngx_time())) {
        ngx_http_togglemaster_creds_schedule(s,
                                         ngx_http_togglemaster_creds_next(s));
        return;
    }

    ngx_http_togglemaster_creds_start(s);
}


void
ngx_http_togglemaster_creds_rejected(const char *code)
{
    ngx_http_togglemaster_creds_t  *s = &ngx_http_togglemaster_creds;

    if (!s->on || !ngx_http_togglemaster_creds_dynamic(s) || s->busy
        || ngx_time() - s->started < NGX_HTTP_TOGGLEMASTER_CREDS_REJECT_GAP)
    {
        return;
    }

    ngx_log_error(NGX_LOG_WARN, s->log, 0,
                  "togglemaster: SQS refused the AWS credentials (%s): "
                  "fetching new ones", code);

    s->force = 1;
    ngx_http_togglemaster_creds_schedule(s, 1);
}


/* ---- lifecycle --------------------------------------------------------- */

void
ngx_http_togglemaster_creds_init(ngx_cycle_t *cycle, void *conf)
{
    ngx_http_togglemaster_creds_t  *s = &ngx_http_togglemaster_creds;

    ngx_memzero(s, sizeof(ngx_http_togglemaster_creds_t));

    s->conf = conf;
    s->log = cycle->log;
    s->shm = s->conf->zone ? s->conf->zone->data : NULL;
    s->on = 1;

    /* Connection: close, and cancelable: ours is an idle connection for
     * nginx, a graceful stop closes it at once instead of waiting for it,
     * and its timers do not keep an exiting worker alive */
    s->http.ep = &s->conf->target;
    s->http.log = cycle->log;
    s->http.done = ngx_http_togglemaster_creds_handler;
    s->http.data = s;
    s->http.addr = ngx_worker;
    s->http.in_size = NGX_HTTP_TOGGLEMASTER_CREDS_REPLY_MIN;
    s->http.in_max = NGX_HTTP_TOGGLEMASTER_CREDS_REPLY_MAX;
    s->http.cancelable = 1;

    ngx_http_togglemaster_creds_gauge(s);

    if (!ngx_http_togglemaster_creds_dynamic(s)) {
        return;
    }

    (void) ngx_snprintf((u_char *) s->session, sizeof(s->session),
                        "togglemaster-edge-%P%Z", ngx_pid);

    s->timer.handler = ngx_http_togglemaster_creds_refresh;
    s->timer.log = cycle->log;
    s->timer.data = s;
    s->timer.cancelable = 1;

    ngx_http_togglemaster_http_endpoint_start(&s->conf->target, cycle->log);

    /* from the event loop, at once (the token file is read in a thread) */
    ngx_add_timer(&s->timer, 1);
}


void
ngx_http_togglemaster_creds_exit(void)
{
    ngx_http_togglemaster_creds_t  *s = &ngx_http_togglemaster_creds;

    if (!s->on) {
        return;
    }

    ngx_http_togglemaster_creds_reset(s);

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    ngx_http_togglemaster_http_endpoint_stop(&s->conf->target);
    tm_aws_creds_free(&s->cur);

    if (s->shm && ngx_worker < NGX_HTTP_TOGGLEMASTER_MAX_WORKERS) {
        s->shm->workers[ngx_worker].expires = 0;
    }

    s->on = 0;
}


/* ---- metrics ----------------------------------------------------------- */

u_char *
ngx_http_togglemaster_creds_metrics(u_char *p, u_char *last,
    ngx_uint_t workers)
{
    time_t                                 now, left;
    ngx_uint_t                             i;
    const char                            *source;
    ngx_http_togglemaster_creds_shm_t     *sh;
    ngx_http_togglemaster_creds_worker_t  *w;
    ngx_http_togglemaster_creds_t         *s = &ngx_http_togglemaster_creds;

    if (!s->on) {
        return p;
    }

    switch (s->conf->source) {
    case TM_AWS_CREDS_ENV:
        source = "environment";
        break;
    case TM_AWS_CREDS_WEB_IDENTITY:
        source = "web_identity";
        break;
    case TM_AWS_CREDS_CONTAINER:
        source = "container";
        break;
    default:
        source = "static";
    }

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_aws_credentials_source Where the AWS "
        "credentials for SQS come from.\n"
        "# TYPE togglemaster_aws_credentials_source gauge\n"
        "togglemaster_aws_credentials_source{source=\"%s\"} 1\n", source);

    sh = s->shm;
    if (sh == NULL || !ngx_http_togglemaster_creds_dynamic(s)) {
        return p;
    }

    p = ngx_slprintf(p, last,
        "# HELP togglemaster_aws_credentials_expiry_seconds Seconds until "
        "the worker's temporary AWS credentials expire (0: none).\n"
        "# TYPE togglemaster_aws_credentials_expiry_seconds gauge\n");

    now = ngx_time();

    for (i = 0; i < workers; i++) {
        w = &sh->workers[i];

        if (w->pid == 0) {
            continue;
        }

        left = w->expires ? (time_t) w->expires - now : 0;

        p = ngx_slprintf(p, last,
                 "togglemaster_aws_credentials_expiry_seconds{worker=\"%ui\"} "
                 "%T\n", i, ngx_max(left, 0));
    }

    return ngx_slprintf(p, last,
        "# HELP togglemaster_aws_credentials_refreshes_total Temporary AWS "
        "credentials fetched.\n"
        "# TYPE togglemaster_aws_credentials_refreshes_total counter\n"
        "togglemaster_aws_credentials_refreshes_total %uA\n"
        "# HELP togglemaster_aws_credentials_refresh_errors_total Failed "
        "fetches of AWS credentials.\n"
        "# TYPE togglemaster_aws_credentials_refresh_errors_total counter\n"
        "togglemaster_aws_credentials_refresh_errors_total %uA\n",
        sh->refreshes, sh->errors);
}
