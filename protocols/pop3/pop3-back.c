/* pop3-back.c - logging in to a POP3 backend for a client.
 *
 * The greeting must be "+OK". When it carries "[XCLIENT]" (Dovecot offers
 * it to peers in its login_trusted_networks) and the target is not
 * proxy_not_trusted, the client's identity goes first:
 *   XCLIENT ADDR=<ip> PORT=<port> SESSION=<id> TTL=<ttl-1> [FORWARD=<b64>]
 * and must be answered "+OK". Then "USER <destuser>" and "PASS <password>",
 * one at a time, or with a master user "AUTH PLAIN <b64>" (authzid =
 * destuser, authcid = master). "+OK" to the last one: logged in, and that
 * line goes to the client. "-ERR [SYS/TEMP] ..." is temporary; another
 * "-ERR" is a refusal the front passes on.
 *
 * POP3 has no quoting: a user name or password holding CR or LF would end
 * the line and start a command of the client's choosing, so such a login is
 * never sent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "mem.h"
#include "pop3-login.h"
#include "pop3-parse.h"
#include "sasl.h"
#include "str.h"

#define BACKEND_LINE_MAX 8192

enum pop3_back_step {
    STEP_GREETING,   /* waiting for the greeting */
    STEP_XCLIENT,    /* XCLIENT sent */
    STEP_USER,       /* USER sent */
    STEP_PASS,       /* PASS sent */
    STEP_AUTH,       /* AUTH PLAIN sent */
    STEP_DONE,       /* the login flow has the outcome */
};

struct pop3_back {
    struct login_session *ls;
    struct stream *s;
    enum pop3_back_step step;
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
    free(state);
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

/* Master user: SASL PLAIN with the initial response (RFC 5034). */
static void send_auth_plain(struct pop3_back *b, const char *master)
{
    struct buf line = BUF_INIT;
    buf_append_str(&line, "AUTH PLAIN ");
    sasl_plain_encode(&line, login_user(b->ls), master, password(b));
    buf_append_str(&line, "\r\n");
    stream_write(b->s, buf_ptr(&line), buf_used(&line));
    buf_free_wipe(&line);
    b->step = STEP_AUTH;
}

static void send_login(struct pop3_back *b)
{
    const char *master = login_target(b->ls)->master;
    if (master != NULL) {
        send_auth_plain(b, master);
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
    if (strstr(line, "[XCLIENT]") != NULL && !login_target(b->ls)->not_trusted)
        send_xclient(b);
    else
        send_login(b);
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

/* One complete line from the backend. */
static void on_line(struct pop3_back *b, const char *line)
{
    switch (b->step) {
    case STEP_GREETING:
        on_greeting(b, line);
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
    case STEP_PASS:
    case STEP_AUTH:
        if (is_ok(line)) {
            b->step = STEP_DONE;
            login_backend_accepted(b->ls, line);
        } else {
            login_refused(b, line);
        }
        break;
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
    while (b->step != STEP_DONE &&
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
    .free = back_free,
};
