/* lib/tm_aws and lib/tm_events: credentials, endpoints, signed requests,
 * tolerant parsers, the event envelope and the DynamoDB item mapping. */
#include "tap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "tm_aws.h"
#include "tm_events.h"

#include <stdlib.h>

static json_t *J(const char *s)
{
    json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);
    if (!j) {
        printf("# bad test json: %s\n", s);
    }
    return j;
}

static int json_eq(json_t *got, const char *want)
{
    json_t *w = J(want);
    int same = got && w && json_equal(got, w);
    if (!same) {
        char *g = got ? json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        printf("#   got  %s\n#   want %s\n", g ? g : "(null)", want);
        free(g);
    }
    json_decref(w);
    return same;
}

static void clear_env(void)
{
    static const char *const vars[] = {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_REGION", "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB", NULL
    };
    for (const char *const *v = vars; *v; v++) {
        unsetenv(*v);
    }
}

static void test_creds(void)
{
    char err[256] = "";
    tm_aws_creds c = { 0 };
    clear_env();
    is_int(tm_aws_creds_detect(), TM_AWS_CREDS_NONE, "no credentials");
    int rc = tm_aws_creds_from_env(&c, err, sizeof err);
    ok(rc != 0, "env credentials missing: %s", err);
    setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/x", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token", 1);
    is_int(tm_aws_creds_detect(), TM_AWS_CREDS_WEB_IDENTITY, "web identity detected");
    setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "SECRET", 1);
    is_int(tm_aws_creds_detect(), TM_AWS_CREDS_ENV, "env keys come first");
    rc = tm_aws_creds_from_env(&c, err, sizeof err);
    ok(rc == 0 && strcmp(c.access_key, "AKID") == 0 && !c.session_token, "env keys");
    ok(!tm_aws_creds_stale(&c, time(NULL)), "env keys never stale");
    setenv("AWS_SESSION_TOKEN", "TOKEN", 1);
    rc = tm_aws_creds_from_env(&c, err, sizeof err);
    is_str(c.session_token, "TOKEN", "env session token");
    tm_aws_creds_free(&c);
    ok(tm_aws_creds_stale(&c, 0), "empty creds stale");
    clear_env();
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials", 1);
    is_int(tm_aws_creds_detect(), TM_AWS_CREDS_CONTAINER, "container detected");
    clear_env();

    const char *cont = "{\"AccessKeyId\":\"ASIA1\",\"SecretAccessKey\":\"s1\",\"Token\":\"t1\","
                       "\"Expiration\":\"2026-11-22T10:00:00Z\"}";
    rc = tm_aws_creds_parse_container(cont, strlen(cont), &c, err, sizeof err);
    ok(rc == 0 && c.source == TM_AWS_CREDS_CONTAINER, "container reply parsed");
    is_str(c.session_token, "t1", "container token");
    is_int(c.expires, 1795341600, "container expiry");
    ok(!tm_aws_creds_stale(&c, 1795341600 - 301), "fresh 301 s before expiry");
    ok(tm_aws_creds_stale(&c, 1795341600 - 300), "stale 300 s before expiry");
    rc = tm_aws_creds_parse_container("{\"Token\":\"x\"}", 13, &c, err, sizeof err);
    ok(rc != 0 && strcmp(c.access_key, "ASIA1") == 0, "bad reply keeps the old set: %s", err);
    tm_aws_creds_free(&c);

    const char *xml =
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
        "<AssumeRoleWithWebIdentityResult><Credentials>"
        "<AccessKeyId>ASIAXML</AccessKeyId><SecretAccessKey>sx</SecretAccessKey>"
        "<SessionToken>a&amp;b+/=</SessionToken><Expiration>2026-11-22T10:00:00.5Z</Expiration>"
        "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
    rc = tm_aws_creds_parse_sts(xml, strlen(xml), &c, err, sizeof err);
    ok(rc == 0 && c.source == TM_AWS_CREDS_WEB_IDENTITY, "STS XML parsed");
    is_str(c.access_key, "ASIAXML", "STS key");
    is_str(c.session_token, "a&b+/=", "STS token entities decoded");
    is_int(c.expires, 1795341600, "STS expiry");
    const char *sj = "{\"AssumeRoleWithWebIdentityResponse\":{\"AssumeRoleWithWebIdentityResult\":"
                     "{\"Credentials\":{\"AccessKeyId\":\"ASIAJ\",\"SecretAccessKey\":\"sj\","
                     "\"SessionToken\":\"tj\",\"Expiration\":1795341600}}}}";
    rc = tm_aws_creds_parse_sts(sj, strlen(sj), &c, err, sizeof err);
    ok(rc == 0 && strcmp(c.access_key, "ASIAJ") == 0 && c.expires == 1795341600, "STS JSON parsed");
    tm_aws_creds_free(&c);
    char *form = tm_aws_sts_web_identity_form("arn:aws:iam::1:role/r", "tm", "ey.J/+=");
    is_str(form, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr"
           "&RoleSessionName=tm&WebIdentityToken=ey.J%2F%2B%3D", "STS form");
    free(form);

    is_int(tm_aws_parse_time("2026-11-22T10:00:00+01:00"), 1795341600 - 3600, "time with offset");
    is_int(tm_aws_parse_time("2026-11-22 10:00:00"), -1, "time without T rejected");
    is_int(tm_aws_parse_time("2026-11-22T10:00:00"), -1, "time without zone rejected");
}

static void test_endpoints(void)
{
    char err[256] = "", region[64];
    tm_aws_endpoint ep;
    clear_env();
    tm_aws_region(NULL, region, sizeof region);
    is_str(region, "us-east-1", "default region");
    tm_aws_region("https://sqs.eu-west-3.amazonaws.com/123/q", region, sizeof region);
    is_str(region, "eu-west-3", "region from queue URL");
    tm_aws_region("https://ap-south-1.queue.amazonaws.com/123/q", region, sizeof region);
    is_str(region, "ap-south-1", "region from legacy queue URL");
    setenv("AWS_DEFAULT_REGION", "sa-east-1", 1);
    tm_aws_region("https://sqs.eu-west-3.amazonaws.com/123/q", region, sizeof region);
    is_str(region, "sa-east-1", "AWS_DEFAULT_REGION");
    setenv("AWS_REGION", "us-west-2", 1);
    tm_aws_region(NULL, region, sizeof region);
    is_str(region, "us-west-2", "AWS_REGION first");
    clear_env();

    int rc = tm_aws_endpoint_resolve(&ep, "sqs", "eu-west-1", NULL, err, sizeof err);
    ok(rc == 0, "resolve sqs");
    is_str(ep.url, "https://sqs.eu-west-1.amazonaws.com/", "sqs regional endpoint");
    is_str(ep.host, "sqs.eu-west-1.amazonaws.com", "sqs host");
    is_str(ep.target_prefix, "AmazonSQS", "sqs target prefix");
    rc = tm_aws_endpoint_resolve(&ep, "dynamodb", "cn-north-1", NULL, err, sizeof err);
    is_str(ep.url, "https://dynamodb.cn-north-1.amazonaws.com.cn/", "china endpoint");
    is_str(ep.target_prefix, "DynamoDB_20120810", "dynamodb target prefix");
    rc = tm_aws_endpoint_resolve(&ep, "sqs", "us-east-1", "http://localhost:4566/000000000000/q",
                                 err, sizeof err);
    is_str(ep.url, "http://localhost:4566/", "emulator queue URL origin");
    ok(ep.custom, "custom endpoint flagged");
    rc = tm_aws_endpoint_resolve(&ep, "sqs", "us-east-1", "https://sqs.us-east-1.amazonaws.com/1/q",
                                 err, sizeof err);
    is_str(ep.url, "https://sqs.us-east-1.amazonaws.com/", "AWS queue URL keeps regional endpoint");
    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566", 1);
    rc = tm_aws_endpoint_resolve(&ep, "dynamodb", "us-east-1", NULL, err, sizeof err);
    is_str(ep.url, "http://127.0.0.1:4566/", "AWS_ENDPOINT_URL");
    is_str(ep.host, "127.0.0.1:4566", "host with port");
    setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://ddb.local:8000/base/", 1);
    rc = tm_aws_endpoint_resolve(&ep, "dynamodb", "us-east-1", NULL, err, sizeof err);
    is_str(ep.url, "http://ddb.local:8000/base/", "service endpoint wins");
    is_str(ep.path, "/base/", "endpoint path");
    rc = tm_aws_endpoint_resolve(&ep, "sqs", "us-east-1", NULL, err, sizeof err);
    is_str(ep.url, "http://127.0.0.1:4566/", "other service keeps AWS_ENDPOINT_URL");
    setenv("AWS_ENDPOINT_URL_SQS", "ftp://x", 1);
    rc = tm_aws_endpoint_resolve(&ep, "sqs", "us-east-1", NULL, err, sizeof err);
    ok(rc != 0, "bad endpoint rejected: %s", err);
    clear_env();
    rc = tm_aws_endpoint_resolve(&ep, "sqs", "us east", NULL, err, sizeof err);
    ok(rc != 0, "bad region rejected: %s", err);
    rc = tm_aws_endpoint_resolve(&ep, "s3", "us-east-1", NULL, err, sizeof err);
    ok(rc != 0, "unknown service rejected");
}

static const char *find_header(const tm_aws_request *r, const char *prefix)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strncmp(r->headers[i], prefix, strlen(prefix)) == 0) {
            return r->headers[i] + strlen(prefix);
        }
    }
    return NULL;
}

static void test_request(void)
{
    char err[256] = "";
    tm_aws_endpoint ep;
    tm_aws_creds c = { 0 };
    tm_aws_request r;
    clear_env();
    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566", 1);
    int rc = tm_aws_endpoint_resolve(&ep, "sqs", "eu-west-1", NULL, err, sizeof err);
    clear_env();
    rc = tm_aws_creds_set(&c, TM_AWS_CREDS_STATIC, "AKIDEXAMPLE",
                          "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", NULL, 0);
    ok(rc == 0, "static creds");
    const char *body = "{\"QueueUrl\":\"http://127.0.0.1:4566/123456789012/q\","
                       "\"MaxNumberOfMessages\":10,\"WaitTimeSeconds\":20}";
    rc = tm_aws_json_request(&r, &ep, &c, "ReceiveMessage", strdup(body), 1795306382,
                             err, sizeof err);
    ok(rc == 0, "request built %s", err);
    is_str(r.url, "http://127.0.0.1:4566/", "request url");
    is_str(r.body, body, "request body");
    is_str(find_header(&r, "X-Amz-Target: "), "AmazonSQS.ReceiveMessage", "target header");
    is_str(find_header(&r, "Content-Type: "), "application/x-amz-json-1.0", "content type");
    is_str(find_header(&r, "Host: "), "127.0.0.1:4566", "host header");
    is_str(find_header(&r, "X-Amz-Date: "), "20261122T001302Z", "date header");
    ok(!find_header(&r, "X-Amz-Security-Token: "), "no token header");
    /* Signatures computed independently with botocore's SigV4Auth. */
    is_str(find_header(&r, "Authorization: "),
           "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/eu-west-1/sqs/aws4_request, "
           "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
           "Signature=3da8a2afdca18a909ce0cfbad46aaa5847981c38c036857e05df837def142ec1",
           "authorization matches botocore");
    tm_aws_request_free(&r);
    rc = tm_aws_creds_set(&c, TM_AWS_CREDS_STATIC, "AKIDEXAMPLE",
                          "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "FwoGZXIvYXdzEXAMPLE/token+==", 0);
    rc = tm_aws_json_request(&r, &ep, &c, "ReceiveMessage", strdup(body), 1795306382,
                             err, sizeof err);
    is_str(find_header(&r, "X-Amz-Security-Token: "), "FwoGZXIvYXdzEXAMPLE/token+==", "token header");
    is_str(find_header(&r, "Authorization: "),
           "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/eu-west-1/sqs/aws4_request, "
           "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, "
           "Signature=f9f69ef266a6ca6d8b3666b4c35d6770e4c32697ae0692be64670a06761319e7",
           "authorization with token matches botocore");
    tm_aws_request_free(&r);
    rc = tm_aws_json_request(&r, &ep, &c, "ReceiveMessage", NULL, 0, err, sizeof err);
    ok(rc != 0, "NULL body rejected");
    tm_aws_creds_free(&c);
    rc = tm_aws_json_request(&r, &ep, &c, "ReceiveMessage", strdup("{}"), 0, err, sizeof err);
    ok(rc != 0, "missing credentials rejected: %s", err);
}

static void test_errors(void)
{
    tm_aws_error e;
    const char *b1 = "{\"__type\":\"com.amazonaws.sqs#QueueDoesNotExist\",\"message\":\"The specified queue does not exist.\"}";
    tm_aws_parse_error(400, b1, strlen(b1), "AWS.SimpleQueueService.NonExistentQueue;Sender", &e);
    is_str(e.code, "QueueDoesNotExist", "namespace stripped");
    is_str(e.message, "The specified queue does not exist.", "message");
    ok(e.sender_fault && !e.retryable, "sender fault, not retryable");
    const char *b2 = "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException\",\"Message\":\"slow down\"}";
    tm_aws_parse_error(400, b2, strlen(b2), NULL, &e);
    is_str(e.code, "ProvisionedThroughputExceededException", "dynamodb code");
    is_str(e.message, "slow down", "Message capitalised");
    ok(e.throttling && e.retryable && !e.sender_fault, "throttling retryable");
    const char *b3 = "{\"__type\":\"ValidationException:http://internal.amazon.com/coral/x/\"}";
    tm_aws_parse_error(400, b3, strlen(b3), NULL, &e);
    is_str(e.code, "ValidationException", "coral suffix stripped");
    tm_aws_parse_error(503, "<html>busy</html>", 17, NULL, &e);
    ok(e.retryable && strcmp(e.code, "HTTP503") == 0, "5xx without JSON retryable (%s)", e.code);
    tm_aws_parse_error(0, NULL, 0, NULL, &e);
    ok(e.retryable && strcmp(e.code, "NoResponse") == 0, "no answer retryable");
    const char *b4 = "<ErrorResponse><Error><Type>Sender</Type><Code>AWS.SimpleQueueService.NonExistentQueue</Code>"
                     "<Message>gone</Message></Error></ErrorResponse>";
    tm_aws_parse_error(400, b4, strlen(b4), NULL, &e);
    is_str(e.code, "AWS.SimpleQueueService.NonExistentQueue", "XML error code");
    tm_aws_parse_error(400, "", 0, "AWS.SimpleQueueService.NonExistentQueue;Sender", &e);
    is_str(e.code, "AWS.SimpleQueueService.NonExistentQueue", "code from query error header");
}

static void test_sqs(void)
{
    char err[256] = "";
    char *b = tm_sqs_receive_body("http://q/1/a", 10, 20, -1);
    json_t *j = J(b);
    ok(json_eq(j, "{\"QueueUrl\":\"http://q/1/a\",\"MaxNumberOfMessages\":10,\"WaitTimeSeconds\":20,"
                  "\"AttributeNames\":[\"ApproximateReceiveCount\",\"SentTimestamp\"],"
                  "\"MessageSystemAttributeNames\":[\"ApproximateReceiveCount\",\"SentTimestamp\"]}"),
       "receive body");
    json_decref(j);
    free(b);
    b = tm_sqs_receive_body("http://q/1/a", 11, 20, -1);
    ok(b == NULL, "more than 10 messages refused");
    b = tm_sqs_receive_body("http://q/1/a", 1, 0, 5);
    ok(b && strstr(b, "\"VisibilityTimeout\":5"), "visibility timeout");
    free(b);

    tm_sqs_entry e[2] = { { "m0", "rh0" }, { "m1", "rh1" } };
    b = tm_sqs_delete_batch_body("http://q/1/a", e, 2);
    j = J(b);
    ok(json_eq(j, "{\"QueueUrl\":\"http://q/1/a\",\"Entries\":[{\"Id\":\"m0\",\"ReceiptHandle\":\"rh0\"},"
                  "{\"Id\":\"m1\",\"ReceiptHandle\":\"rh1\"}]}"), "delete batch body");
    json_decref(j);
    free(b);
    b = tm_sqs_send_batch_body("http://q/1/a", e, 1);
    ok(b && strstr(b, "\"MessageBody\":\"rh0\""), "send batch body");
    free(b);
    tm_sqs_entry dup[2] = { { "m0", "a" }, { "m0", "b" } };
    ok(tm_sqs_send_batch_body("http://q/1/a", dup, 2) == NULL, "duplicate ids refused");
    tm_sqs_entry badid[1] = { { "a.b", "a" } };
    ok(tm_sqs_send_batch_body("http://q/1/a", badid, 1) == NULL, "bad id refused");
    ok(tm_sqs_delete_batch_body("http://q/1/a", e, 0) == NULL, "empty batch refused");
    b = tm_sqs_change_visibility_body("http://q/1/a", "rh", 0);
    ok(b && strstr(b, "\"VisibilityTimeout\":0"), "change visibility body");
    free(b);
    const char *names[] = { "RedrivePolicy", NULL };
    b = tm_sqs_get_attributes_body("http://q/1/a", names);
    ok(b && strstr(b, "\"AttributeNames\":[\"RedrivePolicy\"]"), "get attributes body");
    free(b);
    b = tm_sqs_queue_url_body("tm-events");
    is_str(b, "{\"QueueName\":\"tm-events\"}", "queue url body");
    free(b);

    tm_sqs_message *m;
    size_t n;
    int rc = tm_sqs_parse_receive("{}", 2, &m, &n, err, sizeof err);
    ok(rc == 0 && n == 0 && !m, "no Messages is zero messages");
    rc = tm_sqs_parse_receive("", 0, &m, &n, err, sizeof err);
    ok(rc == 0 && n == 0, "empty body is zero messages");
    rc = tm_sqs_parse_receive("{\"Messages\":null}", 17, &m, &n, err, sizeof err);
    ok(rc == 0 && n == 0, "null Messages");
    rc = tm_sqs_parse_receive("<xml/>", 6, &m, &n, err, sizeof err);
    ok(rc != 0, "XML refused: %s", err);
    const char *recv = "{\"Messages\":[{\"MessageId\":\"id1\",\"ReceiptHandle\":\"rh1\",\"MD5OfBody\":\"x\","
                       "\"Body\":\"{\\\"a\\\":1}\",\"Attributes\":{\"ApproximateReceiveCount\":\"3\","
                       "\"SentTimestamp\":\"1795306382000\"}},"
                       "{\"MessageId\":\"id2\",\"ReceiptHandle\":\"rh2\",\"Body\":\"x\","
                       "\"Attributes\":{\"ApproximateReceiveCount\":2}}]}";
    rc = tm_sqs_parse_receive(recv, strlen(recv), &m, &n, err, sizeof err);
    ok(rc == 0 && n == 2, "two messages");
    if (rc == 0 && n == 2) {
        is_str(m[0].message_id, "id1", "message id");
        is_str(m[0].receipt_handle, "rh1", "receipt handle");
        is_str(m[0].body, "{\"a\":1}", "body");
        is_int(m[0].receive_count, 3, "receive count string");
        is_int(m[0].sent_ms, 1795306382000LL, "sent timestamp");
        is_int(m[1].receive_count, 2, "receive count number");
        is_int(m[1].sent_ms, 0, "no sent timestamp");
    }
    tm_sqs_messages_free(m, n);
    const char *norh = "{\"Messages\":[{\"MessageId\":\"id1\",\"Body\":\"x\"}]}";
    rc = tm_sqs_parse_receive(norh, strlen(norh), &m, &n, err, sizeof err);
    ok(rc != 0, "message without receipt handle refused");

    tm_sqs_batch_result br;
    const char *bres = "{\"Successful\":[{\"Id\":\"m0\",\"MessageId\":\"x\"}],\"Failed\":["
                       "{\"Id\":\"m1\",\"Code\":\"ReceiptHandleIsInvalid\",\"Message\":\"bad\",\"SenderFault\":true},"
                       "{\"Id\":\"m2\",\"Code\":\"InternalError\",\"SenderFault\":\"false\"},"
                       "{\"Id\":\"m3\",\"Code\":\"com.amazonaws.sqs#X\",\"SenderFault\":\"true\"}]}";
    rc = tm_sqs_parse_batch_result(bres, strlen(bres), &br, err, sizeof err);
    ok(rc == 0 && br.nok == 1 && br.nfailed == 3, "batch result counts");
    is_str(br.ok[0], "m0", "successful id");
    ok(br.failed[0].sender_fault && !br.failed[1].sender_fault && br.failed[2].sender_fault,
       "SenderFault as bool and string");
    is_str(br.failed[2].code, "X", "failed code namespace stripped");
    rc = tm_sqs_parse_batch_result("{}", 2, &br, err, sizeof err);
    ok(rc == 0 && br.nok == 0 && br.nfailed == 0, "empty batch result");

    const char *attrs = "{\"Attributes\":{\"RedrivePolicy\":\"{\\\"deadLetterTargetArn\\\":\\\"arn:aws:sqs:us-east-1:1:dlq\\\",\\\"maxReceiveCount\\\":\\\"3\\\"}\"}}";
    char *rp = tm_sqs_parse_attribute(attrs, strlen(attrs), "RedrivePolicy");
    ok(rp != NULL, "redrive policy attribute");
    is_int(tm_sqs_redrive_max_receive(rp), 3, "maxReceiveCount as string");
    free(rp);
    is_int(tm_sqs_redrive_max_receive("{\"maxReceiveCount\":5}"), 5, "maxReceiveCount as number");
    is_int(tm_sqs_redrive_max_receive(NULL), 0, "no redrive policy");
    ok(tm_sqs_parse_attribute("{}", 2, "RedrivePolicy") == NULL, "missing attribute");
}

static void test_ddb(void)
{
    json_t *items = J("[{\"event_id\":{\"S\":\"a\"}},{\"event_id\":{\"S\":\"b\"}}]");
    char *b = tm_ddb_batch_write_body("T", items);
    json_t *j = J(b);
    ok(json_eq(j, "{\"RequestItems\":{\"T\":[{\"PutRequest\":{\"Item\":{\"event_id\":{\"S\":\"a\"}}}},"
                  "{\"PutRequest\":{\"Item\":{\"event_id\":{\"S\":\"b\"}}}}]}}"), "batch write body");
    json_decref(j);
    free(b);
    json_t *many = json_array();
    for (int i = 0; i < 26; i++) {
        json_array_append_new(many, json_object());
    }
    ok(tm_ddb_batch_write_body("T", many) == NULL, "26 items refused");
    json_decref(many);
    json_t *empty = json_array();
    ok(tm_ddb_batch_write_body("T", empty) == NULL, "0 items refused");
    json_decref(empty);

    /* from item text: the same body as from the trees, items copied verbatim */
    const char *texts[26];
    for (int i = 0; i < 26; i++) {
        texts[i] = i % 2 ? "{\"event_id\":{\"S\":\"b\"}}" : "{\"event_id\":{\"S\":\"a\"}}";
    }
    b = tm_ddb_batch_write_body_text("T", texts, 2);
    j = J(b);
    ok(json_eq(j, "{\"RequestItems\":{\"T\":[{\"PutRequest\":{\"Item\":{\"event_id\":{\"S\":\"a\"}}}},"
                  "{\"PutRequest\":{\"Item\":{\"event_id\":{\"S\":\"b\"}}}}]}}"), "batch write body from text");
    json_decref(j);
    free(b);
    b = tm_ddb_batch_write_body_text("T", texts, 25);
    j = J(b);
    ok(json_array_size(json_object_get(json_object_get(j, "RequestItems"), "T")) == 25, "25 items from text");
    json_decref(j);
    free(b);
    b = tm_ddb_batch_write_body_text("a\"b\\c", texts, 1);
    j = J(b);
    ok(json_array_size(json_object_get(json_object_get(j, "RequestItems"), "a\"b\\c")) == 1,
       "table name escaped");
    json_decref(j);
    free(b);
    const char *odd[] = { "{\"user_id\":{\"S\":\"q\\\"\\u00e9\\n\"}}" };
    b = tm_ddb_batch_write_body_text("T", odd, 1);
    j = J(b);
    json_t *uid = json_object_get(json_object_get(json_object_get(json_object_get(
        json_array_get(json_object_get(json_object_get(j, "RequestItems"), "T"), 0), "PutRequest"), "Item"),
        "user_id"), "S");
    ok(uid && strcmp(json_string_value(uid), "q\"\xc3\xa9\n") == 0, "escapes in item text kept");
    json_decref(j);
    free(b);
    ok(tm_ddb_batch_write_body_text("T", texts, 26) == NULL, "26 items from text refused");
    ok(tm_ddb_batch_write_body_text("T", texts, 0) == NULL, "0 items from text refused");
    ok(tm_ddb_batch_write_body_text("", texts, 1) == NULL, "no table refused");
    const char *bad[] = { "{\"event_id\":{\"S\":\"a\"}}", "[1]" };
    ok(tm_ddb_batch_write_body_text("T", bad, 2) == NULL, "an item that is not an object refused");
    const char *none[] = { NULL };
    ok(tm_ddb_batch_write_body_text("T", none, 1) == NULL, "a NULL item refused");

    json_t *u = tm_ddb_parse_unprocessed("{\"UnprocessedItems\":{}}", 23, "T");
    ok(u && json_array_size(u) == 0, "nothing unprocessed");
    json_decref(u);
    u = tm_ddb_parse_unprocessed("{}", 2, "T");
    ok(u && json_array_size(u) == 0, "no UnprocessedItems key");
    json_decref(u);
    const char *un = "{\"UnprocessedItems\":{\"T\":[{\"PutRequest\":{\"Item\":{\"event_id\":{\"S\":\"b\"}}}}]}}";
    u = tm_ddb_parse_unprocessed(un, strlen(un), "T");
    ok(u && json_eq(u, "[{\"event_id\":{\"S\":\"b\"}}]"), "unprocessed item returned");
    json_decref(u);
    ok(tm_ddb_parse_unprocessed("oops", 4, "T") == NULL, "garbage is not a reply");
    json_decref(items);
    b = tm_ddb_table_body("T");
    is_str(b, "{\"TableName\":\"T\"}", "describe table body");
    free(b);
}

static void test_events(void)
{
    char err[256] = "", id[TM_UUID_LEN + 1], id2[TM_UUID_LEN + 1];
    const char *single = "{\"user_id\":\"u1\",\"flag_name\":\"f\",\"result\":true,"
                         "\"timestamp\":\"2026-11-22T10:00:00Z\"}";
    json_t *ev = tm_events_from_message(single, strlen(single), "msg-1", err, sizeof err);
    ok(ev && json_array_size(ev) == 1, "original single event accepted");
    tm_event_id_derive("msg-1", 0, id);
    tm_event_id_derive("msg-1", 0, id2);
    is_str(id, id2, "derived id deterministic");
    ok(strlen(id) == 36 && id[14] == '5' && strchr("89ab", id[19]), "derived id is a v5 UUID: %s", id);
    tm_event_id_derive("msg-1", 1, id2);
    ok(strcmp(id, id2) != 0, "index changes the id");
    tm_event_id_derive("msg-2", 0, id2);
    ok(strcmp(id, id2) != 0, "message id changes the id");
    is_str(json_string_value(json_object_get(json_array_get(ev, 0), "event_id")), id,
           "single event gets the derived id");

    json_t *item = tm_event_to_item(json_array_get(ev, 0));
    char want[512];
    snprintf(want, sizeof want, "{\"event_id\":{\"S\":\"%s\"},\"user_id\":{\"S\":\"u1\"},"
             "\"flag_name\":{\"S\":\"f\"},\"result\":{\"BOOL\":true},"
             "\"timestamp\":{\"S\":\"2026-11-22T10:00:00Z\"}}", id);
    ok(json_eq(item, want), "DynamoDB item");
    json_t *back = tm_event_from_item(item);
    ok(back && json_equal(back, json_array_get(ev, 0)), "item maps back to the event");
    json_decref(back);
    json_decref(item);
    json_decref(ev);

    const char *env = "{\"v\":1,\"events\":["
        "{\"event_id\":\"0c6d5f3e-1111-4aaa-8bbb-000000000001\",\"user_id\":\"u1\",\"flag_name\":\"f\","
        "\"result\":false,\"timestamp\":\"2026-11-22T10:00:00Z\",\"variant\":\"off\",\"reason\":\"SPLIT\",\"extra\":1},"
        "{\"user_id\":\"u2\",\"flag_name\":\"g\",\"result\":true,\"timestamp\":\"2026-11-22T10:00:01Z\",\"variant\":null,"
        "\"environment\":\"staging\"}]}";
    ev = tm_events_from_message(env, strlen(env), "msg-3", err, sizeof err);
    ok(ev && json_array_size(ev) == 2, "envelope accepted %s", ev ? "" : err);
    ok(json_eq(json_array_get(ev, 0), "{\"event_id\":\"0c6d5f3e-1111-4aaa-8bbb-000000000001\",\"user_id\":\"u1\","
               "\"flag_name\":\"f\",\"result\":false,\"timestamp\":\"2026-11-22T10:00:00Z\","
               "\"variant\":\"off\",\"reason\":\"SPLIT\"}"), "edge id kept, unknown field dropped");
    tm_event_id_derive("msg-3", 1, id);
    is_str(json_string_value(json_object_get(json_array_get(ev, 1), "event_id")), id,
           "missing id derived from message and index");
    item = tm_event_to_item(json_array_get(ev, 0));
    ok(item && json_eq(json_object_get(item, "variant"), "{\"S\":\"off\"}")
       && json_eq(json_object_get(item, "reason"), "{\"S\":\"SPLIT\"}"), "variant and reason stored");
    json_decref(item);
    item = tm_event_to_item(json_array_get(ev, 0));
    ok(item && !json_object_get(item, "environment"), "no environment: none stored (the default)");
    json_decref(item);
    item = tm_event_to_item(json_array_get(ev, 1));
    ok(item && !json_object_get(item, "variant"), "null variant not stored");
    ok(item && json_eq(json_object_get(item, "environment"), "{\"S\":\"staging\"}"), "environment stored");
    json_decref(item);
    char *e2 = tm_events_envelope(ev);
    json_t *again = e2 ? tm_events_from_message(e2, strlen(e2), "other", err, sizeof err) : NULL;
    ok(again && json_equal(again, ev), "envelope round trip");
    json_decref(again);
    free(e2);
    json_decref(ev);

    static const char *const poison[] = {
        "not json", "[]", "42", "{\"v\":2,\"events\":[]}", "{\"v\":1,\"events\":[]}",
        "{\"v\":1,\"events\":{}}", "{\"events\":[{}]}",
        "{\"user_id\":\"u\",\"flag_name\":\"f\",\"result\":\"yes\",\"timestamp\":\"t\"}",
        "{\"user_id\":\"\",\"flag_name\":\"f\",\"result\":true,\"timestamp\":\"t\"}",
        "{\"user_id\":\"u\",\"flag_name\":\"f\",\"result\":true}",
        "{\"user_id\":\"u\",\"flag_name\":7,\"result\":true,\"timestamp\":\"t\"}",
        "{\"v\":1,\"events\":[{\"user_id\":\"u\",\"flag_name\":\"f\",\"result\":true,\"timestamp\":\"t\"},1]}",
        "{\"user_id\":\"u\",\"flag_name\":\"f\",\"result\":true,\"timestamp\":\"t\",\"event_id\":\"\"}",
        NULL
    };
    for (const char *const *p = poison; *p; p++) {
        err[0] = '\0';
        ev = tm_events_from_message(*p, strlen(*p), "m", err, sizeof err);
        ok(ev == NULL && err[0], "poison %s: %s", *p, err);
        json_decref(ev);
    }
    char big[2100];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char *msg = malloc(strlen(big) + 200);
    sprintf(msg, "{\"user_id\":\"%s\",\"flag_name\":\"f\",\"result\":true,\"timestamp\":\"t\"}", big);
    ev = tm_events_from_message(msg, strlen(msg), "m", err, sizeof err);
    ok(ev == NULL, "oversized field refused: %s", err);
    free(msg);
    ok(tm_uuid_v4(id) == 0 && id[14] == '4' && strlen(id) == 36, "uuid v4 %s", id);
}

static int addr_ok(int family, const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_family = (sa_family_t) family;
    void *dst = family == AF_INET ? (void *) &((struct sockaddr_in *) &ss)->sin_addr
                                  : (void *) &((struct sockaddr_in6 *) &ss)->sin6_addr;
    if (inet_pton(family, text, dst) != 1) {
        return -1;
    }
    return tm_aws_container_addr_ok(&ss);
}

/* The container credentials rules both fetchers share. */
static void test_container_rules(void)
{
    char url[128], err[256];
    ok(tm_aws_container_url(NULL, "/v2/credentials/abc", url, sizeof url, err, sizeof err) == 0,
       "relative URI");
    is_str(url, "http://169.254.170.2/v2/credentials/abc", "... joined to 169.254.170.2 by a /");
    ok(tm_aws_container_url(NULL, "@evil.example/x", url, sizeof url, err, sizeof err) == 0,
       "relative URI without a leading /");
    is_str(url, "http://169.254.170.2/@evil.example/x", "... still a path on 169.254.170.2, not userinfo");
    ok(tm_aws_container_url("", ".evil.example/x", url, sizeof url, err, sizeof err) == 0,
       "empty full URI: the relative one");
    is_str(url, "http://169.254.170.2/.evil.example/x", "... a path, not a longer host name");
    ok(tm_aws_container_url("https://creds.example/v1", "/x", url, sizeof url, err, sizeof err) == 0,
       "full URI wins");
    is_str(url, "https://creds.example/v1", "... as given");
    is_int(tm_aws_container_url(NULL, NULL, url, sizeof url, err, sizeof err), -1, "neither set");
    is_int(tm_aws_container_url(NULL, "/x\r\nHost: evil", url, sizeof url, err, sizeof err), -1,
           "a line break in the URI refused");
    is_int(tm_aws_container_url(NULL, "/a b", url, sizeof url, err, sizeof err), -1, "a space refused");
    char longer[200];
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    is_int(tm_aws_container_url(NULL, longer, url, sizeof url, err, sizeof err), -1, "too long refused");

    is_int(addr_ok(AF_INET, "127.0.0.1"), 1, "loopback allowed");
    is_int(addr_ok(AF_INET, "127.9.8.7"), 1, "all of 127/8 allowed");
    is_int(addr_ok(AF_INET, "169.254.170.2"), 1, "ECS allowed");
    is_int(addr_ok(AF_INET, "169.254.170.23"), 1, "EKS Pod Identity allowed");
    is_int(addr_ok(AF_INET, "169.254.169.254"), 0, "the instance metadata service is not");
    is_int(addr_ok(AF_INET, "10.0.0.1"), 0, "a private address is not");
    is_int(addr_ok(AF_INET, "8.8.8.8"), 0, "a public address is not");
    is_int(addr_ok(AF_INET6, "::1"), 1, "IPv6 loopback allowed");
    is_int(addr_ok(AF_INET6, "fd00:ec2::23"), 1, "EKS Pod Identity IPv6 allowed");
    is_int(addr_ok(AF_INET6, "fd00:ec2::24"), 0, "its neighbour is not");
    is_int(addr_ok(AF_INET6, "::ffff:8.8.8.8"), 0, "a mapped public address is not");
    is_int(tm_aws_container_addr_ok(NULL), 0, "no address: not allowed");

    is_int(tm_aws_header_value_ok("abc.def", 7), 1, "a token");
    is_int(tm_aws_header_value_ok("abc\r\nX: y", 10), 0, "CRLF refused");
    is_int(tm_aws_header_value_ok("abc\nX", 5), 0, "LF refused");
    is_int(tm_aws_header_value_ok("ab\0c", 4), 0, "NUL refused");
}

int main(void)
{
    test_creds();
    test_endpoints();
    test_request();
    test_errors();
    test_sqs();
    test_ddb();
    test_events();
    test_container_rules();
    return tap_done();
}
