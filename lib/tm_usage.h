/* Usage aggregates: per flag, per environment, per UTC hour counters that the
 * analytics worker keeps beside the raw events, and what the read API needs
 * to answer from them. Design and cost: docs/usage.md.
 *
 * The table (AWS_DYNAMODB_USAGE_TABLE), keys pk (S) and sk (S):
 *   aggregate  pk "<environment>/<flag>"  sk "YYYY-MM-DDTHH" (UTC hour)
 *              evals, t, f (N): evaluations, true and false answers;
 *              "v:<variant>" (N) per variant; mins (NS): the minutes of the
 *              hour that saw an evaluation (so "last evaluated" is exact to
 *              the minute without a read-modify-write); expires (N, TTL).
 *   marker     pk "#msg/<sha256 of the message's event ids>/<chunk>" sk "-",
 *              expires (N, TTL).
 * Names hold no '/' nor '#' (lib/tm_names), so the keys cannot collide.
 *
 * Exactly once: one SQS message's aggregates are applied by
 * TransactWriteItems, each transaction also putting its marker under
 * attribute_not_exists(pk) with a ClientRequestToken derived from it. A
 * redelivered (or re-sent) message has the same event ids, so the same
 * markers: its transactions are cancelled by the marker's condition
 * (or answered from the token) and count nothing twice. */
#ifndef TM_USAGE_H
#define TM_USAGE_H
#include <jansson.h>
#include <stddef.h>
#include <time.h>

#define TM_USAGE_DEFAULT_ENV "default"
/* TransactWriteItems takes 100 actions: 99 aggregates and the marker. */
#define TM_USAGE_TXN_UPDATES 99
/* Aggregates expire after this (ranges read are shorter, see below). */
#define TM_USAGE_RETENTION_DAYS 400
/* Markers outlive the longest SQS retention (14 days) of a message. */
#define TM_USAGE_MARKER_DAYS 15

/* ---- writing: one SQS message's aggregates ---------------------------- */

typedef struct tm_usage_batch tm_usage_batch;

tm_usage_batch *tm_usage_batch_new(void);
void tm_usage_batch_free(tm_usage_batch *b);

/* Counts one event (as tm_events_from_message gives it: event_id set). An
 * event_id already counted in this batch is not counted again. 0 counted
 * (or a duplicate); 1 not countable: flag_name or environment is not a
 * valid name, or the timestamp cannot be read (the raw event is still
 * stored); -1 out of memory. */
int tm_usage_add_event(tm_usage_batch *b, const json_t *ev);

/* Counts one summary of a bulk evaluation (docs/events.md, envelope v2):
 * {"summary_id","timestamp","environment"?,"flags":{"<flag>":{"n","t","f",
 * "variants"?:{"<variant>":n}}}}. Checked first by tm_usage_summary_check.
 * Same returns as tm_usage_add_event (flags that are not valid names are
 * skipped; 1 when none could be counted). */
int tm_usage_add_summary(tm_usage_batch *b, const json_t *summary);

/* 0 when s is a summary as above: summary_id and timestamp non-empty
 * strings, environment absent, null or a string, flags an object of 1..
 * TM_USAGE_SUMMARY_MAX_FLAGS members, each with n >= 1, 0 <= t, f <= n,
 * t + f <= n and variants (if any) an object of counts 1..n; else -1 with
 * err. Unknown members are ignored. */
#define TM_USAGE_SUMMARY_MAX_FLAGS 10000
int tm_usage_summary_check(const json_t *s, char *err, size_t errlen);

/* Distinct (environment, flag, hour) groups counted, and the transactions
 * (TransactWriteItems requests) they take. */
size_t tm_usage_groups(const tm_usage_batch *b);
size_t tm_usage_txns(const tm_usage_batch *b);

/* The TransactWriteItems body of transaction i (0..tm_usage_txns-1) for
 * table, malloc'd, or NULL (bad arguments, OOM). Deterministic: the same
 * events give the same bodies, markers and tokens, whatever their order. */
char *tm_usage_txn_body(tm_usage_batch *b, const char *table, size_t i);

/* ---- reading ------------------------------------------------------------ */

/* Longest ranges the read API serves (a range is [from, to)). */
#define TM_USAGE_MAX_HOURS (31 * 24)
#define TM_USAGE_MAX_DAYS 366
#define TM_USAGE_STALE_MAX_DAYS 90

typedef struct {
    time_t from, to;   /* whole buckets: from inclusive, to exclusive */
    int step;          /* 3600 (hour) or 86400 (day) */
} tm_usage_range;

/* The query parameters of GET /flags/<name>/usage: from and to ("2026-11-22"
 * or RFC 3339 "2026-11-22T10:30:00Z", offsets allowed; NULL: to = now, from
 * = to - 24 h for hours, 30 days for days), granularity ("hour", "day";
 * NULL: hour). from is rounded down and to up to whole buckets. 0, or -1
 * with err (a reason for a 400): bad date, from not before to, more than
 * TM_USAGE_MAX_HOURS hours or TM_USAGE_MAX_DAYS days. */
int tm_usage_parse_range(const char *from, const char *to, const char *granularity,
                         time_t now, tm_usage_range *r, char *err, size_t errlen);

/* "days" of GET /usage/stale: 1..TM_USAGE_STALE_MAX_DAYS, NULL gives 30.
 * 0, or -1 with err. */
int tm_usage_parse_days(const char *s, int *days, char *err, size_t errlen);

/* The partition key of an aggregate into out; -1 if env or flag is not a
 * valid name or out is too small. */
int tm_usage_pk(const char *env, const char *flag, char *out, size_t outlen);
/* "YYYY-MM-DDTHH" of t, the sort key of t's hour. */
void tm_usage_hour(time_t t, char out[14]);

/* The counters of a range, bucket by bucket. */
typedef struct {
    long long n, t, f;
    json_t *variants;  /* variant -> count (integers) */
} tm_usage_counts;

typedef struct {
    tm_usage_range r;
    size_t nbuckets;
    tm_usage_counts *bucket;
    tm_usage_counts total;
    time_t last;       /* start of the newest minute with an evaluation; -1 none */
} tm_usage_series;

/* 0, or -1 (OOM). */
int tm_usage_series_init(tm_usage_series *s, const tm_usage_range *r);
void tm_usage_series_free(tm_usage_series *s);
/* Adds the aggregate items of one Query page (tm_ddb_parse_query's Items)
 * that fall in the range (others only move "last"). 0, or -1 when an item
 * is not an aggregate (it is then skipped) or on OOM. */
int tm_usage_series_add(tm_usage_series *s, const json_t *items);
/* {"points":[{"start","evaluations","true","false","variants"}...],
 * "totals":{"evaluations","true","false","variants"},
 * "last_evaluated": RFC 3339 or null}. NULL on OOM. */
json_t *tm_usage_series_json(const tm_usage_series *s);

/* RFC 3339 "2026-11-22T10:00:00Z" of t. */
void tm_usage_time(time_t t, char out[21]);
#endif
