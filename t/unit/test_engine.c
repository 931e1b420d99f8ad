/* lib/: the strategies engine (tm_evaluate), segments, contexts, MurmurHash3
 * and Unleash's normalizedValue, validation messages, and the original
 * documents unchanged. Expected buckets were computed independently with
 * t/unit/murmur3.py. */
#include "tap.h"
#include "tm_context.h"
#include "tm_hash.h"
#include "tm_rules.h"

#include <ctype.h>
#include <stdlib.h>

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, JSON_DECODE_ANY, &e);
    if (!j) {
        printf("# bad test json: %s (%s)\n", s, e.text);
    }
    return j;
}

static char err[512];

static tm_rule *compile(const char *doc)
{
    json_t *j = J(doc);
    tm_rule *r = tm_rule_compile(j, err, sizeof err);
    if (r == NULL) {
        printf("# compile failed: %s\n#   %s\n", err, doc);
    }
    json_decref(j);
    return r;
}

/* 0 if valid; else -1 with err set. check and compile must agree. */
static int check(const char *doc)
{
    json_t *j = J(doc);
    int rc = tm_rules_check(j, err, sizeof err);
    char err2[512];
    tm_rule *r = tm_rule_compile(j, err2, sizeof err2);
    if ((r != NULL) != (rc == 0) || (r == NULL && strcmp(err, err2) != 0)) {
        printf("# check and compile disagree on %s\n", doc);
        rc = 99;
    }
    tm_rule_free(r);
    json_decref(j);
    return rc;
}

/* ---- a small snapshot: flags and segments the env callbacks resolve ---- */

typedef struct {
    const char *name;
    tm_flag_state state;
    tm_rule *rule;
} test_flag;

static test_flag flags[8];
static size_t nflags;
static tm_segment *segments[8];
static size_t nsegments;
static uint32_t random_value;

static const tm_segment *seg_cb(void *ud, const char *name, size_t len)
{
    (void) ud;
    for (size_t i = 0; i < nsegments; i++) {
        const char *n = tm_segment_name(segments[i]);
        if (strlen(n) == len && memcmp(n, name, len) == 0) {
            return segments[i];
        }
    }
    return NULL;
}

static int flag_cb(void *ud, const char *name, size_t len, tm_flag_view *out)
{
    (void) ud;
    for (size_t i = 0; i < nflags; i++) {
        if (strlen(flags[i].name) == len && memcmp(flags[i].name, name, len) == 0) {
            *out = (tm_flag_view) { flags[i].name, len, flags[i].state,
                                    flags[i].rule != NULL, 1, flags[i].rule };
            return 0;
        }
    }
    return -1;
}

static uint32_t random_cb(void *ud)
{
    (void) ud;
    return random_value;
}

static const tm_eval_env env = { NULL, seg_cb, flag_cb, random_cb };

static void add_flag(const char *name, tm_flag_state st, const char *doc)
{
    flags[nflags++] = (test_flag) { name, st, doc ? compile(doc) : NULL };
}

static void add_segment(const char *doc)
{
    json_t *j = J(doc);
    segments[nsegments] = tm_segment_compile(j, err, sizeof err);
    if (segments[nsegments] == NULL) {
        printf("# segment failed: %s\n", err);
    } else {
        nsegments++;
    }
    json_decref(j);
}

/* Evaluates r as flag `flag` for identity key (NULL: none) and a
 * NULL-terminated list of attribute name, value pairs. */
static tm_eval_result run(const tm_rule *r, const char *flag, const char *key,
                          const char *const *kv)
{
    tm_attr attrs[16];
    size_t n = 0;
    for (; kv && kv[2 * n]; n++) {
        attrs[n] = (tm_attr) { kv[2 * n], strlen(kv[2 * n]),
                               kv[2 * n + 1], strlen(kv[2 * n + 1]) };
    }
    tm_context ctx;
    tm_context_init(&ctx, key, key ? strlen(key) : 0, attrs, n);
    ctx.now_ms = 1714564800000LL;   /* 2024-05-01T12:00:00Z */
    tm_flag_view f = { flag, strlen(flag), TM_FLAG_ON, 1, 1, r };
    tm_eval_result res;
    tm_evaluate(&f, &ctx, &env, &res);
    return res;
}

#define KV(...) ((const char *const[]) { __VA_ARGS__, NULL })

/* One constraint, one attribute: does the strategy match? */
static int con(const char *constraint, const char *name, const char *value)
{
    char doc[1024];
    snprintf(doc, sizeof doc, "{\"strategies\":[{\"constraints\":[%s]}]}", constraint);
    tm_rule *r = compile(doc);
    if (r == NULL) {
        return -1;
    }
    tm_eval_result res = run(r, "f", "u", name ? KV(name, value) : NULL);
    tm_rule_free(r);
    return res.value;
}

static int variant_is(tm_eval_result r, const char *name)
{
    return r.variant && strcmp(r.variant, name) == 0 && strlen(name) == r.variant_len;
}

static void test_hash(void)
{
    /* Reference MurmurHash3 x86_32 vectors, and Unleash's cross-client
     * normalizedValue checks (node, java and go clients agree). */
    is_int(tm_murmur3_32("", 0, 0), 0, "murmur3 empty seed 0");
    is_int(tm_murmur3_32("", 0, 1), 0x514e28b7, "murmur3 empty seed 1");
    is_int(tm_murmur3_32("test", 4, 0), 0xba6bd213, "murmur3 test");
    is_int(tm_murmur3_32("Hello, world!", 13, 0), 0xc0363e43, "murmur3 Hello, world!");
    is_int(tm_murmur3_32("Hello, world!", 13, 1234), 0xfaf6cdb3, "murmur3 seed 1234");
    is_int(tm_murmur3_32("The quick brown fox jumps over the lazy dog", 43, 0), 0x2e4ff723,
           "murmur3 quick brown fox");
    is_int(tm_murmur3_32("exp:alice", 9, TM_UNLEASH_VARIANT_SEED), 0x5dbfb006,
           "murmur3 variant seed");
    is_int(tm_unleash_normalized("123", 3, "gr1", 3, 100, 0), 73, "normalizedValue(123, gr1) = 73");
    is_int(tm_unleash_normalized("999", 3, "groupX", 6, 100, 0), 25,
           "normalizedValue(999, groupX) = 25");
    is_int(tm_unleash_normalized("alice", 5, "g", 1, 1000, TM_UNLEASH_VARIANT_SEED), 50,
           "normalizedVariantValue(alice, g, 1000) = 50");

    /* The pieces "<group>" ":" "<id>" hashed in one go, for every split. */
    char joined[64], id[32], group[32];
    int same = 1;
    for (size_t gl = 0; gl < 9; gl++) {
        for (size_t il = 0; il < 9; il++) {
            for (size_t i = 0; i < gl; i++) {
                group[i] = (char) ('a' + i);
            }
            for (size_t i = 0; i < il; i++) {
                id[i] = (char) ('0' + i);
            }
            memcpy(joined, group, gl);
            joined[gl] = ':';
            memcpy(joined + gl + 1, id, il);
            uint32_t want = tm_murmur3_32(joined, gl + il + 1, 7) % 1000 + 1;
            same &= tm_unleash_normalized(id, il, group, gl, 1000, 7) == want;
        }
    }
    ok(same, "normalized value streams across block boundaries");
}

static void test_original_documents(void)
{
    tm_rule *p = compile("{\"type\":\"PERCENTAGE\",\"value\":37}");
    tm_eval_result r = run(p, "new-checkout", "user1", NULL);
    ok(r.value && r.reason == TM_REASON_SPLIT, "PERCENTAGE: sha1 bucket 36 < 37 via tm_evaluate");
    ok(p->type == TM_RULE_PERCENTAGE && p->percentage == 37, "PERCENTAGE fields as before");
    int agree = 1;
    char user[16];
    for (int i = 0; i < 200; i++) {
        snprintf(user, sizeof user, "u%d", i);
        tm_decision d = tm_decide(TM_FLAG_ON, 1, 1, p, user, strlen(user), "f", 1);
        tm_eval_result e = run(p, "f", user, NULL);
        agree &= d.value == e.value && d.value == (tm_percentage_bucket(user, strlen(user),
                                                                        "f", 1) < 37);
    }
    ok(agree, "PERCENTAGE: tm_evaluate == tm_decide == sha1 bucket for 200 users");
    tm_rule_free(p);

    tm_rule *u = compile("{\"type\":\"USER_LIST\",\"values\":[\"bob\",\"alice\"]}");
    ok(u->type == TM_RULE_USER_LIST && u->nusers == 2, "USER_LIST fields as before");
    r = run(u, "f", "alice", NULL);
    ok(r.value && r.reason == TM_REASON_TARGETING_MATCH, "USER_LIST listed");
    r = run(u, "f", "carol", NULL);
    ok(!r.value && r.reason == TM_REASON_DEFAULT, "USER_LIST unlisted");
    r = run(u, "f", NULL, KV("userId", "bob"));
    ok(r.value, "USER_LIST: userId stands for a missing identity");
    tm_rule_free(u);

    tm_flag_view f = { "f", 1, TM_FLAG_ON, 1, 1, NULL };
    tm_eval_result e;
    tm_evaluate(&f, NULL, NULL, &e);
    ok(!e.value && e.reason == TM_REASON_ERROR && e.error, "unusable rule: ERROR, false");
    f.state = TM_FLAG_OFF;
    tm_evaluate(&f, NULL, NULL, &e);
    ok(!e.value && e.reason == TM_REASON_DISABLED, "off flag: DISABLED");
    f.state = TM_FLAG_MISSING;
    tm_evaluate(&f, NULL, NULL, &e);
    ok(!e.value && e.reason == TM_REASON_UNKNOWN, "missing flag: UNKNOWN");
    f = (tm_flag_view) { "f", 1, TM_FLAG_ON, 0, 0, NULL };
    tm_evaluate(&f, NULL, NULL, &e);
    ok(e.value && e.reason == TM_REASON_STATIC && e.variant == NULL, "no rule: STATIC");
}

static void test_operators(void)
{
    /* IN / NOT_IN, and Unleash's absent-field rule */
    const char *in = "{\"contextName\":\"country\",\"operator\":\"IN\",\"values\":[\"BR\",\"PT\"]}";
    is_int(con(in, "country", "BR"), 1, "IN listed");
    is_int(con(in, "country", "br"), 0, "IN is case-sensitive");
    is_int(con(in, "country", "US"), 0, "IN unlisted");
    is_int(con(in, NULL, NULL), 0, "IN absent field");
    is_int(con(in, "country", ""), 0, "IN empty value counts as absent");
    const char *notin = "{\"contextName\":\"country\",\"operator\":\"NOT_IN\",\"values\":[\"BR\"]}";
    is_int(con(notin, "country", "US"), 1, "NOT_IN unlisted");
    is_int(con(notin, "country", "BR"), 0, "NOT_IN listed");
    is_int(con(notin, NULL, NULL), 1, "NOT_IN absent field holds");
    is_int(con("{\"contextName\":\"country\",\"operator\":\"IN\",\"values\":[\"br\"],"
               "\"caseInsensitive\":true}", "country", "BR"), 1, "IN caseInsensitive");
    is_int(con("{\"contextName\":\"country\",\"operator\":\"IN\",\"values\":[\"BR\"],"
               "\"inverted\":true}", "country", "BR"), 0, "IN inverted");
    is_int(con("{\"contextName\":\"country\",\"operator\":\"IN\",\"values\":[\"BR\"],"
               "\"inverted\":true}", NULL, NULL), 1, "IN inverted, absent field");
    is_int(con("{\"contextName\":\"country\",\"operator\":\"IN\",\"value\":\"BR\"}",
               "country", "BR"), 1, "IN with a single \"value\"");
    is_int(con("{\"contextName\":\"userId\",\"operator\":\"IN\",\"values\":[\"u\"]}",
               NULL, NULL), 1, "userId falls back to the identity");
    is_int(con("{\"contextName\":\"userId\",\"operator\":\"IN\",\"values\":[\"x\"]}",
               "userId", "x"), 1, "userId attribute wins over the identity");
    is_int(con("{\"contextName\":\"targetingKey\",\"operator\":\"IN\",\"values\":[\"u\"]}",
               NULL, NULL), 1, "targetingKey is the identity");

    /* strings */
    const char *sw = "{\"contextName\":\"email\",\"operator\":\"STR_STARTS_WITH\","
                     "\"values\":[\"admin\",\"root\"]}";
    is_int(con(sw, "email", "root@x.io"), 1, "STR_STARTS_WITH second value");
    is_int(con(sw, "email", "Admin@x.io"), 0, "STR_STARTS_WITH case-sensitive");
    is_int(con("{\"contextName\":\"email\",\"operator\":\"STR_STARTS_WITH\",\"values\":[\"ADMIN\"],"
               "\"caseInsensitive\":true}", "email", "admin@x.io"), 1,
           "STR_STARTS_WITH caseInsensitive");
    const char *ew = "{\"contextName\":\"email\",\"operator\":\"STR_ENDS_WITH\","
                     "\"values\":[\"@example.com\"]}";
    is_int(con(ew, "email", "a@example.com"), 1, "STR_ENDS_WITH");
    is_int(con(ew, "email", "a@example.co"), 0, "STR_ENDS_WITH no");
    is_int(con(ew, "email", "com"), 0, "STR_ENDS_WITH value longer than input");
    is_int(con("{\"contextName\":\"email\",\"operator\":\"STR_ENDS_WITH\",\"values\":[\"@EXAMPLE.COM\"],"
               "\"caseInsensitive\":true}", "email", "a@Example.com"), 1,
           "STR_ENDS_WITH caseInsensitive");
    const char *ct = "{\"contextName\":\"ua\",\"operator\":\"STR_CONTAINS\",\"values\":[\"Firefox\"]}";
    is_int(con(ct, "ua", "Mozilla/5.0 Firefox/120"), 1, "STR_CONTAINS");
    is_int(con(ct, "ua", "Chrome"), 0, "STR_CONTAINS no");
    is_int(con("{\"contextName\":\"ua\",\"operator\":\"STR_CONTAINS\",\"values\":[\"firefox\"],"
               "\"caseInsensitive\":true,\"inverted\":true}", "ua", "FIREFOX"), 0,
           "STR_CONTAINS caseInsensitive inverted");
    is_int(con(ct, NULL, NULL), 0, "STR_CONTAINS absent field");
    is_int(con("{\"contextName\":\"ua\",\"operator\":\"STR_STARTS_WITH\",\"values\":[\"\"]}",
               "ua", "x"), 0, "an empty string is no pattern (as Unleash)");

    /* numbers */
    struct { const char *op; const char *v; int want; } nums[] = {
        { "NUM_EQ", "5", 1 }, { "NUM_EQ", "5.0", 1 }, { "NUM_EQ", "6", 0 },
        { "NUM_LT", "4.5", 1 }, { "NUM_LT", "5", 0 }, { "NUM_LTE", "5", 1 },
        { "NUM_LTE", "5.01", 0 }, { "NUM_GT", "6", 1 }, { "NUM_GT", "5", 0 },
        { "NUM_GTE", "5", 1 }, { "NUM_GTE", "-7", 0 }, { "NUM_EQ", "five", 0 },
        { "NUM_GT", "1e3", 1 },
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        char c[200];
        snprintf(c, sizeof c, "{\"contextName\":\"n\",\"operator\":\"%s\",\"value\":5}", nums[i].op);
        is_int(con(c, "n", nums[i].v), nums[i].want, "%s %s vs 5", nums[i].op, nums[i].v);
    }
    is_int(con("{\"contextName\":\"n\",\"operator\":\"NUM_GT\",\"value\":\"2.5\",\"values\":[]}",
               "n", "3"), 1, "NUM_GT with a string value (Unleash export shape)");
    is_int(con("{\"contextName\":\"n\",\"operator\":\"NUM_LT\",\"value\":5,\"inverted\":true}",
               "n", "3"), 0, "NUM_LT inverted");

    /* dates: currentTime from the context, else the evaluation clock */
    const char *before = "{\"contextName\":\"currentTime\",\"operator\":\"DATE_BEFORE\","
                         "\"value\":\"2024-06-01T00:00:00Z\"}";
    const char *after = "{\"contextName\":\"currentTime\",\"operator\":\"DATE_AFTER\","
                        "\"value\":\"2024-05-01T11:59:59.999Z\"}";
    is_int(con(before, NULL, NULL), 1, "DATE_BEFORE with the clock (2024-05-01T12Z)");
    is_int(con(after, NULL, NULL), 1, "DATE_AFTER with the clock");
    is_int(con(before, "currentTime", "2024-06-01T02:00:00+02:00"), 0,
           "DATE_BEFORE: equal instant in +02:00 is not before");
    is_int(con(before, "currentTime", "2024-06-01T01:59:59+02:00"), 1,
           "DATE_BEFORE with an offset");
    is_int(con(after, "currentTime", "2024-05-01T11:59:59.999Z"), 0, "DATE_AFTER: equal is not after");
    is_int(con(after, "currentTime", "2024-05-02"), 1, "DATE_AFTER: a date alone is midnight UTC");
    is_int(con(after, "currentTime", "yesterday"), 0, "DATE_AFTER: unparseable context date");
    is_int(con("{\"contextName\":\"signup\",\"operator\":\"DATE_BEFORE\",\"value\":\"2020-01-01\"}",
               "signup", "2019-12-31T23:59:59Z"), 1, "DATE_BEFORE on any attribute");
    is_int(con("{\"contextName\":\"signup\",\"operator\":\"DATE_BEFORE\",\"value\":\"2020-01-01\"}",
               NULL, NULL), 0, "DATE_BEFORE on an absent attribute");
    is_int(con("{\"contextName\":\"currentTime\",\"operator\":\"DATE_BEFORE\",\"value\":\"2024-06-01\","
               "\"inverted\":true}", NULL, NULL), 0, "DATE_BEFORE inverted");

    /* semantic versions, SemVer 2.0.0 precedence */
    static const char *const order[] = {
        "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
        "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0", "1.10.0", "2.0.0",
    };
    size_t n = sizeof order / sizeof order[0];
    int sorted = 1;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            char c[200];
            snprintf(c, sizeof c, "{\"contextName\":\"v\",\"operator\":\"SEMVER_LT\",\"value\":\"%s\"}",
                     order[j]);
            sorted &= con(c, "v", order[i]) == (i < j);
        }
    }
    ok(sorted, "SEMVER_LT orders the SemVer 2.0.0 precedence example (144 pairs)");
    const char *sv = "{\"contextName\":\"appVersion\",\"operator\":\"%s\",\"value\":\"2.3.4\"}";
    struct { const char *op; const char *v; int want; } svs[] = {
        { "SEMVER_EQ", "2.3.4", 1 }, { "SEMVER_EQ", "v2.3.4", 0 }, { "SEMVER_EQ", "2.3.4+build.7", 1 },
        { "SEMVER_EQ", "2.3.4-rc.1", 0 }, { "SEMVER_GT", "2.3.5", 1 }, { "SEMVER_GT", "2.3.4", 0 },
        { "SEMVER_GTE", "2.3.4", 1 }, { "SEMVER_LTE", "2.3.4", 1 }, { "SEMVER_LTE", "2.4.0", 0 },
        { "SEMVER_LT", "2.3", 0 }, { "SEMVER_LT", "01.0.0", 0 }, { "SEMVER_GT", "10.0.0", 1 },
    };
    for (size_t i = 0; i < sizeof svs / sizeof svs[0]; i++) {
        char c[200];
        snprintf(c, sizeof c, sv, svs[i].op);
        is_int(con(c, "appVersion", svs[i].v), svs[i].want, "%s %s vs 2.3.4", svs[i].op, svs[i].v);
    }
    is_int(con("{\"contextName\":\"v\",\"operator\":\"SEMVER_EQ\",\"value\":\"v2.3.4\"}",
               "v", "2.3.4"), 1, "a leading v in the operand is read (not in the value, as Unleash)");

    /* regular expressions, compiled once */
    const char *re = "{\"contextName\":\"path\",\"operator\":\"REGEX\",\"value\":\"^/api/v[0-9]+/\"}";
    is_int(con(re, "path", "/api/v2/users"), 1, "REGEX match");
    is_int(con(re, "path", "/web/api/v2/"), 0, "REGEX anchored");
    is_int(con("{\"contextName\":\"path\",\"operator\":\"REGEX\",\"value\":\"^/API/\","
               "\"caseInsensitive\":true}", "path", "/api/x"), 1, "REGEX caseInsensitive");
    is_int(con("{\"contextName\":\"path\",\"operator\":\"REGEX\",\"value\":\"x$\",\"inverted\":true}",
               "path", "box"), 0, "REGEX inverted");
    {
        /* a value that is not NUL-terminated: "abc" inside "abcx" */
        tm_rule *r = compile("{\"strategies\":[{\"constraints\":[{\"contextName\":\"p\","
                             "\"operator\":\"REGEX\",\"value\":\"c$\"}]}]}");
        tm_attr a = { "p", 1, "abcx", 3 };
        tm_context ctx;
        tm_context_init(&ctx, "u", 1, &a, 1);
        tm_flag_view f = { "f", 1, TM_FLAG_ON, 1, 1, r };
        tm_eval_result res;
        ok(tm_evaluate(&f, &ctx, NULL, &res), "REGEX honours the value's length, no NUL needed");
        tm_rule_free(r);
    }

    /* IP in CIDR */
    const char *ip = "{\"contextName\":\"remoteAddress\",\"operator\":\"IP_IN_CIDR\","
                     "\"values\":[\"10.0.0.0/8\",\"192.168.1.7\",\"2001:db8::/32\"]}";
    is_int(con(ip, "remoteAddress", "10.200.3.4"), 1, "IPv4 in /8");
    is_int(con(ip, "remoteAddress", "11.0.0.1"), 0, "IPv4 outside");
    is_int(con(ip, "remoteAddress", "192.168.1.7"), 1, "IPv4 single address");
    is_int(con(ip, "remoteAddress", "192.168.1.8"), 0, "IPv4 single address, other");
    is_int(con(ip, "remoteAddress", "2001:db8:ffff::1"), 1, "IPv6 in /32");
    is_int(con(ip, "remoteAddress", "2001:db9::1"), 0, "IPv6 outside");
    is_int(con(ip, "remoteAddress", "::ffff:10.1.2.3"), 1, "IPv4-mapped IPv6 matches IPv4 CIDR");
    is_int(con(ip, "remoteAddress", "not-an-ip"), 0, "garbage address");
    is_int(con("{\"contextName\":\"ip\",\"operator\":\"IP_IN_CIDR\",\"values\":[\"172.16.0.0/12\"],"
               "\"inverted\":true}", "ip", "172.31.255.255"), 0, "IP_IN_CIDR inverted");
    is_int(con("{\"contextName\":\"ip\",\"operator\":\"IP_IN_CIDR\",\"values\":[\"0.0.0.0/0\"]}",
               "ip", "8.8.8.8"), 1, "/0 matches every IPv4");
    is_int(con("{\"contextName\":\"ip\",\"operator\":\"IP_IN_CIDR\",\"values\":[\"10.1.2.3/23\"]}",
               "ip", "10.1.3.200"), 1, "host bits in a CIDR are ignored");
}

static void test_strategies(void)
{
    tm_rule *r = compile("{\"strategies\":["
        "{\"name\":\"beta\",\"constraints\":[{\"contextName\":\"plan\",\"operator\":\"IN\",\"values\":[\"beta\"]}]},"
        "{\"disabled\":true},"
        "{\"name\":\"br\",\"constraints\":[{\"contextName\":\"country\",\"operator\":\"IN\",\"values\":[\"BR\"]},"
        "                                  {\"contextName\":\"n\",\"operator\":\"NUM_GT\",\"value\":1}]}]}");
    tm_eval_result e = run(r, "f", "u", KV("plan", "beta", "country", "BR", "n", "2"));
    ok(e.value && e.strategy == 0 && e.reason == TM_REASON_TARGETING_MATCH,
       "first matching strategy wins");
    e = run(r, "f", "u", KV("country", "BR", "n", "2"));
    ok(e.value && e.strategy == 2, "disabled strategy skipped, third matches");
    e = run(r, "f", "u", KV("country", "BR", "n", "1"));
    ok(!e.value && e.strategy == -1 && e.reason == TM_REASON_DEFAULT,
       "all constraints of a strategy must hold");
    ok(r->type == TM_RULE_STRATEGIES, "type STRATEGIES");
    tm_decision d = tm_decide(TM_FLAG_ON, 1, 1, r, "u", 1, "f", 1);
    ok(!d.value && d.reason == TM_REASON_DEFAULT, "tm_decide on a strategies document");
    tm_rule_free(r);

    r = compile("{}");
    e = run(r, "f", "u", NULL);
    ok(e.value && e.reason == TM_REASON_STATIC, "no strategies: on for all");
    tm_rule_free(r);
    r = compile("{\"strategies\":[{}]}");
    e = run(r, "f", "u", NULL);
    ok(e.value && e.reason == TM_REASON_STATIC && e.strategy == 0, "empty strategy matches all");
    tm_rule_free(r);
    r = compile("{\"strategies\":[{\"disabled\":true}]}");
    e = run(r, "f", "u", NULL);
    ok(!e.value && e.reason == TM_REASON_DEFAULT, "only a disabled strategy: off");
    tm_rule_free(r);
}

static void test_rollout(void)
{
    /* normalizedValue(id, "exp"): 1→49, 2→4, alice→85, bob→89, carol→8,
     * dave→43, user-7→29, 42→90; s1→93, BR→81. With group "g": alice→23. */
    tm_rule *r = compile("{\"strategies\":[{\"rollout\":{\"percentage\":50}}]}");
    static const char *const users[] = { "1", "2", "alice", "bob", "carol", "dave", "user-7", "42" };
    static const int want[] = { 1, 1, 0, 0, 1, 1, 1, 0 };
    for (size_t i = 0; i < 8; i++) {
        tm_eval_result e = run(r, "exp", users[i], NULL);
        ok(e.value == want[i] && (!e.value || e.reason == TM_REASON_SPLIT),
           "rollout 50%% on exp: %s %s", users[i], want[i] ? "in" : "out");
    }
    tm_eval_result e = run(r, "exp", NULL, KV("sessionId", "s1"));
    ok(!e.value, "default stickiness falls back to sessionId (93 > 50)");
    tm_rule_free(r);

    r = compile("{\"strategies\":[{\"rollout\":{\"percentage\":85,\"groupId\":\"exp\"}}]}");
    ok(run(r, "other-flag", "alice", NULL).value, "groupId replaces the flag name (85 <= 85)");
    tm_rule_free(r);
    r = compile("{\"strategies\":[{\"rollout\":{\"percentage\":84,\"groupId\":\"exp\"}}]}");
    ok(!run(r, "other-flag", "alice", NULL).value, "84 < 85: out");
    tm_rule_free(r);
    r = compile("{\"strategies\":[{\"rollout\":{\"percentage\":73,\"groupId\":\"gr1\"}}]}");
    ok(run(r, "x", "123", NULL).value, "Unleash vector: 123 in gr1 is bucket 73");
    tm_rule_free(r);

    r = compile("{\"strategies\":[{\"rollout\":{\"percentage\":81,\"stickiness\":\"country\"}}]}");
    ok(run(r, "exp", "alice", KV("country", "BR")).value, "custom stickiness: BR -> 81");
    ok(!run(r, "exp", "alice", NULL).value, "custom stickiness absent: off");
    tm_rule_free(r);
    r = compile("{\"strategies\":[{\"rollout\":{\"percentage\":80,\"stickiness\":\"country\"}}]}");
    ok(!run(r, "exp", "alice", KV("country", "BR")).value, "custom stickiness: 81 > 80");
    tm_rule_free(r);

    r = compile("{\"strategies\":[{\"rollout\":{\"percentage\":0}}]}");
    ok(!run(r, "exp", "2", NULL).value, "0%% is off for all");
    tm_rule_free(r);
    r = compile("{\"strategies\":[{\"rollout\":{\"percentage\":100}}]}");
    e = run(r, "exp", NULL, NULL);
    ok(e.value && e.reason == TM_REASON_STATIC, "100%% is on for all, even with no identity");
    tm_rule_free(r);

    r = compile("{\"strategies\":[{\"rollout\":{\"percentage\":50,\"stickiness\":\"random\"}}]}");
    random_value = 0;   /* "0" in group exp */
    int a = run(r, "exp", "alice", NULL).value;
    int b = 0;
    for (random_value = 1; random_value < 50 && !b; random_value++) {
        b = run(r, "exp", "alice", NULL).value != a;
    }
    ok(b, "random stickiness draws from env->random");
    tm_rule_free(r);

    r = compile("{\"strategies\":[{\"constraints\":[{\"contextName\":\"plan\",\"operator\":\"IN\","
                "\"values\":[\"pro\"]}],\"rollout\":{\"percentage\":50}}]}");
    ok(run(r, "exp", "carol", KV("plan", "pro")).value, "constraints and rollout: both hold");
    ok(!run(r, "exp", "carol", NULL).value, "constraints and rollout: constraint fails");
    ok(!run(r, "exp", "alice", KV("plan", "pro")).value, "constraints and rollout: rollout fails");
    tm_rule_free(r);
}

static void test_variants(void)
{
    /* normalizedValue(id, "exp", 100, 86028157): alice 27, bob 43, carol 30,
     * dave 71, user-7 73, 2 45, 42 96, 1 81. */
    tm_rule *r = compile("{\"variants\":["
        "{\"name\":\"A\",\"weight\":34,\"payload\":{\"type\":\"string\",\"value\":\"blue\"},"
        " \"overrides\":[{\"contextName\":\"userId\",\"values\":[\"1\"]}]},"
        "{\"name\":\"B\",\"weight\":33,\"payload\":{\"type\":\"json\",\"value\":\"{\\\"a\\\": [1, 2]}\"}},"
        "{\"name\":\"C\",\"weight\":33,\"payload\":{\"type\":\"number\",\"value\":\"12.5\"}},"
        "{\"name\":\"Z\",\"weight\":0,\"payload\":{\"type\":\"boolean\",\"value\":true},"
        " \"overrides\":[{\"contextName\":\"tier\",\"values\":[\"gold\"]}]}]}");
    static const char *const users[] = { "alice", "bob", "carol", "dave", "user-7", "2", "42" };
    static const char *const want[] = { "A", "B", "A", "C", "C", "B", "C" };
    for (size_t i = 0; i < 7; i++) {
        tm_eval_result e = run(r, "exp", users[i], NULL);
        ok(e.value && variant_is(e, want[i]) && e.reason == TM_REASON_SPLIT,
           "variant by weight: %s -> %s", users[i], want[i]);
    }
    tm_eval_result e = run(r, "exp", "1", NULL);
    ok(variant_is(e, "A") && e.reason == TM_REASON_TARGETING_MATCH, "override by userId (else C)");
    ok(e.payload_type == TM_PAYLOAD_STRING && strcmp(e.payload, "blue") == 0 && e.payload_len == 4,
       "string payload");
    e = run(r, "exp", "bob", NULL);
    is_str(e.payload, "{\"a\":[1,2]}", "json payload re-encoded compact");
    ok(e.payload_type == TM_PAYLOAD_JSON, "json payload type");
    e = run(r, "exp", "dave", NULL);
    ok(e.payload_type == TM_PAYLOAD_NUMBER && strcmp(e.payload, "12.5") == 0, "number payload");
    e = run(r, "exp", "alice", KV("tier", "gold"));
    ok(variant_is(e, "Z") && e.payload_type == TM_PAYLOAD_BOOLEAN && strcmp(e.payload, "true") == 0,
       "zero-weight variant reached by override; boolean payload");
    e = run(r, "exp", NULL, KV("sessionId", "alice"));
    ok(variant_is(e, "A"), "variant stickiness default: sessionId when no userId");
    e = run(r, "exp", NULL, KV("remoteAddress", "bob"));
    ok(variant_is(e, "B"), "variant stickiness default: then remoteAddress");
    tm_rule_free(r);

    r = compile("{\"variants\":[{\"name\":\"A\",\"weight\":50,\"stickiness\":\"org\"},"
                "{\"name\":\"B\",\"weight\":50}]}");
    ok(variant_is(run(r, "exp", "zzz", KV("org", "alice")), "A"), "variants[0].stickiness: org alice -> 27");
    ok(variant_is(run(r, "exp", "zzz", KV("org", "dave")), "B"), "variants[0].stickiness: org dave -> 71");
    tm_rule_free(r);

    /* strategy variants: group = rollout groupId; normalizedValue(id, "g",
     * 1000, seed): alice 50, bob 986, carol 80 */
    r = compile("{\"strategies\":[{\"constraints\":[{\"contextName\":\"plan\",\"operator\":\"IN\","
                "\"values\":[\"pro\"]}],\"rollout\":{\"percentage\":100,\"groupId\":\"g\"},"
                "\"variants\":[{\"name\":\"X\",\"weight\":100},{\"name\":\"Y\",\"weight\":900}]},"
                "{}],"
                "\"variants\":[{\"name\":\"flagwide\",\"weight\":1}]}");
    e = run(r, "exp", "alice", KV("plan", "pro"));
    ok(variant_is(e, "X") && e.strategy == 0 && e.reason == TM_REASON_SPLIT, "strategy variant alice -> X");
    ok(variant_is(run(r, "exp", "bob", KV("plan", "pro")), "Y"), "strategy variant bob -> Y");
    ok(variant_is(run(r, "exp", "carol", KV("plan", "pro")), "X"), "strategy variant carol -> X");
    e = run(r, "exp", "bob", NULL);
    ok(variant_is(e, "flagwide") && e.strategy == 1 && e.reason == TM_REASON_STATIC,
       "a strategy without variants uses the flag's (one variant: not a split)");
    tm_rule_free(r);

    r = compile("{\"strategies\":[{\"constraints\":[{\"contextName\":\"plan\",\"operator\":\"IN\","
                "\"values\":[\"pro\"]}]}],\"variants\":[{\"name\":\"V\",\"weight\":1}]}");
    e = run(r, "exp", "bob", NULL);
    ok(!e.value && e.variant == NULL && e.payload == NULL, "no match: no variant");
    tm_rule_free(r);
}

static void test_segments_and_dependencies(void)
{
    add_segment("{\"name\":\"beta-testers\",\"constraints\":["
                "{\"contextName\":\"email\",\"operator\":\"STR_ENDS_WITH\",\"values\":[\"@corp.io\"]}]}");
    add_segment("{\"name\":\"brazil\",\"description\":\"BR users\",\"constraints\":["
                "{\"contextName\":\"country\",\"operator\":\"IN\",\"values\":[\"BR\"]}]}");
    ok(nsegments == 2, "segments compile");
    tm_attr a = { "country", 7, "BR", 2 };
    tm_context ctx;
    tm_context_init(&ctx, "u", 1, &a, 1);
    ok(tm_segment_match(segments[1], &ctx) && !tm_segment_match(segments[0], &ctx),
       "tm_segment_match");

    tm_rule *r = compile("{\"strategies\":[{\"segments\":[\"beta-testers\",\"brazil\"]},"
                         "{\"segments\":[\"nope\"]}]}");
    tm_eval_result e = run(r, "f", "u", KV("email", "a@corp.io", "country", "BR"));
    ok(e.value && e.strategy == 0 && e.reason == TM_REASON_TARGETING_MATCH, "all segments hold");
    e = run(r, "f", "u", KV("email", "a@corp.io"));
    ok(!e.value, "one segment fails");
    size_t len = 0;
    const char *s0 = tm_rule_segment_ref(r, 0, &len);
    ok(s0 && len == 12 && memcmp(s0, "beta-testers", 12) == 0, "segment refs listed");
    ok(tm_rule_segment_ref(r, 2, &len) && !tm_rule_segment_ref(r, 3, &len), "three distinct refs");
    tm_flag_view f = { "f", 1, TM_FLAG_ON, 1, 1, r };
    tm_evaluate(&f, &ctx, NULL, &e);
    ok(!e.value, "without an env, segments are unknown: no match");
    tm_rule_free(r);

    add_flag("parent-on", TM_FLAG_ON, NULL);
    add_flag("parent-off", TM_FLAG_OFF, NULL);
    add_flag("parent-variants", TM_FLAG_ON,
             "{\"variants\":[{\"name\":\"A\",\"weight\":34},{\"name\":\"B\",\"weight\":66}]}");
    add_flag("cycle-a", TM_FLAG_ON, "{\"dependencies\":[{\"feature\":\"cycle-b\"}]}");
    add_flag("cycle-b", TM_FLAG_ON, "{\"dependencies\":[{\"feature\":\"cycle-a\"}]}");
    add_flag("grandparent-chain", TM_FLAG_ON, "{\"dependencies\":[{\"feature\":\"parent-on\"}]}");

    r = compile("{\"dependencies\":[{\"feature\":\"parent-on\"}]}");
    e = run(r, "child", "u", NULL);
    ok(e.value && e.reason == TM_REASON_STATIC, "parent on: child on");
    len = 0;
    ok(tm_rule_dependency_ref(r, 0, &len) && len == 9, "dependency refs listed");
    tm_rule_free(r);
    r = compile("{\"dependencies\":[{\"feature\":\"parent-off\"}]}");
    e = run(r, "child", "u", NULL);
    ok(!e.value && e.reason == TM_REASON_DEFAULT, "parent off: child off");
    tm_rule_free(r);
    r = compile("{\"dependencies\":[{\"feature\":\"parent-off\",\"enabled\":false}]}");
    ok(run(r, "child", "u", NULL).value, "enabled:false wants the parent off");
    tm_rule_free(r);
    r = compile("{\"dependencies\":[{\"feature\":\"ghost\"}]}");
    ok(!run(r, "child", "u", NULL).value, "unknown parent: off");
    tm_rule_free(r);
    /* parent-variants: alice 27 -> A, bob 43 -> B (group "parent-variants"
     * changes the buckets, so the expectation is by evaluation) */
    tm_flag_view pv;
    flag_cb(NULL, "parent-variants", 15, &pv);
    tm_eval_result pa;
    tm_evaluate(&pv, NULL, &env, &pa);
    r = compile("{\"dependencies\":[{\"feature\":\"parent-variants\",\"variants\":[\"A\"]}]}");
    int agree = 1, seen_a = 0, seen_b = 0;
    char user[16];
    for (int i = 0; i < 50; i++) {
        snprintf(user, sizeof user, "user%d", i);
        tm_eval_result p = run(flags[2].rule, "parent-variants", user, NULL);
        tm_eval_result c = run(r, "child", user, NULL);
        int is_a = variant_is(p, "A");
        seen_a |= is_a;
        seen_b |= !is_a;
        agree &= c.value == is_a;
    }
    ok(agree && seen_a && seen_b, "dependency on parent variants (50 users, both variants seen)");
    tm_rule_free(r);
    /* one level, as Unleash: a parent with dependencies never satisfies */
    r = compile("{\"dependencies\":[{\"feature\":\"cycle-a\"}]}");
    e = run(r, "child", "u", NULL);
    ok(!e.value && e.reason == TM_REASON_DEFAULT, "dependency on a cycle: unmet, DEFAULT");
    tm_rule_free(r);
    r = compile("{\"dependencies\":[{\"feature\":\"grandparent-chain\"}]}");
    e = run(r, "child", "u", NULL);
    ok(!e.value && e.reason == TM_REASON_DEFAULT, "two-level chain: unmet (transitive)");
    tm_rule_free(r);
    r = compile("{\"dependencies\":[{\"feature\":\"parent-on\",\"variants\":[\"disabled\"]}]}");
    ok(run(r, "child", "u", NULL).value, "parent on without variants has the \"disabled\" variant");
    tm_rule_free(r);
    r = compile("{\"dependencies\":[{\"feature\":\"parent-off\",\"variants\":[\"disabled\"]}]}");
    ok(!run(r, "child", "u", NULL).value, "... but a parent off never satisfies");
    tm_rule_free(r);
    r = compile("{\"dependencies\":[{\"feature\":\"parent-on\"}],"
                "\"strategies\":[{\"constraints\":[{\"contextName\":\"x\",\"operator\":\"IN\",\"values\":[\"1\"]}]}]}");
    ok(run(r, "child", "u", KV("x", "1")).value && !run(r, "child", "u", NULL).value,
       "dependencies then strategies");
    tm_rule_free(r);
}

static void test_validation(void)
{
    struct { const char *doc; const char *msg; } bad[] = {
        { "{\"strategies\":[{},{\"constraints\":[{\"contextName\":\"a\",\"operator\":\"FOO\",\"values\":[]}]}]}",
          "strategies[1].constraints[0].operator: unknown operator \"FOO\"; accepted: IN, NOT_IN, " },
        { "{\"strategies\":{}}", "strategies: must be an array of strategy objects" },
        { "{\"strategy\":[]}", "rules: unknown field \"strategy\"; accepted: strategies, variants, dependencies" },
        { "{\"strategies\":[{\"rollout\":{\"percentage\":101}}]}",
          "strategies[0].rollout.percentage: must be a number from 0 to 100" },
        { "{\"strategies\":[{\"rollout\":{\"percent\":1}}]}",
          "strategies[0].rollout: unknown field \"percent\"" },
        { "{\"strategies\":[{\"constraints\":[{\"operator\":\"IN\",\"values\":[\"x\"]}]}]}",
          "strategies[0].constraints[0].contextName: required: a non-empty string" },
        { "{\"strategies\":[{\"constraints\":[{\"contextName\":\"a\",\"operator\":\"IN\",\"values\":[\"x\",3]}]}]}",
          "strategies[0].constraints[0].values[1]: must be a string" },
        { "{\"strategies\":[{\"constraints\":[{\"contextName\":\"a\",\"operator\":\"IN\"}]}]}",
          "strategies[0].constraints[0]: IN needs \"values\"" },
        { "{\"strategies\":[{\"constraints\":[{\"contextName\":\"a\",\"operator\":\"NUM_GT\",\"value\":\"x\"}]}]}",
          "strategies[0].constraints[0].value: NUM_GT needs a number, got \"x\"" },
        { "{\"strategies\":[{\"constraints\":[{\"contextName\":\"a\",\"operator\":\"NUM_GT\"}]}]}",
          "strategies[0].constraints[0]: NUM_GT needs \"value\"" },
        { "{\"strategies\":[{\"constraints\":[{\"contextName\":\"a\",\"operator\":\"DATE_AFTER\",\"value\":\"2024-02-30\"}]}]}",
          "strategies[0].constraints[0].value: \"2024-02-30\" is not an RFC 3339 date" },
        { "{\"strategies\":[{\"constraints\":[{\"contextName\":\"a\",\"operator\":\"SEMVER_EQ\",\"value\":\"1.2\"}]}]}",
          "strategies[0].constraints[0].value: \"1.2\" is not a semantic version" },
        { "{\"strategies\":[{\"constraints\":[{\"contextName\":\"a\",\"operator\":\"REGEX\",\"value\":\"(\"}]}]}",
          "strategies[0].constraints[0].value: invalid regular expression" },
        { "{\"strategies\":[{\"constraints\":[{\"contextName\":\"a\",\"operator\":\"IP_IN_CIDR\",\"values\":[\"10.0.0.0/8\",\"10.0.0.0/33\"]}]}]}",
          "strategies[0].constraints[0].values[1]: \"10.0.0.0/33\" is not an IPv4 or IPv6 address" },
        { "{\"strategies\":[{\"constraints\":[{\"contextName\":\"a\",\"operator\":\"IN\",\"values\":[],\"inverted\":1}]}]}",
          "strategies[0].constraints[0].inverted: must be true or false" },
        { "{\"strategies\":[{\"constraints\":[{\"contextName\":\"a\",\"operator\":\"IN\",\"values\":[],\"x\":1}]}]}",
          "strategies[0].constraints[0]: unknown field \"x\"; accepted: contextName, operator" },
        { "{\"strategies\":[{\"segments\":[\"a b\"]}]}",
          "strategies[0].segments[0]: segment names are 1..100 bytes of" },
        { "{\"variants\":[{\"name\":\"a\",\"weight\":1},{\"name\":\"a\",\"weight\":1}]}",
          "variants[1].name: duplicate variant name \"a\"" },
        { "{\"variants\":[{\"name\":\"a\",\"weight\":-1}]}",
          "variants[0].weight: must be an integer from 0 to 1000000" },
        { "{\"variants\":[{\"name\":\"a\",\"weight\":1,\"payload\":{\"type\":\"xml\",\"value\":\"<a/>\"}}]}",
          "variants[0].payload.type: unknown payload type \"xml\"" },
        { "{\"variants\":[{\"name\":\"a\",\"weight\":1,\"payload\":{\"type\":\"json\",\"value\":\"{oops\"}}]}",
          "variants[0].payload.value: not valid JSON text" },
        { "{\"variants\":[{\"name\":\"a\",\"weight\":1,\"payload\":{\"type\":\"number\",\"value\":\"\\\"x\\\"\"}}]}",
          "variants[0].payload.value: must be a number" },
        { "{\"strategies\":[{\"variants\":[{\"name\":\"a\",\"weight\":1,\"overrides\":[{\"contextName\":\"u\"}]}]}]}",
          "strategies[0].variants[0].overrides[0]: required: \"values\"" },
        { "{\"dependencies\":[{\"feature\":\"bad name\"}]}",
          "dependencies[0].feature: required: a flag name" },
        { "{\"dependencies\":[{\"feature\":\"p\",\"enabled\":false,\"variants\":[\"a\"]}]}",
          "dependencies[0].variants: only meaningful with \"enabled\": true" },
        { "{\"type\":\"GEO\"}", "unknown rule type \"GEO\"; accepted types: PERCENTAGE, USER_LIST" },
        { "[]", "rules must be a JSON object" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = check(bad[i].doc);
        ok(rc == -1 && strncmp(err, bad[i].msg, strlen(bad[i].msg)) == 0,
           "rejected with path: %s", err);
        if (rc != -1 || strncmp(err, bad[i].msg, strlen(bad[i].msg)) != 0) {
            printf("#   want prefix: %s\n", bad[i].msg);
        }
    }
    static const char *const good[] = {
        "{}",
        "{\"strategies\":[]}",
        "{\"strategies\":[{\"name\":\"flexibleRollout\",\"constraints\":[{\"contextName\":\"appName\","
        "\"operator\":\"IN\",\"values\":[\"web\"],\"value\":\"\",\"inverted\":false,"
        "\"caseInsensitive\":false}],\"rollout\":{\"percentage\":25,\"stickiness\":\"sessionId\","
        "\"groupId\":\"g\"}}]}",
        "{\"variants\":[{\"name\":\"a\",\"weight\":500,\"weightType\":\"variable\",\"stickiness\":\"default\","
        "\"payload\":{\"type\":\"json\",\"value\":{\"native\":true}}}]}",
        "{\"dependencies\":[{\"feature\":\"p\",\"enabled\":true,\"variants\":[\"a\",\"b\"]}]}",
        "{\"type\":\"PERCENTAGE\",\"value\":50}",
        /* the example in docs/rules.md */
        "{\"dependencies\":[{\"feature\":\"new-checkout\",\"enabled\":true,\"variants\":[\"v2\"]}],\"strategies\":[{\"name\":\"beta testers in Brazil\",\"segments\":[\"beta-testers\"],\"constraints\":[{\"contextName\":\"country\",\"operator\":\"IN\",\"values\":[\"BR\",\"PT\"]},{\"contextName\":\"appVersion\",\"operator\":\"SEMVER_GTE\",\"value\":\"2.3.0\"}],\"rollout\":{\"percentage\":50,\"stickiness\":\"default\",\"groupId\":\"checkout\"},\"variants\":[{\"name\":\"fast\",\"weight\":1000}]},{\"constraints\":[{\"contextName\":\"email\",\"operator\":\"STR_ENDS_WITH\",\"values\":[\"@corp.io\"],\"caseInsensitive\":true}]}],\"variants\":[{\"name\":\"blue\",\"weight\":500,\"payload\":{\"type\":\"string\",\"value\":\"#00f\"},\"overrides\":[{\"contextName\":\"userId\",\"values\":[\"alice\",\"bob\"]}]},{\"name\":\"green\",\"weight\":500,\"payload\":{\"type\":\"json\",\"value\":\"{\\\"color\\\":\\\"#0f0\\\"}\"}}]}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ok(check(good[i]) == 0, "accepted: %.60s", good[i]);
        if (check(good[i]) != 0) {
            printf("#   %s\n", err);
        }
    }

    json_t *j = J("{\"name\":\"s\",\"constraints\":[{\"contextName\":\"a\",\"operator\":\"NOPE\"}]}");
    ok(tm_segment_check(j, err, sizeof err) == -1
       && strncmp(err, "constraints[0].operator: unknown operator \"NOPE\"", 48) == 0,
       "segment error path: %s", err);
    json_decref(j);
    j = J("{\"constraints\":[]}");
    ok(tm_segment_check(j, err, sizeof err) == -1 && strncmp(err, "name: required", 14) == 0,
       "segment needs a name: %s", err);
    json_decref(j);
    j = J("{\"name\":\"s\",\"rules\":[]}");
    ok(tm_segment_check(j, err, sizeof err) == -1
       && strncmp(err, "segment: unknown field \"rules\"", 30) == 0, "segment unknown field: %s", err);
    json_decref(j);
}

static void test_context(void)
{
    json_t *j = J("{\"targetingKey\":\"tk\",\"userId\":\"uid\",\"n\":42,\"r\":0.1,\"b\":true,"
                  "\"nil\":null,\"arr\":[1],\"properties\":{\"plan\":\"pro\",\"seats\":5}}");
    tm_context c;
    int rc = tm_context_from_json(&c, j, err, sizeof err);   /* ok() evaluates twice */
    ok(rc == 0, "context from JSON");
    ok(c.key && c.key_len == 2 && memcmp(c.key, "tk", 2) == 0, "targetingKey is the identity");
    const tm_attr *a = tm_context_get(&c, "n", 1);
    ok(a && a->value_len == 2 && memcmp(a->value, "42", 2) == 0, "integer as text");
    a = tm_context_get(&c, "r", 1);
    ok(a && strcmp(a->value, "0.1") == 0, "real as its shortest text");
    a = tm_context_get(&c, "b", 1);
    ok(a && strcmp(a->value, "true") == 0, "boolean as text");
    ok(!tm_context_get(&c, "nil", 3) && !tm_context_get(&c, "arr", 3), "null and arrays skipped");
    a = tm_context_get(&c, "plan", 4);
    ok(a && strcmp(a->value, "pro") == 0, "properties flattened");

    tm_rule *r = compile("{\"strategies\":[{\"constraints\":["
                         "{\"contextName\":\"userId\",\"operator\":\"IN\",\"values\":[\"uid\"]},"
                         "{\"contextName\":\"seats\",\"operator\":\"NUM_GTE\",\"value\":5}]}]}");
    tm_flag_view f = { "f", 1, TM_FLAG_ON, 1, 1, r };
    tm_eval_result e;
    ok(tm_evaluate(&f, &c, NULL, &e), "evaluate with a JSON context");
    tm_rule_free(r);
    tm_context_free(&c);
    json_decref(j);

    j = J("{\"userId\":\"only\"}");
    rc = tm_context_from_json(&c, j, err, sizeof err);
    ok(rc == 0 && c.key_len == 4, "userId as identity");
    tm_context_free(&c);
    json_decref(j);
    j = J("[1]");
    rc = tm_context_from_json(&c, j, err, sizeof err);
    ok(rc == -1 && strstr(err, "object"),
       "context must be an object: %s", err);
    json_decref(j);
    char big[5000];
    memset(big, 'x', sizeof big);
    j = json_object();
    json_object_set_new(j, "huge", json_stringn(big, sizeof big));
    rc = tm_context_from_json(&c, j, err, sizeof err);
    ok(rc == -1 && strstr(err, "context.huge"),
       "oversized value: %s", err);
    json_decref(j);
    j = json_object();
    for (int i = 0; i < TM_CONTEXT_MAX_ATTRS + 1; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        json_object_set_new(j, k, json_string("v"));
    }
    rc = tm_context_from_json(&c, j, err, sizeof err);
    ok(rc == -1 && strstr(err, "256"),
       "too many attributes: %s", err);
    json_decref(j);
}

/* What Unleash's client specification asks of the engine. */
static void test_unleash_semantics(void)
{
    /* a constraint marked "invalid" never holds: present, absent, inverted */
    const char *bad = "{\"contextName\":\"x\",\"operator\":\"NOPE\",\"value\":\"1\","
                      "\"invalid\":\"unknown operator\"}";
    is_int(con(bad, "x", "1"), 0, "invalid constraint: value present -> no");
    is_int(con(bad, NULL, NULL), 0, "invalid constraint: value absent -> no");
    is_int(con("{\"contextName\":\"x\",\"operator\":\"NOT_IN\",\"values\":[\"a\"],\"inverted\":true,"
               "\"invalid\":\"kept as it came\"}", "x", "b"), 0,
           "invalid constraint: inverted -> still no");
    is_int(con("{\"contextName\":\"x\",\"operator\":\"REGEX\",\"value\":\"(a\","
               "\"invalid\":\"bad pattern\"}", "x", "a"), 0, "invalid regex kept, never holds");
    char err[256];
    json_t *doc = json_loads("{\"strategies\":[{\"constraints\":[{\"contextName\":\"x\","
                             "\"operator\":\"IN\",\"values\":[\"a\"],\"invalid\":\"\"}]}]}", 0, NULL);
    ok(doc && tm_rules_check(doc, err, sizeof err) != 0
       && strstr(err, "constraints[0].invalid: must be a non-empty string"),
       "\"invalid\" must say why (%s)", err);
    json_decref(doc);
    doc = json_loads("{\"strategies\":[{\"constraints\":[{\"contextName\":\"x\","
                     "\"operator\":\"NOPE\",\"values\":[\"a\"]}]}]}", 0, NULL);
    ok(doc && tm_rules_check(doc, err, sizeof err) != 0 && strstr(err, "unknown operator"),
       "without \"invalid\" an unknown operator is still refused");
    json_decref(doc);

    /* IN_CIDR is IP_IN_CIDR */
    const char *cidr = "{\"contextName\":\"remoteAddress\",\"operator\":\"IN_CIDR\","
                       "\"values\":[\"10.0.0.0/8\",\"2001:db8::/32\"]}";
    is_int(con(cidr, "remoteAddress", "10.1.2.3"), 1, "IN_CIDR v4");
    is_int(con(cidr, "remoteAddress", "2001:db8::7"), 1, "IN_CIDR v6");
    is_int(con(cidr, "remoteAddress", "11.0.0.1"), 0, "IN_CIDR outside");

    /* a rollout whose stickiness field is absent is off, even at 100 % */
    tm_rule *r = compile("{\"strategies\":[{\"rollout\":{\"percentage\":100,"
                         "\"stickiness\":\"accountId\"}}]}");
    ok(!run(r, "f", "u", NULL).value, "100 %%, stickiness field absent -> off");
    ok(run(r, "f", "u", KV("accountId", "a1")).value, "100 %%, stickiness field given -> on");
    tm_rule_free(r);
    r = compile("{\"strategies\":[{\"rollout\":{\"percentage\":100,\"stickiness\":\"default\"}}]}");
    ok(run(r, "f", NULL, NULL).value, "100 %%, default stickiness, no identity -> on");
    tm_rule_free(r);
}

/* ---- STR_ tries against a naive search, and the evaluation budget ---- */

static int naive(const char *op, const char **needles, size_t n, const char *v, int icase)
{
    size_t vl = strlen(v);
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(needles[i]);
        for (size_t at = 0; nl && at + nl <= vl; at++) {
            if ((strcmp(op, "STR_STARTS_WITH") == 0 && at > 0)
                || (strcmp(op, "STR_ENDS_WITH") == 0 && at + nl != vl)) {
                continue;
            }
            size_t j = 0;
            while (j < nl && (icase ? tolower((unsigned char) v[at + j])
                                      == tolower((unsigned char) needles[i][j])
                                    : v[at + j] == needles[i][j])) {
                j++;
            }
            if (j == nl) {
                return 1;
            }
        }
    }
    return 0;
}

static void random_text(char *buf, size_t len, const char *alphabet)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = alphabet[(size_t) rand() % strlen(alphabet)];
    }
    buf[len] = '\0';
}

static void test_tries(void)
{
    static const char *const ops[] = { "STR_STARTS_WITH", "STR_ENDS_WITH", "STR_CONTAINS" };
    int wrong = 0, cases = 0;
    srand(11);
    for (int round = 0; round < 300; round++) {
        char needles[6][8], value[40], doc[512];
        const char *np[6];
        size_t n = 1 + (size_t) rand() % 6, off;
        int icase = rand() % 2;
        const char *op = ops[round % 3];
        off = (size_t) snprintf(doc, sizeof doc, "{\"strategies\":[{\"constraints\":[{"
                                "\"contextName\":\"v\",\"operator\":\"%s\",\"caseInsensitive\":%s,"
                                "\"values\":[", op, icase ? "true" : "false");
        for (size_t i = 0; i < n; i++) {
            random_text(needles[i], (size_t) rand() % 5, "abA");
            np[i] = needles[i];
            off += (size_t) snprintf(doc + off, sizeof doc - off, "%s\"%s\"", i ? "," : "",
                                     needles[i]);
        }
        snprintf(doc + off, sizeof doc - off, "]}]}]}");
        tm_rule *r = compile(doc);
        for (int k = 0; r && k < 8; k++, cases++) {
            random_text(value, 1 + (size_t) rand() % 30, "abaBa");
            int got = run(r, "f", "u", KV("v", value)).value;
            if (got != naive(op, np, n, value, icase)) {
                printf("# %s: %s on \"%s\" gave %d\n", op, doc, value, got);
                wrong++;
            }
        }
        tm_rule_free(r);
    }
    ok(wrong == 0 && cases == 2400, "STR_ tries agree with a naive search (%d cases)", cases);
    is_int(con("{\"contextName\":\"v\",\"operator\":\"STR_CONTAINS\",\"values\":"
               "[\"he\",\"she\",\"his\",\"hers\"]}", "v", "ushers"), 1, "Aho-Corasick: ushers");
    is_int(con("{\"contextName\":\"v\",\"operator\":\"STR_CONTAINS\",\"values\":"
               "[\"abcd\",\"bce\"]}", "v", "abcbcd"), 0, "Aho-Corasick: no false positive");
    is_int(con("{\"contextName\":\"v\",\"operator\":\"STR_CONTAINS\",\"values\":"
               "[\"abcd\",\"bcx\",\"cz\"]}", "v", "abcz"), 1, "Aho-Corasick: through two links");
}

/* A document of n copies of one constraint (64 per strategy, rollout 0 so
 * that every strategy runs). */
static tm_rule *copies(const char *one, size_t n, char *why, size_t whylen)
{
    size_t cap = n * (strlen(one) + 64) + 64, off = 0;
    char *doc = malloc(cap);
    if (doc == NULL) {
        return NULL;
    }
    off += (size_t) snprintf(doc, cap, "{\"strategies\":[");
    for (size_t i = 0; i < n; i++) {
        off += (size_t) snprintf(doc + off, cap - off, "%s%s",
                                 i % 64 ? "," : i ? "]},{\"rollout\":{\"percentage\":0},"
                                 "\"constraints\":[" : "{\"rollout\":{\"percentage\":0},"
                                 "\"constraints\":[", one);
    }
    snprintf(doc + off, cap - off, "]}]}");
    json_t *j = J(doc);
    tm_rule *r = tm_rule_compile(j, why, whylen);
    json_decref(j);
    free(doc);
    return r;
}

static void test_budget(void)
{
    char *v4k = malloc(TM_CONTEXT_MAX_VALUE_LEN + 1), *v1k = malloc(1025), why[512];
    if (v4k == NULL || v1k == NULL) {
        ok(0, "out of memory");
        free(v4k);
        free(v1k);
        return;
    }
    memset(v4k, 'a', TM_CONTEXT_MAX_VALUE_LEN);
    v4k[TM_CONTEXT_MAX_VALUE_LEN] = '\0';
    memcpy(v1k, v4k, 1023);
    strcpy(v1k + 1023, "!");

    /* many cheap constraints over a long value: stopped, ERROR, counted */
    tm_rule *r = copies("{\"contextName\":\"v\",\"operator\":\"STR_CONTAINS\",\"values\":[\"b\"],"
                        "\"inverted\":true}", 800, why, sizeof why);
    unsigned long before = tm_rules_over_budget();
    tm_eval_result res = run(r, "f", "u", KV("v", v4k));
    ok(!res.value && res.reason == TM_REASON_ERROR && res.error
       && strcmp(res.error, "over the evaluation budget") == 0,
       "800 STR_CONTAINS over 4 KiB: ERROR, over the evaluation budget");
    ok(res.cost <= TM_EVAL_BUDGET && res.cost > TM_EVAL_BUDGET / 2, "it used the budget, no more "
       "(%lu units)", res.cost);
    is_int((int) (tm_rules_over_budget() - before), 1, "counted once");
    res = run(r, "f", "u", KV("v", "short"));
    ok(res.reason == TM_REASON_DEFAULT, "the same document on a short value: DEFAULT");
    tm_rule_free(r);

    /* REGEX: one search at its whole limit fits, a second one does not */
    char bomb[160];
    snprintf(bomb, sizeof bomb, "{\"contextName\":\"v\",\"operator\":\"REGEX\",\"value\":"
             "\"(?:a|b)*?a*+c|!!\",\"inverted\":true}");
    r = copies(bomb, 1, why, sizeof why);
    res = run(r, "f", "u", KV("v", v1k));
    ok(res.reason == TM_REASON_DEFAULT, "one REGEX bomb: its limit, no match (inverted: "
       "holds), rollout 0: DEFAULT");
    tm_rule_free(r);
    r = copies(bomb, 64, why, sizeof why);
    ok(r != NULL, "64 REGEX constraints: within the document bound");
    res = run(r, "f", "u", KV("v", v1k));
    ok(res.reason == TM_REASON_ERROR && res.cost <= TM_EVAL_BUDGET, "64 REGEX bombs: ERROR "
       "within the budget (%lu units)", res.cost);
    res = run(r, "f", "u", KV("v", "xyz"));
    ok(res.reason == TM_REASON_DEFAULT, "64 REGEX on a short value: evaluated in full");
    tm_rule_free(r);
    r = copies(bomb, 800, why, sizeof why);
    ok(r == NULL && strstr(why, "could cost up to") && strstr(why, "evaluation budgets"),
       "800 REGEX constraints: refused (%s)", why);
    tm_rule_free(r);
    free(v1k);
    free(v4k);
}

/* run(), paid from a request's budget rb. */
static tm_eval_result run_in(const tm_rule *r, tm_request_budget *rb, const char *v)
{
    tm_attr a = { "v", 1, v, strlen(v) };
    tm_context ctx;
    tm_context_init(&ctx, "u", 1, &a, 1);
    ctx.now_ms = 1714564800000LL;
    tm_flag_view f = { "f", 1, TM_FLAG_ON, r != NULL, 1, r };
    tm_eval_result res;
    tm_evaluate_in(&f, &ctx, &env, rb, &res);
    return res;
}

/* The evaluations of one request share a budget (bulk OFREP): past it, the
 * flags with rules are refused, the others still answer, and it is the
 * same flags each time. */
static void test_request_budget(void)
{
    char *v4k = malloc(TM_CONTEXT_MAX_VALUE_LEN + 1), why[512];
    if (v4k == NULL) {
        ok(0, "out of memory");
        return;
    }
    memset(v4k, 'a', TM_CONTEXT_MAX_VALUE_LEN);
    v4k[TM_CONTEXT_MAX_VALUE_LEN] = '\0';
    /* about half an evaluation budget over a 4 KiB value */
    tm_rule *heavy = copies("{\"contextName\":\"v\",\"operator\":\"STR_CONTAINS\","
                            "\"values\":[\"b\"],\"inverted\":true}", 18, why, sizeof why);
    tm_rule *over = copies("{\"contextName\":\"v\",\"operator\":\"STR_CONTAINS\","
                           "\"values\":[\"b\"],\"inverted\":true}", 800, why, sizeof why);
    if (heavy == NULL || over == NULL) {
        ok(0, "documents: %s", why);
        tm_rule_free(heavy);
        tm_rule_free(over);
        free(v4k);
        return;
    }
    tm_eval_result alone = run(heavy, "f", "u", KV("v", v4k));
    ok(alone.reason == TM_REASON_DEFAULT && alone.cost > TM_EVAL_BUDGET / 3
       && alone.cost < TM_EVAL_BUDGET / 2, "a flag of 18 STR_CONTAINS over 4 KiB costs "
       "%lu units", alone.cost);

    unsigned long over0 = tm_rules_over_budget(), req0 = tm_rules_over_request_budget();
    int reasons[2][10];
    unsigned long costs[2][10];
    uint64_t spent = 0;
    for (int round = 0; round < 2; round++) {
        tm_request_budget rb;
        tm_request_budget_init(&rb, 2ull * TM_EVAL_BUDGET);
        spent = 0;
        for (int i = 0; i < 10; i++) {
            tm_eval_result res = run_in(heavy, &rb, v4k);
            reasons[round][i] = res.reason;
            costs[round][i] = res.cost;
            spent += res.cost;
            if (round == 0 && res.reason == TM_REASON_ERROR && i < 9) {
                ok(!res.value && res.error && strcmp(res.error, TM_EVAL_OVER_REQUEST_BUDGET) == 0,
                   "flag %d: false, ERROR, %s", i, res.error ? res.error : "(none)");
            }
        }
        if (round == 0) {
            int answered = 0;
            while (answered < 10 && reasons[0][answered] == TM_REASON_DEFAULT) {
                answered++;
            }
            int rest_refused = 1;
            for (int i = answered; i < 10; i++) {
                rest_refused &= reasons[0][i] == TM_REASON_ERROR;
            }
            ok(answered == (int) (2ull * TM_EVAL_BUDGET / alone.cost) && rest_refused,
               "a budget of 2 evaluations: the first %d flags answered, the other %d refused",
               answered, 10 - answered);
            ok(spent <= 2ull * TM_EVAL_BUDGET, "the request spent %llu units, within its budget",
               (unsigned long long) spent);
            is_int((int) rb.refused, 10 - answered, "the request counts its refusals");
            is_int((int) (tm_rules_over_request_budget() - req0), 10 - answered,
                   "tm_rules_over_request_budget() counts them");
            is_int((int) (tm_rules_over_budget() - over0), 0, "not as over their own budget");
            tm_eval_result st = run_in(NULL, &rb, v4k);
            ok(st.value && st.reason == TM_REASON_STATIC && st.cost == 0,
               "past the budget, a flag without a rule still answers (true, STATIC)");
        }
    }
    ok(memcmp(reasons[0], reasons[1], sizeof reasons[0]) == 0
       && memcmp(costs[0], costs[1], sizeof costs[0]) == 0,
       "the same flags, the same context: the same ones refused, at the same costs");

    /* a flag over its own budget stays that, with budget left in the request */
    tm_request_budget rb;
    tm_request_budget_init(&rb, 5ull * TM_EVAL_BUDGET);
    over0 = tm_rules_over_budget();
    req0 = tm_rules_over_request_budget();
    tm_eval_result res = run_in(over, &rb, v4k);
    ok(res.reason == TM_REASON_ERROR && res.error && strcmp(res.error, TM_EVAL_OVER_BUDGET) == 0
       && rb.refused == 0, "a flag over its own budget in a request: %s",
       res.error ? res.error : "(none)");
    ok(rb.left == 5ull * TM_EVAL_BUDGET - res.cost && res.cost <= TM_EVAL_BUDGET,
       "the request paid what it used (%lu units)", res.cost);
    ok(tm_rules_over_budget() - over0 == 1 && tm_rules_over_request_budget() == req0,
       "counted as over its own budget");
    res = run_in(heavy, &rb, "short");
    ok(res.reason == TM_REASON_DEFAULT, "the next flag is evaluated");

    /* a random draw costs the same whatever its length ("7" or "12345") */
    tm_rule *rnd = compile("{\"strategies\":[{\"rollout\":{\"percentage\":50,"
                           "\"stickiness\":\"random\"}}]}");
    random_value = 7;
    tm_eval_result r1 = run(rnd, "f", "u", NULL);
    random_value = 12345;
    tm_eval_result r2 = run(rnd, "f", "u", NULL);
    ok(rnd && r1.cost == r2.cost, "random stickiness: the same cost for draws of 1 and 5 "
       "digits (%lu, %lu units)", r1.cost, r2.cost);
    tm_rule_free(rnd);

    /* an empty budget refuses every rule at once; rb NULL is tm_evaluate */
    tm_request_budget_init(&rb, 0);
    res = run_in(heavy, &rb, "short");
    ok(res.reason == TM_REASON_ERROR && res.cost == 0 && rb.refused == 1,
       "no budget left: refused before it reads anything");
    res = run_in(heavy, NULL, v4k);
    ok(res.reason == TM_REASON_DEFAULT && res.cost == alone.cost, "no request budget: as tm_evaluate");
    tm_rule_free(heavy);
    tm_rule_free(over);
    free(v4k);
}

/* A segment referenced 256 x 32 times is decided once per evaluation. */
static void test_segment_memo(void)
{
    char *doc = malloc(64 * 1024), *v4k = malloc(TM_CONTEXT_MAX_VALUE_LEN + 1);
    if (doc == NULL || v4k == NULL) {
        ok(0, "out of memory");
        free(doc);
        free(v4k);
        return;
    }
    size_t off = (size_t) snprintf(doc, 64 * 1024, "{\"strategies\":[");
    for (int s = 0; s < 256; s++) {
        off += (size_t) snprintf(doc + off, 64 * 1024 - off, "%s{\"segments\":[", s ? "," : "");
        for (int k = 0; k < 32; k++) {
            off += (size_t) snprintf(doc + off, 64 * 1024 - off, "%s\"m\"", k ? "," : "");
        }
        off += (size_t) snprintf(doc + off, 64 * 1024 - off, "]}");
    }
    snprintf(doc + off, 64 * 1024 - off, "]}");
    add_segment("{\"name\":\"m\",\"constraints\":[{\"contextName\":\"v\","
                "\"operator\":\"STR_CONTAINS\",\"values\":[\"b\",\"ab\",\"aab\"]}]}");
    memset(v4k, 'a', TM_CONTEXT_MAX_VALUE_LEN);
    v4k[TM_CONTEXT_MAX_VALUE_LEN] = '\0';
    tm_rule *r = compile(doc);
    tm_eval_result res = run(r, "f", "u", KV("v", v4k));
    ok(res.reason == TM_REASON_DEFAULT && res.cost < 100000,
       "8192 references to one segment: decided once (%lu units)", res.cost);
    v4k[100] = 'b';
    res = run(r, "f", "u", KV("v", v4k));
    ok(res.value && res.strategy == 0, "and it holds when it holds");
    tm_rule_free(r);
    free(v4k);
    free(doc);
}

int main(void)
{
    test_hash();
    test_original_documents();
    test_operators();
    test_strategies();
    test_rollout();
    test_variants();
    test_segments_and_dependencies();
    test_validation();
    test_context();
    test_unleash_semantics();
    test_tries();
    test_budget();
    test_request_budget();
    test_segment_memo();
    for (size_t i = 0; i < nflags; i++) {
        tm_rule_free(flags[i].rule);
    }
    for (size_t i = 0; i < nsegments; i++) {
        tm_segment_free(segments[i]);
    }
    return tap_done();
}
