/* tls - TLS contexts for streams, with GnuTLS.
 *
 * A tls_server holds what every server-side session needs: the default
 * certificate, the SNI certificates of the "local_name" sections, the
 * priority string and the session ticket key. A tls_client holds the trust
 * store, the optional client certificate and a bounded cache of session
 * data for resumption, keyed by where the session went. Both are built
 * once from the settings, are read-only afterwards (the client's cache has
 * its own lock) and may be shared by every worker thread; sessions hold a
 * reference, so a reload builds new objects while established sessions keep
 * the ones they started with.
 *
 * TLS is started on a stream with stream_start_tls_server() or
 * stream_start_tls_client() (stream.h). This module is not a protocol: when
 * to start TLS (implicit, STARTTLS) is the protocol's decision. */
#ifndef MR_TLS_H
#define MR_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "ssl": whether a protocol offers TLS (yes), insists on it before
 * authentication (required) or has none (no). */
enum tls_ssl_mode { TLS_SSL_NO, TLS_SSL_YES, TLS_SSL_REQUIRED };

/* "ssl_min_protocol", in the order of the setting's values. */
enum tls_protocol { TLS_PROTO_TLS1_0, TLS_PROTO_TLS1_1, TLS_PROTO_TLS1_2, TLS_PROTO_TLS1_3 };

#define TLS_DEFAULT_PRIORITY "NORMAL:-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1"

/* local_name NAMES { ssl_cert = <file  ssl_key = <file }: the certificate
 * for clients that ask for one of NAMES (blank separated; "*.example.com"
 * matches any name under example.com) with SNI. */
struct tls_local_name {
    char *names;
    char *cert;              /* PEM text (the config reads "<path" into the value) */
    char *key;               /* PEM text */
};

/* The TLS part of struct settings (config.h embeds it as set->tls). */
struct tls_settings {
    enum tls_ssl_mode ssl;
    char *ssl_cert;                  /* PEM: certificate and chain */
    char *ssl_key;                   /* PEM */
    char *ssl_ca;                    /* PEM: CAs for client certificates */
    bool ssl_verify_client_cert;     /* ask clients for a certificate */
    enum tls_protocol ssl_min_protocol;
    char *ssl_priority;              /* GnuTLS priority string */
    char *ssl_client_ca_file;        /* path; with ca_dir empty: system trust */
    char *ssl_client_ca_dir;         /* path */
    char *ssl_client_cert;           /* PEM, sent to servers that ask */
    char *ssl_client_key;            /* PEM */
    struct tls_local_name *local_names;
    unsigned n_local_names;
};

/* Whether GnuTLS accepts a priority string (for the config check). */
bool tls_priority_check(const char *priority, char *err, size_t errsize);

/* The priority string GnuTLS gets: ssl_priority with the versions below
 * ssl_min_protocol removed (and TLS 1.0/1.1 re-enabled when the minimum
 * asks for them). A heap string. */
char *tls_effective_priority(const struct tls_settings *set);

struct tls_server;
struct tls_client;

/* Server context. Needs ssl_cert and ssl_key (and ssl_ca when
 * ssl_verify_client_cert is set); NULL with *error_r (heap) otherwise or
 * when a certificate, key or the priority string does not load. */
struct tls_server *tls_server_new(const struct tls_settings *set, char **error_r);
void tls_server_ref(struct tls_server *t);
/* Sets *t to NULL; the object lives on while sessions use it. */
void tls_server_unref(struct tls_server **t);
/* How long a client gets to complete the handshake (default 30 s). */
#define TLS_SERVER_HANDSHAKE_TIMEOUT_MS 30000
void tls_server_set_handshake_timeout(struct tls_server *t, uint64_t ms);

/* Client context: trust from ssl_client_ca_file / ssl_client_ca_dir, or
 * the system store when both are empty; ssl_client_cert/key when set. */
struct tls_client *tls_client_new(const struct tls_settings *set, char **error_r);
void tls_client_ref(struct tls_client *t);
void tls_client_unref(struct tls_client **t);
/* Session data kept for resumption (entries, oldest dropped first). */
#define TLS_CLIENT_CACHE_SIZE 256
size_t tls_client_cache_count(struct tls_client *t);

/* Free what tls_settings holds (config calls it when freeing settings). */
void tls_settings_free_local_names(struct tls_settings *set);

#endif
