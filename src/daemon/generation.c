/* generation.c - configuration generations and our own addresses. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "listener.h"
#include "log.h"
#include "mem.h"
#include "resolve.h"
#include "tls.h"

/* TLS is offered when ssl is not "no" or a listener has "ssl = yes". */
static bool wants_tls_server(const struct settings *set)
{
    if (set->tls.ssl != TLS_SSL_NO)
        return true;
    for (unsigned i = 0; i < set->n_listeners; i++) {
        if (set->listeners[i].ssl)
            return true;
    }
    return false;
}

/* Can this host send from ip? (login_source_ips "?" entries) */
static bool can_bind(const struct addr *ip)
{
    struct sockaddr_storage ss;
    struct addr a = *ip;
    a.port = 0;
    socklen_t len = addr_to_sockaddr(&a, &ss);
    int fd = socket(a.family, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    bool ok = bind(fd, (struct sockaddr *)&ss, len) == 0;
    close(fd);
    return ok;
}

/* login_source_ips: IPs or names (every address of a name); "?name" keeps
 * only the addresses this host has, so one file fits every server. */
static void source_ips_build(struct generation *g, const char *list_text)
{
    char *list = xstrdup(list_text);
    char *save = NULL;
    for (char *tok = strtok_r(list, " ,\t", &save); tok != NULL;
         tok = strtok_r(NULL, " ,\t", &save)) {
        bool local_only = tok[0] == '?';
        const char *name = tok + local_only;
        struct addr one, *addrs = NULL;
        size_t n = 1;
        if (addr_parse_ip(name, &one)) {
            addrs = xmalloc(sizeof(*addrs));
            addrs[0] = one;
        } else if ((n = resolve_host_now(name, &addrs)) == 0) {
            log_warn("login_source_ips: cannot resolve '%s'", name);
        }
        for (size_t i = 0; i < n; i++) {
            if (local_only && !can_bind(&addrs[i]))
                continue;
            g->source_ips = xrealloc(g->source_ips, (g->n_source_ips + 1) * sizeof(struct addr));
            g->source_ips[g->n_source_ips] = addrs[i];
            g->source_ips[g->n_source_ips++].port = 0;
        }
        free(addrs);
    }
    free(list);
}

struct generation *generation_new(struct settings *set, char **error_r)
{
    struct generation *g = xcalloc(1, sizeof(*g));
    atomic_init(&g->refs, 1);
    g->set = set;
    if (wants_tls_server(set)) {
        g->tls_server = tls_server_new(&set->tls, error_r);
        if (g->tls_server == NULL) {
            free(g);
            return NULL;
        }
    }
    g->tls_client = tls_client_new(&set->tls, error_r);
    if (g->tls_client == NULL) {
        tls_server_unref(&g->tls_server);
        free(g);
        return NULL;
    }
    self_build(&g->self, set);
    source_ips_build(g, set->login_source_ips);
    return g;
}

void generation_ref(struct generation *g)
{
    atomic_fetch_add(&g->refs, 1);
}

void generation_unref(struct generation *g)
{
    if (atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    self_free(&g->self);
    free(g->source_ips);
    tls_server_unref(&g->tls_server);
    tls_client_unref(&g->tls_client);
    settings_free(&g->set);
    free(g);
}

void foreach_listen_addr(const struct settings *set, const struct listener_settings *l,
                         listen_addr_fn *fn, void *ctx)
{
    char *list = xstrdup(l->address != NULL && l->address[0] != '\0' ? l->address : set->listen);
    char *save = NULL;
    for (char *tok = strtok_r(list, " ,\t", &save); tok != NULL;
         tok = strtok_r(NULL, " ,\t", &save)) {
        struct addr a;
        if (strcmp(tok, "*") == 0)
            addr_parse_ip("0.0.0.0", &a);
        else if (strcmp(tok, "::") == 0 || strcmp(tok, "[::]") == 0)
            addr_parse_ip("::", &a);
        else if (!addr_parse_ip(tok, &a)) {
            log_warn("listen: '%s' is not an IP address, ignored", tok);
            continue;
        }
        a.port = (uint16_t)l->port;
        fn(ctx, &a);
    }
    free(list);
}

static void self_add_ip(struct route_self *self, const struct addr *a)
{
    for (size_t i = 0; i < self->n_ips; i++) {
        if (addr_ip_eq(&self->ips[i], a))
            return;
    }
    self->ips = xrealloc(self->ips, (self->n_ips + 1) * sizeof(*self->ips));
    self->ips[self->n_ips] = *a;
    self->ips[self->n_ips].port = 0;
    self->n_ips++;
}

static void self_add_port(struct route_self *self, uint16_t port)
{
    for (size_t i = 0; i < self->n_ports; i++) {
        if (self->ports[i] == port)
            return;
    }
    self->ports = xrealloc(self->ports, (self->n_ports + 1) * sizeof(*self->ports));
    self->ports[self->n_ports++] = port;
}

static void add_listen_addr(void *ctx, const struct addr *a)
{
    struct route_self *self = ctx;
    self_add_port(self, a->port);
    if (!addr_is_any(a)) {
        self_add_ip(self, a);
        return;
    }
    struct addr *ifs;
    size_t n;
    local_interface_addrs(&ifs, &n);
    for (size_t i = 0; i < n; i++) {
        if (ifs[i].family == a->family)
            self_add_ip(self, &ifs[i]);
    }
    free(ifs);
}

void self_build(struct route_self *self, const struct settings *set)
{
    memset(self, 0, sizeof(*self));
    for (unsigned i = 0; i < set->n_listeners; i++) {
        if (set->listeners[i].kind == LISTENER_INET)
            foreach_listen_addr(set, &set->listeners[i], add_listen_addr, self);
    }
    char *list = xstrdup(set->auth_proxy_self);
    char *save = NULL;
    for (char *tok = strtok_r(list, " ,\t", &save); tok != NULL;
         tok = strtok_r(NULL, " ,\t", &save)) {
        struct addr a, *addrs = NULL;
        if (addr_parse_ip(tok, &a)) {
            self_add_ip(self, &a);
            continue;
        }
        size_t n = resolve_host_now(tok, &addrs);
        if (n == 0)
            log_warn("auth_proxy_self: cannot resolve '%s'", tok);
        for (size_t i = 0; i < n; i++)
            self_add_ip(self, &addrs[i]);
        free(addrs);
    }
    free(list);
}

void self_free(struct route_self *self)
{
    free(self->ips);
    free(self->ports);
    memset(self, 0, sizeof(*self));
}
