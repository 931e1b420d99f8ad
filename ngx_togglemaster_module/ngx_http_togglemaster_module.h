/*
 * ngx_http_togglemaster_module: feature flags evaluated inside nginx.
 *
 * Each worker holds an immutable snapshot (flags, rules, API-key hashes)
 * that the sync code replaces wholesale; requests only read it.
 */

#ifndef NGX_HTTP_TOGGLEMASTER_MODULE_H
#define NGX_HTTP_TOGGLEMASTER_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "tm_rules.h"
#include "tm_names.h"
#include "tm_log.h"
#include "tm_records.h"

/* Room for text from Redis or a peer once escaped for the error log
 * (tm_log_escape: at most 4 bytes per byte, cut beyond). */
#define NGX_HTTP_TOGGLEMASTER_LOG_ESC_LEN  512


#define NGX_HTTP_TOGGLEMASTER_IDENTITY_MAX  4096
#define NGX_HTTP_TOGGLEMASTER_MAX_WORKERS   256
#define NGX_HTTP_TOGGLEMASTER_COUNTER_SLOTS 4096

/* metric slots with fixed meaning; flag slots follow */
#define NGX_HTTP_TOGGLEMASTER_SLOT_UNKNOWN  0


/* A compiled rule, shared by the snapshots whose rule JSON is the same
 * bytes: a reload recompiles only what changed. */
typedef struct {
    tm_rule                     *rule;
    ngx_uint_t                   refs;
} ngx_http_togglemaster_rule_ref_t;


typedef struct {
    ngx_str_t                    name;
    uint32_t                     hash;
    tm_flag_state                flag;
    unsigned                     rule_present:1;
    unsigned                     rule_enabled:1;
    unsigned                     client_visible:1;
    unsigned                     digested:1;  /* digest is of these JSONs */
    tm_rule                     *rule;        /* NULL: absent or unusable */
    ngx_http_togglemaster_rule_ref_t
                                *rule_ref;    /* owns rule */
    ngx_str_t                    flag_json;   /* last good objects, raw */
    ngx_str_t                    rule_json;
    ngx_uint_t                   counter;     /* metrics slot */
    u_char                       digest[16];  /* MD5 of name and JSONs */
} ngx_http_togglemaster_flag_t;


/* Flags and rules, merged by flag name; one pool (strings) and two
 * arrays, shared by snapshots. */
typedef struct {
    ngx_pool_t                  *pool;
    ngx_uint_t                   refs;
    ngx_http_togglemaster_flag_t *flags;      /* sorted by name */
    ngx_uint_t                   nflags;
    uint32_t                    *slots;       /* open addressing, idx + 1 */
    ngx_uint_t                   mask;
    /* the XOR of the flags' digests: what the part holds, whatever the
     * order (names are unique), kept up to date by hashing only the flags
     * a change touched (the event streams' etag, sse.c) */
    u_char                       digest[16];
} ngx_http_togglemaster_flags_t;


/* Segments (tm:segments): named constraint sets that strategies refer to
 * by name, looked up per evaluation. One pool, shared by snapshots. */
typedef struct {
    ngx_str_t                    name;
    uint32_t                     hash;
    tm_segment                  *seg;
    ngx_str_t                    json;        /* last good object, raw */
} ngx_http_togglemaster_segment_t;


typedef struct {
    ngx_pool_t                  *pool;
    ngx_uint_t                   refs;
    ngx_http_togglemaster_segment_t
                                *segs;
    ngx_uint_t                   nsegs;
    uint32_t                    *slots;       /* open addressing, idx + 1 */
    ngx_uint_t                   mask;
} ngx_http_togglemaster_segments_t;


/* Environments (tm:envs) and key scopes: docs/environments.md. Index 0 is
 * the default environment (tm:flags, tm:rules); at most this many in all
 * (the flags daemon creates no more; more in tm:envs are refused, logged). */
#define NGX_HTTP_TOGGLEMASTER_MAX_ENVS      TM_ENV_MAX
#define NGX_HTTP_TOGGLEMASTER_ENV_NONE      0xffff
#define NGX_HTTP_TOGGLEMASTER_KEY_NAMES     256   /* environment names keys use */

/* A tm_scope (tm_scope.h) as a bit, so that a location accepts a set. */
#define NGX_HTTP_TOGGLEMASTER_SCOPE(s)      ((ngx_uint_t) 1 << (s))


/* What the edge knows of a key: its scope, where it came from, and the
 * environment it evaluates in, resolved to an index when the snapshot is
 * built (NGX_HTTP_TOGGLEMASTER_ENV_NONE: readonly, or an environment that
 * does not exist). */
typedef struct {
    uint8_t                      scope;       /* a tm_scope */
    uint8_t                      v2;          /* from tm:keys:v2 */
    uint16_t                     name;        /* into names, or ENV_NONE */
    uint16_t                     env;
} ngx_http_togglemaster_key_meta_t;


/* API-key hashes: 32 binary bytes each, and their meta; of the key's JSON
 * only a scoped key's scope and environment are kept. */
typedef struct {
    ngx_pool_t                  *pool;
    ngx_uint_t                   refs;
    u_char                      *keys;        /* nkeys * 32 bytes */
    ngx_http_togglemaster_key_meta_t
                                *meta;        /* nkeys */
    ngx_uint_t                   nkeys;
    ngx_uint_t                   nv2;         /* of which scoped */
    uint32_t                    *slots;
    ngx_uint_t                   mask;
    ngx_str_t                    names[NGX_HTTP_TOGGLEMASTER_KEY_NAMES];
    ngx_uint_t                   nnames;
} ngx_http_togglemaster_keys_t;


/* The environments' names, in index order (0: the default); shared by
 * snapshots until tm:envs changes. */
typedef struct {
    ngx_pool_t                  *pool;
    ngx_uint_t                   refs;
    ngx_uint_t                   generation;  /* new one, new number */
    ngx_str_t                    names[NGX_HTTP_TOGGLEMASTER_MAX_ENVS];
    uint32_t                     hashes[NGX_HTTP_TOGGLEMASTER_MAX_ENVS];
    ngx_uint_t                   n;
} ngx_http_togglemaster_envs_t;


typedef struct {
    int64_t                      version;
    ngx_msec_t                   built;       /* ngx_current_msec */

    ngx_http_togglemaster_flags_t *fpart;     /* == fparts[0] */
    ngx_http_togglemaster_keys_t  *kpart;
    ngx_http_togglemaster_segments_t
                                *spart;
    ngx_http_togglemaster_envs_t  *epart;
    /* one flags part per environment, as epart orders them; NULL: empty */
    ngx_http_togglemaster_flags_t *fparts[NGX_HTTP_TOGGLEMASTER_MAX_ENVS];

    /* copies of the parts' fields, for readers */
    ngx_http_togglemaster_flag_t *flags;
    ngx_uint_t                   nflags;
    ngx_uint_t                   nkeys;
    ngx_uint_t                   nsegments;
    ngx_uint_t                   nenvs;
} ngx_http_togglemaster_snapshot_t;


/* One Redis hash (or the file's copy of it) as field/value pairs. */
typedef struct {
    ngx_str_t                   *fields;
    ngx_str_t                   *values;
    ngx_uint_t                   n;
    ngx_uint_t                   present;     /* 0: keep the old contents */
} ngx_http_togglemaster_kv_t;

/* The kinds of objects, each from its Redis hash. EFLAGS and ERULES are
 * the non-default environments' tm:flags@<env> and tm:rules@<env>, one
 * hash per environment. The snapshot file holds the first FILE_KINDS as
 * hashes, and EFLAGS and ERULES per environment (file.c). */
enum {
    NGX_HTTP_TOGGLEMASTER_FLAGS = 0,
    NGX_HTTP_TOGGLEMASTER_RULES,
    NGX_HTTP_TOGGLEMASTER_KEYS,
    NGX_HTTP_TOGGLEMASTER_SEGMENTS,
    NGX_HTTP_TOGGLEMASTER_ENVS,
    NGX_HTTP_TOGGLEMASTER_KEYS2,
    NGX_HTTP_TOGGLEMASTER_EFLAGS,
    NGX_HTTP_TOGGLEMASTER_ERULES,
    NGX_HTTP_TOGGLEMASTER_NKINDS
};

#define NGX_HTTP_TOGGLEMASTER_FILE_KINDS  6


typedef struct {
    ngx_str_t                    redis;       /* URL without password, for logs */
    void                        *redis_peer;  /* parsed, resolved, TLS (redis.c) */
    ngx_uint_t                   redis_cluster; /* keys {tm}:*, redirects */
    ngx_str_t                    redis_ssl_ca;
    ngx_str_t                    redis_ssl_name;
    ngx_msec_t                   timeout;
    ngx_msec_t                   check_interval;
    ngx_msec_t                   backoff_max;
    ngx_str_t                    snapshot_file;
#if (NGX_THREADS)
    ngx_thread_pool_t           *thread_pool; /* writes the snapshot file */
#endif
    ngx_shm_zone_t              *shm_zone;

    /* evaluation events -> SQS */
    ngx_flag_t                   events;
    ngx_str_t                    sqs_queue_url;
    ngx_str_t                    aws_region;
    ngx_str_t                    aws_endpoint;
    ngx_uint_t                   events_buffer;
    size_t                       events_buffer_size;   /* bytes */
    ngx_uint_t                   events_batch;
    ngx_uint_t                   events_bulk;  /* NGX_HTTP_TOGGLEMASTER_BULK_* */
    ngx_msec_t                   events_flush;
    ngx_msec_t                   events_timeout;
    ngx_uint_t                   events_attempts;
    ngx_msec_t                   events_backoff_max;
    ngx_msec_t                   events_exit_timeout;
    ngx_flag_t                   events_ssl_verify;
    ngx_str_t                    events_ssl_ca;
    void                        *sqs;         /* resolved endpoint, creds */

    /* signs stream tokens (lib/tm_sse_token.h); tokens live token_ttl */
    ngx_str_t                    sse_secret;
    time_t                       sse_token_ttl;
} ngx_http_togglemaster_main_conf_t;


/* togglemaster_context <name> <value>: one attribute of the evaluation
 * context, from nginx variables */
typedef struct {
    ngx_str_t                    name;
    ngx_http_complex_value_t     value;
} ngx_http_togglemaster_attr_conf_t;


typedef struct {
    ngx_http_complex_value_t    *identity;
    ngx_array_t                 *context;     /* of attr_conf_t, or NULL */
    ngx_uint_t                   api_key;     /* SCOPE() bits; 0: off */
    ngx_str_t                    environment; /* "": the default */
    ngx_str_t                    cors_origin; /* "": "*" */
    /* the environment's index among the names of generation env_gen: a
     * per-worker cache, so that a request pays no name lookup */
    ngx_uint_t                   env_gen;
    ngx_uint_t                   env_index;
    ngx_str_t                    require_flag;
    ngx_uint_t                   require_status;
    /* event streams (sse.c): togglemaster_sse makes the location one;
     * togglemaster_sse_url makes bulk OFREP answers list it */
    ngx_flag_t                   sse;
    ngx_msec_t                   sse_heartbeat;
    ngx_uint_t                   sse_inactivity;   /* seconds */
    ngx_uint_t                   sse_max;          /* streams per worker */
    ngx_http_complex_value_t    *sse_url;
    /* how long a refetch an event triggered waits for this worker's
     * snapshot to reach the event's version (refetch.c); 0: not at all */
    ngx_msec_t                   sse_refetch_wait;
    /* togglemaster_request_budget: what the evaluations of one request
     * (bulk OFREP) may cost in all, in evaluation budgets (lib/tm_rules.h) */
    ngx_uint_t                   request_budget;
} ngx_http_togglemaster_loc_conf_t;


/* The request's state between phases. The key is kept by its hash and
 * looked up again in the content phase: the snapshot may change while an
 * OFREP body is read. */
typedef struct {
    u_char                       bin[32];
    unsigned                     keyed:1;
    unsigned                     bulk:1;      /* OFREP */
    /* a bulk refetch an event triggered (refetch.c): the event's etag was
     * given (its version and md5), its lastModified was; the request has
     * waited for the version already */
    unsigned                     refetch:1;
    unsigned                     refetch_lm:1;
    unsigned                     refetch_waited:1;
    ngx_str_t                    key;         /* OFREP single: flag key */
    int64_t                      refetch_id;
    u_char                       refetch_md5[16];
    void                        *sse;         /* sse.c: the stream, until
                                               * its request is released */
} ngx_http_togglemaster_ctx_t;


/* The environment a request evaluates in, and its key's scope as a
 * SCOPE() bit (0: no key). */
typedef struct {
    ngx_uint_t                   index;
    ngx_str_t                    name;        /* "" for the default */
    ngx_uint_t                   scope;
    ngx_uint_t                   status;      /* when not NGX_OK */
    const char                  *error;
} ngx_http_togglemaster_env_ref_t;


/* Shared-memory metrics: one worker slot per process, counters per flag. */
typedef struct {
    ngx_atomic_t                 state;       /* 0 down, 1 connecting, 2 synced */
    ngx_atomic_t                 version;
    ngx_atomic_t                 synced_at;   /* unix seconds of last good sync */
    ngx_atomic_t                 pid;
    ngx_atomic_t                 events_buffered;
    ngx_atomic_t                 events_bytes;   /* their buffers' size */
    ngx_atomic_t                 sse_open;       /* event streams */
    /* the last fan-out: snapshot swap to last write, events written */
    ngx_atomic_t                 sse_fanout_usec;
    ngx_atomic_t                 sse_fanout_events;
} ngx_http_togglemaster_worker_stat_t;


/* why an event never reached SQS */
enum {
    NGX_HTTP_TOGGLEMASTER_DROP_BUFFER_FULL = 0,
    NGX_HTTP_TOGGLEMASTER_DROP_RETRIES,
    NGX_HTTP_TOGGLEMASTER_DROP_REJECTED,
    NGX_HTTP_TOGGLEMASTER_DROP_SHUTDOWN,
    NGX_HTTP_TOGGLEMASTER_DROP_NO_USER,
    NGX_HTTP_TOGGLEMASTER_DROP_TOO_LONG,
    NGX_HTTP_TOGGLEMASTER_DROP_INVALID,
    NGX_HTTP_TOGGLEMASTER_DROP_NO_MEMORY,
    NGX_HTTP_TOGGLEMASTER_DROP_BUFFER_BYTES,
    NGX_HTTP_TOGGLEMASTER_DROP_N
};

/* kinds of SQS errors */
enum {
    NGX_HTTP_TOGGLEMASTER_SQS_ERR_CONNECT = 0,
    NGX_HTTP_TOGGLEMASTER_SQS_ERR_TIMEOUT,
    NGX_HTTP_TOGGLEMASTER_SQS_ERR_HTTP,
    NGX_HTTP_TOGGLEMASTER_SQS_ERR_ENTRY,
    NGX_HTTP_TOGGLEMASTER_SQS_ERR_REPLY,
    NGX_HTTP_TOGGLEMASTER_SQS_ERR_N
};

typedef struct {
    ngx_atomic_t                 produced;
    ngx_atomic_t                 sent;
    ngx_atomic_t                 failed;      /* events in failed attempts */
    ngx_atomic_t                 requests;    /* SendMessageBatch calls */
    ngx_atomic_t                 batches;     /* ... that SQS answered 200 */
    ngx_atomic_t                 messages;    /* SQS messages accepted */
    ngx_atomic_t                 dropped[NGX_HTTP_TOGGLEMASTER_DROP_N];
    ngx_atomic_t                 errors[NGX_HTTP_TOGGLEMASTER_SQS_ERR_N];
} ngx_http_togglemaster_events_stat_t;

typedef struct {
    ngx_atomic_t                 state;       /* 0 free, 1 claiming, 2 ready */
    ngx_atomic_t                 on;
    ngx_atomic_t                 off;
    u_char                       len;
    u_char                       name[TM_NAME_MAX];
} ngx_http_togglemaster_counter_t;

typedef struct {
    ngx_atomic_t                 reconnects;
    ngx_atomic_t                 syncs;
    ngx_atomic_t                 sync_errors;
    ngx_atomic_t                 malformed;
    ngx_atomic_t                 key_denied;
    /* REGEX matches answered "no match" by a bound (lib/tm_regex.h) */
    ngx_atomic_t                 regex_too_long;
    ngx_atomic_t                 regex_limit;
    ngx_atomic_t                 regex_bad_subject;
    /* evaluations stopped by their own budget, or by their request's
     * (lib/tm_rules.h) */
    ngx_atomic_t                 rules_over_budget;
    ngx_atomic_t                 rules_over_request_budget;
    /* event streams */
    ngx_atomic_t                 sse_events;
    ngx_atomic_t                 sse_dropped;
    ngx_atomic_t                 sse_refused;
    ngx_http_togglemaster_events_stat_t
                                 events;
    ngx_http_togglemaster_worker_stat_t
                                 workers[NGX_HTTP_TOGGLEMASTER_MAX_WORKERS];
    ngx_http_togglemaster_counter_t
                                 counters[NGX_HTTP_TOGGLEMASTER_COUNTER_SLOTS];
} ngx_http_togglemaster_shm_t;


extern ngx_module_t  ngx_http_togglemaster_module;

/* the worker's current snapshot; NULL until the first load */
extern ngx_http_togglemaster_snapshot_t  *ngx_http_togglemaster_current;
extern ngx_http_togglemaster_shm_t       *ngx_http_togglemaster_shm;


/* snapshot.c */

/* A snapshot built over many event-loop turns: start, then set/del objects
 * as they arrive, then finish (or abort). A part none of whose kinds is
 * touched is shared with old; within a touched part, kinds not fresh start
 * as old's copy. hint: expected objects per kind, or NULL. */
typedef struct ngx_http_togglemaster_builder_s
    ngx_http_togglemaster_builder_t;

ngx_http_togglemaster_builder_t *ngx_http_togglemaster_builder_start(
    ngx_http_togglemaster_snapshot_t *old, ngx_uint_t fresh,
    ngx_uint_t touched, ngx_uint_t *hint, ngx_log_t *log);
ngx_int_t ngx_http_togglemaster_builder_set(
    ngx_http_togglemaster_builder_t *b, ngx_uint_t kind, ngx_str_t *field,
    ngx_str_t *value);
ngx_int_t ngx_http_togglemaster_builder_del(
    ngx_http_togglemaster_builder_t *b, ngx_uint_t kind, ngx_str_t *field);
/* The same for EFLAGS and ERULES objects of environment env. */
ngx_int_t ngx_http_togglemaster_builder_set_env(
    ngx_http_togglemaster_builder_t *b, ngx_uint_t kind, ngx_str_t *env,
    ngx_str_t *field, ngx_str_t *value);
ngx_int_t ngx_http_togglemaster_builder_del_env(
    ngx_http_togglemaster_builder_t *b, ngx_uint_t kind, ngx_str_t *env,
    ngx_str_t *field);
ngx_http_togglemaster_snapshot_t *ngx_http_togglemaster_builder_finish(
    ngx_http_togglemaster_builder_t *b, int64_t version);
void ngx_http_togglemaster_builder_abort(ngx_http_togglemaster_builder_t *b);
void ngx_http_togglemaster_builder_stats(ngx_http_togglemaster_builder_t *b,
    ngx_uint_t *reused, ngx_uint_t *compiled);

ngx_http_togglemaster_snapshot_t *ngx_http_togglemaster_snapshot_hold(
    ngx_http_togglemaster_snapshot_t *snap);
void ngx_http_togglemaster_snapshot_free(
    ngx_http_togglemaster_snapshot_t *snap);
void ngx_http_togglemaster_snapshot_swap(
    ngx_http_togglemaster_snapshot_t *snap);
/* A flag of the default environment, or NULL. */
ngx_http_togglemaster_flag_t *ngx_http_togglemaster_flag_lookup(
    ngx_http_togglemaster_snapshot_t *snap, u_char *name, size_t len);
/* A flag of environment env (an index below snap->nenvs), or NULL. */
ngx_http_togglemaster_flag_t *ngx_http_togglemaster_env_flag_lookup(
    ngx_http_togglemaster_snapshot_t *snap, ngx_uint_t env, u_char *name,
    size_t len);
/* The index of the environment called name, or ENV_NONE. */
ngx_uint_t ngx_http_togglemaster_env_index(
    ngx_http_togglemaster_snapshot_t *snap, u_char *name, size_t len);
/* The key whose SHA-256 is bin, or NULL. */
ngx_http_togglemaster_key_meta_t *ngx_http_togglemaster_key_find(
    ngx_http_togglemaster_snapshot_t *snap, u_char *bin);
ngx_http_togglemaster_segment_t *ngx_http_togglemaster_segment_lookup(
    ngx_http_togglemaster_snapshot_t *snap, u_char *name, size_t len);

/* file.c */

/* Called on the event loop once a save is over: rc NGX_OK or NGX_ERROR
 * (logged already), for the snapshot version that was being saved. */
typedef void (*ngx_http_togglemaster_file_done_pt)(int64_t version,
    ngx_int_t rc);

/* Writes snap to the snapshot file here and now (worker exit). */
ngx_int_t ngx_http_togglemaster_file_write(ngx_str_t *path,
    ngx_http_togglemaster_snapshot_t *snap, ngx_log_t *log);
/* Saves snap off the event loop (in place when nginx has no threads):
 * NGX_OK (done follows), NGX_BUSY while a save is still running, or
 * NGX_ERROR. */
ngx_int_t ngx_http_togglemaster_file_save(
    ngx_http_togglemaster_main_conf_t *tmcf,
    ngx_http_togglemaster_snapshot_t *snap, ngx_log_t *log,
    ngx_http_togglemaster_file_done_pt done);
ngx_http_togglemaster_snapshot_t *ngx_http_togglemaster_file_load(
    ngx_str_t *path, ngx_log_t *log);

/* redis.c: togglemaster_redis, and once the http block is read the
 * resolver choice (a host name the system does not know at start needs
 * "resolver" at http level), the checks and TLS context of
 * togglemaster_redis_ssl_* */
char *ngx_http_togglemaster_redis_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_togglemaster_redis_conf(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf);

/* sync.c */
ngx_int_t ngx_http_togglemaster_sync_init(ngx_cycle_t *cycle,
    ngx_http_togglemaster_main_conf_t *tmcf);
void ngx_http_togglemaster_sync_exit(ngx_cycle_t *cycle);
/* A request's key (its SHA-256) was accepted: HSET tm:keys:used, at most
 * once a minute per key in this worker, never while Redis is down. */
void ngx_http_togglemaster_sync_key_used(u_char *bin, ngx_log_t *log);

/* eval.c */
ngx_int_t ngx_http_togglemaster_evaluate(ngx_http_togglemaster_flag_t *f,
    ngx_uint_t env, tm_context *ctx, tm_request_budget *rb,
    tm_eval_result *res);
/* The request's environment: its key's (use_key, for server and client
 * keys) or the location's togglemaster_environment. NGX_OK, or NGX_DECLINED
 * with e->status and e->error (an environment that does not exist). */
ngx_int_t ngx_http_togglemaster_request_env(ngx_http_request_t *r,
    ngx_uint_t use_key, ngx_http_togglemaster_env_ref_t *e);
ngx_int_t ngx_http_togglemaster_context_conf(ngx_http_request_t *r,
    tm_context *ctx, tm_attr *given, ngx_uint_t ngiven);
ngx_int_t ngx_http_togglemaster_identity(ngx_http_request_t *r,
    ngx_str_t *id);
ngx_int_t ngx_http_togglemaster_flag_on(ngx_http_request_t *r,
    u_char *name, size_t len);
ngx_int_t ngx_http_togglemaster_send_json(ngx_http_request_t *r,
    ngx_uint_t status, u_char *body, size_t len);
ngx_int_t ngx_http_togglemaster_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *msg);
ngx_http_togglemaster_ctx_t *ngx_http_togglemaster_ctx(ngx_http_request_t *r);
u_char *ngx_http_togglemaster_json_str(u_char *p, u_char *s, size_t len);
size_t ngx_http_togglemaster_json_str_len(u_char *s, size_t len);

/* metrics.c */
ngx_uint_t ngx_http_togglemaster_counter_slot(u_char *name, size_t len);
void ngx_http_togglemaster_engine_count(void);
void ngx_http_togglemaster_count(ngx_uint_t slot, ngx_uint_t on);
void ngx_http_togglemaster_worker_state(ngx_uint_t state);
ngx_int_t ngx_http_togglemaster_shm_init(ngx_shm_zone_t *zone, void *data);

/* events.c: one event per evaluation, batched to SQS */
typedef struct ngx_http_togglemaster_msg_s  ngx_http_togglemaster_msg_t;

/* One SQS message: a batch envelope {"v":1,"events":[...]}, kept already
 * escaped as a JSON string's contents, ready for the request body. */
struct ngx_http_togglemaster_msg_s {
    ngx_http_togglemaster_msg_t *next;
    u_char                      *data;
    size_t                       len;         /* escaped bytes */
    size_t                       cap;
    size_t                       raw;         /* the message's own size */
    ngx_uint_t                   nevents;
    ngx_uint_t                   attempts;
    ngx_msec_t                   first;       /* when its first event came */
    ngx_uint_t                   status;      /* of the last attempt */
};

#define NGX_HTTP_TOGGLEMASTER_MSG_RETRY     0
#define NGX_HTTP_TOGGLEMASTER_MSG_SENT      1
#define NGX_HTTP_TOGGLEMASTER_MSG_REJECTED  2

char *ngx_http_togglemaster_events_conf(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf);
ngx_int_t ngx_http_togglemaster_events_init(ngx_cycle_t *cycle,
    ngx_http_togglemaster_main_conf_t *tmcf);
void ngx_http_togglemaster_events_exit(ngx_cycle_t *cycle);
/* env: the environment's name, NULL or "" for the default */
void ngx_http_togglemaster_event(u_char *user, size_t ulen, u_char *flag,
    size_t flen, tm_decision *d, const char *variant, ngx_str_t *env);
void ngx_http_togglemaster_events_wake(void);
/* an OFREP bulk evaluation: a summary count or a raw event, as
 * togglemaster_events_bulk says */
void ngx_http_togglemaster_event_bulk(u_char *user, size_t ulen, u_char *flag,
    size_t flen, tm_decision *d, const char *variant, ngx_str_t *env);
/* for summary.c: ids, times, drops and whole messages of the events buffer */
u_char *ngx_http_togglemaster_events_uuid(u_char *p);
u_char *ngx_http_togglemaster_events_timestamp(u_char *p);
void ngx_http_togglemaster_events_lost(ngx_uint_t reason, ngx_uint_t n);
void ngx_http_togglemaster_events_queue_raw(u_char *raw, size_t len,
    ngx_uint_t n);

#define NGX_HTTP_TOGGLEMASTER_BULK_SUMMARY  1
#define NGX_HTTP_TOGGLEMASTER_BULK_RAW      2

void ngx_http_togglemaster_summary_count(u_char *flag, size_t flen,
    tm_decision *d, const char *variant, ngx_str_t *env, ngx_log_t *log);
/* when the oldest count came (0: none held) */
ngx_msec_t ngx_http_togglemaster_summary_due(void);
void ngx_http_togglemaster_summary_flush(ngx_msec_t every, ngx_uint_t force,
    ngx_log_t *log);
void ngx_http_togglemaster_summary_exit(void);
void ngx_http_togglemaster_events_done(ngx_http_togglemaster_msg_t **msgs,
    ngx_uint_t n, ngx_int_t rc);

/* sqs.c: SendMessageBatch over one non-blocking connection */
char *ngx_http_togglemaster_sqs_conf(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf);
void ngx_http_togglemaster_sqs_init(ngx_cycle_t *cycle,
    ngx_http_togglemaster_main_conf_t *tmcf);
ngx_int_t ngx_http_togglemaster_sqs_send(ngx_http_togglemaster_msg_t **msgs,
    ngx_uint_t n, ngx_msec_t timeout);
ngx_uint_t ngx_http_togglemaster_sqs_busy(void);
void ngx_http_togglemaster_sqs_close(void);

/* handlers */
ngx_int_t ngx_http_togglemaster_evaluate_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_togglemaster_ofrep_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_togglemaster_metrics_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_togglemaster_health_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_togglemaster_access_handler(ngx_http_request_t *r);
/* $togglemaster_bad_key_addr; data: the index of $binary_remote_addr */
ngx_int_t ngx_http_togglemaster_bad_key_addr_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

/* access.c */
ngx_int_t ngx_http_togglemaster_add_header(ngx_http_request_t *r,
    const char *key, ngx_str_t *value);
/* CORS headers for a location browsers call from other origins, and the
 * preflight's answer: NGX_DECLINED to go on, else the rc to return. */
ngx_int_t ngx_http_togglemaster_cors(ngx_http_request_t *r,
    ngx_http_togglemaster_loc_conf_t *tmlcf);

/* sse.c: OFREP event streams */
ngx_int_t ngx_http_togglemaster_sse_handler(ngx_http_request_t *r);
/* snap just became current in place of old (either may be NULL) */
void ngx_http_togglemaster_sse_swapped(ngx_http_togglemaster_snapshot_t *old,
    ngx_http_togglemaster_snapshot_t *snap);
/* the eventStreams member for a bulk answer in environment env (a name),
 * empty where the location lists none */
ngx_int_t ngx_http_togglemaster_sse_streams_json(ngx_http_request_t *r,
    ngx_str_t *env, ngx_str_t *out);
void ngx_http_togglemaster_sse_init(void);
/* the change id and the md5 of what environment index i evaluates, as the
 * streams last saw them: NGX_OK, or NGX_DECLINED if unknown */
ngx_int_t ngx_http_togglemaster_sse_env_change(ngx_uint_t i, int64_t *id,
    u_char **md5);
u_char *ngx_http_togglemaster_sse_metrics(u_char *p, u_char *last,
    ngx_uint_t workers);
char *ngx_http_togglemaster_sse_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
/* merges the stream directives; a location serving or listing streams
 * needs togglemaster_sse_secret */
char *ngx_http_togglemaster_sse_conf(ngx_conf_t *cf,
    ngx_http_togglemaster_loc_conf_t *conf,
    ngx_http_togglemaster_loc_conf_t *prev);

/* refetch.c: bulk refetches an event triggered (ADR-0008) */
typedef ngx_int_t (*ngx_http_togglemaster_refetch_pt)(ngx_http_request_t *r);
/* reads the event's etag and lastModified from the query into ctx: NGX_OK
 * (either may be absent), or NGX_ERROR with *msg saying why (a 400), *msg
 * NULL if out of memory */
ngx_int_t ngx_http_togglemaster_refetch_args(ngx_http_request_t *r,
    ngx_http_togglemaster_ctx_t *ctx, const char **msg);
/* 1 if this worker's snapshot has not reached the event's version */
ngx_uint_t ngx_http_togglemaster_refetch_behind(
    ngx_http_togglemaster_ctx_t *ctx, ngx_uint_t env_index);
/* parks r until the version comes or wait passes, then finalizes it with
 * answer(r); the caller returns NGX_DONE */
ngx_int_t ngx_http_togglemaster_refetch_wait(ngx_http_request_t *r,
    ngx_msec_t wait, ngx_http_togglemaster_refetch_pt answer);
void ngx_http_togglemaster_refetch_swapped(
    ngx_http_togglemaster_snapshot_t *snap);
void ngx_http_togglemaster_refetch_init(void);

/* json.c: jansson allocations from the request pool while one is set */
void ngx_http_togglemaster_json_init(void);
void ngx_http_togglemaster_json_pool(ngx_pool_t *pool);

#endif /* NGX_HTTP_TOGGLEMASTER_MODULE_H */
