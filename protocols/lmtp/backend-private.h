/* backend-private - struct backend and the pool's view of it; shared by
 * backend.c (the connection) and backend-pool.c (idle connections). */
#ifndef MR_BACKEND_PRIVATE_H
#define MR_BACKEND_PRIVATE_H

#include "backend.h"
#include "loop.h"

enum backend_state {
    B_CONNECTING,
    B_GREETING,
    B_HELLO,
    B_XCLIENT,
    B_READY,
    B_DEAD,
};

struct waiter {
    backend_reply_fn *fn;
    void *ctx;
};

struct queued_cmd {
    char *line;
    struct waiter w;
};

struct backend_get {
    struct backend *b;
    backend_ready_fn *fn;
    void *ctx;
    char *helo, *proto, *session;
    struct addr addr;
    bool has_addr;
    int ttl;
    struct loop *loop;
    bool deferred;   /* ready from the pool: called back on the next iteration */
};

struct backend {
    struct loop *loop;
    struct backend_pool *pool;
    struct backend_target t;
    struct stream *s;
    struct stream_connect *conn;
    enum backend_state state;
    struct smtp_reply reply;
    struct smtp_reply caps;
    bool pipelining;
    bool reused;
    bool idle;                /* in the pool */
    char *xclient_sig;

    struct waiter *waiting;   /* replies expected, oldest first */
    size_t n_waiting, cap_waiting;
    struct queued_cmd *queued; /* not sent yet (no PIPELINING) */
    size_t n_queued, cap_queued;

    struct timer *timer;
    enum backend_failure failure;
    char error[256];
    struct backend_get *getter;
    void (*drain_fn)(void *ctx);
    void *drain_ctx;
    void (*fail_fn)(void *ctx);   /* told when the connection dies, waiters or not */
    void *fail_ctx;
    struct tls_client *tls_client; /* a reference: pooled backends outlive reloads */
    struct backend *limbo_prev, *limbo_next; /* RSET in flight: the pool's until answered */
    bool in_limbo;
    int busy;                 /* callbacks on the stack */
    bool released;            /* free once busy drops to 0 */
};

/* Deferred: fail the waiters queued on a dead backend. */
void backend_fail_late_waiters(void *ctx);

/* Pool (backend-pool.c) */
struct backend *backend_pool_take(struct backend_pool *p, const char *key);
/* Keep an idle READY backend (closed instead when the pool is full). */
void backend_pool_put(struct backend_pool *p, struct backend *b);
/* An idle backend closed or timed out: remove and free it. */
void backend_pool_drop(struct backend_pool *p, struct backend *b);
void backend_pool_note_failure(struct backend_pool *p, const char *key);
/* Did a connect to key fail less than ms ago? */
bool backend_pool_failing(struct backend_pool *p, const char *key, uint64_t ms);
void backend_pool_set_limits(struct backend_pool *p, unsigned max_idle, uint64_t idle_ms);
/* Released with RSET in flight: the pool owns it until the reply (so it is
 * freed with the pool at shutdown). */
void backend_pool_hold(struct backend_pool *p, struct backend *b);
void backend_pool_unhold(struct backend_pool *p, struct backend *b);
/* Free a backend that belongs to nobody (not in the pool). */
void backend_pool_free_backend(struct backend *b);

#endif
