/* AWS access without sockets: credentials, endpoints, signed JSON-protocol
 * requests for SQS and DynamoDB, and response parsers that accept what real
 * AWS and the emulators (moto, LocalStack) send. The caller does the HTTP. */
#ifndef TM_AWS_H
#define TM_AWS_H
#include <jansson.h>
#include <stddef.h>
#include <time.h>

/* ---- credentials ------------------------------------------------------ */

typedef enum {
    TM_AWS_CREDS_NONE = 0,
    TM_AWS_CREDS_ENV,          /* AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY [/ AWS_SESSION_TOKEN] */
    TM_AWS_CREDS_WEB_IDENTITY, /* IRSA: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN -> STS */
    TM_AWS_CREDS_CONTAINER,    /* AWS_CONTAINER_CREDENTIALS_FULL_URI / _RELATIVE_URI */
    TM_AWS_CREDS_STATIC        /* set by the program (e.g. dummy keys for an emulator) */
} tm_aws_creds_source;

/* One set of credentials. Temporary ones carry an expiry; a holder refreshes
 * them (from the same source) when tm_aws_creds_stale() says so and swaps
 * the whole struct under its own lock, so a signer never sees half a set. */
typedef struct {
    char *access_key;
    char *secret_key;
    char *session_token; /* NULL without one */
    time_t expires;      /* 0: does not expire */
    tm_aws_creds_source source;
} tm_aws_creds;

#define TM_AWS_CREDS_REFRESH_MARGIN 300 /* refresh 5 min before expiry */

/* Which source the SDKs' order picks with this environment: keys in the
 * environment, then web identity, then container credentials. */
tm_aws_creds_source tm_aws_creds_detect(void);
const char *tm_aws_creds_source_name(tm_aws_creds_source s);

/* Keys from the environment. 0, or -1 with err when they are not set. */
int tm_aws_creds_from_env(tm_aws_creds *c, char *err, size_t errlen);
/* Copies the given strings (token may be NULL). 0 or -1 (out of memory). */
int tm_aws_creds_set(tm_aws_creds *c, tm_aws_creds_source src, const char *ak,
                     const char *sk, const char *token, time_t expires);
/* 1 when c holds no keys or expires within the refresh margin. */
int tm_aws_creds_stale(const tm_aws_creds *c, time_t now);
void tm_aws_creds_free(tm_aws_creds *c);

/* ---- container credentials endpoint (EKS Pod Identity, ECS) ----------
 * The rules every fetcher (the nginx module, the analytics worker) applies
 * before it sends the authorization token anywhere. */

#define TM_AWS_CONTAINER_HOST "http://169.254.170.2"

/* The endpoint URL into url (size bytes): full (AWS_CONTAINER_CREDENTIALS_
 * FULL_URI) when set, else TM_AWS_CONTAINER_HOST, '/', then relative
 * (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI) without its leading '/': the
 * relative URI is only ever a path on that host ("@evil/x" does not lead
 * elsewhere). Either may be NULL or empty. 0, or -1 with err when neither is
 * set, or the result is too long or holds a control character or a space. */
int tm_aws_container_url(const char *full, const char *relative, char *url,
                         size_t size, char *err, size_t errlen);

/* 1 when plain http may carry the token to this address: loopback
 * (127.0.0.0/8, ::1), 169.254.170.2 (ECS), 169.254.170.23 or fd00:ec2::23
 * (EKS Pod Identity); 0 for any other address or family. sa is a struct
 * sockaddr (declared void to keep sockets out of this header). Any other
 * host must be reached over https. */
int tm_aws_container_addr_ok(const void *sa);

/* 1 when the len bytes of v can go in an HTTP header value (a token): no
 * CR, LF or NUL, which would end the header and start another. */
int tm_aws_header_value_ok(const char *v, size_t len);

/* Container credentials endpoint reply (EKS Pod Identity, ECS):
 * {"AccessKeyId","SecretAccessKey","Token","Expiration":"2026-11-22T10:00:00Z"}. */
int tm_aws_creds_parse_container(const char *body, size_t len, tm_aws_creds *c,
                                 char *err, size_t errlen);
/* STS AssumeRoleWithWebIdentity reply (XML, or JSON when asked for). */
int tm_aws_creds_parse_sts(const char *body, size_t len, tm_aws_creds *c,
                           char *err, size_t errlen);
/* The STS query for IRSA (an unsigned POST form body to the STS endpoint):
 * Action=AssumeRoleWithWebIdentity&RoleArn=...&RoleSessionName=...&WebIdentityToken=...
 * Returns a malloc'd string or NULL. */
char *tm_aws_sts_web_identity_form(const char *role_arn, const char *session_name,
                                   const char *token);

/* Parses "2026-11-22T10:00:00Z" (fraction and offset "+00:00" accepted). -1 if bad. */
time_t tm_aws_parse_time(const char *s);

/* ---- endpoints --------------------------------------------------------- */

typedef struct {
    char url[512];        /* scheme://host[:port]/path, what the request goes to */
    char host[300];       /* host[:port] for the Host header */
    char path[200];       /* request path, "/" unless the endpoint URL has one */
    char region[64];
    char signing_name[32];   /* sqs, dynamodb, sts */
    char target_prefix[32];  /* AmazonSQS, DynamoDB_20120810 */
    int custom;              /* from AWS_ENDPOINT_URL* or a non-AWS queue URL */
} tm_aws_endpoint;

/* Region: AWS_REGION, AWS_DEFAULT_REGION, the region in an AWS queue URL
 * (hint, may be NULL), else us-east-1. */
void tm_aws_region(const char *hint_url, char *out, size_t outlen);

/* Endpoint for "sqs", "dynamodb" or "sts": AWS_ENDPOINT_URL_<SERVICE>, then
 * AWS_ENDPOINT_URL, then (SQS only) the origin of a non-AWS queue URL given
 * as hint (an emulator's), then https://<service>.<region>.amazonaws.com
 * (.com.cn in China regions). 0, or -1 with err. */
int tm_aws_endpoint_resolve(tm_aws_endpoint *ep, const char *service,
                            const char *region, const char *hint_url,
                            char *err, size_t errlen);

/* Splits http(s)://host[:port][/path]; host gets host[:port]. 0 or -1. */
int tm_aws_url_split(const char *url, char *scheme, size_t slen, char *host,
                     size_t hlen, char *path, size_t plen);

/* ---- signed JSON-protocol requests ------------------------------------ */

#define TM_AWS_MAX_HEADERS 8
#define TM_AWS_JSON_CONTENT_TYPE "application/x-amz-json-1.0"

typedef struct {
    char *url;
    char *body;
    size_t body_len;
    char *headers[TM_AWS_MAX_HEADERS]; /* "Name: value", ready for the wire */
    size_t nheaders;
} tm_aws_request;

/* POST <ep.url> with X-Amz-Target <prefix>.<op>, Content-Type
 * application/x-amz-json-1.0, X-Amz-Date, X-Amz-Security-Token (temporary
 * credentials) and Authorization (SigV4 at time now). Takes ownership of
 * body (malloc'd) in every case. 0, or -1 with err. */
int tm_aws_json_request(tm_aws_request *out, const tm_aws_endpoint *ep,
                        const tm_aws_creds *c, const char *op, char *body,
                        time_t now, char *err, size_t errlen);
void tm_aws_request_free(tm_aws_request *r);

/* ---- errors ------------------------------------------------------------ */

typedef struct {
    long status;
    char code[128];     /* "QueueDoesNotExist": namespace prefix and ":..." suffix removed */
    char message[512];
    int sender_fault;   /* the client's fault: retrying the same request will not help */
    int throttling;
    int retryable;      /* throttling, 5xx, or status 0 (no answer) */
} tm_aws_error;

/* Fills e from an error reply: JSON {"__type": "ns#Code", "message"|"Message"},
 * the x-amzn-query-error header ("AWS.SimpleQueueService.NonExistentQueue;Sender",
 * may be NULL), or just the status. Never fails. */
void tm_aws_parse_error(long status, const char *body, size_t len,
                        const char *query_error_header, tm_aws_error *e);

/* ---- SQS (JSON protocol) ---------------------------------------------- */

#define TM_SQS_MAX_BATCH 10

typedef struct {
    char *message_id;
    char *receipt_handle;
    char *body;
    size_t body_len;
    long receive_count;      /* ApproximateReceiveCount, 0 if not returned */
    long long sent_ms;       /* SentTimestamp, 0 if not returned */
} tm_sqs_message;

typedef struct {
    const char *id;     /* batch entry id: [A-Za-z0-9_-]{1,80} */
    const char *value;  /* receipt handle (delete, visibility) or message body (send) */
} tm_sqs_entry;

/* Request bodies (malloc'd JSON, NULL on bad arguments or OOM). */
char *tm_sqs_receive_body(const char *queue_url, int max_messages, int wait_seconds,
                          int visibility_timeout /* <0: the queue's */);
char *tm_sqs_delete_batch_body(const char *queue_url, const tm_sqs_entry *e, size_t n);
char *tm_sqs_send_batch_body(const char *queue_url, const tm_sqs_entry *e, size_t n);
char *tm_sqs_change_visibility_body(const char *queue_url, const char *receipt_handle,
                                    int timeout);
char *tm_sqs_get_attributes_body(const char *queue_url, const char *const *names);
char *tm_sqs_queue_url_body(const char *queue_name);

/* ReceiveMessage reply; no "Messages" (or null, or []) is zero messages.
 * 0, or -1 with err when the body is not a receive reply. */
int tm_sqs_parse_receive(const char *body, size_t len, tm_sqs_message **msgs,
                         size_t *n, char *err, size_t errlen);
void tm_sqs_messages_free(tm_sqs_message *m, size_t n);

typedef struct {
    size_t nok;
    char ok[TM_SQS_MAX_BATCH][81];
    size_t nfailed;
    struct {
        char id[81];
        char code[128];
        char message[256];
        int sender_fault;  /* "SenderFault": true, "true" or absent (false) */
    } failed[TM_SQS_MAX_BATCH];
} tm_sqs_batch_result;

/* SendMessageBatch / DeleteMessageBatch / ChangeMessageVisibilityBatch reply. */
int tm_sqs_parse_batch_result(const char *body, size_t len, tm_sqs_batch_result *r,
                              char *err, size_t errlen);

/* GetQueueAttributes reply: the value of one attribute (malloc'd) or NULL. */
char *tm_sqs_parse_attribute(const char *body, size_t len, const char *name);
/* maxReceiveCount of a RedrivePolicy attribute value; 0 if none/bad. */
long tm_sqs_redrive_max_receive(const char *redrive_policy);

/* ---- DynamoDB (JSON protocol) ----------------------------------------- */

#define TM_DDB_MAX_BATCH_WRITE 25

/* BatchWriteItem body putting every item of the array (1..25) into table.
 * Items are DynamoDB-typed objects ({"event_id":{"S":"..."},...}). */
char *tm_ddb_batch_write_body(const char *table, const json_t *items);
/* The same from n (1..25) items already in JSON text (compact objects, as
 * json_dumps gives them): they are copied in as they are, not parsed, so a
 * caller may hold many items as text and build requests without trees. */
char *tm_ddb_batch_write_body_text(const char *table, const char *const *items, size_t n);
/* {"TableName": table} for DescribeTable (the worker's health probe). */
char *tm_ddb_table_body(const char *table);
/* The items of `table` that a BatchWriteItem reply left unprocessed: a new
 * array (empty when all were written), or NULL if body is not such a reply. */
json_t *tm_ddb_parse_unprocessed(const char *body, size_t len, const char *table);
/* Query on a table whose keys are a string partition key and a string sort
 * key: "<pk_name> = pk AND <sk_name> BETWEEN sk_from AND sk_to" (both bounds
 * inclusive). forward: ScanIndexForward; limit 0: none; start: the previous
 * reply's LastEvaluatedKey (or NULL). Names go through
 * ExpressionAttributeNames, so reserved words are fine. NULL on bad
 * arguments or OOM. */
char *tm_ddb_query_body(const char *table, const char *pk_name, const char *pk,
                        const char *sk_name, const char *sk_from, const char *sk_to,
                        int forward, int limit, const json_t *start);
/* A Query reply: its "Items" (a new reference) and, when there are more
 * pages, *last_key set to a new reference to "LastEvaluatedKey" (else NULL).
 * NULL when body is not a Query reply. */
json_t *tm_ddb_parse_query(const char *body, size_t len, json_t **last_key);
/* The "Code" of CancellationReasons[i] of a TransactionCanceledException
 * reply into code ("None" for an action that did not fail). 0, or -1 when
 * the body holds no such reason. */
int tm_ddb_cancel_reason(const char *body, size_t len, size_t i, char *code, size_t codelen);
#endif
