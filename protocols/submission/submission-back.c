/* submission-back.c - logging in to a submission backend for a client.
 *
 * Dialogue (reference/dovecot-behaviour.md 3.4): the 220 greeting; "EHLO
 * <our hostname>"; with starttls=yes|any-cert that reply must advertise
 * STARTTLS: "STARTTLS", 220, the handshake and "EHLO" again, and only what
 * this EHLO over TLS lists counts from then on; when the EHLO reply
 * advertises XCLIENT and the target trusts us (no proxy_not_trusted),
 * XCLIENT with those of HELO PROTO LOGIN TTL PORT ADDR SESSION DESTADDR
 * DESTPORT FORWARD the backend lists, values in xtext,
 * an IPv6 ADDR as "IPV6:<ip>" (Postfix's grammar), cut into several
 * commands so that no line exceeds 512 octets, each answered with 220; then
 * EHLO again; then AUTH PLAIN (or AUTH <proxy_mech>) with an initial
 * response when the line stays within 512 octets, else after the 334, and
 * the further responses after each 334. The AUTH reply decides: 235 ->
 * logged in (the client gets that line), 4xx -> temporary, 5xx -> refused
 * (the client gets that line). Anything unexpected is a temporary failure.
 *
 * Not the relay: once AUTH succeeded the connection belongs to login.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec.h"
#include "log.h"
#include "login-sasl.h"
#include "mem.h"
#include "sasl.h"
#include "smtp-reply.h"
#include "str.h"
#include "submission-login.h"

#define BACKEND_LINE_MAX SMTP_REPLY_MAX
#define SMTP_LINE_MAX 512       /* XCLIENT and AUTH lines, CRLF included */
#define XCLIENT_MAX_ATTRS 12

enum back_step {
    STEP_GREETING,
    STEP_EHLO,
    STEP_STARTTLS,
    STEP_HANDSHAKE,             /* login.c runs the TLS handshake: no reading */
    STEP_XCLIENT,
    STEP_EHLO_AGAIN,
    STEP_AUTH,
    STEP_DONE,
};

struct submission_back {
    struct login_session *ls;
    struct stream *s;
    enum back_step step;
    struct smtp_reply reply;    /* being read */
    struct smtp_reply caps;     /* the last EHLO reply */
    char **xclient;             /* the XCLIENT commands, sent one by one */
    size_t n_xclient, next_xclient;
    bool sent_login;            /* XCLIENT LOGIN= (proxy_noauth) */
    struct login_sasl sasl;
};

static void *back_start(struct login_session *ls, struct stream *s)
{
    struct submission_back *b = xcalloc(1, sizeof(*b));
    b->ls = ls;
    b->s = s;
    stream_set_max_input(s, BACKEND_LINE_MAX * 2);
    return b;
}

static void back_free(void *state)
{
    struct submission_back *b = state;
    smtp_reply_free(&b->reply);
    smtp_reply_free(&b->caps);
    for (size_t i = 0; i < b->n_xclient; i++)
        free(b->xclient[i]);
    free(b->xclient);
    login_sasl_free(&b->sasl);
    free(b);
}

static void send_line(struct submission_back *b, const char *line)
{
    stream_printf(b->s, "%s\r\n", line);
}

static void temp_fail(struct submission_back *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void temp_fail(struct submission_back *b, const char *fmt, ...)
{
    struct buf why = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&why, fmt, ap);
    va_end(ap);
    b->step = STEP_DONE;
    login_backend_failed(b->ls, true, buf_ptr(&why));
    buf_free(&why);
}

/* The first line of a reply as the backend wrote it: "535 5.7.8 text". */
static void reply_line(const struct smtp_reply *r, struct buf *out)
{
    size_t len;
    const char *text = smtp_reply_first_line(r, &len);
    buf_printf(out, "%u", r->code);
    if (r->enhanced[0] != '\0')
        buf_printf(out, " %s", r->enhanced);
    if (len > 0)
        buf_printf(out, " %.*s", (int)len, text);
}

/* XCLIENT */

struct xclient_builder {
    const char *adv;            /* the attribute names the backend listed */
    size_t adv_len;
    char *tokens[XCLIENT_MAX_ATTRS];
    size_t n;
};

static bool advertised(const struct xclient_builder *x, const char *name)
{
    size_t n = strlen(name);
    const char *p = x->adv, *end = x->adv + x->adv_len;
    while (p < end) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *word_end = sp != NULL ? sp : end;
        if ((size_t)(word_end - p) == n && strncasecmp(p, name, n) == 0)
            return true;
        p = word_end + 1;
    }
    return false;
}

static bool attr(struct xclient_builder *x, const char *name, const char *value)
{
    if (x->n == XCLIENT_MAX_ATTRS || !advertised(x, name))
        return false;
    struct buf tok = BUF_INIT;
    buf_printf(&tok, "%s=", name);
    xtext_encode(&tok, value);
    x->tokens[x->n++] = buf_steal(&tok);
    return true;
}

/* Dovecot's tab-escaping, so that the list survives as one string. */
static void tab_escape(struct buf *out, const char *s)
{
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '\001': buf_append_str(out, "\0011"); break;
        case '\t': buf_append_str(out, "\001t"); break;
        case '\r': buf_append_str(out, "\001r"); break;
        case '\n': buf_append_str(out, "\001n"); break;
        default: buf_append(out, s, 1); break;
        }
    }
}

/* FORWARD: base64 of the tab-separated "key=value" list. */
static char *forward_value(const struct fields *fwd)
{
    struct buf plain = BUF_INIT, b64 = BUF_INIT;
    for (size_t i = 0; i < fwd->n; i++) {
        if (i > 0)
            buf_append_str(&plain, "\t");
        tab_escape(&plain, fwd->v[i].key);
        buf_append_str(&plain, "=");
        tab_escape(&plain, fwd->v[i].value != NULL ? fwd->v[i].value : "");
    }
    base64_encode(&b64, buf_ptr(&plain), buf_used(&plain));
    buf_free(&plain);
    return buf_steal(&b64);
}

static void address_attrs(struct submission_back *b, struct xclient_builder *x)
{
    const struct addr *client = login_client_addr(b->ls);
    const struct addr *local = login_local_addr(b->ls);
    char ip[ADDR_STRLEN + 5], num[16];
    if (client->family != 0) {
        snprintf(num, sizeof(num), "%u", client->port);
        if (client->port != 0) /* unknown after an XCLIENT ADDR without PORT */
            attr(x, "PORT", num);
        snprintf(ip, sizeof(ip), "%s", client->family == AF_INET6 ? "IPV6:" : "");
        addr_ip_str(client, ip + strlen(ip), sizeof(ip) - strlen(ip));
        attr(x, "ADDR", ip);
    }
    attr(x, "SESSION", login_session_id(b->ls));
    if (local->family != 0) {
        snprintf(ip, sizeof(ip), "%s", local->family == AF_INET6 ? "IPV6:" : "");
        addr_ip_str(local, ip + strlen(ip), sizeof(ip) - strlen(ip));
        attr(x, "DESTADDR", ip);
        snprintf(num, sizeof(num), "%u", local->port);
        attr(x, "DESTPORT", num);
    }
}

/* The attributes, in Dovecot's order. */
static void collect_attrs(struct submission_back *b, struct xclient_builder *x)
{
    const struct route_target *t = login_target(b->ls);
    struct submission_hello hello;
    char ttl[16];
    submission_client_hello(b->ls, &hello);
    attr(x, "HELO", hello.helo != NULL ? hello.helo : "[UNAVAILABLE]");
    attr(x, "PROTO", hello.proto != NULL ? hello.proto : "[UNAVAILABLE]");
    if (t->noauth)
        b->sent_login = attr(x, "LOGIN", login_user(b->ls));
    snprintf(ttl, sizeof(ttl), "%d", login_ttl(b->ls) - 1);
    attr(x, "TTL", ttl);
    address_attrs(b, x);
    if (t->forward.n > 0 && advertised(x, "FORWARD")) {
        char *fwd = forward_value(&t->forward);
        attr(x, "FORWARD", fwd);
        free(fwd);
    }
}

static void push_command(struct submission_back *b, struct buf *cmd)
{
    b->xclient = xrealloc(b->xclient, (b->n_xclient + 1) * sizeof(*b->xclient));
    b->xclient[b->n_xclient++] = buf_steal(cmd);
}

/* Several commands when one line would exceed 512 octets. */
static void build_xclient(struct submission_back *b, const char *adv, size_t adv_len)
{
    struct xclient_builder x = {.adv = adv, .adv_len = adv_len};
    struct buf cmd = BUF_INIT;
    collect_attrs(b, &x);
    for (size_t i = 0; i < x.n; i++) {
        size_t len = strlen(x.tokens[i]);
        if (buf_used(&cmd) > 0 && buf_used(&cmd) + 1 + len + 2 > SMTP_LINE_MAX)
            push_command(b, &cmd);
        if (buf_used(&cmd) == 0)
            buf_append_str(&cmd, "XCLIENT");
        buf_printf(&cmd, " %s", x.tokens[i]);
        free(x.tokens[i]);
    }
    if (buf_used(&cmd) > 0)
        push_command(b, &cmd);
    buf_free(&cmd);
}

/* AUTH */

/* One response line; a secret. */
static void send_response(struct submission_back *b, const struct buf *resp)
{
    struct buf line = BUF_INIT;
    buf_printf(&line, "%s\r\n", buf_ptr(resp));
    stream_write(b->s, buf_ptr(&line), buf_used(&line));
    buf_free_wipe(&line);
}

/* "AUTH <MECH> <ir>" when it fits in 512 octets (RFC 4954), else "AUTH <MECH>"
 * and the response after the 334. */
static void send_auth(struct submission_back *b)
{
    struct login_sasl *sasl = &b->sasl;
    const struct buf *ir = &sasl->resp[0];
    b->step = STEP_AUTH;
    if (!sasl->no_ir && strlen("AUTH ") + strlen(sasl->mech) + 1 + buf_used(ir) + 2 <=
                            SMTP_LINE_MAX) {
        struct buf line = BUF_INIT;
        buf_printf(&line, "AUTH %s %s\r\n", sasl->mech, buf_used(ir) > 0 ? buf_ptr(ir) : "=");
        stream_write(b->s, buf_ptr(&line), buf_used(&line));
        buf_free_wipe(&line);
        sasl->next = 1;
    } else {
        stream_printf(b->s, "AUTH %s\r\n", sasl->mech);
    }
}

static void start_auth(struct submission_back *b)
{
    const struct route_target *t = login_target(b->ls);
    if (t->noauth) {
        /* proxy_noauth: XCLIENT LOGIN= already logged the user in. */
        b->step = STEP_DONE;
        if (b->sent_login)
            login_backend_accepted(b->ls, "235 2.7.0 Logged in.");
        else
            login_backend_failed(b->ls, true, "proxy_noauth, but XCLIENT LOGIN not advertised");
        return;
    }
    if (!smtp_reply_has_ext(&b->caps, "AUTH", NULL, NULL)) {
        temp_fail(b, "Authentication support not advertised (TLS required?)");
        return;
    }
    if (t->proxy_mech != NULL) {
        if (!login_sasl_prepare(b->ls, t->proxy_mech, true, &b->sasl)) {
            temp_fail(b, "Unsupported SASL mechanism %s", t->proxy_mech);
            return;
        }
    } else {
        const char *pass = login_password(b->ls);
        if (pass == NULL) {
            temp_fail(b, "password not given");
            return;
        }
        login_sasl_plain(b->ls, pass, true, &b->sasl);
    }
    send_auth(b);
}

/* 334: the next response. One beyond them is, for the OAuth mechanisms, the
 * server's error report, which RFC 7628 has the client acknowledge with an
 * empty line (the 5xx follows); for the others the backend does not speak
 * the mechanism as we do. */
static void on_challenge(struct submission_back *b)
{
    struct login_sasl *sasl = &b->sasl;
    if (sasl->next < sasl->n)
        send_response(b, &sasl->resp[sasl->next++]);
    else if (sasl->token)
        send_line(b, "");
    else
        temp_fail(b, "unexpected SASL challenge from the backend");
}

static void on_auth_reply(struct submission_back *b, const struct smtp_reply *r)
{
    if (r->code == 334) {
        on_challenge(b);
        return;
    }
    struct buf line = BUF_INIT;
    reply_line(r, &line);
    b->step = STEP_DONE;
    if (r->code / 100 == 2)
        login_backend_accepted(b->ls, buf_ptr(&line));
    else if (r->code / 100 == 5)
        login_backend_failed(b->ls, false, buf_ptr(&line));
    else
        login_backend_failed(b->ls, true, buf_ptr(&line));
    buf_free(&line);
}

/* Steps */

static void send_ehlo(struct submission_back *b, enum back_step step)
{
    b->step = step;
    stream_printf(b->s, "EHLO %s\r\n", login_settings(b->ls)->hostname);
}

static void send_next_xclient(struct submission_back *b)
{
    if (b->next_xclient < b->n_xclient) {
        b->step = STEP_XCLIENT;
        send_line(b, b->xclient[b->next_xclient++]);
        return;
    }
    send_ehlo(b, STEP_EHLO_AGAIN);
}

/* The EHLO reply is ours to keep: swap it into caps. */
static void keep_caps(struct submission_back *b)
{
    struct smtp_reply old = b->caps;
    b->caps = b->reply;
    b->reply = old;
}

/* starttls: the backend must offer it; nothing else is said in plaintext. */
static bool starttls_first(struct submission_back *b)
{
    if (login_target(b->ls)->tls != ROUTE_TLS_STARTTLS || stream_is_tls(b->s))
        return false;
    if (!smtp_reply_has_ext(&b->caps, "STARTTLS", NULL, NULL)) {
        temp_fail(b, "STARTTLS not supported");
        return true;
    }
    b->step = STEP_STARTTLS;
    send_line(b, "STARTTLS");
    return true;
}

static void on_starttls_reply(struct submission_back *b, const char *line)
{
    if (b->reply.code != 220) {
        temp_fail(b, "STARTTLS failed: %s", line);
        return;
    }
    b->step = STEP_HANDSHAKE;
    login_backend_starttls(b->ls); /* may fail (and free b) at once */
}

/* TLS is up: what the plaintext EHLO listed no longer counts (RFC 3207). */
static void back_tls_started(struct login_session *ls, void *state)
{
    struct submission_back *b = state;
    (void)ls;
    smtp_reply_reset(&b->caps);
    send_ehlo(b, STEP_EHLO);
}

static void on_ehlo_reply(struct submission_back *b)
{
    const char *adv;
    size_t adv_len;
    keep_caps(b);
    if (b->step == STEP_EHLO && starttls_first(b))
        return;
    if (b->step == STEP_EHLO && !login_target(b->ls)->not_trusted &&
        smtp_reply_has_ext(&b->caps, "XCLIENT", &adv, &adv_len)) {
        build_xclient(b, adv, adv_len);
        if (b->n_xclient > 0) {
            send_next_xclient(b);
            return;
        }
    }
    start_auth(b);
}

static void on_reply(struct submission_back *b)
{
    const struct smtp_reply *r = &b->reply;
    struct buf line = BUF_INIT;
    reply_line(r, &line);
    switch (b->step) {
    case STEP_GREETING:
        if (r->code != 220) {
            temp_fail(b, "invalid greeting: %s", buf_ptr(&line));
            break;
        }
        send_ehlo(b, STEP_EHLO);
        break;
    case STEP_EHLO:
    case STEP_EHLO_AGAIN:
        if (r->code / 100 != 2)
            temp_fail(b, "EHLO failed: %s", buf_ptr(&line));
        else
            on_ehlo_reply(b);
        break;
    case STEP_STARTTLS:
        on_starttls_reply(b, buf_ptr(&line));
        break;
    case STEP_XCLIENT:
        if (r->code / 100 != 2)
            temp_fail(b, "XCLIENT failed: %s", buf_ptr(&line));
        else
            send_next_xclient(b);
        break;
    case STEP_AUTH:
        on_auth_reply(b, r);
        break;
    case STEP_HANDSHAKE:
    case STEP_DONE:
        break;
    }
    buf_free(&line);
}

static void back_input(struct login_session *ls, void *state)
{
    struct submission_back *b = state;
    struct stream *s = login_backend(ls);
    const char *line;
    size_t len, used;
    int r;
    while (b->step != STEP_DONE && b->step != STEP_HANDSHAKE &&
           (r = stream_read_line(s, BACKEND_LINE_MAX, &line, &len, &used)) != 0) {
        if (r < 0) {
            temp_fail(b, "too long line from the backend");
            return;
        }
        enum smtp_reply_status st = smtp_reply_feed(&b->reply, line, len);
        stream_consume(s, used);
        if (st == SMTP_REPLY_ERROR) {
            temp_fail(b, "invalid reply from the backend");
            return;
        }
        if (st == SMTP_REPLY_DONE) {
            on_reply(b);
            smtp_reply_reset(&b->reply);
        }
    }
}

const struct login_back submission_login_back = {
    .start = back_start,
    .input = back_input,
    .tls_started = back_tls_started,
    .free = back_free,
};
