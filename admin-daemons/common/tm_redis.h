/* The admin daemons' Redis connection: blocking, with timeouts, over plain
 * TCP, a unix socket or TLS (OpenSSL, certificate and server name checked),
 * sending AUTH [user] password and SELECT db from the URL (lib/tm_url.h)
 * before anything else. hiredis 0.14 (Debian 12) has no TLS, so hiredis only
 * formats commands (redisFormatCommandArgv) and parses replies (its reader);
 * the bytes go through this file. One connection per thread. */
#ifndef TM_REDIS_H
#define TM_REDIS_H
#include "tm_resolve.h"
#include "tm_url.h"

#include <hiredis/hiredis.h>
#include <openssl/ssl.h>

/* What every connection of the process uses; made once at start. */
typedef struct {
    tm_redis_url url;
    char where[600];          /* the URL without its password, for logs */
    SSL_CTX *tls;             /* rediss:// only */
    char server_name[256];    /* what the certificate must name */
    int connect_ms;           /* TCP connect, then TLS handshake */
    int io_ms;                /* each send or receive */
    tm_resolver *addrs;       /* TCP only: the host's addresses (tm_resolve.h) */
} tm_redis_config;

/* url as REDIS_URL; ca_file (PEM bundle; NULL or "": the system's CAs) and
 * server_name (NULL or "": the URL's host) matter for rediss:// only and are
 * refused for redis://. An IP address as host is converted here (no DNS);
 * a name gets a resolver thread (tm_resolve.h) looking it up every
 * resolve_every_s seconds. 0, or -1 with err filled (never the password). */
int tm_redis_config_init(tm_redis_config *cfg, const char *url, const char *ca_file,
                         const char *server_name, long resolve_every_s,
                         char *err, size_t errlen);
/* Stops the resolver thread too. */
void tm_redis_config_free(tm_redis_config *cfg);

typedef struct tm_redis tm_redis;

/* Connects, handshakes, authenticates and selects the database. NULL with
 * err saying which step failed and why ("AUTH failed: WRONGPASS ...",
 * "TLS: certificate verify failed: self-signed certificate ..."). Uses the
 * addresses the resolver found and never resolves: without any it fails at
 * once ("redis host ... not resolved yet"); when it cannot connect to them,
 * it asks the resolver to look the name up again. */
tm_redis *tm_redis_connect(const tm_redis_config *cfg, char *err, size_t errlen);

/* Queues a command (pipelining); sent by the next tm_redis_reply. 0 / -1. */
int tm_redis_append(tm_redis *c, int argc, const char **argv, const size_t *lens);

/* Sends what is queued and reads the next reply (freeReplyObject it).
 * 0, or -1 when the connection failed (tm_redis_errstr says why; the
 * connection is then unusable). An error reply is a reply. */
int tm_redis_reply(tm_redis *c, redisReply **reply);

/* append + reply: the reply or NULL (connection failed). */
redisReply *tm_redis_command(tm_redis *c, int argc, const char **argv, const size_t *lens);

/* Why the connection failed, "" while it has not. */
const char *tm_redis_errstr(const tm_redis *c);

void tm_redis_free(tm_redis *c);
#endif
