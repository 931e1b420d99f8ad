/* lib/: what the edge reads from outside, away from nginx — the /evaluate
 * query string (tm_query), OFREP request bodies (tm_context_from_ofrep) and
 * the objects and messages it reads from Redis (tm_records). The same
 * functions are fuzzed (fuzz/fuzz_query.c, _ofrep.c, _records.c). */
#include "tap.h"
#include "tm_context.h"
#include "tm_http_reply.h"
#include "tm_query.h"
#include "tm_records.h"

#include <stdlib.h>

static tm_attr attrs[TM_CONTEXT_MAX_ATTRS];
static char buf[1 << 16];
static tm_query q;
static const char *why;

static int parse(const char *args)
{
    why = NULL;
    return tm_query_parse(args, strlen(args), buf, attrs, &q, &why);
}

static const char *text(const char *s, size_t len)
{
    static char out[8][256];
    static int n;
    char *o = out[n++ % 8];
    snprintf(o, sizeof out[0], "%.*s", (int) len, s ? s : "(null)");
    return o;
}

static void query(void)
{
    is_int(parse("user_id=u1&flag_name=f"), 0, "plain query parses");
    is_str(text(q.user, q.user_len), "u1", "... user_id");
    is_str(text(q.flag, q.flag_len), "f", "... flag_name");
    is_int(q.nattrs, 0, "... no attributes");

    is_int(parse("flag_name=new-ui&user_id=a%20b+c&country=BR&plan=pro+max&k&%7A=%zz"), 0,
           "attributes parse");
    is_str(text(q.user, q.user_len), "a b c", "'+' and %%20 are spaces");
    is_int(q.nattrs, 4, "four attributes (a name without '=' is an empty value)");
    is_str(text(q.attrs[0].name, q.attrs[0].name_len), "country", "first attribute name");
    is_str(text(q.attrs[1].value, q.attrs[1].value_len), "pro max", "'+' in a value");
    is_int(q.attrs[2].value_len, 0, "k has an empty value");
    is_str(text(q.attrs[3].name, q.attrs[3].name_len), "z", "an encoded name is decoded");
    is_str(text(q.attrs[3].value, q.attrs[3].value_len), "%zz", "an invalid escape stays as written");

    is_int(parse("user_id=first&user_id=second&flag_name=f"), 0, "repeated user_id");
    is_str(text(q.user, q.user_len), "first", "... the first wins");
    is_int(q.nattrs, 0, "... and the others are not attributes");
    is_int(parse("user%5Fid=enc&flag_name=f"), 0, "an encoded user_id name");
    is_str(text(q.user, q.user_len), "enc", "... is the identity (names are decoded, as Flask does)");
    is_int(parse("USER_ID=x&flag_name=f"), -1, "names match exactly: USER_ID is not user_id");

    is_int(parse("user_id=&flag_name=f"), -1, "empty user_id refused");
    is_str(why, "user_id and flag_name are required", "... required");
    is_int(parse("user_id=u"), -1, "missing flag_name refused");
    is_int(parse(""), -1, "empty query refused");
    is_int(parse("user_id=%01&flag_name=f"), -1, "a control character refused");
    is_str(why, "user_id and flag_name must be UTF-8 text without control characters", "... why");
    is_int(parse("user_id=%C3%28&flag_name=f"), -1, "invalid UTF-8 refused");
    is_int(parse("user_id=%C3%A9&flag_name=f&x=%00"), 0, "UTF-8 identity, NUL in an attribute accepted");
    is_int(q.attrs[0].value_len, 1, "... the NUL is one byte of the value");

    char *big = malloc(12000);
    memcpy(big, "flag_name=f&user_id=", 20);
    memset(big + 20, 'u', 4097);
    big[20 + 4097] = '\0';
    is_int(parse(big), -1, "user_id over 4096 bytes refused");
    is_str(why, "user_id is longer than 4096 bytes", "... why");
    big[20 + 4096] = '\0';
    is_int(parse(big), 0, "user_id of 4096 bytes accepted");
    memcpy(big, "user_id=u&flag_name=f&x=", 24);
    memset(big + 24, 'v', 4097);
    big[24 + 4097] = '\0';
    is_int(parse(big), -1, "attribute over 4096 bytes refused");
    is_str(why, "a context attribute is longer than 4096 bytes", "... why");
    size_t n = (size_t) sprintf(big, "user_id=u&flag_name=f");
    for (int i = 0; i < 257; i++) {
        n += (size_t) sprintf(big + n, "&a%d=1", i);
    }
    is_int(tm_query_max_attrs(big, n), TM_CONTEXT_MAX_ATTRS, "max_attrs is capped at 256");
    is_int(parse(big), -1, "257 attributes refused");
    is_str(why, "at most 256 context attributes", "... why");
    memcpy(big, "user_id=&", 9);        /* user_id empty now */
    is_int(parse(big), -1, "the identity's error is told before the attributes'");
    is_str(why, "user_id and flag_name are required", "... required first");
    free(big);

    is_int(parse("user_id=u&flag_name=f&plan=&plan=pro"), 0, "an empty attribute, then a value");
    tm_context cx;
    tm_context_init(&cx, q.user, q.user_len, q.attrs, q.nattrs);
    const tm_attr *pa = tm_context_get(&cx, "plan", 4);
    is_str(pa ? text(pa->value, pa->value_len) : NULL, "pro",
           "an empty value is absent: it does not hide the next one");

    char d[8];
    is_int(tm_query_decode(d, "%4", 2), 2, "a cut escape stays");
    is_int(tm_query_decode(d, "%41%4a", 6), 2, "two escapes, either case");
    is_str(text(d, 2), "AJ", "... decoded");
}

static tm_context c;
static const char *code;
static char err[160];

static int ofrep(const char *body)
{
    code = NULL;
    err[0] = '\0';
    return tm_context_from_ofrep(&c, body, strlen(body), &code, err, sizeof err);
}

static void ofrep_bodies(void)
{
    is_int(ofrep("{\"context\":{\"targetingKey\":\"u1\",\"country\":\"BR\","
                 "\"properties\":{\"plan\":\"pro\",\"age\":31,\"score\":0.1,\"beta\":true}}}"),
           0, "an OFREP body parses");
    is_str(text(c.key, c.key_len), "u1", "targetingKey is the identity");
    is_int(c.nattrs, 6, "members and properties flattened");
    const tm_attr *a = tm_context_get(&c, "score", 5);
    is_str(a ? text(a->value, a->value_len) : NULL, "0.1", "a real as its shortest text");
    a = tm_context_get(&c, "beta", 4);
    is_str(a ? text(a->value, a->value_len) : NULL, "true", "a boolean as true");
    tm_context_free(&c);

    is_int(ofrep("{\"context\":{\"plan\":\"\",\"properties\":{\"plan\":\"pro\"}}}"), 0,
           "an empty member and a property of the same name");
    a = tm_context_get(&c, "plan", 4);
    is_str(a ? text(a->value, a->value_len) : NULL, "pro", "... the property counts");
    tm_context_free(&c);

    is_int(ofrep("{\"context\":{\"userId\":\"u9\"}}"), 0, "userId alone");
    is_str(text(c.key, c.key_len), "u9", "... is the identity");
    tm_context_free(&c);
    is_int(ofrep("{}"), 0, "no context: an empty one");
    ok(c.key == NULL && c.nattrs == 0 && c.owned == NULL, "... nothing allocated");
    is_int(ofrep("{\"context\":null}"), 0, "a null context: an empty one");

    is_int(ofrep("[1]"), -1, "an array body refused");
    is_str(code, "PARSE_ERROR", "... PARSE_ERROR");
    is_str(err, "the body must be a JSON object", "... why");
    is_int(ofrep("{\"context\":"), -1, "truncated JSON refused");
    is_str(code, "PARSE_ERROR", "... PARSE_ERROR");
    is_int(ofrep("{\"context\":[1]}"), -1, "a context that is an array refused");
    is_str(code, "INVALID_CONTEXT", "... INVALID_CONTEXT");
    is_str(err, "\"context\" must be an object", "... why");
    is_int(ofrep("{\"context\":{\"targetingKey\":7}}"), -1, "a numeric targetingKey refused");
    is_str(code, "INVALID_CONTEXT", "... INVALID_CONTEXT");
    ok(c.owned == NULL, "... nothing left allocated");

    char *big = malloc(6000);
    int n = sprintf(big, "{\"context\":{\"targetingKey\":\"u\",\"country\":\"");
    memset(big + n, 'x', 4097);
    strcpy(big + n + 4097, "\"}}");
    is_int(ofrep(big), -1, "a value over 4096 bytes refused");
    is_str(code, "INVALID_CONTEXT", "... INVALID_CONTEXT");
    is_str(err, "context.country: value longer than 4096 bytes", "... names the member");
    free(big);
}

static void records(void)
{
    char e[160];
#define S(x) x, strlen(x)
    is_int(tm_flag_record_enabled(S("{\"name\":\"f\",\"is_enabled\":true}")), 1, "flag on");
    is_int(tm_flag_record_enabled(S("{\"is_enabled\":false}")), 0, "flag off");
    is_int(tm_flag_record_enabled(S("{\"is_enabled\":1}")), -1, "is_enabled not a boolean: malformed");
    is_int(tm_flag_record_enabled(S("{\"is_enabled\":true,\"is_enabled\":false}")), -1,
           "duplicate members: malformed");
    is_int(tm_flag_record_enabled(S("true")), -1, "not an object: malformed");

    int en = -1;
    tm_rule *r = (tm_rule *) 1;
    is_int(tm_rule_record_parse(S("{\"is_enabled\":true,\"rules\":{\"type\":\"PERCENTAGE\",\"value\":50}}"),
                                &en, &r, e, sizeof e), 0, "a rule record");
    ok(en == 1 && r != NULL, "... enabled, compiled");
    tm_rule_free(r);
    is_int(tm_rule_record_parse(S("{\"is_enabled\":false,\"rules\":{\"type\":\"NOPE\"}}"),
                                &en, &r, e, sizeof e), 0, "an unknown rule type is well-formed");
    ok(en == 0 && r == NULL, "... but does not compile (answers false)");
    is_int(tm_rule_record_parse(S("{\"is_enabled\":true,\"rules\":[1]}"), &en, &r, e, sizeof e), -1,
           "rules not an object: malformed");
    ok(r == NULL, "... no rule");

    tm_segment *s = tm_segment_record_compile(S("{\"id\":4,\"name\":\"beta\",\"description\":\"d\","
        "\"constraints\":[{\"contextName\":\"country\",\"operator\":\"IN\",\"values\":[\"BR\"]}],"
        "\"created_at\":\"2026-01-01\"}"), e, sizeof e);
    ok(s != NULL, "a segment record compiles (ids and timestamps ignored)");
    is_str(s ? tm_segment_name(s) : NULL, "beta", "... its name");
    tm_segment_free(s);
    ok(tm_segment_record_compile(S("{\"name\":\"x\",\"constraints\":[{\"operator\":\"IN\"}]}"),
                                 e, sizeof e) == NULL, "a bad constraint does not compile");
    ok(tm_segment_record_compile(S("[]"), e, sizeof e) == NULL, "not an object: NULL");

    tm_change ch;
    tm_change_parse(S("{\"version\":3,\"kind\":\"flag\",\"op\":\"upsert\",\"name\":\"f1\"}"), &ch);
    ok(ch.op == TM_CHANGE_UPSERT && ch.kind && strcmp(ch.kind, "flag") == 0
       && ch.name_len == 2 && memcmp(ch.name, "f1", 2) == 0, "an upsert message");
    tm_change_done(&ch);
    tm_change_parse(S("{\"version\":3,\"kind\":\"key\",\"op\":\"delete\",\"name\":\"ab\"}"), &ch);
    ok(ch.op == TM_CHANGE_DELETE, "a delete message");
    tm_change_done(&ch);
    tm_change_parse(S("{\"version\":3,\"kind\":\"segment\",\"op\":\"resync\"}"), &ch);
    ok(ch.op == TM_CHANGE_RELOAD && ch.kind && strcmp(ch.kind, "segment") == 0,
       "resync: reload the kind");
    tm_change_done(&ch);
    tm_change_parse(S("{\"kind\":\"flag\",\"op\":\"upsert\",\"name\":7}"), &ch);
    ok(ch.op == TM_CHANGE_RELOAD, "an upsert without a string name: reload");
    tm_change_done(&ch);
    tm_change_parse(S("garbage"), &ch);
    ok(ch.op == TM_CHANGE_RELOAD && ch.kind == NULL, "garbage: reload everything");
    tm_change_done(&ch);
    tm_change_parse(S("{\"version\":4,\"kind\":\"flag\",\"environment\":\"qa\","
                      "\"op\":\"upsert\",\"name\":\"f1\"}"), &ch);
    ok(ch.op == TM_CHANGE_UPSERT && ch.env_len == 2 && memcmp(ch.env, "qa", 2) == 0,
       "a change of environment qa");
    tm_change_done(&ch);
    tm_change_parse(S("{\"kind\":\"flag\",\"environment\":7,\"op\":\"upsert\",\"name\":\"f\"}"), &ch);
    ok(ch.op == TM_CHANGE_RELOAD && ch.kind == NULL, "an environment not a string: reload everything");
    tm_change_done(&ch);

    /* tm:envs: the field is the name; "all" is reserved (tm_env_name_valid) */
    is_int(tm_env_record_parse("default", 7, S("{\"id\":1,\"name\":\"default\",\"is_default\":true}")),
           1, "the default environment's record");
    is_int(tm_env_record_parse("qa", 2, S("{\"id\":2,\"name\":\"qa\",\"is_default\":false}")),
           0, "another environment's record");
    is_int(tm_env_record_parse("qa", 2, S("{\"id\":2,\"name\":\"qb\",\"is_default\":false}")),
           -1, "a name other than the field: malformed");
    is_int(tm_env_record_parse("all", 3, S("{\"id\":2,\"name\":\"all\",\"is_default\":false}")),
           -1, "\"all\" is never an environment");
    is_int(tm_env_record_parse("qa", 2, S("{\"name\":\"qa\",\"is_default\":0}")),
           -1, "is_default not a boolean: malformed");
#undef S
}

static int reply(const char *text, int eof, tm_http_reply *r, char *body)
{
    static char buf[4096];
    size_t len = strlen(text);
    memcpy(buf, text, len);
    int rc = tm_http_reply_parse(buf, len, eof, r);
    if (rc == 1) {
        memcpy(body, buf + r->body_off, r->body_len);
        body[r->body_len] = '\0';
    }
    return rc;
}

static void http_replies(void)
{
    tm_http_reply r;
    char body[4096];
    is_int(reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0, &r, body), 1,
           "a reply with Content-Length");
    ok(r.status == 200 && r.keepalive, "... 200, kept alive (HTTP/1.1)");
    is_str(body, "hello", "... body");
    is_int(reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", 0, &r, body), 0,
           "a body still arriving: more needed");
    is_int(reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", 1, &r, body), -1,
           "... cut by the connection's end: malformed");
    is_int(reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nT: 1\r\n\r\n", 0, &r, body), 1,
           "a chunked reply with an extension and a trailer");
    is_str(body, "hello world", "... decoded");
    is_int(reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!\r\n0\r\n\r\n",
                 0, &r, body), -1, "a chunk longer than its size: malformed");
    is_int(reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\n", 0, &r, body),
           -1, "a chunk over 1 MiB refused");
    is_int(reply("HTTP/1.0 200 OK\r\n\r\nuntil the end", 0, &r, body), 0,
           "no length: the body runs until the end");
    is_int(reply("HTTP/1.0 200 OK\r\n\r\nuntil the end", 1, &r, body), 1, "... which came");
    ok(!r.keepalive, "... and the connection is done");
    is_str(body, "until the end", "... body");
    is_int(reply("HTTP/1.1 400 Bad Request\r\nX-Amzn-Query-Error: AWS.SimpleQueueService.NonExistentQueue;Sender \r\n"
                 "Connection: close\r\nContent-Length: 0\r\n\r\n", 0, &r, body), 1, "an SQS error reply");
    is_str(r.query_error, "AWS.SimpleQueueService.NonExistentQueue;Sender", "... x-amzn-query-error, trimmed");
    ok(r.status == 400 && !r.keepalive, "... 400, Connection: close");
    is_int(reply("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", 0, &r, body), -1,
           "a bad Content-Length refused");
    is_int(reply("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", 0, &r, body), -1,
           "an absurd Content-Length refused");
    is_int(reply("SSH-2.0-OpenSSH_9.2\r\n", 0, &r, body), -1, "not HTTP: malformed");
    is_int(reply("HTTP/1.1 2x0 OK\r\n\r\n", 0, &r, body), -1, "a bad status refused");
}

int main(void)
{
    http_replies();
    query();
    ofrep_bodies();
    records();
    return tap_done();
}
