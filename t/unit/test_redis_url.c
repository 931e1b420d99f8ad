/* lib/tm_url.c: the Redis URL the daemons and the nginx module both read. */
#include "tap.h"
#include "tm_url.h"

static int parse(const char *s, tm_redis_url *u, char *err, size_t errlen)
{
    return tm_redis_url_parse(s, strlen(s), u, err, errlen);
}

static void good(const char *s, int tls, const char *host, int port, const char *user,
                 const char *pw, int db)
{
    tm_redis_url u;
    char err[200];
    int rc = parse(s, &u, err, sizeof err);
    ok(rc == 0, "%s parses", s);
    if (rc != 0) {
        printf("#   %s\n", err);
        return;
    }
    is_int(u.tls, tls, "%s: tls", s);
    is_str(u.host, host, "%s: host", s);
    is_int(u.port, port, "%s: port", s);
    is_str(u.user, user, "%s: user", s);
    is_str(u.password, pw, "%s: password", s);
    is_int(u.db, db, "%s: db", s);
}

static void bad(const char *s, const char *why)
{
    tm_redis_url u;
    char err[200];
    ok(parse(s, &u, err, sizeof err) == -1, "refused: %s", s);
    ok(strstr(err, why) != NULL, "  says \"%s\" (%s)", why, err);
}

int main(void)
{
    good("redis://127.0.0.1:6379", 0, "127.0.0.1", 6379, "", "", 0);
    good("redis://redis", 0, "redis", 6379, "", "", 0);
    good("redis://redis/", 0, "redis", 6379, "", "", 0);
    good("redis://h:7000/3", 0, "h", 7000, "", "", 3);
    good("rediss://h/15", 1, "h", 6379, "", "", 15);
    good("rediss://:s3cret@cache.example.com:6380/2", 1, "cache.example.com", 6380, "", "s3cret", 2);
    good("redis://s3cret@h", 0, "h", 6379, "", "s3cret", 0);
    good("rediss://app:pw@h:1/0", 1, "h", 1, "app", "pw", 0);
    good("redis://app:p%40ss%3Aw%2Fd@h", 0, "h", 6379, "app", "p@ss:w/d", 0);
    good("redis://:raw@pass/word@h:6390/4", 0, "h", 6390, "", "raw@pass/word", 4);
    good("redis://:100%sure@h", 0, "h", 6379, "", "100%sure", 0);
    good("redis://[::1]:6380/1", 0, "::1", 6380, "", "", 1);
    good("127.0.0.1:6390", 0, "127.0.0.1", 6390, "", "", 0);
    good("localhost", 0, "localhost", 6379, "", "", 0);

    tm_redis_url u;
    char err[200];
    ok(parse("unix:/run/redis.sock", &u, err, sizeof err) == 0 && strcmp(u.unix_path, "/run/redis.sock") == 0
       && u.host[0] == '\0' && u.db == 0, "unix:/path");

    bad("http://h", "scheme");
    bad("redis://", "host is missing");
    bad("redis://:pw@", "host is missing");
    bad("redis://h:0", "port");
    bad("redis://h:65536", "port");
    bad("redis://h:12x", "port");
    bad("redis://h:", "port");
    bad("redis://h/x", "database number");
    bad("redis://h/-1", "database number");
    bad("redis://h/65536", "database number");
    bad("redis://h/1?ssl=true", "database number");
    bad("redis://h/1/2", "database number");
    bad("redis://user:@h", "password");
    bad("redis://@h", "password");
    bad("redis://:a%0Ab@h", "control character");
    bad("redis://[::1", "']'");
    bad("redis://h h", "host");
    bad("pw@h", "needs redis://");
    bad("unix:relative", "absolute");
    ok(tm_redis_url_parse("redis://h\0x", 10, &u, err, sizeof err) == -1, "a NUL byte is refused");

    /* the message never carries the password */
    ok(parse("redis://:topsecret@h/x", &u, err, sizeof err) == -1 && strstr(err, "topsecret") == NULL,
       "errors do not show the password");

    char d[300];
    parse("rediss://app:pw@h:6380/3", &u, err, sizeof err);
    tm_redis_url_describe(&u, d, sizeof d);
    is_str(d, "rediss://app:***@h:6380/3", "described without the password");
    parse("redis://[::1]", &u, err, sizeof err);
    tm_redis_url_describe(&u, d, sizeof d);
    is_str(d, "redis://[::1]:6379/0", "IPv6 described in brackets");
    parse("unix:/s", &u, err, sizeof err);
    tm_redis_url_describe(&u, d, sizeof d);
    is_str(d, "unix:/s", "unix described");
    tm_redis_url_describe(&u, d, 4);
    is_str(d, "uni", "truncated");
    return tap_done();
}
