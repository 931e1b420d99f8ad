/*
 * OpenFeature Remote Evaluation Protocol (OFREP):
 *   POST .../ofrep/v1/evaluate/flags/{key}   one flag
 *   POST .../ofrep/v1/evaluate/flags         every flag, with ETag / 304
 * Body: {"context": {"targetingKey": "...", ...}}. Flags are boolean: the
 * variant is "on" or "off".
 */

#include "ngx_http_togglemaster_module.h"

#include <ngx_md5.h>
#include <jansson.h>


#define NGX_HTTP_TOGGLEMASTER_OFREP_BODY_MAX  65536


typedef struct {
    ngx_str_t    key;          /* flag key, single evaluation */
    ngx_uint_t   bulk;
} ngx_http_togglemaster_ofrep_ctx_t;


static ngx_int_t
ngx_http_togglemaster_ofrep_error(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *key, const char *code, const char *details)
{
    u_char  *body, *p;
    size_t   len;

    len = sizeof("{\"key\":,\"errorCode\":\"\",\"errorDetails\":}") - 1
          + ngx_strlen(code)
          + ngx_http_togglemaster_json_str_len((u_char *) details,
                                               ngx_strlen(details))
          + (key ? ngx_http_togglemaster_json_str_len(key->data, key->len)
                 : 0);

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{", 1);

    if (key) {
        p = ngx_cpymem(p, "\"key\":", sizeof("\"key\":") - 1);
        p = ngx_http_togglemaster_json_str(p, key->data, key->len);
        *p++ = ',';
    }

    p = ngx_sprintf(p, "\"errorCode\":\"%s\",\"errorDetails\":", code);
    p = ngx_http_togglemaster_json_str(p, (u_char *) details,
                                       ngx_strlen(details));
    *p++ = '}';

    return ngx_http_togglemaster_send_json(r, status, body, p - body);
}


/* One evaluation result object, or an error object for a flag that needs a
 * targeting key the request did not give. */
static u_char *
ngx_http_togglemaster_ofrep_result(u_char *p, ngx_http_togglemaster_flag_t *f,
    ngx_str_t *tk, ngx_uint_t has_key)
{
    tm_decision  d;

    p = ngx_cpymem(p, "{\"key\":", sizeof("{\"key\":") - 1);
    p = ngx_http_togglemaster_json_str(p, f->name.data, f->name.len);

    if (!has_key && f->flag == TM_FLAG_ON && f->rule_present
        && f->rule_enabled)
    {
        return ngx_cpymem(p, ",\"errorCode\":\"TARGETING_KEY_MISSING\","
                          "\"errorDetails\":\"this flag targets users: "
                          "context.targetingKey is required\"}",
                          sizeof(",\"errorCode\":\"TARGETING_KEY_MISSING\","
                                 "\"errorDetails\":\"this flag targets users: "
                                 "context.targetingKey is required\"}") - 1);
    }

    d = ngx_http_togglemaster_decide(f, tk->data, tk->len, f->name.data,
                                     f->name.len);

    ngx_http_togglemaster_event(tk->data, tk->len, f->name.data, f->name.len,
                                &d, d.value ? "on" : "off");

    return ngx_sprintf(p, ",\"value\":%s,\"variant\":\"%s\",\"reason\":\"%s\","
                       "\"metadata\":{}}",
                       d.value ? "true" : "false", d.value ? "on" : "off",
                       tm_reason_name(d.reason));
}

#define NGX_HTTP_TOGGLEMASTER_OFREP_RESULT_MAX                                \
    (sizeof("{\"key\":,\"errorCode\":\"TARGETING_KEY_MISSING\","              \
            "\"errorDetails\":\"this flag targets users: "                    \
            "context.targetingKey is required\"}") + 2 + TM_NAME_MAX * 6 + 64)


/* Parses the body; NGX_OK with tk set (has_key 0 or 1), else an error was
 * sent and its rc is in *rc. */
static ngx_int_t
ngx_http_togglemaster_ofrep_context(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *tk, ngx_uint_t *has_key, ngx_int_t *rc)
{
    u_char        *data;
    size_t         len;
    json_t        *doc, *ctx, *t;
    ngx_buf_t     *b;
    ngx_chain_t   *cl;

    tk->len = 0;
    tk->data = (u_char *) "";
    *has_key = 0;

    if (r->request_body == NULL || r->request_body->temp_file) {
        *rc = ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_BAD_REQUEST, key,
                  "PARSE_ERROR", "request body too large");
        return NGX_ERROR;
    }

    len = 0;
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len == 0) {
        *rc = ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_BAD_REQUEST, key,
                  "PARSE_ERROR", "a JSON body with \"context\" is required");
        return NGX_ERROR;
    }

    if (len > NGX_HTTP_TOGGLEMASTER_OFREP_BODY_MAX) {
        *rc = ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_BAD_REQUEST, key,
                  "PARSE_ERROR", "request body too large");
        return NGX_ERROR;
    }

    data = ngx_pnalloc(r->pool, len);
    if (data == NULL) {
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_ERROR;
    }

    len = 0;
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        if (b->in_file) {
            *rc = ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_BAD_REQUEST,
                      key, "PARSE_ERROR", "request body too large");
            return NGX_ERROR;
        }

        ngx_memcpy(data + len, b->pos, b->last - b->pos);
        len += b->last - b->pos;
    }

    ngx_http_togglemaster_json_pool(r->pool);
    doc = json_loadb((char *) data, len, 0, NULL);
    ngx_http_togglemaster_json_pool(NULL);

    if (doc == NULL || !json_is_object(doc)) {
        *rc = ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_BAD_REQUEST, key,
                  "PARSE_ERROR", "the body must be a JSON object");
        return NGX_ERROR;
    }

    ctx = json_object_get(doc, "context");

    if (ctx == NULL || json_is_null(ctx)) {
        return NGX_OK;
    }

    if (!json_is_object(ctx)) {
        *rc = ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_BAD_REQUEST, key,
                  "INVALID_CONTEXT", "\"context\" must be an object");
        return NGX_ERROR;
    }

    t = json_object_get(ctx, "targetingKey");

    if (t == NULL || json_is_null(t)) {
        return NGX_OK;
    }

    if (!json_is_string(t)
        || json_string_length(t) > NGX_HTTP_TOGGLEMASTER_IDENTITY_MAX)
    {
        *rc = ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_BAD_REQUEST, key,
                  "INVALID_CONTEXT", "\"context.targetingKey\" must be a "
                  "string of at most 4096 bytes");
        return NGX_ERROR;
    }

    /* the string lives in the request pool, like the whole document */
    tk->data = (u_char *) json_string_value(t);
    tk->len = json_string_length(t);
    *has_key = tk->len > 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_togglemaster_ofrep_single(ngx_http_request_t *r, ngx_str_t *key)
{
    u_char                        *body, *p;
    ngx_int_t                      rc;
    ngx_str_t                      tk;
    ngx_uint_t                     has_key;
    tm_decision                    d;
    ngx_http_togglemaster_flag_t  *f;

    if (ngx_http_togglemaster_ofrep_context(r, key, &tk, &has_key, &rc)
        != NGX_OK)
    {
        return rc;
    }

    f = ngx_http_togglemaster_flag_lookup(ngx_http_togglemaster_current,
                                          key->data, key->len);

    if (f == NULL || f->flag == TM_FLAG_MISSING) {
        ngx_http_togglemaster_count(NGX_HTTP_TOGGLEMASTER_SLOT_UNKNOWN, 0);

        d.value = 0;
        d.reason = TM_REASON_UNKNOWN;
        ngx_http_togglemaster_event(tk.data, tk.len, key->data, key->len, &d,
                                    NULL);

        return ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_NOT_FOUND, key,
                   "FLAG_NOT_FOUND", "flag not found");
    }

    if (!has_key && f->flag == TM_FLAG_ON && f->rule_present
        && f->rule_enabled)
    {
        return ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_BAD_REQUEST, key,
                   "TARGETING_KEY_MISSING",
                   "this flag targets users: context.targetingKey is "
                   "required");
    }

    body = ngx_pnalloc(r->pool, NGX_HTTP_TOGGLEMASTER_OFREP_RESULT_MAX);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_http_togglemaster_ofrep_result(body, f, &tk, has_key);

    return ngx_http_togglemaster_send_json(r, NGX_HTTP_OK, body, p - body);
}


static ngx_int_t
ngx_http_togglemaster_ofrep_bulk(ngx_http_request_t *r)
{
    u_char                            *body, *p, *etag;
    u_char                             md[16];
    ngx_int_t                          rc;
    ngx_str_t                          tk;
    ngx_uint_t                         i, has_key;
    ngx_md5_t                          md5;
    ngx_table_elt_t                   *h;
    ngx_http_togglemaster_snapshot_t  *snap;

    if (ngx_http_togglemaster_ofrep_context(r, NULL, &tk, &has_key, &rc)
        != NGX_OK)
    {
        return rc;
    }

    snap = ngx_http_togglemaster_current;

    body = ngx_pnalloc(r->pool, sizeof("{\"flags\":[]}")
                       + (snap ? snap->nflags : 0)
                         * NGX_HTTP_TOGGLEMASTER_OFREP_RESULT_MAX);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"flags\":[", sizeof("{\"flags\":[") - 1);

    for (i = 0; snap && i < snap->nflags; i++) {
        if (snap->flags[i].flag == TM_FLAG_MISSING) {
            continue;
        }

        if (p[-1] == '}') {
            *p++ = ',';
        }

        p = ngx_http_togglemaster_ofrep_result(p, &snap->flags[i], &tk,
                                               has_key);
    }

    p = ngx_cpymem(p, "]}", 2);

    /* the ETag names the answer itself, so it changes exactly when the
     * answer does, whatever changed underneath */
    ngx_md5_init(&md5);
    ngx_md5_update(&md5, body, p - body);
    ngx_md5_final(md, &md5);

    etag = ngx_pnalloc(r->pool, 2 + 32);
    if (etag == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    etag[0] = '"';
    ngx_hex_dump(etag + 1, md, 16);
    etag[33] = '"';

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "ETag");
    h->value.data = etag;
    h->value.len = 34;
    r->headers_out.etag = h;

    if (r->headers_in.if_none_match
        && (ngx_strlcasestrn(r->headers_in.if_none_match->value.data,
                             r->headers_in.if_none_match->value.data
                             + r->headers_in.if_none_match->value.len,
                             etag, 34 - 1)
            || (r->headers_in.if_none_match->value.len == 1
                && r->headers_in.if_none_match->value.data[0] == '*')))
    {
        r->headers_out.status = NGX_HTTP_NOT_MODIFIED;
        r->header_only = 1;
        r->headers_out.content_length_n = -1;
        return ngx_http_send_header(r);
    }

    return ngx_http_togglemaster_send_json(r, NGX_HTTP_OK, body, p - body);
}


static void
ngx_http_togglemaster_ofrep_body(ngx_http_request_t *r)
{
    ngx_http_togglemaster_ofrep_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_togglemaster_module);

    ngx_http_finalize_request(r, ctx->bulk
                                 ? ngx_http_togglemaster_ofrep_bulk(r)
                                 : ngx_http_togglemaster_ofrep_single(r,
                                                                &ctx->key));
}


ngx_int_t
ngx_http_togglemaster_ofrep_handler(ngx_http_request_t *r)
{
    u_char                             *p, *last;
    ngx_int_t                           rc;
    ngx_str_t                           tail;
    ngx_http_togglemaster_ofrep_ctx_t  *ctx;

    static ngx_str_t  path = ngx_string("/ofrep/v1/evaluate/flags");

    /* the location may sit under any prefix: find the protocol path */
    p = ngx_strlcasestrn(r->uri.data, r->uri.data + r->uri.len,
                         path.data, path.len - 1);
    if (p == NULL) {
        return ngx_http_togglemaster_send_error(r, NGX_HTTP_NOT_FOUND,
                                                "unknown OFREP path");
    }

    last = r->uri.data + r->uri.len;
    tail.data = p + path.len;
    tail.len = last - tail.data;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_togglemaster_ofrep_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (tail.len == 0 || (tail.len == 1 && tail.data[0] == '/')) {
        ctx->bulk = 1;

    } else if (tail.data[0] == '/' && tail.len > 1) {
        ctx->key.data = tail.data + 1;
        ctx->key.len = tail.len - 1;

    } else {
        return ngx_http_togglemaster_send_error(r, NGX_HTTP_NOT_FOUND,
                                                "unknown OFREP path");
    }

    if (r->method != NGX_HTTP_POST) {
        return ngx_http_togglemaster_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                                "use POST");
    }

    if (r->headers_in.content_length_n > NGX_HTTP_TOGGLEMASTER_OFREP_BODY_MAX)
    {
        return ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_BAD_REQUEST,
                   ctx->bulk ? NULL : &ctx->key, "PARSE_ERROR",
                   "request body too large");
    }

    ngx_http_set_ctx(r, ctx, ngx_http_togglemaster_module);

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_togglemaster_ofrep_body);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}
