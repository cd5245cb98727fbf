/* settings - the table of scalar settings: names, types, defaults, where
 * each value lives in struct settings; loading a parsed tree into a struct
 * settings; the "key = value" dump.
 *
 * Every scalar setting is one row of setting_defs[]. Defaults are written
 * as config text and go through the same parser as the file does, so a
 * default and a configured value can never be stored differently. The
 * sections (passdb, service, local_name) are in sections.c; the syntax in
 * parser.c. The TLS settings live in set->tls (io/tls.h). */
#include "settings-private.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "mem.h"
#include "str.h"

enum setting_type { SET_STRING, SET_BOOL, SET_UINT, SET_SIZE, SET_MSECS, SET_ENUM };

/* Validates (and for some settings also applies) a string before it is
 * stored; writes the reason into err on failure. */
typedef bool setting_check_fn(struct settings *set, const char *value, char *err, size_t errsize);

struct setting_def {
    const char *name;            /* the key in the file */
    enum setting_type type;
    const char *default_value;   /* as config text */
    size_t offset;               /* in struct settings */
    unsigned min, max;           /* SET_UINT */
    const char *const *enum_values; /* SET_ENUM: NULL-terminated; the index is stored */
    setting_check_fn *check;     /* SET_STRING, optional */
    bool secret;                 /* never shown by the dump (keys) */
};

/* An enum is stored through an unsigned pointer. */
_Static_assert(sizeof(enum lmtp_referrals) == sizeof(unsigned), "enum stored as unsigned");
_Static_assert(sizeof(enum tls_ssl_mode) == sizeof(unsigned), "enum stored as unsigned");
_Static_assert(sizeof(enum tls_protocol) == sizeof(unsigned), "enum stored as unsigned");

static setting_check_fn check_protocols, check_absolute_path, check_lmtp_local,
    apply_trusted_networks;
static setting_check_fn check_optional_path, check_ssl_priority, apply_haproxy_networks;
static setting_check_fn apply_auth_mechanisms, check_local_backend;

static const char *const referrals_values[] = {"follow", "reject", NULL};
/* In the order of enum tls_ssl_mode and enum tls_protocol. */
static const char *const ssl_values[] = {"no", "yes", "required", NULL};
static const char *const ssl_protocol_values[] = {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", NULL};

#define OFF(field) offsetof(struct settings, field)
#define S_STR(name, def, check) {#name, SET_STRING, def, OFF(name), 0, 0, NULL, check}
#define S_BOOL(name, def) {#name, SET_BOOL, def, OFF(name), 0, 0, NULL, NULL}
#define S_UINT(name, def, min, max) {#name, SET_UINT, def, OFF(name), min, max, NULL, NULL}
#define S_SIZE(name, def) {#name, SET_SIZE, def, OFF(name), 0, 0, NULL, NULL}
/* The key drops the field's _ms suffix: "lmtp_client_timeout = 5 mins". */
#define S_MSECS(name, def) {#name, SET_MSECS, def, OFF(name##_ms), 0, 0, NULL, NULL}
#define S_ENUM(name, def, values) {#name, SET_ENUM, def, OFF(name), 0, 0, values, NULL}
/* TLS settings live in set->tls (struct tls_settings, io/tls.h). */
#define S_TLS(name, type, def, values, check, secret) \
    {#name, type, def, OFF(tls.name), 0, 0, values, check, secret}

static const struct setting_def setting_defs[] = {
    S_STR(protocols, "lmtp", check_protocols),
    S_STR(listen, "*, ::", NULL),
    S_STR(hostname, "", NULL), /* "" = gethostname(), see settings_finish() */
    S_STR(base_dir, "/run/mailroute", NULL),
    S_STR(log_path, "", NULL),
    S_STR(run_as_user, "", NULL),
    S_BOOL(log_debug, "no"),
    S_UINT(workers, "0", 0, 1024),
    S_MSECS(shutdown_timeout, "30s"),
    {"login_trusted_networks", SET_STRING, "", OFF(login_trusted_networks_str), 0, 0, NULL,
     apply_trusted_networks},
    {"haproxy_trusted_networks", SET_STRING, "", OFF(haproxy_trusted_networks_str), 0, 0, NULL,
     apply_haproxy_networks},
    S_MSECS(haproxy_timeout, "3s"),
    S_STR(auth_proxy_self, "", NULL),
    S_BOOL(lmtp_proxy, "yes"),
    S_STR(lmtp_local, "", check_lmtp_local),
    S_ENUM(lmtp_referrals, "follow", referrals_values),
    S_STR(recipient_delimiter, "+", NULL),
    S_BOOL(lmtp_add_received_header, "yes"),
    S_UINT(lmtp_max_recipients, "1000", 1, UINT_MAX),
    S_SIZE(lmtp_max_message_size, "0"),
    S_UINT(lmtp_max_line_length, "4096", 512, 1024 * 1024),
    S_UINT(lmtp_max_pipelined, "128", 1, UINT_MAX),
    S_SIZE(lmtp_spool_threshold, "256k"),
    S_STR(mail_temp_dir, "/tmp", check_absolute_path),
    S_MSECS(lmtp_client_timeout, "5 mins"),
    S_MSECS(lmtp_proxy_connect_timeout, "30s"),
    S_MSECS(lmtp_proxy_timeout, "125s"),
    S_MSECS(lmtp_transaction_timeout, "10 mins"),
    S_MSECS(lmtp_backend_idle_timeout, "30s"),
    S_UINT(lmtp_backend_max_idle, "64", 0, UINT_MAX),
    S_MSECS(lmtp_backend_fail_fast, "2s"),
    S_MSECS(delay_until_max, "300s"),
    /* Login proxy (IMAP, POP3, Submission) */
    S_MSECS(auth_failure_delay, "2s"),
    S_BOOL(disable_plaintext_auth, "yes"),
    S_MSECS(login_proxy_timeout, "30s"),
    S_UINT(login_proxy_max_reconnects, "3", 0, 100),
    S_STR(login_greeting, "mailroute ready.", NULL),
    S_STR(imap_local, "", check_local_backend),
    S_STR(pop3_local, "", check_local_backend),
    S_STR(submission_local, "", check_local_backend),
    S_STR(auth_mechanisms, "plain login", apply_auth_mechanisms),
    S_BOOL(imap_id_retain, "no"),
    S_STR(auth_master_user_separator, "", NULL),
    S_UINT(mail_max_userip_connections, "10", 0, UINT_MAX),
    S_STR(login_source_ips, "", NULL),
    S_MSECS(proxy_host_immediate_failure_after, "30s"),
    S_MSECS(auth_penalty_max, "15s"),
    /* auth cache (passdb answers shared by all workers; 0 = off) */
    S_SIZE(auth_cache_size, "0"),
    S_MSECS(auth_cache_ttl, "1 hour"),
    S_MSECS(auth_cache_negative_ttl, "1 hour"),
    /* TLS (certificates and keys hold PEM text: "ssl_cert = </path" reads the file) */
    S_TLS(ssl, SET_ENUM, "no", ssl_values, NULL, false),
    S_TLS(ssl_cert, SET_STRING, "", NULL, NULL, false),
    S_TLS(ssl_key, SET_STRING, "", NULL, NULL, true),
    S_TLS(ssl_ca, SET_STRING, "", NULL, NULL, false),
    S_TLS(ssl_verify_client_cert, SET_BOOL, "no", NULL, NULL, false),
    S_TLS(ssl_min_protocol, SET_ENUM, "TLSv1.2", ssl_protocol_values, NULL, false),
    S_TLS(ssl_priority, SET_STRING, TLS_DEFAULT_PRIORITY, NULL, check_ssl_priority, false),
    S_TLS(ssl_client_ca_file, SET_STRING, "", NULL, check_optional_path, false),
    S_TLS(ssl_client_ca_dir, SET_STRING, "", NULL, check_optional_path, false),
    S_TLS(ssl_client_cert, SET_STRING, "", NULL, NULL, false),
    S_TLS(ssl_client_key, SET_STRING, "", NULL, NULL, true),
};

/* ---- small shared helpers ---- */

const char *settings_excerpt(const char *value, char out[SETTINGS_EXCERPT_SIZE])
{
    enum { KEEP = SETTINGS_EXCERPT_SIZE - 8 };
    log_sanitize(out, KEEP + 1, value);
    if (strlen(value) > KEEP)
        strcat(out, "...");
    return out;
}

bool settings_next_item(const char **sp, const char **item_r, size_t *len_r)
{
    const char *s = *sp + strspn(*sp, " \t,");
    size_t n = strcspn(s, " \t,");
    *sp = s + n;
    *item_r = s;
    *len_r = n;
    return n > 0;
}

/* ---- checks of string settings ---- */

static bool check_protocols(struct settings *set, const char *value, char *err, size_t errsize)
{
    static const char *const known[] = {"lmtp", "imap", "pop3", "submission", "none"};
    (void)set;
    const char *item;
    size_t n;
    while (settings_next_item(&value, &item, &n)) {
        bool ok = false;
        for (size_t i = 0; i < ARRAY_LEN(known) && !ok; i++)
            ok = strlen(known[i]) == n && memcmp(known[i], item, n) == 0;
        if (!ok) {
            snprintf(err, errsize, "unknown protocol '%.*s'", (int)(n > 64 ? 64 : n), item);
            return false;
        }
    }
    return true;
}

/* imap_local & co.: "IP:PORT" (the login goes there as it is). */
static bool check_local_backend(struct settings *set, const char *value, char *err,
                                size_t errsize)
{
    struct addr a;
    (void)set;
    if (value[0] == '\0' || (addr_parse_ip_port(value, &a) && a.port != 0))
        return true;
    snprintf(err, errsize, "expected IP:PORT of a local backend");
    return false;
}

/* In the order of enum sasl_mech (src/sasl/sasl.h): the mask bits match it. */
static bool apply_auth_mechanisms(struct settings *set, const char *value, char *err,
                                  size_t errsize)
{
    static const char *const known[] = {"plain", "login", "oauthbearer", "xoauth2"};
    const char *item;
    size_t n;
    unsigned mask = 0;
    while (settings_next_item(&value, &item, &n)) {
        size_t i = 0;
        while (i < ARRAY_LEN(known) &&
               !(strlen(known[i]) == n && strncasecmp(known[i], item, n) == 0))
            i++;
        if (i == ARRAY_LEN(known)) {
            snprintf(err, errsize, "unknown mechanism '%.*s' (plain, login, oauthbearer, xoauth2)",
                     (int)(n > 64 ? 64 : n), item);
            return false;
        }
        mask |= 1u << i;
    }
    set->auth_mechanisms_mask = mask;
    return true;
}

static bool check_absolute_path(struct settings *set, const char *value, char *err,
                                size_t errsize)
{
    (void)set;
    if (value[0] == '/')
        return true;
    snprintf(err, errsize, "expected an absolute path");
    return false;
}

static bool check_optional_path(struct settings *set, const char *value, char *err,
                                size_t errsize)
{
    return value[0] == '\0' || check_absolute_path(set, value, err, errsize);
}

static bool check_ssl_priority(struct settings *set, const char *value, char *err,
                               size_t errsize)
{
    (void)set;
    return tls_priority_check(value, err, errsize);
}

static bool valid_inet_target(const char *s)
{
    const char *colon = strrchr(s, ':');
    unsigned long long port;
    return colon != NULL && colon != s && str_to_uint(colon + 1, 65535, &port) && port > 0;
}

static bool check_lmtp_local(struct settings *set, const char *value, char *err, size_t errsize)
{
    (void)set;
    /* Case-sensitive, so that users of the value may compare prefixes plainly. */
    bool ok = value[0] == '\0';
    if (strncmp(value, "inet:", 5) == 0)
        ok = valid_inet_target(value + 5);
    else if (strncmp(value, "unix:", 5) == 0)
        ok = value[5] != '\0';
    else if (strncmp(value, "maildir:", 8) == 0)
        ok = value[8] != '\0'; /* relative paths are relative to the working directory */
    if (!ok)
        snprintf(err, errsize, "expected inet:HOST:PORT, unix:PATH or maildir:PATH");
    return ok;
}

/* Keeps the parsed set next to its text; the last assignment wins. */
static bool apply_trusted_networks(struct settings *set, const char *value, char *err,
                                   size_t errsize)
{
    struct cidr_set nets = {NULL, 0};
    const char *error = "invalid network list";
    if (!cidr_set_parse(&nets, value, &error)) {
        cidr_set_free(&nets);
        snprintf(err, errsize, "%s", error);
        return false;
    }
    cidr_set_free(&set->login_trusted_networks);
    set->login_trusted_networks = nets;
    return true;
}

static bool apply_haproxy_networks(struct settings *set, const char *value, char *err,
                                   size_t errsize)
{
    struct cidr_set nets = {NULL, 0};
    const char *error = "invalid network list";
    if (!cidr_set_parse(&nets, value, &error)) {
        cidr_set_free(&nets);
        snprintf(err, errsize, "%s", error);
        return false;
    }
    cidr_set_free(&set->haproxy_trusted_networks);
    set->haproxy_trusted_networks = nets;
    return true;
}

/* ---- parsing one value ---- */

static bool parse_uint(const struct setting_def *def, const char *value, unsigned *out,
                       char *err, size_t errsize)
{
    unsigned long long n;
    if (!str_to_uint(value, ULLONG_MAX, &n)) {
        snprintf(err, errsize, "expected a number");
        return false;
    }
    if (n < def->min || n > def->max) {
        if (n < def->min)
            snprintf(err, errsize, "must be at least %u", def->min);
        else
            snprintf(err, errsize, "must be at most %u", def->max);
        return false;
    }
    *out = (unsigned)n;
    return true;
}

static bool parse_enum(const struct setting_def *def, const char *value, unsigned *out,
                       char *err, size_t errsize)
{
    struct buf expected = BUF_INIT;
    for (unsigned i = 0; def->enum_values[i] != NULL; i++) {
        if (strcmp(value, def->enum_values[i]) == 0) {
            *out = i;
            buf_free(&expected);
            return true;
        }
        buf_printf(&expected, "%s%s", i == 0 ? "" : " or ", def->enum_values[i]);
    }
    snprintf(err, errsize, "expected %s", buf_ptr(&expected));
    buf_free(&expected);
    return false;
}

static bool parse_number(const struct setting_def *def, const char *value, uint64_t *out,
                         char *err, size_t errsize)
{
    unsigned long long n;
    bool ok = def->type == SET_SIZE ? str_to_size(value, &n) : str_to_msecs(value, &n);
    if (!ok) {
        snprintf(err, errsize, "%s", def->type == SET_SIZE ? "expected a size, e.g. 10M"
                                                           : "expected a duration, e.g. 30s");
        return false;
    }
    *out = n;
    return true;
}

static bool parse_string(struct settings *set, const struct setting_def *def, const char *value,
                         char *err, size_t errsize)
{
    if (def->check != NULL && !def->check(set, value, err, errsize))
        return false;
    char **field = (char **)((char *)set + def->offset);
    free(*field);
    *field = xstrdup(value);
    return true;
}

/* Store value into the setting; on failure set is unchanged and err says why. */
static bool parse_setting(struct settings *set, const struct setting_def *def,
                          const char *value, char *err, size_t errsize)
{
    void *field = (char *)set + def->offset;
    switch (def->type) {
    case SET_STRING:
        return parse_string(set, def, value, err, errsize);
    case SET_BOOL:
        if (str_to_bool(value, field))
            return true;
        snprintf(err, errsize, "expected yes or no");
        return false;
    case SET_UINT:
        return parse_uint(def, value, field, err, errsize);
    case SET_SIZE:
    case SET_MSECS:
        return parse_number(def, value, field, err, errsize);
    case SET_ENUM:
        return parse_enum(def, value, field, err, errsize);
    }
    return false;
}

static const struct setting_def *find_setting(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(setting_defs); i++) {
        if (strcmp(setting_defs[i].name, name) == 0)
            return &setting_defs[i];
    }
    return NULL;
}

/* ---- building a struct settings ---- */

static void finish_hostname(struct settings *set)
{
    if (set->hostname[0] != '\0')
        return;
    char name[256];
    if (gethostname(name, sizeof(name)) < 0 || name[0] == '\0')
        snprintf(name, sizeof(name), "localhost");
    name[sizeof(name) - 1] = '\0';
    free(set->hostname);
    set->hostname = xstrdup(name);
}

/* What depends on more than one setting, resolved once all are read. */
static void settings_finish(struct settings *set)
{
    finish_hostname(set);
    settings_finish_listeners(set);
}

struct settings *settings_new_default(void)
{
    struct settings *set = xcalloc(1, sizeof(*set));
    char err[160];
    for (size_t i = 0; i < ARRAY_LEN(setting_defs); i++) {
        const struct setting_def *def = &setting_defs[i];
        if (!parse_setting(set, def, def->default_value, err, sizeof(err)))
            log_panic("config: bad default for %s: %s", def->name, err);
    }
    settings_finish(set);
    return set;
}

static int apply_scalar(struct settings *set, const struct config_node *node, char **error_r)
{
    const struct setting_def *def = find_setting(node->key);
    char err[160], shown[SETTINGS_EXCERPT_SIZE];
    if (def == NULL) {
        *error_r = config_node_error(node, "unknown setting '%s'",
                                     settings_excerpt(node->key, shown));
        return -1;
    }
    if (!parse_setting(set, def, node->value, err, sizeof(err))) {
        *error_r = config_node_error(node, "invalid value for %s: '%s' (%s)", def->name,
                                     settings_excerpt(node->value, shown), err);
        return -1;
    }
    return 0;
}

static int apply_node(struct settings *set, const struct config_node *node, char **error_r)
{
    if (!node->section)
        return apply_scalar(set, node, error_r);
    if (strcmp(node->key, "passdb") == 0)
        return settings_apply_passdb(set, node, error_r);
    if (strcmp(node->key, "service") == 0)
        return settings_apply_service(set, node, error_r);
    if (strcmp(node->key, "local_name") == 0)
        return settings_apply_local_name(set, node, error_r);
    char shown[SETTINGS_EXCERPT_SIZE];
    *error_r = config_node_error(node, "unknown section '%s'", settings_excerpt(node->key, shown));
    return -1;
}

/* Takes the tree. */
static struct settings *settings_from_tree(struct config_tree *tree, const char *path,
                                           char **error_r)
{
    if (tree == NULL)
        return NULL;
    struct settings *set = settings_new_default();
    set->config_path = xstrdup(path);
    int r = 0;
    for (const struct config_node *n = tree->root.children; n != NULL && r == 0; n = n->next)
        r = apply_node(set, n, error_r);
    config_tree_free(&tree);
    if (r < 0) {
        settings_free(&set);
        return NULL;
    }
    settings_finish(set);
    return set;
}

struct settings *settings_load(const char *path, char **error_r)
{
    return settings_from_tree(config_parse_file(path, 0, error_r), path, error_r);
}

struct settings *settings_load_buffer(const char *name, const char *text, size_t len,
                                      unsigned parse_flags, char **error_r)
{
    struct config_tree *tree = config_parse_string(name, text, len, parse_flags, error_r);
    return settings_from_tree(tree, name, error_r);
}

struct settings *settings_load_string(const char *name, const char *text, size_t len,
                                      char **error_r)
{
    return settings_load_buffer(name, text, len, 0, error_r);
}

void settings_free(struct settings **setp)
{
    struct settings *set = *setp;
    if (set == NULL)
        return;
    for (size_t i = 0; i < ARRAY_LEN(setting_defs); i++) {
        if (setting_defs[i].type != SET_STRING)
            continue;
        char *value = *(char **)((char *)set + setting_defs[i].offset);
        if (setting_defs[i].secret && value != NULL)
            mem_wipe(value, strlen(value));
        free(value);
    }
    cidr_set_free(&set->login_trusted_networks);
    cidr_set_free(&set->haproxy_trusted_networks);
    settings_free_sections(set);
    free(set->config_path);
    free(set);
    *setp = NULL;
}

bool settings_has_protocol(const struct settings *set, const char *proto)
{
    const char *s = set->protocols, *item;
    size_t n;
    while (settings_next_item(&s, &item, &n)) {
        if (strlen(proto) == n && memcmp(item, proto, n) == 0)
            return true;
    }
    return false;
}

/* ---- dump ---- */

/* The largest unit that divides the value exactly: "256 k", "10 M", "0". */
static void format_size(uint64_t v, struct buf *out)
{
    static const struct { const char *unit; uint64_t mul; } units[] = {
        {"T", 1ULL << 40}, {"G", 1ULL << 30}, {"M", 1ULL << 20}, {"k", 1ULL << 10},
    };
    for (size_t i = 0; i < ARRAY_LEN(units) && v != 0; i++) {
        if (v % units[i].mul == 0) {
            buf_printf(out, "%llu %s", (unsigned long long)(v / units[i].mul), units[i].unit);
            return;
        }
    }
    buf_printf(out, "%llu", (unsigned long long)v);
}

/* "500 ms", "30 s", "5 min", "2 h", "1 d"; all read back by str_to_msecs(). */
static void format_msecs(uint64_t ms, struct buf *out)
{
    static const struct { const char *unit; uint64_t ms; } units[] = {
        {"d", 86400000}, {"h", 3600000}, {"min", 60000}, {"s", 1000}, {"ms", 1},
    };
    for (size_t i = 0; i < ARRAY_LEN(units) && ms != 0; i++) {
        if (ms % units[i].ms == 0) {
            buf_printf(out, "%llu %s", (unsigned long long)(ms / units[i].ms), units[i].unit);
            return;
        }
    }
    buf_printf(out, "%llu", (unsigned long long)ms);
}

static void format_setting(const struct settings *set, const struct setting_def *def,
                           struct buf *out)
{
    const void *field = (const char *)set + def->offset;
    switch (def->type) {
    case SET_STRING:
        buf_append_str(out, *(char *const *)field);
        break;
    case SET_BOOL:
        buf_append_str(out, *(const bool *)field ? "yes" : "no");
        break;
    case SET_UINT:
        buf_printf(out, "%u", *(const unsigned *)field);
        break;
    case SET_SIZE:
        format_size(*(const uint64_t *)field, out);
        break;
    case SET_MSECS:
        format_msecs(*(const uint64_t *)field, out);
        break;
    case SET_ENUM:
        buf_append_str(out, def->enum_values[*(const unsigned *)field]);
        break;
    }
}

static bool needs_quotes(const char *value)
{
    size_t n = strlen(value);
    if (n == 0)
        return false;
    if (value[0] == ' ' || value[0] == '\t' || value[n - 1] == ' ' || value[n - 1] == '\t')
        return true;
    for (const char *c = value; *c != '\0'; c++) {
        if ((unsigned char)*c < 0x20 || strchr("#\"'\\{}<", *c) != NULL)
            return true;
    }
    return false;
}

static void write_quoted(FILE *out, const char *value)
{
    fputc('"', out);
    for (const char *c = value; *c != '\0'; c++) {
        switch (*c) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default: fputc(*c, out); break;
        }
    }
    fputc('"', out);
}

void settings_write_value(FILE *out, const char *value)
{
    if (needs_quotes(value))
        write_quoted(out, value);
    else
        fputs(value, out);
}

void settings_write_label(FILE *out, const char *label)
{
    /* A label ends at a blank or '=', where a value would not. */
    if (needs_quotes(label) || strpbrk(label, " \t=") != NULL)
        write_quoted(out, label);
    else
        fputs(label, out);
}

static void dump_setting(const struct settings *set, const struct settings *defaults,
                         const struct setting_def *def, FILE *out)
{
    struct buf value = BUF_INIT, deflt = BUF_INIT;
    format_setting(set, def, &value);
    format_setting(defaults, def, &deflt);
    /* format_setting() may append nothing (an empty string). */
    const char *v = value.data != NULL ? value.data : "";
    const char *d = deflt.data != NULL ? deflt.data : "";
    if (defaults == set || strcmp(v, d) != 0) {
        fprintf(out, "%s = ", def->name);
        /* Quoted, so that the dump still loads back to the same dump. */
        if (def->secret && v[0] != '\0')
            fputs("\"# hidden\"", out);
        else if (def->type == SET_STRING)
            settings_write_value(out, v);
        else
            fputs(v, out);
        fputc('\n', out);
    }
    buf_free(&value);
    buf_free(&deflt);
}

void settings_dump(const struct settings *set, FILE *out, bool nondefault_only)
{
    struct settings *defaults = settings_new_default();
    for (size_t i = 0; i < ARRAY_LEN(setting_defs); i++)
        dump_setting(set, nondefault_only ? defaults : set, &setting_defs[i], out);
    settings_free(&defaults);
    settings_dump_sections(set, out, nondefault_only);
}
