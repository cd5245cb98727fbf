/* imap-mini - a minimal IMAP backend for bench/imap_bench.py.
 *
 * The benchmark measures what a login proxy adds; a real IMAP server behind
 * it would add its own cost (a process per login, mail storage) and hide the
 * proxy's. imap-mini does the least an IMAP backend can: it greets with its
 * capabilities, lets anyone log in (LOGIN, AUTHENTICATE PLAIN with or
 * without SASL-IR), answers ID, CAPABILITY, NOOP, IDLE and LOGOUT, and holds
 * logged-in sessions for a few hundred bytes each. Pipelined commands are
 * answered in order with one write per read. Literals ({n} and {n+}) in
 * arguments are skipped, as no argument is looked at.
 *
 *     imap-mini -p PORT [-l ADDRESS]
 *
 * One thread, one libuv loop; SIGTERM or SIGINT closes everything and exits.
 * Not a test double: it checks nothing a client sends beyond the grammar it
 * needs to find tags and commands. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <uv.h>

#define GREETING "* OK [CAPABILITY IMAP4rev1 ID LITERAL+ SASL-IR AUTH=PLAIN] mini ready\r\n"
#define PRELOGIN_CAPS "IMAP4rev1 ID LITERAL+ SASL-IR AUTH=PLAIN"
#define POSTLOGIN_CAPS "IMAP4rev1 IDLE"
#define LINE_MAX_LEN 8192    /* a longer command line ends the session */
#define LITERAL_MAX (1u << 20)

enum cont_wait {
    CONT_NONE,
    CONT_AUTH,               /* AUTHENTICATE PLAIN without SASL-IR: the response line */
    CONT_IDLE,               /* IDLE: "DONE" */
};

struct mini_conn {
    uv_tcp_t tcp;
    char *line;              /* a command line split over reads (NULL: none) */
    uint32_t line_len, line_cap;
    uint32_t literal_left;   /* literal bytes still to skip */
    uint32_t writes_pending; /* uv_write requests in flight */
    char *cont_tag;          /* the tag a continuation belongs to */
    enum cont_wait cont;
    bool logged_in;
    bool closing;            /* no more input is handled */
    bool close_after_write;  /* LOGOUT answered: close once the reply is out */
};

struct write_req {
    uv_write_t req;
    struct mini_conn *conn;
    char data[];
};

/* Replies of one read, written at once (one thread: one shared buffer). */
static struct {
    char *data;
    size_t len, cap;
} out;

static char read_buffer[64 * 1024];
static uv_tcp_t listener;
static uv_signal_t sigterm, sigint;
static uint64_t sessions_total, logins_total;

static void out_append(const char *s, size_t n)
{
    if (out.len + n > out.cap) {
        size_t cap = out.cap ? out.cap : 4096;
        while (cap < out.len + n)
            cap *= 2;
        out.data = realloc(out.data, cap);
        if (out.data == NULL) {
            perror("imap-mini: realloc");
            exit(1);
        }
        out.cap = cap;
    }
    memcpy(out.data + out.len, s, n);
    out.len += n;
}

static void out_str(const char *s)
{
    out_append(s, strlen(s));
}

static void tagged(const char *tag, const char *text)
{
    out_str(tag);
    out_str(" ");
    out_str(text);
    out_str("\r\n");
}

static void on_closed(uv_handle_t *h)
{
    struct mini_conn *c = h->data;
    free(c->line);
    free(c->cont_tag);
    free(c);
}

static void conn_close(struct mini_conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct mini_conn *c = w->conn;
    free(w);
    c->writes_pending--;
    if (status < 0 || (c->close_after_write && c->writes_pending == 0))
        conn_close(c);
}

/* Send what the replies buffer holds: directly if the socket takes it, else
 * the rest from a copy. */
static void flush(struct mini_conn *c)
{
    if (out.len == 0 || uv_is_closing((uv_handle_t *)&c->tcp)) {
        out.len = 0;
        return;
    }
    uv_buf_t b = uv_buf_init(out.data, (unsigned)out.len);
    int done = c->writes_pending == 0 ? uv_try_write((uv_stream_t *)&c->tcp, &b, 1) : 0;
    if (done == UV_EAGAIN)
        done = 0;
    if (done < 0) {
        out.len = 0;
        conn_close(c);
        return;
    }
    size_t rest = out.len - (size_t)done;
    out.len = 0;
    if (rest == 0)
        return;
    struct write_req *w = malloc(sizeof(*w) + rest);
    if (w == NULL) {
        conn_close(c);
        return;
    }
    w->conn = c;
    memcpy(w->data, b.base + done, rest);
    uv_buf_t wb = uv_buf_init(w->data, (unsigned)rest);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &wb, 1, on_written) < 0) {
        free(w);
        conn_close(c);
        return;
    }
    c->writes_pending++;
}

static void logged_in(struct mini_conn *c, const char *tag)
{
    c->logged_in = true;
    logins_total++;
    tagged(tag, "OK [CAPABILITY " POSTLOGIN_CAPS "] Logged in");
}

static void wait_continuation(struct mini_conn *c, const char *tag, enum cont_wait what)
{
    free(c->cont_tag);
    c->cont_tag = strdup(tag);
    c->cont = c->cont_tag != NULL ? what : CONT_NONE;
}

/* A line answering "+": the SASL response, or IDLE's DONE. */
static void continuation(struct mini_conn *c, const char *line)
{
    char *tag = c->cont_tag;
    enum cont_wait what = c->cont;
    c->cont_tag = NULL;
    c->cont = CONT_NONE;
    if (what == CONT_AUTH) {
        if (strcmp(line, "*") == 0)
            tagged(tag, "BAD Authentication aborted by client.");
        else
            logged_in(c, tag);
    } else if (strcasecmp(line, "DONE") == 0) {
        tagged(tag, "OK Idle completed.");
    } else {
        tagged(tag, "BAD Expected DONE.");
    }
    free(tag);
}

static void cmd_authenticate(struct mini_conn *c, const char *tag, const char *args)
{
    size_t mech_len = strcspn(args, " ");
    if (c->logged_in) {
        tagged(tag, "BAD Already logged in.");
    } else if (mech_len != 5 || strncasecmp(args, "PLAIN", 5) != 0) {
        tagged(tag, "NO [CANNOT] Unsupported authentication mechanism.");
    } else if (args[5] == ' ' && args[6] != '\0') {
        logged_in(c, tag); /* SASL-IR: the response is right here */
    } else {
        out_str("+ \r\n");
        wait_continuation(c, tag, CONT_AUTH);
    }
}

/* One whole command (literals already skipped). */
static void command(struct mini_conn *c, char *line)
{
    if (c->cont != CONT_NONE) {
        continuation(c, line);
        return;
    }
    char *tag = line;
    char *name = strchr(line, ' ');
    if (name == NULL || name == tag || tag[0] == '*' || tag[0] == '+') {
        out_str("* BAD Error in IMAP command received by server.\r\n");
        return;
    }
    *name++ = '\0';
    char *args = name + strcspn(name, " ");
    if (*args == ' ')
        *args++ = '\0';
    if (strcasecmp(name, "NOOP") == 0) {
        tagged(tag, "OK NOOP completed.");
    } else if (strcasecmp(name, "LOGIN") == 0) {
        if (c->logged_in)
            tagged(tag, "BAD Already logged in.");
        else if (*args == '\0')
            tagged(tag, "BAD Invalid arguments.");
        else
            logged_in(c, tag);
    } else if (strcasecmp(name, "AUTHENTICATE") == 0) {
        cmd_authenticate(c, tag, args);
    } else if (strcasecmp(name, "ID") == 0) {
        out_str("* ID NIL\r\n");
        tagged(tag, "OK ID completed.");
    } else if (strcasecmp(name, "CAPABILITY") == 0) {
        out_str(c->logged_in ? "* CAPABILITY " POSTLOGIN_CAPS "\r\n"
                             : "* CAPABILITY " PRELOGIN_CAPS "\r\n");
        tagged(tag, "OK Capability completed.");
    } else if (strcasecmp(name, "IDLE") == 0 && c->logged_in) {
        out_str("+ idling\r\n");
        wait_continuation(c, tag, CONT_IDLE);
    } else if (strcasecmp(name, "LOGOUT") == 0) {
        out_str("* BYE Logging out\r\n");
        tagged(tag, "OK Logout completed.");
        c->closing = true;
        c->close_after_write = true;
    } else {
        tagged(tag, "BAD Unknown command.");
    }
}

/* "{123}" or "{123+}" at the end of line: the literal's size, and whether
 * the client waits for "+" first. */
static bool literal_at_end(const char *line, size_t len, uint32_t *size, bool *sync)
{
    if (len < 3 || line[len - 1] != '}')
        return false;
    size_t end = len - 1;
    *sync = line[end - 1] != '+';
    if (!*sync)
        end--;
    size_t start = end;
    while (start > 0 && isdigit((unsigned char)line[start - 1]))
        start--;
    if (start == end || start == 0 || line[start - 1] != '{' || end - start > 7)
        return false;
    *size = (uint32_t)strtoul(line + start, NULL, 10);
    return true;
}

static bool line_append(struct mini_conn *c, const char *s, size_t n)
{
    if (c->line_len + n + 1 > LINE_MAX_LEN)
        return false;
    if (c->line_len + n + 1 > c->line_cap) {
        uint32_t cap = c->line_cap ? c->line_cap : 256;
        while (cap < c->line_len + n + 1)
            cap *= 2;
        char *grown = realloc(c->line, cap);
        if (grown == NULL)
            return false;
        c->line = grown;
        c->line_cap = cap;
    }
    memcpy(c->line + c->line_len, s, n);
    c->line_len += (uint32_t)n;
    c->line[c->line_len] = '\0';
    return true;
}

static void line_forget(struct mini_conn *c)
{
    free(c->line);
    c->line = NULL;
    c->line_len = c->line_cap = 0;
}

static void too_long(struct mini_conn *c)
{
    out_str("* BYE Line too long.\r\n");
    c->closing = true;
    c->close_after_write = true;
}

/* One line (without CRLF) of len bytes at text, writable. A line ending in
 * a literal continues after it: the literal becomes "" in what is kept. */
static void line_done(struct mini_conn *c, char *text, size_t len)
{
    char *line = text;
    size_t n = len;
    if (c->line != NULL) {
        if (!line_append(c, text, len)) {
            too_long(c);
            return;
        }
        line = c->line;
        n = c->line_len;
    }
    uint32_t size;
    bool sync;
    if (literal_at_end(line, n, &size, &sync)) {
        size_t open = n - 1;
        while (line[open] != '{')
            open--;
        if (line == c->line)
            c->line_len = (uint32_t)open;
        if (size > LITERAL_MAX || (line != c->line && !line_append(c, text, open)) ||
            !line_append(c, "\"\"", 2)) {
            too_long(c);
            return;
        }
        c->literal_left = size;
        if (sync)
            out_str("+ OK\r\n");
        return;
    }
    line[n] = '\0';
    command(c, line);
    if (line == c->line)
        line_forget(c);
}

static void input(struct mini_conn *c, char *data, size_t n)
{
    while (n > 0 && !c->closing) {
        if (c->literal_left > 0) {
            size_t skip = n < c->literal_left ? n : c->literal_left;
            c->literal_left -= (uint32_t)skip;
            data += skip;
            n -= skip;
            continue;
        }
        char *nl = memchr(data, '\n', n);
        if (nl == NULL) {
            if (!line_append(c, data, n))
                too_long(c);
            return;
        }
        size_t len = (size_t)(nl - data);
        size_t used = len + 1;
        if (len > 0 && data[len - 1] == '\r')
            len--;
        line_done(c, data, len);
        data += used;
        n -= used;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(read_buffer, sizeof(read_buffer));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct mini_conn *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    input(c, buf->base, (size_t)nread);
    flush(c);
    if (c->close_after_write && c->writes_pending == 0)
        conn_close(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    struct mini_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    uv_tcp_init(server->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    sessions_total++;
    uv_tcp_nodelay(&c->tcp, 1);
    out_str(GREETING);
    flush(c);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (uv_is_closing(h))
        return;
    if (h->type == UV_TCP && h != (uv_handle_t *)&listener)
        conn_close(h->data);
    else
        uv_close(h, NULL);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    (void)signum;
    uv_walk(sig->loop, close_any, NULL);
}

/* Up to the hard limit of open files: the benchmark holds 10,000 sessions. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: imap-mini -p PORT [-l ADDRESS]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *address = "127.0.0.1";
    long port = 0;
    int opt;
    while ((opt = getopt(argc, argv, "p:l:h")) != -1) {
        if (opt == 'p')
            port = strtol(optarg, NULL, 10);
        else if (opt == 'l')
            address = optarg;
        else
            usage();
    }
    if (port <= 0 || port > 65535 || optind != argc)
        usage();
    raise_nofile();
    uv_loop_t *loop = uv_default_loop();
    struct sockaddr_storage addr;
    if (uv_ip4_addr(address, (int)port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(address, (int)port, (struct sockaddr_in6 *)&addr) != 0) {
        fprintf(stderr, "imap-mini: bad address %s\n", address);
        return 2;
    }
    uv_tcp_init(loop, &listener);
    int r = uv_tcp_bind(&listener, (struct sockaddr *)&addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&listener, 4096, on_connection);
    if (r != 0) {
        fprintf(stderr, "imap-mini: listen on %s:%ld: %s\n", address, port, uv_strerror(r));
        return 1;
    }
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);
    fprintf(stderr, "imap-mini: listening on %s:%ld\n", address, port);
    uv_run(loop, UV_RUN_DEFAULT);
    fprintf(stderr, "imap-mini: %" PRIu64 " sessions, %" PRIu64 " logins\n", sessions_total,
            logins_total);
    uv_loop_close(loop);
    free(out.data);
    return 0;
}
