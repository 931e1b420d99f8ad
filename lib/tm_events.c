#include "tm_events.h"
#include "tm_usage.h"
#include "tm_hash.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s", msg);
    }
    return -1;
}

static const char *const string_fields[] = { "event_id", "user_id", "flag_name", "timestamp",
                                             "variant", "reason", "environment", NULL };

/* Members an event may lack: absent means "none" (variant, reason) or the
 * default environment (environment, which older edges never send). */
static int optional_field(const char *f)
{
    return strcmp(f, "variant") == 0 || strcmp(f, "reason") == 0
           || strcmp(f, "environment") == 0;
}

static int str_ok(const json_t *v, int required)
{
    if (!v || json_is_null(v)) {
        return !required;
    }
    if (!json_is_string(v)) {
        return 0;
    }
    size_t n = json_string_length(v);
    if (required && n == 0) {
        return 0;
    }
    return n <= TM_EVENT_FIELD_MAX && strlen(json_string_value(v)) == n; /* no NUL */
}

int tm_event_check(const json_t *ev, int need_id, char *err, size_t errlen)
{
    char msg[128];
    if (!json_is_object(ev)) {
        return fail(err, errlen, "event is not a JSON object");
    }
    for (const char *const *f = string_fields; *f; f++) {
        int required = !optional_field(*f) && (need_id || strcmp(*f, "event_id") != 0);
        json_t *v = json_object_get(ev, *f);
        if (strcmp(*f, "event_id") == 0 && json_is_string(v)) {
            required = 1; /* optional, but never empty */
        }
        if (!str_ok(v, required)) {
            snprintf(msg, sizeof msg, "event field \"%s\" must be a %sstring of at most %d bytes",
                     *f, required ? "non-empty " : "", TM_EVENT_FIELD_MAX);
            return fail(err, errlen, msg);
        }
    }
    if (!json_is_boolean(json_object_get(ev, "result"))) {
        return fail(err, errlen, "event field \"result\" must be true or false");
    }
    return 0;
}

/* 16 bytes as a UUID string with the given version and the RFC 4122 variant. */
static void format_uuid(unsigned char b[16], int version, char out[TM_UUID_LEN + 1])
{
    b[6] = (unsigned char) ((b[6] & 0x0f) | (version << 4));
    b[8] = (unsigned char) ((b[8] & 0x3f) | 0x80);
    char hex[33];
    tm_hex(b, 16, hex);
    snprintf(out, TM_UUID_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12,
             hex + 16, hex + 20);
}

void tm_event_id_derive(const char *message_id, size_t index, char out[TM_UUID_LEN + 1])
{
    /* A fixed namespace for ToggleMaster event ids. */
    static const unsigned char ns[16] = {
        0x6f, 0x1d, 0x2a, 0x57, 0x0c, 0x44, 0x4b, 0x8e,
        0x9d, 0x31, 0x5a, 0x7e, 0x22, 0xc0, 0x13, 0x9b
    };
    char idx[32];
    int il = snprintf(idx, sizeof idx, "#%zu", index);
    SHA_CTX c;
    unsigned char md[SHA_DIGEST_LENGTH];
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    SHA1_Init(&c);
    SHA1_Update(&c, ns, sizeof ns);
    SHA1_Update(&c, message_id ? message_id : "", message_id ? strlen(message_id) : 0);
    SHA1_Update(&c, idx, (size_t) il);
    SHA1_Final(md, &c);
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
    format_uuid(md, 5, out);
}

int tm_uuid_v4(char out[TM_UUID_LEN + 1])
{
    unsigned char b[16];
    if (tm_random_bytes(b, sizeof b) != 0) {
        return -1;
    }
    format_uuid(b, 4, out);
    return 0;
}

/* A copy holding only the known fields, with an event_id. */
static json_t *normalise(const json_t *ev, const char *message_id, size_t index)
{
    json_t *o = json_object();
    if (!o) {
        return NULL;
    }
    for (const char *const *f = string_fields; *f; f++) {
        json_t *v = json_object_get(ev, *f);
        if (json_is_string(v) && json_object_set(o, *f, v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    if (json_object_set(o, "result", json_object_get(ev, "result")) != 0) {
        json_decref(o);
        return NULL;
    }
    if (!json_object_get(o, "event_id")) {
        char id[TM_UUID_LEN + 1];
        tm_event_id_derive(message_id, index, id);
        if (json_object_set_new(o, "event_id", json_string(id)) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* The summaries of a version 2 envelope: an array of 0..
 * TM_EVENTS_MAX_SUMMARIES valid summaries (a new reference), or NULL with err. */
static json_t *summaries_of(const json_t *env, char *err, size_t errlen)
{
    json_t *list = json_object_get(env, "summaries");
    if (!list || json_is_null(list)) {
        return json_array();
    }
    if (!json_is_array(list) || json_array_size(list) > TM_EVENTS_MAX_SUMMARIES) {
        char msg[120];
        snprintf(msg, sizeof msg, "envelope \"summaries\" must be an array of 0..%d summaries",
                 TM_EVENTS_MAX_SUMMARIES);
        fail(err, errlen, msg);
        return NULL;
    }
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s) {
        char e[200], msg[300];
        if (tm_usage_summary_check(s, e, sizeof e) != 0) {
            snprintf(msg, sizeof msg, "summary %zu: %s", i, e);
            fail(err, errlen, msg);
            return NULL;
        }
    }
    return json_incref(list);
}

/* The raw event list of a message (a new reference), with *summaries set
 * for an envelope of version 2. NULL with err. */
static json_t *event_list(json_t *j, json_t **summaries, char *err, size_t errlen)
{
    char msg[300];
    if (json_is_object(j) && json_object_get(j, "events")) {
        json_t *v = json_object_get(j, "v");
        json_int_t ver = json_is_integer(v) ? json_integer_value(v) : 0;
        if (ver != TM_EVENTS_VERSION && (ver != TM_EVENTS_VERSION_SUMMARIES || !summaries)) {
            fail(err, errlen, summaries ? "envelope \"v\" must be 1 or 2"
                                        : "envelope \"v\" must be 1");
            return NULL;
        }
        json_t *list = json_object_get(j, "events");
        size_t min = 1;
        if (ver == TM_EVENTS_VERSION_SUMMARIES) {
            if (!(*summaries = summaries_of(j, err, errlen))) {
                return NULL;
            }
            min = json_array_size(*summaries) ? 0 : 1;
        }
        if (!json_is_array(list) || json_array_size(list) < min
            || json_array_size(list) > TM_EVENTS_MAX_PER_MESSAGE) {
            snprintf(msg, sizeof msg, "envelope \"events\" must be an array of %zu..%d events",
                     min, TM_EVENTS_MAX_PER_MESSAGE);
            fail(err, errlen, msg);
            return NULL;
        }
        return json_incref(list);
    }
    if (json_is_object(j)) {
        json_t *list = json_array();
        if (!list || json_array_append(list, j) != 0) {
            json_decref(list);
            fail(err, errlen, "out of memory");
            return NULL;
        }
        return list;
    }
    fail(err, errlen, "message is neither an event nor an envelope");
    return NULL;
}

json_t *tm_events_parse_message(const char *body, size_t len, const char *message_id,
                                json_t **summaries, char *err, size_t errlen)
{
    if (summaries) {
        *summaries = NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(body ? body : "", len, 0, &je);
    char msg[300];
    if (!j) {
        snprintf(msg, sizeof msg, "not JSON: %s", je.text);
        fail(err, errlen, msg);
        return NULL;
    }
    json_t *list = event_list(j, summaries, err, errlen);
    json_decref(j);
    json_t *out = list ? json_array() : NULL;
    if (list && !out) {
        fail(err, errlen, "out of memory");
    }
    size_t i;
    json_t *ev;
    json_array_foreach(list, i, ev) {
        char e[200];
        if (!out) {
            break;
        }
        if (tm_event_check(ev, 0, e, sizeof e) != 0) {
            snprintf(msg, sizeof msg, "event %zu: %s", i, e);
            fail(err, errlen, msg);
            json_decref(out);
            out = NULL;
            break;
        }
        json_t *n = normalise(ev, message_id, i);
        if (!n || json_array_append_new(out, n) != 0) {
            fail(err, errlen, "out of memory");
            json_decref(out);
            out = NULL;
            break;
        }
    }
    json_decref(list);
    if (!out && summaries) {
        json_decref(*summaries);
        *summaries = NULL;
    } else if (out && summaries && !*summaries && !(*summaries = json_array())) {
        fail(err, errlen, "out of memory");
        json_decref(out);
        out = NULL;
    }
    return out;
}

json_t *tm_events_from_message(const char *body, size_t len, const char *message_id,
                               char *err, size_t errlen)
{
    return tm_events_parse_message(body, len, message_id, NULL, err, errlen);
}

json_t *tm_event_to_item(const json_t *ev)
{
    if (tm_event_check(ev, 1, NULL, 0) != 0) {
        return NULL;
    }
    json_t *it = json_object();
    for (const char *const *f = string_fields; it && *f; f++) {
        json_t *v = json_object_get(ev, *f);
        if (json_is_string(v) && json_string_length(v) > 0
            && json_object_set_new(it, *f, json_pack("{s:O}", "S", v)) != 0) {
            json_decref(it);
            return NULL;
        }
    }
    if (it && json_object_set_new(it, "result", json_pack("{s:O}", "BOOL",
                                  json_object_get(ev, "result"))) != 0) {
        json_decref(it);
        return NULL;
    }
    return it;
}

json_t *tm_event_from_item(const json_t *item)
{
    if (!json_is_object(item)) {
        return NULL;
    }
    json_t *ev = json_object();
    for (const char *const *f = string_fields; ev && *f; f++) {
        json_t *v = json_object_get(json_object_get(item, *f), "S");
        if (json_is_string(v) && json_object_set(ev, *f, v) != 0) {
            json_decref(ev);
            return NULL;
        }
    }
    json_t *r = json_object_get(json_object_get(item, "result"), "BOOL");
    if (!ev || !json_is_boolean(r) || json_object_set(ev, "result", r) != 0
        || tm_event_check(ev, 1, NULL, 0) != 0) {
        json_decref(ev);
        return NULL;
    }
    return ev;
}

char *tm_events_envelope(const json_t *events)
{
    if (!json_is_array(events)) {
        return NULL;
    }
    json_t *j = json_pack("{s:i, s:O}", "v", TM_EVENTS_VERSION, "events", events);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}
