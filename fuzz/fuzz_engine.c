/* The strategies engine end to end. An input is either a rules document, or
 * an envelope {"rules": doc, "segments": [segment docs], "parents":
 * {"name": doc}, "contexts": [context objects]} so that segments,
 * dependencies and contexts get fuzzed too. Checks: check and compile agree
 * (for rules and segments), evaluation gives 0/1, a known reason, and
 * result pointers that point at NUL-terminated strings of the stated length. */
#include "tm_context.h"
#include "tm_rules.h"

#include <stdint.h>
#include <string.h>

#define MAX_SEGS 4
#define MAX_PARENTS 4

typedef struct {
    tm_segment *segs[MAX_SEGS];
    size_t nsegs;
    const char *names[MAX_PARENTS];
    tm_rule *rules[MAX_PARENTS];
    size_t nparents;
} snapshot;

static const tm_segment *seg_cb(void *ud, const char *name, size_t len)
{
    snapshot *s = ud;
    for (size_t i = 0; i < s->nsegs; i++) {
        const char *n = tm_segment_name(s->segs[i]);
        if (strlen(n) == len && memcmp(n, name, len) == 0) {
            return s->segs[i];
        }
    }
    return NULL;
}

static int flag_cb(void *ud, const char *name, size_t len, tm_flag_view *out)
{
    snapshot *s = ud;
    for (size_t i = 0; i < s->nparents; i++) {
        if (strlen(s->names[i]) == len && memcmp(s->names[i], name, len) == 0) {
            *out = (tm_flag_view) { s->names[i], len, TM_FLAG_ON,
                                    1, 1, s->rules[i] };
            return 0;
        }
    }
    return -1;
}

static uint32_t random_cb(void *ud)
{
    (void) ud;
    return 12345;
}

static tm_rule *compile_checked(const json_t *doc)
{
    char err[256];
    int ok = tm_rules_check(doc, err, sizeof err) == 0;
    tm_rule *r = tm_rule_compile(doc, err, sizeof err);
    if ((r != NULL) != ok) {
        __builtin_trap();   /* check and compile must agree */
    }
    return r;
}

static void evaluate(const tm_rule *r, const tm_context *ctx, const tm_eval_env *env)
{
    tm_flag_view f = { "fuzz-flag", 9, TM_FLAG_ON, 1, 1, r };
    tm_eval_result res;
    int v = tm_evaluate(&f, ctx, env, &res);
    if ((v != 0 && v != 1) || v != res.value || res.reason > TM_REASON_ERROR) {
        __builtin_trap();
    }
    if ((res.variant && strlen(res.variant) != res.variant_len)
        || (res.payload && strlen(res.payload) != res.payload_len)
        || ((res.payload == NULL) != (res.payload_type == TM_PAYLOAD_NONE))
        || (res.reason == TM_REASON_ERROR && res.error == NULL)) {
        __builtin_trap();
    }
    tm_decision d = tm_decide(TM_FLAG_ON, 1, 1, r, ctx->key, ctx->key_len, "fuzz-flag", 9);
    if (d.value != 0 && d.value != 1) {
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t e;
    json_t *in = json_loadb((const char *) data, size, JSON_DECODE_ANY, &e);
    if (in == NULL) {
        return 0;
    }
    json_t *rules = json_object_get(in, "rules");
    json_t *doc = rules ? rules : in;
    snapshot snap = { { NULL }, 0, { NULL }, { NULL }, 0 };
    char err[256];

    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(in, "segments"), i, v) {
        int ok = tm_segment_check(v, err, sizeof err) == 0;
        tm_segment *s = tm_segment_compile(v, err, sizeof err);
        if ((s != NULL) != ok) {
            __builtin_trap();
        }
        if (s && snap.nsegs < MAX_SEGS) {
            snap.segs[snap.nsegs++] = s;
        } else {
            tm_segment_free(s);
        }
    }
    const char *name;
    json_object_foreach(json_object_get(in, "parents"), name, v) {
        tm_rule *r = compile_checked(v);
        if (r && snap.nparents < MAX_PARENTS) {
            snap.names[snap.nparents] = name;
            snap.rules[snap.nparents++] = r;
        } else {
            tm_rule_free(r);
        }
    }

    tm_rule *r = compile_checked(doc);
    if (r) {
        tm_eval_env env = { &snap, seg_cb, flag_cb, random_cb };
        static const tm_attr attrs[] = {
            { "userId", 6, "alice", 5 },
            { "country", 7, "BR", 2 },
            { "appVersion", 10, "1.2.3-rc.1", 10 },
            { "remoteAddress", 13, "10.1.2.3", 8 },
            { "currentTime", 11, "2024-05-01T12:00:00Z", 20 },
            { "n", 1, "42", 2 },
        };
        tm_context ctx;
        tm_context_init(&ctx, "alice", 5, attrs, sizeof attrs / sizeof attrs[0]);
        evaluate(r, &ctx, &env);
        tm_context_init(&ctx, NULL, 0, NULL, 0);
        evaluate(r, &ctx, &env);
        evaluate(r, &ctx, NULL);
        json_array_foreach(json_object_get(in, "contexts"), i, v) {
            if (tm_context_from_json(&ctx, v, err, sizeof err) == 0) {
                evaluate(r, &ctx, &env);
                tm_context_free(&ctx);
            }
        }
        size_t len;
        for (i = 0; tm_rule_segment_ref(r, i, &len); i++) {
        }
        for (i = 0; tm_rule_dependency_ref(r, i, &len); i++) {
        }
        tm_rule_free(r);
    }
    for (i = 0; i < snap.nsegs; i++) {
        tm_segment_free(snap.segs[i]);
    }
    for (i = 0; i < snap.nparents; i++) {
        tm_rule_free(snap.rules[i]);
    }
    json_decref(in);
    return 0;
}
