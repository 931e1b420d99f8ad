/* The names we accept for flags, segments and API keys, checked in one place. */
#ifndef TM_NAMES_H
#define TM_NAMES_H
#include <stddef.h>

#define TM_NAME_MAX 100
#define TM_NAME_CHARSET "letters, digits, '_', '-', '.' and ':'"
#define TM_NAME_CHARSET_UNICODE "letters, digits, '_', '-', '.', ':' and non-ASCII " \
    "characters (UTF-8) other than spaces and controls"

/* 1 if name is 1..100 bytes of [A-Za-z0-9_.:-], else 0. */
int tm_flag_name_valid(const char *name, size_t len);

/* Environments are named like flags; "all" is reserved (it asks for every
 * environment at once, docs/environments.md) and '@' never appears, so
 * tm:flags@<env> is unambiguous. */
#define TM_ENV_DEFAULT "default"
#define TM_ENV_ALL "all"
/* At most this many environments, the default included: what one edge
 * snapshot holds (the nginx module's NGX_HTTP_TOGGLEMASTER_MAX_ENVS), so
 * the flags daemon refuses to create more. */
#define TM_ENV_MAX 64
int tm_env_name_valid(const char *name, size_t len);

/* 1 if name is 1..100 bytes of [A-Za-z0-9_.:-] or non-ASCII characters
 * (valid UTF-8) other than spaces, controls and invisible format characters
 * (U+0080..U+00A0, U+00AD, U+2000..U+206F, U+3000, U+FEFF, U+FFF0..U+FFFF):
 * Unleash's names, e.g. "Feature.UTF-8.Hellø_Wørld". Every reader of names
 * (documents' references, the nginx module) accepts these. */
int tm_name_valid_unicode(const char *name, size_t len);

/* Which of the two rules new names follow in this process: ASCII unless
 * tm_names_allow_unicode(1) (the daemons' TM_UNICODE_NAMES=1). Set once at
 * start, before any thread. */
void tm_names_allow_unicode(int on);
int tm_name_valid(const char *name, size_t len);
/* The charset of that rule, for error messages. */
const char *tm_name_charset(void);

/* 1 if s is valid UTF-8 without NUL or control characters, else 0. */
int tm_text_valid(const char *s, size_t len);
#endif
