/* Parsing of the redis:// URLs the daemons and the module are configured with. */
#ifndef TM_URL_H
#define TM_URL_H

typedef struct {
    char host[256];
    int port;
    char password[256];
    int db;
} tm_redis_url;

/* redis://[[user]:password@]host[:port][/db]; 0 on success, -1 if malformed. */
int tm_redis_url_parse(const char *url, tm_redis_url *out);
#endif
