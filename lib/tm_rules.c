/* Rule documents: the original PERCENTAGE / USER_LIST ones and the
 * strategies format (docs/rules.md), checked, compiled and evaluated. This
 * file holds the public entry points of tm_rules.h that pick between the
 * two kinds; tm_rules_int.h says which file does what. The nginx module
 * compiles every lib/tm_rules*.c (see the repository's nginx config). */
#include "tm_rules_int.h"

#include <stdio.h>
#include <stdlib.h>

int tm_rules_fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s", msg);
    }
    return -1;
}

/* A document without "type" is a strategies document. */
static int is_typed(const json_t *doc)
{
    return json_object_get(doc, "type") != NULL;
}

int tm_rules_check(const json_t *doc, char *err, size_t errlen)
{
    if (!json_is_object(doc)) {
        return tm_rules_fail(err, errlen, "rules must be a JSON object");
    }
    if (is_typed(doc)) {
        return tm_legacy_check(doc, err, errlen);
    }
    tm_program *p = tm_program_compile(doc, err, errlen);
    if (p == NULL) {
        return -1;
    }
    tm_program_free(p);
    return 0;
}

tm_rule *tm_rule_compile(const json_t *doc, char *err, size_t errlen)
{
    if (!json_is_object(doc)) {
        tm_rules_fail(err, errlen, "rules must be a JSON object");
        return NULL;
    }
    if (is_typed(doc) && tm_legacy_check(doc, err, errlen) != 0) {
        return NULL;
    }
    tm_rule *r = calloc(1, sizeof *r);
    if (r == NULL) {
        tm_rules_fail(err, errlen, "out of memory");
        return NULL;
    }
    if (is_typed(doc)) {
        return tm_legacy_compile(doc, r, err, errlen);
    }
    r->type = TM_RULE_STRATEGIES;
    r->program = tm_program_compile(doc, err, errlen);
    if (r->program == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

void tm_rule_free(tm_rule *r)
{
    if (r == NULL) {
        return;
    }
    tm_program_free(r->program);
    free(r->users);
    free(r->arena);
    free(r);
}

const char *tm_rule_segment_ref(const tm_rule *r, size_t i, size_t *len)
{
    if (r == NULL || r->program == NULL || i >= r->program->nsegrefs) {
        return NULL;
    }
    *len = r->program->segrefs[i].len;
    return r->program->segrefs[i].s;
}

const char *tm_rule_dependency_ref(const tm_rule *r, size_t i, size_t *len)
{
    if (r == NULL || r->program == NULL || i >= r->program->ndeps) {
        return NULL;
    }
    *len = r->program->deps[i].feature.len;
    return r->program->deps[i].feature.s;
}
