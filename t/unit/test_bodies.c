/* lib/tm_bodies.c: the admin API's request bodies as the daemons check
 * them (t/flags.t, t/targeting.t, t/segments.t and t/auth.t check the same
 * through HTTP; fuzz/fuzz_admin.c fuzzes them). */
#include "tap.h"
#include "tm_bodies.h"

static char err[512];
static int status;
static tm_body b;

static int check(tm_body_kind kind, const char *json, const char *path_name)
{
    err[0] = '\0';
    json_t *obj = tm_body_parse(json, strlen(json), err, sizeof err);
    if (obj == NULL) {
        status = 400;
        return -1;
    }
    int rc = tm_body_check(kind, obj, path_name, &b, &status, err, sizeof err);
    static char name[128], desc[128], doc[512];
    /* copy out what points into obj before it goes */
    snprintf(name, sizeof name, "%s", rc == 0 && b.name ? b.name : "");
    snprintf(desc, sizeof desc, "%s", rc == 0 && b.description ? b.description : "(none)");
    snprintf(doc, sizeof doc, "%s", rc == 0 && b.doc ? b.doc : "(none)");
    tm_body_free(&b);
    b.name = name;
    b.description = desc;
    b.doc = NULL;
    json_decref(obj);
    strcpy(err + 256, doc);     /* the stored document, for the tests */
    return rc;
}

#define DOC (err + 256)

int main(void)
{
    is_int(check(TM_BODY_FLAG, "", NULL), -1, "empty body refused");
    is_str(err, "request body must be a JSON object", "... why");
    is_int(check(TM_BODY_FLAG, "{\"name\":", NULL), -1, "truncated JSON refused");
    ok(strncmp(err, "malformed JSON at line 1", 24) == 0, "... with its position: %s", err);
    is_int(check(TM_BODY_FLAG, "{\"name\":\"a\",\"name\":\"b\"}", NULL), -1, "duplicate members refused");
    is_int(check(TM_BODY_FLAG, "[1]", NULL), -1, "an array refused");

    is_int(check(TM_BODY_FLAG, "{\"name\":\"new-ui\",\"description\":\"d\",\"is_enabled\":true}", NULL),
           0, "flag create");
    is_str(b.name, "new-ui", "... name");
    is_str(b.description, "d", "... description");
    ok(b.has_enabled && b.enabled == 1, "... enabled");
    is_int(check(TM_BODY_FLAG, "{\"name\":\"x\",\"colour\":1}", NULL), -1, "unknown member refused");
    is_str(err, "unknown field \"colour\"", "... named");
    is_int(check(TM_BODY_FLAG, "{\"name\":\"bad name\"}", NULL), -1, "invalid name refused");
    is_int(check(TM_BODY_FLAG, "{\"name\":\"x\",\"is_enabled\":\"yes\"}", NULL), -1, "is_enabled a string");
    is_str(err, "\"is_enabled\" must be true or false", "... why");
    is_int(check(TM_BODY_FLAG, "{\"description\":\"\\u0007\"}", "f"), -1, "a control character in description");
    is_int(check(TM_BODY_FLAG, "{\"name\":\"f\"}", "f"), -1, "update with nothing to update");
    is_str(err, "nothing to update: send \"description\", \"is_enabled\" and/or \"client_visible\"",
           "... why");
    is_int(check(TM_BODY_FLAG, "{\"client_visible\":true}", "f"), 0, "client_visible alone updates");
    ok(b.has_visible && b.visible, "... set");
    is_int(check(TM_BODY_FLAG, "{\"client_visible\":1}", "f"), -1, "client_visible not a boolean");
    is_int(check(TM_BODY_FLAG, "{\"name\":\"g\",\"is_enabled\":false}", "f"), -1, "rename refused");
    is_str(err, "\"name\" cannot be changed: create a new one and delete this one", "... why");
    is_int(check(TM_BODY_FLAG, "{\"name\":\"f\",\"is_enabled\":false}", "f"), 0, "update repeating the name");
    is_str(b.name, "f", "... the path's name");

    is_int(check(TM_BODY_RULE, "{\"flag_name\":\"f\",\"rules\":{\"type\":\"PERCENTAGE\",\"value\":25.5}}", NULL),
           0, "rule create");
    ok(b.enabled == 1 && !b.has_enabled, "... enabled by default");
    is_str(DOC, "{\"type\":\"PERCENTAGE\",\"value\":25.5}", "... stored as compact JSON");
    is_int(check(TM_BODY_RULE, "{\"flag_name\":\"f\"}", NULL), -1, "rule create without rules");
    ok(strncmp(err, "\"rules\" is required", 19) == 0, "... why");
    is_int(check(TM_BODY_RULE, "{\"flag_name\":\"f\",\"rules\":{\"type\":\"PERCENTAGE\",\"value\":101}}", NULL),
           -1, "an out-of-range percentage refused");
    is_int(status, 400, "... a 400");
    is_int(check(TM_BODY_RULE, "{\"is_enabled\":false}", "f"), 0, "rule update of is_enabled alone");
    is_str(DOC, "(none)", "... no document");

    is_int(check(TM_BODY_SEGMENT, "{\"name\":\"beta\",\"constraints\":[{\"contextName\":\"country\","
                 "\"operator\":\"IN\",\"values\":[\"BR\"]}]}", NULL), 0, "segment create");
    is_int(check(TM_BODY_SEGMENT, "{\"name\":\"beta\"}", NULL), -1, "segment create without constraints");
    is_int(check(TM_BODY_SEGMENT, "{\"description\":5}", "beta"), -1, "description a number");
    is_str(err, "description: must be a string", "... why");
    is_int(check(TM_BODY_SEGMENT, "{\"description\":\"only\"}", "beta"), 0, "segment update of its description");
    is_str(DOC, "(none)", "... constraints kept");
    is_int(check(TM_BODY_SEGMENT, "{\"constraints\":[{\"contextName\":\"v\",\"operator\":\"NOPE\"}]}", "beta"),
           -1, "a bad operator refused");

    is_int(check(TM_BODY_KEY, "{\"name\":\"ci pipeline \xc3\xa9\"}", NULL), 0, "key name: printable UTF-8");
    is_int(check(TM_BODY_KEY, "{\"name\":\"\"}", NULL), -1, "empty key name refused");
    is_str(err, "\"name\" must be 1 to 100 bytes of printable UTF-8", "... why");
    /* scoped keys, environments, promotion (docs/environments.md) */
    is_int(check(TM_BODY_KEY, "{\"name\":\"k\"}", NULL), 0, "key without scope");
    is_int(b.scope, TM_SCOPE_ADMIN, "... is an admin key");
    is_int(check(TM_BODY_KEY, "{\"name\":\"k\",\"scope\":\"readonly\"}", NULL), 0, "readonly key");
    is_int(b.scope, TM_SCOPE_READONLY, "... scope");
    is_int(check(TM_BODY_KEY, "{\"name\":\"k\",\"scope\":\"client\",\"environment\":\"prod\"}", NULL),
           0, "client key with an environment");
    is_int(b.scope, TM_SCOPE_CLIENT, "... scope");
    is_int(check(TM_BODY_KEY, "{\"name\":\"k\",\"scope\":\"server\"}", NULL), -1, "server key needs an environment");
    is_str(err, "a server key needs an \"environment\"", "... why");
    is_int(check(TM_BODY_KEY, "{\"name\":\"k\",\"scope\":\"readonly\",\"environment\":\"p\"}", NULL), -1,
           "readonly key with an environment");
    is_int(check(TM_BODY_KEY, "{\"name\":\"k\",\"scope\":\"Admin\"}", NULL), -1, "scopes are exact");
    is_int(check(TM_BODY_KEY, "{\"name\":\"k\",\"scope\":\"server\",\"environment\":\"all\"}", NULL), -1,
           "environment all refused");
    is_int(check(TM_BODY_ENV, "{\"name\":\"staging\"}", NULL), 0, "environment");
    is_str(b.name, "staging", "... name");
    is_int(check(TM_BODY_ENV, "{\"name\":\"all\"}", NULL), -1, "environment all refused");
    is_int(check(TM_BODY_ENV, "{\"name\":\"a@b\"}", NULL), -1, "'@' refused");
    is_int(check(TM_BODY_ENV, "{\"name\":\"s\",\"x\":1}", NULL), -1, "unknown member refused");
    is_int(check(TM_BODY_PROMOTE, "{\"from\":\"a\",\"to\":\"b\"}", NULL), 0, "promotion");
    is_int(check(TM_BODY_PROMOTE, "{\"from\":\"a\",\"to\":\"a\"}", NULL), -1, "to itself refused");
    is_int(check(TM_BODY_PROMOTE, "{\"from\":\"a\"}", NULL), -1, "no to refused");

    /* webhooks (docs/audit.md): create needs url and secret; update takes any subset */
    const char *url = "\"url\":\"https://h.example/x\"", *sec = "\"secret\":\"0123456789abcdef\"";
    char j[512];
    snprintf(j, sizeof j, "{%s,%s,\"kinds\":[\"flag\",\"rule\"],\"environments\":null,"
             "\"format\":\"slack\"}", url, sec);
    is_int(check(TM_BODY_WEBHOOK, j, NULL), 0, "webhook");
    snprintf(j, sizeof j, "{%s}", url);
    is_int(check(TM_BODY_WEBHOOK, j, NULL), -1, "webhook without secret refused on create");
    is_int(check(TM_BODY_WEBHOOK, j, "1"), 0, "... but an update may change the url alone");
    const char *bad_hooks[] = {
        "{\"url\":\"ftp://h/x\",\"secret\":\"0123456789abcdef\"}",
        "{\"url\":\"http://\",\"secret\":\"0123456789abcdef\"}",
        "{\"url\":\"http://h/ x\",\"secret\":\"0123456789abcdef\"}",
        "{\"url\":\"http://h/\",\"secret\":\"short\"}",
        "{\"url\":\"http://h/\",\"secret\":\"0123456789abcdef\",\"kinds\":[]}",
        "{\"url\":\"http://h/\",\"secret\":\"0123456789abcdef\",\"kinds\":[\"flags\"]}",
        "{\"url\":\"http://h/\",\"secret\":\"0123456789abcdef\",\"environments\":[\"a b\"]}",
        "{\"url\":\"http://h/\",\"secret\":\"0123456789abcdef\",\"format\":\"xml\"}",
        "{\"url\":\"http://h/\",\"secret\":\"0123456789abcdef\",\"x\":1}",
        "{\"url\":7,\"secret\":\"0123456789abcdef\"}",
    };
    for (size_t i = 0; i < sizeof bad_hooks / sizeof bad_hooks[0]; i++) {
        is_int(check(TM_BODY_WEBHOOK, bad_hooks[i], NULL), -1, "webhook refused: %s", bad_hooks[i]);
        is_int(status, 400, "... 400");
    }

    tm_scope sc;
    char env[16];
    const char *rec = "{\"id\":1,\"name\":\"k\",\"scope\":\"server\",\"environment\":\"prod\"}";
    is_int(tm_key_record_parse(rec, strlen(rec), &sc, env, sizeof env), 0, "tm:keys:v2 record");
    ok(sc == TM_SCOPE_SERVER && strcmp(env, "prod") == 0, "... scope and environment");
    rec = "{\"id\":1,\"scope\":\"readonly\",\"environment\":null}";
    is_int(tm_key_record_parse(rec, strlen(rec), &sc, env, sizeof env), 0, "readonly record");
    ok(sc == TM_SCOPE_READONLY && env[0] == '\0', "... no environment");
    const char *bad[] = { "{\"scope\":\"admin\"}", "{\"scope\":\"server\"}", "{\"scope\":\"client\",\"environment\":\"a b\"}",
                          "{\"scope\":\"readonly\",\"environment\":\"p\"}", "[]", "{\"scope\":\"x\"}",
                          "{\"scope\":\"server\",\"environment\":\"waytoolongforthebuffer\"}",
                          "{\"scope\":\"server\",\"scope\":\"server\",\"environment\":\"p\"}" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        is_int(tm_key_record_parse(bad[i], strlen(bad[i]), &sc, env, sizeof env), -1,
               "malformed record refused: %s", bad[i]);
    }

    return tap_done();
}
