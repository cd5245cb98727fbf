/* config - mailroute's configuration: Dovecot-style syntax, a typed settings
 * table, validation with file:line errors, and the -n dump.
 *
 * Syntax (as Dovecot 2.3): "key = value" lines; "#" comments; values may be
 * quoted with "..." or '...'; "name [label] {" opens a section, "}" closes it;
 * "!include GLOB" and "!include_try GLOB" (relative to the including file's
 * directory); "key = <path" reads the value from a file (used for TLS keys).
 * A trailing backslash continues a line.
 *
 * Every setting is a row in one table (config/settings.c): name, type,
 * default, and where it is stored in struct settings. An unknown key, an
 * unknown section or a bad value is an error "FILE:LINE: what is wrong".
 * The settings object is immutable once loaded and shared read-only by all
 * workers (reload builds a new one). */
#ifndef MR_CONFIG_H
#define MR_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "addr.h"
#include "fields.h"
#include "tls.h"

enum listener_kind { LISTENER_INET, LISTENER_UNIX };

/* service NAME { inet_listener LABEL { address port ssl haproxy }
 *                unix_listener LABEL { path mode } } */
struct listener_settings {
    char *service;           /* "lmtp", later "imap", "pop3", "submission" */
    char *label;             /* listener name, for logs */
    enum listener_kind kind;
    char *address;           /* inet: space/comma list; NULL = the global "listen" */
    unsigned port;           /* inet */
    char *path;              /* unix */
    unsigned mode;           /* unix, octal in the file; default 0666 */
    bool ssl;                /* implicit TLS (issue 4) */
    bool haproxy;            /* PROXY protocol expected (issue 5) */
};

/* passdb { driver = passwd-file|static|sql  args = ...
 *          default_fields = k=v ...  override_fields = k=v ... } */
struct passdb_settings {
    char *driver;
    char *args;
    struct fields default_fields;
    struct fields override_fields;
    char *name;              /* "passdb NAME { }" label, NULL without one (added by cfg) */
    bool master;             /* master = yes: only for master users ("user*master") */
    bool pass;               /* pass = yes: accepted for Dovecot configs; the user is
                              * always looked up after its master (routing needs it) */
};

enum lmtp_referrals { LMTP_REFERRALS_FOLLOW, LMTP_REFERRALS_REJECT };

struct settings {
    char *config_path;           /* the top file, as given */

    /* general */
    char *protocols;             /* "lmtp" (space separated) */
    char *listen;                /* default "*, ::" ; list of addresses */
    char *hostname;              /* our name in LHLO/EHLO/Received; default gethostname() */
    char *base_dir;              /* runtime dir (control socket later); default /run/mailroute */
    char *log_path;              /* "" = stderr, "syslog", or a file */
    char *run_as_user;           /* after binding, become this user; "" = stay */
    bool log_debug;
    unsigned workers;            /* 0 = number of CPUs */
    uint64_t shutdown_timeout_ms;/* SIGTERM: time open transactions get to finish; 30 s */

    /* networks and identity */
    struct cidr_set login_trusted_networks; /* parsed from a list */
    char *login_trusted_networks_str;
    struct cidr_set haproxy_trusted_networks; /* who may send a PROXY header */
    char *haproxy_trusted_networks_str;
    uint64_t haproxy_timeout_ms;          /* time for the PROXY header; 3 s */
    char *auth_proxy_self;       /* IPs or names, resolved at start-up */

    /* passdb (in order; the first that knows the user answers) */
    struct passdb_settings *passdbs;
    unsigned n_passdbs;

    /* LMTP router */
    bool lmtp_proxy;             /* default yes: route recipients by passdb */
    char *lmtp_local;            /* "", "inet:HOST:PORT", "unix:/path", "maildir:/path/%d/%n" */
    enum lmtp_referrals lmtp_referrals; /* follow|reject */
    char *recipient_delimiter;   /* default "+" */
    bool lmtp_add_received_header; /* default yes */
    unsigned lmtp_max_recipients;  /* per transaction; default 1000 */
    uint64_t lmtp_max_message_size;/* SIZE; default 0 = unlimited... see settings.c */
    unsigned lmtp_max_line_length; /* command line limit; default 4096 */
    unsigned lmtp_max_pipelined;   /* queued commands before input pauses; default 128 */
    uint64_t lmtp_spool_threshold; /* body bytes kept in memory before a temp file; 256k */
    char *mail_temp_dir;           /* default /tmp */
    uint64_t lmtp_client_timeout_ms;      /* idle client; default 5 min */
    uint64_t lmtp_proxy_connect_timeout_ms; /* default 30 s */
    uint64_t lmtp_proxy_timeout_ms;       /* per backend reply; default 125 s (proxy_timeout field overrides) */
    uint64_t lmtp_transaction_timeout_ms; /* whole DATA wait; default 10 min */
    uint64_t lmtp_backend_idle_timeout_ms;/* pooled idle connection; default 30 s */
    unsigned lmtp_backend_max_idle;       /* pooled connections per target per worker; default 64 */
    uint64_t lmtp_backend_fail_fast_ms;   /* after a connect failure, fail at once; default 2 s */
    uint64_t delay_until_max_ms;          /* longest delay_until hold; default 300 s */

    /* login proxy */
    uint64_t auth_failure_delay_ms;       /* failed logins answered after this; 2 s */
    bool disable_plaintext_auth;          /* no LOGIN/PLAIN before TLS unless trusted/loopback */
    uint64_t login_proxy_timeout_ms;      /* connect + backend login; 30 s (proxy_timeout overrides) */
    unsigned login_proxy_max_reconnects;  /* on connect failures, 1 s apart; 3 */
    char *login_greeting;
    char *imap_local;                     /* "HOST:PORT" of a local IMAP backend, "" = none */
    char *pop3_local;                     /* the same for POP3 */
    char *submission_local;               /* and for Submission */
    char *auth_mechanisms;                /* "plain login" (+ oauthbearer xoauth2) */
    unsigned auth_mechanisms_mask;        /* bit (1 << enum sasl_mech) per mechanism */
    bool imap_id_retain;                  /* pass the client's ID pairs to the backend */
    char *auth_master_user_separator;     /* "user*master" logins; "" = off */
    unsigned mail_max_userip_connections; /* sessions per user+client IP; 0 = no limit; 10 */
    char *login_source_ips;               /* bind addresses, round robin; "?" keeps the local ones */
    uint64_t proxy_host_immediate_failure_after_ms; /* backend down this long: fail at once; 30 s */
    uint64_t auth_penalty_max_ms;         /* per-IP failure penalty cap (0 = off); 15 s */

    /* auth cache (src/passdb/auth-cache.h): bytes, 0 = off; TTLs of found
     * and of unknown users (0 = unknown users are not cached) */
    uint64_t auth_cache_size;
    uint64_t auth_cache_ttl_ms;           /* default 1 hour */
    uint64_t auth_cache_negative_ttl_ms;  /* default 1 hour */

    struct listener_settings *listeners;
    unsigned n_listeners;

    /* TLS: ssl, ssl_cert, ssl_key, ssl_ca, ssl_verify_client_cert,
     * ssl_min_protocol, ssl_priority, ssl_client_*, local_name sections.
     * Build contexts with tls_server_new(&set->tls) / tls_client_new(). */
    struct tls_settings tls;
};

/* Load and validate a config file. On error returns NULL and sets *error_r
 * to a heap string "FILE:LINE: message" (free() it). */
struct settings *settings_load(const char *path, char **error_r);
/* Like settings_load(), from text in memory; name stands for the file in
 * errors, and relative "!include" and "<file" paths resolve against the
 * current directory. (Added by cfg: the fuzzer's entry point.) */
struct settings *settings_load_string(const char *name, const char *text, size_t len,
                                      char **error_r);
/* All defaults, no listeners, no passdb (tests build on this). */
struct settings *settings_new_default(void);
void settings_free(struct settings **set);
/* Print "key = value" lines (sections nested as in the file); only the
 * settings that differ from their defaults when nondefault_only. */
void settings_dump(const struct settings *set, FILE *out, bool nondefault_only);
/* True when the protocol name is in "protocols". */
bool settings_has_protocol(const struct settings *set, const char *proto);

#endif
