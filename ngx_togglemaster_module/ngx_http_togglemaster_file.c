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
 * A file without "segments" (older modules) loads with none.
 */

#include "ngx_http_togglemaster_module.h"

#include <jansson.h>


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
    u_char      buf[65536];
} ngx_http_togglemaster_writer_t;


static void
ngx_http_togglemaster_flush(ngx_http_togglemaster_writer_t *w)
{
    ssize_t  n;
    u_char  *p;

    for (p = w->buf; !w->failed && p < w->p; p += n) {
        n = write(w->fd, p, w->p - p);
        if (n <= 0) {
            w->failed = 1;
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


ngx_int_t
ngx_http_togglemaster_file_write(ngx_str_t *path,
    ngx_http_togglemaster_snapshot_t *snap, ngx_log_t *log)
{
    u_char                           tmp[NGX_MAX_PATH], num[NGX_INT64_LEN + 16];
    u_char                           hex[72];
    ngx_uint_t                       i;
    ngx_http_togglemaster_keys_t    *kp;
    ngx_http_togglemaster_writer_t  *w;
    ngx_http_togglemaster_segments_t
                                    *sp;

    if (ngx_snprintf(tmp, sizeof(tmp) - 1, "%V.tmp.%P%Z", path, ngx_pid)
        == tmp + sizeof(tmp) - 1)
    {
        return NGX_ERROR;
    }

    w = ngx_alloc(sizeof(ngx_http_togglemaster_writer_t), log);
    if (w == NULL) {
        return NGX_ERROR;
    }

    w->fd = ngx_open_file(tmp, NGX_FILE_WRONLY, NGX_FILE_TRUNCATE,
                          NGX_FILE_DEFAULT_ACCESS);
    if (w->fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "togglemaster: cannot write snapshot file \"%s\"", tmp);
        ngx_free(w);
        return NGX_ERROR;
    }

    w->p = w->buf;
    w->last = w->buf + sizeof(w->buf);
    w->failed = 0;

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

    /* the module needs only the key hashes; their JSON is not kept */
    kp = snap->kpart;
    for (i = 0; i < kp->nkeys; i++) {
        hex[0] = i ? ',' : ' ';
        hex[1] = '"';
        ngx_hex_dump(hex + 2, kp->keys + 32 * i, 32);
        ngx_memcpy(hex + 66, "\":\"{}\"", 6);
        ngx_http_togglemaster_put(w, hex, 72);
    }

    ngx_http_togglemaster_put(w, (u_char *) "}}\n", 3);
    ngx_http_togglemaster_flush(w);

    if (ngx_close_file(w->fd) == NGX_FILE_ERROR) {
        w->failed = 1;
    }

    if (w->failed) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "togglemaster: cannot write snapshot file \"%s\"", tmp);
        ngx_free(w);
        (void) ngx_delete_file(tmp);
        return NGX_ERROR;
    }

    ngx_free(w);

    if (ngx_rename_file(tmp, path->data) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "togglemaster: rename \"%s\" to \"%V\" failed",
                      tmp, path);
        (void) ngx_delete_file(tmp);
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_http_togglemaster_snapshot_t *
ngx_http_togglemaster_file_load(ngx_str_t *path, ngx_log_t *log)
{
    json_t                            *doc, *h, *v;
    const char                        *name;
    ngx_uint_t                         k, n;
    ngx_pool_t                        *pool;
    json_error_t                       err;
    ngx_file_info_t                    fi;
    ngx_http_togglemaster_kv_t         kv[NGX_HTTP_TOGGLEMASTER_NKINDS];
    ngx_http_togglemaster_snapshot_t  *snap;

    doc = json_load_file((char *) path->data, 0, &err);
    if (doc == NULL) {
        if (ngx_file_info(path->data, &fi) == NGX_FILE_ERROR) {
            return NULL;   /* no file yet: nothing to say */
        }

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "togglemaster: snapshot file \"%V\" unreadable: %s "
                      "(line %d)", path, err.text, err.line);
        return NULL;
    }

    snap = NULL;
    pool = ngx_create_pool(4096, log);
    if (pool == NULL) {
        goto done;
    }

    if (!json_is_integer(json_object_get(doc, "version"))) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "togglemaster: snapshot file \"%V\" has no version",
                      path);
        goto done;
    }

    for (k = 0; k < NGX_HTTP_TOGGLEMASTER_NKINDS; k++) {
        h = json_object_get(doc, ngx_http_togglemaster_kinds[k]);
        n = json_is_object(h) ? json_object_size(h) : 0;

        kv[k].present = 1;
        kv[k].n = 0;
        kv[k].fields = ngx_palloc(pool, (n ? n : 1) * sizeof(ngx_str_t));
        kv[k].values = ngx_palloc(pool, (n ? n : 1) * sizeof(ngx_str_t));
        if (kv[k].fields == NULL || kv[k].values == NULL) {
            goto done;
        }

        if (n == 0) {
            continue;
        }

        json_object_foreach(h, name, v) {
            if (!json_is_string(v)) {
                continue;
            }

            kv[k].fields[kv[k].n].data = (u_char *) name;
            kv[k].fields[kv[k].n].len = ngx_strlen(name);
            kv[k].values[kv[k].n].data = (u_char *) json_string_value(v);
            kv[k].values[kv[k].n].len = json_string_length(v);
            kv[k].n++;
        }
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
