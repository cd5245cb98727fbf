/* var - Dovecot-style %variable expansion for queries, paths and templates.
 *
 * Supported: %u %n %d %s %r %l %a %b %m %w %c %p %%, their long forms
 * %{user} %{username} %{domain} %{service} %{rip} %{lip} %{rport} %{lport}
 * %{mech} %{password} %{secured} %{session} %{real_rip} %{real_lip}
 * %{real_rport} %{real_lport} %{domain_first} %{domain_last}, and the
 * modifiers L (lowercase) U (uppercase) E (backslash-escape) T (trim),
 * written between % and the variable: %Lu, %Ld, %L{user}.
 * Unknown variables are an error (reported at config load by checking the
 * template with var_check()). Values pass through the escape function,
 * when given, after the modifiers (SQL drivers escape this way). */
#ifndef MR_VAR_H
#define MR_VAR_H

#include <stdbool.h>

#include "buf.h"
#include "passdb.h"

typedef void var_escape_fn(struct buf *out, const char *value, void *ctx);

struct var_ctx {
    const struct passdb_request *req; /* user, service, addresses, ... */
    const char *user;                 /* overrides req->user when set */
    bool secured;
};

/* Expand tmpl into out; false + *error_r (static string) on an unknown variable. */
bool var_expand(struct buf *out, const char *tmpl, const struct var_ctx *ctx,
                var_escape_fn *escape, void *escape_ctx, const char **error_r);
/* Validate a template without expanding it. */
bool var_check(const char *tmpl, const char **error_r);

#endif
