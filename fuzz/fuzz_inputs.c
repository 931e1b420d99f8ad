/* Small parsers of outside text: names, UTF-8 text, redis:// URLs. */
#include "tm_names.h"
#include "tm_url.h"

#include <stdint.h>
#include <stdlib.h>
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

    char *s = malloc(size + 1);
    if (s == NULL) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0';
    tm_redis_url u;
    if (tm_redis_url_parse(s, &u) == 0) {
        if (u.port <= 0 || u.port > 65535 || strlen(u.host) == 0) {
            __builtin_trap();
        }
    }
    free(s);
    return 0;
}
