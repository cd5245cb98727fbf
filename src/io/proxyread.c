/* proxyread.c - the PROXY header, read with a temporary stream handler. */
#include "proxyread.h"

#include <stdlib.h>

#include "mem.h"
#include "proxyproto.h"
#include "stream-private.h"

struct proxy_read {
    struct stream *s;
    proxy_header_fn *fn;
    void *ctx;
};

static void finish(struct proxy_read *pr, const char *error)
{
    struct stream *s = pr->s;
    proxy_header_fn *fn = pr->fn;
    void *ctx = pr->ctx;
    free(pr);
    stream_set_handler(s, NULL, NULL);
    stream_set_idle_timeout(s, 0);
    if (error != NULL) {
        stream_destroy(&s);
        fn(ctx, NULL, error);
        return;
    }
    /* Bytes the client sent right after the header reach the protocol
     * through a resume, which re-delivers buffered input. */
    stream_pause(s);
    stream_resume(s);
    fn(ctx, s, NULL);
}

static void on_input(void *ctx)
{
    struct proxy_read *pr = ctx;
    struct buf *in = stream_input(pr->s);
    struct proxyproto_result res;
    const char *error = NULL;
    int n = proxyproto_parse(buf_ptr(in), buf_used(in), 0, &res, &error);
    if (n == 0)
        return;
    if (n < 0) {
        finish(pr, error != NULL ? error : "invalid PROXY header");
        return;
    }
    stream_consume(pr->s, (size_t)n);
    if (!res.local) {
        pr->s->peer = res.src;
        pr->s->local = res.dst;
        pr->s->local_known = true;
    }
    finish(pr, NULL);
}

static void on_close(void *ctx, int err)
{
    struct proxy_read *pr = ctx;
    finish(pr, err == STREAM_ETIMEDOUT ? "no PROXY header in time" : "closed before the PROXY header");
}

static const struct stream_handler proxy_handler = {on_input, NULL, on_close};

void stream_read_proxy_header(struct stream *s, uint64_t timeout_ms, proxy_header_fn *fn,
                              void *ctx)
{
    struct proxy_read *pr = xcalloc(1, sizeof(*pr));
    pr->s = s;
    pr->fn = fn;
    pr->ctx = ctx;
    stream_set_handler(s, &proxy_handler, pr);
    stream_set_idle_timeout(s, timeout_ms);
}
