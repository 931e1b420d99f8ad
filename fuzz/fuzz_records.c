/* What the edge reads from Redis (lib/tm_records.c): tm:flags, tm:rules,
 * tm:segments, tm:envs and tm:keys:v2 values and tm:changes messages. A value published by a buggy
 * or hostile writer must be skipped, never crash a worker. Every input goes
 * through all four parsers; a compiled rule is also decided for a user. */
#include "tm_records.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *json = (const char *) data;
    char err[160];

    int en = tm_flag_record_enabled(json, size);
    if (en < -1 || en > 1) {
        __builtin_trap();
    }

    int cv = -1;
    if (tm_flag_record_parse(json, size, &cv) != en || (cv != 0 && cv != 1) || (en < 0 && cv)) {
        __builtin_trap();
    }

    int enabled = -1;
    tm_rule *rule = NULL;
    if (tm_rule_record_parse(json, size, &enabled, &rule, err, sizeof err) == 0) {
        if (enabled != 0 && enabled != 1) {
            __builtin_trap();
        }
        tm_decision d = tm_decide(TM_FLAG_ON, 1, enabled, rule, "user-1", 6, "f", 1);
        if (d.value != 0 && d.value != 1) {
            __builtin_trap();
        }
        tm_rule_free(rule);
    } else if (rule != NULL) {
        __builtin_trap();
    }

    tm_segment_free(tm_segment_record_compile(json, size, err, sizeof err));

    int def = tm_env_record_parse("staging", 7, json, size);
    if (def < -1 || def > 1) {
        __builtin_trap();
    }

    tm_key_record k;
    if (tm_key_record_parse(json, size, &k) == 0) {
        int eval = (k.scope & (TM_SCOPE_SERVER | TM_SCOPE_CLIENT)) != 0;
        if (tm_scope_from_name(tm_scope_name(k.scope), strlen(tm_scope_name(k.scope)))
                != k.scope
            || (eval && !tm_flag_name_valid(k.env, k.env_len))
            || (!eval && k.env_len != 0) || strlen(k.env) != k.env_len) {
            __builtin_trap();
        }
    } else if (k.scope != 0 || k.env_len != 0) {
        __builtin_trap();
    }

    tm_change c;
    tm_change_parse(json, size, &c);
    if ((c.op != TM_CHANGE_RELOAD && c.name == NULL) || (c.env == NULL && c.env_len)) {
        __builtin_trap();
    }
    tm_change_done(&c);
    return 0;
}
