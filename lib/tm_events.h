/* Evaluation events: the batch envelope the edge puts on SQS, the original
 * single-event message, and the DynamoDB item the worker stores. The format
 * is documented in docs/events.md. */
#ifndef TM_EVENTS_H
#define TM_EVENTS_H
#include <jansson.h>
#include <stddef.h>

#define TM_EVENTS_VERSION 1
/* The envelope that may carry bulk-evaluation summaries (docs/events.md). */
#define TM_EVENTS_VERSION_SUMMARIES 2
#define TM_EVENTS_MAX_SUMMARIES 10
#define TM_EVENTS_MAX_PER_MESSAGE 1000
#define TM_EVENT_FIELD_MAX 1024   /* bytes, any string field */
#define TM_UUID_LEN 36

/* Checks one event: user_id, flag_name, timestamp non-empty strings, result
 * a boolean, variant/reason/environment absent, null or strings (no
 * environment: the default one), event_id (required when
 * need_id) a non-empty string. Other fields are ignored. 0 or -1 with err. */
int tm_event_check(const json_t *ev, int need_id, char *err, size_t errlen);

/* The events of one SQS message: the envelope {"v":1,"events":[...]} or an
 * original single event {"user_id","flag_name","result","timestamp"}. Each
 * returned event (a new array of new objects holding only the known fields)
 * has an event_id: its own, or one derived from message_id and its index so
 * that a redelivered message maps to the same items.
 * NULL with err when the message cannot be used (poison). */
json_t *tm_events_from_message(const char *body, size_t len, const char *message_id,
                               char *err, size_t errlen);

/* The same, also reading the envelope of version 2:
 * {"v":2,"events":[0..1000 events],"summaries":[0..10 summaries]} (at least
 * one event or summary; a summary as lib/tm_usage.h checks it). *summaries
 * gets a new array (empty for other messages). Events are returned as
 * above. NULL with err (and *summaries NULL) when the message is poison. */
json_t *tm_events_parse_message(const char *body, size_t len, const char *message_id,
                                json_t **summaries, char *err, size_t errlen);

/* Deterministic name-based UUID (version 5 layout) of message_id and index. */
void tm_event_id_derive(const char *message_id, size_t index, char out[TM_UUID_LEN + 1]);
/* Random UUID v4 (the edge's event ids). 0, or -1 if the CSPRNG fails. */
int tm_uuid_v4(char out[TM_UUID_LEN + 1]);

/* Event <-> DynamoDB item: event_id, user_id, flag_name, timestamp as S,
 * result as BOOL, variant, reason and environment as S when present. NULL if the input is
 * not a valid event / item. */
json_t *tm_event_to_item(const json_t *ev);
json_t *tm_event_from_item(const json_t *item);

/* {"v":1,"events":[...]} as compact JSON (malloc'd), for producers. */
char *tm_events_envelope(const json_t *events);
#endif
