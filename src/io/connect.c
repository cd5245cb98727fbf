/* connect.c - outgoing TCP and UNIX-socket connections with a timeout and
 * an optional source address. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "stream-private.h"

struct stream_connect {
    struct stream *s;
    struct addr dst;          /* TCP: the peer's address, known without asking */
    uv_connect_t req;
    stream_connect_fn *fn;
    void *ctx;
    struct timer *timer;
    bool aborted;
};

static void connect_finish(struct stream_connect *c, int status)
{
    timer_free(&c->timer);
    struct stream *s = c->s;
    stream_connect_fn *fn = c->fn;
    void *ctx = c->ctx;
    bool aborted = c->aborted;
    struct addr dst = c->dst;
    free(c);
    if (aborted) {
        return; /* the stream was destroyed by stream_connect_abort() */
    }
    if (status < 0) {
        stream_destroy(&s);
        fn(ctx, NULL, status);
        return;
    }
    if (!s->is_unix) {
        stream_set_addrs(s, &dst, NULL);
        uv_tcp_nodelay(&s->h.tcp, 1);
    }
    stream_start(s);
    fn(ctx, s, 0);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct stream_connect *c = req->data;
    connect_finish(c, status);
}

static void on_connect_timeout(void *ctx)
{
    struct stream_connect *c = ctx;
    stream_connect_fn *fn = c->fn;
    void *fctx = c->ctx;
    /* Closing the handle cancels the request; on_connect then sees ECANCELED
     * and frees c without calling back again. */
    c->aborted = true;
    timer_free(&c->timer);
    stream_destroy(&c->s);
    fn(fctx, NULL, STREAM_ETIMEDOUT);
}

static struct stream_connect *connect_new(struct loop *loop, bool is_unix, uint64_t timeout_ms,
                                          stream_connect_fn *fn, void *ctx)
{
    struct stream_connect *c = xcalloc(1, sizeof(*c));
    c->s = stream_alloc(loop, is_unix);
    c->fn = fn;
    c->ctx = ctx;
    c->req.data = c;
    if (timeout_ms > 0) {
        c->timer = timer_new(loop, on_connect_timeout, c);
        timer_start(c->timer, timeout_ms);
    }
    return c;
}

static void fail_later(void *ctx);

struct failed_connect {
    stream_connect_fn *fn;
    void *ctx;
    int err;
};

static void fail_later(void *ctx)
{
    struct failed_connect *f = ctx;
    f->fn(f->ctx, NULL, f->err);
    free(f);
}

/* Errors found before the request was queued still reach the caller through
 * its callback, on the next iteration, so callers have one error path. */
static struct stream_connect *connect_failed(struct stream_connect *c, int err)
{
    struct loop *loop = c->s->loop;
    struct failed_connect *f = xcalloc(1, sizeof(*f));
    f->fn = c->fn;
    f->ctx = c->ctx;
    f->err = err;
    timer_free(&c->timer);
    stream_destroy(&c->s);
    free(c);
    loop_defer(loop, fail_later, f);
    return NULL;
}

struct stream_connect *stream_connect_tcp(struct loop *loop, const struct addr *dst,
                                          const struct addr *src, uint64_t timeout_ms,
                                          stream_connect_fn *fn, void *ctx)
{
    struct stream_connect *c = connect_new(loop, false, timeout_ms, fn, ctx);
    struct sockaddr_storage ss;
    if (src != NULL && src->family != 0) {
        struct addr a = *src;
        a.port = 0;
        addr_to_sockaddr(&a, &ss);
        int r = uv_tcp_bind(&c->s->h.tcp, (struct sockaddr *)&ss, 0);
        if (r < 0)
            return connect_failed(c, r);
    }
    addr_to_sockaddr(dst, &ss);
    addr_from_sockaddr(&c->dst, (struct sockaddr *)&ss); /* as getpeername() would say */
    int r = uv_tcp_connect(&c->req, &c->s->h.tcp, (struct sockaddr *)&ss, on_connect);
    if (r < 0)
        return connect_failed(c, r);
    /* Reading is armed together with the connect: libuv then registers the
     * socket with epoll once for both, instead of re-adding it (EEXIST, then
     * MOD) when reading starts after the connect. No read callback runs
     * before the connect callback. */
    stream_start_reading(c->s);
    return c;
}

struct stream_connect *stream_connect_unix(struct loop *loop, const char *path,
                                           uint64_t timeout_ms, stream_connect_fn *fn,
                                           void *ctx)
{
    struct stream_connect *c = connect_new(loop, true, timeout_ms, fn, ctx);
    uv_pipe_connect(&c->req, &c->s->h.pipe, path, on_connect);
    return c;
}

void stream_connect_abort(struct stream_connect **cp)
{
    struct stream_connect *c = *cp;
    if (c == NULL)
        return;
    *cp = NULL;
    c->aborted = true;
    timer_free(&c->timer);
    stream_destroy(&c->s);
}
