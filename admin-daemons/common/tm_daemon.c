#include "tm_daemon.h"
#include "tm_audit.h"
#include "tm_webhooks.h"
#include "tm_env.h"
#include "tm_log.h"
#include "tm_names.h"
#include "tm_publish.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void) sig;
    stop_requested = 1;
}

static int ready(void *ctx)
{
    (void) ctx;
    return tm_db_ping();
}

/* Migrations wait for the database for a while: in compose and Kubernetes
 * the daemon may start before PostgreSQL accepts connections. */
static int migrate_with_retry(const tm_daemon *d, int seconds)
{
    for (int i = 0; i < seconds * 2 && !stop_requested; i++) {
        char component[64];
        char audit[64];
        snprintf(component, sizeof component, "%s-environments", d->name);
        snprintf(audit, sizeof audit, "%s-audit", d->name);
        if (tm_db_migrate(d->name, d->migrations, d->nmigrations) == 0
            && tm_db_migrate(component, d->env_migrations, d->nenv_migrations) == 0
            && tm_db_migrate(audit, tm_audit_migrations, tm_audit_nmigrations) == 0) {
            return 0;
        }
        struct timespec ts = { 0, 500 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    return -1;
}

int tm_daemon_main(const tm_daemon *d, int argc, char **argv)
{
    int migrate_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--migrate") == 0) {
            migrate_only = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: togglemaster-%s [--migrate]\n"
                   "Configuration comes from the environment; see README.md.\n", d->name);
            return 0;
        } else {
            fprintf(stderr, "togglemaster-%s: unknown argument %s\n", d->name, argv[i]);
            return 2;
        }
    }
    tm_log_init(d->name, tm_env("LOG_LEVEL", "info"));
    /* Names as Unleash allows them (UTF-8) for new flags and segments, so
     * an Unleash import keeps its names; TM_UNICODE_NAMES=0 restricts new
     * names to ASCII (the original contract sets no charset). */
    tm_names_allow_unicode(tm_env_long("TM_UNICODE_NAMES", 1, 0, 1) == 1);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *db = tm_env("DATABASE_URL", NULL);
    if (db == NULL) {
        TM_ERROR("DATABASE_URL is not set (e.g. postgresql://user:pass@host:5432/db)");
        return 2;
    }
    if (tm_audit_init(d->name) != 0) {
        return 2;
    }
    if (!migrate_only && d->check_env && d->check_env() != 0) {
        return 2;
    }
    /* a host name is looked up by a thread of its own, at start, every
     * TM_DB_RESOLVE_SECONDS and after a failed connection: never by a
     * request thread (tm_db.h) */
    char err[300];
    if (tm_db_init(db, tm_env_long("TM_DB_RESOLVE_SECONDS", 5, 1, 3600), err, sizeof err) != 0) {
        TM_ERROR("%s", err);
        return 2;
    }
    if (tm_publish_init(tm_env("REDIS_URL", NULL)) != 0) {
        tm_db_shutdown();
        return 2;
    }

    if (migrate_only || !getenv("TM_SKIP_MIGRATE")) {
        if (migrate_with_retry(d, migrate_only ? 60 : 30) != 0) {
            TM_ERROR("schema migration failed; is DATABASE_URL reachable?");
            tm_db_close();
            tm_db_shutdown();
            tm_publish_close();
            return 1;
        }
        if (migrate_only) {
            TM_INFO("migrations applied");
            tm_db_close();
            tm_db_shutdown();
            tm_publish_close();
            return 0;
        }
    }

    tm_http_config hc = {
        .bind_addr = tm_env("BIND_ADDR", "0.0.0.0"),
        .port = (unsigned) tm_env_long("PORT", d->default_port, 1, 65535),
        .threads = (unsigned) tm_env_long("TM_HTTP_THREADS", 4, 1, 256),
        .handler = d->handler,
        .ready = ready,
        .not_ready_reason = "database unreachable",
        .ctx = d->ctx,
    };
    struct tm_http *srv = tm_http_start(&hc);
    if (srv == NULL) {
        tm_db_shutdown();
        tm_publish_close();
        return 1;
    }
    if (tm_webhooks_start(d->name) != 0) {
        tm_http_stop(srv);
        tm_db_shutdown();
        tm_publish_close();
        return 1;
    }
    long period = tm_env_long("TM_RECONCILE_SECONDS", 10, 1, 86400);
    time_t next = 0, probe = 0;
    while (!stop_requested) {
        time_t now = time(NULL);
        /* Every period, and at once (checked each second) when Redis has
         * lost what we published: a restarted Redis heals in a second. */
        int lost = 0;
        if (d->reconcile && now >= probe) {
            lost = !tm_publish_all_ready();
            probe = now + 1;
        }
        if (d->reconcile && (now >= next || lost)) {
            d->reconcile();
            next = now + period;
        }
        struct timespec ts = { 0, 100 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    TM_INFO("stopping: finishing requests in flight");
    tm_http_stop(srv);
    tm_webhooks_stop();
    tm_db_close();
    tm_db_shutdown();
    tm_publish_close();
    return 0;
}
