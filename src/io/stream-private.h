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
    /* The end of input (EOF or an error) that arrived while paused, reported
     * by on_close after the resume, behind the input buffered before it:
     * 0 none, END_EOF, or a negative libuv error. */
    int pending_end;
    bool is_unix;
    bool local_known;     /* local is found on first use (stream_local) */
    bool reading, paused, capped, read_to_scratch, read_to_tls;
    bool writing, flush_pending, resume_pending, want_drain, write_failed;
    bool close_notified, closing_after_flush, dead, handle_closing;
};

#define END_EOF 1

struct stream *stream_alloc(struct loop *loop, bool is_unix);
/* The addresses of a TCP stream: peer NULL asks the kernel now (an
 * accepted socket); local NULL asks it on the first stream_local(), which
 * outgoing connections seldom need. No system call for what is given. */
void stream_set_addrs(struct stream *s, const struct addr *peer, const struct addr *local);
void stream_start(struct stream *s);
/* Plain bytes arrived (from the socket, or decrypted by TLS). */
void stream_input_plain(struct stream *s, const char *data, size_t n, bool in_scratch);
/* Queue bytes for the socket, bypassing TLS. */
void stream_output_raw(struct stream *s, const void *data, size_t n);
/* Flush s->out on the next loop iteration (unless already planned). */
void stream_schedule_flush(struct stream *s);
/* Callback bracketing for the TLS layer (see stream.c: enter/leave). */
void stream_enter(struct stream *s);
bool stream_leave(struct stream *s);
/* The end of input: on_close(err) once, reading stopped. */
void stream_notify_close(struct stream *s, int err);
/* Stop reading when max_input is buffered. */
void stream_check_input_cap(struct stream *s);
void stream_start_reading(struct stream *s);

/* The TLS layer (tls.c), called by stream.c for a stream with s->tls set. */
/* Where the next read from the socket goes (ciphertext). */
char *tls_rx_space(struct stream *s, size_t *len_r);
/* nread bytes (or a libuv status <= 0) arrived in tls_rx_space(). */
void tls_rx(struct stream *s, ssize_t nread);
/* Decrypt and deliver what is buffered (after a resume). */
void tls_pump(struct stream *s);
/* Where plain output is queued before it is encrypted. */
struct buf *tls_plain_out(struct stream *s);
size_t tls_plain_pending(const struct stream *s);
/* Encrypt queued plain output into s->out (when established); -1 on a
 * TLS error (the text is in stream_tls_error()). */
int tls_encrypt(struct stream *s);
/* notify_close() during a handshake: fail the handshake instead (true). */
bool tls_close_in_handshake(struct stream *s, int err);
/* stream_close_after_flush(): encrypt what is queued and add close_notify. */
void tls_close_after_flush(struct stream *s);
/* The handle is being closed: best-effort close_notify, free the session. */
void tls_stream_closing(struct stream *s);

#endif
