/* passdb-sql - the "sql" passdb driver: Dovecot's dovecot-sql.conf.ext
 * (args = PATH) on MySQL/MariaDB.
 *
 * A lookup expands password_query with the request's %variables, each value
 * escaped by mysql_real_escape_string() of the connection that will run it
 * (so the server's charset and NO_BACKSLASH_ESCAPES mode are honoured), and
 * hands it to the pool (passdb-sql-pool.c). The answer maps as in Dovecot:
 * no row = unknown user; one row = the user, each column a field named like
 * the column, NULL columns absent; more than one row = a temporary failure
 * (the data is ambiguous, and bouncing mail on a guess is worse). Any
 * database failure is a temporary failure too, never "unknown user".
 *
 * The default password scheme is MD5-CRYPT, Dovecot's "MD5" default for
 * SQL; default_pass_scheme changes it. The file is read once, when the
 * passdb is created (start-up and reload). */
#include "passdb-sql.h"

#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "password-scheme.h"
#include "readfile.h"
#include "str.h"
#include "var.h"

#define ARGS_FILE_MAX (1024 * 1024)

struct sql_driver {
    struct passdb_driver base;
    struct sql_conf *conf;
    char *scheme;
    struct sql_pool *pool;
};

struct sql_lookup {
    struct sql_driver *drv;
    const struct passdb_request *req;
    passdb_driver_done *done;
    void *ctx;
};

/* ---- result mapping ---- */

static void set_noscheme_password(struct fields *out, const char *value,
                                  const char *default_scheme)
{
    char *stored = xasprintf("{%s}%s", default_scheme, value);
    fields_set(out, "password", stored);
    mem_wipe(stored, strlen(stored));
    free(stored);
}

bool sql_row_to_fields(const struct sql_row *row, const char *default_scheme,
                       struct fields *out, const char **error_r)
{
    for (unsigned i = 0; i < row->n; i++) {
        const char *name = row->names[i], *value = row->values[i];
        if (value == NULL || name == NULL || *name == '\0')
            continue; /* NULL is "absent", as in Dovecot */
        if (memchr(value, '\0', row->lengths[i]) != NULL) {
            *error_r = "a column value contains a NUL byte";
            return false;
        }
        if (str_eq(name, "password_noscheme"))
            set_noscheme_password(out, value, default_scheme);
        else
            fields_set(out, name, value);
    }
    return true;
}

static void answer_row(struct sql_lookup *lk, MYSQL_RES *res)
{
    unsigned n = mysql_num_fields(res);
    MYSQL_FIELD *columns = mysql_fetch_fields(res);
    MYSQL_ROW values = mysql_fetch_row(res);
    const unsigned long *lengths = mysql_fetch_lengths(res);
    const char **names = xcalloc(n + 1, sizeof(*names));
    struct fields fields = FIELDS_INIT;
    const char *error = NULL;
    for (unsigned i = 0; i < n; i++)
        names[i] = columns[i].name;
    struct sql_row row = {names, (const char *const *)values, lengths, n};
    if (values == NULL || lengths == NULL)
        lk->done(PASSDB_TEMPFAIL, NULL, "sql: cannot read the result row", lk->ctx);
    else if (!sql_row_to_fields(&row, lk->drv->scheme, &fields, &error))
        lk->done(PASSDB_TEMPFAIL, NULL, "sql: a column value contains a NUL byte", lk->ctx);
    else
        lk->done(PASSDB_OK, &fields, NULL, lk->ctx);
    fields_free(&fields);
    free(names);
}

static void query_done(void *ctx, MYSQL_RES *res, const char *error)
{
    struct sql_lookup *lk = ctx;
    if (res == NULL) {
        char *msg = xasprintf("sql: %s", error);
        lk->done(PASSDB_TEMPFAIL, NULL, msg, lk->ctx);
        free(msg);
    } else if (mysql_num_rows(res) == 0) {
        lk->done(PASSDB_USER_UNKNOWN, NULL, NULL, lk->ctx);
    } else if (mysql_num_rows(res) > 1) {
        char *msg = xasprintf("sql: password_query returned %llu rows; one user must match "
                              "at most one row",
                              (unsigned long long)mysql_num_rows(res));
        lk->done(PASSDB_TEMPFAIL, NULL, msg, lk->ctx);
        free(msg);
    } else {
        answer_row(lk, res);
    }
    free(lk);
}

/* ---- the query ---- */

static void escape_with_connection(struct buf *out, const char *value, void *ctx)
{
    MYSQL *mysql = ctx;
    size_t n = strlen(value);
    char *to = buf_reserve(out, 2 * n + 1);
    buf_commit(out, mysql_real_escape_string(mysql, to, value, (unsigned long)n));
}

static void expand_query(void *ctx, MYSQL *mysql, struct buf *out)
{
    struct sql_lookup *lk = ctx;
    struct var_ctx vctx = {.req = lk->req};
    const char *error;
    /* The template was checked when the driver was created. */
    if (!var_expand(out, lk->drv->conf->password_query, &vctx, escape_with_connection, mysql,
                    &error))
        buf_reset(out);
}

/* The cache key's escaping: injective and the same for every connection.
 * It only has to tell values apart; it is never sent to a server. */
static void escape_for_key(struct buf *out, const char *value, void *ctx)
{
    (void)ctx;
    for (; *value != '\0'; value++) {
        if (strchr("\\'\"\n\r\032", *value) != NULL)
            buf_append(out, "\\", 1);
        buf_append(out, value, 1);
    }
}

char *passdb_sql_cache_key(const struct passdb_driver *base, const struct passdb_request *req)
{
    if (base->ops != &passdb_driver_sql)
        return NULL;
    const struct sql_driver *drv = (const struct sql_driver *)base;
    struct buf key = BUF_INIT;
    struct var_ctx vctx = {.req = req};
    const char *error;
    if (!var_expand(&key, drv->conf->password_query, &vctx, escape_for_key, NULL, &error)) {
        buf_free(&key);
        return NULL;
    }
    return buf_steal(&key);
}

/* ---- driver interface ---- */

static void sql_lookup(struct passdb_driver *base, const struct passdb_request *req,
                       passdb_driver_done *done, void *ctx)
{
    struct sql_driver *drv = (struct sql_driver *)base;
    struct sql_lookup *lk = xcalloc(1, sizeof(*lk));
    lk->drv = drv;
    lk->req = req;
    lk->done = done;
    lk->ctx = ctx;
    sql_pool_query(drv->pool, expand_query, query_done, lk);
}

static void sql_destroy(struct passdb_driver *base)
{
    struct sql_driver *drv = (struct sql_driver *)base;
    sql_pool_free(&drv->pool); /* ends pending lookups with TEMPFAIL */
    sql_conf_free(&drv->conf);
    free(drv->scheme);
    free(drv);
}

static struct sql_conf *read_conf(const char *path, char **error_r)
{
    char *text = NULL, *error = NULL;
    size_t len = 0;
    int err = config_read_file(path, ARGS_FILE_MAX, &text, &len, NULL);
    if (err != 0) {
        *error_r = xasprintf("sql: cannot read %s: %s", path, config_read_error(err));
        return NULL;
    }
    struct sql_conf *conf = sql_conf_parse(text, len, path, &error);
    mem_wipe(text, len); /* it holds the database password */
    free(text);
    if (conf == NULL) {
        *error_r = xasprintf("sql: %s", error);
        free(error);
    }
    return conf;
}

/* Dovecot's "MD5" scheme is MD5-CRYPT. */
static char *scheme_name(const char *configured)
{
    if (configured == NULL || str_case_eq(configured, "MD5"))
        return xstrdup("MD5-CRYPT");
    return xstrdup(configured);
}

static bool check_conf(struct sql_driver *drv, const char *path, char **error_r)
{
    const char *error;
    if (!var_check(drv->conf->password_query, &error)) {
        *error_r = xasprintf("sql: %s: password_query: %s", path, error);
        return false;
    }
    drv->scheme = scheme_name(drv->conf->default_pass_scheme);
    if (!password_scheme_is_known(drv->scheme)) {
        *error_r = xasprintf("sql: %s: unknown default_pass_scheme '%s'", path, drv->scheme);
        return false;
    }
    return true;
}

static struct passdb_driver *sql_create(const struct passdb_settings *set, struct loop *loop,
                                        char **error_r)
{
    char *path = xstrdup(set->args != NULL ? set->args : "");
    const char *trimmed = str_trim(path);
    struct sql_driver *drv = xcalloc(1, sizeof(*drv));
    drv->base.ops = &passdb_driver_sql;
    if (*trimmed == '\0')
        *error_r = xstrdup("sql: args must name the SQL args file (dovecot-sql.conf.ext)");
    else
        drv->conf = read_conf(trimmed, error_r);
    if (drv->conf == NULL || !check_conf(drv, trimmed, error_r)) {
        free(path);
        sql_destroy(&drv->base);
        return NULL;
    }
    free(path);
    drv->base.default_scheme = drv->scheme;
    drv->pool = sql_pool_new(loop, &drv->conf->connect);
    return &drv->base;
}

const struct passdb_driver_ops passdb_driver_sql = {
    .name = "sql",
    .create = sql_create,
    .lookup = sql_lookup,
    .destroy = sql_destroy,
};
