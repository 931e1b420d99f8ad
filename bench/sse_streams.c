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
 *   floor     the same without nginx, for a ratio measured in the same
 *             run: a child process writes one event-sized chunk to each
 *             of N other loopback connections, kept open from the start,
 *             one send() each, and this reads them as it reads streams:
 *             {"got":n,"first":t,"last":t,"t0":t,"send_ms":ms} (t0: when
 *             the child was told; send_ms: the child's loop alone)
 *   quit
 *
 * With a probe path, "arm" also asks nginx for it on one keep-alive
 * connection, a request as soon as the answer before came, and adds
 * {"probes":n,"probe_max_ms":ms}: how long the worker's other requests
 * wait while it writes the streams.
 *
 *   sse_streams <port> <path with token> <N> [probe path]
 */

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
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

/* streams[0, n): nginx's; streams[n, 2n): the floor's */
static stream_t  *streams;
static int        port;
static int        nstreams, ep;
static int        floor_cmd = -1, floor_res = -1;

#define PROBE  0xffffffffu   /* the probe's epoll id */

static struct {
    int       fd;
    char      req[512];
    int       len;
    size_t    got, want;     /* bytes of the answer read, expected */
    double    sent, max;
    int       n;
    char      buf[4096];
} probe = { .fd = -1 };
static pid_t      floor_pid;


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


static void
probe_send(void)
{
    probe.got = 0;
    probe.want = 0;
    probe.sent = now();
    if (send(probe.fd, probe.req, probe.len, 0) != probe.len) {
        perror("probe send");
    }
}


/* The probe's answer, read; the next request once it is whole. */
static void
probe_read(void)
{
    ssize_t  n;
    char    *end, *cl;
    double   t;

    for ( ;; ) {
        n = recv(probe.fd, probe.buf + probe.got, sizeof(probe.buf) - 1 - probe.got, 0);
        if (n <= 0) {
            return;
        }

        probe.got += n;
        probe.buf[probe.got] = '\0';
        end = strstr(probe.buf, "\r\n\r\n");
        if (end == NULL) {
            continue;
        }

        if (probe.want == 0) {
            cl = strcasestr(probe.buf, "Content-Length: ");
            probe.want = (end - probe.buf) + 4 + (cl ? strtoul(cl + 16, NULL, 10) : 0);
        }

        if (probe.got >= probe.want) {
            t = (now() - probe.sent) * 1000;
            probe.max = t > probe.max ? t : probe.max;
            probe.n++;
            probe_send();
        }
    }
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
        if (evs[i].data.u32 == PROBE) {
            probe_read();
            continue;
        }

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


/* The child of the floor: one event-sized chunk to each connection per
 * byte it is sent, and the loop's duration back. */
static void
floor_child(int *fds, int n, int cmd, int res)
{
    char    chunk[160], c;
    int     i;
    double  t0, ms;

    memset(chunk, 'x', sizeof(chunk));
    memcpy(chunk, "9a\r\nid: 1\nevent: message\ndata: ", 32);

    while (read(cmd, &c, 1) == 1) {
        t0 = now();
        for (i = 0; i < n; i++) {
            if (send(fds[i], chunk, sizeof(chunk), 0) != (ssize_t) sizeof(chunk)) {
                perror("floor send");
            }
        }
        ms = (now() - t0) * 1000;
        if (write(res, &ms, sizeof(ms)) != sizeof(ms)) {
            break;
        }
    }

    _exit(0);
}


/* The probe's connection (keep-alive), or -1. */
static int
probe_open(void)
{
    struct sockaddr_in  sin;
    struct epoll_event  ev;
    int                 fd;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    ev.events = EPOLLIN;
    ev.data.u32 = PROBE;

    if (fd < 0 || connect(fd, (struct sockaddr *) &sin, sizeof(sin)) < 0
        || fcntl(fd, F_SETFL, O_NONBLOCK) < 0
        || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
    {
        perror("probe");
        return -1;
    }

    return fd;
}


/* Reads until every stream of [from, to) that is open had an event since
 * now, or 10 s passed; prints what came, when. */
static void
measure(int from, int to, int floor)
{
    int     i, want, got;
    double  t0, first, last, ms;
    char    c = 'g';

    want = 0;
    for (i = 0; i < 2 * nstreams; i++) {
        streams[i].event = 0;
        if (i >= from && i < to) {
            want += streams[i].ok && !streams[i].dead;
        }
    }

    probe.n = 0;
    probe.max = 0;

    if (!floor) {
        if (probe.fd >= 0) {
            probe_send();
        }

        printf("{\"armed\":1}\n");
        fflush(stdout);
    }

    got = 0;
    first = last = 0;
    t0 = now();
    ms = 0;

    if (floor && write(floor_cmd, &c, 1) != 1) {
        perror("floor");
    }

    while (got < want && now() - t0 < 10) {
        got += pump(100, 1, &first, &last);
    }

    if (floor && read(floor_res, &ms, sizeof(ms)) != sizeof(ms)) {
        perror("floor result");
    }

    /* the answer under way is let go: the next "arm" opens another */
    if (!floor && probe.fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, probe.fd, NULL);
        close(probe.fd);
        probe.fd = probe_open();
    }

    printf("{\"got\":%d,\"first\":%.6f,\"last\":%.6f,\"t0\":%.6f,"
           "\"send_ms\":%.3f,\"probes\":%d,\"probe_max_ms\":%.3f}\n",
           got, first, last, t0, ms, probe.n, probe.max);
    fflush(stdout);
}


/* The floor's reading process: N loopback connections to a child that
 * holds their sending ends (three processes, as one may hold only about N
 * descriptors), then one measurement per byte from the parent. */
static void
floor_reader(int parent)
{
    struct sockaddr_in  sin;
    struct epoll_event  ev;
    socklen_t           len = sizeof(sin);
    int                 ls, i, fd, one = 1, cmd[2], res[2];
    int                *fds;
    char                c;

    ep = epoll_create1(0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ls = socket(AF_INET, SOCK_STREAM, 0);
    if (ep < 0 || ls < 0 || bind(ls, (struct sockaddr *) &sin, sizeof(sin)) < 0
        || listen(ls, 4096) < 0 || getsockname(ls, (struct sockaddr *) &sin, &len) < 0
        || pipe(cmd) < 0 || pipe(res) < 0 || (floor_pid = fork()) < 0)
    {
        perror("floor");
        _exit(1);
    }

    if (floor_pid == 0) {
        /* the sending ends */
        close(parent);
        close(cmd[1]);
        close(res[0]);
        fds = calloc(nstreams, sizeof(int));
        for (i = 0; fds && i < nstreams; i++) {
            if ((fds[i] = accept(ls, NULL, NULL)) < 0
                || setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
            {
                perror("floor accept");
                _exit(1);
            }
        }
        close(ls);
        floor_child(fds, nstreams, cmd[0], res[1]);
    }

    close(ls);
    close(cmd[0]);
    close(res[1]);
    floor_cmd = cmd[1];
    floor_res = res[0];

    for (i = 0; i < nstreams; i++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *) &sin, sizeof(sin)) < 0
            || fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
        {
            perror("floor connection");
            _exit(1);
        }

        streams[nstreams + i].fd = fd;
        streams[nstreams + i].head = 1;
        streams[nstreams + i].ok = 1;
        ev.events = EPOLLIN;
        ev.data.u32 = nstreams + i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            perror("epoll_ctl");
            _exit(1);
        }
    }

    while (read(parent, &c, 1) == 1) {
        measure(nstreams, 2 * nstreams, 1);
    }

    close(floor_cmd);
    waitpid(floor_pid, NULL, 0);
    _exit(0);
}


int
main(int argc, char **argv)
{
    struct rlimit  rl;
    char           line[64];
    int            reader[2];
    pid_t          reader_pid;

    if (argc < 4 || argc > 5 || (nstreams = atoi(argv[3])) <= 0) {
        fprintf(stderr, "usage: sse_streams <port> <path> <N> [probe path]\n");
        return 2;
    }

    /* nginx's streams here; the floor's in two other processes */
    rl.rlim_cur = rl.rlim_max = nstreams + 64;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        perror("setrlimit");
        return 1;
    }

    streams = calloc(2 * nstreams, sizeof(stream_t));
    if (streams == NULL || pipe(reader) < 0 || (reader_pid = fork()) < 0) {
        perror("setup");
        return 1;
    }

    if (reader_pid == 0) {
        close(reader[1]);
        floor_reader(reader[0]);
    }

    close(reader[0]);
    ep = epoll_create1(0);
    port = atoi(argv[1]);
    if (ep < 0 || open_streams(port, argv[2]) != 0) {
        return 1;
    }

    if (argc == 5) {
        probe.len = snprintf(probe.req, sizeof(probe.req),
                             "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", argv[4]);
        if (probe.len <= 0 || probe.len >= (int) sizeof(probe.req)
            || (probe.fd = probe_open()) < 0)
        {
            return 1;
        }
    }

    while (fgets(line, sizeof(line), stdin)) {
        if (strncmp(line, "quit", 4) == 0) {
            break;

        } else if (strncmp(line, "arm", 3) == 0) {
            measure(0, nstreams, 0);

        } else if (strncmp(line, "floor", 5) == 0) {
            /* the reading process answers on the same stdout */
            if (write(reader[1], "f", 1) != 1) {
                perror("floor");
            }
        }
    }

    close(reader[1]);
    waitpid(reader_pid, NULL, 0);
    return 0;
}
