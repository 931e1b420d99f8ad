/* lib/tm_usage: aggregate transactions (deterministic, deduplicated, split
 * at 99 updates, marker conditioned), summaries, the read API's parameters
 * and series. */
#include "tap.h"
#include "tm_aws.h"
#include "tm_events.h"
#include "tm_usage.h"

#include <stdlib.h>

static json_t *ev(const char *id, const char *flag, int result, const char *ts, const char *variant)
{
    json_t *e = json_pack("{s:s, s:s, s:s, s:b, s:s}", "event_id", id, "user_id", "u",
                          "flag_name", flag, "result", result, "timestamp", ts);
    if (variant) {
        json_object_set_new(e, "variant", json_string(variant));
    }
    return e;
}

static char *body_of(int reverse)
{
    tm_usage_batch *b = tm_usage_batch_new();
    json_t *e[4] = { ev("a", "f1", 1, "2026-11-22T10:05:00Z", "on"),
                     ev("b", "f1", 0, "2026-11-22T10:59:30Z", "off"),
                     ev("c", "f2", 1, "2026-11-22T11:00:00Z", NULL),
                     ev("a", "f1", 1, "2026-11-22T10:05:00Z", "on") };   /* same id: once */
    for (int i = 0; i < 4; i++) {
        tm_usage_add_event(b, e[reverse ? 3 - i : i]);
        json_decref(e[reverse ? 3 - i : i]);
    }
    char *s = tm_usage_txn_body(b, "T", 0);
    tm_usage_batch_free(b);
    return s;
}

static void writes(void)
{
    char *a = body_of(0), *b = body_of(1);
    ok(a && b && strcmp(a, b) == 0, "the same events in another order give the same transaction");
    json_t *j = json_loads(a ? a : "", 0, NULL);
    json_t *items = json_object_get(j, "TransactItems");
    is_int(json_array_size(items), 3, "marker + (f1, 10h) + (f2, 11h)");
    json_t *put = json_object_get(json_array_get(items, 0), "Put");
    is_str(json_string_value(json_object_get(put, "ConditionExpression")), "attribute_not_exists(pk)",
           "the marker is conditioned");
    ok(strncmp(json_string_value(json_object_get(json_object_get(json_object_get(put, "Item"), "pk"), "S")),
               "#msg/", 5) == 0, "marker key");
    ok(strlen(json_string_value(json_object_get(j, "ClientRequestToken"))) <= 36, "token <= 36 characters");
    json_t *u = json_object_get(json_array_get(items, 1), "Update");
    is_str(json_string_value(json_object_get(json_object_get(json_object_get(u, "Key"), "pk"), "S")),
           "default/f1", "no environment: default");
    is_str(json_string_value(json_object_get(json_object_get(json_object_get(u, "Key"), "sk"), "S")),
           "2026-11-22T10", "hour key");
    json_t *v = json_object_get(u, "ExpressionAttributeValues");
    is_str(json_string_value(json_object_get(json_object_get(v, ":n"), "N")), "2", "f1: 2 evaluations (duplicate id once)");
    is_str(json_string_value(json_object_get(json_object_get(v, ":t"), "N")), "1", "f1: 1 true");
    is_int(json_array_size(json_object_get(json_object_get(v, ":m"), "NS")), 2, "minutes 5 and 59");
    json_decref(j);
    free(a);
    free(b);

    tm_usage_batch *big = tm_usage_batch_new();
    char id[32], flag[32];
    for (int i = 0; i < 250; i++) {
        snprintf(id, sizeof id, "id%d", i);
        snprintf(flag, sizeof flag, "flag-%d", i);
        json_t *e = ev(id, flag, 1, "2026-11-22T10:00:00Z", NULL);
        tm_usage_add_event(big, e);
        json_decref(e);
    }
    json_t *bad = ev("x", "bad name", 1, "2026-11-22T10:00:00Z", NULL);
    is_int(tm_usage_add_event(big, bad), 1, "an invalid flag name is not counted");
    json_decref(bad);
    bad = ev("y", "f", 1, "yesterday", NULL);
    is_int(tm_usage_add_event(big, bad), 1, "a bad timestamp is not counted");
    json_decref(bad);
    is_int(tm_usage_txns(big), 3, "250 groups: 3 transactions of at most 99");
    char *t2 = tm_usage_txn_body(big, "T", 2);
    json_t *j2 = json_loads(t2 ? t2 : "", 0, NULL);
    is_int(json_array_size(json_object_get(j2, "TransactItems")), 1 + 250 - 198, "the last one: marker + 52");
    ok(strstr(t2 ? t2 : "", "/2\"") != NULL, "its marker is /2");
    ok(tm_usage_txn_body(big, "T", 3) == NULL, "no fourth transaction");
    json_decref(j2);
    free(t2);
    tm_usage_batch_free(big);
}

static void summaries(void)
{
    char err[200];
    const char *good = "{\"v\":2,\"events\":[],\"summaries\":[{\"summary_id\":\"s1\",\"timestamp\":"
                       "\"2026-11-22T10:00:00Z\",\"environment\":\"staging\",\"flags\":{\"f\":{\"n\":3,\"t\":2,\"f\":1,"
                       "\"variants\":{\"on\":2}}}}]}";
    json_t *sums = NULL;
    json_t *evs = tm_events_parse_message(good, strlen(good), "m", &sums, err, sizeof err);
    ok(evs && json_array_size(evs) == 0 && json_array_size(sums) == 1, "v2 envelope with one summary");
    tm_usage_batch *b = tm_usage_batch_new();
    is_int(tm_usage_add_summary(b, json_array_get(sums, 0)), 0, "summary counted");
    is_int(tm_usage_add_summary(b, json_array_get(sums, 0)), 0, "again: a duplicate, not counted twice");
    char *t = tm_usage_txn_body(b, "T", 0);
    ok(t && strstr(t, "\"staging/f\"") && strstr(t, "\"v:on\"") && strstr(t, "{\"N\":\"3\"}"),
       "staging/f: 3 evaluations, variant on");
    free(t);
    tm_usage_batch_free(b);
    json_decref(evs);
    json_decref(sums);
    ok(tm_events_from_message(good, strlen(good), "m", err, sizeof err) == NULL, "v1 readers refuse v2: %s", err);
    static const char *const poison[] = {
        "{\"v\":2,\"events\":[]}",
        "{\"v\":2,\"events\":[],\"summaries\":[]}",
        "{\"v\":2,\"events\":[],\"summaries\":[{\"summary_id\":\"s\",\"timestamp\":\"t\",\"flags\":{}}]}",
        "{\"v\":2,\"events\":[],\"summaries\":[{\"summary_id\":\"s\",\"timestamp\":\"t\",\"flags\":{\"f\":{\"n\":1,\"t\":2}}}]}",
        "{\"v\":2,\"events\":[],\"summaries\":[{\"summary_id\":\"s\",\"timestamp\":\"t\",\"flags\":{\"f\":{\"n\":0}}}]}",
        "{\"v\":2,\"events\":[],\"summaries\":[{\"timestamp\":\"t\",\"flags\":{\"f\":{\"n\":1}}}]}",
        "{\"v\":2,\"events\":[],\"summaries\":[{\"summary_id\":\"s\",\"timestamp\":\"t\",\"flags\":{\"f\":{\"n\":2,\"variants\":{\"x\":3}}}}]}",
        "{\"v\":3,\"events\":[],\"summaries\":[]}",
        NULL
    };
    for (const char *const *p = poison; *p; p++) {
        err[0] = '\0';
        evs = tm_events_parse_message(*p, strlen(*p), "m", &sums, err, sizeof err);
        ok(!evs && !sums && err[0], "poison: %s", err);
    }
}

static void ranges(void)
{
    char err[200];
    tm_usage_range r;
    time_t now = tm_aws_parse_time("2026-11-22T10:30:00Z");
    ok(tm_usage_parse_range(NULL, NULL, NULL, now, &r, err, sizeof err) == 0, "defaults");
    is_int(r.to - r.from, 24 * 3600, "24 hours");
    is_int(r.to, tm_aws_parse_time("2026-11-22T11:00:00Z"), "to: the end of the current hour");
    ok(tm_usage_parse_range("2026-11-01", "2026-11-03T00:00:01+00:00", "day", now, &r, err, sizeof err) == 0, "days");
    is_int((r.to - r.from) / 86400, 3, "to rounded up to whole days");
    ok(tm_usage_parse_range("2026-11-22T12:00:00+02:00", NULL, NULL, now, &r, err, sizeof err) == 0, "offset");
    is_int(r.from, tm_aws_parse_time("2026-11-22T10:00:00Z"), "offsets read");
    static const char *const bad[][3] = {
        { "nope", NULL, NULL }, { "2026-02-30x", NULL, NULL }, { NULL, "2026-11-22T25:00:00Z", NULL },
        { "2026-11-22", "2026-11-21", NULL }, { "2026-01-01", "2026-03-01", "hour" },
        { "2024-01-01", "2026-01-01", "day" }, { NULL, NULL, "minute" }, { "1970-01-01", NULL, "day" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        ok(tm_usage_parse_range(bad[i][0], bad[i][1], bad[i][2], now, &r, err, sizeof err) != 0 && err[0],
           "refused: %s", err);
    }
    int d;
    ok(tm_usage_parse_days(NULL, &d, err, sizeof err) == 0 && d == 30, "days default 30");
    ok(tm_usage_parse_days("90", &d, err, sizeof err) == 0 && d == 90, "days 90");
    ok(tm_usage_parse_days("91", &d, err, sizeof err) != 0, "days 91 refused");
    ok(tm_usage_parse_days("7x", &d, err, sizeof err) != 0, "days 7x refused");
}

static void series(void)
{
    tm_usage_range r = { tm_aws_parse_time("2026-11-22T00:00:00Z"), tm_aws_parse_time("2026-11-23T00:00:00Z"), 3600 };
    tm_usage_series s;
    int rc = tm_usage_series_init(&s, &r);   /* ok() evaluates its condition twice */
    ok(rc == 0, "series");
    json_t *items = json_loads("[{\"pk\":{\"S\":\"default/f\"},\"sk\":{\"S\":\"2026-11-22T10\"},\"evals\":{\"N\":\"5\"},"
                               "\"t\":{\"N\":\"4\"},\"f\":{\"N\":\"1\"},\"v:on\":{\"N\":\"4\"},\"mins\":{\"NS\":[\"3\",\"41\"]}},"
                               "{\"pk\":{\"S\":\"default/f\"},\"sk\":{\"S\":\"2026-11-21T23\"},\"evals\":{\"N\":\"9\"},"
                               "\"mins\":{\"NS\":[\"59\"]}},{\"sk\":{\"S\":\"junk\"}}]", 0, NULL);
    is_int(tm_usage_series_add(&s, items), -1, "a junk item is reported (and skipped)");
    json_t *j = tm_usage_series_json(&s);
    is_int(json_array_size(json_object_get(j, "points")), 24, "24 points");
    is_int(json_integer_value(json_object_get(json_object_get(j, "totals"), "evaluations")), 5,
           "an item outside the range is not counted");
    is_str(json_string_value(json_object_get(j, "last_evaluated")), "2026-11-22T10:41:00Z", "last evaluated");
    is_int(json_integer_value(json_object_get(json_object_get(json_object_get(j, "totals"), "variants"), "on")), 4,
           "variants");
    json_decref(j);
    json_decref(items);
    tm_usage_series_free(&s);
}

int main(void)
{
    writes();
    summaries();
    ranges();
    series();
    return tap_done();
}
