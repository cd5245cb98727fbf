/* test-relay - the post-login byte pump over real loopback sockets:
 * client -> [front listener | relay | connect] -> backend listener.
 * 4 MiB go up through the relay to a backend that reads slowly at first,
 * a greeting comes down, and the backend's close ends the relay. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listener.h"
#include "loop.h"
#include "mem.h"
#include "relay.h"
#include "stream.h"
#include "test.h"

#define UP_BYTES (4u * 1024 * 1024)

struct world {
    struct loop *loop;
    struct listener *front, *back;
    struct addr back_addr;
    struct stream *client;      /* the test's client */
    struct stream *backend;     /* the backend's side of its connection */
    struct stream *front_side;  /* accepted by the front, waiting for the backend */
    uint64_t up_received, up_sum, up_sent_sum;
    struct buf down_received;
    bool relay_done, client_closed;
    enum relay_end end;
    struct relay_stats stats;
    size_t max_pending_seen;
};

static uint8_t pattern(uint64_t i)
{
    return (uint8_t)((i * 2654435761u) >> 13);
}

static void backend_input(void *ctx)
{
    struct world *w = ctx;
    struct buf *in = stream_input(w->backend);
    for (size_t i = 0; i < buf_used(in); i++)
        w->up_sum += (uint8_t)buf_ptr(in)[i] * (w->up_received + i + 1);
    w->up_received += buf_used(in);
    stream_consume(w->backend, buf_used(in));
    if (w->up_received == UP_BYTES)
        stream_close_after_flush(w->backend); /* the backend hangs up */
}

static void backend_close(void *ctx, int err)
{
    struct world *w = ctx;
    (void)err;
    stream_destroy(&w->backend);
}

static const struct stream_handler backend_handler = {backend_input, NULL, backend_close};

static void on_back_accept(void *ctx, struct stream *s)
{
    struct world *w = ctx;
    w->backend = s;
    stream_set_handler(s, &backend_handler, w);
    stream_write_str(s, "* OK hello from the backend\r\n");
}

static void on_relay_done(void *ctx, enum relay_end end, const struct relay_stats *stats)
{
    struct world *w = ctx;
    w->relay_done = true;
    w->end = end;
    w->stats = *stats;
}

static void on_backend_connected(void *ctx, struct stream *s, int err)
{
    struct world *w = ctx;
    CHECK_INT(err, 0);
    relay_start(w->front_side, s, on_relay_done, w);
    w->front_side = NULL;
}

static void on_front_accept(void *ctx, struct stream *s)
{
    struct world *w = ctx;
    w->front_side = s;
    stream_connect_tcp(w->loop, &w->back_addr, NULL, 5000, on_backend_connected, w);
}

static void client_input(void *ctx)
{
    struct world *w = ctx;
    struct buf *in = stream_input(w->client);
    buf_append(&w->down_received, buf_ptr(in), buf_used(in));
    stream_consume(w->client, buf_used(in));
}

static void client_close(void *ctx, int err)
{
    struct world *w = ctx;
    (void)err;
    w->client_closed = true;
    stream_destroy(&w->client);
    loop_stop(w->loop);
}

static const struct stream_handler client_handler = {client_input, NULL, client_close};

static void on_client_connected(void *ctx, struct stream *s, int err)
{
    struct world *w = ctx;
    CHECK_INT(err, 0);
    w->client = s;
    stream_set_handler(s, &client_handler, w);
    char *chunk = xmalloc(UP_BYTES);
    for (uint64_t i = 0; i < UP_BYTES; i++) {
        chunk[i] = (char)pattern(i);
        w->up_sent_sum += pattern(i) * (i + 1);
    }
    stream_write(s, chunk, UP_BYTES);
    free(chunk);
}

static struct listener *listen_any(struct world *w, listener_accept_fn *fn, struct addr *a)
{
    char *error = NULL;
    addr_parse_ip("127.0.0.1", a);
    int fd = listen_socket_tcp(a, false, &error);
    CHECK(fd >= 0);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &len);
    addr_from_sockaddr(a, (struct sockaddr *)&ss);
    return listener_new(w->loop, fd, false, fn, w, &error);
}

static void on_timeout(void *ctx)
{
    struct world *w = ctx;
    CHECK(!"the relay test timed out");
    loop_stop(w->loop);
}

static void test_relay_both_ways(void)
{
    struct world w = {0};
    struct addr front_addr;
    w.loop = loop_new();
    w.front = listen_any(&w, on_front_accept, &front_addr);
    w.back = listen_any(&w, on_back_accept, &w.back_addr);
    struct timer *guard = timer_new(w.loop, on_timeout, &w);
    timer_start(guard, 20000);
    stream_connect_tcp(w.loop, &front_addr, NULL, 5000, on_client_connected, &w);
    loop_run(w.loop);

    CHECK(w.relay_done);
    CHECK_INT(w.end, RELAY_END_BACKEND);
    CHECK_INT(w.up_received, UP_BYTES);
    CHECK(w.up_sum == w.up_sent_sum);
    CHECK_INT(w.stats.bytes_in, UP_BYTES);
    CHECK_STR(buf_ptr(&w.down_received), "* OK hello from the backend\r\n");
    CHECK_INT(w.stats.bytes_out, strlen("* OK hello from the backend\r\n"));
    CHECK(w.client_closed);

    timer_free(&guard);
    listener_free(&w.front);
    listener_free(&w.back);
    stream_destroy(&w.client);
    buf_free(&w.down_received);
    loop_free(&w.loop);
}

int main(void)
{
    RUN(test_relay_both_ways);
    return test_done();
}
