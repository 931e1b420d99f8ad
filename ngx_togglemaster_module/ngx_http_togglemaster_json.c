/*
 * JSON helpers. jansson's allocator is process-global; while a request pool
 * is set (parsing an OFREP body) jansson allocates from that pool, so the
 * request path stays off the heap. Each block carries a one-word header
 * saying where it came from, so json_decref() of either kind is safe.
 */

#include "ngx_http_togglemaster_module.h"

#include <jansson.h>


#define NGX_HTTP_TOGGLEMASTER_JSON_HDR  16   /* keeps max_align_t alignment */


static ngx_pool_t  *ngx_http_togglemaster_json_cur;


static void *
ngx_http_togglemaster_json_malloc(size_t size)
{
    u_char  *p;

    if (ngx_http_togglemaster_json_cur) {
        p = ngx_palloc(ngx_http_togglemaster_json_cur,
                       size + NGX_HTTP_TOGGLEMASTER_JSON_HDR);
        if (p == NULL) {
            return NULL;
        }

        *(uintptr_t *) p = 1;

    } else {
        p = malloc(size + NGX_HTTP_TOGGLEMASTER_JSON_HDR);
        if (p == NULL) {
            return NULL;
        }

        *(uintptr_t *) p = 0;
    }

    return p + NGX_HTTP_TOGGLEMASTER_JSON_HDR;
}


static void
ngx_http_togglemaster_json_free(void *ptr)
{
    u_char  *p;

    if (ptr == NULL) {
        return;
    }

    p = (u_char *) ptr - NGX_HTTP_TOGGLEMASTER_JSON_HDR;

    if (*(uintptr_t *) p == 0) {
        free(p);
    }

    /* pool blocks go with the request */
}


void
ngx_http_togglemaster_json_init(void)
{
    json_set_alloc_funcs(ngx_http_togglemaster_json_malloc,
                         ngx_http_togglemaster_json_free);
}


void
ngx_http_togglemaster_json_pool(ngx_pool_t *pool)
{
    ngx_http_togglemaster_json_cur = pool;
}


size_t
ngx_http_togglemaster_json_str_len(u_char *s, size_t len)
{
    return 2 + len + ngx_escape_json(NULL, s, len);
}


/* Writes s as a quoted JSON string. */
u_char *
ngx_http_togglemaster_json_str(u_char *p, u_char *s, size_t len)
{
    *p++ = '"';
    p = (u_char *) ngx_escape_json(p, s, len);
    *p++ = '"';

    return p;
}
