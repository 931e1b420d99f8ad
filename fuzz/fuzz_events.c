/* SQS message bodies as the worker receives them: the edge's envelope or an
 * original single event; every event found is mapped to a DynamoDB item and
 * back. */
#include "tm_events.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    json_t *evs = tm_events_from_message((const char *) data, size, "msg-1", err, sizeof err);
    if (evs == NULL) {
        return 0;
    }
    size_t i;
    json_t *ev;
    json_array_foreach(evs, i, ev) {
        json_t *item = tm_event_to_item(ev);
        if (item) {
            json_t *back = tm_event_from_item(item);
            json_decref(back);
            json_decref(item);
        }
    }
    json_decref(evs);
    return 0;
}
