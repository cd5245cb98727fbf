/* body.c - memory first (a list of chunks), then an unlinked temp file.
 *
 * Chunks rather than one growing buffer: dropping what the readers consumed
 * frees whole chunks instead of moving the unread rest to the front, and a
 * long body never reallocates. While not spooled every chunk but the last
 * is full, so an offset finds its chunk by walking the (short) list. */
#include "body.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "mem.h"

/* A chunk's size doubles with the body from MIN_CHUNK (small messages stay
 * small) to MAX_CHUNK. Up to MAX_SPARE freed chunks of the biggest size are
 * kept for reuse, so a streaming body does not call malloc per chunk. */
#define MIN_CHUNK (4 * 1024)
#define MAX_CHUNK (64 * 1024)
#define MAX_SPARE 2

struct chunk {
    struct chunk *next;
    size_t cap;
    char data[];
};

struct body {
    struct chunk *head, *tail;  /* bytes [head_offset, size) while not spooled */
    uint64_t head_offset;       /* body offset of head->data[0] */
    size_t tail_used;
    struct chunk *spare;        /* freed MAX_CHUNK chunks, up to MAX_SPARE */
    unsigned n_spare;
    uint64_t base;              /* what every reader has consumed is dropped */
    int fd;
    uint64_t size;
    size_t threshold;
    char *tmpdir;
    /* flow control (body_set_hold) */
    struct loop *loop;
    struct timer *hold;         /* running while the writer holds */
    uint64_t stall_ms, total_ms;
    uint64_t held_ms;           /* in earlier holds */
    uint64_t hold_start_ms;
    void (*wake)(void *ctx);
    void *wake_ctx;
};

struct body *body_new(size_t spool_threshold, const char *tmpdir)
{
    struct body *b = xcalloc(1, sizeof(*b));
    b->fd = -1;
    b->threshold = spool_threshold;
    b->tmpdir = xstrdup(tmpdir);
    return b;
}

static void free_list(struct chunk *c)
{
    while (c != NULL) {
        struct chunk *next = c->next;
        free(c);
        c = next;
    }
}

void body_free(struct body **bp)
{
    struct body *b = *bp;
    if (b == NULL)
        return;
    *bp = NULL;
    if (b->fd >= 0)
        close(b->fd);
    free_list(b->head);
    free_list(b->spare);
    timer_free(&b->hold);
    free(b->tmpdir);
    free(b);
}

/* Chunks in memory */

static struct chunk *chunk_new(struct body *b, size_t want)
{
    size_t cap = MIN_CHUNK;
    while (cap < want && cap < MAX_CHUNK)
        cap *= 2;
    if (cap == MAX_CHUNK && b->spare != NULL) {
        struct chunk *c = b->spare;
        b->spare = c->next;
        b->n_spare--;
        c->next = NULL;
        return c;
    }
    struct chunk *c = xmalloc(sizeof(*c) + cap);
    c->next = NULL;
    c->cap = cap;
    return c;
}

static void chunk_drop(struct body *b, struct chunk *c)
{
    if (c->cap == MAX_CHUNK && b->n_spare < MAX_SPARE) {
        c->next = b->spare;
        b->spare = c;
        b->n_spare++;
        return;
    }
    free(c);
}

static void mem_append(struct body *b, const char *data, size_t n)
{
    while (n > 0) {
        if (b->tail == NULL || b->tail_used == b->tail->cap) {
            /* sized for the body so far: doubling, as a growing buffer would */
            struct chunk *c = chunk_new(b, (size_t)(b->size - b->head_offset) + n);
            if (b->tail != NULL)
                b->tail->next = c;
            else
                b->head = c;
            b->tail = c;
            b->tail_used = 0;
        }
        size_t room = b->tail->cap - b->tail_used;
        size_t take = n < room ? n : room;
        memcpy(b->tail->data + b->tail_used, data, take);
        b->tail_used += take;
        b->size += take;
        data += take;
        n -= take;
    }
}

/* The chunk holding offset (not spooled, base <= offset < size); *start_r
 * is the body offset of its first byte. */
static struct chunk *chunk_at(const struct body *b, uint64_t offset, uint64_t *start_r)
{
    uint64_t start = b->head_offset;
    struct chunk *c = b->head;
    while (c != b->tail && offset >= start + c->cap) {
        start += c->cap;
        c = c->next;
    }
    *start_r = start;
    return c;
}

/* The spool file */

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

/* From now on the body lives in a file, at its own offsets (the part
 * before base is a hole nobody reads). */
static bool spill(struct body *b, const char **error_r)
{
    char *path = xasprintf("%s/mailroute-body.XXXXXX", b->tmpdir);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        log_error("body: cannot create a temp file in %s: %s", b->tmpdir, strerror(errno));
        free(path);
        *error_r = "cannot create a temporary file";
        return false;
    }
    unlink(path);
    free(path);
    uint64_t start = b->head_offset;
    for (struct chunk *c = b->head; c != NULL; c = c->next) {
        size_t used = c == b->tail ? b->tail_used : c->cap;
        /* skip what every reader already has */
        size_t skip = start < b->base ? (size_t)(b->base - start) : 0;
        if (skip < used && !pwrite_all(fd, c->data + skip, used - skip, start + skip)) {
            log_error("body: temp file write failed: %s", strerror(errno));
            close(fd);
            *error_r = "cannot write the temporary file";
            return false;
        }
        start += used;
    }
    free_list(b->head);
    free_list(b->spare);
    b->head = b->tail = b->spare = NULL;
    b->n_spare = 0;
    b->tail_used = 0;
    b->fd = fd;
    return true;
}

/* Flow control */

void body_set_hold(struct body *b, struct loop *loop, uint64_t stall_ms, uint64_t total_ms,
                   void (*wake)(void *ctx), void *ctx)
{
    b->loop = loop;
    b->stall_ms = stall_ms;
    b->total_ms = total_ms;
    b->wake = wake;
    b->wake_ctx = ctx;
}

static bool holding(const struct body *b)
{
    return b->hold != NULL && timer_active(b->hold);
}

static void hold_end(struct body *b)
{
    if (!holding(b))
        return;
    timer_stop(b->hold);
    b->held_ms += loop_now_ms(b->loop) - b->hold_start_ms;
}

/* The time is up: spool. A failure is not reported here: the next append
 * tries again and reports it. */
static void on_hold_over(void *ctx)
{
    struct body *b = ctx;
    const char *error;
    body_spool(b, &error);
    b->wake(b->wake_ctx); /* may free the body */
}

bool body_hold(struct body *b)
{
    const char *error;
    if (!body_full(b) || b->loop == NULL)
        return false;
    if (holding(b))
        return true;
    uint64_t left = b->total_ms > b->held_ms ? b->total_ms - b->held_ms : 0;
    if (left == 0) {
        body_spool(b, &error);
        return false;
    }
    if (b->hold == NULL)
        b->hold = timer_new(b->loop, on_hold_over, b);
    b->hold_start_ms = loop_now_ms(b->loop);
    timer_start(b->hold, left < b->stall_ms ? left : b->stall_ms);
    return true;
}

bool body_spool(struct body *b, const char **error_r)
{
    hold_end(b);
    return b->fd >= 0 || spill(b, error_r);
}

bool body_spooled(const struct body *b)
{
    return b->fd >= 0;
}

bool body_full(const struct body *b)
{
    return b->fd < 0 && b->size - b->base >= b->threshold;
}

bool body_append(struct body *b, const char *data, size_t n, const char **error_r)
{
    if (n == 0)
        return true;
    if (body_full(b) && !body_spool(b, error_r))
        return false;
    if (b->fd < 0) {
        mem_append(b, data, n);
        return true;
    }
    if (!pwrite_all(b->fd, data, n, b->size)) {
        log_error("body: temp file write failed: %s", strerror(errno));
        *error_r = "cannot write the temporary file";
        return false;
    }
    b->size += n;
    return true;
}

void body_release(struct body *b, uint64_t upto)
{
    if (upto > b->size)
        upto = b->size;
    if (upto <= b->base)
        return;
    b->base = upto;
    if (b->fd >= 0)
        return;
    if (!body_full(b))
        hold_end(b); /* room again: the writer goes on without spooling */
    while (b->head != b->tail && b->head_offset + b->head->cap <= upto) {
        struct chunk *c = b->head;
        b->head = c->next;
        b->head_offset += c->cap;
        chunk_drop(b, c);
    }
    if (b->head != NULL && upto == b->size) {
        /* all consumed: the last chunk starts over */
        b->head_offset = b->size;
        b->tail_used = 0;
    }
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
        uint64_t start;
        struct chunk *c = chunk_at(b, offset, &start);
        size_t in_chunk = (size_t)(offset - start);
        size_t used = c == b->tail ? b->tail_used : c->cap;
        if (n > used - in_chunk)
            n = used - in_chunk;
        *ptr = c->data + in_chunk;
        return (long)n;
    }
    ssize_t r = pread(b->fd, scratch, n, (off_t)offset);
    if (r < 0)
        return -1;
    *ptr = scratch;
    return (long)r;
}
