/* Change notifications (docs/audit.md): endpoints registered with a
 * daemon are told of that daemon's changes. The delivery is durable: the
 * outbox row for each (change, endpoint) is written by tm_audit_record()
 * in the change's own transaction; a thread per daemon delivers it with
 * libcurl, signed, retried with exponential backoff and jitter until
 * TM_WEBHOOK_RETRY_SECONDS (default 86400) have passed, then marks it
 * failed. Rows are claimed in batches, per endpoint in id order under an
 * advisory lock that one replica holds at a time, and endpoints are sent
 * to in parallel; an endpoint's later rows wait behind its first row not
 * delivered (per-endpoint order). A daemon killed mid-round leaves its
 * rows pending (its transaction dies with it) and they are sent again:
 * at-least-once, deduplicated by receivers on X-ToggleMaster-Delivery. */
#ifndef TM_WEBHOOKS_H
#define TM_WEBHOOKS_H
#include "tm_db.h"
#include "tm_http.h"

/* The tables (migrated with the audit trail's, tm_audit.c). */
#define TM_WEBHOOKS_SQL_ENDPOINTS \
    "CREATE TABLE IF NOT EXISTS webhooks (" \
    " id SERIAL PRIMARY KEY," \
    " service TEXT NOT NULL," \
    " url TEXT NOT NULL," \
    " secret TEXT NOT NULL," \
    " kinds TEXT[]," \
    " environments TEXT[]," \
    " format TEXT NOT NULL DEFAULT 'json' CHECK (format IN ('json', 'slack'))," \
    " created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
#define TM_WEBHOOKS_SQL_OUTBOX \
    "CREATE TABLE IF NOT EXISTS webhook_outbox (" \
    " id BIGSERIAL PRIMARY KEY," \
    " webhook_id INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE," \
    " service TEXT NOT NULL," \
    " delivery_id TEXT NOT NULL UNIQUE," \
    " body TEXT NOT NULL," \
    " status TEXT NOT NULL DEFAULT 'pending'" \
    "   CHECK (status IN ('pending', 'delivered', 'failed'))," \
    " attempts INTEGER NOT NULL DEFAULT 0," \
    " last_error TEXT," \
    " next_at TIMESTAMPTZ NOT NULL DEFAULT now()," \
    " created_at TIMESTAMPTZ NOT NULL DEFAULT now()," \
    " delivered_at TIMESTAMPTZ)"
#define TM_WEBHOOKS_SQL_OUTBOX_INDEX \
    "CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (service, next_at)" \
    " WHERE status = 'pending'"
/* Each endpoint's pending rows in order (the delivery rounds' claim). */
#define TM_WEBHOOKS_SQL_OUTBOX_PENDING_INDEX \
    "CREATE INDEX IF NOT EXISTS webhook_outbox_pending ON webhook_outbox (webhook_id, id)" \
    " WHERE status = 'pending'"

/* Reads TM_WEBHOOK_TIMEOUT_MS (total per attempt, default 5000),
 * TM_WEBHOOK_CONNECT_TIMEOUT_MS (default 2000), TM_WEBHOOK_BACKOFF_MS (the
 * first retry's delay, default 1000; doubling, at most an hour, with
 * jitter) and TM_WEBHOOK_RETRY_SECONDS (default 86400); starts the delivery
 * thread for the daemon's outbox. 0, or -1 logged. */
int tm_webhooks_start(const char *daemon_name);
/* Stops the thread (after the attempts in flight, at most the timeout). */
void tm_webhooks_stop(void);

/* Serves /webhooks and /webhooks/... (the key already checked: writes need
 * the admin scope); 1 when path is one of them. */
int tm_webhooks_route(const tm_req *req, tm_resp *resp);
#endif
