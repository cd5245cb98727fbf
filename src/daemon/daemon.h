/* daemon - process-level objects: configuration generations and workers.
 *
 * A generation is one loaded configuration plus what was derived from it
 * (our own addresses for the self test). Workers hold a reference to the
 * generation their current env uses; the last release frees it. */
#ifndef MR_DAEMON_H
#define MR_DAEMON_H

#include <stdatomic.h>

#include "config.h"
#include "route.h"

struct generation {
    atomic_int refs;
    struct settings *set;
    struct route_self self;
    struct tls_server *tls_server; /* NULL when no TLS is offered to clients */
    struct tls_client *tls_client; /* for backends that ask for ssl/starttls */
    struct addr *source_ips;       /* login_source_ips, resolved */
    size_t n_source_ips;
};

/* Takes set. NULL with *error_r (heap) when TLS contexts do not load. */
struct generation *generation_new(struct settings *set, char **error_r);
void generation_ref(struct generation *g);
void generation_unref(struct generation *g);

/* Our addresses: listener IPs (wildcards expanded to interface addresses)
 * and auth_proxy_self; ports of the inet listeners. */
void self_build(struct route_self *self, const struct settings *set);
void self_free(struct route_self *self);

/* Each address of a listener's "address" (or the global "listen") list. */
typedef void listen_addr_fn(void *ctx, const struct addr *a);
void foreach_listen_addr(const struct settings *set, const struct listener_settings *l,
                         listen_addr_fn *fn, void *ctx);

int run_lookup(const struct settings *set, int argc, char **argv);
int run_daemon(const char *config_path, struct settings *set);
/* run_as_user: become that user (with its groups) for good; a warning when
 * it is empty and we are root. False (logged) when that fails. */
bool drop_privileges(const char *user);

#endif
