#include "loop.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "io-private.h"
#include "log.h"
#include "mem.h"

#define SCRATCH_SIZE (256 * 1024) /* one read; larger reads halve the syscalls of big bodies */

struct loop *loop_of_uv(uv_loop_t *uv)
{
    return (struct loop *)uv; /* uv is the first member */
}

#define SPARE_DEFERS_MAX 1024 /* a larger array (a burst) goes back to malloc */

static void run_deferred(struct loop *loop)
{
    /* Calls deferred while running go to the next round, so a call that
     * defers itself cannot starve I/O. The two arrays take turns: no malloc
     * per round. */
    size_t n = loop->n_defers;
    if (n == 0)
        return;
    struct deferred *batch = loop->defers;
    size_t cap = loop->cap_defers;
    loop->defers = loop->spare;
    loop->cap_defers = loop->cap_spare;
    loop->n_defers = 0;
    loop->spare = NULL;
    loop->cap_spare = 0;
    loop->running = batch;
    loop->n_running = n;
    for (size_t i = 0; i < n; i++) {
        loop_fn *fn = batch[i].fn;
        if (fn != NULL) {
            batch[i].fn = NULL;
            fn(batch[i].ctx);
        }
    }
    loop->running = NULL;
    loop->n_running = 0;
    if (loop->spare == NULL && cap <= SPARE_DEFERS_MAX) {
        loop->spare = batch;
        loop->cap_spare = cap;
    } else {
        free(batch);
    }
    if (loop->n_defers == 0)
        uv_idle_stop(&loop->idle);
}

static void on_idle(uv_idle_t *h) { (void)h; }
static void on_check(uv_check_t *h) { run_deferred(loop_of_uv(h->loop)); }
static void on_prepare(uv_prepare_t *h) { run_deferred(loop_of_uv(h->loop)); }

struct loop *loop_new(void)
{
    struct loop *loop = xcalloc(1, sizeof(*loop));
    if (uv_loop_init(&loop->uv) != 0)
        log_panic("uv_loop_init failed");
    uv_idle_init(&loop->uv, &loop->idle);
    uv_check_init(&loop->uv, &loop->check);
    uv_prepare_init(&loop->uv, &loop->prepare);
    uv_check_start(&loop->check, on_check);
    uv_prepare_start(&loop->prepare, on_prepare);
    /* check/prepare must not keep the loop alive on their own. */
    uv_unref((uv_handle_t *)&loop->check);
    uv_unref((uv_handle_t *)&loop->prepare);
    loop->scratch_size = SCRATCH_SIZE;
    loop->scratch = xmalloc(SCRATCH_SIZE);
    return loop;
}

void loop_run(struct loop *loop)
{
    uv_run(&loop->uv, UV_RUN_DEFAULT);
}

void loop_stop(struct loop *loop)
{
    uv_stop(&loop->uv);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void loop_free(struct loop **loopp)
{
    struct loop *loop = *loopp;
    if (loop == NULL)
        return;
    *loopp = NULL;
    run_deferred(loop);
    uv_walk(&loop->uv, close_walk, NULL);
    uv_run(&loop->uv, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop->uv) != 0)
        log_warn("event loop closed with handles still open");
    free(loop->defers);
    free(loop->spare);
    free(loop->scratch);
    free(loop);
}

uint64_t loop_now_ms(struct loop *loop)
{
    return uv_now(&loop->uv);
}

uint64_t wall_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

void loop_defer(struct loop *loop, loop_fn *fn, void *ctx)
{
    if (loop->n_defers == loop->cap_defers) {
        loop->cap_defers = loop->cap_defers ? loop->cap_defers * 2 : 16;
        loop->defers = xrealloc(loop->defers, loop->cap_defers * sizeof(*loop->defers));
    }
    loop->defers[loop->n_defers].fn = fn;
    loop->defers[loop->n_defers].ctx = ctx;
    loop->n_defers++;
    uv_idle_start(&loop->idle, on_idle);
}

void loop_defer_cancel(struct loop *loop, loop_fn *fn, void *ctx)
{
    for (size_t i = 0; i < loop->n_defers; i++) {
        if (loop->defers[i].fn == fn && loop->defers[i].ctx == ctx)
            loop->defers[i].fn = NULL;
    }
    for (size_t i = 0; i < loop->n_running; i++) {
        if (loop->running[i].fn == fn && loop->running[i].ctx == ctx)
            loop->running[i].fn = NULL;
    }
}

static void free_handle_block(uv_handle_t *handle)
{
    free(handle->data);
}

void io_close_free(uv_handle_t *handle, void *block)
{
    if (uv_is_closing(handle))
        return; /* loop_free() is closing everything: the block goes with the process */
    handle->data = block;
    uv_close(handle, free_handle_block);
}

/* Timers */

struct timer {
    uv_timer_t uv;
    loop_fn *fn;
    void *ctx;
};

static void on_timer(uv_timer_t *h)
{
    struct timer *t = h->data;
    t->fn(t->ctx);
}

struct timer *timer_new(struct loop *loop, loop_fn *fn, void *ctx)
{
    struct timer *t = xcalloc(1, sizeof(*t));
    uv_timer_init(&loop->uv, &t->uv);
    t->uv.data = t;
    t->fn = fn;
    t->ctx = ctx;
    return t;
}

void timer_start(struct timer *t, uint64_t ms)
{
    uv_timer_start(&t->uv, on_timer, ms, 0);
}

void timer_start_repeat(struct timer *t, uint64_t ms)
{
    uv_timer_start(&t->uv, on_timer, ms, ms);
}

void timer_stop(struct timer *t)
{
    uv_timer_stop(&t->uv);
}

bool timer_active(const struct timer *t)
{
    return uv_is_active((const uv_handle_t *)&t->uv);
}

void timer_free(struct timer **tp)
{
    struct timer *t = *tp;
    if (t == NULL)
        return;
    *tp = NULL;
    uv_timer_stop(&t->uv);
    io_close_free((uv_handle_t *)&t->uv, t);
}

/* Blocking work on the thread pool */

struct blocking_work {
    uv_work_t req;
    loop_fn *work, *done;
    void *ctx;
};

static void on_work(uv_work_t *req)
{
    struct blocking_work *w = req->data;
    w->work(w->ctx);
}

static void on_work_done(uv_work_t *req, int status)
{
    struct blocking_work *w = req->data;
    (void)status;
    w->done(w->ctx);
    free(w);
}

void loop_run_blocking(struct loop *loop, loop_fn *work, loop_fn *done, void *ctx)
{
    struct blocking_work *w = xcalloc(1, sizeof(*w));
    w->req.data = w;
    w->work = work;
    w->done = done;
    w->ctx = ctx;
    if (uv_queue_work(&loop->uv, &w->req, on_work, on_work_done) != 0)
        log_panic("uv_queue_work failed");
}

/* Cross-thread wake-ups */

struct loop_waker {
    uv_async_t uv;
    loop_fn *fn;
    void *ctx;
};

static void on_async(uv_async_t *h)
{
    struct loop_waker *w = h->data;
    w->fn(w->ctx);
}

struct loop_waker *loop_waker_new(struct loop *loop, loop_fn *fn, void *ctx)
{
    struct loop_waker *w = xcalloc(1, sizeof(*w));
    uv_async_init(&loop->uv, &w->uv, on_async);
    w->uv.data = w;
    w->fn = fn;
    w->ctx = ctx;
    return w;
}

void loop_wakeup(struct loop_waker *w)
{
    uv_async_send(&w->uv);
}

void loop_waker_free(struct loop_waker **wp)
{
    struct loop_waker *w = *wp;
    if (w == NULL)
        return;
    *wp = NULL;
    io_close_free((uv_handle_t *)&w->uv, w);
}

/* Signals */

struct signal_watch {
    uv_signal_t uv;
    loop_fn *fn;
    void *ctx;
};

static void on_signal(uv_signal_t *h, int signum)
{
    struct signal_watch *w = h->data;
    (void)signum;
    w->fn(w->ctx);
}

struct signal_watch *signal_watch_new(struct loop *loop, int signum, loop_fn *fn, void *ctx)
{
    struct signal_watch *w = xcalloc(1, sizeof(*w));
    uv_signal_init(&loop->uv, &w->uv);
    w->uv.data = w;
    w->fn = fn;
    w->ctx = ctx;
    uv_signal_start(&w->uv, on_signal, signum);
    return w;
}

void signal_watch_free(struct signal_watch **wp)
{
    struct signal_watch *w = *wp;
    if (w == NULL)
        return;
    *wp = NULL;
    uv_signal_stop(&w->uv);
    io_close_free((uv_handle_t *)&w->uv, w);
}
