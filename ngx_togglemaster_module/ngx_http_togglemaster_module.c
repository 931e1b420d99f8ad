/*
 * ngx_http_togglemaster_module: directives, configuration, variables and
 * the worker lifecycle. The concerns live in their own files:
 * snapshot (tables), sync + redis (keeping the snapshot current), file
 * (snapshot on disk), eval (/evaluate), ofrep, access (API keys, require),
 * metrics, sse (OFREP event streams), refetch (the refetches their events
 * trigger).
 */

#include "ngx_http_togglemaster_module.h"

#include <jansson.h>

#include "tm_events.h"
#include "tm_records.h"


static void *ngx_http_togglemaster_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_togglemaster_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_togglemaster_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_togglemaster_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_togglemaster_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_togglemaster_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_togglemaster_init_process(ngx_cycle_t *cycle);
static void ngx_http_togglemaster_exit_process(ngx_cycle_t *cycle);

static char *ngx_http_togglemaster_handler_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_togglemaster_require(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_togglemaster_context(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_togglemaster_events_batch(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_togglemaster_api_key(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_togglemaster_environment(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static char *ngx_http_togglemaster_events_buffer_size_check(ngx_conf_t *cf,
    void *post, void *data);
static char *ngx_http_togglemaster_sse_heartbeat_check(ngx_conf_t *cf,
    void *post, void *data);
static char *ngx_http_togglemaster_sse_ttl_check(ngx_conf_t *cf,
    void *post, void *data);
static char *ngx_http_togglemaster_sse(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

static ngx_conf_post_t  ngx_http_togglemaster_sse_heartbeat_post = {
    ngx_http_togglemaster_sse_heartbeat_check
};

static char *ngx_http_togglemaster_sse_refetch_wait_check(ngx_conf_t *cf,
    void *post, void *data);
static ngx_conf_post_t  ngx_http_togglemaster_sse_refetch_wait_post = {
    ngx_http_togglemaster_sse_refetch_wait_check
};

static ngx_conf_post_t  ngx_http_togglemaster_sse_ttl_post = {
    ngx_http_togglemaster_sse_ttl_check
};

/* the delay a client waits, hidden, before it closes its stream: up to a
 * day */
static ngx_conf_num_bounds_t  ngx_http_togglemaster_sse_inactivity_bounds = {
    ngx_conf_check_num_bounds, 0, 86400
};

static ngx_conf_num_bounds_t  ngx_http_togglemaster_sse_max_bounds = {
    ngx_conf_check_num_bounds, 1, 1000000
};

/* in evaluation budgets: at least one flag's worst case, at most about a
 * second of CPU */
static ngx_conf_num_bounds_t  ngx_http_togglemaster_request_budget_bounds = {
    ngx_conf_check_num_bounds, 1, TM_REQUEST_BUDGET_MAX
};

/* at least two messages of SQS's largest size (256 KB each): the one being
 * filled as it doubles, and one in flight */
/* togglemaster_events_bulk: what an OFREP bulk evaluation leaves */
static ngx_conf_enum_t  ngx_http_togglemaster_events_bulk_modes[] = {
    { ngx_string("summary"), NGX_HTTP_TOGGLEMASTER_BULK_SUMMARY },
    /* not both: the worker counts raw events in the aggregates too */
    { ngx_string("raw"), NGX_HTTP_TOGGLEMASTER_BULK_RAW },
    { ngx_null_string, 0 }
};


static ngx_conf_post_t  ngx_http_togglemaster_events_buffer_size_post = {
    ngx_http_togglemaster_events_buffer_size_check
};


static ngx_command_t  ngx_http_togglemaster_commands[] = {

    { ngx_string("togglemaster_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_togglemaster_redis_url,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("togglemaster_redis_ssl_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, redis_ssl_ca),
      NULL },

    { ngx_string("togglemaster_redis_ssl_server_name"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, redis_ssl_name),
      NULL },

    { ngx_string("togglemaster_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, timeout),
      NULL },

    { ngx_string("togglemaster_check_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, check_interval),
      NULL },

    { ngx_string("togglemaster_backoff_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, backoff_max),
      NULL },

    { ngx_string("togglemaster_snapshot_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, snapshot_file),
      NULL },

    { ngx_string("togglemaster_events"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, events),
      NULL },

    { ngx_string("togglemaster_sqs_queue_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, sqs_queue_url),
      NULL },

    { ngx_string("togglemaster_aws_region"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, aws_region),
      NULL },

    { ngx_string("togglemaster_aws_endpoint"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, aws_endpoint),
      NULL },

    { ngx_string("togglemaster_events_buffer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, events_buffer),
      NULL },

    { ngx_string("togglemaster_events_buffer_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, events_buffer_size),
      &ngx_http_togglemaster_events_buffer_size_post },

    { ngx_string("togglemaster_events_batch"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_togglemaster_events_batch,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("togglemaster_events_bulk"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, events_bulk),
      &ngx_http_togglemaster_events_bulk_modes },

    { ngx_string("togglemaster_events_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, events_timeout),
      NULL },

    { ngx_string("togglemaster_events_attempts"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, events_attempts),
      NULL },

    { ngx_string("togglemaster_events_backoff_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, events_backoff_max),
      NULL },

    { ngx_string("togglemaster_events_exit_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, events_exit_timeout),
      NULL },

    { ngx_string("togglemaster_events_ssl_verify"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, events_ssl_verify),
      NULL },

    { ngx_string("togglemaster_events_ssl_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, events_ssl_ca),
      NULL },

    { ngx_string("togglemaster_identity"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_loc_conf_t, identity),
      NULL },

    { ngx_string("togglemaster_context"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_togglemaster_context,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("togglemaster_api_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_togglemaster_api_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("togglemaster_environment"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_togglemaster_environment,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("togglemaster_cors_origin"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_loc_conf_t, cors_origin),
      NULL },

    { ngx_string("togglemaster_require"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_togglemaster_require,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("togglemaster_sse_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_togglemaster_sse_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("togglemaster_sse_token_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_main_conf_t, sse_token_ttl),
      &ngx_http_togglemaster_sse_ttl_post },

    { ngx_string("togglemaster_sse"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_togglemaster_sse,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_loc_conf_t, sse),
      NULL },

    { ngx_string("togglemaster_sse_url"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_loc_conf_t, sse_url),
      NULL },

    { ngx_string("togglemaster_sse_heartbeat"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_loc_conf_t, sse_heartbeat),
      &ngx_http_togglemaster_sse_heartbeat_post },

    { ngx_string("togglemaster_sse_inactivity_delay"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_loc_conf_t, sse_inactivity),
      &ngx_http_togglemaster_sse_inactivity_bounds },

    { ngx_string("togglemaster_sse_max_connections"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_loc_conf_t, sse_max),
      &ngx_http_togglemaster_sse_max_bounds },

    { ngx_string("togglemaster_sse_refetch_wait"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_loc_conf_t, sse_refetch_wait),
      &ngx_http_togglemaster_sse_refetch_wait_post },

    { ngx_string("togglemaster_request_budget"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_togglemaster_loc_conf_t, request_budget),
      &ngx_http_togglemaster_request_budget_bounds },

    { ngx_string("togglemaster_evaluate"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_togglemaster_handler_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_togglemaster_evaluate_handler },

    { ngx_string("togglemaster_ofrep"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_togglemaster_handler_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_togglemaster_ofrep_handler },

    { ngx_string("togglemaster_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_togglemaster_handler_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_togglemaster_metrics_handler },

    { ngx_string("togglemaster_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_togglemaster_handler_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_togglemaster_health_handler },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_togglemaster_module_ctx = {
    ngx_http_togglemaster_add_variables,     /* preconfiguration */
    ngx_http_togglemaster_init,              /* postconfiguration */

    ngx_http_togglemaster_create_main_conf,  /* create main configuration */
    ngx_http_togglemaster_init_main_conf,    /* init main configuration */

    NULL,                                    /* create server configuration */
    NULL,                                    /* merge server configuration */

    ngx_http_togglemaster_create_loc_conf,   /* create location configuration */
    ngx_http_togglemaster_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_togglemaster_module = {
    NGX_MODULE_V1,
    &ngx_http_togglemaster_module_ctx,       /* module context */
    ngx_http_togglemaster_commands,          /* module directives */
    NGX_HTTP_MODULE,                         /* module type */
    NULL,                                    /* init master */
    NULL,                                    /* init module */
    ngx_http_togglemaster_init_process,      /* init process */
    NULL,                                    /* init thread */
    NULL,                                    /* exit thread */
    ngx_http_togglemaster_exit_process,      /* exit process */
    NULL,                                    /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_togglemaster_flag_prefix =
    ngx_string("togglemaster_flag_");


static void *
ngx_http_togglemaster_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_togglemaster_main_conf_t  *tmcf;

    tmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_togglemaster_main_conf_t));
    if (tmcf == NULL) {
        return NULL;
    }

    tmcf->timeout = NGX_CONF_UNSET_MSEC;
    tmcf->check_interval = NGX_CONF_UNSET_MSEC;
    tmcf->backoff_max = NGX_CONF_UNSET_MSEC;

    tmcf->events = NGX_CONF_UNSET;
    tmcf->events_buffer = NGX_CONF_UNSET_UINT;
    tmcf->events_buffer_size = NGX_CONF_UNSET_SIZE;
    tmcf->events_batch = NGX_CONF_UNSET_UINT;
    tmcf->events_flush = NGX_CONF_UNSET_MSEC;
    tmcf->events_bulk = NGX_CONF_UNSET_UINT;
    tmcf->events_timeout = NGX_CONF_UNSET_MSEC;
    tmcf->events_attempts = NGX_CONF_UNSET_UINT;
    tmcf->events_backoff_max = NGX_CONF_UNSET_MSEC;
    tmcf->events_exit_timeout = NGX_CONF_UNSET_MSEC;
    tmcf->events_ssl_verify = NGX_CONF_UNSET;
    tmcf->sse_token_ttl = NGX_CONF_UNSET;

    return tmcf;
}


static char *
ngx_http_togglemaster_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_togglemaster_main_conf_t *tmcf = conf;

    ngx_str_t  name = ngx_string("togglemaster");

    ngx_conf_init_msec_value(tmcf->timeout, 2000);
    ngx_conf_init_msec_value(tmcf->check_interval, 5000);
    ngx_conf_init_msec_value(tmcf->backoff_max, 5000);

    if (tmcf->backoff_max < 200) {
        tmcf->backoff_max = 200;
    }

    if (tmcf->snapshot_file.len
        && ngx_conf_full_name(cf->cycle, &tmcf->snapshot_file, 1) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

#if (NGX_THREADS)
    /* the snapshot file is written in nginx's "default" thread pool
     * (size it with "thread_pool default threads=N;") */
    if (tmcf->snapshot_file.len) {
        tmcf->thread_pool = ngx_thread_pool_add(cf, NULL);
        if (tmcf->thread_pool == NULL) {
            return NGX_CONF_ERROR;
        }
    }
#endif

    if (ngx_http_togglemaster_redis_conf(cf, tmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    tmcf->shm_zone = ngx_shared_memory_add(cf, &name,
                         2 * sizeof(ngx_http_togglemaster_shm_t) + 65536,
                         &ngx_http_togglemaster_module);
    if (tmcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    tmcf->shm_zone->init = ngx_http_togglemaster_shm_init;

    ngx_conf_init_value(tmcf->sse_token_ttl, 3600);

    return ngx_http_togglemaster_events_conf(cf, tmcf);
}


static void *
ngx_http_togglemaster_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_togglemaster_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_togglemaster_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->require_flag = { 0, NULL };
     *     conf->environment = { 0, NULL };
     *     conf->cors_origin = { 0, NULL };
     *     conf->env_gen = 0;
     */

    conf->identity = NGX_CONF_UNSET_PTR;
    conf->context = NGX_CONF_UNSET_PTR;
    conf->api_key = NGX_CONF_UNSET_UINT;
    conf->require_status = NGX_CONF_UNSET_UINT;
    conf->sse = NGX_CONF_UNSET;
    conf->sse_heartbeat = NGX_CONF_UNSET_MSEC;
    conf->sse_inactivity = NGX_CONF_UNSET_UINT;
    conf->sse_max = NGX_CONF_UNSET_UINT;
    conf->sse_url = NGX_CONF_UNSET_PTR;
    conf->sse_refetch_wait = NGX_CONF_UNSET_MSEC;
    conf->request_budget = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_togglemaster_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_togglemaster_loc_conf_t *prev = parent;
    ngx_http_togglemaster_loc_conf_t *conf = child;

    ngx_conf_merge_ptr_value(conf->identity, prev->identity, NULL);
    /* as proxy_set_header: a level with its own list replaces the outer */
    ngx_conf_merge_ptr_value(conf->context, prev->context, NULL);
    ngx_conf_merge_uint_value(conf->api_key, prev->api_key, 0);
    ngx_conf_merge_str_value(conf->environment, prev->environment, "");
    ngx_conf_merge_str_value(conf->cors_origin, prev->cors_origin, "");
    conf->env_index = NGX_HTTP_TOGGLEMASTER_ENV_NONE;
    ngx_conf_merge_str_value(conf->require_flag, prev->require_flag, "");
    ngx_conf_merge_uint_value(conf->require_status, prev->require_status,
                              NGX_HTTP_NOT_FOUND);
    ngx_conf_merge_uint_value(conf->request_budget, prev->request_budget,
                              TM_REQUEST_BUDGET_DEFAULT);

    return ngx_http_togglemaster_sse_conf(cf, conf, prev);
}


static char *
ngx_http_togglemaster_handler_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate: the location already has a content handler";
    }

    clcf->handler = (ngx_http_handler_pt) cmd->post;

    return NGX_CONF_OK;
}


/* togglemaster_events_batch <count> [time] */
static char *
ngx_http_togglemaster_events_batch(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_togglemaster_main_conf_t *tmcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (tmcf->events_batch != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n < 1 || n > TM_EVENTS_MAX_PER_MESSAGE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "batch size must be 1..%d, not \"%V\"",
                           TM_EVENTS_MAX_PER_MESSAGE, &value[1]);
        return NGX_CONF_ERROR;
    }

    tmcf->events_batch = n;

    if (cf->args->nelts == 3) {
        tmcf->events_flush = ngx_parse_time(&value[2], 0);
        if (tmcf->events_flush == (ngx_msec_t) NGX_ERROR
            || tmcf->events_flush == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid batch time \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/*
 * togglemaster_api_key on | off | SCOPE...: the scopes of the keys the
 * location accepts. "on" keeps its original meaning for evaluation
 * locations: the keys that could evaluate before scopes existed (admin)
 * and the server keys made for it; client keys only where listed.
 */
static char *
ngx_http_togglemaster_api_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_togglemaster_loc_conf_t *tmlcf = conf;

    ngx_str_t   *value;
    tm_scope     scope;
    ngx_uint_t   i, scopes;

    if (tmlcf->api_key != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "on") == 0) {
        tmlcf->api_key = NGX_HTTP_TOGGLEMASTER_SCOPE(TM_SCOPE_ADMIN)
                         | NGX_HTTP_TOGGLEMASTER_SCOPE(TM_SCOPE_SERVER);
        return NGX_CONF_OK;
    }

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        tmlcf->api_key = 0;
        return NGX_CONF_OK;
    }

    scopes = 0;

    for (i = 1; i < cf->args->nelts; i++) {
        if (tm_scope_parse((const char *) value[i].data, value[i].len,
                           &scope)
            != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\": use on, off, or "
                               "scopes among admin, readonly, server and "
                               "client", &value[i]);
            return NGX_CONF_ERROR;
        }

        scopes |= NGX_HTTP_TOGGLEMASTER_SCOPE(scope);
    }

    tmlcf->api_key = scopes;

    return NGX_CONF_OK;
}


/* togglemaster_environment <name>: checked against the names the daemons
 * accept; whether it exists is known only at run time (404 then). */
static char *
ngx_http_togglemaster_environment(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_togglemaster_loc_conf_t *tmlcf = conf;

    ngx_str_t  *value;

    if (tmlcf->environment.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (!tm_env_name_valid((char *) value[1].data, value[1].len)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid environment name \"%V\": use %s, at "
                           "most %d bytes, not \"" TM_ENV_ALL "\"",
                           &value[1], TM_NAME_CHARSET, TM_NAME_MAX);
        return NGX_CONF_ERROR;
    }

    tmlcf->environment = value[1];

    return NGX_CONF_OK;
}


/* togglemaster_context <name> <value>: value may hold variables */
static char *
ngx_http_togglemaster_context(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_togglemaster_loc_conf_t *tmlcf = conf;

    ngx_str_t                           *value;
    ngx_uint_t                           i;
    ngx_http_togglemaster_attr_conf_t   *ac;
    ngx_http_compile_complex_value_t     ccv;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > TM_NAME_MAX
        || !tm_text_valid((char *) value[1].data, value[1].len))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid context name \"%V\": 1..%d bytes of "
                           "text", &value[1], TM_NAME_MAX);
        return NGX_CONF_ERROR;
    }

    if (tmlcf->context == NGX_CONF_UNSET_PTR) {
        tmlcf->context = ngx_array_create(cf->pool, 4,
                                 sizeof(ngx_http_togglemaster_attr_conf_t));
        if (tmlcf->context == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    ac = tmlcf->context->elts;
    for (i = 0; i < tmlcf->context->nelts; i++) {
        if (ac[i].name.len == value[1].len
            && ngx_strncmp(ac[i].name.data, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate context name \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (tmlcf->context->nelts >= TM_CONTEXT_MAX_ATTRS / 2) {
        return "is given too often";
    }

    ac = ngx_array_push(tmlcf->context);
    if (ac == NULL) {
        return NGX_CONF_ERROR;
    }

    ac->name = value[1];

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &value[2];
    ccv.complex_value = &ac->value;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* togglemaster_require <flag> [status] */
static char *
ngx_http_togglemaster_require(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_togglemaster_loc_conf_t *tmlcf = conf;

    ngx_int_t   status;
    ngx_str_t  *value;

    if (tmlcf->require_flag.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (!tm_name_valid_unicode((char *) value[1].data, value[1].len)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid flag name \"%V\": use %s, at most %d "
                           "bytes", &value[1], TM_NAME_CHARSET_UNICODE,
                           TM_NAME_MAX);
        return NGX_CONF_ERROR;
    }

    tmlcf->require_flag = value[1];

    if (cf->args->nelts == 3) {
        status = ngx_atoi(value[2].data, value[2].len);
        if (status < 400 || status > 599) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "status must be 400..599, not \"%V\"",
                               &value[2]);
            return NGX_CONF_ERROR;
        }

        tmlcf->require_status = status;
    }

    return NGX_CONF_OK;
}


/*
 * $togglemaster_flag_<name>: "1" if the flag is on for the request's
 * identity, else "0". nginx lowercases variable names and allows only
 * [a-z0-9_] in them, so a flag "new-checkout" is reached as
 * $togglemaster_flag_new_checkout: the exact name is tried first, then
 * with every '_' read as '-'.
 */
static ngx_int_t
ngx_http_togglemaster_flag_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t *var = (ngx_str_t *) data;

    u_char     *name, *alt;
    size_t      len, i;
    ngx_int_t   rc;

    name = var->data + ngx_http_togglemaster_flag_prefix.len;
    len = var->len - ngx_http_togglemaster_flag_prefix.len;

    if (ngx_http_togglemaster_flag_lookup(ngx_http_togglemaster_current,
                                          name, len)
        == NULL && ngx_strlchr(name, name + len, '_'))
    {
        alt = ngx_pnalloc(r->pool, len);
        if (alt == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < len; i++) {
            alt[i] = (name[i] == '_') ? '-' : name[i];
        }

        if (ngx_http_togglemaster_flag_lookup(ngx_http_togglemaster_current,
                                              alt, len))
        {
            name = alt;
        }
    }

    rc = ngx_http_togglemaster_flag_on(r, name, len);
    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    v->data = (u_char *) (rc ? "1" : "0");
    v->len = 1;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_togglemaster_version_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%L", ngx_http_togglemaster_current
                                  ? ngx_http_togglemaster_current->version
                                  : (int64_t) -1) - p;
    v->data = p;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_togglemaster_add_variables(ngx_conf_t *cf)
{
    ngx_int_t             index;
    ngx_str_t             name = ngx_string("togglemaster_version");
    ngx_str_t             bad_key = ngx_string("togglemaster_bad_key_addr");
    ngx_str_t             addr = ngx_string("binary_remote_addr");
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_togglemaster_flag_prefix,
                                NGX_HTTP_VAR_PREFIX);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_togglemaster_flag_variable;

    var = ngx_http_add_variable(cf, &name, NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_togglemaster_version_variable;

    var = ngx_http_add_variable(cf, &bad_key, 0);
    if (var == NULL) {
        return NGX_ERROR;
    }

    index = ngx_http_get_variable_index(cf, &addr);
    if (index == NGX_ERROR) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_togglemaster_bad_key_addr_variable;
    var->data = (uintptr_t) index;

    return NGX_OK;
}


static ngx_int_t
ngx_http_togglemaster_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_togglemaster_access_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_togglemaster_init_process(ngx_cycle_t *cycle)
{
    ngx_http_togglemaster_main_conf_t  *tmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    tmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_togglemaster_module);
    if (tmcf == NULL) {
        return NGX_OK;
    }

    ngx_http_togglemaster_json_init();
    json_object_seed(0);   /* reads urandom now, not during a request */

    ngx_http_togglemaster_current = NULL;
    ngx_http_togglemaster_sse_init();
    ngx_http_togglemaster_refetch_init();

    if (ngx_http_togglemaster_events_init(cycle, tmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_togglemaster_sync_init(cycle, tmcf);
}


static void
ngx_http_togglemaster_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_cycle_get_module_main_conf(cycle,
                                            ngx_http_togglemaster_module))
    {
        ngx_http_togglemaster_events_exit(cycle);
        ngx_http_togglemaster_sync_exit(cycle);
    }
}


/* togglemaster_sse on|off: the location serves event streams */
static char *
ngx_http_togglemaster_sse(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_togglemaster_loc_conf_t *tmlcf = conf;

    char                      *rv;
    ngx_http_core_loc_conf_t  *clcf;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK || !tmlcf->sse) {
        return rv;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate: the location already has a content handler";
    }

    clcf->handler = ngx_http_togglemaster_sse_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_togglemaster_sse_heartbeat_check(ngx_conf_t *cf, void *post,
    void *data)
{
    ngx_msec_t  *mp = data;

    if (*mp < 1000 || *mp > 3600000) {
        return "must be 1s..1h";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_togglemaster_sse_ttl_check(ngx_conf_t *cf, void *post, void *data)
{
    time_t  *tp = data;

    /* a stream shorter than a few seconds would spend its life
     * reconnecting (a browser waits 3 s before it does) */
    if (*tp < 5 || *tp > 7 * 86400) {
        return "must be 5s..7d";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_togglemaster_sse_refetch_wait_check(ngx_conf_t *cf, void *post,
    void *data)
{
    ngx_msec_t  *mp = data;

    /* the client waits as long: a refetch is a user waiting for a page */
    if (*mp > 10000) {
        return "must be 0..10s";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_togglemaster_events_buffer_size_check(ngx_conf_t *cf, void *post,
    void *data)
{
    size_t  *sp = data;

    if (*sp < 512 * 1024) {
        return "must be at least 512k (two SQS messages of 256 KB)";
    }

    return NGX_CONF_OK;
}
