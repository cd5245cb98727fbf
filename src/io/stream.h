/* stream - a buffered, non-blocking byte stream over TCP or a UNIX socket.
 *
 * One object per connection, owned by exactly one protocol object. Input is
 * read into a buffer that exists only while it holds unconsumed bytes (data
 * that is consumed inside on_input never gets copied: it is read into a
 * per-loop scratch buffer). Output is collected during one loop iteration
 * and flushed with one system call; a stream uses no heap memory while idle.
 *
 * Callbacks (set with stream_set_handler):
 *   on_input  - new bytes in stream_input(); consume what you handle. If
 *               you stop consuming (waiting for something), call
 *               stream_pause(), or the buffer grows until max_input.
 *   on_drain  - output pending fell to the low watermark given with
 *               stream_want_drain() (one shot).
 *   on_close  - the peer closed (err 0), an I/O error (err < 0, a libuv
 *               error code: stream_strerror()) or the idle timeout
 *               (STREAM_ETIMEDOUT). No callback follows; the owner must call
 *               stream_destroy().
 * Every function may be called from inside a callback, stream_destroy()
 * included: the memory is released once the callback has returned. */
#ifndef MR_STREAM_H
#define MR_STREAM_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "buf.h"
#include "loop.h"

#define STREAM_ETIMEDOUT (-110000)
/* TLS failed: the record layer, or a handshake that did not complete. */
#define STREAM_ETLS (-110001)
/* TLS handshake failed because the peer's certificate did not verify (not
 * worth retrying against the same peer). */
#define STREAM_ETLS_VERIFY (-110002)

struct stream;

struct stream_handler {
    void (*on_input)(void *ctx);
    void (*on_drain)(void *ctx);
    void (*on_close)(void *ctx, int err);
};

void stream_set_handler(struct stream *s, const struct stream_handler *h, void *ctx);
struct loop *stream_loop(const struct stream *s);

/* Input */
struct buf *stream_input(struct stream *s);
/* A line ending in LF (the CR, if any, and the LF are not part of *line).
 * Returns 1 with *line and *len set and *consumed_r = bytes to consume for it;
 * 0 when no complete line is buffered yet; -1 when max bytes are buffered
 * without a LF (the line is too long: use stream_skip_line()). */
int stream_read_line(struct stream *s, size_t max, const char **line, size_t *len,
                     size_t *consumed_r);
void stream_consume(struct stream *s, size_t n);
/* Discard input up to and including the next LF. True when the LF was found;
 * false when everything buffered was discarded and the line goes on. */
bool stream_skip_line(struct stream *s);
/* No on_input until stream_resume(). What arrives meanwhile (one read: at
 * most 4 KiB, with TLS 32 KiB of records) and the end of input are kept and
 * come after the resume, in that order; the kernel holds the rest. Write
 * errors and the idle timeout still reach on_close. */
void stream_pause(struct stream *s);
/* Resume reading; input already buffered is delivered by on_input on the next
 * loop iteration. */
void stream_resume(struct stream *s);
/* Hard cap on buffered input: reading pauses when it is reached (default 64 KiB). */
void stream_set_max_input(struct stream *s, size_t max);

/* Output */
void stream_write(struct stream *s, const void *data, size_t n);
void stream_write_str(struct stream *s, const char *str);
void stream_printf(struct stream *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t stream_output_pending(const struct stream *s);
/* Ask for one on_drain call once output pending is at most low. */
void stream_want_drain(struct stream *s, size_t low);

/* Close an idle stream after ms without input (0: never). */
void stream_set_idle_timeout(struct stream *s, uint64_t ms);

/* Flush pending output, then close. No callback runs after this call. */
void stream_close_after_flush(struct stream *s);
/* Close now; sets *s to NULL. */
void stream_destroy(struct stream **s);
bool stream_is_closed(const struct stream *s);

const struct addr *stream_peer(const struct stream *s);
const struct addr *stream_local(const struct stream *s);
bool stream_is_unix(const struct stream *s);
const char *stream_strerror(int err);

/* TLS (GnuTLS, see tls.h for the contexts).
 *
 * Starting TLS discards any plain input already buffered: bytes a peer sent
 * after STARTTLS in the same packet must never be executed (returns how many
 * were discarded). Plain output already queued (the "go ahead" reply) still
 * leaves before the handshake. The stream reads even if it was paused.
 * While the handshake runs, on_input/on_drain/on_close are not called and
 * what is written is queued; then fn(ctx, err, error_text) is called once:
 *   err 0: established. From now on the handler sees the decrypted stream
 *          exactly as before; stream_write encrypts.
 *   err < 0: failed (STREAM_ETIMEDOUT, STREAM_ETLS, STREAM_ETLS_VERIFY or a
 *          libuv error), error_text says why, e.g. "certificate
 *          verification failed: the certificate is expired", "host name
 *          mismatch: wrong.test", "handshake timed out". No other callback
 *          follows: the owner must stream_destroy() the stream.
 * The server side is also the implicit-TLS accept: call it right after the
 * listener hands over the stream.
 * Memory: the TLS buffers are freed when empty, as the others; what stays
 * for an idle TLS stream is GnuTLS's session state (about 11 KiB). */
struct tls_server;
struct tls_client;
typedef void stream_tls_fn(void *ctx, int err, const char *error_text);
size_t stream_start_tls_server(struct stream *s, struct tls_server *t, stream_tls_fn *fn,
                               void *ctx);
/* verify_name: the name (or IP literal, checked against IP SANs) the
 * certificate must be valid for, or NULL for any certificate (no check at
 * all). sni: the server name to send, NULL for none (IP literals are never
 * sent). timeout_ms: for the whole handshake, 0 for none. */
size_t stream_start_tls_client(struct stream *s, struct tls_client *t, const char *verify_name,
                               const char *sni, uint64_t timeout_ms, stream_tls_fn *fn,
                               void *ctx);
bool stream_is_tls(const struct stream *s);
/* "TLSv1.3 with cipher AES-256-GCM" (", resumed"), for logs; "" without TLS
 * or before the handshake completed. */
const char *stream_tls_info(const struct stream *s);
bool stream_tls_resumed(const struct stream *s);
/* Server side: the client sent a certificate that verified against ssl_ca. */
bool stream_tls_peer_cert_verified(const struct stream *s);
/* What went wrong when on_close reported STREAM_ETLS; NULL otherwise. */
const char *stream_tls_error(const struct stream *s);

/* Outgoing connections. The callback gets the connected stream (owned by the
 * callee from then on), or NULL and an error. */
typedef void stream_connect_fn(void *ctx, struct stream *s, int err);
struct stream_connect;
/* src may be NULL (or family 0). */
struct stream_connect *stream_connect_tcp(struct loop *loop, const struct addr *dst,
                                          const struct addr *src, uint64_t timeout_ms,
                                          stream_connect_fn *fn, void *ctx);
struct stream_connect *stream_connect_unix(struct loop *loop, const char *path,
                                           uint64_t timeout_ms, stream_connect_fn *fn,
                                           void *ctx);
/* Cancel a pending connect: the callback will not run. Sets *c to NULL. */
void stream_connect_abort(struct stream_connect **c);

#endif
