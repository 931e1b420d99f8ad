#include "tmctl_webhooks.h"
#include "tmctl_http.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WH_OK = 0, WH_API = 1, WH_USAGE = 2 };

static int print_json(const json_t *j)
{
    if (json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0
        || fputc('\n', stdout) == EOF) {
        fprintf(stderr, "tmctl: cannot write the output\n");
        return WH_API;
    }
    return WH_OK;
}

/* "a,b" as ["a","b"]; "all" as null (every one). NULL when out of memory
 * or when a name is empty (*bad set). */
static json_t *name_list(const char *s, int *bad)
{
    *bad = 0;
    if (strcmp(s, "all") == 0) {
        return json_null();
    }
    json_t *a = json_array();
    while (a) {
        size_t n = strcspn(s, ",");
        if (n == 0) {
            *bad = 1;
            json_decref(a);
            return NULL;
        }
        if (json_array_append_new(a, json_stringn(s, n)) != 0) {
            json_decref(a);
            return NULL;
        }
        if (s[n] == '\0') {
            break;
        }
        s += n + 1;
    }
    return a;
}

/* The POST (add) or PUT (update) body from the options; NULL with *rc. */
static json_t *endpoint_body(const tmctl_webhooks_opts *w, int *rc)
{
    const char *members[] = { "kinds", "environments" };
    const char *values[] = { w->kinds, w->environments };
    json_t *b = json_object();
    int oom = b == NULL;
    const char *url = strcmp(w->verb, "add") == 0 ? w->arg : w->url;
    if (!oom && url) oom = json_object_set_new(b, "url", json_string(url)) != 0;
    if (!oom && w->secret) oom = json_object_set_new(b, "secret", json_string(w->secret)) != 0;
    if (!oom && w->format) oom = json_object_set_new(b, "format", json_string(w->format)) != 0;
    for (int i = 0; i < 2 && !oom; i++) {
        int bad;
        if (values[i] == NULL) {
            continue;
        }
        json_t *l = name_list(values[i], &bad);
        if (bad) {
            fprintf(stderr, "tmctl: --%s: comma-separated names without empty ones, or \"all\"\n"
                    "(tmctl --help lists the commands)\n", members[i]);
            json_decref(b);
            *rc = WH_USAGE;
            return NULL;
        }
        oom = json_object_set_new(b, members[i], l) != 0;
    }
    if (!oom && json_object_size(b) == 0) {
        fprintf(stderr, "tmctl: webhooks update: nothing to change (--endpoint, --secret,"
                " --kinds, --environments, --format)\n(tmctl --help lists the commands)\n");
        json_decref(b);
        *rc = WH_USAGE;
        return NULL;
    }
    if (oom) {
        fprintf(stderr, "tmctl: out of memory\n");
        json_decref(b);
        *rc = WH_API;
        return NULL;
    }
    return b;
}

/* method url [body]; the answer must be want. WH_OK with *r to free. */
static int call(const char *method, const char *url, const json_t *body, long want,
                const char *what, tmctl_resp *r)
{
    if (tmctl_http(method, url, body, r) != 0) {
        return WH_API;
    }
    if (r->status != want) {
        tmctl_api_error(what, r);
        tmctl_resp_free(r);
        return WH_API;
    }
    return WH_OK;
}

/* A list member as "a,b", or "all" when null. */
static void names(const json_t *v, char *buf, size_t size)
{
    size_t i, len = 0;
    json_t *e;
    if (!json_is_array(v)) {
        snprintf(buf, size, "all");
        return;
    }
    buf[0] = '\0';
    json_array_foreach(v, i, e) {
        int n = snprintf(buf + len, size - len, "%s%s", i ? "," : "",
                         json_string_value(e) ? json_string_value(e) : "?");
        if (n < 0 || (size_t) n >= size - len) {
            break;
        }
        len += (size_t) n;
    }
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

static void print_endpoints(const json_t *list)
{
    size_t i;
    json_t *e;
    char kinds[256], envs[1024];
    if (json_array_size(list) == 0) {
        printf("no webhooks\n");
        return;
    }
    printf("%-6s %-6s %-24s %-24s %s\n", "ID", "FORMAT", "KINDS", "ENVIRONMENTS", "URL");
    json_array_foreach(list, i, e) {
        names(json_object_get(e, "kinds"), kinds, sizeof kinds);
        names(json_object_get(e, "environments"), envs, sizeof envs);
        printf("%-6" JSON_INTEGER_FORMAT " %-6s %-24s %-24s %s\n",
               json_integer_value(json_object_get(e, "id")), str(e, "format"), kinds, envs,
               str(e, "url"));
    }
}

/* What a delivery carries: the event ("flag.update", "ping"), or "slack". */
static const char *event_of(const json_t *d)
{
    const json_t *body = json_object_get(d, "body");
    const char *ev = json_string_value(json_object_get(body, "event"));
    return ev ? ev : json_object_get(body, "text") ? "slack" : "-";
}

static void print_deliveries(const json_t *list, long limit)
{
    size_t i;
    json_t *d;
    if (json_array_size(list) == 0) {
        printf("no deliveries\n");
        return;
    }
    printf("%-36s %-9s %-8s %-27s %-18s %s\n", "DELIVERY", "STATUS", "ATTEMPTS", "CREATED",
           "EVENT", "LAST ERROR");
    json_array_foreach(list, i, d) {
        if ((long) i >= limit) {
            break;
        }
        printf("%-36s %-9s %-8" JSON_INTEGER_FORMAT " %-27s %-18s %s\n", str(d, "delivery_id"),
               str(d, "status"), json_integer_value(json_object_get(d, "attempts")),
               str(d, "created_at"), event_of(d), str(d, "last_error"));
    }
}

/* GET and print as a table (or JSON). */
static int show(const tmctl_webhooks_opts *w, const char *url, const char *what)
{
    tmctl_resp r;
    int rc = call("GET", url, NULL, 200, what, &r);
    if (rc != WH_OK) {
        return rc;
    }
    if (!json_is_array(r.json)) {
        fprintf(stderr, "tmctl: %s: the answer is not a JSON array\n", what);
        rc = WH_API;
    } else if (strcmp(w->verb, "list") == 0) {
        rc = w->json ? print_json(r.json) : (print_endpoints(r.json), WH_OK);
    } else {
        /* The API answers the last 100, newest first. */
        while ((long) json_array_size(r.json) > w->limit) {
            json_array_remove(r.json, json_array_size(r.json) - 1);
        }
        rc = w->json ? print_json(r.json) : (print_deliveries(r.json, w->limit), WH_OK);
    }
    tmctl_resp_free(&r);
    return rc;
}

/* A write whose answer (the endpoint, the new delivery's id) is printed
 * as JSON; remove prints a line. */
static int change(const tmctl_webhooks_opts *w, const char *url, const char *what)
{
    int rc = WH_OK;
    const char *method = "POST";
    long want = 201;
    json_t *body = NULL;
    if (strcmp(w->verb, "add") == 0 || strcmp(w->verb, "update") == 0) {
        if ((body = endpoint_body(w, &rc)) == NULL) {
            return rc;
        }
        if (w->verb[0] == 'u') {
            method = "PUT";
            want = 200;
        }
    } else if (strcmp(w->verb, "remove") == 0) {
        method = "DELETE";
        want = 204;
    } else {
        want = 202;   /* ping, redeliver */
    }
    tmctl_resp r;
    rc = call(method, url, body, want, what, &r);
    json_decref(body);
    if (rc != WH_OK) {
        return rc;
    }
    if (want == 204) {
        printf("removed webhook %s\n", w->arg);
    } else if (r.json) {
        rc = print_json(r.json);
    } else {
        fprintf(stderr, "tmctl: %s: the answer is not JSON\n", what);
        rc = WH_API;
    }
    tmctl_resp_free(&r);
    return rc;
}

int tmctl_webhooks(const tmctl_webhooks_opts *w)
{
    char url[4096], what[128];
    int n;
    if (strcmp(w->verb, "list") == 0 || strcmp(w->verb, "add") == 0) {
        n = snprintf(url, sizeof url, "%s/webhooks", w->base);
    } else {
        if (w->arg[0] == '0' || strspn(w->arg, "0123456789") != strlen(w->arg)
            || strlen(w->arg) > 9) {
            fprintf(stderr, "tmctl: webhook ids are positive numbers (tmctl webhooks list shows"
                    " them)\n(tmctl --help lists the commands)\n");
            return WH_USAGE;
        }
        int again = strcmp(w->verb, "redeliver") == 0;
        if (again && (strlen(w->delivery) > 64
                      || strspn(w->delivery, "0123456789abcdef-") != strlen(w->delivery))) {
            fprintf(stderr, "tmctl: delivery ids are UUIDs (tmctl webhooks deliveries %s shows"
                    " them)\n(tmctl --help lists the commands)\n", w->arg);
            return WH_USAGE;
        }
        const char *sub = strcmp(w->verb, "ping") == 0 ? "/ping"
                        : strcmp(w->verb, "deliveries") == 0 ? "/deliveries" : "";
        if (again) {
            n = snprintf(url, sizeof url, "%s/webhooks/%s/deliveries/%s/redeliver", w->base,
                         w->arg, w->delivery);
        } else {
            n = snprintf(url, sizeof url, "%s/webhooks/%s%s", w->base, w->arg, sub);
        }
    }
    if (n < 0 || (size_t) n >= sizeof url) {
        fprintf(stderr, "tmctl: URL too long\n");
        return WH_USAGE;
    }
    snprintf(what, sizeof what, "webhooks %s%s%.60s", w->verb,
             strcmp(w->verb, "list") ? " " : "", strcmp(w->verb, "list") ? w->arg : "");
    if (strcmp(w->verb, "list") == 0 || strcmp(w->verb, "deliveries") == 0) {
        return show(w, url, what);
    }
    return change(w, url, what);
}
