/* The names we accept for flags and API keys, checked in one place. */
#ifndef TM_NAMES_H
#define TM_NAMES_H
#include <stddef.h>

#define TM_NAME_MAX 100
#define TM_NAME_CHARSET "letters, digits, '_', '-', '.' and ':'"

/* 1 if name is 1..100 bytes of [A-Za-z0-9_.:-], else 0. */
int tm_flag_name_valid(const char *name, size_t len);

/* 1 if s is valid UTF-8 without NUL or control characters, else 0. */
int tm_text_valid(const char *s, size_t len);
#endif
