/* The documents tmctl reads and writes, with no I/O: ToggleMaster's own
 * export format and the conversion of an Unleash client-features document
 * into it. Everything is checked here, with lib/'s own checks
 * (tm_rules_check, tm_segment_check, names and text), before anything is
 * sent, so a bad file changes nothing.
 *
 * Export format (keys in this order; arrays ordered by name):
 *   {"format":"togglemaster","version":1,
 *    "flags":   [{"name","description","is_enabled"}],
 *    "segments":[{"name","description","constraints"}],
 *    "rules":   [{"flag_name","is_enabled","rules"}]} */
#ifndef TMCTL_DOC_H
#define TMCTL_DOC_H
#include <jansson.h>
#include <stddef.h>

#define TMCTL_FORMAT "togglemaster"
#define TMCTL_VERSION 1

/* Checks a ToggleMaster document and returns it normalised (exactly the
 * fields above, defaults filled in, "id"/"created_at"/"updated_at" of rows
 * copied from the API dropped); NULL with err ("flags[2].name: ...").
 * Missing arrays are empty. */
json_t *tmctl_doc_normalize(const json_t *in, char *err, size_t errlen);

/* Builds a flag / segment / rule entry from an API row (the fields above). */
json_t *tmctl_doc_from_rows(const json_t *flags, const json_t *segments,
                            const json_t *rules, char *err, size_t errlen);

/* Converts an Unleash client-features document ({"version","features",
 * "segments"}) into a normalised ToggleMaster document. Strategies without
 * an equivalent (custom ones) are an error, or dropped with a warning on
 * stderr when skip_unknown. Warnings (e.g. a description's line breaks
 * turned into spaces) go to stderr. NULL with err on failure. */
json_t *tmctl_unleash_convert(const json_t *in, int skip_unknown, char *err, size_t errlen);

/* Deep equality where 25 and 25.0 are the same number (JSONB may keep
 * either); objects compare regardless of key order. */
int tmctl_same(const json_t *a, const json_t *b);
#endif
