/* login.c - the protocol-independent login flow: credentials -> passdb ->
 * routing decision -> backend connection and login -> relay.
 *
 * States: PRELOGIN (the front parses commands), AUTH (passdb, DNS, delays),
 * BACKEND (connecting and logging in; the client is paused, so commands it
 * pipelined after the login stay buffered and reach the backend through the
 * relay), RELAY (the relay owns both streams; this object only waits for
 * its end to log it). Front and back callbacks may close the session:
 * "busy" defers the free until the outermost callback returned. */
#include "login.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "login-limits.h"
#include "mem.h"
#include "relay.h"
#include "resolve.h"
#include "str.h"
#include "tls.h"

enum login_state { LS_PRELOGIN, LS_AUTH, LS_BACKEND, LS_RELAY };

struct login_session {
    struct proto_env *env;
    const struct login_front *front;
    const struct login_back *back;
    void *fstate, *bstate;
    struct stream *client, *backend;
    char id[LOGIN_SESSION_ID_MAX + 1]; /* ours (SID_LEN) or the previous hop's */
    struct addr client_addr, local_addr;
    bool trusted;
    int ttl;
    enum login_state state;
    char *user, *password, *mech;
    char *master;             /* master user of a master login, NULL otherwise */
    bool bad_login_name;      /* "*master" or "user*": refused without a lookup */
    char *sasl_response;      /* wiped when freed: a token is a credential */
    struct fields client_id;  /* the client's own ID pairs */
    struct passdb_lookup *lookup;
    struct resolve *resolve;
    struct stream_connect *conn;
    struct timer *timer;           /* failure delay, delay_until, reconnect, login timeout */
    void (*timer_fn)(struct login_session *ls);
    enum passdb_result result;
    struct fields fields;
    struct login_route *route;     /* NULL until the passdb answered */
    bool to_local;                 /* route->local_target, not the decision's */
    unsigned attempts;
    uint64_t deadline_ms;
    uint64_t start_ms;
    struct login_session *prev, *next; /* this worker's sessions */
    struct fields forward;    /* forward_* received from a trusted previous hop */
    struct relay *relay;
    int busy;
    bool dead;
    bool in_back_input;       /* the back's state is freed after its callback */
    bool tls_pending;         /* client handshake running */
    bool backend_starttls;    /* the backend handshake follows the back's STARTTLS */
    bool userip_held;         /* counts towards mail_max_userip_connections */
    bool host_waiting;        /* counted as waiting in the backend health table */
    void *bstate_dead;
};

/* Only while logging in: a relayed session does not carry it. */
struct login_route {
    struct route_decision decision;
    struct route_target local_target; /* imap_local & co. */
};

static void session_free(struct login_session *ls);
static void connect_backend(struct login_session *ls);

/* The sessions of this worker thread, for shutdown. */
static __thread struct login_session *worker_sessions;
static __thread unsigned worker_session_count;

/* Re-entrancy guard */

static void enter(struct login_session *ls)
{
    ls->busy++;
}

static void leave(struct login_session *ls)
{
    if (--ls->busy == 0 && ls->dead)
        session_free(ls);
}


/* Accessors */

struct stream *login_client(struct login_session *ls) { return ls->client; }
struct stream *login_backend(struct login_session *ls) { return ls->backend; }
void *login_front_state(struct login_session *ls) { return ls->fstate; }
const char *login_session_id(const struct login_session *ls) { return ls->id; }
bool login_client_trusted(const struct login_session *ls) { return ls->trusted; }
const struct settings *login_settings(const struct login_session *ls) { return ls->env->set; }
const struct addr *login_client_addr(const struct login_session *ls) { return &ls->client_addr; }
const struct addr *login_local_addr(const struct login_session *ls) { return &ls->local_addr; }
int login_ttl(const struct login_session *ls) { return ls->ttl; }

void login_set_forwarded(struct login_session *ls, const struct addr *client, int ttl)
{
    if (client != NULL)
        ls->client_addr = *client;
    if (ttl >= 0)
        ls->ttl = ttl;
}

void login_set_forwarded_local(struct login_session *ls, const struct addr *local)
{
    ls->local_addr = *local;
}

void login_add_forward(struct login_session *ls, const char *key, const char *value)
{
    fields_set(&ls->forward, key, value);
}

const struct fields *login_forward_fields(const struct login_session *ls)
{
    return &ls->forward;
}

bool login_set_session_id(struct login_session *ls, const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > LOGIN_SESSION_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (id[i] <= ' ' || id[i] > '~')
            return false;
    }
    memcpy(ls->id, id, n + 1);
    return true;
}

const struct route_target *login_target(const struct login_session *ls)
{
    static const struct route_target none;
    if (ls->route == NULL)
        return &none;
    return ls->to_local ? &ls->route->local_target : &ls->route->decision.target;
}

const char *login_user(const struct login_session *ls)
{
    const struct route_target *t = login_target(ls);
    return t->destuser != NULL ? t->destuser : ls->user;
}

const char *login_mech(const struct login_session *ls) { return ls->mech; }
const char *login_sasl_response(const struct login_session *ls) { return ls->sasl_response; }
const struct fields *login_client_id(const struct login_session *ls) { return &ls->client_id; }

void login_set_client_id(struct login_session *ls, const struct fields *pairs)
{
    fields_free(&ls->client_id);
    fields_copy(&ls->client_id, pairs);
}

const char *login_password(const struct login_session *ls)
{
    const struct route_target *t = login_target(ls);
    return t->pass != NULL ? t->pass : ls->password;
}

bool login_tls_available(const struct login_session *ls)
{
    return ls->env->tls_server != NULL && !stream_is_tls(ls->client) && !ls->tls_pending;
}

static void on_client_tls(void *ctx, int err, const char *error_text)
{
    struct login_session *ls = ctx;
    enter(ls);
    ls->tls_pending = false;
    if (err < 0) {
        log_info("%s(%s): TLS handshake failed: %s", ls->front->service, ls->id,
                 error_text != NULL ? error_text : stream_strerror(err));
        stream_destroy(&ls->client);
        login_session_close(ls);
    } else if (ls->fstate == NULL) {
        ls->fstate = ls->front->start(ls); /* implicit TLS: greet now */
    } else if (ls->front->tls_started != NULL) {
        ls->front->tls_started(ls, ls->fstate);
    }
    leave(ls);
}

void login_starttls(struct login_session *ls)
{
    ls->tls_pending = true;
    size_t dropped = stream_start_tls_server(ls->client, ls->env->tls_server, on_client_tls, ls);
    if (dropped > 0)
        log_warn("%s(%s): %zu bytes sent after STARTTLS were discarded", ls->front->service,
                 ls->id, dropped);
}

bool login_plaintext_allowed(const struct login_session *ls)
{
    return !ls->env->set->disable_plaintext_auth || stream_is_tls(ls->client) || ls->trusted ||
           addr_is_loopback(&ls->client_addr) || stream_is_unix(ls->client);
}

/* Timer */

static void on_timer(void *ctx)
{
    struct login_session *ls = ctx;
    void (*fn)(struct login_session *) = ls->timer_fn;
    ls->timer_fn = NULL;
    enter(ls);
    if (fn != NULL)
        fn(ls);
    leave(ls);
}

static void timer_after(struct login_session *ls, uint64_t ms, void (*fn)(struct login_session *))
{
    if (ls->timer == NULL)
        ls->timer = timer_new(ls->env->loop, on_timer, ls);
    ls->timer_fn = fn;
    timer_start(ls->timer, ms);
}

static void timer_cancel(struct login_session *ls)
{
    ls->timer_fn = NULL;
    if (ls->timer != NULL)
        timer_stop(ls->timer);
}

/* Back to the front: the attempt is over, the client may try again. */

/* The back's state goes away; not under the back's own feet. */
static void free_bstate(struct login_session *ls)
{
    if (ls->bstate == NULL)
        return;
    if (ls->in_back_input)
        ls->bstate_dead = ls->bstate;
    else if (ls->back->free != NULL)
        ls->back->free(ls->bstate);
    ls->bstate = NULL;
}

static void route_free(struct login_session *ls)
{
    if (ls->route != NULL)
        route_decision_free(&ls->route->decision);
    free(ls->route);
    ls->route = NULL;
}

static void wipe_free(char **secret)
{
    if (*secret != NULL)
        mem_wipe(*secret, strlen(*secret));
    free(*secret);
    *secret = NULL;
}

static void forget_attempt(struct login_session *ls)
{
    passdb_lookup_abort(&ls->lookup);
    resolve_abort(&ls->resolve);
    stream_connect_abort(&ls->conn);
    if (ls->host_waiting)
        backend_host_unwait(&login_target(ls)->ip);
    ls->host_waiting = false;
    if (ls->userip_held)
        userip_release(ls->user, &ls->client_addr);
    ls->userip_held = false;
    timer_cancel(ls);
    free_bstate(ls);
    stream_destroy(&ls->backend);
    fields_free(&ls->fields);
    route_free(ls);
    ls->to_local = false;
    wipe_free(&ls->password);
    wipe_free(&ls->sasl_response);
    ls->attempts = 0;
}

static void back_to_prelogin(struct login_session *ls)
{
    forget_attempt(ls);
    ls->state = LS_PRELOGIN;
    if (ls->client != NULL && !ls->dead)
        stream_resume(ls->client);
}

static void fail(struct login_session *ls, enum login_failure f, const char *text)
{
    ls->front->failed(ls, ls->fstate, f, text);
    back_to_prelogin(ls);
    if (f == LOGIN_FAIL_LIMIT)
        login_session_close(ls);
}

static void fail_temp(struct login_session *ls, const char *why)
{
    char safe[256];
    log_info("%s(%s): login of %s failed temporarily: %s", ls->front->service, ls->id,
             log_sanitize(safe, sizeof(safe), ls->user), why);
    fail(ls, LOGIN_FAIL_TEMP, NULL);
}

/* Refusals wait auth_failure_delay, so guessing is slow. */
static void delayed_refusal(struct login_session *ls)
{
    bool nologin = ls->route != NULL && ls->route->decision.refuse == ROUTE_REFUSE_NOLOGIN;
    const char *reason = ls->route != NULL ? ls->route->decision.reason : NULL;
    fail(ls, nologin ? LOGIN_FAIL_NOLOGIN : LOGIN_FAIL_AUTH, reason);
}

static void refuse(struct login_session *ls)
{
    char safe[256];
    log_info("%s(%s): login of %s refused (%s)", ls->front->service, ls->id,
             log_sanitize(safe, sizeof(safe), ls->user), passdb_result_str(ls->result));
    bool nodelay = fields_has(&ls->fields, "nodelay");
    bool nologin = ls->route != NULL && ls->route->decision.refuse == ROUTE_REFUSE_NOLOGIN;
    if (!nologin && !ls->trusted)
        penalty_failed(&ls->client_addr, wall_now_ms());
    /* Only failures are delayed: a nologin answer needs the right password. */
    if (nodelay || nologin || ls->env->set->auth_failure_delay_ms == 0) {
        delayed_refusal(ls);
        return;
    }
    timer_after(ls, ls->env->set->auth_failure_delay_ms, delayed_refusal);
}

/* Relay */

static void on_relay_done(void *ctx, enum relay_end end, const struct relay_stats *st)
{
    struct login_session *ls = ctx;
    char safe[256];
    uint64_t secs = (loop_now_ms(ls->env->loop) - ls->start_ms) / 1000;
    log_info("%s(%s): user=%s disconnected by %s (%s) after %llus: in=%llu out=%llu",
             ls->front->service, ls->id, log_sanitize(safe, sizeof(safe), ls->user),
             end == RELAY_END_CLIENT ? "client" : end == RELAY_END_BACKEND ? "server" : "proxy",
             st->err == 0 ? "closed" : stream_strerror(st->err), (unsigned long long)secs,
             (unsigned long long)st->bytes_in, (unsigned long long)st->bytes_out);
    ls->client = ls->backend = NULL;
    ls->relay = NULL;
    session_free(ls);
}

/* A relayed session may idle for days, thousands at a time: keep only what
 * its end needs (user, addresses, the userip slot; DESIGN.md: no idle
 * buffers). The front's parser, the passdb fields, the decision and the
 * secrets go now. */
static void shed_login_state(struct login_session *ls)
{
    if (ls->fstate != NULL && ls->front->free != NULL)
        ls->front->free(ls->fstate);
    ls->fstate = NULL;
    timer_free(&ls->timer);
    fields_free(&ls->fields);
    fields_free(&ls->forward);
    fields_free(&ls->client_id);
    route_free(ls);
    ls->to_local = false;
    wipe_free(&ls->password);
    wipe_free(&ls->sasl_response);
    free(ls->mech);
    free(ls->master);
    ls->mech = ls->master = NULL;
}

void login_backend_accepted(struct login_session *ls, const char *reply)
{
    char safe[256], ip[ADDR_STRLEN];
    timer_cancel(ls);
    ls->front->logged_in(ls, ls->fstate, reply);
    if (ls->dead)
        return;
    log_info("%s(%s): user=%s rip=%s proxied to %s as %s (%llu ms, %u reconnects)",
             ls->front->service, ls->id, log_sanitize(safe, sizeof(safe), ls->user),
             addr_ip_str(&ls->client_addr, ip, sizeof(ip)),
             login_target(ls)->host != NULL ? login_target(ls)->host : "-", login_user(ls),
             (unsigned long long)(loop_now_ms(ls->env->loop) - ls->start_ms),
             ls->attempts > 0 ? ls->attempts - 1 : 0);
    free_bstate(ls);
    if (ls->host_waiting)
        backend_host_unwait(&login_target(ls)->ip);
    ls->host_waiting = false;
    if (!ls->trusted)
        penalty_clear(&ls->client_addr);
    ls->state = LS_RELAY;
    ls->start_ms = loop_now_ms(ls->env->loop);
    struct stream *client = ls->client, *backend = ls->backend;
    ls->client = ls->backend = NULL;
    shed_login_state(ls);
    ls->relay = relay_start(client, backend, on_relay_done, ls);
}

/* A temporary failure after connecting (the backend said "try later",
 * dropped us, or spoke nonsense): the front may pass the backend's words
 * on. Not retried yet: loops answer [UNAVAILABLE] at every hop, and they
 * must first get their own answer ([SERVERBUG], as in Dovecot) so that
 * retries cannot multiply along a loop. */
static void backend_temporary(struct login_session *ls, const char *text)
{
    char safe[256], safe_text[512];
    log_info("%s(%s): login of %s failed temporarily: %s (%u attempts)", ls->front->service,
             ls->id, log_sanitize(safe, sizeof(safe), ls->user),
             log_sanitize(safe_text, sizeof(safe_text), text), ls->attempts);
    fail(ls, LOGIN_FAIL_TEMP, text);
}

static void retry_connect(struct login_session *ls);
static uint64_t time_left(struct login_session *ls);

void login_backend_retry(struct login_session *ls, const char *text)
{
    const struct settings *set = ls->env->set;
    if (ls->attempts <= set->login_proxy_max_reconnects && time_left(ls) > 1100) {
        free_bstate(ls);
        stream_destroy(&ls->backend);
        timer_after(ls, 1000, retry_connect);
        return;
    }
    backend_temporary(ls, text);
}

void login_backend_failed(struct login_session *ls, bool temporary, const char *text)
{
    if (temporary) {
        backend_temporary(ls, text != NULL ? text : "backend failure");
        return;
    }
    char safe[256], safe_text[512];
    log_info("%s(%s): backend refused the login of %s: %s", ls->front->service, ls->id,
             log_sanitize(safe, sizeof(safe), ls->user),
             log_sanitize(safe_text, sizeof(safe_text), text != NULL ? text : ""));
    /* With nopassword the backend is the one that checks: its refusal is a
     * failed guess like ours. */
    if (!ls->trusted)
        penalty_failed(&ls->client_addr, wall_now_ms());
    fail(ls, LOGIN_FAIL_BACKEND, text);
}

/* Backend connection */

static void backend_input(void *ctx)
{
    struct login_session *ls = ctx;
    enter(ls);
    if (ls->bstate != NULL) {
        ls->in_back_input = true;
        ls->back->input(ls, ls->bstate);
        ls->in_back_input = false;
        if (ls->bstate_dead != NULL && ls->back->free != NULL)
            ls->back->free(ls->bstate_dead);
        ls->bstate_dead = NULL;
    }
    leave(ls);
}

static void backend_closed(void *ctx, int err)
{
    struct login_session *ls = ctx;
    enter(ls);
    login_backend_failed(ls, true, err == 0 ? "disconnected by the backend during login"
                                            : stream_strerror(err));
    leave(ls);
}

static const struct stream_handler backend_handler = {backend_input, NULL, backend_closed};

static void login_timed_out(struct login_session *ls)
{
    fail_temp(ls, "backend login timed out");
}

static uint64_t time_left(struct login_session *ls)
{
    uint64_t now = loop_now_ms(ls->env->loop);
    return ls->deadline_ms > now ? ls->deadline_ms - now : 0;
}

static void retry_connect(struct login_session *ls)
{
    connect_backend(ls);
}

/* ssl=yes|any-cert: TLS right after connect; the certificate must match
 * the host (or hostname field) unless any-cert. Certificate failures are
 * not retried: they will not go away by themselves. */
static void on_backend_tls(void *ctx, int err, const char *error_text)
{
    struct login_session *ls = ctx;
    enter(ls);
    if (err < 0) {
        char why[300];
        snprintf(why, sizeof(why), "TLS with %s failed: %s", login_target(ls)->tls_name,
                 error_text != NULL ? error_text : stream_strerror(err));
        fail_temp(ls, why);
    } else if (!ls->backend_starttls) {
        ls->bstate = ls->back->start(ls, ls->backend);
    } else if (ls->bstate != NULL) {
        ls->back->tls_started(ls, ls->bstate);
    }
    leave(ls);
}

static void start_backend_tls(struct login_session *ls)
{
    const struct route_target *t = login_target(ls);
    const char *name = t->tls_name != NULL && t->tls_name[0] != '\0' ? t->tls_name : NULL;
    struct addr ip;
    const char *sni = name != NULL && !addr_parse_ip(name, &ip) ? name : NULL;
    if (ls->env->tls_client == NULL) {
        fail_temp(ls, "TLS requested but no TLS client context");
        return;
    }
    stream_start_tls_client(ls->backend, ls->env->tls_client, t->tls_verify ? name : NULL, sni,
                            time_left(ls), on_backend_tls, ls);
}

void login_backend_starttls(struct login_session *ls)
{
    ls->backend_starttls = true;
    start_backend_tls(ls);
}

static void on_connected(void *ctx, struct stream *s, int err)
{
    struct login_session *ls = ctx;
    ls->conn = NULL;
    enter(ls);
    backend_host_result(&login_target(ls)->ip, s != NULL, wall_now_ms());
    if (s == NULL) {
        const struct settings *set = ls->env->set;
        /* Connect failures are retried 1 s apart while time is left. */
        if (ls->attempts <= set->login_proxy_max_reconnects && time_left(ls) > 1100) {
            timer_after(ls, 1000, retry_connect);
        } else {
            char why[128];
            snprintf(why, sizeof(why), "connect failed: %s (%u attempts)", stream_strerror(err),
                     ls->attempts);
            fail_temp(ls, why);
        }
        leave(ls);
        return;
    }
    ls->backend = s;
    stream_set_handler(s, &backend_handler, ls);
    timer_after(ls, time_left(ls), login_timed_out);
    if (login_target(ls)->tls == ROUTE_TLS_IMPLICIT)
        start_backend_tls(ls);
    else
        ls->bstate = ls->back->start(ls, s);
    leave(ls);
}

/* proxy_host_immediate_failure_after: the field (seconds), else the setting. */
static uint64_t immediate_failure_after_ms(const struct login_session *ls)
{
    const char *v = fields_get_str(&ls->fields, "proxy_host_immediate_failure_after");
    unsigned long long secs;
    if (v != NULL && str_to_uint(v, 86400, &secs))
        return secs * 1000;
    return ls->env->set->proxy_host_immediate_failure_after_ms;
}

/* login_source_ips, round robin per worker, unless the source_ip field says. */
static const struct addr *source_ip(const struct route_target *t, const struct proto_env *env)
{
    static __thread size_t next;
    if (t->source_ip.family != 0 || env->n_source_ips == 0)
        return &t->source_ip;
    if (next == 0)
        next = (size_t)random_u64(); /* workers start at different addresses */
    return &env->source_ips[next++ % env->n_source_ips];
}

static void connect_backend(struct login_session *ls)
{
    const struct route_target *t = login_target(ls);
    uint64_t now = wall_now_ms();
    ls->attempts++;
    ls->backend_starttls = false;
    if (!ls->host_waiting) {
        if (backend_host_down(&t->ip, now, immediate_failure_after_ms(ls))) {
            fail_temp(ls, "host is down: failing for longer than "
                          "proxy_host_immediate_failure_after, and other logins are trying it");
            return;
        }
        backend_host_wait(&t->ip);
        ls->host_waiting = true;
    }
    ls->conn = stream_connect_tcp(ls->env->loop, &t->ip, source_ip(t, ls->env), time_left(ls),
                                  on_connected, ls);
}

static void start_proxy(struct login_session *ls)
{
    const struct route_target *t = login_target(ls);
    uint64_t timeout = t->timeout_ms > 0 ? t->timeout_ms : ls->env->set->login_proxy_timeout_ms;
    unsigned limit = ls->env->set->mail_max_userip_connections;
    if (!userip_acquire(ls->user, &ls->client_addr, limit)) {
        char text[128];
        snprintf(text, sizeof(text), "Maximum number of connections from user+IP exceeded "
                 "(mail_max_userip_connections=%u)", limit);
        char safe[256];
        log_info("%s(%s): login of %s refused: %s", ls->front->service, ls->id,
                 log_sanitize(safe, sizeof(safe), ls->user), text);
        fail(ls, LOGIN_FAIL_LIMIT, text);
        return;
    }
    ls->userip_held = limit > 0;
    ls->state = LS_BACKEND;
    ls->deadline_ms = loop_now_ms(ls->env->loop) + timeout;
    connect_backend(ls);
}

/* The protocol's local backend ("imap_local = HOST:PORT", pop3_local,
 * submission_local). */
static bool use_local_backend(struct login_session *ls)
{
    const struct settings *set = ls->env->set;
    const char *spec = ls->front->proto == ROUTE_PROTO_IMAP   ? set->imap_local
                       : ls->front->proto == ROUTE_PROTO_POP3 ? set->pop3_local
                       : ls->front->proto == ROUTE_PROTO_SUBMISSION ? set->submission_local
                                                                  : NULL;
    if (spec == NULL || spec[0] == '\0')
        return false;
    struct route_target *local = &ls->route->local_target;
    memset(local, 0, sizeof(*local));
    if (!addr_parse_ip_port(spec, &local->ip) || local->ip.port == 0)
        return false;
    local->protocol = ls->front->proto;
    ls->to_local = true;
    return true;
}

/* Decisions */

static void act(struct login_session *ls)
{
    const struct route_decision *d = &ls->route->decision;
    if (d->log_detail != NULL)
        log_info("%s(%s): %s", ls->front->service, ls->id, d->log_detail);
    switch (d->kind) {
    case ROUTE_PROXY:
        start_proxy(ls);
        break;
    case ROUTE_REFERRAL:
        if (!d->nologin && use_local_backend(ls)) {
            start_proxy(ls); /* logged in anyway; the front adds the referral */
            break;
        }
        ls->front->referral(ls, ls->fstate, d);
        back_to_prelogin(ls);
        break;
    case ROUTE_LOCAL:
        if (use_local_backend(ls))
            start_proxy(ls);
        else
            fail_temp(ls, "no local backend for this protocol");
        break;
    case ROUTE_REFUSE:
        refuse(ls);
        break;
    case ROUTE_LOOP: {
        char safe[256];
        log_info("%s(%s): login of %s failed: %s", ls->front->service, ls->id,
                 log_sanitize(safe, sizeof(safe), ls->user),
                 d->loop == ROUTE_LOOP_TTL ? "TTL reached zero: proxies appear to be looping"
                                           : "proxying loops to itself");
        /* Dovecot: a loop to ourselves is an internal failure ([UNAVAILABLE]),
         * an exhausted TTL a remote configuration one ([SERVERBUG]), which
         * the previous hop passes on instead of retrying. */
        fail(ls, d->loop == ROUTE_LOOP_TTL ? LOGIN_FAIL_LOOP : LOGIN_FAIL_TEMP, NULL);
        break;
    }
    case ROUTE_TEMPFAIL:
        fail_temp(ls, d->log_detail != NULL ? d->log_detail : "temporary failure");
        break;
    }
}

const struct route_decision *login_decision(const struct login_session *ls)
{
    return ls->route != NULL ? &ls->route->decision : NULL;
}

const char *login_referral_user(const struct login_session *ls, const struct route_decision *d)
{
    return d->target.destuser != NULL ? d->target.destuser : ls->user;
}

static void delay_over(struct login_session *ls)
{
    act(ls);
}

static void decide(struct login_session *ls, const struct addr *ips, size_t n)
{
    struct route_input in = {
        .result = ls->result,
        .fields = &ls->fields,
        .user = ls->user,
        .protocol = ls->front->proto,
        /* Login proxies judge the TTL they would send (Dovecot: a received
         * TTL of 1 or less is a loop), LMTP the one it received. */
        .ttl = ls->ttl - 1,
        .self = ls->env->self,
        .host_ips = ips,
        .n_host_ips = n,
        .now_ms = wall_now_ms(),
        .random = random_u64(),
        .delay_until_max_ms = ls->env->set->delay_until_max_ms,
    };
    ls->route = xcalloc(1, sizeof(*ls->route));
    route_decide(&in, &ls->route->decision);
    uint64_t now = wall_now_ms();
    if (ls->route->decision.delay_until_ms > now) {
        timer_after(ls, ls->route->decision.delay_until_ms - now, delay_over);
        return;
    }
    act(ls);
}

static void on_resolved(void *ctx, const struct addr *addrs, size_t n, const char *err)
{
    struct login_session *ls = ctx;
    ls->resolve = NULL;
    enter(ls);
    if (err != NULL)
        log_info("%s(%s): DNS: %s", ls->front->service, ls->id, err);
    decide(ls, addrs, n);
    leave(ls);
}

static void on_lookup(const struct passdb_reply *reply, void *ctx)
{
    struct login_session *ls = ctx;
    ls->lookup = NULL;
    enter(ls);
    ls->result = reply->result;
    fields_copy(&ls->fields, reply->fields);
    if (reply->error != NULL)
        log_warn("%s(%s): passdb: %s", ls->front->service, ls->id, reply->error);
    if (reply->result == PASSDB_OK && reply->user != NULL && strcmp(reply->user, ls->user) != 0) {
        free(ls->user);
        ls->user = xstrdup(reply->user);
    }
    /* The backend login of a master login is a master login too, with the
     * master's password, unless the passdb names its own master. */
    const char *master = fields_get_str(&ls->fields, "master");
    if (ls->master != NULL && reply->result == PASSDB_OK && (master == NULL || *master == '\0'))
        fields_set(&ls->fields, "master", ls->master);
    const char *host = route_host_to_resolve(reply->result, &ls->fields);
    if (host != NULL)
        ls->resolve = resolve_host(ls->env->loop, host, on_resolved, ls);
    else
        decide(ls, NULL, 0);
    leave(ls);
}

static struct passdb_lookup *lookup(struct login_session *ls, const char *user,
                                    const char *password, bool master, passdb_callback *cb)
{
    struct passdb_request req = {
        .user = user,
        .service = ls->front->service,
        .password = password,
        .mech = ls->mech,
        .session = ls->id,
        .local = ls->local_addr,
        .remote = ls->client_addr,
        .real_local = *stream_local(ls->client),
        .real_remote = *stream_peer(ls->client),
        .master = master,
    };
    return passdb_lookup(ls->env->passdb, &req, cb, ls);
}

/* The master user's password is right: now find the user it acts for
 * (no password of its own to check) and route by the user's fields. */
static void on_master_lookup(const struct passdb_reply *reply, void *ctx)
{
    struct login_session *ls = ctx;
    ls->lookup = NULL;
    enter(ls);
    if (reply->error != NULL)
        log_warn("%s(%s): master passdb: %s", ls->front->service, ls->id, reply->error);
    if (reply->result != PASSDB_OK) {
        char safe[256];
        log_info("%s(%s): master user %s: %s", ls->front->service, ls->id,
                 log_sanitize(safe, sizeof(safe), ls->master), passdb_result_str(reply->result));
        ls->result = reply->result == PASSDB_TEMPFAIL ? PASSDB_TEMPFAIL
                                                      : PASSDB_PASSWORD_MISMATCH;
        decide(ls, NULL, 0);
    } else {
        ls->lookup = lookup(ls, ls->user, NULL, false, on_lookup);
    }
    leave(ls);
}

/* After the failure penalty, if any. */
static void start_lookup(struct login_session *ls)
{
    const char *password = ls->password != NULL ? ls->password : "";
    if (ls->bad_login_name) {
        ls->result = PASSDB_USER_UNKNOWN;
        decide(ls, NULL, 0);
    } else if (ls->master != NULL) {
        ls->lookup = lookup(ls, ls->master, password, true, on_master_lookup);
    } else {
        ls->lookup = lookup(ls, ls->user, password, false, on_lookup);
    }
}

void login_authenticate(struct login_session *ls, const struct login_credentials *cred)
{
    forget_attempt(ls);
    free(ls->user);
    free(ls->mech);
    free(ls->master);
    ls->user = ls->master = NULL;
    const char *sep = ls->env->set->auth_master_user_separator;
    int split = 0;
    if (cred->master != NULL) {
        ls->user = xstrdup(cred->user);
        ls->master = xstrdup(cred->master);
    } else if ((split = sasl_split_master(cred->user, sep[0], &ls->user, &ls->master)) < 0) {
        ls->user = xstrdup(cred->user); /* "*master" or "user*": refused below */
    }
    ls->password = cred->password != NULL ? xstrdup(cred->password) : NULL;
    ls->mech = xstrdup(cred->mech != NULL ? cred->mech : "PLAIN");
    ls->sasl_response = cred->sasl_response != NULL ? xstrdup(cred->sasl_response) : NULL;
    ls->state = LS_AUTH;
    ls->start_ms = loop_now_ms(ls->env->loop);
    stream_pause(ls->client);
    ls->bad_login_name = split < 0;
    uint64_t penalty = ls->trusted ? 0 : penalty_delay_ms(&ls->client_addr, wall_now_ms(),
                                                          ls->env->set->auth_penalty_max_ms);
    if (penalty > 0) {
        char ip[ADDR_STRLEN];
        log_info("%s(%s): login from %s held %llu ms: earlier logins from there failed",
                 ls->front->service, ls->id, addr_ip_str(&ls->client_addr, ip, sizeof(ip)),
                 (unsigned long long)penalty);
        timer_after(ls, penalty, start_lookup);
    } else
        start_lookup(ls);
}

void login_authenticate_sasl(struct login_session *ls, enum sasl_mech mech,
                             const struct sasl_result *r)
{
    bool master = sasl_result_is_master(r);
    struct login_credentials cred = {
        .user = master ? r->authzid : r->authcid,
        .password = r->password,
        .mech = sasl_mech_name(mech),
        .sasl_response = r->raw_response,
        .master = master ? r->authcid : NULL,
    };
    login_authenticate(ls, &cred);
}

bool login_mech_enabled(const struct login_session *ls, enum sasl_mech mech)
{
    return (ls->env->set->auth_mechanisms_mask & (1u << mech)) != 0;
}

void login_append_mechs(const struct login_session *ls, struct buf *out, const char *prefix,
                        const char *suffix)
{
    for (enum sasl_mech m = SASL_MECH_PLAIN; m <= SASL_MECH_XOAUTH2; m++) {
        if (login_mech_enabled(ls, m))
            buf_printf(out, "%s%s%s", prefix, sasl_mech_name(m), suffix);
    }
}

/* Client side */

static void client_input(void *ctx)
{
    struct login_session *ls = ctx;
    if (ls->state != LS_PRELOGIN || ls->tls_pending || ls->fstate == NULL)
        return;
    enter(ls);
    ls->front->input(ls, ls->fstate);
    leave(ls);
}

static void client_closed(void *ctx, int err)
{
    struct login_session *ls = ctx;
    (void)err;
    login_session_close(ls);
}

static const struct stream_handler client_handler = {client_input, NULL, client_closed};

void login_session_start(struct proto_env *env, struct stream *s, const struct login_front *front,
                         const struct login_back *back, bool implicit_tls)
{
    struct login_session *ls = xcalloc(1, sizeof(*ls));
    proto_env_ref(env);
    ls->env = env;
    ls->front = front;
    ls->back = back;
    ls->client = s;
    ls->ttl = 5;
    sid_new(ls->id);
    ls->client_addr = *stream_peer(s);
    ls->local_addr = *stream_local(s);
    ls->trusted = cidr_set_contains(&env->set->login_trusted_networks, &ls->client_addr);
    ls->next = worker_sessions;
    if (worker_sessions != NULL)
        worker_sessions->prev = ls;
    worker_sessions = ls;
    worker_session_count++;
    stream_set_handler(s, &client_handler, ls);
    stream_set_idle_timeout(s, 30 * 60 * 1000); /* pre-login: Dovecot's 30 min, bounded */
    enter(ls);
    if (!implicit_tls) {
        ls->fstate = front->start(ls);
    } else if (env->tls_server != NULL) {
        login_starttls(ls);
    } else {
        log_error("%s(%s): listener has ssl = yes but TLS is not configured", front->service,
                  ls->id);
        login_session_close(ls);
    }
    leave(ls);
}

void login_session_close(struct login_session *ls)
{
    if (ls->dead)
        return;
    ls->dead = true;
    if (ls->busy == 0)
        session_free(ls);
}

static void session_free(struct login_session *ls)
{
    if (ls->prev != NULL)
        ls->prev->next = ls->next;
    else
        worker_sessions = ls->next;
    if (ls->next != NULL)
        ls->next->prev = ls->prev;
    worker_session_count--;
    forget_attempt(ls);
    timer_free(&ls->timer);
    if (ls->fstate != NULL && ls->front->free != NULL)
        ls->front->free(ls->fstate);
    if (ls->client != NULL)
        stream_close_after_flush(ls->client);
    free(ls->user);
    free(ls->mech);
    free(ls->master);
    fields_free(&ls->forward);
    fields_free(&ls->client_id);
    proto_env_unref(&ls->env);
    free(ls);
}

unsigned login_sessions_count(void)
{
    return worker_session_count;
}

/* Shutdown: proxied sessions can last for days (IDLE), and clients
 * reconnect at once, so every session is closed now rather than waited for. */
void login_sessions_kill(void)
{
    backend_hosts_free();
    while (worker_sessions != NULL) {
        struct login_session *ls = worker_sessions;
        if (ls->relay != NULL) {
            relay_kill(ls->relay); /* frees ls through on_relay_done */
            continue;
        }
        ls->dead = true;
        session_free(ls);
    }
}
