/*
 * The snapshot: an immutable, per-worker copy of every environment's flags
 * and rules, segments and API keys with O(1) lookups. Built off the request
 * path (sync callbacks or worker start). Its parts are each refcounted and
 * shared between snapshots: one flags+rules part per environment (index 0
 * the default, tm:flags/tm:rules; the others tm:flags@<env>/tm:rules@<env>),
 * the environments' names, segments, and keys. A load that touches only one
 * kind shares the other parts with the previous snapshot, so a flag change
 * in staging does not copy production's flags nor 100,000 keys. A key
 * carries its environment's index, resolved whenever the keys or the
 * environments change, so a request picks its environment in O(1).
 *
 * A builder makes the next snapshot incrementally: the sync code feeds it
 * one chunk of a Redis hash per event-loop turn (HSCAN), so no step costs
 * more than a few milliseconds, and finishes it once every chunk is in.
 * Strings live in the part's pool (an arena: no allocation per object);
 * keys are 32 binary bytes in one array (admin keys' JSON is never parsed;
 * of a scoped key's, its scope and environment are kept). A flag
 * or rule whose JSON is the same bytes as in the previous snapshot is not
 * parsed again: its state, and its compiled rule (refcounted), are reused.
 */

#include "ngx_http_togglemaster_module.h"
#include "tm_records.h"

#include <ngx_md5.h>



#define NGX_HTTP_TOGGLEMASTER_KEY_LEN     32
#define NGX_HTTP_TOGGLEMASTER_FLAGS_POOL  65536

#define ngx_http_togglemaster_kind(k)     ((ngx_uint_t) 1 << (k))
#define NGX_HTTP_TOGGLEMASTER_FLAG_KINDS                                     \
    (ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_FLAGS)                 \
     | ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_RULES))
#define NGX_HTTP_TOGGLEMASTER_KEY_KINDS                                      \
    (ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_KEYS)                  \
     | ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_KEYS2))
#define NGX_HTTP_TOGGLEMASTER_ENV_KINDS                                      \
    ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_ENVS)
#define NGX_HTTP_TOGGLEMASTER_EFLAG_KINDS                                    \
    (ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_EFLAGS)                \
     | ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_ERULES))
#define NGX_HTTP_TOGGLEMASTER_ALL_KINDS                                      \
    (ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_NKINDS) - 1)

/* where a key came from: keys_alloc() keeps those not loaded again */
#define NGX_HTTP_TOGGLEMASTER_KEYS_ADMIN  1     /* tm:keys */
#define NGX_HTTP_TOGGLEMASTER_KEYS_V2     2     /* tm:keys:v2 */
#define NGX_HTTP_TOGGLEMASTER_KEYS_ALL    3
#define NGX_HTTP_TOGGLEMASTER_SEGMENT_KINDS                                  \
    ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_SEGMENTS)


/* One environment's flags part under construction. */
typedef struct {
    ngx_str_t                       name;     /* "" for the default */
    ngx_http_togglemaster_flags_t  *ofp;      /* old part, referenced */
    ngx_http_togglemaster_flags_t  *fp;       /* NULL: ofp is shared */
    ngx_uint_t                      fcap;     /* flags allocated */
    ngx_uint_t                      seeded;   /* entries copied from ofp */
} ngx_http_togglemaster_bpart_t;


struct ngx_http_togglemaster_builder_s {
    ngx_log_t                      *log;
    ngx_pool_t                     *pool;     /* environment names */
    /* parts[0]: the default environment; the others as objects come */
    ngx_http_togglemaster_bpart_t   parts[NGX_HTTP_TOGGLEMASTER_MAX_ENVS];
    ngx_uint_t                      nparts;
    ngx_uint_t                      etouched; /* the others are rebuilt */
    ngx_uint_t                      efresh;   /* FLAG_KINDS they reload */
    ngx_http_togglemaster_envs_t   *oep;      /* old parts, referenced */
    ngx_http_togglemaster_envs_t   *ep;       /* NULL: oep is shared */
    ngx_http_togglemaster_keys_t   *okp;
    ngx_http_togglemaster_keys_t   *kp;       /* NULL: okp is shared */
    ngx_http_togglemaster_segments_t  *osp;
    ngx_pool_t                     *spool;    /* segments: few, compiled */
    ngx_array_t                    *sfields;  /* at finish, as a whole */
    ngx_array_t                    *svalues;
    ngx_uint_t                      kcap;     /* keys allocated */
    ngx_uint_t                      reused;
    ngx_uint_t                      compiled;
};


ngx_http_togglemaster_snapshot_t  *ngx_http_togglemaster_current;


/* lowercase hex digit -> value + 1; 0 for anything else (tm:keys fields
 * are lowercase, as tm_sha256_hex() writes them) */
static const u_char  ngx_http_togglemaster_hex[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6,
    ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16
};


/* Names and compiler messages come from Redis, and messages may quote a
 * value: both are escaped (tm_log.h) so none can start a log line of its
 * own. */
static void
ngx_http_togglemaster_log_unusable(ngx_log_t *log, const char *what,
    ngx_str_t *name, const char *err, const char *verdict)
{
    char  ename[NGX_HTTP_TOGGLEMASTER_LOG_ESC_LEN];
    char  eerr[NGX_HTTP_TOGGLEMASTER_LOG_ESC_LEN];

    tm_log_escape(ename, sizeof(ename), (const char *) name->data, name->len);
    tm_log_escape(eerr, sizeof(eerr), err, ngx_strlen(err));

    ngx_log_error(NGX_LOG_WARN, log, 0, "togglemaster: %s \"%s\" %s: %s",
                  what, ename, verdict, eerr);
}


static ngx_uint_t
ngx_http_togglemaster_table_size(ngx_uint_t n)
{
    ngx_uint_t  size;

    for (size = 16; size < n * 2; size <<= 1) { /* void */ }

    return size;
}


/* an empty string may have no data (memcmp must not see NULL) */
static ngx_int_t
ngx_http_togglemaster_str_eq(ngx_str_t *a, ngx_str_t *b)
{
    return a->len == b->len
           && (a->len == 0 || ngx_memcmp(a->data, b->data, a->len) == 0);
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
ngx_http_togglemaster_rule_unref(ngx_http_togglemaster_rule_ref_t *ref)
{
    if (ref && --ref->refs == 0) {
        tm_rule_free(ref->rule);
        ngx_free(ref);
    }
}


static void
ngx_http_togglemaster_flags_cleanup(void *data)
{
    ngx_http_togglemaster_flags_t *fp = data;

    ngx_uint_t  i;

    for (i = 0; i < fp->nflags; i++) {
        ngx_http_togglemaster_rule_unref(fp->flags[i].rule_ref);
    }

    ngx_free(fp->flags);
    ngx_free(fp->slots);
}


static void
ngx_http_togglemaster_flags_unref(ngx_http_togglemaster_flags_t *fp)
{
    if (fp && --fp->refs == 0) {
        ngx_destroy_pool(fp->pool);
    }
}


static void
ngx_http_togglemaster_keys_cleanup(void *data)
{
    ngx_http_togglemaster_keys_t *kp = data;

    ngx_free(kp->keys);
    ngx_free(kp->meta);
    ngx_free(kp->slots);
}


static void
ngx_http_togglemaster_keys_unref(ngx_http_togglemaster_keys_t *kp)
{
    if (kp && --kp->refs == 0) {
        ngx_destroy_pool(kp->pool);
    }
}


static ngx_http_togglemaster_flag_t *
ngx_http_togglemaster_part_lookup(ngx_http_togglemaster_flags_t *fp,
    u_char *name, size_t len, uint32_t h)
{
    ngx_uint_t                     i;
    ngx_http_togglemaster_flag_t  *f;

    if (fp == NULL || fp->slots == NULL) {
        return NULL;
    }

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
        if (ngx_memcmp(kp->keys + NGX_HTTP_TOGGLEMASTER_KEY_LEN * k, bin,
                       NGX_HTTP_TOGGLEMASTER_KEY_LEN)
            == 0)
        {
            return (ngx_int_t) k;
        }
    }

    return -1;
}


/* The objects' JSON is read by lib/tm_records.c (fuzzed there). */

/* 0 off, 1 on, -1 malformed; *cv: visible to client keys */
static ngx_int_t
ngx_http_togglemaster_parse_flag(ngx_str_t *json, ngx_uint_t *cv)
{
    int        visible;
    ngx_int_t  rc;

    rc = tm_flag_record_parse((const char *) json->data, json->len, &visible);
    *cv = visible ? 1 : 0;

    return rc;
}


/* NGX_OK with f's rule fields set, or NGX_DECLINED if malformed. A rule
 * that is well-formed but does not compile (unknown type) stays present
 * with rule == NULL: the original semantics answer false for it. */
static ngx_int_t
ngx_http_togglemaster_parse_rule(ngx_http_togglemaster_flag_t *f,
    ngx_str_t *json, ngx_log_t *log)
{
    int   enabled;
    char  err[160];

    if (tm_rule_record_parse((const char *) json->data, json->len, &enabled,
                             &f->rule, err, sizeof(err))
        != 0)
    {
        return NGX_DECLINED;
    }

    f->rule_present = 1;
    f->rule_enabled = enabled ? 1 : 0;

    if (f->rule == NULL) {
        ngx_http_togglemaster_log_unusable(log, "rule of flag", &f->name, err,
                                           "is unusable (answers false)");
    }

    return NGX_OK;
}


static void
ngx_http_togglemaster_malformed(ngx_log_t *log, const char *kind,
    ngx_str_t *name, ngx_uint_t kept)
{
    if (ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_togglemaster_shm->malformed, 1);
    }

    char  esc[NGX_HTTP_TOGGLEMASTER_LOG_ESC_LEN];

    tm_log_escape(esc, sizeof(esc), (const char *) name->data, name->len);

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "togglemaster: malformed %s \"%s\" skipped%s", kind, esc,
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
    size_t   i;
    u_char   hi, lo;

    if (s->len != 2 * NGX_HTTP_TOGGLEMASTER_KEY_LEN) {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_HTTP_TOGGLEMASTER_KEY_LEN; i++) {
        hi = ngx_http_togglemaster_hex[s->data[2 * i]];
        lo = ngx_http_togglemaster_hex[s->data[2 * i + 1]];

        if (hi == 0 || lo == 0) {
            return NGX_ERROR;
        }

        bin[i] = (u_char) ((hi - 1) << 4 | (lo - 1));
    }

    return NGX_OK;
}


/* ---- the flags part under construction ---- */

static ngx_http_togglemaster_flags_t *
ngx_http_togglemaster_flags_alloc(ngx_http_togglemaster_builder_t *b,
    ngx_http_togglemaster_bpart_t *bp, ngx_uint_t cap)
{
    ngx_uint_t                      size;
    ngx_pool_t                     *pool;
    ngx_pool_cleanup_t             *cln;
    ngx_http_togglemaster_flags_t  *fp;

    pool = ngx_create_pool(NGX_HTTP_TOGGLEMASTER_FLAGS_POOL, b->log);
    if (pool == NULL) {
        return NULL;
    }

    fp = ngx_pcalloc(pool, sizeof(ngx_http_togglemaster_flags_t));
    cln = ngx_pool_cleanup_add(pool, 0);
    if (fp == NULL || cln == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    fp->pool = pool;
    fp->refs = 1;

    cln->handler = ngx_http_togglemaster_flags_cleanup;
    cln->data = fp;

    cap = ngx_max(cap, 16);
    size = ngx_http_togglemaster_table_size(cap);

    fp->flags = ngx_alloc(cap * sizeof(ngx_http_togglemaster_flag_t), b->log);
    fp->slots = ngx_calloc(size * sizeof(uint32_t), b->log);
    if (fp->flags == NULL || fp->slots == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    fp->mask = size - 1;
    bp->fcap = cap;

    return fp;
}


static ngx_int_t
ngx_http_togglemaster_flags_rehash(ngx_http_togglemaster_flags_t *fp,
    ngx_uint_t size, ngx_log_t *log)
{
    uint32_t    *slots;
    ngx_uint_t   i, j, mask;

    slots = ngx_calloc(size * sizeof(uint32_t), log);
    if (slots == NULL) {
        return NGX_ERROR;
    }

    mask = size - 1;

    for (i = 0; i < fp->nflags; i++) {
        for (j = fp->flags[i].hash & mask; slots[j]; j = (j + 1) & mask) {
            /* void */
        }

        slots[j] = (uint32_t) (i + 1);
    }

    ngx_free(fp->slots);
    fp->slots = slots;
    fp->mask = mask;

    return NGX_OK;
}


/* The entry called name in the part being built; created if asked. */
static ngx_http_togglemaster_flag_t *
ngx_http_togglemaster_flags_get(ngx_http_togglemaster_builder_t *b,
    ngx_http_togglemaster_bpart_t *bp, ngx_str_t *name, ngx_uint_t create)
{
    uint32_t                        h;
    ngx_uint_t                      i;
    ngx_http_togglemaster_flag_t   *f, *flags;
    ngx_http_togglemaster_flags_t  *fp;

    fp = bp->fp;
    h = ngx_murmur_hash2(name->data, name->len);

    f = ngx_http_togglemaster_part_lookup(fp, name->data, name->len, h);
    if (f || !create) {
        if (f) {
            f->digested = 0;    /* the caller changes it */
        }

        return f;
    }

    if (fp->nflags == bp->fcap) {
        flags = ngx_alloc(2 * bp->fcap * sizeof(ngx_http_togglemaster_flag_t),
                          b->log);
        if (flags == NULL) {
            return NULL;
        }

        ngx_memcpy(flags, fp->flags,
                   fp->nflags * sizeof(ngx_http_togglemaster_flag_t));
        ngx_free(fp->flags);
        fp->flags = flags;
        bp->fcap *= 2;
    }

    if ((fp->nflags + 1) * 2 > fp->mask + 1
        && ngx_http_togglemaster_flags_rehash(fp, 2 * (fp->mask + 1), b->log)
           != NGX_OK)
    {
        return NULL;
    }

    f = &fp->flags[fp->nflags];
    ngx_memzero(f, sizeof(ngx_http_togglemaster_flag_t));
    f->hash = h;
    f->flag = TM_FLAG_MISSING;

    if (ngx_http_togglemaster_copy(fp->pool, &f->name, name) != NGX_OK) {
        return NULL;
    }

    fp->nflags++;

    for (i = h & fp->mask; fp->slots[i]; i = (i + 1) & fp->mask) {
        /* void */
    }

    fp->slots[i] = (uint32_t) fp->nflags;

    return f;
}


static void
ngx_http_togglemaster_rule_clear(ngx_http_togglemaster_flag_t *f)
{
    ngx_http_togglemaster_rule_unref(f->rule_ref);
    f->rule_ref = NULL;
    f->rule = NULL;
    f->rule_present = 0;
    f->rule_enabled = 0;
    ngx_str_null(&f->rule_json);
}


/* f's rule becomes of's: the same compiled rule, one more reference */
static ngx_int_t
ngx_http_togglemaster_rule_share(ngx_pool_t *pool,
    ngx_http_togglemaster_flag_t *f, ngx_http_togglemaster_flag_t *of)
{
    f->rule_present = of->rule_present;
    f->rule_enabled = of->rule_enabled;
    f->rule = of->rule;
    f->rule_ref = of->rule_ref;

    if (f->rule_ref) {
        f->rule_ref->refs++;
    }

    if (of->rule_json.len == 0) {
        ngx_str_null(&f->rule_json);
        return NGX_OK;
    }

    return ngx_http_togglemaster_copy(pool, &f->rule_json, &of->rule_json);
}


/* The kinds of old's flags part that a load does not fetch again. An
 * entry copied whole (both kinds kept: a change applied over the current
 * snapshot) keeps its digest and metrics slot, so that flags_done() need
 * not read it again: only the entries flags_get() handed out since are
 * hashed. The entries come in name order: flags_done() sorts only when one
 * was added after them. */
static ngx_int_t
ngx_http_togglemaster_flags_seed(ngx_http_togglemaster_builder_t *b,
    ngx_http_togglemaster_bpart_t *bp, ngx_uint_t kinds)
{
    ngx_uint_t                     i, flag, rule, whole;
    ngx_http_togglemaster_flag_t  *f, *of;

    whole = (kinds & NGX_HTTP_TOGGLEMASTER_FLAG_KINDS)
            == NGX_HTTP_TOGGLEMASTER_FLAG_KINDS;

    for (i = 0; bp->ofp && i < bp->ofp->nflags; i++) {
        of = &bp->ofp->flags[i];

        flag = (kinds & ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_FLAGS))
               && of->flag != TM_FLAG_MISSING;
        rule = (kinds & ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_RULES))
               && of->rule_present;

        if (!flag && !rule) {
            continue;
        }

        f = ngx_http_togglemaster_flags_get(b, bp, &of->name, 1);
        if (f == NULL) {
            return NGX_ERROR;
        }

        if (flag) {
            f->flag = of->flag;
            f->client_visible = of->client_visible;

            if (ngx_http_togglemaster_copy(bp->fp->pool, &f->flag_json,
                                           &of->flag_json)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        if (rule
            && ngx_http_togglemaster_rule_share(bp->fp->pool, f, of) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (whole && of->digested) {
            ngx_memcpy(f->digest, of->digest, sizeof(f->digest));
            f->digested = 1;
            f->counter = of->counter;
        }
    }

    bp->seeded = bp->fp->nflags;

    return NGX_OK;
}


static ngx_int_t
ngx_http_togglemaster_flag_set(ngx_http_togglemaster_builder_t *b,
    ngx_http_togglemaster_bpart_t *bp, ngx_str_t *name, ngx_str_t *val)
{
    ngx_int_t                      st;
    ngx_uint_t                     cv;
    ngx_http_togglemaster_flag_t  *f, *of;

    if (!tm_name_valid_unicode((char *) name->data, name->len)) {
        ngx_http_togglemaster_malformed(b->log, "flag name", name, 0);
        return NGX_OK;
    }

    of = ngx_http_togglemaster_part_lookup(bp->ofp, name->data, name->len,
                                        ngx_murmur_hash2(name->data, name->len));

    if (of && of->flag != TM_FLAG_MISSING
        && ngx_http_togglemaster_str_eq(&of->flag_json, val))
    {
        st = (of->flag == TM_FLAG_ON);
        cv = of->client_visible;
        b->reused++;

    } else {
        st = ngx_http_togglemaster_parse_flag(val, &cv);
        b->compiled++;

        if (st == -1) {
            ngx_http_togglemaster_malformed(b->log, "flag", name,
                                        of && of->flag != TM_FLAG_MISSING);
            if (of == NULL || of->flag == TM_FLAG_MISSING) {
                return NGX_OK;
            }

            st = (of->flag == TM_FLAG_ON);
            cv = of->client_visible;
            val = &of->flag_json;
        }
    }

    f = ngx_http_togglemaster_flags_get(b, bp, name, 1);
    if (f == NULL) {
        return NGX_ERROR;
    }

    f->flag = st ? TM_FLAG_ON : TM_FLAG_OFF;
    f->client_visible = cv;

    return ngx_http_togglemaster_copy(bp->fp->pool, &f->flag_json, val);
}


static ngx_int_t
ngx_http_togglemaster_rule_set(ngx_http_togglemaster_builder_t *b,
    ngx_http_togglemaster_bpart_t *bp, ngx_str_t *name, ngx_str_t *val)
{
    ngx_http_togglemaster_flag_t      *f, *of;
    ngx_http_togglemaster_rule_ref_t  *ref;

    if (!tm_name_valid_unicode((char *) name->data, name->len)) {
        ngx_http_togglemaster_malformed(b->log, "rule name", name, 0);
        return NGX_OK;
    }

    f = ngx_http_togglemaster_flags_get(b, bp, name, 1);
    if (f == NULL) {
        return NGX_ERROR;
    }

    ngx_http_togglemaster_rule_clear(f);

    of = ngx_http_togglemaster_part_lookup(bp->ofp, name->data, name->len,
                                           f->hash);

    if (of && of->rule_json.len
        && ngx_http_togglemaster_str_eq(&of->rule_json, val))
    {
        b->reused++;
        return ngx_http_togglemaster_rule_share(bp->fp->pool, f, of);
    }

    b->compiled++;

    if (ngx_http_togglemaster_parse_rule(f, val, b->log) != NGX_OK) {
        ngx_http_togglemaster_malformed(b->log, "rule", name,
                                        of && of->rule_json.len);

        if (of && of->rule_json.len) {
            return ngx_http_togglemaster_rule_share(bp->fp->pool, f, of);
        }

        /* no good version ever seen: fail closed, not open */
        f->rule_present = 1;
        f->rule_enabled = 1;
        f->rule = NULL;
        return NGX_OK;
    }

    if (f->rule) {
        ref = ngx_alloc(sizeof(ngx_http_togglemaster_rule_ref_t), b->log);
        if (ref == NULL) {
            tm_rule_free(f->rule);
            f->rule = NULL;
            return NGX_ERROR;
        }

        ref->rule = f->rule;
        ref->refs = 1;
        f->rule_ref = ref;
    }

    return ngx_http_togglemaster_copy(bp->fp->pool, &f->rule_json, val);
}


/* What a flag is, for the part's digest: lengths first, so no two
 * different flags hash the same bytes. */
static void
ngx_http_togglemaster_flag_digest(ngx_http_togglemaster_flag_t *f)
{
    ngx_md5_t  ctx;

    ngx_md5_init(&ctx);
    ngx_md5_update(&ctx, &f->name.len, sizeof(size_t));
    ngx_md5_update(&ctx, f->name.data, f->name.len);
    ngx_md5_update(&ctx, &f->flag_json.len, sizeof(size_t));
    ngx_md5_update(&ctx, f->flag_json.data, f->flag_json.len);
    ngx_md5_update(&ctx, &f->rule_json.len, sizeof(size_t));
    ngx_md5_update(&ctx, f->rule_json.data, f->rule_json.len);
    ngx_md5_final(f->digest, &ctx);
}


/* Sorted by name, without entries left with neither flag nor rule; the
 * entries a load or change set get their digest (the old entry's when the
 * JSON texts are the same bytes), and the part's digest is all of them
 * combined. A change of one flag among 10,000 costs no sort, no lookup
 * and no hashing of the others (seed). */
static void
ngx_http_togglemaster_flags_done(ngx_http_togglemaster_builder_t *b,
    ngx_http_togglemaster_bpart_t *bp)
{
    ngx_uint_t                      i, j, n, sorted;
    ngx_http_togglemaster_flag_t   *f, *of;
    ngx_http_togglemaster_flags_t  *fp;

    fp = bp->fp;

    /* nothing added after the seeded entries: still in order */
    sorted = (fp->nflags == bp->seeded);

    for (i = 0, n = 0; i < fp->nflags; i++) {
        f = &fp->flags[i];

        if (f->flag == TM_FLAG_MISSING && !f->rule_present) {
            continue;
        }

        if (n != i) {
            fp->flags[n] = *f;
        }

        n++;
    }

    fp->nflags = n;

    if (n > 1 && !sorted) {
        ngx_qsort(fp->flags, n, sizeof(ngx_http_togglemaster_flag_t),
                  ngx_http_togglemaster_flag_cmp);
    }

    /* the slots again, in sorted order */
    ngx_memzero(fp->slots, (fp->mask + 1) * sizeof(uint32_t));
    ngx_memzero(fp->digest, sizeof(fp->digest));

    for (i = 0; i < n; i++) {
        f = &fp->flags[i];

        for (j = f->hash & fp->mask; fp->slots[j]; j = (j + 1) & fp->mask) {
            /* void */
        }

        fp->slots[j] = (uint32_t) (i + 1);

        if (!f->digested) {
            of = ngx_http_togglemaster_part_lookup(bp->ofp, f->name.data,
                                                   f->name.len, f->hash);
            f->counter = of ? of->counter
                            : ngx_http_togglemaster_counter_slot(f->name.data,
                                                                 f->name.len);

            /* a full load mostly finds the same bytes: compared, not
             * hashed again */
            if (of && of->digested
                && ngx_http_togglemaster_str_eq(&of->flag_json, &f->flag_json)
                && ngx_http_togglemaster_str_eq(&of->rule_json, &f->rule_json))
            {
                ngx_memcpy(f->digest, of->digest, sizeof(f->digest));

            } else {
                ngx_http_togglemaster_flag_digest(f);
            }

            f->digested = 1;
        }

        for (j = 0; j < sizeof(fp->digest); j++) {
            fp->digest[j] ^= f->digest[j];
        }
    }
}


/* ---- the keys part under construction ---- */

static ngx_int_t
ngx_http_togglemaster_keys_rehash(ngx_http_togglemaster_keys_t *kp,
    ngx_uint_t size, ngx_log_t *log)
{
    uint32_t    *slots, h;
    ngx_uint_t   i, j, mask;

    slots = ngx_calloc(size * sizeof(uint32_t), log);
    if (slots == NULL) {
        return NGX_ERROR;
    }

    mask = size - 1;

    for (i = 0; i < kp->nkeys; i++) {
        ngx_memcpy(&h, kp->keys + NGX_HTTP_TOGGLEMASTER_KEY_LEN * i,
                   sizeof(uint32_t));

        for (j = h & mask; slots[j]; j = (j + 1) & mask) {
            /* void */
        }

        slots[j] = (uint32_t) (i + 1);
    }

    ngx_free(kp->slots);
    kp->slots = slots;
    kp->mask = mask;

    return NGX_OK;
}


/* seed's keys of the sources in keep (KEYS_ADMIN: tm:keys, KEYS_V2:
 * tm:keys:v2), with the environment names they use */
static ngx_int_t
ngx_http_togglemaster_keys_copy(ngx_http_togglemaster_keys_t *kp,
    ngx_http_togglemaster_keys_t *seed, ngx_uint_t keep, ngx_log_t *log)
{
    ngx_uint_t                         i, src;
    ngx_http_togglemaster_key_meta_t  *m;

    for (i = 0; i < seed->nnames; i++) {
        if (ngx_http_togglemaster_copy(kp->pool, &kp->names[i],
                                       &seed->names[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    kp->nnames = seed->nnames;

    if (keep == NGX_HTTP_TOGGLEMASTER_KEYS_ALL) {
        ngx_memcpy(kp->keys, seed->keys,
                   seed->nkeys * NGX_HTTP_TOGGLEMASTER_KEY_LEN);
        ngx_memcpy(kp->meta, seed->meta,
                   seed->nkeys * sizeof(ngx_http_togglemaster_key_meta_t));
        kp->nkeys = seed->nkeys;
        kp->nv2 = seed->nv2;
        return NGX_OK;
    }

    for (i = 0; i < seed->nkeys; i++) {
        m = &seed->meta[i];
        src = m->v2 ? NGX_HTTP_TOGGLEMASTER_KEYS_V2
                    : NGX_HTTP_TOGGLEMASTER_KEYS_ADMIN;

        if (!(keep & src)) {
            continue;
        }

        ngx_memcpy(kp->keys + NGX_HTTP_TOGGLEMASTER_KEY_LEN * kp->nkeys,
                   seed->keys + NGX_HTTP_TOGGLEMASTER_KEY_LEN * i,
                   NGX_HTTP_TOGGLEMASTER_KEY_LEN);
        kp->meta[kp->nkeys++] = *m;
        kp->nv2 += m->v2;
    }

    return NGX_OK;
}


static ngx_http_togglemaster_keys_t *
ngx_http_togglemaster_keys_alloc(ngx_http_togglemaster_builder_t *b,
    ngx_uint_t cap, ngx_http_togglemaster_keys_t *seed, ngx_uint_t keep)
{
    ngx_pool_t                    *pool;
    ngx_pool_cleanup_t            *cln;
    ngx_http_togglemaster_keys_t  *kp;

    pool = ngx_create_pool(1024, b->log);
    if (pool == NULL) {
        return NULL;
    }

    kp = ngx_pcalloc(pool, sizeof(ngx_http_togglemaster_keys_t));
    cln = ngx_pool_cleanup_add(pool, 0);
    if (kp == NULL || cln == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    kp->pool = pool;
    kp->refs = 1;

    cln->handler = ngx_http_togglemaster_keys_cleanup;
    cln->data = kp;

    cap = ngx_max(cap, 16);

    if (seed) {
        cap = ngx_max(cap, seed->nkeys + seed->nkeys / 8 + 16);
    }

    kp->keys = ngx_alloc(cap * NGX_HTTP_TOGGLEMASTER_KEY_LEN, b->log);
    kp->meta = ngx_alloc(cap * sizeof(ngx_http_togglemaster_key_meta_t),
                         b->log);
    if (kp->keys == NULL || kp->meta == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    b->kcap = cap;

    if (seed) {
        if (ngx_http_togglemaster_keys_copy(kp, seed, keep, b->log)
            != NGX_OK)
        {
            ngx_destroy_pool(pool);
            return NULL;
        }

        /* a change to a big table: a copy, not 100,000 inserts */
        if (keep == NGX_HTTP_TOGGLEMASTER_KEYS_ALL
            && ngx_http_togglemaster_table_size(cap) <= seed->mask + 1)
        {
            kp->slots = ngx_alloc((seed->mask + 1) * sizeof(uint32_t),
                                  b->log);
            if (kp->slots == NULL) {
                ngx_destroy_pool(pool);
                return NULL;
            }

            ngx_memcpy(kp->slots, seed->slots,
                       (seed->mask + 1) * sizeof(uint32_t));
            kp->mask = seed->mask;

            return kp;
        }
    }

    if (ngx_http_togglemaster_keys_rehash(kp,
                                          ngx_http_togglemaster_table_size(cap),
                                          b->log)
        != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return NULL;
    }

    return kp;
}


static ngx_int_t
ngx_http_togglemaster_keys_add(ngx_http_togglemaster_builder_t *b, u_char *bin,
    ngx_http_togglemaster_key_meta_t *meta)
{
    u_char                            *keys;
    uint32_t                           h;
    ngx_uint_t                         j;
    ngx_http_togglemaster_keys_t      *kp;
    ngx_http_togglemaster_key_meta_t  *metas;

    kp = b->kp;

    if (kp->nkeys == b->kcap) {
        keys = ngx_alloc(2 * b->kcap * NGX_HTTP_TOGGLEMASTER_KEY_LEN, b->log);
        metas = ngx_alloc(2 * b->kcap
                          * sizeof(ngx_http_togglemaster_key_meta_t), b->log);
        if (keys == NULL || metas == NULL) {
            ngx_free(keys);
            ngx_free(metas);
            return NGX_ERROR;
        }

        ngx_memcpy(keys, kp->keys, kp->nkeys * NGX_HTTP_TOGGLEMASTER_KEY_LEN);
        ngx_memcpy(metas, kp->meta,
                   kp->nkeys * sizeof(ngx_http_togglemaster_key_meta_t));
        ngx_free(kp->keys);
        ngx_free(kp->meta);
        kp->keys = keys;
        kp->meta = metas;
        b->kcap *= 2;
    }

    if ((kp->nkeys + 1) * 2 > kp->mask + 1
        && ngx_http_togglemaster_keys_rehash(kp, 2 * (kp->mask + 1), b->log)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(kp->keys + NGX_HTTP_TOGGLEMASTER_KEY_LEN * kp->nkeys, bin,
               NGX_HTTP_TOGGLEMASTER_KEY_LEN);
    kp->meta[kp->nkeys] = *meta;
    kp->nv2 += meta->v2;

    ngx_memcpy(&h, bin, sizeof(uint32_t));
    for (j = h & kp->mask; kp->slots[j]; j = (j + 1) & kp->mask) {
        /* void */
    }

    kp->slots[j] = (uint32_t) ++kp->nkeys;

    return NGX_OK;
}


/* The id of an environment name in kp (added if new), or ENV_NONE when
 * the table is full: such a key has no environment and evaluates
 * nowhere. */
static ngx_uint_t
ngx_http_togglemaster_keys_name(ngx_http_togglemaster_keys_t *kp,
    u_char *name, size_t len)
{
    ngx_str_t   s;
    ngx_uint_t  i;

    for (i = 0; i < kp->nnames; i++) {
        if (kp->names[i].len == len
            && ngx_memcmp(kp->names[i].data, name, len) == 0)
        {
            return i;
        }
    }

    if (kp->nnames == NGX_HTTP_TOGGLEMASTER_KEY_NAMES) {
        return NGX_HTTP_TOGGLEMASTER_ENV_NONE;
    }

    s.data = name;
    s.len = len;

    if (ngx_http_togglemaster_copy(kp->pool, &kp->names[kp->nnames], &s)
        != NGX_OK)
    {
        return NGX_HTTP_TOGGLEMASTER_ENV_NONE;
    }

    return kp->nnames++;
}


/* Each key's environment index in the snapshot's environments ep: admin
 * keys the default's (a location may pick another), readonly keys none. */
static void
ngx_http_togglemaster_keys_resolve(ngx_http_togglemaster_keys_t *kp,
    ngx_http_togglemaster_envs_t *ep)
{
    uint16_t                           map[NGX_HTTP_TOGGLEMASTER_KEY_NAMES];
    ngx_uint_t                         i, j;
    ngx_http_togglemaster_key_meta_t  *m;

    for (i = 0; i < kp->nnames; i++) {
        map[i] = NGX_HTTP_TOGGLEMASTER_ENV_NONE;

        for (j = 0; ep && j < ep->n; j++) {
            if (ngx_http_togglemaster_str_eq(&ep->names[j], &kp->names[i])) {
                map[i] = (uint16_t) j;
                break;
            }
        }
    }

    for (i = 0; i < kp->nkeys; i++) {
        m = &kp->meta[i];

        if (!m->v2) {
            m->env = 0;

        } else {
            m->env = (m->name == NGX_HTTP_TOGGLEMASTER_ENV_NONE)
                     ? NGX_HTTP_TOGGLEMASTER_ENV_NONE : map[m->name];
        }
    }
}


static void
ngx_http_togglemaster_segments_cleanup(void *data)
{
    ngx_http_togglemaster_segments_t *sp = data;

    ngx_uint_t  i;

    for (i = 0; i < sp->nsegs; i++) {
        tm_segment_free(sp->segs[i].seg);
    }
}


/* Compiles a tm:segments object; NULL if malformed or it does not
 * compile, logged. */
static tm_segment *
ngx_http_togglemaster_parse_segment(ngx_str_t *name, ngx_str_t *json,
    ngx_log_t *log)
{
    char         err[160];
    tm_segment  *seg;

    seg = tm_segment_record_compile((const char *) json->data, json->len,
                                    err, sizeof(err));

    if (seg == NULL) {
        ngx_http_togglemaster_log_unusable(log, "segment", name, err,
                                           "does not compile");
    }

    return seg;
}


static ngx_http_togglemaster_segments_t *
ngx_http_togglemaster_segments_new(ngx_http_togglemaster_kv_t *kv,
    ngx_http_togglemaster_snapshot_t *old, ngx_log_t *log)
{
    uint32_t                           h;
    ngx_str_t                         *name, *val;
    ngx_uint_t                         i, j, size;
    ngx_pool_t                        *pool;
    tm_segment                        *seg;
    ngx_pool_cleanup_t                *cln;
    ngx_http_togglemaster_segment_t   *s, *os;
    ngx_http_togglemaster_segments_t  *sp;

    pool = ngx_create_pool(4096, log);
    if (pool == NULL) {
        return NULL;
    }

    sp = ngx_pcalloc(pool, sizeof(ngx_http_togglemaster_segments_t));
    if (sp == NULL) {
        goto failed;
    }

    sp->pool = pool;
    sp->refs = 1;

    size = ngx_http_togglemaster_table_size(kv->n);

    sp->segs = ngx_palloc(pool, (kv->n ? kv->n : 1)
                                * sizeof(ngx_http_togglemaster_segment_t));
    sp->slots = ngx_pcalloc(pool, size * sizeof(uint32_t));
    if (sp->segs == NULL || sp->slots == NULL) {
        goto failed;
    }

    sp->mask = size - 1;

    /* compiled segments are released with the pool, even half built */
    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        goto failed;
    }
    cln->handler = ngx_http_togglemaster_segments_cleanup;
    cln->data = sp;

    for (i = 0; i < kv->n; i++) {
        name = &kv->fields[i];
        val = &kv->values[i];

        if (!tm_name_valid_unicode((char *) name->data, name->len)) {
            ngx_http_togglemaster_malformed(log, "segment name", name, 0);
            continue;
        }

        h = ngx_murmur_hash2(name->data, name->len);

        for (j = h & sp->mask; sp->slots[j]; j = (j + 1) & sp->mask) {
            s = &sp->segs[sp->slots[j] - 1];
            if (s->hash == h && ngx_http_togglemaster_str_eq(&s->name, name)) {
                break;
            }
        }

        if (sp->slots[j]) {
            continue;     /* a duplicate field: the first wins */
        }

        seg = ngx_http_togglemaster_parse_segment(name, val, log);

        if (seg == NULL) {
            os = ngx_http_togglemaster_segment_lookup(old, name->data,
                                                      name->len);

            ngx_http_togglemaster_malformed(log, "segment", name, os != NULL);

            if (os == NULL) {
                continue;
            }

            /* keep the last good version: compile it again for this pool */
            val = &os->json;
            seg = ngx_http_togglemaster_parse_segment(name, val, log);
            if (seg == NULL) {
                continue;
            }
        }

        s = &sp->segs[sp->nsegs++];
        s->hash = h;
        s->seg = seg;

        if (ngx_http_togglemaster_copy(pool, &s->name, name) != NGX_OK
            || ngx_http_togglemaster_copy(pool, &s->json, val) != NGX_OK)
        {
            goto failed;
        }

        sp->slots[j] = (uint32_t) sp->nsegs;
    }

    return sp;

failed:

    ngx_destroy_pool(pool);
    return NULL;
}


static void
ngx_http_togglemaster_segments_unref(ngx_http_togglemaster_segments_t *sp)
{
    if (sp && --sp->refs == 0) {
        ngx_destroy_pool(sp->pool);
    }
}


ngx_http_togglemaster_segment_t *
ngx_http_togglemaster_segment_lookup(ngx_http_togglemaster_snapshot_t *snap,
    u_char *name, size_t len)
{
    uint32_t                           h;
    ngx_uint_t                         i;
    ngx_http_togglemaster_segment_t   *s;
    ngx_http_togglemaster_segments_t  *sp;

    if (snap == NULL || snap->spart == NULL || snap->spart->nsegs == 0) {
        return NULL;
    }

    sp = snap->spart;
    h = ngx_murmur_hash2(name, len);

    for (i = h & sp->mask; sp->slots[i]; i = (i + 1) & sp->mask) {
        s = &sp->segs[sp->slots[i] - 1];
        if (s->hash == h && s->name.len == len
            && ngx_memcmp(s->name.data, name, len) == 0)
        {
            return s;
        }
    }

    return NULL;
}


static ngx_uint_t
ngx_http_togglemaster_key_slot(ngx_http_togglemaster_keys_t *kp,
    ngx_uint_t k)
{
    uint32_t    h;
    ngx_uint_t  i;

    ngx_memcpy(&h, kp->keys + NGX_HTTP_TOGGLEMASTER_KEY_LEN * k,
               sizeof(uint32_t));

    for (i = h & kp->mask; kp->slots[i] != k + 1; i = (i + 1) & kp->mask) {
        /* void: k is in the table */
    }

    return i;
}


/* Removes key k: the last key moves into its place, and the slots close
 * the gap (backward shift: no tombstones). */
static void
ngx_http_togglemaster_keys_remove(ngx_http_togglemaster_keys_t *kp,
    ngx_uint_t k)
{
    uint32_t    h;
    ngx_uint_t  i, j, home, last;

    i = ngx_http_togglemaster_key_slot(kp, k);
    last = kp->nkeys - 1;
    kp->nv2 -= kp->meta[k].v2;

    if (k != last) {
        kp->slots[ngx_http_togglemaster_key_slot(kp, last)] = (uint32_t) (k + 1);
        ngx_memcpy(kp->keys + NGX_HTTP_TOGGLEMASTER_KEY_LEN * k,
                   kp->keys + NGX_HTTP_TOGGLEMASTER_KEY_LEN * last,
                   NGX_HTTP_TOGGLEMASTER_KEY_LEN);
        kp->meta[k] = kp->meta[last];
    }

    kp->nkeys--;
    kp->slots[i] = 0;

    for (j = (i + 1) & kp->mask; kp->slots[j]; j = (j + 1) & kp->mask) {
        ngx_memcpy(&h, kp->keys + NGX_HTTP_TOGGLEMASTER_KEY_LEN
                                  * (kp->slots[j] - 1),
                   sizeof(uint32_t));
        home = h & kp->mask;

        /* the entry at j may stay unless its home is outside (i, j] */
        if ((i <= j) ? (i < home && home <= j) : (i < home || home <= j)) {
            continue;
        }

        kp->slots[i] = kp->slots[j];
        kp->slots[j] = 0;
        i = j;
    }
}


/* A tm:keys:v2 value into meta; a malformed one keeps the key's last good
 * version if there is one (NGX_DECLINED: skip the key). */
static ngx_int_t
ngx_http_togglemaster_key_v2(ngx_http_togglemaster_builder_t *b,
    ngx_str_t *name, ngx_str_t *val, u_char *bin,
    ngx_http_togglemaster_key_meta_t *meta)
{
    char        renv[TM_NAME_MAX + 1];
    size_t      len;
    tm_scope    scope;
    ngx_int_t   o;
    ngx_str_t  *env;

    meta->v2 = 1;
    meta->env = NGX_HTTP_TOGGLEMASTER_ENV_NONE;

    if (tm_key_record_parse((const char *) val->data, val->len, &scope, renv,
                            sizeof(renv))
        == 0)
    {
        len = ngx_strlen(renv);
        meta->scope = (uint8_t) scope;
        meta->name = len
                     ? (uint16_t) ngx_http_togglemaster_keys_name(b->kp,
                                      (u_char *) renv, len)
                     : NGX_HTTP_TOGGLEMASTER_ENV_NONE;
        return NGX_OK;
    }

    o = ngx_http_togglemaster_key_index(b->okp, bin);
    if (o >= 0 && !b->okp->meta[o].v2) {
        o = -1;
    }

    ngx_http_togglemaster_malformed(b->log, "scoped key", name, o >= 0);

    if (o < 0) {
        return NGX_DECLINED;
    }

    *meta = b->okp->meta[o];

    if (meta->name != NGX_HTTP_TOGGLEMASTER_ENV_NONE) {
        env = &b->okp->names[meta->name];
        meta->name = (uint16_t) ngx_http_togglemaster_keys_name(b->kp,
                                    env->data, env->len);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_togglemaster_key_set(ngx_http_togglemaster_builder_t *b,
    ngx_str_t *name, ngx_str_t *val, ngx_uint_t v2)
{
    u_char                            bin[NGX_HTTP_TOGGLEMASTER_KEY_LEN];
    ngx_int_t                         o;
    ngx_http_togglemaster_key_meta_t  meta;

    if (ngx_http_togglemaster_unhex(bin, name) != NGX_OK) {
        ngx_http_togglemaster_malformed(b->log, "key hash", name, 0);
        return NGX_OK;
    }

    /* HSCAN may return a field twice; a hash in both tm:keys and
     * tm:keys:v2 keeps the first seen */
    if (ngx_http_togglemaster_key_index(b->kp, bin) >= 0) {
        return NGX_OK;
    }

    if (v2) {
        if (ngx_http_togglemaster_key_v2(b, name, val, bin, &meta) != NGX_OK) {
            return NGX_OK;
        }

        return ngx_http_togglemaster_keys_add(b, bin, &meta);
    }

    /* Only the field matters for an admin key: the value is not parsed,
     * but what cannot even be an object is malformed. */
    if (val->len < 2 || val->data[0] != '{' || val->data[val->len - 1] != '}')
    {
        o = ngx_http_togglemaster_key_index(b->okp, bin);
        ngx_http_togglemaster_malformed(b->log, "key", name, o >= 0);

        if (o < 0) {
            return NGX_OK;
        }
    }

    meta.scope = TM_SCOPE_ADMIN;
    meta.v2 = 0;
    meta.name = NGX_HTTP_TOGGLEMASTER_ENV_NONE;
    meta.env = 0;

    return ngx_http_togglemaster_keys_add(b, bin, &meta);
}


/* A deletion from one hash removes only a key that came from it. */
static ngx_int_t
ngx_http_togglemaster_key_del(ngx_http_togglemaster_builder_t *b,
    ngx_str_t *name, ngx_uint_t v2)
{
    u_char     bin[NGX_HTTP_TOGGLEMASTER_KEY_LEN];
    ngx_int_t  k;

    if (ngx_http_togglemaster_unhex(bin, name) != NGX_OK) {
        return NGX_OK;
    }

    k = ngx_http_togglemaster_key_index(b->kp, bin);

    if (k >= 0 && b->kp->meta[k].v2 == v2) {
        ngx_http_togglemaster_keys_remove(b->kp, (ngx_uint_t) k);
    }

    return NGX_OK;
}


/* ---- segments: collected, compiled at finish ---- */

static ngx_int_t
ngx_http_togglemaster_segment_add(ngx_http_togglemaster_builder_t *b,
    ngx_str_t *name, ngx_str_t *val)
{
    ngx_str_t  *f, *v;

    f = ngx_array_push(b->sfields);
    v = ngx_array_push(b->svalues);
    if (f == NULL || v == NULL
        || ngx_http_togglemaster_copy(b->spool, f, name) != NGX_OK
        || ngx_http_togglemaster_copy(b->spool, v, val) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_togglemaster_segment_del(ngx_http_togglemaster_builder_t *b,
    ngx_str_t *name)
{
    ngx_str_t   *f, *v;
    ngx_uint_t   i, n;

    f = b->sfields->elts;
    v = b->svalues->elts;

    for (i = 0, n = 0; i < b->sfields->nelts; i++) {
        if (ngx_http_togglemaster_str_eq(&f[i], name)) {
            continue;
        }

        f[n] = f[i];
        v[n++] = v[i];
    }

    b->sfields->nelts = n;
    b->svalues->nelts = n;
}


/* ---- environments ---- */

static void
ngx_http_togglemaster_envs_unref(ngx_http_togglemaster_envs_t *ep)
{
    if (ep && --ep->refs == 0) {
        ngx_destroy_pool(ep->pool);
    }
}


/* The environments: the default (called "default" until tm:envs names
 * it), then seed's others if given. */
static ngx_http_togglemaster_envs_t *
ngx_http_togglemaster_envs_alloc(ngx_http_togglemaster_builder_t *b,
    ngx_http_togglemaster_envs_t *seed)
{
    ngx_uint_t                     i;
    ngx_pool_t                    *pool;
    ngx_http_togglemaster_envs_t  *ep;

    static ngx_uint_t  generation;

    pool = ngx_create_pool(1024, b->log);
    if (pool == NULL) {
        return NULL;
    }

    ep = ngx_pcalloc(pool, sizeof(ngx_http_togglemaster_envs_t));
    if (ep == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    ep->pool = pool;
    ep->refs = 1;
    ep->generation = ++generation;
    ngx_str_set(&ep->names[0], "default");
    ep->hashes[0] = ngx_murmur_hash2(ep->names[0].data, ep->names[0].len);
    ep->n = 1;

    for (i = 0; seed && i < seed->n; i++) {
        if (ngx_http_togglemaster_copy(pool, &ep->names[i], &seed->names[i])
            != NGX_OK)
        {
            ngx_destroy_pool(pool);
            return NULL;
        }

        ep->hashes[i] = seed->hashes[i];
        ep->n = seed->n;
    }

    return ep;
}


/* One environment more than a snapshot holds (the flags daemon creates no
 * more; a writer that bypasses it could): it is unknown here, its keys and
 * locations answer 404, the others are served. */
static void
ngx_http_togglemaster_env_refused(ngx_log_t *log, ngx_str_t *name)
{
    char  esc[NGX_HTTP_TOGGLEMASTER_LOG_ESC_LEN];

    tm_log_escape(esc, sizeof(esc), (const char *) name->data, name->len);

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "togglemaster: environment \"%s\" refused: a snapshot "
                  "holds at most %d environments", esc,
                  NGX_HTTP_TOGGLEMASTER_MAX_ENVS);
}


static ngx_int_t
ngx_http_togglemaster_env_set(ngx_http_togglemaster_builder_t *b,
    ngx_str_t *name, ngx_str_t *val)
{
    int                            rc;
    ngx_uint_t                     i;
    ngx_http_togglemaster_envs_t  *ep;

    ep = b->ep;
    rc = tm_env_record_parse((const char *) name->data, name->len,
                             (const char *) val->data, val->len);

    if (rc < 0) {
        ngx_http_togglemaster_malformed(b->log, "environment", name, 0);
        return NGX_OK;
    }

    if (rc == 0) {
        for (i = 1; i < ep->n; i++) {
            if (ngx_http_togglemaster_str_eq(&ep->names[i], name)) {
                return NGX_OK;      /* HSCAN may return a field twice */
            }
        }

        if (ep->n == NGX_HTTP_TOGGLEMASTER_MAX_ENVS) {
            ngx_http_togglemaster_env_refused(b->log, name);
            return NGX_OK;
        }

        i = ep->n++;

    } else {
        i = 0;
    }

    ep->hashes[i] = ngx_murmur_hash2(name->data, name->len);

    return ngx_http_togglemaster_copy(ep->pool, &ep->names[i], name);
}


/* The part under construction for non-default environment env: NGX_OK
 * with *bpp set, NGX_DECLINED when there is no room, or NGX_ERROR. */
static ngx_int_t
ngx_http_togglemaster_bpart(ngx_http_togglemaster_builder_t *b,
    ngx_str_t *env, ngx_uint_t create, ngx_http_togglemaster_bpart_t **bpp)
{
    ngx_uint_t                      i;
    ngx_http_togglemaster_bpart_t  *bp;

    for (i = 1; i < b->nparts; i++) {
        if (ngx_http_togglemaster_str_eq(&b->parts[i].name, env)) {
            *bpp = &b->parts[i];
            return NGX_OK;
        }
    }

    if (!create || b->nparts == NGX_HTTP_TOGGLEMASTER_MAX_ENVS) {
        return NGX_DECLINED;
    }

    bp = &b->parts[b->nparts];

    if (ngx_http_togglemaster_copy(b->pool, &bp->name, env) != NGX_OK) {
        return NGX_ERROR;
    }

    b->nparts++;
    *bpp = bp;

    return NGX_OK;
}


/* bp's part is rebuilt: a copy of its old part's kinds not fetched again */
static ngx_int_t
ngx_http_togglemaster_bpart_touch(ngx_http_togglemaster_builder_t *b,
    ngx_http_togglemaster_bpart_t *bp)
{
    if (bp->fp) {
        return NGX_OK;
    }

    bp->fp = ngx_http_togglemaster_flags_alloc(b, bp,
                                             bp->ofp ? bp->ofp->nflags : 0);
    if (bp->fp == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_togglemaster_flags_seed(b, bp,
                                     NGX_HTTP_TOGGLEMASTER_FLAG_KINDS
                                     & ~b->efresh);
}


/* The part an object of this kind goes to (NULL: not being built). */
static ngx_int_t
ngx_http_togglemaster_builder_part(ngx_http_togglemaster_builder_t *b,
    ngx_uint_t kind, ngx_str_t *env, ngx_uint_t create,
    ngx_http_togglemaster_bpart_t **bpp)
{
    ngx_int_t  rc;

    *bpp = NULL;

    if (kind == NGX_HTTP_TOGGLEMASTER_FLAGS
        || kind == NGX_HTTP_TOGGLEMASTER_RULES)
    {
        *bpp = b->parts[0].fp ? &b->parts[0] : NULL;
        return NGX_OK;
    }

    if (!b->etouched || env == NULL) {
        return NGX_OK;
    }

    rc = ngx_http_togglemaster_bpart(b, env, create, bpp);

    if (rc == NGX_DECLINED) {
        *bpp = NULL;
        return NGX_OK;
    }

    if (rc != NGX_OK || ngx_http_togglemaster_bpart_touch(b, *bpp) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* ---- the builder ---- */

/* old's parts, referenced: what the next snapshot shares or starts from */
static ngx_int_t
ngx_http_togglemaster_builder_hold(ngx_http_togglemaster_builder_t *b,
    ngx_http_togglemaster_snapshot_t *old)
{
    ngx_uint_t                      i;
    ngx_http_togglemaster_bpart_t  *bp;

    b->parts[0].ofp = old->fpart;
    b->okp = old->kpart;
    b->osp = old->spart;
    b->oep = old->epart;
    b->parts[0].ofp->refs++;
    b->okp->refs++;

    if (b->osp) {
        b->osp->refs++;
    }

    if (b->oep) {
        b->oep->refs++;
    }

    for (i = 1; b->oep && i < old->nenvs; i++) {
        bp = &b->parts[b->nparts++];
        bp->ofp = old->fparts[i];

        if (bp->ofp) {
            bp->ofp->refs++;
        }

        if (ngx_http_togglemaster_copy(b->pool, &bp->name, &b->oep->names[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_http_togglemaster_builder_t *
ngx_http_togglemaster_builder_start(ngx_http_togglemaster_snapshot_t *old,
    ngx_uint_t fresh, ngx_uint_t touched, ngx_uint_t *hint, ngx_log_t *log)
{
    ngx_uint_t                        cap, i, keep;
    ngx_http_togglemaster_bpart_t    *bp;
    ngx_http_togglemaster_builder_t  *b;

    b = ngx_calloc(sizeof(ngx_http_togglemaster_builder_t), log);
    if (b == NULL) {
        return NULL;
    }

    b->log = log;
    b->nparts = 1;

    b->pool = ngx_create_pool(4096, log);
    if (b->pool == NULL) {
        goto failed;
    }

    if (old) {
        if (ngx_http_togglemaster_builder_hold(b, old) != NGX_OK) {
            goto failed;
        }

    } else {
        touched = NGX_HTTP_TOGGLEMASTER_ALL_KINDS;
    }

    /* keys hold their environment's index: resolved again when the
     * environments change */
    if (touched & NGX_HTTP_TOGGLEMASTER_ENV_KINDS) {
        touched |= NGX_HTTP_TOGGLEMASTER_KEY_KINDS;
    }

    if (touched & NGX_HTTP_TOGGLEMASTER_SEGMENT_KINDS) {
        b->spool = ngx_create_pool(4096, log);
        if (b->spool == NULL) {
            goto failed;
        }

        b->sfields = ngx_array_create(b->spool, 16, sizeof(ngx_str_t));
        b->svalues = ngx_array_create(b->spool, 16, sizeof(ngx_str_t));
        if (b->sfields == NULL || b->svalues == NULL) {
            goto failed;
        }

        for (i = 0; !(fresh & NGX_HTTP_TOGGLEMASTER_SEGMENT_KINDS)
                    && b->osp && i < b->osp->nsegs; i++)
        {
            if (ngx_http_togglemaster_segment_add(b, &b->osp->segs[i].name,
                                                  &b->osp->segs[i].json)
                != NGX_OK)
            {
                goto failed;
            }
        }
    }

    fresh &= touched;

    if (touched & NGX_HTTP_TOGGLEMASTER_ENV_KINDS) {
        b->ep = ngx_http_togglemaster_envs_alloc(b,
                    (fresh & NGX_HTTP_TOGGLEMASTER_ENV_KINDS) ? NULL : b->oep);
        if (b->ep == NULL) {
            goto failed;
        }
    }

    if (touched & NGX_HTTP_TOGGLEMASTER_FLAG_KINDS) {
        bp = &b->parts[0];
        cap = hint ? hint[NGX_HTTP_TOGGLEMASTER_FLAGS]
                     + hint[NGX_HTTP_TOGGLEMASTER_RULES]
                   : 0;

        if ((fresh & NGX_HTTP_TOGGLEMASTER_FLAG_KINDS)
            != NGX_HTTP_TOGGLEMASTER_FLAG_KINDS && bp->ofp)
        {
            cap += bp->ofp->nflags;
        }

        bp->fp = ngx_http_togglemaster_flags_alloc(b, bp, cap);

        if (bp->fp == NULL
            || ngx_http_togglemaster_flags_seed(b, bp,
                   NGX_HTTP_TOGGLEMASTER_FLAG_KINDS & ~fresh)
               != NGX_OK)
        {
            goto failed;
        }
    }

    if (touched & NGX_HTTP_TOGGLEMASTER_EFLAG_KINDS) {
        /* the other environments' parts are built as their objects come */
        b->etouched = 1;
        b->efresh =
            ((fresh & ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_EFLAGS))
             ? ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_FLAGS) : 0)
            | ((fresh & ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_ERULES))
               ? ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_RULES) : 0);
    }

    if (touched & NGX_HTTP_TOGGLEMASTER_KEY_KINDS) {
        /* the keys of the hash not loaded again are kept */
        keep = NGX_HTTP_TOGGLEMASTER_KEYS_ALL;

        if (fresh & ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_KEYS)) {
            keep &= ~NGX_HTTP_TOGGLEMASTER_KEYS_ADMIN;
        }

        if (fresh & ngx_http_togglemaster_kind(NGX_HTTP_TOGGLEMASTER_KEYS2)) {
            keep &= ~NGX_HTTP_TOGGLEMASTER_KEYS_V2;
        }

        b->kp = ngx_http_togglemaster_keys_alloc(b,
                    hint ? hint[NGX_HTTP_TOGGLEMASTER_KEYS]
                           + hint[NGX_HTTP_TOGGLEMASTER_KEYS2] : 0,
                    keep ? b->okp : NULL, keep);
        if (b->kp == NULL) {
            goto failed;
        }
    }

    return b;

failed:

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "togglemaster: out of memory building a snapshot");
    ngx_http_togglemaster_builder_abort(b);
    return NULL;
}


ngx_int_t
ngx_http_togglemaster_builder_set(ngx_http_togglemaster_builder_t *b,
    ngx_uint_t kind, ngx_str_t *field, ngx_str_t *value)
{
    return ngx_http_togglemaster_builder_set_env(b, kind, NULL, field, value);
}


ngx_int_t
ngx_http_togglemaster_builder_set_env(ngx_http_togglemaster_builder_t *b,
    ngx_uint_t kind, ngx_str_t *env, ngx_str_t *field, ngx_str_t *value)
{
    ngx_http_togglemaster_bpart_t  *bp;

    switch (kind) {

    case NGX_HTTP_TOGGLEMASTER_FLAGS:
    case NGX_HTTP_TOGGLEMASTER_RULES:
    case NGX_HTTP_TOGGLEMASTER_EFLAGS:
    case NGX_HTTP_TOGGLEMASTER_ERULES:
        if (ngx_http_togglemaster_builder_part(b, kind, env, 1, &bp)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (bp == NULL) {
            return NGX_OK;
        }

        return (kind == NGX_HTTP_TOGGLEMASTER_FLAGS
                || kind == NGX_HTTP_TOGGLEMASTER_EFLAGS)
               ? ngx_http_togglemaster_flag_set(b, bp, field, value)
               : ngx_http_togglemaster_rule_set(b, bp, field, value);

    case NGX_HTTP_TOGGLEMASTER_KEYS:
    case NGX_HTTP_TOGGLEMASTER_KEYS2:
        return b->kp ? ngx_http_togglemaster_key_set(b, field, value,
                                         kind == NGX_HTTP_TOGGLEMASTER_KEYS2)
                     : NGX_OK;

    case NGX_HTTP_TOGGLEMASTER_SEGMENTS:
        return b->spool ? ngx_http_togglemaster_segment_add(b, field, value)
                        : NGX_OK;

    case NGX_HTTP_TOGGLEMASTER_ENVS:
        return b->ep ? ngx_http_togglemaster_env_set(b, field, value)
                     : NGX_OK;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_togglemaster_builder_del(ngx_http_togglemaster_builder_t *b,
    ngx_uint_t kind, ngx_str_t *field)
{
    return ngx_http_togglemaster_builder_del_env(b, kind, NULL, field);
}


ngx_int_t
ngx_http_togglemaster_builder_del_env(ngx_http_togglemaster_builder_t *b,
    ngx_uint_t kind, ngx_str_t *env, ngx_str_t *field)
{
    ngx_http_togglemaster_flag_t   *f;
    ngx_http_togglemaster_bpart_t  *bp;

    switch (kind) {

    case NGX_HTTP_TOGGLEMASTER_FLAGS:
    case NGX_HTTP_TOGGLEMASTER_RULES:
    case NGX_HTTP_TOGGLEMASTER_EFLAGS:
    case NGX_HTTP_TOGGLEMASTER_ERULES:
        if (ngx_http_togglemaster_builder_part(b, kind, env, 0, &bp)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        f = bp ? ngx_http_togglemaster_flags_get(b, bp, field, 0) : NULL;

        if (f == NULL) {
            return NGX_OK;
        }

        if (kind == NGX_HTTP_TOGGLEMASTER_RULES
            || kind == NGX_HTTP_TOGGLEMASTER_ERULES)
        {
            ngx_http_togglemaster_rule_clear(f);

        } else {
            f->flag = TM_FLAG_MISSING;
            f->client_visible = 0;
            ngx_str_null(&f->flag_json);
        }

        return NGX_OK;

    case NGX_HTTP_TOGGLEMASTER_KEYS:
    case NGX_HTTP_TOGGLEMASTER_KEYS2:
        return b->kp ? ngx_http_togglemaster_key_del(b, field,
                                         kind == NGX_HTTP_TOGGLEMASTER_KEYS2)
                     : NGX_OK;

    case NGX_HTTP_TOGGLEMASTER_SEGMENTS:
        if (b->spool) {
            ngx_http_togglemaster_segment_del(b, field);
        }

        return NGX_OK;
    }

    /* environments are reloaded whole, never changed one by one */
    return NGX_OK;
}


/* Each environment's flags part: the one built, else the old one shared,
 * else (a fresh load that found no object for it) an empty one. */
static ngx_int_t
ngx_http_togglemaster_builder_fparts(ngx_http_togglemaster_builder_t *b,
    ngx_http_togglemaster_snapshot_t *snap)
{
    ngx_uint_t                      i;
    ngx_http_togglemaster_bpart_t  *bp;

    bp = &b->parts[0];

    if (bp->fp) {
        ngx_http_togglemaster_flags_done(b, bp);
        snap->fpart = bp->fp;
        bp->fp = NULL;

    } else {
        snap->fpart = bp->ofp;
        snap->fpart->refs++;
    }

    snap->fparts[0] = snap->fpart;

    for (i = 1; i < snap->nenvs; i++) {
        if (ngx_http_togglemaster_bpart(b, &snap->epart->names[i], 0, &bp)
            != NGX_OK)
        {
            continue;       /* never loaded: empty */
        }

        if (bp->fp == NULL && b->etouched && b->efresh
            && ngx_http_togglemaster_bpart_touch(b, bp) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (bp->fp) {
            ngx_http_togglemaster_flags_done(b, bp);
            snap->fparts[i] = bp->fp;
            bp->fp = NULL;

        } else if (bp->ofp) {
            snap->fparts[i] = bp->ofp;
            bp->ofp->refs++;
        }
    }

    return NGX_OK;
}


ngx_http_togglemaster_snapshot_t *
ngx_http_togglemaster_builder_finish(ngx_http_togglemaster_builder_t *b,
    int64_t version)
{
    ngx_log_t                         *log;
    ngx_http_togglemaster_kv_t         kv;
    ngx_http_togglemaster_snapshot_t  *snap, old;

    log = b->log;

    snap = ngx_alloc(sizeof(ngx_http_togglemaster_snapshot_t), log);
    if (snap == NULL) {
        ngx_http_togglemaster_builder_abort(b);
        return NULL;
    }

    ngx_memzero(snap, sizeof(ngx_http_togglemaster_snapshot_t));
    snap->version = version;
    snap->built = ngx_current_msec;

    if (b->ep) {
        snap->epart = b->ep;
        b->ep = NULL;

    } else {
        snap->epart = b->oep;
        snap->epart->refs++;
    }

    snap->nenvs = snap->epart->n;

    if (ngx_http_togglemaster_builder_fparts(b, snap) != NGX_OK) {
        ngx_http_togglemaster_builder_abort(b);
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "togglemaster: out of memory building a snapshot");
        ngx_http_togglemaster_snapshot_free(snap);
        return NULL;
    }

    if (b->kp) {
        ngx_http_togglemaster_keys_resolve(b->kp, snap->epart);
        snap->kpart = b->kp;
        b->kp = NULL;

    } else {
        snap->kpart = b->okp;
        snap->kpart->refs++;
    }

    if (b->spool) {
        /* segments_new() looks last good versions up in the old snapshot */
        kv.fields = b->sfields->elts;
        kv.values = b->svalues->elts;
        kv.n = b->sfields->nelts;
        kv.present = 1;

        ngx_memzero(&old, sizeof(ngx_http_togglemaster_snapshot_t));
        old.spart = b->osp;

        snap->spart = ngx_http_togglemaster_segments_new(&kv, &old, b->log);

    } else {
        snap->spart = b->osp;

        if (snap->spart) {
            snap->spart->refs++;
        }
    }

    ngx_http_togglemaster_builder_abort(b);

    if (snap->spart == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "togglemaster: out of memory building a snapshot");
        ngx_http_togglemaster_snapshot_free(snap);
        return NULL;
    }

    snap->flags = snap->fpart->flags;
    snap->nflags = snap->fpart->nflags;
    snap->nkeys = snap->kpart->nkeys;
    snap->nsegments = snap->spart->nsegs;

    return snap;
}


void
ngx_http_togglemaster_builder_abort(ngx_http_togglemaster_builder_t *b)
{
    ngx_uint_t  i;

    if (b == NULL) {
        return;
    }

    for (i = 0; i < b->nparts; i++) {
        ngx_http_togglemaster_flags_unref(b->parts[i].fp);
        ngx_http_togglemaster_flags_unref(b->parts[i].ofp);
    }

    ngx_http_togglemaster_keys_unref(b->kp);
    ngx_http_togglemaster_keys_unref(b->okp);
    ngx_http_togglemaster_segments_unref(b->osp);
    ngx_http_togglemaster_envs_unref(b->ep);
    ngx_http_togglemaster_envs_unref(b->oep);

    if (b->spool) {
        ngx_destroy_pool(b->spool);
    }

    if (b->pool) {
        ngx_destroy_pool(b->pool);
    }

    ngx_free(b);
}


void
ngx_http_togglemaster_builder_stats(ngx_http_togglemaster_builder_t *b,
    ngx_uint_t *reused, ngx_uint_t *compiled)
{
    *reused = b->reused;
    *compiled = b->compiled;
}


/* A copy of snap that keeps its parts alive after snap is replaced (the
 * snapshot file is written from one); snapshot_free() lets it go. */
ngx_http_togglemaster_snapshot_t *
ngx_http_togglemaster_snapshot_hold(ngx_http_togglemaster_snapshot_t *snap)
{
    ngx_uint_t                         i;
    ngx_http_togglemaster_snapshot_t  *copy;

    copy = ngx_alloc(sizeof(ngx_http_togglemaster_snapshot_t),
                     ngx_cycle->log);
    if (copy == NULL) {
        return NULL;
    }

    *copy = *snap;

    for (i = 0; i < copy->nenvs; i++) {
        if (copy->fparts[i]) {
            copy->fparts[i]->refs++;
        }
    }

    if (copy->kpart) {
        copy->kpart->refs++;
    }

    if (copy->spart) {
        copy->spart->refs++;
    }

    if (copy->epart) {
        copy->epart->refs++;
    }

    return copy;
}


void
ngx_http_togglemaster_snapshot_free(ngx_http_togglemaster_snapshot_t *snap)
{
    ngx_uint_t  i;

    if (snap == NULL) {
        return;
    }

    /* fparts[0] is fpart; a snapshot freed half built may have only
     * fpart */
    ngx_http_togglemaster_flags_unref(snap->fpart);

    for (i = 1; i < snap->nenvs; i++) {
        ngx_http_togglemaster_flags_unref(snap->fparts[i]);
    }

    ngx_http_togglemaster_keys_unref(snap->kpart);
    ngx_http_togglemaster_segments_unref(snap->spart);
    ngx_http_togglemaster_envs_unref(snap->epart);
    ngx_free(snap);
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
        /* event streams compare the two; refetches waiting for this
         * version can be answered */
        ngx_http_togglemaster_sse_swapped(old, snap);
        ngx_http_togglemaster_refetch_swapped(snap);

        ngx_http_togglemaster_snapshot_free(old);
    }
}


ngx_http_togglemaster_flag_t *
ngx_http_togglemaster_flag_lookup(ngx_http_togglemaster_snapshot_t *snap,
    u_char *name, size_t len)
{
    if (snap == NULL) {
        return NULL;
    }

    return ngx_http_togglemaster_part_lookup(snap->fpart, name, len,
                                             ngx_murmur_hash2(name, len));
}


ngx_http_togglemaster_flag_t *
ngx_http_togglemaster_env_flag_lookup(ngx_http_togglemaster_snapshot_t *snap,
    ngx_uint_t env, u_char *name, size_t len)
{
    if (snap == NULL || env >= snap->nenvs) {
        return NULL;
    }

    return ngx_http_togglemaster_part_lookup(snap->fparts[env], name, len,
                                             ngx_murmur_hash2(name, len));
}


ngx_uint_t
ngx_http_togglemaster_env_index(ngx_http_togglemaster_snapshot_t *snap,
    u_char *name, size_t len)
{
    uint32_t                       h;
    ngx_uint_t                     i;
    ngx_http_togglemaster_envs_t  *ep;

    if (snap == NULL || snap->epart == NULL) {
        return NGX_HTTP_TOGGLEMASTER_ENV_NONE;
    }

    ep = snap->epart;
    h = ngx_murmur_hash2(name, len);

    for (i = 0; i < ep->n; i++) {
        if (ep->hashes[i] == h && ep->names[i].len == len
            && ngx_memcmp(ep->names[i].data, name, len) == 0)
        {
            return i;
        }
    }

    return NGX_HTTP_TOGGLEMASTER_ENV_NONE;
}


ngx_http_togglemaster_key_meta_t *
ngx_http_togglemaster_key_find(ngx_http_togglemaster_snapshot_t *snap,
    u_char *bin)
{
    ngx_int_t  k;

    if (snap == NULL) {
        return NULL;
    }

    k = ngx_http_togglemaster_key_index(snap->kpart, bin);

    return k >= 0 ? &snap->kpart->meta[k] : NULL;
}
