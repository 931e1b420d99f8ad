/*
 * Evaluation on the request path: snapshot lookup + lib's tm_decide(), and
 * the original GET /evaluate endpoint. Everything allocated here comes from
 * the request pool.
 */

#include "ngx_http_togglemaster_module.h"


tm_decision
ngx_http_togglemaster_decide(ngx_http_togglemaster_flag_t *f, u_char *user,
    size_t ulen, u_char *name, size_t nlen)
{
    tm_decision  d;

    if (f == NULL) {
        d = tm_decide(TM_FLAG_MISSING, 0, 0, NULL, (char *) user, ulen,
                      (char *) name, nlen);
        ngx_http_togglemaster_count(NGX_HTTP_TOGGLEMASTER_SLOT_UNKNOWN, 0);
        return d;
    }

    d = tm_decide(f->flag, f->rule_present, f->rule_enabled, f->rule,
                  (char *) user, ulen, (char *) f->name.data, f->name.len);

    ngx_http_togglemaster_count(f->counter, d.value);

    return d;
}


/* The identity for flag variables and togglemaster_require. */
ngx_int_t
ngx_http_togglemaster_identity(ngx_http_request_t *r, ngx_str_t *id)
{
    ngx_http_togglemaster_loc_conf_t  *tmlcf;

    tmlcf = ngx_http_get_module_loc_conf(r, ngx_http_togglemaster_module);

    id->len = 0;
    id->data = (u_char *) "";

    if (tmlcf->identity == NULL) {
        return NGX_OK;
    }

    if (ngx_http_complex_value(r, tmlcf->identity, id) != NGX_OK) {
        return NGX_ERROR;
    }

    if (id->len > NGX_HTTP_TOGGLEMASTER_IDENTITY_MAX) {
        id->len = 0;
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* 1 if the flag is on for this request's identity, 0 if not, NGX_ERROR. */
ngx_int_t
ngx_http_togglemaster_flag_on(ngx_http_request_t *r, u_char *name, size_t len)
{
    ngx_int_t                      rc;
    ngx_str_t                      id;
    tm_decision                    d;
    ngx_http_togglemaster_flag_t  *f;

    rc = ngx_http_togglemaster_identity(r, &id);
    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    f = ngx_http_togglemaster_flag_lookup(ngx_http_togglemaster_current,
                                          name, len);

    if (rc == NGX_DECLINED && f && f->rule_present && f->rule_enabled) {
        /* identity too long to target: false, and its event is counted
         * as dropped for its length */
        d.value = 0;
        d.reason = TM_REASON_DEFAULT;
        ngx_http_togglemaster_event(NULL, NGX_HTTP_TOGGLEMASTER_IDENTITY_MAX
                                          + 1, name, len, &d, NULL);
        return 0;
    }

    d = ngx_http_togglemaster_decide(f, id.data, id.len, name, len);

    ngx_http_togglemaster_event(id.data, id.len, f ? f->name.data : name,
                                f ? f->name.len : len, &d, NULL);

    return d.value ? 1 : 0;
}


ngx_int_t
ngx_http_togglemaster_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len)
{
    ngx_int_t    rc;
    ngx_buf_t   *b;
    ngx_chain_t  out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (len == 0 || r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
        return ngx_http_send_header(r);
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_togglemaster_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *msg)
{
    size_t   len;
    u_char  *body, *p;

    len = ngx_strlen(msg);

    body = ngx_pnalloc(r->pool, sizeof("{\"error\":}") - 1
                       + ngx_http_togglemaster_json_str_len((u_char *) msg,
                                                            len));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"error\":", sizeof("{\"error\":") - 1);
    p = ngx_http_togglemaster_json_str(p, (u_char *) msg, len);
    *p++ = '}';

    return ngx_http_togglemaster_send_json(r, status, body, p - body);
}


/* Query argument, '+' as space and %XX decoded, into the request pool. */
static ngx_int_t
ngx_http_togglemaster_arg(ngx_http_request_t *r, const char *name,
    ngx_str_t *out)
{
    u_char     *src, *dst, *p;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK
        || raw.len == 0)
    {
        return NGX_DECLINED;
    }

    p = ngx_pnalloc(r->pool, raw.len * 2);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, raw.data, raw.len);
    for (src = p; src < p + raw.len; src++) {
        if (*src == '+') {
            *src = ' ';
        }
    }

    src = p;
    dst = p + raw.len;
    out->data = dst;
    ngx_unescape_uri(&dst, &src, raw.len, 0);
    out->len = dst - out->data;

    return out->len ? NGX_OK : NGX_DECLINED;
}


ngx_int_t
ngx_http_togglemaster_evaluate_handler(ngx_http_request_t *r)
{
    u_char                        *body, *p;
    size_t                         len;
    ngx_int_t                      rc;
    ngx_str_t                      user, flag;
    tm_decision                    d;
    ngx_http_togglemaster_flag_t  *f;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_togglemaster_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                                "use GET");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_togglemaster_arg(r, "user_id", &user);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_togglemaster_send_error(r, NGX_HTTP_BAD_REQUEST,
                                     "user_id and flag_name are required");
    }

    rc = ngx_http_togglemaster_arg(r, "flag_name", &flag);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_togglemaster_send_error(r, NGX_HTTP_BAD_REQUEST,
                                     "user_id and flag_name are required");
    }

    if (user.len > NGX_HTTP_TOGGLEMASTER_IDENTITY_MAX) {
        return ngx_http_togglemaster_send_error(r, NGX_HTTP_BAD_REQUEST,
                                     "user_id is longer than 4096 bytes");
    }

    if (!tm_text_valid((char *) user.data, user.len)
        || !tm_text_valid((char *) flag.data, flag.len))
    {
        return ngx_http_togglemaster_send_error(r, NGX_HTTP_BAD_REQUEST,
                     "user_id and flag_name must be UTF-8 text "
                     "without control characters");
    }

    f = ngx_http_togglemaster_flag_lookup(ngx_http_togglemaster_current,
                                          flag.data, flag.len);

    d = ngx_http_togglemaster_decide(f, user.data, user.len,
                                     flag.data, flag.len);

    ngx_http_togglemaster_event(user.data, user.len, flag.data, flag.len, &d,
                                NULL);

    len = sizeof("{\"flag_name\":,\"user_id\":,\"result\":false}") - 1
          + ngx_http_togglemaster_json_str_len(flag.data, flag.len)
          + ngx_http_togglemaster_json_str_len(user.data, user.len);

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"flag_name\":", sizeof("{\"flag_name\":") - 1);
    p = ngx_http_togglemaster_json_str(p, flag.data, flag.len);
    p = ngx_cpymem(p, ",\"user_id\":", sizeof(",\"user_id\":") - 1);
    p = ngx_http_togglemaster_json_str(p, user.data, user.len);
    p = d.value ? ngx_cpymem(p, ",\"result\":true}", 15)
                : ngx_cpymem(p, ",\"result\":false}", 16);

    return ngx_http_togglemaster_send_json(r, NGX_HTTP_OK, body, p - body);
}


ngx_int_t
ngx_http_togglemaster_health_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_togglemaster_send_json(r, NGX_HTTP_OK,
                                           (u_char *) "{\"status\":\"ok\"}",
                                           sizeof("{\"status\":\"ok\"}") - 1);
}
