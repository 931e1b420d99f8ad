/*
 * The snapshot file: the last good snapshot on disk, so that a restarted
 * nginx serves correct answers while Redis is down. Written from the sync
 * callback (never from a request) as tmp + rename, so readers see either
 * the old file or the new one. Objects are kept as their raw Redis JSON and
 * go through the same build code (and lib/tm_records parsers) as a Redis
 * load; the records the snapshot keeps no JSON of (environments, scoped
 * keys) are written as the smallest record those parsers accept.
 *
 *   {"version":N,"flags":{name:"<json>"},"rules":{...},"segments":{...},
 *    "keys":{...},                          admin keys (tm:keys)
 *    "envs":{name:"<json>"},                tm:envs, the default's included
 *    "keys2":{hash:"<json>"},               scoped keys (tm:keys:v2)
 *    "environments":{env:{"flags":{...},"rules":{...}}}   tm:flags@<env>..
 *    ,"crc32":"xxxxxxxx"}
 *
 * Every environment and every key the snapshot has is there, so a
 * restarted nginx answers them all while Redis is down. The first five
 * members are what modules before environments wrote and read; they hold
 * the default environment and the admin keys only (a scoped key under
 * "keys" would be read back as an admin key), so such a module reading
 * this file serves the default environment and refuses scoped keys, as
 * it does from a Redis the new daemons write (the members it does not
 * know are ignored). This module, likewise, ignores members it does not
 * know, and a file without the last three (an older module's) holds the
 * default environment only.
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


/* the file's hashes, in the order of NGX_HTTP_TOGGLEMASTER_FLAGS, ...;
 * "environments" holds EFLAGS and ERULES as "flags" and "rules" */
static const char  *ngx_http_togglemaster_kinds[] = {
    "flags", "rules", "keys", "segments", "envs", "keys2"
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


/* "name":"<value as a JSON string>", after a comma unless *n is 0 */
static void
ngx_http_togglemaster_put_pair(ngx_http_togglemaster_writer_t *w,
    ngx_uint_t *n, ngx_str_t *name, u_char *value, size_t len)
{
    if ((*n)++) {
        ngx_http_togglemaster_put(w, (u_char *) ",", 1);
    }

    ngx_http_togglemaster_put_str(w, name->data, name->len);
    ngx_http_togglemaster_put(w, (u_char *) ":", 1);
    ngx_http_togglemaster_put_str(w, value, len);
}


/* One environment's flags or rules (fp NULL: none), as a hash's members */
static void
ngx_http_togglemaster_put_kind(ngx_http_togglemaster_writer_t *w,
    ngx_http_togglemaster_flags_t *fp, ngx_uint_t rules)
{
    ngx_uint_t                     i, n;
    ngx_str_t                     *json;
    ngx_http_togglemaster_flag_t  *f;

    for (i = 0, n = 0; fp && i < fp->nflags; i++) {
        f = &fp->flags[i];
        json = rules ? &f->rule_json : &f->flag_json;

        if (json->len) {
            ngx_http_togglemaster_put_pair(w, &n, &f->name, json->data,
                                           json->len);
        }
    }
}


/* "envs" (every environment's tm:envs record, the smallest that
 * tm_env_record_parse() takes) and "environments" (the others' flags and
 * rules; the default's are "flags" and "rules") */
static void
ngx_http_togglemaster_put_envs(ngx_http_togglemaster_writer_t *w,
    ngx_http_togglemaster_snapshot_t *snap)
{
    u_char      rec[TM_NAME_MAX + 64], *p;
    ngx_str_t  *name;
    ngx_uint_t  i, n;

    ngx_http_togglemaster_put(w, (u_char *) ",\"envs\":{",
                              sizeof(",\"envs\":{") - 1);

    for (i = 0, n = 0; i < snap->nenvs; i++) {
        name = &snap->epart->names[i];
        p = ngx_snprintf(rec, sizeof(rec),
                         "{\"name\":\"%V\",\"is_default\":%s}", name,
                         i ? "false" : "true");
        ngx_http_togglemaster_put_pair(w, &n, name, rec, p - rec);
    }

    ngx_http_togglemaster_put(w, (u_char *) "},\"environments\":{",
                              sizeof("},\"environments\":{") - 1);

    for (i = 1; i < snap->nenvs; i++) {
        if (i > 1) {
            ngx_http_togglemaster_put(w, (u_char *) ",", 1);
        }

        name = &snap->epart->names[i];
        ngx_http_togglemaster_put_str(w, name->data, name->len);
        ngx_http_togglemaster_put(w, (u_char *) ":{\"flags\":{",
                                  sizeof(":{\"flags\":{") - 1);
        ngx_http_togglemaster_put_kind(w, snap->fparts[i], 0);
        ngx_http_togglemaster_put(w, (u_char *) "},\"rules\":{",
                                  sizeof("},\"rules\":{") - 1);
        ngx_http_togglemaster_put_kind(w, snap->fparts[i], 1);
        ngx_http_togglemaster_put(w, (u_char *) "}}", 2);
    }

    ngx_http_togglemaster_put(w, (u_char *) "}", 1);
}


/* The members of "keys" (v2 0: admin keys, whose hashes are all that
 * matters; their JSON is not kept) or of "keys2" (v2 1: scoped keys, each
 * as the smallest tm:keys:v2 record that tm_key_record_parse() takes). A
 * scoped key never goes in "keys": read back from there, by this module
 * or an older one, it would be an admin key. */
static void
ngx_http_togglemaster_put_keys(ngx_http_togglemaster_writer_t *w,
    ngx_http_togglemaster_keys_t *kp, ngx_uint_t v2)
{
    u_char                            hex[64], rec[TM_NAME_MAX + 64], *p;
    ngx_str_t                         field;
    ngx_uint_t                        i, n;
    ngx_http_togglemaster_key_meta_t *m;

    field.data = hex;
    field.len = sizeof(hex);

    for (i = 0, n = 0; i < kp->nkeys; i++) {
        m = &kp->meta[i];

        if (m->v2 != v2) {
            continue;
        }

        if (!v2) {
            p = ngx_cpymem(rec, "{}", 2);

        } else if (m->name != NGX_HTTP_TOGGLEMASTER_ENV_NONE) {
            p = ngx_snprintf(rec, sizeof(rec),
                             "{\"scope\":\"%s\",\"environment\":\"%V\"}",
                             tm_scope_name((tm_scope) m->scope),
                             &kp->names[m->name]);

        } else if (!tm_scope_has_environment((tm_scope) m->scope)) {
            p = ngx_snprintf(rec, sizeof(rec),
                             "{\"scope\":\"%s\",\"environment\":null}",
                             tm_scope_name((tm_scope) m->scope));

        } else {
            /* its environment's name did not fit the snapshot's table: it
             * evaluates nowhere, and its record would be malformed */
            continue;
        }

        ngx_hex_dump(hex, kp->keys + 32 * i, 32);
        ngx_http_togglemaster_put_pair(w, &n, &field, rec, p - rec);
    }
}


/* Every member but the checksum */
static void
ngx_http_togglemaster_put_snapshot(ngx_http_togglemaster_writer_t *w,
    ngx_http_togglemaster_snapshot_t *snap)
{
    u_char                            num[NGX_INT64_LEN + 32];
    ngx_uint_t                        i, n;
    ngx_http_togglemaster_segments_t *sp;

    ngx_http_togglemaster_put(w, num,
        ngx_sprintf(num, "{\"version\":%L,\"flags\":{", snap->version) - num);
    ngx_http_togglemaster_put_kind(w, snap->fpart, 0);
    ngx_http_togglemaster_put(w, (u_char *) "},\"rules\":{", 11);
    ngx_http_togglemaster_put_kind(w, snap->fpart, 1);
    ngx_http_togglemaster_put(w, (u_char *) "},\"segments\":{",
                              sizeof("},\"segments\":{") - 1);

    sp = snap->spart;
    for (i = 0, n = 0; sp && i < sp->nsegs; i++) {
        ngx_http_togglemaster_put_pair(w, &n, &sp->segs[i].name,
                                       sp->segs[i].json.data,
                                       sp->segs[i].json.len);
    }

    ngx_http_togglemaster_put(w, (u_char *) "},\"keys\":{",
                              sizeof("},\"keys\":{") - 1);
    ngx_http_togglemaster_put_keys(w, snap->kpart, 0);
    ngx_http_togglemaster_put(w, (u_char *) "},\"keys2\":{",
                              sizeof("},\"keys2\":{") - 1);
    ngx_http_togglemaster_put_keys(w, snap->kpart, 1);
    ngx_http_togglemaster_put(w, (u_char *) "}", 1);
    ngx_http_togglemaster_put_envs(w, snap);
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
    u_char                           num[NGX_INT64_LEN + 16];
    ngx_http_togglemaster_writer_t  *w;
    ngx_http_togglemaster_snapshot_t
                                    *snap;

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

    ngx_http_togglemaster_put_snapshot(w, snap);
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


/* 1 if h is a hash of raw records: an object whose members are strings */
static ngx_uint_t
ngx_http_togglemaster_file_hash(json_t *h)
{
    json_t      *v;
    const char  *name;

    if (!json_is_object(h)) {
        return 0;
    }

    json_object_foreach(h, name, v) {
        if (!json_is_string(v)) {
            return 0;
        }
    }

    return 1;
}


/* NULL if doc is a whole snapshot, else why not (then nothing of it is
 * used). Members it does not know are ignored: a newer module's. */
static const char *
ngx_http_togglemaster_file_check(json_t *doc)
{
    json_t      *h, *e;
    const char  *name;
    ngx_uint_t   k;

    if (!json_is_integer(json_object_get(doc, "version"))
        || json_integer_value(json_object_get(doc, "version")) < 0)
    {
        return "has no version";
    }

    for (k = 0; k < NGX_HTTP_TOGGLEMASTER_FILE_KINDS; k++) {
        h = json_object_get(doc, ngx_http_togglemaster_kinds[k]);

        /* older modules' files lack the kinds after "keys" */
        if (h == NULL && k > NGX_HTTP_TOGGLEMASTER_KEYS) {
            continue;
        }

        if (!json_is_object(h)) {
            return "lacks a hash of objects";
        }

        if (!ngx_http_togglemaster_file_hash(h)) {
            return "holds an object that is not a string";
        }
    }

    h = json_object_get(doc, "environments");
    if (h == NULL) {
        return NULL;
    }

    if (!json_is_object(h)) {
        return "lacks a hash of environments";
    }

    json_object_foreach(h, name, e) {
        if (!json_is_object(e)
            || !ngx_http_togglemaster_file_hash(json_object_get(e, "flags"))
            || !ngx_http_togglemaster_file_hash(json_object_get(e, "rules")))
        {
            return "holds an environment that is not two hashes of objects";
        }
    }

    return NULL;
}


/* h's records into the builder, as a Redis load feeds them */
static ngx_int_t
ngx_http_togglemaster_file_feed(ngx_http_togglemaster_builder_t *b,
    ngx_uint_t kind, ngx_str_t *env, json_t *h)
{
    json_t      *v;
    ngx_str_t    field, value;
    const char  *name;

    json_object_foreach(h, name, v) {
        field.data = (u_char *) name;
        field.len = ngx_strlen(name);
        value.data = (u_char *) json_string_value(v);
        value.len = json_string_length(v);

        if (ngx_http_togglemaster_builder_set_env(b, kind, env, &field, &value)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* The snapshot of a checked document; NULL (logged) if out of memory */
static ngx_http_togglemaster_snapshot_t *
ngx_http_togglemaster_file_build(json_t *doc, ngx_log_t *log)
{
    json_t                           *h, *e;
    ngx_str_t                         env;
    ngx_uint_t                        k, all;
    ngx_uint_t                        hint[NGX_HTTP_TOGGLEMASTER_NKINDS];
    const char                       *name;
    ngx_http_togglemaster_builder_t  *b;

    ngx_memzero(hint, sizeof(hint));

    for (k = 0; k < NGX_HTTP_TOGGLEMASTER_FILE_KINDS; k++) {
        hint[k] = json_object_size(
                      json_object_get(doc, ngx_http_togglemaster_kinds[k]));
    }

    /* every kind is loaded afresh: the file is the whole snapshot */
    all = ((ngx_uint_t) 1 << NGX_HTTP_TOGGLEMASTER_NKINDS) - 1;

    b = ngx_http_togglemaster_builder_start(NULL, all, all, hint, log);
    if (b == NULL) {
        return NULL;
    }

    for (k = 0; k < NGX_HTTP_TOGGLEMASTER_FILE_KINDS; k++) {
        if (ngx_http_togglemaster_file_feed(b, k, NULL,
                json_object_get(doc, ngx_http_togglemaster_kinds[k]))
            != NGX_OK)
        {
            goto failed;
        }
    }

    h = json_object_get(doc, "environments");

    json_object_foreach(h, name, e) {
        env.data = (u_char *) name;
        env.len = ngx_strlen(name);

        if (ngx_http_togglemaster_file_feed(b, NGX_HTTP_TOGGLEMASTER_EFLAGS,
                                            &env, json_object_get(e, "flags"))
            != NGX_OK
            || ngx_http_togglemaster_file_feed(b, NGX_HTTP_TOGGLEMASTER_ERULES,
                                            &env, json_object_get(e, "rules"))
               != NGX_OK)
        {
            goto failed;
        }
    }

    return ngx_http_togglemaster_builder_finish(b,
               json_integer_value(json_object_get(doc, "version")));

failed:

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "togglemaster: out of memory building a snapshot");
    ngx_http_togglemaster_builder_abort(b);
    return NULL;
}


ngx_http_togglemaster_snapshot_t *
ngx_http_togglemaster_file_load(ngx_str_t *path, ngx_log_t *log)
{
    u_char                            *buf;
    size_t                             len;
    json_t                            *doc;
    const char                        *why;
    json_error_t                       err;
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

    why = ngx_http_togglemaster_file_check(doc);
    if (why) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "togglemaster: snapshot file \"%V\" %s: refused",
                      path, why);
        json_decref(doc);
        return NULL;
    }

    snap = ngx_http_togglemaster_file_build(doc, log);
    json_decref(doc);

    if (snap) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "togglemaster: loaded snapshot file \"%V\", version %L, "
                      "%ui flags, %ui keys, %ui environments", path,
                      snap->version, snap->nflags, snap->nkeys, snap->nenvs);
    }

    return snap;
}
