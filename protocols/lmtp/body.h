/* body - one transaction's message body, written once, read by every
 * delivery group at its own pace.
 *
 * Bytes stay in memory while every reader keeps up (body_release() drops
 * what all of them have consumed). When the unread window in memory reaches
 * the spool threshold the body is full: a writer with flow control
 * (body_hold()) stops taking input until the readers make room, so the
 * client is read at the backends' speed and fast backends cost no file I/O.
 * When the readers do not make room in time (a backend stalled, or is much
 * slower than the client) the body moves to an unlinked temporary file and
 * the writer goes on at its own speed; a writer without flow control gets
 * that file as soon as it appends to a full body. Either way memory per
 * transaction stays bounded (the threshold plus one append) for any message
 * size and any backend speed. */
#ifndef MR_BODY_H
#define MR_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct body;
struct loop;

struct body *body_new(size_t spool_threshold, const char *tmpdir);
void body_free(struct body **b);
/* Append bytes; false on a temp-file error (*error_r: static-ish text).
 * A full body is spooled first. */
bool body_append(struct body *b, const char *data, size_t n, const char **error_r);
/* The unread window in memory reached the threshold (never when spooled). */
bool body_full(const struct body *b);

/* Flow control. body_set_hold() once: a writer may hold its input for one
 * stretch of stall_ms at most, and for total_ms over the whole body. The
 * writer asks body_hold() before taking input (cheap, as often as it likes):
 * true means the body is full, wait: the readers' side wakes the writer when
 * they make room, or wake(ctx) does once the time is up and the body
 * spooled. False means go on: the body is not full, or the time was used up
 * and the body spooled (or failed to, which the next append reports). */
void body_set_hold(struct body *b, struct loop *loop, uint64_t stall_ms, uint64_t total_ms,
                   void (*wake)(void *ctx), void *ctx);
bool body_hold(struct body *b);

/* Move the body to the temp file now; true when it is there (also when it
 * already was). */
bool body_spool(struct body *b, const char **error_r);
bool body_spooled(const struct body *b);
/* Every reader is past upto: memory before it may go. */
void body_release(struct body *b, uint64_t upto);
uint64_t body_size(const struct body *b);
/* Bytes at offset: from memory (*ptr points inside the body) or read from
 * the spool file into scratch (up to max). Returns the count (it may be
 * less than what is left: read again), 0 at the current end, -1 on a read
 * error. */
long body_read(struct body *b, uint64_t offset, char *scratch, size_t max, const char **ptr);

#endif
