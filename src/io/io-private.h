/* io-private - what the io modules share among themselves: the libuv loop
 * behind struct loop, and helpers for closing handles. Never include this
 * outside src/io. */
#ifndef MR_IO_PRIVATE_H
#define MR_IO_PRIVATE_H

#include <uv.h>

#include "loop.h"

struct deferred {
    loop_fn *fn;
    void *ctx;
};

struct loop {
    uv_loop_t uv;
    uv_idle_t idle;          /* keeps poll from blocking while calls are deferred */
    uv_check_t check;        /* runs deferred calls after I/O callbacks */
    uv_prepare_t prepare;    /* and once more before polling */
    struct deferred *defers;
    size_t n_defers, cap_defers;
    struct deferred *running;  /* the batch being run, so it can be cancelled too */
    size_t n_running;
    struct deferred *spare;    /* the array of the last batch, reused for the next */
    size_t cap_spare;
    char *scratch;           /* shared read buffer (see stream.c) */
    size_t scratch_size;
};

struct loop *loop_of_uv(uv_loop_t *uv);
/* uv_close() a handle and free() the memory block that holds it afterwards. */
void io_close_free(uv_handle_t *handle, void *block);

#endif
