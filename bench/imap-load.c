/* imap-load - IMAP login load for bench/imap_bench.py.
 *
 *   imap-load login -p PORT [-c 50] [-d SECONDS] [-n LOGINS] [-u user%d] [-U USERS]
 *                   [-P PASSWORD] [--tls]
 *       C connections, each looping: connect, greeting, "a LOGIN", "b NOOP",
 *       "c LOGOUT", wait for the server to close. Until D seconds passed or N
 *       logins completed (whichever first; the time limit always applies).
 *   imap-load greet -p PORT [--tls] ...
 *       The same loop without LOGIN and NOOP: connect (TLS handshake),
 *       greeting, LOGOUT. With --tls: full TLS handshakes per second.
 *   imap-load idle -p PORT -s SESSIONS [-c 100] [-d RAMP_SECONDS] [--hold SECONDS]
 *       Log SESSIONS sessions in (C at a time) and keep them open. Prints a
 *       JSON line once every session is logged in or failed (or the ramp
 *       time is up), then holds them until SIGTERM/SIGINT, end of input on
 *       a stdin pipe, or --hold seconds; prints a second JSON line and exits.
 *
 * Replies are checked strictly: the greeting must be "* OK", each tagged
 * reply must carry the expected tag and OK; NO, BAD, anything else, a close
 * or a step longer than --step-timeout counts as an error of its kind. The
 * result is one JSON line on stdout (rate, errors, latency percentiles);
 * the first few errors are described on stderr.
 *
 * User names: -u with "%d" is expanded with 0 .. USERS-1 in turn; without
 * it, every login uses that one name. TLS (GnuTLS) is implicit TLS, a full
 * handshake per connection (no resumption), the certificate not verified. */
#include <errno.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <uv.h>

#define LINE_MAX_LEN 65536
#define LATENCY_MAX_SAMPLES (16u << 20)  /* bounded memory: later samples are dropped */
#define ERRORS_SHOWN 5

enum mode { MODE_LOGIN, MODE_GREET, MODE_IDLE };

enum step {
    STEP_CONNECT,
    STEP_HANDSHAKE,
    STEP_GREETING,
    STEP_LOGIN,
    STEP_NOOP,
    STEP_LOGOUT,
    STEP_CLOSE_WAIT,         /* LOGOUT answered: the server closes */
    STEP_HELD,               /* idle mode: logged in and kept */
};

enum error_kind {
    ERR_CONNECT,             /* connect failed */
    ERR_TLS,                 /* handshake failed */
    ERR_GREETING,            /* not "* OK" */
    ERR_NO,                  /* tagged NO */
    ERR_BAD,                 /* tagged BAD */
    ERR_PROTOCOL,            /* another tag, "+", a malformed or too long line */
    ERR_CLOSED,              /* closed or reset before the reply */
    ERR_TIMEOUT,             /* a step took longer than --step-timeout */
    ERR_KINDS
};

static const char *const error_names[ERR_KINDS] = {
    "connect", "tls", "greeting", "no", "bad", "protocol", "closed", "timeout",
};

struct options {
    enum mode mode;
    const char *host;
    int port;
    unsigned concurrency;
    double duration;         /* login/greet: the run; idle: the ramp */
    uint64_t logins;         /* 0: no count limit */
    unsigned sessions;
    double hold;
    const char *user;
    unsigned users;
    const char *password;
    bool tls;
    double step_timeout;
    uint64_t max_errors;
};

struct samples {
    uint32_t *v;             /* microseconds */
    size_t n, cap;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;        /* the current step's time limit */
    uv_connect_t connect;
    enum step step;
    int open_handles;
    bool closing;
    uint64_t started_us, login_sent_us;
    char *line;              /* a reply line split over reads */
    size_t line_len, line_cap;
    gnutls_session_t tls;
    char *tls_in;            /* received TLS records not yet taken by GnuTLS */
    size_t tls_in_len, tls_in_pos, tls_in_cap;
};

struct write_req {
    uv_write_t req;
    char data[];
};

static struct options opt = {
    .host = "127.0.0.1", .concurrency = 0, .duration = 10, .user = "user",
    .users = 1, .password = "x", .step_timeout = 10, .hold = 3600, .max_errors = 1000,
};

static struct {
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    gnutls_certificate_credentials_t cred;
    uint64_t t0_us, t_end_us;
    uint64_t ok, started, next_user, live, held, dropped, slow_close, aborted;
    uint64_t errors[ERR_KINDS], errors_total;
    unsigned shown;
    bool stopping;           /* no new connections */
    bool ramp_over;          /* idle mode: no new sessions */
    bool ramp_reported;
    struct samples cycle, login;
    uv_timer_t deadline;
    uv_signal_t sigterm, sigint;
    uv_pipe_t stdin_pipe;
    bool stdin_open;
} run;

static char read_buffer[64 * 1024];

static void conn_start(void);
static void conn_close(struct conn *c);
static void ramp_report(void);
static void finish(void);
static void idle_progress(void);

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL) {
        perror("imap-load: realloc");
        exit(1);
    }
    return p;
}

static void sample_add(struct samples *s, uint64_t us)
{
    if (s->n == s->cap) {
        if (s->cap >= LATENCY_MAX_SAMPLES)
            return;
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* "name":{"p50":..,"p90":..,"p99":..,"max":..} in milliseconds. */
static void print_percentiles(const char *name, struct samples *s)
{
    if (s->n == 0) {
        printf(",\"%s\":null", name);
        return;
    }
    qsort(s->v, s->n, sizeof(*s->v), cmp_u32);
    const double q[3] = {0.50, 0.90, 0.99};
    printf(",\"%s\":{", name);
    for (int i = 0; i < 3; i++) {
        size_t k = (size_t)(q[i] * (double)(s->n - 1) + 0.5);
        printf("\"p%d\":%.3f,", (int)(q[i] * 100), s->v[k] / 1000.0);
    }
    printf("\"max\":%.3f}", s->v[s->n - 1] / 1000.0);
}

static void print_errors(void)
{
    printf(",\"errors\":%" PRIu64 ",\"error_kinds\":{", run.errors_total);
    for (int k = 0; k < ERR_KINDS; k++)
        printf("%s\"%s\":%" PRIu64, k ? "," : "", error_names[k], run.errors[k]);
    printf("}");
}

/* --- errors and closing ------------------------------------------------------ */

static void conn_fail(struct conn *c, enum error_kind kind, const char *detail)
{
    if (c->closing)
        return;
    run.errors[kind]++;
    run.errors_total++;
    if (run.shown < ERRORS_SHOWN) {
        run.shown++;
        fprintf(stderr, "imap-load: %s error at step %d: %s\n", error_names[kind], (int)c->step,
                detail);
    }
    conn_close(c);
    if (opt.mode == MODE_IDLE)
        idle_progress();
    else if (run.errors_total >= opt.max_errors && !run.stopping) {
        fprintf(stderr, "imap-load: %" PRIu64 " errors, stopping\n", run.errors_total);
        finish();
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    if (c->tls != NULL)
        gnutls_deinit(c->tls);
    free(c->tls_in);
    free(c->line);
    free(c);
    run.live--;
    if (!run.stopping)
        conn_start();
    else if (run.live == 0)
        uv_stop(run.loop); /* everything is closed: main() prints and exits */
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void on_step_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->step == STEP_CLOSE_WAIT) {
        run.slow_close++; /* the login counted; the server did not close */
        conn_close(c);
        return;
    }
    conn_fail(c, ERR_TIMEOUT, "no reply in time");
}

static void step(struct conn *c, enum step s)
{
    c->step = s;
    if (s == STEP_HELD)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_step_timeout, (uint64_t)(opt.step_timeout * 1000), 0);
}

/* --- writing ------------------------------------------------------------------- */

static void on_written(uv_write_t *req, int status)
{
    (void)status; /* a failed write shows as a failed read */
    free(req);
}

static void raw_write(struct conn *c, const char *data, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
    int done = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (done == UV_EAGAIN)
        done = 0;
    if (done < 0 || (size_t)done == n)
        return;
    struct write_req *w = xrealloc(NULL, sizeof(*w) + n - (size_t)done);
    memcpy(w->data, data + done, n - (size_t)done);
    uv_buf_t wb = uv_buf_init(w->data, (unsigned)(n - (size_t)done));
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &wb, 1, on_written) < 0)
        free(w);
}

static void send_text(struct conn *c, const char *text)
{
    size_t n = strlen(text);
    if (c->tls == NULL) {
        raw_write(c, text, n);
        return;
    }
    ssize_t r = gnutls_record_send(c->tls, text, n);
    if (r < 0 || (size_t)r != n)
        conn_fail(c, ERR_TLS, gnutls_strerror((int)r));
}

/* --- the dialogue ---------------------------------------------------------------- */

/* The next user name: the pattern's "%d" replaced (by hand: no format
 * string from the command line reaches printf). */
static void next_user(char *out, size_t size)
{
    const char *mark = strstr(opt.user, "%d");
    if (mark == NULL) {
        snprintf(out, size, "%s", opt.user);
        return;
    }
    unsigned index = (unsigned)(run.next_user++ % opt.users);
    snprintf(out, size, "%.*s%u%s", (int)(mark - opt.user), opt.user, index, mark + 2);
}

static void append_quoted(char *out, size_t size, const char *s)
{
    size_t n = strlen(out);
    if (n + 1 < size)
        out[n++] = '"';
    for (; *s != '\0' && n + 3 < size; s++) {
        if (*s == '"' || *s == '\\')
            out[n++] = '\\';
        out[n++] = *s;
    }
    if (n + 1 < size)
        out[n++] = '"';
    out[n] = '\0';
}

static void send_login(struct conn *c)
{
    char user[256], cmd[1024] = "a LOGIN ";
    next_user(user, sizeof(user));
    append_quoted(cmd, sizeof(cmd) - 3, user);
    strcat(cmd, " ");
    append_quoted(cmd, sizeof(cmd) - 3, opt.password);
    strcat(cmd, "\r\n");
    c->login_sent_us = now_us();
    step(c, STEP_LOGIN);
    send_text(c, cmd);
}

static void logged_in(struct conn *c)
{
    sample_add(&run.login, now_us() - c->login_sent_us);
    if (opt.mode == MODE_IDLE) {
        step(c, STEP_HELD);
        run.held++;
        run.ok++;
        idle_progress();
        conn_start();
        return;
    }
    step(c, STEP_NOOP);
    send_text(c, "b NOOP\r\n");
}

static void logged_out(struct conn *c)
{
    sample_add(&run.cycle, now_us() - c->started_us);
    run.ok++;
    step(c, STEP_CLOSE_WAIT);
    if (opt.logins > 0 && run.ok >= opt.logins && !run.stopping)
        finish();
}

static void on_greeting(struct conn *c, const char *line)
{
    if (strncasecmp(line, "* OK", 4) != 0 || (line[4] != ' ' && line[4] != '\0')) {
        conn_fail(c, ERR_GREETING, line);
        return;
    }
    if (opt.mode == MODE_GREET) {
        step(c, STEP_LOGOUT);
        send_text(c, "c LOGOUT\r\n");
    } else {
        send_login(c);
    }
}

/* A tagged reply to the command of the current step. */
static void on_tagged(struct conn *c, const char *line)
{
    static const char tags[] = {[STEP_LOGIN] = 'a', [STEP_NOOP] = 'b', [STEP_LOGOUT] = 'c'};
    if (line[0] != tags[c->step] || line[1] != ' ') {
        conn_fail(c, ERR_PROTOCOL, line);
        return;
    }
    const char *status = line + 2;
    size_t len = strcspn(status, " ");
    if (len == 2 && strncasecmp(status, "OK", 2) == 0) {
        if (c->step == STEP_LOGIN) {
            logged_in(c);
        } else if (c->step == STEP_NOOP) {
            step(c, STEP_LOGOUT);
            send_text(c, "c LOGOUT\r\n");
        } else {
            logged_out(c);
        }
    } else if (len == 2 && strncasecmp(status, "NO", 2) == 0) {
        conn_fail(c, ERR_NO, line);
    } else if (len == 3 && strncasecmp(status, "BAD", 3) == 0) {
        conn_fail(c, ERR_BAD, line);
    } else {
        conn_fail(c, ERR_PROTOCOL, line);
    }
}

static void on_line(struct conn *c, const char *line)
{
    switch (c->step) {
    case STEP_GREETING:
        on_greeting(c, line);
        break;
    case STEP_LOGIN:
    case STEP_NOOP:
    case STEP_LOGOUT:
        if (line[0] == '*' && line[1] == ' ')
            break; /* untagged: CAPABILITY, BYE before LOGOUT's OK, ... */
        on_tagged(c, line);
        break;
    case STEP_CLOSE_WAIT:
    case STEP_HELD:
        break; /* a late untagged line, or an alert while held */
    default:
        conn_fail(c, ERR_PROTOCOL, "data before the greeting");
    }
}

/* Plaintext from the server, split in lines. */
static void feed(struct conn *c, char *data, size_t n)
{
    while (n > 0 && !c->closing) {
        char *nl = memchr(data, '\n', n);
        size_t len = nl != NULL ? (size_t)(nl - data) : n;
        if (c->line_len + len + 1 > LINE_MAX_LEN) {
            conn_fail(c, ERR_PROTOCOL, "line too long");
            return;
        }
        if (nl == NULL || c->line_len > 0) {
            if (c->line_len + len + 1 > c->line_cap) {
                c->line_cap = c->line_len + len + 1 < 256 ? 256 : c->line_len + len + 1;
                c->line = xrealloc(c->line, c->line_cap);
            }
            memcpy(c->line + c->line_len, data, len);
            c->line_len += len;
            c->line[c->line_len] = '\0';
        }
        if (nl == NULL)
            return;
        char *line = data;
        size_t line_len = len;
        if (c->line_len > 0) {
            line = c->line;
            line_len = c->line_len;
        }
        if (line_len > 0 && line[line_len - 1] == '\r')
            line_len--;
        line[line_len] = '\0';
        c->line_len = 0;
        data += len + 1;
        n -= len + 1;
        on_line(c, line);
    }
}

/* --- TLS: GnuTLS over the libuv stream ----------------------------------------- */

static ssize_t tls_push(gnutls_transport_ptr_t ptr, const void *data, size_t n)
{
    struct conn *c = ptr;
    raw_write(c, data, n);
    return (ssize_t)n;
}

static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *data, size_t n)
{
    struct conn *c = ptr;
    size_t have = c->tls_in_len - c->tls_in_pos;
    if (have == 0) {
        gnutls_transport_set_errno(c->tls, EAGAIN);
        return -1;
    }
    if (n > have)
        n = have;
    memcpy(data, c->tls_in + c->tls_in_pos, n);
    c->tls_in_pos += n;
    return (ssize_t)n;
}

/* GnuTLS asks before some reads whether data is there; its default would
 * select() on the transport pointer as if it were a file descriptor. */
static int tls_pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
    (void)ms;
    struct conn *c = ptr;
    return c->tls_in_len > c->tls_in_pos ? 1 : 0;
}

static void tls_received(struct conn *c, const char *data, size_t n)
{
    if (c->tls_in_pos > 0) { /* keep only what GnuTLS has not taken */
        memmove(c->tls_in, c->tls_in + c->tls_in_pos, c->tls_in_len - c->tls_in_pos);
        c->tls_in_len -= c->tls_in_pos;
        c->tls_in_pos = 0;
    }
    if (c->tls_in_len + n > c->tls_in_cap) {
        c->tls_in_cap = c->tls_in_len + n;
        c->tls_in = xrealloc(c->tls_in, c->tls_in_cap);
    }
    memcpy(c->tls_in + c->tls_in_len, data, n);
    c->tls_in_len += n;
}

/* Handshake, then decrypt whatever arrived. */
static void tls_drive(struct conn *c)
{
    if (c->step == STEP_HANDSHAKE) {
        int r = gnutls_handshake(c->tls);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            return;
        if (r < 0) {
            conn_fail(c, ERR_TLS, gnutls_strerror(r));
            return;
        }
        step(c, STEP_GREETING);
    }
    char plain[16384 + 256];
    while (!c->closing) {
        size_t before = c->tls_in_pos;
        ssize_t n = gnutls_record_recv(c->tls, plain, sizeof(plain));
        /* A post-handshake message (a TLS 1.3 session ticket) also ends in
         * AGAIN: go on while records are left. */
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            if (c->tls_in_pos > before && c->tls_in_pos < c->tls_in_len)
                continue;
            return;
        }
        if (n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION) {
            if (c->step == STEP_CLOSE_WAIT)
                conn_close(c);
            else
                conn_fail(c, ERR_CLOSED, "TLS connection closed");
            return;
        }
        if (n < 0) {
            if (!gnutls_error_is_fatal((int)n))
                continue;
            conn_fail(c, ERR_TLS, gnutls_strerror((int)n));
            return;
        }
        feed(c, plain, (size_t)n);
    }
}

static bool tls_setup(struct conn *c)
{
    if (gnutls_init(&c->tls, GNUTLS_CLIENT | GNUTLS_NONBLOCK) < 0) {
        c->tls = NULL;
        return false;
    }
    gnutls_set_default_priority(c->tls);
    gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, run.cred);
    gnutls_transport_set_ptr(c->tls, c);
    gnutls_transport_set_push_function(c->tls, tls_push);
    gnutls_transport_set_pull_function(c->tls, tls_pull);
    gnutls_transport_set_pull_timeout_function(c->tls, tls_pull_timeout);
    return true;
}

/* --- the connection ----------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(read_buffer, sizeof(read_buffer));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (c->closing || nread == 0)
        return;
    if (nread < 0) {
        if (c->step == STEP_CLOSE_WAIT) {
            conn_close(c); /* the normal end after LOGOUT */
        } else if (c->step == STEP_HELD) {
            run.dropped++;
            run.held--;
            conn_close(c);
        } else {
            conn_fail(c, ERR_CLOSED, uv_strerror((int)nread));
        }
        return;
    }
    if (c->tls != NULL) {
        tls_received(c, buf->base, (size_t)nread);
        tls_drive(c);
    } else {
        feed(c, buf->base, (size_t)nread);
    }
}

static void on_connected(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (status == UV_ECANCELED || c->closing)
        return;
    if (status < 0) {
        conn_fail(c, ERR_CONNECT, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (opt.tls) {
        if (!tls_setup(c)) {
            conn_fail(c, ERR_TLS, "gnutls_init failed");
            return;
        }
        step(c, STEP_HANDSHAKE);
        tls_drive(c); /* sends the ClientHello */
    } else {
        step(c, STEP_GREETING);
    }
}

static bool want_more(void)
{
    if (run.stopping)
        return false;
    if (opt.mode == MODE_IDLE)
        return !run.ramp_over && run.started < opt.sessions;
    /* With -n, no more connections than logins still to do. */
    return opt.logins == 0 || run.ok + run.live < opt.logins;
}

static void conn_start(void)
{
    if (!want_more())
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        perror("imap-load: calloc");
        exit(1);
    }
    c->tcp.data = c->timer.data = c->connect.data = c;
    uv_tcp_init(run.loop, &c->tcp);
    uv_timer_init(run.loop, &c->timer);
    c->open_handles = 2;
    c->started_us = now_us();
    run.started++;
    run.live++;
    step(c, STEP_CONNECT);
    int r = uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *)&run.addr, on_connected);
    if (r < 0)
        conn_fail(c, ERR_CONNECT, uv_strerror(r));
}

/* --- the run ------------------------------------------------------------------- */

static void close_conn_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h->type == UV_TCP && !uv_is_closing(h)) {
        struct conn *c = h->data;
        if (opt.mode != MODE_IDLE && c->step != STEP_CLOSE_WAIT)
            run.aborted++;
        conn_close(c);
    }
}

static void close_control_handles(void)
{
    uv_handle_t *control[] = {(uv_handle_t *)&run.deadline, (uv_handle_t *)&run.sigterm,
                              (uv_handle_t *)&run.sigint};
    for (size_t i = 0; i < sizeof(control) / sizeof(control[0]); i++) {
        if (!uv_is_closing(control[i]))
            uv_close(control[i], NULL);
    }
    if (run.stdin_open) {
        run.stdin_open = false;
        uv_close((uv_handle_t *)&run.stdin_pipe, NULL);
    }
}

/* The end: no new connections, those open are closed; main() reports. */
static void finish(void)
{
    if (run.stopping)
        return;
    run.stopping = true;
    if (run.t_end_us == 0)
        run.t_end_us = now_us();
    close_control_handles();
    uv_walk(run.loop, close_conn_handle, NULL);
    if (run.live == 0)
        uv_stop(run.loop);
}

static void on_hold_end_input(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)s;
    (void)buf;
    if (nread < 0)
        finish();
}

static void on_stdin_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char ignored[256];
    *buf = uv_buf_init(ignored, sizeof(ignored));
}

static void on_hold_timeout(uv_timer_t *t)
{
    (void)t;
    finish();
}

/* Idle mode: all sessions are in (or failed). Say so, then hold them. */
static void ramp_report(void)
{
    if (run.ramp_reported)
        return;
    run.ramp_reported = true;
    run.ramp_over = true;
    double seconds = (double)(now_us() - run.t0_us) / 1e6;
    printf("{\"mode\":\"idle\",\"requested\":%u,\"logged_in\":%" PRIu64 ",\"failed\":%" PRIu64
           ",\"seconds\":%.3f",
           opt.sessions, run.held, opt.sessions - run.held, seconds);
    print_errors();
    print_percentiles("login_ms", &run.login);
    printf("}\n");
    fflush(stdout);
    uv_timer_stop(&run.deadline);
    uv_timer_start(&run.deadline, on_hold_timeout, (uint64_t)(opt.hold * 1000), 0);
    uv_handle_type t = uv_guess_handle(0);
    if ((t == UV_NAMED_PIPE || t == UV_TTY) && uv_pipe_init(run.loop, &run.stdin_pipe, 0) == 0) {
        if (uv_pipe_open(&run.stdin_pipe, 0) == 0 &&
            uv_read_start((uv_stream_t *)&run.stdin_pipe, on_stdin_alloc, on_hold_end_input) == 0)
            run.stdin_open = true;
        else
            uv_close((uv_handle_t *)&run.stdin_pipe, NULL);
    }
}

/* Idle mode: every session is logged in or failed: report. */
static void idle_progress(void)
{
    if (run.ok + run.errors_total >= opt.sessions)
        ramp_report();
}

/* The ramp took too long: those not in yet count as failed. */
static void close_pending(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h->type != UV_TCP || uv_is_closing(h))
        return;
    struct conn *c = h->data;
    if (c->step != STEP_HELD)
        conn_fail(c, ERR_TIMEOUT, "ramp time is up");
}

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    if (opt.mode == MODE_IDLE && !run.ramp_reported) {
        run.ramp_over = true; /* no more connection attempts */
        uv_walk(run.loop, close_pending, NULL);
        ramp_report();
        return;
    }
    finish();
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    finish();
}

static void report(void)
{
    static const char *const names[] = {"login", "greet", "idle-end"};
    double seconds = (double)(run.t_end_us - run.t0_us) / 1e6;
    if (opt.mode == MODE_IDLE) {
        printf("{\"mode\":\"idle-end\",\"held\":%" PRIu64 ",\"dropped\":%" PRIu64 "}\n",
               run.held, run.dropped);
        return;
    }
    printf("{\"mode\":\"%s\",\"tls\":%s,\"concurrency\":%u,\"seconds\":%.3f,\"ok\":%" PRIu64
           ",\"rate\":%.1f",
           names[opt.mode], opt.tls ? "true" : "false", opt.concurrency, seconds, run.ok,
           seconds > 0 ? (double)run.ok / seconds : 0.0);
    print_errors();
    printf(",\"aborted\":%" PRIu64 ",\"slow_close\":%" PRIu64, run.aborted, run.slow_close);
    print_percentiles("cycle_ms", &run.cycle);
    print_percentiles("login_ms", &run.login);
    printf("}\n");
}

/* --- options ------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: imap-load login|greet|idle -p PORT [-H HOST] [-c CONCURRENCY]\n"
            "         [-d SECONDS] [-n LOGINS] [-s SESSIONS] [--hold SECONDS]\n"
            "         [-u USER_PATTERN] [-U USERS] [-P PASSWORD] [--tls]\n"
            "         [--step-timeout SECONDS] [--max-errors N]\n");
    exit(2);
}

static double positive(const char *s, const char *what)
{
    char *end;
    double v = strtod(s, &end);
    if (*end != '\0' || !(v > 0) || v > 1e7) {
        fprintf(stderr, "imap-load: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

static void parse_options(int argc, char **argv)
{
    static const struct option longs[] = {
        {"tls", no_argument, NULL, 't'}, {"hold", required_argument, NULL, 'h'},
        {"step-timeout", required_argument, NULL, 'T'},
        {"max-errors", required_argument, NULL, 'E'}, {NULL, 0, NULL, 0},
    };
    if (argc < 2)
        usage();
    if (strcmp(argv[1], "login") == 0)
        opt.mode = MODE_LOGIN;
    else if (strcmp(argv[1], "greet") == 0)
        opt.mode = MODE_GREET;
    else if (strcmp(argv[1], "idle") == 0)
        opt.mode = MODE_IDLE;
    else
        usage();
    optind = 2;
    int o;
    while ((o = getopt_long(argc, argv, "p:H:c:d:n:s:u:U:P:", longs, NULL)) != -1) {
        switch (o) {
        case 'p': opt.port = (int)positive(optarg, "port"); break;
        case 'H': opt.host = optarg; break;
        case 'c': opt.concurrency = (unsigned)positive(optarg, "concurrency"); break;
        case 'd': opt.duration = positive(optarg, "duration"); break;
        case 'n': opt.logins = (uint64_t)positive(optarg, "login count"); break;
        case 's': opt.sessions = (unsigned)positive(optarg, "session count"); break;
        case 'u': opt.user = optarg; break;
        case 'U': opt.users = (unsigned)positive(optarg, "user count"); break;
        case 'P': opt.password = optarg; break;
        case 't': opt.tls = true; break;
        case 'h': opt.hold = positive(optarg, "hold time"); break;
        case 'T': opt.step_timeout = positive(optarg, "step timeout"); break;
        case 'E': opt.max_errors = (uint64_t)positive(optarg, "error limit"); break;
        default: usage();
        }
    }
    if (optind != argc || opt.port > 65535 || opt.port == 0)
        usage();
    if (opt.mode == MODE_IDLE && (opt.sessions == 0 || opt.sessions > 100000)) {
        fprintf(stderr, "imap-load: idle needs -s SESSIONS (1..100000)\n");
        exit(2);
    }
    if (opt.concurrency == 0)
        opt.concurrency = opt.mode == MODE_IDLE ? 100 : 50;
}

/* Up to the hard limit of open files: idle mode holds 10,000 sessions. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (opt.mode == MODE_IDLE && getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
        rl.rlim_cur < (rlim_t)opt.sessions + 64)
        fprintf(stderr, "imap-load: %u sessions need more than the %lu open files allowed\n",
                opt.sessions, (unsigned long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    if (uv_ip4_addr(opt.host, opt.port, (struct sockaddr_in *)&run.addr) != 0 &&
        uv_ip6_addr(opt.host, opt.port, (struct sockaddr_in6 *)&run.addr) != 0) {
        fprintf(stderr, "imap-load: bad host %s\n", opt.host);
        return 2;
    }
    if (opt.tls && (gnutls_global_init() < 0 ||
                    gnutls_certificate_allocate_credentials(&run.cred) < 0)) {
        fprintf(stderr, "imap-load: GnuTLS initialisation failed\n");
        return 1;
    }
    run.loop = uv_default_loop();
    uv_timer_init(run.loop, &run.deadline);
    uv_signal_init(run.loop, &run.sigterm);
    uv_signal_start(&run.sigterm, on_signal, SIGTERM);
    uv_signal_init(run.loop, &run.sigint);
    uv_signal_start(&run.sigint, on_signal, SIGINT);
    uv_timer_start(&run.deadline, on_deadline, (uint64_t)(opt.duration * 1000), 0);
    run.t0_us = now_us();
    unsigned first = opt.concurrency;
    if (opt.mode == MODE_IDLE && first > opt.sessions)
        first = opt.sessions;
    for (unsigned i = 0; i < first; i++)
        conn_start();
    uv_run(run.loop, UV_RUN_DEFAULT);
    if (run.t_end_us == 0)
        run.t_end_us = now_us();
    report();
    fflush(stdout);
    /* Let the closes run (they were started in finish()), then tidy up. */
    close_control_handles();
    uv_run(run.loop, UV_RUN_DEFAULT);
    uv_loop_close(run.loop);
    if (opt.tls) {
        gnutls_certificate_free_credentials(run.cred);
        gnutls_global_deinit();
    }
    free(run.cycle.v);
    free(run.login.v);
    /* Any error, or fewer logins than asked for, fails the run. */
    bool failed = opt.mode == MODE_IDLE
                      ? run.dropped > 0 || run.errors_total > 0
                      : run.errors_total > 0 || run.ok == 0 || run.ok < opt.logins;
    return failed ? 1 : 0;
}
