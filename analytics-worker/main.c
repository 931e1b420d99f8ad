/* togglemaster-analytics: evaluation events from SQS into DynamoDB.
 * Configuration comes from the environment (see analytics-worker/README.md). */
#include "aws_client.h"
#include "metrics.h"
#include "poller.h"
#include "tm_apikey.h"
#include "tm_publish.h"
#include "tm_env.h"
#include "tm_http.h"
#include "tm_log.h"
#include "usage_api.h"

#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_POLLERS 64

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    (void) sig;
    got_signal = 1;
}

static tmw_config cfg;

static int ready(void *ctx)
{
    (void) ctx;
    return !atomic_load(&cfg.stop) && cfg.queue_url[0] && atomic_load(&tmw_m.sqs_ok)
           && atomic_load(&tmw_m.dynamodb_ok) && atomic_load(&tmw_m.pollers_running) > 0;
}

static void handle(void *ctx, const tm_req *req, tm_resp *resp)
{
    (void) ctx;
    if (tmw_usage_route(&cfg, req, resp)) {
        return;
    }
    if (strcmp(req->path, "/metrics") == 0) {
        if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
            tm_resp_error(resp, 405, "use GET");
            return;
        }
        char *text = tmw_metrics_render();
        if (!text) {
            tm_resp_error(resp, 500, "out of memory");
            return;
        }
        tm_resp_text(resp, 200, "text/plain; version=0.0.4", text);
        return;
    }
    tm_resp_error(resp, 404, "not found; this service answers /health, /health/live, "
                  "/health/ready, /metrics, /flags/<name>/usage and /usage/stale");
}

/* Without AWS_SQS_URL the queue is found by name (GetQueueUrl), retrying
 * until it exists: in compose the emulator may come up after us. */
static int resolve_queue(const char *name)
{
    tmw_http h;
    if (tmw_http_init(&h, &cfg.stop) != 0) {
        return -1;
    }
    int attempt = 0, rc = -1;
    while (!got_signal) {
        tm_aws_error e;
        if (tmw_aws_call(&h, &cfg.sqs, "GetQueueUrl", tm_sqs_queue_url_body(name), 5, 0, &e) == 0) {
            json_t *j = json_loadb(h.body, h.body_len, 0, NULL);
            const char *u = json_string_value(json_object_get(j, "QueueUrl"));
            if (u && strlen(u) < sizeof cfg.queue_url) {
                snprintf(cfg.queue_url, sizeof cfg.queue_url, "%s", u);
                rc = 0;
            }
            json_decref(j);
            if (rc == 0) {
                break;
            }
            TM_WARN("GetQueueUrl reply without a usable QueueUrl");
        } else if (attempt++ % 10 == 0) {
            TM_WARN("queue \"%s\" not found yet (%s: %s); retrying", name, e.code, e.message);
        }
        for (int i = 0; i < 20 && !got_signal; i++) {
            struct timespec ts = { 0, 50 * 1000000L };
            nanosleep(&ts, NULL);
        }
    }
    tmw_http_cleanup(&h);
    return rc;
}

/* What start-up reads from the environment besides cfg. */
typedef struct {
    const char *queue_name;
    int npollers;
    long port;
    char region[64];
} startup;

/* -1 to go on; else the exit code: 0 for --help, 2 for anything else. */
static int check_args(int argc, char **argv)
{
    if (argc <= 1) {
        return -1;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        printf("usage: togglemaster-analytics\n"
               "Reads evaluation events from SQS and stores them in DynamoDB.\n"
               "Configuration comes from the environment; see analytics-worker/README.md.\n");
        return 0;
    }
    fprintf(stderr, "togglemaster-analytics: unknown argument %s\n", argv[1]);
    return 2;
}

/* cfg and *st from the environment, and the Redis and auth clients the usage
 * API uses; 0, or -1 after saying why. */
static int read_config(startup *st)
{
    const char *queue_url = tm_env("AWS_SQS_URL", NULL);
    st->queue_name = tm_env("TM_SQS_QUEUE_NAME", "togglemaster-events");
    snprintf(cfg.table, sizeof cfg.table, "%s", tm_env("AWS_DYNAMODB_TABLE", "ToggleMasterAnalytics"));
    if (tm_env_long("TM_USAGE_AGGREGATES", 1, 0, 1)) {
        snprintf(cfg.usage_table, sizeof cfg.usage_table, "%s",
                 tm_env("AWS_DYNAMODB_USAGE_TABLE", "ToggleMasterUsage"));
    }
    /* The usage API knows flags, environments and keys from Redis (and keys
     * from the auth service when Redis does not know them), as the flags
     * daemon does. */
    const char *redis_url = tm_env("REDIS_URL", NULL);
    if (!redis_url) {
        TM_WARN("REDIS_URL not set: the usage API answers 503 (it reads flags and keys from Redis)");
    } else if (tm_publish_init(redis_url) != 0) {
        return -1;
    }
    tm_apikey_init(tm_env("AUTH_SERVICE_URL", NULL));
    if (queue_url && strlen(queue_url) >= sizeof cfg.queue_url) {
        TM_ERROR("AWS_SQS_URL is too long");
        return -1;
    }
    if (queue_url) {
        snprintf(cfg.queue_url, sizeof cfg.queue_url, "%s", queue_url);
    }
    cfg.wait_seconds = (int) tm_env_long("TM_SQS_WAIT_SECONDS", 20, 0, 20);
    cfg.max_messages = (int) tm_env_long("TM_SQS_MAX_MESSAGES", 10, 1, 10);
    cfg.visibility_timeout = (int) tm_env_long("TM_SQS_VISIBILITY_TIMEOUT", -1, -1, 43200);
    cfg.poison_visibility = (int) tm_env_long("TM_POISON_VISIBILITY_TIMEOUT", 0, -1, 43200);
    cfg.write_attempts = (int) tm_env_long("TM_WRITE_ATTEMPTS", 8, 1, 100);
    cfg.backoff_base_ms = tm_env_long("TM_BACKOFF_BASE_MS", 50, 1, 60000);
    cfg.backoff_max_ms = tm_env_long("TM_BACKOFF_MAX_MS", 5000, 1, 600000);
    if (cfg.backoff_max_ms < cfg.backoff_base_ms) {
        cfg.backoff_max_ms = cfg.backoff_base_ms;
    }
    st->npollers = (int) tm_env_long("TM_POLLERS", 2, 1, MAX_POLLERS);
    st->port = tm_env_long("PORT", 8005, 1, 65535);
    return 0;
}

/* The region, the SQS and DynamoDB endpoints, libcurl and the credentials;
 * 0, or -1 after saying why (with nothing of them left to stop). */
static int start_aws(startup *st)
{
    char err[512];
    tm_aws_region(cfg.queue_url[0] ? cfg.queue_url : NULL, st->region, sizeof st->region);
    if (tm_aws_endpoint_resolve(&cfg.sqs, "sqs", st->region, cfg.queue_url[0] ? cfg.queue_url : NULL,
                                err, sizeof err) != 0
        || tm_aws_endpoint_resolve(&cfg.ddb, "dynamodb", st->region, NULL, err, sizeof err) != 0) {
        TM_ERROR("%s", err);
        return -1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        TM_ERROR("curl_global_init failed");
        return -1;
    }
    if (tmw_creds_init(st->region, cfg.sqs.custom || cfg.ddb.custom, err, sizeof err) != 0) {
        TM_ERROR("%s", err);
        curl_global_cleanup();
        return -1;
    }
    atomic_store(&tmw_m.dynamodb_ok, 1);
    return 0;
}

static void stop_aws(void)
{
    tmw_creds_shutdown();
    curl_global_cleanup();
}

/* Signals are handled by the main thread only: block them before any
 * thread starts (threads inherit the mask), then wait in sigsuspend with
 * *orig. SIGPIPE is ignored. 0, or -1 after saying why. */
static int block_signals(sigset_t *block, sigset_t *orig)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigemptyset(block);
    sigaddset(block, SIGTERM);
    sigaddset(block, SIGINT);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0
        || pthread_sigmask(SIG_BLOCK, block, orig) != 0) {
        TM_ERROR("cannot install signal handlers");
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* /health, /metrics and the usage API; NULL after saying why. */
static struct tm_http *start_http(const startup *st)
{
    tm_http_config hc = {
        .bind_addr = tm_env("BIND_ADDR", "0.0.0.0"),
        .port = (unsigned) st->port,
        .threads = 2,
        .handler = handle,
        .ready = ready,
        .not_ready_reason = "SQS or DynamoDB unreachable, or shutting down",
        .ctx = NULL,
    };
    struct tm_http *http = tm_http_start(&hc);
    if (!http) {
        TM_ERROR("cannot listen on %s:%ld", hc.bind_addr, st->port);
        return NULL;
    }
    TM_INFO("listening on %s:%ld; table %s; usage table %s; SQS %s; DynamoDB %s; region %s; "
            "%d pollers, wait %ds", hc.bind_addr, st->port, cfg.table,
            cfg.usage_table[0] ? cfg.usage_table : "(aggregates off)", cfg.sqs.url, cfg.ddb.url,
            st->region, st->npollers, cfg.wait_seconds);
    return http;
}

/* The queue by name when AWS_SQS_URL was not given: until found or a signal
 * comes (cfg.queue_url stays empty then, and /health/ready says not ready). */
static void find_queue(const char *name, const sigset_t *block, const sigset_t *orig)
{
    TM_INFO("AWS_SQS_URL not set; looking up queue \"%s\"", name);
    /* Signals delivered while we look: the handler only sets the flag. */
    pthread_sigmask(SIG_SETMASK, orig, NULL);
    int r = resolve_queue(name);
    pthread_sigmask(SIG_BLOCK, block, NULL);
    if (r == 0) {
        TM_INFO("queue URL %s", cfg.queue_url);
    }
}

/* n pollers; *started counts those running (to join), even on failure.
 * 0, or -1 after saying which one did not start. */
static int start_pollers(pthread_t *threads, tmw_poller_arg *args, int n, int *started)
{
    for (int i = 0; i < n; i++) {
        args[i].cfg = &cfg;
        args[i].id = i;
        if (pthread_create(&threads[i], NULL, tmw_poller_run, &args[i]) != 0) {
            TM_ERROR("cannot start poller %d", i);
            return -1;
        }
        (*started)++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int rc = check_args(argc, argv);
    if (rc >= 0) {
        return rc;
    }
    tm_log_init("analytics", tm_env("LOG_LEVEL", "info"));

    startup st;
    sigset_t block, orig;
    if (read_config(&st) != 0 || start_aws(&st) != 0) {
        return 1;
    }
    if (block_signals(&block, &orig) != 0) {
        stop_aws();
        return 1;
    }
    struct tm_http *http = start_http(&st);
    if (!http) {
        stop_aws();
        return 1;
    }
    if (!cfg.queue_url[0]) {
        find_queue(st.queue_name, &block, &orig);
    }

    pthread_t threads[MAX_POLLERS];
    tmw_poller_arg args[MAX_POLLERS];
    int started = 0;
    rc = 0;
    /* a signal that came while looking for the queue: no poller starts */
    if (!got_signal && start_pollers(threads, args, st.npollers, &started) != 0) {
        rc = 1;
        got_signal = 1;
    }
    while (!got_signal) {
        sigsuspend(&orig);
    }

    TM_INFO("stopping: finishing the batches in hand");
    atomic_store(&cfg.stop, 1);
    for (int i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
    }
    tm_http_stop(http);
    tm_publish_close();
    stop_aws();
    TM_INFO("stopped");
    return rc;
}
