#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

char *buf_reserve(struct buf *b, size_t n)
{
    if (b->rpos > 0 && (b->rpos == b->len || b->len + n + 1 > b->cap)) {
        memmove(b->data, b->data + b->rpos, b->len - b->rpos);
        b->len -= b->rpos;
        b->rpos = 0;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    return b->data + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
    b->len += n;
    b->data[b->len] = '\0';
}

void buf_append(struct buf *b, const void *data, size_t n)
{
    char *p = buf_reserve(b, n);
    if (n > 0)
        memcpy(p, data, n);
    buf_commit(b, n);
}

void buf_append_str(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n <= 0)
        return;
    char *p = buf_reserve(b, (size_t)n);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    buf_commit(b, (size_t)n);
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void buf_consume(struct buf *b, size_t n)
{
    b->rpos += n;
    if (b->rpos >= b->len)
        b->rpos = b->len = 0;
}

void buf_reset(struct buf *b)
{
    b->rpos = b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->rpos = b->len = b->cap = 0;
}

void buf_free_wipe(struct buf *b)
{
    mem_wipe(b->data, b->cap);
    buf_free(b);
}

char *buf_steal(struct buf *b)
{
    char *s = b->data != NULL ? xstrndup(buf_ptr(b), buf_used(b)) : xstrdup("");
    buf_free(b);
    return s;
}
