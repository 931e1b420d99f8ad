/* tmctl audit and tmctl history (docs/audit.md): reads the daemons' GET
 * /audit pages and prints them one line per change, or as JSON. Each
 * daemon keeps its own trail in its own database; a flag's history is the
 * flags daemon's records of the flag merged here, by time, with the
 * targeting daemon's records of its rule. */
#ifndef TMCTL_AUDIT_H
#define TMCTL_AUDIT_H

typedef struct {
    const char *kind, *name, *actor, *environment, *since, *until;
    long limit;     /* records wanted at most (pages are followed) */
    int json;       /* print the records as a JSON array */
} tmctl_audit_query;

/* The trail of the service at base (newest first). 0, 1 the server
 * refused or could not be reached (said on stderr). */
int tmctl_audit(const char *base, const tmctl_audit_query *q);

/* The flag's own records (flags_base) and its rule's (targeting_base),
 * merged newest first. */
int tmctl_history(const char *flags_base, const char *targeting_base, const char *flag,
                  const tmctl_audit_query *q);
#endif
