/* test-route - the routing decision, one table row per rule.
 *
 * A row gives the passdb answer (result + fields as they would come from a
 * passwd-file line), the front protocol, the received TTL, whether we know
 * who "self" is, and the addresses a host name resolved to. The decision is
 * rendered as "key=value" tokens; every token of the row's "want" must be
 * among them, and "detail" must be part of the log detail. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "mem.h"
#include "route.h"
#include "test.h"

#define NOW_MS 1700000000000ULL  /* "now" in every row: 2023-11-14 22:13:20 UTC */
#define MAX_DELAY_MS 300000ULL

/* Who we are: two IPv4 addresses, ::1, and the ports we listen on. */
static struct addr self_ips[3];
static uint16_t self_ports[] = {24, 143, 993};
static struct route_self self = {self_ips, 3, self_ports, 3};

static void init_self(void)
{
    addr_parse_ip("10.0.0.5", &self_ips[0]);
    addr_parse_ip("192.168.1.5", &self_ips[1]);
    addr_parse_ip("::1", &self_ips[2]);
}

enum { NO_SELF, SELF };

struct route_case {
    const char *name;
    enum passdb_result result;
    const char *fields;
    enum route_proto proto;
    int ttl;
    int self;
    const char *host_ips;       /* what a host name resolved to, space-separated */
    uint64_t random;
    const char *want;           /* tokens that must be in the rendered decision */
    const char *detail;         /* substring of log_detail, or NULL */
};

#define OK PASSDB_OK
#define IMAP ROUTE_PROTO_IMAP
#define POP3 ROUTE_PROTO_POP3
#define SUBM ROUTE_PROTO_SUBMISSION
#define LMTP ROUTE_PROTO_LMTP
#define SMTP ROUTE_PROTO_SMTP

static const struct route_case cases[] = {
    /* passdb failures: every routing field is ignored */
    {"unknown user", PASSDB_USER_UNKNOWN, "", IMAP, 5, SELF, NULL, 0,
     "kind=refuse sub=unknown_user", NULL},
    {"wrong password with nologin+host+proxy", PASSDB_PASSWORD_MISMATCH,
     "nologin host=10.0.0.9 proxy", IMAP, 5, SELF, NULL, 0, "kind=refuse sub=password", NULL},
    {"wrong password with nologin+host", PASSDB_PASSWORD_MISMATCH, "nologin host=10.0.0.9",
     IMAP, 5, SELF, NULL, 0, "kind=refuse sub=password", NULL},
    {"passdb tempfail", PASSDB_TEMPFAIL, "proxy host=10.0.0.9", LMTP, 5, SELF, NULL, 0,
     "kind=tempfail sub=lookup", NULL},

    /* plain OK */
    {"no fields: local", OK, "", IMAP, 5, SELF, NULL, 0, "kind=local", NULL},
    {"unrelated fields: local", OK, "userdb_quota=1G x=y", LMTP, 5, SELF, NULL, 0,
     "kind=local", NULL},
    {"reason on local", OK, "reason=hello", IMAP, 5, SELF, NULL, 0, "kind=local reason=hello",
     NULL},

    /* proxy basics and ports */
    {"proxy ip+port", OK, "proxy host=10.0.0.9 port=1143", IMAP, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:1143 host=10.0.0.9 proto=imap tls=none", NULL},
    {"proxy=no is still proxy", OK, "proxy=no host=10.0.0.9", IMAP, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:143", NULL},
    {"proxy without host", OK, "proxy port=143", IMAP, 5, SELF, NULL, 0,
     "kind=tempfail sub=config", "proxy: host not given"},
    {"proxy with empty host", OK, "proxy host=", IMAP, 5, SELF, NULL, 0,
     "kind=tempfail sub=config", "host not given"},
    {"port 0", OK, "proxy host=10.0.0.9 port=0", IMAP, 5, SELF, NULL, 0,
     "kind=tempfail sub=config", "invalid port '0'"},
    {"port 65536", OK, "proxy host=10.0.0.9 port=65536", IMAP, 5, SELF, NULL, 0,
     "kind=tempfail sub=config", "invalid port"},
    {"port garbage", OK, "proxy host=10.0.0.9 port=14x", IMAP, 5, SELF, NULL, 0,
     "kind=tempfail sub=config", "invalid port '14x'"},
    {"port without value", OK, "proxy host=10.0.0.9 port", IMAP, 5, SELF, NULL, 0,
     "kind=tempfail sub=config", "invalid port"},
    {"port 65535", OK, "proxy host=10.0.0.9 port=65535", IMAP, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:65535", NULL},
    {"pop3 default port", OK, "proxy host=10.0.0.9", POP3, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:110 proto=pop3", NULL},
    {"submission default port", OK, "proxy host=10.0.0.9", SUBM, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:587 proto=submission", NULL},
    {"lmtp default port", OK, "proxy host=10.0.0.9", LMTP, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:24 proto=lmtp", NULL},
    {"smtp front default", OK, "proxy host=10.0.0.9", SMTP, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:25 proto=smtp", NULL},

    /* protocol */
    {"lmtp protocol=smtp", OK, "proxy host=10.0.0.9 protocol=smtp", LMTP, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:25 proto=smtp", NULL},
    {"lmtp protocol=smtp explicit port wins", OK, "proxy host=10.0.0.9 protocol=smtp port=2525",
     LMTP, 5, SELF, NULL, 0, "kind=proxy ip=10.0.0.9:2525 proto=smtp", NULL},
    {"lmtp protocol=lmtp", OK, "proxy host=10.0.0.9 protocol=lmtp", LMTP, 5, SELF, NULL, 0,
     "kind=proxy proto=lmtp ip=10.0.0.9:24", NULL},
    {"lmtp protocol=imap invalid", OK, "proxy host=10.0.0.9 protocol=imap", LMTP, 5, SELF,
     NULL, 0, "kind=tempfail sub=config", "invalid protocol 'imap'"},
    {"imap ignores protocol", OK, "proxy host=10.0.0.9 protocol=smtp", IMAP, 5, SELF, NULL, 0,
     "kind=proxy proto=imap ip=10.0.0.9:143", NULL},

    /* TLS */
    {"ssl=yes imap", OK, "proxy host=10.0.0.9 ssl=yes", IMAP, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:993 tls=implicit verify=1", NULL},
    {"ssl=any-cert pop3", OK, "proxy host=10.0.0.9 ssl=any-cert", POP3, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:995 tls=implicit verify=0", NULL},
    {"ssl=no still ssl", OK, "proxy host=10.0.0.9 ssl=no", IMAP, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:993 tls=implicit verify=1", NULL},
    {"bare ssl flag", OK, "proxy host=10.0.0.9 ssl", SUBM, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:465 tls=implicit verify=1", NULL},
    {"starttls=yes", OK, "proxy host=10.0.0.9 starttls=yes", SUBM, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:587 tls=starttls verify=1", NULL},
    {"starttls=any-cert", OK, "proxy host=10.0.0.9 starttls=any-cert", IMAP, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:143 tls=starttls verify=0", NULL},
    {"ssl with lmtp keeps 24", OK, "proxy host=10.0.0.9 ssl=yes", LMTP, 5, SELF, NULL, 0,
     "kind=proxy ip=10.0.0.9:24 tls=implicit", NULL},

    /* addresses */
    {"hostip wins over host name", OK, "proxy host=backend.example hostip=10.0.0.8", IMAP, 5,
     SELF, NULL, 0, "kind=proxy ip=10.0.0.8:143 host=backend.example", NULL},
    {"invalid hostip", OK, "proxy host=backend.example hostip=10.0.0.300", IMAP, 5, SELF,
     NULL, 0, "kind=tempfail sub=config", "invalid hostip '10.0.0.300'"},
    {"source_ip", OK, "proxy host=10.0.0.9 source_ip=10.1.1.1", IMAP, 5, SELF, NULL, 0,
     "kind=proxy src=10.1.1.1", NULL},
    {"invalid source_ip", OK, "proxy host=10.0.0.9 source_ip=me", IMAP, 5, SELF, NULL, 0,
     "kind=tempfail sub=config", "invalid source_ip 'me'"},
    {"name resolved: first address", OK, "proxy host=backend.example port=2424", LMTP, 5,
     SELF, "10.0.0.20 10.0.0.21", 0, "kind=proxy ip=10.0.0.20:2424 host=backend.example",
     NULL},
    {"name not resolved", OK, "proxy host=backend.example", LMTP, 5, SELF, NULL, 0,
     "kind=tempfail sub=dns", "backend.example"},
    {"ipv6 literal in brackets", OK, "proxy host=[2001:db8::1]", IMAP, 5, SELF, NULL, 0,
     "kind=proxy ip=[2001:db8::1]:143", NULL},
    {"ipv6 literal bare", OK, "proxy host=2001:db8::1 port=24", LMTP, 5, SELF, NULL, 0,
     "kind=proxy ip=[2001:db8::1]:24", NULL},

    /* other target fields */
    {"proxy_timeout 500ms", OK, "proxy host=10.0.0.9 proxy_timeout=500ms", IMAP, 5, SELF,
     NULL, 0, "kind=proxy timeout=500", NULL},
    {"proxy_timeout 2s", OK, "proxy host=10.0.0.9 proxy_timeout=2s", IMAP, 5, SELF, NULL, 0,
     "kind=proxy timeout=2000", NULL},
    {"proxy_timeout plain seconds", OK, "proxy host=10.0.0.9 proxy_timeout=30", LMTP, 5, SELF,
     NULL, 0, "kind=proxy timeout=30000", NULL},
    {"proxy_timeout invalid", OK, "proxy host=10.0.0.9 proxy_timeout=soon", IMAP, 5, SELF,
     NULL, 0, "kind=tempfail sub=config", "invalid proxy_timeout 'soon'"},
    {"strings copied", OK,
     "proxy host=10.0.0.9 destuser=real@x master=admin pass=secret proxy_mech=XOAUTH2", IMAP,
     5, SELF, NULL, 0, "kind=proxy destuser=real@x master=admin pass=secret mech=XOAUTH2",
     NULL},
    {"empty master ignored", OK, "proxy host=10.0.0.9 master= destuser", IMAP, 5, SELF, NULL,
     0, "kind=proxy master=- destuser=-", NULL},
    {"proxy flags", OK, "proxy host=10.0.0.9 proxy_nopipelining proxy_not_trusted=no "
     "proxy_noauth", SUBM, 5, SELF, NULL, 0, "kind=proxy nopipelining=1 not_trusted=1 noauth=1",
     NULL},
    {"no proxy flags", OK, "proxy host=10.0.0.9", SUBM, 5, SELF, NULL, 0,
     "kind=proxy nopipelining=0 not_trusted=0 noauth=0 fwd=", NULL},
    {"forward fields", OK, "proxy host=10.0.0.9 forward_a=1 forward_flag forward_=x", LMTP, 5,
     SELF, NULL, 0, "kind=proxy fwd=a:1,flag:-", NULL},

    /* precedence */
    {"proxy beats nologin and reason", OK, "proxy host=10.0.0.9 nologin reason=x", IMAP, 5,
     SELF, NULL, 0, "kind=proxy ip=10.0.0.9:143 reason=x", NULL},
    {"host alone: referral", OK, "host=imap2.example", IMAP, 5, SELF, NULL, 0,
     "kind=referral host=imap2.example ip=none:143 nologin=0", NULL},
    {"host+nologin: refusing referral", OK, "host=10.0.0.9 nologin reason=Moved", IMAP, 5,
     SELF, NULL, 0, "kind=referral ip=10.0.0.9:143 nologin=1 reason=Moved", NULL},
    {"referral port and destuser", OK, "host=10.0.0.9 port=1143 destuser=bob nologin", IMAP,
     5, SELF, NULL, 0, "kind=referral ip=10.0.0.9:1143 destuser=bob nologin=1", NULL},
    {"referral ssl default port", OK, "host=imap2.example ssl=yes", IMAP, 5, SELF, NULL, 0,
     "kind=referral ip=none:993", NULL},
    {"referral name resolved", OK, "host=lmtp2.example", LMTP, 5, SELF, "10.0.0.30", 0,
     "kind=referral ip=10.0.0.30:24", NULL},
    {"referral bad port", OK, "host=10.0.0.9 port=x", IMAP, 5, SELF, NULL, 0,
     "kind=tempfail sub=config", "invalid port"},
    {"nologin alone: refuse", OK, "nologin", IMAP, 5, SELF, NULL, 0,
     "kind=refuse sub=nologin", NULL},
    {"nologin=no still nologin", OK, "nologin=no reason=Disabled", IMAP, 5, SELF, NULL, 0,
     "kind=refuse sub=nologin reason=Disabled", NULL},

    /* self and loops */
    {"proxy to self ip, our port", OK, "proxy host=10.0.0.5 port=143", IMAP, 5, SELF, NULL, 0,
     "kind=loop sub=self", "ourself"},
    {"proxy to self, default port is ours", OK, "proxy host=192.168.1.5", IMAP, 5, SELF, NULL,
     0, "kind=loop sub=self", NULL},
    {"proxy to self ip, other port", OK, "proxy host=10.0.0.5 port=1143", IMAP, 5, SELF, NULL,
     0, "kind=proxy ip=10.0.0.5:1143", NULL},
    {"proxy to self ip, default port not ours", OK, "proxy host=10.0.0.5", POP3, 5, SELF,
     NULL, 0, "kind=proxy ip=10.0.0.5:110", NULL},
    {"proxy to self by name", OK, "proxy host=me.example port=24", LMTP, 5, SELF,
     "10.0.0.99 192.168.1.5", 0, "kind=loop sub=self", NULL},
    {"proxy hostip self", OK, "proxy host=other.example hostip=10.0.0.5 port=24", LMTP, 5,
     SELF, NULL, 0, "kind=loop sub=self", NULL},
    {"proxy ipv6 self", OK, "proxy host=::1 port=24", LMTP, 5, SELF, NULL, 0,
     "kind=loop sub=self", NULL},
    {"proxy ipv4-mapped self", OK, "proxy host=::ffff:10.0.0.5 port=993", IMAP, 5, SELF, NULL,
     0, "kind=loop sub=self", NULL},
    {"proxy self unknown", OK, "proxy host=10.0.0.5 port=143", IMAP, 5, NO_SELF, NULL, 0,
     "kind=proxy ip=10.0.0.5:143", NULL},
    {"proxy_maybe self, no port", OK, "proxy_maybe host=10.0.0.5 destuser=x", LMTP, 5, SELF,
     NULL, 0, "kind=local", NULL},
    {"proxy_maybe self, no port, port not ours", OK, "proxy_maybe host=10.0.0.5", POP3, 5,
     SELF, NULL, 0, "kind=local", NULL},
    {"proxy_maybe self, our port", OK, "proxy_maybe host=10.0.0.5 port=143", IMAP, 5, SELF,
     NULL, 0, "kind=local", NULL},
    {"proxy_maybe self ip, other port", OK, "proxy_maybe host=10.0.0.5 port=1143", IMAP, 5,
     SELF, NULL, 0, "kind=proxy ip=10.0.0.5:1143", NULL},
    {"proxy_maybe name resolving to self among several", OK, "proxy_maybe host=mx.example",
     LMTP, 5, SELF, "10.0.0.40 10.0.0.41 10.0.0.5", 0, "kind=local", NULL},
    {"proxy_maybe name not self", OK, "proxy_maybe host=mx.example", LMTP, 5, SELF,
     "10.0.0.40 10.0.0.41", 0, "kind=proxy ip=10.0.0.40:24", NULL},
    {"proxy_maybe hostip self", OK, "proxy_maybe host=mx.example hostip=192.168.1.5", LMTP, 5,
     SELF, NULL, 0, "kind=local", NULL},
    {"proxy_maybe self + nologin", OK, "proxy_maybe host=10.0.0.5 nologin", IMAP, 5, SELF,
     NULL, 0, "kind=refuse sub=nologin", NULL},
    {"proxy + proxy_maybe to self loops", OK, "proxy proxy_maybe host=10.0.0.5", IMAP, 5, SELF,
     NULL, 0, "kind=loop sub=self", NULL},

    /* TTL */
    {"ttl 0 proxy", OK, "proxy host=10.0.0.9", LMTP, 0, SELF, NULL, 0, "kind=loop sub=ttl",
     "TTL"},
    {"ttl -1 proxy", OK, "proxy host=10.0.0.9", IMAP, -1, SELF, NULL, 0, "kind=loop sub=ttl",
     NULL},
    {"ttl 1 proxy", OK, "proxy host=10.0.0.9", LMTP, 1, SELF, NULL, 0, "kind=proxy", NULL},
    {"ttl 0 proxy_maybe self: local", OK, "proxy_maybe host=10.0.0.5", LMTP, 0, SELF, NULL, 0,
     "kind=local", NULL},
    {"ttl 0 local", OK, "", LMTP, 0, SELF, NULL, 0, "kind=local", NULL},
    {"ttl 0 referral", OK, "host=10.0.0.9", LMTP, 0, SELF, NULL, 0, "kind=referral", NULL},

    /* delay_until */
    {"delay in 100 s", OK, "delay_until=1700000100", IMAP, 5, SELF, NULL, 0,
     "kind=local delay=1700000100000", NULL},
    {"delay with jitter", OK, "proxy host=10.0.0.9 delay_until=1700000100+10", IMAP, 5, SELF,
     NULL, 123456789, "kind=proxy delay=1700000106789", NULL},
    {"delay jitter 0", OK, "delay_until=1700000100+0", IMAP, 5, SELF, NULL, 999,
     "kind=local delay=1700000100000", NULL},
    {"delay exactly at the limit", OK, "delay_until=1700000300", IMAP, 5, SELF, NULL, 0,
     "kind=local delay=1700000300000", NULL},
    {"delay jitter clamped to the limit", OK, "delay_until=1700000299+100", IMAP, 5, SELF,
     NULL, 99999, "kind=local delay=1700000300000", NULL},
    {"delay too far", OK, "proxy host=10.0.0.9 delay_until=1700000301", IMAP, 5, SELF, NULL,
     0, "kind=tempfail sub=delay", "too far"},
    {"delay in the past", OK, "delay_until=1600000000+50", IMAP, 5, SELF, NULL, 7,
     "kind=local delay=0", NULL},
    {"delay invalid", OK, "delay_until=soon", IMAP, 5, SELF, NULL, 0,
     "kind=tempfail sub=config", "invalid delay_until"},
    {"delay invalid jitter", OK, "delay_until=1700000100+x", IMAP, 5, SELF, NULL, 0,
     "kind=tempfail sub=config", NULL},
    {"delay flag without value", OK, "delay_until", IMAP, 5, SELF, NULL, 0,
     "kind=tempfail sub=config", NULL},
    {"delay on referral", OK, "host=10.0.0.9 nologin delay_until=1700000010", IMAP, 5, SELF,
     NULL, 0, "kind=referral delay=1700000010000", NULL},
    {"delay ignored on refuse", OK, "nologin delay_until=1700000100", IMAP, 5, SELF, NULL, 0,
     "kind=refuse sub=nologin delay=0", NULL},
    {"delay ignored on config error", OK, "proxy delay_until=soon", IMAP, 5, SELF, NULL, 0,
     "kind=tempfail sub=config", "host not given"},
};

/* Rendering */

static const char *sub_str(const struct route_decision *d)
{
    static const char *const loops[] = {"self", "ttl"};
    static const char *const refuses[] = {"unknown_user", "password", "nologin"};
    static const char *const tempfails[] = {"lookup", "delay", "config", "dns", "no_local"};
    switch (d->kind) {
    case ROUTE_LOOP: return loops[d->loop];
    case ROUTE_REFUSE: return refuses[d->refuse];
    case ROUTE_TEMPFAIL: return tempfails[d->tempfail];
    default: return "-";
    }
}

static const char *or_dash(const char *s)
{
    return s != NULL ? s : "-";
}

static void render_forward(struct buf *out, const struct fields *f)
{
    buf_append_str(out, " fwd=");
    for (size_t i = 0; i < f->n; i++)
        buf_printf(out, "%s%s:%s", i ? "," : "", f->v[i].key, or_dash(f->v[i].value));
}

static void render_target(struct buf *out, const struct route_target *t)
{
    static const char *const tls[] = {"none", "implicit", "starttls"};
    char ip[ADDR_STRLEN], src[ADDR_STRLEN];
    if (t->ip.family != 0)
        addr_str(&t->ip, ip, sizeof(ip));
    else
        snprintf(ip, sizeof(ip), "none:%u", (unsigned)t->ip.port);
    addr_ip_str(&t->source_ip, src, sizeof(src));
    buf_printf(out, " ip=%s host=%s proto=%s tls=%s verify=%d src=%s", ip, or_dash(t->host),
               route_proto_str(t->protocol), tls[t->tls], t->tls_verify, src[0] ? src : "-");
    buf_printf(out, " destuser=%s master=%s pass=%s mech=%s timeout=%llu", or_dash(t->destuser),
               or_dash(t->master), or_dash(t->pass), or_dash(t->proxy_mech),
               (unsigned long long)t->timeout_ms);
    buf_printf(out, " nopipelining=%d not_trusted=%d noauth=%d", t->nopipelining,
               t->not_trusted, t->noauth);
    render_forward(out, &t->forward);
}

static void render(struct buf *out, const struct route_decision *d)
{
    buf_printf(out, "kind=%s sub=%s", route_kind_str(d->kind), sub_str(d));
    if (d->kind == ROUTE_PROXY || d->kind == ROUTE_REFERRAL)
        render_target(out, &d->target);
    if (d->kind == ROUTE_REFERRAL)
        buf_printf(out, " nologin=%d", d->nologin);
    buf_printf(out, " reason=%s delay=%llu", or_dash(d->reason),
               (unsigned long long)d->delay_until_ms);
}

/* Is every token of want a whole token of got? */
static bool has_tokens(const char *got, const char *want)
{
    char *w = xstrdup(want), *save = NULL;
    bool ok = true;
    for (char *tok = strtok_r(w, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save)) {
        size_t n = strlen(tok);
        const char *p = got;
        bool found = false;
        while (!found && (p = strstr(p, tok)) != NULL) {
            found = (p == got || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0');
            p++;
        }
        ok = ok && found;
    }
    free(w);
    return ok;
}

static void parse_fields(struct fields *f, const char *s)
{
    char *copy = xstrdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
        fields_add_pair(f, tok);
    free(copy);
}

static size_t parse_ips(struct addr *ips, size_t max, const char *s)
{
    size_t n = 0;
    char *copy = xstrdup(s != NULL ? s : ""), *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok && n < max; tok = strtok_r(NULL, " ", &save))
        CHECK(addr_parse_ip(tok, &ips[n++]));
    free(copy);
    return n;
}

static void decide_case(const struct route_case *c, struct route_decision *d)
{
    struct fields fields = FIELDS_INIT;
    struct addr ips[8];
    parse_fields(&fields, c->fields);
    struct route_input in = {
        .result = c->result,
        .fields = &fields,
        .user = "user@example.com",
        .protocol = c->proto,
        .ttl = c->ttl,
        .self = c->self == SELF ? &self : NULL,
        .host_ips = ips,
        .n_host_ips = parse_ips(ips, 8, c->host_ips),
        .now_ms = NOW_MS,
        .random = c->random,
        .delay_until_max_ms = MAX_DELAY_MS,
    };
    route_decide(&in, d);
    fields_free(&fields);
}

static void run_case(const struct route_case *c)
{
    struct route_decision d;
    struct buf got = BUF_INIT;
    decide_case(c, &d);
    render(&got, &d);
    bool ok = has_tokens(buf_ptr(&got), c->want);
    bool detail_ok = c->detail == NULL ||
                     (d.log_detail != NULL && strstr(d.log_detail, c->detail) != NULL);
    CHECK(ok && detail_ok);
    if (!ok || !detail_ok) {
        fprintf(stderr, "  case '%s':\n    got  %s\n    want %s\n    detail '%s' want '%s'\n",
                c->name, buf_ptr(&got), c->want, or_dash(d.log_detail), or_dash(c->detail));
    }
    buf_free(&got);
    route_decision_free(&d);
}

static void test_table(void)
{
    init_self();
    for (size_t i = 0; i < ARRAY_LEN(cases); i++)
        run_case(&cases[i]);
    CHECK(ARRAY_LEN(cases) >= 40);
}

/* Jitter stays within [ts, ts + N s) for any random number. */
static void test_delay_jitter_bounds(void)
{
    static const struct route_case c = {"jitter", OK, "delay_until=1700000060+30", IMAP, 5,
                                        SELF, NULL, 0, "", NULL};
    uint64_t seen_min = UINT64_MAX, seen_max = 0;
    for (uint64_t r = 0; r < 200000; r += 997) {
        struct route_case rc = c;
        struct route_decision d;
        rc.random = r * 2654435761ULL;
        decide_case(&rc, &d);
        CHECK_INT(d.kind, ROUTE_LOCAL);
        CHECK(d.delay_until_ms >= 1700000060000ULL && d.delay_until_ms < 1700000090000ULL);
        seen_min = d.delay_until_ms < seen_min ? d.delay_until_ms : seen_min;
        seen_max = d.delay_until_ms > seen_max ? d.delay_until_ms : seen_max;
        route_decision_free(&d);
    }
    /* The jitter actually spreads over most of the window. */
    CHECK(seen_max - seen_min > 25000);
}

static void test_host_to_resolve(void)
{
    struct fields f = FIELDS_INIT;
    parse_fields(&f, "proxy host=backend.example");
    CHECK_STR(route_host_to_resolve(PASSDB_OK, &f), "backend.example");
    CHECK(route_host_to_resolve(PASSDB_PASSWORD_MISMATCH, &f) == NULL);
    CHECK(route_host_to_resolve(PASSDB_TEMPFAIL, &f) == NULL);
    fields_set(&f, "hostip", "10.0.0.1");
    CHECK(route_host_to_resolve(PASSDB_OK, &f) == NULL);
    fields_clear(&f);
    parse_fields(&f, "proxy host=10.0.0.1");
    CHECK(route_host_to_resolve(PASSDB_OK, &f) == NULL);
    fields_clear(&f);
    parse_fields(&f, "proxy host=[::1]");
    CHECK(route_host_to_resolve(PASSDB_OK, &f) == NULL);
    fields_clear(&f);
    parse_fields(&f, "nologin host=imap2.example");
    CHECK_STR(route_host_to_resolve(PASSDB_OK, &f), "imap2.example");
    fields_clear(&f);
    parse_fields(&f, "proxy host=");
    CHECK(route_host_to_resolve(PASSDB_OK, &f) == NULL);
    CHECK(route_host_to_resolve(PASSDB_OK, NULL) == NULL);
    fields_free(&f);
}

static void test_null_fields_and_strings(void)
{
    struct route_input in = {.result = PASSDB_OK, .protocol = ROUTE_PROTO_LMTP, .ttl = 5};
    struct route_decision d;
    route_decide(&in, &d);
    CHECK_INT(d.kind, ROUTE_LOCAL);
    route_decision_free(&d);
    CHECK_INT(d.kind, 0);
    CHECK(d.reason == NULL && d.log_detail == NULL && d.target.host == NULL);

    CHECK_STR(route_kind_str(ROUTE_PROXY), "proxy");
    CHECK_STR(route_kind_str(ROUTE_LOCAL), "local");
    CHECK_STR(route_kind_str(ROUTE_REFERRAL), "referral");
    CHECK_STR(route_kind_str(ROUTE_LOOP), "loop");
    CHECK_STR(route_kind_str(ROUTE_REFUSE), "refuse");
    CHECK_STR(route_kind_str(ROUTE_TEMPFAIL), "tempfail");
    CHECK_STR(route_proto_str(ROUTE_PROTO_LMTP), "lmtp");
    CHECK_STR(route_proto_str(ROUTE_PROTO_SMTP), "smtp");
    CHECK_STR(route_proto_str(ROUTE_PROTO_IMAP), "imap");
    CHECK_STR(route_proto_str(ROUTE_PROTO_POP3), "pop3");
    CHECK_STR(route_proto_str(ROUTE_PROTO_SUBMISSION), "submission");
}

static void test_default_ports(void)
{
    CHECK_INT(route_default_port(ROUTE_PROTO_LMTP, ROUTE_TLS_NONE), 24);
    CHECK_INT(route_default_port(ROUTE_PROTO_SMTP, ROUTE_TLS_NONE), 25);
    CHECK_INT(route_default_port(ROUTE_PROTO_IMAP, ROUTE_TLS_NONE), 143);
    CHECK_INT(route_default_port(ROUTE_PROTO_IMAP, ROUTE_TLS_STARTTLS), 143);
    CHECK_INT(route_default_port(ROUTE_PROTO_IMAP, ROUTE_TLS_IMPLICIT), 993);
    CHECK_INT(route_default_port(ROUTE_PROTO_POP3, ROUTE_TLS_NONE), 110);
    CHECK_INT(route_default_port(ROUTE_PROTO_POP3, ROUTE_TLS_IMPLICIT), 995);
    CHECK_INT(route_default_port(ROUTE_PROTO_SUBMISSION, ROUTE_TLS_NONE), 587);
    CHECK_INT(route_default_port(ROUTE_PROTO_SUBMISSION, ROUTE_TLS_IMPLICIT), 465);
}

int main(void)
{
    RUN(test_table);
    RUN(test_delay_jitter_bounds);
    RUN(test_host_to_resolve);
    RUN(test_null_fields_and_strings);
    RUN(test_default_ports);
    return test_done();
}
