/* txn.c - one mail transaction: route each recipient, group recipients per
 * backend, stream the body to every group at once, and give each recipient
 * its own final reply.
 *
 * The data-safety rule: a recipient gets 250 after DATA only when its own
 * backend said 250 for the data. A backend that fails changes only its own
 * recipients' replies, and every doubt (lost connection, timeout, spool
 * error) is a 4xx so that Postfix retries that recipient alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "lmtp-private.h"
#include "log.h"
#include "mem.h"
#include "str.h"

#define PUMP_CHUNK (64 * 1024)
#define PUMP_HIGH (256 * 1024)
#define PUMP_LOW (64 * 1024)
/* Flow control (body.h): the client is held while the body's memory window
 * is full. Held this long at a stretch it waits for a stalled backend, and
 * this long in all for one much slower than itself: the body is spooled and
 * the client goes on (the transaction deadline then bounds the wait). */
#define HOLD_STALL_MS 1000
#define HOLD_TOTAL_MS 10000
/* send_stuffed(): a clean run shorter than this means insertions are dense */
#define STUFF_SHORT_RUN 256
#define STUFF_DENSE_PIECE (4 * 1024)

static void group_pump(void *ctx);
static void txn_schedule_pump(struct txn *t);
static void group_start_data(struct group *g);
static void rcpt_final(struct rcpt *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static struct session *txn_session(struct txn *t)
{
    return t->sess;
}

static void txn_kick(struct txn *t)
{
    session_run(txn_session(t));
}

/* Recipient replies */

/* The answer to RCPT. Failures are logged now; accepted recipients are
 * logged with their final reply after DATA. */
static void rcpt_reply(struct rcpt *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rcpt_reply(struct rcpt *r, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    r->state = RCPT_DONE;
    session_reply(r->txn->sess, r->cmd, "%s", line);
    if (line[0] == '2') {
        r->accepted = true;
        r->txn->n_accepted++;
    } else {
        session_log_rcpt(r, line);
    }
    r->cmd = NULL;
}

/* A backend reply in our words: code, enhanced code (x.0.0 when the
 * backend gave none), the recipient, and the backend's first line. */
static void backend_reply_text(char *out, size_t n, const struct rcpt *r,
                               const struct smtp_reply *reply)
{
    size_t len;
    const char *text = smtp_reply_first_line(reply, &len);
    char enh[16];
    if (reply->enhanced[0] != '\0')
        snprintf(enh, sizeof(enh), "%s", reply->enhanced);
    else
        snprintf(enh, sizeof(enh), "%u.0.0", reply->code / 100);
    if (len > 0 && text[0] == '<')
        snprintf(out, n, "%u %s %.*s", reply->code, enh, (int)len, text);
    else
        snprintf(out, n, "%u %s <%s> %.*s", reply->code, enh, r->address, (int)len, text);
}

static void proxy_failed_text(char *out, size_t n, const struct rcpt *r, struct backend *b)
{
    const char *what = b != NULL ? backend_failure_word(backend_failure(b)) : "connect";
    snprintf(out, n, "451 4.4.0 <%s> Proxy failed (%s, session=%s)", r->address, what,
             r->txn->id);
}

/* Groups: one per backend target in this transaction */

static void group_fail_unsent(struct group *g)
{
    char line[512];
    for (size_t i = 0; i < g->n_rcpts; i++) {
        struct rcpt *r = g->rcpts[i];
        if (r->state == RCPT_BACKEND && r->cmd != NULL) {
            proxy_failed_text(line, sizeof(line), r, g->b);
            rcpt_reply(r, "%s", line);
        }
    }
}

static void on_rcpt_reply(void *ctx, const struct smtp_reply *reply)
{
    struct rcpt *r = ctx;
    struct group *g = r->group;
    char line[1024];
    if (reply == NULL) {
        proxy_failed_text(line, sizeof(line), r, g->b);
        rcpt_reply(r, "%s", line);
    } else if (g->mail_failed) {
        snprintf(line, sizeof(line), "%s", buf_ptr(&g->mail_reply));
        rcpt_reply(r, "%s", line);
    } else if (reply->code / 100 == 2) {
        g->sent = xrealloc(g->sent, (g->n_sent + 1) * sizeof(*g->sent));
        g->sent[g->n_sent++] = r;
        rcpt_reply(r, "250 2.1.5 OK");
    } else {
        backend_reply_text(line, sizeof(line), r, reply);
        rcpt_reply(r, "%s", line);
    }
    txn_kick(r->txn);
}

static void on_mail_reply(void *ctx, const struct smtp_reply *reply)
{
    struct group *g = ctx;
    if (reply == NULL || reply->code / 100 == 2)
        return; /* a lost connection reaches every RCPT waiter too */
    size_t len;
    const char *text = smtp_reply_first_line(reply, &len);
    g->mail_failed = true;
    buf_reset(&g->mail_reply);
    buf_printf(&g->mail_reply, "%u %s %.*s", reply->code,
               reply->enhanced[0] ? reply->enhanced : (reply->code / 100 == 4 ? "4.0.0" : "5.0.0"),
               (int)len, text);
}

/* MAIL parameters the backend understands, from the client's. */
static void filter_mail_params(struct buf *out, const char *params, struct backend *b)
{
    char *copy = xstrdup(params), *save = NULL;
    for (char *p = strtok_r(copy, " ", &save); p != NULL; p = strtok_r(NULL, " ", &save)) {
        const char *ext = NULL;
        if (str_case_prefix(p, "SIZE="))
            ext = "SIZE";
        else if (str_case_prefix(p, "BODY="))
            ext = "8BITMIME";
        else if (str_case_eq(p, "SMTPUTF8"))
            ext = "SMTPUTF8";
        else if (str_case_prefix(p, "RET=") || str_case_prefix(p, "ENVID="))
            ext = "DSN";
        if (ext != NULL && backend_has_ext(b, ext))
            buf_printf(out, " %s", p);
    }
    free(copy);
}

static void send_rcpt(struct group *g, struct rcpt *r)
{
    struct buf line = BUF_INIT;
    buf_printf(&line, "RCPT TO:<%s>", r->backend_address);
    bool has_orcpt = false;
    char *copy = xstrdup(r->params), *save = NULL;
    for (char *p = strtok_r(copy, " ", &save); p != NULL; p = strtok_r(NULL, " ", &save)) {
        bool dsn = str_case_prefix(p, "ORCPT=") || str_case_prefix(p, "NOTIFY=");
        has_orcpt = has_orcpt || str_case_prefix(p, "ORCPT=") != NULL;
        if (dsn && backend_has_ext(g->b, "DSN"))
            buf_printf(&line, " %s", p);
    }
    free(copy);
    /* LMTP backends (Dovecot) take ORCPT without advertising DSN. */
    if (!has_orcpt && strcmp(r->backend_address, r->address) != 0 &&
        (g->target.protocol == ROUTE_PROTO_LMTP || backend_has_ext(g->b, "DSN"))) {
        buf_append_str(&line, " ORCPT=rfc822;");
        xtext_encode(&line, r->address);
    }
    const struct fields *fwd = &r->decision.target.forward;
    if (fwd->n > 0 && g->target.send_xclient && backend_has_ext(g->b, "XRCPTFORWARD")) {
        struct buf list = BUF_INIT;
        for (size_t i = 0; i < fwd->n; i++)
            buf_printf(&list, "%s%s=%s", i > 0 ? "\t" : "", fwd->v[i].key,
                       fwd->v[i].value != NULL ? fwd->v[i].value : "");
        buf_append_str(&line, " XRCPTFORWARD=");
        xtext_encode(&line, buf_ptr(&list));
        buf_free(&list);
    }
    backend_cmd(g->b, buf_ptr(&line), on_rcpt_reply, r);
    buf_free(&line);
}

static void send_mail(struct group *g)
{
    struct txn *t = g->txn;
    struct buf line = BUF_INIT;
    buf_printf(&line, "MAIL FROM:<%s>", t->mail_from);
    filter_mail_params(&line, t->mail_params, g->b);
    backend_cmd(g->b, buf_ptr(&line), on_mail_reply, g);
    buf_free(&line);
    g->mail_sent = true;
}

static void on_backend_ready(void *ctx, struct backend *b)
{
    struct group *g = ctx;
    g->get = NULL;
    if (b == NULL) {
        g->failed = true;
        group_fail_unsent(g);
        txn_kick(g->txn);
        return;
    }
    g->b = b;
    g->state = GROUP_READY;
    send_mail(g);
    for (size_t i = 0; i < g->n_rcpts; i++)
        send_rcpt(g, g->rcpts[i]);
}

static struct group *group_find(struct txn *t, const char *key)
{
    for (size_t i = 0; i < t->n_groups; i++) {
        if (strcmp(t->groups[i]->target.key, key) == 0)
            return t->groups[i];
    }
    return NULL;
}

static struct group *group_get(struct txn *t, const struct backend_target *bt, bool maildir)
{
    struct group *g = group_find(t, bt->key);
    if (g != NULL)
        return g;
    struct session *sess = txn_session(t);
    g = xcalloc(1, sizeof(*g));
    g->txn = t;
    g->target = *bt;
    g->maildir = maildir;
    dot_encoder_init(&g->enc);
    t->groups = xrealloc(t->groups, (t->n_groups + 1) * sizeof(*t->groups));
    t->groups[t->n_groups++] = g;
    if (maildir) {
        g->state = GROUP_READY;
        return g;
    }
    struct backend_client_info ci = {
        .helo = sess->client_helo,
        .proto = "LMTP",
        .addr = &sess->client_addr,
        .session = t->id,
        .ttl = sess->ttl,
    };
    g->state = GROUP_CONNECTING;
    g->get = backend_get(sess->env, bt, &ci, on_backend_ready, g);
    return g;
}

static void group_add(struct group *g, struct rcpt *r)
{
    r->group = g;
    r->state = RCPT_BACKEND;
    g->rcpts = xrealloc(g->rcpts, (g->n_rcpts + 1) * sizeof(*g->rcpts));
    g->rcpts[g->n_rcpts++] = r;
    if (g->maildir) {
        g->sent = xrealloc(g->sent, (g->n_sent + 1) * sizeof(*g->sent));
        g->sent[g->n_sent++] = r;
        rcpt_reply(r, "250 2.1.5 OK");
    } else if (g->failed) {
        char line[512];
        proxy_failed_text(line, sizeof(line), r, NULL);
        rcpt_reply(r, "%s", line);
    } else if (g->state == GROUP_READY) {
        send_rcpt(g, r);
    }
}

static void group_free(struct group *g)
{
    backend_get_abort(&g->get);
    if (g->b != NULL) {
        bool clean = g->state == GROUP_DONE ||
                     (g->state == GROUP_READY && !backend_is_dead(g->b));
        if (g->state == GROUP_DONE || g->state == GROUP_READY) {
            backend_forget_callbacks(g->b, g);
            for (size_t i = 0; i < g->n_rcpts; i++)
                backend_forget_callbacks(g->b, g->rcpts[i]);
        }
        if (clean)
            backend_release(&g->b, g->state != GROUP_DONE);
        else
            backend_discard(&g->b);
    }
    maildir_abort(&g->md);
    buf_free(&g->mail_reply);
    free(g->rcpts);
    free(g->sent);
    free(g);
}

/* Routing one recipient */

/* Split "local+detail@domain" by recipient_delimiter (any of its chars). */
static void split_detail(const char *address, const char *delims, char **user_r,
                         char **detail_r)
{
    const char *at = strrchr(address, '@');
    size_t local_len = at != NULL ? (size_t)(at - address) : strlen(address);
    size_t cut = local_len;
    if (delims[0] != '\0') {
        for (size_t i = 0; i < local_len; i++) {
            if (strchr(delims, address[i]) != NULL) {
                cut = i;
                break;
            }
        }
    }
    *detail_r = cut < local_len ? xstrndup(address + cut + 1, local_len - cut - 1) : NULL;
    *user_r = xasprintf("%.*s%s", (int)cut, address, at != NULL ? at : "");
}

/* destuser (or a rewritten user) changes the address the backend gets; the
 * +detail is put back. */
static char *backend_address(const struct rcpt *r, const char *destuser, const char *delims)
{
    if (destuser == NULL || destuser[0] == '\0')
        return xstrdup(r->address);
    const char *at = strrchr(destuser, '@');
    const char *orig_at = strrchr(r->address, '@');
    size_t local_len = at != NULL ? (size_t)(at - destuser) : strlen(destuser);
    const char *domain = at != NULL ? at : orig_at != NULL ? orig_at : "";
    if (r->detail != NULL && delims[0] != '\0')
        return xasprintf("%.*s%c%s%s", (int)local_len, destuser, delims[0], r->detail, domain);
    return xasprintf("%.*s%s", (int)local_len, destuser, domain);
}

static void route_local(struct rcpt *r)
{
    struct session *sess = txn_session(r->txn);
    const struct settings *set = sess->env->set;
    struct backend_target bt;
    r->backend_address = backend_address(r, NULL, set->recipient_delimiter);
    if (strncmp(set->lmtp_local, "maildir:", 8) == 0) {
        memset(&bt, 0, sizeof(bt));
        snprintf(bt.key, sizeof(bt.key), "maildir");
        group_add(group_get(r->txn, &bt, true), r);
    } else if (backend_target_local(&bt, set)) {
        group_add(group_get(r->txn, &bt, false), r);
    } else {
        log_error("lmtp(%s): <%s> is local but lmtp_local is not set", sess->id, r->address);
        rcpt_reply(r, "451 4.3.0 <%s> No local delivery configured", r->address);
    }
}

static void route_proxy(struct rcpt *r)
{
    struct session *sess = txn_session(r->txn);
    const struct settings *set = sess->env->set;
    const struct route_target *rt = &r->decision.target;
    struct backend_target bt;
    if (rt->ip.family == 0) {
        rcpt_reply(r, "451 4.3.0 <%s> Temporary user lookup failure", r->address);
        return;
    }
    backend_target_from_route(&bt, rt, set);
    r->backend_address = backend_address(r, rt->destuser, set->recipient_delimiter);
    group_add(group_get(r->txn, &bt, false), r);
}

static void route_referral(struct rcpt *r)
{
    const struct settings *set = txn_session(r->txn)->env->set;
    const struct route_target *rt = &r->decision.target;
    if (set->lmtp_referrals == LMTP_REFERRALS_FOLLOW) {
        route_proxy(r);
        return;
    }
    const char *user = rt->destuser != NULL ? rt->destuser : r->user;
    if (rt->ip.port != 0 && rt->ip.port != 24)
        rcpt_reply(r, "550 5.2.900 %s@%s:%u Referral", user, rt->host, rt->ip.port);
    else
        rcpt_reply(r, "550 5.2.900 %s@%s Referral", user, rt->host);
}

static void rcpt_dispatch(struct rcpt *r)
{
    const struct route_decision *d = &r->decision;
    if (d->log_detail != NULL)
        log_info("lmtp(%s): <%s>: %s", txn_session(r->txn)->id, r->address, d->log_detail);
    switch (d->kind) {
    case ROUTE_PROXY: route_proxy(r); break;
    case ROUTE_REFERRAL: route_referral(r); break;
    case ROUTE_LOCAL: route_local(r); break;
    case ROUTE_LOOP:
        if (d->loop == ROUTE_LOOP_TTL)
            rcpt_reply(r, "554 5.4.6 <%s> Proxying appears to be looping (TTL=0)", r->address);
        else
            rcpt_reply(r, "554 5.4.6 <%s> Proxying loops to itself", r->address);
        break;
    case ROUTE_REFUSE:
        rcpt_reply(r, "550 5.1.1 <%s> User doesn't exist", r->address);
        break;
    case ROUTE_TEMPFAIL:
        rcpt_reply(r, "451 4.3.0 <%s> Temporary user lookup failure", r->address);
        break;
    }
}

static void on_delay_over(void *ctx)
{
    struct rcpt *r = ctx;
    timer_free(&r->delay);
    rcpt_dispatch(r);
    txn_kick(r->txn);
}

static void decide(struct rcpt *r, const struct addr *ips, size_t n_ips)
{
    struct session *sess = txn_session(r->txn);
    const struct settings *set = sess->env->set;
    struct route_input in = {
        .result = r->result,
        .fields = &r->fields,
        .user = r->user,
        .protocol = ROUTE_PROTO_LMTP,
        .ttl = sess->ttl,
        .self = sess->env->self,
        .host_ips = ips,
        .n_host_ips = n_ips,
        .now_ms = wall_now_ms(),
        .random = random_u64(),
        .delay_until_max_ms = set->delay_until_max_ms,
    };
    route_decide(&in, &r->decision);
    r->have_decision = true;
    uint64_t now = wall_now_ms();
    if (r->decision.delay_until_ms > now) {
        r->state = RCPT_DELAY;
        r->delay = timer_new(sess->env->loop, on_delay_over, r);
        timer_start(r->delay, r->decision.delay_until_ms - now);
        return;
    }
    rcpt_dispatch(r);
}

static void on_resolved(void *ctx, const struct addr *addrs, size_t n, const char *err)
{
    struct rcpt *r = ctx;
    r->resolve = NULL;
    if (err != NULL)
        log_info("lmtp(%s): <%s>: DNS lookup failed: %s", txn_session(r->txn)->id, r->address,
                 err);
    decide(r, addrs, n);
    txn_kick(r->txn);
}

static void on_lookup(const struct passdb_reply *reply, void *ctx)
{
    struct rcpt *r = ctx;
    r->lookup = NULL;
    r->result = reply->result;
    fields_copy(&r->fields, reply->fields);
    if (reply->error != NULL)
        log_warn("lmtp(%s): <%s>: passdb: %s", txn_session(r->txn)->id, r->address,
                 reply->error);
    /* A rewritten user name changes the delivery address (Dovecot 2.3). */
    if (reply->result == PASSDB_OK && reply->user != NULL && strcmp(reply->user, r->user) != 0 &&
        !fields_has(&r->fields, "destuser"))
        fields_set(&r->fields, "destuser", reply->user);
    const char *host = route_host_to_resolve(reply->result, &r->fields);
    if (host != NULL) {
        r->state = RCPT_RESOLVE;
        r->resolve = resolve_host(txn_session(r->txn)->env->loop, host, on_resolved, r);
        return;
    }
    decide(r, NULL, 0);
    txn_kick(r->txn);
}

void txn_add_rcpt(struct txn *t, struct cmd *cmd, const char *address, const char *params)
{
    struct session *sess = txn_session(t);
    const struct settings *set = sess->env->set;
    struct rcpt *r = xcalloc(1, sizeof(*r));
    r->txn = t;
    r->cmd = cmd;
    r->index = (unsigned)t->n_rcpts;
    r->address = xstrdup(address);
    r->params = xstrdup(params);
    r->start_ms = loop_now_ms(sess->env->loop);
    split_detail(address, set->recipient_delimiter, &r->user, &r->detail);
    t->rcpts = xrealloc(t->rcpts, (t->n_rcpts + 1) * sizeof(*t->rcpts));
    t->rcpts[t->n_rcpts++] = r;
    if (!set->lmtp_proxy) {
        r->decision.kind = ROUTE_LOCAL;
        r->have_decision = true;
        route_local(r);
        return;
    }
    struct passdb_request req = {
        .user = r->user,
        .service = "lmtp",
        .session = t->id,
        .local = *stream_local(sess->s),
        .remote = sess->client_addr,
        .real_local = *stream_local(sess->s),
        .real_remote = *stream_peer(sess->s),
    };
    r->state = RCPT_LOOKUP;
    r->lookup = passdb_lookup(sess->env->passdb, &req, on_lookup, r);
}

static void rcpt_free(struct rcpt *r)
{
    passdb_lookup_abort(&r->lookup);
    resolve_abort(&r->resolve);
    timer_free(&r->delay);
    fields_free(&r->fields);
    if (r->have_decision)
        route_decision_free(&r->decision);
    free(r->address);
    free(r->params);
    free(r->user);
    free(r->detail);
    free(r->backend_address);
    free(r->final_reply);
    free(r);
}

/* Final replies after DATA */

static void rcpt_final(struct rcpt *r, const char *fmt, ...)
{
    if (r->final_done)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    r->final_reply = xstrdup(line);
    r->final_done = true;
}

static void group_done(struct group *g)
{
    g->state = GROUP_DONE;
    if (g->b != NULL) {
        backend_forget_callbacks(g->b, g);
        backend_release(&g->b, false);
    }
}

/* The group cannot finish: every recipient still waiting gets a 4xx (or the
 * given reply), and the connection is closed (it may be mid-DATA). */
static void group_abort(struct group *g, const char *why)
{
    char line[512];
    for (size_t i = 0; i < g->n_sent; i++) {
        struct rcpt *r = g->sent[i];
        if (r->final_done)
            continue;
        if (why != NULL) {
            rcpt_final(r, "%s", why);
        } else {
            proxy_failed_text(line, sizeof(line), r, g->b);
            rcpt_final(r, "%s", line);
        }
    }
    if (g->b != NULL)
        backend_discard(&g->b);
    maildir_abort(&g->md);
    g->state = GROUP_DONE;
}

/* One recipient's final reply from its backend's answer to the data. */
static void final_from_reply(struct rcpt *r, const struct smtp_reply *reply)
{
    struct group *g = r->group;
    char line[1024];
    if (reply == NULL) {
        proxy_failed_text(line, sizeof(line), r, g->b);
        rcpt_final(r, "%s", line);
    } else if (reply->code / 100 == 2) {
        rcpt_final(r, "250 2.0.0 <%s> %s Saved", r->address, r->txn->id);
    } else {
        backend_reply_text(line, sizeof(line), r, reply);
        rcpt_final(r, "%s", line);
    }
}

/* Kicking the session may finish and free the transaction: it comes last,
 * after the group is done with its own fields. */
static void on_final_reply(void *ctx, const struct smtp_reply *reply)
{
    struct rcpt *r = ctx;
    struct group *g = r->group;
    struct txn *t = r->txn;
    final_from_reply(r, reply);
    if (g->n_replies_left > 0 && --g->n_replies_left == 0 && g->state == GROUP_REPLIES)
        group_done(g);
    txn_kick(t);
}

/* SMTP backends answer DATA once for all their recipients. */
static void on_smtp_final(void *ctx, const struct smtp_reply *reply)
{
    struct group *g = ctx;
    struct txn *t = g->txn;
    for (size_t i = 0; i < g->n_sent; i++)
        final_from_reply(g->sent[i], reply);
    g->n_replies_left = 0;
    if (g->state == GROUP_REPLIES)
        group_done(g);
    txn_kick(t);
}

static void on_maildir_done(void *ctx, bool ok)
{
    struct group *g = ctx;
    g->md = NULL;
    for (size_t i = 0; i < g->n_sent; i++) {
        struct rcpt *r = g->sent[i];
        if (ok)
            rcpt_final(r, "250 2.0.0 <%s> %s Saved", r->address, r->txn->id);
        else
            rcpt_final(r, "451 4.3.0 <%s> Temporary failure in local delivery", r->address);
    }
    g->state = GROUP_DONE;
    txn_kick(g->txn);
}

/* All body bytes were sent: end the data (final dot, or the last BDAT when
 * no chunk carried LAST) and wait for the replies. */
static void group_finish_body(struct group *g)
{
    struct txn *t = g->txn;
    if (g->maildir) {
        g->state = GROUP_REPLIES;
        maildir_commit(g->md, txn_session(t)->env->loop, on_maildir_done, g);
        return;
    }
    if (g->bdat) {
        if (!g->bdat_last_sent)
            backend_write(g->b, "BDAT 0 LAST\r\n", 13);
    } else {
        struct buf end = BUF_INIT;
        dot_encode_end(&g->enc, &end);
        backend_write(g->b, buf_ptr(&end), buf_used(&end));
        buf_free(&end);
    }
    g->state = GROUP_REPLIES;
    if (g->target.protocol == ROUTE_PROTO_SMTP) {
        g->n_replies_left = 1;
        backend_expect(g->b, on_smtp_final, g);
        return;
    }
    g->n_replies_left = g->n_sent;
    for (size_t i = 0; i < g->n_sent; i++)
        backend_expect(g->b, on_final_reply, g->sent[i]);
}

/* A BDAT chunk that was not the last one was refused: the backend's answer
 * goes to every recipient of the group; the session cannot be trusted. */
static void on_bdat_chunk(void *ctx, const struct smtp_reply *reply)
{
    struct group *g = ctx;
    if (reply != NULL && reply->code / 100 == 2)
        return;
    char line[1024];
    for (size_t i = 0; reply != NULL && i < g->n_sent; i++) {
        backend_reply_text(line, sizeof(line), g->sent[i], reply);
        rcpt_final(g->sent[i], "%s", line);
    }
    group_abort(g, NULL);
    txn_kick(g->txn);
}

/* DATA: dot-stuff toward the backend. Runs that need no stuffing (nearly
 * everything in real mail) go from the body straight into the backend's
 * output; only around an insertion does the encoder copy. Where insertions
 * are dense (short runs: many bare LFs or dot lines) a bigger piece is
 * encoded at once, so no input costs more than encoding all of it. */
static void send_stuffed(struct group *g, const char *p, size_t n, struct buf *enc)
{
    while (n > 0) {
        size_t run = dot_encode_verbatim(&g->enc, p, n);
        backend_write(g->b, p, run);
        p += run;
        n -= run;
        if (n == 0)
            break;
        size_t piece = run >= STUFF_SHORT_RUN ? 1 : n < STUFF_DENSE_PIECE ? n : STUFF_DENSE_PIECE;
        buf_reset(enc);
        dot_encode(&g->enc, p, piece, enc);
        backend_write(g->b, buf_ptr(enc), buf_used(enc));
        p += piece;
        n -= piece;
    }
}

/* Send body bytes as they are: with CHUNKING a BDAT per chunk (the last one
 * says LAST when the client's data is complete), else dot-stuffed DATA. */
static void send_body_bytes(struct group *g, const char *p, size_t n, struct buf *enc)
{
    struct txn *t = g->txn;
    if (g->bdat) {
        bool last = t->data_complete && g->offset + n == body_size(t->body);
        char head[64];
        int hl = snprintf(head, sizeof(head), "BDAT %zu%s\r\n", n, last ? " LAST" : "");
        backend_write(g->b, head, (size_t)hl);
        backend_write(g->b, p, n);
        if (last)
            g->bdat_last_sent = true;
        else
            backend_expect(g->b, on_bdat_chunk, g);
        return;
    }
    send_stuffed(g, p, n, enc);
}

/* The backend took enough: pump every group (this one and any other that
 * waited for the memory it held), release, and let the client go on. */
static void on_group_drained(void *ctx)
{
    struct group *g = ctx;
    txn_schedule_pump(g->txn);
}

/* Move body bytes to the backend while its output queue has room. */
static void group_pump(void *ctx)
{
    struct group *g = ctx;
    struct txn *t = g->txn;
    struct buf enc = BUF_INIT;
    while (g->state == GROUP_STREAMING) {
        if (!g->maildir && backend_output_pending(g->b) >= PUMP_HIGH) {
            backend_want_drain(g->b, PUMP_LOW, on_group_drained, g);
            break;
        }
        const char *p;
        long n = body_read(t->body, g->offset, t->scratch, PUMP_CHUNK, &p);
        if (n < 0) {
            group_abort(g, NULL);
            break;
        }
        if (n == 0) {
            if (t->data_complete)
                group_finish_body(g);
            break;
        }
        if (g->maildir)
            maildir_write(g->md, p, (size_t)n);
        else
            send_body_bytes(g, p, (size_t)n, &enc);
        g->offset += (uint64_t)n;
    }
    buf_free(&enc);
}

static void on_data_reply(void *ctx, const struct smtp_reply *reply)
{
    struct group *g = ctx;
    char line[1024];
    if (reply != NULL && reply->code == 354) {
        g->state = GROUP_STREAMING;
        group_pump(g);
        return;
    }
    for (size_t i = 0; i < g->n_sent; i++) {
        struct rcpt *r = g->sent[i];
        if (reply == NULL)
            proxy_failed_text(line, sizeof(line), r, g->b);
        else
            backend_reply_text(line, sizeof(line), r, reply);
        rcpt_final(r, "%s", line);
    }
    g->state = GROUP_DONE;
    if (g->b != NULL && reply != NULL) {
        backend_forget_callbacks(g->b, g);
        backend_release(&g->b, true);
    }
    txn_kick(g->txn);
}

/* While the body streams nothing waits for a reply: a dead connection is
 * learnt here. Its recipients get 4xx, nobody else is touched. */
static void on_backend_failed(void *ctx)
{
    struct group *g = ctx;
    if (g->state != GROUP_STREAMING || g->b == NULL)
        return; /* the DATA or final-reply waiters report it */
    group_abort(g, NULL);
    txn_kick(g->txn);
}

static void group_start_data(struct group *g)
{
    if (g->n_sent == 0) {
        /* nobody accepted here: let the connection go back to the pool */
        if (g->b != NULL) {
            backend_forget_callbacks(g->b, g);
            backend_release(&g->b, true);
        }
        backend_get_abort(&g->get);
        g->state = GROUP_DONE;
        return;
    }
    if (g->maildir) {
        const char *err = NULL;
        g->md = maildir_open(g, txn_session(g->txn)->env->set, &err);
        if (g->md == NULL) {
            group_abort(g, NULL);
            for (size_t i = 0; i < g->n_sent; i++) {
                struct rcpt *r = g->sent[i];
                free(r->final_reply);
                r->final_reply = xasprintf("451 4.3.0 <%s> Temporary failure in local delivery",
                                           r->address);
            }
            return;
        }
        g->state = GROUP_STREAMING;
        return;
    }
    backend_on_failure(g->b, on_backend_failed, g);
    if (backend_has_ext(g->b, "CHUNKING")) {
        /* No 354 to wait for: BDAT chunks can follow the RCPTs at once. */
        g->bdat = true;
        g->state = GROUP_STREAMING;
        return;
    }
    g->state = GROUP_DATA;
    backend_cmd(g->b, "DATA", on_data_reply, g);
}

/* Transaction */

static void on_deadline(void *ctx)
{
    struct txn *t = ctx;
    for (size_t i = 0; i < t->n_groups; i++) {
        struct group *g = t->groups[i];
        if (g->state != GROUP_DONE) {
            char why[600];
            for (size_t k = 0; k < g->n_sent; k++) {
                struct rcpt *r = g->sent[k];
                snprintf(why, sizeof(why), "451 4.4.0 <%s> Remote server not answering "
                         "(transaction timed out)", r->address);
                rcpt_final(r, "%s", why);
            }
            group_abort(g, NULL);
        }
    }
    txn_kick(t);
}

static void add_received_header(struct txn *t)
{
    struct session *sess = txn_session(t);
    const struct settings *set = sess->env->set;
    char date[64], ip[ADDR_STRLEN], safe_helo[256];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
    const char *helo = sess->client_helo != NULL ? sess->client_helo : "unknown";
    addr_ip_str(&sess->client_addr, ip, sizeof(ip));
    struct buf h = BUF_INIT;
    buf_printf(&h, "Received: from %s (%s%s%s)\r\n\tby %s with LMTP id %s;\r\n\t%s\r\n",
               log_sanitize(safe_helo, sizeof(safe_helo), helo), ip[0] ? "[" : "localhost",
               ip, ip[0] ? "]" : "", set->hostname, t->id, date);
    const char *err;
    body_append(t->body, buf_ptr(&h), buf_used(&h), &err);
    buf_free(&h);
}

/* The body spooled after holding the client: read it again. */
static void on_hold_over(void *ctx)
{
    txn_kick(ctx);
}

static struct body *txn_body(struct txn *t)
{
    if (t->body == NULL) {
        const struct proto_env *env = txn_session(t)->env;
        const struct settings *set = env->set;
        t->body = body_new(set->lmtp_spool_threshold, set->mail_temp_dir);
        body_set_hold(t->body, env->loop, HOLD_STALL_MS, HOLD_TOTAL_MS, on_hold_over, t);
        if (set->lmtp_add_received_header)
            add_received_header(t);
    }
    return t->body;
}

struct txn *txn_new(struct session *sess, const char *from, const char *params)
{
    struct txn *t = xcalloc(1, sizeof(*t));
    t->sess = sess;
    sid_new(t->id);
    t->mail_from = xstrdup(from);
    t->mail_params = xstrdup(params);
    return t;
}

/* What every group still delivering has already taken can leave memory. */
static void release_consumed(struct txn *t)
{
    uint64_t low = body_size(t->body);
    for (size_t i = 0; i < t->n_groups; i++) {
        const struct group *g = t->groups[i];
        if (g->state != GROUP_DONE && g->state != GROUP_REPLIES && g->offset < low)
            low = g->offset;
    }
    body_release(t->body, low);
}

static void txn_pump(void *ctx)
{
    struct txn *t = ctx;
    t->pump_scheduled = false;
    for (size_t i = 0; i < t->n_groups; i++) {
        if (t->groups[i]->state == GROUP_STREAMING)
            group_pump(t->groups[i]);
    }
    release_consumed(t);
    txn_kick(t);
}

/* Body bytes are pushed to the backends once per loop iteration, after
 * everything the client sent in it was read: fewer, larger writes, and a
 * small message goes out as one BDAT LAST. */
static void txn_schedule_pump(struct txn *t)
{
    if (t->pump_scheduled)
        return;
    t->pump_scheduled = true;
    loop_defer(txn_session(t)->env->loop, txn_pump, t);
}

void txn_data_begin(struct txn *t, struct cmd *data_cmd)
{
    t->data_cmd = data_cmd;
    t->data_accepted = true;
    txn_body(t);
    if (t->scratch == NULL)
        t->scratch = xmalloc(PUMP_CHUNK);
    for (size_t i = 0; i < t->n_groups; i++)
        group_start_data(t->groups[i]);
    txn_schedule_pump(t);
}

void txn_data_append(struct txn *t, const char *data, size_t n)
{
    const struct settings *set = txn_session(t)->env->set;
    t->client_bytes += n;
    if (t->too_big || t->body_failed)
        return;
    if (set->lmtp_max_message_size > 0 && t->client_bytes > set->lmtp_max_message_size) {
        t->too_big = true;
        return;
    }
    if (!body_append(txn_body(t), data, n, &t->body_error)) {
        t->body_failed = true;
        return;
    }
    if (t->data_accepted)
        txn_schedule_pump(t);
}

/* For the session, before it reads more of the client's data: false while
 * the body waits for the backends (the session pauses the client; it is run
 * again when they made room, or once the body spooled). */
bool txn_data_wanted(struct txn *t)
{
    return t->body == NULL || t->too_big || t->body_failed || !body_hold(t->body);
}

void txn_data_end(struct txn *t)
{
    struct session *sess = txn_session(t);
    t->data_complete = true;
    txn_body(t); /* exists since txn_data_begin(); made sure of for the pumps below */
    if (t->too_big || t->body_failed) {
        for (size_t i = 0; i < t->n_groups; i++) {
            struct group *g = t->groups[i];
            for (size_t k = 0; k < g->n_sent; k++) {
                struct rcpt *r = g->sent[k];
                if (t->too_big)
                    rcpt_final(r, "552 5.3.4 <%s> Message size exceeds fixed maximum message "
                               "size", r->address);
                else
                    rcpt_final(r, "451 4.3.0 <%s> Temporary failure: %s", r->address,
                               t->body_error);
            }
            group_abort(g, NULL);
        }
    } else {
        txn_schedule_pump(t);
        t->deadline = timer_new(sess->env->loop, on_deadline, t);
        timer_start(t->deadline, sess->env->set->lmtp_transaction_timeout_ms);
    }
    txn_kick(t);
}

/* Append the final replies that are ready, in RCPT order. */
void txn_flush_replies(struct txn *t)
{
    if (t->data_cmd == NULL || t->data_cmd->done || !t->data_complete)
        return;
    while (t->next_reply < t->n_rcpts) {
        struct rcpt *r = t->rcpts[t->next_reply];
        if (r->accepted) {
            if (!r->final_done)
                return;
            buf_printf(&t->data_cmd->reply, "%s\r\n", r->final_reply);
            session_log_rcpt(r, r->final_reply);
        }
        t->next_reply++;
    }
    t->data_cmd->done = true;
}

bool txn_finished(const struct txn *t)
{
    return t->data_cmd != NULL && t->data_cmd->done;
}

void txn_free(struct txn **tp)
{
    struct txn *t = *tp;
    if (t == NULL)
        return;
    *tp = NULL;
    if (t->pump_scheduled)
        loop_defer_cancel(txn_session(t)->env->loop, txn_pump, t);
    for (size_t i = 0; i < t->n_groups; i++)
        group_free(t->groups[i]);
    for (size_t i = 0; i < t->n_rcpts; i++)
        rcpt_free(t->rcpts[i]);
    timer_free(&t->deadline);
    body_free(&t->body);
    free(t->groups);
    free(t->rcpts);
    free(t->mail_from);
    free(t->mail_params);
    free(t->scratch);
    free(t);
}
