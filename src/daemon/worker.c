/* worker.c - worker threads, each with its own event loop and listeners,
 * and the main thread that starts them, reloads and stops them.
 *
 * Workers share nothing mutable: each has its own passdb instance, backend
 * pool and sessions. The main thread talks to them with a wake-up and two
 * fields under a mutex (a new generation, or "stop"). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "listener.h"
#include "imap-login.h"
#include "pop3-login.h"
#include "submission-login.h"
#include "lmtp.h"
#include "log.h"
#include "mem.h"
#include "proxyread.h"
#include "passdb.h"

struct worker;

enum listen_service { SERVICE_LMTP, SERVICE_IMAP, SERVICE_POP3, SERVICE_SUBMISSION };

struct listen_fd {
    int fd;
    bool is_unix;
    bool ssl;               /* implicit TLS */
    bool haproxy;           /* a PROXY header comes first */
    enum listen_service service;
    struct worker *w;
};

struct worker {
    unsigned id;
    pthread_t thread;
    struct loop *loop;
    struct loop_waker *waker;
    struct listen_fd *fds;
    size_t n_fds;
    struct listener **listeners;
    struct backend_pool *pool;
    struct proto_env *env;
    struct proto_env *login_env;  /* NULL without login listeners */
    struct timer *stop_timer;
    struct timer *stop_poll;
    pthread_mutex_t lock;
    struct generation *new_gen;   /* set by main, taken by the worker */
    bool stop;
    bool stopping;
};

static struct worker *workers;
static unsigned n_workers;
static struct generation *current_gen;
static const char *config_file;

static void env_release(void *ctx)
{
    generation_unref(ctx);
}

/* One generation in this worker, with its own passdb instance. The LMTP
 * env also gets the worker's backend pool. */
static struct proto_env *env_new(struct worker *w, struct generation *gen, bool lmtp,
                                 char **error_r)
{
    struct passdb *db = passdb_create(gen->set, w->loop, error_r);
    if (db == NULL)
        return NULL;
    struct proto_env *env = xcalloc(1, sizeof(*env));
    env->refs = 1;
    env->loop = w->loop;
    env->set = gen->set;
    env->passdb = db;
    env->self = &gen->self;
    env->tls_server = gen->tls_server;
    env->tls_client = gen->tls_client;
    env->source_ips = gen->source_ips;
    env->n_source_ips = gen->n_source_ips;
    env->release = env_release;
    env->release_ctx = gen;
    generation_ref(gen);
    if (lmtp) {
        env->pool = w->pool;
        backend_pool_set_limits(w->pool, gen->set->lmtp_backend_max_idle,
                                gen->set->lmtp_backend_idle_timeout_ms);
    }
    return env;
}

static bool has_login_listeners(const struct settings *set)
{
    for (unsigned i = 0; i < set->n_listeners; i++) {
        if (strcmp(set->listeners[i].service, "imap") == 0 &&
            settings_has_protocol(set, "imap"))
            return true;
        if (strcmp(set->listeners[i].service, "pop3") == 0 &&
            settings_has_protocol(set, "pop3"))
            return true;
        if (strcmp(set->listeners[i].service, "submission") == 0 &&
            settings_has_protocol(set, "submission"))
            return true;
    }
    return false;
}

/* The login protocols get their own passdb instance: a password check and
 * an LMTP route lookup never wait for each other. */
static struct proto_env *login_env_new(struct worker *w, struct generation *gen, char **error_r)
{
    return has_login_listeners(gen->set) ? env_new(w, gen, false, error_r) : NULL;
}

static void start_session(struct listen_fd *lf, struct stream *s)
{
    if (lf->service == SERVICE_IMAP && lf->w->login_env != NULL)
        login_session_start(lf->w->login_env, s, &imap_login_front, &imap_login_back,
                            lf->ssl);
    else if (lf->service == SERVICE_POP3 && lf->w->login_env != NULL)
        login_session_start(lf->w->login_env, s, &pop3_login_front, &pop3_login_back,
                            lf->ssl);
    else if (lf->service == SERVICE_SUBMISSION && lf->w->login_env != NULL)
        login_session_start(lf->w->login_env, s, &submission_login_front,
                            &submission_login_back, lf->ssl);
    else if (lf->service == SERVICE_LMTP)
        lmtp_session_start(lf->w->env, s, lf->ssl);
    else
        stream_destroy(&s);
}

static void on_proxy_header(void *ctx, struct stream *s, const char *error)
{
    struct listen_fd *lf = ctx;
    if (s == NULL) {
        log_info("haproxy: %s", error);
        return;
    }
    start_session(lf, s);
}

/* Behind HAProxy the header is taken first, and only from the networks
 * that may send one: anyone else could claim any client address. */
static void on_accept(void *ctx, struct stream *s)
{
    struct listen_fd *lf = ctx;
    if (!lf->haproxy) {
        start_session(lf, s);
        return;
    }
    const struct settings *set = lf->w->env->set;
    if (!cidr_set_contains(&set->haproxy_trusted_networks, stream_peer(s))) {
        char ip[ADDR_STRLEN];
        log_warn("haproxy: client not trusted (rip=%s)",
                 addr_ip_str(stream_peer(s), ip, sizeof(ip)));
        stream_destroy(&s);
        return;
    }
    stream_read_proxy_header(s, set->haproxy_timeout_ms, on_proxy_header, lf);
}

static void stop_poll(void *ctx)
{
    struct worker *w = ctx;
    if (lmtp_sessions_count() == 0 && login_sessions_count() == 0)
        loop_stop(w->loop);
}

static void stop_deadline(void *ctx)
{
    struct worker *w = ctx;
    log_warn("worker %u: shutdown timeout, closing %u sessions", w->id, lmtp_sessions_count());
    lmtp_sessions_kill();
    login_sessions_kill();
    loop_stop(w->loop);
}

static void begin_stop(struct worker *w)
{
    w->stopping = true;
    for (size_t i = 0; i < w->n_fds; i++)
        listener_free(&w->listeners[i]);
    lmtp_sessions_drain();
    login_sessions_kill();
    w->stop_timer = timer_new(w->loop, stop_deadline, w);
    timer_start(w->stop_timer, w->env->set->shutdown_timeout_ms);
    w->stop_poll = timer_new(w->loop, stop_poll, w);
    timer_start_repeat(w->stop_poll, 50);
    stop_poll(w);
}

static void on_wakeup(void *ctx)
{
    struct worker *w = ctx;
    pthread_mutex_lock(&w->lock);
    struct generation *gen = w->new_gen;
    bool stop = w->stop;
    w->new_gen = NULL;
    pthread_mutex_unlock(&w->lock);
    if (gen != NULL) {
        char *error = NULL;
        struct proto_env *env = env_new(w, gen, true, &error);
        if (env == NULL) {
            log_error("worker %u: reload failed, keeping the old configuration: %s", w->id,
                      error);
            free(error);
        } else {
            proto_env_unref(&w->env);
            w->env = env;
            proto_env_unref(&w->login_env);
            w->login_env = login_env_new(w, gen, &error);
            if (error != NULL) {
                log_error("worker %u: login passdb: %s", w->id, error);
                free(error);
            }
        }
        generation_unref(gen);
    }
    if (stop && !w->stopping)
        begin_stop(w);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the main thread's */
    loop_run(w->loop);
    timer_free(&w->stop_timer);
    timer_free(&w->stop_poll);
    lmtp_sessions_kill();
    login_sessions_kill();
    for (size_t i = 0; i < w->n_fds; i++)
        listener_free(&w->listeners[i]);
    proto_env_unref(&w->env);
    proto_env_unref(&w->login_env);
    loop_waker_free(&w->waker);
    backend_pool_free(&w->pool);
    /* Streams closing after a last reply still flush it (each is bounded
     * by its own close timeout); then nothing is left to free. */
    loop_run(w->loop);
    loop_free(&w->loop);
    return NULL;
}

/* Listening sockets: per worker for TCP (SO_REUSEPORT), shared for UNIX. */

struct fd_ctx {
    struct worker *w;
    bool ssl;
    bool haproxy;
    enum listen_service service;
    bool ok;
};

static void add_fd(struct worker *w, int fd, bool is_unix, bool ssl, bool haproxy,
                   enum listen_service service)
{
    w->fds = xrealloc(w->fds, (w->n_fds + 1) * sizeof(*w->fds));
    w->fds[w->n_fds].fd = fd;
    w->fds[w->n_fds].is_unix = is_unix;
    w->fds[w->n_fds].ssl = ssl;
    w->fds[w->n_fds].haproxy = haproxy;
    w->fds[w->n_fds].service = service;
    w->fds[w->n_fds].w = w;
    w->n_fds++;
}

static void open_tcp(void *ctx, const struct addr *a)
{
    struct fd_ctx *c = ctx;
    char *error = NULL;
    int fd = listen_socket_tcp(a, n_workers > 1, &error);
    if (fd < 0) {
        if (a->family == AF_INET6 && addr_is_any(a) && errno == EAFNOSUPPORT) {
            free(error);
            return; /* no IPv6 on this host */
        }
        log_error("%s", error);
        free(error);
        c->ok = false;
        return;
    }
    add_fd(c->w, fd, false, c->ssl, c->haproxy, c->service);
}

static bool open_listeners(const struct settings *set)
{
    for (unsigned i = 0; i < set->n_listeners; i++) {
        const struct listener_settings *l = &set->listeners[i];
        if (!settings_has_protocol(set, l->service))
            continue;
        enum listen_service service;
        if (strcmp(l->service, "lmtp") == 0) {
            service = SERVICE_LMTP;
        } else if (strcmp(l->service, "imap") == 0) {
            service = SERVICE_IMAP;
        } else if (strcmp(l->service, "pop3") == 0) {
            service = SERVICE_POP3;
        } else if (strcmp(l->service, "submission") == 0) {
            service = SERVICE_SUBMISSION;
        } else {
            log_warn("service %s: not implemented yet, listener %s ignored", l->service,
                     l->label);
            continue;
        }
        if (l->kind == LISTENER_UNIX) {
            char *error = NULL;
            int fd = listen_socket_unix(l->path, l->mode, &error);
            if (fd < 0) {
                log_error("%s", error);
                free(error);
                return false;
            }
            for (unsigned k = 0; k < n_workers; k++)
                add_fd(&workers[k], k == 0 ? fd : dup(fd), true, false, false, service);
            continue;
        }
        for (unsigned k = 0; k < n_workers; k++) {
            struct fd_ctx c = {&workers[k], l->ssl, l->haproxy, service, true};
            foreach_listen_addr(set, l, open_tcp, &c);
            if (!c.ok)
                return false;
        }
    }
    return true;
}

static bool worker_init(struct worker *w, unsigned id)
{
    char *error = NULL;
    w->id = id;
    w->loop = loop_new();
    w->pool = backend_pool_new(w->loop);
    pthread_mutex_init(&w->lock, NULL);
    w->waker = loop_waker_new(w->loop, on_wakeup, w);
    w->env = env_new(w, current_gen, true, &error);
    if (w->env == NULL) {
        log_error("passdb: %s", error);
        free(error);
        return false;
    }
    w->login_env = login_env_new(w, current_gen, &error);
    if (error != NULL) {
        log_error("passdb: %s", error);
        free(error);
        return false;
    }
    w->listeners = xcalloc(w->n_fds, sizeof(*w->listeners));
    for (size_t i = 0; i < w->n_fds; i++) {
        w->listeners[i] = listener_new(w->loop, w->fds[i].fd, w->fds[i].is_unix, on_accept,
                                       &w->fds[i], &error);
        if (w->listeners[i] == NULL) {
            log_error("%s", error);
            free(error);
            return false;
        }
    }
    return true;
}

/* Main thread: signals */

static void tell_workers(struct generation *gen, bool stop)
{
    for (unsigned i = 0; i < n_workers; i++) {
        struct worker *w = &workers[i];
        pthread_mutex_lock(&w->lock);
        if (gen != NULL) {
            if (w->new_gen != NULL)
                generation_unref(w->new_gen);
            generation_ref(gen);
            w->new_gen = gen;
        }
        if (stop)
            w->stop = true;
        pthread_mutex_unlock(&w->lock);
        loop_wakeup(w->waker);
    }
}

static void on_sighup(void *ctx)
{
    (void)ctx;
    char *error = NULL;
    struct settings *set = settings_load(config_file, &error);
    if (set == NULL) {
        log_error("reload failed, keeping the old configuration: %s", error);
        free(error);
        return;
    }
    struct generation *gen = generation_new(set, &error);
    if (gen == NULL) {
        log_error("reload failed, keeping the old configuration: %s", error);
        free(error);
        settings_free(&set);
        return;
    }
    log_info("reloading configuration from %s (listeners are kept as they are)", config_file);
    log_set_debug(set->log_debug);
    tell_workers(gen, false);
    generation_unref(current_gen);
    current_gen = gen;
}

static void on_sigterm(void *ctx)
{
    struct loop *main_loop = ctx;
    log_info("stopping: finishing open transactions");
    tell_workers(NULL, true);
    loop_stop(main_loop);
}

static unsigned worker_count(const struct settings *set)
{
    if (set->workers > 0)
        return set->workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

int run_daemon(const char *config_path, struct settings *set)
{
    config_file = config_path;
    if (log_open(set->log_path) < 0) {
        fprintf(stderr, "mailrouted: cannot open log %s: %s\n", set->log_path, strerror(errno));
        return 1;
    }
    log_set_debug(set->log_debug);
    signal(SIGPIPE, SIG_IGN);
    char *error = NULL;
    current_gen = generation_new(set, &error);
    if (current_gen == NULL) {
        log_error("%s", error);
        free(error);
        settings_free(&set);
        return 1;
    }
    n_workers = worker_count(set);
    workers = xcalloc(n_workers, sizeof(*workers));
    if (!open_listeners(set) || !drop_privileges(set->run_as_user))
        return 1;
    for (unsigned i = 0; i < n_workers; i++) {
        if (!worker_init(&workers[i], i))
            return 1;
    }
    for (unsigned i = 0; i < n_workers; i++)
        pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
    log_info("mailrouted %s started: %u workers, %u listeners", MR_VERSION, n_workers,
             set->n_listeners);

    struct loop *main_loop = loop_new();
    struct signal_watch *hup = signal_watch_new(main_loop, SIGHUP, on_sighup, NULL);
    struct signal_watch *term = signal_watch_new(main_loop, SIGTERM, on_sigterm, main_loop);
    struct signal_watch *intr = signal_watch_new(main_loop, SIGINT, on_sigterm, main_loop);
    loop_run(main_loop); /* until SIGTERM or SIGINT */
    for (unsigned i = 0; i < n_workers; i++)
        pthread_join(workers[i].thread, NULL);
    signal_watch_free(&hup);
    signal_watch_free(&term);
    signal_watch_free(&intr);
    loop_free(&main_loop);
    for (unsigned i = 0; i < n_workers; i++) {
        free(workers[i].fds);
        free(workers[i].listeners);
        pthread_mutex_destroy(&workers[i].lock);
    }
    free(workers);
    generation_unref(current_gen);
    log_info("mailrouted stopped");
    return 0;
}
