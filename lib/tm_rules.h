/* The rule language and the evaluation decision, shared by the targeting
 * daemon (validation) and the nginx module (evaluation). No I/O, and
 * tm_decide() never allocates, so it is safe on nginx's request path. */
#ifndef TM_RULES_H
#define TM_RULES_H
#include <jansson.h>
#include <stddef.h>

#define TM_RULE_TYPES_ACCEPTED "PERCENTAGE, USER_LIST"
#define TM_USER_LIST_MAX_VALUES 10000
#define TM_USER_VALUE_MAX_LEN 1024

typedef enum {
    TM_RULE_PERCENTAGE = 1,
    TM_RULE_USER_LIST
} tm_rule_type;

typedef struct {
    const char *s;
    size_t len;
} tm_str;

typedef struct {
    tm_rule_type type;
    double percentage;   /* PERCENTAGE: 0..100, bucket < percentage */
    tm_str *users;       /* USER_LIST: sorted by (len, bytes) for bsearch */
    size_t nusers;
    char *arena;         /* one block holding every user string */
} tm_rule;

typedef enum {
    TM_REASON_UNKNOWN = 0,     /* flag not found */
    TM_REASON_DISABLED,        /* flag exists but is off */
    TM_REASON_STATIC,          /* on, no active rule */
    TM_REASON_TARGETING_MATCH, /* a targeting rule matched */
    TM_REASON_SPLIT,           /* percentage rollout */
    TM_REASON_DEFAULT,         /* a rule applied and did not match */
    TM_REASON_ERROR            /* rule unusable: original semantics say false */
} tm_reason;

typedef struct {
    int value;
    tm_reason reason;
} tm_decision;

/* Flag state as the snapshot knows it. */
typedef enum {
    TM_FLAG_MISSING = -1,
    TM_FLAG_OFF = 0,
    TM_FLAG_ON = 1
} tm_flag_state;

/* Checks a rules document; 0 if valid, else -1 with a message for the client. */
int tm_rules_check(const json_t *doc, char *err, size_t errlen);

/* Compiles a document (checked here again); NULL with err on failure. */
tm_rule *tm_rule_compile(const json_t *doc, char *err, size_t errlen);
void tm_rule_free(tm_rule *r);

/* The decision, in the original order:
 *  1. flag missing or off -> false;  2. no rule or rule off -> true;
 *  3. PERCENTAGE -> sha1 bucket < value;  USER_LIST -> user listed;
 *  4. rule present but unusable (rule == NULL, rule_present) -> false. */
tm_decision tm_decide(tm_flag_state flag, int rule_present, int rule_enabled,
                      const tm_rule *rule, const char *user, size_t ulen,
                      const char *flag_name, size_t flen);

/* "STATIC", "SPLIT", ... as OFREP names them. */
const char *tm_reason_name(tm_reason r);
#endif
