#include "tm_env.h"
#include "tm_log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *tm_env(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

long tm_env_long(const char *name, long def, long min, long max)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        return def;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || n < min || n > max) {
        TM_WARN("%s=\"%s\" is not a number in [%ld, %ld]; using %ld", name, v, min, max, def);
        return def;
    }
    return n;
}

int tm_env_is_development(void)
{
    const char *v = tm_env("TOGGLEMASTER_ENV", "");
    return strcmp(v, "development") == 0;
}
