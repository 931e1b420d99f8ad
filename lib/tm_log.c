#include "tm_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static const char *component = "togglemaster";
static int min_level = TM_LOG_INFO;

void tm_log_init(const char *name, const char *level)
{
    component = name;
    if (level == NULL) {
        return;
    }
    if (strcmp(level, "debug") == 0) min_level = TM_LOG_DEBUG;
    else if (strcmp(level, "warn") == 0) min_level = TM_LOG_WARN;
    else if (strcmp(level, "error") == 0) min_level = TM_LOG_ERROR;
    else min_level = TM_LOG_INFO;
}

void tm_log(int level, const char *fmt, ...)
{
    static const char *const names[] = { "DEBUG", "INFO", "WARN", "ERROR" };
    if (level < min_level) {
        return;
    }
    struct timeval tv;
    struct tm tm;
    char ts[32], msg[2048];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);

    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* One fprintf per line so lines from threads do not interleave. */
    fprintf(stderr, "%s.%03ldZ %s %s: %s\n", ts, (long) tv.tv_usec / 1000,
            names[level], component, msg);
}
