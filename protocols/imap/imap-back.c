/* imap-back.c - logging in to an IMAP backend for a client.
 *
 * The banner must be "* OK". With starttls=yes|any-cert the backend must
 * advertise STARTTLS (in the banner, else in the reply to "C CAPABILITY");
 * then "S STARTTLS", "S OK", the handshake, and "C CAPABILITY" again over
 * TLS: nothing said in plaintext is trusted, and nothing of the login is
 * sent before TLS is up. Then, in one write unless proxy_nopipelining:
 * "I ID (...)" with the client's address and the TTL when the capabilities
 * list ID and the target is trusted (imap_id_retain: the client's own ID
 * pairs first); "C CAPABILITY" when none are known yet; then the login:
 * "L LOGIN user pass" (quoted strings; values that cannot be quoted, and
 * master-user logins, use AUTHENTICATE PLAIN), or with proxy_mech
 * "L AUTHENTICATE <MECH>[ <initial response>]" (the initial response only
 * with SASL-IR) and the responses after each "+".
 * The tagged L reply decides: OK -> logged in, NO [UNAVAILABLE] -> temporary,
 * other NO/BAD -> refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec.h"
#include "imap-login.h"
#include "imap-parse.h"
#include "log.h"
#include "login-sasl.h"
#include "mem.h"
#include "sasl.h"
#include "str.h"

#define BACKEND_LINE_MAX 8192
#define ID_PAIRS_MAX 30         /* RFC 2971; an ID with more is refused as a whole */
#define ID_KEY_MAX 30           /* Dovecot's ID key limit */

enum imap_back_step {
    STEP_BANNER,                /* waiting for "* OK" */
    STEP_PRE_TLS_CAPS,          /* starttls, banner without capabilities: C CAPABILITY sent */
    STEP_STARTTLS,              /* S STARTTLS sent */
    STEP_HANDSHAKE,             /* login.c runs the TLS handshake: no reading */
    STEP_TLS_CAPS,              /* C CAPABILITY sent over TLS */
    STEP_LOGIN,                 /* ID, CAPABILITY and the login sent: waiting for L */
    STEP_DONE,                  /* the login flow has the outcome */
};

struct imap_back {
    struct login_session *ls;
    struct stream *s;
    enum imap_back_step step;
    char *caps;                 /* from the banner or a CAPABILITY reply */
    struct login_sasl sasl;
    bool authenticating;        /* L AUTHENTICATE sent: "+" lines are SASL challenges */
    struct buf later;           /* proxy_nopipelining: commands still to send, one per line */
};

static void *back_start(struct login_session *ls, struct stream *s)
{
    struct imap_back *b = xcalloc(1, sizeof(*b));
    b->ls = ls;
    b->s = s;
    b->step = STEP_BANNER;
    stream_set_max_input(s, BACKEND_LINE_MAX * 2);
    return b;
}

static void back_free(void *state)
{
    struct imap_back *b = state;
    free(b->caps);
    login_sasl_free(&b->sasl);
    buf_free_wipe(&b->later);
    free(b);
}

static void temporary(struct imap_back *b, const char *why)
{
    b->step = STEP_DONE;
    login_backend_failed(b->ls, true, why);
}

static bool has_cap(const struct imap_back *b, const char *cap)
{
    if (b->caps == NULL)
        return false;
    size_t n = strlen(cap);
    for (const char *p = b->caps; (p = strcasestr(p, cap)) != NULL; p += n) {
        bool start = p == b->caps || p[-1] == ' ';
        bool end = p[n] == '\0' || p[n] == ' ';
        if (start && end)
            return true;
    }
    return false;
}

static void set_caps(struct imap_back *b, const char *text, size_t len)
{
    free(b->caps);
    b->caps = xstrndup(text, len);
}

/* "[CAPABILITY a b c]" at the start of text, if there. */
static void caps_from_code(struct imap_back *b, const char *text)
{
    const char *p = str_case_prefix(text, "[CAPABILITY ");
    if (p != NULL)
        set_caps(b, p, strcspn(p, "]"));
}

//* "L AUTHENTICATE <MECH>[ <ir>]"; the rest follows the "+" challenges. */
static void write_authenticate(struct imap_back *b, struct buf *out)
{
    struct login_sasl *sasl = &b->sasl;
    buf_printf(out, "L AUTHENTICATE %s", sasl->mech);
    if (!sasl->no_ir && has_cap(b, "SASL-IR")) {
        const struct buf *ir = &sasl->resp[sasl->next++];
        buf_append_str(out, " ");
        buf_append_str(out, buf_used(ir) > 0 ? buf_ptr(ir) : "=");
    }
    buf_append_str(out, "\r\n");
    b->authenticating = true;
}

/* A "+" during AUTHENTICATE: the next response. A challenge beyond them is,
 * for the OAuth mechanisms, the server's error report, which RFC 7628 has
 * the client acknowledge with an empty response (the NO follows); for the
 * others the backend does not speak the mechanism as we do. */
static void on_challenge(struct imap_back *b)
{
    struct login_sasl *sasl = &b->sasl;
    if (sasl->next < sasl->n) {
        const struct buf *r = &sasl->resp[sasl->next++];
        struct buf line = BUF_INIT;
        buf_printf(&line, "%s\r\n", buf_ptr(r));
        stream_write(b->s, buf_ptr(&line), buf_used(&line));
        buf_free_wipe(&line);
    } else if (sasl->token) {
        stream_write_str(b->s, "\r\n");
    } else {
        temporary(b, "unexpected SASL challenge from the backend");
    }
}

/* ID */

/* Append "key" "value" when both can go as quoted strings (a literal would
 * stop the pipelined commands); false when the pair was left out. */
static bool id_pair(struct buf *out, const char *key, const char *value)
{
    struct buf pair = BUF_INIT;
    bool ok = imap_quote(&pair, key, false) == IMAP_STRING_QUOTED;
    buf_append_str(&pair, " ");
    ok = ok && imap_quote(&pair, value != NULL ? value : "", false) == IMAP_STRING_QUOTED;
    if (ok) {
        if (buf_used(out) > 0 && buf_ptr(out)[buf_used(out) - 1] != '(')
            buf_append_str(out, " ");
        buf_append(out, buf_ptr(&pair), buf_used(&pair));
    }
    buf_free(&pair);
    return ok;
}

/* Keys a trusted backend takes as the proxy's word: never the client's. */
static bool id_key_reserved(const char *key)
{
    static const char *const reserved[] = {
        "x-originating-ip", "x-originating-port", "x-connected-ip", "x-connected-port",
        "x-proxy-ttl", "x-session-id", "x-session-ext-id",
    };
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        if (str_case_eq(key, reserved[i]))
            return true;
    }
    return str_case_prefix(key, "x-forward-") != NULL;
}

/* imap_id_retain: the client's own pairs, as many as leave room for ours. */
static void write_client_id(struct imap_back *b, struct buf *out, size_t room)
{
    const struct fields *id = login_client_id(b->ls);
    for (size_t i = 0; i < id->n && room > 0; i++) {
        const struct field *f = &id->v[i];
        if (!id_key_reserved(f->key) && strlen(f->key) <= ID_KEY_MAX &&
            id_pair(out, f->key, f->value))
            room--;
    }
}

/* The client's identity for a backend that trusts us (Dovecot's x- keys). */
static void write_id(struct imap_back *b, struct buf *out)
{
    const struct route_target *t = login_target(b->ls);
    const struct fields *lists[2] = {login_forward_fields(b->ls), &t->forward};
    char ip[ADDR_STRLEN], port[16], ttl[16];
    size_t ours = 6 + lists[0]->n + lists[1]->n;
    buf_append_str(out, "I ID (");
    if (login_settings(b->ls)->imap_id_retain && ours < ID_PAIRS_MAX)
        write_client_id(b, out, ID_PAIRS_MAX - ours);
    id_pair(out, "x-session-id", login_session_id(b->ls));
    addr_ip_str(login_client_addr(b->ls), ip, sizeof(ip));
    snprintf(port, sizeof(port), "%u", login_client_addr(b->ls)->port);
    id_pair(out, "x-originating-ip", ip);
    id_pair(out, "x-originating-port", port);
    addr_ip_str(login_local_addr(b->ls), ip, sizeof(ip));
    snprintf(port, sizeof(port), "%u", login_local_addr(b->ls)->port);
    id_pair(out, "x-connected-ip", ip);
    id_pair(out, "x-connected-port", port);
    snprintf(ttl, sizeof(ttl), "%d", login_ttl(b->ls) - 1);
    id_pair(out, "x-proxy-ttl", ttl);
    /* Forward fields from a trusted previous hop, then the passdb's own. */
    for (size_t l = 0; l < 2; l++) {
        for (size_t i = 0; i < lists[l]->n; i++) {
            const struct field *fl = &lists[l]->v[i];
            char key[64];
            snprintf(key, sizeof(key), "x-forward-%s", fl->key);
            if (strlen(key) <= ID_KEY_MAX)
                id_pair(out, key, fl->value);
        }
    }
    buf_append_str(out, ")\r\n");
}

/* Login */

/* False (and the login failed) when proxy_mech cannot be used. */
static bool write_login(struct imap_back *b, struct buf *out)
{
    const struct route_target *t = login_target(b->ls);
    if (t->proxy_mech != NULL) {
        if (!login_sasl_prepare(b->ls, t->proxy_mech, false, &b->sasl)) {
            char why[128];
            snprintf(why, sizeof(why), "Unsupported SASL mechanism %s", t->proxy_mech);
            temporary(b, why);
            return false;
        }
        write_authenticate(b, out);
        return true;
    }
    const char *user = login_user(b->ls);
    const char *pass = login_password(b->ls);
    if (pass == NULL)
        pass = "";
    if (t->master == NULL) {
        struct buf q = BUF_INIT;
        buf_append_str(&q, "L LOGIN ");
        bool ok = imap_quote(&q, user, false) == IMAP_STRING_QUOTED;
        buf_append_str(&q, " ");
        ok = ok && imap_quote(&q, pass, false) == IMAP_STRING_QUOTED;
        if (ok) {
            buf_append(out, buf_ptr(&q), buf_used(&q));
            buf_append_str(out, "\r\n");
            buf_free_wipe(&q);
            return true;
        }
        buf_free_wipe(&q);
    }
    /* AUTHENTICATE PLAIN (master-user proxying, or values LOGIN cannot quote). */
    login_sasl_plain(b->ls, pass, false, &b->sasl);
    write_authenticate(b, out);
    return true;
}

/* The capabilities are known (and, with starttls, come over TLS): ID,
 * CAPABILITY when still needed, and the login. */
static void start_login(struct imap_back *b)
{
    const struct route_target *t = login_target(b->ls);
    struct buf out = BUF_INIT;
    b->step = STEP_LOGIN;
    if (has_cap(b, "ID") && !t->not_trusted)
        write_id(b, &out);
    if (b->caps == NULL)
        buf_append_str(&out, "C CAPABILITY\r\n");
    if (!write_login(b, &out)) {
        buf_free_wipe(&out);
        return;
    }
    if (t->nopipelining) {
        /* One command at a time: keep the rest for after each tagged reply. */
        const char *nl = memchr(buf_ptr(&out), '\n', buf_used(&out));
        size_t first = (size_t)(nl - buf_ptr(&out)) + 1;
        stream_write(b->s, buf_ptr(&out), first);
        buf_append(&b->later, buf_ptr(&out) + first, buf_used(&out) - first);
    } else {
        stream_write(b->s, buf_ptr(&out), buf_used(&out));
    }
    buf_free_wipe(&out);
}

/* STARTTLS */

static bool wants_starttls(const struct imap_back *b)
{
    return login_target(b->ls)->tls == ROUTE_TLS_STARTTLS && !stream_is_tls(b->s);
}

/* The plaintext capabilities are known: STARTTLS must be among them. */
static void send_starttls(struct imap_back *b)
{
    if (!has_cap(b, "STARTTLS")) {
        temporary(b, "STARTTLS not supported");
        return;
    }
    b->step = STEP_STARTTLS;
    stream_write_str(b->s, "S STARTTLS\r\n");
}

static void on_starttls_reply(struct imap_back *b, const char *rest)
{
    if (str_case_prefix(rest, "OK") == NULL) {
        char why[300];
        snprintf(why, sizeof(why), "STARTTLS failed: %.200s", rest);
        temporary(b, why);
        return;
    }
    b->step = STEP_HANDSHAKE;
    login_backend_starttls(b->ls); /* may fail (and free b) at once */
}

/* TLS is up: forget the plaintext capabilities and ask again. */
static void back_tls_started(struct login_session *ls, void *state)
{
    struct imap_back *b = state;
    (void)ls;
    free(b->caps);
    b->caps = NULL;
    b->step = STEP_TLS_CAPS;
    stream_write_str(b->s, "C CAPABILITY\r\n");
}

/* Replies */

static void on_banner(struct imap_back *b, const char *line)
{
    const char *text = str_case_prefix(line, "* OK ");
    if (text == NULL) {
        temporary(b, "invalid banner from the backend");
        return;
    }
    caps_from_code(b, text);
    if (!wants_starttls(b)) {
        start_login(b);
    } else if (b->caps != NULL) {
        send_starttls(b);
    } else {
        b->step = STEP_PRE_TLS_CAPS;
        stream_write_str(b->s, "C CAPABILITY\r\n");
    }
}

/* proxy_nopipelining: a tagged I or C reply releases the next command. */
static void send_next_later(struct imap_back *b)
{
    if (buf_used(&b->later) == 0)
        return;
    const char *nl = memchr(buf_ptr(&b->later), '\n', buf_used(&b->later));
    size_t n = nl != NULL ? (size_t)(nl - buf_ptr(&b->later)) + 1 : buf_used(&b->later);
    stream_write(b->s, buf_ptr(&b->later), n);
    mem_wipe((char *)buf_ptr(&b->later), n);
    buf_consume(&b->later, n);
}

/* "C ..." ends a CAPABILITY: what comes next depends on why it was asked. */
static void on_capability_done(struct imap_back *b)
{
    if (b->caps == NULL)
        set_caps(b, "", 0); /* none listed: known to be empty */
    switch (b->step) {
    case STEP_PRE_TLS_CAPS:
        send_starttls(b);
        break;
    case STEP_TLS_CAPS:
        start_login(b);
        break;
    default:
        send_next_later(b);
        break;
    }
}

/* "OK text": make sure the client learns the post-login capabilities. */
static void logged_in(struct imap_back *b, const char *rest)
{
    b->step = STEP_DONE;
    if (str_case_prefix(rest, "OK [CAPABILITY ") != NULL || b->caps == NULL || !b->caps[0]) {
        login_backend_accepted(b->ls, rest);
        return;
    }
    const char *text = rest[2] == ' ' ? rest + 3 : "";
    char *with_caps = xasprintf("OK [CAPABILITY %s]%s%s", b->caps, text[0] ? " " : "", text);
    login_backend_accepted(b->ls, with_caps);
    free(with_caps);
}

static void on_login_reply(struct imap_back *b, const char *rest)
{
    if (str_case_prefix(rest, "OK") != NULL) {
        logged_in(b, rest);
        return;
    }
    b->step = STEP_DONE;
    if (str_case_prefix(rest, "NO [UNAVAILABLE]") != NULL)
        login_backend_retry(b->ls, rest);
    else
        login_backend_failed(b->ls, false, rest);
}

/* Untagged lines other than CAPABILITY, ID and BYE (an [ALERT], say) are
 * for the client, once the login is under way; before TLS nothing is. */
static void on_untagged(struct imap_back *b, const char *line)
{
    const char *p;
    if ((p = str_case_prefix(line, "* CAPABILITY ")) != NULL)
        set_caps(b, p, strlen(p));
    else if (b->step == STEP_LOGIN && str_case_prefix(line, "* ID ") == NULL &&
             str_case_prefix(line, "* BYE") == NULL)
        stream_printf(login_client(b->ls), "%s\r\n", line);
}

/* One complete line from the backend. */
static void on_line(struct imap_back *b, const char *line)
{
    if (b->step == STEP_BANNER) {
        on_banner(b, line);
    } else if (line[0] == '*') {
        on_untagged(b, line);
    } else if (line[0] == '+') {
        if (b->step == STEP_LOGIN && b->authenticating)
            on_challenge(b);
    } else if (strncmp(line, "S ", 2) == 0) {
        if (b->step == STEP_STARTTLS)
            on_starttls_reply(b, line + 2);
    } else if (strncmp(line, "C ", 2) == 0) {
        on_capability_done(b);
    } else if (b->step == STEP_LOGIN && strncmp(line, "L ", 2) == 0) {
        on_login_reply(b, line + 2);
    } else if (b->step == STEP_LOGIN && strncmp(line, "I ", 2) == 0) {
        send_next_later(b);
    }
}

static bool reading(const struct imap_back *b)
{
    return b->step != STEP_DONE && b->step != STEP_HANDSHAKE;
}

static void back_input(struct login_session *ls, void *state)
{
    struct imap_back *b = state;
    struct stream *s = login_backend(ls);
    const char *line;
    size_t len, used;
    int r;
    while (reading(b) && (r = stream_read_line(s, BACKEND_LINE_MAX, &line, &len, &used)) != 0) {
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

const struct login_back imap_login_back = {
    .start = back_start,
    .input = back_input,
    .tls_started = back_tls_started,
    .free = back_free,
};
