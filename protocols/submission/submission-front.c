/* submission-front.c - Submission (RFC 6409) before login: EHLO/HELO, AUTH
 * PLAIN and LOGIN (with an initial response), STARTTLS, NOOP, RSET, QUIT,
 * XCLIENT from trusted peers; and the replies to login results, worded as
 * Dovecot's submission-login words them (reference/dovecot-behaviour.md
 * 3.2, 3.5; referrals in the 2.4 form of DESIGN.md 6).
 *
 * Not the mail transaction: MAIL and the rest are refused until AUTH, and
 * after AUTH the relay hands every byte to the backend. The client's EHLO
 * is answered here; the backend is greeted with our own name and learns
 * the client's through XCLIENT HELO= (submission-back.c). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "log.h"
#include "mem.h"
#include "sasl.h"
#include "smtp-cmd.h"
#include "str.h"
#include "submission-login.h"

#define SUBMISSION_MAX_BAD_COMMANDS 10
/* Room for AUTH with an initial response (RFC 4954 allows 12288 octets). */
#define SUBMISSION_LINE_MAX 16384
#define HELO_MAX 255
#define PROTO_MAX 16

struct submission_front {
    struct login_session *ls;
    char *helo;                 /* the client's EHLO/HELO argument, NULL before */
    bool esmtp;                 /* EHLO rather than HELO */
    char *xclient_helo;         /* from a trusted previous hop */
    char *xclient_proto;
    char *mech;                 /* of the AUTH being answered */
    struct sasl_server *sasl;   /* AUTH in progress */
    enum sasl_mech sasl_mech;
    bool waiting;               /* credentials given, the result is pending */
    unsigned bad;
};

static const char *hostname(const struct submission_front *f)
{
    return login_settings(f->ls)->hostname;
}

static void reply(struct submission_front *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void reply(struct submission_front *f, const char *fmt, ...)
{
    struct buf line = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&line, fmt, ap);
    va_end(ap);
    buf_append_str(&line, "\r\n");
    stream_write(login_client(f->ls), buf_ptr(&line), buf_used(&line));
    buf_free(&line);
}

static void greet(struct submission_front *f)
{
    reply(f, "220 %s ESMTP %s", hostname(f), login_settings(f->ls)->login_greeting);
}

static void *front_start(struct login_session *ls)
{
    struct submission_front *f = xcalloc(1, sizeof(*f));
    f->ls = ls;
    greet(f);
    return f;
}

static void front_free(void *state)
{
    struct submission_front *f = state;
    sasl_server_free(&f->sasl);
    free(f->helo);
    free(f->xclient_helo);
    free(f->xclient_proto);
    free(f->mech);
    free(f);
}

void submission_client_hello(struct login_session *ls, struct submission_hello *out)
{
    const struct submission_front *f = login_front_state(ls);
    out->helo = f->xclient_helo != NULL ? f->xclient_helo : f->helo;
    out->proto = f->xclient_proto;
    if (out->proto == NULL && f->helo != NULL)
        out->proto = f->esmtp ? "ESMTP" : "SMTP";
}

/* Returns false when the session ended. */
static bool bad_command(struct submission_front *f, const char *text)
{
    reply(f, "%s", text);
    if (++f->bad < SUBMISSION_MAX_BAD_COMMANDS)
        return true;
    reply(f, "421 4.7.0 %s Too many invalid commands", hostname(f));
    login_session_close(f->ls);
    return false;
}

/* EHLO and HELO */

static void cmd_hello(struct submission_front *f, const struct smtp_cmd *c, bool esmtp)
{
    free(f->helo);
    f->helo = xstrndup(c->arg, HELO_MAX);
    f->esmtp = esmtp;
    if (!esmtp) {
        reply(f, "250 %s", hostname(f));
        return;
    }
    struct buf out = BUF_INIT;
    buf_printf(&out, "250-%s\r\n250-8BITMIME\r\n", hostname(f));
    if (login_tls_available(f->ls))
        buf_append_str(&out, "250-STARTTLS\r\n");
    if (login_plaintext_allowed(f->ls)) {
        buf_append_str(&out, "250-AUTH");
        login_append_mechs(f->ls, &out, " ", "");
        buf_append_str(&out, "\r\n");
    }
    buf_append_str(&out, "250-ENHANCEDSTATUSCODES\r\n");
    if (login_client_trusted(f->ls))
        buf_append_str(&out, "250-PIPELINING\r\n250 XCLIENT ADDR PORT PROTO HELO SESSION TTL\r\n");
    else
        buf_append_str(&out, "250 PIPELINING\r\n");
    stream_write(login_client(f->ls), buf_ptr(&out), buf_used(&out));
    buf_free(&out);
}

/* AUTH */

/* One SASL step: the initial response or a continuation line. */
static void sasl_step(struct submission_front *f, const char *b64, size_t len)
{
    struct buf challenge = BUF_INIT;
    const char *err = NULL;
    int st = sasl_server_step(f->sasl, b64, len, &challenge, &err);
    if (st == SASL_CONTINUE) {
        reply(f, "334 %s", buf_used(&challenge) > 0 ? buf_ptr(&challenge) : "");
    } else if (st == SASL_DONE) {
        f->waiting = true;
        login_authenticate_sasl(f->ls, f->sasl_mech, sasl_server_result(f->sasl));
    } else if (st == SASL_CANCELLED) {
        reply(f, "501 5.5.2 Authentication aborted by client");
    } else if (err != NULL && strcmp(err, "Invalid base64 data") == 0) {
        reply(f, "501 5.5.2 Invalid base64 data");
    } else {
        reply(f, "535 5.7.8 Authentication failed.");
    }
    if (st != SASL_CONTINUE)
        sasl_server_free(&f->sasl);
    buf_free_wipe(&challenge);
}

static void cmd_auth(struct submission_front *f, const struct smtp_cmd *c)
{
    enum sasl_mech mech;
    if (f->helo == NULL) {
        reply(f, "503 5.5.1 Send EHLO first");
        return;
    }
    if (!sasl_mech_from_name(c->arg, &mech) || !login_mech_enabled(f->ls, mech)) {
        reply(f, "504 5.5.4 Unsupported authentication mechanism");
        return;
    }
    if (!login_plaintext_allowed(f->ls)) {
        reply(f, "523 5.7.10 Plaintext authentication disallowed on non-secure (SSL/TLS) "
                 "connections.");
        return;
    }
    free(f->mech);
    f->mech = xstrdup(sasl_mech_name(mech));
    f->sasl_mech = mech;
    f->sasl = sasl_server_new(mech);
    const char *ir = c->n_params > 0 ? c->params[0].value : NULL;
    sasl_step(f, ir, ir != NULL ? strlen(ir) : 0);
}

/* XCLIENT */

/* What one XCLIENT command says; applied only when every attribute is valid. */
struct xclient_values {
    struct addr addr;
    bool addr_set;
    long port;                  /* -1: not given */
    int ttl;                    /* -1: not given */
    char *helo, *proto, *session;
};

static bool is_word(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] <= ' ' || s[i] > '~')
            return false;
    }
    return true;
}

static bool set_word(char **dst, const char *val, size_t max)
{
    if (!is_word(val, max))
        return false;
    free(*dst);
    *dst = xstrdup(val);
    return true;
}

/* One decoded attribute; false when its value is invalid. Unknown
 * attributes (LOGIN, TIMEOUT, FORWARD, NAME, ...) are accepted and ignored. */
static bool xclient_attr(struct xclient_values *v, const char *key, const char *val)
{
    unsigned long long n;
    if (strcmp(val, "[UNAVAILABLE]") == 0 || strcmp(val, "[TEMPUNAVAIL]") == 0)
        return true;
    if (strcmp(key, "ADDR") == 0) {
        const char *ip = str_case_prefix(val, "IPV6:");
        v->addr_set = addr_parse_ip(ip != NULL ? ip : val, &v->addr);
        return v->addr_set;
    }
    if (strcmp(key, "PORT") == 0) {
        if (!str_to_uint(val, 65535, &n))
            return false;
        v->port = (long)n;
    } else if (strcmp(key, "TTL") == 0) {
        if (!str_to_uint(val, 255, &n))
            return false;
        v->ttl = (int)n;
    } else if (strcmp(key, "HELO") == 0) {
        return set_word(&v->helo, val, HELO_MAX);
    } else if (strcmp(key, "PROTO") == 0) {
        return set_word(&v->proto, val, PROTO_MAX);
    } else if (strcmp(key, "SESSION") == 0) {
        return set_word(&v->session, val, LOGIN_SESSION_ID_MAX);
    }
    return true;
}

static void replace(char **dst, char **src)
{
    if (*src == NULL)
        return;
    free(*dst);
    *dst = *src;
    *src = NULL;
}

static void xclient_apply(struct submission_front *f, struct xclient_values *v)
{
    struct addr client = *login_client_addr(f->ls);
    if (v->addr_set) {
        client = v->addr;
        client.port = 0; /* the proxy's port means nothing for the new address */
    }
    if (v->port >= 0)
        client.port = (uint16_t)v->port;
    bool changed = v->addr_set || v->port >= 0;
    login_set_forwarded(f->ls, changed ? &client : NULL, v->ttl);
    if (v->session != NULL)
        login_set_session_id(f->ls, v->session);
    replace(&f->xclient_helo, &v->helo);
    replace(&f->xclient_proto, &v->proto);
}

/* Returns the invalid attribute's name, or NULL when all are valid. */
static const char *xclient_parse(const struct smtp_cmd *c, struct xclient_values *v)
{
    for (size_t i = 0; i < c->n_params; i++) {
        struct buf dec = BUF_INIT;
        const char *key = c->params[i].key, *val = c->params[i].value;
        bool ok = val != NULL && xtext_decode(&dec, val, strlen(val));
        ok = ok && xclient_attr(v, key, buf_used(&dec) > 0 ? buf_ptr(&dec) : "");
        buf_free(&dec);
        if (!ok)
            return key;
    }
    return NULL;
}

static void cmd_xclient(struct submission_front *f, const struct smtp_cmd *c)
{
    if (!login_client_trusted(f->ls)) {
        reply(f, "550 5.7.14 You are not from trusted IP");
        return;
    }
    struct xclient_values v = {.port = -1, .ttl = -1};
    const char *bad = xclient_parse(c, &v);
    if (bad != NULL) {
        reply(f, "501 5.5.4 Invalid %s parameter", bad);
    } else {
        xclient_apply(f, &v);
        /* As after a new connection: the client greets again. */
        free(f->helo);
        f->helo = NULL;
        greet(f);
    }
    free(v.helo);
    free(v.proto);
    free(v.session);
}

/* Commands */

/* Returns false when the session ended. */
static bool command(struct submission_front *f, const struct smtp_cmd *c)
{
    switch (c->verb) {
    case SMTP_CMD_EHLO:
        cmd_hello(f, c, true);
        break;
    case SMTP_CMD_HELO:
        cmd_hello(f, c, false);
        break;
    case SMTP_CMD_AUTH:
        cmd_auth(f, c);
        break;
    case SMTP_CMD_XCLIENT:
        cmd_xclient(f, c);
        break;
    case SMTP_CMD_STARTTLS:
        if (!login_tls_available(f->ls)) {
            reply(f, "454 4.7.0 TLS not available");
            break;
        }
        reply(f, "220 2.0.0 Ready to start TLS");
        f->waiting = true; /* nothing after STARTTLS is read in plaintext */
        login_starttls(f->ls);
        break;
    case SMTP_CMD_NOOP:
    case SMTP_CMD_RSET:
        reply(f, "250 2.0.0 OK");
        break;
    case SMTP_CMD_HELP:
        reply(f, "214 2.0.0 Commands: EHLO HELO AUTH STARTTLS NOOP RSET QUIT");
        break;
    case SMTP_CMD_QUIT:
        reply(f, "221 2.0.0 Bye");
        login_session_close(f->ls);
        return false;
    case SMTP_CMD_MAIL:
    case SMTP_CMD_RCPT:
    case SMTP_CMD_DATA:
    case SMTP_CMD_BDAT:
    case SMTP_CMD_VRFY:
    case SMTP_CMD_EXPN:
        reply(f, "530 5.7.0 Authentication required");
        break;
    default: /* LHLO, XFORWARD */
        return bad_command(f, "500 5.5.2 Unknown command");
    }
    return true;
}

static bool command_line(struct submission_front *f, const char *line, size_t len)
{
    /* About 4 KiB: on the heap, the loop's stack is not ours to spend. */
    struct smtp_cmd *c = xmalloc(sizeof(*c));
    const char *err = NULL;
    bool alive = smtp_cmd_parse(line, len, c, &err) < 0 ? bad_command(f, err) : command(f, c);
    mem_wipe(c, sizeof(*c)); /* AUTH initial responses carry passwords */
    free(c);
    return alive;
}

static void front_input(struct login_session *ls, void *state)
{
    struct submission_front *f = state;
    struct stream *s = login_client(ls);
    /* After AUTH the session waits for the result; the bytes after it stay
     * buffered (for the backend through the relay, or the next try). */
    while (!f->waiting) {
        const char *line;
        size_t len, used;
        size_t max = f->sasl != NULL ? SASL_DEFAULT_MAX_LEN : SUBMISSION_LINE_MAX;
        int r = stream_read_line(s, max, &line, &len, &used);
        if (r == 0)
            return;
        if (r < 0) {
            reply(f, "500 5.5.6 Line too long");
            login_session_close(ls);
            return;
        }
        char *copy = xstrndup(line, len);
        stream_consume(s, used);
        bool alive = true;
        if (f->sasl != NULL)
            sasl_step(f, copy, len);
        else
            alive = command_line(f, copy, len);
        mem_wipe(copy, len);
        free(copy);
        if (!alive)
            return;
    }
}

/* Results */

/* A passdb reason or backend text, up to its first line end. */
static int line_len(const char *text)
{
    return (int)strcspn(text, "\r\n");
}

/* "5dd text": a permanent backend refusal we may pass on as it is. */
static bool is_permanent_reply(const char *text)
{
    return text != NULL && text[0] == '5' && text[1] >= '0' && text[1] <= '9' &&
           text[2] >= '0' && text[2] <= '9' && (text[3] == ' ' || text[3] == '\0') &&
           text[line_len(text)] == '\0';
}

static void front_failed(struct login_session *ls, void *state, enum login_failure fl,
                         const char *text)
{
    struct submission_front *f = state;
    (void)ls;
    f->waiting = false;
    switch (fl) {
    case LOGIN_FAIL_AUTH:
        if (text != NULL)
            reply(f, "535 5.7.8 %.*s", line_len(text), text);
        else
            reply(f, "535 5.7.8 Authentication failed.");
        break;
    case LOGIN_FAIL_NOLOGIN:
        if (text != NULL)
            reply(f, "525 5.7.13 %.*s", line_len(text), text);
        else
            reply(f, "525 5.7.13 Login disabled for this user");
        break;
    case LOGIN_FAIL_LIMIT:
        reply(f, "454 4.7.0 %s", text);
        break;
    case LOGIN_FAIL_TEMP:
    case LOGIN_FAIL_LOOP:
        reply(f, "454 4.7.0 Account is temporarily unavailable.");
        break;
    case LOGIN_FAIL_BACKEND:
        /* Dovecot passes the backend's 5xx on unchanged. */
        if (is_permanent_reply(text))
            reply(f, "%s", text);
        else
            reply(f, "535 5.7.8 Authentication failed.");
        break;
    }
}

void submission_referral_target(struct buf *out, const char *user, const struct route_target *t)
{
    const char *host = t->host != NULL ? t->host : "";
    struct addr ip;
    buf_printf(out, "%s@", user);
    if (strchr(host, ':') != NULL && addr_parse_ip(host, &ip) && host[0] != '[')
        buf_printf(out, "[%s]", host);
    else
        buf_append_str(out, host);
    if (t->ip.port != 0 && t->ip.port != 587)
        buf_printf(out, ":%u", t->ip.port);
}

/* "<code> <user>@<host>[:<port>] <reason>": refused (550 5.2.900) or, when a
 * local backend took the login anyway, logged in (235 2.7.0). */
static void referral_reply(struct submission_front *f, const char *code,
                           const struct route_decision *d, const char *default_reason)
{
    struct buf target = BUF_INIT;
    submission_referral_target(&target, login_referral_user(f->ls, d), &d->target);
    const char *reason = d->reason != NULL ? d->reason : default_reason;
    reply(f, "%s %s %.*s", code, buf_ptr(&target), line_len(reason), reason);
    buf_free(&target);
}

static void front_referral(struct login_session *ls, void *state, const struct route_decision *d)
{
    struct submission_front *f = state;
    (void)ls;
    f->waiting = false;
    referral_reply(f, "550 5.2.900", d, "Try this server instead.");
}

/* The backend's own "235 2.7.0 ..." line; a login that a referral let go
 * on locally names, like the refusal, where to go instead. */
static void front_logged_in(struct login_session *ls, void *state, const char *backend_reply)
{
    struct submission_front *f = state;
    const struct route_decision *d = login_decision(ls);
    if (d != NULL && d->kind == ROUTE_REFERRAL)
        referral_reply(f, "235 2.7.0", d, "Logged in, but you should use this server instead.");
    else
        reply(f, "%s", backend_reply);
}

/* After STARTTLS the client starts over with EHLO (RFC 3207). */
static void front_tls_started(struct login_session *ls, void *state)
{
    struct submission_front *f = state;
    (void)ls;
    f->waiting = false;
    free(f->helo);
    f->helo = NULL;
    f->esmtp = false;
}

const struct login_front submission_login_front = {
    .service = "submission",
    .proto = ROUTE_PROTO_SUBMISSION,
    .start = front_start,
    .input = front_input,
    .failed = front_failed,
    .referral = front_referral,
    .logged_in = front_logged_in,
    .tls_started = front_tls_started,
    .free = front_free,
};
