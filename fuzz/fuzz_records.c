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

    tm_scope sc, back;
    char kenv[TM_NAME_MAX + 1];
    if (tm_key_record_parse(json, size, &sc, kenv, sizeof kenv) == 0) {
        int eval = tm_scope_has_environment(sc);
        if (sc == TM_SCOPE_ADMIN
            || tm_scope_parse(tm_scope_name(sc), strlen(tm_scope_name(sc)), &back) != 0
            || back != sc
            || (eval && !tm_env_name_valid(kenv, strlen(kenv)))
            || (!eval && kenv[0] != '\0')) {
            __builtin_trap();
        }
    }

    tm_change c;
    tm_change_parse(json, size, &c);
    if ((c.op != TM_CHANGE_RELOAD && c.name == NULL) || (c.env == NULL && c.env_len)) {
        __builtin_trap();
    }
    tm_change_done(&c);
    return 0;
}
