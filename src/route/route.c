/* route - the routing decision: passdb result + extra fields -> one decision.
 *
 * Pure: no I/O, no clock, no randomness of its own (the caller passes the
 * time, a random number and the resolved addresses in), so every rule in
 * DESIGN.md section 4 is a row in t/unit/test-route.c. This file does not
 * connect anywhere, and it does not know about replies on the wire; the
 * fronts map a decision to their protocol's text. */
#include "route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "str.h"

/* delay_until timestamps beyond this (year ~36800) are nonsense and would
 * overflow when turned into milliseconds. */
#define DELAY_MAX_TS (1ULL << 40)
/* Jitter beyond a day makes no sense either. */
#define DELAY_MAX_JITTER_S 86400ULL

/* Small helpers */

/* A field's value, with "present without a value" and "" both as NULL. */
static const char *field_value(const struct fields *f, const char *key)
{
    const char *v = fields_get(f, key);
    return v != NULL && *v != '\0' ? v : NULL;
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? xstrdup(s) : NULL;
}

/* detail may be d->log_detail itself, already set by a field parser. */
static void set_tempfail(struct route_decision *d, enum route_tempfail_kind kind, char *detail)
{
    d->kind = ROUTE_TEMPFAIL;
    d->tempfail = kind;
    if (detail != d->log_detail) {
        free(d->log_detail);
        d->log_detail = detail;
    }
}

static void target_free(struct route_target *t)
{
    free(t->host);
    free(t->tls_name);
    free(t->destuser);
    if (t->pass != NULL)
        mem_wipe(t->pass, strlen(t->pass));
    free(t->pass);
    free(t->master);
    free(t->proxy_mech);
    fields_free(&t->forward);
    memset(t, 0, sizeof(*t));
}

/* Parsing the target fields. Each returns false after filling
 * d->log_detail; the caller turns that into TEMPFAIL(CONFIG). */

static bool parse_port(const struct fields *f, uint16_t *port_r, bool *given_r,
                       struct route_decision *d)
{
    const char *s = fields_get_str(f, "port");
    unsigned long long v;
    *given_r = s != NULL;
    *port_r = 0;
    if (s == NULL)
        return true;
    if (!str_to_uint(s, 65535, &v) || v == 0) {
        d->log_detail = xasprintf("invalid port '%s'", s);
        return false;
    }
    *port_r = (uint16_t)v;
    return true;
}

/* An optional IP-literal field (hostip, source_ip); family 0 when absent. */
static bool parse_ip_field(const struct fields *f, const char *key, struct addr *out,
                           struct route_decision *d)
{
    const char *s = fields_get_str(f, key);
    memset(out, 0, sizeof(*out));
    if (s == NULL)
        return true;
    if (!addr_parse_ip(s, out)) {
        d->log_detail = xasprintf("invalid %s '%s'", key, s);
        return false;
    }
    return true;
}

/* "protocol" matters only to the LMTP/SMTP fronts (lmtp|smtp); the login
 * fronts ignore it, as Dovecot's login processes do. */
static bool parse_protocol(const struct route_input *in, struct route_target *t,
                           struct route_decision *d)
{
    const char *s = fields_get_str(in->fields, "protocol");
    t->protocol = in->protocol;
    if (in->protocol != ROUTE_PROTO_LMTP && in->protocol != ROUTE_PROTO_SMTP)
        return true;
    if (s == NULL)
        return true;
    if (str_eq(s, "lmtp")) {
        t->protocol = ROUTE_PROTO_LMTP;
    } else if (str_eq(s, "smtp")) {
        t->protocol = ROUTE_PROTO_SMTP;
    } else {
        d->log_detail = xasprintf("invalid protocol '%s'", s);
        return false;
    }
    return true;
}

/* ssl / starttls: present = on (even "no"); "any-cert" skips verification.
 * starttls wins over ssl, because it names the more specific method. */
static void parse_tls(const struct fields *f, struct route_target *t)
{
    const char *ssl = fields_get_str(f, "ssl");
    const char *starttls = fields_get_str(f, "starttls");
    t->tls = ROUTE_TLS_NONE;
    t->tls_verify = false;
    if (ssl == NULL && starttls == NULL)
        return;
    t->tls = starttls != NULL ? ROUTE_TLS_STARTTLS : ROUTE_TLS_IMPLICIT;
    t->tls_verify = !((ssl != NULL && str_eq(ssl, "any-cert")) ||
                      (starttls != NULL && str_eq(starttls, "any-cert")));
}

static bool parse_timeout(const struct fields *f, struct route_target *t,
                          struct route_decision *d)
{
    const char *s = fields_get_str(f, "proxy_timeout");
    unsigned long long ms;
    if (s == NULL)
        return true;
    if (!str_to_msecs(s, &ms)) {
        d->log_detail = xasprintf("invalid proxy_timeout '%s'", s);
        return false;
    }
    t->timeout_ms = ms;
    return true;
}

static void copy_forward(const struct fields *f, struct route_target *t)
{
    static const char prefix[] = "forward_";
    for (size_t i = 0; i < f->n; i++) {
        const char *key = f->v[i].key;
        if (strncmp(key, prefix, sizeof(prefix) - 1) == 0 && key[sizeof(prefix) - 1] != '\0')
            fields_set(&t->forward, key + sizeof(prefix) - 1, f->v[i].value);
    }
}

/* A certificate is checked against the host as given; when that is an IP
 * literal a "hostname" (or Dovecot's "destination_name") field may name
 * what the certificate says instead. */
static char *tls_name_for(const struct fields *f, const char *host)
{
    struct addr ip;
    const char *name = field_value(f, "hostname");
    if (name == NULL)
        name = field_value(f, "destination_name");
    if (host != NULL && (name == NULL || !addr_parse_ip(host, &ip)))
        return xstrdup(host);
    return dup_or_null(name);
}

/* Strings and flags that need no validation. An empty master is ignored, as
 * in Dovecot since 2.3.13; the other strings follow the same rule. */
static void copy_plain_fields(const struct fields *f, struct route_target *t)
{
    t->host = dup_or_null(field_value(f, "host"));
    t->tls_name = tls_name_for(f, t->host);
    t->destuser = dup_or_null(field_value(f, "destuser"));
    t->master = dup_or_null(field_value(f, "master"));
    t->pass = dup_or_null(field_value(f, "pass"));
    t->proxy_mech = dup_or_null(field_value(f, "proxy_mech"));
    t->nopipelining = fields_has(f, "proxy_nopipelining");
    t->not_trusted = fields_has(f, "proxy_not_trusted");
    t->noauth = fields_has(f, "proxy_noauth");
    copy_forward(f, t);
}

/* Everything a proxy or referral target needs, except its address. */
struct parsed_target {
    struct route_target t;
    struct addr hostip;       /* family 0 when not given */
    uint16_t port;            /* explicit or default */
    bool port_given;
};

static bool parse_target(const struct route_input *in, struct parsed_target *p,
                         struct route_decision *d)
{
    const struct fields *f = in->fields;
    memset(p, 0, sizeof(*p));
    copy_plain_fields(f, &p->t);
    parse_tls(f, &p->t);
    if (!parse_port(f, &p->port, &p->port_given, d) ||
        !parse_ip_field(f, "hostip", &p->hostip, d) ||
        !parse_ip_field(f, "source_ip", &p->t.source_ip, d) ||
        !parse_protocol(in, &p->t, d) || !parse_timeout(f, &p->t, d)) {
        target_free(&p->t);
        return false;
    }
    if (!p->port_given)
        p->port = route_default_port(p->t.protocol, p->t.tls);
    return true;
}

/* The destination's candidate addresses: hostip, else host as a literal,
 * else what the caller resolved. n = 0 when a name did not resolve. */
static const struct addr *candidate_ips(const struct route_input *in,
                                        const struct parsed_target *p, struct addr *literal,
                                        size_t *n_r)
{
    *n_r = 1;
    if (p->hostip.family != 0)
        return &p->hostip;
    if (addr_parse_ip(p->t.host, literal))
        return literal;
    *n_r = in->n_host_ips;
    return in->host_ips;
}

static bool port_is_ours(const struct route_self *self, uint16_t port)
{
    for (size_t i = 0; i < self->n_ports; i++) {
        if (self->ports[i] == port)
            return true;
    }
    return false;
}

static bool ip_is_ours(const struct route_self *self, const struct addr *ips, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < self->n_ips; j++) {
            if (addr_ip_eq(&ips[i], &self->ips[j]))
                return true;
        }
    }
    return false;
}

/* Dovecot's proxy_maybe rule, made stricter: every candidate address
 * counts, so neither a name nor hostip can hide a loop. */
static bool dest_is_self(const struct route_input *in, const struct parsed_target *p,
                         const struct addr *ips, size_t n, bool maybe)
{
    if (in->self == NULL || !ip_is_ours(in->self, ips, n))
        return false;
    if (maybe && !p->port_given)
        return true;
    return port_is_ours(in->self, p->port);
}

static void set_target_ip(struct parsed_target *p, const struct addr *ips, size_t n)
{
    if (n == 0)
        return;
    p->t.ip = ips[0];
    p->t.ip.port = p->port;
}

/* The decisions for OK results */

enum proxy_outcome { PROXY_DECIDED, PROXY_IS_SELF };

static void set_loop(struct route_decision *d, enum route_loop_kind kind, char *detail)
{
    d->kind = ROUTE_LOOP;
    d->loop = kind;
    d->log_detail = detail;
}

/* proxy / proxy_maybe. PROXY_IS_SELF: proxy_maybe pointing at us, so the
 * caller goes on as if there were no proxy fields at all. */
static enum proxy_outcome decide_proxy(const struct route_input *in, bool maybe,
                                       struct route_decision *d)
{
    struct parsed_target p;
    struct addr literal;
    size_t n_ips;
    if (field_value(in->fields, "host") == NULL) {
        set_tempfail(d, ROUTE_TEMPFAIL_CONFIG, xstrdup("proxy: host not given"));
        return PROXY_DECIDED;
    }
    if (!parse_target(in, &p, d)) {
        set_tempfail(d, ROUTE_TEMPFAIL_CONFIG, d->log_detail);
        return PROXY_DECIDED;
    }
    const struct addr *ips = candidate_ips(in, &p, &literal, &n_ips);
    bool self_dest = n_ips > 0 && dest_is_self(in, &p, ips, n_ips, maybe);
    enum proxy_outcome outcome = PROXY_DECIDED;
    if (n_ips == 0) {
        set_tempfail(d, ROUTE_TEMPFAIL_DNS, xasprintf("host %s did not resolve", p.t.host));
    } else if (self_dest && maybe) {
        outcome = PROXY_IS_SELF;
    } else if (self_dest) {
        set_loop(d, ROUTE_LOOP_SELF, xasprintf("proxy destination %s port %u is ourself",
                                               p.t.host, (unsigned)p.port));
    } else if (in->ttl < 1) {
        set_loop(d, ROUTE_LOOP_TTL, xasprintf("TTL reached zero (ttl=%d) - proxies appear "
                                              "to be looping?", in->ttl));
    } else {
        set_target_ip(&p, ips, n_ips);
        d->kind = ROUTE_PROXY;
        d->target = p.t;
        return PROXY_DECIDED;
    }
    target_free(&p.t);
    return outcome;
}

/* host without proxy: a referral. The address is filled in when known (a
 * front that follows referrals, LMTP, connects there), but an unresolved
 * name is no error here: IMAP/POP3/Submission only print the name. */
static void decide_referral(const struct route_input *in, struct route_decision *d)
{
    struct parsed_target p;
    struct addr literal;
    size_t n_ips;
    if (!parse_target(in, &p, d)) {
        set_tempfail(d, ROUTE_TEMPFAIL_CONFIG, d->log_detail);
        return;
    }
    const struct addr *ips = candidate_ips(in, &p, &literal, &n_ips);
    set_target_ip(&p, ips, n_ips);
    p.t.ip.port = p.port;
    d->kind = ROUTE_REFERRAL;
    d->nologin = fields_has(in->fields, "nologin");
    d->target = p.t;
}

static void decide_without_proxy(const struct route_input *in, bool host_dropped,
                                 struct route_decision *d)
{
    if (!host_dropped && field_value(in->fields, "host") != NULL) {
        decide_referral(in, d);
    } else if (fields_has(in->fields, "nologin")) {
        d->kind = ROUTE_REFUSE;
        d->refuse = ROUTE_REFUSE_NOLOGIN;
        d->log_detail = xstrdup("nologin");
    } else {
        d->kind = ROUTE_LOCAL;
    }
}

/* delay_until=<unix seconds>[+<max random seconds>] */
static bool parse_delay(const char *s, unsigned long long *ts_r, unsigned long long *jitter_r)
{
    char *copy = xstrdup(s);
    char *plus = strchr(copy, '+');
    bool ok = true;
    *jitter_r = 0;
    if (plus != NULL) {
        *plus = '\0';
        ok = str_to_uint(plus + 1, DELAY_MAX_JITTER_S, jitter_r);
    }
    ok = ok && str_to_uint(copy, DELAY_MAX_TS, ts_r);
    free(copy);
    return ok;
}

static void drop_target(struct route_decision *d)
{
    target_free(&d->target);
    d->nologin = false;
}

/* Applies to successful decisions only. The jitter is added after the limit
 * check, as in Dovecot, but the result never exceeds now + the limit. */
static void apply_delay(const struct route_input *in, struct route_decision *d)
{
    const char *s = fields_get_str(in->fields, "delay_until");
    unsigned long long ts, jitter;
    if (s == NULL || d->kind == ROUTE_REFUSE || d->kind == ROUTE_TEMPFAIL)
        return;
    if (!parse_delay(s, &ts, &jitter)) {
        drop_target(d);
        set_tempfail(d, ROUTE_TEMPFAIL_CONFIG, xasprintf("invalid delay_until '%s'", s));
        return;
    }
    uint64_t until = ts * 1000;
    if (until <= in->now_ms)
        return;
    if (until - in->now_ms > in->delay_until_max_ms) {
        drop_target(d);
        set_tempfail(d, ROUTE_TEMPFAIL_DELAY,
                     xasprintf("delay_until %s is too far in the future", s));
        return;
    }
    if (jitter > 0)
        until += in->random % (jitter * 1000);
    if (until - in->now_ms > in->delay_until_max_ms)
        until = in->now_ms + in->delay_until_max_ms;
    d->delay_until_ms = until;
}

static void decide_ok(const struct route_input *in, struct route_decision *d)
{
    bool proxy = fields_has(in->fields, "proxy");
    bool maybe = fields_has(in->fields, "proxy_maybe");
    bool host_dropped = false;
    if (proxy || maybe) {
        /* "proxy" beats "proxy_maybe": with both, a self destination loops. */
        if (decide_proxy(in, maybe && !proxy, d) == PROXY_DECIDED) {
            apply_delay(in, d);
            return;
        }
        host_dropped = true;
    }
    decide_without_proxy(in, host_dropped, d);
    apply_delay(in, d);
}

void route_decide(const struct route_input *in, struct route_decision *out)
{
    static const struct fields no_fields = FIELDS_INIT;
    struct route_input local = *in;
    if (local.fields == NULL)
        local.fields = &no_fields;
    memset(out, 0, sizeof(*out));
    switch (local.result) {
    case PASSDB_OK:
        decide_ok(&local, out);
        break;
    case PASSDB_USER_UNKNOWN:
        out->kind = ROUTE_REFUSE;
        out->refuse = ROUTE_REFUSE_UNKNOWN_USER;
        out->log_detail = xstrdup("unknown user");
        break;
    case PASSDB_PASSWORD_MISMATCH:
        /* Every routing field is ignored: a wrong password never refers. */
        out->kind = ROUTE_REFUSE;
        out->refuse = ROUTE_REFUSE_PASSWORD;
        out->log_detail = xstrdup("password mismatch");
        break;
    case PASSDB_TEMPFAIL:
        set_tempfail(out, ROUTE_TEMPFAIL_LOOKUP, xstrdup("passdb lookup failed"));
        break;
    }
    out->reason = dup_or_null(fields_get(local.fields, "reason"));
}

const char *route_host_to_resolve(enum passdb_result result, const struct fields *fields)
{
    struct addr ip;
    if (result != PASSDB_OK || fields == NULL)
        return NULL;
    const char *host = field_value(fields, "host");
    if (host == NULL || fields_has(fields, "hostip") || addr_parse_ip(host, &ip))
        return NULL;
    return host;
}

void route_decision_free(struct route_decision *d)
{
    target_free(&d->target);
    free(d->reason);
    free(d->log_detail);
    memset(d, 0, sizeof(*d));
}

uint16_t route_default_port(enum route_proto proto, enum route_tls tls)
{
    bool implicit = tls == ROUTE_TLS_IMPLICIT;
    switch (proto) {
    case ROUTE_PROTO_LMTP: return 24;
    case ROUTE_PROTO_SMTP: return 25;
    case ROUTE_PROTO_IMAP: return implicit ? 993 : 143;
    case ROUTE_PROTO_POP3: return implicit ? 995 : 110;
    case ROUTE_PROTO_SUBMISSION: return implicit ? 465 : 587;
    }
    return 0;
}

const char *route_kind_str(enum route_kind k)
{
    switch (k) {
    case ROUTE_PROXY: return "proxy";
    case ROUTE_LOCAL: return "local";
    case ROUTE_REFERRAL: return "referral";
    case ROUTE_LOOP: return "loop";
    case ROUTE_REFUSE: return "refuse";
    case ROUTE_TEMPFAIL: return "tempfail";
    }
    return "unknown";
}

const char *route_proto_str(enum route_proto p)
{
    switch (p) {
    case ROUTE_PROTO_LMTP: return "lmtp";
    case ROUTE_PROTO_SMTP: return "smtp";
    case ROUTE_PROTO_IMAP: return "imap";
    case ROUTE_PROTO_POP3: return "pop3";
    case ROUTE_PROTO_SUBMISSION: return "submission";
    }
    return "unknown";
}
