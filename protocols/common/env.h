/* env - what a protocol session needs from its worker: one configuration
 * generation in one worker thread. Sessions hold a reference, so a reload
 * never changes the rules under an open session; the last reference
 * releases the generation (through release) and the passdb instance. */
#ifndef MR_ENV_H
#define MR_ENV_H

#include "config.h"
#include "loop.h"
#include "passdb.h"
#include "route.h"

struct backend_pool;
struct tls_server;
struct tls_client;

struct proto_env {
    int refs;
    struct loop *loop;
    const struct settings *set;
    struct passdb *passdb;           /* this env's own instance */
    const struct route_self *self;
    struct tls_server *tls_server;   /* NULL: no TLS offered (borrowed from the generation) */
    struct tls_client *tls_client;   /* for backends with ssl/starttls (borrowed) */
    const struct addr *source_ips;   /* login_source_ips, resolved (borrowed) */
    size_t n_source_ips;
    struct backend_pool *pool;       /* LMTP: the worker's backend pool (outlives envs) */
    void (*release)(void *ctx);
    void *release_ctx;
};

void proto_env_ref(struct proto_env *env);
void proto_env_unref(struct proto_env **env);

#endif
