/*
 * AWS credentials for the module's SQS producer, the way the AWS SDKs find
 * them: keys in the environment, then web identity (IRSA: STS
 * AssumeRoleWithWebIdentity), then container credentials (EKS Pod
 * Identity, ECS). Temporary ones are fetched by each worker on nginx's
 * event loop and refreshed before they expire (creds.c).
 */

#ifndef NGX_HTTP_TOGGLEMASTER_CREDS_H
#define NGX_HTTP_TOGGLEMASTER_CREDS_H

#include "ngx_http_togglemaster_module.h"
#include "tm_aws.h"


/* configuration, in the master (sqs.c's configuration calls it); emulator:
 * the SQS endpoint is not AWS, dummy keys do when there are none */
char *ngx_http_togglemaster_creds_conf(ngx_conf_t *cf,
    ngx_http_togglemaster_main_conf_t *tmcf, const char *region,
    ngx_uint_t emulator, void **conf);

/* worker start and exit (from sqs.c and events.c) */
void ngx_http_togglemaster_creds_init(ngx_cycle_t *cycle, void *conf);
void ngx_http_togglemaster_creds_exit(void);

/* The keys to sign with now; NULL while there are none (not fetched yet,
 * or expired and not refreshed): the caller keeps its events. */
const tm_aws_creds *ngx_http_togglemaster_creds_get(void);

/* SQS refused the keys (expired or unknown token): refresh soon. */
void ngx_http_togglemaster_creds_rejected(const char *code);

/* metrics.c: source, expiry, refreshes, refresh errors */
u_char *ngx_http_togglemaster_creds_metrics(u_char *p, u_char *last,
    ngx_uint_t workers);


#endif /* NGX_HTTP_TOGGLEMASTER_CREDS_H */
