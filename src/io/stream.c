/* stream.c - buffered non-blocking streams over libuv TCP and pipe handles.
 *
 * Memory: input bytes are read into the loop's scratch buffer and handed to
 * the owner in place; only what the owner leaves unconsumed is copied into
 * the stream's own input buffer. Output is appended to one buffer and
 * flushed by a deferred call, so replies produced in one iteration leave in
 * one write. A write the kernel cannot take at once moves to an in-flight
 * buffer owned by libuv's write request until it completes. Both buffers are
 * freed as soon as they are empty: an idle stream holds no buffers.
 *
 * Lifetime: "refs" counts callbacks on the stack. stream_destroy() inside a
 * callback marks the stream dead; the handle is closed when the outermost
 * callback returns, and freed in the close callback.
 *
 * TLS (tls.c) sits between the socket and these buffers: with s->tls set,
 * reads go to the TLS layer's ciphertext buffer and come back decrypted
 * through stream_input_plain(); writes are queued as plain text and
 * encrypted into s->out when the stream flushes. */
#include "stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io-private.h"
#include "log.h"
#include "mem.h"
#include "stream-private.h"

#define DEFAULT_MAX_INPUT (64 * 1024)
#define READ_RESERVE (16 * 1024)
#define PAUSED_READ (4096 - 1) /* with buf's NUL: a 4 KiB block */
#define CLOSE_FLUSH_TIMEOUT_MS 10000

static void stream_flush(struct stream *s);
static void stream_really_close(struct stream *s);

struct loop *stream_loop(const struct stream *s)
{
    return s->loop;
}

void stream_set_handler(struct stream *s, const struct stream_handler *h, void *ctx)
{
    s->handler = h;
    s->ctx = ctx;
}

void stream_enter(struct stream *s)
{
    s->refs++;
}

/* Returns false when the stream died during the callback (do not touch it). */
bool stream_leave(struct stream *s)
{
    if (--s->refs == 0 && s->dead) {
        stream_really_close(s);
        return false;
    }
    return !s->dead;
}

void stream_notify_close(struct stream *s, int err)
{
    if (s->close_notified || s->dead)
        return;
    if (s->tls != NULL && tls_close_in_handshake(s, err))
        return;
    s->close_notified = true;
    s->pending_end = 0;
    s->reading = false;
    uv_read_stop(s->uvs);
    if (s->handler != NULL && s->handler->on_close != NULL) {
        stream_enter(s);
        s->handler->on_close(s->ctx, err);
        stream_leave(s);
    }
}

/* Input */

struct buf *stream_input(struct stream *s)
{
    return s->view != NULL ? s->view : &s->in;
}

int stream_read_line(struct stream *s, size_t max, const char **line, size_t *len,
                     size_t *consumed_r)
{
    struct buf *in = stream_input(s);
    const char *p = buf_ptr(in);
    size_t n = buf_used(in);
    if (n == 0)
        return 0;
    const char *lf = memchr(p, '\n', n < max ? n : max);
    if (lf == NULL)
        return n >= max ? -1 : 0;
    size_t l = (size_t)(lf - p);
    *consumed_r = l + 1;
    if (l > 0 && p[l - 1] == '\r')
        l--;
    *line = p;
    *len = l;
    return 1;
}

void stream_consume(struct stream *s, size_t n)
{
    struct buf *in = stream_input(s);
    buf_consume(in, n);
    if (in == &s->in && buf_used(in) == 0)
        buf_free(in);
}

bool stream_skip_line(struct stream *s)
{
    struct buf *in = stream_input(s);
    if (buf_used(in) == 0)
        return false;
    const char *lf = memchr(buf_ptr(in), '\n', buf_used(in));
    if (lf == NULL) {
        stream_consume(s, buf_used(in));
        return false;
    }
    stream_consume(s, (size_t)(lf - buf_ptr(in)) + 1);
    return true;
}

void stream_set_max_input(struct stream *s, size_t max)
{
    s->max_input = max;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct stream *s = h->data;
    (void)suggested;
    s->read_to_tls = s->tls != NULL;
    if (s->read_to_tls) {
        size_t len;
        b->base = tls_rx_space(s, &len);
        b->len = len;
    } else if (s->paused) {
        /* A lazy pause (see stream_pause): keep a little, leave the rest
         * in the kernel. */
        b->base = buf_reserve(&s->in, PAUSED_READ);
        b->len = PAUSED_READ;
        s->read_to_scratch = false;
    } else if (buf_used(&s->in) == 0) {
        b->base = s->loop->scratch;
        b->len = s->loop->scratch_size;
        s->read_to_scratch = true;
    } else {
        b->base = buf_reserve(&s->in, READ_RESERVE);
        b->len = READ_RESERVE;
        s->read_to_scratch = false;
    }
}

static void deliver_input(struct stream *s)
{
    if (s->handler == NULL || s->handler->on_input == NULL || s->close_notified || s->paused)
        return;
    stream_enter(s);
    s->handler->on_input(s->ctx);
    stream_leave(s);
}

/* Bytes arrived in the scratch buffer: let the owner consume them in place,
 * then keep whatever is left. */
static void deliver_scratch(struct stream *s, size_t n)
{
    struct buf view = {s->loop->scratch, 0, n, s->loop->scratch_size};
    s->view = &view;
    stream_enter(s);
    if (s->handler != NULL && s->handler->on_input != NULL && !s->close_notified)
        s->handler->on_input(s->ctx);
    s->view = NULL;
    if (!s->dead && buf_used(&view) > 0)
        buf_append(&s->in, buf_ptr(&view), buf_used(&view));
    stream_leave(s);
}

void stream_check_input_cap(struct stream *s)
{
    if (s->reading && buf_used(&s->in) >= s->max_input) {
        uv_read_stop(s->uvs);
        s->reading = false;
        s->capped = true;
    }
}

void stream_input_plain(struct stream *s, const char *data, size_t n, bool in_scratch)
{
    s->last_input_ms = loop_now_ms(s->loop);
    if (in_scratch) {
        deliver_scratch(s, n);
    } else {
        buf_commit(&s->in, n);
        deliver_input(s);
    }
    (void)data;
}

static void stop_reading(struct stream *s)
{
    if (s->reading) {
        uv_read_stop(s->uvs);
        s->reading = false;
    }
}

/* The end of input: reported now, or after the resume when the owner paused
 * (so that it still sees the input buffered before the end first). */
static void input_ended(struct stream *s, int err)
{
    if (!s->paused) {
        stream_notify_close(s, err);
        return;
    }
    stop_reading(s); /* libuv has stopped already; keep the flag in step */
    if (s->pending_end == 0)
        s->pending_end = err == 0 ? END_EOF : err;
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *b)
{
    struct stream *s = h->data;
    (void)b;
    if (s->dead)
        return;
    stream_enter(s);
    bool to_tls = s->read_to_tls;
    bool was_paused = s->paused;
    s->read_to_tls = false;
    if (to_tls)
        tls_rx(s, nread); /* decrypts and delivers */
    if (nread > 0) {
        if (!to_tls)
            stream_input_plain(s, b->base, (size_t)nread, s->read_to_scratch);
        if (!s->dead)
            stream_check_input_cap(s);
    } else if (nread == UV_EOF) {
        input_ended(s, 0);
    } else if (nread < 0) {
        input_ended(s, (int)nread);
    }
    /* A lazy pause (see stream_pause) becomes a real one once input comes
     * in while paused. */
    if (!s->dead && was_paused && s->paused && nread > 0)
        stop_reading(s);
    if (!s->dead && buf_used(&s->in) == 0)
        buf_free(&s->in); /* space reserved for a read that brought nothing */
    stream_leave(s);
}

void stream_start_reading(struct stream *s)
{
    if (s->reading || s->paused || s->close_notified || s->pending_end != 0 || s->dead)
        return;
    if (uv_read_start(s->uvs, on_alloc, on_read) == 0)
        s->reading = true;
}

/* Lazy: reading stays armed until input actually arrives while paused (it
 * is then kept in s->in and reading stops). Most pauses (a login waiting for
 * its backend) end before the peer sends more, and stopping and restarting
 * reading would cost libuv two epoll_ctl calls. */
void stream_pause(struct stream *s)
{
    s->paused = true;
}

static void resume_deferred(void *ctx)
{
    struct stream *s = ctx;
    s->resume_pending = false;
    if (s->paused || s->dead)
        return;
    stream_enter(s);
    if (buf_used(&s->in) > 0)
        deliver_input(s);
    /* Records GnuTLS already holds bring no further read event. */
    if (s->tls != NULL && !s->dead && !s->paused)
        tls_pump(s);
    if (!s->dead && !s->paused && s->pending_end != 0) {
        int err = s->pending_end == END_EOF ? 0 : s->pending_end;
        s->pending_end = 0;
        stream_notify_close(s, err);
    }
    if (!s->dead && !s->paused) {
        s->capped = false;
        stream_check_input_cap(s);
        if (!s->capped)
            stream_start_reading(s);
    }
    stream_leave(s);
}

void stream_resume(struct stream *s)
{
    if (!s->paused && !s->capped)
        return;
    /* Nothing arrived during a lazy pause: nothing to deliver, nothing to
     * restart. (TLS may hold records it decrypted: those take the long way.) */
    if (s->reading && !s->capped && s->pending_end == 0 && buf_used(stream_input(s)) == 0 &&
        s->tls == NULL) {
        s->paused = false;
        return;
    }
    s->paused = false;
    if (!s->resume_pending) {
        s->resume_pending = true;
        loop_defer(s->loop, resume_deferred, s);
    }
}

/* Idle timeout */

static void on_idle_timer(void *ctx)
{
    struct stream *s = ctx;
    uint64_t now = loop_now_ms(s->loop);
    if (s->closing_after_flush) {
        stream_destroy(&s);
        return;
    }
    if (now - s->last_input_ms < s->idle_timeout_ms) {
        timer_start(s->idle_timer, s->idle_timeout_ms - (now - s->last_input_ms));
        return;
    }
    stream_notify_close(s, STREAM_ETIMEDOUT);
}

void stream_set_idle_timeout(struct stream *s, uint64_t ms)
{
    s->idle_timeout_ms = ms;
    if (ms == 0) {
        if (s->idle_timer != NULL)
            timer_stop(s->idle_timer);
        return;
    }
    if (s->idle_timer == NULL)
        s->idle_timer = timer_new(s->loop, on_idle_timer, s);
    s->last_input_ms = loop_now_ms(s->loop);
    timer_start(s->idle_timer, ms);
}

/* Output */

size_t stream_output_pending(const struct stream *s)
{
    size_t plain = s->tls != NULL ? tls_plain_pending(s) : 0;
    return buf_used(&s->out) + buf_used(&s->inflight) + plain;
}

static void flush_deferred(void *ctx)
{
    struct stream *s = ctx;
    s->flush_pending = false;
    stream_flush(s);
}

void stream_schedule_flush(struct stream *s)
{
    if (!s->flush_pending && !s->writing) {
        s->flush_pending = true;
        loop_defer(s->loop, flush_deferred, s);
    }
}

void stream_output_raw(struct stream *s, const void *data, size_t n)
{
    buf_append(&s->out, data, n);
    stream_schedule_flush(s);
}

void stream_write(struct stream *s, const void *data, size_t n)
{
    if (s->dead || s->write_failed || n == 0)
        return;
    if (s->tls != NULL) {
        buf_append(tls_plain_out(s), data, n);
        stream_schedule_flush(s);
        return;
    }
    stream_output_raw(s, data, n);
}

void stream_write_str(struct stream *s, const char *str)
{
    stream_write(s, str, strlen(str));
}

void stream_printf(struct stream *s, const char *fmt, ...)
{
    va_list ap;
    char line[512];
    if (s->dead || s->write_failed)
        return;
    /* Replies are short: one formatting pass into the stack, where
     * buf_vprintf() would format twice (to measure, then to write). */
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(line)) {
        stream_write(s, line, (size_t)n);
        return;
    }
    va_start(ap, fmt);
    buf_vprintf(s->tls != NULL ? tls_plain_out(s) : &s->out, fmt, ap);
    va_end(ap);
    stream_schedule_flush(s);
}

void stream_want_drain(struct stream *s, size_t low)
{
    s->drain_low = low;
    s->want_drain = true;
}

static void check_drain(struct stream *s)
{
    if (s->closing_after_flush && stream_output_pending(s) == 0) {
        stream_destroy(&s);
        return;
    }
    if (!s->want_drain || stream_output_pending(s) > s->drain_low)
        return;
    s->want_drain = false;
    if (s->handler != NULL && s->handler->on_drain != NULL && !s->close_notified) {
        stream_enter(s);
        s->handler->on_drain(s->ctx);
        stream_leave(s);
    }
}

static void write_failed(struct stream *s, int err)
{
    s->write_failed = true;
    buf_free(&s->out);
    if (s->tls != NULL)
        buf_free(tls_plain_out(s));
    if (s->closing_after_flush) {
        stream_destroy(&s);
        return;
    }
    stream_notify_close(s, err);
}

static void on_write(uv_write_t *req, int status)
{
    struct stream *s = req->data;
    s->writing = false;
    buf_free(&s->inflight);
    if (s->dead) {
        if (s->refs == 0)
            stream_really_close(s);
        return;
    }
    stream_enter(s);
    if (status < 0)
        write_failed(s, status);
    else
        stream_flush(s);
    stream_leave(s);
}

static void stream_flush(struct stream *s)
{
    if (s->dead || s->writing || s->write_failed)
        return;
    if (s->tls != NULL && tls_encrypt(s) < 0) {
        write_failed(s, STREAM_ETLS);
        return;
    }
    if (buf_used(&s->out) > 0) {
        uv_buf_t b = uv_buf_init((char *)buf_ptr(&s->out), (unsigned)buf_used(&s->out));
        int n = uv_try_write(s->uvs, &b, 1);
        if (n > 0) {
            buf_consume(&s->out, (size_t)n);
        } else if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS) {
            write_failed(s, n);
            return;
        }
        if (buf_used(&s->out) == 0) {
            buf_free(&s->out);
        } else {
            s->inflight = s->out;
            s->out = (struct buf)BUF_INIT;
            b = uv_buf_init((char *)buf_ptr(&s->inflight), (unsigned)buf_used(&s->inflight));
            s->wreq.data = s;
            int r = uv_write(&s->wreq, s->uvs, &b, 1, on_write);
            if (r < 0) {
                buf_free(&s->inflight);
                write_failed(s, r);
                return;
            }
            s->writing = true;
        }
    }
    check_drain(s);
}

/* Closing */

void stream_close_after_flush(struct stream *s)
{
    if (s->dead)
        return;
    s->handler = NULL;
    s->closing_after_flush = true;
    s->paused = true;
    stop_reading(s); /* for good: nobody reads what comes now */
    if (s->tls != NULL)
        tls_close_after_flush(s);
    if (stream_output_pending(s) == 0 && !s->flush_pending) {
        stream_destroy(&s);
        return;
    }
    /* A peer that never reads must not keep us forever. */
    if (s->idle_timer == NULL)
        s->idle_timer = timer_new(s->loop, on_idle_timer, s);
    timer_start(s->idle_timer, CLOSE_FLUSH_TIMEOUT_MS);
}

bool stream_is_closed(const struct stream *s)
{
    return s->dead || s->close_notified || s->closing_after_flush;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct stream *s = h->data;
    buf_free(&s->in);
    buf_free(&s->out);
    buf_free(&s->inflight);
    free(s);
}

static void stream_really_close(struct stream *s)
{
    if (s->handle_closing)
        return;
    s->handle_closing = true;
    if (s->tls != NULL)
        tls_stream_closing(s);
    timer_free(&s->idle_timer);
    loop_defer_cancel(s->loop, flush_deferred, s);
    loop_defer_cancel(s->loop, resume_deferred, s);
    if (s->connect_timer != NULL)
        timer_free(&s->connect_timer);
    uv_close((uv_handle_t *)s->uvs, on_handle_closed);
}

void stream_destroy(struct stream **sp)
{
    struct stream *s = *sp;
    if (s == NULL)
        return;
    *sp = NULL;
    if (s->dead)
        return;
    s->dead = true;
    s->handler = NULL;
    stop_reading(s);
    if (s->refs == 0)
        stream_really_close(s);
}

const struct addr *stream_peer(const struct stream *s)
{
    return &s->peer;
}

const struct addr *stream_local(const struct stream *s)
{
    if (!s->local_known && !s->is_unix && !s->handle_closing) {
        /* Found on first use and kept: the stream is only const to callers. */
        struct stream *m = (struct stream *)s;
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        if (uv_tcp_getsockname(&m->h.tcp, (struct sockaddr *)&ss, &len) == 0)
            addr_from_sockaddr(&m->local, (struct sockaddr *)&ss);
        m->local_known = true;
    }
    return &s->local;
}

bool stream_is_unix(const struct stream *s)
{
    return s->is_unix;
}

const char *stream_strerror(int err)
{
    if (err == STREAM_ETIMEDOUT)
        return "timed out";
    if (err == STREAM_ETLS)
        return "TLS error";
    if (err == STREAM_ETLS_VERIFY)
        return "certificate verification failed";
    if (err == 0)
        return "connection closed";
    return uv_strerror(err);
}

/* Construction, used by listener.c and connect.c */

struct stream *stream_alloc(struct loop *loop, bool is_unix)
{
    struct stream *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->is_unix = is_unix;
    s->max_input = DEFAULT_MAX_INPUT;
    if (is_unix) {
        uv_pipe_init(&loop->uv, &s->h.pipe, 0);
        s->uvs = (uv_stream_t *)&s->h.pipe;
    } else {
        uv_tcp_init(&loop->uv, &s->h.tcp);
        s->uvs = (uv_stream_t *)&s->h.tcp;
    }
    s->uvs->data = s;
    return s;
}

void stream_set_addrs(struct stream *s, const struct addr *peer, const struct addr *local)
{
    if (s->is_unix)
        return;
    if (peer != NULL) {
        s->peer = *peer;
    } else {
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        if (uv_tcp_getpeername(&s->h.tcp, (struct sockaddr *)&ss, &len) == 0)
            addr_from_sockaddr(&s->peer, (struct sockaddr *)&ss);
    }
    if (local != NULL) {
        s->local = *local;
        s->local_known = true;
    }
}

void stream_start(struct stream *s)
{
    stream_start_reading(s);
}
