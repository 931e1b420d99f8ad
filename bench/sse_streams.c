/*
 * bench/sse.pl's stream holder: opens N event streams to one nginx on
 * 127.0.0.1 and keeps them, reading every one through epoll, so that the
 * reader is not what a fan-out measurement measures. Commands on stdin,
 * one JSON line answered to each:
 *
 *   (start)   {"open":N,"secs":s}   once every stream has its header
 *   arm       {"armed":1}, then reads until every open stream had an
 *             "event: message" since, or 10 s passed:
 *             {"got":n,"first":t,"last":t}  (unix seconds, the clock of
 *             Time::HiRes::time, at the read that brought each event)
 *   quit
 *
 *   sse_streams <port> <path with token> <N>
 */

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define TAIL  16   /* bytes kept from one read to find a mark split over two */

typedef struct {
    int       fd;
    unsigned  head:1;     /* the response header is in */
    unsigned  ok:1;       /* ... and says 200 */
    unsigned  event:1;    /* an event came since "arm" */
    unsigned  dead:1;
    size_t    tlen;
    char      tail[TAIL];
} stream_t;

static stream_t  *streams;
static int        nstreams, ep;


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


/* Whether mark is in what the stream read, across the tail of its last
 * read; keeps the new tail. */
static int
seen(stream_t *s, const char *data, size_t n, const char *mark)
{
    char    buf[TAIL + 4096];
    size_t  len, keep;
    int     found;

    memcpy(buf, s->tail, s->tlen);
    memcpy(buf + s->tlen, data, n);
    len = s->tlen + n;
    found = memmem(buf, len, mark, strlen(mark)) != NULL;
    keep = len < TAIL ? len : TAIL;
    memcpy(s->tail, buf + len - keep, keep);
    s->tlen = keep;
    return found;
}


/* Reads what every ready stream has; returns how many events arrived
 * (armed: the first per stream counts) and notes when the last did. */
static int
pump(int timeout_ms, int armed, double *first, double *last)
{
    struct epoll_event  evs[1024];
    char                buf[4096];
    ssize_t             n;
    int                 i, k, got;
    stream_t           *s;

    got = 0;
    k = epoll_wait(ep, evs, 1024, timeout_ms);

    for (i = 0; i < k; i++) {
        s = &streams[evs[i].data.u32];

        for ( ;; ) {
            n = recv(s->fd, buf, sizeof(buf), 0);

            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                break;
            }

            if (n <= 0) {
                s->dead = 1;
                epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
                break;
            }

            if (!s->head) {
                if (s->tlen == 0 && n >= 12 && memcmp(buf, "HTTP/1.1 200", 12) == 0) {
                    s->ok = 1;
                }
                s->head = seen(s, buf, n, "\r\n\r\n");
                continue;
            }

            if (armed && !s->event && seen(s, buf, n, "event: message")) {
                s->event = 1;
                got++;
                *last = now();
                if (*first == 0) {
                    *first = *last;
                }
            }
        }
    }

    return got;
}


static int
open_streams(int port, const char *path)
{
    struct sockaddr_in  sin;
    struct epoll_event  ev;
    char                req[8192];
    int                 i, fd, len, heads;
    double              t0, f = 0, l = 0;

    len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Accept: text/event-stream\r\n\r\n", path);
    if (len <= 0 || len >= (int) sizeof(req)) {
        return -1;
    }

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t0 = now();

    for (i = 0; i < nstreams; i++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *) &sin, sizeof(sin)) < 0
            || send(fd, req, len, 0) != len
            || fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
        {
            perror("stream");
            return -1;
        }

        streams[i].fd = fd;
        ev.events = EPOLLIN;
        ev.data.u32 = i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            perror("epoll_ctl");
            return -1;
        }

        /* let nginx accept: its backlog is finite */
        if (i % 256 == 255) {
            pump(0, 0, &f, &l);
        }
    }

    for ( ;; ) {
        heads = 0;
        for (i = 0; i < nstreams; i++) {
            heads += streams[i].head || streams[i].dead;
        }
        if (heads == nstreams || now() - t0 > 120) {
            break;
        }
        pump(100, 0, &f, &l);
    }

    heads = 0;
    for (i = 0; i < nstreams; i++) {
        heads += streams[i].ok && !streams[i].dead;
    }

    printf("{\"open\":%d,\"secs\":%.2f}\n", heads, now() - t0);
    fflush(stdout);
    return 0;
}


int
main(int argc, char **argv)
{
    struct rlimit  rl;
    char           line[64];
    int            i, want, got;
    double         t0, first, last;

    if (argc != 4 || (nstreams = atoi(argv[3])) <= 0) {
        fprintf(stderr, "usage: sse_streams <port> <path> <N>\n");
        return 2;
    }

    rl.rlim_cur = rl.rlim_max = nstreams + 64;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        perror("setrlimit");
        return 1;
    }

    streams = calloc(nstreams, sizeof(stream_t));
    ep = epoll_create1(0);
    if (streams == NULL || ep < 0) {
        perror("setup");
        return 1;
    }

    if (open_streams(atoi(argv[1]), argv[2]) != 0) {
        return 1;
    }

    while (fgets(line, sizeof(line), stdin)) {
        if (strncmp(line, "quit", 4) == 0) {
            break;
        }

        if (strncmp(line, "arm", 3) != 0) {
            continue;
        }

        want = 0;
        for (i = 0; i < nstreams; i++) {
            streams[i].event = 0;
            want += streams[i].ok && !streams[i].dead;
        }

        printf("{\"armed\":1}\n");
        fflush(stdout);

        got = 0;
        first = last = 0;
        t0 = now();

        while (got < want && now() - t0 < 10) {
            got += pump(100, 1, &first, &last);
        }

        printf("{\"got\":%d,\"first\":%.6f,\"last\":%.6f}\n", got, first, last);
        fflush(stdout);
    }

    return 0;
}
