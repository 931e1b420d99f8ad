/*
 * The snapshot: an immutable, per-worker copy of flags, rules and API-key
 * hashes with O(1) lookups. Built off the request path (sync callback or
 * worker start). It has two parts, each in a pool of its own: flags+rules
 * and keys. A load that fetched only one kind shares the other part with
 * the previous snapshot (refcounted), so a flag change does not copy
 * 100,000 keys.
 */

#include "ngx_http_togglemaster_module.h"

#include <jansson.h>


ngx_http_togglemaster_snapshot_t  *ngx_http_togglemaster_current;


static ngx_uint_t
ngx_http_togglemaster_table_size(ngx_uint_t n)
{
    ngx_uint_t  size;

    for (size = 16; size < n * 2; size <<= 1) { /* void */ }

    return size;
}


static ngx_int_t
ngx_http_togglemaster_str_eq(ngx_str_t *a, ngx_str_t *b)
{
    return a->len == b->len && ngx_memcmp(a->data, b->data, a->len) == 0;
}


static ngx_int_t
ngx_http_togglemaster_copy(ngx_pool_t *pool, ngx_str_t *dst, ngx_str_t *src)
{
    dst->len = src->len;
    dst->data = ngx_pnalloc(pool, src->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src->data, src->len);
    dst->data[src->len] = '\0';

    return NGX_OK;
}


static void
ngx_http_togglemaster_flags_cleanup(void *data)
{
    ngx_http_togglemaster_flags_t *fp = data;

    ngx_uint_t  i;

    for (i = 0; i < fp->nflags; i++) {
        tm_rule_free(fp->flags[i].rule);
    }
}


/* Build-time flag table: find or add by name. */
typedef struct {
    ngx_http_togglemaster_flag_t  *flags;
    ngx_uint_t                     n;
    uint32_t                      *slots;
    ngx_uint_t                     mask;
} ngx_http_togglemaster_build_t;


static ngx_http_togglemaster_flag_t *
ngx_http_togglemaster_build_get(ngx_pool_t *pool,
    ngx_http_togglemaster_build_t *b, ngx_str_t *name)
{
    uint32_t                       h;
    ngx_uint_t                     i;
    ngx_http_togglemaster_flag_t  *f;

    h = ngx_murmur_hash2(name->data, name->len);

    for (i = h & b->mask; b->slots[i]; i = (i + 1) & b->mask) {
        f = &b->flags[b->slots[i] - 1];
        if (f->hash == h && ngx_http_togglemaster_str_eq(&f->name, name)) {
            return f;
        }
    }

    f = &b->flags[b->n++];
    ngx_memzero(f, sizeof(ngx_http_togglemaster_flag_t));
    f->hash = h;
    f->flag = TM_FLAG_MISSING;

    if (ngx_http_togglemaster_copy(pool, &f->name, name) != NGX_OK) {
        return NULL;
    }

    b->slots[i] = (uint32_t) b->n;

    return f;
}


static json_t *
ngx_http_togglemaster_parse_object(ngx_str_t *s)
{
    json_t  *doc;

    doc = json_loadb((const char *) s->data, s->len, JSON_REJECT_DUPLICATES,
                     NULL);
    if (doc != NULL && !json_is_object(doc)) {
        json_decref(doc);
        return NULL;
    }

    return doc;
}


/* 0 off, 1 on, -1 malformed */
static ngx_int_t
ngx_http_togglemaster_parse_flag(ngx_str_t *json)
{
    json_t     *doc, *v;
    ngx_int_t   rc;

    doc = ngx_http_togglemaster_parse_object(json);
    if (doc == NULL) {
        return -1;
    }

    v = json_object_get(doc, "is_enabled");
    rc = json_is_boolean(v) ? (json_is_true(v) ? 1 : 0) : -1;

    json_decref(doc);

    return rc;
}


/* NGX_OK with f's rule fields set, or NGX_DECLINED if malformed. A rule
 * that is well-formed but does not compile (unknown type) stays present
 * with rule == NULL: the original semantics answer false for it. */
static ngx_int_t
ngx_http_togglemaster_parse_rule(ngx_http_togglemaster_flag_t *f,
    ngx_str_t *json, ngx_log_t *log)
{
    char     err[160];
    json_t  *doc, *en, *rules;

    doc = ngx_http_togglemaster_parse_object(json);
    if (doc == NULL) {
        return NGX_DECLINED;
    }

    en = json_object_get(doc, "is_enabled");
    rules = json_object_get(doc, "rules");

    if (!json_is_boolean(en) || !json_is_object(rules)) {
        json_decref(doc);
        return NGX_DECLINED;
    }

    f->rule_present = 1;
    f->rule_enabled = json_is_true(en) ? 1 : 0;
    f->rule = tm_rule_compile(rules, err, sizeof(err));

    if (f->rule == NULL) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "togglemaster: rule of flag \"%V\" is unusable "
                      "(answers false): %s", &f->name, err);
    }

    json_decref(doc);

    return NGX_OK;
}


static void
ngx_http_togglemaster_malformed(ngx_log_t *log, const char *kind,
    ngx_str_t *name, ngx_uint_t kept)
{
    if (ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_togglemaster_shm->malformed, 1);
    }

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "togglemaster: malformed %s \"%V\" skipped%s", kind, name,
                  kept ? ", keeping its last good version" : "");
}


static int
ngx_http_togglemaster_flag_cmp(const void *a, const void *b)
{
    const ngx_http_togglemaster_flag_t *x = a, *y = b;

    size_t  n;
    int     rc;

    n = ngx_min(x->name.len, y->name.len);
    rc = ngx_memcmp(x->name.data, y->name.data, n);

    if (rc != 0) {
        return rc;
    }

    return (x->name.len > y->name.len) - (x->name.len < y->name.len);
}


static ngx_int_t
ngx_http_togglemaster_unhex(u_char *bin, ngx_str_t *s)
{
    ngx_int_t  hi, lo;
    size_t     i;

    if (s->len != 64) {
        return NGX_ERROR;
    }

    for (i = 0; i < 32; i++) {
        hi = ngx_hextoi(&s->data[2 * i], 1);
        lo = ngx_hextoi(&s->data[2 * i + 1], 1);

        /* tm:keys fields are lowercase, as tm_sha256_hex() writes them */
        if (hi < 0 || lo < 0 || (s->data[2 * i] >= 'A' && s->data[2 * i] <= 'F')
            || (s->data[2 * i + 1] >= 'A' && s->data[2 * i + 1] <= 'F'))
        {
            return NGX_ERROR;
        }

        bin[i] = (u_char) (hi << 4 | lo);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_togglemaster_key_index(ngx_http_togglemaster_keys_t *kp, u_char *bin)
{
    uint32_t    h;
    ngx_uint_t  i, k;

    if (kp == NULL || kp->slots == NULL) {
        return -1;
    }

    /* the key is a SHA-256: its first bytes are already a good hash */
    ngx_memcpy(&h, bin, sizeof(uint32_t));

    for (i = h & kp->mask; kp->slots[i]; i = (i + 1) & kp->mask) {
        k = kp->slots[i] - 1;
        if (ngx_memcmp(kp->keys + 32 * k, bin, 32) == 0) {
            return (ngx_int_t) k;
        }
    }

    return -1;
}


static ngx_int_t
ngx_http_togglemaster_build_flags(ngx_http_togglemaster_flags_t *snap,
    ngx_http_togglemaster_kv_t *fkv, ngx_http_togglemaster_kv_t *rkv,
    ngx_http_togglemaster_snapshot_t *old, ngx_log_t *log)
{
    ngx_uint_t                      i, j, cap, size;
    ngx_str_t                      *name, *val;
    ngx_int_t                       st;
    ngx_http_togglemaster_flag_t   *f, *of;
    ngx_http_togglemaster_build_t   b;

    cap = fkv->n + rkv->n;
    size = ngx_http_togglemaster_table_size(cap);

    b.flags = ngx_palloc(snap->pool,
                         (cap ? cap : 1) * sizeof(ngx_http_togglemaster_flag_t));
    b.slots = ngx_pcalloc(snap->pool, size * sizeof(uint32_t));
    if (b.flags == NULL || b.slots == NULL) {
        return NGX_ERROR;
    }
    b.n = 0;
    b.mask = size - 1;

    /* rules release their memory with the snapshot, even half built */
    snap->flags = b.flags;

    for (i = 0; i < fkv->n; i++) {
        name = &fkv->fields[i];
        val = &fkv->values[i];

        if (!tm_flag_name_valid((char *) name->data, name->len)) {
            ngx_http_togglemaster_malformed(log, "flag name", name, 0);
            continue;
        }

        of = ngx_http_togglemaster_flag_lookup(old, name->data, name->len);

        if (of && of->flag != TM_FLAG_MISSING
            && ngx_http_togglemaster_str_eq(&of->flag_json, val))
        {
            st = (of->flag == TM_FLAG_ON);

        } else {
            st = ngx_http_togglemaster_parse_flag(val);

            if (st == -1) {
                ngx_http_togglemaster_malformed(log, "flag", name,
                                        of && of->flag != TM_FLAG_MISSING);
                if (of == NULL || of->flag == TM_FLAG_MISSING) {
                    continue;
                }

                st = (of->flag == TM_FLAG_ON);
                val = &of->flag_json;
            }
        }

        f = ngx_http_togglemaster_build_get(snap->pool, &b, name);
        if (f == NULL) {
            return NGX_ERROR;
        }

        snap->nflags = b.n;
        f->flag = st ? TM_FLAG_ON : TM_FLAG_OFF;

        if (ngx_http_togglemaster_copy(snap->pool, &f->flag_json, val)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    for (i = 0; i < rkv->n; i++) {
        name = &rkv->fields[i];
        val = &rkv->values[i];

        if (!tm_flag_name_valid((char *) name->data, name->len)) {
            ngx_http_togglemaster_malformed(log, "rule name", name, 0);
            continue;
        }

        f = ngx_http_togglemaster_build_get(snap->pool, &b, name);
        if (f == NULL) {
            return NGX_ERROR;
        }

        snap->nflags = b.n;

        if (f->rule_present) {
            continue;
        }

        if (ngx_http_togglemaster_parse_rule(f, val, log) != NGX_OK) {
            of = ngx_http_togglemaster_flag_lookup(old, name->data, name->len);

            ngx_http_togglemaster_malformed(log, "rule", name,
                                            of && of->rule_json.len);

            if (of && of->rule_json.len
                && ngx_http_togglemaster_parse_rule(f, &of->rule_json, log)
                   == NGX_OK)
            {
                val = &of->rule_json;

            } else {
                /* no good version ever seen: fail closed, not open */
                f->rule_present = 1;
                f->rule_enabled = 1;
                f->rule = NULL;
                continue;
            }
        }

        if (ngx_http_togglemaster_copy(snap->pool, &f->rule_json, val)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    snap->nflags = b.n;

    if (b.n > 1) {
        ngx_qsort(snap->flags, b.n, sizeof(ngx_http_togglemaster_flag_t),
                  ngx_http_togglemaster_flag_cmp);
    }

    /* rebuild the slots in sorted order */
    ngx_memzero(b.slots, size * sizeof(uint32_t));

    for (i = 0; i < b.n; i++) {
        f = &snap->flags[i];

        for (j = f->hash & b.mask; b.slots[j]; j = (j + 1) & b.mask) {
            /* void */
        }

        b.slots[j] = (uint32_t) (i + 1);

        of = ngx_http_togglemaster_flag_lookup(old, f->name.data, f->name.len);
        f->counter = of ? of->counter
                        : ngx_http_togglemaster_counter_slot(f->name.data,
                                                             f->name.len);
    }

    snap->slots = b.slots;
    snap->mask = b.mask;

    return NGX_OK;
}


static ngx_http_togglemaster_keys_t *
ngx_http_togglemaster_build_keys(ngx_http_togglemaster_kv_t *kv,
    ngx_http_togglemaster_snapshot_t *old, ngx_log_t *log)
{
    u_char                         bin[32];
    json_t                        *doc;
    uint32_t                       sum, h;
    ngx_int_t                      o;
    ngx_str_t                     *name, *val;
    ngx_uint_t                     i, j, size;
    ngx_pool_t                    *pool;
    ngx_http_togglemaster_keys_t  *kp, *okp;

    pool = ngx_create_pool(4096, log);
    if (pool == NULL) {
        return NULL;
    }

    size = ngx_http_togglemaster_table_size(kv->n);

    kp = ngx_pcalloc(pool, sizeof(ngx_http_togglemaster_keys_t));
    if (kp == NULL) {
        goto failed;
    }

    kp->pool = pool;
    kp->refs = 1;
    kp->keys = ngx_palloc(pool, (kv->n ? kv->n : 1) * 32);
    kp->sums = ngx_palloc(pool, (kv->n ? kv->n : 1) * sizeof(uint32_t));
    kp->slots = ngx_pcalloc(pool, size * sizeof(uint32_t));
    if (kp->keys == NULL || kp->sums == NULL || kp->slots == NULL) {
        goto failed;
    }
    kp->mask = size - 1;

    okp = old ? old->kpart : NULL;

    for (i = 0; i < kv->n; i++) {
        name = &kv->fields[i];
        val = &kv->values[i];

        if (ngx_http_togglemaster_unhex(bin, name) != NGX_OK) {
            ngx_http_togglemaster_malformed(log, "key hash", name, 0);
            continue;
        }

        if (ngx_http_togglemaster_key_index(kp, bin) >= 0) {
            continue;
        }

        sum = ngx_crc32_long(val->data, val->len);
        o = ngx_http_togglemaster_key_index(okp, bin);

        if (o < 0 || okp->sums[o] != sum) {
            doc = ngx_http_togglemaster_parse_object(val);

            if (doc == NULL) {
                ngx_http_togglemaster_malformed(log, "key", name, o >= 0);
                if (o < 0) {
                    continue;
                }
                sum = okp->sums[o];

            } else {
                json_decref(doc);
            }
        }

        ngx_memcpy(kp->keys + 32 * kp->nkeys, bin, 32);
        kp->sums[kp->nkeys] = sum;

        ngx_memcpy(&h, bin, sizeof(uint32_t));
        for (j = h & kp->mask; kp->slots[j]; j = (j + 1) & kp->mask) {
            /* void */
        }

        kp->slots[j] = (uint32_t) ++kp->nkeys;
    }

    return kp;

failed:

    ngx_destroy_pool(pool);
    return NULL;
}


/* A kind not present in this load keeps the old snapshot's contents. */
static ngx_int_t
ngx_http_togglemaster_kv_from_old(ngx_pool_t *pool, ngx_uint_t kind,
    ngx_http_togglemaster_snapshot_t *old, ngx_http_togglemaster_kv_t *kv)
{
    ngx_uint_t                     i, n;
    ngx_http_togglemaster_flag_t  *f;

    kv->n = 0;
    kv->present = 1;

    if (old == NULL) {
        return NGX_OK;
    }

    n = old->nflags;

    kv->fields = ngx_palloc(pool, (n ? n : 1) * sizeof(ngx_str_t));
    kv->values = ngx_palloc(pool, (n ? n : 1) * sizeof(ngx_str_t));
    if (kv->fields == NULL || kv->values == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        f = &old->flags[i];

        if (kind == NGX_HTTP_TOGGLEMASTER_FLAGS && f->flag_json.len) {
            kv->fields[kv->n] = f->name;
            kv->values[kv->n++] = f->flag_json;
        }

        if (kind == NGX_HTTP_TOGGLEMASTER_RULES && f->rule_json.len) {
            kv->fields[kv->n] = f->name;
            kv->values[kv->n++] = f->rule_json;
        }
    }

    return NGX_OK;
}


static ngx_http_togglemaster_flags_t *
ngx_http_togglemaster_flags_new(ngx_http_togglemaster_kv_t *in,
    ngx_http_togglemaster_snapshot_t *old, ngx_log_t *log)
{
    ngx_uint_t                      k;
    ngx_pool_t                     *pool;
    ngx_pool_cleanup_t             *cln;
    ngx_http_togglemaster_kv_t      kv[2];
    ngx_http_togglemaster_flags_t  *fp;

    pool = ngx_create_pool(16384, log);
    if (pool == NULL) {
        return NULL;
    }

    fp = ngx_pcalloc(pool, sizeof(ngx_http_togglemaster_flags_t));
    if (fp == NULL) {
        goto failed;
    }

    fp->pool = pool;
    fp->refs = 1;

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        goto failed;
    }
    cln->handler = ngx_http_togglemaster_flags_cleanup;
    cln->data = fp;

    for (k = 0; k < 2; k++) {
        kv[k] = in[k];

        if (!in[k].present
            && ngx_http_togglemaster_kv_from_old(pool, k, old, &kv[k])
               != NGX_OK)
        {
            goto failed;
        }
    }

    if (ngx_http_togglemaster_build_flags(fp, &kv[0], &kv[1], old, log)
        != NGX_OK)
    {
        goto failed;
    }

    return fp;

failed:

    ngx_destroy_pool(pool);
    return NULL;
}


static void
ngx_http_togglemaster_flags_unref(ngx_http_togglemaster_flags_t *fp)
{
    if (fp && --fp->refs == 0) {
        ngx_destroy_pool(fp->pool);
    }
}


static void
ngx_http_togglemaster_keys_unref(ngx_http_togglemaster_keys_t *kp)
{
    if (kp && --kp->refs == 0) {
        ngx_destroy_pool(kp->pool);
    }
}


ngx_http_togglemaster_snapshot_t *
ngx_http_togglemaster_snapshot_build(int64_t version,
    ngx_http_togglemaster_kv_t *in, ngx_http_togglemaster_snapshot_t *old,
    ngx_log_t *log)
{
    ngx_http_togglemaster_snapshot_t  *snap;

    snap = ngx_alloc(sizeof(ngx_http_togglemaster_snapshot_t), log);
    if (snap == NULL) {
        return NULL;
    }

    ngx_memzero(snap, sizeof(ngx_http_togglemaster_snapshot_t));
    snap->version = version;
    snap->built = ngx_current_msec;

    if (old && !in[NGX_HTTP_TOGGLEMASTER_FLAGS].present
        && !in[NGX_HTTP_TOGGLEMASTER_RULES].present)
    {
        snap->fpart = old->fpart;
        snap->fpart->refs++;

    } else {
        snap->fpart = ngx_http_togglemaster_flags_new(in, old, log);
    }

    if (old && !in[NGX_HTTP_TOGGLEMASTER_KEYS].present) {
        snap->kpart = old->kpart;
        snap->kpart->refs++;

    } else {
        snap->kpart = ngx_http_togglemaster_build_keys(
                          &in[NGX_HTTP_TOGGLEMASTER_KEYS], old, log);
    }

    if (snap->fpart == NULL || snap->kpart == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "togglemaster: out of memory building a snapshot");
        ngx_http_togglemaster_snapshot_free(snap);
        return NULL;
    }

    snap->flags = snap->fpart->flags;
    snap->nflags = snap->fpart->nflags;
    snap->nkeys = snap->kpart->nkeys;

    return snap;
}


void
ngx_http_togglemaster_snapshot_free(ngx_http_togglemaster_snapshot_t *snap)
{
    if (snap) {
        ngx_http_togglemaster_flags_unref(snap->fpart);
        ngx_http_togglemaster_keys_unref(snap->kpart);
        ngx_free(snap);
    }
}


/* Requests never hold snapshot pointers across event-loop turns, so the
 * old snapshot can go at once. */
void
ngx_http_togglemaster_snapshot_swap(ngx_http_togglemaster_snapshot_t *snap)
{
    ngx_http_togglemaster_snapshot_t  *old;

    old = ngx_http_togglemaster_current;
    ngx_http_togglemaster_current = snap;

    if (old != snap) {
        ngx_http_togglemaster_snapshot_free(old);
    }
}


ngx_http_togglemaster_flag_t *
ngx_http_togglemaster_flag_lookup(ngx_http_togglemaster_snapshot_t *snap,
    u_char *name, size_t len)
{
    uint32_t                        h;
    ngx_uint_t                      i;
    ngx_http_togglemaster_flag_t   *f;
    ngx_http_togglemaster_flags_t  *fp;

    if (snap == NULL || snap->fpart == NULL || snap->fpart->slots == NULL) {
        return NULL;
    }

    fp = snap->fpart;
    h = ngx_murmur_hash2(name, len);

    for (i = h & fp->mask; fp->slots[i]; i = (i + 1) & fp->mask) {
        f = &fp->flags[fp->slots[i] - 1];
        if (f->hash == h && f->name.len == len
            && ngx_memcmp(f->name.data, name, len) == 0)
        {
            return f;
        }
    }

    return NULL;
}


ngx_int_t
ngx_http_togglemaster_key_known(ngx_http_togglemaster_snapshot_t *snap,
    u_char *bin)
{
    if (snap == NULL) {
        return 0;
    }

    return ngx_http_togglemaster_key_index(snap->kpart, bin) >= 0;
}
