/* session.c - the LMTP server side: one object per client connection.
 *
 * Commands are read into a bounded queue and executed in order. RCPT starts
 * an asynchronous look-up and the next RCPT may start before it finished;
 * every other command waits until all earlier ones are done, so replies can
 * always leave in command order (PIPELINING). After a DATA line no further
 * line is parsed until DATA is answered, since what follows is message
 * data when the answer is 354. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "lmtp-private.h"
#include "log.h"
#include "mem.h"
#include "str.h"
#include "tls.h"

/* The sessions of this worker thread (for drain and counts). */
static __thread struct session *worker_sessions;
static __thread unsigned worker_session_count;

static void session_free(struct session *sess);
static bool read_input(struct session *sess);
static void start_tls(struct session *sess);

/* Replies */

void session_reply(struct session *sess, struct cmd *cmd, const char *fmt, ...)
{
    va_list ap;
    (void)sess;
    va_start(ap, fmt);
    buf_vprintf(&cmd->reply, fmt, ap);
    va_end(ap);
    buf_append(&cmd->reply, "\r\n", 2);
    cmd->done = true;
}

void session_cmd_done(struct session *sess, struct cmd *cmd)
{
    cmd->done = true;
    session_run(sess);
}

static void cmd_free(struct cmd *cmd)
{
    free(cmd->line);
    buf_free(&cmd->reply);
    free(cmd);
}

/* While a pipelined RCPT is still being routed, replies that are ready are
 * held back: the client waits for all of them anyway, and they then leave
 * in one write instead of one per look-up. */
static bool rcpt_in_flight(const struct session *sess)
{
    for (const struct cmd *c = sess->queue_head; c != NULL; c = c->next) {
        if (c->verb == SMTP_CMD_RCPT && c->executed && !c->done)
            return true;
    }
    return false;
}

/* Write what the head of the queue has; pop finished commands. */
static void flush_replies(struct session *sess)
{
    struct cmd *cmd;
    if (rcpt_in_flight(sess))
        return;
    while ((cmd = sess->queue_head) != NULL) {
        if (buf_used(&cmd->reply) > 0) {
            stream_write(sess->s, buf_ptr(&cmd->reply), buf_used(&cmd->reply));
            buf_free(&cmd->reply);
        }
        if (!cmd->done)
            break;
        sess->queue_head = cmd->next;
        if (sess->queue_head == NULL)
            sess->queue_tail = NULL;
        sess->queue_len--;
        cmd_free(cmd);
    }
}

void session_log_rcpt(const struct rcpt *r, const char *reply)
{
    char target[ADDR_STRLEN + 140] = "-", safe_rcpt[300], safe_reply[300];
    const struct session *sess = r->txn->sess;
    size_t rl = strcspn(reply, "\r\n");
    char *oneline = xstrndup(reply, rl);
    if (r->group != NULL) {
        char ip[ADDR_STRLEN];
        if (r->group->maildir)
            snprintf(target, sizeof(target), "%s", sess->env->set->lmtp_local);
        else if (r->group->target.ip.family != 0)
            snprintf(target, sizeof(target), "%s", addr_str(&r->group->target.ip, ip, sizeof(ip)));
        else
            snprintf(target, sizeof(target), "unix:%s", r->group->target.unix_path);
    }
    uint64_t ms = loop_now_ms(sess->env->loop) - r->start_ms;
    log_info("lmtp(%s): txn=%s rcpt=<%s> decision=%s target=%s reply=\"%s\" delay=%llu.%03llus",
             sess->id, r->txn->id, log_sanitize(safe_rcpt, sizeof(safe_rcpt), r->address),
             r->have_decision ? route_kind_str(r->decision.kind) : "none", target,
             log_sanitize(safe_reply, sizeof(safe_reply), oneline),
             (unsigned long long)(ms / 1000), (unsigned long long)(ms % 1000));
    free(oneline);
}

/* Command execution */

static void reply_lhlo(struct session *sess, struct cmd *cmd)
{
    const struct settings *set = sess->env->set;
    buf_printf(&cmd->reply, "250-%s\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n"
               "250-8BITMIME\r\n250-SMTPUTF8\r\n", set->hostname);
    if (set->lmtp_max_message_size > 0)
        buf_printf(&cmd->reply, "250-SIZE %llu\r\n",
                   (unsigned long long)set->lmtp_max_message_size);
    else
        buf_printf(&cmd->reply, "250-SIZE\r\n");
    if (sess->env->tls_server != NULL && !stream_is_tls(sess->s))
        buf_printf(&cmd->reply, "250-STARTTLS\r\n");
    if (sess->trusted)
        buf_printf(&cmd->reply, "250-XCLIENT ADDR PORT HELO PROTO TTL SESSION LOGIN\r\n");
    buf_printf(&cmd->reply, "250 CHUNKING\r\n");
    cmd->done = true;
}

static void reset_txn(struct session *sess)
{
    txn_free(&sess->txn);
}

static void exec_lhlo(struct session *sess, struct cmd *cmd, const struct smtp_cmd *c)
{
    reset_txn(sess);
    free(sess->helo);
    sess->helo = xstrdup(c->arg);
    if (sess->client_helo == NULL)
        sess->client_helo = xstrdup(c->arg);
    reply_lhlo(sess, cmd);
}

static void exec_mail(struct session *sess, struct cmd *cmd, const struct smtp_cmd *c,
                      const char *params)
{
    const struct settings *set = sess->env->set;
    if (set->tls.ssl == TLS_SSL_REQUIRED && !stream_is_tls(sess->s)) {
        session_reply(sess, cmd, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if (sess->helo == NULL) {
        session_reply(sess, cmd, "503 5.5.1 Send LHLO first");
        return;
    }
    if (sess->txn != NULL) {
        session_reply(sess, cmd, "503 5.5.1 MAIL already given");
        return;
    }
    const char *size = smtp_cmd_param(c, "SIZE", NULL);
    unsigned long long sz;
    if (size != NULL && set->lmtp_max_message_size > 0 &&
        str_to_uint(size, ~0ULL, &sz) && sz > set->lmtp_max_message_size) {
        session_reply(sess, cmd, "552 5.3.4 Message size exceeds fixed maximum message size");
        return;
    }
    sess->txn = txn_new(sess, c->arg, params);
    session_reply(sess, cmd, "250 2.1.0 OK");
}

static void exec_rcpt(struct session *sess, struct cmd *cmd, const struct smtp_cmd *c,
                      const char *params)
{
    if (sess->txn == NULL) {
        session_reply(sess, cmd, "503 5.5.1 MAIL needed first");
        return;
    }
    if (sess->txn->data_accepted) {
        session_reply(sess, cmd, "503 5.5.1 RCPT not allowed now");
        return;
    }
    if (sess->txn->n_rcpts >= sess->env->set->lmtp_max_recipients) {
        session_reply(sess, cmd, "452 4.5.3 Too many recipients");
        return;
    }
    txn_add_rcpt(sess->txn, cmd, c->arg, params);
}

static void exec_data(struct session *sess, struct cmd *cmd)
{
    struct txn *t = sess->txn;
    if (t == NULL) {
        session_reply(sess, cmd, "503 5.5.1 MAIL needed first");
    } else if (t->n_accepted == 0) {
        session_reply(sess, cmd, "503 5.5.1 No valid recipients");
    } else {
        /* Through the queue: earlier replies may still be unwritten. */
        buf_append_str(&cmd->reply, "354 OK\r\n");
        sess->input = IN_DATA;
        memset(&sess->dot, 0, sizeof(sess->dot));
        txn_data_begin(t, cmd);
        return;
    }
    sess->input = IN_COMMANDS;
}

static void exec_bdat(struct session *sess, struct cmd *cmd, const struct smtp_cmd *c)
{
    struct txn *t = sess->txn;
    if (t == NULL) {
        session_reply(sess, cmd, "503 5.5.1 MAIL needed first");
        return;
    }
    if (t->n_accepted == 0) {
        session_reply(sess, cmd, "503 5.5.1 No valid recipients");
        if (c->bdat_last)
            reset_txn(sess);
        return;
    }
    if (!t->data_accepted)
        txn_data_begin(t, NULL);
    if (!c->bdat_last) {
        session_reply(sess, cmd, "250 2.0.0 OK %llu octets received",
                      (unsigned long long)c->bdat_size);
        return;
    }
    t->data_cmd = cmd;
    txn_data_end(t);
}

/* STARTTLS: the 220 leaves in plaintext, then the handshake starts (in
 * session_run, once the reply is written). Nothing read after the STARTTLS
 * line is ever executed: line reading stopped at it, and starting TLS
 * discards the plaintext already buffered. */
static void exec_starttls(struct session *sess, struct cmd *cmd)
{
    if (sess->env->tls_server == NULL) {
        session_reply(sess, cmd, "502 5.5.1 TLS not available");
    } else if (stream_is_tls(sess->s)) {
        session_reply(sess, cmd, "503 5.5.1 TLS already active");
    } else {
        session_reply(sess, cmd, "220 2.0.0 Ready to start TLS");
        sess->starttls_pending = true;
        return;
    }
    sess->input = IN_COMMANDS;
}

/* XCLIENT from a trusted peer: who the real client is. */
static void exec_xclient(struct session *sess, struct cmd *cmd, const struct smtp_cmd *c)
{
    if (!sess->trusted) {
        session_reply(sess, cmd, "550 5.7.14 You are not from trusted IP");
        return;
    }
    for (size_t i = 0; i < c->n_params; i++) {
        const char *k = c->params[i].key, *v = c->params[i].value;
        struct buf dec = BUF_INIT;
        if (v == NULL || !xtext_decode(&dec, v, strlen(v))) {
            buf_free(&dec);
            session_reply(sess, cmd, "501 5.5.4 Invalid XCLIENT attribute");
            return;
        }
        const char *val = buf_used(&dec) > 0 ? buf_ptr(&dec) : "";
        const char *ip = str_case_prefix(val, "IPV6:") ? val + 5 : val;
        unsigned long long n;
        if (strcmp(k, "ADDR") == 0 && addr_parse_ip(ip, &sess->client_addr)) {
            /* port kept from PORT= if given before */
        } else if (strcmp(k, "PORT") == 0 && str_to_uint(val, 65535, &n)) {
            sess->client_addr.port = (uint16_t)n;
        } else if (strcmp(k, "HELO") == 0) {
            free(sess->client_helo);
            sess->client_helo = xstrdup(val);
        } else if (strcmp(k, "TTL") == 0 && str_to_uint(val, 1000, &n)) {
            sess->ttl = (int)n;
        }
        buf_free(&dec);
    }
    reset_txn(sess);
    free(sess->helo);
    sess->helo = NULL;
    session_reply(sess, cmd, "220 %s LMTP ready", sess->env->set->hostname);
}

static bool needs_barrier(enum smtp_verb v)
{
    return v != SMTP_CMD_RCPT && v != SMTP_CMD_NOOP;
}

static void exec_cmd(struct session *sess, struct cmd *cmd)
{
    const char *err = NULL;
    struct smtp_cmd *c = &sess->parsed;
    cmd->executed = true;
    if (cmd->done)
        return; /* an error reply made while reading */
    if (smtp_cmd_parse(cmd->line, strlen(cmd->line), c, &err) < 0) {
        session_reply(sess, cmd, "%s", err);
        if (cmd->verb == SMTP_CMD_DATA || cmd->verb == SMTP_CMD_STARTTLS)
            sess->input = IN_COMMANDS;
        return;
    }
    /* The ESMTP parameters as "KEY=VALUE ..." for forwarding. */
    struct buf pbuf = BUF_INIT;
    for (size_t i = 0; i < c->n_params; i++)
        buf_printf(&pbuf, "%s%s%s%s", i > 0 ? " " : "", c->params[i].key,
                   c->params[i].value != NULL ? "=" : "",
                   c->params[i].value != NULL ? c->params[i].value : "");
    const char *params = buf_ptr(&pbuf);
    switch (c->verb) {
    case SMTP_CMD_LHLO: exec_lhlo(sess, cmd, c); break;
    case SMTP_CMD_HELO:
    case SMTP_CMD_EHLO: session_reply(sess, cmd, "500 5.5.1 This is LMTP: use LHLO"); break;
    case SMTP_CMD_MAIL: exec_mail(sess, cmd, c, params); break;
    case SMTP_CMD_RCPT: exec_rcpt(sess, cmd, c, params); break;
    case SMTP_CMD_DATA: exec_data(sess, cmd); break;
    case SMTP_CMD_BDAT: exec_bdat(sess, cmd, c); break;
    case SMTP_CMD_RSET:
        reset_txn(sess);
        session_reply(sess, cmd, "250 2.0.0 OK");
        break;
    case SMTP_CMD_NOOP: session_reply(sess, cmd, "250 2.0.0 OK"); break;
    case SMTP_CMD_QUIT:
        session_reply(sess, cmd, "221 2.0.0 %s closing connection", sess->env->set->hostname);
        sess->quitting = true;
        break;
    case SMTP_CMD_VRFY: session_reply(sess, cmd, "502 5.5.1 VRFY command is disabled"); break;
    case SMTP_CMD_XCLIENT: exec_xclient(sess, cmd, c); break;
    case SMTP_CMD_STARTTLS: exec_starttls(sess, cmd); break;
    case SMTP_CMD_HELP: session_reply(sess, cmd, "214 2.0.0 https://www.rfc-editor.org/rfc/rfc2033"); break;
    default: session_reply(sess, cmd, "502 5.5.1 Command not implemented"); break;
    }
    buf_free(&pbuf);
}

/* Execute what may run now and write the replies that are ready. */
static void execute_and_flush(struct session *sess)
{
    bool earlier_pending = false;
    if (sess->txn != NULL && sess->txn->data_cmd != NULL)
        txn_flush_replies(sess->txn);
    if (sess->txn != NULL && txn_finished(sess->txn))
        reset_txn(sess);
    for (struct cmd *cmd = sess->queue_head; cmd != NULL && !sess->quitting; cmd = cmd->next) {
        if (!cmd->executed) {
            if (needs_barrier(cmd->verb) && earlier_pending)
                break;
            if (cmd == sess->bdat_cmd && sess->input == IN_BDAT)
                break; /* its chunk is still arriving */
            exec_cmd(sess, cmd);
        }
        if (!cmd->done)
            earlier_pending = true;
    }
    flush_replies(sess);
}

static void close_session(struct session *sess, const char *farewell)
{
    if (farewell != NULL)
        stream_write_str(sess->s, farewell);
    stream_close_after_flush(sess->s);
    sess->s = NULL;
    sess->closing = true;
}

static void update_idle_timeout(struct session *sess)
{
    bool waiting_for_client = sess->queue_head == NULL && sess->input == IN_COMMANDS;
    uint64_t want = waiting_for_client ? sess->env->set->lmtp_client_timeout_ms : 0;
    if (want != sess->idle_timeout_ms) {
        sess->idle_timeout_ms = want;
        stream_set_idle_timeout(sess->s, want);
    }
}

static void greet(struct session *sess)
{
    stream_printf(sess->s, "220 %s LMTP ready\r\n", sess->env->set->hostname);
}

/* The handshake finished: implicit TLS greets now; after STARTTLS the
 * session starts over (RFC 3207: forget LHLO and the transaction). */
static void on_tls(void *ctx, int err, const char *error_text)
{
    struct session *sess = ctx;
    if (err < 0) {
        log_info("lmtp(%s): TLS handshake failed: %s", sess->id,
                 error_text != NULL ? error_text : stream_strerror(err));
        stream_destroy(&sess->s);
        session_free(sess);
        return;
    }
    log_debug("lmtp(%s): %s", sess->id, stream_tls_info(sess->s));
    sess->input = IN_COMMANDS;
    if (sess->starttls_pending) {
        sess->starttls_pending = false;
        txn_free(&sess->txn);
        free(sess->helo);
        sess->helo = NULL;
    } else {
        greet(sess);
    }
    session_run(sess);
}

static void start_tls(struct session *sess)
{
    sess->input = IN_DATA_WAIT;
    size_t dropped = stream_start_tls_server(sess->s, sess->env->tls_server, on_tls, sess);
    if (dropped > 0)
        log_warn("lmtp(%s): %zu bytes sent after STARTTLS were discarded", sess->id, dropped);
    stream_set_idle_timeout(sess->s, 0);
    sess->idle_timeout_ms = 0;
}

/* The session's engine: execute, flush, read more, until nothing changes.
 * Re-entrant calls (from callbacks it triggers) only ask for another round. */
void session_run(struct session *sess)
{
    if (sess->running) {
        sess->rerun = true;
        return;
    }
    sess->running = true;
    do {
        sess->rerun = false;
        execute_and_flush(sess);
        if (sess->quitting && sess->queue_head == NULL) {
            close_session(sess, NULL);
            break;
        }
        if (sess->draining && sess->queue_head == NULL && sess->txn == NULL &&
            sess->input == IN_COMMANDS) {
            close_session(sess, "421 4.3.2 Service shutting down\r\n");
            break;
        }
        if (sess->starttls_pending && sess->queue_head == NULL) {
            start_tls(sess);
            break;
        }
        if (read_input(sess))
            sess->rerun = true;
    } while (sess->rerun && !sess->closing);
    sess->running = false;
    if (sess->closing) {
        session_free(sess);
        return;
    }
    update_idle_timeout(sess);
}

/* Input */

static struct cmd *enqueue(struct session *sess, const char *line, size_t len)
{
    struct cmd *cmd = xcalloc(1, sizeof(*cmd));
    cmd->line = xstrndup(line, len);
    if (sess->queue_tail != NULL)
        sess->queue_tail->next = cmd;
    else
        sess->queue_head = cmd;
    sess->queue_tail = cmd;
    sess->queue_len++;
    return cmd;
}

/* One command line: queue it, and switch input modes for DATA and BDAT. */
static void take_line(struct session *sess, const char *line, size_t len)
{
    struct cmd *cmd = enqueue(sess, line, len);
    const char *err = NULL;
    if (memchr(line, '\0', len) != NULL ||
        smtp_cmd_parse(cmd->line, len, &sess->parsed, &err) < 0) {
        session_reply(sess, cmd, "%s", err != NULL ? err : "500 5.5.2 Invalid command");
        return;
    }
    cmd->verb = sess->parsed.verb;
    if (cmd->verb == SMTP_CMD_DATA || cmd->verb == SMTP_CMD_STARTTLS) {
        sess->input = IN_DATA_WAIT; /* what follows is not a command (yet) */
    } else if (cmd->verb == SMTP_CMD_BDAT) {
        sess->input = IN_BDAT;
        sess->bdat_cmd = cmd;
        sess->bdat_left = sess->parsed.bdat_size;
        sess->bdat_last = sess->parsed.bdat_last;
    }
}

static bool read_command_lines(struct session *sess)
{
    const struct settings *set = sess->env->set;
    bool progress = false;
    while (sess->input == IN_COMMANDS && sess->queue_len < set->lmtp_max_pipelined) {
        const char *line;
        size_t len, used;
        if (sess->skipping_line) {
            if (!stream_skip_line(sess->s))
                return progress;
            sess->skipping_line = false;
            continue;
        }
        int r = stream_read_line(sess->s, set->lmtp_max_line_length, &line, &len, &used);
        if (r == 0)
            return progress;
        progress = true;
        if (r < 0) {
            struct cmd *cmd = enqueue(sess, "", 0);
            session_reply(sess, cmd, "500 5.5.6 Line too long");
            sess->skipping_line = true;
            continue;
        }
        take_line(sess, line, len);
        stream_consume(sess->s, used);
    }
    if (sess->input == IN_COMMANDS)
        stream_pause(sess->s); /* the queue is full */
    return progress;
}

static bool read_data(struct session *sess)
{
    struct buf *in = stream_input(sess->s);
    bool done = false;
    if (buf_used(in) == 0)
        return false;
    size_t used = dot_decode(&sess->dot, buf_ptr(in), buf_used(in), &sess->decoded, &done);
    stream_consume(sess->s, used);
    if (buf_used(&sess->decoded) > 0) {
        txn_data_append(sess->txn, buf_ptr(&sess->decoded), buf_used(&sess->decoded));
        buf_reset(&sess->decoded);
    }
    if (done) {
        buf_free(&sess->decoded);
        sess->input = IN_COMMANDS;
        txn_data_end(sess->txn);
    }
    return true;
}

/* The commands before the BDAT must have run (MAIL creates the
 * transaction the chunk belongs to) before its bytes are taken. */
static bool read_bdat(struct session *sess)
{
    for (struct cmd *c = sess->queue_head; c != NULL && c != sess->bdat_cmd; c = c->next) {
        if (!c->executed) {
            stream_pause(sess->s);
            return false;
        }
    }
    struct buf *in = stream_input(sess->s);
    size_t n = buf_used(in) < sess->bdat_left ? buf_used(in) : (size_t)sess->bdat_left;
    if (n > 0 && sess->txn != NULL)
        txn_data_append(sess->txn, buf_ptr(in), n);
    stream_consume(sess->s, n);
    sess->bdat_left -= n;
    if (sess->bdat_left > 0)
        return n > 0;
    sess->input = IN_COMMANDS;
    sess->bdat_cmd = NULL;
    return true;
}

static bool read_input(struct session *sess)
{
    if (sess->s == NULL)
        return false;
    switch (sess->input) {
    case IN_COMMANDS:
        stream_resume(sess->s);
        return read_command_lines(sess);
    case IN_DATA_WAIT:
        return false;
    case IN_DATA:
        if (!txn_data_wanted(sess->txn)) {
            stream_pause(sess->s);
            return false;
        }
        stream_resume(sess->s);
        return read_data(sess);
    case IN_BDAT:
        if (sess->txn != NULL && !txn_data_wanted(sess->txn)) {
            stream_pause(sess->s);
            return false;
        }
        stream_resume(sess->s);
        return read_bdat(sess);
    }
    return false;
}

static void on_input(void *ctx)
{
    session_run(ctx);
}

static void on_close(void *ctx, int err)
{
    struct session *sess = ctx;
    if (err == STREAM_ETLS && stream_tls_error(sess->s) != NULL)
        log_info("lmtp(%s): client connection: TLS error: %s", sess->id,
                 stream_tls_error(sess->s));
    else if (err != 0)
        log_info("lmtp(%s): client connection: %s", sess->id, stream_strerror(err));
    stream_destroy(&sess->s);
    if (sess->running) {
        sess->closing = true;
        return;
    }
    session_free(sess);
}

static const struct stream_handler session_handler = {on_input, NULL, on_close};

void lmtp_session_start(struct proto_env *env, struct stream *s, bool implicit_tls)
{
    struct session *sess = xcalloc(1, sizeof(*sess));
    proto_env_ref(env);
    sess->env = env;
    sess->s = s;
    sid_new(sess->id);
    sess->ttl = 5;
    sess->client_addr = *stream_peer(s);
    sess->trusted = stream_is_unix(s) ||
                    cidr_set_contains(&env->set->login_trusted_networks, stream_peer(s));
    sess->next = worker_sessions;
    if (worker_sessions != NULL)
        worker_sessions->prev = sess;
    worker_sessions = sess;
    worker_session_count++;
    stream_set_handler(s, &session_handler, sess);
    stream_set_max_input(s, env->set->lmtp_max_line_length * 2 + 65536);
    if (implicit_tls && env->tls_server != NULL) {
        start_tls(sess);
        return;
    }
    if (implicit_tls) {
        log_error("lmtp(%s): listener has ssl = yes but TLS is not configured", sess->id);
        stream_destroy(&sess->s);
        session_free(sess);
        return;
    }
    greet(sess);
    update_idle_timeout(sess);
}

static void session_free(struct session *sess)
{
    txn_free(&sess->txn);
    while (sess->queue_head != NULL) {
        struct cmd *cmd = sess->queue_head;
        sess->queue_head = cmd->next;
        cmd_free(cmd);
    }
    stream_destroy(&sess->s);
    if (sess->prev != NULL)
        sess->prev->next = sess->next;
    else
        worker_sessions = sess->next;
    if (sess->next != NULL)
        sess->next->prev = sess->prev;
    worker_session_count--;
    buf_free(&sess->decoded);
    free(sess->helo);
    free(sess->client_helo);
    proto_env_unref(&sess->env);
    free(sess);
}

unsigned lmtp_sessions_count(void)
{
    return worker_session_count;
}

void lmtp_sessions_drain(void)
{
    struct session *next;
    for (struct session *sess = worker_sessions; sess != NULL; sess = next) {
        next = sess->next;
        sess->draining = true;
        session_run(sess);
    }
}

void lmtp_sessions_kill(void)
{
    while (worker_sessions != NULL)
        session_free(worker_sessions);
}

