/* sql-conf - the SQL passdb's args file (Dovecot's dovecot-sql.conf.ext) and
 * its "connect" string, parsed from memory.
 *
 * File syntax, as Dovecot reads it: "key = value" lines; blank lines and
 * lines starting with '#' are skipped; a line ending in '\' continues on
 * the next one (the two parts joined by one space, the next line's leading
 * blanks dropped); a value wholly inside "..." or '...' loses its quotes
 * ("..." also its backslash escapes). '#' after a value is part of the value:
 * SQL may hold it. Keys: driver (only "mysql"), connect, password_query,
 * default_pass_scheme; user_query, iterate_query and userdb_warning_disable
 * are accepted and ignored (mailroute has no userdb). Any other key is an
 * error, as in Dovecot.
 *
 * connect: space-separated key=value pairs, no spaces inside a value unless
 * it is double-quoted. host= may repeat (one pool per host; a value starting
 * with '/' is a UNIX socket); port, dbname, user, password, client_flags,
 * connect_timeout, read_timeout, write_timeout, ssl_ca, ssl_ca_path,
 * ssl_cert, ssl_key, ssl_cipher, ssl_verify_server_cert, option_file,
 * option_group, maxconns (also spelled max_connections), and mailroute's
 * query_timeout. Timeouts are seconds, or a duration with a unit ("500ms").
 *
 * This module reads no files and knows nothing of the connector: the
 * fuzzer and the unit tests drive it directly. */
#ifndef MR_PASSDB_SQL_CONF_H
#define MR_PASSDB_SQL_CONF_H

#include <stdbool.h>
#include <stddef.h>

#define SQL_DEFAULT_MAX_CONNECTIONS 5
#define SQL_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define SQL_DEFAULT_QUERY_TIMEOUT_MS 30000

struct sql_connect {
    char **hosts;                /* in the order given; never empty after parsing */
    size_t n_hosts;
    unsigned port;               /* 0: the connector's default (3306) */
    char *dbname, *user, *password; /* NULL when not given */
    char *ssl_ca, *ssl_ca_path, *ssl_cert, *ssl_key, *ssl_cipher;
    bool ssl_verify_server_cert;
    char *option_file, *option_group;
    unsigned long client_flags;
    unsigned max_connections;    /* per host, per worker */
    unsigned connect_timeout_ms; /* TCP connect plus handshake */
    unsigned query_timeout_ms;   /* from submission to result, retries included */
};

struct sql_conf {
    char *driver;                /* "mysql" */
    char *password_query;
    char *default_pass_scheme;   /* NULL: not given */
    struct sql_connect connect;
};

/* Parse the args file's text (len bytes, need not end in NUL). name is
 * used in errors: "NAME:LINE: what is wrong". NULL + *error_r (heap) when
 * the text is not valid. */
struct sql_conf *sql_conf_parse(const char *text, size_t len, const char *name,
                                char **error_r);
void sql_conf_free(struct sql_conf **conf);

/* Parse a connect string into *c (zeroed first; free with
 * sql_connect_clear()). false + *error_r (heap) on error. */
bool sql_connect_parse(struct sql_connect *c, const char *str, char **error_r);
void sql_connect_clear(struct sql_connect *c);

#endif
