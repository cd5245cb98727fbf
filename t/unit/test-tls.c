/* test-tls - TLS under the buffered stream, over real loopback sockets with
 * both ends in one loop: handshakes with and without verification (wrong
 * CA, expired, name mismatch, IP SANs, any-cert), SNI through local_name,
 * client certificates, session resumption (TLS 1.3 and 1.2), a handshake
 * timeout, 10 MB each way with back-pressure and pauses, close_notify,
 * STARTTLS injection, and the TLS settings in the config.
 *
 * Certificates are generated at run time with certtool (gnutls-bin) into a
 * mkdtemp() directory that is removed at the end. */
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "listener.h"
#include "loop.h"
#include "mem.h"
#include "stream.h"
#include "test.h"
#include "tls.h"

static char tmpdir[64];

static const char *tmp_path(const char *rel)
{
    static char bufs[8][512];
    static unsigned next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof(bufs[0]), "%s/%s", tmpdir, rel);
    return b;
}

static char *read_text(const char *rel)
{
    FILE *f = fopen(tmp_path(rel), "r");
    if (f == NULL) {
        perror(rel);
        exit(2);
    }
    struct buf b = BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        buf_append(&b, chunk, n);
    fclose(f);
    return buf_steal(&b);
}

static void write_text(const char *rel, const char *text)
{
    FILE *f = fopen(tmp_path(rel), "w");
    if (f == NULL || fputs(text, f) < 0) {
        perror(rel);
        exit(2);
    }
    fclose(f);
}

/* ---- certificates ---- */

static void run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    char *full = xasprintf("cd %s && %s >/dev/null 2>&1", tmpdir, cmd);
    if (system(full) != 0) {
        fprintf(stderr, "failed: %s\n", full);
        exit(2);
    }
    free(full);
}

static void make_key(const char *name)
{
    run("certtool --generate-privkey --key-type=ecdsa --no-text --outfile %s.key", name);
}

static void make_ca(const char *name, const char *cn)
{
    make_key(name);
    char *tmpl = xasprintf("cn = \"%s\"\nca\ncert_signing_key\nexpiration_days = 30\n", cn);
    char *rel = xasprintf("%s.tmpl", name);
    write_text(rel, tmpl);
    run("certtool --generate-self-signed --load-privkey %s.key --template %s.tmpl --no-text "
        "--outfile %s.pem", name, name, name);
    free(tmpl);
    free(rel);
}

/* extra: more template lines (names, dates, purpose). */
static void make_cert(const char *name, const char *ca, const char *cn, const char *extra)
{
    make_key(name);
    char *tmpl = xasprintf("cn = \"%s\"\nsigning_key\n%s", cn, extra);
    char *rel = xasprintf("%s.tmpl", name);
    write_text(rel, tmpl);
    run("certtool --generate-certificate --load-privkey %s.key --load-ca-certificate %s.pem "
        "--load-ca-privkey %s.key --template %s.tmpl --no-text --outfile %s.pem",
        name, ca, ca, name, name);
    free(tmpl);
    free(rel);
}

struct pem {
    char *cert, *key;
};

static struct {
    char *ca;
    struct pem server, expired, foreign, sni, client, foreign_client, expired_client;
} pems;

static struct pem load_pem(const char *name)
{
    char *c = xasprintf("%s.pem", name), *k = xasprintf("%s.key", name);
    struct pem p = {read_text(c), read_text(k)};
    free(c);
    free(k);
    return p;
}

static void make_certs(void)
{
    static const char server_names[] =
        "dns_name = \"backend.test\"\nip_address = \"127.0.0.1\"\ntls_www_server\n";
    make_ca("ca", "mailroute test CA");
    make_ca("otherca", "some other CA");
    char *valid = xasprintf("%sexpiration_days = 30\n", server_names);
    char *expired = xasprintf("%sactivation_date = \"2020-01-01 00:00:00 UTC\"\n"
                              "expiration_date = \"2020-06-01 00:00:00 UTC\"\n",
                              server_names);
    make_cert("server", "ca", "backend.test", valid);
    make_cert("expired", "ca", "backend.test", expired);
    make_cert("foreign", "otherca", "backend.test", valid);
    make_cert("sni", "ca", "mail.sni.test",
              "dns_name = \"mail.sni.test\"\ntls_www_server\nexpiration_days = 30\n");
    make_cert("client", "ca", "client.test", "tls_www_client\nexpiration_days = 30\n");
    make_cert("fclient", "otherca", "client.test", "tls_www_client\nexpiration_days = 30\n");
    make_cert("eclient", "ca", "client.test",
              "tls_www_client\nactivation_date = \"2020-01-01 00:00:00 UTC\"\n"
              "expiration_date = \"2020-06-01 00:00:00 UTC\"\n");
    free(valid);
    free(expired);
    pems.ca = read_text("ca.pem");
    pems.server = load_pem("server");
    pems.expired = load_pem("expired");
    pems.foreign = load_pem("foreign");
    pems.sni = load_pem("sni");
    pems.client = load_pem("client");
    pems.foreign_client = load_pem("fclient");
    pems.expired_client = load_pem("eclient");
}

static void free_pem(struct pem *p)
{
    free(p->cert);
    free(p->key);
}

static void free_certs(void)
{
    free(pems.ca);
    free_pem(&pems.server);
    free_pem(&pems.expired);
    free_pem(&pems.foreign);
    free_pem(&pems.sni);
    free_pem(&pems.client);
    free_pem(&pems.foreign_client);
    free_pem(&pems.expired_client);
}

/* ---- contexts ---- */

static struct tls_settings base_settings(void)
{
    struct tls_settings set;
    memset(&set, 0, sizeof(set));
    set.ssl = TLS_SSL_YES;
    set.ssl_min_protocol = TLS_PROTO_TLS1_2;
    set.ssl_priority = (char *)TLS_DEFAULT_PRIORITY;
    return set;
}

static struct tls_server *server_with(const struct pem *p)
{
    struct tls_settings set = base_settings();
    set.ssl_cert = p->cert;
    set.ssl_key = p->key;
    char *error = NULL;
    struct tls_server *t = tls_server_new(&set, &error);
    if (t == NULL)
        fprintf(stderr, "tls_server_new: %s\n", error);
    free(error);
    return t;
}

/* priority: NULL for the default. */
static struct tls_client *client_with(const struct pem *cert, const char *priority)
{
    struct tls_settings set = base_settings();
    char *ca_file = xstrdup(tmp_path("ca.pem"));
    set.ssl_client_ca_file = ca_file;
    if (cert != NULL) {
        set.ssl_client_cert = cert->cert;
        set.ssl_client_key = cert->key;
    }
    if (priority != NULL)
        set.ssl_priority = (char *)priority;
    char *error = NULL;
    struct tls_client *t = tls_client_new(&set, &error);
    if (t == NULL)
        fprintf(stderr, "tls_client_new: %s\n", error);
    free(error);
    free(ca_file);
    return t;
}

/* ---- one connection, both ends in one loop ---- */

enum mode {
    MODE_HANDSHAKE,   /* done when both ends know the handshake result */
    MODE_GREETING,    /* the server sends a line and closes after flush */
    MODE_BULK,        /* BULK_SIZE bytes each way */
    MODE_STARTTLS,    /* plain STARTTLS exchange first */
};

#define BULK_SIZE (10 * 1024 * 1024)
#define GREETING "* OK hello over TLS"

struct scenario;

struct end {
    struct scenario *sc;
    bool is_server;
    struct stream *s;
    bool tls_done, resumed, peer_verified;
    int tls_err;
    char tls_text[256], info[96];
    struct buf lines;
    bool closed;
    int close_err;
    size_t sent, received, bad_bytes;
    unsigned drains, inputs;
};

struct scenario {
    enum mode mode;
    struct loop *loop;
    struct listener *listener;
    struct addr addr;
    struct tls_server *server;     /* NULL: the server never answers */
    struct tls_client *client;     /* NULL: the client never starts TLS */
    const char *verify_name, *sni;
    uint64_t client_timeout_ms;
    uint16_t port;                 /* 0: any */
    struct end srv, cli;
    size_t discarded;
    bool done, guard_fired;
    struct timer *guard;
};

static void finish(struct scenario *sc)
{
    sc->done = true;
    loop_stop(sc->loop);
}

static void check_done(struct scenario *sc)
{
    const struct end *srv = &sc->srv, *cli = &sc->cli;
    bool handshakes = (cli->tls_done || sc->client == NULL) &&
                      (srv->tls_done || sc->server == NULL);
    bool failed = cli->tls_err != 0 || srv->tls_err != 0;
    switch (sc->mode) {
    case MODE_HANDSHAKE:
        if (handshakes)
            finish(sc);
        break;
    case MODE_GREETING:
        if ((handshakes && failed) || cli->closed)
            finish(sc);
        break;
    case MODE_BULK:
        if ((handshakes && failed) || (srv->received == BULK_SIZE && cli->received == BULK_SIZE))
            finish(sc);
        break;
    case MODE_STARTTLS:
        if ((handshakes && failed) || strstr(buf_ptr(&srv->lines), "NOOP\n") != NULL)
            finish(sc);
        break;
    }
}

static unsigned char pattern(const struct end *from, size_t i)
{
    return (unsigned char)((i + (from->is_server ? 7 : 0)) % 251);
}

/* Write while less than 1 MB is pending; then wait for on_drain. */
static void send_bulk(struct end *e)
{
    static unsigned char chunk[64 * 1024];
    while (e->sent < BULK_SIZE && stream_output_pending(e->s) < 1024 * 1024) {
        size_t n = BULK_SIZE - e->sent < sizeof(chunk) ? BULK_SIZE - e->sent : sizeof(chunk);
        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern(e, e->sent + i);
        stream_write(e->s, chunk, n);
        e->sent += n;
    }
    if (e->sent < BULK_SIZE)
        stream_want_drain(e->s, 256 * 1024);
}

static void resume_later(void *ctx)
{
    struct end *e = ctx;
    if (e->s != NULL)
        stream_resume(e->s);
}

/* The server end sometimes leaves bytes unconsumed, and sometimes pauses:
 * what GnuTLS still holds must be delivered by resume. */
static void receive_bulk(struct end *e)
{
    struct end *peer = e->is_server ? &e->sc->cli : &e->sc->srv;
    struct buf *in = stream_input(e->s);
    size_t n = buf_used(in);
    const unsigned char *p = (const unsigned char *)buf_ptr(in);
    e->inputs++;
    /* Leaving bytes is only fine while more are to come: they bring the next call. */
    if (e->is_server && e->inputs % 5 == 0 && n > 1000 && n < 32 * 1024 &&
        e->received + n < BULK_SIZE)
        n = 1000;
    for (size_t i = 0; i < n; i++)
        e->bad_bytes += p[i] != pattern(peer, e->received + i);
    e->received += n;
    stream_consume(e->s, n);
    if (e->is_server && e->inputs % 7 == 0) {
        stream_pause(e->s);
        loop_defer(e->sc->loop, resume_later, e);
    }
    check_done(e->sc);
}

static void on_drain(void *ctx)
{
    struct end *e = ctx;
    e->drains++;
    send_bulk(e);
}

static void on_close(void *ctx, int err)
{
    struct end *e = ctx;
    e->closed = true;
    e->close_err = err;
    stream_destroy(&e->s);
    check_done(e->sc);
}

static void tls_done(void *ctx, int err, const char *text);

static void starttls_line(struct end *e, const char *line)
{
    struct scenario *sc = e->sc;
    if (e->is_server && strcmp(line, "STARTTLS") == 0) {
        stream_write_str(e->s, "220 go ahead\r\n");
        sc->discarded = stream_start_tls_server(e->s, sc->server, tls_done, e);
    } else if (!e->is_server && strncmp(line, "220 ", 4) == 0) {
        stream_start_tls_client(e->s, sc->client, sc->verify_name, sc->sni,
                                sc->client_timeout_ms, tls_done, e);
    }
}

static void on_input(void *ctx)
{
    struct end *e = ctx;
    if (e->sc->mode == MODE_BULK && stream_is_tls(e->s)) {
        receive_bulk(e);
        return;
    }
    const char *line;
    size_t len, consumed;
    while (e->s != NULL && stream_read_line(e->s, 1024, &line, &len, &consumed) == 1) {
        char copy[1024];
        snprintf(copy, sizeof(copy), "%.*s", (int)len, line);
        stream_consume(e->s, consumed);
        buf_printf(&e->lines, "%s\n", copy);
        if (e->sc->mode == MODE_STARTTLS && !stream_is_tls(e->s)) {
            starttls_line(e, copy);
            break; /* TLS started: the rest of the input is gone */
        }
        check_done(e->sc);
    }
}

static const struct stream_handler handler = {on_input, on_drain, on_close};

static void tls_done(void *ctx, int err, const char *text)
{
    struct end *e = ctx;
    struct scenario *sc = e->sc;
    e->tls_done = true;
    e->tls_err = err;
    snprintf(e->tls_text, sizeof(e->tls_text), "%s", text != NULL ? text : "");
    if (err < 0) {
        stream_destroy(&e->s);
        check_done(sc);
        return;
    }
    e->resumed = stream_tls_resumed(e->s);
    e->peer_verified = stream_tls_peer_cert_verified(e->s);
    snprintf(e->info, sizeof(e->info), "%s", stream_tls_info(e->s));
    if (sc->mode == MODE_GREETING && e->is_server) {
        stream_printf(e->s, "%s\r\n", GREETING);
        stream_close_after_flush(e->s);
        e->s = NULL; /* the stream closes itself */
    } else if (sc->mode == MODE_BULK) {
        send_bulk(e);
    } else if (sc->mode == MODE_STARTTLS && !e->is_server) {
        stream_write_str(e->s, "NOOP\r\n");
    }
    check_done(sc);
}

static void on_accept(void *ctx, struct stream *s)
{
    struct scenario *sc = ctx;
    if (sc->srv.s != NULL) {
        stream_destroy(&s);
        return;
    }
    sc->srv.s = s;
    stream_set_handler(s, &handler, &sc->srv);
    if (sc->server != NULL && sc->mode != MODE_STARTTLS)
        stream_start_tls_server(s, sc->server, tls_done, &sc->srv);
}

static void on_connected(void *ctx, struct stream *s, int err)
{
    struct scenario *sc = ctx;
    if (s == NULL) {
        fprintf(stderr, "connect failed: %s\n", stream_strerror(err));
        finish(sc);
        return;
    }
    sc->cli.s = s;
    stream_set_handler(s, &handler, &sc->cli);
    if (sc->mode == MODE_STARTTLS) {
        /* One write: the injected line arrives in the STARTTLS packet. */
        stream_write_str(s, "STARTTLS\r\nINJECTED\r\n");
        return;
    }
    if (sc->client == NULL)
        return;
    stream_start_tls_client(s, sc->client, sc->verify_name, sc->sni, sc->client_timeout_ms,
                            tls_done, &sc->cli);
}

static void on_guard(void *ctx)
{
    struct scenario *sc = ctx;
    sc->guard_fired = true;
    finish(sc);
}

static void scenario_init(struct scenario *sc, enum mode mode, struct tls_server *server,
                          struct tls_client *client, const char *verify_name)
{
    memset(sc, 0, sizeof(*sc));
    sc->mode = mode;
    sc->server = server;
    sc->client = client;
    sc->verify_name = verify_name;
    sc->sni = verify_name;
    sc->client_timeout_ms = 5000;
    sc->srv.sc = sc->cli.sc = sc;
    sc->srv.is_server = true;
}

static void scenario_run(struct scenario *sc)
{
    char *error = NULL;
    sc->loop = loop_new();
    addr_parse_ip("127.0.0.1", &sc->addr);
    sc->addr.port = sc->port;
    int fd = listen_socket_tcp(&sc->addr, false, &error);
    if (fd < 0) {
        fprintf(stderr, "%s\n", error);
        exit(2);
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &len);
    addr_from_sockaddr(&sc->addr, (struct sockaddr *)&ss);
    sc->listener = listener_new(sc->loop, fd, false, on_accept, sc, &error);
    sc->guard = timer_new(sc->loop, on_guard, sc);
    timer_start(sc->guard, 20000);
    stream_connect_tcp(sc->loop, &sc->addr, NULL, 5000, on_connected, sc);
    loop_run(sc->loop);
    CHECK(!sc->guard_fired);
    if (getenv("TEST_TLS_VERBOSE") != NULL) {
        fprintf(stderr, "%s: client %d \"%s\" [%s] close %d/%d, server %d \"%s\" [%s]\n",
                test_current, sc->cli.tls_err, sc->cli.tls_text, sc->cli.info, sc->cli.closed,
                sc->cli.close_err, sc->srv.tls_err, sc->srv.tls_text, sc->srv.info);
    }

    stream_destroy(&sc->srv.s);
    stream_destroy(&sc->cli.s);
    listener_free(&sc->listener);
    timer_free(&sc->guard);
    loop_run(sc->loop); /* let the handles close */
    loop_free(&sc->loop);
}

static void scenario_free(struct scenario *sc)
{
    buf_free(&sc->srv.lines);
    buf_free(&sc->cli.lines);
}

/* One connection that ends when both ends know the handshake result. */
static void handshake(struct scenario *sc, struct tls_server *server, struct tls_client *client,
                      const char *verify_name)
{
    scenario_init(sc, MODE_HANDSHAKE, server, client, verify_name);
    scenario_run(sc);
}

/* ---- tests ---- */

static void test_verified_handshake(void)
{
    struct tls_server *server = server_with(&pems.server);
    struct tls_client *client = client_with(NULL, NULL);
    struct scenario sc;
    handshake(&sc, server, client, "backend.test");
    CHECK_INT(sc.cli.tls_err, 0);
    CHECK_INT(sc.srv.tls_err, 0);
    CHECK_STR(sc.cli.tls_text, "");
    CHECK(strncmp(sc.cli.info, "TLSv1.3 with cipher ", 20) == 0);
    CHECK_STR(sc.srv.info, sc.cli.info);
    scenario_free(&sc);

    /* The IP SAN, for a backend configured by address. */
    handshake(&sc, server, client, "127.0.0.1");
    CHECK_INT(sc.cli.tls_err, 0);
    scenario_free(&sc);
    handshake(&sc, server, client, "127.0.0.2");
    CHECK_INT(sc.cli.tls_err, STREAM_ETLS_VERIFY);
    CHECK_STR(sc.cli.tls_text, "host name mismatch: 127.0.0.2");
    scenario_free(&sc);
    tls_server_unref(&server);
    tls_client_unref(&client);
}

static void test_verification_failures(void)
{
    struct tls_client *client = client_with(NULL, NULL);
    struct tls_server *foreign = server_with(&pems.foreign);
    struct tls_server *expired = server_with(&pems.expired);
    struct tls_server *server = server_with(&pems.server);
    struct scenario sc;

    handshake(&sc, foreign, client, "backend.test");
    CHECK_INT(sc.cli.tls_err, STREAM_ETLS_VERIFY);
    CHECK_STR(sc.cli.tls_text, "certificate verification failed: "
                               "the certificate is not issued by a trusted CA");
    /* The server learns it from the client's alert. */
    CHECK_INT(sc.srv.tls_err, STREAM_ETLS);
    CHECK(strncmp(sc.srv.tls_text, "handshake failed: the peer sent the alert", 41) == 0);
    scenario_free(&sc);

    handshake(&sc, expired, client, "backend.test");
    CHECK_INT(sc.cli.tls_err, STREAM_ETLS_VERIFY);
    CHECK_STR(sc.cli.tls_text, "certificate verification failed: the certificate is expired");
    scenario_free(&sc);

    handshake(&sc, server, client, "wrong.test");
    CHECK_INT(sc.cli.tls_err, STREAM_ETLS_VERIFY);
    CHECK_STR(sc.cli.tls_text, "host name mismatch: wrong.test");
    scenario_free(&sc);

    /* any-cert: no verification at all. */
    handshake(&sc, foreign, client, NULL);
    CHECK_INT(sc.cli.tls_err, 0);
    CHECK_INT(sc.srv.tls_err, 0);
    scenario_free(&sc);
    handshake(&sc, expired, client, NULL);
    CHECK_INT(sc.cli.tls_err, 0);
    scenario_free(&sc);

    tls_server_unref(&foreign);
    tls_server_unref(&expired);
    tls_server_unref(&server);
    tls_client_unref(&client);
}

static void test_sni(void)
{
    struct tls_settings set = base_settings();
    struct tls_local_name ln = {(char *)"other.test *.sni.test", pems.sni.cert, pems.sni.key};
    set.ssl_cert = pems.server.cert;
    set.ssl_key = pems.server.key;
    set.local_names = &ln;
    set.n_local_names = 1;
    char *error = NULL;
    struct tls_server *server = tls_server_new(&set, &error);
    CHECK(server != NULL);
    free(error);
    struct tls_client *client = client_with(NULL, NULL);
    struct scenario sc;

    handshake(&sc, server, client, "mail.sni.test");
    CHECK_INT(sc.cli.tls_err, 0);
    scenario_free(&sc);

    /* Another name gets the default certificate. */
    handshake(&sc, server, client, "backend.test");
    CHECK_INT(sc.cli.tls_err, 0);
    scenario_free(&sc);
    scenario_init(&sc, MODE_HANDSHAKE, server, client, "mail.sni.test");
    sc.sni = "nope.test";
    scenario_run(&sc);
    CHECK_STR(sc.cli.tls_text, "host name mismatch: mail.sni.test");
    scenario_free(&sc);
    /* "*.sni.test" is not "sni.test". */
    scenario_init(&sc, MODE_HANDSHAKE, server, client, "backend.test");
    sc.sni = "sni.test";
    scenario_run(&sc);
    CHECK_INT(sc.cli.tls_err, 0);
    scenario_free(&sc);

    tls_server_unref(&server);
    tls_client_unref(&client);
}

static void resumption_round(const char *priority, const char *version)
{
    struct tls_server *server = server_with(&pems.server);
    struct tls_client *client = client_with(NULL, priority);
    struct scenario sc;
    uint16_t port = 0; /* the same for every round: the cache key has it */
    for (int round = 0; round < 3; round++) {
        scenario_init(&sc, MODE_GREETING, server, client, "backend.test");
        sc.port = port;
        scenario_run(&sc);
        port = sc.addr.port;
        CHECK_INT(sc.cli.tls_err, 0);
        CHECK_STR(buf_ptr(&sc.cli.lines), GREETING "\n");
        CHECK(sc.cli.closed);
        CHECK_INT(sc.cli.close_err, 0); /* close_notify, then EOF */
        CHECK_INT(sc.cli.resumed, round > 0);
        CHECK_INT(sc.srv.resumed, round > 0);
        CHECK(strncmp(sc.cli.info, version, strlen(version)) == 0);
        CHECK_INT(tls_client_cache_count(client), 1);
        scenario_free(&sc);
    }
    /* Another name is another cache entry, and no resumption. */
    scenario_init(&sc, MODE_GREETING, server, client, "127.0.0.1");
    sc.port = port;
    scenario_run(&sc);
    CHECK_INT(sc.cli.tls_err, 0);
    CHECK(!sc.cli.resumed);
    CHECK_INT(tls_client_cache_count(client), 2);
    scenario_free(&sc);

    /* A session from a reloaded server (new ticket key) is not resumed, but works. */
    struct tls_server *reloaded = server_with(&pems.server);
    scenario_init(&sc, MODE_GREETING, reloaded, client, "backend.test");
    sc.port = port;
    scenario_run(&sc);
    CHECK_INT(sc.cli.tls_err, 0);
    CHECK(!sc.cli.resumed);
    scenario_free(&sc);
    tls_server_unref(&reloaded);
    tls_server_unref(&server);
    tls_client_unref(&client);
}

static void test_resumption(void)
{
    resumption_round(NULL, "TLSv1.3 ");
    resumption_round("NORMAL:-VERS-TLS1.3", "TLSv1.2 ");
}

static void test_client_cert(void)
{
    struct tls_settings set = base_settings();
    set.ssl_cert = pems.server.cert;
    set.ssl_key = pems.server.key;
    set.ssl_ca = pems.ca;
    set.ssl_verify_client_cert = true;
    char *error = NULL;
    struct tls_server *server = tls_server_new(&set, &error);
    CHECK(server != NULL);
    free(error);
    struct tls_client *with = client_with(&pems.client, NULL);
    struct tls_client *without = client_with(NULL, NULL);
    struct tls_client *foreign = client_with(&pems.foreign_client, NULL);
    struct tls_client *expired = client_with(&pems.expired_client, NULL);
    struct scenario sc;

    handshake(&sc, server, with, "backend.test");
    CHECK_INT(sc.srv.tls_err, 0);
    CHECK(sc.srv.peer_verified);
    scenario_free(&sc);
    handshake(&sc, server, without, "backend.test");
    CHECK_INT(sc.srv.tls_err, 0);
    CHECK(!sc.srv.peer_verified);
    scenario_free(&sc);
    /* GnuTLS offers no certificate from a CA the server did not name... */
    handshake(&sc, server, foreign, "backend.test");
    CHECK(!sc.srv.peer_verified);
    scenario_free(&sc);
    /* ...but one from the right CA that does not verify is refused. */
    handshake(&sc, server, expired, "backend.test");
    CHECK_INT(sc.srv.tls_err, STREAM_ETLS_VERIFY);
    CHECK_STR(sc.srv.tls_text, "client certificate verification failed: "
                               "the certificate is expired");
    scenario_free(&sc);

    /* Without ssl_ca there is nothing to verify against. */
    set.ssl_ca = NULL;
    CHECK(tls_server_new(&set, &error) == NULL);
    CHECK_STR(error, "ssl_verify_client_cert = yes needs ssl_ca = </path/ca.pem");
    free(error);
    tls_server_unref(&server);
    tls_client_unref(&with);
    tls_client_unref(&without);
    tls_client_unref(&foreign);
    tls_client_unref(&expired);
}

static void test_min_protocol(void)
{
    struct tls_settings set = base_settings();
    set.ssl_cert = pems.server.cert;
    set.ssl_key = pems.server.key;
    set.ssl_min_protocol = TLS_PROTO_TLS1_3;
    char *error = NULL;
    struct tls_server *server = tls_server_new(&set, &error);
    CHECK(server != NULL);
    free(error);
    struct tls_client *old = client_with(NULL, "NORMAL:-VERS-TLS1.3");
    struct scenario sc;
    handshake(&sc, server, old, "backend.test");
    CHECK_INT(sc.cli.tls_err, STREAM_ETLS);
    CHECK(strncmp(sc.cli.tls_text, "handshake failed: ", 18) == 0);
    CHECK(strncmp(sc.srv.tls_text, "handshake failed: ", 18) == 0);
    scenario_free(&sc);
    tls_server_unref(&server);
    tls_client_unref(&old);

    char *p = tls_effective_priority(&set);
    CHECK_STR(p, TLS_DEFAULT_PRIORITY ":-VERS-TLS1.0:-VERS-TLS1.1:-VERS-TLS1.2");
    free(p);
    set.ssl_min_protocol = TLS_PROTO_TLS1_0;
    p = tls_effective_priority(&set);
    CHECK_STR(p, TLS_DEFAULT_PRIORITY ":+VERS-TLS1.0:+VERS-TLS1.1");
    free(p);
    set.ssl_min_protocol = TLS_PROTO_TLS1_2;
    p = tls_effective_priority(&set);
    CHECK_STR(p, TLS_DEFAULT_PRIORITY ":-VERS-TLS1.0:-VERS-TLS1.1");
    free(p);
}

static void test_handshake_timeout(void)
{
    struct tls_client *client = client_with(NULL, NULL);
    struct scenario sc;
    scenario_init(&sc, MODE_HANDSHAKE, NULL, client, "backend.test");
    sc.client_timeout_ms = 200;
    scenario_run(&sc);
    CHECK_INT(sc.cli.tls_err, STREAM_ETIMEDOUT);
    CHECK_STR(sc.cli.tls_text, "handshake timed out");
    scenario_free(&sc);
    tls_client_unref(&client);

    /* The server side, against a client that never starts. */
    struct tls_server *server = server_with(&pems.server);
    tls_server_set_handshake_timeout(server, 200);
    scenario_init(&sc, MODE_HANDSHAKE, server, NULL, NULL);
    scenario_run(&sc);
    CHECK_INT(sc.srv.tls_err, STREAM_ETIMEDOUT);
    CHECK_STR(sc.srv.tls_text, "handshake timed out");
    scenario_free(&sc);
    tls_server_unref(&server);
}

static void test_bulk(void)
{
    struct tls_server *server = server_with(&pems.server);
    struct tls_client *client = client_with(NULL, NULL);
    struct scenario sc;
    scenario_init(&sc, MODE_BULK, server, client, "backend.test");
    scenario_run(&sc);
    CHECK_INT(sc.cli.tls_err, 0);
    CHECK_INT(sc.srv.received, BULK_SIZE);
    CHECK_INT(sc.cli.received, BULK_SIZE);
    CHECK_INT(sc.srv.bad_bytes, 0);
    CHECK_INT(sc.cli.bad_bytes, 0);
    CHECK(sc.srv.drains > 0);
    CHECK(sc.cli.drains > 0);
    scenario_free(&sc);
    tls_server_unref(&server);
    tls_client_unref(&client);
}

static void test_starttls_injection(void)
{
    struct tls_server *server = server_with(&pems.server);
    struct tls_client *client = client_with(NULL, NULL);
    struct scenario sc;
    scenario_init(&sc, MODE_STARTTLS, server, client, "backend.test");
    scenario_run(&sc);
    CHECK_INT(sc.srv.tls_err, 0);
    CHECK_INT(sc.cli.tls_err, 0);
    CHECK_INT(sc.discarded, strlen("INJECTED\r\n"));
    /* The server saw STARTTLS in plain text, then only NOOP under TLS. */
    CHECK_STR(buf_ptr(&sc.srv.lines), "STARTTLS\nNOOP\n");
    CHECK_STR(buf_ptr(&sc.cli.lines), "220 go ahead\n");
    scenario_free(&sc);
    tls_server_unref(&server);
    tls_client_unref(&client);
}

static void test_context_errors(void)
{
    struct tls_settings set = base_settings();
    char *error = NULL;
    CHECK(tls_server_new(&set, &error) == NULL);
    CHECK(error != NULL && strstr(error, "both a certificate and a key are needed") != NULL);
    free(error);

    set.ssl_cert = pems.server.cert;
    set.ssl_key = pems.sni.key; /* not this certificate's key */
    CHECK(tls_server_new(&set, &error) == NULL);
    CHECK(error != NULL && strncmp(error, "ssl_cert/ssl_key: cannot load", 29) == 0);
    free(error);

    set.ssl_key = pems.server.key;
    set.ssl_priority = (char *)"NORMAL:+NO-SUCH-THING";
    CHECK(tls_server_new(&set, &error) == NULL);
    CHECK(error != NULL && strncmp(error, "ssl_priority/ssl_min_protocol: ", 31) == 0);
    free(error);

    set = base_settings();
    set.ssl_client_ca_file = (char *)"/nonexistent/ca.pem";
    CHECK(tls_client_new(&set, &error) == NULL);
    CHECK(error != NULL && strncmp(error, "ssl_client_ca_file /nonexistent/ca.pem: ", 40) == 0);
    free(error);
    set.ssl_client_ca_file = NULL;
    set.ssl_client_cert = pems.client.cert;
    CHECK(tls_client_new(&set, &error) == NULL);
    CHECK_STR(error, "ssl_client_cert and ssl_client_key go together");
    free(error);

    /* The system trust store is the default. */
    set.ssl_client_cert = NULL;
    struct tls_client *sys = tls_client_new(&set, &error);
    CHECK(sys != NULL);
    tls_client_unref(&sys);

    char err[160];
    CHECK(tls_priority_check(TLS_DEFAULT_PRIORITY, err, sizeof(err)));
    CHECK(!tls_priority_check("NORMAL:%BOGUS", err, sizeof(err)));
}

/* ---- the settings ---- */

static void test_config(void)
{
    write_text("server.pem", pems.server.cert);
    write_text("server.key", pems.server.key);
    write_text("sni.pem", pems.sni.cert);
    write_text("sni.key", pems.sni.key);
    char *conf = xasprintf("ssl = required\n"
                           "ssl_cert = <%s/server.pem\n"
                           "ssl_key = <%s/server.key\n"
                           "ssl_min_protocol = TLSv1.3\n"
                           "ssl_client_ca_file = %s/ca.pem\n"
                           "local_name \"*.sni.test\" {\n"
                           "  ssl_cert = <%s/sni.pem\n"
                           "  ssl_key = <%s/sni.key\n"
                           "}\n",
                           tmpdir, tmpdir, tmpdir, tmpdir, tmpdir);
    write_text("tls.conf", conf);
    free(conf);
    char *error = NULL;
    struct settings *set = settings_load(tmp_path("tls.conf"), &error);
    CHECK(set != NULL);
    if (set == NULL) {
        fprintf(stderr, "%s\n", error);
        free(error);
        return;
    }
    CHECK_INT(set->tls.ssl, TLS_SSL_REQUIRED);
    CHECK_INT(set->tls.ssl_min_protocol, TLS_PROTO_TLS1_3);
    /* "<file" drops the final newline. */
    CHECK(strncmp(set->tls.ssl_cert, pems.server.cert, strlen(set->tls.ssl_cert)) == 0);
    CHECK_INT(set->tls.n_local_names, 1);
    CHECK_STR(set->tls.local_names[0].names, "*.sni.test");
    CHECK(strstr(set->tls.local_names[0].key, "PRIVATE KEY-----") != NULL);
    struct tls_server *server = tls_server_new(&set->tls, &error);
    CHECK(server != NULL);
    tls_server_unref(&server);
    struct tls_client *client = tls_client_new(&set->tls, &error);
    CHECK(client != NULL);
    tls_client_unref(&client);

    /* Keys never appear in the dump. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    settings_dump(set, f, true);
    fclose(f);
    CHECK(strstr(text, "PRIVATE KEY") == NULL);
    CHECK(strstr(text, "\nssl_key = \"# hidden\"\n") != NULL);
    CHECK(strstr(text, "\nlocal_name *.sni.test {\n  ssl_cert = \"-----BEGIN") != NULL);
    CHECK(strstr(text, "\n  ssl_key = \"# hidden\"\n}\n") != NULL);
    CHECK(strstr(text, "ssl = required\n") != NULL);
    free(text);
    settings_free(&set);

    /* Defaults. */
    set = settings_new_default();
    CHECK_INT(set->tls.ssl, TLS_SSL_NO);
    CHECK_INT(set->tls.ssl_min_protocol, TLS_PROTO_TLS1_2);
    CHECK_STR(set->tls.ssl_priority, TLS_DEFAULT_PRIORITY);
    CHECK_STR(set->tls.ssl_client_ca_file, "");
    settings_free(&set);

    /* Errors name the file and line. */
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"ssl = maybe\n", ":1: invalid value for ssl: 'maybe' (expected no or yes or required)"},
        {"\nssl_min_protocol = SSLv3\n", ":2: invalid value for ssl_min_protocol: 'SSLv3' "
                                         "(expected TLSv1 or TLSv1.1 or TLSv1.2 or TLSv1.3)"},
        {"ssl_priority = NORMAL:%BOGUS\n", ":1: invalid value for ssl_priority: "
                                           "'NORMAL:%BOGUS' (not a valid GnuTLS priority "
                                           "string at '%BOGUS')"},
        {"ssl_client_ca_file = ca.pem\n", ":1: invalid value for ssl_client_ca_file: 'ca.pem' "
                                          "(expected an absolute path)"},
        {"local_name x { ssl_cert = a }\n", ":1: local_name x: ssl_cert and ssl_key are "
                                            "required"},
        {"local_name x {\n  ssl_ca = a\n}\n", ":2: unknown setting 'ssl_ca' in local_name "
                                              "section"},
        {"local_name {\n}\n", ":1: local_name needs a name, e.g. local_name "
                              "mail.example.com { ... }"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        write_text("bad.conf", bad[i].text);
        error = NULL;
        set = settings_load(tmp_path("bad.conf"), &error);
        CHECK(set == NULL);
        char *want = xasprintf("%s%s", tmp_path("bad.conf"), bad[i].want);
        CHECK_STR(error, want);
        free(want);
        free(error);
        settings_free(&set);
    }
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-tls-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    make_certs();
    RUN(test_context_errors);
    RUN(test_verified_handshake);
    RUN(test_verification_failures);
    RUN(test_sni);
    RUN(test_client_cert);
    RUN(test_min_protocol);
    RUN(test_resumption);
    RUN(test_handshake_timeout);
    RUN(test_starttls_injection);
    RUN(test_bulk);
    RUN(test_config);
    free_certs();
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_done();
}
