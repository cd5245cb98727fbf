/* pop3-back.c - logging in to a POP3 backend for a client.
 *
 * The greeting must be "+OK". With starttls=yes|any-cert "STLS" comes
 * next ("+OK", then the handshake; there is no new greeting, so what the
 * first one said about XCLIENT stands), and the rest goes over TLS only.
 * When the greeting carries "[XCLIENT]" (Dovecot offers it to peers in its
 * login_trusted_networks) and the target is not proxy_not_trusted, the
 * client's identity goes first:
 *   XCLIENT ADDR=<ip> PORT=<port> SESSION=<id> TTL=<ttl-1> [FORWARD=<b64>]
 * and must be answered "+OK". Then "USER <destuser>" and "PASS <password>",
 * one at a time, or with a master user "AUTH PLAIN <b64>" (authzid =
 * destuser, authcid = master), or with proxy_mech "AUTH <MECH> <b64>"
 * (LOGIN without an initial response) and the responses after each "+".
 * "+OK" to the last one: logged in, and that
 * line goes to the client. "-ERR [SYS/TEMP] ..." is temporary; another
 * "-ERR" is a refusal the front passes on.
 *
 * POP3 has no quoting: a user name or password holding CR or LF would end
 * the line and start a command of the client's choosing, so such a login is
 * never sent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec.h"
#include "login-sasl.h"
#include "mem.h"
#include "pop3-login.h"
#include "pop3-parse.h"
#include "sasl.h"
#include "str.h"

#define BACKEND_LINE_MAX 8192

enum pop3_back_step {
    STEP_GREETING,   /* waiting for the greeting */
    STEP_STLS,       /* STLS sent */
    STEP_HANDSHAKE,  /* login.c runs the TLS handshake: no reading */
    STEP_XCLIENT,    /* XCLIENT sent */
    STEP_USER,       /* USER sent */
    STEP_PASS,       /* PASS sent */
    STEP_AUTH,       /* AUTH sent */
    STEP_DONE,       /* the login flow has the outcome */
};

struct pop3_back {
    struct login_session *ls;
    struct stream *s;
    enum pop3_back_step step;
    bool xclient;               /* the greeting offered [XCLIENT] */
    struct login_sasl sasl;
};

static void *back_start(struct login_session *ls, struct stream *s)
{
    struct pop3_back *b = xcalloc(1, sizeof(*b));
    b->ls = ls;
    b->s = s;
    b->step = STEP_GREETING;
    stream_set_max_input(s, BACKEND_LINE_MAX * 2);
    return b;
}

static void back_free(void *state)
{
    struct pop3_back *b = state;
    login_sasl_free(&b->sasl);
    free(b);
}

static bool is_ok(const char *line)
{
    return strncmp(line, "+OK", 3) == 0 && (line[3] == '\0' || line[3] == ' ');
}

static void temporary(struct pop3_back *b, const char *why)
{
    b->step = STEP_DONE;
    login_backend_failed(b->ls, true, why);
}

/* Dovecot's tab escaping: \001 -> \0011, TAB -> \001t, CR -> \001r, LF -> \001n. */
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

/* FORWARD=: base64 of the tab-separated "key=value" list of the passdb's
 * forward_* fields (prefix removed), each entry tab-escaped. */
static void append_forward(struct buf *out, const struct fields *forward)
{
    struct buf plain = BUF_INIT;
    for (size_t i = 0; i < forward->n; i++) {
        struct buf entry = BUF_INIT;
        buf_printf(&entry, "%s=%s", forward->v[i].key,
                   forward->v[i].value != NULL ? forward->v[i].value : "");
        if (i > 0)
            buf_append_str(&plain, "\t");
        tab_escape(&plain, buf_ptr(&entry));
        buf_free(&entry);
    }
    buf_append_str(out, " FORWARD=");
    base64_encode(out, buf_ptr(&plain), buf_used(&plain));
    buf_free(&plain);
}

static void send_xclient(struct pop3_back *b)
{
    const struct addr *client = login_client_addr(b->ls);
    const struct route_target *t = login_target(b->ls);
    char ip[ADDR_STRLEN];
    struct buf line = BUF_INIT;
    buf_printf(&line, "XCLIENT ADDR=%s PORT=%u SESSION=%s TTL=%d",
               addr_ip_str(client, ip, sizeof(ip)), client->port, login_session_id(b->ls),
               login_ttl(b->ls) - 1);
    if (t->forward.n > 0)
        append_forward(&line, &t->forward);
    buf_append_str(&line, "\r\n");
    stream_write(b->s, buf_ptr(&line), buf_used(&line));
    buf_free(&line);
    b->step = STEP_XCLIENT;
}

static const char *password(const struct pop3_back *b)
{
    const char *pass = login_password(b->ls);
    return pass != NULL ? pass : "";
}

//* "AUTH <MECH>[ <ir>]" (RFC 5034: "=" is an empty initial response). */
static void send_auth(struct pop3_back *b)
{
    struct login_sasl *sasl = &b->sasl;
    struct buf line = BUF_INIT;
    buf_printf(&line, "AUTH %s", sasl->mech);
    if (!sasl->no_ir) {
        const struct buf *ir = &sasl->resp[sasl->next++];
        buf_printf(&line, " %s", buf_used(ir) > 0 ? buf_ptr(ir) : "=");
    }
    buf_append_str(&line, "\r\n");
    stream_write(b->s, buf_ptr(&line), buf_used(&line));
    buf_free_wipe(&line);
    b->step = STEP_AUTH;
}

/* A "+" challenge during AUTH: the next response. One beyond them is, for
 * the OAuth mechanisms, the server's error report, which RFC 7628 has the
 * client acknowledge with an empty response (the -ERR follows); for the
 * others the backend does not speak the mechanism as we do. */
static void on_challenge(struct pop3_back *b)
{
    struct login_sasl *sasl = &b->sasl;
    if (sasl->next < sasl->n) {
        struct buf line = BUF_INIT;
        buf_printf(&line, "%s\r\n", buf_ptr(&sasl->resp[sasl->next++]));
        stream_write(b->s, buf_ptr(&line), buf_used(&line));
        buf_free_wipe(&line);
    } else if (sasl->token) {
        stream_write_str(b->s, "\r\n");
    } else {
        temporary(b, "unexpected SASL challenge from the backend");
    }
}

static void send_login(struct pop3_back *b)
{
    const struct route_target *t = login_target(b->ls);
    if (t->proxy_mech != NULL) {
        if (!login_sasl_prepare(b->ls, t->proxy_mech, false, &b->sasl)) {
            char why[128];
            snprintf(why, sizeof(why), "Unsupported SASL mechanism %s", t->proxy_mech);
            temporary(b, why);
            return;
        }
        send_auth(b);
        return;
    }
    if (t->master != NULL) {
        /* Master user: SASL PLAIN with the initial response (RFC 5034). */
        login_sasl_plain(b->ls, password(b), false, &b->sasl);
        send_auth(b);
        return;
    }
    stream_printf(b->s, "USER %s\r\n", login_user(b->ls));
    b->step = STEP_USER;
}

static void send_pass(struct pop3_back *b)
{
    struct buf line = BUF_INIT;
    buf_printf(&line, "PASS %s\r\n", password(b));
    stream_write(b->s, buf_ptr(&line), buf_used(&line));
    buf_free_wipe(&line);
    b->step = STEP_PASS;
}

static bool credentials_safe(const struct pop3_back *b)
{
    const char *master = login_target(b->ls)->master;
    return pop3_arg_is_safe(login_user(b->ls)) && pop3_arg_is_safe(password(b)) &&
           (master == NULL || pop3_arg_is_safe(master));
}

/* XCLIENT when the greeting offered it and the target trusts us, then the login. */
static void start_login(struct pop3_back *b)
{
    if (b->xclient && !login_target(b->ls)->not_trusted)
        send_xclient(b);
    else
        send_login(b);
}

static void on_greeting(struct pop3_back *b, const char *line)
{
    if (!is_ok(line)) {
        temporary(b, "invalid greeting from the backend");
        return;
    }
    if (!credentials_safe(b)) {
        temporary(b, "the user name or password holds CR or LF: not sent to the backend");
        return;
    }
    b->xclient = strstr(line, "[XCLIENT]") != NULL;
    if (login_target(b->ls)->tls == ROUTE_TLS_STARTTLS && !stream_is_tls(b->s)) {
        /* Dovecot's proxy sends STLS without asking CAPA: a backend
         * without it says -ERR, which fails the login as well. */
        stream_write_str(b->s, "STLS\r\n");
        b->step = STEP_STLS;
        return;
    }
    start_login(b);
}

static void on_stls_reply(struct pop3_back *b, const char *line)
{
    if (!is_ok(line)) {
        char why[300];
        snprintf(why, sizeof(why), "STARTTLS failed: %.200s", line);
        temporary(b, why);
        return;
    }
    b->step = STEP_HANDSHAKE;
    login_backend_starttls(b->ls); /* may fail (and free b) at once */
}

static void back_tls_started(struct login_session *ls, void *state)
{
    (void)ls;
    start_login(state);
}

/* The backend's answer to USER, PASS or AUTH when it is not "+OK". */
static void login_refused(struct pop3_back *b, const char *line)
{
    b->step = STEP_DONE;
    if (strncmp(line, "-ERR", 4) != 0) {
        login_backend_failed(b->ls, true, "unexpected reply to the login");
        return;
    }
    bool temp = str_case_prefix(line, "-ERR [SYS/TEMP]") != NULL;
    login_backend_failed(b->ls, temp, line);
}

static void login_done(struct pop3_back *b, const char *line)
{
    b->step = STEP_DONE;
    login_backend_accepted(b->ls, line);
}

/* One complete line from the backend. */
static void on_line(struct pop3_back *b, const char *line)
{
    switch (b->step) {
    case STEP_GREETING:
        on_greeting(b, line);
        break;
    case STEP_STLS:
        on_stls_reply(b, line);
        break;
    case STEP_XCLIENT:
        if (is_ok(line))
            send_login(b);
        else
            temporary(b, "the backend refused XCLIENT");
        break;
    case STEP_USER:
        if (is_ok(line))
            send_pass(b);
        else
            login_refused(b, line);
        break;
    case STEP_AUTH:
        if (line[0] == '+' && (line[1] == ' ' || line[1] == '\0'))
            on_challenge(b);
        else if (is_ok(line))
            login_done(b, line);
        else
            login_refused(b, line);
        break;
    case STEP_PASS:
        if (is_ok(line))
            login_done(b, line);
        else
            login_refused(b, line);
        break;
    case STEP_HANDSHAKE:
    case STEP_DONE:
        break;
    }
}

static void back_input(struct login_session *ls, void *state)
{
    struct pop3_back *b = state;
    struct stream *s = login_backend(ls);
    const char *line;
    size_t len, used;
    int r;
    while (b->step != STEP_DONE && b->step != STEP_HANDSHAKE &&
           (r = stream_read_line(s, BACKEND_LINE_MAX, &line, &len, &used)) != 0) {
        if (r < 0) {
            temporary(b, "too long line from the backend");
            return;
        }
        char *copy = xstrndup(line, len);
        stream_consume(s, used);
        on_line(b, copy);
        free(copy);
    }
}

const struct login_back pop3_login_back = {
    .start = back_start,
    .input = back_input,
    .tls_started = back_tls_started,
    .free = back_free,
};
