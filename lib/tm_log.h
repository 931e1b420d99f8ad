/* One log format for every daemon: "<UTC time> <LEVEL> <component>: message".
 * Lines go to stderr, which systemd, Kubernetes and `make run` collect. */
#ifndef TM_LOG_H
#define TM_LOG_H

enum { TM_LOG_DEBUG, TM_LOG_INFO, TM_LOG_WARN, TM_LOG_ERROR };

/* Sets the component name and the minimum level ("debug", "info", ...). */
void tm_log_init(const char *component, const char *level);
void tm_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define TM_DEBUG(...) tm_log(TM_LOG_DEBUG, __VA_ARGS__)
#define TM_INFO(...) tm_log(TM_LOG_INFO, __VA_ARGS__)
#define TM_WARN(...) tm_log(TM_LOG_WARN, __VA_ARGS__)
#define TM_ERROR(...) tm_log(TM_LOG_ERROR, __VA_ARGS__)
#endif
