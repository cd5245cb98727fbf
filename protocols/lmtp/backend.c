/* backend.c - LMTP/SMTP client connections to backends: connect, greeting,
 * LHLO/EHLO, XCLIENT, then a queue of commands and their replies. */
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend-private.h"
#include "codec.h"
#include "log.h"
#include "mem.h"
#include "tls.h"

static void backend_fail(struct backend *b, enum backend_failure f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void getter_free(struct backend_get *g);
static void start_xclient_or_ready(struct backend *b);

static void enter(struct backend *b)
{
    b->busy++;
}

static void leave(struct backend *b)
{
    if (--b->busy == 0 && b->released)
        backend_pool_free_backend(b);
}

const char *backend_failure_word(enum backend_failure f)
{
    switch (f) {
    case BACKEND_OK: return "ok";
    case BACKEND_FAIL_CONNECT: return "connect";
    case BACKEND_FAIL_LOST: return "connection lost";
    case BACKEND_FAIL_TIMEOUT: return "timed out";
    case BACKEND_FAIL_PROTOCOL: return "bad reply";
    }
    return "?";
}

bool backend_has_ext(const struct backend *b, const char *ext)
{
    return smtp_reply_has_ext(&b->caps, ext, NULL, NULL);
}

bool backend_is_dead(const struct backend *b) { return b->state == B_DEAD; }
bool backend_was_reused(const struct backend *b) { return b->reused; }
enum backend_failure backend_failure(const struct backend *b) { return b->failure; }
const char *backend_error(const struct backend *b) { return b->error; }

/* Reply timer: runs while replies are awaited. */

static void on_reply_timeout(void *ctx)
{
    struct backend *b = ctx;
    enter(b);
    if (b->idle)
        backend_pool_drop(b->pool, b);
    else
        backend_fail(b, BACKEND_FAIL_TIMEOUT, "timed out waiting for a reply");
    leave(b);
}

static void arm_timer(struct backend *b)
{
    if (b->n_waiting > 0)
        timer_start(b->timer, b->t.timeout_ms);
    else
        timer_stop(b->timer);
}

/* Sending */

static void push_waiter(struct backend *b, backend_reply_fn *fn, void *ctx)
{
    if (b->n_waiting == b->cap_waiting) {
        b->cap_waiting = b->cap_waiting ? b->cap_waiting * 2 : 8;
        b->waiting = xrealloc(b->waiting, b->cap_waiting * sizeof(*b->waiting));
    }
    b->waiting[b->n_waiting].fn = fn;
    b->waiting[b->n_waiting].ctx = ctx;
    if (b->n_waiting++ == 0)
        arm_timer(b);
}

static void send_line(struct backend *b, const char *line, backend_reply_fn *fn, void *ctx)
{
    stream_printf(b->s, "%s\r\n", line);
    push_waiter(b, fn, ctx);
}

static void send_queued(struct backend *b)
{
    while (b->n_queued > 0 && (b->pipelining || b->n_waiting == 0)) {
        struct queued_cmd q = b->queued[0];
        memmove(b->queued, b->queued + 1, (b->n_queued - 1) * sizeof(*b->queued));
        b->n_queued--;
        send_line(b, q.line, q.w.fn, q.w.ctx);
        free(q.line);
    }
}

void backend_fail_late_waiters(void *ctx)
{
    struct backend *b = ctx;
    enter(b);
    while (!b->released && b->n_waiting > 0) {
        struct waiter w = b->waiting[0];
        memmove(b->waiting, b->waiting + 1, (b->n_waiting - 1) * sizeof(*b->waiting));
        b->n_waiting--;
        if (w.fn != NULL)
            w.fn(w.ctx, NULL);
    }
    leave(b);
}

void backend_cmd(struct backend *b, const char *line, backend_reply_fn *fn, void *ctx)
{
    if (b->state == B_DEAD) {
        backend_expect(b, fn, ctx);
        return;
    }
    if (b->pipelining && b->n_queued == 0) {
        send_line(b, line, fn, ctx);
        return;
    }
    if (b->n_queued == b->cap_queued) {
        b->cap_queued = b->cap_queued ? b->cap_queued * 2 : 8;
        b->queued = xrealloc(b->queued, b->cap_queued * sizeof(*b->queued));
    }
    b->queued[b->n_queued].line = xstrdup(line);
    b->queued[b->n_queued].w.fn = fn;
    b->queued[b->n_queued].w.ctx = ctx;
    b->n_queued++;
    send_queued(b);
}

void backend_expect(struct backend *b, backend_reply_fn *fn, void *ctx)
{
    push_waiter(b, fn, ctx);
    if (b->state == B_DEAD) /* report the failure from the loop, like any reply */
        loop_defer(b->loop, backend_fail_late_waiters, b);
}

void backend_write(struct backend *b, const void *data, size_t n)
{
    if (b->state != B_DEAD)
        stream_write(b->s, data, n);
}

size_t backend_output_pending(const struct backend *b)
{
    return b->s != NULL ? stream_output_pending(b->s) : 0;
}

void backend_want_drain(struct backend *b, size_t low, void (*fn)(void *ctx), void *ctx)
{
    b->drain_fn = fn;
    b->drain_ctx = ctx;
    stream_want_drain(b->s, low);
}

void backend_on_failure(struct backend *b, void (*fn)(void *ctx), void *ctx)
{
    b->fail_fn = fn;
    b->fail_ctx = ctx;
}

void backend_forget_callbacks(struct backend *b, void *ctx)
{
    if (b->fail_ctx == ctx)
        b->fail_fn = NULL;
    for (size_t i = 0; i < b->n_waiting; i++) {
        if (b->waiting[i].ctx == ctx)
            b->waiting[i].fn = NULL;
    }
    for (size_t i = 0; i < b->n_queued; i++) {
        if (b->queued[i].w.ctx == ctx)
            b->queued[i].w.fn = NULL;
    }
    if (b->drain_ctx == ctx)
        b->drain_fn = NULL;
}

/* Receiving */

static void deliver_reply(struct backend *b, const struct smtp_reply *reply)
{
    if (b->n_waiting == 0) {
        backend_fail(b, BACKEND_FAIL_PROTOCOL, "unexpected reply %u", reply->code);
        return;
    }
    struct waiter w = b->waiting[0];
    memmove(b->waiting, b->waiting + 1, (b->n_waiting - 1) * sizeof(*b->waiting));
    b->n_waiting--;
    arm_timer(b);
    if (w.fn != NULL)
        w.fn(w.ctx, reply);
    if (b->state != B_DEAD)
        send_queued(b);
}

static void read_replies(struct backend *b)
{
    const char *line;
    size_t len, used;
    int r;
    while (b->state != B_DEAD && (r = stream_read_line(b->s, SMTP_REPLY_MAX, &line, &len,
                                                       &used)) != 0) {
        if (r < 0) {
            backend_fail(b, BACKEND_FAIL_PROTOCOL, "reply line too long");
            return;
        }
        enum smtp_reply_status st = smtp_reply_feed(&b->reply, line, len);
        stream_consume(b->s, used);
        if (st == SMTP_REPLY_ERROR) {
            backend_fail(b, BACKEND_FAIL_PROTOCOL, "malformed reply");
            return;
        }
        if (st == SMTP_REPLY_DONE) {
            if (b->idle) {
                backend_pool_drop(b->pool, b); /* unsolicited: e.g. 421 timeout */
                return;
            }
            if (b->released)
                return;
            deliver_reply(b, &b->reply);
            if (b->state != B_DEAD)
                smtp_reply_reset(&b->reply);
        }
    }
}

static void on_input(void *ctx)
{
    struct backend *b = ctx;
    enter(b);
    read_replies(b);
    leave(b);
}

static void on_drain(void *ctx)
{
    struct backend *b = ctx;
    void (*fn)(void *) = b->drain_fn;
    b->drain_fn = NULL;
    enter(b);
    if (fn != NULL)
        fn(b->drain_ctx);
    leave(b);
}

static void on_close(void *ctx, int err)
{
    struct backend *b = ctx;
    enter(b);
    if (b->idle)
        backend_pool_drop(b->pool, b);
    else if (err == STREAM_ETLS && stream_tls_error(b->s) != NULL)
        backend_fail(b, BACKEND_FAIL_LOST, "TLS error: %s", stream_tls_error(b->s));
    else
        backend_fail(b, BACKEND_FAIL_LOST, "%s", err == 0 ? "remote closed the connection"
                                                           : stream_strerror(err));
    leave(b);
}

static const struct stream_handler backend_handler = {on_input, on_drain, on_close};

/* Failure: every waiter learns it, then the backend is dead. */

static void backend_fail(struct backend *b, enum backend_failure f, const char *fmt, ...)
{
    if (b->state == B_DEAD)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->error, sizeof(b->error), fmt, ap);
    va_end(ap);
    enum backend_state was = b->state;
    b->state = B_DEAD;
    b->failure = (was < B_READY && f == BACKEND_FAIL_LOST) ? BACKEND_FAIL_CONNECT : f;
    if (was < B_READY && b->failure == BACKEND_FAIL_CONNECT && !b->reused)
        backend_pool_note_failure(b->pool, b->t.key);
    log_info("backend %s (%s): %s", b->t.host, b->t.key, b->error);
    timer_stop(b->timer);
    stream_destroy(&b->s);
    stream_connect_abort(&b->conn);
    if (b->getter != NULL) {
        struct backend_get *g = b->getter;
        b->getter = NULL;
        g->b = NULL;
        g->fn(g->ctx, NULL);
        /* the getter's owner keeps no pointer to b: free it here */
        getter_free(g);
        b->released = true;
        if (b->busy == 0)
            backend_pool_free_backend(b);
        return;
    }
    /* Waiters run in order; they may release the backend, which is then
     * freed once this loop is over (b->n_waiting is re-read). */
    while (!b->released && (b->n_waiting > 0 || b->n_queued > 0)) {
        struct waiter w;
        if (b->n_waiting > 0) {
            w = b->waiting[0];
            memmove(b->waiting, b->waiting + 1, (b->n_waiting - 1) * sizeof(*b->waiting));
            b->n_waiting--;
        } else {
            w = b->queued[0].w;
            free(b->queued[0].line);
            memmove(b->queued, b->queued + 1, (b->n_queued - 1) * sizeof(*b->queued));
            b->n_queued--;
        }
        if (w.fn != NULL)
            w.fn(w.ctx, NULL);
    }
    b->drain_fn = NULL;
    if (b->fail_fn != NULL && !b->released) {
        void (*fn)(void *) = b->fail_fn;
        b->fail_fn = NULL;
        fn(b->fail_ctx);
    }
}

/* Setup: greeting, LHLO/EHLO, XCLIENT. */

static const char *hello_verb(const struct backend *b)
{
    return b->t.protocol == ROUTE_PROTO_SMTP ? "EHLO" : "LHLO";
}

static void getter_free(struct backend_get *g)
{
    free(g->helo);
    free(g->proto);
    free(g->session);
    free(g);
}

static void become_ready(struct backend *b)
{
    b->state = B_READY;
    b->pipelining = smtp_reply_has_ext(&b->caps, "PIPELINING", NULL, NULL);
    struct backend_get *g = b->getter;
    if (g == NULL)
        return;
    b->getter = NULL;
    g->fn(g->ctx, b);
    getter_free(g);
}

/* The XCLIENT line for what the backend advertises; attributes in the order
 * HELO PROTO SESSION TTL PORT ADDR. SMTP peers get "IPV6:" before an IPv6
 * address (Postfix grammar); LMTP peers do not (Dovecot's LMTP parser). */
static void build_xclient(struct backend *b, const struct backend_get *g, struct buf *line,
                          struct buf *sig)
{
    const char *params = NULL;
    size_t plen = 0;
    if (!smtp_reply_has_ext(&b->caps, "XCLIENT", &params, &plen))
        return;
    char *adv = xstrndup(params, plen);
    struct { const char *name; char value[300]; bool session; } attrs[6];
    size_t n = 0;
    char ip[ADDR_STRLEN];
    if (g->helo != NULL && g->helo[0] != '\0')
        attrs[n].session = false, snprintf(attrs[n].value, sizeof(attrs[n].value), "%.255s",
                                           g->helo), attrs[n++].name = "HELO";
    attrs[n].session = false;
    snprintf(attrs[n].value, sizeof(attrs[n].value), "%s", g->proto);
    attrs[n++].name = "PROTO";
    attrs[n].session = true;
    snprintf(attrs[n].value, sizeof(attrs[n].value), "%s", g->session);
    attrs[n++].name = "SESSION";
    attrs[n].session = false;
    snprintf(attrs[n].value, sizeof(attrs[n].value), "%d", g->ttl > 0 ? g->ttl - 1 : 0);
    attrs[n++].name = "TTL";
    if (g->has_addr) {
        attrs[n].session = false;
        snprintf(attrs[n].value, sizeof(attrs[n].value), "%u", g->addr.port);
        attrs[n++].name = "PORT";
        addr_ip_str(&g->addr, ip, sizeof(ip));
        attrs[n].session = false;
        snprintf(attrs[n].value, sizeof(attrs[n].value), "%s%s",
                 g->addr.family == AF_INET6 && b->t.protocol == ROUTE_PROTO_SMTP ? "IPV6:" : "",
                 ip);
        attrs[n++].name = "ADDR";
    }
    for (size_t i = 0; i < n; i++) {
        bool advertised = false;
        char *save = NULL, *copy = xstrdup(adv);
        for (char *w = strtok_r(copy, " ", &save); w != NULL; w = strtok_r(NULL, " ", &save))
            advertised = advertised || strcasecmp(w, attrs[i].name) == 0;
        free(copy);
        if (!advertised)
            continue;
        struct buf enc = BUF_INIT;
        xtext_encode(&enc, attrs[i].value);
        buf_printf(line, " %s=%s", attrs[i].name, buf_used(&enc) ? buf_ptr(&enc) : "");
        if (!attrs[i].session)
            buf_printf(sig, " %s=%s", attrs[i].name, buf_used(&enc) ? buf_ptr(&enc) : "");
        buf_free(&enc);
    }
    free(adv);
}

static void on_hello_again(void *ctx, const struct smtp_reply *r)
{
    struct backend *b = ctx;
    if (r == NULL)
        return;
    if (r->code / 100 != 2) {
        backend_fail(b, BACKEND_FAIL_PROTOCOL, "%s after XCLIENT: %u %s", hello_verb(b),
                     r->code, buf_ptr(&r->text));
        return;
    }
    smtp_reply_reset(&b->caps);
    buf_append(&b->caps.text, buf_ptr(&r->text), buf_used(&r->text));
    b->caps.code = r->code;
    become_ready(b);
}

static void on_xclient(void *ctx, const struct smtp_reply *r)
{
    struct backend *b = ctx;
    if (r == NULL)
        return;
    if (r->code / 100 != 2) {
        /* The backend does not trust us after all: go on without it. */
        log_warn("backend %s: XCLIENT refused: %u %s", b->t.host, r->code, buf_ptr(&r->text));
        become_ready(b);
        return;
    }
    b->state = B_HELLO;
    char *line = xasprintf("%s %s", hello_verb(b), b->t.hello_name);
    send_line(b, line, on_hello_again, b);
    free(line);
}

static void start_xclient_or_ready(struct backend *b)
{
    struct backend_get *g = b->getter;
    struct buf line = BUF_INIT, sig = BUF_INIT;
    if (g != NULL && b->t.send_xclient)
        build_xclient(b, g, &line, &sig);
    const char *newsig = buf_used(&sig) > 0 ? buf_ptr(&sig) : "";
    if (buf_used(&line) == 0 || (b->xclient_sig != NULL && strcmp(b->xclient_sig, newsig) == 0)) {
        buf_free(&line);
        buf_free(&sig);
        become_ready(b);
        return;
    }
    free(b->xclient_sig);
    b->xclient_sig = xstrdup(newsig);
    b->state = B_XCLIENT;
    char *cmd = xasprintf("XCLIENT%s", buf_ptr(&line));
    send_line(b, cmd, on_xclient, b);
    free(cmd);
    buf_free(&line);
    buf_free(&sig);
}

static void on_hello(void *ctx, const struct smtp_reply *r);
static void on_greeting(void *ctx, const struct smtp_reply *r);

static void send_hello(struct backend *b)
{
    b->state = B_HELLO;
    char *line = xasprintf("%s %s", hello_verb(b), b->t.hello_name);
    send_line(b, line, on_hello, b);
    free(line);
}

/* TLS with the backend is up (implicit: now the greeting; STARTTLS: the
 * hello again, as RFC 3207 wants), or it failed: a temporary failure for
 * this backend's recipients, never a plaintext fallback. */
static void on_tls_done(void *ctx, int err, const char *error_text)
{
    struct backend *b = ctx;
    enter(b);
    if (err < 0) {
        backend_fail(b, BACKEND_FAIL_CONNECT, "TLS with %s failed: %s", b->t.tls_name,
                     error_text != NULL ? error_text : stream_strerror(err));
    } else if (b->t.tls == ROUTE_TLS_IMPLICIT) {
        b->state = B_GREETING;
        push_waiter(b, on_greeting, b);
    } else {
        send_hello(b);
    }
    leave(b);
}

static void start_tls(struct backend *b)
{
    if (b->tls_client == NULL) {
        backend_fail(b, BACKEND_FAIL_CONNECT, "TLS requested but no TLS client context");
        return;
    }
    const char *name = b->t.tls_name[0] != '\0' ? b->t.tls_name : NULL;
    struct addr ip;
    const char *sni = name != NULL && !addr_parse_ip(name, &ip) ? name : NULL;
    stream_start_tls_client(b->s, b->tls_client, b->t.tls_verify ? name : NULL, sni,
                            b->t.connect_timeout_ms, on_tls_done, b);
}

static void on_starttls(void *ctx, const struct smtp_reply *r)
{
    struct backend *b = ctx;
    if (r == NULL)
        return;
    if (r->code != 220) {
        backend_fail(b, BACKEND_FAIL_CONNECT, "STARTTLS refused: %u %s%s%s", r->code,
                     r->enhanced, r->enhanced[0] != '\0' ? " " : "", buf_ptr(&r->text));
        return;
    }
    start_tls(b);
}

static void on_hello(void *ctx, const struct smtp_reply *r)
{
    struct backend *b = ctx;
    if (r == NULL)
        return;
    if (r->code / 100 != 2) {
        backend_fail(b, BACKEND_FAIL_PROTOCOL, "%s refused: %u %s", hello_verb(b), r->code,
                     buf_ptr(&r->text));
        return;
    }
    smtp_reply_reset(&b->caps);
    buf_append(&b->caps.text, buf_ptr(&r->text), buf_used(&r->text));
    b->caps.code = r->code;
    if (b->t.tls == ROUTE_TLS_STARTTLS && !stream_is_tls(b->s)) {
        /* Asked for TLS: never go on in plaintext. */
        if (!smtp_reply_has_ext(&b->caps, "STARTTLS", NULL, NULL)) {
            backend_fail(b, BACKEND_FAIL_CONNECT, "STARTTLS not supported by the backend");
            return;
        }
        send_line(b, "STARTTLS", on_starttls, b);
        return;
    }
    start_xclient_or_ready(b);
}

static void on_greeting(void *ctx, const struct smtp_reply *r)
{
    struct backend *b = ctx;
    if (r == NULL)
        return;
    if (r->code != 220) {
        backend_fail(b, BACKEND_FAIL_CONNECT, "greeting: %u %s", r->code, buf_ptr(&r->text));
        return;
    }
    send_hello(b);
}

static void on_connected(void *ctx, struct stream *s, int err)
{
    struct backend *b = ctx;
    b->conn = NULL;
    enter(b);
    if (s == NULL) {
        backend_fail(b, BACKEND_FAIL_CONNECT, "connect failed: %s", stream_strerror(err));
    } else {
        b->s = s;
        stream_set_handler(s, &backend_handler, b);
        stream_set_max_input(s, SMTP_REPLY_MAX * 4);
        if (b->t.tls == ROUTE_TLS_IMPLICIT) {
            start_tls(b);
        } else {
            b->state = B_GREETING;
            push_waiter(b, on_greeting, b);
        }
    }
    leave(b);
}

static struct backend *backend_new(struct proto_env *env, const struct backend_target *t)
{
    struct backend *b = xcalloc(1, sizeof(*b));
    b->loop = env->loop;
    b->pool = env->pool;
    b->t = *t;
    b->timer = timer_new(env->loop, on_reply_timeout, b);
    b->state = B_CONNECTING;
    if (t->tls != ROUTE_TLS_NONE && env->tls_client != NULL) {
        tls_client_ref(env->tls_client);
        b->tls_client = env->tls_client;
    }
    if (t->ip.family == 0)
        b->conn = stream_connect_unix(env->loop, t->unix_path, t->connect_timeout_ms,
                                      on_connected, b);
    else
        b->conn = stream_connect_tcp(env->loop, &t->ip, &t->source_ip, t->connect_timeout_ms,
                                     on_connected, b);
    return b;
}

/* Getting a backend */

static void fail_fast(void *ctx)
{
    struct backend_get *g = ctx;
    g->fn(g->ctx, NULL);
    getter_free(g);
}

static void reuse_ready(void *ctx)
{
    struct backend_get *g = ctx;
    struct backend *b = g->b;
    g->deferred = false;
    b->getter = g;
    start_xclient_or_ready(b);
}

struct backend_get *backend_get(struct proto_env *env, const struct backend_target *t,
                                const struct backend_client_info *ci, backend_ready_fn *fn,
                                void *ctx)
{
    struct backend_get *g = xcalloc(1, sizeof(*g));
    g->fn = fn;
    g->ctx = ctx;
    g->loop = env->loop;
    g->helo = xstrdup(ci->helo != NULL ? ci->helo : "");
    g->proto = xstrdup(ci->proto != NULL ? ci->proto : "LMTP");
    g->session = xstrdup(ci->session != NULL ? ci->session : "");
    g->ttl = ci->ttl;
    if (ci->addr != NULL && ci->addr->family != 0) {
        g->addr = *ci->addr;
        g->has_addr = true;
    }
    struct backend *b = backend_pool_take(env->pool, t->key);
    if (b != NULL) {
        b->reused = true;
        b->t.timeout_ms = t->timeout_ms;
        g->b = b;
        g->deferred = true;
        loop_defer(env->loop, reuse_ready, g);
        return g;
    }
    if (backend_pool_failing(env->pool, t->key, env->set->lmtp_backend_fail_fast_ms)) {
        g->deferred = true;
        loop_defer(env->loop, fail_fast, g);
        return g;
    }
    g->b = backend_new(env, t);
    g->b->getter = g;
    return g;
}

void backend_get_abort(struct backend_get **gp)
{
    struct backend_get *g = *gp;
    if (g == NULL)
        return;
    *gp = NULL;
    if (g->deferred) {
        loop_defer_cancel(g->loop, reuse_ready, g);
        loop_defer_cancel(g->loop, fail_fast, g);
    }
    struct backend *b = g->b;
    getter_free(g);
    if (b != NULL) {
        b->getter = NULL;
        b->released = true;
        if (b->busy == 0)
            backend_pool_free_backend(b);
    }
}

/* Releasing */

static void on_rset(void *ctx, const struct smtp_reply *r)
{
    struct backend *b = ctx;
    backend_pool_unhold(b->pool, b);
    if (r == NULL || r->code / 100 != 2) {
        b->released = true;
        if (b->busy == 0)
            backend_pool_free_backend(b);
        return;
    }
    backend_pool_put(b->pool, b);
}

void backend_release(struct backend **bp, bool dirty)
{
    struct backend *b = *bp;
    if (b == NULL)
        return;
    *bp = NULL;
    b->drain_fn = NULL;
    b->getter = NULL;
    bool reusable = b->state == B_READY && b->n_waiting == 0 && b->n_queued == 0 &&
                    stream_output_pending(b->s) == 0 && !b->released;
    if (!reusable) {
        b->released = true;
        if (b->busy == 0)
            backend_pool_free_backend(b);
        return;
    }
    if (dirty) {
        backend_pool_hold(b->pool, b);
        backend_cmd(b, "RSET", on_rset, b);
        return;
    }
    backend_pool_put(b->pool, b);
}

void backend_discard(struct backend **bp)
{
    struct backend *b = *bp;
    if (b == NULL)
        return;
    *bp = NULL;
    b->drain_fn = NULL;
    b->getter = NULL;
    b->released = true;
    if (b->busy == 0)
        backend_pool_free_backend(b);
}

/* Targets */

void backend_target_from_route(struct backend_target *t, const struct route_target *rt,
                               const struct settings *set)
{
    char ip[ADDR_STRLEN], src[ADDR_STRLEN];
    memset(t, 0, sizeof(*t));
    t->protocol = rt->protocol == ROUTE_PROTO_SMTP ? ROUTE_PROTO_SMTP : ROUTE_PROTO_LMTP;
    t->ip = rt->ip;
    t->source_ip = rt->source_ip;
    snprintf(t->host, sizeof(t->host), "%s", rt->host != NULL ? rt->host : "");
    snprintf(t->hello_name, sizeof(t->hello_name), "%s", set->hostname);
    t->timeout_ms = rt->timeout_ms > 0 ? rt->timeout_ms : set->lmtp_proxy_timeout_ms;
    t->connect_timeout_ms = set->lmtp_proxy_connect_timeout_ms;
    t->send_xclient = !rt->not_trusted;
    t->tls = rt->tls;
    t->tls_verify = rt->tls_verify;
    snprintf(t->tls_name, sizeof(t->tls_name), "%s", rt->tls_name != NULL ? rt->tls_name : "");
    addr_str(&rt->ip, ip, sizeof(ip));
    addr_ip_str(&rt->source_ip, src, sizeof(src));
    snprintf(t->key, sizeof(t->key), "%s:%s:%s:%d:%d%s", route_proto_str(t->protocol), ip, src,
             (int)rt->tls, rt->tls_verify, rt->not_trusted ? ":nt" : "");
}

bool backend_target_local(struct backend_target *t, const struct settings *set)
{
    const char *spec = set->lmtp_local;
    memset(t, 0, sizeof(*t));
    t->protocol = ROUTE_PROTO_LMTP;
    snprintf(t->hello_name, sizeof(t->hello_name), "%s", set->hostname);
    t->timeout_ms = set->lmtp_proxy_timeout_ms;
    t->connect_timeout_ms = set->lmtp_proxy_connect_timeout_ms;
    t->send_xclient = true;
    if (strncmp(spec, "unix:", 5) == 0) {
        snprintf(t->unix_path, sizeof(t->unix_path), "%s", spec + 5);
    } else if (strncmp(spec, "inet:", 5) == 0) {
        if (!addr_parse_ip_port(spec + 5, &t->ip) || t->ip.port == 0)
            return false;
    } else {
        return false;
    }
    snprintf(t->host, sizeof(t->host), "%s", spec);
    snprintf(t->key, sizeof(t->key), "local:%s", spec);
    return true;
}
