/* Small parsers of outside text: names, UTF-8 text, redis:// and rediss://
 * URLs, a cluster node's MOVED/ASK reply. */
#include "tm_names.h"
#include "tm_redis_keys.h"
#include "tm_url.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int ascii = tm_flag_name_valid((const char *) data, size);
    int text = tm_text_valid((const char *) data, size);
    int unicode = tm_name_valid_unicode((const char *) data, size);
    /* the Unicode rule extends the ASCII one, and its names are text */
    if ((ascii && !unicode) || (unicode && !text)) {
        __builtin_trap();
    }

    tm_redis_url u;
    char err[160], d[700];
    if (tm_redis_url_parse((const char *) data, size, &u, err, sizeof err) == 0) {
        if (u.port <= 0 || u.port > 65535 || u.db < 0 || u.db > TM_REDIS_DB_MAX
            || (strlen(u.host) == 0) == (strlen(u.unix_path) == 0)) {
            __builtin_trap();
        }
        tm_redis_url_describe(&u, d, sizeof d);
    } else if (strlen(err) == 0) {
        __builtin_trap();   /* a refusal always says why */
    }

    /* a redirect followed has a slot and a port in range, a host that fits */
    tm_redis_redirect r;
    int n = tm_redis_redirect_parse((const char *) data, size, &r);
    if (n < -1 || n > 1
        || (n == 1 && (r.slot > 16383 || r.port < 1 || r.port > 65535
                       || strlen(r.host) >= sizeof r.host || strchr(r.host, ' ')))) {
        __builtin_trap();
    }
    return 0;
}
