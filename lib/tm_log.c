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
    char ts[32], msg[2048], esc[4 * sizeof msg];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);

    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tm_log_escape(esc, sizeof esc, msg, strlen(msg));
    /* One fprintf per line so lines from threads do not interleave. */
    fprintf(stderr, "%s.%03ldZ %s %s: %s\n", ts, (long) tv.tv_usec / 1000,
            names[level], component, esc);
}

size_t tm_log_escape(char *dst, size_t cap, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) src[i];
        char e[4];
        size_t n = 2;
        e[0] = '\\';
        switch (c) {
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        case '\\': e[1] = '\\'; break;
        default:
            if (c >= 0x20 && c != 0x7f) {
                e[0] = (char) c;
                n = 1;
            } else {
                e[1] = 'x';
                e[2] = hex[c >> 4];
                e[3] = hex[c & 0xf];
                n = 4;
            }
        }
        if (o + n >= cap) {
            break;
        }
        memcpy(dst + o, e, n);
        o += n;
    }
    if (cap > 0) {
        dst[o] = '\0';
    }
    return o;
}
