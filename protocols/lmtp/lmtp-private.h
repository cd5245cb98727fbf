/* lmtp-private - the objects of one LMTP session, shared by session.c (the
 * server side facing Postfix), txn.c (recipients and delivery groups) and
 * maildir.c (built-in local delivery).
 *
 * Ownership: a session owns its command queue and at most one transaction;
 * a transaction owns its recipients, groups and body; a group borrows its
 * recipients and owns its backend connection (or maildir files). Async work
 * (passdb lookups, DNS, timers, backend callbacks) is cancelled by whoever
 * owns the object that started it, in its free function. */
#ifndef MR_LMTP_PRIVATE_H
#define MR_LMTP_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "body.h"
#include "buf.h"
#include "dot.h"
#include "lmtp.h"
#include "resolve.h"
#include "sid.h"
#include "smtp-cmd.h"

struct session;
struct txn;
struct group;
struct maildir_sink;

/* One queued command and its reply (replies leave in command order). */
struct cmd {
    struct cmd *next;
    char *line;           /* the command line as received */
    enum smtp_verb verb;
    bool executed;
    bool done;            /* reply complete: it can leave once all before it left */
    struct buf reply;     /* reply text not yet written (DATA fills it per recipient) */
};

enum rcpt_state { RCPT_LOOKUP, RCPT_RESOLVE, RCPT_DELAY, RCPT_BACKEND, RCPT_DONE };

struct rcpt {
    struct txn *txn;
    struct cmd *cmd;
    unsigned index;
    char *address;        /* as the client sent it, without <> */
    char *params;         /* the client's RCPT parameters, as sent ("" if none) */
    char *user;           /* passdb lookup key: the address without +detail */
    char *detail;         /* the +detail, NULL when none */
    char *backend_address;/* what the backend gets in RCPT TO */
    enum rcpt_state state;
    struct passdb_lookup *lookup;
    struct resolve *resolve;
    struct timer *delay;
    enum passdb_result result;
    struct fields fields;
    struct route_decision decision;
    bool have_decision;
    struct group *group;
    bool accepted;        /* RCPT answered 2xx */
    bool final_done;      /* after DATA: final reply known */
    char *final_reply;
    uint64_t start_ms;
};

enum group_state {
    GROUP_CONNECTING,
    GROUP_READY,          /* MAIL (and RCPTs) sent */
    GROUP_DATA,           /* DATA sent, waiting for 354 */
    GROUP_STREAMING,
    GROUP_REPLIES,        /* final dot sent, waiting for replies */
    GROUP_DONE,
};

struct group {
    struct txn *txn;
    struct backend_target target;
    bool maildir;                 /* built-in local delivery */
    enum group_state state;
    struct backend_get *get;
    struct backend *b;
    struct rcpt **rcpts;          /* assigned, in RCPT order */
    size_t n_rcpts;
    struct rcpt **sent;           /* RCPT sent to the backend, in order */
    size_t n_sent;
    size_t n_replies_left;
    bool mail_sent;
    bool mail_failed;
    struct buf mail_reply;        /* the MAIL failure reply, given to every recipient */
    uint64_t offset;              /* body bytes pumped */
    struct dot_encoder enc;
    struct maildir_sink *md;
    bool failed;
    bool bdat;                    /* the backend takes BDAT: no dot-stuffing, no 354 wait */
    bool bdat_last_sent;
};

struct txn {
    struct session *sess;
    char id[SID_LEN + 1];
    char *mail_from;
    char *mail_params;
    struct rcpt **rcpts;
    size_t n_rcpts;
    size_t n_accepted;
    struct group **groups;
    size_t n_groups;
    struct body *body;
    struct cmd *data_cmd;         /* the DATA/BDAT LAST command being answered */
    bool data_accepted;           /* 354 sent / BDAT accepted */
    bool data_complete;           /* the client's data is all here */
    bool too_big;
    bool body_failed;
    const char *body_error;
    uint64_t client_bytes;        /* message bytes received from the client */
    struct timer *deadline;
    size_t next_reply;            /* index into rcpts of the next final reply */
    char *scratch;                /* read buffer for pumping the body */
    bool pump_scheduled;
};

struct session {
    struct session *next, *prev;  /* the worker's session list */
    struct proto_env *env;
    struct stream *s;
    char id[SID_LEN + 1];
    unsigned txn_count;
    char *helo;
    bool trusted;
    bool quitting;
    bool draining;
    bool running, rerun, closing;
    bool starttls_pending;        /* 220 queued: start TLS once it is written */
    uint64_t idle_timeout_ms;
    /* client identity, possibly forwarded by XCLIENT from a trusted peer */
    struct addr client_addr;
    char *client_helo;
    int ttl;
    /* command queue */
    struct cmd *queue_head, *queue_tail;
    unsigned queue_len;
    enum { IN_COMMANDS, IN_DATA_WAIT, IN_DATA, IN_BDAT } input;
    uint64_t bdat_left;
    struct cmd *bdat_cmd;         /* the BDAT whose chunk is being read */
    bool bdat_last;
    bool skipping_line;
    struct dot_decoder dot;
    struct buf decoded;
    struct txn *txn;
    struct smtp_cmd parsed;       /* scratch for parsing (large: not on the stack) */
};

/* session.c */
void session_cmd_done(struct session *sess, struct cmd *cmd);
void session_reply(struct session *sess, struct cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void session_run(struct session *sess);
void session_log_rcpt(const struct rcpt *r, const char *reply);

/* txn.c */
struct txn *txn_new(struct session *sess, const char *from, const char *params);
void txn_free(struct txn **t);
/* Start routing one recipient; its reply lands in cmd. */
void txn_add_rcpt(struct txn *t, struct cmd *cmd, const char *address, const char *params);
/* The client's DATA/BDAT was accepted: start the groups. */
void txn_data_begin(struct txn *t, struct cmd *data_cmd);
void txn_data_append(struct txn *t, const char *data, size_t n);
/* False while the body waits for the backends (the window in memory is
 * full): pause the client's input; the session is run again when there is
 * room, or once the body spooled because a backend stalled. */
bool txn_data_wanted(struct txn *t);
void txn_data_end(struct txn *t);
/* Final replies may now be written (the DATA cmd is at the head). */
void txn_flush_replies(struct txn *t);
bool txn_finished(const struct txn *t);

/* maildir.c */
struct maildir_sink *maildir_open(struct group *g, const struct settings *set, const char **error_r);
void maildir_write(struct maildir_sink *md, const char *data, size_t n);
/* Finish: fsync and move into new/ off the loop; done(ctx, ok) later. */
void maildir_commit(struct maildir_sink *md, struct loop *loop, void (*done)(void *ctx, bool ok),
                    void *ctx);
void maildir_abort(struct maildir_sink **md);

#endif
