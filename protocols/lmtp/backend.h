/* backend - one client connection to a delivery backend (LMTP or SMTP).
 *
 * States: CONNECTING -> GREETING -> HELLO (LHLO/EHLO) -> [XCLIENT -> HELLO]
 * -> READY. Once READY, commands are queued with backend_cmd(); each gets
 * its reply through its callback, in order. Commands go out at once when
 * the backend advertised PIPELINING, one at a time otherwise.
 *
 * Failure (connect, timeout, EOF, malformed reply) fails every waiting
 * command: its callback gets reply == NULL and backend_error() tells why.
 * A failed backend is dead: backend_release() frees it.
 *
 * Idle connections live in the per-worker pool (backend_pool_*), keyed by
 * the target; one that just failed to connect fails fast for a while. */
#ifndef MR_BACKEND_H
#define MR_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "lmtp.h"
#include "route.h"
#include "smtp-reply.h"
#include "stream.h"

struct backend;

/* Why a backend failed, as in Dovecot's "Proxy failed (<what>, ...)". */
enum backend_failure {
    BACKEND_OK,
    BACKEND_FAIL_CONNECT,
    BACKEND_FAIL_LOST,      /* connection lost */
    BACKEND_FAIL_TIMEOUT,
    BACKEND_FAIL_PROTOCOL,  /* bad reply */
};

typedef void backend_reply_fn(void *ctx, const struct smtp_reply *reply);
typedef void backend_ready_fn(void *ctx, struct backend *b);

/* What XCLIENT forwards to the backend, when it advertises XCLIENT. */
struct backend_client_info {
    const char *helo;
    const char *proto;   /* "LMTP", "ESMTP", ... */
    const struct addr *addr;
    const char *session;
    int ttl;
};

struct backend_target {
    char key[256];               /* pool key */
    enum route_proto protocol;   /* LMTP or SMTP */
    struct addr ip;              /* family 0 with unix_path set: UNIX socket */
    char unix_path[108];
    struct addr source_ip;
    char host[128];              /* for logs */
    char hello_name[256];        /* our name in LHLO/EHLO */
    uint64_t timeout_ms;         /* per reply */
    uint64_t connect_timeout_ms;
    bool send_xclient;           /* false with proxy_not_trusted */
    enum route_tls tls;          /* implicit TLS, STARTTLS or none */
    bool tls_verify;             /* false: any certificate (any-cert) */
    char tls_name[256];          /* what the certificate must be valid for */
};

void backend_target_from_route(struct backend_target *t, const struct route_target *rt,
                               const struct settings *set);
/* lmtp_local = inet:HOST:PORT or unix:/path; false when not such a value. */
bool backend_target_local(struct backend_target *t, const struct settings *set);

/* Get a READY backend for target: from the pool or a new connection. The
 * callback runs later with the backend, or NULL on failure (failure kind in
 * *fail_r of backend_last_failure()). Returns a handle to cancel. */
struct backend_get;
struct backend_get *backend_get(struct proto_env *env, const struct backend_target *t,
                                const struct backend_client_info *ci, backend_ready_fn *fn,
                                void *ctx);
void backend_get_abort(struct backend_get **g);

/* Queue a command line (without CRLF). */
void backend_cmd(struct backend *b, const char *line, backend_reply_fn *fn, void *ctx);
/* Expect one more reply without sending anything (LMTP: one per recipient after DATA). */
void backend_expect(struct backend *b, backend_reply_fn *fn, void *ctx);
/* Raw body bytes (already dot-encoded). */
void backend_write(struct backend *b, const void *data, size_t n);
size_t backend_output_pending(const struct backend *b);
/* Call fn(ctx) once output pending is at most low. */
void backend_want_drain(struct backend *b, size_t low, void (*fn)(void *ctx), void *ctx);
/* Call fn(ctx) when the connection fails, after the waiting callbacks (for
 * owners that wait for nothing, e.g. while streaming a body). */
void backend_on_failure(struct backend *b, void (*fn)(void *ctx), void *ctx);
/* Stop calling back into ctx (its owner is going away). */
void backend_forget_callbacks(struct backend *b, void *ctx);

bool backend_has_ext(const struct backend *b, const char *ext);
bool backend_is_dead(const struct backend *b);
bool backend_was_reused(const struct backend *b);
enum backend_failure backend_failure(const struct backend *b);
const char *backend_error(const struct backend *b);
const char *backend_failure_word(enum backend_failure f);

/* Done with it: reusable ones go back to the pool (RSET first when dirty),
 * others are closed. */
void backend_release(struct backend **b, bool dirty);
/* Close it whatever its state (e.g. in the middle of DATA). */
void backend_discard(struct backend **b);

#endif
