/* pop3-front.c - POP3 before login: CAPA, USER/PASS, AUTH (PLAIN, LOGIN),
 * NOOP, QUIT, STLS, XCLIENT from trusted peers; and the replies to login
 * results, worded as Dovecot's pop3-login words them
 * (reference/dovecot-behaviour.md 3.2, 3.5) so that clients and scripts
 * that know Dovecot's proxy see what they expect.
 *
 * Lines are parsed by pop3-parse; the mail commands (STAT, RETR, ...) are
 * not handled here: they reach the backend through the relay. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "pop3-login.h"
#include "pop3-parse.h"
#include "sasl.h"
#include "str.h"

/* Longer than RFC 2449's 255: AUTH PLAIN with an initial response carries
 * the password, and passwords can be long. */
#define POP3_FRONT_LINE_MAX 4096
#define POP3_MAX_BAD_COMMANDS 10

#define REPLY_AUTH_FAILED "-ERR [AUTH] Authentication failed."
#define REPLY_TEMP_FAILED "-ERR [SYS/TEMP] Account is temporarily unavailable."
#define REPLY_PLAINTEXT_DISALLOWED \
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."

struct pop3_front {
    struct login_session *ls;
    struct pop3_cmd cmd;
    char *user;                 /* from USER, until PASS */
    struct sasl_server *sasl;   /* AUTH in progress */
    enum sasl_mech mech;        /* of that AUTH */
    bool waiting;               /* credentials given, the result is pending */
    unsigned bad;
};

static void reply(struct pop3_front *f, const char *line)
{
    stream_printf(login_client(f->ls), "%s\r\n", line);
}

static void *front_start(struct login_session *ls)
{
    struct pop3_front *f = xcalloc(1, sizeof(*f));
    f->ls = ls;
    pop3_cmd_init(&f->cmd);
    /* As Dovecot does: a trusted peer (a proxy in front of us) learns that
     * it may send XCLIENT. */
    stream_printf(login_client(ls), "+OK %s%s\r\n",
                  login_client_trusted(ls) ? "[XCLIENT] " : "",
                  login_settings(ls)->login_greeting);
    return f;
}

static void forget_user(struct pop3_front *f)
{
    if (f->user != NULL)
        mem_wipe(f->user, strlen(f->user));
    free(f->user);
    f->user = NULL;
}

static void front_free(void *state)
{
    struct pop3_front *f = state;
    pop3_cmd_free(&f->cmd);
    sasl_server_free(&f->sasl);
    forget_user(f);
    free(f);
}

/* Plaintext credentials are refused before TLS unless the client is on a
 * trusted network or loopback; false after replying so. */
static bool plaintext_ok(struct pop3_front *f)
{
    if (login_plaintext_allowed(f->ls))
        return true;
    reply(f, REPLY_PLAINTEXT_DISALLOWED);
    return false;
}

static void start_login(struct pop3_front *f, const char *user, const char *password,
                        const char *mech)
{
    struct login_credentials cred = {.user = user, .password = password, .mech = mech};
    f->waiting = true;
    login_authenticate(f->ls, &cred);
}

static void cmd_capa(struct pop3_front *f)
{
    struct buf out = BUF_INIT;
    buf_append_str(&out, "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\n"
                         "AUTH-RESP-CODE\r\n");
    if (login_tls_available(f->ls))
        buf_append_str(&out, "STLS\r\n");
    if (login_plaintext_allowed(f->ls)) {
        buf_append_str(&out, "USER\r\nSASL");
        login_append_mechs(f->ls, &out, " ", "");
        buf_append_str(&out, "\r\n");
    }
    buf_append_str(&out, ".\r\n");
    stream_write(login_client(f->ls), buf_ptr(&out), buf_used(&out));
    buf_free(&out);
}

static void cmd_user(struct pop3_front *f, const struct pop3_cmd *c)
{
    if (!plaintext_ok(f))
        return;
    forget_user(f);
    f->user = xstrdup(c->arg);
    reply(f, "+OK");
}

static void cmd_pass(struct pop3_front *f, const struct pop3_cmd *c)
{
    if (f->user == NULL) {
        reply(f, "-ERR No username given.");
        return;
    }
    if (!plaintext_ok(f))
        return;
    /* RFC 1939: after a failed PASS the client starts again with USER. */
    char *user = f->user;
    f->user = NULL;
    start_login(f, user, c->arg, "PLAIN");
    mem_wipe(user, strlen(user));
    free(user);
}

/* One SASL step: the initial response or a continuation line. */
static void sasl_step(struct pop3_front *f, const char *b64, size_t len)
{
    struct buf challenge = BUF_INIT;
    const char *err = NULL;
    int st = sasl_server_step(f->sasl, b64, len, &challenge, &err);
    if (st == SASL_CONTINUE) {
        stream_printf(login_client(f->ls), "+ %s\r\n", buf_ptr(&challenge));
        buf_free_wipe(&challenge);
        return;
    }
    buf_free_wipe(&challenge);
    if (st == SASL_DONE) {
        f->waiting = true;
        login_authenticate_sasl(f->ls, f->mech, sasl_server_result(f->sasl));
    } else {
        reply(f, st == SASL_CANCELLED ? "-ERR Authentication aborted by client."
                                      : REPLY_AUTH_FAILED);
    }
    sasl_server_free(&f->sasl);
}

static void list_mechanisms(struct pop3_front *f)
{
    struct buf out = BUF_INIT;
    buf_append_str(&out, "+OK\r\n");
    if (login_plaintext_allowed(f->ls))
        login_append_mechs(f->ls, &out, "", "\r\n");
    buf_append_str(&out, ".\r\n");
    stream_write(login_client(f->ls), buf_ptr(&out), buf_used(&out));
    buf_free(&out);
}

static void cmd_auth(struct pop3_front *f, const struct pop3_cmd *c)
{
    enum sasl_mech mech;
    if (c->arg == NULL) {
        list_mechanisms(f);
        return;
    }
    if (!sasl_mech_from_name(c->arg, &mech) || !login_mech_enabled(f->ls, mech)) {
        reply(f, "-ERR Unsupported authentication mechanism.");
        return;
    }
    if (!plaintext_ok(f))
        return;
    f->mech = mech;
    f->sasl = sasl_server_new(mech);
    const char *ir = c->auth_response;
    sasl_step(f, ir, ir != NULL ? strlen(ir) : 0);
}

/* ADDR and PORT of XCLIENT applied to *client; false when one is invalid. */
static bool xclient_address(const struct pop3_cmd *c, struct addr *client)
{
    const char *ip = pop3_cmd_param(c, "ADDR");
    const char *port = pop3_cmd_param(c, "PORT");
    unsigned long long n;
    if (ip != NULL) {
        struct addr a;
        if (!addr_parse_ip(ip, &a))
            return false;
        a.port = client->port;
        *client = a;
    }
    if (port != NULL) {
        if (!str_to_uint(port, 65535, &n))
            return false;
        client->port = (uint16_t)n;
    }
    return true;
}

/* A proxy in front of us tells who the real client is. Other attributes
 * (FORWARD, ...) are accepted and ignored. Nothing is changed unless every
 * attribute we use is valid. */
static void cmd_xclient(struct pop3_front *f, const struct pop3_cmd *c)
{
    if (!login_client_trusted(f->ls)) {
        reply(f, "-ERR You are not from trusted IP");
        return;
    }
    struct addr client = *login_client_addr(f->ls);
    const char *ttl_text = pop3_cmd_param(c, "TTL");
    const char *session = pop3_cmd_param(c, "SESSION");
    unsigned long long ttl = 0;
    if (!xclient_address(c, &client) ||
        (ttl_text != NULL && !str_to_uint(ttl_text, INT_MAX, &ttl)) ||
        (session != NULL && !login_set_session_id(f->ls, session))) {
        reply(f, "-ERR Invalid parameters");
        return;
    }
    login_set_forwarded(f->ls, &client, ttl_text != NULL ? (int)ttl : -1);
    reply(f, "+OK Updated");
}

/* Returns false when the session ended. */
static bool bad_command(struct pop3_front *f, const char *text)
{
    reply(f, text);
    if (++f->bad < POP3_MAX_BAD_COMMANDS)
        return true;
    reply(f, "-ERR Too many invalid commands.");
    login_session_close(f->ls);
    return false;
}

/* Returns false when the session ended. */
static bool command(struct pop3_front *f, const struct pop3_cmd *c)
{
    switch (c->verb) {
    case POP3_CMD_USER:
        cmd_user(f, c);
        break;
    case POP3_CMD_PASS:
        cmd_pass(f, c);
        break;
    case POP3_CMD_AUTH:
        cmd_auth(f, c);
        break;
    case POP3_CMD_CAPA:
        cmd_capa(f);
        break;
    case POP3_CMD_NOOP:
        reply(f, "+OK");
        break;
    case POP3_CMD_STLS:
        if (!login_tls_available(f->ls)) {
            reply(f, "-ERR TLS support isn't enabled.");
            break;
        }
        reply(f, "+OK Begin TLS negotiation now.");
        f->waiting = true; /* nothing after STLS is read in plaintext */
        login_starttls(f->ls);
        break;
    case POP3_CMD_XCLIENT:
        cmd_xclient(f, c);
        break;
    case POP3_CMD_QUIT:
        reply(f, "+OK Logging out");
        login_session_close(f->ls);
        return false;
    case POP3_CMD_UNKNOWN:
        return bad_command(f, "-ERR Unknown command");
    }
    return true;
}

/* A SASL continuation line from the client; false when none is complete
 * yet or the session ended. */
static bool sasl_line(struct pop3_front *f)
{
    struct stream *s = login_client(f->ls);
    const char *line;
    size_t len, used;
    int r = stream_read_line(s, SASL_DEFAULT_MAX_LEN, &line, &len, &used);
    if (r == 0)
        return false;
    if (r < 0) {
        reply(f, "-ERR Authentication line too long.");
        login_session_close(f->ls);
        return false;
    }
    char *copy = xstrndup(line, len);
    stream_consume(s, used);
    sasl_step(f, copy, len);
    mem_wipe(copy, len);
    free(copy);
    return true;
}

/* One command line; false when none is complete yet or the session ended. */
static bool command_line(struct pop3_front *f)
{
    struct stream *s = login_client(f->ls);
    const char *line, *err;
    size_t len, used;
    int r = stream_read_line(s, POP3_FRONT_LINE_MAX, &line, &len, &used);
    if (r == 0)
        return false;
    if (r < 0) {
        /* The rest of the line could be anything (a password, a command
         * the client thinks it pipelined): stop here. */
        reply(f, POP3_REPLY_LINE_TOO_LONG);
        login_session_close(f->ls);
        return false;
    }
    int parsed = pop3_cmd_parse(line, len, POP3_FRONT_LINE_MAX, &f->cmd, &err);
    stream_consume(s, used);
    if (parsed < 0)
        return bad_command(f, err);
    return command(f, &f->cmd);
}

static void front_input(struct login_session *ls, void *state)
{
    struct pop3_front *f = state;
    (void)ls;
    /* After USER/PASS or AUTH the session waits for the result; the bytes
     * after it stay buffered (for the backend, or the next try). */
    while (!f->waiting) {
        bool more = f->sasl != NULL ? sasl_line(f) : command_line(f);
        if (!more)
            return;
    }
}

/* Results */

/* prefix + text, cut at a line break (passdb fields are not trusted to
 * hold one line). */
static void reply_text(struct pop3_front *f, const char *prefix, const char *text)
{
    stream_printf(login_client(f->ls), "%s%.*s\r\n", prefix, (int)strcspn(text, "\r\n"), text);
}

static void front_failed(struct login_session *ls, void *state, enum login_failure fl,
                         const char *text)
{
    struct pop3_front *f = state;
    (void)ls;
    f->waiting = false;
    switch (fl) {
    case LOGIN_FAIL_AUTH:
        reply_text(f, "-ERR [AUTH] ", text != NULL ? text : "Authentication failed.");
        break;
    case LOGIN_FAIL_NOLOGIN:
        reply_text(f, "-ERR [AUTH] ", text != NULL ? text : "Login disabled for this user");
        break;
    case LOGIN_FAIL_TEMP:
        reply(f, REPLY_TEMP_FAILED);
        break;
    case LOGIN_FAIL_LIMIT:
        reply_text(f, "-ERR [SYS/TEMP] ", text);
        break;
    case LOGIN_FAIL_LOOP:
        /* Without [SYS/TEMP], as Dovecot answers a loop. */
        reply(f, "-ERR Account is temporarily unavailable.");
        break;
    case LOGIN_FAIL_BACKEND:
        /* The backend's own -ERR line passes (it may carry [IN-USE] or
         * [SYS/PERM]); anything else is hidden. */
        if (text != NULL && strncmp(text, "-ERR ", 5) == 0)
            reply_text(f, "", text);
        else
            reply(f, REPLY_AUTH_FAILED);
        break;
    }
}

void pop3_referral_target(struct buf *out, const char *user, const struct route_target *t)
{
    struct addr ip;
    buf_printf(out, "%s@", user);
    if (t->host != NULL && strchr(t->host, ':') != NULL && t->host[0] != '[' &&
        addr_parse_ip(t->host, &ip))
        buf_printf(out, "[%s]", t->host);
    else
        buf_append_str(out, t->host != NULL ? t->host : "");
    if (t->ip.port != 0 && t->ip.port != 110)
        buf_printf(out, ":%u", t->ip.port);
}

/* "<status> [REFERRAL/user@host[:port]] <reason>": refused (-ERR) or, when a
 * local backend took the login anyway, logged in (+OK). */
static void referral_reply(struct pop3_front *f, const char *status,
                           const struct route_decision *d, const char *default_reason)
{
    struct buf line = BUF_INIT;
    buf_printf(&line, "%s [REFERRAL/", status);
    pop3_referral_target(&line, login_referral_user(f->ls, d), &d->target);
    buf_append_str(&line, "] ");
    reply_text(f, buf_ptr(&line), d->reason != NULL ? d->reason : default_reason);
    buf_free(&line);
}

static void front_referral(struct login_session *ls, void *state, const struct route_decision *d)
{
    struct pop3_front *f = state;
    (void)ls;
    f->waiting = false;
    referral_reply(f, "-ERR", d, "Try this server instead.");
}

/* The backend's "+OK ..." line goes to the client as it is; a login that a
 * referral let go on locally says where the user should go instead. */
static void front_logged_in(struct login_session *ls, void *state, const char *backend_reply)
{
    struct pop3_front *f = state;
    const struct route_decision *d = login_decision(ls);
    if (d != NULL && d->kind == ROUTE_REFERRAL)
        referral_reply(f, "+OK", d, "Logged in, but you should use this server instead.");
    else
        reply_text(f, "", backend_reply);
}

/* After STLS: a USER given in plaintext is forgotten (RFC 2595). */
static void front_tls_started(struct login_session *ls, void *state)
{
    struct pop3_front *f = state;
    (void)ls;
    f->waiting = false;
    forget_user(f);
}

const struct login_front pop3_login_front = {
    .service = "pop3",
    .proto = ROUTE_PROTO_POP3,
    .start = front_start,
    .input = front_input,
    .failed = front_failed,
    .referral = front_referral,
    .logged_in = front_logged_in,
    .tls_started = front_tls_started,
    .free = front_free,
};
