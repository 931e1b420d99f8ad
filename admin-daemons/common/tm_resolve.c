#include "tm_resolve.h"
#include "tm_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* After a failed lookup, the next one; between two lookups, at least this
 * (a burst of refresh requests costs one query); a failure is logged at
 * most this often; the start waits this long for the first answer. */
enum { RETRY_S = 1, MIN_GAP_S = 1, WARN_EVERY_S = 30, START_WAIT_S = 2 };

struct tm_resolver {
    char what[32];
    char host[256];
    char port[8];
    long every;
    pthread_mutex_t lock;     /* list, asked, stop, attempted */
    pthread_cond_t wake;      /* stop or refresh asked, or the first attempt done */
    tm_addr_list list;
    int asked, stop, attempted;
    int threaded;             /* a name: the thread runs */
    pthread_t thread;
};

int tm_is_ip(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static time_t monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* One getaddrinfo (numeric only for an IP address): 1 when the addresses
 * changed, 0 when not, -1 with err filled when it failed (the last
 * addresses are kept). */
static int lookup(tm_resolver *r, char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = tm_is_ip(r->host) ? AI_NUMERICHOST : 0 }, *ai = NULL;
    int gai = getaddrinfo(r->host, r->port, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", r->host,
                 gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
        return -1;
    }
    tm_addr_list got;
    memset(&got, 0, sizeof got);   /* compared whole below */
    for (struct addrinfo *i = ai; i && got.n < TM_ADDRS_MAX; i = i->ai_next) {
        if (i->ai_addrlen <= sizeof got.sa[0]) {
            memcpy(&got.sa[got.n], i->ai_addr, i->ai_addrlen);
            got.len[got.n++] = i->ai_addrlen;
        }
    }
    freeaddrinfo(ai);
    if (got.n == 0) {
        snprintf(err, errlen, "cannot resolve %s: no usable address", r->host);
        return -1;
    }
    pthread_mutex_lock(&r->lock);
    int changed = memcmp(&r->list, &got, sizeof got) != 0;
    memcpy(&r->list, &got, sizeof got);   /* padding too: compared next time */
    pthread_mutex_unlock(&r->lock);
    return changed;
}

/* One lookup, logged: a failure at most once per WARN_EVERY_S. 1 on success. */
static int lookup_logged(tm_resolver *r, time_t *quiet_until)
{
    char err[400];
    int c = lookup(r, err, sizeof err);
    if (c < 0) {
        time_t now = monotonic_s();
        if (now >= *quiet_until) {
            TM_WARN("%s: %s (retrying; the last addresses found, if any, stay in use)",
                    r->what, err);
            *quiet_until = now + WARN_EVERY_S;
        }
        return 0;
    }
    if (c == 1) {
        TM_INFO("%s: %s resolved (new addresses)", r->what, r->host);
    }
    *quiet_until = 0;
    return 1;
}

static void *loop(void *arg)
{
    tm_resolver *r = arg;
    time_t quiet_until = 0;
    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        r->asked = 0;
        pthread_mutex_unlock(&r->lock);
        int ok = lookup_logged(r, &quiet_until);
        pthread_mutex_lock(&r->lock);
        r->attempted = 1;
        pthread_cond_broadcast(&r->wake);
        struct timespec next, earliest;
        clock_gettime(CLOCK_MONOTONIC, &next);
        earliest = next;
        next.tv_sec += ok ? r->every : RETRY_S;
        earliest.tv_sec += MIN_GAP_S;
        /* until the period ends, or a refresh asked once MIN_GAP_S passed */
        while (!r->stop) {
            const struct timespec *until = r->asked && earliest.tv_sec < next.tv_sec ? &earliest : &next;
            if (pthread_cond_timedwait(&r->wake, &r->lock, until) == ETIMEDOUT) {
                break;
            }
        }
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static int start_thread(tm_resolver *r)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        return -1;
    }
    int bad = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0
              || pthread_cond_init(&r->wake, &ca) != 0;
    pthread_condattr_destroy(&ca);
    if (bad) {
        return -1;
    }
    /* signals are the main thread's (the analytics worker waits for them
     * in sigsuspend): the thread starts with all of them blocked */
    sigset_t all, orig;
    sigfillset(&all);
    if (pthread_sigmask(SIG_BLOCK, &all, &orig) != 0) {
        pthread_cond_destroy(&r->wake);
        return -1;
    }
    int made = pthread_create(&r->thread, NULL, loop, r) == 0;
    pthread_sigmask(SIG_SETMASK, &orig, NULL);
    if (!made) {
        pthread_cond_destroy(&r->wake);
        return -1;
    }
    r->threaded = 1;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += START_WAIT_S;
    pthread_mutex_lock(&r->lock);
    while (!r->attempted && pthread_cond_timedwait(&r->wake, &r->lock, &until) != ETIMEDOUT) {
    }
    pthread_mutex_unlock(&r->lock);
    return 0;
}

tm_resolver *tm_resolver_start(const char *what, const char *host, int port, long every_s,
                               char *err, size_t errlen)
{
    tm_resolver *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (strlen(host) >= sizeof r->host || port < 0 || port > 65535) {
        snprintf(err, errlen, "%s: bad host or port", what);
        free(r);
        return NULL;
    }
    snprintf(r->what, sizeof r->what, "%s", what);
    snprintf(r->host, sizeof r->host, "%s", host);
    snprintf(r->port, sizeof r->port, "%d", port);
    r->every = every_s > 0 ? every_s : 1;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        snprintf(err, errlen, "cannot create a mutex");
        free(r);
        return NULL;
    }
    if (tm_is_ip(host)) {
        if (lookup(r, err, errlen) < 0) {   /* numeric: no DNS query */
            tm_resolver_stop(r);
            return NULL;
        }
        return r;
    }
    if (start_thread(r) != 0) {
        snprintf(err, errlen, "cannot start the thread resolving %s", host);
        tm_resolver_stop(r);
        return NULL;
    }
    return r;
}

void tm_resolver_get(tm_resolver *r, tm_addr_list *out)
{
    pthread_mutex_lock(&r->lock);
    *out = r->list;
    pthread_mutex_unlock(&r->lock);
}

const char *tm_resolver_host(const tm_resolver *r)
{
    return r->host;
}

void tm_resolver_refresh(tm_resolver *r)
{
    if (!r->threaded) {
        return;
    }
    pthread_mutex_lock(&r->lock);
    r->asked = 1;
    pthread_cond_broadcast(&r->wake);
    pthread_mutex_unlock(&r->lock);
}

void tm_resolver_stop(tm_resolver *r)
{
    if (r == NULL) {
        return;
    }
    if (r->threaded) {
        pthread_mutex_lock(&r->lock);
        r->stop = 1;
        pthread_cond_broadcast(&r->wake);
        pthread_mutex_unlock(&r->lock);
        pthread_join(r->thread, NULL);
        pthread_cond_destroy(&r->wake);
    }
    pthread_mutex_destroy(&r->lock);
    free(r);
}
