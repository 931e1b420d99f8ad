/* tmctl webhooks (docs/audit.md "Webhooks"): one service's endpoints
 * (list, add, update, remove, ping) and an endpoint's deliveries (list,
 * redeliver one). Each
 * daemon keeps the endpoints told of its own changes, so every command
 * acts on one service's /webhooks. The secret is sent, never printed (the
 * API never returns it). */
#ifndef TMCTL_WEBHOOKS_H
#define TMCTL_WEBHOOKS_H

typedef struct {
    const char *base;      /* the service: http://host:8002 or <gateway>/flags */
    const char *verb;      /* list, add, update, remove, ping, deliveries, redeliver */
    const char *arg;       /* add: the URL; the others but list: the endpoint's id */
    const char *delivery;  /* redeliver: the delivery id */
    const char *url;       /* update: the new URL (--endpoint), or NULL */
    const char *secret;    /* add (required), update: or NULL */
    /* Comma-separated names, "all" for every one, or NULL (not given). */
    const char *kinds, *environments;
    const char *format;    /* json, slack, or NULL */
    long limit;            /* deliveries: at most this many (the API keeps 100) */
    int json;              /* print JSON instead of a table */
} tmctl_webhooks_opts;

/* 0 done; 1 the server refused or could not be reached (said on stderr);
 * 2 usage (said on stderr). tmctl_http_init() was called. */
int tmctl_webhooks(const tmctl_webhooks_opts *w);
#endif
