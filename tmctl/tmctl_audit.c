#include "tmctl_audit.h"
#include "tmctl_http.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PAGE = 1000 };

/* "&name=<value escaped>" appended to url; -1 when it does not fit. */
static int add_param(char *url, size_t size, const char *name, const char *value)
{
    if (value == NULL) {
        return 0;
    }
    char *esc = curl_easy_escape(NULL, value, 0);
    if (esc == NULL) {
        return -1;
    }
    size_t len = strlen(url);
    int w = snprintf(url + len, size - len, "%s%s=%s", strchr(url, '?') ? "&" : "?", name, esc);
    curl_free(esc);
    return w < 0 || (size_t) w >= size - len ? -1 : 0;
}

/* Every record the filters give, up to q->limit, following next_cursor;
 * appended to out. 0, or 1 with the reason on stderr. */
static int fetch(const char *base, const tmctl_audit_query *q, const char *kind, json_t *out)
{
    char cursor[32] = "";
    size_t got = 0;
    for (;;) {
        char url[4096];
        long want = q->limit - (long) got < PAGE ? q->limit - (long) got : PAGE;
        char limit[24];
        snprintf(limit, sizeof limit, "%ld", want);
        snprintf(url, sizeof url, "%s/audit", base);
        if (add_param(url, sizeof url, "kind", kind) || add_param(url, sizeof url, "name", q->name)
            || add_param(url, sizeof url, "actor", q->actor)
            || add_param(url, sizeof url, "environment", q->environment)
            || add_param(url, sizeof url, "since", q->since)
            || add_param(url, sizeof url, "until", q->until)
            || add_param(url, sizeof url, "limit", limit)
            || add_param(url, sizeof url, "cursor", cursor[0] ? cursor : NULL)) {
            fprintf(stderr, "tmctl: the audit URL is too long\n");
            return 1;
        }
        tmctl_resp r;
        if (tmctl_http("GET", url, NULL, &r) != 0) {
            return 1;
        }
        json_t *recs = json_object_get(r.json, "records");
        json_t *next = json_object_get(r.json, "next_cursor");
        if (r.status != 200 || !json_is_array(recs)) {
            tmctl_api_error("audit", &r);
            tmctl_resp_free(&r);
            return 1;
        }
        got += json_array_size(recs);
        int more = json_is_string(next) && (long) got < q->limit;
        if (more) {
            snprintf(cursor, sizeof cursor, "%s", json_string_value(next));
        }
        int bad = json_array_extend(out, recs) != 0;
        tmctl_resp_free(&r);
        if (bad) {
            fprintf(stderr, "tmctl: out of memory\n");
            return 1;
        }
        if (!more) {
            return 0;
        }
    }
}

/* A member's value, compact, in buf. */
static const char *compact(const json_t *v, char *buf, size_t size)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    snprintf(buf, size, "%s", s ? s : "(none)");
    free(s);
    return buf;
}

/* What changed: "member: before -> after" for each member that differs
 * (updated_at left out: it changes with everything). */
static void print_changes(const json_t *before, const json_t *after)
{
    const char *key;
    json_t *v;
    char a[200], b[200];
    if (!json_is_object(before) || !json_is_object(after)) {
        return;
    }
    json_object_foreach((json_t *) after, key, v) {
        json_t *old = json_object_get(before, key);
        if (strcmp(key, "updated_at") != 0 && !json_equal(old, v)) {
            printf("  %s: %s -> %s", key, compact(old, b, sizeof b), compact(v, a, sizeof a));
        }
    }
    json_object_foreach((json_t *) before, key, v) {
        if (json_object_get(after, key) == NULL) {
            printf("  %s: %s -> (none)", key, compact(v, b, sizeof b));
        }
    }
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

static int print_records(const json_t *recs, int as_json)
{
    if (as_json) {
        if (json_dumpf(recs, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
            return 1;
        }
        return fputc('\n', stdout) == EOF;
    }
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) {
        json_t *actor = json_object_get(r, "actor");
        json_t *env = json_object_get(r, "environment");
        printf("%s  %-16s %-8s %-11s %s%s%s%s", str(r, "at"), str(actor, "name"),
               str(r, "action"), str(r, "kind"), str(r, "name"),
               json_is_string(env) ? " [" : "", json_is_string(env) ? json_string_value(env) : "",
               json_is_string(env) ? "]" : "");
        print_changes(json_object_get(r, "before"), json_object_get(r, "after"));
        printf("  (request %s from %s)\n", str(r, "request_id"), str(r, "client_address"));
    }
    if (json_array_size(recs) == 0) {
        printf("no changes recorded\n");
    }
    return 0;
}

int tmctl_audit(const char *base, const tmctl_audit_query *q)
{
    json_t *recs = json_array();
    int rc = recs ? fetch(base, q, q->kind, recs) : 1;
    if (rc == 0) {
        rc = print_records(recs, q->json);
    }
    json_decref(recs);
    return rc;
}

/* Newest first; "at" is RFC 3339 UTC with a fixed width, so text order is
 * time order. */
static int newer_first(const void *a, const void *b)
{
    const char *x = str(*(json_t *const *) a, "at"), *y = str(*(json_t *const *) b, "at");
    return strcmp(y, x);
}

int tmctl_history(const char *flags_base, const char *targeting_base, const char *flag,
                  const tmctl_audit_query *q)
{
    tmctl_audit_query fq = *q;
    fq.name = flag;
    json_t *all = json_array(), *merged = json_array();
    int rc = all && merged ? fetch(flags_base, &fq, "flag", all) : 1;
    if (rc == 0) {
        rc = fetch(targeting_base, &fq, "rule", all);
    }
    size_t n = json_array_size(all);
    json_t **v = rc == 0 ? malloc((n ? n : 1) * sizeof *v) : NULL;
    if (rc == 0 && v == NULL) {
        rc = 1;
    }
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) v[i] = json_array_get(all, i);
        qsort(v, n, sizeof *v, newer_first);
        for (size_t i = 0; i < n && (long) i < q->limit && rc == 0; i++) {
            rc = json_array_append(merged, v[i]) != 0;
        }
        rc = rc ? rc : print_records(merged, q->json);
    }
    free(v);
    json_decref(all);
    json_decref(merged);
    return rc;
}
