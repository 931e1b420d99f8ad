/* Host names looked up off the request path. getaddrinfo may block for
 * seconds (a container DNS dropping a query costs a 5 s resolver timeout),
 * so a thread per name keeps a cache of its addresses current: it looks the
 * name up at start, every `every_s` seconds, and soon after a caller says a
 * connection to the cached addresses failed (tm_resolver_refresh). Request
 * threads only copy the cache, which never blocks on DNS. Used for REDIS_URL
 * (tm_redis.c) and DATABASE_URL (tm_db.c). */
#ifndef TM_RESOLVE_H
#define TM_RESOLVE_H
#include <stddef.h>
#include <sys/socket.h>

/* A few addresses are enough: a connect tries them in order. */
enum { TM_ADDRS_MAX = 4 };

typedef struct {
    int n;                    /* 0: none found yet */
    socklen_t len[TM_ADDRS_MAX];
    struct sockaddr_storage sa[TM_ADDRS_MAX];
} tm_addr_list;

typedef struct tm_resolver tm_resolver;

/* 1 when s is an IPv4 or IPv6 address in text (no lookup needed). */
int tm_is_ip(const char *s);

/* A cache for host:port. An IP address is converted at once and needs no
 * thread; a name gets a thread (every signal blocked: signals stay the main
 * thread's), and this waits up to 2 s for its first answer so that a quick
 * DNS serves the first request. what ("redis", "database") prefixes the
 * log lines. NULL with err filled on failure (cannot start a thread, an IP
 * address that does not convert). */
tm_resolver *tm_resolver_start(const char *what, const char *host, int port, long every_s,
                               char *err, size_t errlen);

/* The addresses last found (out->n == 0 while none). Never blocks on DNS. */
void tm_resolver_get(tm_resolver *r, tm_addr_list *out);

/* The host as given. */
const char *tm_resolver_host(const tm_resolver *r);

/* A connection to the cached addresses failed: look the name up again soon
 * (at most one lookup a second however often this is called). Returns at
 * once; a no-op for an IP address. */
void tm_resolver_refresh(tm_resolver *r);

/* Stops the thread (a lookup in progress ends within the system resolver's
 * own timeouts) and frees. NULL is fine. */
void tm_resolver_stop(tm_resolver *r);
#endif
