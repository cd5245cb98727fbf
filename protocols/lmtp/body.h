/* body - one transaction's message body, written once, read by every
 * delivery group at its own pace.
 *
 * Bytes stay in memory while every reader keeps up (body_release() drops
 * what all of them have consumed); when the unread window grows past the
 * spool threshold (a slow backend) the body moves to an unlinked temporary
 * file. So memory per transaction is bounded for any message size and any
 * backend speed, and fast backends cost no file I/O. The writer never waits
 * for readers: the client's data is read at its own speed. */
#ifndef MR_BODY_H
#define MR_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct body;

struct body *body_new(size_t spool_threshold, const char *tmpdir);
void body_free(struct body **b);
/* Append bytes; false on a temp-file error (*error_r: static-ish text). */
bool body_append(struct body *b, const char *data, size_t n, const char **error_r);
/* Every reader is past upto: memory before it may go. */
void body_release(struct body *b, uint64_t upto);
uint64_t body_size(const struct body *b);
/* Bytes at offset: from memory (*ptr points inside the body) or read from
 * the spool file into scratch (up to max). Returns the count, 0 at the
 * current end, -1 on a read error. */
long body_read(struct body *b, uint64_t offset, char *scratch, size_t max, const char **ptr);

#endif
