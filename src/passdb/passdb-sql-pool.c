/* passdb-sql-pool - MySQL/MariaDB connections for the SQL passdb, run by
 * Connector/C's non-blocking API on the worker's event loop.
 *
 * Each operation (connect, query, store result) is started with the
 * connector's *_start() call; while it returns "waiting for READ / WRITE /
 * TIMEOUT" the connection's socket is watched (src/io/fdwatch) and a timer
 * set, and the matching *_cont() call resumes it. The loop never waits for
 * the database. Host names are resolved on the libuv thread pool first,
 * because the connector's own name lookup would block.
 *
 * Pool policy, after Dovecot's sqlpool: every host= gets up to
 * max_connections connections (per worker); queries go round robin to idle
 * connections of healthy hosts, so this is load balancing plus failover; a
 * query waits in a FIFO queue while every connection is busy, and a new
 * connection is opened on the healthy host with the fewest. A host fails
 * when a connect fails or times out (or a query times out while another
 * host is healthy): its idle connections are closed, it gets no new ones,
 * and it is probed in the background after a back-off (1 s, doubling, at
 * most 30 s). While no host is healthy, any host may be tried again once a
 * second per host, on demand, so recovery is quick.
 *
 * A query whose connection was lost (server gone, killed, shutting down,
 * Galera node not ready) is retried on another connection, on another host
 * when there is one: once, or once per other host when there are more than
 * two. The host's other idle connections are closed too (a restarted server
 * leaves them all stale), but the host is not marked failed: with a single
 * host, a fresh connection may well work at once. SQL errors (syntax,
 * unknown column) are not retried. A query has one deadline, query_timeout,
 * from submission to result, queueing and retries included; at the
 * deadline it fails and its connection is closed. Whatever fails ends as
 * an error for the caller, who answers TEMPFAIL.
 *
 * Not here: what the query is and what its result means (passdb-sql.c). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "fdwatch.h"
#include "log.h"
#include "loop.h"
#include "mem.h"
#include "passdb-sql.h"
#include "resolve.h"

#define RETRY_MIN_MS 1000u
#define RETRY_MAX_MS 30000u
/* Steps to wind down an operation whose socket was shut down. */
#define ABORT_MAX_STEPS 64

enum conn_state {
    CONN_RESOLVING,   /* host name lookup before connecting */
    CONN_CONNECTING,
    CONN_IDLE,        /* watched for readability: the server closing it */
    CONN_QUERY,       /* mysql_real_query */
    CONN_STORE,       /* mysql_store_result */
    CONN_NEXT,        /* after a CALL: mysql_next_result, the query already answered */
    CONN_DISCARD,     /* after a CALL: mysql_store_result of a result nobody wants */
};

struct sql_host {
    struct sql_pool *pool;
    char *name;               /* as in host=; a path for a UNIX socket */
    bool is_socket;
    bool needs_resolve;       /* a name we resolve ourselves */
    unsigned n_conns;         /* in every state */
    unsigned n_connecting;
    unsigned failures;        /* consecutive; 0 = healthy */
    uint64_t failed_ms;       /* when the last failure happened */
    char *last_error;
    struct timer *retry_timer;
};

struct pool_query {
    struct pool_query *next;  /* in the queue */
    struct sql_pool *pool;
    sql_expand_fn *expand;
    sql_done_fn *done;
    void *ctx;
    unsigned attempts;
    struct timer *deadline;
    struct sql_conn *conn;    /* running on it; NULL while queued */
    struct sql_host *avoid;   /* its connection to this host was lost */
};

struct sql_conn {
    struct sql_pool *pool;
    struct sql_host *host;
    struct sql_conn *prev, *next;
    MYSQL *mysql;
    enum conn_state state;
    bool stuck;               /* an aborted operation would not end: never close */
    struct resolve *resolve;
    struct fdwatch *watch;
    int watch_fd;
    struct timer *wait_timer; /* the connector asked to be woken up */
    struct timer *connect_deadline;
    struct pool_query *query;
    struct buf text;          /* the query sent (wiped: it may hold a password) */
    MYSQL *connect_ret;
    int query_ret;
    MYSQL_RES *store_ret;
};

struct sql_pool {
    struct loop *loop;
    const struct sql_connect *conf; /* owned by the driver, outlives the pool */
    struct sql_host *hosts;
    size_t n_hosts;
    size_t next_host;         /* round robin */
    struct sql_conn *conns;
    struct pool_query *queue_head, *queue_tail;
    size_t n_queued;
    unsigned n_connecting, n_busy, n_draining;
    bool kicking, kick_again, destroying;
};

static void pool_kick(struct sql_pool *p);
static void conn_await(struct sql_conn *c, int status);

static void connector_init_once(void)
{
    if (mysql_library_init(0, NULL, NULL) != 0)
        log_panic("sql: cannot initialise the MariaDB client library");
}

/* ---- hosts: health and back-off ---- */

static uint64_t backoff_ms(unsigned failures)
{
    unsigned shift = failures <= 1 ? 0 : failures > 6 ? 5 : failures - 1;
    uint64_t ms = (uint64_t)RETRY_MIN_MS << shift;
    return ms < RETRY_MAX_MS ? ms : RETRY_MAX_MS;
}

static bool any_host_healthy(const struct sql_pool *p)
{
    for (size_t i = 0; i < p->n_hosts; i++) {
        if (p->hosts[i].failures == 0)
            return true;
    }
    return false;
}

static void drop_idle(struct sql_host *h);

static void host_failed(struct sql_host *h, const char *error)
{
    struct sql_pool *p = h->pool;
    h->failures++;
    h->failed_ms = loop_now_ms(p->loop);
    free(h->last_error);
    h->last_error = xstrdup(error);
    if (h->failures == 1)
        log_warn("sql: %s: %s; not used for %llu ms", h->name, error,
                 (unsigned long long)backoff_ms(h->failures));
    else
        log_debug("sql: %s: %s (failure %u)", h->name, error, h->failures);
    drop_idle(h);
    if (!p->destroying)
        timer_start(h->retry_timer, backoff_ms(h->failures));
}

static void host_ok(struct sql_host *h)
{
    if (h->failures > 0)
        log_info("sql: %s: working again", h->name);
    h->failures = 0;
    timer_stop(h->retry_timer);
}

/* May a new connection to h be opened now? */
static bool host_may_connect(const struct sql_host *h, bool others_healthy, uint64_t now)
{
    if (h->n_conns >= h->pool->conf->max_connections)
        return false;
    if (h->failures == 0)
        return true;
    /* A failing host: one probe at a time, after its back-off (or after a
     * second when no host is healthy: then it is our only hope). */
    uint64_t wait = others_healthy ? backoff_ms(h->failures) : RETRY_MIN_MS;
    return h->n_connecting == 0 && now >= h->failed_ms + wait;
}

/* Is h a better host to connect to than best? Not avoid, then healthy,
 * then the fewest connections. */
static bool better_host(const struct sql_host *h, const struct sql_host *best,
                        const struct sql_host *avoid)
{
    if (best == NULL)
        return true;
    if ((h == avoid) != (best == avoid))
        return best == avoid;
    if ((h->failures == 0) != (best->failures == 0))
        return h->failures == 0;
    return h->n_conns < best->n_conns;
}

/* The host to open a connection to; NULL when none may be opened now. */
static struct sql_host *host_to_open(struct sql_pool *p, uint64_t now,
                                     const struct sql_host *avoid)
{
    bool healthy = any_host_healthy(p);
    struct sql_host *best = NULL;
    for (size_t i = 0; i < p->n_hosts; i++) {
        struct sql_host *h = &p->hosts[(p->next_host + i) % p->n_hosts];
        if (host_may_connect(h, healthy, now) && better_host(h, best, avoid))
            best = h;
    }
    return best;
}

/* Is another host than h healthy? Then h may be failed over from. */
static bool other_host_healthy(const struct sql_pool *p, const struct sql_host *h)
{
    for (size_t i = 0; i < p->n_hosts; i++) {
        if (&p->hosts[i] != h && p->hosts[i].failures == 0)
            return true;
    }
    return false;
}

/* ---- connections: the non-blocking machinery ---- */

static int mysql_events(int fdwatch_events)
{
    if (fdwatch_events < 0)
        return MYSQL_WAIT_READ | MYSQL_WAIT_WRITE; /* let the connector see the error */
    return ((fdwatch_events & FDWATCH_READ) ? MYSQL_WAIT_READ : 0) |
           ((fdwatch_events & FDWATCH_WRITE) ? MYSQL_WAIT_WRITE : 0);
}

/* Resume the running operation with these events; returns the new wait
 * status (0: the operation is over). */
static int conn_continue(struct sql_conn *c, int ready)
{
    switch (c->state) {
    case CONN_CONNECTING:
        return mysql_real_connect_cont(&c->connect_ret, c->mysql, ready);
    case CONN_QUERY:
        return mysql_real_query_cont(&c->query_ret, c->mysql, ready);
    case CONN_STORE:
    case CONN_DISCARD:
        return mysql_store_result_cont(&c->store_ret, c->mysql, ready);
    case CONN_NEXT:
        return mysql_next_result_cont(&c->query_ret, c->mysql, ready);
    case CONN_RESOLVING:
    case CONN_IDLE:
        break;
    }
    return 0;
}

static bool conn_in_operation(const struct sql_conn *c)
{
    return c->state != CONN_RESOLVING && c->state != CONN_IDLE;
}

static void conn_destroy(struct sql_conn *c);
static void conn_lost_while_idle(struct sql_conn *c);

static void on_conn_io(void *ctx, int events)
{
    struct sql_conn *c = ctx;
    if (c->state == CONN_IDLE) {
        conn_lost_while_idle(c);
        return;
    }
    timer_stop(c->wait_timer);
    conn_await(c, conn_continue(c, mysql_events(events)));
}

static void on_wait_timer(void *ctx)
{
    struct sql_conn *c = ctx;
    conn_await(c, conn_continue(c, MYSQL_WAIT_TIMEOUT));
}

/* Watch the connector's socket for these fdwatch events. During a connect
 * the watch is made anew at every step: the connector may close a socket
 * and open another, which can get the same number. false when the socket
 * cannot be watched. */
static bool conn_watch(struct sql_conn *c, int events)
{
    int fd = (int)mysql_get_socket(c->mysql);
    if (fd != c->watch_fd || c->watch == NULL || c->state == CONN_CONNECTING) {
        fdwatch_free(&c->watch);
        c->watch_fd = fd;
        if (fd >= 0)
            c->watch = fdwatch_new(c->pool->loop, fd, on_conn_io, c);
    }
    if (c->watch == NULL)
        return false;
    fdwatch_set(c->watch, events);
    return true;
}

/* Wind down the running operation at once: with its socket shut down every
 * read and write fails, so the connector finishes with an error. */
static void conn_abort_operation(struct sql_conn *c)
{
    resolve_abort(&c->resolve);
    fdwatch_free(&c->watch);
    timer_stop(c->wait_timer);
    if (!conn_in_operation(c))
        return;
    int fd = (int)mysql_get_socket(c->mysql);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    int status = 1;
    for (int i = 0; i < ABORT_MAX_STEPS && status != 0; i++)
        status = conn_continue(c, MYSQL_WAIT_READ | MYSQL_WAIT_WRITE | MYSQL_WAIT_TIMEOUT);
    if (status != 0) {
        log_error("sql: %s: an aborted operation does not end; leaking its handle",
                  c->host->name);
        c->stuck = true;
    }
    if (c->store_ret != NULL) {
        mysql_free_result(c->store_ret);
        c->store_ret = NULL;
    }
}

static void op_finished(struct sql_conn *c);

/* After a *_start() or *_cont(): finished, or wait for what it asks. */
static void conn_await(struct sql_conn *c, int status)
{
    if (status == 0) {
        op_finished(c);
        return;
    }
    int events = ((status & (MYSQL_WAIT_READ | MYSQL_WAIT_EXCEPT)) ? FDWATCH_READ : 0) |
                 ((status & MYSQL_WAIT_WRITE) ? FDWATCH_WRITE : 0);
    if (!conn_watch(c, events)) {
        /* Cannot happen with a live socket; end the operation as failed. */
        conn_abort_operation(c);
        op_finished(c);
        return;
    }
    if (status & MYSQL_WAIT_TIMEOUT)
        timer_start(c->wait_timer, mysql_get_timeout_value_ms(c->mysql));
}

static void conn_go_idle(struct sql_conn *c)
{
    c->state = CONN_IDLE;
    timer_stop(c->wait_timer);
    if (!conn_watch(c, FDWATCH_READ))
        log_debug("sql: %s: cannot watch an idle connection", c->host->name);
}

/* ---- connections: life cycle ---- */

static void on_connect_deadline(void *ctx);
static void on_resolved(void *ctx, const struct addr *addrs, size_t n, const char *err);

static bool tls_wanted(const struct sql_connect *conf)
{
    return conf->ssl_ca != NULL || conf->ssl_ca_path != NULL || conf->ssl_cert != NULL ||
           conf->ssl_key != NULL || conf->ssl_cipher != NULL || conf->ssl_verify_server_cert;
}

/* Options every connection gets; TLS when any ssl_* setting is given. */
static void set_options(MYSQL *m, const struct sql_connect *conf)
{
    unsigned timeout_s = (conf->connect_timeout_ms + 999) / 1000;
    unsigned no_local_infile = 0;
    mysql_options(m, MYSQL_OPT_NONBLOCK, 0);
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout_s);
    mysql_options(m, MYSQL_OPT_LOCAL_INFILE, &no_local_infile);
    /* UTF-8 user names (SMTPUTF8) must reach the server as they are. */
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (conf->option_file != NULL)
        mysql_options(m, MYSQL_READ_DEFAULT_FILE, conf->option_file);
    if (conf->option_group != NULL)
        mysql_options(m, MYSQL_READ_DEFAULT_GROUP, conf->option_group);
    if (tls_wanted(conf)) {
        my_bool verify = conf->ssl_verify_server_cert, enforce = 1;
        mysql_ssl_set(m, conf->ssl_key, conf->ssl_cert, conf->ssl_ca, conf->ssl_ca_path,
                      conf->ssl_cipher);
        mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
        mysql_options(m, MYSQL_OPT_SSL_ENFORCE, &enforce);
    }
}

static void conn_connect(struct sql_conn *c, const char *host)
{
    const struct sql_connect *conf = c->pool->conf;
    const char *socket = c->host->is_socket ? c->host->name : NULL;
    c->state = CONN_CONNECTING;
    int status = mysql_real_connect_start(&c->connect_ret, c->mysql,
                                          socket != NULL ? "localhost" : host, conf->user,
                                          conf->password, conf->dbname, conf->port, socket,
                                          conf->client_flags);
    conn_await(c, status);
}

static void conn_open(struct sql_host *h)
{
    struct sql_pool *p = h->pool;
    struct sql_conn *c = xcalloc(1, sizeof(*c));
    c->pool = p;
    c->host = h;
    c->watch_fd = -1;
    c->mysql = mysql_init(NULL);
    if (c->mysql == NULL)
        log_panic("sql: mysql_init: out of memory");
    set_options(c->mysql, p->conf);
    c->wait_timer = timer_new(p->loop, on_wait_timer, c);
    c->connect_deadline = timer_new(p->loop, on_connect_deadline, c);
    timer_start(c->connect_deadline, p->conf->connect_timeout_ms);
    c->next = p->conns;
    if (p->conns != NULL)
        p->conns->prev = c;
    p->conns = c;
    h->n_conns++;
    h->n_connecting++;
    p->n_connecting++;
    if (h->needs_resolve) {
        c->state = CONN_RESOLVING;
        c->resolve = resolve_host(p->loop, h->name, on_resolved, c);
    } else {
        conn_connect(c, h->name);
    }
}

/* The connection must be out of any operation and have no query. */
static void conn_destroy(struct sql_conn *c)
{
    struct sql_pool *p = c->pool;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->host->n_conns--;
    if (c->state == CONN_RESOLVING || c->state == CONN_CONNECTING) {
        c->host->n_connecting--;
        p->n_connecting--;
    }
    resolve_abort(&c->resolve);
    fdwatch_free(&c->watch); /* before the connector closes the socket */
    timer_free(&c->wait_timer);
    timer_free(&c->connect_deadline);
    if (!c->stuck)
        mysql_close(c->mysql);
    buf_free_wipe(&c->text);
    free(c);
}

static void drop_idle(struct sql_host *h)
{
    struct sql_conn *c = h->pool->conns;
    while (c != NULL) {
        struct sql_conn *next = c->next;
        if (c->host == h && c->state == CONN_IDLE)
            conn_destroy(c);
        c = next;
    }
}

/* The server closed an idle connection (wait_timeout, restart): forget it;
 * the next query opens another. Not a failure of the host by itself. */
static void conn_lost_while_idle(struct sql_conn *c)
{
    struct sql_pool *p = c->pool;
    log_debug("sql: %s: idle connection closed by the server", c->host->name);
    conn_destroy(c);
    pool_kick(p);
}

static void connect_failed(struct sql_conn *c, const char *error)
{
    struct sql_pool *p = c->pool;
    struct sql_host *h = c->host;
    char *msg = xasprintf("connect failed: %s", error);
    conn_destroy(c);
    host_failed(h, msg);
    free(msg);
    pool_kick(p);
}

static void on_connect_deadline(void *ctx)
{
    struct sql_conn *c = ctx;
    char *msg = xasprintf("timed out after %u ms", c->pool->conf->connect_timeout_ms);
    conn_abort_operation(c);
    connect_failed(c, msg);
    free(msg);
}

static void on_resolved(void *ctx, const struct addr *addrs, size_t n, const char *err)
{
    struct sql_conn *c = ctx;
    char ip[ADDR_STRLEN];
    c->resolve = NULL;
    if (n == 0) {
        char *msg = xasprintf("cannot resolve: %s", err != NULL ? err : "no address");
        connect_failed(c, msg);
        free(msg);
        return;
    }
    conn_connect(c, addr_ip_str(&addrs[0], ip, sizeof(ip)));
}

static void connect_finished(struct sql_conn *c)
{
    struct sql_pool *p = c->pool;
    if (c->connect_ret == NULL) {
        char error[256];
        connect_failed(c, log_sanitize(error, sizeof(error), mysql_error(c->mysql)));
        return;
    }
    /* Connector/C 3.3 refuses a server without TLS only when it verifies
     * the certificate; otherwise it quietly goes on in plain text. */
    if (tls_wanted(p->conf) && mysql_get_ssl_cipher(c->mysql) == NULL) {
        connect_failed(c, "the server does not offer TLS");
        return;
    }
    timer_stop(c->connect_deadline);
    c->host->n_connecting--;
    p->n_connecting--;
    host_ok(c->host);
    conn_go_idle(c);
    pool_kick(p);
}

/* ---- queries ---- */

static void query_complete(struct pool_query *q, MYSQL_RES *res, const char *error)
{
    timer_free(&q->deadline);
    q->done(q->ctx, res, error);
    if (res != NULL)
        mysql_free_result(res);
    free(q);
}

static struct pool_query *conn_take_query(struct sql_conn *c)
{
    struct pool_query *q = c->query;
    c->query = NULL;
    q->conn = NULL;
    c->pool->n_busy--;
    buf_free_wipe(&c->text);
    return q;
}

static void queue_push(struct sql_pool *p, struct pool_query *q, bool front)
{
    if (front) {
        q->next = p->queue_head;
        p->queue_head = q;
        if (p->queue_tail == NULL)
            p->queue_tail = q;
    } else {
        q->next = NULL;
        if (p->queue_tail != NULL)
            p->queue_tail->next = q;
        else
            p->queue_head = q;
        p->queue_tail = q;
    }
    p->n_queued++;
}

static void queue_remove(struct sql_pool *p, struct pool_query *q)
{
    struct pool_query **link = &p->queue_head, *prev = NULL;
    while (*link != q) {
        prev = *link;
        link = &(*link)->next;
    }
    *link = q->next;
    if (p->queue_tail == q)
        p->queue_tail = prev;
    q->next = NULL;
    p->n_queued--;
}

/* Errors after which the connection is useless but the query may work on
 * another: the client library's own (2000-2999: lost, gone, cannot
 * connect), a server shutting down (1053), a killed connection (1927), a
 * Galera node that is not ready (1047). */
static bool is_connection_error(unsigned err)
{
    return (err >= 2000 && err <= 2999) || err == 1053 || err == 1927 || err == 1047;
}

static unsigned max_attempts(const struct sql_pool *p)
{
    return p->n_hosts > 2 ? (unsigned)p->n_hosts : 2;
}

static void conn_query_error(struct sql_conn *c)
{
    struct sql_pool *p = c->pool;
    struct sql_host *h = c->host;
    unsigned err = mysql_errno(c->mysql);
    char text[256];
    /* Server messages quote the query, user names included: no control
     * characters may reach a log line. */
    char *msg = xasprintf("%s (%u)", log_sanitize(text, sizeof(text), mysql_error(c->mysql)),
                          err);
    struct pool_query *q = conn_take_query(c);
    if (!is_connection_error(err)) {
        conn_go_idle(c);
        query_complete(q, NULL, msg);
    } else {
        c->state = CONN_IDLE; /* the operation is over */
        conn_destroy(c);
        drop_idle(h);
        if (q->attempts < max_attempts(p)) {
            log_info("sql: %s: connection lost, retrying the query on another one: %s",
                     h->name, msg);
            q->avoid = h;
            queue_push(p, q, true);
        } else {
            log_warn("sql: %s: connection lost: %s", h->name, msg);
            query_complete(q, NULL, msg);
        }
    }
    free(msg);
    pool_kick(p);
}

static void query_sent(struct sql_conn *c)
{
    if (c->query_ret != 0) {
        conn_query_error(c);
        return;
    }
    c->state = CONN_STORE;
    conn_await(c, mysql_store_result_start(&c->store_ret, c->mysql));
}

static void result_stored(struct sql_conn *c)
{
    struct sql_pool *p = c->pool;
    MYSQL_RES *res = c->store_ret;
    c->store_ret = NULL;
    if (res == NULL && mysql_errno(c->mysql) != 0) {
        conn_query_error(c);
        return;
    }
    struct pool_query *q = conn_take_query(c);
    host_ok(c->host);
    /* A stored procedure (CALL) leaves a status result behind: it is read
     * after the answer is delivered, and until then c is not idle (nobody
     * picks or drops it). */
    bool more = res != NULL && mysql_more_results(c->mysql);
    if (more) {
        c->state = CONN_NEXT;
        p->n_draining++;
    } else {
        conn_go_idle(c);
    }
    if (res == NULL)
        query_complete(q, NULL, "the query returned no result set (not a SELECT?)");
    else
        query_complete(q, res, NULL);
    /* Without more, c may be gone: the callback may have run the pool. */
    if (more)
        conn_await(c, mysql_next_result_start(&c->query_ret, c->mysql));
    pool_kick(p);
}

/* The leftovers of a CALL are read; the connection is idle after them. */
static void drain_finished(struct sql_conn *c, bool ok)
{
    struct sql_pool *p = c->pool;
    p->n_draining--;
    if (ok) {
        conn_go_idle(c);
    } else {
        log_debug("sql: %s: closing a connection after a bad extra result", c->host->name);
        c->state = CONN_IDLE;
        conn_destroy(c);
    }
    pool_kick(p);
}

static void next_result_done(struct sql_conn *c)
{
    if (c->query_ret != 0) {      /* -1: no more results; > 0: an error */
        drain_finished(c, c->query_ret < 0);
        return;
    }
    c->state = CONN_DISCARD;
    conn_await(c, mysql_store_result_start(&c->store_ret, c->mysql));
}

static void discard_done(struct sql_conn *c)
{
    if (c->store_ret == NULL && mysql_errno(c->mysql) != 0) {
        drain_finished(c, false);
        return;
    }
    if (c->store_ret != NULL)
        mysql_free_result(c->store_ret);
    c->store_ret = NULL;
    c->state = CONN_NEXT;
    conn_await(c, mysql_next_result_start(&c->query_ret, c->mysql));
}

static void op_finished(struct sql_conn *c)
{
    switch (c->state) {
    case CONN_CONNECTING:
        connect_finished(c);
        break;
    case CONN_QUERY:
        query_sent(c);
        break;
    case CONN_STORE:
        result_stored(c);
        break;
    case CONN_NEXT:
        next_result_done(c);
        break;
    case CONN_DISCARD:
        discard_done(c);
        break;
    case CONN_RESOLVING:
    case CONN_IDLE:
        break;
    }
}

static void conn_run(struct sql_conn *c, struct pool_query *q)
{
    c->query = q;
    q->conn = c;
    q->attempts++;
    c->pool->n_busy++;
    c->state = CONN_QUERY;
    buf_free_wipe(&c->text);
    q->expand(q->ctx, c->mysql, &c->text);
    conn_await(c, mysql_real_query_start(&c->query_ret, c->mysql, buf_ptr(&c->text),
                                         buf_used(&c->text)));
}

static void on_query_deadline(void *ctx)
{
    struct pool_query *q = ctx;
    struct sql_pool *p = q->pool;
    struct sql_conn *c = q->conn;
    char *msg = xasprintf("query timed out after %u ms", p->conf->query_timeout_ms);
    if (c == NULL) {
        queue_remove(p, q);
    } else {
        struct sql_host *h = c->host;
        conn_abort_operation(c);
        conn_take_query(c);
        c->state = CONN_IDLE;
        conn_destroy(c);
        /* A hung server, or a slow query? Fail over when there is a host to
         * fail over to; a single host stays in use. */
        if (other_host_healthy(p, h))
            host_failed(h, msg);
        else
            log_warn("sql: %s: %s", h->name, msg);
    }
    query_complete(q, NULL, msg);
    free(msg);
    pool_kick(p);
}

/* ---- dispatching ---- */

/* An idle connection of h (of any host but not_h when h is NULL). */
static struct sql_conn *idle_conn_of(const struct sql_pool *p, const struct sql_host *h,
                                     const struct sql_host *not_h)
{
    for (struct sql_conn *c = p->conns; c != NULL; c = c->next) {
        if (c->state == CONN_IDLE && (h == NULL || c->host == h) && c->host != not_h)
            return c;
    }
    return NULL;
}

/* An idle connection: round robin over healthy hosts but avoid, then any
 * host but avoid, then any. */
static struct sql_conn *pick_idle(struct sql_pool *p, const struct sql_host *avoid)
{
    for (size_t i = 0; i < p->n_hosts; i++) {
        size_t idx = (p->next_host + i) % p->n_hosts;
        const struct sql_host *h = &p->hosts[idx];
        struct sql_conn *c = h->failures == 0 && h != avoid ? idle_conn_of(p, h, NULL) : NULL;
        if (c != NULL) {
            p->next_host = (idx + 1) % p->n_hosts;
            return c;
        }
    }
    struct sql_conn *c = idle_conn_of(p, NULL, avoid);
    return c != NULL ? c : idle_conn_of(p, NULL, NULL);
}

static const char *last_error(const struct sql_pool *p)
{
    const struct sql_host *worst = NULL;
    for (size_t i = 0; i < p->n_hosts; i++) {
        const struct sql_host *h = &p->hosts[i];
        if (h->last_error != NULL && (worst == NULL || h->failed_ms > worst->failed_ms))
            worst = h;
    }
    return worst != NULL ? worst->last_error : "no connection";
}

/* Nothing is connecting and nothing is busy: the queue would wait forever. */
static void fail_queue(struct sql_pool *p)
{
    char *msg = xasprintf("no SQL server reachable (%s)", last_error(p));
    struct pool_query *q;
    while ((q = p->queue_head) != NULL) {
        queue_remove(p, q);
        query_complete(q, NULL, msg);
    }
    free(msg);
}

static void kick_once(struct sql_pool *p)
{
    uint64_t now = loop_now_ms(p->loop);
    struct pool_query *q;
    struct sql_conn *c;
    while ((q = p->queue_head) != NULL && (c = pick_idle(p, q->avoid)) != NULL) {
        queue_remove(p, q);
        conn_run(c, q);
    }
    while (p->n_queued > p->n_connecting) {
        struct sql_host *h = host_to_open(p, now, p->queue_head->avoid);
        if (h == NULL)
            break;
        conn_open(h);
    }
    if (p->queue_head != NULL && p->n_connecting == 0 && p->n_busy == 0 && p->n_draining == 0)
        fail_queue(p);
}

/* Match queries and connections. Re-entrant calls (a callback submitting a
 * query, a connect failing at once) only ask for one more round. */
static void pool_kick(struct sql_pool *p)
{
    if (p->destroying)
        return;
    if (p->kicking) {
        p->kick_again = true;
        return;
    }
    p->kicking = true;
    do {
        p->kick_again = false;
        kick_once(p);
    } while (p->kick_again);
    p->kicking = false;
}

/* Background probe of a failed host, so that it takes load again. */
static void on_retry_timer(void *ctx)
{
    struct sql_host *h = ctx;
    if (h->n_connecting > 0)
        return;
    if (h->n_conns >= h->pool->conf->max_connections) {
        timer_start(h->retry_timer, backoff_ms(h->failures));
        return;
    }
    log_debug("sql: %s: trying again", h->name);
    conn_open(h);
    pool_kick(h->pool);
}

/* ---- public ---- */

void sql_pool_query(struct sql_pool *p, sql_expand_fn *expand, sql_done_fn *done, void *ctx)
{
    struct pool_query *q = xcalloc(1, sizeof(*q));
    q->pool = p;
    q->expand = expand;
    q->done = done;
    q->ctx = ctx;
    q->deadline = timer_new(p->loop, on_query_deadline, q);
    timer_start(q->deadline, p->conf->query_timeout_ms);
    queue_push(p, q, false);
    pool_kick(p);
}

static void host_init(struct sql_pool *p, struct sql_host *h, const char *name)
{
    struct addr ip;
    h->pool = p;
    h->name = xstrdup(name);
    h->is_socket = name[0] == '/';
    /* The connector resolves names itself, blocking; we resolve first unless
     * the certificate must be checked against the name. */
    h->needs_resolve = !h->is_socket && strcmp(name, "localhost") != 0 &&
                       !addr_parse_ip(name, &ip) && !p->conf->ssl_verify_server_cert;
    h->retry_timer = timer_new(p->loop, on_retry_timer, h);
}

struct sql_pool *sql_pool_new(struct loop *loop, const struct sql_connect *conf)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, connector_init_once);
    struct sql_pool *p = xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->conf = conf;
    p->n_hosts = conf->n_hosts;
    p->hosts = xcalloc(p->n_hosts, sizeof(*p->hosts));
    for (size_t i = 0; i < p->n_hosts; i++)
        host_init(p, &p->hosts[i], conf->hosts[i]);
    /* One connection per host from the start, as Dovecot does: failures
     * show in the log at once and the first queries need not wait. */
    for (size_t i = 0; i < p->n_hosts; i++)
        conn_open(&p->hosts[i]);
    return p;
}

void sql_pool_free(struct sql_pool **pp)
{
    struct sql_pool *p = *pp;
    if (p == NULL)
        return;
    *pp = NULL;
    p->destroying = true;
    while (p->conns != NULL) {
        struct sql_conn *c = p->conns;
        conn_abort_operation(c);
        struct pool_query *q = c->query != NULL ? conn_take_query(c) : NULL;
        conn_destroy(c);
        if (q != NULL)
            query_complete(q, NULL, "the passdb is shutting down");
    }
    while (p->queue_head != NULL) {
        struct pool_query *q = p->queue_head;
        queue_remove(p, q);
        query_complete(q, NULL, "the passdb is shutting down");
    }
    for (size_t i = 0; i < p->n_hosts; i++) {
        timer_free(&p->hosts[i].retry_timer);
        free(p->hosts[i].name);
        free(p->hosts[i].last_error);
    }
    free(p->hosts);
    free(p);
}
