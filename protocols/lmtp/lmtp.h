/* lmtp - the LMTP router: Postfix speaks LMTP to us, we route every
 * recipient by passdb and forward to backends over LMTP or SMTP.
 *
 * Public entry points for the daemon. Sessions keep the proto_env (env.h)
 * they started with, so a reload never changes the rules under an open
 * transaction. */
#ifndef MR_LMTP_H
#define MR_LMTP_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "env.h"
#include "loop.h"
#include "passdb.h"
#include "route.h"
#include "stream.h"

struct backend_pool;

/* Serve one accepted connection (takes ownership of the stream);
 * implicit_tls: the listener has "ssl = yes". */
void lmtp_session_start(struct proto_env *env, struct stream *s, bool implicit_tls);

/* Sessions in this worker; lmtp_sessions_drain() closes the idle ones now
 * and the rest once their transaction is over. */
unsigned lmtp_sessions_count(void);
void lmtp_sessions_drain(void);
void lmtp_sessions_kill(void);

struct backend_pool *backend_pool_new(struct loop *loop);
void backend_pool_free(struct backend_pool **pool);
void backend_pool_set_limits(struct backend_pool *p, unsigned max_idle, uint64_t idle_ms);

#endif
