/* What every admin daemon's main() does: read the environment, migrate,
 * serve HTTP, reconcile Redis periodically, stop cleanly on SIGTERM/SIGINT. */
#ifndef TM_DAEMON_H
#define TM_DAEMON_H
#include "tm_db.h"
#include "tm_env.h"
#include "tm_http.h"

typedef struct {
    const char *name;              /* "auth", "flags", "targeting" */
    unsigned default_port;
    const tm_migration *migrations;
    int nmigrations;
    /* The environments feature's migrations, recorded under the component
     * "<name>-environments": the original component's list of versions
     * stays as the original contract's tests know it. May be empty. */
    const tm_migration *env_migrations;
    int nenv_migrations;
    tm_handler handler;
    void *ctx;
    /* Called at start and every TM_RECONCILE_SECONDS; may be NULL. */
    void (*reconcile)(void);
    /* Extra checks before serving (e.g. MASTER_KEY set); 0 to go on. */
    int (*check_env)(void);
} tm_daemon;

/* Runs the daemon; returns the process exit status. --migrate applies the
 * migrations and exits (Kubernetes init Jobs). */
int tm_daemon_main(const tm_daemon *d, int argc, char **argv);
#endif
