/* lib/: hashing, names, rule checking and the evaluation decision. */
#include "tap.h"
#include "tm_hash.h"
#include "tm_names.h"
#include "tm_rules.h"

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, JSON_DECODE_ANY, &e);
    if (!j) {
        printf("# bad test json: %s\n", s);
    }
    return j;
}

static int check(const char *doc, char *err, size_t n)
{
    json_t *j = J(doc);
    int rc = tm_rules_check(j, err, n);
    json_decref(j);
    return rc;
}

int main(void)
{
    char hex[65], err[256];

    /* Buckets computed independently with Python's hashlib. */
    is_int(tm_percentage_bucket("user1", 5, "new-checkout", 12), 36, "bucket user1/new-checkout");
    is_int(tm_percentage_bucket("alice", 5, "dark-mode", 9), 22, "bucket alice/dark-mode");
    is_int(tm_percentage_bucket("", 0, "x", 1), 58, "bucket empty user");
    is_int(tm_percentage_bucket("\xc3\xbc", 2, "flag", 4), 77, "bucket UTF-8 user");

    tm_sha256_hex("tm_key_abc", 10, hex);
    is_str(hex, "3b6a7a328a9834b3d9af6ad6d81bd1d7361061e39899907a0e9995fa2d384cca", "sha256 hex");
    ok(tm_consttime_eq("abc", 3, "abc", 3), "consttime equal");
    ok(!tm_consttime_eq("abc", 3, "abd", 3), "consttime differ");
    ok(!tm_consttime_eq("abc", 3, "abcd", 4), "consttime length differs");

    ok(tm_flag_name_valid("new-checkout_v2.beta:x", 22), "name charset");
    ok(!tm_flag_name_valid("", 0), "empty name");
    ok(!tm_flag_name_valid("a b", 3), "space rejected");
    ok(!tm_flag_name_valid("x'; DROP TABLE flags;--", 23), "SQL metacharacters rejected");
    char longname[102];
    memset(longname, 'a', 101);
    longname[101] = 0;
    ok(tm_flag_name_valid(longname, 100), "100 chars ok");
    ok(!tm_flag_name_valid(longname, 101), "101 chars rejected");
    /* Unleash's names: UTF-8 letters, digits, symbols; no spaces or controls */
    static const char hello[] = "Feature.UTF-8.Hell\xc3\xb8_W\xc3\xb8rld";
    static const char emoji[] = "Feature.UTF-8.\xf0\x9f\x98\x8a_\xcf\x86riend_\xe4\xbd\xa0\xe5\xa5\xbd";
    ok(tm_name_valid_unicode(hello, sizeof hello - 1), "unicode name: Hell\xc3\xb8_W\xc3\xb8rld");
    ok(tm_name_valid_unicode(emoji, sizeof emoji - 1), "unicode name: emoji, Greek, CJK");
    ok(!tm_flag_name_valid(hello, sizeof hello - 1), "... not an ASCII name");
    ok(tm_name_valid_unicode("new-checkout_v2.beta:x", 22), "unicode rule keeps the ASCII names");
    ok(!tm_name_valid_unicode("a b", 3), "unicode rule: space rejected");
    ok(!tm_name_valid_unicode("a\xc2\xa0" "b", 4), "unicode rule: no-break space rejected");
    ok(!tm_name_valid_unicode("a\xe2\x80\x8b" "b", 5), "unicode rule: zero-width space rejected");
    ok(!tm_name_valid_unicode("a\xc2\x85" "b", 4), "unicode rule: C1 control rejected");
    ok(!tm_name_valid_unicode("a\xef\xbb\xbf", 4), "unicode rule: BOM rejected");
    ok(!tm_name_valid_unicode("a/b", 3) && !tm_name_valid_unicode("a%b", 3), "unicode rule: '/' '%%' rejected");
    ok(!tm_name_valid_unicode("\xc3(", 2) && !tm_name_valid_unicode("\xc3", 1), "unicode rule: broken UTF-8");
    ok(!tm_name_valid_unicode("\xed\xa0\x80", 3), "unicode rule: surrogate rejected");
    ok(!tm_name_valid_unicode(longname, 101), "unicode rule: 101 bytes rejected");
    ok(!tm_name_valid(hello, sizeof hello - 1), "new names: ASCII by default");
    tm_names_allow_unicode(1);
    ok(tm_name_valid(hello, sizeof hello - 1) && strstr(tm_name_charset(), "UTF-8"),
       "new names: UTF-8 when allowed");
    tm_names_allow_unicode(0);
    ok(tm_text_valid("caf\xc3\xa9 \xf0\x9f\x9a\x80", 10), "valid UTF-8");
    ok(!tm_text_valid("\xc3(", 2), "invalid UTF-8");
    ok(!tm_text_valid("\xed\xa0\x80", 3), "surrogate rejected");
    ok(!tm_text_valid("a\0b", 3), "NUL rejected");

    ok(check("{\"type\":\"PERCENTAGE\",\"value\":50}", err, sizeof err) == 0, "percentage ok");
    ok(check("{\"type\":\"PERCENTAGE\",\"value\":12.5}", err, sizeof err) == 0, "fractional percentage ok");
    ok(check("{\"type\":\"PERCENTAGE\",\"value\":101}", err, sizeof err) != 0, "percentage > 100");
    ok(check("{\"type\":\"PERCENTAGE\",\"value\":-1}", err, sizeof err) != 0, "percentage < 0");
    ok(check("{\"type\":\"PERCENTAGE\",\"value\":\"50\"}", err, sizeof err) != 0, "percentage as string");
    ok(check("{\"type\":\"PERCENTAGE\"}", err, sizeof err) != 0, "percentage missing value");
    ok(check("{\"type\":\"USER_LIST\",\"values\":[\"a\",\"b\"]}", err, sizeof err) == 0, "user list ok");
    ok(check("{\"type\":\"USER_LIST\",\"values\":[\"a\",1]}", err, sizeof err) != 0, "user list non-string");
    ok(check("{\"type\":\"USER_LIST\",\"values\":\"a\"}", err, sizeof err) != 0, "user list not array");
    ok(check("{\"type\":\"GEO\",\"value\":1}", err, sizeof err) != 0, "unknown type");
    ok(strstr(err, "PERCENTAGE") && strstr(err, "USER_LIST"), "error names accepted types: %s", err);
    ok(check("[1]", err, sizeof err) != 0, "array rejected");
    ok(check("{\"type\":\"PERCENTAGE\",\"value\":5,\"x\":1}", err, sizeof err) != 0, "unknown field rejected");

    /* Decision order. */
    tm_decision d;
    d = tm_decide(TM_FLAG_MISSING, 0, 0, NULL, "u", 1, "f", 1);
    ok(!d.value && d.reason == TM_REASON_UNKNOWN, "missing flag false");
    d = tm_decide(TM_FLAG_OFF, 0, 0, NULL, "u", 1, "f", 1);
    ok(!d.value && d.reason == TM_REASON_DISABLED, "off flag false");
    d = tm_decide(TM_FLAG_ON, 0, 0, NULL, "u", 1, "f", 1);
    ok(d.value && d.reason == TM_REASON_STATIC, "no rule true");

    json_t *pj = J("{\"type\":\"PERCENTAGE\",\"value\":37}");
    tm_rule *pr = tm_rule_compile(pj, err, sizeof err);
    ok(pr != NULL, "compile percentage");
    d = tm_decide(TM_FLAG_ON, 1, 0, pr, "user1", 5, "new-checkout", 12);
    ok(d.value && d.reason == TM_REASON_STATIC, "disabled rule true");
    d = tm_decide(TM_FLAG_ON, 1, 1, pr, "user1", 5, "new-checkout", 12);
    ok(d.value && d.reason == TM_REASON_SPLIT, "bucket 36 < 37 true");
    pr->percentage = 36;
    d = tm_decide(TM_FLAG_ON, 1, 1, pr, "user1", 5, "new-checkout", 12);
    ok(!d.value && d.reason == TM_REASON_SPLIT, "bucket 36 < 36 false");
    tm_rule_free(pr);
    json_decref(pj);

    json_t *uj = J("{\"type\":\"USER_LIST\",\"values\":[\"zed\",\"alice\",\"bob\",\"al\"]}");
    tm_rule *ur = tm_rule_compile(uj, err, sizeof err);
    ok(ur != NULL, "compile user list");
    d = tm_decide(TM_FLAG_ON, 1, 1, ur, "alice", 5, "f", 1);
    ok(d.value && d.reason == TM_REASON_TARGETING_MATCH, "listed user true");
    d = tm_decide(TM_FLAG_ON, 1, 1, ur, "alic", 4, "f", 1);
    ok(!d.value && d.reason == TM_REASON_DEFAULT, "unlisted user false");
    tm_rule_free(ur);
    json_decref(uj);

    d = tm_decide(TM_FLAG_ON, 1, 1, NULL, "u", 1, "f", 1);
    ok(!d.value && d.reason == TM_REASON_ERROR, "unusable rule false");
    is_str(tm_reason_name(TM_REASON_SPLIT), "SPLIT", "reason name");
    return tap_done();
}
