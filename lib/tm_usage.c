#include "tm_usage.h"
#include "tm_aws.h"
#include "tm_buf.h"
#include "tm_hash.h"
#include "tm_names.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One (environment, flag, hour) of a batch. */
typedef struct {
    char *pk;
    char hour[14];
    long long n, t, f;
    uint64_t mins;       /* bit m: minute m saw an evaluation */
    json_t *variants;    /* variant -> count */
} group;

struct tm_usage_batch {
    group *g;
    size_t n, cap;
    json_t *index;       /* "<pk> <hour>" -> position in g */
    json_t *seen;        /* event and summary ids counted */
    int sorted;
    char marker[TM_SHA256_HEX_LEN + 1];  /* digest of the sorted ids, once sorted */
};

tm_usage_batch *tm_usage_batch_new(void)
{
    tm_usage_batch *b = calloc(1, sizeof *b);
    if (!b) {
        return NULL;
    }
    b->index = json_object();
    b->seen = json_object();
    if (!b->index || !b->seen) {
        tm_usage_batch_free(b);
        return NULL;
    }
    return b;
}

void tm_usage_batch_free(tm_usage_batch *b)
{
    if (!b) {
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        free(b->g[i].pk);
        json_decref(b->g[i].variants);
    }
    free(b->g);
    json_decref(b->index);
    json_decref(b->seen);
    free(b);
}

int tm_usage_pk(const char *env, const char *flag, char *out, size_t outlen)
{
    if (!env || !flag || !tm_name_valid_unicode(env, strlen(env))
        || !tm_name_valid_unicode(flag, strlen(flag))) {
        return -1;
    }
    int w = snprintf(out, outlen, "%s/%s", env, flag);
    return w < 0 || (size_t) w >= outlen ? -1 : 0;
}

void tm_usage_hour(time_t t, char out[14])
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, 14, "%Y-%m-%dT%H", &tm) != 13) {
        snprintf(out, 14, "0000-00-00T00");
    }
}

void tm_usage_time(time_t t, char out[21])
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) != 20) {
        snprintf(out, 21, "1970-01-01T00:00:00Z");
    }
}

static const char *env_of(const json_t *o)
{
    const char *e = json_string_value(json_object_get(o, "environment"));
    return e && *e ? e : TM_USAGE_DEFAULT_ENV;
}

/* The group of (pk, hour), created empty when new; NULL on OOM. */
static group *group_get(tm_usage_batch *b, const char *pk, const char *hour)
{
    char key[TM_NAME_MAX * 2 + 20];
    snprintf(key, sizeof key, "%s %s", pk, hour);
    json_t *pos = json_object_get(b->index, key);
    if (pos) {
        return &b->g[json_integer_value(pos)];
    }
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 8;
        group *ng = realloc(b->g, nc * sizeof *ng);
        if (!ng) {
            return NULL;
        }
        b->g = ng;
        b->cap = nc;
    }
    group *g = &b->g[b->n];
    memset(g, 0, sizeof *g);
    g->pk = strdup(pk);
    g->variants = json_object();
    if (!g->pk || !g->variants
        || json_object_set_new(b->index, key, json_integer((json_int_t) b->n)) != 0) {
        free(g->pk);
        json_decref(g->variants);
        return NULL;
    }
    snprintf(g->hour, sizeof g->hour, "%s", hour);
    b->n++;
    b->sorted = 0;
    return g;
}

static int add_variant(json_t *variants, const char *v, long long n)
{
    json_t *cur = json_object_get(variants, v);
    long long have = cur ? (long long) json_integer_value(cur) : 0;
    return json_object_set_new(variants, v, json_integer((json_int_t) (have + n)));
}

/* 1 when id was counted already; 0 after noting it; -1 OOM. */
static int seen_before(tm_usage_batch *b, const char *id)
{
    if (json_object_get(b->seen, id)) {
        return 1;
    }
    return json_object_set_new(b->seen, id, json_true()) == 0 ? 0 : -1;
}

int tm_usage_add_event(tm_usage_batch *b, const json_t *ev)
{
    const char *id = json_string_value(json_object_get(ev, "event_id"));
    const char *flag = json_string_value(json_object_get(ev, "flag_name"));
    const char *ts = json_string_value(json_object_get(ev, "timestamp"));
    json_t *result = json_object_get(ev, "result");
    const char *variant = json_string_value(json_object_get(ev, "variant"));
    char pk[TM_NAME_MAX * 2 + 2], hour[14];
    time_t t = tm_aws_parse_time(ts);
    if (!id || !*id || !json_is_boolean(result) || t < 0
        || tm_usage_pk(env_of(ev), flag, pk, sizeof pk) != 0) {
        return 1;
    }
    int dup = seen_before(b, id);
    if (dup != 0) {
        return dup > 0 ? 0 : -1;
    }
    tm_usage_hour(t, hour);
    group *g = group_get(b, pk, hour);
    if (!g || (variant && *variant && add_variant(g->variants, variant, 1) != 0)) {
        return -1;
    }
    g->n++;
    if (json_is_true(result)) {
        g->t++;
    } else {
        g->f++;
    }
    g->mins |= 1ULL << ((t % 3600) / 60);
    return 0;
}

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s", msg);
    }
    return -1;
}

static int count_ok(const json_t *v, long long lo, long long hi)
{
    return json_is_integer(v) && json_integer_value(v) >= lo && json_integer_value(v) <= hi;
}

static int summary_flag_check(const json_t *c, char *err, size_t errlen)
{
    json_t *n = json_object_get(c, "n");
    if (!json_is_object(c) || !count_ok(n, 1, 1LL << 40)) {
        return fail(err, errlen, "a summary count needs \"n\" >= 1");
    }
    long long nn = (long long) json_integer_value(n);
    json_t *t = json_object_get(c, "t"), *f = json_object_get(c, "f");
    if ((t && !count_ok(t, 0, nn)) || (f && !count_ok(f, 0, nn))
        || (long long) (json_integer_value(t) + json_integer_value(f)) > nn) {
        return fail(err, errlen, "a summary count needs 0 <= \"t\", \"f\" and t + f <= n");
    }
    json_t *vs = json_object_get(c, "variants");
    if (vs && !json_is_null(vs)) {
        const char *k;
        json_t *v;
        if (!json_is_object(vs)) {
            return fail(err, errlen, "summary \"variants\" must be an object");
        }
        json_object_foreach(vs, k, v) {
            if (!*k || strlen(k) > 1024 || !count_ok(v, 1, nn)) {
                return fail(err, errlen, "a summary variant count must be 1..n");
            }
        }
    }
    return 0;
}

int tm_usage_summary_check(const json_t *s, char *err, size_t errlen)
{
    const char *id = json_string_value(json_object_get(s, "summary_id"));
    const char *ts = json_string_value(json_object_get(s, "timestamp"));
    json_t *env = json_object_get(s, "environment");
    json_t *flags = json_object_get(s, "flags");
    if (!json_is_object(s)) {
        return fail(err, errlen, "summary is not a JSON object");
    }
    if (!id || !*id || strlen(id) > 1024 || !ts || !*ts || strlen(ts) > 1024) {
        return fail(err, errlen, "summary needs \"summary_id\" and \"timestamp\" strings");
    }
    if (env && !json_is_null(env) && !json_is_string(env)) {
        return fail(err, errlen, "summary \"environment\" must be a string");
    }
    if (!json_is_object(flags) || json_object_size(flags) == 0
        || json_object_size(flags) > TM_USAGE_SUMMARY_MAX_FLAGS) {
        return fail(err, errlen, "summary \"flags\" must be an object of 1..10000 flags");
    }
    const char *k;
    json_t *c;
    json_object_foreach(flags, k, c) {
        if (summary_flag_check(c, err, errlen) != 0) {
            return -1;
        }
    }
    return 0;
}

static int add_counts(group *g, const json_t *c, int minute)
{
    g->n += (long long) json_integer_value(json_object_get(c, "n"));
    g->t += (long long) json_integer_value(json_object_get(c, "t"));
    g->f += (long long) json_integer_value(json_object_get(c, "f"));
    g->mins |= 1ULL << minute;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(c, "variants"), k, v) {
        if (add_variant(g->variants, k, (long long) json_integer_value(v)) != 0) {
            return -1;
        }
    }
    return 0;
}

int tm_usage_add_summary(tm_usage_batch *b, const json_t *s)
{
    if (tm_usage_summary_check(s, NULL, 0) != 0) {
        return 1;
    }
    time_t t = tm_aws_parse_time(json_string_value(json_object_get(s, "timestamp")));
    if (t < 0) {
        return 1;
    }
    int dup = seen_before(b, json_string_value(json_object_get(s, "summary_id")));
    if (dup != 0) {
        return dup > 0 ? 0 : -1;
    }
    char hour[14], pk[TM_NAME_MAX * 2 + 2];
    tm_usage_hour(t, hour);
    int counted = 0;
    const char *flag;
    json_t *c;
    json_object_foreach(json_object_get(s, "flags"), flag, c) {
        if (tm_usage_pk(env_of(s), flag, pk, sizeof pk) != 0) {
            continue;
        }
        group *g = group_get(b, pk, hour);
        if (!g || add_counts(g, c, (int) ((t % 3600) / 60)) != 0) {
            return -1;
        }
        counted++;
    }
    return counted ? 0 : 1;
}

size_t tm_usage_groups(const tm_usage_batch *b)
{
    return b->n;
}

size_t tm_usage_txns(const tm_usage_batch *b)
{
    return (b->n + TM_USAGE_TXN_UPDATES - 1) / TM_USAGE_TXN_UPDATES;
}

static int group_cmp(const void *a, const void *b)
{
    const group *x = a, *y = b;
    int c = strcmp(x->pk, y->pk);
    return c ? c : strcmp(x->hour, y->hour);
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* Groups in key order and the marker digest of the sorted ids, so that the
 * transactions do not depend on the order the events came in. */
static int finish(tm_usage_batch *b)
{
    if (b->sorted) {
        return 0;
    }
    size_t nid = json_object_size(b->seen);
    const char **ids = malloc((nid ? nid : 1) * sizeof *ids);
    if (!ids) {
        return -1;
    }
    size_t k = 0;
    const char *id;
    json_t *v;
    json_object_foreach(b->seen, id, v) {
        ids[k++] = id;
    }
    qsort(ids, nid, sizeof *ids, str_cmp);
    tm_buf all = TM_BUF_INIT;
    for (size_t i = 0; i < nid; i++) {
        tm_buf_adds(&all, ids[i]);
        tm_buf_addc(&all, '\n');
    }
    free(ids);
    char *text = tm_buf_steal(&all);
    if (!text) {
        return -1;
    }
    tm_sha256_hex(text, strlen(text), b->marker);
    free(text);
    qsort(b->g, b->n, sizeof *b->g, group_cmp);
    /* the index would point at old positions; nothing reads it after this */
    json_object_clear(b->index);
    b->sorted = 1;
    return 0;
}

/* expires of an item for the hour "YYYY-MM-DDTHH" plus days. */
static long long expiry(const char *hour, int days)
{
    char ts[32];
    snprintf(ts, sizeof ts, "%s:00:00Z", hour);
    time_t t = tm_aws_parse_time(ts);
    return (long long) (t < 0 ? 0 : t) + days * 86400LL;
}

static json_t *num(long long v)
{
    char s[32];
    snprintf(s, sizeof s, "%lld", v);
    return json_pack("{s:s}", "N", s);
}

/* ADD evals, t, f, mins and one "v:<variant>" per variant; SET expires. */
static json_t *group_update(const group *g, const char *table)
{
    json_t *mins = json_array();
    for (int m = 0; mins && m < 60; m++) {
        char s[12];
        snprintf(s, sizeof s, "%d", m);
        if ((g->mins >> m & 1) && json_array_append_new(mins, json_string(s)) != 0) {
            json_decref(mins);
            return NULL;
        }
    }
    json_t *names = json_pack("{s:s, s:s, s:s, s:s, s:s}", "#n", "evals", "#t", "t", "#f", "f",
                              "#m", "mins", "#x", "expires");
    json_t *vals = json_pack("{s:o, s:o, s:o, s:{s:o}, s:o}", ":n", num(g->n), ":t", num(g->t),
                             ":f", num(g->f), ":m", "NS", mins, ":x",
                             num(expiry(g->hour, TM_USAGE_RETENTION_DAYS)));
    tm_buf expr = TM_BUF_INIT;
    tm_buf_adds(&expr, "SET #x = :x ADD #n :n, #t :t, #f :f, #m :m");
    /* Variants in name order, so the same counts give the same request. */
    size_t nv = json_object_size(g->variants), k = 0;
    const char **vn = malloc((nv ? nv : 1) * sizeof *vn);
    const char *key;
    json_t *v;
    json_object_foreach(g->variants, key, v) {
        if (vn) {
            vn[k++] = key;
        }
    }
    int ok = names && vals && vn;
    if (ok) {
        qsort(vn, nv, sizeof *vn, str_cmp);
    }
    for (size_t i = 0; ok && i < nv; i++) {
        char ph[24], attr[1100];
        snprintf(attr, sizeof attr, "v:%s", vn[i]);
        snprintf(ph, sizeof ph, "#v%zu", i);
        ok = json_object_set_new(names, ph, json_string(attr)) == 0;
        snprintf(ph, sizeof ph, ":v%zu", i);
        ok = ok && json_object_set_new(vals, ph, num((long long) json_integer_value(
                                           json_object_get(g->variants, vn[i])))) == 0;
        tm_buf_addf(&expr, ", #v%zu :v%zu", i, i);
    }
    free(vn);
    char *e = tm_buf_steal(&expr);
    json_t *u = ok && e ? json_pack("{s:{s:s, s:{s:{s:s}, s:{s:s}}, s:s, s:O, s:O}}", "Update",
                                    "TableName", table, "Key", "pk", "S", g->pk, "sk", "S",
                                    g->hour, "UpdateExpression", e,
                                    "ExpressionAttributeNames", names,
                                    "ExpressionAttributeValues", vals) : NULL;
    free(e);
    json_decref(names);
    json_decref(vals);
    return u;
}

char *tm_usage_txn_body(tm_usage_batch *b, const char *table, size_t i)
{
    if (!b || !table || !*table || i >= tm_usage_txns(b) || finish(b) != 0) {
        return NULL;
    }
    size_t lo = i * TM_USAGE_TXN_UPDATES;
    size_t hi = lo + TM_USAGE_TXN_UPDATES < b->n ? lo + TM_USAGE_TXN_UPDATES : b->n;
    const char *newest = b->g[lo].hour;
    for (size_t k = lo; k < hi; k++) {
        if (strcmp(b->g[k].hour, newest) > 0) {
            newest = b->g[k].hour;
        }
    }
    char pk[TM_SHA256_HEX_LEN + 32], token[64];
    snprintf(pk, sizeof pk, "#msg/%s/%zu", b->marker, i);
    /* ClientRequestToken: at most 36 characters */
    snprintf(token, sizeof token, "%.28s-%zu", b->marker, i);
    json_t *items = json_array();
    json_t *marker = json_pack("{s:{s:s, s:{s:{s:s}, s:{s:s}, s:o}, s:s}}", "Put",
                               "TableName", table, "Item", "pk", "S", pk, "sk", "S", "-",
                               "expires", num(expiry(newest, TM_USAGE_MARKER_DAYS)),
                               "ConditionExpression", "attribute_not_exists(pk)");
    int ok = items && marker && json_array_append_new(items, marker) == 0;
    if (!ok) {
        json_decref(marker);
    }
    for (size_t k = lo; ok && k < hi; k++) {
        json_t *u = group_update(&b->g[k], table);
        ok = u && json_array_append_new(items, u) == 0;
    }
    json_t *body = ok ? json_pack("{s:O, s:s}", "TransactItems", items,
                                  "ClientRequestToken", token) : NULL;
    json_decref(items);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return text;
}

/* ---- reading ------------------------------------------------------------ */

/* "2026-11-22" or RFC 3339; -1 if neither. */
static time_t parse_date(const char *s)
{
    int y, m, d, n = 0;
    if (strlen(s) == 10 && sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) == 3 && n == 10
        && s[4] == '-' && s[7] == '-') {
        char full[32];
        snprintf(full, sizeof full, "%sT00:00:00Z", s);
        return tm_aws_parse_time(full);
    }
    return tm_aws_parse_time(s);
}

/* Dates the API takes: 2000-01-01 .. 9999-12-31. */
#define MIN_TIME 946684800LL
#define MAX_TIME 253402300799LL

static int date_param(const char *name, const char *s, time_t *out, char *err, size_t errlen)
{
    time_t t = parse_date(s);
    if (t < 0 || strlen(s) > 40 || (long long) t < MIN_TIME || (long long) t > MAX_TIME) {
        snprintf(err, errlen, "%s: \"%.40s\" is not a date; use 2026-11-22 or "
                 "2026-11-22T10:00:00Z (UTC, or an offset), years 2000..9999", name, s);
        return -1;
    }
    *out = t;
    return 0;
}

int tm_usage_parse_range(const char *from, const char *to, const char *granularity,
                         time_t now, tm_usage_range *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    if (!granularity || strcmp(granularity, "hour") == 0) {
        r->step = 3600;
    } else if (strcmp(granularity, "day") == 0) {
        r->step = 86400;
    } else {
        return fail(err, errlen, "granularity must be hour or day");
    }
    time_t f, t = now;
    if (to && date_param("to", to, &t, err, errlen) != 0) {
        return -1;
    }
    if (from && date_param("from", from, &f, err, errlen) != 0) {
        return -1;
    }
    if (from && f >= t) {
        return fail(err, errlen, "from must be before to");
    }
    r->to = t % r->step ? t - t % r->step + r->step : t;
    /* by default the last 24 hours or 30 days, the current one included */
    f = from ? f : r->to - (r->step == 3600 ? 24 * 3600 : 30 * 86400);
    r->from = f - f % r->step;
    long long buckets = ((long long) r->to - r->from) / r->step;
    if (r->step == 3600 && buckets > TM_USAGE_MAX_HOURS) {
        snprintf(err, errlen, "range too long: at most %d hours (31 days) with granularity=hour; "
                 "use granularity=day", TM_USAGE_MAX_HOURS);
        return -1;
    }
    if (r->step == 86400 && buckets > TM_USAGE_MAX_DAYS) {
        snprintf(err, errlen, "range too long: at most %d days", TM_USAGE_MAX_DAYS);
        return -1;
    }
    return 0;
}

int tm_usage_parse_days(const char *s, int *days, char *err, size_t errlen)
{
    *days = 30;
    if (!s) {
        return 0;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || s[0] == '+' || s[0] == '-' || s[0] == ' ' || v < 1
        || v > TM_USAGE_STALE_MAX_DAYS) {
        snprintf(err, errlen, "days must be a whole number from 1 to %d", TM_USAGE_STALE_MAX_DAYS);
        return -1;
    }
    *days = (int) v;
    return 0;
}

int tm_usage_series_init(tm_usage_series *s, const tm_usage_range *r)
{
    memset(s, 0, sizeof *s);
    s->r = *r;
    s->last = -1;
    s->nbuckets = (size_t) ((r->to - r->from) / r->step);
    s->bucket = calloc(s->nbuckets ? s->nbuckets : 1, sizeof *s->bucket);
    s->total.variants = json_object();
    if (!s->bucket || !s->total.variants) {
        tm_usage_series_free(s);
        return -1;
    }
    return 0;
}

void tm_usage_series_free(tm_usage_series *s)
{
    for (size_t i = 0; s->bucket && i < s->nbuckets; i++) {
        json_decref(s->bucket[i].variants);
    }
    free(s->bucket);
    json_decref(s->total.variants);
    memset(s, 0, sizeof *s);
}

static long long item_num(const json_t *item, const char *name)
{
    const char *v = json_string_value(json_object_get(json_object_get(item, name), "N"));
    return v ? strtoll(v, NULL, 10) : 0;
}

static int counts_add(tm_usage_counts *c, long long n, long long t, long long f,
                      const char *variant, long long vn)
{
    if (!variant) {
        c->n += n;
        c->t += t;
        c->f += f;
        return 0;
    }
    if (!c->variants && !(c->variants = json_object())) {
        return -1;
    }
    return add_variant(c->variants, variant, vn);
}

/* Adds one aggregate item to its bucket and the totals. */
static int series_item(tm_usage_series *s, const json_t *item, time_t hour)
{
    tm_usage_counts *b = &s->bucket[(hour - s->r.from) / s->r.step];
    long long n = item_num(item, "evals"), t = item_num(item, "t"), f = item_num(item, "f");
    if (counts_add(b, n, t, f, NULL, 0) != 0 || counts_add(&s->total, n, t, f, NULL, 0) != 0) {
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *) item, k, v) {
        if (strncmp(k, "v:", 2) == 0 && k[2]) {
            long long vn = item_num(item, k);
            if (counts_add(b, 0, 0, 0, k + 2, vn) != 0
                || counts_add(&s->total, 0, 0, 0, k + 2, vn) != 0) {
                return -1;
            }
        }
    }
    return 0;
}

int tm_usage_series_add(tm_usage_series *s, const json_t *items)
{
    int rc = 0;
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item) {
        const char *sk = json_string_value(json_object_get(json_object_get(item, "sk"), "S"));
        char ts[32];
        snprintf(ts, sizeof ts, "%.13s:00:00Z", sk ? sk : "");
        time_t hour = sk && strlen(sk) == 13 ? tm_aws_parse_time(ts) : -1;
        if (hour < 0) {
            rc = -1;
            continue;
        }
        int last_min = -1;
        size_t j;
        json_t *m;
        json_array_foreach(json_object_get(json_object_get(item, "mins"), "NS"), j, m) {
            int v = atoi(json_string_value(m) ? json_string_value(m) : "-1");
            if (v > last_min && v < 60) {
                last_min = v;
            }
        }
        if (last_min >= 0 && hour + last_min * 60 > s->last) {
            s->last = hour + last_min * 60;
        }
        if (hour >= s->r.from && hour < s->r.to && series_item(s, item, hour) != 0) {
            rc = -1;
        }
    }
    return rc;
}

static json_t *counts_json(const tm_usage_counts *c)
{
    return json_pack("{s:I, s:I, s:I, s:o}", "evaluations", (json_int_t) c->n,
                     "true", (json_int_t) c->t, "false", (json_int_t) c->f, "variants",
                     c->variants ? json_deep_copy(c->variants) : json_object());
}

json_t *tm_usage_series_json(const tm_usage_series *s)
{
    json_t *points = json_array();
    for (size_t i = 0; points && i < s->nbuckets; i++) {
        char start[21];
        tm_usage_time(s->r.from + (time_t) i * s->r.step, start);
        json_t *p = counts_json(&s->bucket[i]);
        if (!p || json_object_set_new(p, "start", json_string(start)) != 0
            || json_array_append_new(points, p) != 0) {
            json_decref(p);
            json_decref(points);
            return NULL;
        }
    }
    char last[21];
    if (s->last >= 0) {
        tm_usage_time(s->last, last);
    }
    json_t *total = counts_json(&s->total);
    if (!points || !total) {
        json_decref(points);
        json_decref(total);
        return NULL;
    }
    return json_pack("{s:o, s:o, s:o}", "points", points, "totals", total, "last_evaluated",
                     s->last >= 0 ? json_string(last) : json_null());
}
