/* imap-front.c - IMAP before login: CAPABILITY, NOOP, LOGOUT, ID, STARTTLS,
 * LOGIN, AUTHENTICATE; and the replies to login results, worded as in
 * Dovecot (reference/dovecot-behaviour.md 3.2-3.3) so clients and scripts
 * that know Dovecot's proxy see what they expect. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap-login.h"
#include "imap-parse.h"
#include "log.h"
#include "mem.h"
#include "sasl.h"
#include "str.h"

#define IMAP_MAX_BAD_COMMANDS 10
#define IMAP_ID_MAX_PAIRS 30 /* RFC 2971 */

struct imap_front {
    struct login_session *ls;
    struct imap_parser *parser;
    char *tag;                  /* of the LOGIN/AUTHENTICATE being answered */
    char *mech;
    struct sasl_server *sasl;   /* AUTHENTICATE in progress */
    enum sasl_mech sasl_mech;
    bool client_id_kept;        /* the client's own ID pairs (imap_id_retain) */
    bool capability_asked;
    bool waiting;               /* credentials given, the result is pending */
    bool id_taken;              /* forwarded client data are taken from the first ID only */
    unsigned bad;
};

static void capabilities(struct imap_front *f, struct buf *out)
{
    buf_append_str(out, "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+");
    if (login_tls_available(f->ls))
        buf_append_str(out, " STARTTLS");
    if (!login_plaintext_allowed(f->ls)) {
        buf_append_str(out, " LOGINDISABLED");
        return;
    }
    login_append_mechs(f->ls, out, " AUTH=", "");
}

static void *front_start(struct login_session *ls)
{
    struct imap_front *f = xcalloc(1, sizeof(*f));
    struct buf caps = BUF_INIT;
    f->ls = ls;
    f->parser = imap_parser_create(NULL);
    capabilities(f, &caps);
    stream_printf(login_client(ls), "* OK [CAPABILITY %s] %s\r\n", buf_ptr(&caps),
                  login_settings(ls)->login_greeting);
    buf_free(&caps);
    return f;
}

static void front_free(void *state)
{
    struct imap_front *f = state;
    imap_parser_destroy(&f->parser);
    sasl_server_free(&f->sasl);
    free(f->tag);
    free(f->mech);
    free(f);
}

static void reply(struct imap_front *f, const char *tag, const char *text)
{
    stream_printf(login_client(f->ls), "%s %s\r\n", tag, text);
}

static void set_tag(struct imap_front *f, const char *tag, const char *mech)
{
    free(f->tag);
    free(f->mech);
    f->tag = xstrdup(tag);
    f->mech = xstrdup(mech);
}

static void start_login(struct imap_front *f, const char *user, const char *password,
                        const char *mech)
{
    struct login_credentials cred = {.user = user, .password = password, .mech = mech};
    f->waiting = true;
    login_authenticate(f->ls, &cred);
}

static void cmd_login(struct imap_front *f, const struct imap_command *c)
{
    const char *user = c->n_args == 2 ? imap_arg_astring(&c->args[0]) : NULL;
    const char *pass = c->n_args == 2 ? imap_arg_astring(&c->args[1]) : NULL;
    if (user == NULL || pass == NULL) {
        reply(f, c->tag, "BAD Invalid arguments.");
        return;
    }
    if (!login_plaintext_allowed(f->ls)) {
        reply(f, c->tag, "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on "
                         "non-secure (SSL/TLS) connections.");
        return;
    }
    set_tag(f, c->tag, "PLAIN"); /* LOGIN is PLAIN underneath, as in referral URLs */
    start_login(f, user, pass, "PLAIN");
}

/* One SASL step: the initial response or a continuation line. */
static void sasl_step(struct imap_front *f, const char *b64, size_t len)
{
    struct buf challenge = BUF_INIT;
    const char *err = NULL;
    int st = sasl_server_step(f->sasl, b64, len, &challenge, &err);
    if (st == SASL_CONTINUE) {
        stream_printf(login_client(f->ls), "+ %s\r\n", buf_ptr(&challenge));
    } else if (st == SASL_DONE) {
        f->waiting = true;
        login_authenticate_sasl(f->ls, f->sasl_mech, sasl_server_result(f->sasl));
        sasl_server_free(&f->sasl);
    } else {
        reply(f, f->tag, st == SASL_CANCELLED ? "BAD Authentication aborted by client."
                                              : "NO [AUTHENTICATIONFAILED] Authentication failed.");
        sasl_server_free(&f->sasl);
    }
    buf_free_wipe(&challenge);
}

static void cmd_authenticate(struct imap_front *f, const struct imap_command *c)
{
    enum sasl_mech mech;
    const char *name = c->n_args >= 1 ? imap_arg_astring(&c->args[0]) : NULL;
    if (name == NULL || !sasl_mech_from_name(name, &mech) || !login_mech_enabled(f->ls, mech)) {
        reply(f, c->tag, "NO [CANNOT] Unsupported authentication mechanism.");
        return;
    }
    if (!login_plaintext_allowed(f->ls)) {
        reply(f, c->tag, "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on "
                         "non-secure (SSL/TLS) connections.");
        return;
    }
    set_tag(f, c->tag, sasl_mech_name(mech));
    f->sasl_mech = mech;
    f->sasl = sasl_server_new(mech);
    const char *ir = c->n_args >= 2 ? imap_arg_astring(&c->args[1]) : NULL;
    sasl_step(f, ir, ir != NULL ? strlen(ir) : 0);
}

static void cmd_capability(struct imap_front *f, const struct imap_command *c)
{
    struct buf caps = BUF_INIT;
    capabilities(f, &caps);
    stream_printf(login_client(f->ls), "* CAPABILITY %s\r\n", buf_ptr(&caps));
    buf_free(&caps);
    reply(f, c->tag, "OK Pre-login capabilities listed, post-login capabilities have more.");
    f->capability_asked = true;
}

/* An ID from a trusted peer (another proxy) carries the real client's
 * address, the session id and the TTL: take them, once, as Dovecot does. */
static void take_forwarded_id(struct imap_front *f, const struct imap_command *c)
{
    if (f->id_taken || c->n_args != 1 || c->args[0].type != IMAP_ARG_LIST)
        return;
    f->id_taken = true;
    const struct imap_arg *list = c->args[0].list;
    struct addr client = *login_client_addr(f->ls);
    bool have_ip = false;
    int ttl = -1;
    for (size_t i = 0; i + 1 < c->args[0].list_count; i += 2) {
        const char *key = imap_arg_astring(&list[i]);
        const char *value = imap_arg_astring(&list[i + 1]);
        unsigned long long n;
        if (key == NULL || value == NULL)
            continue;
        if (str_case_eq(key, "x-originating-ip")) {
            uint16_t port = client.port;
            have_ip = addr_parse_ip(value, &client);
            client.port = port;
        } else if (str_case_eq(key, "x-originating-port") && str_to_uint(value, 65535, &n)) {
            client.port = (uint16_t)n;
        } else if (str_case_eq(key, "x-proxy-ttl") && str_to_uint(value, 1000, &n)) {
            ttl = (int)n;
        } else if (str_case_eq(key, "x-session-id")) {
            login_set_session_id(f->ls, value);
        } else if (str_case_eq(key, "x-connected-ip")) {
            struct addr local = *login_local_addr(f->ls);
            uint16_t port = local.port;
            if (addr_parse_ip(value, &local)) {
                local.port = port;
                login_set_forwarded_local(f->ls, &local);
            }
        } else if (str_case_eq(key, "x-connected-port") && str_to_uint(value, 65535, &n)) {
            struct addr local = *login_local_addr(f->ls);
            local.port = (uint16_t)n;
            login_set_forwarded_local(f->ls, &local);
        } else if (str_case_prefix(key, "x-forward-") != NULL && key[10] != '\0') {
            login_add_forward(f->ls, key + 10, value);
        }
    }
    login_set_forwarded(f->ls, have_ip ? &client : NULL, ttl);
}

/* The client's own ID pairs go to the backend with imap_id_retain; the
 * x- keys a trusted hop forwards are ours to write, never passed on. */
static void keep_client_id(struct imap_front *f, const struct imap_command *c)
{
    if (f->client_id_kept || !login_settings(f->ls)->imap_id_retain || c->n_args != 1 ||
        c->args[0].type != IMAP_ARG_LIST)
        return;
    f->client_id_kept = true;
    struct fields pairs = FIELDS_INIT;
    const struct imap_arg *list = c->args[0].list;
    for (size_t i = 0; i + 1 < c->args[0].list_count && pairs.n < IMAP_ID_MAX_PAIRS; i += 2) {
        const char *key = imap_arg_astring(&list[i]);
        const char *value = imap_arg_astring(&list[i + 1]);
        if (key != NULL && str_case_prefix(key, "x-") == NULL && strlen(key) <= 30 &&
            (value == NULL || strlen(value) <= 1024))
            fields_set(&pairs, key, value != NULL ? value : "");
    }
    login_set_client_id(f->ls, &pairs);
    fields_free(&pairs);
}

/* Returns false when the session ended. */
static bool command(struct imap_front *f, const struct imap_command *c)
{
    const char *name = c->name;
    if (strcmp(name, "LOGIN") == 0) {
        cmd_login(f, c);
    } else if (strcmp(name, "AUTHENTICATE") == 0) {
        cmd_authenticate(f, c);
    } else if (strcmp(name, "CAPABILITY") == 0) {
        cmd_capability(f, c);
    } else if (strcmp(name, "NOOP") == 0) {
        reply(f, c->tag, "OK NOOP completed.");
    } else if (strcmp(name, "ID") == 0) {
        if (login_client_trusted(f->ls))
            take_forwarded_id(f, c);
        keep_client_id(f, c);
        stream_write_str(login_client(f->ls), "* ID (\"name\" \"mailroute\")\r\n");
        reply(f, c->tag, "OK ID completed.");
    } else if (strcmp(name, "STARTTLS") == 0) {
        if (!login_tls_available(f->ls)) {
            reply(f, c->tag, stream_is_tls(login_client(f->ls)) ? "BAD TLS is already active."
                                                                 : "BAD TLS support isn't enabled.");
        } else {
            reply(f, c->tag, "OK Begin TLS negotiation now.");
            f->waiting = true; /* nothing after STARTTLS is read in plaintext */
            login_starttls(f->ls);
        }
    } else if (strcmp(name, "LOGOUT") == 0) {
        stream_write_str(login_client(f->ls), "* BYE Logging out\r\n");
        reply(f, c->tag, "OK Logout completed.");
        login_session_close(f->ls);
        return false;
    } else {
        reply(f, c->tag, "BAD Error in IMAP command received by server.");
        if (++f->bad >= IMAP_MAX_BAD_COMMANDS) {
            stream_write_str(login_client(f->ls), "* BYE Too many invalid IMAP commands.\r\n");
            login_session_close(f->ls);
            return false;
        }
    }
    return true;
}

/* A SASL continuation line from the client. */
static bool sasl_line(struct imap_front *f)
{
    const char *line;
    size_t len, used;
    int r = stream_read_line(login_client(f->ls), SASL_DEFAULT_MAX_LEN, &line, &len, &used);
    if (r == 0)
        return false;
    if (r < 0) {
        reply(f, f->tag, "BAD Authentication line too long.");
        login_session_close(f->ls);
        return false;
    }
    char *copy = xstrndup(line, len);
    stream_consume(login_client(f->ls), used);
    sasl_step(f, copy, len);
    mem_wipe(copy, len);
    free(copy);
    return true;
}

static void front_input(struct login_session *ls, void *state)
{
    struct imap_front *f = state;
    struct stream *s = login_client(ls);
    for (;;) {
        if (f->sasl != NULL) {
            if (!sasl_line(f))
                return;
            continue;
        }
        struct buf *in = stream_input(s);
        size_t consumed = 0;
        enum imap_parse_result r = imap_parser_feed(f->parser, buf_ptr(in), buf_used(in),
                                                    &consumed);
        stream_consume(s, consumed);
        switch (r) {
        case IMAP_PARSE_NEED_MORE:
            return;
        case IMAP_PARSE_NEED_CONTINUATION:
            stream_write_str(s, IMAP_CONTINUATION);
            continue;
        case IMAP_PARSE_ERROR:
        case IMAP_PARSE_FATAL: {
            struct buf err = BUF_INIT;
            imap_parser_write_error(f->parser, &err);
            stream_write(s, buf_ptr(&err), buf_used(&err));
            buf_free(&err);
            if (r == IMAP_PARSE_FATAL) {
                login_session_close(ls);
                return;
            }
            continue;
        }
        case IMAP_PARSE_COMMAND:
            if (!command(f, imap_parser_command(f->parser)))
                return;
            break;
        }
        /* After LOGIN/AUTHENTICATE the session waits for the result; the
         * bytes after it stay buffered (for the backend, or the next try). */
        if (f->waiting)
            return;
    }
}

/* Results */

static void front_failed(struct login_session *ls, void *state, enum login_failure fl,
                         const char *text)
{
    struct imap_front *f = state;
    char line[600];
    f->waiting = false;
    switch (fl) {
    case LOGIN_FAIL_AUTH:
        if (text != NULL && text[0] == '[')
            snprintf(line, sizeof(line), "NO %s", text);
        else if (text != NULL)
            snprintf(line, sizeof(line), "NO [ALERT] %s", text);
        else
            snprintf(line, sizeof(line), "NO [AUTHENTICATIONFAILED] Authentication failed.");
        break;
    case LOGIN_FAIL_NOLOGIN:
        snprintf(line, sizeof(line), "NO [CONTACTADMIN] %s",
                 text != NULL ? text : "Login disabled for this user");
        break;
    case LOGIN_FAIL_TEMP:
        /* A backend's own "try later" passes on; other reasons stay in the log. */
        if (text != NULL && str_case_prefix(text, "NO [UNAVAILABLE] ") != NULL &&
            strcspn(text, "\r\n") == strlen(text))
            snprintf(line, sizeof(line), "%s", text);
        else
            snprintf(line, sizeof(line), "NO [UNAVAILABLE] Account is temporarily unavailable.");
        break;
    case LOGIN_FAIL_LIMIT:
        snprintf(line, sizeof(line), "NO [UNAVAILABLE] %s", text);
        break;
    case LOGIN_FAIL_LOOP:
        /* Not [UNAVAILABLE]: a proxy in front of us must not retry a loop. */
        snprintf(line, sizeof(line), "NO [SERVERBUG] Account is temporarily unavailable.");
        break;
    case LOGIN_FAIL_BACKEND:
        /* The backend's own reply; without a response code (or with
         * AUTHENTICATIONFAILED) the text is hidden: it may tell which users
         * exist. Other codes (e.g. [EXPIRED]) pass through. */
        if (text != NULL && str_case_prefix(text, "NO [") != NULL &&
            str_case_prefix(text, "NO [AUTHENTICATIONFAILED]") == NULL &&
            strcspn(text, "\r\n") == strlen(text))
            snprintf(line, sizeof(line), "%s", text);
        else
            snprintf(line, sizeof(line), "NO [AUTHENTICATIONFAILED] Authentication failed.");
        break;
    }
    reply(f, f->tag != NULL ? f->tag : "*", line);
    (void)ls;
}

void imap_referral_url(struct buf *out, const char *user, const char *mech,
                       const struct route_target *t)
{
    buf_append_str(out, "imap://");
    imap_url_escape_user(out, user);
    buf_printf(out, ";AUTH=%s@", mech);
    struct addr ip;
    if (t->host != NULL && strchr(t->host, ':') != NULL && addr_parse_ip(t->host, &ip))
        buf_printf(out, "[%s]", t->host);
    else
        buf_append_str(out, t->host != NULL ? t->host : "");
    if (t->ip.port != 0 && t->ip.port != 143)
        buf_printf(out, ":%u", t->ip.port);
    buf_append_str(out, "/");
}

static void referral_reply(struct imap_front *f, const char *status,
                           const struct route_decision *d, const char *default_reason)
{
    struct buf url = BUF_INIT;
    const char *user = login_referral_user(f->ls, d);
    imap_referral_url(&url, user, f->mech != NULL ? f->mech : "PLAIN", &d->target);
    stream_printf(login_client(f->ls), "%s %s [REFERRAL %s] %s\r\n", f->tag, status,
                  buf_ptr(&url), d->reason != NULL ? d->reason : default_reason);
    buf_free(&url);
}

static void front_referral(struct login_session *ls, void *state, const struct route_decision *d)
{
    struct imap_front *f = state;
    (void)ls;
    f->waiting = false;
    referral_reply(f, "NO", d, "Try this server instead.");
}

/* The backend said OK: "OK [CAPABILITY ...] text" (the back inserts the
 * capabilities when the backend's OK had none). */
static void front_logged_in(struct login_session *ls, void *state, const char *backend_reply)
{
    struct imap_front *f = state;
    const struct route_decision *d = login_decision(ls);
    const char *caps = strstr(backend_reply, "[CAPABILITY ");
    if (f->capability_asked && caps != NULL) {
        /* Clients that asked before login may ignore the response code. */
        size_t n = strcspn(caps + 12, "]");
        stream_printf(login_client(ls), "* CAPABILITY %.*s\r\n", (int)n, caps + 12);
    }
    if (d != NULL && d->kind == ROUTE_REFERRAL) {
        referral_reply(f, "OK", d, "Logged in, but you should use this server instead.");
        return;
    }
    reply(f, f->tag, backend_reply);
}

/* After STARTTLS: a fresh parser (nothing half-read survives). */
static void front_tls_started(struct login_session *ls, void *state)
{
    struct imap_front *f = state;
    (void)ls;
    f->waiting = false;
    imap_parser_reset(f->parser);
}

const struct login_front imap_login_front = {
    .service = "imap",
    .proto = ROUTE_PROTO_IMAP,
    .start = front_start,
    .input = front_input,
    .failed = front_failed,
    .referral = front_referral,
    .logged_in = front_logged_in,
    .tls_started = front_tls_started,
    .free = front_free,
};
