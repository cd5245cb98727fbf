/* sections - the "passdb", "service" and "local_name" sections of the config:
 * checking them, storing them in struct settings, dumping and freeing them.
 *
 *   passdb [NAME] { driver = passwd-file|static|sql  args = ...
 *                   default_fields = k=v ...  override_fields = k=v ... }
 *   service lmtp|imap|pop3|submission (or imap-login etc.) {
 *     inet_listener LABEL { address = ...  port = N  ssl = yes|no  haproxy = yes|no }
 *     unix_listener LABEL { path = ...  mode = 0666 }
 *   }
 *   local_name NAMES { ssl_cert = <file  ssl_key = <file }   (TLS: SNI)
 *
 * Whether a passdb's args make sense is the passdb driver's business, not
 * this file's. */
#include "settings-private.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "mem.h"
#include "str.h"

static void replace_str(char **field, const char *value)
{
    free(*field);
    *field = xstrdup(value);
}

static int unknown_in_section(const struct config_node *node, const char *section,
                              char **error_r)
{
    char shown[SETTINGS_EXCERPT_SIZE];
    *error_r = config_node_error(node, "unknown %s '%s' in %s section",
                                 node->section ? "section" : "setting",
                                 settings_excerpt(node->key, shown), section);
    return -1;
}

static int invalid_value(const struct config_node *node, const char *why, char **error_r)
{
    char shown[SETTINGS_EXCERPT_SIZE];
    *error_r = config_node_error(node, "invalid value for %s: '%s' (%s)", node->key,
                                 settings_excerpt(node->value, shown), why);
    return -1;
}

/* A section's label, NULL when it has none (an empty label counts as none). */
static char *label_dup(const struct config_node *node)
{
    return node->value != NULL && node->value[0] != '\0' ? xstrdup(node->value) : NULL;
}

/* ---- passdb ---- */

static const char *const passdb_drivers[] = {"passwd-file", "static", "sql"};

/* "k=v k2 k3=v3": the last assignment of a setting replaces the whole list. */
static int parse_fields(const struct config_node *node, struct fields *f, char **error_r)
{
    const char *s = node->value;
    fields_clear(f);
    while (*(s += strspn(s, " \t")) != '\0') {
        size_t n = strcspn(s, " \t");
        if (s[0] == '=')
            return invalid_value(node, "a field has no name", error_r);
        char *pair = xstrndup(s, n);
        fields_add_pair(f, pair);
        free(pair);
        s += n;
    }
    return 0;
}

static int passdb_driver(struct passdb_settings *ps, const struct config_node *node,
                         char **error_r)
{
    for (size_t i = 0; i < ARRAY_LEN(passdb_drivers); i++) {
        if (strcmp(node->value, passdb_drivers[i]) == 0) {
            replace_str(&ps->driver, node->value);
            return 0;
        }
    }
    return invalid_value(node, "expected passwd-file, static or sql", error_r);
}

static int section_bool(const struct config_node *node, bool *out, char **error_r)
{
    if (str_to_bool(node->value, out))
        return 0;
    return invalid_value(node, "expected yes or no", error_r);
}

static int passdb_setting(struct passdb_settings *ps, const struct config_node *node,
                          char **error_r)
{
    if (node->section)
        return unknown_in_section(node, "passdb", error_r);
    if (strcmp(node->key, "driver") == 0)
        return passdb_driver(ps, node, error_r);
    if (strcmp(node->key, "args") == 0) {
        replace_str(&ps->args, node->value);
        return 0;
    }
    if (strcmp(node->key, "master") == 0)
        return section_bool(node, &ps->master, error_r);
    if (strcmp(node->key, "pass") == 0)
        return section_bool(node, &ps->pass, error_r);
    if (strcmp(node->key, "default_fields") == 0)
        return parse_fields(node, &ps->default_fields, error_r);
    if (strcmp(node->key, "override_fields") == 0)
        return parse_fields(node, &ps->override_fields, error_r);
    return unknown_in_section(node, "passdb", error_r);
}

static void passdb_settings_clear(struct passdb_settings *ps)
{
    free(ps->driver);
    free(ps->args);
    free(ps->name);
    fields_free(&ps->default_fields);
    fields_free(&ps->override_fields);
}

int settings_apply_passdb(struct settings *set, const struct config_node *section,
                          char **error_r)
{
    struct passdb_settings ps = {NULL, xstrdup(""), FIELDS_INIT, FIELDS_INIT, label_dup(section),
                                 false, false};
    for (const struct config_node *n = section->children; n != NULL; n = n->next) {
        if (passdb_setting(&ps, n, error_r) < 0) {
            passdb_settings_clear(&ps);
            return -1;
        }
    }
    if (ps.driver == NULL) {
        *error_r = config_node_error(section, "passdb section has no driver");
        passdb_settings_clear(&ps);
        return -1;
    }
    set->passdbs = xrealloc(set->passdbs, (set->n_passdbs + 1) * sizeof(*set->passdbs));
    set->passdbs[set->n_passdbs++] = ps;
    return 0;
}

/* ---- service and listeners ---- */

/* Dovecot runs IMAP logins in "imap-login"; mailroute has one service per protocol. */
static const char *service_name(const char *name)
{
    static const char *const names[][2] = {
        {"lmtp", "lmtp"},           {"imap", "imap"},
        {"imap-login", "imap"},     {"pop3", "pop3"},
        {"pop3-login", "pop3"},     {"submission", "submission"},
        {"submission-login", "submission"},
    };
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (strcmp(name, names[i][0]) == 0)
            return names[i][1];
    }
    return NULL;
}


static int inet_setting(struct listener_settings *l, const struct config_node *node,
                        bool *have_port, char **error_r)
{
    unsigned long long port;
    if (node->section)
        return unknown_in_section(node, "inet_listener", error_r);
    if (strcmp(node->key, "address") == 0) {
        free(l->address);
        /* Empty means "use the global listen setting", as in Dovecot. */
        l->address = node->value[0] != '\0' ? xstrdup(node->value) : NULL;
        return 0;
    }
    if (strcmp(node->key, "port") == 0) {
        if (!str_to_uint(node->value, 65535, &port))
            return invalid_value(node, "expected a port number, 1-65535 (0 disables)", error_r);
        l->port = (unsigned)port;
        *have_port = true;
        return 0;
    }
    if (strcmp(node->key, "ssl") == 0)
        return section_bool(node, &l->ssl, error_r);
    if (strcmp(node->key, "haproxy") == 0)
        return section_bool(node, &l->haproxy, error_r);
    return unknown_in_section(node, "inet_listener", error_r);
}

static bool parse_octal_mode(const char *s, unsigned *out)
{
    unsigned mode = 0;
    if (*s == '\0' || strlen(s) > 5)
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '7')
            return false;
        mode = mode * 8 + (unsigned)(*s - '0');
    }
    if (mode > 07777)
        return false;
    *out = mode;
    return true;
}

static int unix_setting(struct listener_settings *l, const struct config_node *node,
                        char **error_r)
{
    if (node->section)
        return unknown_in_section(node, "unix_listener", error_r);
    if (strcmp(node->key, "path") == 0) {
        if (node->value[0] == '\0')
            return invalid_value(node, "expected a path", error_r);
        replace_str(&l->path, node->value);
        return 0;
    }
    if (strcmp(node->key, "mode") == 0) {
        if (!parse_octal_mode(node->value, &l->mode))
            return invalid_value(node, "expected an octal mode such as 0660", error_r);
        return 0;
    }
    return unknown_in_section(node, "unix_listener", error_r);
}

static void listener_clear(struct listener_settings *l)
{
    free(l->service);
    free(l->label);
    free(l->address);
    free(l->path);
}

/* A listener is complete: inet needs a port, unix a path. */
static int listener_check(const struct listener_settings *l, const struct config_node *section,
                          bool have_port, char **error_r)
{
    if (l->kind == LISTENER_INET && !have_port) {
        *error_r = config_node_error(section, "inet_listener %s: port is required", l->label);
        return -1;
    }
    if (l->kind == LISTENER_UNIX && l->path == NULL) {
        *error_r = config_node_error(section, "unix_listener %s: path is required", l->label);
        return -1;
    }
    return 0;
}

static int apply_listener(struct settings *set, const char *service,
                          const struct config_node *section, enum listener_kind kind,
                          char **error_r)
{
    struct listener_settings l = {xstrdup(service), label_dup(section), kind};
    if (l.label == NULL)
        l.label = xstrdup(service);
    l.mode = 0666;
    bool have_port = false;
    int r = 0;
    for (const struct config_node *n = section->children; n != NULL && r == 0; n = n->next) {
        r = kind == LISTENER_INET ? inet_setting(&l, n, &have_port, error_r)
                                  : unix_setting(&l, n, error_r);
    }
    if (r == 0)
        r = listener_check(&l, section, have_port, error_r);
    /* "port = 0" turns a listener off, as in Dovecot: it is not stored. */
    if (r < 0 || (kind == LISTENER_INET && l.port == 0)) {
        listener_clear(&l);
        return r;
    }
    set->listeners = xrealloc(set->listeners, (set->n_listeners + 1) * sizeof(*set->listeners));
    set->listeners[set->n_listeners++] = l;
    return 0;
}

static int service_child(struct settings *set, const char *service,
                         const struct config_node *node, char **error_r)
{
    if (node->section && strcmp(node->key, "inet_listener") == 0)
        return apply_listener(set, service, node, LISTENER_INET, error_r);
    if (node->section && strcmp(node->key, "unix_listener") == 0)
        return apply_listener(set, service, node, LISTENER_UNIX, error_r);
    return unknown_in_section(node, "service", error_r);
}

int settings_apply_service(struct settings *set, const struct config_node *section,
                           char **error_r)
{
    char shown[SETTINGS_EXCERPT_SIZE];
    if (section->value == NULL || section->value[0] == '\0') {
        *error_r = config_node_error(section, "service section needs a name, e.g. service lmtp");
        return -1;
    }
    const char *service = service_name(section->value);
    if (service == NULL) {
        *error_r = config_node_error(section, "unknown service '%s'",
                                     settings_excerpt(section->value, shown));
        return -1;
    }
    for (const struct config_node *n = section->children; n != NULL; n = n->next) {
        if (service_child(set, service, n, error_r) < 0)
            return -1;
    }
    return 0;
}

void settings_finish_listeners(struct settings *set)
{
    /* Relative socket paths live in base_dir, as in Dovecot. */
    for (unsigned i = 0; i < set->n_listeners; i++) {
        struct listener_settings *l = &set->listeners[i];
        if (l->kind != LISTENER_UNIX || l->path[0] == '/')
            continue;
        char *path = xasprintf("%s/%s", set->base_dir, l->path);
        free(l->path);
        l->path = path;
    }
}

/* ---- local_name (TLS certificates chosen by SNI) ---- */

static int local_name_setting(struct tls_local_name *ln, const struct config_node *node,
                              char **error_r)
{
    if (!node->section && strcmp(node->key, "ssl_cert") == 0) {
        replace_str(&ln->cert, node->value);
        return 0;
    }
    if (!node->section && strcmp(node->key, "ssl_key") == 0) {
        replace_str(&ln->key, node->value);
        return 0;
    }
    return unknown_in_section(node, "local_name", error_r);
}

static void local_name_clear(struct tls_local_name *ln)
{
    free(ln->names);
    free(ln->cert);
    if (ln->key != NULL)
        mem_wipe(ln->key, strlen(ln->key));
    free(ln->key);
}

int settings_apply_local_name(struct settings *set, const struct config_node *section,
                              char **error_r)
{
    struct tls_local_name ln = {label_dup(section), NULL, NULL};
    if (ln.names == NULL) {
        *error_r = config_node_error(section, "local_name needs a name, e.g. "
                                              "local_name mail.example.com { ... }");
        return -1;
    }
    for (const struct config_node *n = section->children; n != NULL; n = n->next) {
        if (local_name_setting(&ln, n, error_r) < 0) {
            local_name_clear(&ln);
            return -1;
        }
    }
    if (ln.cert == NULL || ln.cert[0] == '\0' || ln.key == NULL || ln.key[0] == '\0') {
        *error_r = config_node_error(section, "local_name %s: ssl_cert and ssl_key are required",
                                     ln.names);
        local_name_clear(&ln);
        return -1;
    }
    struct tls_settings *tls = &set->tls;
    tls->local_names = xrealloc(tls->local_names,
                                (tls->n_local_names + 1) * sizeof(*tls->local_names));
    tls->local_names[tls->n_local_names++] = ln;
    return 0;
}

/* ---- dump ---- */

static void dump_line(FILE *out, int indent, const char *key, const char *value)
{
    fprintf(out, "%*s%s = ", indent, "", key);
    settings_write_value(out, value);
    fputc('\n', out);
}

static void dump_fields(FILE *out, const char *key, const struct fields *f)
{
    if (f->n == 0)
        return;
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < f->n; i++) {
        buf_printf(&b, "%s%s", i == 0 ? "" : " ", f->v[i].key);
        if (f->v[i].value != NULL)
            buf_printf(&b, "=%s", f->v[i].value);
    }
    dump_line(out, 2, key, b.data);
    buf_free(&b);
}

static void dump_section_start(FILE *out, int indent, const char *name, const char *label)
{
    fprintf(out, "%*s%s ", indent, "", name);
    if (label != NULL) {
        settings_write_label(out, label);
        fputc(' ', out);
    }
    fputs("{\n", out);
}

static void dump_passdb(FILE *out, const struct passdb_settings *ps)
{
    dump_section_start(out, 0, "passdb", ps->name);
    dump_line(out, 2, "driver", ps->driver);
    if (ps->args != NULL && ps->args[0] != '\0')
        dump_line(out, 2, "args", ps->args);
    if (ps->master)
        dump_line(out, 2, "master", "yes");
    if (ps->pass)
        dump_line(out, 2, "pass", "yes");
    dump_fields(out, "default_fields", &ps->default_fields);
    dump_fields(out, "override_fields", &ps->override_fields);
    fputs("}\n", out);
}

static void dump_listener(FILE *out, const struct listener_settings *l, bool nondefault_only)
{
    bool inet = l->kind == LISTENER_INET;
    dump_section_start(out, 2, inet ? "inet_listener" : "unix_listener", l->label);
    if (inet) {
        if (l->address != NULL)
            dump_line(out, 4, "address", l->address);
        fprintf(out, "    port = %u\n", l->port);
        if (l->ssl || !nondefault_only)
            fprintf(out, "    ssl = %s\n", l->ssl ? "yes" : "no");
        if (l->haproxy || !nondefault_only)
            fprintf(out, "    haproxy = %s\n", l->haproxy ? "yes" : "no");
    } else {
        dump_line(out, 4, "path", l->path);
        if (l->mode != 0666 || !nondefault_only)
            fprintf(out, "    mode = %04o\n", l->mode);
    }
    fputs("  }\n", out);
}

static void dump_local_name(FILE *out, const struct tls_local_name *ln)
{
    dump_section_start(out, 0, "local_name", ln->names);
    dump_line(out, 2, "ssl_cert", ln->cert);
    fputs("  ssl_key = \"# hidden\"\n", out);
    fputs("}\n", out);
}

void settings_dump_sections(const struct settings *set, FILE *out, bool nondefault_only)
{
    for (unsigned i = 0; i < set->n_passdbs; i++)
        dump_passdb(out, &set->passdbs[i]);
    /* Listeners of one service block are stored next to each other. */
    for (unsigned i = 0; i < set->n_listeners; i++) {
        const struct listener_settings *l = &set->listeners[i];
        if (i == 0 || strcmp(set->listeners[i - 1].service, l->service) != 0)
            fprintf(out, "service %s {\n", l->service);
        dump_listener(out, l, nondefault_only);
        if (i + 1 == set->n_listeners || strcmp(set->listeners[i + 1].service, l->service) != 0)
            fputs("}\n", out);
    }
    for (unsigned i = 0; i < set->tls.n_local_names; i++)
        dump_local_name(out, &set->tls.local_names[i]);
}

void settings_free_sections(struct settings *set)
{
    for (unsigned i = 0; i < set->n_passdbs; i++)
        passdb_settings_clear(&set->passdbs[i]);
    free(set->passdbs);
    set->passdbs = NULL;
    set->n_passdbs = 0;
    for (unsigned i = 0; i < set->n_listeners; i++)
        listener_clear(&set->listeners[i]);
    free(set->listeners);
    set->listeners = NULL;
    set->n_listeners = 0;
    tls_settings_free_local_names(&set->tls);
}
