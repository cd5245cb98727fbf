/* body - one transaction's message body, written once, read by every
 * delivery group at its own pace.
 *
 * The first bytes stay in memory; past the spool threshold the body moves
 * to an unlinked temporary file, so memory per transaction is bounded for
 * any message size and any backend speed. The writer never waits for
 * readers: the client's data is read at its own speed. */
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
void body_set_complete(struct body *b);
bool body_complete(const struct body *b);
uint64_t body_size(const struct body *b);
bool body_spooled(const struct body *b);
/* Bytes at offset: from memory (*ptr points inside the body) or read from
 * the spool file into scratch (up to max). Returns the count, 0 at the
 * current end, -1 on a read error. */
long body_read(struct body *b, uint64_t offset, char *scratch, size_t max, const char **ptr);

#endif
