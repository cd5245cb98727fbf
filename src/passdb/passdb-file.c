/* passdb-file - the "passwd-file" passdb driver.
 *
 * args: [scheme=SCHEME] PATH. PATH may hold %variables (/etc/mail/%d.passwd);
 * each expanded path is a separate file, loaded on first use and kept.
 * Default scheme: CRYPT, as in Dovecot.
 *
 * Freshness: a lookup stat()s its file (at most once per
 * passwd_file_check_interval_ms, default 0: every lookup, about a
 * microsecond) and reloads it when inode, size or mtime changed, so a
 * change applies to the very next recipient. A file that cannot be read or parsed (any more) answers TEMPFAIL
 * with the reason, and its old contents are dropped rather than served:
 * an admin who broke the file must see errors, not stale users, and a
 * tempfail makes Postfix retry instead of bouncing.
 *
 * Missing files: with a fixed path that is TEMPFAIL (misconfiguration). With
 * %variables in the path, a missing file means "no such domain": USER_UNKNOWN,
 * and nothing is cached, so random recipient domains cannot fill memory.
 * Values expanded into a path may not contain '/' or control characters, nor
 * be "", "." or "..": such a user is unknown (no path traversal through
 * "user@../../etc").
 *
 * Reading happens on the event loop (like Dovecot's auth process does);
 * files are small next to what a worker handles, and reloads are rare. */
#include "passdb-file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "mem.h"
#include "passdb-private.h"
#include "password-scheme.h"
#include "str.h"
#include "strmap.h"
#include "var.h"

unsigned passwd_file_check_interval_ms = 0;

/* What identifies one version of a file on disk. */
struct file_stamp {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

struct cached_file {
    char *path;
    struct passwd_file *pf;   /* NULL while the file fails to load */
    char *error;              /* why pf is NULL (heap), for TEMPFAIL replies */
    bool missing;             /* ENOENT */
    bool missing_is_error;    /* a fixed path: log a missing file */
    struct file_stamp stamp;
    uint64_t checked_ms;      /* last stat(), monotonic clock */
};

struct file_driver {
    struct passdb_driver base;
    char *path_tmpl;
    bool path_has_vars;
    char *scheme;
    struct strmap files;      /* expanded path -> struct cached_file */
};

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void stamp_from_stat(struct file_stamp *s, const struct stat *st)
{
    s->dev = st->st_dev;
    s->ino = st->st_ino;
    s->size = st->st_size;
    s->mtime = st->st_mtim;
}

static bool stamp_eq(const struct file_stamp *a, const struct file_stamp *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Loading */

/* Record why the file cannot be used; its old contents go. The error is
 * logged when it is new, not at every retry of a file that stays broken. */
static void set_failure(struct cached_file *cf, char *error)
{
    bool quiet = cf->missing && !cf->missing_is_error;
    passwd_file_free(&cf->pf);
    if (cf->error == NULL || strcmp(cf->error, error) != 0) {
        if (!quiet)
            log_error("%s", error);
    }
    free(cf->error);
    cf->error = error;
}

static void set_loaded(struct cached_file *cf, struct passwd_file *pf)
{
    unsigned first_dup;
    passwd_file_free(&cf->pf);
    free(cf->error);
    cf->error = NULL;
    cf->pf = pf;
    size_t dups = passwd_file_duplicates(pf, &first_dup);
    if (dups > 0) {
        log_warn("passwd-file %s: %zu duplicate user lines ignored (first at line %u)",
                 cf->path, dups, first_dup);
    }
    log_debug("passwd-file %s: loaded %zu users", cf->path, passwd_file_count(pf));
}

static bool read_all(int fd, struct buf *out)
{
    for (;;) {
        char *p = buf_reserve(out, 65536);
        ssize_t n = read(fd, p, 65536);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return false;
        if (n == 0)
            return true;
        buf_commit(out, (size_t)n);
    }
}

/* Parse the opened file. The stamp comes from fstat() before reading, so
 * a change during the read shows up at the next check. */
static void load_from_fd(struct cached_file *cf, int fd, const struct stat *st)
{
    struct buf text = BUF_INIT;
    char *error = NULL;
    stamp_from_stat(&cf->stamp, st);
    if (!read_all(fd, &text)) {
        set_failure(cf, xasprintf("passwd-file %s: read failed: %s", cf->path,
                                  strerror(errno)));
    } else {
        struct passwd_file *pf = passwd_file_parse(buf_ptr(&text), buf_used(&text), cf->path,
                                                   &error);
        if (pf != NULL) {
            set_loaded(cf, pf);
        } else {
            set_failure(cf, xasprintf("passwd-file %s", error));
            free(error);
        }
    }
    buf_free_wipe(&text);
}

static void load(struct cached_file *cf)
{
    struct stat st;
    int fd = open(cf->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        int err = errno;
        cf->missing = err == ENOENT;
        memset(&cf->stamp, 0, sizeof(cf->stamp));
        set_failure(cf, xasprintf("passwd-file %s: open failed: %s", cf->path, strerror(err)));
    } else {
        cf->missing = false;
        load_from_fd(cf, fd, &st);
    }
    if (fd >= 0)
        close(fd);
}

/* Reload when the file changed since it was loaded (or since it failed to
 * parse: a broken file is not parsed again until it changes). */
static void refresh(struct cached_file *cf)
{
    uint64_t now = monotonic_ms();
    struct stat st;
    struct file_stamp stamp;
    if (now - cf->checked_ms < passwd_file_check_interval_ms)
        return;
    cf->checked_ms = now;
    if (stat(cf->path, &st) < 0) {
        if (cf->pf != NULL || !cf->missing)
            load(cf); /* reports why, and whether it is missing */
        return;
    }
    stamp_from_stat(&stamp, &st);
    if (!stamp_eq(&stamp, &cf->stamp))
        load(cf);
}

static struct cached_file *cached_file_new(const char *path, bool missing_is_error)
{
    struct cached_file *cf = xcalloc(1, sizeof(*cf));
    cf->path = xstrdup(path);
    cf->missing_is_error = missing_is_error;
    cf->checked_ms = monotonic_ms();
    load(cf);
    return cf;
}

static void cached_file_free(struct cached_file *cf)
{
    passwd_file_free(&cf->pf);
    free(cf->error);
    free(cf->path);
    free(cf);
}

/* The file for this path, loaded and fresh; NULL when it does not exist
 * and the path has %variables (then nothing is cached). */
static struct cached_file *get_file(struct file_driver *drv, const char *path)
{
    struct cached_file *cf = strmap_get(&drv->files, path);
    if (cf != NULL) {
        refresh(cf);
        return cf;
    }
    cf = cached_file_new(path, !drv->path_has_vars);
    if (cf->missing && drv->path_has_vars) {
        cached_file_free(cf);
        return NULL;
    }
    strmap_add(&drv->files, cf->path, cf);
    return cf;
}

/* Path expansion */

struct path_check {
    bool unsafe;
};

static bool has_control_chars(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    }
    return false;
}

/* Control characters are refused too: paths end up in log lines. */
static void escape_path_value(struct buf *out, const char *value, void *ctx)
{
    struct path_check *check = ctx;
    if (*value == '\0' || strchr(value, '/') != NULL || str_eq(value, ".") ||
        str_eq(value, "..") || has_control_chars(value))
        check->unsafe = true;
    buf_append_str(out, value);
}

/* The path for this request; NULL when a value would escape the directory. */
static char *expand_path(struct file_driver *drv, const struct passdb_request *req,
                         const char **error_r)
{
    struct buf path = BUF_INIT;
    struct path_check check = {false};
    struct var_ctx vctx = {.req = req};
    if (!drv->path_has_vars)
        return xstrdup(drv->path_tmpl);
    if (!var_expand(&path, drv->path_tmpl, &vctx, escape_path_value, &check, error_r) ||
        check.unsafe) {
        buf_free(&path);
        return NULL;
    }
    return buf_steal(&path);
}

/* Driver interface */

static void file_answer(const struct file_driver *drv, struct cached_file *cf,
                        const struct passdb_request *req, passdb_driver_done *done, void *ctx)
{
    struct fields fields = FIELDS_INIT;
    if (cf == NULL || (cf->missing && drv->path_has_vars)) {
        done(PASSDB_USER_UNKNOWN, NULL, NULL, ctx);
        return;
    }
    if (cf->pf == NULL) {
        done(PASSDB_TEMPFAIL, NULL, cf->error, ctx);
        return;
    }
    const struct passwd_entry *e = passwd_file_find(cf->pf, req->user);
    if (e == NULL) {
        done(PASSDB_USER_UNKNOWN, NULL, NULL, ctx);
        return;
    }
    passwd_entry_fields(e, &fields);
    done(PASSDB_OK, &fields, NULL, ctx);
    fields_free(&fields);
}

static void file_lookup(struct passdb_driver *base, const struct passdb_request *req,
                        passdb_driver_done *done, void *ctx)
{
    struct file_driver *drv = (struct file_driver *)base;
    const char *error = NULL;
    char *path = expand_path(drv, req, &error);
    if (path == NULL) {
        /* var_check() at create time makes expansion errors impossible;
         * an unsafe value is an unknown user. */
        if (error != NULL)
            done(PASSDB_TEMPFAIL, NULL, error, ctx);
        else
            done(PASSDB_USER_UNKNOWN, NULL, NULL, ctx);
        return;
    }
    file_answer(drv, get_file(drv, path), req, done, ctx);
    free(path);
}

/* "[scheme=X] path": options come first; the rest is the path. */
static bool parse_args(struct file_driver *drv, const char *args, char **error_r)
{
    const char *p = args != NULL ? args : "";
    for (;;) {
        p += strspn(p, " \t");
        const char *value = str_case_prefix(p, "scheme=");
        if (value == NULL)
            break;
        size_t len = strcspn(value, " \t");
        free(drv->scheme);
        drv->scheme = xstrndup(value, len);
        p = value + len;
    }
    char *copy = xstrdup(p);
    drv->path_tmpl = xstrdup(str_trim(copy));
    free(copy);
    if (*drv->path_tmpl == '\0') {
        *error_r = xstrdup("passwd-file: args must give the file's path");
        return false;
    }
    if (!password_scheme_is_known(drv->scheme)) {
        *error_r = xasprintf("passwd-file: unknown password scheme '%s'", drv->scheme);
        return false;
    }
    return true;
}

static void file_destroy(struct passdb_driver *base)
{
    struct file_driver *drv = (struct file_driver *)base;
    for (size_t i = 0; i < drv->files.cap; i++) {
        if (drv->files.slots[i].key != NULL)
            cached_file_free(drv->files.slots[i].value);
    }
    strmap_free(&drv->files);
    free(drv->path_tmpl);
    free(drv->scheme);
    free(drv);
}

static struct passdb_driver *file_create(const struct passdb_settings *set, struct loop *loop,
                                         char **error_r)
{
    struct file_driver *drv = xcalloc(1, sizeof(*drv));
    const char *verror;
    (void)loop;
    drv->base.ops = &passdb_driver_passwd_file;
    drv->scheme = xstrdup("CRYPT");
    if (!parse_args(drv, set->args, error_r)) {
        file_destroy(&drv->base);
        return NULL;
    }
    if (!var_check(drv->path_tmpl, &verror)) {
        *error_r = xasprintf("passwd-file %s: %s", drv->path_tmpl, verror);
        file_destroy(&drv->base);
        return NULL;
    }
    drv->path_has_vars = strchr(drv->path_tmpl, '%') != NULL;
    drv->base.default_scheme = drv->scheme;
    return &drv->base;
}

const struct passdb_driver_ops passdb_driver_passwd_file = {
    .name = "passwd-file",
    .create = file_create,
    .lookup = file_lookup,
    .destroy = file_destroy,
};
