/* Replies from SQS, DynamoDB, STS and the container credentials endpoint, as
 * real services and emulators send them: every parser the worker and the
 * edge apply to an AWS answer. The first byte picks the parser. */
#include "tm_aws.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    const char *body = (const char *) data + 1;
    size_t len = size - 1;
    char err[256];

    switch (data[0] % 8) {
    case 0: {
        tm_sqs_message *m = NULL;
        size_t n = 0;
        if (tm_sqs_parse_receive(body, len, &m, &n, err, sizeof err) == 0) {
            tm_sqs_messages_free(m, n);
        }
        break;
    }
    case 1: {
        tm_sqs_batch_result r;
        tm_sqs_parse_batch_result(body, len, &r, err, sizeof err);
        break;
    }
    case 2: {
        json_t *u = tm_ddb_parse_unprocessed(body, len, "ToggleMasterAnalytics");
        json_decref(u);
        break;
    }
    case 3: {
        tm_aws_error e;
        tm_aws_parse_error(400, body, len, NULL, &e);
        break;
    }
    case 4: {
        tm_aws_creds c = { 0 };
        tm_aws_creds_parse_sts(body, len, &c, err, sizeof err);
        tm_aws_creds_free(&c);
        break;
    }
    case 5: {
        tm_aws_creds c = { 0 };
        tm_aws_creds_parse_container(body, len, &c, err, sizeof err);
        tm_aws_creds_free(&c);
        break;
    }
    case 6: {
        char *v = tm_sqs_parse_attribute(body, len, "RedrivePolicy");
        if (v) {
            tm_sqs_redrive_max_receive(v);
        }
        free(v);
        break;
    }
    default: {
        char *s = malloc(len + 1);
        if (s) {
            memcpy(s, body, len);
            s[len] = '\0';
            tm_aws_parse_time(s);
            tm_sqs_redrive_max_receive(s);
            free(s);
        }
    }
    }
    return 0;
}
