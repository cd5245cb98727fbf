/* var - Dovecot-style %variable expansion (see var.h for the list).
 *
 * A template is scanned once: literal text is copied as it is, every
 * reference (%X, %MODSX, %{name}, %MODS{name}) is looked up, its modifiers
 * applied in the order written, and the result passed through the caller's
 * escape function. The escape function never sees template text, so a
 * template's own quotes survive while values from users are made safe.
 * This module knows nothing about SQL or files; it only produces text. */
#include "var.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mem.h"

#define VAR_MAX_MODIFIERS 8
#define VAR_MAX_NAME 64

/* A parsed reference: which variable and which modifiers. */
struct var_ref {
    char mods[VAR_MAX_MODIFIERS];
    size_t n_mods;
    const struct var_def *def;
};

typedef void var_get_fn(struct buf *out, const struct var_ctx *ctx);

struct var_def {
    char short_name;          /* '\0': only the long form exists */
    const char *long_name;
    var_get_fn *get;
};

/* Error text with the offending name in it. Thread-local so that workers
 * expanding templates at the same time do not overwrite each other's text;
 * valid until the next failing call on the same thread. */
static _Thread_local char var_error[128];

static const char *set_error(const char *what, const char *name, size_t len)
{
    if (len > VAR_MAX_NAME)
        len = VAR_MAX_NAME;
    snprintf(var_error, sizeof(var_error), "%s%.*s", what, (int)len, name);
    return var_error;
}

/* Variable getters */

static const char *ctx_user(const struct var_ctx *ctx)
{
    if (ctx->user != NULL)
        return ctx->user;
    return ctx->req != NULL && ctx->req->user != NULL ? ctx->req->user : "";
}

static void get_user(struct buf *out, const struct var_ctx *ctx)
{
    buf_append_str(out, ctx_user(ctx));
}

static void get_username(struct buf *out, const struct var_ctx *ctx)
{
    const char *user = ctx_user(ctx);
    buf_append(out, user, strcspn(user, "@"));
}

/* Everything after the first '@' ("" without one): "a@b@c" -> "b@c". */
static const char *user_domain(const struct var_ctx *ctx)
{
    const char *at = strchr(ctx_user(ctx), '@');
    return at != NULL ? at + 1 : "";
}

static void get_domain(struct buf *out, const struct var_ctx *ctx)
{
    buf_append_str(out, user_domain(ctx));
}

/* For "user@first@last" style names: the part up to the next '@'. */
static void get_domain_first(struct buf *out, const struct var_ctx *ctx)
{
    const char *domain = user_domain(ctx);
    buf_append(out, domain, strcspn(domain, "@"));
}

/* The part after the last '@' ("" without one). */
static void get_domain_last(struct buf *out, const struct var_ctx *ctx)
{
    const char *at = strrchr(ctx_user(ctx), '@');
    if (at != NULL)
        buf_append_str(out, at + 1);
}

#define REQ_STRING_GETTER(name, member)                                     \
    static void get_##name(struct buf *out, const struct var_ctx *ctx)      \
    {                                                                       \
        if (ctx->req != NULL && ctx->req->member != NULL)                   \
            buf_append_str(out, ctx->req->member);                          \
    }

REQ_STRING_GETTER(service, service)
REQ_STRING_GETTER(mech, mech)
REQ_STRING_GETTER(password, password)
REQ_STRING_GETTER(session, session)

static void append_ip(struct buf *out, const struct addr *a)
{
    char text[ADDR_STRLEN];
    buf_append_str(out, addr_ip_str(a, text, sizeof(text)));
}

/* Ports print as numbers, 0 when unknown (a UNIX socket), as Dovecot does. */
static void append_port(struct buf *out, const struct addr *a)
{
    buf_printf(out, "%u", (unsigned)a->port);
}

#define REQ_ADDR_GETTERS(name, member)                                      \
    static void get_##name##_ip(struct buf *out, const struct var_ctx *ctx) \
    {                                                                       \
        if (ctx->req != NULL)                                               \
            append_ip(out, &ctx->req->member);                              \
    }                                                                       \
    static void get_##name##_port(struct buf *out, const struct var_ctx *ctx) \
    {                                                                       \
        append_port(out, ctx->req != NULL ? &ctx->req->member : &(struct addr){0}); \
    }

REQ_ADDR_GETTERS(local, local)
REQ_ADDR_GETTERS(remote, remote)
REQ_ADDR_GETTERS(real_local, real_local)
REQ_ADDR_GETTERS(real_remote, real_remote)

static void get_secured(struct buf *out, const struct var_ctx *ctx)
{
    if (ctx->secured)
        buf_append_str(out, "secured");
}

/* Dovecot's %p is the login process' pid; we are that process. */
static void get_pid(struct buf *out, const struct var_ctx *ctx)
{
    (void)ctx;
    buf_printf(out, "%ld", (long)getpid());
}

static const struct var_def var_defs[] = {
    {'u', "user", get_user},
    {'n', "username", get_username},
    {'d', "domain", get_domain},
    {'s', "service", get_service},
    {'r', "rip", get_remote_ip},
    {'l', "lip", get_local_ip},
    {'b', "rport", get_remote_port},
    {'a', "lport", get_local_port},
    {'m', "mech", get_mech},
    {'w', "password", get_password},
    {'c', "secured", get_secured},
    {'p', "pid", get_pid},
    {'\0', "session", get_session},
    {'\0', "real_rip", get_real_remote_ip},
    {'\0', "real_lip", get_real_local_ip},
    {'\0', "real_rport", get_real_remote_port},
    {'\0', "real_lport", get_real_local_port},
    {'\0', "domain_first", get_domain_first},
    {'\0', "domain_last", get_domain_last},
};

static const struct var_def *find_short(char c)
{
    for (size_t i = 0; i < ARRAY_LEN(var_defs); i++) {
        if (var_defs[i].short_name == c && c != '\0')
            return &var_defs[i];
    }
    return NULL;
}

static const struct var_def *find_long(const char *name, size_t len)
{
    for (size_t i = 0; i < ARRAY_LEN(var_defs); i++) {
        const char *ln = var_defs[i].long_name;
        if (strlen(ln) == len && memcmp(ln, name, len) == 0)
            return &var_defs[i];
    }
    return NULL;
}

/* Parsing */

static bool is_modifier(char c)
{
    return c == 'L' || c == 'U' || c == 'E' || c == 'T';
}

/* Parse "{name}" at p; returns the position after '}' or NULL. */
static const char *parse_long(const char *p, struct var_ref *ref, const char **error_r)
{
    const char *end = strchr(p + 1, '}');
    if (end == NULL) {
        *error_r = set_error("unterminated %{ in ", p, strlen(p));
        return NULL;
    }
    ref->def = find_long(p + 1, (size_t)(end - p - 1));
    if (ref->def == NULL) {
        *error_r = set_error("unknown variable %", p, (size_t)(end - p + 1));
        return NULL;
    }
    return end + 1;
}

/* Parse a reference; p points just after the '%'. Returns the position
 * after the reference, or NULL with *error_r set. */
static const char *parse_ref(const char *p, struct var_ref *ref, const char **error_r)
{
    ref->n_mods = 0;
    for (; is_modifier(*p); p++) {
        if (ref->n_mods == VAR_MAX_MODIFIERS) {
            *error_r = "too many %variable modifiers";
            return NULL;
        }
        ref->mods[ref->n_mods++] = *p;
    }
    if (*p == '{')
        return parse_long(p, ref, error_r);
    if (*p == '\0') {
        *error_r = "template ends with an incomplete %variable";
        return NULL;
    }
    ref->def = find_short(*p);
    if (ref->def == NULL) {
        *error_r = set_error("unknown variable %", p, 1);
        return NULL;
    }
    return p + 1;
}

/* Modifiers */

static void escape_backslash(struct buf *val)
{
    struct buf tmp = BUF_INIT;
    for (size_t i = 0; i < val->len; i++) {
        char c = val->data[i];
        if (c == '\\' || c == '"' || c == '\'')
            buf_append(&tmp, "\\", 1);
        buf_append(&tmp, &c, 1);
    }
    buf_reset(val);
    buf_append(val, buf_ptr(&tmp), buf_used(&tmp));
    buf_free_wipe(&tmp);
}

/* %T trims trailing white space, as Dovecot's %T does. */
static void trim_trailing(struct buf *val)
{
    while (val->len > val->rpos && isspace((unsigned char)val->data[val->len - 1]))
        val->len--;
    if (val->data != NULL)
        val->data[val->len] = '\0';
}

static void apply_modifier(struct buf *val, char mod)
{
    switch (mod) {
    case 'L':
    case 'U':
        for (size_t i = val->rpos; i < val->len; i++) {
            unsigned char c = (unsigned char)val->data[i];
            val->data[i] = (char)(mod == 'L' ? tolower(c) : toupper(c));
        }
        break;
    case 'E':
        escape_backslash(val);
        break;
    case 'T':
        trim_trailing(val);
        break;
    }
}

static void expand_ref(struct buf *out, const struct var_ref *ref, const struct var_ctx *ctx,
                       var_escape_fn *escape, void *escape_ctx)
{
    struct buf val = BUF_INIT;
    ref->def->get(&val, ctx);
    for (size_t i = 0; i < ref->n_mods; i++)
        apply_modifier(&val, ref->mods[i]);
    buf_append(&val, "", 0); /* make sure val.data is a string even when empty */
    if (escape != NULL)
        escape(out, buf_ptr(&val), escape_ctx);
    else
        buf_append(out, buf_ptr(&val), buf_used(&val));
    /* Values may be the user's password (%w). */
    buf_free_wipe(&val);
}

/* The shared scanner: expands when out != NULL, only validates otherwise. */
static bool scan(struct buf *out, const char *tmpl, const struct var_ctx *ctx,
                 var_escape_fn *escape, void *escape_ctx, const char **error_r)
{
    const char *p = tmpl;
    while (*p != '\0') {
        const char *pct = strchr(p, '%');
        size_t lit = pct != NULL ? (size_t)(pct - p) : strlen(p);
        if (out != NULL)
            buf_append(out, p, lit);
        if (pct == NULL)
            break;
        if (pct[1] == '%') {
            if (out != NULL)
                buf_append(out, "%", 1);
            p = pct + 2;
            continue;
        }
        struct var_ref ref;
        p = parse_ref(pct + 1, &ref, error_r);
        if (p == NULL)
            return false;
        if (out != NULL)
            expand_ref(out, &ref, ctx, escape, escape_ctx);
    }
    return true;
}

bool var_expand(struct buf *out, const char *tmpl, const struct var_ctx *ctx,
                var_escape_fn *escape, void *escape_ctx, const char **error_r)
{
    return scan(out, tmpl, ctx, escape, escape_ctx, error_r);
}

bool var_check(const char *tmpl, const char **error_r)
{
    return scan(NULL, tmpl, NULL, NULL, NULL, error_r);
}
