/* Settings from the environment, read the same way by every program. */
#ifndef TM_ENV_H
#define TM_ENV_H

/* The value of variable name, or def when it is unset or empty. */
const char *tm_env(const char *name, const char *def);

/* The integer in variable name, or def when it is unset or empty; a value
 * that is not an integer in [min, max] is logged (warn) and def returned. */
long tm_env_long(const char *name, long def, long min, long max);

/* 1 when TOGGLEMASTER_ENV=development: a local stack (make run, the tests)
 * where weak, well-known secrets are allowed; 0 otherwise. */
int tm_env_is_development(void);
#endif
