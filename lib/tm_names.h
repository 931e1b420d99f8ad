/* The names we accept for flags and API keys, checked in one place. */
#ifndef TM_NAMES_H
#define TM_NAMES_H
#include <stddef.h>

#define TM_NAME_MAX 100
#define TM_NAME_CHARSET "letters, digits, '_', '-', '.' and ':'"

/* 1 if name is 1..100 bytes of [A-Za-z0-9_.:-], else 0. */
int tm_flag_name_valid(const char *name, size_t len);

/* Environments are named like flags; "all" is reserved (it asks for every
 * environment at once, docs/environments.md) and '@' never appears, so
 * tm:flags@<env> is unambiguous. */
#define TM_ENV_DEFAULT "default"
#define TM_ENV_ALL "all"
int tm_env_name_valid(const char *name, size_t len);

/* 1 if s is valid UTF-8 without NUL or control characters, else 0. */
int tm_text_valid(const char *s, size_t len);
#endif
