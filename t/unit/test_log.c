/* lib/tm_log.c: a log line built from input stays one line (t/log-forging.t
 * checks the same through a daemon's request log). */
#include "tap.h"
#include "tm_log.h"

#include <stdlib.h>
#include <unistd.h>

static char out[64];

static const char *esc(const char *s, size_t len, size_t cap)
{
    tm_log_escape(out, cap, s, len);
    return out;
}

int main(void)
{
    is_str(esc("/flags/a", 8, sizeof out), "/flags/a", "plain text unchanged");
    is_str(esc("/x\nINFO fake", 12, sizeof out), "/x\\nINFO fake", "LF escaped");
    is_str(esc("a\rb\tc", 5, sizeof out), "a\\rb\\tc", "CR and TAB escaped");
    is_str(esc("a\\nb", 4, sizeof out), "a\\\\nb", "a backslash is doubled, so \\n in input cannot pass for an escape");
    is_str(esc("\x1b[31m\x7f", 6, sizeof out), "\\x1b[31m\\x7f", "ESC and DEL as \\xNN");
    is_str(esc("a\0b", 3, sizeof out), "a\\x00b", "NUL escaped, the rest kept");
    is_str(esc("caf\xc3\xa9", 5, sizeof out), "caf\xc3\xa9", "UTF-8 kept");
    is_int(tm_log_escape(out, 4, "ab\ncd", 5), 2, "truncation stops before a cut escape");
    is_str(out, "ab", "... and terminates");
    is_int(tm_log_escape(out, 1, "abc", 3), 0, "cap 1: empty string");

    /* tm_log() itself: one line on stderr whatever the message holds. */
    int fds[2];
    if (pipe(fds) != 0 || dup2(fds[1], 2) < 0) {
        ok(0, "pipe");
        return tap_done();
    }
    close(fds[1]);
    tm_log_init("test", "info");
    tm_log(TM_LOG_INFO, "GET %s 404", "/a\n2024-01-01T00:00:00.000Z ERROR auth: forged");
    fclose(stderr);
    char buf[512];
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    char *nl = strchr(buf, '\n');
    ok(nl != NULL && nl[1] == '\0', "tm_log wrote exactly one line");
    ok(strstr(buf, "GET /a\\n2024-01-01T00:00:00.000Z ERROR auth: forged 404") != NULL,
       "with the line break escaped: %s", buf);
    return tap_done();
}
