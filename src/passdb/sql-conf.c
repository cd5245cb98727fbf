/* sql-conf - parsing the SQL passdb's args file and connect string (see
 * sql-conf.h for the syntax). Pure text in, struct sql_conf out. */
#include "sql-conf.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "mem.h"
#include "str.h"

/* The query Dovecot uses when the file has none. */
#define SQL_DEFAULT_PASSWORD_QUERY                                                   \
    "SELECT username, domain, password FROM users WHERE username = '%n' AND domain = '%d'"

/* Longest value shown in an error message. */
#define SHOWN_MAX 64

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static void replace(char **field, const char *value)
{
    free(*field);
    *field = xstrdup(value);
}

static void free_secret(char **s)
{
    if (*s != NULL) {
        mem_wipe(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

/* ---- connect string ---- */

void sql_connect_clear(struct sql_connect *c)
{
    for (size_t i = 0; i < c->n_hosts; i++)
        free(c->hosts[i]);
    free(c->hosts);
    free(c->dbname);
    free(c->user);
    free_secret(&c->password);
    free(c->ssl_ca);
    free(c->ssl_ca_path);
    free(c->ssl_cert);
    free(c->ssl_key);
    free(c->ssl_cipher);
    free(c->option_file);
    free(c->option_group);
    memset(c, 0, sizeof(*c));
}

static bool parse_timeout(const char *value, unsigned *out)
{
    unsigned long long ms;
    if (!str_to_msecs(value, &ms) || ms == 0 || ms > 24ULL * 3600 * 1000)
        return false;
    *out = (unsigned)ms;
    return true;
}

/* A whole number in [min, max]. */
static bool parse_number(const char *value, unsigned long long min, unsigned long long max,
                         unsigned long long *out)
{
    return str_to_uint(value, max, out) && *out >= min;
}

/* Options that only store a string. */
static char **string_option(struct sql_connect *c, const char *key)
{
    static const struct { const char *key; size_t offset; } opts[] = {
        {"dbname", offsetof(struct sql_connect, dbname)},
        {"user", offsetof(struct sql_connect, user)},
        {"password", offsetof(struct sql_connect, password)},
        {"ssl_ca", offsetof(struct sql_connect, ssl_ca)},
        {"ssl_ca_path", offsetof(struct sql_connect, ssl_ca_path)},
        {"ssl_cert", offsetof(struct sql_connect, ssl_cert)},
        {"ssl_key", offsetof(struct sql_connect, ssl_key)},
        {"ssl_cipher", offsetof(struct sql_connect, ssl_cipher)},
        {"option_file", offsetof(struct sql_connect, option_file)},
        {"option_group", offsetof(struct sql_connect, option_group)},
    };
    for (size_t i = 0; i < ARRAY_LEN(opts); i++) {
        if (str_eq(opts[i].key, key))
            return (char **)((char *)c + opts[i].offset);
    }
    return NULL;
}

static void add_host(struct sql_connect *c, const char *host)
{
    c->hosts = xrealloc(c->hosts, (c->n_hosts + 1) * sizeof(*c->hosts));
    c->hosts[c->n_hosts++] = xstrdup(host);
}

enum option_status { OPTION_SET, OPTION_BAD_VALUE, OPTION_UNKNOWN };

/* Numeric and boolean options. */
static enum option_status number_option(struct sql_connect *c, const char *key,
                                        const char *value)
{
    unsigned long long n = 0;
    unsigned ignored;
    bool ok;
    if (str_eq(key, "port")) {
        ok = parse_number(value, 1, 65535, &n);
        c->port = ok ? (unsigned)n : c->port;
    } else if (str_eq(key, "maxconns") || str_eq(key, "max_connections")) {
        ok = parse_number(value, 1, 1000, &n);
        c->max_connections = ok ? (unsigned)n : c->max_connections;
    } else if (str_eq(key, "client_flags")) {
        ok = parse_number(value, 0, 0xffffffffULL, &n);
        c->client_flags = ok ? (unsigned long)n : c->client_flags;
    } else if (str_eq(key, "connect_timeout")) {
        ok = parse_timeout(value, &c->connect_timeout_ms);
    } else if (str_eq(key, "query_timeout") || str_eq(key, "read_timeout")) {
        ok = parse_timeout(value, &c->query_timeout_ms);
    } else if (str_eq(key, "write_timeout")) {
        ok = parse_timeout(value, &ignored); /* the query timeout covers writes too */
    } else if (str_eq(key, "ssl_verify_server_cert")) {
        ok = str_to_bool(value, &c->ssl_verify_server_cert);
    } else {
        return OPTION_UNKNOWN;
    }
    return ok ? OPTION_SET : OPTION_BAD_VALUE;
}

static bool apply_option(struct sql_connect *c, const char *key, const char *value,
                         char **error_r)
{
    char **field = string_option(c, key);
    if (str_eq(key, "host")) {
        if (*value == '\0') {
            *error_r = xstrdup("connect: empty host=");
            return false;
        }
        add_host(c, value);
        return true;
    }
    if (field != NULL) {
        if (field == &c->password)
            free_secret(field);
        replace(field, value);
        return true;
    }
    enum option_status st = number_option(c, key, value);
    if (st == OPTION_SET)
        return true;
    if (st == OPTION_BAD_VALUE) {
        /* Never echo a value: it might be a password typed in the wrong key. */
        *error_r = xasprintf("connect: invalid value for %.*s", SHOWN_MAX, key);
    } else {
        *error_r = xasprintf("connect: unknown setting '%.*s'", SHOWN_MAX, key);
    }
    return false;
}

/* A double-quoted value at s (after the '"'): unescaped into out. Returns
 * the position after the closing quote, NULL when there is none. */
static const char *read_quoted(const char *s, struct buf *out)
{
    for (; *s != '\0' && *s != '"'; s++) {
        if (*s == '\\' && s[1] != '\0')
            s++;
        buf_append(out, s, 1);
    }
    return *s == '"' ? s + 1 : NULL;
}

/* One "key=value" token at s; returns the position after it or NULL. */
static const char *parse_token(struct sql_connect *c, const char *s, char **error_r)
{
    size_t keylen = strcspn(s, "= \t");
    if (keylen == 0 || s[keylen] != '=') {
        *error_r = xasprintf("connect: expected key=value, got '%.*s'",
                             (int)(keylen < SHOWN_MAX ? keylen : SHOWN_MAX), s);
        return NULL;
    }
    char *key = xstrndup(s, keylen);
    struct buf value = BUF_INIT;
    s += keylen + 1;
    if (*s == '"') {
        s = read_quoted(s + 1, &value);
        if (s == NULL)
            *error_r = xasprintf("connect: unterminated quote in %.*s=", SHOWN_MAX, key);
    } else {
        size_t n = strcspn(s, " \t");
        buf_append(&value, s, n);
        s += n;
    }
    buf_append(&value, "", 0);
    if (s != NULL && !apply_option(c, key, buf_ptr(&value), error_r))
        s = NULL;
    buf_free_wipe(&value);
    free(key);
    return s;
}

bool sql_connect_parse(struct sql_connect *c, const char *str, char **error_r)
{
    memset(c, 0, sizeof(*c));
    c->max_connections = SQL_DEFAULT_MAX_CONNECTIONS;
    c->connect_timeout_ms = SQL_DEFAULT_CONNECT_TIMEOUT_MS;
    c->query_timeout_ms = SQL_DEFAULT_QUERY_TIMEOUT_MS;
    const char *s = str;
    while (*s != '\0') {
        if (is_blank(*s)) {
            s++;
            continue;
        }
        s = parse_token(c, s, error_r);
        if (s == NULL) {
            sql_connect_clear(c);
            return false;
        }
    }
    if (c->n_hosts == 0)
        add_host(c, "localhost");
    return true;
}

/* ---- the args file ---- */

struct conf_parser {
    struct sql_conf *conf;
    const char *name;
    unsigned line;            /* where the current logical line started */
    char *connect;            /* the connect string, parsed at the end */
    unsigned connect_line;
    char **error_r;
};

static bool fail(struct conf_parser *p, unsigned line, const char *what, const char *detail)
{
    *p->error_r = xasprintf("%s:%u: %s%s%.*s%s", p->name, line, what,
                            detail != NULL ? " '" : "", SHOWN_MAX,
                            detail != NULL ? detail : "", detail != NULL ? "'" : "");
    return false;
}

/* "..." (with backslash escapes) or '...' around the whole value: removed. */
static char *unquote(const char *value)
{
    size_t n = strlen(value);
    if (n < 2 || (value[0] != '"' && value[0] != '\'') || value[n - 1] != value[0])
        return xstrdup(value);
    if (value[0] == '\'')
        return xstrndup(value + 1, n - 2);
    struct buf out = BUF_INIT;
    for (size_t i = 1; i < n - 1; i++) {
        char c = value[i];
        if (c == '\\' && i + 1 < n - 1) {
            c = value[++i];
            c = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
        }
        buf_append(&out, &c, 1);
    }
    buf_append(&out, "", 0);
    return buf_steal(&out);
}

static bool set_driver(struct conf_parser *p, const char *value)
{
    if (!str_eq(value, "mysql"))
        return fail(p, p->line, "only driver = mysql is supported, not", value);
    replace(&p->conf->driver, value);
    return true;
}

static bool apply_key(struct conf_parser *p, const char *key, const char *value)
{
    static const char *const ignored[] = {"user_query", "iterate_query",
                                          "userdb_warning_disable"};
    struct sql_conf *conf = p->conf;
    if (str_eq(key, "driver"))
        return set_driver(p, value);
    if (str_eq(key, "connect")) {
        free_secret(&p->connect);
        p->connect = xstrdup(value);
        p->connect_line = p->line;
        return true;
    }
    if (str_eq(key, "password_query")) {
        replace(&conf->password_query, value);
        return true;
    }
    if (str_eq(key, "default_pass_scheme")) {
        replace(&conf->default_pass_scheme, value);
        return true;
    }
    for (size_t i = 0; i < ARRAY_LEN(ignored); i++) {
        if (str_eq(key, ignored[i]))
            return true;
    }
    return fail(p, p->line, "unknown setting", key);
}

/* One logical line (continuations joined), not blank, not a comment. */
static bool parse_line(struct conf_parser *p, char *line)
{
    size_t keylen = strcspn(line, "= \t");
    if (line[0] == '!')
        return fail(p, p->line, "!include is not supported in the SQL args file", NULL);
    char *rest = line + keylen;
    rest += strspn(rest, " \t");
    if (keylen == 0 || *rest != '=')
        return fail(p, p->line, "expected 'key = value', got", line);
    line[keylen] = '\0';
    rest++;
    rest += strspn(rest, " \t");
    char *value = unquote(rest);
    bool ok = apply_key(p, line, value);
    mem_wipe(value, strlen(value)); /* the connect string holds a password */
    free(value);
    return ok;
}

/* Trailing blanks (and a CR) off; returns the new length. */
static size_t trim_right(const char *s, size_t n)
{
    while (n > 0 && (is_blank(s[n - 1]) || s[n - 1] == '\r'))
        n--;
    return n;
}

/* Feed one physical line; joins continuations in *logical. */
static bool feed_line(struct conf_parser *p, const char *s, size_t n, unsigned lineno,
                      struct buf *logical)
{
    bool continuing = buf_used(logical) > 0;
    while (n > 0 && is_blank(*s)) {
        s++;
        n--;
    }
    if (!continuing && (n == 0 || *s == '#'))
        return true;
    if (!continuing)
        p->line = lineno;
    n = trim_right(s, n);
    if (n > 0 && s[n - 1] == '\\') {
        n = trim_right(s, n - 1);
        buf_append(logical, s, n);
        buf_append(logical, " ", 1);
        return true;
    }
    buf_append(logical, s, n);
    buf_append(logical, "", 0);
    char *line = buf_steal(logical);
    bool ok = parse_line(p, line);
    mem_wipe(line, strlen(line));
    free(line);
    return ok;
}

static bool parse_text(struct conf_parser *p, const char *text, size_t len)
{
    struct buf logical = BUF_INIT;
    unsigned lineno = 0;
    bool ok = true;
    if (memchr(text, '\0', len) != NULL)
        return fail(p, 1, "the file contains a NUL byte", NULL);
    for (size_t pos = 0; pos < len && ok;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl != NULL ? (size_t)(nl - (text + pos)) : len - pos;
        ok = feed_line(p, text + pos, n, ++lineno, &logical);
        pos += n + 1;
    }
    if (ok && buf_used(&logical) > 0) /* the file ended after a '\' */
        ok = feed_line(p, "", 0, lineno, &logical);
    buf_free_wipe(&logical);
    return ok;
}

static bool finish(struct conf_parser *p)
{
    struct sql_conf *conf = p->conf;
    char *error = NULL;
    if (conf->driver == NULL)
        return fail(p, 1, "driver = mysql is missing", NULL);
    if (p->connect == NULL)
        return fail(p, 1, "connect is missing", NULL);
    if (!sql_connect_parse(&conf->connect, p->connect, &error)) {
        fail(p, p->connect_line, error, NULL);
        free(error);
        return false;
    }
    if (conf->password_query == NULL)
        conf->password_query = xstrdup(SQL_DEFAULT_PASSWORD_QUERY);
    if (*conf->password_query == '\0')
        return fail(p, 1, "password_query is empty", NULL);
    return true;
}

struct sql_conf *sql_conf_parse(const char *text, size_t len, const char *name,
                                char **error_r)
{
    struct conf_parser p = {
        .conf = xcalloc(1, sizeof(struct sql_conf)),
        .name = name,
        .error_r = error_r,
    };
    bool ok = parse_text(&p, text, len) && finish(&p);
    free_secret(&p.connect);
    if (!ok)
        sql_conf_free(&p.conf);
    return p.conf;
}

void sql_conf_free(struct sql_conf **confp)
{
    struct sql_conf *conf = *confp;
    if (conf == NULL)
        return;
    *confp = NULL;
    free(conf->driver);
    free(conf->password_query);
    free(conf->default_pass_scheme);
    sql_connect_clear(&conf->connect);
    free(conf);
}
