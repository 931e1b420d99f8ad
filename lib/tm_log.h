/* One log format for every daemon: "<UTC time> <LEVEL> <component>: message".
 * Lines go to stderr, which systemd, Kubernetes and `make run` collect. */
#ifndef TM_LOG_H
#define TM_LOG_H

#include <stddef.h>

enum { TM_LOG_DEBUG, TM_LOG_INFO, TM_LOG_WARN, TM_LOG_ERROR };

/* Sets the component name and the minimum level ("debug", "info", ...). */
void tm_log_init(const char *component, const char *level);
/* Formats and writes one line. Control characters (bytes < 0x20 and 0x7f)
 * and backslashes in the formatted message are escaped (\n, \r, \t, \\,
 * \xNN), so text that came from a request or a peer can never start a line
 * of its own. */
void tm_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copies src[0..len) into dst with the escaping above, NUL-terminated,
 * truncated at a whole escape when dst (cap > 0 bytes) is too small.
 * Returns the length written. Pure: the nginx module uses it too. */
size_t tm_log_escape(char *dst, size_t cap, const char *src, size_t len);

#define TM_DEBUG(...) tm_log(TM_LOG_DEBUG, __VA_ARGS__)
#define TM_INFO(...) tm_log(TM_LOG_INFO, __VA_ARGS__)
#define TM_WARN(...) tm_log(TM_LOG_WARN, __VA_ARGS__)
#define TM_ERROR(...) tm_log(TM_LOG_ERROR, __VA_ARGS__)
#endif
