/*
 * Access phase: the API-key check (togglemaster_api_key: a key known to
 * the snapshot, of a scope the location accepts), CORS for locations that
 * accept client keys, flag-gated locations (togglemaster_require), and
 * $togglemaster_bad_key_addr for limit_req. Keys are compared by their
 * SHA-256 against the snapshot's set; the plain key is never logged.
 */

#include "ngx_http_togglemaster_module.h"
#include "tm_hash.h"
#include "tm_records.h"


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


/* 403: the key is known, but of a scope the location does not accept
 * (accepted: SCOPE() bits).
 * "this route needs the server or client scope; the key has readonly" */
static ngx_int_t
ngx_http_togglemaster_forbid(ngx_http_request_t *r, ngx_uint_t accepted,
    tm_scope scope)
{
    u_char      *msg, *p;
    ngx_uint_t   s, n, left;

    if (ngx_http_togglemaster_shm) {
        (void) ngx_atomic_fetch_add(&ngx_http_togglemaster_shm->key_denied, 1);
    }

    msg = ngx_pnalloc(r->pool, 160);
    if (msg == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(msg, "this route needs the ",
                   sizeof("this route needs the ") - 1);

    for (left = accepted, n = 0, s = 0; left; s++) {
        if (!(left & NGX_HTTP_TOGGLEMASTER_SCOPE(s))) {
            continue;
        }

        left &= ~NGX_HTTP_TOGGLEMASTER_SCOPE(s);

        if (n++) {
            p = left ? ngx_cpymem(p, ", ", 2) : ngx_cpymem(p, " or ", 4);
        }

        p = ngx_sprintf(p, "%s", tm_scope_name((tm_scope) s));
    }

    *ngx_sprintf(p, " scope; the key has %s", tm_scope_name(scope)) = '\0';

    ngx_http_finalize_request(r,
        ngx_http_togglemaster_send_error(r, NGX_HTTP_FORBIDDEN,
                                         (const char *) msg));

    return NGX_DONE;
}


ngx_int_t
ngx_http_togglemaster_add_header(ngx_http_request_t *r, const char *key,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *value;

    return NGX_OK;
}


/*
 * The request's API key against the snapshot: NGX_OK when it is known
 * (its SHA-256 into bin, its record into *m), NGX_DECLINED when the
 * request carries none, NGX_ABORT when it carries another.
 */
static ngx_int_t
ngx_http_togglemaster_key_lookup(ngx_http_request_t *r, u_char *bin,
    ngx_http_togglemaster_key_meta_t **m)
{
    char        hex[TM_SHA256_HEX_LEN + 1];
    ngx_str_t   key;
    ngx_uint_t  i;

    if (ngx_http_togglemaster_find_key(r, &key) != NGX_OK) {
        return NGX_DECLINED;
    }

    tm_sha256_hex(key.data, key.len, hex);

    for (i = 0; i < 32; i++) {
        bin[i] = (u_char) ngx_hextoi((u_char *) &hex[2 * i], 2);
    }

    *m = ngx_http_togglemaster_key_find(ngx_http_togglemaster_current, bin);

    return *m ? NGX_OK : NGX_ABORT;
}


/* Browsers call a location that accepts client keys from other origins:
 * every answer allows the configured origin (togglemaster_cors_origin,
 * "*" by default), and a preflight OPTIONS is answered here, before any
 * key is asked for (a preflight carries none). NGX_DECLINED: go on. */
ngx_int_t
ngx_http_togglemaster_cors(ngx_http_request_t *r,
    ngx_http_togglemaster_loc_conf_t *tmlcf)
{
    ngx_int_t  rc;

    static ngx_str_t  any = ngx_string("*");
    static ngx_str_t  origin = ngx_string("Origin");
    static ngx_str_t  expose = ngx_string("ETag");
    static ngx_str_t  methods = ngx_string("POST, OPTIONS");
    static ngx_str_t  headers =
        ngx_string("Authorization, Content-Type, X-API-Key, If-None-Match");
    static ngx_str_t  max_age = ngx_string("600");

    if (ngx_http_togglemaster_add_header(r, "Access-Control-Allow-Origin",
                                         tmlcf->cors_origin.len
                                         ? &tmlcf->cors_origin : &any)
        != NGX_OK
        || (tmlcf->cors_origin.len
            && ngx_http_togglemaster_add_header(r, "Vary", &origin) != NGX_OK)
        || ngx_http_togglemaster_add_header(r,
               "Access-Control-Expose-Headers", &expose) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (r->method != NGX_HTTP_OPTIONS) {
        return NGX_DECLINED;
    }

    if (ngx_http_togglemaster_add_header(r, "Access-Control-Allow-Methods",
                                         &methods) != NGX_OK
        || ngx_http_togglemaster_add_header(r,
               "Access-Control-Allow-Headers", &headers) != NGX_OK
        || ngx_http_togglemaster_add_header(r, "Access-Control-Max-Age",
                                            &max_age) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    ngx_http_finalize_request(r, ngx_http_send_header(r));

    return NGX_DONE;
}


/* The key check: NGX_DECLINED if the request may go on (its key's hash
 * kept for the content phase), else the answer was given. */
static ngx_int_t
ngx_http_togglemaster_check_key(ngx_http_request_t *r,
    ngx_http_togglemaster_loc_conf_t *tmlcf)
{
    u_char                             bin[32];
    ngx_int_t                          rc;
    ngx_http_togglemaster_ctx_t       *ctx;
    ngx_http_togglemaster_key_meta_t  *m;

    if (tmlcf->api_key & NGX_HTTP_TOGGLEMASTER_SCOPE(TM_SCOPE_CLIENT)) {
        rc = ngx_http_togglemaster_cors(r, tmlcf);
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    rc = ngx_http_togglemaster_key_lookup(r, bin, &m);

    if (rc == NGX_DECLINED) {
        return ngx_http_togglemaster_deny(r, "missing API key");
    }

    if (rc != NGX_OK) {
        return ngx_http_togglemaster_deny(r, "invalid API key");
    }

    if (!(NGX_HTTP_TOGGLEMASTER_SCOPE(m->scope) & tmlcf->api_key)) {
        return ngx_http_togglemaster_forbid(r, tmlcf->api_key,
                                            (tm_scope) m->scope);
    }

    ctx = ngx_http_togglemaster_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(ctx->bin, bin, 32);
    ctx->keyed = 1;

    ngx_http_togglemaster_sync_key_used(bin, r->connection->log);

    return NGX_DECLINED;
}


/*
 * $togglemaster_bad_key_addr: the client address as $binary_remote_addr
 * gives it (data is that variable's index) when the request carries no
 * API key the snapshot knows, and empty when it carries one (of any scope,
 * for any environment: a valid key is never the guessing this limits).
 * limit_req skips requests whose key is empty, so as a limit_req_zone key
 * it limits guessing per address and never a client holding a valid key.
 * It is read in the preaccess phase, whatever togglemaster_api_key says.
 */
ngx_int_t
ngx_http_togglemaster_bad_key_addr_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                             bin[32];
    ngx_http_variable_value_t         *addr;
    ngx_http_togglemaster_key_meta_t  *m;

    if (ngx_http_togglemaster_key_lookup(r, bin, &m) == NGX_OK) {
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

    if (tmlcf->api_key) {
        rc = ngx_http_togglemaster_check_key(r, tmlcf);
        if (rc != NGX_DECLINED) {
            return rc;
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
