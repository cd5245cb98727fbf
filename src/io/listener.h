/* listener - accepting TCP and UNIX-socket connections.
 *
 * Sockets are created by listen_socket_tcp()/listen_socket_unix() in the
 * main thread before privileges are dropped and workers start; each worker
 * then wraps its own socket (TCP: one SO_REUSEPORT socket per worker, so the
 * kernel spreads connections; UNIX: a dup of the shared socket). */
#ifndef MR_LISTENER_H
#define MR_LISTENER_H

#include <stdbool.h>

#include "addr.h"
#include "loop.h"
#include "stream.h"

#define LISTEN_BACKLOG 511

/* Returns a listening fd, or -1 with *error_r (heap string). */
int listen_socket_tcp(const struct addr *bind_addr, bool reuseport, char **error_r);
int listen_socket_unix(const char *path, unsigned mode, char **error_r);

typedef void listener_accept_fn(void *ctx, struct stream *s);
struct listener;

/* Take ownership of a listening fd and start accepting on loop. */
struct listener *listener_new(struct loop *loop, int fd, bool is_unix, listener_accept_fn *fn,
                              void *ctx, char **error_r);
void listener_free(struct listener **l);

/* Every address configured on this host's interfaces (for the self test). */
void local_interface_addrs(struct addr **addrs_r, size_t *n_r);

#endif
