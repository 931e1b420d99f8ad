/* tmctl usage FLAG and tmctl stale: the analytics service's usage API
 * (docs/usage.md) as a small text chart and a table. */
#ifndef TMCTL_USAGE_H
#define TMCTL_USAGE_H

typedef struct {
    const char *gateway;      /* --url / TOGGLEMASTER_URL (NULL: the default) */
    const char *analytics;    /* --analytics-url / TOGGLEMASTER_ANALYTICS_URL */
    const char *environment;  /* NULL: the default environment */
    const char *from, *to, *granularity;   /* usage */
    const char *days;                      /* stale */
} tmctl_usage_opts;

/* Both return tmctl's exit status: 0, 1 (the server said no or cannot be
 * reached; its message on stderr), 2 (usage). tmctl_http_init done. */
int tmctl_usage(const tmctl_usage_opts *u, const char *flag);
int tmctl_stale(const tmctl_usage_opts *u);
#endif
