#include "tm_redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct tm_redis {
    int fd;
    SSL *ssl;
    redisReader *reader;
    char *out;                /* queued commands */
    size_t out_len, out_cap;
    char err[256];
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The first OpenSSL error of the queue (then cleared), or fallback. */
static const char *ssl_reason(const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : fallback;
}

/* TCP: the address cache, filled at once for an IP address. */
static int addrs_init(tm_redis_config *cfg, long every_s, char *err, size_t errlen)
{
    if (cfg->url.unix_path[0]) {
        return 0;
    }
    cfg->addrs = tm_resolver_start("redis", cfg->url.host, cfg->url.port, every_s, err, errlen);
    return cfg->addrs ? 0 : -1;
}

int tm_redis_config_init(tm_redis_config *cfg, const char *url, const char *ca_file,
                         const char *server_name, long resolve_every_s,
                         char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->connect_ms = 1000;
    cfg->io_ms = 1000;
    char why[200];
    if (tm_redis_url_parse(url, strlen(url), &cfg->url, why, sizeof why) != 0) {
        seterr(err, errlen, "REDIS_URL: %s", why);
        return -1;
    }
    tm_redis_url_describe(&cfg->url, cfg->where, sizeof cfg->where);
    int has_ca = ca_file && *ca_file, has_name = server_name && *server_name;
    if (!cfg->url.tls) {
        if (has_ca || has_name) {
            seterr(err, errlen, "REDIS_CA_FILE and REDIS_TLS_SERVER_NAME need a rediss:// REDIS_URL");
            return -1;
        }
        return addrs_init(cfg, resolve_every_s, err, errlen);
    }
    if (has_name && strlen(server_name) >= sizeof cfg->server_name) {
        seterr(err, errlen, "REDIS_TLS_SERVER_NAME is too long");
        tm_redis_config_free(cfg);
        return -1;
    }
    snprintf(cfg->server_name, sizeof cfg->server_name, "%s", has_name ? server_name : cfg->url.host);
    cfg->tls = SSL_CTX_new(TLS_client_method());
    if (cfg->tls == NULL || SSL_CTX_set_min_proto_version(cfg->tls, TLS1_2_VERSION) != 1) {
        seterr(err, errlen, "cannot make a TLS context: %s", ssl_reason("out of memory"));
        tm_redis_config_free(cfg);
        return -1;
    }
    /* the handshake fails unless the chain verifies and names server_name */
    SSL_CTX_set_verify(cfg->tls, SSL_VERIFY_PEER, NULL);
    int loaded = has_ca ? SSL_CTX_load_verify_locations(cfg->tls, ca_file, NULL)
                        : SSL_CTX_set_default_verify_paths(cfg->tls);
    if (loaded != 1) {
        seterr(err, errlen, "cannot load the CA certificates%s%s: %s", has_ca ? " of " : "",
               has_ca ? ca_file : "", ssl_reason("no usable certificate"));
        tm_redis_config_free(cfg);
        return -1;
    }
    /* last: a name starts a thread, which waits for its first answer */
    if (addrs_init(cfg, resolve_every_s, err, errlen) != 0) {
        tm_redis_config_free(cfg);
        return -1;
    }
    return 0;
}

void tm_redis_config_free(tm_redis_config *cfg)
{
    SSL_CTX_free(cfg->tls);
    cfg->tls = NULL;
    tm_resolver_stop(cfg->addrs);
    cfg->addrs = NULL;
}

/* Waits for a non-blocking connect; 0 when it succeeded. */
static int connect_wait(int fd, const struct sockaddr *sa, socklen_t len, int ms)
{
    if (connect(fd, sa, len) == 0) {
        return 0;
    }
    if (errno != EINPROGRESS) {
        return -1;
    }
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int n = poll(&p, 1, ms);
    if (n <= 0) {
        errno = n == 0 ? ETIMEDOUT : errno;
        return -1;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
        errno = soerr ? soerr : errno;
        return -1;
    }
    return 0;
}

/* A non-blocking socket connected to one of the cached addresses. */
static int connect_tcp(const tm_redis_config *cfg, char *err, size_t errlen)
{
    tm_addr_list l;
    tm_resolver_get(cfg->addrs, &l);
    if (l.n == 0) {
        seterr(err, errlen, "redis host %s not resolved yet", cfg->url.host);
        return -1;
    }
    int fd = -1;
    for (int i = 0; i < l.n && fd < 0; i++) {
        const struct sockaddr *sa = (const struct sockaddr *) &l.sa[i];
        fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd >= 0 && connect_wait(fd, sa, l.len[i], cfg->connect_ms) != 0) {
            int e = errno;
            close(fd);
            errno = e;
            fd = -1;
        }
    }
    if (fd < 0) {
        seterr(err, errlen, "cannot connect: %s", strerror(errno));
        tm_resolver_refresh(cfg->addrs);   /* Redis may have moved */
        return -1;
    }
    int one = 1;
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int connect_unix(const tm_redis_config *cfg, char *err, size_t errlen)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    memcpy(sun.sun_path, cfg->url.unix_path, strlen(cfg->url.unix_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || connect_wait(fd, (struct sockaddr *) &sun, sizeof sun, cfg->connect_ms) != 0) {
        seterr(err, errlen, "cannot connect: %s", strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

/* A blocking socket with send/receive timeouts, connected to the URL. */
static int open_socket(const tm_redis_config *cfg, char *err, size_t errlen)
{
    int fd = cfg->url.unix_path[0] ? connect_unix(cfg, err, errlen) : connect_tcp(cfg, err, errlen);
    if (fd < 0) {
        return -1;
    }
    struct timeval tv = { cfg->io_ms / 1000, (cfg->io_ms % 1000) * 1000 };
    int fl = fcntl(fd, F_GETFL);
    if (fl == -1 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == -1
        || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0
        || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
        seterr(err, errlen, "cannot connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int tls_start(tm_redis *c, const tm_redis_config *cfg, char *err, size_t errlen)
{
    c->ssl = SSL_new(cfg->tls);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        seterr(err, errlen, "TLS: %s", ssl_reason("out of memory"));
        return -1;
    }
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    int named;
    if (tm_is_ip(cfg->server_name)) {
        named = X509_VERIFY_PARAM_set1_ip_asc(vp, cfg->server_name);
    } else {
        named = SSL_set_tlsext_host_name(c->ssl, cfg->server_name) == 1
                && X509_VERIFY_PARAM_set1_host(vp, cfg->server_name, 0) == 1;
    }
    if (named != 1) {
        seterr(err, errlen, "TLS: cannot use the server name \"%s\"", cfg->server_name);
        return -1;
    }
    ERR_clear_error();
    if (SSL_connect(c->ssl) != 1) {
        long v = SSL_get_verify_result(c->ssl);
        if (v != X509_V_OK) {
            seterr(err, errlen, "TLS: certificate of %s not trusted for \"%s\": %s",
                   cfg->url.host[0] ? cfg->url.host : cfg->url.unix_path, cfg->server_name,
                   X509_verify_cert_error_string(v));
            ERR_clear_error();
        } else {
            int e = errno;
            seterr(err, errlen, "TLS handshake failed: %s",
                   ssl_reason(e == EAGAIN || e == EWOULDBLOCK ? "timed out"
                              : e ? strerror(e) : "the server closed the connection"));
        }
        return -1;
    }
    return 0;
}

/* AUTH [user] password, then SELECT db, each checked. */
static int handshake(tm_redis *c, const tm_redis_url *u, char *err, size_t errlen)
{
    redisReply *r = NULL;
    char db[16];
    if (u->password[0]) {
        const char *argv[] = { "AUTH", u->user[0] ? u->user : u->password, u->password };
        size_t lens[] = { 4, strlen(argv[1]), strlen(u->password) };
        r = tm_redis_command(c, u->user[0] ? 3 : 2, argv, lens);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            seterr(err, errlen, "AUTH%s%s failed: %s", u->user[0] ? " as " : "", u->user,
                   r ? r->str : c->err);
            goto failed;
        }
        freeReplyObject(r);
    }
    if (u->db) {
        snprintf(db, sizeof db, "%d", u->db);
        const char *argv[] = { "SELECT", db };
        size_t lens[] = { 6, strlen(db) };
        r = tm_redis_command(c, 2, argv, lens);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            seterr(err, errlen, "SELECT %d failed: %s", u->db, r ? r->str : c->err);
            goto failed;
        }
        freeReplyObject(r);
    }
    return 0;
failed:
    if (r) {
        freeReplyObject(r);
    }
    return -1;
}

tm_redis *tm_redis_connect(const tm_redis_config *cfg, char *err, size_t errlen)
{
    tm_redis *c = calloc(1, sizeof *c);
    if (c == NULL || (c->reader = redisReaderCreate()) == NULL) {
        seterr(err, errlen, "out of memory");
        free(c);
        return NULL;
    }
    c->fd = open_socket(cfg, err, errlen);
    if (c->fd < 0 || (cfg->tls && tls_start(c, cfg, err, errlen) != 0)
        || handshake(c, &cfg->url, err, errlen) != 0) {
        tm_redis_free(c);
        return NULL;
    }
    return c;
}

int tm_redis_append(tm_redis *c, int argc, const char **argv, const size_t *lens)
{
    char *cmd;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0) {
        return -1;
    }
    if (c->out_len + (size_t) n > c->out_cap) {
        size_t cap = (c->out_cap ? c->out_cap : 4096);
        while (cap < c->out_len + (size_t) n) {
            cap *= 2;
        }
        char *p = realloc(c->out, cap);
        if (p == NULL) {
            redisFreeCommand(cmd);
            return -1;
        }
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, cmd, (size_t) n);
    c->out_len += (size_t) n;
    redisFreeCommand(cmd);
    return 0;
}

static int fail_io(tm_redis *c, const char *what, int ret)
{
    if (c->ssl) {
        int e = SSL_get_error(c->ssl, ret);
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) {
            seterr(c->err, sizeof c->err, "%s: the server closed the connection", what);
        } else if (e == SSL_ERROR_SSL) {
            seterr(c->err, sizeof c->err, "%s: %s", what, ssl_reason("TLS error"));
        } else {
            seterr(c->err, sizeof c->err, "%s: %s", what,
                   errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : strerror(errno));
        }
        ERR_clear_error();
    } else if (ret == 0) {
        seterr(c->err, sizeof c->err, "%s: the server closed the connection", what);
    } else {
        seterr(c->err, sizeof c->err, "%s: %s", what,
               errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : strerror(errno));
    }
    return -1;
}

static int flush_out(tm_redis *c)
{
    size_t off = 0;
    while (off < c->out_len) {
        size_t want = c->out_len - off;
        int chunk = want > (1u << 30) ? 1 << 30 : (int) want;
        errno = 0;
        ssize_t n = c->ssl ? SSL_write(c->ssl, c->out + off, chunk)
                           : send(c->fd, c->out + off, (size_t) chunk, MSG_NOSIGNAL);
        if (n <= 0) {
            if (!c->ssl && n < 0 && errno == EINTR) {
                continue;
            }
            c->out_len = 0;
            return fail_io(c, "send", (int) n);
        }
        off += (size_t) n;
    }
    c->out_len = 0;
    return 0;
}

int tm_redis_reply(tm_redis *c, redisReply **reply)
{
    char buf[16384];
    void *r = NULL;
    *reply = NULL;
    if (c->err[0] || flush_out(c) != 0) {
        return -1;
    }
    for (;;) {
        if (redisReaderGetReply(c->reader, &r) != REDIS_OK) {
            seterr(c->err, sizeof c->err, "protocol error: %s", c->reader->errstr);
            return -1;
        }
        if (r) {
            *reply = r;
            return 0;
        }
        errno = 0;
        ssize_t n = c->ssl ? SSL_read(c->ssl, buf, sizeof buf) : recv(c->fd, buf, sizeof buf, 0);
        if (n <= 0) {
            if (!c->ssl && n < 0 && errno == EINTR) {
                continue;
            }
            return fail_io(c, "receive", (int) n);
        }
        if (redisReaderFeed(c->reader, buf, (size_t) n) != REDIS_OK) {
            seterr(c->err, sizeof c->err, "out of memory");
            return -1;
        }
    }
}

redisReply *tm_redis_command(tm_redis *c, int argc, const char **argv, const size_t *lens)
{
    redisReply *r;
    if (tm_redis_append(c, argc, argv, lens) != 0) {
        seterr(c->err, sizeof c->err, "out of memory");
        return NULL;
    }
    return tm_redis_reply(c, &r) == 0 ? r : NULL;
}

const char *tm_redis_errstr(const tm_redis *c)
{
    return c->err;
}

void tm_redis_free(tm_redis *c)
{
    if (c == NULL) {
        return;
    }
    if (c->ssl) {
        SSL_free(c->ssl);   /* no close_notify: the socket closes anyway */
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    if (c->reader) {
        redisReaderFree(c->reader);
    }
    free(c->out);
    free(c);
}
