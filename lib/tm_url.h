/* The Redis URL, read the same way by the admin daemons (REDIS_URL) and the
 * nginx module (togglemaster_redis), so both mean the same server, user and
 * database:
 *
 *   redis://[[user]:password@]host[:port][/db]     plain TCP
 *   rediss://[[user]:password@]host[:port][/db]    TLS
 *   host[:port]                                     as redis://host[:port]
 *   unix:/path/to/redis.sock                        a local socket, db 0
 *
 * - userinfo: "user:password" sends AUTH user password (Redis 6 ACLs);
 *   ":password" or "password" (no colon, as redis-cli reads it) sends
 *   AUTH password. Both are %XX-decoded, so a password may hold '@', ':'
 *   or '/' written as %40, %3A, %2F. A user without a password, an empty
 *   password, or a control character (after decoding) is refused.
 * - host: a name, an IPv4 address, or an IPv6 address in brackets
 *   ("[::1]"); the brackets are not kept in host.
 * - port: 1 to 65535, default 6379.
 * - db: "/N" selects database N (0 to TM_REDIS_DB_MAX) with SELECT; "" or
 *   "/" is database 0. Nothing may follow (no query, no fragment).
 */
#ifndef TM_URL_H
#define TM_URL_H

#include <stddef.h>

#define TM_REDIS_DB_MAX 65535

typedef struct {
    int tls;                 /* rediss:// */
    char host[256];          /* empty for a unix socket */
    int port;
    char unix_path[108];     /* sizeof sun_path; empty for TCP */
    char user[256];          /* empty: AUTH with the password alone */
    char password[256];      /* empty: no AUTH */
    int db;
} tm_redis_url;

/* Parses url[0..len) into *out. 0 on success; -1 with a message in err
 * (errlen bytes, NUL-terminated, never holding the password) when it is
 * malformed. */
int tm_redis_url_parse(const char *url, size_t len, tm_redis_url *out,
                       char *err, size_t errlen);

/* The URL without its password, for logs: "rediss://user:***@host:port/db",
 * "redis://host:port/0", "unix:/path". Truncated to buflen - 1 bytes. */
void tm_redis_url_describe(const tm_redis_url *u, char *buf, size_t buflen);

#endif
