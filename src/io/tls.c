/* tls.c - GnuTLS under the buffered stream: the server and client contexts,
 * the handshake, and the record layer over in-memory buffers.
 *
 * GnuTLS never touches the socket. Ciphertext read by libuv lands in the
 * session's rx buffer and GnuTLS pulls it from there; what GnuTLS pushes is
 * appended to the stream's raw output, which stream.c flushes as for any
 * stream. Plain output waits in tx_plain until the stream flushes, so the
 * replies of one loop iteration leave as few records as possible. Both
 * buffers are freed whenever they are empty.
 *
 * Not here: when to start TLS (the protocols decide), sockets, connecting. */
#include "tls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "buf.h"
#include "log.h"
#include "mem.h"
#include "stream-private.h"

/* One read from the socket: two full records, and a buffer of 32 KiB. */
#define RX_CHUNK (32 * 1024 - 1)
/* Decrypted bytes appended at once to a stream's own input buffer. */
#define PLAIN_CHUNK (16 * 1024)
/* Non-fatal GnuTLS results (warning alerts) tolerated in a row. */
#define MAX_NONFATAL_ROUNDS 64

/* ---- priority strings ---- */

bool tls_priority_check(const char *priority, char *err, size_t errsize)
{
    gnutls_priority_t prio;
    const char *pos = NULL;
    int r = gnutls_priority_init(&prio, priority, &pos);
    if (r == 0) {
        gnutls_priority_deinit(prio);
        return true;
    }
    if (pos != NULL && r == GNUTLS_E_INVALID_REQUEST)
        snprintf(err, errsize, "not a valid GnuTLS priority string at '%.40s'", pos);
    else
        snprintf(err, errsize, "%s", gnutls_strerror(r));
    return false;
}

char *tls_effective_priority(const struct tls_settings *set)
{
    static const char *const versions[] = {"VERS-TLS1.0", "VERS-TLS1.1", "VERS-TLS1.2",
                                           "VERS-TLS1.3"};
    struct buf b = BUF_INIT;
    const char *base = set->ssl_priority;
    buf_append_str(&b, base != NULL && base[0] != '\0' ? base : TLS_DEFAULT_PRIORITY);
    for (unsigned v = 0; v < ARRAY_LEN(versions); v++) {
        /* The default string drops 1.0 and 1.1; a lower minimum brings them back. */
        if (v < (unsigned)set->ssl_min_protocol)
            buf_printf(&b, ":-%s", versions[v]);
        else if (v <= TLS_PROTO_TLS1_1)
            buf_printf(&b, ":+%s", versions[v]);
    }
    return buf_steal(&b);
}

static int priority_init(gnutls_priority_t *prio, const struct tls_settings *set,
                         char **error_r)
{
    char *str = tls_effective_priority(set);
    const char *pos = NULL;
    int r = gnutls_priority_init(prio, str, &pos);
    if (r < 0) {
        *error_r = xasprintf("ssl_priority/ssl_min_protocol: GnuTLS rejects '%s': %s", str,
                             gnutls_strerror(r));
    }
    free(str);
    return r < 0 ? -1 : 0;
}

/* ---- certificates ---- */

static gnutls_datum_t datum_str(const char *s)
{
    gnutls_datum_t d = {(unsigned char *)s, (unsigned)strlen(s)};
    return d;
}

/* GnuTLS 3.7 leaks when gnutls_certificate_set_x509_key_mem2() gets a PEM
 * whose body is corrupt; parsing the chain first rejects such input
 * without the leak (and gives a clearer error). */
static int check_cert_pem(const char *pem, const char **error_r)
{
    gnutls_x509_crt_t *crts = NULL;
    unsigned n = 0;
    gnutls_datum_t d = {(unsigned char *)pem, (unsigned)strlen(pem)};
    int r = gnutls_x509_crt_list_import2(&crts, &n, &d, GNUTLS_X509_FMT_PEM, 0);
    if (r < 0) {
        *error_r = gnutls_strerror(r);
        return -1;
    }
    for (unsigned i = 0; i < n; i++)
        gnutls_x509_crt_deinit(crts[i]);
    gnutls_free(crts);
    return 0;
}

static int cred_with_key(gnutls_certificate_credentials_t *cred, const char *cert,
                         const char *key, const char *what, char **error_r)
{
    if (cert == NULL || cert[0] == '\0' || key == NULL || key[0] == '\0') {
        *error_r = xasprintf("%s: both a certificate and a key are needed "
                             "(ssl_cert = </path/cert.pem, ssl_key = </path/key.pem)", what);
        return -1;
    }
    const char *bad;
    if (check_cert_pem(cert, &bad) < 0) {
        *error_r = xasprintf("%s: cannot load the certificate: %s", what, bad);
        return -1;
    }
    int r = gnutls_certificate_allocate_credentials(cred);
    if (r < 0) {
        *error_r = xasprintf("%s: %s", what, gnutls_strerror(r));
        return -1;
    }
    gnutls_datum_t c = datum_str(cert), k = datum_str(key);
    r = gnutls_certificate_set_x509_key_mem2(*cred, &c, &k, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (r < 0) {
        *error_r = xasprintf("%s: cannot load the certificate and key: %s", what,
                             gnutls_strerror(r));
        return -1;
    }
    return 0;
}

static int trust_pem(gnutls_certificate_credentials_t cred, const char *pem, char **error_r)
{
    gnutls_datum_t d = datum_str(pem);
    int r = gnutls_certificate_set_x509_trust_mem(cred, &d, GNUTLS_X509_FMT_PEM);
    if (r <= 0) {
        *error_r = xasprintf("ssl_ca: %s", r < 0 ? gnutls_strerror(r) : "no certificates");
        return -1;
    }
    return 0;
}

/* ---- server context ---- */

/* A name from a local_name section: "mail.example.com", or for
 * "*.example.com" the suffix ".example.com". Lower case. */
struct sni_name {
    char *name;
    bool wildcard;
    gnutls_certificate_credentials_t cred; /* owned by tls_server.sni_creds */
};

struct tls_server {
    atomic_int refs;
    gnutls_certificate_credentials_t cred;
    gnutls_certificate_credentials_t *sni_creds;
    unsigned n_sni_creds;
    struct sni_name *sni;
    size_t n_sni;
    gnutls_priority_t prio;
    gnutls_datum_t ticket_key;
    bool request_client_cert;
    uint64_t handshake_timeout_ms;
};

static void add_sni_names(struct tls_server *t, const char *names,
                          gnutls_certificate_credentials_t cred)
{
    const char *p = names;
    while (*(p += strspn(p, " \t,")) != '\0') {
        size_t n = strcspn(p, " \t,");
        struct sni_name sn = {xstrndup(p, n), false, cred};
        if (n > 2 && p[0] == '*' && p[1] == '.') {
            memmove(sn.name, sn.name + 1, n); /* keep ".example.com" */
            sn.wildcard = true;
        }
        for (char *c = sn.name; *c != '\0'; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
        t->sni = xrealloc(t->sni, (t->n_sni + 1) * sizeof(*t->sni));
        t->sni[t->n_sni++] = sn;
        p += n;
    }
}

static int verify_client_cert(gnutls_session_t gs);

/* Client certificates are asked for, not required: one that is sent must
 * verify against ssl_ca, none at all is fine (the protocol decides). */
static int client_ca(gnutls_certificate_credentials_t cred, const char *pem, char **error_r)
{
    if (trust_pem(cred, pem, error_r) < 0)
        return -1;
    gnutls_certificate_set_verify_function(cred, verify_client_cert);
    return 0;
}

static int server_local_names(struct tls_server *t, const struct tls_settings *set,
                              char **error_r)
{
    t->sni_creds = xcalloc(set->n_local_names + 1, sizeof(*t->sni_creds));
    for (unsigned i = 0; i < set->n_local_names; i++) {
        const struct tls_local_name *ln = &set->local_names[i];
        char *what = xasprintf("local_name %s", ln->names);
        int r = cred_with_key(&t->sni_creds[i], ln->cert, ln->key, what, error_r);
        free(what);
        t->n_sni_creds = i + 1;
        if (r < 0)
            return -1;
        if (t->request_client_cert && client_ca(t->sni_creds[i], set->ssl_ca, error_r) < 0)
            return -1;
        add_sni_names(t, ln->names, t->sni_creds[i]);
    }
    return 0;
}

static void server_free(struct tls_server *t)
{
    if (t->cred != NULL)
        gnutls_certificate_free_credentials(t->cred);
    for (unsigned i = 0; i < t->n_sni_creds; i++) {
        if (t->sni_creds[i] != NULL)
            gnutls_certificate_free_credentials(t->sni_creds[i]);
    }
    free(t->sni_creds);
    for (size_t i = 0; i < t->n_sni; i++)
        free(t->sni[i].name);
    free(t->sni);
    if (t->prio != NULL)
        gnutls_priority_deinit(t->prio);
    if (t->ticket_key.data != NULL) {
        gnutls_memset(t->ticket_key.data, 0, t->ticket_key.size);
        gnutls_free(t->ticket_key.data);
    }
    free(t);
}

struct tls_server *tls_server_new(const struct tls_settings *set, char **error_r)
{
    struct tls_server *t = xcalloc(1, sizeof(*t));
    atomic_init(&t->refs, 1);
    t->handshake_timeout_ms = TLS_SERVER_HANDSHAKE_TIMEOUT_MS;
    t->request_client_cert = set->ssl_verify_client_cert;
    int r = 0;
    if (t->request_client_cert && (set->ssl_ca == NULL || set->ssl_ca[0] == '\0')) {
        *error_r = xstrdup("ssl_verify_client_cert = yes needs ssl_ca = </path/ca.pem");
        r = -1;
    }
    if (r == 0)
        r = priority_init(&t->prio, set, error_r);
    if (r == 0)
        r = cred_with_key(&t->cred, set->ssl_cert, set->ssl_key, "ssl_cert/ssl_key", error_r);
    if (r == 0 && t->request_client_cert)
        r = client_ca(t->cred, set->ssl_ca, error_r);
    if (r == 0)
        r = server_local_names(t, set, error_r);
    if (r == 0 && (r = gnutls_session_ticket_key_generate(&t->ticket_key)) < 0)
        *error_r = xasprintf("session ticket key: %s", gnutls_strerror(r));
    if (r < 0) {
        server_free(t);
        return NULL;
    }
    return t;
}

void tls_server_ref(struct tls_server *t)
{
    atomic_fetch_add(&t->refs, 1);
}

void tls_server_unref(struct tls_server **tp)
{
    struct tls_server *t = *tp;
    *tp = NULL;
    if (t != NULL && atomic_fetch_sub(&t->refs, 1) == 1)
        server_free(t);
}

void tls_server_set_handshake_timeout(struct tls_server *t, uint64_t ms)
{
    t->handshake_timeout_ms = ms;
}

static bool sni_matches(const struct sni_name *sn, const char *name, size_t len)
{
    size_t n = strlen(sn->name);
    if (!sn->wildcard)
        return n == len && strcasecmp(sn->name, name) == 0;
    return len > n && strcasecmp(name + len - n, sn->name) == 0;
}

/* The credentials for a name the client asked for: an exact name first,
 * then the longest wildcard; NULL for the default certificate. */
static gnutls_certificate_credentials_t sni_lookup(const struct tls_server *t, const char *name)
{
    size_t len = strlen(name), best_len = 0;
    gnutls_certificate_credentials_t best = NULL;
    for (size_t i = 0; i < t->n_sni; i++) {
        const struct sni_name *sn = &t->sni[i];
        if (!sni_matches(sn, name, len))
            continue;
        if (!sn->wildcard)
            return sn->cred;
        if (strlen(sn->name) > best_len) {
            best_len = strlen(sn->name);
            best = sn->cred;
        }
    }
    return best;
}

/* ---- client context and its session cache ---- */

struct cache_entry {
    char *key;
    unsigned char *data;
    size_t len;
    uint64_t used;           /* logical clock of the last use, for eviction */
};

struct tls_client {
    atomic_int refs;
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
    pthread_mutex_t lock;    /* workers share the cache */
    uint64_t clock;
    struct cache_entry cache[TLS_CLIENT_CACHE_SIZE];
};

static int client_trust(struct tls_client *t, const struct tls_settings *set, char **error_r)
{
    const char *file = set->ssl_client_ca_file, *dir = set->ssl_client_ca_dir;
    bool have_file = file != NULL && file[0] != '\0', have_dir = dir != NULL && dir[0] != '\0';
    int r;
    if (have_file) {
        r = gnutls_certificate_set_x509_trust_file(t->cred, file, GNUTLS_X509_FMT_PEM);
        if (r <= 0) {
            *error_r = xasprintf("ssl_client_ca_file %s: %s", file,
                                 r < 0 ? gnutls_strerror(r) : "no certificates found");
            return -1;
        }
    }
    if (have_dir) {
        r = gnutls_certificate_set_x509_trust_dir(t->cred, dir, GNUTLS_X509_FMT_PEM);
        if (r <= 0) {
            *error_r = xasprintf("ssl_client_ca_dir %s: %s", dir,
                                 r < 0 ? gnutls_strerror(r) : "no certificates found");
            return -1;
        }
    }
    if (!have_file && !have_dir) {
        /* Without a store every verified connection fails with a clear
         * "not signed by a trusted CA"; any-cert connections still work. */
        r = gnutls_certificate_set_x509_system_trust(t->cred);
        if (r <= 0)
            log_warn("TLS: no system trust store (%s): set ssl_client_ca_file",
                     r < 0 ? gnutls_strerror(r) : "no certificates");
    }
    return 0;
}

static int client_cert(struct tls_client *t, const struct tls_settings *set, char **error_r)
{
    const char *cert = set->ssl_client_cert, *key = set->ssl_client_key;
    bool have_cert = cert != NULL && cert[0] != '\0', have_key = key != NULL && key[0] != '\0';
    if (!have_cert && !have_key)
        return 0;
    if (!have_cert || !have_key) {
        *error_r = xstrdup("ssl_client_cert and ssl_client_key go together");
        return -1;
    }
    const char *bad;
    if (check_cert_pem(cert, &bad) < 0) {
        *error_r = xasprintf("ssl_client_cert: %s", bad);
        return -1;
    }
    gnutls_datum_t c = datum_str(cert), k = datum_str(key);
    int r = gnutls_certificate_set_x509_key_mem2(t->cred, &c, &k, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (r < 0) {
        *error_r = xasprintf("ssl_client_cert/ssl_client_key: %s", gnutls_strerror(r));
        return -1;
    }
    return 0;
}

static void client_free(struct tls_client *t)
{
    if (t->cred != NULL)
        gnutls_certificate_free_credentials(t->cred);
    if (t->prio != NULL)
        gnutls_priority_deinit(t->prio);
    for (size_t i = 0; i < TLS_CLIENT_CACHE_SIZE; i++) {
        free(t->cache[i].key);
        free(t->cache[i].data);
    }
    pthread_mutex_destroy(&t->lock);
    free(t);
}

struct tls_client *tls_client_new(const struct tls_settings *set, char **error_r)
{
    struct tls_client *t = xcalloc(1, sizeof(*t));
    atomic_init(&t->refs, 1);
    pthread_mutex_init(&t->lock, NULL);
    int r = priority_init(&t->prio, set, error_r);
    if (r == 0 && (r = gnutls_certificate_allocate_credentials(&t->cred)) < 0)
        *error_r = xasprintf("TLS client: %s", gnutls_strerror(r));
    if (r == 0)
        r = client_trust(t, set, error_r);
    if (r == 0)
        r = client_cert(t, set, error_r);
    if (r < 0) {
        client_free(t);
        return NULL;
    }
    return t;
}

void tls_client_ref(struct tls_client *t)
{
    atomic_fetch_add(&t->refs, 1);
}

void tls_client_unref(struct tls_client **tp)
{
    struct tls_client *t = *tp;
    *tp = NULL;
    if (t != NULL && atomic_fetch_sub(&t->refs, 1) == 1)
        client_free(t);
}

size_t tls_client_cache_count(struct tls_client *t)
{
    size_t n = 0;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < TLS_CLIENT_CACHE_SIZE; i++)
        n += t->cache[i].key != NULL;
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* Copy the session data stored under key into *d (gnutls_free() it). */
static bool cache_get(struct tls_client *t, const char *key, gnutls_datum_t *d)
{
    bool found = false;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < TLS_CLIENT_CACHE_SIZE && !found; i++) {
        struct cache_entry *e = &t->cache[i];
        if (e->key == NULL || strcmp(e->key, key) != 0)
            continue;
        d->data = gnutls_malloc(e->len);
        d->size = (unsigned)e->len;
        found = d->data != NULL;
        if (found)
            memcpy(d->data, e->data, e->len);
        e->used = ++t->clock;
    }
    pthread_mutex_unlock(&t->lock);
    return found;
}

/* Store under key: replacing the key's entry, else a free one, else the
 * least recently used. */
static void cache_put(struct tls_client *t, const char *key, const gnutls_datum_t *d)
{
    pthread_mutex_lock(&t->lock);
    struct cache_entry *slot = &t->cache[0];
    for (size_t i = 0; i < TLS_CLIENT_CACHE_SIZE; i++) {
        struct cache_entry *e = &t->cache[i];
        if (e->key != NULL && strcmp(e->key, key) == 0) {
            slot = e;
            break;
        }
        if (slot->key != NULL && (e->key == NULL || e->used < slot->used))
            slot = e;
    }
    if (slot->key == NULL || strcmp(slot->key, key) != 0) {
        free(slot->key);
        slot->key = xstrdup(key);
    }
    free(slot->data);
    slot->data = xmalloc(d->size);
    memcpy(slot->data, d->data, d->size);
    slot->len = d->size;
    slot->used = ++t->clock;
    pthread_mutex_unlock(&t->lock);
}

static void cache_drop(struct tls_client *t, const char *key)
{
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < TLS_CLIENT_CACHE_SIZE; i++) {
        struct cache_entry *e = &t->cache[i];
        if (e->key != NULL && strcmp(e->key, key) == 0) {
            free(e->key);
            free(e->data);
            memset(e, 0, sizeof(*e));
        }
    }
    pthread_mutex_unlock(&t->lock);
}

/* ---- settings helper ---- */

void tls_settings_free_local_names(struct tls_settings *set)
{
    for (unsigned i = 0; i < set->n_local_names; i++) {
        struct tls_local_name *ln = &set->local_names[i];
        free(ln->names);
        free(ln->cert);
        if (ln->key != NULL)
            mem_wipe(ln->key, strlen(ln->key));
        free(ln->key);
    }
    free(set->local_names);
    set->local_names = NULL;
    set->n_local_names = 0;
}

/* ---- sessions ---- */

struct tls_session {
    struct stream *s;
    gnutls_session_t gs;
    struct tls_server *server;   /* one of the two, with a reference */
    struct tls_client *client;
    char *cache_key;             /* client: where its session data is kept */
    char *verify_name;           /* client: NULL = any certificate */
    struct buf rx;               /* ciphertext GnuTLS has not pulled yet */
    struct buf tx_plain;         /* plain output not encrypted yet */
    struct timer *timer;         /* handshake timeout */
    stream_tls_fn *fn;
    void *fn_ctx;
    unsigned client_cert_status; /* server: why a client certificate failed */
    char info[96];
    char error[256];
    bool handshaking, established, failed;
    bool session_saved, bye_queued, peer_verified;
};

static ssize_t tls_push(gnutls_transport_ptr_t ptr, const void *data, size_t n)
{
    struct tls_session *t = ptr;
    if (!t->s->write_failed)
        buf_append(&t->s->out, data, n);
    return (ssize_t)n;
}

static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *data, size_t n)
{
    struct tls_session *t = ptr;
    size_t have = buf_used(&t->rx);
    if (have == 0) {
        gnutls_transport_set_errno(t->gs, EAGAIN);
        return -1;
    }
    if (n > have)
        n = have;
    memcpy(data, buf_ptr(&t->rx), n);
    buf_consume(&t->rx, n);
    if (buf_used(&t->rx) == 0)
        buf_free(&t->rx);
    return (ssize_t)n;
}

/* GnuTLS asks this before it would wait; we never wait. */
static int tls_pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
    struct tls_session *t = ptr;
    (void)ms;
    return buf_used(&t->rx) > 0 ? 1 : 0;
}

/* What GnuTLS pushed goes out on the next flush. */
static void flush_later(struct tls_session *t)
{
    if (buf_used(&t->s->out) > 0)
        stream_schedule_flush(t->s);
}

static void session_free(struct tls_session *t)
{
    if (t->gs != NULL)
        gnutls_deinit(t->gs);
    timer_free(&t->timer);
    buf_free(&t->rx);
    buf_free_wipe(&t->tx_plain);
    tls_server_unref(&t->server);
    tls_client_unref(&t->client);
    free(t->cache_key);
    free(t->verify_name);
    free(t);
}

static int session_init(struct tls_session *t, unsigned flags)
{
    int r = gnutls_init(&t->gs, flags | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
    if (r < 0) {
        t->gs = NULL;
        return r;
    }
    gnutls_session_set_ptr(t->gs, t);
    gnutls_transport_set_ptr(t->gs, t);
    gnutls_transport_set_push_function(t->gs, tls_push);
    gnutls_transport_set_pull_function(t->gs, tls_pull);
    gnutls_transport_set_pull_timeout_function(t->gs, tls_pull_timeout);
    return 0;
}

/* Server side: pick the certificate for the name the client asked for. */
static int on_client_hello(gnutls_session_t gs)
{
    struct tls_session *t = gnutls_session_get_ptr(gs);
    char name[256];
    size_t len = sizeof(name) - 1;
    unsigned type;
    if (gnutls_server_name_get(gs, name, &len, &type, 0) < 0 || type != GNUTLS_NAME_DNS)
        return 0;
    name[len < sizeof(name) ? len : sizeof(name) - 1] = '\0';
    gnutls_certificate_credentials_t cred = sni_lookup(t->server, name);
    if (cred == NULL)
        return 0;
    return gnutls_credentials_set(gs, GNUTLS_CRD_CERTIFICATE, cred);
}

static int verify_client_cert(gnutls_session_t gs)
{
    struct tls_session *t = gnutls_session_get_ptr(gs);
    unsigned n = 0, status = 0;
    if (gnutls_certificate_get_peers(gs, &n) == NULL || n == 0)
        return 0;
    int r = gnutls_certificate_verify_peers2(gs, &status);
    if (r < 0)
        status = GNUTLS_CERT_INVALID;
    if (status == 0)
        return 0;
    t->client_cert_status = status;
    return GNUTLS_E_CERTIFICATE_ERROR;
}

static int server_session_init(struct tls_session *t)
{
    const struct tls_server *srv = t->server;
    int r = session_init(t, GNUTLS_SERVER);
    if (r == 0)
        r = gnutls_priority_set(t->gs, srv->prio);
    if (r == 0)
        r = gnutls_credentials_set(t->gs, GNUTLS_CRD_CERTIFICATE, srv->cred);
    if (r == 0)
        r = gnutls_session_ticket_enable_server(t->gs, &srv->ticket_key);
    if (r == 0 && srv->n_sni > 0)
        gnutls_handshake_set_post_client_hello_function(t->gs, on_client_hello);
    if (r == 0 && srv->request_client_cert)
        gnutls_certificate_server_set_request(t->gs, GNUTLS_CERT_REQUEST);
    return r;
}

static bool is_ip_literal(const char *name)
{
    struct addr a;
    return addr_parse_ip(name, &a);
}

static int client_session_init(struct tls_session *t, const char *sni)
{
    int r = session_init(t, GNUTLS_CLIENT);
    if (r == 0)
        r = gnutls_priority_set(t->gs, t->client->prio);
    if (r == 0)
        r = gnutls_credentials_set(t->gs, GNUTLS_CRD_CERTIFICATE, t->client->cred);
    /* RFC 6066: a literal IP address is not a server name. */
    if (r == 0 && sni != NULL && sni[0] != '\0' && !is_ip_literal(sni))
        r = gnutls_server_name_set(t->gs, GNUTLS_NAME_DNS, sni, strlen(sni));
    if (r == 0 && t->verify_name != NULL)
        gnutls_session_set_verify_cert(t->gs, t->verify_name, 0);
    gnutls_datum_t d;
    if (r == 0 && cache_get(t->client, t->cache_key, &d)) {
        if (gnutls_session_set_data(t->gs, d.data, d.size) < 0)
            cache_drop(t->client, t->cache_key);
        gnutls_free(d.data);
    }
    return r;
}

/* Resumption data depends on the name checked, the name asked for and the
 * address: a session verified for one name must never stand in for another. */
static char *client_cache_key(const struct stream *s, const char *verify_name, const char *sni)
{
    char peer[ADDR_STRLEN];
    addr_str(stream_peer(s), peer, sizeof(peer));
    return xasprintf("%s|%s|%s", verify_name != NULL ? verify_name : "*",
                     sni != NULL ? sni : "", stream_is_unix(s) ? "unix" : peer);
}

/* TLS 1.2 data is usable at once; TLS 1.3 only once a ticket arrived. */
static void client_save_session(struct tls_session *t)
{
    if (t->client == NULL || t->session_saved || !t->established)
        return;
    if (gnutls_protocol_get_version(t->gs) == GNUTLS_TLS1_3 &&
        (gnutls_session_get_flags(t->gs) & GNUTLS_SFLAGS_SESSION_TICKET) == 0)
        return;
    gnutls_datum_t d;
    if (gnutls_session_get_data2(t->gs, &d) == 0) {
        cache_put(t->client, t->cache_key, &d);
        gnutls_free(d.data);
    }
    t->session_saved = true;
}

/* ---- handshake ---- */

static void describe(struct tls_session *t)
{
    const char *proto = gnutls_protocol_get_name(gnutls_protocol_get_version(t->gs));
    const char *cipher = gnutls_cipher_get_name(gnutls_cipher_get(t->gs));
    if (proto == NULL)
        proto = "?";
    /* "TLS1.3" as people know it from other servers' logs: "TLSv1.3". */
    bool tls = strncmp(proto, "TLS", 3) == 0;
    snprintf(t->info, sizeof(t->info), "%s%s with cipher %s%s", tls ? "TLSv" : "",
             tls ? proto + 3 : proto, cipher != NULL ? cipher : "?",
             gnutls_session_is_resumed(t->gs) ? ", resumed" : "");
}

static void call_fn(struct tls_session *t, int err, const char *text)
{
    struct stream *s = t->s;
    stream_tls_fn *fn = t->fn;
    t->fn = NULL;
    if (fn == NULL)
        return;
    stream_enter(s);
    fn(t->fn_ctx, err, text);
    stream_leave(s);
}

/* Hand what is queued to the kernel now: the owner will probably destroy
 * the stream from its callback, and the peer should still learn why. */
static void write_now(struct stream *s)
{
    if (s->writing || s->write_failed || buf_used(&s->out) == 0)
        return;
    uv_buf_t b = uv_buf_init((char *)buf_ptr(&s->out), (unsigned)buf_used(&s->out));
    int n = uv_try_write(s->uvs, &b, 1);
    if (n > 0)
        buf_consume(&s->out, (size_t)n);
    if (buf_used(&s->out) == 0)
        buf_free(&s->out);
}

/* No further callback but fn: the owner destroys the stream. */
static void handshake_failed(struct tls_session *t, int err, const char *text)
{
    struct stream *s = t->s;
    t->handshaking = false;
    t->failed = true;
    timer_free(&t->timer);
    snprintf(t->error, sizeof(t->error), "%s", text);
    buf_free(&t->rx);
    buf_free_wipe(&t->tx_plain);
    s->close_notified = true;
    if (s->reading) {
        uv_read_stop(s->uvs);
        s->reading = false;
    }
    write_now(s); /* an alert still tells the peer why */
    flush_later(t);
    if (t->client != NULL)
        cache_drop(t->client, t->cache_key);
    call_fn(t, err, t->error);
}

static const struct {
    unsigned flag;
    const char *text;
} verify_reasons[] = {
    {GNUTLS_CERT_EXPIRED, "the certificate is expired"},
    {GNUTLS_CERT_NOT_ACTIVATED, "the certificate is not yet valid"},
    {GNUTLS_CERT_SIGNER_NOT_FOUND, "the certificate is not issued by a trusted CA"},
    {GNUTLS_CERT_SIGNER_NOT_CA, "the issuer is not a CA"},
    {GNUTLS_CERT_REVOKED, "the certificate is revoked"},
    {GNUTLS_CERT_INSECURE_ALGORITHM, "the certificate uses an insecure algorithm"},
    {GNUTLS_CERT_SIGNATURE_FAILURE, "the signature does not verify"},
    {GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE, "the issuer's constraints forbid it"},
    {GNUTLS_CERT_PURPOSE_MISMATCH, "the certificate is not for this purpose"},
};

/* "certificate verification failed: the certificate is expired", or
 * "host name mismatch: NAME" when the name is the only problem. */
static void verify_error_text(struct tls_session *t, unsigned status, char *out, size_t n)
{
    struct buf b = BUF_INIT;
    unsigned known = GNUTLS_CERT_INVALID | GNUTLS_CERT_UNEXPECTED_OWNER;
    for (size_t i = 0; i < ARRAY_LEN(verify_reasons); i++) {
        known |= verify_reasons[i].flag;
        if ((status & verify_reasons[i].flag) != 0)
            buf_printf(&b, "%s%s", buf_used(&b) > 0 ? ", " : "", verify_reasons[i].text);
    }
    gnutls_datum_t printed = {NULL, 0};
    if ((status & ~known) != 0 &&
        gnutls_certificate_verification_status_print(status & ~known, GNUTLS_CRT_X509,
                                                     &printed, 0) == 0) {
        buf_printf(&b, "%s%s", buf_used(&b) > 0 ? ", " : "", (const char *)printed.data);
        gnutls_free(printed.data);
    }
    const char *who = t->server != NULL ? "client certificate" : "certificate";
    const char *name = t->verify_name != NULL ? t->verify_name : "?";
    bool owner = (status & GNUTLS_CERT_UNEXPECTED_OWNER) != 0;
    if (buf_used(&b) == 0 && owner)
        snprintf(out, n, "host name mismatch: %s", name);
    else if (owner)
        snprintf(out, n, "%s verification failed: %s; host name mismatch: %s", who, buf_ptr(&b),
                 name);
    else
        snprintf(out, n, "%s verification failed: %s", who,
                 buf_used(&b) > 0 ? buf_ptr(&b) : "unknown reason");
    buf_free(&b);
}

static void handshake_error(struct tls_session *t, int r)
{
    char text[256];
    if (r != GNUTLS_E_FATAL_ALERT_RECEIVED)
        gnutls_alert_send_appropriate(t->gs, r);
    if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR || t->client_cert_status != 0) {
        unsigned status = t->client_cert_status != 0 ? t->client_cert_status
                                                     : gnutls_session_get_verify_cert_status(t->gs);
        verify_error_text(t, status, text, sizeof(text));
        handshake_failed(t, STREAM_ETLS_VERIFY, text);
        return;
    }
    if (r == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        const char *alert = gnutls_alert_get_name(gnutls_alert_get(t->gs));
        snprintf(text, sizeof(text), "handshake failed: the peer sent the alert \"%s\"",
                 alert != NULL ? alert : "?");
    } else {
        snprintf(text, sizeof(text), "handshake failed: %s", gnutls_strerror(r));
    }
    handshake_failed(t, STREAM_ETLS, text);
}

static void handshake_done(struct tls_session *t)
{
    struct stream *s = t->s;
    t->handshaking = false;
    t->established = true;
    timer_free(&t->timer);
    describe(t);
    if (t->server != NULL && t->server->request_client_cert) {
        unsigned n = 0;
        /* Had it not verified, verify_client_cert() would have failed the handshake. */
        t->peer_verified = gnutls_certificate_get_peers(t->gs, &n) != NULL && n > 0;
    }
    client_save_session(t);
    call_fn(t, 0, NULL);
    if (s->dead)
        return;
    if (buf_used(&t->tx_plain) > 0)
        stream_schedule_flush(s);
    /* Records that came with the last handshake flight bring no read event. */
    tls_pump(s);
}

/* GnuTLS may answer "again" after one message although more input is
 * buffered: call again while it still takes bytes. */
static bool again_with_progress(const struct tls_session *t, size_t rx_before)
{
    size_t left = buf_used(&t->rx);
    return left > 0 && left < rx_before;
}

static void handshake_step(struct tls_session *t)
{
    int r;
    unsigned rounds = 0;
    size_t before;
    do {
        before = buf_used(&t->rx);
        r = gnutls_handshake(t->gs);
    } while (r < 0 && ++rounds < MAX_NONFATAL_ROUNDS &&
             (r == GNUTLS_E_AGAIN ? again_with_progress(t, before) : !gnutls_error_is_fatal(r)));
    flush_later(t);
    if (r == GNUTLS_E_AGAIN)
        return;
    if (r < 0)
        handshake_error(t, r);
    else
        handshake_done(t);
}

static void on_handshake_timeout(void *ctx)
{
    struct tls_session *t = ctx;
    if (t->handshaking)
        handshake_failed(t, STREAM_ETIMEDOUT, "handshake timed out");
}

/* The first step runs on the next iteration, so that fn is never called
 * from inside stream_start_tls_*(). */
static void handshake_kickoff(void *ctx)
{
    struct tls_session *t = ctx;
    struct stream *s = t->s;
    if (!t->handshaking)
        return;
    stream_enter(s);
    if (t->gs == NULL)
        handshake_failed(t, STREAM_ETLS, "handshake failed: cannot set up a TLS session");
    else
        handshake_step(t);
    stream_leave(s);
}

bool tls_close_in_handshake(struct stream *s, int err)
{
    struct tls_session *t = s->tls;
    if (!t->handshaking)
        return false;
    char text[160];
    if (err == 0)
        snprintf(text, sizeof(text), "connection closed during the handshake");
    else if (err == STREAM_ETIMEDOUT)
        snprintf(text, sizeof(text), "handshake timed out");
    else
        snprintf(text, sizeof(text), "handshake failed: %s", stream_strerror(err));
    handshake_failed(t, err == 0 ? STREAM_ETLS : err, text);
    return true;
}

/* Plain bytes the peer sent after the command that started TLS. */
static size_t discard_plain_input(struct stream *s)
{
    size_t n = buf_used(&s->in);
    buf_free(&s->in);
    if (s->view != NULL) {
        n += buf_used(s->view);
        buf_consume(s->view, buf_used(s->view));
    }
    return n;
}

static struct tls_session *session_start(struct stream *s, stream_tls_fn *fn, void *ctx,
                                         size_t *discarded_r)
{
    if (s->tls != NULL)
        log_panic("TLS started twice on one stream");
    *discarded_r = discard_plain_input(s);
    if (*discarded_r > 0)
        log_debug("TLS: discarded %zu plain bytes sent after the TLS start", *discarded_r);
    struct tls_session *t = xcalloc(1, sizeof(*t));
    t->s = s;
    t->fn = fn;
    t->fn_ctx = ctx;
    t->handshaking = true;
    s->tls = t;
    return t;
}

static void handshake_begin(struct tls_session *t, uint64_t timeout_ms)
{
    struct stream *s = t->s;
    if (timeout_ms > 0) {
        t->timer = timer_new(s->loop, on_handshake_timeout, t);
        timer_start(t->timer, timeout_ms);
    }
    s->paused = false;
    s->capped = false;
    stream_start_reading(s);
    loop_defer(s->loop, handshake_kickoff, t);
}

size_t stream_start_tls_server(struct stream *s, struct tls_server *srv, stream_tls_fn *fn,
                               void *ctx)
{
    size_t discarded;
    struct tls_session *t = session_start(s, fn, ctx, &discarded);
    tls_server_ref(srv);
    t->server = srv;
    if (server_session_init(t) < 0 && t->gs != NULL) {
        gnutls_deinit(t->gs);
        t->gs = NULL;
    }
    handshake_begin(t, srv->handshake_timeout_ms);
    return discarded;
}

size_t stream_start_tls_client(struct stream *s, struct tls_client *cli, const char *verify_name,
                               const char *sni, uint64_t timeout_ms, stream_tls_fn *fn,
                               void *ctx)
{
    size_t discarded;
    struct tls_session *t = session_start(s, fn, ctx, &discarded);
    tls_client_ref(cli);
    t->client = cli;
    t->verify_name = verify_name != NULL ? xstrdup(verify_name) : NULL;
    t->cache_key = client_cache_key(s, verify_name, sni);
    if (client_session_init(t, sni) < 0 && t->gs != NULL) {
        gnutls_deinit(t->gs);
        t->gs = NULL;
    }
    handshake_begin(t, timeout_ms);
    return discarded;
}

/* ---- the record layer ---- */

char *tls_rx_space(struct stream *s, size_t *len_r)
{
    *len_r = RX_CHUNK;
    return buf_reserve(&s->tls->rx, RX_CHUNK);
}

void tls_rx(struct stream *s, ssize_t nread)
{
    struct tls_session *t = s->tls;
    if (nread > 0 && !t->failed) {
        buf_commit(&t->rx, (size_t)nread);
        s->last_input_ms = loop_now_ms(s->loop);
    }
    if (buf_used(&t->rx) == 0 || t->failed) {
        buf_free(&t->rx);
        return;
    }
    if (t->handshaking)
        handshake_step(t);
    else if (t->established)
        tls_pump(s);
}

static bool has_input(const struct tls_session *t)
{
    return buf_used(&t->rx) > 0 || gnutls_record_check_pending(t->gs) > 0;
}

/* Decrypt up to cap bytes into dst. *status_r: 0 more may follow, 1 the
 * peer sent close_notify, -1 a fatal error (in t->error). */
static size_t decrypt(struct tls_session *t, char *dst, size_t cap, int *status_r)
{
    size_t got = 0;
    unsigned nonfatal = 0;
    *status_r = 0;
    while (got < cap) {
        size_t before = buf_used(&t->rx);
        ssize_t r = gnutls_record_recv(t->gs, dst + got, cap - got);
        if (r > 0) {
            got += (size_t)r;
        } else if (r == 0) {
            *status_r = 1;
            break;
        } else if (r == GNUTLS_E_AGAIN) {
            /* After a post-handshake message (a session ticket) GnuTLS says
             * "again" with records still buffered. */
            if (!again_with_progress(t, before))
                break;
        } else if (!gnutls_error_is_fatal((int)r) && ++nonfatal < MAX_NONFATAL_ROUNDS) {
            continue; /* a warning alert, a refused renegotiation */
        } else {
            snprintf(t->error, sizeof(t->error), "TLS error: %s", gnutls_strerror((int)r));
            *status_r = -1;
            break;
        }
    }
    return got;
}

/* Drain everything GnuTLS can give: nothing buffered here brings another
 * read event. Stops when the owner pauses or max_input is buffered. */
void tls_pump(struct stream *s)
{
    struct tls_session *t = s->tls;
    stream_enter(s);
    while (!s->dead && !s->close_notified && !s->paused && t->established &&
           buf_used(&s->in) < s->max_input && has_input(t)) {
        bool to_scratch = buf_used(&s->in) == 0;
        char *dst = to_scratch ? s->loop->scratch : buf_reserve(&s->in, PLAIN_CHUNK);
        size_t cap = to_scratch ? s->loop->scratch_size : PLAIN_CHUNK;
        int status;
        size_t got = decrypt(t, dst, cap, &status);
        flush_later(t); /* key updates, alerts */
        client_save_session(t);
        if (got > 0)
            stream_input_plain(s, dst, got, to_scratch);
        if (status != 0 && !s->dead)
            stream_notify_close(s, status > 0 ? 0 : STREAM_ETLS);
        if (got == 0)
            break;
    }
    stream_leave(s);
}

struct buf *tls_plain_out(struct stream *s)
{
    return &s->tls->tx_plain;
}

size_t tls_plain_pending(const struct stream *s)
{
    return buf_used(&s->tls->tx_plain);
}

int tls_encrypt(struct stream *s)
{
    struct tls_session *t = s->tls;
    if (!t->established || buf_used(&t->tx_plain) == 0)
        return 0;
    while (buf_used(&t->tx_plain) > 0) {
        ssize_t r = gnutls_record_send(t->gs, buf_ptr(&t->tx_plain), buf_used(&t->tx_plain));
        if (r == GNUTLS_E_INTERRUPTED)
            continue;
        if (r <= 0) {
            snprintf(t->error, sizeof(t->error), "TLS error: %s",
                     r == 0 ? "nothing sent" : gnutls_strerror((int)r));
            buf_free_wipe(&t->tx_plain);
            return -1;
        }
        buf_consume(&t->tx_plain, (size_t)r);
    }
    buf_free(&t->tx_plain);
    return 0;
}

void tls_close_after_flush(struct stream *s)
{
    struct tls_session *t = s->tls;
    if (t->handshaking) {
        /* Nobody waits for the result any more, and nothing queued may
         * leave unencrypted. */
        t->handshaking = false;
        t->failed = true;
        t->fn = NULL;
        timer_free(&t->timer);
        buf_free_wipe(&t->tx_plain);
        return;
    }
    if (!t->established || s->write_failed || t->bye_queued)
        return;
    if (tls_encrypt(s) == 0) {
        gnutls_bye(t->gs, GNUTLS_SHUT_WR);
        t->bye_queued = true;
    }
    flush_later(t);
}

void tls_stream_closing(struct stream *s)
{
    struct tls_session *t = s->tls;
    loop_defer_cancel(s->loop, handshake_kickoff, t);
    /* Best effort, never blocking: close_notify when nothing else is queued. */
    if (t->established && !t->bye_queued && !s->close_notified && !s->writing &&
        !s->write_failed && buf_used(&s->out) == 0) {
        gnutls_bye(t->gs, GNUTLS_SHUT_WR);
        uv_buf_t b = uv_buf_init((char *)buf_ptr(&s->out), (unsigned)buf_used(&s->out));
        if (b.len > 0)
            (void)uv_try_write(s->uvs, &b, 1);
        buf_free(&s->out);
    }
    s->tls = NULL;
    session_free(t);
}

/* ---- what the owner may ask ---- */

bool stream_is_tls(const struct stream *s)
{
    return s->tls != NULL && s->tls->established;
}

const char *stream_tls_info(const struct stream *s)
{
    return s->tls != NULL && s->tls->established ? s->tls->info : "";
}

bool stream_tls_resumed(const struct stream *s)
{
    return stream_is_tls(s) && gnutls_session_is_resumed(s->tls->gs) != 0;
}

bool stream_tls_peer_cert_verified(const struct stream *s)
{
    return stream_is_tls(s) && s->tls->peer_verified;
}

const char *stream_tls_error(const struct stream *s)
{
    return s->tls != NULL && s->tls->error[0] != '\0' ? s->tls->error : NULL;
}
