/*
 * Evaluation on the request path: snapshot lookup + lib's tm_evaluate()
 * with an environment that resolves segments and parent flags in the
 * current snapshot, the evaluation context (identity + attributes), and
 * the original GET /evaluate endpoint. Everything allocated here comes from
 * the request pool.
 */

#include "ngx_http_togglemaster_module.h"
#include "tm_query.h"


/* What an evaluation looks segments and parent flags up in: the current
 * snapshot, and the environment being evaluated. */
typedef struct {
    ngx_http_togglemaster_snapshot_t  *snap;
    ngx_uint_t                         env;
} ngx_http_togglemaster_eval_ud_t;


static const tm_segment *
ngx_http_togglemaster_env_segment(void *ud, const char *name, size_t len)
{
    ngx_http_togglemaster_eval_ud_t  *eu = ud;
    ngx_http_togglemaster_segment_t  *s;

    s = ngx_http_togglemaster_segment_lookup(eu->snap, (u_char *) name, len);

    return s ? s->seg : NULL;
}


static void
ngx_http_togglemaster_view(ngx_http_togglemaster_flag_t *f,
    tm_flag_view *view)
{
    view->name = (const char *) f->name.data;
    view->len = f->name.len;
    view->state = f->flag;
    view->rule_present = f->rule_present;
    view->rule_enabled = f->rule_enabled;
    view->rule = f->rule;
}


static int
ngx_http_togglemaster_env_flag(void *ud, const char *name, size_t len,
    tm_flag_view *out)
{
    ngx_http_togglemaster_eval_ud_t  *eu = ud;
    ngx_http_togglemaster_flag_t     *f;

    /* a parent flag is the same environment's */
    f = ngx_http_togglemaster_env_flag_lookup(eu->snap, eu->env,
                                              (u_char *) name, len);
    if (f == NULL || f->flag == TM_FLAG_MISSING) {
        return -1;
    }

    ngx_http_togglemaster_view(f, out);

    return 0;
}


/*
 * Evaluates f (NULL: unknown), a flag of environment envi, for ctx in the
 * current snapshot and counts it; a request evaluating several flags pays
 * them from rb (NULL: this one alone). ctx->now_ms defaults to nginx's
 * cached time, so DATE_ constraints on currentTime cost no clock call.
 * Returns res->value.
 */
ngx_int_t
ngx_http_togglemaster_evaluate(ngx_http_togglemaster_flag_t *f,
    ngx_uint_t envi, tm_context *ctx, tm_request_budget *rb,
    tm_eval_result *res)
{
    ngx_time_t                       *tp;
    tm_flag_view                      view;
    tm_eval_env                       env;
    ngx_http_togglemaster_eval_ud_t   eu;

    if (f == NULL || f->flag == TM_FLAG_MISSING) {
        ngx_memzero(res, sizeof(tm_eval_result));
        res->reason = TM_REASON_UNKNOWN;
        res->strategy = -1;
        ngx_http_togglemaster_count(NGX_HTTP_TOGGLEMASTER_SLOT_UNKNOWN, 0);
        return 0;
    }

    if (ctx->now_ms == 0) {
        tp = ngx_timeofday();
        ctx->now_ms = (int64_t) tp->sec * 1000 + tp->msec;
    }

    ngx_http_togglemaster_view(f, &view);

    eu.snap = ngx_http_togglemaster_current;
    eu.env = envi;

    env.ud = &eu;
    env.segment = ngx_http_togglemaster_env_segment;
    env.flag = ngx_http_togglemaster_env_flag;
    env.random = NULL;

    (void) tm_evaluate_in(&view, ctx, &env, rb, res);

    ngx_http_togglemaster_count(f->counter, res->value);
    ngx_http_togglemaster_engine_count();

    return res->value;
}


/*
 * Completes ctx (its identity already set) with the attributes the request
 * gave (given[0..ngiven), they win: the first of a name counts), then the
 * location's togglemaster_context ones. NGX_OK or NGX_ERROR.
 */
ngx_int_t
ngx_http_togglemaster_context_conf(ngx_http_request_t *r, tm_context *ctx,
    tm_attr *given, ngx_uint_t ngiven)
{
    tm_attr                            *attrs;
    ngx_str_t                           val;
    ngx_uint_t                          i, n;
    ngx_http_togglemaster_attr_conf_t  *ac;
    ngx_http_togglemaster_loc_conf_t   *tmlcf;

    tmlcf = ngx_http_get_module_loc_conf(r, ngx_http_togglemaster_module);

    if (tmlcf->context == NULL || tmlcf->context->nelts == 0) {
        ctx->attrs = given;
        ctx->nattrs = ngiven;
        return NGX_OK;
    }

    ac = tmlcf->context->elts;
    n = tmlcf->context->nelts;

    attrs = ngx_palloc(r->pool, (ngiven + n) * sizeof(tm_attr));
    if (attrs == NULL) {
        return NGX_ERROR;
    }

    if (ngiven) {
        ngx_memcpy(attrs, given, ngiven * sizeof(tm_attr));
    }

    ctx->attrs = attrs;
    ctx->nattrs = ngiven;

    for (i = 0; i < n; i++) {
        if (ngx_http_complex_value(r, &ac[i].value, &val) != NGX_OK) {
            return NGX_ERROR;
        }

        /* empty is absent, as for an unset variable */
        if (val.len == 0 || val.len > TM_CONTEXT_MAX_VALUE_LEN) {
            continue;
        }

        attrs[ctx->nattrs].name = (const char *) ac[i].name.data;
        attrs[ctx->nattrs].name_len = ac[i].name.len;
        attrs[ctx->nattrs].value = (const char *) val.data;
        attrs[ctx->nattrs].value_len = val.len;
        ctx->nattrs++;
    }

    return NGX_OK;
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


static ngx_int_t
ngx_http_togglemaster_env_missing(ngx_http_request_t *r,
    ngx_http_togglemaster_env_ref_t *e, ngx_str_t *name, const char *what)
{
    u_char  *msg;

    e->status = NGX_HTTP_NOT_FOUND;
    e->error = "the environment does not exist";

    msg = ngx_pnalloc(r->pool, 64 + name->len);
    if (msg) {
        /* names are [A-Za-z0-9_.:-]: nothing to escape */
        *ngx_sprintf(msg, "%s \"%V\" does not exist", what, name) = '\0';
        e->error = (const char *) msg;
    }

    return NGX_DECLINED;
}


ngx_int_t
ngx_http_togglemaster_request_env(ngx_http_request_t *r, ngx_uint_t use_key,
    ngx_http_togglemaster_env_ref_t *e)
{
    ngx_uint_t                         i;
    ngx_http_togglemaster_ctx_t       *ctx;
    ngx_http_togglemaster_snapshot_t  *snap;
    ngx_http_togglemaster_key_meta_t  *m;
    ngx_http_togglemaster_loc_conf_t  *tmlcf;

    ngx_memzero(e, sizeof(ngx_http_togglemaster_env_ref_t));
    ngx_str_set(&e->name, "");

    snap = ngx_http_togglemaster_current;
    tmlcf = ngx_http_get_module_loc_conf(r, ngx_http_togglemaster_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_togglemaster_module);

    if (use_key && ctx && ctx->keyed) {
        m = ngx_http_togglemaster_key_find(snap, ctx->bin);

        if (m == NULL) {
            /* revoked while the request body was read */
            e->status = NGX_HTTP_UNAUTHORIZED;
            e->error = "invalid API key";
            return NGX_DECLINED;
        }

        e->scope = NGX_HTTP_TOGGLEMASTER_SCOPE(m->scope);

        if (tm_scope_has_environment(m->scope)) {
            /* the key's environment, resolved when the snapshot was built */
            if (m->env == NGX_HTTP_TOGGLEMASTER_ENV_NONE
                && m->name == NGX_HTTP_TOGGLEMASTER_ENV_NONE)
            {
                e->status = NGX_HTTP_NOT_FOUND;
                e->error = "the key's environment does not exist";
                return NGX_DECLINED;
            }

            if (m->env == NGX_HTTP_TOGGLEMASTER_ENV_NONE) {
                return ngx_http_togglemaster_env_missing(r, e,
                           &snap->kpart->names[m->name],
                           "the key's environment");
            }

            e->index = m->env;
            e->name = m->env ? snap->epart->names[m->env] : e->name;
            return NGX_OK;
        }
    }

    if (tmlcf->environment.len == 0 || snap == NULL) {
        return NGX_OK;
    }

    if (tmlcf->env_gen != snap->epart->generation) {
        tmlcf->env_index = ngx_http_togglemaster_env_index(snap,
                               tmlcf->environment.data,
                               tmlcf->environment.len);
        tmlcf->env_gen = snap->epart->generation;
    }

    i = tmlcf->env_index;

    if (i == NGX_HTTP_TOGGLEMASTER_ENV_NONE) {
        return ngx_http_togglemaster_env_missing(r, e, &tmlcf->environment,
                                                 "environment");
    }

    e->index = i;
    e->name = i ? snap->epart->names[i] : e->name;

    return NGX_OK;
}


/* 1 if the flag is on for this request (its identity and the location's
 * togglemaster_context attributes, in the location's environment), 0 if
 * not, NGX_ERROR. In an environment that does not exist every flag is
 * off. */
ngx_int_t
ngx_http_togglemaster_flag_on(ngx_http_request_t *r, u_char *name, size_t len)
{
    ngx_int_t                         rc;
    ngx_str_t                         id;
    tm_context                        ctx;
    tm_decision                       d;
    tm_eval_result                    res;
    ngx_http_togglemaster_flag_t     *f;
    ngx_http_togglemaster_env_ref_t   e;

    rc = ngx_http_togglemaster_identity(r, &id);
    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (ngx_http_togglemaster_request_env(r, 0, &e) != NGX_OK) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "togglemaster: %s: flag off", e.error);
        return 0;
    }

    f = ngx_http_togglemaster_env_flag_lookup(ngx_http_togglemaster_current,
                                              e.index, name, len);

    if (rc == NGX_DECLINED && f && f->rule_present && f->rule_enabled) {
        /* identity too long to target: false, and its event is counted
         * as dropped for its length */
        d.value = 0;
        d.reason = TM_REASON_DEFAULT;
        ngx_http_togglemaster_event(NULL, NGX_HTTP_TOGGLEMASTER_IDENTITY_MAX
                                          + 1, name, len, &d, NULL, &e.name);
        return 0;
    }

    tm_context_init(&ctx, id.len ? (const char *) id.data : NULL, id.len,
                    NULL, 0);

    if (ngx_http_togglemaster_context_conf(r, &ctx, NULL, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    (void) ngx_http_togglemaster_evaluate(f, e.index, &ctx, NULL, &res);

    d.value = res.value;
    d.reason = res.reason;

    ngx_http_togglemaster_event(id.data, id.len, f ? f->name.data : name,
                                f ? f->name.len : len, &d, res.variant,
                                &e.name);

    return res.value ? 1 : 0;
}


ngx_int_t
ngx_http_togglemaster_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len)
{
    ngx_int_t    rc;
    ngx_buf_t   *b;
    ngx_chain_t  out;

    /*
     * Every answer goes through here, early refusals included: a body not
     * read yet is discarded first, or its bytes would be parsed as the next
     * request on a keep-alive connection. After a read body this is a no-op.
     */
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

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


/* The request's context, made and set on first use (the access phase, the
 * OFREP and stream handlers may each be first); NULL when out of memory. */
ngx_http_togglemaster_ctx_t *
ngx_http_togglemaster_ctx(ngx_http_request_t *r)
{
    ngx_http_togglemaster_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_togglemaster_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_togglemaster_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_togglemaster_module);
    }

    return ctx;
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


ngx_int_t
ngx_http_togglemaster_evaluate_handler(ngx_http_request_t *r)
{
    u_char                        *body, *p, *buf;
    size_t                         len;
    tm_attr                       *attrs;
    tm_query                       q;
    ngx_int_t                      rc;
    ngx_str_t                      user, flag;
    tm_context                     ctx;
    const char                    *why;
    tm_decision                    d;
    tm_eval_result                 res;
    ngx_http_togglemaster_flag_t  *f;
    ngx_http_togglemaster_env_ref_t
                                   e;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_togglemaster_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                                "use GET");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    /* the query string, parsed in lib/tm_query.c (fuzzed there): decoded
     * text never grows, so one block of args.len bytes holds all of it */
    buf = ngx_pnalloc(r->pool, r->args.len + 1);
    attrs = ngx_palloc(r->pool, tm_query_max_attrs((char *) r->args.data,
                                               r->args.len) * sizeof(tm_attr));
    if (buf == NULL || attrs == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    why = NULL;
    if (tm_query_parse((char *) r->args.data, r->args.len, (char *) buf,
                       attrs, &q, &why) != 0)
    {
        return ngx_http_togglemaster_send_error(r, NGX_HTTP_BAD_REQUEST, why);
    }

    user.data = (u_char *) q.user;
    user.len = q.user_len;
    flag.data = (u_char *) q.flag;
    flag.len = q.flag_len;

    tm_context_init(&ctx, q.user, q.user_len, NULL, 0);

    if (ngx_http_togglemaster_context_conf(r, &ctx, q.attrs, q.nattrs)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the key's environment, else the location's */
    if (ngx_http_togglemaster_request_env(r, 1, &e) != NGX_OK) {
        return ngx_http_togglemaster_send_error(r, e.status, e.error);
    }

    f = ngx_http_togglemaster_env_flag_lookup(ngx_http_togglemaster_current,
                                              e.index, flag.data, flag.len);

    (void) ngx_http_togglemaster_evaluate(f, e.index, &ctx, NULL, &res);

    d.value = res.value;
    d.reason = res.reason;

    ngx_http_togglemaster_event(user.data, user.len, flag.data, flag.len, &d,
                                res.variant, &e.name);

    len = sizeof("{\"flag_name\":,\"user_id\":,\"result\":false}") - 1
          + ngx_http_togglemaster_json_str_len(flag.data, flag.len)
          + ngx_http_togglemaster_json_str_len(user.data, user.len);

    if (res.variant) {
        len += sizeof(",\"variant\":") - 1
               + ngx_http_togglemaster_json_str_len((u_char *) res.variant,
                                                    res.variant_len);
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"flag_name\":", sizeof("{\"flag_name\":") - 1);
    p = ngx_http_togglemaster_json_str(p, flag.data, flag.len);
    p = ngx_cpymem(p, ",\"user_id\":", sizeof(",\"user_id\":") - 1);
    p = ngx_http_togglemaster_json_str(p, user.data, user.len);
    p = res.value ? ngx_cpymem(p, ",\"result\":true", 14)
                  : ngx_cpymem(p, ",\"result\":false", 15);

    if (res.variant) {
        p = ngx_cpymem(p, ",\"variant\":", sizeof(",\"variant\":") - 1);
        p = ngx_http_togglemaster_json_str(p, (u_char *) res.variant,
                                           res.variant_len);
    }

    *p++ = '}';

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
