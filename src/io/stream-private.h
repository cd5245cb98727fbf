/* stream-private - struct stream, shared by stream.c, listener.c, connect.c
 * and the TLS layer. Not for use outside src/io. */
#ifndef MR_STREAM_PRIVATE_H
#define MR_STREAM_PRIVATE_H

#include <uv.h>

#include "io-private.h"
#include "stream.h"

struct tls_session;

struct stream {
    struct loop *loop;
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_stream_t *uvs;
    uv_write_t wreq;

    const struct stream_handler *handler;
    void *ctx;

    struct buf in;        /* unconsumed input owned by the stream */
    struct buf *view;     /* during on_input from scratch: the scratch bytes */
    struct buf out;       /* output not yet handed to the kernel */
    struct buf inflight;  /* output owned by the pending uv_write */
    size_t max_input;
    size_t drain_low;

    struct addr peer, local;
    struct timer *idle_timer;
    struct timer *connect_timer;
    uint64_t idle_timeout_ms;
    uint64_t last_input_ms;
    struct tls_session *tls;

    int refs;
    bool is_unix;
    bool reading, paused, capped, read_to_scratch;
    bool writing, flush_pending, resume_pending, want_drain, write_failed;
    bool close_notified, closing_after_flush, dead, handle_closing;
};

struct stream *stream_alloc(struct loop *loop, bool is_unix);
void stream_fill_addrs(struct stream *s);
void stream_start(struct stream *s);
/* Plain bytes arrived (from the socket, or decrypted by TLS). */
void stream_input_plain(struct stream *s, const char *data, size_t n, bool in_scratch);
/* Queue bytes for the socket, bypassing TLS. */
void stream_output_raw(struct stream *s, const void *data, size_t n);

#endif
