/* route - from a passdb answer to exactly one routing decision.
 *
 * This module is pure (no I/O): the caller resolves a host name first when
 * route_host_to_resolve() says so, and passes the addresses in. Rules
 * (DESIGN.md section 4): precedence proxy > host (referral) > nologin >
 * normal; booleans are true when present, whatever their value; a failed
 * password check discards every routing field.
 *
 * "Self": any of the destination's IPs is one of ours (listener addresses,
 * wildcard listeners expanded to every interface address, auth_proxy_self),
 * and the destination port is one of our listener ports. For proxy_maybe an
 * absent port also counts as self (Dovecot's rule); for proxy the default
 * port for the protocol is compared. */
#ifndef MR_ROUTE_H
#define MR_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "fields.h"
#include "passdb.h"

enum route_kind {
    ROUTE_PROXY,
    ROUTE_LOCAL,
    ROUTE_REFERRAL,
    ROUTE_LOOP,
    ROUTE_REFUSE,
    ROUTE_TEMPFAIL,
};

enum route_proto {
    ROUTE_PROTO_LMTP,
    ROUTE_PROTO_SMTP,
    ROUTE_PROTO_IMAP,
    ROUTE_PROTO_POP3,
    ROUTE_PROTO_SUBMISSION,
};

enum route_tls {
    ROUTE_TLS_NONE,
    ROUTE_TLS_IMPLICIT,  /* ssl=yes / ssl=any-cert */
    ROUTE_TLS_STARTTLS,  /* starttls=yes / starttls=any-cert */
};

enum route_loop_kind { ROUTE_LOOP_SELF, ROUTE_LOOP_TTL };

enum route_refuse_kind {
    ROUTE_REFUSE_UNKNOWN_USER,
    ROUTE_REFUSE_PASSWORD,
    ROUTE_REFUSE_NOLOGIN,
};

enum route_tempfail_kind {
    ROUTE_TEMPFAIL_LOOKUP,   /* passdb temporary failure */
    ROUTE_TEMPFAIL_DELAY,    /* delay_until too far ahead */
    ROUTE_TEMPFAIL_CONFIG,   /* bad field values (invalid port, hostip, ...) */
    ROUTE_TEMPFAIL_DNS,      /* host name did not resolve */
    ROUTE_TEMPFAIL_NO_LOCAL, /* local decision but no local backend configured (set by caller) */
};

struct route_target {
    char *host;              /* as given (name or IP): TLS name check, referral text, logs */
    struct addr ip;          /* where to connect, port included */
    enum route_proto protocol; /* LMTP front: lmtp|smtp from the "protocol" field */
    enum route_tls tls;
    bool tls_verify;         /* false for any-cert */
    char *tls_name;          /* the name the certificate must match: host, or the
                              * hostname/destination_name field when host is an IP */
    struct addr source_ip;   /* family 0: none */
    char *destuser;          /* NULL: the user as looked up */
    char *master;            /* master user for the backend login (login protocols) */
    char *pass;              /* password for the backend login, NULL: the client's */
    char *proxy_mech;
    uint64_t timeout_ms;     /* proxy_timeout; 0 = the protocol's default */
    bool nopipelining;
    bool not_trusted;        /* never send XCLIENT/ID/forward data */
    bool noauth;             /* proxy_noauth (submission) */
    struct fields forward;   /* forward_KEY=VALUE with the "forward_" prefix removed */
};

struct route_decision {
    enum route_kind kind;
    struct route_target target;  /* PROXY, and REFERRAL (host, port, destuser) */
    bool nologin;                /* REFERRAL: refuse (true) or log in anyway (false) */
    enum route_loop_kind loop;
    enum route_refuse_kind refuse;
    enum route_tempfail_kind tempfail;
    char *reason;                /* the passdb's reason field, or NULL */
    uint64_t delay_until_ms;     /* hold until (absolute, ms since the epoch); 0: none */
    char *log_detail;            /* why, for the log line (e.g. "invalid port 99999") */
};

/* Who we are, for the self test. Filled at start-up by the daemon. */
struct route_self {
    struct addr *ips;
    size_t n_ips;
    uint16_t *ports;
    size_t n_ports;
};

struct route_input {
    enum passdb_result result;
    const struct fields *fields;
    const char *user;
    enum route_proto protocol;   /* the front protocol (LMTP for the router) */
    int ttl;                     /* TTL received from the previous hop (5 when none) */
    const struct route_self *self;
    /* Addresses of the "host" field when it is a name (after DNS), else NULL. */
    const struct addr *host_ips;
    size_t n_host_ips;
    uint64_t now_ms;             /* wall clock, ms since the epoch */
    uint64_t random;             /* for delay_until jitter */
    uint64_t delay_until_max_ms; /* 300000 */
};

/* The host name to resolve before route_decide(), or NULL when none is needed
 * (no routing host, host is an IP, or hostip is given). */
const char *route_host_to_resolve(enum passdb_result result, const struct fields *fields);

/* Decide. Always fills *out (free it with route_decision_free()). */
void route_decide(const struct route_input *in, struct route_decision *out);
void route_decision_free(struct route_decision *d);

uint16_t route_default_port(enum route_proto proto, enum route_tls tls);
const char *route_kind_str(enum route_kind k);
const char *route_proto_str(enum route_proto p);

#endif
