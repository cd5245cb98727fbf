/* relay - after login, copy bytes both ways between a client and its
 * backend, with back-pressure, until either side closes.
 *
 * No protocol parsing. A side is read only while the other side's output
 * queue is below RELAY_HIGH; when it is above, reading pauses until the
 * queue drains to RELAY_LOW. So memory per session is bounded whatever the
 * speeds, and an idle session holds no buffers (streams free them). */
#ifndef MR_RELAY_H
#define MR_RELAY_H

#include <stdint.h>

#include "stream.h"

#define RELAY_HIGH (64 * 1024)
#define RELAY_LOW (16 * 1024)

struct relay;

enum relay_end {
    RELAY_END_CLIENT,   /* the client closed (or failed) */
    RELAY_END_BACKEND,  /* the backend closed (or failed) */
    RELAY_END_KILLED,   /* relay_kill() */
};

struct relay_stats {
    uint64_t bytes_in;   /* client -> backend */
    uint64_t bytes_out;  /* backend -> client */
    int err;             /* the closing side's stream error (0: orderly close) */
};

/* Called once when the relay ended; both streams are closed by then. */
typedef void relay_done_fn(void *ctx, enum relay_end end, const struct relay_stats *stats);

/* Takes ownership of both streams. */
struct relay *relay_start(struct stream *client, struct stream *backend, relay_done_fn *fn,
                          void *ctx);
/* Close both sides now (admin kick, shutdown); fn runs with RELAY_END_KILLED. */
void relay_kill(struct relay *r);
const struct relay_stats *relay_stats(const struct relay *r);

#endif
