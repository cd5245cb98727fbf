/* resolve - asynchronous host name resolution (getaddrinfo on the libuv
 * thread pool). */
#ifndef MR_RESOLVE_H
#define MR_RESOLVE_H

#include <stddef.h>

#include "addr.h"
#include "loop.h"

/* addrs is valid during the callback only; n == 0 and err != 0 on failure
 * (err: text for the log). */
typedef void resolve_fn(void *ctx, const struct addr *addrs, size_t n, const char *err);
struct resolve;

struct resolve *resolve_host(struct loop *loop, const char *name, resolve_fn *fn, void *ctx);
/* The callback will not run. Sets *r to NULL. */
void resolve_abort(struct resolve **r);

/* Blocking variant for start-up (auth_proxy_self). Returns the count. */
size_t resolve_host_now(const char *name, struct addr **addrs_r);

#endif
