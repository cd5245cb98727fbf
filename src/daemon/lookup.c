/* lookup.c - "mailrouted lookup USER": what the passdb says about a user
 * and the routing decision, for admins (one key=value per line). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "daemon.h"
#include "log.h"
#include "loop.h"
#include "mem.h"
#include "passdb.h"
#include "resolve.h"
#include "sid.h"

struct lookup_state {
    struct loop *loop;
    struct route_input in;
    struct passdb_reply reply;
    struct fields fields;
    char *user;
    bool done;
    int exit_code;
};

static enum route_proto proto_from_name(const char *name, bool *ok)
{
    static const struct { const char *name; enum route_proto p; } protos[] = {
        {"lmtp", ROUTE_PROTO_LMTP}, {"smtp", ROUTE_PROTO_SMTP}, {"imap", ROUTE_PROTO_IMAP},
        {"pop3", ROUTE_PROTO_POP3}, {"submission", ROUTE_PROTO_SUBMISSION},
    };
    for (size_t i = 0; i < ARRAY_LEN(protos); i++) {
        if (strcmp(protos[i].name, name) == 0) {
            *ok = true;
            return protos[i].p;
        }
    }
    *ok = false;
    return ROUTE_PROTO_LMTP;
}

/* "key=value" with control characters replaced: a user name or a passdb
 * value must not be able to forge more lines of this output. */
static void print_kv(const char *key, const char *value)
{
    char safe[1024];
    printf("%s=%s\n", key, log_sanitize(safe, sizeof(safe), value));
}

static void print_decision(struct lookup_state *st, const struct addr *ips, size_t n)
{
    struct route_decision d;
    char ip[ADDR_STRLEN];
    st->in.host_ips = ips;
    st->in.n_host_ips = n;
    route_decide(&st->in, &d);
    if (d.kind == ROUTE_PROXY || d.kind == ROUTE_REFERRAL) {
        printf("target_host=%s\n", d.target.host != NULL ? d.target.host : "");
        if (d.target.ip.family != 0)
            printf("target=%s\n", addr_str(&d.target.ip, ip, sizeof(ip)));
        printf("target_protocol=%s\n", route_proto_str(d.target.protocol));
        if (d.target.destuser != NULL)
            printf("target_user=%s\n", d.target.destuser);
    }
    if (d.reason != NULL)
        printf("reason=%s\n", d.reason);
    if (d.log_detail != NULL)
        printf("detail=%s\n", d.log_detail);
    if (d.delay_until_ms != 0)
        printf("delay_until_ms=%llu\n", (unsigned long long)d.delay_until_ms);
    printf("decision=%s\n", route_kind_str(d.kind));
    route_decision_free(&d);
    st->done = true;
    loop_stop(st->loop);
}

static void on_resolved(void *ctx, const struct addr *addrs, size_t n, const char *err)
{
    struct lookup_state *st = ctx;
    if (err != NULL)
        printf("dns_error=%s\n", err);
    print_decision(st, addrs, n);
}

static void on_reply(const struct passdb_reply *reply, void *ctx)
{
    struct lookup_state *st = ctx;
    printf("result=%s\n", passdb_result_str(reply->result));
    if (reply->user != NULL)
        print_kv("user", reply->user);
    if (reply->error != NULL)
        print_kv("error", reply->error);
    for (size_t i = 0; i < reply->fields->n; i++) {
        const struct field *f = &reply->fields->v[i];
        if (strcmp(f->key, "pass") == 0 || strcmp(f->key, "password") == 0)
            printf("%s=<hidden>\n", f->key);
        else if (f->value != NULL)
            print_kv(f->key, f->value);
        else
            printf("%s=\n", f->key); /* a flag: present, no value */
    }
    st->exit_code = reply->result == PASSDB_USER_UNKNOWN ? EX_NOUSER
                    : reply->result == PASSDB_TEMPFAIL   ? EX_TEMPFAIL
                                                         : 0;
    fields_copy(&st->fields, reply->fields);
    st->in.result = reply->result;
    st->in.fields = &st->fields;
    const char *host = route_host_to_resolve(reply->result, &st->fields);
    if (host != NULL) {
        resolve_host(st->loop, host, on_resolved, st);
        return;
    }
    print_decision(st, NULL, 0);
}

int run_lookup(const struct settings *set, int argc, char **argv)
{
    static const struct option opts[] = {
        {"protocol", required_argument, NULL, 'p'},
        {"remote-ip", required_argument, NULL, 'r'},
        {"local-ip", required_argument, NULL, 'l'},
        {NULL, 0, NULL, 0},
    };
    struct passdb_request req = {.service = "lmtp"};
    enum route_proto proto = ROUTE_PROTO_LMTP;
    int c;
    optind = 0; /* re-initialise GNU getopt (main() used "+" mode) */
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        bool ok = true;
        if (c == 'p') {
            proto = proto_from_name(optarg, &ok);
            req.service = optarg;
        } else if (c == 'r') {
            ok = addr_parse_ip(optarg, &req.remote);
        } else if (c == 'l') {
            ok = addr_parse_ip(optarg, &req.local);
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "usage: mailrouted -c FILE lookup USER [--protocol "
                            "lmtp|smtp|imap|pop3|submission] [--remote-ip IP] [--local-ip IP]\n");
            return EX_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "mailrouted lookup: exactly one USER expected\n");
        return EX_USAGE;
    }
    req.real_local = req.local;
    req.real_remote = req.remote;
    req.user = argv[optind];
    char sid[SID_LEN + 1];
    sid_new(sid);
    req.session = sid;

    struct lookup_state st = {0};
    struct route_self self;
    char *error = NULL;
    st.loop = loop_new();
    self_build(&self, set);
    struct passdb *db = passdb_create(set, st.loop, &error);
    if (db == NULL) {
        fprintf(stderr, "mailrouted: passdb: %s\n", error);
        free(error);
        return EX_CONFIG;
    }
    st.in.protocol = proto;
    st.in.user = req.user;
    st.in.ttl = 5;
    st.in.self = &self;
    st.in.now_ms = wall_now_ms();
    st.in.random = random_u64();
    st.in.delay_until_max_ms = set->delay_until_max_ms;
    passdb_lookup(db, &req, on_reply, &st);
    loop_run(st.loop);
    passdb_destroy(&db);
    loop_free(&st.loop);
    fields_free(&st.fields);
    self_free(&self);
    return st.done ? st.exit_code : EX_SOFTWARE;
}
