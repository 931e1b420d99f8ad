/*
 * Evaluation events. Each evaluation appends one event, already serialized
 * and escaped, to the message being filled in this worker's buffer; a
 * message holds up to 1000 events and stays under SQS's 256 KiB, in the
 * batch envelope of docs/events.md. Messages leave by count (the batch
 * size) and by time, up to 10 per SendMessageBatch (sqs.c), one request at
 * a time. Failed messages are retried with backoff, then dropped.
 *
 * Everything is bounded by togglemaster_events_buffer (events buffered,
 * in flight and waiting for a retry) and togglemaster_events_buffer_size
 * (the bytes of their message buffers); past either new events are
 * dropped. Every
 * event is either sent or counted as dropped with a reason.
 *
 * The request path does no syscall: ids come from a per-worker ChaCha20
 * keystream seeded with RAND_bytes() at worker start, timestamps from
 * nginx's cached time.
 */

#include "ngx_http_togglemaster_module.h"
#include "ngx_http_togglemaster_creds.h"
#include "tm_events.h"
#include "tm_aws.h"

#include <openssl/rand.h>


#define NGX_HTTP_TOGGLEMASTER_SQS_MAX        262144  /* message and request */
#define NGX_HTTP_TOGGLEMASTER_MSG_MAX        (NGX_HTTP_TOGGLEMASTER_SQS_MAX \
                                              - 1024)
#define NGX_HTTP_TOGGLEMASTER_MSG_EVENTS     TM_EVENTS_MAX_PER_MESSAGE
#define NGX_HTTP_TOGGLEMASTER_TICK           1000    /* ms, longest sleep */
#define NGX_HTTP_TOGGLEMASTER_BACKOFF_BASE   200

/* one event, raw: fixed parts + two escaped strings of at most 1024 bytes */
/* user and flag at their longest, escaped; variant and environment names */
#define NGX_HTTP_TOGGLEMASTER_EVENT_MAX                                      \
    (512 + 2 * 6 * TM_EVENT_FIELD_MAX + 2 * 6 * TM_NAME_MAX)

#define NGX_HTTP_TOGGLEMASTER_PREFIX         "{\\\"v\\\":1,\\\"events\\\":["
#define NGX_HTTP_TOGGLEMASTER_PREFIX_RAW     (sizeof("{\"v\":1,\"events\":[") - 1)


typedef struct {
    ngx_http_togglemaster_main_conf_t  *conf;
    ngx_log_t                          *log;

    ngx_http_togglemaster_msg_t        *cur;        /* being filled */
    ngx_http_togglemaster_msg_t        *ready;      /* sealed, oldest first */
    ngx_http_togglemaster_msg_t       **ready_tail;
    ngx_http_togglemaster_msg_t        *flight[TM_SQS_MAX_BATCH];
    ngx_uint_t                          nflight;

    ngx_uint_t                          buffered;   /* events held */
    size_t                              bytes;      /* their buffers */
    ngx_uint_t                          failures;   /* requests in a row */
    ngx_msec_t                          not_before; /* backoff */
    ngx_msec_t                          deadline;   /* exiting */

    ngx_event_t                         timer;
    ngx_event_t                         post;

    /* ChaCha20 keystream for event ids */
    uint32_t                            key[16];
    u_char                              block[64];
    ngx_uint_t                          used;

    time_t                              ts_sec;
    u_char                              ts[sizeof("2026-11-22T10:00:00")];

    u_char                              scratch[
                                            NGX_HTTP_TOGGLEMASTER_EVENT_MAX];

    unsigned                            on:1;
    unsigned                            exiting:1;
} ngx_http_togglemaster_events_t;


static ngx_http_togglemaster_events_t  ngx_http_togglemaster_ev;


static void ngx_http_togglemaster_events_flush(void);


static void
ngx_http_togglemaster_events_count(ngx_atomic_t *a, ngx_uint_t n)
{
    if (ngx_http_togglemaster_shm && n) {
        (void) ngx_atomic_fetch_add(a, n);
    }
}

#define ngx_http_togglemaster_events_stat(field, n)                         \
    if (ngx_http_togglemaster_shm) {                                         \
        ngx_http_togglemaster_events_count(                                  \
            &ngx_http_togglemaster_shm->events.field, n);                    \
    }


static void
ngx_http_togglemaster_events_gauge(void)
{
    if (ngx_http_togglemaster_shm
        && ngx_worker < NGX_HTTP_TOGGLEMASTER_MAX_WORKERS)
    {
        ngx_http_togglemaster_shm->workers[ngx_worker].pid = ngx_pid;
        ngx_http_togglemaster_shm->workers[ngx_worker].events_buffered =
            ngx_http_togglemaster_ev.buffered;
        ngx_http_togglemaster_shm->workers[ngx_worker].events_bytes =
            ngx_http_togglemaster_ev.bytes;
    }
}


static void
ngx_http_togglemaster_events_drop(ngx_uint_t reason, ngx_uint_t n)
{
    ngx_http_togglemaster_events_stat(dropped[reason], n);
}


/* ---- ids and timestamps ------------------------------------------------ */

#define NGX_HTTP_TOGGLEMASTER_ROTL(a, b)  (((a) << (b)) | ((a) >> (32 - (b))))

#define NGX_HTTP_TOGGLEMASTER_QR(a, b, c, d)                                 \
    a += b; d ^= a; d = NGX_HTTP_TOGGLEMASTER_ROTL(d, 16);                   \
    c += d; b ^= c; b = NGX_HTTP_TOGGLEMASTER_ROTL(b, 12);                   \
    a += b; d ^= a; d = NGX_HTTP_TOGGLEMASTER_ROTL(d, 8);                    \
    c += d; b ^= c; b = NGX_HTTP_TOGGLEMASTER_ROTL(b, 7)

static void
ngx_http_togglemaster_chacha_block(ngx_http_togglemaster_events_t *s)
{
    uint32_t    x[16];
    ngx_uint_t  i;

    ngx_memcpy(x, s->key, sizeof(x));

    for (i = 0; i < 10; i++) {
        NGX_HTTP_TOGGLEMASTER_QR(x[0], x[4], x[8], x[12]);
        NGX_HTTP_TOGGLEMASTER_QR(x[1], x[5], x[9], x[13]);
        NGX_HTTP_TOGGLEMASTER_QR(x[2], x[6], x[10], x[14]);
        NGX_HTTP_TOGGLEMASTER_QR(x[3], x[7], x[11], x[15]);
        NGX_HTTP_TOGGLEMASTER_QR(x[0], x[5], x[10], x[15]);
        NGX_HTTP_TOGGLEMASTER_QR(x[1], x[6], x[11], x[12]);
        NGX_HTTP_TOGGLEMASTER_QR(x[2], x[7], x[8], x[13]);
        NGX_HTTP_TOGGLEMASTER_QR(x[3], x[4], x[9], x[14]);
    }

    for (i = 0; i < 16; i++) {
        x[i] += s->key[i];
    }

    ngx_memcpy(s->block, x, sizeof(s->block));

    /* 64-bit block counter */
    if (++s->key[12] == 0) {
        s->key[13]++;
    }

    s->used = 0;
}


static ngx_int_t
ngx_http_togglemaster_chacha_seed(ngx_http_togglemaster_events_t *s)
{
    static const uint32_t  sigma[4] = {
        0x61707865, 0x3320646e, 0x79622d32, 0x6b206574  /* "expand 32-byte k" */
    };

    ngx_memcpy(s->key, sigma, sizeof(sigma));

    /* key (8 words), counter (2, from 0) and nonce (2) */
    if (RAND_bytes((u_char *) &s->key[4], 32) != 1
        || RAND_bytes((u_char *) &s->key[14], 8) != 1)
    {
        return NGX_ERROR;
    }

    s->key[12] = 0;
    s->key[13] = 0;
    s->used = sizeof(s->block);

    return NGX_OK;
}


/* A random (version 4) UUID: 36 characters. */
static u_char *
ngx_http_togglemaster_uuid(ngx_http_togglemaster_events_t *s, u_char *p)
{
    u_char  b[16], hex[32];

    if (s->used + 16 > sizeof(s->block)) {
        ngx_http_togglemaster_chacha_block(s);
    }

    ngx_memcpy(b, s->block + s->used, 16);
    s->used += 16;

    b[6] = (u_char) ((b[6] & 0x0f) | 0x40);
    b[8] = (u_char) ((b[8] & 0x3f) | 0x80);

    ngx_hex_dump(hex, b, 16);

    p = ngx_cpymem(p, hex, 8);
    *p++ = '-';
    p = ngx_cpymem(p, hex + 8, 4);
    *p++ = '-';
    p = ngx_cpymem(p, hex + 12, 4);
    *p++ = '-';
    p = ngx_cpymem(p, hex + 16, 4);
    *p++ = '-';
    return ngx_cpymem(p, hex + 20, 12);
}


u_char *
ngx_http_togglemaster_events_uuid(u_char *p)
{
    return ngx_http_togglemaster_uuid(&ngx_http_togglemaster_ev, p);
}


/* RFC 3339, UTC, milliseconds: 2026-11-22T10:00:00.123Z */
static u_char *
ngx_http_togglemaster_timestamp(ngx_http_togglemaster_events_t *s, u_char *p)
{
    ngx_tm_t     tm;
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    if (tp->sec != s->ts_sec) {
        ngx_gmtime(tp->sec, &tm);
        (void) ngx_sprintf(s->ts, "%4d-%02d-%02dT%02d:%02d:%02d",
                           tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                           tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);
        s->ts_sec = tp->sec;
    }

    p = ngx_cpymem(p, s->ts, sizeof(s->ts) - 1);

    return ngx_sprintf(p, ".%03MZ", (ngx_msec_t) tp->msec);
}


u_char *
ngx_http_togglemaster_events_timestamp(u_char *p)
{
    return ngx_http_togglemaster_timestamp(&ngx_http_togglemaster_ev, p);
}


/* ---- the buffer -------------------------------------------------------- */

/* The capacity m needs for n more bytes (m NULL: a new message). */
static size_t
ngx_http_togglemaster_msg_cap(ngx_http_togglemaster_msg_t *m, size_t n)
{
    size_t  cap, len;

    /* a new message starts with 16 KB and the prefix (msg_new) */
    cap = m ? m->cap : 16384;
    len = m ? m->len : sizeof(NGX_HTTP_TOGGLEMASTER_PREFIX) - 1;

    if (len + n <= cap) {
        return cap;
    }

    return ngx_max(cap * 2, len + n);
}


static ngx_int_t
ngx_http_togglemaster_msg_reserve(ngx_http_togglemaster_msg_t *m, size_t n)
{
    u_char  *p;
    size_t   cap;

    if (m->len + n <= m->cap) {
        return NGX_OK;
    }

    cap = ngx_http_togglemaster_msg_cap(m, n);

    p = ngx_alloc(cap, ngx_http_togglemaster_ev.log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (m->data) {
        ngx_memcpy(p, m->data, m->len);
        ngx_free(m->data);
    }

    ngx_http_togglemaster_ev.bytes += cap - m->cap;
    m->data = p;
    m->cap = cap;

    return NGX_OK;
}


static ngx_http_togglemaster_msg_t *
ngx_http_togglemaster_msg_new(void)
{
    ngx_http_togglemaster_msg_t  *m;

    m = ngx_calloc(sizeof(ngx_http_togglemaster_msg_t),
                   ngx_http_togglemaster_ev.log);
    if (m == NULL) {
        return NULL;
    }

    if (ngx_http_togglemaster_msg_reserve(m, 16384) != NGX_OK) {
        ngx_free(m);
        return NULL;
    }

    m->len = ngx_cpymem(m->data, NGX_HTTP_TOGGLEMASTER_PREFIX,
                        sizeof(NGX_HTTP_TOGGLEMASTER_PREFIX) - 1) - m->data;
    m->raw = NGX_HTTP_TOGGLEMASTER_PREFIX_RAW;
    m->first = ngx_current_msec;

    return m;
}


static void
ngx_http_togglemaster_msg_free(ngx_http_togglemaster_msg_t *m)
{
    ngx_http_togglemaster_ev.bytes -= m->cap;
    ngx_free(m->data);
    ngx_free(m);
}


/* Closes the message being filled and queues it. */
static void
ngx_http_togglemaster_events_seal(ngx_http_togglemaster_events_t *s)
{
    ngx_http_togglemaster_msg_t  *m;

    m = s->cur;
    if (m == NULL) {
        return;
    }

    s->cur = NULL;

    /* room for "]}" was reserved with every event */
    m->data[m->len++] = ']';
    m->data[m->len++] = '}';
    m->raw += 2;

    m->next = NULL;
    *s->ready_tail = m;
    s->ready_tail = &m->next;
}


static void
ngx_http_togglemaster_events_post(ngx_http_togglemaster_events_t *s)
{
    if (!s->post.posted) {
        ngx_post_event(&s->post, &ngx_posted_events);
    }
}


/* Strings SQS refuses even in valid UTF-8: U+FFFE and U+FFFF. */
static ngx_uint_t
ngx_http_togglemaster_events_text(u_char *s, size_t len)
{
    u_char  *p, *last;

    if (!tm_text_valid((char *) s, len)) {
        return 0;
    }

    last = s + len;

    for (p = s; p + 2 < last; p++) {
        if (p[0] == 0xef && p[1] == 0xbf && (p[2] == 0xbe || p[2] == 0xbf)) {
            return 0;
        }
    }

    return 1;
}


/*
 * Called for every evaluation, on the request path: no syscall, no
 * allocation but the occasional growth of the message buffer. The strings
 * are copied: the request pool goes away.
 */
void
ngx_http_togglemaster_event(u_char *user, size_t ulen, u_char *flag,
    size_t flen, tm_decision *d, const char *variant, ngx_str_t *env)
{
    u_char                          *p;
    size_t                           raw, esc;
    ngx_http_togglemaster_msg_t     *m;
    ngx_http_togglemaster_events_t  *s = &ngx_http_togglemaster_ev;

    if (!s->on) {
        return;
    }

    ngx_http_togglemaster_events_stat(produced, 1);

    /* the worker would take such an event for poison and hold back the
     * whole message: they never leave the edge */
    if (ulen == 0) {
        ngx_http_togglemaster_events_drop(NGX_HTTP_TOGGLEMASTER_DROP_NO_USER,
                                          1);
        return;
    }

    if (ulen > TM_EVENT_FIELD_MAX || flen > TM_EVENT_FIELD_MAX) {
        ngx_http_togglemaster_events_drop(NGX_HTTP_TOGGLEMASTER_DROP_TOO_LONG,
                                          1);
        return;
    }

    if (flen == 0
        || !ngx_http_togglemaster_events_text(user, ulen)
        || !ngx_http_togglemaster_events_text(flag, flen))
    {
        ngx_http_togglemaster_events_drop(NGX_HTTP_TOGGLEMASTER_DROP_INVALID,
                                          1);
        return;
    }

    if (s->buffered >= s->conf->events_buffer) {
        ngx_http_togglemaster_events_drop(
            NGX_HTTP_TOGGLEMASTER_DROP_BUFFER_FULL, 1);
        return;
    }

    p = ngx_cpymem(s->scratch, "{\"event_id\":\"",
                   sizeof("{\"event_id\":\"") - 1);
    p = ngx_http_togglemaster_uuid(s, p);
    p = ngx_cpymem(p, "\",\"user_id\":", sizeof("\",\"user_id\":") - 1);
    p = ngx_http_togglemaster_json_str(p, user, ulen);
    p = ngx_cpymem(p, ",\"flag_name\":", sizeof(",\"flag_name\":") - 1);
    p = ngx_http_togglemaster_json_str(p, flag, flen);
    p = d->value ? ngx_cpymem(p, ",\"result\":true", 14)
                 : ngx_cpymem(p, ",\"result\":false", 15);
    p = ngx_cpymem(p, ",\"timestamp\":\"", sizeof(",\"timestamp\":\"") - 1);
    p = ngx_http_togglemaster_timestamp(s, p);
    *p++ = '"';

    if (variant) {
        /* a rule's variant name: text of at most TM_NAME_MAX bytes */
        p = ngx_cpymem(p, ",\"variant\":", sizeof(",\"variant\":") - 1);
        p = ngx_http_togglemaster_json_str(p, (u_char *) variant,
                                           ngx_strlen(variant));
    }

    /* absent: the default environment (docs/events.md); a name is at
     * most TM_NAME_MAX bytes of [A-Za-z0-9_.:-] */
    if (env && env->len && env->len <= TM_NAME_MAX) {
        p = ngx_cpymem(p, ",\"environment\":", sizeof(",\"environment\":") - 1);
        p = ngx_http_togglemaster_json_str(p, env->data, env->len);
    }

    p = ngx_sprintf(p, ",\"reason\":\"%s\"}", tm_reason_name(d->reason));

    raw = p - s->scratch;
    esc = raw + ngx_escape_json(NULL, s->scratch, raw);

    m = s->cur;

    if (m && (m->nevents >= NGX_HTTP_TOGGLEMASTER_MSG_EVENTS
              || m->raw + 1 + raw + 2 > NGX_HTTP_TOGGLEMASTER_MSG_MAX))
    {
        ngx_http_togglemaster_events_seal(s);
        ngx_http_togglemaster_events_post(s);
        m = NULL;
    }

    /* the byte budget, counted as allocated: what this event would add */
    if (s->bytes - (m ? m->cap : 0)
        + ngx_http_togglemaster_msg_cap(m, 1 + esc + 2)
        > s->conf->events_buffer_size)
    {
        ngx_http_togglemaster_events_drop(
            NGX_HTTP_TOGGLEMASTER_DROP_BUFFER_BYTES, 1);
        return;
    }

    if (m == NULL) {
        m = ngx_http_togglemaster_msg_new();
        if (m == NULL) {
            ngx_http_togglemaster_events_drop(
                NGX_HTTP_TOGGLEMASTER_DROP_NO_MEMORY, 1);
            return;
        }

        s->cur = m;
    }

    /* ',' + the event + "]}" at sealing */
    if (ngx_http_togglemaster_msg_reserve(m, 1 + esc + 2) != NGX_OK) {
        ngx_http_togglemaster_events_drop(NGX_HTTP_TOGGLEMASTER_DROP_NO_MEMORY,
                                          1);
        return;
    }

    if (m->nevents) {
        m->data[m->len++] = ',';
        m->raw++;
    }

    m->len = (u_char *) ngx_escape_json(m->data + m->len, s->scratch, raw)
             - m->data;
    m->raw += raw;
    m->nevents++;

    s->buffered++;
    ngx_http_togglemaster_events_gauge();

    if (m->nevents >= s->conf->events_batch) {
        ngx_http_togglemaster_events_seal(s);
        ngx_http_togglemaster_events_post(s);

    } else if (!s->timer.timer_set) {
        ngx_add_timer(&s->timer, ngx_min(s->conf->events_flush,
                                         NGX_HTTP_TOGGLEMASTER_TICK));
    }
}


void
ngx_http_togglemaster_event_bulk(u_char *user, size_t ulen, u_char *flag,
    size_t flen, tm_decision *d, const char *variant, ngx_str_t *env)
{
    ngx_http_togglemaster_events_t  *s = &ngx_http_togglemaster_ev;

    if (!s->on) {
        return;
    }

    if (s->conf->events_bulk & NGX_HTTP_TOGGLEMASTER_BULK_RAW) {
        ngx_http_togglemaster_event(user, ulen, flag, flen, d, variant, env);
    }

    if (s->conf->events_bulk & NGX_HTTP_TOGGLEMASTER_BULK_SUMMARY) {
        ngx_http_togglemaster_summary_count(flag, flen, d, variant, env,
                                            s->log);
    }
}


void
ngx_http_togglemaster_events_lost(ngx_uint_t reason, ngx_uint_t n)
{
    ngx_http_togglemaster_events_stat(produced, n);
    ngx_http_togglemaster_events_drop(reason, n);
}


/* Queues a whole message (summary.c's), raw JSON, standing for n events:
 * escaped into a message of its own, within the byte budget. */
void
ngx_http_togglemaster_events_queue_raw(u_char *raw, size_t len, ngx_uint_t n)
{
    size_t                           esc;
    ngx_http_togglemaster_msg_t     *m;
    ngx_http_togglemaster_events_t  *s = &ngx_http_togglemaster_ev;

    esc = len + ngx_escape_json(NULL, raw, len);

    if (s->bytes + esc > s->conf->events_buffer_size) {
        ngx_http_togglemaster_events_lost(
            NGX_HTTP_TOGGLEMASTER_DROP_BUFFER_BYTES, n);
        return;
    }

    m = ngx_calloc(sizeof(ngx_http_togglemaster_msg_t), s->log);
    if (m == NULL) {
        ngx_http_togglemaster_events_lost(NGX_HTTP_TOGGLEMASTER_DROP_NO_MEMORY,
                                          n);
        return;
    }

    m->data = ngx_alloc(esc, s->log);
    if (m->data == NULL) {
        ngx_free(m);
        ngx_http_togglemaster_events_lost(NGX_HTTP_TOGGLEMASTER_DROP_NO_MEMORY,
                                          n);
        return;
    }

    m->len = (u_char *) ngx_escape_json(m->data, raw, len) - m->data;
    m->cap = esc;
    m->raw = len;
    m->nevents = n;
    m->first = ngx_current_msec;

    s->bytes += esc;
    s->buffered += n;
    ngx_http_togglemaster_events_stat(produced, n);
    ngx_http_togglemaster_events_gauge();

    *s->ready_tail = m;
    s->ready_tail = &m->next;
    ngx_http_togglemaster_events_post(s);
}


/* ---- sending ----------------------------------------------------------- */

static void
ngx_http_togglemaster_events_drop_all(ngx_http_togglemaster_events_t *s,
    ngx_uint_t reason)
{
    ngx_uint_t                    n;
    ngx_http_togglemaster_msg_t  *m, *next;

    ngx_http_togglemaster_events_seal(s);

    n = 0;
    for (m = s->ready; m; m = next) {
        next = m->next;
        n += m->nevents;
        ngx_http_togglemaster_msg_free(m);
    }

    s->ready = NULL;
    s->ready_tail = &s->ready;

    /* messages in flight belong to sqs.c until it answers */
    s->buffered -= n;
    ngx_http_togglemaster_events_drop(reason, n);
    ngx_http_togglemaster_events_gauge();

    if (n) {
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "togglemaster: %ui evaluation events dropped: %s", n,
                      reason == NGX_HTTP_TOGGLEMASTER_DROP_SHUTDOWN
                      ? "worker exiting" : "cannot be sent");
    }
}


static void
ngx_http_togglemaster_events_arm(ngx_http_togglemaster_events_t *s)
{
    ngx_msec_t  now, at, delay;

    if (s->buffered == 0 && s->nflight == 0
        && ngx_http_togglemaster_summary_due() == 0)
    {
        if (s->timer.timer_set) {
            ngx_del_timer(&s->timer);
        }

        return;
    }

    /* never sleep long while holding events: an exiting worker must
     * notice it soon (this timer is what keeps it alive meanwhile) */
    now = ngx_current_msec;
    delay = NGX_HTTP_TOGGLEMASTER_TICK;

    if (s->cur) {
        at = s->cur->first + s->conf->events_flush;
        at = (ngx_msec_int_t) (at - now) > 0 ? at - now : 1;
        delay = ngx_min(delay, at);
    }

    if (ngx_http_togglemaster_summary_due()) {
        at = ngx_http_togglemaster_summary_due() + s->conf->events_flush;
        at = (ngx_msec_int_t) (at - now) > 0 ? at - now : 1;
        delay = ngx_min(delay, at);
    }

    /* without credentials, sending waits for them (creds.c wakes us) */
    if (s->ready && s->nflight == 0 && ngx_http_togglemaster_creds_get()) {
        at = (ngx_msec_int_t) (s->not_before - now) > 0
             ? s->not_before - now : 1;
        delay = ngx_min(delay, at);
    }

    if (s->exiting) {
        delay = ngx_min(delay, 100);
    }

    ngx_add_timer(&s->timer, delay);
}


static void
ngx_http_togglemaster_events_flush(void)
{
    size_t                           total;
    ngx_int_t                        rc;
    ngx_msec_t                       now, timeout;
    ngx_http_togglemaster_msg_t     *m;
    ngx_http_togglemaster_events_t  *s = &ngx_http_togglemaster_ev;

    now = ngx_current_msec;

    if (!s->exiting && (ngx_exiting || ngx_quit)) {
        s->exiting = 1;
        s->deadline = now + s->conf->events_exit_timeout;

        ngx_log_error(NGX_LOG_NOTICE, s->log, 0,
                      "togglemaster: worker exiting, sending %ui buffered "
                      "evaluation events (at most %M ms)", s->buffered,
                      s->conf->events_exit_timeout);
    }

    if (s->exiting && (ngx_msec_int_t) (now - s->deadline) >= 0) {
        ngx_http_togglemaster_sqs_close();   /* gives back what it holds */
        ngx_http_togglemaster_events_drop_all(s,
                                        NGX_HTTP_TOGGLEMASTER_DROP_SHUTDOWN);
        ngx_http_togglemaster_events_arm(s);
        return;
    }

    ngx_http_togglemaster_summary_flush(s->conf->events_flush, s->exiting,
                                        s->log);

    if (s->cur
        && (s->exiting || s->cur->nevents >= s->conf->events_batch
            || (ngx_msec_int_t) (now - s->cur->first)
               >= (ngx_msec_int_t) s->conf->events_flush))
    {
        ngx_http_togglemaster_events_seal(s);
    }

    if (s->ready && s->nflight == 0 && !ngx_http_togglemaster_sqs_busy()
        && ngx_http_togglemaster_creds_get()
        && (s->exiting || (ngx_msec_int_t) (now - s->not_before) >= 0))
    {
        total = 0;

        while (s->ready && s->nflight < TM_SQS_MAX_BATCH
               && total + s->ready->raw <= NGX_HTTP_TOGGLEMASTER_SQS_MAX)
        {
            m = s->ready;
            s->ready = m->next;
            m->next = NULL;
            total += m->raw;
            s->flight[s->nflight++] = m;
        }

        if (s->ready == NULL) {
            s->ready_tail = &s->ready;
        }

        timeout = s->conf->events_timeout;
        if (s->exiting) {
            timeout = ngx_max(ngx_min(timeout, s->deadline - now), 1);
        }

        rc = ngx_http_togglemaster_sqs_send(s->flight, s->nflight, timeout);

        if (rc != NGX_OK) {
            /* NGX_DECLINED: not attempted, back in the queue as they are */
            ngx_http_togglemaster_events_done(s->flight, s->nflight,
                                              rc == NGX_DECLINED
                                              ? NGX_DECLINED : NGX_ERROR);
            return;
        }
    }

    ngx_http_togglemaster_events_arm(s);
}


/* sqs.c's answer for the messages of one request: rc NGX_OK with each
 * message's status set, NGX_ERROR (no usable answer: retry them all) or
 * NGX_DECLINED (not attempted: queue them again as they are). */
void
ngx_http_togglemaster_events_done(ngx_http_togglemaster_msg_t **msgs,
    ngx_uint_t n, ngx_int_t rc)
{
    ngx_uint_t                       i, retry, backoff;
    ngx_http_togglemaster_msg_t     *m, *head, **tail;
    ngx_http_togglemaster_events_t  *s = &ngx_http_togglemaster_ev;

    head = NULL;
    tail = &head;
    retry = 0;

    for (i = 0; i < n; i++) {
        m = msgs[i];

        if (rc == NGX_DECLINED) {
            *tail = m;
            tail = &m->next;
            continue;
        }

        if (rc != NGX_OK) {
            m->status = NGX_HTTP_TOGGLEMASTER_MSG_RETRY;
        }

        switch (m->status) {

        case NGX_HTTP_TOGGLEMASTER_MSG_SENT:
            ngx_http_togglemaster_events_stat(sent, m->nevents);
            ngx_http_togglemaster_events_stat(messages, 1);
            s->buffered -= m->nevents;
            ngx_http_togglemaster_msg_free(m);
            break;

        case NGX_HTTP_TOGGLEMASTER_MSG_REJECTED:
            ngx_http_togglemaster_events_stat(failed, m->nevents);
            ngx_http_togglemaster_events_drop(
                NGX_HTTP_TOGGLEMASTER_DROP_REJECTED, m->nevents);
            s->buffered -= m->nevents;
            ngx_http_togglemaster_msg_free(m);
            break;

        default: /* retry */
            retry = 1;
            ngx_http_togglemaster_events_stat(failed, m->nevents);

            if (++m->attempts >= s->conf->events_attempts) {
                ngx_log_error(NGX_LOG_ERR, s->log, 0,
                              "togglemaster: %ui evaluation events dropped "
                              "after %ui attempts to send them to SQS",
                              m->nevents, m->attempts);
                ngx_http_togglemaster_events_drop(
                    NGX_HTTP_TOGGLEMASTER_DROP_RETRIES, m->nevents);
                s->buffered -= m->nevents;
                ngx_http_togglemaster_msg_free(m);
                break;
            }

            *tail = m;
            tail = &m->next;
        }
    }

    /* retries go first: they are the oldest */
    if (head) {
        *tail = s->ready;
        if (s->ready == NULL) {
            s->ready_tail = tail;
        }

        s->ready = head;
    }

    s->nflight = 0;

    if (rc == NGX_DECLINED) {
        /* keep the backoff as it is */

    } else if (retry) {
        /* one backoff for the connection, with jitter on the upper half */
        s->failures++;
        backoff = ngx_min((ngx_msec_t) NGX_HTTP_TOGGLEMASTER_BACKOFF_BASE
                          << ngx_min(s->failures - 1, 16),
                          s->conf->events_backoff_max);
        backoff = backoff / 2 + (ngx_uint_t) ngx_random() % (backoff / 2 + 1);
        s->not_before = ngx_current_msec + backoff;

    } else {
        s->failures = 0;
        s->not_before = ngx_current_msec;
    }

    ngx_http_togglemaster_events_gauge();

    /* not from here: sqs.c may still be on the stack */
    ngx_http_togglemaster_events_post(s);
}


/* Look at the buffer soon (from the event loop). */
void
ngx_http_togglemaster_events_wake(void)
{
    if (ngx_http_togglemaster_ev.on) {
        ngx_http_togglemaster_events_post(&ngx_http_togglemaster_ev);
    }
}


static void
ngx_http_togglemaster_events_handler(ngx_event_t *ev)
{
    ngx_http_togglemaster_events_flush();
}


/* ---- lifecycle --------------------------------------------------------- */

char *
ngx_http_togglemaster_events_conf(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf)
{
    ngx_conf_init_value(tmcf->events, 0);
    ngx_conf_init_uint_value(tmcf->events_buffer, 100000);
    ngx_conf_init_size_value(tmcf->events_buffer_size, 32 * 1024 * 1024);
    ngx_conf_init_uint_value(tmcf->events_batch, 1000);
    ngx_conf_init_msec_value(tmcf->events_flush, 1000);
    ngx_conf_init_uint_value(tmcf->events_bulk, NGX_HTTP_TOGGLEMASTER_BULK_SUMMARY);
    ngx_conf_init_msec_value(tmcf->events_timeout, 5000);
    ngx_conf_init_uint_value(tmcf->events_attempts, 8);
    ngx_conf_init_msec_value(tmcf->events_backoff_max, 10000);
    ngx_conf_init_msec_value(tmcf->events_exit_timeout, 3000);
    ngx_conf_init_value(tmcf->events_ssl_verify, 1);

    if (!tmcf->events) {
        return NGX_CONF_OK;
    }

    if (tmcf->events_batch > NGX_HTTP_TOGGLEMASTER_MSG_EVENTS) {
        tmcf->events_batch = NGX_HTTP_TOGGLEMASTER_MSG_EVENTS;
    }

    if (tmcf->events_attempts == 0) {
        tmcf->events_attempts = 1;
    }

    if (tmcf->events_backoff_max < NGX_HTTP_TOGGLEMASTER_BACKOFF_BASE) {
        tmcf->events_backoff_max = NGX_HTTP_TOGGLEMASTER_BACKOFF_BASE;
    }

    if (tmcf->events_flush == 0) {
        tmcf->events_flush = 1;
    }

    return ngx_http_togglemaster_sqs_conf(cf, tmcf);
}


ngx_int_t
ngx_http_togglemaster_events_init(ngx_cycle_t *cycle,
    ngx_http_togglemaster_main_conf_t *tmcf)
{
    ngx_http_togglemaster_events_t  *s = &ngx_http_togglemaster_ev;

    ngx_memzero(s, sizeof(ngx_http_togglemaster_events_t));

    if (!tmcf->events) {
        return NGX_OK;
    }

    s->conf = tmcf;
    s->log = cycle->log;
    s->ready_tail = &s->ready;
    s->not_before = ngx_current_msec;

    if (ngx_http_togglemaster_chacha_seed(s) != NGX_OK) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "togglemaster: RAND_bytes() failed, no event ids");
        return NGX_ERROR;
    }

    s->timer.handler = ngx_http_togglemaster_events_handler;
    s->timer.log = cycle->log;
    s->timer.data = s;
    s->post = s->timer;

    ngx_http_togglemaster_sqs_init(cycle, tmcf);

    s->on = 1;
    ngx_http_togglemaster_events_gauge();

    return NGX_OK;
}


void
ngx_http_togglemaster_events_exit(ngx_cycle_t *cycle)
{
    ngx_uint_t                       n;
    ngx_http_togglemaster_events_t  *s = &ngx_http_togglemaster_ev;

    if (!s->on) {
        return;
    }

    /* whatever is still here is lost: say so (fast shutdown does not
     * wait; a graceful one got its flush) */
    ngx_http_togglemaster_sqs_close();
    ngx_http_togglemaster_creds_exit();

    ngx_http_togglemaster_summary_exit();

    n = s->buffered;
    ngx_http_togglemaster_events_drop_all(s,
                                          NGX_HTTP_TOGGLEMASTER_DROP_SHUTDOWN);

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    if (s->post.posted) {
        ngx_delete_posted_event(&s->post);
    }

    if (n == 0 && s->buffered == 0) {
        ngx_log_error(NGX_LOG_INFO, cycle->log, 0,
                      "togglemaster: every evaluation event was sent");
    }

    s->on = 0;
}
