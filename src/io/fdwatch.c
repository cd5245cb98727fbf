/* fdwatch.c - uv_poll behind a small interface. */
#include "fdwatch.h"

#include <stdlib.h>

#include "io-private.h"
#include "mem.h"

struct fdwatch {
    uv_poll_t uv;
    fdwatch_fn *fn;
    void *ctx;
};

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct fdwatch *w = h->data;
    if (status < 0) {
        w->fn(w->ctx, status);
        return;
    }
    int ev = ((events & UV_READABLE) ? FDWATCH_READ : 0) |
             ((events & UV_WRITABLE) ? FDWATCH_WRITE : 0);
    w->fn(w->ctx, ev);
}

struct fdwatch *fdwatch_new(struct loop *loop, int fd, fdwatch_fn *fn, void *ctx)
{
    struct fdwatch *w = xcalloc(1, sizeof(*w));
    if (uv_poll_init(&loop->uv, &w->uv, fd) != 0) {
        free(w);
        return NULL;
    }
    w->uv.data = w;
    w->fn = fn;
    w->ctx = ctx;
    return w;
}

void fdwatch_set(struct fdwatch *w, int events)
{
    int uvev = ((events & FDWATCH_READ) ? UV_READABLE : 0) |
               ((events & FDWATCH_WRITE) ? UV_WRITABLE : 0);
    if (uvev == 0)
        uv_poll_stop(&w->uv);
    else
        uv_poll_start(&w->uv, uvev, on_poll);
}

void fdwatch_free(struct fdwatch **wp)
{
    struct fdwatch *w = *wp;
    if (w == NULL)
        return;
    *wp = NULL;
    uv_poll_stop(&w->uv);
    io_close_free((uv_handle_t *)&w->uv, w);
}
