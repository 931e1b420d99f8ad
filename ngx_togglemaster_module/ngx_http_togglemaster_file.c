/*
 * The snapshot file: the last good snapshot on disk, so that a restarted
 * nginx serves correct answers while Redis is down. Written from the sync
 * callback (never from a request) as tmp + rename, so readers see either
 * the old file or the new one. Objects are kept as their raw Redis JSON and
 * go through the same build code as a Redis load.
 *
 *   {"version":N,"flags":{name:"<json>"},"rules":{...},"keys":{...}}
 */

#include "ngx_http_togglemaster_module.h"

#include <jansson.h>


static const char  *ngx_http_togglemaster_kinds[] = { "flags", "rules", "keys" };


ngx_int_t
ngx_http_togglemaster_file_write(ngx_str_t *path,
    ngx_http_togglemaster_snapshot_t *snap, ngx_log_t *log)
{
    u_char      tmp[NGX_MAX_PATH];
    json_t     *doc, *h[NGX_HTTP_TOGGLEMASTER_NKINDS];
    ngx_uint_t  i, k;
    ngx_int_t   rc;

    if (ngx_snprintf(tmp, sizeof(tmp) - 1, "%V.tmp.%P%Z", path, ngx_pid)
        == tmp + sizeof(tmp) - 1)
    {
        return NGX_ERROR;
    }

    doc = json_object();
    if (doc == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (json_object_set_new(doc, "version", json_integer(snap->version)) != 0) {
        goto done;
    }

    for (k = 0; k < NGX_HTTP_TOGGLEMASTER_NKINDS; k++) {
        h[k] = json_object();
        if (json_object_set_new(doc, ngx_http_togglemaster_kinds[k], h[k])
            != 0)
        {
            goto done;
        }
    }

    for (i = 0; i < snap->nflags; i++) {
        ngx_http_togglemaster_flag_t  *f = &snap->flags[i];

        if (f->flag_json.len
            && json_object_set_new(h[NGX_HTTP_TOGGLEMASTER_FLAGS],
                   (char *) f->name.data,
                   json_stringn((char *) f->flag_json.data, f->flag_json.len))
               != 0)
        {
            goto done;
        }

        if (f->rule_json.len
            && json_object_set_new(h[NGX_HTTP_TOGGLEMASTER_RULES],
                   (char *) f->name.data,
                   json_stringn((char *) f->rule_json.data, f->rule_json.len))
               != 0)
        {
            goto done;
        }
    }

    for (i = 0; i < snap->nkeys; i++) {
        if (json_object_set_new(h[NGX_HTTP_TOGGLEMASTER_KEYS],
                (char *) snap->keys[i].hash.data,
                json_stringn((char *) snap->keys[i].json.data,
                             snap->keys[i].json.len))
            != 0)
        {
            goto done;
        }
    }

    if (json_dump_file(doc, (char *) tmp, JSON_COMPACT) != 0) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "togglemaster: cannot write snapshot file \"%s\"", tmp);
        (void) ngx_delete_file(tmp);
        goto done;
    }

    if (ngx_rename_file(tmp, path->data) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "togglemaster: rename \"%s\" to \"%V\" failed",
                      tmp, path);
        (void) ngx_delete_file(tmp);
        goto done;
    }

    rc = NGX_OK;

done:

    json_decref(doc);
    return rc;
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
