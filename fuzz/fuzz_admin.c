/* Admin API request bodies (lib/tm_bodies.c) as the flags, targeting and
 * auth daemons check them before writing: the first byte picks the kind
 * and create or update, the rest is the body. What passes must be what the
 * database and the edge can take: valid names and text, rules and
 * constraints documents that check and compile again from their stored text. */
#include "tm_bodies.h"
#include "tm_names.h"
#include "tm_rules.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    tm_body_kind kind = (tm_body_kind) (data[0] % 4);
    const char *path_name = (data[0] & 4) ? "path-name" : NULL;
    char err[512] = "";

    json_t *obj = tm_body_parse((const char *) data + 1, size - 1, err, sizeof err);
    if (obj == NULL) {
        if (err[0] == '\0') {
            __builtin_trap();
        }
        return 0;
    }

    tm_body b;
    int status = 0;
    err[0] = '\0';
    if (tm_body_check(kind, obj, path_name, &b, &status, err, sizeof err) != 0) {
        if ((status != 400 && status != 500) || err[0] == '\0' || b.doc != NULL) {
            __builtin_trap();
        }
        json_decref(obj);
        return 0;
    }

    size_t nlen = strlen(b.name);
    if (kind == TM_BODY_KEY ? !tm_text_valid(b.name, nlen) || nlen == 0 || nlen > TM_NAME_MAX
                            : !tm_flag_name_valid(b.name, nlen)) {
        __builtin_trap();
    }
    if (path_name && kind != TM_BODY_KEY && strcmp(b.name, path_name) != 0) {
        __builtin_trap();
    }
    if (b.description && !tm_text_valid(b.description, strlen(b.description))) {
        __builtin_trap();
    }
    if (b.has_enabled && b.enabled != 0 && b.enabled != 1) {
        __builtin_trap();
    }

    /* the stored text is the document that was checked */
    if (b.doc) {
        json_error_t e;
        json_t *doc = json_loads(b.doc, 0, &e);
        if (doc == NULL) {
            __builtin_trap();
        }
        if (kind == TM_BODY_RULE) {
            tm_rule *r = tm_rule_compile(doc, err, sizeof err);
            if (r == NULL) {
                __builtin_trap();
            }
            tm_rule_free(r);
        } else if (kind == TM_BODY_SEGMENT) {
            json_t *seg = json_pack("{s:s,s:O}", "name", b.name, "constraints", doc);
            tm_segment *s = seg ? tm_segment_compile(seg, err, sizeof err) : NULL;
            if (seg && s == NULL) {
                __builtin_trap();
            }
            tm_segment_free(s);
            json_decref(seg);
        }
        json_decref(doc);
    } else if (path_name == NULL && (kind == TM_BODY_RULE || kind == TM_BODY_SEGMENT)) {
        __builtin_trap();   /* a create without its document */
    }
    tm_body_free(&b);
    json_decref(obj);
    return 0;
}
