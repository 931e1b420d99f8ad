#ifndef NGX_HTTP_TOGGLEMASTER_REDIS_H
#define NGX_HTTP_TOGGLEMASTER_REDIS_H

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_togglemaster_module.h"


/* A connecting async context driven by nginx events; NULL on failure. */
redisAsyncContext *ngx_http_togglemaster_redis_connect(
    ngx_http_togglemaster_main_conf_t *tmcf, ngx_log_t *log);

#endif /* NGX_HTTP_TOGGLEMASTER_REDIS_H */
