/* listener.c - listening sockets and accepting connections into streams. */
#include "listener.h"

#include <errno.h>
#include <ifaddrs.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "stream-private.h"

struct listener {
    struct loop *loop;
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    bool is_unix;
    listener_accept_fn *fn;
    void *ctx;
    /* Bound to one address (not a wildcard): every accepted socket's local
     * address, known without a getsockname() per connection. */
    bool local_fixed;
    struct addr local;
    /* TCP_NODELAY is set on the listening socket, and Linux copies it to the
     * sockets it accepts; the first accepted socket checks that it did. */
    enum { NODELAY_UNCHECKED, NODELAY_INHERITED, NODELAY_PER_SOCKET } nodelay;
};

static int set_opt(int fd, int level, int name)
{
    int one = 1;
    return setsockopt(fd, level, name, &one, sizeof(one));
}

int listen_socket_tcp(const struct addr *bind_addr, bool reuseport, char **error_r)
{
    char as[ADDR_STRLEN];
    struct sockaddr_storage ss;
    socklen_t len = addr_to_sockaddr(bind_addr, &ss);
    int fd = socket(bind_addr->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto fail;
    if (set_opt(fd, SOL_SOCKET, SO_REUSEADDR) < 0)
        goto fail;
    if (reuseport && set_opt(fd, SOL_SOCKET, SO_REUSEPORT) < 0)
        goto fail;
    if (bind_addr->family == AF_INET6 && set_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY) < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0)
        goto fail;
    return fd;
fail:
    *error_r = xasprintf("listen(%s) failed: %s", addr_str(bind_addr, as, sizeof(as)),
                         strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

int listen_socket_unix(const char *path, unsigned mode, char **error_r)
{
    struct sockaddr_un sun;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        *error_r = xasprintf("UNIX socket path too long: %s", path);
        return -1;
    }
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto fail;
    /* A stale socket from an earlier run would make bind() fail. Only remove
     * a socket file, never anything else. */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
        goto fail;
    if (chmod(path, mode) < 0 || listen(fd, LISTEN_BACKLOG) < 0)
        goto fail;
    return fd;
fail:
    *error_r = xasprintf("listen(%s) failed: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

/* TCP_NODELAY for an accepted socket: a system call only where the
 * listening socket's setting is not inherited. */
static void accepted_nodelay(struct listener *l, struct stream *s)
{
    if (l->nodelay == NODELAY_UNCHECKED) {
        int on = 0;
        socklen_t len = sizeof(on);
        uv_os_fd_t fd;
        bool inherited = uv_fileno((uv_handle_t *)&s->h.tcp, &fd) == 0 &&
                         getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0 && on != 0;
        l->nodelay = inherited ? NODELAY_INHERITED : NODELAY_PER_SOCKET;
    }
    if (l->nodelay == NODELAY_PER_SOCKET)
        uv_tcp_nodelay(&s->h.tcp, 1);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    if (status < 0) {
        log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    struct stream *s = stream_alloc(l->loop, l->is_unix);
    if (uv_accept(server, s->uvs) != 0) {
        /* Another worker took it (shared UNIX socket): not an error. */
        stream_destroy(&s);
        return;
    }
    if (!l->is_unix) {
        stream_set_addrs(s, NULL, l->local_fixed ? &l->local : NULL);
        accepted_nodelay(l, s);
    }
    stream_start(s);
    l->fn(l->ctx, s);
}

static void tcp_listener_setup(struct listener *l)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&ss, &len) == 0) {
        addr_from_sockaddr(&l->local, (struct sockaddr *)&ss);
        l->local_fixed = l->local.family != 0 && !addr_is_any(&l->local);
    }
    if (uv_tcp_nodelay(&l->h.tcp, 1) != 0)
        l->nodelay = NODELAY_PER_SOCKET;
}

struct listener *listener_new(struct loop *loop, int fd, bool is_unix, listener_accept_fn *fn,
                              void *ctx, char **error_r)
{
    struct listener *l = xcalloc(1, sizeof(*l));
    int r;
    l->loop = loop;
    l->is_unix = is_unix;
    l->fn = fn;
    l->ctx = ctx;
    if (is_unix) {
        uv_pipe_init(&loop->uv, &l->h.pipe, 0);
        r = uv_pipe_open(&l->h.pipe, fd);
    } else {
        uv_tcp_init(&loop->uv, &l->h.tcp);
        r = uv_tcp_open(&l->h.tcp, fd);
    }
    l->h.tcp.data = l;
    if (r == 0 && !is_unix)
        tcp_listener_setup(l);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&l->h.tcp, LISTEN_BACKLOG, on_connection);
    if (r < 0) {
        *error_r = xasprintf("cannot listen on fd %d: %s", fd, uv_strerror(r));
        io_close_free((uv_handle_t *)&l->h.tcp, l);
        return NULL;
    }
    return l;
}

void listener_free(struct listener **lp)
{
    struct listener *l = *lp;
    if (l == NULL)
        return;
    *lp = NULL;
    io_close_free((uv_handle_t *)&l->h.tcp, l);
}

void local_interface_addrs(struct addr **addrs_r, size_t *n_r)
{
    struct ifaddrs *ifa = NULL;
    *addrs_r = NULL;
    *n_r = 0;
    if (getifaddrs(&ifa) < 0)
        return;
    for (struct ifaddrs *p = ifa; p != NULL; p = p->ifa_next) {
        if (p->ifa_addr == NULL)
            continue;
        if (p->ifa_addr->sa_family != AF_INET && p->ifa_addr->sa_family != AF_INET6)
            continue;
        *addrs_r = xrealloc(*addrs_r, (*n_r + 1) * sizeof(**addrs_r));
        addr_from_sockaddr(&(*addrs_r)[*n_r], p->ifa_addr);
        (*addrs_r)[*n_r].port = 0;
        (*n_r)++;
    }
    freeifaddrs(ifa);
}
