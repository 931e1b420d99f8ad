/* Rule documents as the targeting API and the edge receive them: check,
 * compile, and decide for a few identities. */
#include "tm_rules.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t e;
    json_t *doc = json_loadb((const char *) data, size, JSON_DECODE_ANY, &e);
    if (doc == NULL) {
        return 0;
    }
    char err[256];
    int ok = tm_rules_check(doc, err, sizeof err) == 0;
    tm_rule *r = tm_rule_compile(doc, err, sizeof err);
    if ((r != NULL) != ok) {
        __builtin_trap();   /* check and compile must agree */
    }
    if (r) {
        static const char *const users[] = { "", "alice", "bob", "\xc3\xbc" };
        for (size_t i = 0; i < 4; i++) {
            tm_decision d = tm_decide(TM_FLAG_ON, 1, 1, r, users[i], strlen(users[i]), "f", 1);
            if (d.value != 0 && d.value != 1) {
                __builtin_trap();
            }
        }
        tm_rule_free(r);
    }
    json_decref(doc);
    return 0;
}
