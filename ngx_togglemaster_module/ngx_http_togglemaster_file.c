/*
 * The snapshot file: the last good snapshot on disk, so that a restarted
 * nginx serves correct answers while Redis is down. Written from the sync
 * callback (never from a request) as tmp + rename, so readers see either
 * the old file or the new one. Objects are kept as their raw Redis JSON and
 * go through the same build code as a Redis load.
 *
 *   {"version":N,"flags":{name:"<json>"},"rules":{...},"segments":{...},
 *    "keys":{...}}
 *
 * It holds the default environment and the admin keys (tm:keys), as a
 * Redis of the previous release would: the other environments and the
 * scoped keys come from Redis only, so until Redis answers a scoped key
 * is refused (401) and other environments are unknown (404).
 *    ,"crc32":"xxxxxxxx"}
 *
 * The last member is the CRC-32 of every byte before it: a truncated or
 * corrupt file is refused whole, never half-loaded. A file without
 * "segments" or without "crc32" (older modules) still loads.
 *
 * The temporary file is created afresh (O_EXCL, O_NOFOLLOW: never through a
 * planted link) with mode 0600, as it holds every key hash; it is fsync'ed
 * before the rename and its directory after, so a crash leaves the old file
 * or the new one, whole.
 */

#include "ngx_http_togglemaster_module.h"

#include <jansson.h>


#define NGX_HTTP_TOGGLEMASTER_CRC_HEAD   ",\"crc32\":\""
#define NGX_HTTP_TOGGLEMASTER_CRC_TAIL   "\"}\n"
#define NGX_HTTP_TOGGLEMASTER_CRC_LEN                                        \
    (sizeof(NGX_HTTP_TOGGLEMASTER_CRC_HEAD) - 1 + 8                         \
     + sizeof(NGX_HTTP_TOGGLEMASTER_CRC_TAIL) - 1)

/* far above any real snapshot (100,000 keys take 8 MB) */
#define NGX_HTTP_TOGGLEMASTER_FILE_MAX   (1024 * 1024 * 1024)


/* in the order of NGX_HTTP_TOGGLEMASTER_FLAGS, ... */
static const char  *ngx_http_togglemaster_kinds[] = {
    "flags", "rules", "keys", "segments"
};


/* A small buffered writer: serialising 100,000 keys through jansson would
 * build the whole document in memory first. */
typedef struct {
    ngx_fd_t    fd;
    u_char     *p;
    u_char     *last;
    ngx_int_t   failed;
    ngx_err_t   err;
    uint32_t    crc;        /* of every byte flushed */
    u_char      buf[65536];
} ngx_http_togglemaster_writer_t;


/* One write of the file; what the thread reports back. */
typedef struct {
    ngx_str_t                          path;
    ngx_http_togglemaster_snapshot_t  *snap;
    ngx_int_t                          rc;
    ngx_err_t                          err;
    const char                        *what;     /* the failed step */
    ngx_msec_t                         ms;
    ngx_log_t                         *log;
    ngx_http_togglemaster_file_done_pt done;
    u_char                             tmp[NGX_MAX_PATH];
} ngx_http_togglemaster_file_job_t;


static void
ngx_http_togglemaster_flush(ngx_http_togglemaster_writer_t *w)
{
    ssize_t  n;
    u_char  *p;

    ngx_crc32_update(&w->crc, w->buf, w->p - w->buf);

    for (p = w->buf; !w->failed && p < w->p; p += n) {
        n = write(w->fd, p, w->p - p);
        if (n <= 0) {
            w->failed = 1;
            w->err = ngx_errno;
        }
    }

    w->p = w->buf;
}


static void
ngx_http_togglemaster_put(ngx_http_togglemaster_writer_t *w, u_char *s,
    size_t len)
{
    size_t  n;

    while (len) {
        if (w->p == w->last) {
            ngx_http_togglemaster_flush(w);
        }

        n = ngx_min(len, (size_t) (w->last - w->p));
        w->p = ngx_cpymem(w->p, s, n);
        s += n;
        len -= n;
    }
}


/* s as a quoted JSON string */
static void
ngx_http_togglemaster_put_str(ngx_http_togglemaster_writer_t *w, u_char *s,
    size_t len)
{
    size_t  n;

    ngx_http_togglemaster_put(w, (u_char *) "\"", 1);

    while (len) {
        n = ngx_min(len, 4096);

        /* ngx_escape_json() writes at most 6 bytes per input byte */
        if ((size_t) (w->last - w->p) < n * 6) {
            ngx_http_togglemaster_flush(w);
        }

        w->p = (u_char *) ngx_escape_json(w->p, s, n);
        s += n;
        len -= n;
    }

    ngx_http_togglemaster_put(w, (u_char *) "\"", 1);
}


static void
ngx_http_togglemaster_put_kind(ngx_http_togglemaster_writer_t *w,
    ngx_http_togglemaster_snapshot_t *snap, ngx_uint_t rules)
{
    ngx_uint_t                     i, first;
    ngx_str_t                     *json;
    ngx_http_togglemaster_flag_t  *f;

    first = 1;

    for (i = 0; i < snap->nflags; i++) {
        f = &snap->flags[i];
        json = rules ? &f->rule_json : &f->flag_json;

        if (json->len == 0) {
            continue;
        }

        if (!first) {
            ngx_http_togglemaster_put(w, (u_char *) ",", 1);
        }

        first = 0;
        ngx_http_togglemaster_put_str(w, f->name.data, f->name.len);
        ngx_http_togglemaster_put(w, (u_char *) ":", 1);
        ngx_http_togglemaster_put_str(w, json->data, json->len);
    }
}


/* The temporary file, new and ours: a file left by a crashed write with
 * the same name (or a link planted there) is removed, never written
 * through. */
static ngx_fd_t
ngx_http_togglemaster_file_create(u_char *tmp)
{
    ngx_fd_t    fd;
    ngx_uint_t  i;

    for (i = 0; i < 2; i++) {
        fd = open((char *) tmp,
                  O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, 0600);

        if (fd != NGX_INVALID_FILE || ngx_errno != NGX_EEXIST || i) {
            return fd;
        }

        if (unlink((char *) tmp) == -1) {
            return NGX_INVALID_FILE;
        }
    }

    return NGX_INVALID_FILE;
}


/* fsync of the file's directory, so that the rename survives a crash */
static ngx_int_t
ngx_http_togglemaster_file_sync_dir(ngx_http_togglemaster_file_job_t *job)
{
    int         fd, rc;
    size_t      len;
    ngx_err_t   err;

    /* the directory part of the path, in the job's spare buffer */
    for (len = job->path.len; len && job->path.data[len - 1] != '/'; len--) {
        /* void */
    }

    if (len == 0) {
        ngx_memcpy(job->tmp, ".", 2);

    } else {
        len = (len > 1) ? len - 1 : 1;     /* "/x" -> "/" */
        ngx_memcpy(job->tmp, job->path.data, len);
        job->tmp[len] = '\0';
    }

    fd = open((char *) job->tmp, O_RDONLY|O_DIRECTORY|O_CLOEXEC);
    if (fd == -1) {
        return NGX_ERROR;
    }

    rc = fsync(fd);
    err = ngx_errno;
    (void) close(fd);
    ngx_set_errno(err);

    return rc == -1 ? NGX_ERROR : NGX_OK;
}


/* The whole write, tmp + rename. Safe in a thread: it reads only the
 * job's held snapshot parts, logs nothing and allocates with malloc. */
static void
ngx_http_togglemaster_file_dump(ngx_http_togglemaster_file_job_t *job)
{
    u_char                           num[NGX_INT64_LEN + 16], hex[72];
    ngx_uint_t                       i, n;
    ngx_http_togglemaster_keys_t    *kp;
    ngx_http_togglemaster_writer_t  *w;
    ngx_http_togglemaster_snapshot_t
                                    *snap;
    ngx_http_togglemaster_segments_t
                                    *sp;

    snap = job->snap;
    job->rc = NGX_ERROR;
    job->err = 0;

    if (ngx_snprintf(job->tmp, sizeof(job->tmp) - 1, "%V.tmp.%P%Z",
                     &job->path, ngx_pid)
        == job->tmp + sizeof(job->tmp) - 1)
    {
        job->what = "path too long";
        return;
    }

    w = malloc(sizeof(ngx_http_togglemaster_writer_t));
    if (w == NULL) {
        job->what = "out of memory";
        return;
    }

    w->fd = ngx_http_togglemaster_file_create(job->tmp);
    if (w->fd == NGX_INVALID_FILE) {
        job->err = ngx_errno;
        job->what = "open";
        free(w);
        return;
    }

    w->p = w->buf;
    w->last = w->buf + sizeof(w->buf);
    w->failed = 0;
    w->err = 0;
    ngx_crc32_init(w->crc);

    ngx_http_togglemaster_put(w, num,
        ngx_sprintf(num, "{\"version\":%L,\"flags\":{", snap->version) - num);
    ngx_http_togglemaster_put_kind(w, snap, 0);
    ngx_http_togglemaster_put(w, (u_char *) "},\"rules\":{", 11);
    ngx_http_togglemaster_put_kind(w, snap, 1);
    ngx_http_togglemaster_put(w, (u_char *) "},\"segments\":{",
                              sizeof("},\"segments\":{") - 1);

    sp = snap->spart;
    for (i = 0; sp && i < sp->nsegs; i++) {
        if (i) {
            ngx_http_togglemaster_put(w, (u_char *) ",", 1);
        }

        ngx_http_togglemaster_put_str(w, sp->segs[i].name.data,
                                      sp->segs[i].name.len);
        ngx_http_togglemaster_put(w, (u_char *) ":", 1);
        ngx_http_togglemaster_put_str(w, sp->segs[i].json.data,
                                      sp->segs[i].json.len);
    }

    ngx_http_togglemaster_put(w, (u_char *) "},\"keys\":{", 10);

    /* the module needs only the admin keys' hashes; their JSON is not kept.
     * Scoped keys stay out: read back as "keys" they would become admin
     * keys (the file holds the default environment only, as an edge of
     * the previous release read it; docs/environments.md). */
    kp = snap->kpart;
    for (i = 0, n = 0; i < kp->nkeys; i++) {
        if (kp->meta[i].v2) {
            continue;
        }

        hex[0] = n++ ? ',' : ' ';
        hex[1] = '"';
        ngx_hex_dump(hex + 2, kp->keys + 32 * i, 32);
        ngx_memcpy(hex + 66, "\":\"{}\"", 6);
        ngx_http_togglemaster_put(w, hex, 72);
    }

    ngx_http_togglemaster_put(w, (u_char *) "}", 1);
    ngx_http_togglemaster_flush(w);

    ngx_crc32_final(w->crc);
    ngx_http_togglemaster_put(w, num,
        ngx_sprintf(num, NGX_HTTP_TOGGLEMASTER_CRC_HEAD "%08xD"
                    NGX_HTTP_TOGGLEMASTER_CRC_TAIL, w->crc) - num);
    ngx_http_togglemaster_flush(w);

    if (!w->failed && fsync(w->fd) == -1) {
        w->failed = 1;
        w->err = ngx_errno;
    }

    if (ngx_close_file(w->fd) == NGX_FILE_ERROR && !w->failed) {
        w->failed = 1;
        w->err = ngx_errno;
    }

    if (w->failed) {
        job->err = w->err;
        job->what = "write";
        free(w);
        (void) ngx_delete_file(job->tmp);
        return;
    }

    free(w);

    if (ngx_rename_file(job->tmp, job->path.data) == NGX_FILE_ERROR) {
        job->err = ngx_errno;
        job->what = "rename";
        (void) ngx_delete_file(job->tmp);
        return;
    }

    if (ngx_http_togglemaster_file_sync_dir(job) != NGX_OK) {
        job->err = ngx_errno;
        job->what = "fsync of the directory";
        return;
    }

    job->rc = NGX_OK;
}


/* Logs the outcome, lets the snapshot go and tells the caller. */
static void
ngx_http_togglemaster_file_finish(ngx_http_togglemaster_file_job_t *job)
{
    int64_t  version;

    version = job->snap->version;

    if (job->rc == NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, job->log, 0,
                      "togglemaster: snapshot file \"%V\" written, version "
                      "%L, in %M ms", &job->path, version, job->ms);

    } else {
        ngx_log_error(NGX_LOG_ERR, job->log, job->err,
                      "togglemaster: cannot write snapshot file \"%V\": %s "
                      "failed", &job->path, job->what);
    }

    ngx_http_togglemaster_snapshot_free(job->snap);
    job->snap = NULL;

    if (job->done) {
        job->done(version, job->rc);
    }
}


static ngx_int_t
ngx_http_togglemaster_file_job_init(ngx_http_togglemaster_file_job_t *job,
    ngx_str_t *path, ngx_http_togglemaster_snapshot_t *snap, ngx_log_t *log,
    ngx_http_togglemaster_file_done_pt done)
{
    job->snap = ngx_http_togglemaster_snapshot_hold(snap);
    if (job->snap == NULL) {
        return NGX_ERROR;
    }

    job->path = *path;
    job->log = log;
    job->done = done;
    job->ms = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_togglemaster_file_write_now(ngx_str_t *path,
    ngx_http_togglemaster_snapshot_t *snap, ngx_log_t *log,
    ngx_http_togglemaster_file_done_pt done)
{
    ngx_msec_t                        t0;
    ngx_http_togglemaster_file_job_t  job;

    if (ngx_http_togglemaster_file_job_init(&job, path, snap, log, done)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_time_update();
    t0 = ngx_current_msec;

    ngx_http_togglemaster_file_dump(&job);

    ngx_time_update();
    job.ms = ngx_current_msec - t0;

    ngx_http_togglemaster_file_finish(&job);

    return job.rc;
}


ngx_int_t
ngx_http_togglemaster_file_write(ngx_str_t *path,
    ngx_http_togglemaster_snapshot_t *snap, ngx_log_t *log)
{
    return ngx_http_togglemaster_file_write_now(path, snap, log, NULL);
}


#if (NGX_THREADS)

static ngx_thread_task_t  *ngx_http_togglemaster_file_task;
static ngx_uint_t          ngx_http_togglemaster_file_busy;


static void
ngx_http_togglemaster_file_thread(void *data, ngx_log_t *log)
{
    ngx_http_togglemaster_file_job_t *job = data;

    struct timespec  t0, t1;

    (void) clock_gettime(CLOCK_MONOTONIC, &t0);
    ngx_http_togglemaster_file_dump(job);
    (void) clock_gettime(CLOCK_MONOTONIC, &t1);

    job->ms = (t1.tv_sec - t0.tv_sec) * 1000
              + (t1.tv_nsec - t0.tv_nsec) / 1000000;
}


/* back on the event loop */
static void
ngx_http_togglemaster_file_thread_done(ngx_event_t *ev)
{
    ngx_thread_task_t *task = ev->data;

    ngx_http_togglemaster_file_busy = 0;
    ngx_http_togglemaster_file_finish(task->ctx);
}

#endif


ngx_int_t
ngx_http_togglemaster_file_save(ngx_http_togglemaster_main_conf_t *tmcf,
    ngx_http_togglemaster_snapshot_t *snap, ngx_log_t *log,
    ngx_http_togglemaster_file_done_pt done)
{
#if (NGX_THREADS)
    ngx_thread_task_t                 *task;
    ngx_http_togglemaster_file_job_t  *job;

    if (ngx_http_togglemaster_file_busy) {
        return NGX_BUSY;
    }

    task = ngx_http_togglemaster_file_task;

    if (task == NULL) {
        task = ngx_thread_task_alloc(ngx_cycle->pool,
                                     sizeof(ngx_http_togglemaster_file_job_t));
        if (task == NULL) {
            return NGX_ERROR;
        }

        task->handler = ngx_http_togglemaster_file_thread;
        task->event.handler = ngx_http_togglemaster_file_thread_done;
        task->event.data = task;
        task->event.log = log;
        ngx_http_togglemaster_file_task = task;
    }

    job = task->ctx;

    if (ngx_http_togglemaster_file_job_init(job, &tmcf->snapshot_file, snap,
                                            log, done)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_thread_task_post(tmcf->thread_pool, task) != NGX_OK) {
        ngx_http_togglemaster_snapshot_free(job->snap);
        job->snap = NULL;
        return NGX_ERROR;
    }

    ngx_http_togglemaster_file_busy = 1;

    return NGX_OK;

#else

    (void) ngx_http_togglemaster_file_write_now(&tmcf->snapshot_file, snap,
                                                log, done);
    return NGX_OK;

#endif
}


/* The whole file in memory (ngx_alloc'd, *len bytes), its checksum checked
 * when it has one; NULL with why (NULL: there is no file, say nothing). */
static u_char *
ngx_http_togglemaster_file_read(ngx_str_t *path, size_t *len,
    const char **why, ngx_log_t *log)
{
    u_char           *buf, *p;
    size_t            size, got;
    ssize_t           n;
    uint32_t          crc;
    ngx_fd_t          fd;
    ngx_file_info_t   fi;

    static u_char     head[] = NGX_HTTP_TOGGLEMASTER_CRC_HEAD;

    *why = NULL;

    fd = open((char *) path->data, O_RDONLY|O_CLOEXEC|O_NOFOLLOW);
    if (fd == NGX_INVALID_FILE) {
        if (ngx_errno != NGX_ENOENT) {
            *why = "cannot be opened";
        }
        return NULL;
    }

    buf = NULL;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || !ngx_is_file(&fi)
        || ngx_file_size(&fi) > NGX_HTTP_TOGGLEMASTER_FILE_MAX)
    {
        *why = "is not a regular file of a sane size";
        goto done;
    }

    size = (size_t) ngx_file_size(&fi);

    buf = ngx_alloc(size + 1, log);
    if (buf == NULL) {
        *why = "does not fit in memory";
        goto done;
    }

    for (got = 0; got < size; got += n) {
        n = read(fd, buf + got, size - got);
        if (n <= 0) {
            break;
        }
    }

    if (got != size) {
        *why = "cannot be read";
        goto done;
    }

    *len = size;

    /* a file with the checksum member: it must match */
    p = buf + size - NGX_HTTP_TOGGLEMASTER_CRC_LEN;

    if (size > NGX_HTTP_TOGGLEMASTER_CRC_LEN
        && ngx_memcmp(p, head, sizeof(head) - 1) == 0)
    {
        crc = ngx_crc32_long(buf, p - buf);

        if (ngx_hextoi(p + sizeof(head) - 1, 8) != (ngx_int_t) crc
            || ngx_memcmp(p + sizeof(head) - 1 + 8,
                          NGX_HTTP_TOGGLEMASTER_CRC_TAIL,
                          sizeof(NGX_HTTP_TOGGLEMASTER_CRC_TAIL) - 1)
               != 0)
        {
            *why = "fails its checksum (corrupt)";
            goto done;
        }
    }

done:

    (void) close(fd);

    if (*why && buf) {
        ngx_free(buf);
        buf = NULL;
    }

    return buf;
}


/* The document's hashes as field/value pairs; NULL with why when the
 * document is not a whole snapshot (then nothing of it is used). */
static const char *
ngx_http_togglemaster_file_kv(json_t *doc, ngx_pool_t *pool,
    ngx_http_togglemaster_kv_t *kv)
{
    json_t      *h, *v;
    const char  *name;
    ngx_uint_t   k, n;

    if (!json_is_integer(json_object_get(doc, "version"))
        || json_integer_value(json_object_get(doc, "version")) < 0)
    {
        return "has no version";
    }

    for (k = 0; k < NGX_HTTP_TOGGLEMASTER_FILE_KINDS; k++) {
        h = json_object_get(doc, ngx_http_togglemaster_kinds[k]);

        if (h == NULL && k == NGX_HTTP_TOGGLEMASTER_SEGMENTS) {
            h = json_object();      /* an older module's file */
            json_object_set_new(doc, "segments", h);
        }

        if (!json_is_object(h)) {
            return "lacks a hash of objects";
        }

        n = json_object_size(h);

        kv[k].present = 1;
        kv[k].n = 0;
        kv[k].fields = ngx_palloc(pool, (n ? n : 1) * sizeof(ngx_str_t));
        kv[k].values = ngx_palloc(pool, (n ? n : 1) * sizeof(ngx_str_t));
        if (kv[k].fields == NULL || kv[k].values == NULL) {
            return "does not fit in memory";
        }

        json_object_foreach(h, name, v) {
            if (!json_is_string(v)) {
                return "holds an object that is not a string";
            }

            kv[k].fields[kv[k].n].data = (u_char *) name;
            kv[k].fields[kv[k].n].len = ngx_strlen(name);
            kv[k].values[kv[k].n].data = (u_char *) json_string_value(v);
            kv[k].values[kv[k].n].len = json_string_length(v);
            kv[k].n++;
        }
    }

    return NULL;
}


ngx_http_togglemaster_snapshot_t *
ngx_http_togglemaster_file_load(ngx_str_t *path, ngx_log_t *log)
{
    u_char                            *buf;
    size_t                             len;
    json_t                            *doc;
    ngx_pool_t                        *pool;
    const char                        *why;
    json_error_t                       err;
    ngx_http_togglemaster_kv_t         kv[NGX_HTTP_TOGGLEMASTER_NKINDS];
    ngx_http_togglemaster_snapshot_t  *snap;

    buf = ngx_http_togglemaster_file_read(path, &len, &why, log);
    if (buf == NULL) {
        if (why) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "togglemaster: snapshot file \"%V\" %s: refused",
                          path, why);
        }
        return NULL;
    }

    doc = json_loadb((char *) buf, len, 0, &err);
    ngx_free(buf);

    if (doc == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "togglemaster: snapshot file \"%V\" unreadable "
                      "(truncated?): %s (line %d): refused",
                      path, err.text, err.line);
        return NULL;
    }

    snap = NULL;
    ngx_memzero(kv, sizeof(kv));    /* kinds the file lacks: not present */
    pool = ngx_create_pool(4096, log);
    if (pool == NULL) {
        goto done;
    }

    why = ngx_http_togglemaster_file_kv(doc, pool, kv);
    if (why) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "togglemaster: snapshot file \"%V\" %s: refused",
                      path, why);
        goto done;
    }

    snap = ngx_http_togglemaster_snapshot_build(
               json_integer_value(json_object_get(doc, "version")), kv, NULL,
               log);

    if (snap) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "togglemaster: loaded snapshot file \"%V\", version %L, "
                      "%ui flags, %ui keys", path, snap->version,
                      snap->nflags, snap->nkeys);
    }

done:

    if (pool) {
        ngx_destroy_pool(pool);
    }

    json_decref(doc);
    return snap;
}
