/* SQL fragments shared by the daemons. */
#ifndef TM_SQL_H
#define TM_SQL_H

/* RFC 3339 UTC with microseconds, e.g. 2026-11-22T10:00:00.123456Z. */
#define TM_SQL_TS(col) \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* A JSON array of json_text (a text expression per row) ordered by col in
 * byte order whatever the database's locale; '[]' when there is no row.
 * The elements are exactly the texts each row serialises to. */
#define TM_SQL_JSON_ARRAY(json_text, col) \
    "'[' || coalesce(string_agg(" json_text ", ',' ORDER BY " col " COLLATE \"C\"), '') || ']'"

#endif
