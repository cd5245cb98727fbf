/* imap-back.c - logging in to an IMAP backend for a client.
 *
 * The banner must be "* OK". Then, in one write unless proxy_nopipelining:
 * "I ID (...)" with the client's address and the TTL when the banner
 * advertised ID and the target is trusted; "C CAPABILITY" when the banner
 * carried no capabilities; then "L LOGIN user pass" (quoted strings; values
 * that cannot be quoted, and master-user logins, use AUTHENTICATE PLAIN).
 * The tagged L reply decides: OK -> logged in, NO [UNAVAILABLE] -> temporary,
 * other NO/BAD -> refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap-login.h"
#include "imap-parse.h"
#include "log.h"
#include "mem.h"
#include "sasl.h"
#include "str.h"

#define BACKEND_LINE_MAX 8192

struct imap_back {
    struct login_session *ls;
    struct stream *s;
    bool banner_seen;
    char *caps;                 /* from the banner or a CAPABILITY reply */
    struct buf plain_ir;        /* AUTHENTICATE PLAIN response, sent after "+" */
    struct buf later;           /* proxy_nopipelining: commands still to send, one per line */
    bool wait_plus;
    bool done;
};

static void *back_start(struct login_session *ls, struct stream *s)
{
    struct imap_back *b = xcalloc(1, sizeof(*b));
    b->ls = ls;
    b->s = s;
    stream_set_max_input(s, BACKEND_LINE_MAX * 2);
    return b;
}

static void back_free(void *state)
{
    struct imap_back *b = state;
    free(b->caps);
    buf_free_wipe(&b->plain_ir);
    buf_free_wipe(&b->later);
    free(b);
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

static void id_pair(struct buf *out, const char *key, const char *value)
{
    if (buf_used(out) > 0 && buf_ptr(out)[buf_used(out) - 1] != '(')
        buf_append_str(out, " ");
    imap_quote(out, key, false);
    buf_append_str(out, " ");
    imap_quote(out, value, false);
}

/* The client's identity for a backend that trusts us (Dovecot's x- keys). */
static void write_id(struct imap_back *b, struct buf *out)
{
    const struct route_target *t = login_target(b->ls);
    char ip[ADDR_STRLEN], port[16], ttl[16];
    buf_append_str(out, "I ID (");
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
    const struct fields *lists[2] = {login_forward_fields(b->ls), &t->forward};
    for (size_t l = 0; l < 2; l++) {
        for (size_t i = 0; i < lists[l]->n; i++) {
            const struct field *fl = &lists[l]->v[i];
            char key[64];
            snprintf(key, sizeof(key), "x-forward-%s", fl->key);
            if (strlen(key) <= 30) /* Dovecot's ID key limit */
                id_pair(out, key, fl->value != NULL ? fl->value : "");
        }
    }
    buf_append_str(out, ")\r\n");
}

static void write_login(struct imap_back *b, struct buf *out)
{
    const struct route_target *t = login_target(b->ls);
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
            return;
        }
        buf_free_wipe(&q);
    }
    /* AUTHENTICATE PLAIN: authzid = the user, authcid = the master user when
     * there is one (Dovecot's master-user proxying). */
    buf_reset(&b->plain_ir);
    sasl_plain_encode(&b->plain_ir, t->master != NULL ? user : "",
                      t->master != NULL ? t->master : user, pass);
    if (has_cap(b, "SASL-IR")) {
        buf_printf(out, "L AUTHENTICATE PLAIN %s\r\n", buf_ptr(&b->plain_ir));
    } else {
        buf_append_str(out, "L AUTHENTICATE PLAIN\r\n");
        b->wait_plus = true;
    }
}

static void on_banner(struct imap_back *b, const char *line)
{
    const char *text = str_case_prefix(line, "* OK ");
    if (text == NULL) {
        b->done = true;
        login_backend_failed(b->ls, true, "invalid banner from the backend");
        return;
    }
    caps_from_code(b, text);
    b->banner_seen = true;
    const struct route_target *t = login_target(b->ls);
    struct buf out = BUF_INIT;
    if (has_cap(b, "ID") && !t->not_trusted)
        write_id(b, &out);
    if (b->caps == NULL)
        buf_append_str(&out, "C CAPABILITY\r\n");
    write_login(b, &out);
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

/* "OK text": make sure the client learns the post-login capabilities. */
static void logged_in(struct imap_back *b, const char *rest)
{
    b->done = true;
    if (str_case_prefix(rest, "OK [CAPABILITY ") != NULL || b->caps == NULL) {
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
    b->done = true;
    if (str_case_prefix(rest, "NO [UNAVAILABLE]") != NULL)
        login_backend_retry(b->ls, rest);
    else
        login_backend_failed(b->ls, false, rest);
}

/* One complete line from the backend. */
static void on_line(struct imap_back *b, const char *line)
{
    if (!b->banner_seen) {
        on_banner(b, line);
        return;
    }
    const char *p;
    if ((p = str_case_prefix(line, "* CAPABILITY ")) != NULL) {
        set_caps(b, p, strlen(p));
    } else if (line[0] == '+' && b->wait_plus) {
        b->wait_plus = false;
        stream_printf(b->s, "%s\r\n", buf_ptr(&b->plain_ir));
    } else if (strncmp(line, "L ", 2) == 0) {
        on_login_reply(b, line + 2);
    } else if (strncmp(line, "I ", 2) == 0 || strncmp(line, "C ", 2) == 0) {
        send_next_later(b);
    } else if (line[0] == '*' && str_case_prefix(line, "* ID ") == NULL &&
               str_case_prefix(line, "* BYE") == NULL) {
        /* Other untagged lines (an [ALERT], say) are for the client. */
        stream_printf(login_client(b->ls), "%s\r\n", line);
    }
}

static void back_input(struct login_session *ls, void *state)
{
    struct imap_back *b = state;
    struct stream *s = login_backend(ls);
    const char *line;
    size_t len, used;
    int r;
    while (!b->done && (r = stream_read_line(s, BACKEND_LINE_MAX, &line, &len, &used)) != 0) {
        if (r < 0) {
            b->done = true;
            login_backend_failed(ls, true, "too long line from the backend");
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
    .free = back_free,
};
