/* tmctl: ToggleMaster's command-line client. Talks to the admin daemons
 * (flags, targeting) and to the edge's OFREP endpoint, through the gateway
 * (TOGGLEMASTER_URL: the original ingress, which strips the /flags,
 * /targeting and /auth prefixes) or to each service directly. Exit status:
 * 0 ok, 1 the server (or a file's content) said no, 2 usage. tmctl --help
 * lists the commands. */
#include "tm_names.h"
#include "tm_rules.h"
#include "tmctl_audit.h"
#include "tmctl_doc.h"
#include "tmctl_http.h"
#include "tmctl_usage.h"
#include "tmctl_webhooks.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_OK = 0, EXIT_API = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
"usage: tmctl [options] COMMAND ...\n"
"\n"
"Flags (togglemaster-flags):\n"
"  tmctl flags list\n"
"  tmctl flags get NAME\n"
"  tmctl flags create NAME [--description TEXT] [--enabled|--disabled]\n"
"  tmctl flags update NAME [--description TEXT] [--enabled|--disabled]\n"
"  tmctl flags enable NAME | disable NAME | delete NAME\n"
"\n"
"Targeting rules, one document per flag (togglemaster-targeting; docs/rules.md):\n"
"  tmctl rules list\n"
"  tmctl rules get FLAG\n"
"  tmctl rules set FLAG FILE [--enabled|--disabled]   create or replace; FILE holds the\n"
"                                                   rule document (or {\"rules\":...}), - is stdin\n"
"  tmctl rules enable FLAG | disable FLAG | delete FLAG\n"
"\n"
"Segments, named constraint sets strategies refer to:\n"
"  tmctl segments list\n"
"  tmctl segments get NAME\n"
"  tmctl segments set NAME FILE [--description TEXT]  FILE: {\"constraints\":[...],\"description\"?}\n"
"                                                   or a bare array of constraints\n"
"  tmctl segments delete NAME                        refused (409) while a rule uses it\n"
"\n"
"Evaluation (OFREP on the edge):\n"
"  tmctl eval FLAG [--user ID] [--context JSON]     --context '{\"country\":\"BR\"}'\n"
"\n"
"Whole configurations:\n"
"  tmctl export                                      flags, segments and rules as one JSON document\n"
"  tmctl import FILE [--dry-run]                     creates or updates what FILE holds (an export);\n"
"                                                   unchanged objects are left alone\n"
"  tmctl import unleash FILE [--dry-run] [--skip-unknown]\n"
"                                                   the same from an Unleash client-features document\n"
"                                                   (/api/client/features); --dry-run prints the\n"
"                                                   converted document and sends nothing\n"
"  tmctl validate                                    checks the API key with the auth service\n"
"\n"
"Environments and keys (docs/environments.md):\n"
"  tmctl env list | create NAME\n"
"  tmctl env delete NAME [--confirm]                a non-empty environment needs --confirm\n"
"  tmctl promote FLAG --from ENV --to ENV           copies the flag's state and rule\n"
"  tmctl keys list                                   (these need the master key)\n"
"  tmctl keys create NAME [--scope admin|readonly|server|client] [--environment ENV]\n"
"  tmctl keys revoke ID\n"
"\n"
"Usage, from the analytics service (docs/usage.md):\n"
"  tmctl usage FLAG [--from DATE] [--to DATE] [--granularity hour|day] [--environment ENV]\n"
"                                                   evaluations per hour or day as a text chart;\n"
"                                                   DATE: 2026-11-22 or 2026-11-22T10:00:00Z\n"
"  tmctl stale [--days N] [--environment ENV]        flags not evaluated, or answering one value,\n"
"                                                   in N days (default 30, at most 90)\n"
"Who changed what (docs/audit.md; an admin or readonly key):\n"
"  tmctl audit [--service flags|targeting|auth] [--kind KIND] [--name NAME] [--actor KEY]\n"
"              [--since TIME] [--until TIME] [--limit N] [--json]\n"
"                                                   one service's trail, newest first;\n"
"                                                   --environment filters too\n"
"  tmctl history FLAG [--since TIME] [--until TIME] [--limit N] [--json]\n"
"                                                   the flag's changes and its rule's, merged\n"
"                                                   by time (flags and targeting trails)\n"
"\n"
"Webhooks, per service: each tells its endpoints of its own changes (docs/audit.md;\n"
"--service flags|targeting|auth, default flags; on auth an admin key or the master key):\n"
"  tmctl webhooks list [--json]                      id, format, kinds, environments, URL\n"
"  tmctl webhooks add URL --secret SECRET [--kinds LIST] [--environments LIST]\n"
"                     [--format json|slack]          LIST: comma-separated names, or all;\n"
"                                                   kinds: flag,rule,segment,environment,\n"
"                                                   key,webhook; secret: 16 to 256 bytes\n"
"                                                   (env TOGGLEMASTER_WEBHOOK_SECRET)\n"
"  tmctl webhooks update ID [--endpoint URL] [--secret SECRET] [--kinds LIST]\n"
"                        [--environments LIST] [--format json|slack]\n"
"  tmctl webhooks remove ID | ping ID\n"
"  tmctl webhooks deliveries ID [--limit N] [--json]  the last deliveries, newest first:\n"
"                                                   status, attempts, event, last error\n"
"  tmctl webhooks redeliver ID DELIVERY_ID          a delivered or failed one sent again,\n"
"                                                   under a new delivery id\n"
"\n"
"Options (anywhere on the line; --opt=value works too):\n"
"  --environment ENV    flags, rules, export and import act on ENV (env\n"
"                       TOGGLEMASTER_ENVIRONMENT; default: the default environment)\n"
"  --master-key KEY     for tmctl keys (env TOGGLEMASTER_MASTER_KEY)\n"
"  --url URL            the gateway, e.g. http://127.0.0.1:8080 (env TOGGLEMASTER_URL;\n"
"                       default http://127.0.0.1:8080); services are under the original\n"
"                       ingress's prefixes (/flags/flags, /targeting/rules, /auth/validate)\n"
"                       and OFREP under /ofrep/v1\n"
"  --key KEY            API key (env TOGGLEMASTER_API_KEY, which keeps it out of `ps`)\n"
"  --flags-url URL      the flags service itself, e.g. http://127.0.0.1:8002\n"
"                       (env TOGGLEMASTER_FLAGS_URL)\n"
"  --targeting-url URL  the targeting service itself (env TOGGLEMASTER_TARGETING_URL)\n"
"  --auth-url URL       the auth service itself (env TOGGLEMASTER_AUTH_URL)\n"
"  --analytics-url URL  the analytics service itself, e.g. http://127.0.0.1:8005\n"
"                       (env TOGGLEMASTER_ANALYTICS_URL; default: the gateway's /analytics)\n"
"  --eval-url URL       the edge serving OFREP, e.g. http://127.0.0.1:8004\n"
"                       (env TOGGLEMASTER_EVAL_URL)\n"
"  --timeout SECONDS    per request (default 30)\n"
"  --retries N          times a request answered 429 or 503 is sent again, after\n"
"                       the server's Retry-After or a backoff with jitter (default 6)\n"
"  -h, --help           this text\n"
"\n"
"Output is JSON on stdout. Exit status: 0 done, 1 the server refused (its message\n"
"is shown) or a file's content is invalid (nothing is sent then), 2 usage.\n";

/* ---- options ---- */

enum {
    O_DESC = 1, O_ENABLE = 2, O_USER = 4, O_CONTEXT = 8, O_DRY = 16, O_SKIP = 32,
    O_FROMTO = 64, O_SCOPE = 128, O_CONFIRM = 256,
    O_GRAN = 512, O_DAYS = 1024, O_AUDIT = 2048, O_AUDITQ = 4096, O_LIMIT = 8192,
    O_SERVICE = 16384, O_JSON = 32768, O_HOOK = 65536
};

typedef struct {
    const char *url, *key, *auth_url, *flags_url, *targeting_url, *eval_url, *timeout, *retries;
    const char *description, *user, *context;
    const char *environment, *from, *to, *scope, *master_key;
    const char *granularity, *days, *analytics_url;   /* tmctl usage / stale */
    const char *service, *kind, *name, *actor, *since, *until, *limit;
    const char *secret, *kinds, *environments, *format, *endpoint;   /* tmctl webhooks */
    int enabled;          /* -1 not given */
    int dry_run, skip_unknown, help, confirm, json;
    long timeout_s;       /* --timeout, checked */
    int retries_n;        /* --retries, checked */
    unsigned given;       /* O_* seen */
    const char *pos[8];
    int npos;
} opts;

static opts o = { .enabled = -1 };

/* Resolved service bases, without a trailing '/'. */
static char flags_base[2048], targeting_base[2048], auth_base[2048], eval_base[2048];

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("tmctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n(tmctl --help lists the commands)\n", stderr);
    va_end(ap);
    return EXIT_USAGE;
}

static int failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int failf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("tmctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return EXIT_API;
}

static int parse_args(int argc, char **argv)
{
    static const struct {
        const char *name;
        const char **val;   /* NULL: a switch */
        unsigned bit;
    } table[] = {
        { "url", &o.url, 0 }, { "key", &o.key, 0 }, { "auth-url", &o.auth_url, 0 },
        { "flags-url", &o.flags_url, 0 }, { "targeting-url", &o.targeting_url, 0 },
        { "eval-url", &o.eval_url, 0 }, { "timeout", &o.timeout, 0 },
        { "retries", &o.retries, 0 },
        { "description", &o.description, O_DESC }, { "user", &o.user, O_USER },
        { "context", &o.context, O_CONTEXT },
        { "enabled", NULL, O_ENABLE }, { "disabled", NULL, O_ENABLE },
        { "dry-run", NULL, O_DRY }, { "skip-unknown", NULL, O_SKIP }, { "help", NULL, 0 },
        { "environment", &o.environment, 0 }, { "from", &o.from, O_FROMTO },
        { "to", &o.to, O_FROMTO }, { "scope", &o.scope, O_SCOPE },
        { "master-key", &o.master_key, 0 }, { "confirm", NULL, O_CONFIRM },
        { "granularity", &o.granularity, O_GRAN }, { "days", &o.days, O_DAYS },
        { "analytics-url", &o.analytics_url, 0 },
        { "service", &o.service, O_SERVICE }, { "kind", &o.kind, O_AUDIT },
        { "name", &o.name, O_AUDIT }, { "actor", &o.actor, O_AUDIT },
        { "since", &o.since, O_AUDITQ }, { "until", &o.until, O_AUDITQ },
        { "limit", &o.limit, O_LIMIT }, { "json", NULL, O_JSON },
        { "secret", &o.secret, O_HOOK }, { "kinds", &o.kinds, O_HOOK },
        { "environments", &o.environments, O_HOOK }, { "format", &o.format, O_HOOK },
        { "endpoint", &o.endpoint, O_HOOK },
    };
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            if (o.npos == (int) (sizeof o.pos / sizeof o.pos[0])) {
                return usage("too many arguments");
            }
            o.pos[o.npos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0) {
            o.help = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            return usage("unknown option %s", a);
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t) (eq - name) : strlen(name);
        size_t k;
        for (k = 0; k < sizeof table / sizeof table[0]; k++) {
            if (strlen(table[k].name) == nlen && strncmp(table[k].name, name, nlen) == 0) {
                break;
            }
        }
        if (k == sizeof table / sizeof table[0]) {
            return usage("unknown option --%.*s", (int) nlen, name);
        }
        o.given |= table[k].bit;
        if (table[k].val == NULL) {
            if (eq) {
                return usage("--%s takes no value", table[k].name);
            }
            if (strcmp(table[k].name, "enabled") == 0 || strcmp(table[k].name, "disabled") == 0) {
                int v = table[k].name[0] == 'e';
                if (o.enabled >= 0 && o.enabled != v) {
                    return usage("--enabled and --disabled together");
                }
                o.enabled = v;
            } else if (strcmp(table[k].name, "dry-run") == 0) {
                o.dry_run = 1;
            } else if (strcmp(table[k].name, "skip-unknown") == 0) {
                o.skip_unknown = 1;
            } else if (strcmp(table[k].name, "confirm") == 0) {
                o.confirm = 1;
            } else if (strcmp(table[k].name, "json") == 0) {
                o.json = 1;
            } else {
                o.help = 1;
            }
            continue;
        }
        if (eq) {
            *table[k].val = eq + 1;
        } else if (i + 1 < argc) {
            *table[k].val = argv[++i];
        } else {
            return usage("--%s needs a value", table[k].name);
        }
    }
    return EXIT_OK;
}

static const char *env_or(const char *given, const char *env)
{
    if (given) {
        return given;
    }
    const char *e = getenv(env);
    return e && *e ? e : NULL;
}

/* base (trailing slashes dropped) + suffix into out. */
static int set_base(char *out, size_t n, const char *base, const char *suffix, const char *what)
{
    size_t len = strlen(base);
    while (len && base[len - 1] == '/') {
        len--;
    }
    if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
        return usage("%s must start with http:// or https:// (got \"%.100s\")", what, base);
    }
    int w = snprintf(out, n, "%.*s%s", (int) len, base, suffix);
    if (w < 0 || (size_t) w >= n) {
        return usage("%s is too long", what);
    }
    return EXIT_OK;
}

static int resolve_urls(void)
{
    const char *url = env_or(o.url, "TOGGLEMASTER_URL");
    if (url == NULL) {
        url = "http://127.0.0.1:8080";
    }
    const char *f = env_or(o.flags_url, "TOGGLEMASTER_FLAGS_URL");
    const char *t = env_or(o.targeting_url, "TOGGLEMASTER_TARGETING_URL");
    const char *a = env_or(o.auth_url, "TOGGLEMASTER_AUTH_URL");
    const char *e = env_or(o.eval_url, "TOGGLEMASTER_EVAL_URL");
    int rc;
    if ((rc = set_base(flags_base, sizeof flags_base, f ? f : url, f ? "" : "/flags",
                       f ? "the flags URL" : "the URL"))
        || (rc = set_base(targeting_base, sizeof targeting_base, t ? t : url, t ? "" : "/targeting",
                          t ? "the targeting URL" : "the URL"))
        || (rc = set_base(auth_base, sizeof auth_base, a ? a : url, a ? "" : "/auth",
                          a ? "the auth URL" : "the URL"))
        || (rc = set_base(eval_base, sizeof eval_base, e ? e : url, "", e ? "the eval URL" : "the URL"))) {
        return rc;
    }
    return EXIT_OK;
}

/* ---- helpers ---- */

static char url_buf[4096];

/* base + path [+ "/" + name]; names are checked: only their non-ASCII
 * (UTF-8) bytes need escaping. */
static const char *mkurl(const char *base, const char *path, const char *name)
{
    int w = snprintf(url_buf, sizeof url_buf, "%s%s%s", base, path, name ? "/" : "");
    size_t n = w < 0 ? sizeof url_buf : (size_t) w;
    for (const unsigned char *p = (const unsigned char *) name; p && *p && n < sizeof url_buf; p++) {
        w = snprintf(url_buf + n, sizeof url_buf - n, *p >= 0x80 ? "%%%02X" : "%c", *p);
        n += w < 0 ? sizeof url_buf : (size_t) w;
    }
    /* Flags and rules live in an environment (docs/environments.md). */
    if (o.environment && (strcmp(path, "/flags") == 0 || strcmp(path, "/rules") == 0)
        && n < sizeof url_buf) {
        w = snprintf(url_buf + n, sizeof url_buf - n, "?environment=%s", o.environment);
        n += w < 0 ? sizeof url_buf : (size_t) w;
    }
    return n >= sizeof url_buf ? NULL : url_buf;
}

static int print_json(const json_t *j)
{
    if (json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15)) != 0
        || fputc('\n', stdout) == EOF) {
        return failf("cannot write the output");
    }
    return EXIT_OK;
}

static int check_name(const char *name, const char *what)
{
    if (!tm_name_valid_unicode(name, strlen(name))) {
        return usage("%s \"%.100s\": names are 1 to %d characters: " TM_NAME_CHARSET_UNICODE,
                     what, name, TM_NAME_MAX);
    }
    return EXIT_OK;
}

/* Reads a JSON file ("-": stdin). NULL with the exit status in *rc. */
static json_t *read_json(const char *path, int *rc)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (f == NULL) {
        *rc = usage("cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loadf(f, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    if (f != stdin) {
        fclose(f);
    }
    if (j == NULL) {
        *rc = failf("%s: not valid JSON: line %d, column %d: %s", path, e.line, e.column, e.text);
    }
    return j;
}

/* A request that must succeed with want (0: any 2xx). Prints the server's
 * message otherwise. EXIT_OK with *r to free, or EXIT_API. */
static int call(const char *method, const char *url, const json_t *body, long want,
                const char *what, tmctl_resp *r)
{
    if (url == NULL) {
        return usage("URL too long");
    }
    if (tmctl_http(method, url, body, r) != 0) {
        return EXIT_API;
    }
    if (want ? r->status != want : (r->status < 200 || r->status > 299)) {
        tmctl_api_error(what, r);
        tmctl_resp_free(r);
        return EXIT_API;
    }
    return EXIT_OK;
}

/* GET and print. */
static int show(const char *url, const char *what)
{
    tmctl_resp r;
    int rc = call("GET", url, NULL, 200, what, &r);
    if (rc == EXIT_OK) {
        rc = r.json ? print_json(r.json) : failf("%s: the answer is not JSON", what);
        tmctl_resp_free(&r);
    }
    return rc;
}

static int delete_one(const char *url, const char *what, const char *done)
{
    tmctl_resp r;
    int rc = call("DELETE", url, NULL, 204, what, &r);
    if (rc == EXIT_OK) {
        tmctl_resp_free(&r);
        printf("%s\n", done);
    }
    return rc;
}

/* PUT name (update); on 404 POST the collection (create); a 409 there means
 * it was created meanwhile: PUT again. *created says which happened: 1
 * created, 0 updated; on failure 0 when the server refused (nothing
 * changed), -1 when a write got no answer (it may have been applied). */
static int upsert(const char *base, const char *coll, const char *name, const json_t *put_body,
                  const json_t *post_body, const char *what, tmctl_resp *r, int *created)
{
    *created = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        const char *u = mkurl(base, coll, name);
        if (u == NULL) {
            return usage("URL too long");
        }
        if (tmctl_http("PUT", u, put_body, r) != 0) {
            *created = -1;
            return EXIT_API;
        }
        if (r->status == 200) {
            *created = 0;
            return EXIT_OK;
        }
        if (r->status != 404) {
            tmctl_api_error(what, r);
            tmctl_resp_free(r);
            return EXIT_API;
        }
        tmctl_resp_free(r);
        if ((u = mkurl(base, coll, NULL)) == NULL) {
            return usage("URL too long");
        }
        if (tmctl_http("POST", u, post_body, r) != 0) {
            *created = -1;
            return EXIT_API;
        }
        if (r->status == 201) {
            *created = 1;
            return EXIT_OK;
        }
        if (r->status != 409 || attempt) {
            tmctl_api_error(what, r);
            tmctl_resp_free(r);
            return EXIT_API;
        }
        tmctl_resp_free(r);
    }
    return EXIT_API;
}

static int need_key(void)
{
    if (o.key == NULL) {
        return usage("no API key: set TOGGLEMASTER_API_KEY or pass --key");
    }
    return EXIT_OK;
}

/* ---- flags ---- */

static int flag_body(json_t **body, int need_something)
{
    *body = json_object();
    if (*body == NULL) {
        return failf("out of memory");
    }
    if (o.description) {
        if (!tm_text_valid(o.description, strlen(o.description))) {
            json_decref(*body);
            return usage("--description must be UTF-8 text without control characters");
        }
        if (json_object_set_new(*body, "description", json_string(o.description)) != 0) {
            json_decref(*body);
            return failf("out of memory");
        }
    }
    if (o.enabled >= 0 && json_object_set_new(*body, "is_enabled", json_boolean(o.enabled)) != 0) {
        json_decref(*body);
        return failf("out of memory");
    }
    if (need_something && json_object_size(*body) == 0) {
        json_decref(*body);
        return usage("nothing to update: give --description, --enabled or --disabled");
    }
    return EXIT_OK;
}

static int cmd_flags(const char *verb, const char *name)
{
    char what[160];
    snprintf(what, sizeof what, "flag \"%s\"", name ? name : "");
    if (strcmp(verb, "list") == 0) {
        return show(mkurl(flags_base, "/flags", NULL), "flags list");
    }
    if (strcmp(verb, "get") == 0) {
        return show(mkurl(flags_base, "/flags", name), what);
    }
    if (strcmp(verb, "delete") == 0) {
        char done[160];
        snprintf(done, sizeof done, "deleted flag \"%s\"", name);
        return delete_one(mkurl(flags_base, "/flags", name), what, done);
    }
    json_t *body;
    int rc, create = strcmp(verb, "create") == 0;
    if (strcmp(verb, "enable") == 0 || strcmp(verb, "disable") == 0) {
        body = json_pack("{s:b}", "is_enabled", verb[0] == 'e');
        rc = body ? EXIT_OK : failf("out of memory");
    } else {
        rc = flag_body(&body, !create);
    }
    if (rc != EXIT_OK) {
        return rc;
    }
    if (create && json_object_set_new(body, "name", json_string(name)) != 0) {
        json_decref(body);
        return failf("out of memory");
    }
    tmctl_resp r;
    rc = call(create ? "POST" : "PUT", mkurl(flags_base, "/flags", create ? NULL : name), body,
              create ? 201 : 200, what, &r);
    json_decref(body);
    if (rc == EXIT_OK) {
        rc = r.json ? print_json(r.json) : failf("%s: the answer is not JSON", what);
        tmctl_resp_free(&r);
    }
    return rc;
}

/* ---- rules ---- */

static int cmd_rules(const char *verb, const char *flag, const char *file)
{
    char what[160];
    snprintf(what, sizeof what, "rule for flag \"%s\"", flag ? flag : "");
    if (strcmp(verb, "list") == 0) {
        return show(mkurl(targeting_base, "/rules", NULL), "rules list");
    }
    if (strcmp(verb, "get") == 0) {
        return show(mkurl(targeting_base, "/rules", flag), what);
    }
    if (strcmp(verb, "delete") == 0) {
        char done[160];
        snprintf(done, sizeof done, "deleted the rule for flag \"%s\"", flag);
        return delete_one(mkurl(targeting_base, "/rules", flag), what, done);
    }
    tmctl_resp r;
    int rc;
    if (strcmp(verb, "enable") == 0 || strcmp(verb, "disable") == 0) {
        json_t *body = json_pack("{s:b}", "is_enabled", verb[0] == 'e');
        if (body == NULL) {
            return failf("out of memory");
        }
        rc = call("PUT", mkurl(targeting_base, "/rules", flag), body, 200, what, &r);
        json_decref(body);
    } else {   /* set */
        json_t *in = read_json(file, &rc);
        if (in == NULL) {
            return rc;
        }
        /* a rule document, or a row {"flag_name"?, "rules", "is_enabled"?} */
        json_t *doc = in, *en = NULL, *fn = NULL;
        if (json_is_object(in) && json_object_get(in, "rules")) {
            doc = json_object_get(in, "rules");
            en = json_object_get(in, "is_enabled");
            fn = json_object_get(in, "flag_name");
            const char *k;
            json_t *v;
            json_object_foreach(in, k, v) {
                if (strcmp(k, "rules") && strcmp(k, "is_enabled") && strcmp(k, "flag_name")
                    && strcmp(k, "id") && strcmp(k, "created_at") && strcmp(k, "updated_at")) {
                    json_decref(in);
                    return failf("%s: unknown field \"%.64s\" next to \"rules\"", file, k);
                }
            }
            if (fn && (!json_is_string(fn) || strcmp(json_string_value(fn), flag) != 0)) {
                json_decref(in);
                return failf("%s: \"flag_name\" says another flag than %s", file, flag);
            }
            if (en && !json_is_boolean(en)) {
                json_decref(in);
                return failf("%s: \"is_enabled\" must be true or false", file);
            }
        }
        char err[256];
        if (tm_rules_check(doc, err, sizeof err) != 0) {
            json_decref(in);
            return failf("%s: %s", file, err);
        }
        json_t *put = json_pack("{s:O}", "rules", doc);
        json_t *post = json_pack("{s:s, s:O}", "flag_name", flag, "rules", doc);
        int e = o.enabled >= 0 ? o.enabled : en ? json_is_true(en) : -1;
        int ok = put && post
                 && (e < 0 || (json_object_set_new(put, "is_enabled", json_boolean(e)) == 0
                               && json_object_set_new(post, "is_enabled", json_boolean(e)) == 0));
        int created = 0;
        rc = ok ? upsert(targeting_base, "/rules", flag, put, post, what, &r, &created)
                : failf("out of memory");
        json_decref(put);
        json_decref(post);
        json_decref(in);
    }
    if (rc == EXIT_OK) {
        rc = r.json ? print_json(r.json) : failf("%s: the answer is not JSON", what);
        tmctl_resp_free(&r);
    }
    return rc;
}

/* ---- segments ---- */

static int cmd_segments(const char *verb, const char *name, const char *file)
{
    char what[160];
    snprintf(what, sizeof what, "segment \"%s\"", name ? name : "");
    if (strcmp(verb, "list") == 0) {
        return show(mkurl(targeting_base, "/segments", NULL), "segments list");
    }
    if (strcmp(verb, "get") == 0) {
        return show(mkurl(targeting_base, "/segments", name), what);
    }
    if (strcmp(verb, "delete") == 0) {
        char done[160];
        snprintf(done, sizeof done, "deleted segment \"%s\"", name);
        return delete_one(mkurl(targeting_base, "/segments", name), what, done);
    }
    int rc;
    json_t *in = read_json(file, &rc);
    if (in == NULL) {
        return rc;
    }
    /* {"constraints","description"?,"name"?} or a bare array of constraints */
    json_t *seg = json_is_array(in) ? json_pack("{s:O}", "constraints", in) : json_deep_copy(in);
    json_decref(in);
    if (seg == NULL) {
        return failf("out of memory");
    }
    if (!json_is_object(seg)) {
        json_decref(seg);
        return failf("%s: must be {\"constraints\":[...],\"description\"?} or an array of"
                     " constraints", file);
    }
    json_t *fn = json_object_get(seg, "name");
    if (fn && (!json_is_string(fn) || strcmp(json_string_value(fn), name) != 0)) {
        json_decref(seg);
        return failf("%s: \"name\" says another segment than %s", file, name);
    }
    /* a row printed by "segments get" works too; deleting absent members is harmless */
    (void) json_object_del(seg, "id");
    (void) json_object_del(seg, "created_at");
    (void) json_object_del(seg, "updated_at");
    if ((o.description && json_object_set_new(seg, "description", json_string(o.description)) != 0)
        || (json_object_get(seg, "constraints") == NULL
            && json_object_set_new(seg, "constraints", json_array()) != 0)
        || json_object_set_new(seg, "name", json_string(name)) != 0) {
        json_decref(seg);
        return failf("out of memory");
    }
    char err[256];
    if (tm_segment_check(seg, err, sizeof err) != 0) {
        json_decref(seg);
        return failf("%s: %s", file, err);
    }
    json_t *d = json_object_get(seg, "description");
    if (d && !tm_text_valid(json_string_value(d), json_string_length(d))) {
        json_decref(seg);
        return failf("%s: description: must be UTF-8 text without control characters", file);
    }
    json_t *put = json_deep_copy(seg);
    tmctl_resp r;
    int created = 0;
    if (put == NULL || json_object_del(put, "name") != 0) {
        rc = failf("out of memory");
    } else {
        rc = upsert(targeting_base, "/segments", name, put, seg, what, &r, &created);
    }
    json_decref(put);
    json_decref(seg);
    if (rc == EXIT_OK) {
        rc = r.json ? print_json(r.json) : failf("%s: the answer is not JSON", what);
        tmctl_resp_free(&r);
    }
    return rc;
}

/* ---- eval ---- */

static int cmd_eval(const char *flag)
{
    json_t *ctx;
    if (o.context) {
        json_error_t e;
        ctx = json_loads(o.context, JSON_REJECT_DUPLICATES, &e);
        if (!json_is_object(ctx)) {
            json_decref(ctx);
            return usage("--context must be a JSON object, e.g. '{\"country\":\"BR\"}'%s%s",
                         e.text[0] ? ": " : "", e.text);
        }
    } else {
        ctx = json_object();
    }
    if (ctx == NULL || (o.user && json_object_set_new(ctx, "targetingKey", json_string(o.user)) != 0)) {
        json_decref(ctx);
        return failf("out of memory");
    }
    json_t *body = json_pack("{s:o}", "context", ctx);
    if (body == NULL) {
        return failf("out of memory");
    }
    char what[160];
    snprintf(what, sizeof what, "eval \"%s\"", flag);
    tmctl_resp r;
    int rc = call("POST", mkurl(eval_base, "/ofrep/v1/evaluate/flags", flag), body, 200, what, &r);
    json_decref(body);
    if (rc == EXIT_OK) {
        rc = r.json ? print_json(r.json) : failf("%s: the answer is not JSON", what);
        tmctl_resp_free(&r);
    }
    return rc;
}

/* ---- export / import ---- */

/* The three lists; EXIT_OK with them set (decref them), else EXIT_API. */
static int fetch_all(json_t **flags, json_t **segs, json_t **rules)
{
    const char *bases[] = { flags_base, targeting_base, targeting_base };
    const char *paths[] = { "/flags", "/segments", "/rules" };
    json_t **outs[] = { flags, segs, rules };
    for (int i = 0; i < 3; i++) {
        *outs[i] = NULL;
    }
    for (int i = 0; i < 3; i++) {
        tmctl_resp r;
        char what[64];
        snprintf(what, sizeof what, "GET %s", paths[i]);
        int rc = call("GET", mkurl(bases[i], paths[i], NULL), NULL, 200, what, &r);
        if (rc == EXIT_OK && !json_is_array(r.json)) {
            tmctl_resp_free(&r);
            rc = failf("%s: the answer is not a JSON array", what);
        }
        if (rc != EXIT_OK) {
            for (int k = 0; k < i; k++) {
                json_decref(*outs[k]);
                *outs[k] = NULL;
            }
            return rc;
        }
        *outs[i] = json_incref(r.json);
        tmctl_resp_free(&r);
    }
    return EXIT_OK;
}

static int cmd_export(void)
{
    json_t *flags, *segs, *rules;
    int rc = fetch_all(&flags, &segs, &rules);
    if (rc != EXIT_OK) {
        return rc;
    }
    char err[256];
    json_t *doc = tmctl_doc_from_rows(flags, segs, rules, err, sizeof err);
    json_decref(flags);
    json_decref(segs);
    json_decref(rules);
    if (doc == NULL) {
        return failf("export: %s", err);
    }
    rc = print_json(doc);
    json_decref(doc);
    return rc;
}

/* The element of a row array whose key member is name. */
static json_t *find_row(const json_t *rows, const char *key, const char *name)
{
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        const char *n = json_string_value(json_object_get(r, key));
        if (n && strcmp(n, name) == 0) {
            return r;
        }
    }
    return NULL;
}

typedef struct {
    const char *kind;        /* "segment", "flag", "rule" */
    const char *base, *coll, *key;
    const char *const *compared;   /* members that must be the same */
} kind_t;

/* What an import did, for its summary, and where it stopped if it did. */
typedef struct {
    int counts[3][3];        /* per kind: created, updated, unchanged */
    int kind;                /* the kind it stopped in, -1: it did not stop */
    size_t at;               /* the entry it stopped at */
    const char *name;
    int no_answer;           /* that entry's write got no answer */
} import_run;

static void on_interrupt(int sig)
{
    (void) sig;
    tmctl_http_interrupted = 1;
}

/* Creates or updates every entry of want that differs from the server. */
static int apply_kind(const kind_t *k, int kind, const json_t *want, const json_t *have,
                      import_run *run)
{
    size_t i;
    json_t *w;
    int *counts = run->counts[kind];
    json_array_foreach(want, i, w) {
        const char *name = json_string_value(json_object_get(w, k->key));
        const json_t *h = find_row(have, k->key, name);
        int same = h != NULL;
        for (const char *const *m = k->compared; same && *m; m++) {
            json_t *wv = json_object_get(w, *m), *hv = json_object_get(h, *m);
            /* a member the file leaves out (client_visible in a file older
             * than it) is not changed; the server leaves out a false
             * client_visible */
            same = wv == NULL || (hv ? tmctl_same(wv, hv) : json_is_false(wv));
        }
        if (same) {
            counts[2]++;
            continue;
        }
        run->kind = kind;
        run->at = i;
        run->name = name;
        if (tmctl_http_interrupted) {
            return EXIT_API;
        }
        char what[160];
        snprintf(what, sizeof what, "%s \"%s\"", k->kind, name);
        json_t *put = json_deep_copy(w);
        if (put == NULL || json_object_del(put, k->key) != 0) {
            json_decref(put);
            return failf("out of memory");
        }
        tmctl_resp r;
        int created = 0;
        int rc = upsert(k->base, k->coll, name, put, w, what, &r, &created);
        json_decref(put);
        if (rc != EXIT_OK) {
            run->no_answer = created < 0;
            return rc;
        }
        tmctl_resp_free(&r);
        counts[created ? 0 : 1]++;
        /* flushed line by line, so that what is printed is what was done
         * even if tmctl is killed */
        if (printf("%s %s \"%s\"\n", created ? "created" : "updated", k->kind, name) < 0
            || fflush(stdout) != 0) {
            run->kind = -1;   /* it was changed: no summary could be exact */
            return failf("cannot write the output");
        }
    }
    run->kind = -1;
    return EXIT_OK;
}

/* On stderr: where an import stopped, what it changed before, what it did
 * not reach. */
static void import_stopped(const import_run *run, const json_t *const want[3])
{
    static const char *const kinds[] = { "segment", "flag", "rule" };
    static const char *const plural[] = { "segments", "flags", "rules" };
    const char *how = run->no_answer ? "got no answer for"
                      : tmctl_http_interrupted ? "interrupted at" : "stopped at";
    fprintf(stderr, "tmctl: import %s %s \"%s\": %s\n", how, kinds[run->kind], run->name,
            run->no_answer ? "it may or may not have been changed" : "it is unchanged");
    fprintf(stderr, "tmctl: changed before that (each printed above):");
    for (int i = 0; i < 3; i++) {
        fprintf(stderr, "%s %s %d created, %d updated", i ? ";" : "", plural[i],
                run->counts[i][0], run->counts[i][1]);
    }
    fprintf(stderr, "\ntmctl: not reached:");
    for (int i = run->kind; i < 3; i++) {
        size_t left = json_array_size(want[i]) - (i == run->kind ? run->at + 1 : 0);
        fprintf(stderr, "%s %zu %s", i == run->kind ? "" : ",", left, plural[i]);
    }
    fprintf(stderr, " after it; the same import again applies what is left (what is equal"
            " already is not written again)\n");
}

static int apply(const json_t *doc)
{
    static const char *const seg_cmp[] = { "description", "constraints", NULL };
    static const char *const flag_cmp[] = { "description", "is_enabled", "client_visible",
                                             NULL };
    static const char *const rule_cmp[] = { "is_enabled", "rules", NULL };
    const kind_t kinds[] = {
        { "segment", targeting_base, "/segments", "name", seg_cmp },
        { "flag", flags_base, "/flags", "name", flag_cmp },
        { "rule", targeting_base, "/rules", "flag_name", rule_cmp },
    };
    const char *members[] = { "segments", "flags", "rules" };
    /* Ctrl-C ends the import between two requests, with its summary; a
     * second one ends it at once */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sa.sa_flags = SA_RESETHAND;
    if (sigemptyset(&sa.sa_mask) != 0 || sigaction(SIGINT, &sa, NULL) != 0
        || sigaction(SIGTERM, &sa, NULL) != 0) {
        return failf("cannot handle signals: %s", strerror(errno));
    }
    json_t *flags, *segs, *rules;
    int rc = fetch_all(&flags, &segs, &rules);
    if (rc != EXIT_OK) {
        fprintf(stderr, "tmctl: import %s before any change\n",
                tmctl_http_interrupted ? "interrupted" : "stopped");
        return rc;
    }
    const json_t *have[] = { segs, flags, rules };
    const json_t *want[3];
    import_run run = { .kind = -1 };
    for (int i = 0; i < 3 && rc == EXIT_OK; i++) {
        want[i] = json_object_get(doc, members[i]);
        rc = apply_kind(&kinds[i], i, want[i], have[i], &run);
    }
    json_decref(flags);
    json_decref(segs);
    json_decref(rules);
    if (rc != EXIT_OK) {
        if (run.kind >= 0) {
            for (int i = run.kind + 1; i < 3; i++) {
                want[i] = json_object_get(doc, members[i]);
            }
            import_stopped(&run, want);
        }
        return rc;
    }
    for (int i = 0; i < 3; i++) {
        printf("%s: %d created, %d updated, %d unchanged\n", members[i], run.counts[i][0],
               run.counts[i][1], run.counts[i][2]);
    }
    return EXIT_OK;
}

static int cmd_import(int unleash, const char *file)
{
    int rc;
    json_t *in = read_json(file, &rc);
    if (in == NULL) {
        return rc;
    }
    char err[512];
    json_t *doc = unleash ? tmctl_unleash_convert(in, o.skip_unknown, err, sizeof err)
                          : tmctl_doc_normalize(in, err, sizeof err);
    json_decref(in);
    if (doc == NULL) {
        return failf("%s: %s (nothing was changed)", file, err);
    }
    if (o.dry_run) {
        rc = print_json(doc);
    } else {
        rc = need_key();
        if (rc == EXIT_OK) {
            rc = tmctl_http_init(o.key, o.timeout_s, o.retries_n) == 0 ? apply(doc) : EXIT_API;
        }
    }
    json_decref(doc);
    return rc;
}

static int cmd_validate(void)
{
    tmctl_resp r;
    int rc = call("GET", mkurl(auth_base, "/validate", NULL), NULL, 200, "validate", &r);
    if (rc == EXIT_OK) {
        printf("the API key is valid\n");
        tmctl_resp_free(&r);
    }
    return rc;
}

/* ---- dispatch ---- */

typedef struct {
    const char *group, *verb;   /* verb NULL: the group is the command */
    int nargs;                  /* positional arguments after the command */
    unsigned allowed;           /* O_* options it takes */
    const char *args;           /* for messages */
} command;

static const command commands[] = {
    { "flags", "list", 0, 0, "" },
    { "flags", "get", 1, 0, "NAME" },
    { "flags", "create", 1, O_DESC | O_ENABLE, "NAME [--description TEXT] [--enabled|--disabled]" },
    { "flags", "update", 1, O_DESC | O_ENABLE, "NAME [--description TEXT] [--enabled|--disabled]" },
    { "flags", "enable", 1, 0, "NAME" },
    { "flags", "disable", 1, 0, "NAME" },
    { "flags", "delete", 1, 0, "NAME" },
    { "rules", "list", 0, 0, "" },
    { "rules", "get", 1, 0, "FLAG" },
    { "rules", "set", 2, O_ENABLE, "FLAG FILE [--enabled|--disabled]" },
    { "rules", "enable", 1, 0, "FLAG" },
    { "rules", "disable", 1, 0, "FLAG" },
    { "rules", "delete", 1, 0, "FLAG" },
    { "segments", "list", 0, 0, "" },
    { "segments", "get", 1, 0, "NAME" },
    { "segments", "set", 2, O_DESC, "NAME FILE [--description TEXT]" },
    { "segments", "delete", 1, 0, "NAME" },
    { "eval", NULL, 1, O_USER | O_CONTEXT, "FLAG [--user ID] [--context JSON]" },
    { "export", NULL, 0, 0, "" },
    { "import", "unleash", 1, O_DRY | O_SKIP, "FILE [--dry-run] [--skip-unknown]" },
    { "import", NULL, 1, O_DRY, "FILE [--dry-run]" },
    { "validate", NULL, 0, 0, "" },
    { "env", "list", 0, 0, "" },
    { "env", "create", 1, 0, "NAME" },
    { "env", "delete", 1, O_CONFIRM, "NAME [--confirm]" },
    { "promote", NULL, 1, O_FROMTO, "FLAG --from ENV --to ENV" },
    { "keys", "list", 0, 0, "" },
    { "keys", "create", 1, O_SCOPE, "NAME [--scope admin|readonly|server|client] [--environment ENV]" },
    { "keys", "revoke", 1, 0, "ID" },
    { "usage", NULL, 1, O_FROMTO | O_GRAN,
      "FLAG [--from DATE] [--to DATE] [--granularity hour|day] [--environment ENV]" },
    { "stale", NULL, 0, O_DAYS, "[--days N] [--environment ENV]" },
    { "audit", NULL, 0, O_AUDIT | O_AUDITQ | O_LIMIT | O_SERVICE | O_JSON,
      "[--service flags|targeting|auth] [--kind KIND]"
      " [--name NAME] [--actor KEY] [--since TIME] [--until TIME] [--limit N] [--json]" },
    { "history", NULL, 1, O_AUDITQ | O_LIMIT | O_JSON,
      "FLAG [--since TIME] [--until TIME] [--limit N] [--json]" },
    { "webhooks", "list", 0, O_SERVICE | O_JSON, "[--service S] [--json]" },
    { "webhooks", "add", 1, O_SERVICE | O_HOOK, "URL --secret SECRET [--kinds LIST]"
      " [--environments LIST] [--format json|slack] [--service S]" },
    { "webhooks", "update", 1, O_SERVICE | O_HOOK, "ID [--endpoint URL] [--secret SECRET]"
      " [--kinds LIST] [--environments LIST] [--format json|slack] [--service S]" },
    { "webhooks", "remove", 1, O_SERVICE, "ID [--service S]" },
    { "webhooks", "ping", 1, O_SERVICE, "ID [--service S]" },
    { "webhooks", "deliveries", 1, O_SERVICE | O_LIMIT | O_JSON,
      "ID [--limit N] [--json] [--service S]" },
    { "webhooks", "redeliver", 2, O_SERVICE, "ID DELIVERY_ID [--service S]" },
};

/* ---- who changed what (tmctl_audit.c) ---- */

/* --service: the base of the service named (default flags), or NULL. */
static const char *service_base(void)
{
    if (o.service == NULL || strcmp(o.service, "flags") == 0) return flags_base;
    if (strcmp(o.service, "targeting") == 0) return targeting_base;
    if (strcmp(o.service, "auth") == 0) return auth_base;
    return NULL;
}

static int run_audit(const command *c, const char *a0)
{
    int rc;
    char *end;
    long limit = o.limit ? strtol(o.limit, &end, 10) : 100;
    if (o.limit && (*end != '\0' || limit < 1 || limit > 1000000)) {
        return usage("--limit must be a number from 1 to 1000000");
    }
    const char *base = service_base();
    if (base == NULL) {
        return usage("--service must be flags, targeting or auth");
    }
    if (strcmp(c->group, "history") == 0 && (rc = check_name(a0, "flag")) != EXIT_OK) {
        return rc;
    }
    if ((rc = need_key()) != EXIT_OK) {
        return rc;
    }
    if (tmctl_http_init(o.key, o.timeout_s, o.retries_n) != 0) {
        return EXIT_API;
    }
    tmctl_audit_query q = {
        .kind = o.kind, .name = o.name, .actor = o.actor, .environment = o.environment,
        .since = o.since, .until = o.until, .limit = limit, .json = o.json,
    };
    if (strcmp(c->group, "history") == 0) {
        return tmctl_history(flags_base, targeting_base, a0, &q) ? EXIT_API : EXIT_OK;
    }
    return tmctl_audit(base, &q) ? EXIT_API : EXIT_OK;
}

/* ---- webhooks (tmctl_webhooks.c) ---- */

static int run_webhooks(const command *c, const char *a0, const char *a1)
{
    char *end;
    long limit = o.limit ? strtol(o.limit, &end, 10) : 100;
    if (o.limit && (*end != '\0' || limit < 1 || limit > 100)) {
        return usage("--limit must be a number from 1 to 100 (the service keeps the last 100)");
    }
    const char *base = service_base();
    if (base == NULL) {
        return usage("--service must be flags, targeting or auth");
    }
    const char *secret = env_or(o.secret, "TOGGLEMASTER_WEBHOOK_SECRET");
    if (strcmp(c->verb, "add") == 0 && secret == NULL) {
        return usage("webhooks add needs a secret: --secret or TOGGLEMASTER_WEBHOOK_SECRET");
    }
    /* The auth service also takes its master key for these routes. */
    const char *key = o.key;
    if (key == NULL && base == auth_base) {
        key = env_or(o.master_key, "TOGGLEMASTER_MASTER_KEY");
    }
    if (key == NULL) {
        return need_key();
    }
    if (tmctl_http_init(key, o.timeout_s, o.retries_n) != 0) {
        return EXIT_API;
    }
    tmctl_webhooks_opts w = {
        .base = base, .verb = c->verb, .arg = a0, .delivery = a1, .url = o.endpoint,
        .secret = secret, .kinds = o.kinds, .environments = o.environments,
        .format = o.format, .limit = limit, .json = o.json,
    };
    return tmctl_webhooks(&w);
}

/* ---- environments, promotion, keys (docs/environments.md) ---- */

static int print_answer(const char *method, const char *url, const json_t *body, long want,
                        const char *what)
{
    tmctl_resp r;
    int rc = call(method, url, body, want, what, &r);
    if (rc == EXIT_OK) {
        rc = r.json ? print_json(r.json) : failf("%s: the answer is not JSON", what);
        tmctl_resp_free(&r);
    }
    return rc;
}

static int cmd_env(const char *verb, const char *name)
{
    char what[160];
    snprintf(what, sizeof what, "environment \"%s\"", name ? name : "");
    if (strcmp(verb, "list") == 0) {
        return show(mkurl(flags_base, "/environments", NULL), "environments list");
    }
    if (strcmp(verb, "create") == 0) {
        json_t *body = json_pack("{s:s}", "name", name);
        int rc = body ? print_answer("POST", mkurl(flags_base, "/environments", NULL), body, 201,
                                     what) : failf("out of memory");
        json_decref(body);
        return rc;
    }
    /* delete: a non-empty environment goes only with --confirm */
    char path[256], done[160];
    snprintf(path, sizeof path, "/environments/%s%s%s", name, o.confirm ? "?confirm=" : "",
             o.confirm ? name : "");
    snprintf(done, sizeof done, "deleted environment \"%s\"", name);
    return delete_one(mkurl(flags_base, path, NULL), what, done);
}

static int cmd_promote(const char *flag)
{
    if (o.from == NULL || o.to == NULL) {
        return usage("usage: tmctl promote FLAG --from ENV --to ENV");
    }
    if (!tm_env_name_valid(o.from, strlen(o.from)) || !tm_env_name_valid(o.to, strlen(o.to))) {
        return usage("--from and --to must be environment names: 1 to %d characters: "
                     TM_NAME_CHARSET, TM_NAME_MAX);
    }
    char path[256], what[160];
    snprintf(path, sizeof path, "/flags/%s/promote", flag);
    snprintf(what, sizeof what, "promote \"%s\" from %s to %s", flag, o.from, o.to);
    json_t *body = json_pack("{s:s,s:s}", "from", o.from, "to", o.to);
    int rc = body ? print_answer("POST", mkurl(flags_base, path, NULL), body, 200, what)
                  : failf("out of memory");
    json_decref(body);
    return rc;
}

/* keys go through the auth service with the master key. */
static int cmd_keys(const char *verb, const char *arg)
{
    if (strcmp(verb, "list") == 0) {
        return show(mkurl(auth_base, "/admin/keys", NULL), "keys list");
    }
    if (strcmp(verb, "revoke") == 0) {
        char done[160];
        snprintf(done, sizeof done, "revoked key %s", arg);
        return delete_one(mkurl(auth_base, "/admin/keys", arg), "revoke", done);
    }
    json_t *body = json_pack("{s:s}", "name", arg);
    if (body == NULL || (o.scope && json_object_set_new(body, "scope", json_string(o.scope)) != 0)
        || (o.environment
            && json_object_set_new(body, "environment", json_string(o.environment)) != 0)) {
        json_decref(body);
        return failf("out of memory");
    }
    int rc = print_answer("POST", mkurl(auth_base, "/admin/keys", NULL), body, 201, "create key");
    json_decref(body);
    return rc;
}

static int run_environments(const command *c, const char *a0)
{
    int rc;
    const char *key = o.key;
    if (strcmp(c->group, "keys") == 0) {
        key = env_or(o.master_key, "TOGGLEMASTER_MASTER_KEY");
        if (key == NULL) {
            return usage("keys need the master key: set TOGGLEMASTER_MASTER_KEY or pass --master-key");
        }
        if (strcmp(c->verb, "revoke") == 0 && strspn(a0, "0123456789") != strlen(a0)) {
            return usage("key ids are numbers (tmctl keys list shows them)");
        }
    } else if ((rc = need_key()) != EXIT_OK) {
        return rc;
    } else if (c->nargs && strcmp(c->group, "env") == 0 && !tm_env_name_valid(a0, strlen(a0))) {
        return usage("environment \"%.100s\": names are 1 to %d characters: " TM_NAME_CHARSET
                     ", not \"" TM_ENV_ALL "\"", a0, TM_NAME_MAX);
    } else if (strcmp(c->group, "promote") == 0 && (rc = check_name(a0, "flag")) != EXIT_OK) {
        return rc;
    }
    if (tmctl_http_init(key, o.timeout_s, o.retries_n) != 0) {
        return EXIT_API;
    }
    if (strcmp(c->group, "env") == 0) return cmd_env(c->verb, a0);
    if (strcmp(c->group, "promote") == 0) return cmd_promote(a0);
    return cmd_keys(c->verb, a0);
}

static int run(void)
{
    if (o.help) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (o.npos == 0) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const command *c = NULL;
    int group_known = 0;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0] && !c; i++) {
        const command *k = &commands[i];
        if (strcmp(k->group, o.pos[0]) != 0) {
            continue;
        }
        group_known = 1;
        if (k->verb == NULL || (o.npos > 1 && strcmp(k->verb, o.pos[1]) == 0)) {
            c = k;
        }
    }
    if (c == NULL) {
        if (group_known) {
            return usage(o.npos > 1 ? "unknown %s command \"%s\"" : "%s needs a command%s",
                         o.pos[0], o.npos > 1 ? o.pos[1] : "");
        }
        return usage("unknown command \"%s\"", o.pos[0]);
    }
    int first = c->verb ? 2 : 1;
    const char *a0 = first < o.npos ? o.pos[first] : NULL;
    const char *a1 = first + 1 < o.npos ? o.pos[first + 1] : NULL;
    char full[64];
    snprintf(full, sizeof full, "%s%s%s", c->group, c->verb ? " " : "", c->verb ? c->verb : "");
    if (o.npos - first != c->nargs) {
        return usage("usage: tmctl %s %s", full, c->args);
    }
    unsigned extra = o.given & ~c->allowed;
    if (extra) {
        static const char *const names[] = { "--description", "--enabled/--disabled", "--user",
                                             "--context", "--dry-run", "--skip-unknown",
                                             "--from/--to", "--scope", "--confirm",
                                             "--granularity", "--days",
                                             "--kind/--name/--actor", "--since/--until",
                                             "--limit", "--service", "--json",
                                             "--secret/--kinds/--environments/--format/--endpoint" };
        int b = 0;
        while (!(extra & (1u << b))) b++;
        return usage("%s does not take %s; usage: tmctl %s %s", full, names[b], full, c->args);
    }
    o.key = env_or(o.key, "TOGGLEMASTER_API_KEY");
    if (o.key && strpbrk(o.key, "\r\n\t ") != NULL) {
        return usage("the API key holds white space or a line break");
    }
    char *end = NULL;
    o.timeout_s = o.timeout ? strtol(o.timeout, &end, 10) : 30;
    if (o.timeout && (*end != '\0' || o.timeout_s < 1 || o.timeout_s > 3600)) {
        return usage("--timeout must be a number of seconds from 1 to 3600");
    }
    long retries = o.retries ? strtol(o.retries, &end, 10) : 6;
    if (o.retries && (end == o.retries || *end != '\0' || retries < 0 || retries > 20)) {
        return usage("--retries must be a number from 0 to 20");
    }
    o.retries_n = (int) retries;
    int rc = resolve_urls();
    if (rc != EXIT_OK) {
        return rc;
    }
    o.environment = env_or(o.environment, "TOGGLEMASTER_ENVIRONMENT");
    if (o.environment && !tm_env_name_valid(o.environment, strlen(o.environment))) {
        return usage("--environment \"%.100s\": environment names are 1 to %d characters: "
                     TM_NAME_CHARSET, o.environment, TM_NAME_MAX);
    }
    if (strcmp(c->group, "audit") == 0 || strcmp(c->group, "history") == 0) {
        return run_audit(c, a0);
    }
    if (strcmp(c->group, "webhooks") == 0) {
        return run_webhooks(c, a0, a1);
    }
    if (strcmp(c->group, "env") == 0 || strcmp(c->group, "promote") == 0
        || strcmp(c->group, "keys") == 0) {
        return run_environments(c, a0);
    }
    /* names on the command line (files are read later) */
    const char *named = (strcmp(c->group, "import") && strcmp(c->group, "export")
                         && strcmp(c->group, "validate") && c->nargs) ? a0 : NULL;
    if (named && (rc = check_name(named, strcmp(c->group, "segments") == 0 ? "segment" : "flag")) != EXIT_OK) {
        return rc;
    }
    if (strcmp(c->group, "import") == 0) {
        return cmd_import(c->verb != NULL, a0);   /* needs no key for --dry-run */
    }
    if (strcmp(c->group, "eval") != 0 && (rc = need_key()) != EXIT_OK) {
        return rc;
    }
    if (tmctl_http_init(o.key, o.timeout_s, o.retries_n) != 0) {
        return EXIT_API;
    }
    if (strcmp(c->group, "flags") == 0) return cmd_flags(c->verb, a0);
    if (strcmp(c->group, "rules") == 0) return cmd_rules(c->verb, a0, a1);
    if (strcmp(c->group, "segments") == 0) return cmd_segments(c->verb, a0, a1);
    if (strcmp(c->group, "eval") == 0) return cmd_eval(a0);
    if (strcmp(c->group, "export") == 0) return cmd_export();
    tmctl_usage_opts u = { .gateway = o.url, .analytics = o.analytics_url,
                           .environment = o.environment,
                           .from = o.from, .to = o.to, .granularity = o.granularity,
                           .days = o.days };
    if (strcmp(c->group, "usage") == 0) return tmctl_usage(&u, a0);
    if (strcmp(c->group, "stale") == 0) return tmctl_stale(&u);
    return cmd_validate();
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv);
    if (rc == EXIT_OK) {
        rc = run();
    }
    tmctl_http_cleanup();
    if (fflush(stdout) != 0 && rc == EXIT_OK) {
        fprintf(stderr, "tmctl: cannot write the output\n");
        rc = EXIT_API;
    }
    return rc;
}
