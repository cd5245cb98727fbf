/* loop - the event loop, timers, deferred calls and off-loop work.
 *
 * The only module family that includes <uv.h> is src/io; everything above
 * sees these opaque types. One loop per worker thread; nothing here is
 * thread-safe except loop_wakeup(). */
#ifndef MR_LOOP_H
#define MR_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop;
struct timer;

typedef void loop_fn(void *ctx);

struct loop *loop_new(void);
/* Run until loop_stop() or until nothing is left to do. */
void loop_run(struct loop *loop);
void loop_stop(struct loop *loop);
/* Close every remaining handle and free the loop. */
void loop_free(struct loop **loop);
/* Cached monotonic time in ms (updated each iteration). */
uint64_t loop_now_ms(struct loop *loop);
/* Wall clock, ms since the epoch. */
uint64_t wall_now_ms(void);

/* Run fn(ctx) on the next loop iteration, before polling for I/O. Calls run
 * in the order they were deferred. Cancel with loop_defer_cancel(). */
void loop_defer(struct loop *loop, loop_fn *fn, void *ctx);
/* Drop every deferred call with this fn and ctx (for an object being freed). */
void loop_defer_cancel(struct loop *loop, loop_fn *fn, void *ctx);

/* Run work(ctx) on a thread-pool thread, then done(ctx) on the loop.
 * For blocking system calls (fsync, crypt) that must not stall the loop. */
void loop_run_blocking(struct loop *loop, loop_fn *work, loop_fn *done, void *ctx);

/* Cross-thread wake-up: fn(ctx) runs on the loop's thread after
 * loop_wakeup() from any thread (calls may be coalesced). */
struct loop_waker;
struct loop_waker *loop_waker_new(struct loop *loop, loop_fn *fn, void *ctx);
void loop_wakeup(struct loop_waker *w);
void loop_waker_free(struct loop_waker **w);

/* One-shot or repeating timers. A stopped timer costs nothing; free it with
 * timer_free(), which is safe inside its own callback. */
struct timer *timer_new(struct loop *loop, loop_fn *fn, void *ctx);
void timer_start(struct timer *t, uint64_t ms);
void timer_start_repeat(struct timer *t, uint64_t ms);
void timer_stop(struct timer *t);
bool timer_active(const struct timer *t);
void timer_free(struct timer **t);

/* Signals (main thread only). */
struct signal_watch;
struct signal_watch *signal_watch_new(struct loop *loop, int signum, loop_fn *fn, void *ctx);
void signal_watch_free(struct signal_watch **w);

#endif
