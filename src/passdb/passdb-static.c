/* passdb-static - the "static" passdb driver: every user exists and gets the
 * same fields, from args ("proxy host=10.0.0.%d password=secret").
 *
 * Values may hold %variables, expanded per lookup; templates are checked at
 * start-up. A "password=" field is the password to check (default scheme
 * PLAIN, as Dovecot's static passdb); "nopassword" accepts any password.
 * Use it last in a chain (it knows everyone) or for a catch-all router. */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "mem.h"
#include "passdb-private.h"
#include "var.h"

struct static_driver {
    struct passdb_driver base;
    struct fields templates;  /* values are %variable templates */
};

static bool parse_args(struct static_driver *drv, const char *args, char **error_r)
{
    const char *p = args != NULL ? args : "";
    const char *verror;
    while (*(p += strspn(p, " \t")) != '\0') {
        size_t len = strcspn(p, " \t");
        char *pair = xstrndup(p, len);
        const char *eq = strchr(pair, '=');
        bool ok = eq != pair && (eq == NULL || var_check(eq + 1, &verror));
        if (ok)
            fields_add_pair(&drv->templates, pair);
        else if (eq == pair)
            *error_r = xasprintf("static: field without a name: '%s'", pair);
        else
            *error_r = xasprintf("static: field %s: %s", pair, verror);
        free(pair);
        if (!ok)
            return false;
        p += len;
    }
    return true;
}

static bool expand_fields(const struct static_driver *drv, const struct passdb_request *req,
                          struct fields *out, const char **error_r)
{
    struct var_ctx vctx = {.req = req};
    for (size_t i = 0; i < drv->templates.n; i++) {
        const struct field *t = &drv->templates.v[i];
        struct buf value = BUF_INIT;
        if (t->value == NULL) {
            fields_set(out, t->key, NULL);
            continue;
        }
        bool ok = var_expand(&value, t->value, &vctx, NULL, NULL, error_r);
        buf_append(&value, "", 0);
        if (ok)
            fields_set(out, t->key, buf_ptr(&value));
        buf_free_wipe(&value);
        if (!ok)
            return false;
    }
    return true;
}

static void static_lookup(struct passdb_driver *base, const struct passdb_request *req,
                          passdb_driver_done *done, void *ctx)
{
    struct static_driver *drv = (struct static_driver *)base;
    struct fields fields = FIELDS_INIT;
    const char *error;
    if (expand_fields(drv, req, &fields, &error))
        done(PASSDB_OK, &fields, NULL, ctx);
    else
        done(PASSDB_TEMPFAIL, NULL, error, ctx);
    fields_free(&fields);
}

static void static_destroy(struct passdb_driver *base)
{
    struct static_driver *drv = (struct static_driver *)base;
    fields_free(&drv->templates);
    free(drv);
}

static struct passdb_driver *static_create(const struct passdb_settings *set, struct loop *loop,
                                           char **error_r)
{
    struct static_driver *drv = xcalloc(1, sizeof(*drv));
    (void)loop;
    drv->base.ops = &passdb_driver_static;
    drv->base.default_scheme = "PLAIN";
    if (!parse_args(drv, set->args, error_r)) {
        static_destroy(&drv->base);
        return NULL;
    }
    return &drv->base;
}

const struct passdb_driver_ops passdb_driver_static = {
    .name = "static",
    .create = static_create,
    .lookup = static_lookup,
    .destroy = static_destroy,
};
