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
    struct buf mem;
    int fd;
    uint64_t size;
    size_t threshold;
    char *tmpdir;
    bool complete;
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

static bool write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

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
    if (!write_all(b->fd, buf_ptr(&b->mem), buf_used(&b->mem))) {
        *error_r = "cannot write the temporary file";
        return false;
    }
    buf_free(&b->mem);
    return true;
}

bool body_append(struct body *b, const char *data, size_t n, const char **error_r)
{
    if (b->fd < 0 && b->size + n > b->threshold && !spill(b, error_r))
        return false;
    if (b->fd >= 0) {
        if (!write_all(b->fd, data, n)) {
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

void body_set_complete(struct body *b)
{
    b->complete = true;
}

bool body_complete(const struct body *b)
{
    return b->complete;
}

uint64_t body_size(const struct body *b)
{
    return b->size;
}

bool body_spooled(const struct body *b)
{
    return b->fd >= 0;
}

long body_read(struct body *b, uint64_t offset, char *scratch, size_t max, const char **ptr)
{
    if (offset >= b->size)
        return 0;
    uint64_t left = b->size - offset;
    size_t n = left < max ? (size_t)left : max;
    if (b->fd < 0) {
        *ptr = buf_ptr(&b->mem) + offset;
        return (long)n;
    }
    ssize_t r = pread(b->fd, scratch, n, (off_t)offset);
    if (r < 0)
        return -1;
    *ptr = scratch;
    return (long)r;
}
