/* resolve.c - getaddrinfo, asynchronously through libuv. */
#include "resolve.h"

#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "io-private.h"
#include "mem.h"

struct resolve {
    uv_getaddrinfo_t req;
    resolve_fn *fn;
    void *ctx;
    bool aborted;
};

static size_t collect(const struct addrinfo *res, struct addr **addrs_r)
{
    size_t n = 0;
    *addrs_r = NULL;
    for (const struct addrinfo *p = res; p != NULL; p = p->ai_next) {
        if (p->ai_family != AF_INET && p->ai_family != AF_INET6)
            continue;
        struct addr a;
        addr_from_sockaddr(&a, p->ai_addr);
        a.port = 0;
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = addr_ip_eq(&(*addrs_r)[i], &a);
        if (dup)
            continue;
        *addrs_r = xrealloc(*addrs_r, (n + 1) * sizeof(**addrs_r));
        (*addrs_r)[n++] = a;
    }
    return n;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct resolve *r = req->data;
    if (!r->aborted) {
        struct addr *addrs = NULL;
        size_t n = status == 0 ? collect(res, &addrs) : 0;
        const char *err = status != 0 ? uv_strerror(status) : n == 0 ? "no addresses" : NULL;
        r->fn(r->ctx, addrs, n, err);
        free(addrs);
    }
    uv_freeaddrinfo(res);
    free(r);
}

static void start_failed(void *ctx)
{
    struct resolve *r = ctx;
    if (!r->aborted)
        r->fn(r->ctx, NULL, 0, "getaddrinfo failed to start");
    free(r);
}

struct resolve *resolve_host(struct loop *loop, const char *name, resolve_fn *fn, void *ctx)
{
    struct resolve *r = xcalloc(1, sizeof(*r));
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    r->req.data = r;
    r->fn = fn;
    r->ctx = ctx;
    if (uv_getaddrinfo(&loop->uv, &r->req, on_resolved, name, NULL, &hints) != 0) {
        /* Report through the callback, later, like any other failure. */
        loop_defer(loop, start_failed, r);
    }
    return r;
}

void resolve_abort(struct resolve **rp)
{
    struct resolve *r = *rp;
    if (r == NULL)
        return;
    *rp = NULL;
    r->aborted = true; /* freed by on_resolved, which still runs */
}

size_t resolve_host_now(const char *name, struct addr **addrs_r)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    *addrs_r = NULL;
    if (getaddrinfo(name, NULL, &hints, &res) != 0)
        return 0;
    size_t n = collect(res, addrs_r);
    freeaddrinfo(res);
    return n;
}
