/* buf - a growable byte buffer with a read position.
 *
 * Data lives in [data + rpos, data + len). Consuming from the front is O(1);
 * the buffer compacts itself when it needs room. The byte after the data is
 * always a NUL, so a whole buffer can be used as a C string in tests and
 * logs, but parsers must use the explicit length. */
#ifndef MR_BUF_H
#define MR_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;
    size_t rpos;
    size_t len;
    size_t cap;
};

#define BUF_INIT {NULL, 0, 0, 0}

static inline const char *buf_ptr(const struct buf *b)
{
    return b->data != NULL ? b->data + b->rpos : "";
}
static inline size_t buf_used(const struct buf *b) { return b->len - b->rpos; }

void buf_append(struct buf *b, const void *data, size_t n);
void buf_append_str(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Make room for n more bytes and return where they go; call buf_commit() after writing. */
char *buf_reserve(struct buf *b, size_t n);
void buf_commit(struct buf *b, size_t n);
/* Drop n bytes from the front. */
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);
/* Free the storage (wiping it first when wipe is set). */
void buf_free(struct buf *b);
void buf_free_wipe(struct buf *b);
/* Detach the contents as a NUL-terminated heap string; the buffer is left empty. */
char *buf_steal(struct buf *b);

#endif
