/* body.c - memory first, then an unlinked temp file. */
#include "body.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "mem.h"

struct body {
    struct buf mem;       /* bytes [base, size) while not spooled */
    uint64_t base;        /* what every reader has consumed is dropped */
    int fd;
    uint64_t size;
    size_t threshold;
    char *tmpdir;
};

struct body *body_new(size_t spool_threshold, const char *tmpdir)
{
    struct body *b = xcalloc(1, sizeof(*b));
    b->fd = -1;
    b->threshold = spool_threshold;
    b->tmpdir = xstrdup(tmpdir);
    return b;
}

void body_free(struct body **bp)
{
    struct body *b = *bp;
    if (b == NULL)
        return;
    *bp = NULL;
    if (b->fd >= 0)
        close(b->fd);
    buf_free(&b->mem);
    free(b->tmpdir);
    free(b);
}


static bool pwrite_all(int fd, const char *p, size_t n, uint64_t offset)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)offset);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        p += w;
        n -= (size_t)w;
        offset += (uint64_t)w;
    }
    return true;
}

/* The unread window outgrew the threshold (a slow backend): from now on
 * the body lives in a file, at its own offsets (the part before base is a
 * hole nobody reads). */
static bool spill(struct body *b, const char **error_r)
{
    char *path = xasprintf("%s/mailroute-body.XXXXXX", b->tmpdir);
    b->fd = mkostemp(path, O_CLOEXEC);
    if (b->fd < 0) {
        log_error("body: cannot create a temp file in %s: %s", b->tmpdir, strerror(errno));
        free(path);
        *error_r = "cannot create a temporary file";
        return false;
    }
    unlink(path);
    free(path);
    if (!pwrite_all(b->fd, buf_ptr(&b->mem), buf_used(&b->mem), b->base)) {
        *error_r = "cannot write the temporary file";
        return false;
    }
    buf_free(&b->mem);
    return true;
}

bool body_append(struct body *b, const char *data, size_t n, const char **error_r)
{
    if (b->fd < 0 && b->size - b->base + n > b->threshold && !spill(b, error_r))
        return false;
    if (b->fd >= 0) {
        if (!pwrite_all(b->fd, data, n, b->size)) {
            log_error("body: temp file write failed: %s", strerror(errno));
            *error_r = "cannot write the temporary file";
            return false;
        }
    } else {
        buf_append(&b->mem, data, n);
    }
    b->size += n;
    return true;
}

void body_release(struct body *b, uint64_t upto)
{
    if (b->fd >= 0 || upto <= b->base)
        return;
    if (upto > b->size)
        upto = b->size;
    buf_consume(&b->mem, (size_t)(upto - b->base));
    if (buf_used(&b->mem) == 0)
        buf_free(&b->mem);
    b->base = upto;
}

uint64_t body_size(const struct body *b)
{
    return b->size;
}

long body_read(struct body *b, uint64_t offset, char *scratch, size_t max, const char **ptr)
{
    if (offset >= b->size)
        return 0;
    uint64_t left = b->size - offset;
    size_t n = left < max ? (size_t)left : max;
    if (b->fd < 0) {
        if (offset < b->base)
            return -1; /* released: a reader went back, which readers never do */
        *ptr = buf_ptr(&b->mem) + (offset - b->base);
        return (long)n;
    }
    ssize_t r = pread(b->fd, scratch, n, (off_t)offset);
    if (r < 0)
        return -1;
    *ptr = scratch;
    return (long)r;
}
