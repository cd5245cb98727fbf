/* fdwatch - readiness notifications for a file descriptor someone else
 * reads and writes (e.g. the MariaDB client library's socket in its
 * non-blocking mode). */
#ifndef MR_FDWATCH_H
#define MR_FDWATCH_H

#include "loop.h"

enum { FDWATCH_READ = 1, FDWATCH_WRITE = 2 };

/* events: what happened (FDWATCH_* bits), or a negative libuv error. */
typedef void fdwatch_fn(void *ctx, int events);
struct fdwatch;

struct fdwatch *fdwatch_new(struct loop *loop, int fd, fdwatch_fn *fn, void *ctx);
/* Watch for these events (0 = none); may be called inside the callback. */
void fdwatch_set(struct fdwatch *w, int events);
/* Safe inside the callback. Sets *w to NULL. The fd is not closed. */
void fdwatch_free(struct fdwatch **w);

#endif
