/* relay.c - the post-login byte pump. Each direction is a "pipe" from one
 * stream to the other; a pipe stops reading while its destination's queue is
 * above RELAY_HIGH and resumes from the destination's on_drain. */
#include "relay.h"

#include <stdbool.h>
#include <stdlib.h>

#include "mem.h"

struct pipe {
    struct relay *r;
    struct stream **from;
    struct stream **to;
    uint64_t *counter;
    enum relay_end end;  /* what it means when "from" closes */
};

struct relay {
    struct stream *client;
    struct stream *backend;
    struct pipe up;      /* client -> backend */
    struct pipe down;    /* backend -> client */
    struct relay_stats stats;
    relay_done_fn *fn;
    void *ctx;
    bool ended;
};

static void relay_end(struct relay *r, enum relay_end end, int err)
{
    if (r->ended)
        return;
    r->ended = true;
    r->stats.err = err;
    /* What the backend said before closing (its BYE) still reaches the
     * client. What a client that left had queued for the backend has
     * nobody to answer to, and flushing it could wait on a backend that is
     * itself stuck writing to us: the backend is closed at once, as on
     * shutdown, when nothing may wait on a client that stopped reading. */
    if (r->client != NULL && end == RELAY_END_BACKEND)
        stream_close_after_flush(r->client);
    else
        stream_destroy(&r->client);
    stream_destroy(&r->backend);
    r->client = r->backend = NULL;
    relay_done_fn *fn = r->fn;
    void *ctx = r->ctx;
    struct relay_stats stats = r->stats;
    free(r);
    fn(ctx, end, &stats);
}

static void pipe_drained(void *ctx);

static void pipe_move(struct pipe *p)
{
    struct buf *in = stream_input(*p->from);
    size_t n = buf_used(in);
    if (n == 0)
        return;
    stream_write(*p->to, buf_ptr(in), n);
    *p->counter += n;
    stream_consume(*p->from, n);
    if (stream_output_pending(*p->to) > RELAY_HIGH) {
        stream_pause(*p->from);
        stream_want_drain(*p->to, RELAY_LOW);
    }
}

static void up_input(void *ctx)
{
    struct relay *r = ctx;
    pipe_move(&r->up);
}

static void down_input(void *ctx)
{
    struct relay *r = ctx;
    pipe_move(&r->down);
}

/* on_drain of a stream means the pipe that writes into it may read again. */
static void client_drained(void *ctx)
{
    struct relay *r = ctx;
    pipe_drained(&r->down);
}

static void backend_drained(void *ctx)
{
    struct relay *r = ctx;
    pipe_drained(&r->up);
}

static void pipe_drained(void *ctx)
{
    struct pipe *p = ctx;
    stream_resume(*p->from);
}

static void client_closed(void *ctx, int err)
{
    struct relay *r = ctx;
    stream_destroy(&r->client);
    relay_end(r, RELAY_END_CLIENT, err);
}

static void backend_closed(void *ctx, int err)
{
    struct relay *r = ctx;
    stream_destroy(&r->backend);
    relay_end(r, RELAY_END_BACKEND, err);
}

static const struct stream_handler client_handler = {up_input, client_drained, client_closed};
static const struct stream_handler backend_handler = {down_input, backend_drained,
                                                      backend_closed};

struct relay *relay_start(struct stream *client, struct stream *backend, relay_done_fn *fn,
                          void *ctx)
{
    struct relay *r = xcalloc(1, sizeof(*r));
    r->client = client;
    r->backend = backend;
    r->fn = fn;
    r->ctx = ctx;
    r->up = (struct pipe){r, &r->client, &r->backend, &r->stats.bytes_in, RELAY_END_CLIENT};
    r->down = (struct pipe){r, &r->backend, &r->client, &r->stats.bytes_out, RELAY_END_BACKEND};
    stream_set_idle_timeout(client, 0);
    stream_set_idle_timeout(backend, 0);
    stream_set_handler(client, &client_handler, r);
    stream_set_handler(backend, &backend_handler, r);
    /* Bytes already buffered on either side (pipelined after login) go first. */
    stream_resume(client);
    stream_resume(backend);
    pipe_move(&r->up);
    pipe_move(&r->down);
    return r;
}

void relay_kill(struct relay *r)
{
    relay_end(r, RELAY_END_KILLED, 0);
}

const struct relay_stats *relay_stats(const struct relay *r)
{
    return &r->stats;
}
