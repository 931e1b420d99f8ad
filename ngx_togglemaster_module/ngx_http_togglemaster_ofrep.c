/*
 * OpenFeature Remote Evaluation Protocol (OFREP):
 *   POST .../ofrep/v1/evaluate/flags/{key}   one flag
 *   POST .../ofrep/v1/evaluate/flags         every flag, with ETag / 304;
 *        ?flagConfigEtag=&flagConfigLastModified= on a refetch an event
 *        stream triggered (refetch.c)
 * Body: {"context": {"targetingKey": "...", ...}}: the identity and the
 * attributes rules target. The variant is the rule's variant, else "on" or
 * "off"; the value its payload, else the flag's boolean.
 */

#include "ngx_http_togglemaster_module.h"

#include <ngx_md5.h>
#include <jansson.h>


#define NGX_HTTP_TOGGLEMASTER_OFREP_BODY_MAX  65536

#define NGX_HTTP_TOGGLEMASTER_OFREP_STALE                                     \
    ",\"metadata\":{\"stale\":true,\"snapshotVersion\":%L,"                  \
    "\"eventVersion\":%L}"


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


/* One flag's evaluation for a response, computed before its size. */
typedef struct {
    ngx_http_togglemaster_flag_t  *flag;
    tm_eval_result                 res;
    const char                    *code;      /* evaluation failure, else NULL */
    const char                    *details;
} ngx_http_togglemaster_ofrep_item_t;


static ngx_int_t ngx_http_togglemaster_ofrep_bulk(ngx_http_request_t *r);


#define NGX_HTTP_TOGGLEMASTER_OFREP_TKM                                       \
    "this flag targets users: context.targetingKey is required"


/* Evaluates f for ctx in environment e into it (with its event), or says
 * why not; a bulk request pays its flags from rb. */
static void
ngx_http_togglemaster_ofrep_eval(ngx_http_togglemaster_ofrep_item_t *it,
    ngx_http_togglemaster_flag_t *f, tm_context *ctx,
    ngx_http_togglemaster_env_ref_t *e, tm_request_budget *rb)
{
    tm_decision     d;
    const char     *variant;
    unsigned long   refused;

    it->flag = f;
    it->code = NULL;
    it->details = NULL;

    /* the original rules bucket the identity: without one they cannot
     * answer; strategies documents work on any context */
    if (ctx->key_len == 0 && f->flag == TM_FLAG_ON && f->rule_present
        && f->rule_enabled && f->rule && f->rule->type != TM_RULE_STRATEGIES)
    {
        it->code = "TARGETING_KEY_MISSING";
        it->details = NGX_HTTP_TOGGLEMASTER_OFREP_TKM;
        return;
    }

    refused = rb ? rb->refused : 0;

    (void) ngx_http_togglemaster_evaluate(f, e->index, ctx, rb, &it->res);

    d.value = it->res.value;
    d.reason = it->res.reason;

    variant = it->res.variant ? it->res.variant
                              : (it->res.value ? "on" : "off");

    if (rb) {
        ngx_http_togglemaster_event_bulk((u_char *) ctx->key, ctx->key_len,
                                         f->name.data, f->name.len, &d,
                                         variant, &e->name);

    } else {
        ngx_http_togglemaster_event((u_char *) ctx->key, ctx->key_len,
                                    f->name.data, f->name.len, &d, variant,
                                    &e->name);
    }

    if (rb && rb->refused != refused) {
        /* the request's budget is spent: nothing about the rule, so any
         * key may read why (the flag alone would be evaluated) */
        it->code = "GENERAL";
        it->details = it->res.error;

    } else if (it->res.reason == TM_REASON_ERROR) {
        /* a stored rule that does not compile cannot be parsed; anything
         * else (a dependency chain too deep) is general. A client key
         * never sees a rule, not even quoted in a compiler's message. */
        it->code = f->rule ? "GENERAL" : "PARSE_ERROR";
        it->details = (it->res.error && e->scope != NGX_HTTP_TOGGLEMASTER_SCOPE(TM_SCOPE_CLIENT))
                      ? it->res.error : "the flag could not be evaluated";
    }
}


static size_t
ngx_http_togglemaster_ofrep_item_len(ngx_http_togglemaster_ofrep_item_t *it)
{
    size_t           len;
    tm_eval_result  *res;

    len = sizeof("{\"key\":}") - 1
          + ngx_http_togglemaster_json_str_len(it->flag->name.data,
                                               it->flag->name.len);

    if (it->code) {
        return len + sizeof(",\"errorCode\":\"\",\"errorDetails\":") - 1
               + ngx_strlen(it->code)
               + ngx_http_togglemaster_json_str_len((u_char *) it->details,
                                                    ngx_strlen(it->details));
    }

    res = &it->res;

    len += sizeof(",\"value\":,\"variant\":,\"reason\":\"\","
                  "\"metadata\":{\"enabled\":false}") - 1
           + sizeof("TARGETING_MATCH") - 1;

    len += res->variant
           ? ngx_http_togglemaster_json_str_len((u_char *) res->variant,
                                                res->variant_len)
           : sizeof("\"off\"") - 1;

    if (res->payload == NULL) {
        len += sizeof("false") - 1;

    } else if (res->payload_type == TM_PAYLOAD_STRING) {
        len += ngx_http_togglemaster_json_str_len((u_char *) res->payload,
                                                  res->payload_len);

    } else {
        len += res->payload_len;
    }

    return len;
}


/*
 * {"key","value","variant","reason","metadata":{"enabled"}}: value is the
 * variant's payload when it has one (typed: a JSON string, number, boolean
 * or object), else the flag's on/off, which metadata.enabled always
 * carries. Or {"key","errorCode","errorDetails"}.
 */
static u_char *
ngx_http_togglemaster_ofrep_item(u_char *p,
    ngx_http_togglemaster_ofrep_item_t *it)
{
    tm_eval_result  *res;

    p = ngx_cpymem(p, "{\"key\":", sizeof("{\"key\":") - 1);
    p = ngx_http_togglemaster_json_str(p, it->flag->name.data,
                                       it->flag->name.len);

    if (it->code) {
        p = ngx_sprintf(p, ",\"errorCode\":\"%s\",\"errorDetails\":",
                        it->code);
        p = ngx_http_togglemaster_json_str(p, (u_char *) it->details,
                                           ngx_strlen(it->details));
        *p++ = '}';
        return p;
    }

    res = &it->res;

    p = ngx_cpymem(p, ",\"value\":", sizeof(",\"value\":") - 1);

    if (res->payload == NULL) {
        p = res->value ? ngx_cpymem(p, "true", 4) : ngx_cpymem(p, "false", 5);

    } else if (res->payload_type == TM_PAYLOAD_STRING) {
        p = ngx_http_togglemaster_json_str(p, (u_char *) res->payload,
                                           res->payload_len);

    } else {
        /* JSON, number and boolean payloads are compact JSON text */
        p = ngx_cpymem(p, res->payload, res->payload_len);
    }

    p = ngx_cpymem(p, ",\"variant\":", sizeof(",\"variant\":") - 1);

    if (res->variant) {
        p = ngx_http_togglemaster_json_str(p, (u_char *) res->variant,
                                           res->variant_len);

    } else {
        p = res->value ? ngx_cpymem(p, "\"on\"", 4)
                       : ngx_cpymem(p, "\"off\"", 5);
    }

    return ngx_sprintf(p, ",\"reason\":\"%s\",\"metadata\":{\"enabled\":%s}}",
                       tm_reason_name(res->reason),
                       res->value ? "true" : "false");
}


/* Parses the body into ctx (identity: targetingKey, else userId; the
 * context's members as attributes, then togglemaster_context ones); NGX_OK,
 * else an error was sent and its rc is in *rc. */
static ngx_int_t
ngx_http_togglemaster_ofrep_context(ngx_http_request_t *r, ngx_str_t *key,
    tm_context *tctx, ngx_int_t *rc)
{
    int                  prc;
    char                 err[160];
    u_char              *data;
    size_t               len;
    ngx_buf_t           *b;
    const char          *code;
    ngx_chain_t         *cl;
    ngx_pool_cleanup_t  *cln;

    tm_context_init(tctx, NULL, 0, NULL, 0);

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

    /* lib/tm_context.c reads the body (and is fuzzed there); jansson
     * allocates from the request pool meanwhile */
    ngx_http_togglemaster_json_pool(r->pool);
    prc = tm_context_from_ofrep(tctx, (char *) data, len, &code, err,
                                sizeof(err));
    ngx_http_togglemaster_json_pool(NULL);

    if (prc != 0) {
        *rc = ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_BAD_REQUEST, key,
                                                code, err);
        return NGX_ERROR;
    }

    /* the context's one malloc'ed block lives as long as the request */
    if (tctx->owned) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            tm_context_free(tctx);
            *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            return NGX_ERROR;
        }

        cln->handler = free;
        cln->data = tctx->owned;
        tctx->owned = NULL;
    }

    if (ngx_http_togglemaster_context_conf(r, tctx, (tm_attr *) tctx->attrs,
                                           tctx->nattrs)
        != NGX_OK)
    {
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* 1 if f is a flag the request may see: any for a server or admin key,
 * only those marked client_visible for a client key (a hidden flag reads
 * as missing: its existence does not leak) */
static ngx_uint_t
ngx_http_togglemaster_ofrep_visible(ngx_http_togglemaster_flag_t *f,
    ngx_http_togglemaster_env_ref_t *e)
{
    return f && f->flag != TM_FLAG_MISSING
           && (e->scope != NGX_HTTP_TOGGLEMASTER_SCOPE(TM_SCOPE_CLIENT) || f->client_visible);
}


static ngx_int_t
ngx_http_togglemaster_ofrep_single(ngx_http_request_t *r, ngx_str_t *key)
{
    u_char                              *body, *p;
    ngx_int_t                            rc;
    tm_context                           ctx;
    tm_decision                          d;
    ngx_http_togglemaster_flag_t        *f;
    ngx_http_togglemaster_env_ref_t      e;
    ngx_http_togglemaster_ofrep_item_t   it;

    if (ngx_http_togglemaster_ofrep_context(r, key, &ctx, &rc) != NGX_OK) {
        return rc;
    }

    if (ngx_http_togglemaster_request_env(r, 1, &e) != NGX_OK) {
        return ngx_http_togglemaster_ofrep_error(r, e.status, key, "GENERAL",
                                                 e.error);
    }

    f = ngx_http_togglemaster_env_flag_lookup(ngx_http_togglemaster_current,
                                              e.index, key->data, key->len);

    if (!ngx_http_togglemaster_ofrep_visible(f, &e)) {
        ngx_http_togglemaster_count(NGX_HTTP_TOGGLEMASTER_SLOT_UNKNOWN, 0);

        d.value = 0;
        d.reason = TM_REASON_UNKNOWN;
        ngx_http_togglemaster_event((u_char *) ctx.key, ctx.key_len,
                                    key->data, key->len, &d, NULL, &e.name);

        return ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_NOT_FOUND, key,
                   "FLAG_NOT_FOUND", "flag not found");
    }

    ngx_http_togglemaster_ofrep_eval(&it, f, &ctx, &e, NULL);

    if (it.code) {
        return ngx_http_togglemaster_ofrep_error(r, NGX_HTTP_BAD_REQUEST, key,
                                                 it.code, it.details);
    }

    body = ngx_pnalloc(r->pool, ngx_http_togglemaster_ofrep_item_len(&it));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_http_togglemaster_ofrep_item(body, &it);

    return ngx_http_togglemaster_send_json(r, NGX_HTTP_OK, body, p - body);
}


/* A bulk answer with its ETag, or 304 if the request's If-None-Match names
 * it. The ETag names the evaluations and the stream URL: a client whose
 * stream token expired gets the new URL, not a 304 that would leave it
 * retrying the old one (the URL changes a few times per token lifetime,
 * sse.c). */
static ngx_int_t
ngx_http_togglemaster_ofrep_send_etagged(ngx_http_request_t *r, u_char *body,
    size_t len)
{
    u_char            *etag;
    u_char             md[16];
    ngx_md5_t          md5;
    ngx_table_elt_t   *h;

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, body, len);
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

    return ngx_http_togglemaster_send_json(r, NGX_HTTP_OK, body, len);
}


/* A refetch an event triggered: NGX_OK to answer now (*stale: with a
 * snapshot older than the event's), NGX_DONE if parked until the version
 * comes, else an error's rc. The answer must not come from a cache. */
static ngx_int_t
ngx_http_togglemaster_ofrep_refetch(ngx_http_request_t *r,
    ngx_http_togglemaster_ctx_t *rctx, ngx_uint_t env_index,
    ngx_uint_t *stale)
{
    ngx_str_t                          v;
    ngx_http_togglemaster_loc_conf_t  *tmlcf;

    static ngx_str_t  no_store = ngx_string("no-store");

    *stale = 0;

    if (!rctx->refetch && !rctx->refetch_lm) {
        return NGX_OK;
    }

    if (!ngx_http_togglemaster_refetch_behind(rctx, env_index)) {
        return ngx_http_togglemaster_add_header(r, "Cache-Control", &no_store)
               == NGX_OK ? NGX_OK : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    tmlcf = ngx_http_get_module_loc_conf(r, ngx_http_togglemaster_module);

    if (!rctx->refetch_waited && tmlcf->sse_refetch_wait) {
        /* evaluated again when it is answered */
        if (ngx_http_togglemaster_refetch_wait(r, tmlcf->sse_refetch_wait,
                ngx_http_togglemaster_ofrep_bulk)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return NGX_DONE;
    }

    *stale = 1;

    v.data = ngx_pnalloc(r->pool, sizeof("version=; wanted=") - 1
                                  + 2 * NGX_INT64_LEN);
    if (v.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    v.len = ngx_sprintf(v.data, "version=%L; wanted=%L",
                        ngx_http_togglemaster_current
                        ? ngx_http_togglemaster_current->version : 0,
                        rctx->refetch_id)
            - v.data;

    return (ngx_http_togglemaster_add_header(r, "TM-Stale", &v) == NGX_OK
            && ngx_http_togglemaster_add_header(r, "Cache-Control",
                                                &no_store) == NGX_OK)
           ? NGX_OK : NGX_HTTP_INTERNAL_SERVER_ERROR;
}


static ngx_int_t
ngx_http_togglemaster_ofrep_bulk(ngx_http_request_t *r)
{
    u_char                              *body, *p;
    size_t                               len;
    ngx_int_t                            rc;
    ngx_uint_t                           i, n, stale;
    tm_context                           ctx;
    const char                          *msg;
    ngx_str_t                            streams;
    ngx_http_togglemaster_ctx_t         *rctx;
    ngx_http_togglemaster_flags_t       *fp;
    tm_request_budget                    rb;
    ngx_http_togglemaster_env_ref_t      e;
    ngx_http_togglemaster_ofrep_item_t  *items;
    ngx_http_togglemaster_loc_conf_t    *tmlcf;

    static ngx_str_t  default_env = ngx_string("default");

    rctx = ngx_http_get_module_ctx(r, ngx_http_togglemaster_module);

    /* checked before anything is evaluated (and counted) */
    if (!rctx->refetch_waited
        && ngx_http_togglemaster_refetch_args(r, rctx, &msg) != NGX_OK)
    {
        return msg ? ngx_http_togglemaster_ofrep_error(r,
                         NGX_HTTP_BAD_REQUEST, NULL, "PARSE_ERROR", msg)
                   : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_togglemaster_ofrep_context(r, NULL, &ctx, &rc) != NGX_OK) {
        return rc;
    }

    if (ngx_http_togglemaster_request_env(r, 1, &e) != NGX_OK) {
        return ngx_http_togglemaster_ofrep_error(r, e.status, NULL, "GENERAL",
                                                 e.error);
    }

    rc = ngx_http_togglemaster_ofrep_refetch(r, rctx, e.index, &stale);
    if (rc != NGX_OK) {
        return rc;
    }

    /* the environment's flags: an index into the snapshot, O(1) */
    fp = ngx_http_togglemaster_current
         ? ngx_http_togglemaster_current->fparts[e.index] : NULL;

    /* the stream URL names the environment by name, the default's too
     * (before the first snapshot only the default can be asked for) */
    if (ngx_http_togglemaster_sse_streams_json(r,
            (ngx_http_togglemaster_current
             && ngx_http_togglemaster_current->epart)
            ? &ngx_http_togglemaster_current->epart->names[e.index]
            : (e.name.len ? &e.name : &default_env),
            &streams)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    items = NULL;
    n = 0;
    len = sizeof("{\"flags\":[]}") - 1 + streams.len
          + sizeof(NGX_HTTP_TOGGLEMASTER_OFREP_STALE) + 2 * NGX_INT64_LEN;

    if (fp && fp->nflags) {
        items = ngx_palloc(r->pool, fp->nflags
                               * sizeof(ngx_http_togglemaster_ofrep_item_t));
        if (items == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* one budget for every flag, in the snapshot's order (by name): the
     * same flags are refused for the same snapshot and context */
    tmlcf = ngx_http_get_module_loc_conf(r, ngx_http_togglemaster_module);
    tm_request_budget_init(&rb, (uint64_t) tmlcf->request_budget
                                * TM_EVAL_BUDGET);

    for (i = 0; fp && i < fp->nflags; i++) {
        if (!ngx_http_togglemaster_ofrep_visible(&fp->flags[i], &e)) {
            continue;
        }

        ngx_http_togglemaster_ofrep_eval(&items[n], &fp->flags[i], &ctx, &e,
                                         &rb);
        len += ngx_http_togglemaster_ofrep_item_len(&items[n]) + 1;
        n++;
    }

    if (rb.refused) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "togglemaster: bulk OFREP: %ui of %ui flags over the "
                       "request's budget", (ngx_uint_t) rb.refused, n);
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"flags\":[", sizeof("{\"flags\":[") - 1);

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_http_togglemaster_ofrep_item(p, &items[i]);
    }

    *p++ = ']';
    p = ngx_cpymem(p, streams.data, streams.len);

    if (stale) {
        p = ngx_sprintf(p, NGX_HTTP_TOGGLEMASTER_OFREP_STALE,
                        ngx_http_togglemaster_current
                        ? ngx_http_togglemaster_current->version : 0,
                        rctx->refetch_id);
    }

    *p++ = '}';

    return ngx_http_togglemaster_ofrep_send_etagged(r, body, p - body);
}


static void
ngx_http_togglemaster_ofrep_body(ngx_http_request_t *r)
{
    ngx_http_togglemaster_ctx_t  *ctx;

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
    ngx_http_togglemaster_ctx_t        *ctx;

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

    /* the access phase may have made it (the request's key) */
    ctx = ngx_http_togglemaster_ctx(r);
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

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_togglemaster_ofrep_body);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}
