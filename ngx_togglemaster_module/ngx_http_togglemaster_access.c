/*
 * Access phase: the API-key check (togglemaster_api_key) and flag-gated
 * locations (togglemaster_require); $togglemaster_bad_key_addr for
 * limit_req. Keys are compared by their SHA-256 hex
 * against the snapshot's set; the plain key is never logged.
 */

#include "ngx_http_togglemaster_module.h"
#include "tm_hash.h"


static ngx_int_t
ngx_http_togglemaster_find_key(ngx_http_request_t *r, ngx_str_t *key)
{
    u_char           *p, *end;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    if (r->headers_in.authorization) {
        p = r->headers_in.authorization->value.data;
        end = p + r->headers_in.authorization->value.len;

        if (end - p > 7 && ngx_strncasecmp(p, (u_char *) "Bearer ", 7) == 0) {
            p += 7;
        }

        while (p < end && *p == ' ') {
            p++;
        }

        while (end > p && end[-1] == ' ') {
            end--;
        }

        key->data = p;
        key->len = end - p;
        return key->len ? NGX_OK : NGX_DECLINED;
    }

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {
        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("X-API-Key") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "X-API-Key",
                               sizeof("X-API-Key") - 1) == 0)
        {
            *key = h[i].value;
            return key->len ? NGX_OK : NGX_DECLINED;
        }
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_togglemaster_deny(ngx_http_request_t *r, const char *msg)
{
    ngx_int_t  rc;

    if (ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_togglemaster_shm->key_denied, 1);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    r->headers_out.www_authenticate = ngx_list_push(&r->headers_out.headers);
    if (r->headers_out.www_authenticate == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.www_authenticate->hash = 1;
    ngx_str_set(&r->headers_out.www_authenticate->key, "WWW-Authenticate");
    ngx_str_set(&r->headers_out.www_authenticate->value, "Bearer");

    ngx_http_finalize_request(r,
        ngx_http_togglemaster_send_error(r, NGX_HTTP_UNAUTHORIZED, msg));

    return NGX_DONE;
}


/*
 * NGX_OK when the request carries an API key the snapshot knows,
 * NGX_DECLINED when it carries none, NGX_ABORT when it carries another.
 */
static ngx_int_t
ngx_http_togglemaster_check_key(ngx_http_request_t *r)
{
    char        hex[TM_SHA256_HEX_LEN + 1];
    u_char      bin[32];
    ngx_str_t   key;
    ngx_uint_t  i;

    if (ngx_http_togglemaster_find_key(r, &key) != NGX_OK) {
        return NGX_DECLINED;
    }

    tm_sha256_hex(key.data, key.len, hex);

    for (i = 0; i < 32; i++) {
        bin[i] = (u_char) ngx_hextoi((u_char *) &hex[2 * i], 2);
    }

    if (!ngx_http_togglemaster_key_known(ngx_http_togglemaster_current, bin)) {
        return NGX_ABORT;
    }

    return NGX_OK;
}


/*
 * $togglemaster_bad_key_addr: the client address as $binary_remote_addr
 * gives it (data is that variable's index) when the request carries no
 * API key the snapshot knows, and empty when it carries one. limit_req
 * skips requests whose key is empty, so as a limit_req_zone key it limits
 * guessing per address and never a client holding a valid key. It is read
 * in the preaccess phase, whatever togglemaster_api_key says.
 */
ngx_int_t
ngx_http_togglemaster_bad_key_addr_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_variable_value_t  *addr;

    if (ngx_http_togglemaster_check_key(r) == NGX_OK) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "togglemaster: valid API key, not rate limited");
        v->len = 0;
        v->data = (u_char *) "";
        v->valid = 1;
        v->no_cacheable = 0;
        v->not_found = 0;
        return NGX_OK;
    }

    addr = ngx_http_get_indexed_variable(r, data);
    if (addr == NULL) {
        return NGX_ERROR;
    }

    *v = *addr;

    return NGX_OK;
}


ngx_int_t
ngx_http_togglemaster_access_handler(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_http_togglemaster_loc_conf_t  *tmlcf;

    tmlcf = ngx_http_get_module_loc_conf(r, ngx_http_togglemaster_module);

    if (tmlcf->api_key == 1) {
        rc = ngx_http_togglemaster_check_key(r);

        if (rc == NGX_DECLINED) {
            return ngx_http_togglemaster_deny(r, "missing API key");
        }

        if (rc != NGX_OK) {
            return ngx_http_togglemaster_deny(r, "invalid API key");
        }
    }

    if (tmlcf->require_flag.len) {
        rc = ngx_http_togglemaster_flag_on(r, tmlcf->require_flag.data,
                                           tmlcf->require_flag.len);
        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == 0) {
            return tmlcf->require_status;
        }
    }

    return NGX_DECLINED;
}
