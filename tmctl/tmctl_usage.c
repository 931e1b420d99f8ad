#include "tmctl_usage.h"
#include "tm_buf.h"
#include "tmctl_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAR_WIDTH 40

/* The analytics service's base URL (no trailing '/') into b. 0, or 2. */
static int base_url(const tmctl_usage_opts *u, tm_buf *b)
{
    const char *a = u->analytics ? u->analytics : getenv("TOGGLEMASTER_ANALYTICS_URL");
    const char *g = u->gateway ? u->gateway : getenv("TOGGLEMASTER_URL");
    const char *base = a && *a ? a : g && *g ? g : "http://127.0.0.1:8080";
    size_t len = strlen(base);
    while (len && base[len - 1] == '/') {
        len--;
    }
    if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
        fprintf(stderr, "tmctl: the analytics URL must start with http:// or https://\n");
        return 2;
    }
    tm_buf_add(b, base, len);
    if (!(a && *a)) {
        tm_buf_adds(b, "/analytics");   /* the gateway strips it */
    }
    return 0;
}

/* Percent-encodes s into b (everything but unreserved characters). */
static void add_escaped(tm_buf *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
            || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            tm_buf_addc(b, (char) *p);
        } else {
            tm_buf_addf(b, "%%%02X", *p);
        }
    }
}

static void add_param(tm_buf *b, const char *name, const char *value, int *first)
{
    if (!value) {
        return;
    }
    tm_buf_addc(b, *first ? '?' : '&');
    *first = 0;
    tm_buf_adds(b, name);
    tm_buf_addc(b, '=');
    add_escaped(b, value);
}

/* GET url; the JSON answer or NULL with *rc set. */
static json_t *get(char *url, const char *what, int *rc)
{
    tmctl_resp r;
    json_t *j = NULL;
    *rc = 1;
    if (!url) {
        fprintf(stderr, "tmctl: out of memory\n");
    } else if (tmctl_http("GET", url, NULL, &r) == 0) {
        if (r.status != 200 || !r.json) {
            tmctl_api_error(what, &r);
        } else {
            j = json_incref(r.json);
            *rc = 0;
        }
        tmctl_resp_free(&r);
    }
    free(url);
    return j;
}

static long long num(const json_t *o, const char *k)
{
    return (long long) json_integer_value(json_object_get(o, k));
}

/* One line per bucket: its start, a bar scaled to the busiest bucket, the
 * counts. */
static int print_chart(const json_t *u)
{
    const json_t *points = json_object_get(u, "points");
    const char *g = json_string_value(json_object_get(u, "granularity"));
    int day = g && strcmp(g, "day") == 0;
    long long max = 0;
    size_t i;
    json_t *p;
    json_array_foreach(points, i, p) {
        if (num(p, "evaluations") > max) {
            max = num(p, "evaluations");
        }
    }
    printf("%s in %s, %s to %s (UTC)\n", json_string_value(json_object_get(u, "flag")),
           json_string_value(json_object_get(u, "environment")),
           json_string_value(json_object_get(u, "from")), json_string_value(json_object_get(u, "to")));
    json_array_foreach(points, i, p) {
        const char *s = json_string_value(json_object_get(p, "start"));
        long long n = num(p, "evaluations");
        int w = max ? (int) (n * BAR_WIDTH / max) : 0;
        char bar[BAR_WIDTH + 1];
        w = n > 0 && w == 0 ? 1 : w;
        memset(bar, '#', (size_t) w);
        memset(bar + w, '.', (size_t) (BAR_WIDTH - w));
        bar[BAR_WIDTH] = '\0';
        printf("%.10s%s%.5s  %s %10lld", s ? s : "?", day ? "" : " ", day || !s ? "" : s + 11,
               bar, n);
        if (n) {
            printf("  true %lld false %lld", num(p, "true"), num(p, "false"));
        }
        putchar('\n');
    }
    const json_t *t = json_object_get(u, "totals");
    const char *last = json_string_value(json_object_get(u, "last_evaluated"));
    printf("total %lld evaluations: true %lld, false %lld", num(t, "evaluations"), num(t, "true"),
           num(t, "false"));
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(t, "variants"), k, v) {
        printf(", %s %lld", k, (long long) json_integer_value(v));
    }
    printf("\nlast evaluated: %s\n", last ? last : "never (within the table's retention)");
    return ferror(stdout) ? 1 : 0;
}

int tmctl_usage(const tmctl_usage_opts *u, const char *flag)
{
    tm_buf b = TM_BUF_INIT;
    int rc = base_url(u, &b), first = 1;
    if (rc) {
        tm_buf_free(&b);
        return rc;
    }
    tm_buf_adds(&b, "/flags/");
    add_escaped(&b, flag);
    tm_buf_adds(&b, "/usage");
    add_param(&b, "environment", u->environment, &first);
    add_param(&b, "from", u->from, &first);
    add_param(&b, "to", u->to, &first);
    add_param(&b, "granularity", u->granularity, &first);
    json_t *j = get(tm_buf_steal(&b), "usage", &rc);
    if (j) {
        rc = print_chart(j);
        json_decref(j);
    }
    return rc;
}

static void print_stale(const json_t *page)
{
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(page, "stale"), i, s) {
        const char *last = json_string_value(json_object_get(s, "last_evaluated"));
        printf("%-40s %-20s %12lld  %s\n", json_string_value(json_object_get(s, "flag")),
               last ? last : "never", num(s, "evaluations"),
               json_string_value(json_object_get(s, "reason")));
    }
}

int tmctl_stale(const tmctl_usage_opts *u)
{
    char *after = NULL;
    int rc = 0, header = 0;
    long long checked = 0;
    do {
        tm_buf b = TM_BUF_INIT;
        int first = 1;
        if ((rc = base_url(u, &b)) != 0) {
            tm_buf_free(&b);
            break;
        }
        tm_buf_adds(&b, "/usage/stale");
        add_param(&b, "environment", u->environment, &first);
        add_param(&b, "days", u->days, &first);
        add_param(&b, "after", after, &first);
        json_t *j = get(tm_buf_steal(&b), "stale", &rc);
        free(after);
        after = NULL;
        if (!j) {
            break;
        }
        if (!header++) {
            printf("flags of %s without evaluations, or answering one value, since %s:\n",
                   json_string_value(json_object_get(j, "environment")),
                   json_string_value(json_object_get(j, "since")));
            printf("%-40s %-20s %12s  %s\n", "FLAG", "LAST EVALUATED", "EVALUATIONS", "WHY");
        }
        print_stale(j);
        checked += num(j, "checked");
        const char *next = json_string_value(json_object_get(j, "next"));
        if (next && !(after = strdup(next))) {
            rc = 1;
        }
        json_decref(j);
    } while (after);
    free(after);
    if (rc == 0) {
        printf("(%lld flags checked)\n", checked);
    }
    return rc == 0 && ferror(stdout) ? 1 : rc;
}
