/* passdb - the asynchronous lookup front of all passdb drivers.
 *
 * A lookup walks the configured passdbs in order until one knows the user
 * (USER_UNKNOWN moves on; TEMPFAIL stops). On the answer it applies the
 * passdb's default_fields and override_fields, takes a "user" field as the
 * new canonical name, and checks the password when the request has one.
 * Drivers only find users (passdb-private.h); the rules above live here
 * once. The user's callback always runs from the loop, never inside
 * passdb_lookup(); slow password hashes run on a loop worker thread.
 *
 * User names are lowercased before the lookup, like Dovecot's default
 * auth_username_format = %Lu: "Alice@Example.COM" finds "alice@example.com"
 * (and a passwd-file line written in capitals is never found).
 *
 * Auth cache (auth_cache_size > 0): each passdb's answers (found with the
 * driver's fields, stored password included, or unknown) are kept in the
 * cache shared by all workers, keyed by the expanded SQL query or by
 * passdb, service and user. A fresh entry answers without the driver; the
 * password is still checked here, against the cached stored one, and a
 * mismatch asks the driver again (the password may have changed). When a
 * driver fails, an expired positive entry answers instead, as in Dovecot;
 * an expired "unknown user" does not (a bounce on stale data loses mail).
 *
 * Reply lifetime: the struct passdb_reply and everything it points to are
 * valid during the callback only. */
#include "passdb.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth-cache.h"
#include "loop.h"
#include "log.h"
#include "mem.h"
#include "passdb-private.h"
#include "passdb-sql.h"
#include "password-scheme.h"
#include "str.h"
#include "var.h"

struct passdb_instance {
    struct passdb_driver *driver;
    bool master;                    /* asked for master users only */
    struct fields default_fields;   /* set when absent */
    struct fields override_fields;  /* always set */
};

struct passdb {
    struct loop *loop;
    struct passdb_instance *v;
    size_t n;
    struct passdb_lookup *lookups;  /* live lookups, so destroy can abort them */
    struct auth_cache *cache;       /* NULL: off */
};

enum lookup_stage {
    STAGE_DRIVER,     /* a driver is looking the user up */
    STAGE_VERIFY,     /* a worker thread checks the password */
    STAGE_DEFERRED,   /* answer ready; the callback waits for the loop */
    STAGE_CALLING,    /* inside the user's callback */
};

struct passdb_lookup {
    struct passdb *db;              /* NULL once unlinked */
    struct passdb_lookup *prev, *next;
    struct loop *loop;
    struct passdb_request req;      /* owned copies; req.user is the canonical name */
    passdb_callback *cb;
    void *ctx;
    size_t idx;                     /* the passdb being asked */
    enum lookup_stage stage;
    bool aborted;                   /* free when the driver or worker is done */

    enum passdb_result result;
    struct fields fields;
    char *user;                     /* reply user; a "user" field rewrites it */
    char *error;

    char *cache_key;                /* of the passdb being asked; NULL: no cache */
    bool from_cache;                /* the fields came from the cache */
    bool bypass_cache;              /* asking again after a cached password failed */

    char *stored;                   /* password check on a worker thread */
    char *scheme;
    enum password_verify_result verify;
    const char *verify_error;
};

/* Lookup bookkeeping */

#define LOG_USER_MAX 128

/* User names come from clients: never raw into a log line. */
static const char *log_user(char out[LOG_USER_MAX], const struct passdb_lookup *lk)
{
    return log_sanitize(out, LOG_USER_MAX, lk->req.user);
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? xstrdup(s) : NULL;
}

static void free_secret(char **s)
{
    if (*s != NULL) {
        mem_wipe(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

static void copy_request(struct passdb_request *dst, const struct passdb_request *src)
{
    *dst = *src;
    dst->user = xstrdup(src->user != NULL ? src->user : "");
    str_lower((char *)dst->user);
    dst->service = dup_or_null(src->service);
    dst->password = dup_or_null(src->password);
    dst->mech = dup_or_null(src->mech);
    dst->session = dup_or_null(src->session);
}

static void free_request(struct passdb_request *req)
{
    free((char *)req->user);
    free((char *)req->service);
    free_secret((char **)&req->password);
    free((char *)req->mech);
    free((char *)req->session);
}

static void unlink_lookup(struct passdb_lookup *lk)
{
    if (lk->db == NULL)
        return;
    if (lk->prev != NULL)
        lk->prev->next = lk->next;
    else
        lk->db->lookups = lk->next;
    if (lk->next != NULL)
        lk->next->prev = lk->prev;
    lk->db = NULL;
    lk->prev = lk->next = NULL;
}

static void lookup_free(struct passdb_lookup *lk)
{
    unlink_lookup(lk);
    free_request(&lk->req);
    fields_free(&lk->fields);
    free(lk->user);
    free(lk->error);
    free_secret(&lk->stored);
    free_secret(&lk->cache_key); /* a query may hold the password (%w) */
    free(lk->scheme);
    free(lk);
}

/* Delivering the answer */

static void deliver(void *ctx)
{
    struct passdb_lookup *lk = ctx;
    struct passdb_reply reply = {
        .result = lk->result,
        .user = lk->user,
        .fields = &lk->fields,
        .error = lk->error,
    };
    /* Unlinked first: the callback may destroy the passdb or abort. */
    unlink_lookup(lk);
    lk->stage = STAGE_CALLING;
    lk->cb(&reply, lk->ctx);
    lookup_free(lk);
}

static void finish(struct passdb_lookup *lk, enum passdb_result result, const char *error)
{
    lk->result = result;
    free(lk->error);
    lk->error = dup_or_null(error);
    if (result == PASSDB_OK) {
        /* The stored password is ours to check, nobody else's to see. */
        fields_remove(&lk->fields, "password");
        fields_remove(&lk->fields, "nopassword");
    } else {
        /* A failure discards every field (no referral after a wrong
         * password), except "nodelay": it is meant for failure replies. */
        bool nodelay = result == PASSDB_PASSWORD_MISMATCH && fields_has(&lk->fields, "nodelay");
        fields_clear(&lk->fields);
        if (nodelay)
            fields_set(&lk->fields, "nodelay", NULL);
    }
    free_secret((char **)&lk->req.password);
    lk->stage = STAGE_DEFERRED;
    loop_defer(lk->loop, deliver, lk);
}

/* Password check */

static void retry_without_cache(struct passdb_lookup *lk);

static void verify_finished(struct passdb_lookup *lk)
{
    char name[LOG_USER_MAX];
    switch (lk->verify) {
    case PASSWORD_MATCH:
        finish(lk, PASSDB_OK, NULL);
        break;
    case PASSWORD_NO_MATCH:
        if (lk->from_cache)
            retry_without_cache(lk);
        else
            finish(lk, PASSDB_PASSWORD_MISMATCH, NULL);
        break;
    case PASSWORD_BAD_STORED:
        log_error("passdb: user %s: %s", log_user(name, lk), lk->verify_error);
        finish(lk, PASSDB_PASSWORD_MISMATCH, NULL);
        break;
    }
}

/* Runs on a worker thread: touches only what the lookup owns. */
static void verify_work(void *ctx)
{
    struct passdb_lookup *lk = ctx;
    lk->verify = password_verify(lk->req.password, lk->stored, lk->scheme, &lk->verify_error);
}

static void verify_done(void *ctx)
{
    struct passdb_lookup *lk = ctx;
    if (lk->aborted) {
        lookup_free(lk);
        return;
    }
    verify_finished(lk);
}

static void check_password(struct passdb_lookup *lk, const char *default_scheme)
{
    const char *stored = fields_get_str(&lk->fields, "password");
    if (lk->req.password == NULL || fields_has(&lk->fields, "nopassword")) {
        finish(lk, PASSDB_OK, NULL);
        return;
    }
    if (stored == NULL || *stored == '\0') {
        char name[LOG_USER_MAX];
        log_info("passdb: user %s has no password and no nopassword field",
                 log_user(name, lk));
        finish(lk, PASSDB_PASSWORD_MISMATCH, NULL);
        return;
    }
    lk->stored = xstrdup(stored);
    lk->scheme = xstrdup(default_scheme);
    if (password_verify_is_slow(stored, default_scheme)) {
        lk->stage = STAGE_VERIFY;
        loop_run_blocking(lk->loop, verify_work, verify_done, lk);
        return;
    }
    verify_work(lk);
    verify_finished(lk);
}

/* Fields from the settings */

static bool set_expanded(struct passdb_lookup *lk, const struct field *f, const char **error_r)
{
    struct var_ctx vctx = {.req = &lk->req, .user = lk->user};
    struct buf value = BUF_INIT;
    if (f->value == NULL) {
        fields_set(&lk->fields, f->key, NULL);
        return true;
    }
    bool ok = var_expand(&value, f->value, &vctx, NULL, NULL, error_r);
    buf_append(&value, "", 0);
    if (ok)
        fields_set(&lk->fields, f->key, buf_ptr(&value));
    buf_free_wipe(&value);
    return ok;
}

static bool apply_settings_fields(struct passdb_lookup *lk, const struct passdb_instance *inst,
                                  const char **error_r)
{
    for (size_t i = 0; i < inst->default_fields.n; i++) {
        const struct field *f = &inst->default_fields.v[i];
        if (!fields_has(&lk->fields, f->key) && !set_expanded(lk, f, error_r))
            return false;
    }
    for (size_t i = 0; i < inst->override_fields.n; i++) {
        if (!set_expanded(lk, &inst->override_fields.v[i], error_r))
            return false;
    }
    return true;
}

/* "user=NAME" renames the user for everything after the lookup. */
static void take_user_field(struct passdb_lookup *lk)
{
    const char *user = fields_get_str(&lk->fields, "user");
    if (user == NULL)
        return;
    if (*user == '\0') {
        char name[LOG_USER_MAX];
        log_warn("passdb: user %s: ignoring an empty user field", log_user(name, lk));
    } else {
        free(lk->user);
        lk->user = xstrdup(user);
    }
    fields_remove(&lk->fields, "user");
}

static void got_user(struct passdb_lookup *lk, const struct passdb_instance *inst,
                     const struct fields *fields)
{
    const char *error;
    if (fields != NULL)
        fields_copy(&lk->fields, fields);
    if (!apply_settings_fields(lk, inst, &error)) {
        char *msg = xasprintf("passdb %s: default/override fields: %s",
                              inst->driver->ops->name, error);
        finish(lk, PASSDB_TEMPFAIL, msg);
        free(msg);
        return;
    }
    take_user_field(lk);
    check_password(lk, inst->driver->default_scheme);
}

/* Driver chain */

static void start_driver(struct passdb_lookup *lk);

/* The first passdb at or after idx of the kind the request asks for
 * (master or ordinary); db->n when there is none. */
static size_t passdb_from(const struct passdb_lookup *lk, size_t idx)
{
    while (idx < lk->db->n && lk->db->v[idx].master != lk->req.master)
        idx++;
    return idx;
}

/* A driver's (or the cache's) answer for passdb lk->idx. */
static void handle_answer(struct passdb_lookup *lk, enum passdb_result result,
                          const struct fields *fields, const char *error)
{
    size_t next = passdb_from(lk, lk->idx + 1);
    if (result == PASSDB_USER_UNKNOWN && next < lk->db->n) {
        lk->idx = next;
        start_driver(lk);
    } else if (result == PASSDB_OK) {
        got_user(lk, &lk->db->v[lk->idx], fields);
    } else {
        finish(lk, result, error);
    }
}

/* Auth cache */

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char *make_cache_key(const struct passdb_lookup *lk)
{
    char *query = passdb_sql_cache_key(lk->db->v[lk->idx].driver, &lk->req);
    char *key = query != NULL ? xasprintf("%zu\x1f%s", lk->idx, query)
                              : xasprintf("%zu\x1f%s\x1f%s", lk->idx,
                                          lk->req.service != NULL ? lk->req.service : "",
                                          lk->req.user);
    free_secret(&query);
    return key;
}

/* Answer from a fresh cache entry; false when there is none. */
static bool answer_from_cache(struct passdb_lookup *lk)
{
    struct fields cached = FIELDS_INIT;
    bool positive = false;
    free_secret(&lk->cache_key);
    lk->from_cache = false;
    if (lk->db->cache == NULL)
        return false;
    lk->cache_key = make_cache_key(lk);
    if (lk->bypass_cache || auth_cache_lookup(lk->db->cache, lk->cache_key, monotonic_ms(),
                                              false, &positive, &cached) != AUTH_CACHE_FOUND)
        return false;
    lk->from_cache = true;
    handle_answer(lk, positive ? PASSDB_OK : PASSDB_USER_UNKNOWN, &cached, NULL);
    fields_free(&cached);
    return true;
}

/* The driver failed: an expired entry of a found user answers instead. */
static bool answer_from_stale_cache(struct passdb_lookup *lk, const char *error)
{
    struct fields cached = FIELDS_INIT;
    bool positive = false;
    char name[LOG_USER_MAX];
    if (lk->cache_key == NULL ||
        auth_cache_lookup(lk->db->cache, lk->cache_key, monotonic_ms(), true, &positive,
                          &cached) == AUTH_CACHE_MISS || !positive) {
        fields_free(&cached);
        return false;
    }
    log_warn("passdb: user %s: %s; falling back to expired data from the cache",
             log_user(name, lk), error != NULL ? error : "lookup failed");
    lk->from_cache = true;
    handle_answer(lk, PASSDB_OK, &cached, NULL);
    fields_free(&cached);
    return true;
}

static void cache_answer(struct passdb_lookup *lk, enum passdb_result result,
                         const struct fields *fields)
{
    if (lk->cache_key != NULL && result != PASSDB_TEMPFAIL)
        auth_cache_insert(lk->db->cache, lk->cache_key, lk->req.user, result == PASSDB_OK,
                          fields, monotonic_ms());
}

/* A cached stored password did not match: ask the driver itself. */
static void retry_without_cache(struct passdb_lookup *lk)
{
    fields_clear(&lk->fields);
    free(lk->user);
    lk->user = xstrdup(lk->req.user);
    free_secret(&lk->stored);
    free(lk->scheme);
    lk->scheme = NULL;
    lk->bypass_cache = true;
    start_driver(lk);
}

static void on_driver_done(enum passdb_result result, const struct fields *fields,
                           const char *error, void *ctx)
{
    struct passdb_lookup *lk = ctx;
    if (lk->aborted) {
        lookup_free(lk);
        return;
    }
    if (result == PASSDB_TEMPFAIL && answer_from_stale_cache(lk, error))
        return;
    cache_answer(lk, result, fields);
    handle_answer(lk, result, fields, error);
}

static void start_driver(struct passdb_lookup *lk)
{
    struct passdb_driver *drv = lk->db->v[lk->idx].driver;
    lk->stage = STAGE_DRIVER;
    if (answer_from_cache(lk))
        return;
    drv->ops->lookup(drv, &lk->req, on_driver_done, lk);
}

struct passdb_lookup *passdb_lookup(struct passdb *db, const struct passdb_request *req,
                                    passdb_callback *cb, void *ctx)
{
    struct passdb_lookup *lk = xcalloc(1, sizeof(*lk));
    lk->db = db;
    lk->loop = db->loop;
    lk->cb = cb;
    lk->ctx = ctx;
    copy_request(&lk->req, req);
    lk->user = xstrdup(lk->req.user);
    lk->next = db->lookups;
    if (db->lookups != NULL)
        db->lookups->prev = lk;
    db->lookups = lk;
    lk->idx = passdb_from(lk, 0);
    if (lk->idx == db->n)
        finish(lk, PASSDB_USER_UNKNOWN, NULL);
    else
        start_driver(lk);
    return lk;
}

/* Stop a lookup: freed now when only the deferred callback is left, else
 * when its driver or worker thread reports back. */
static void cancel(struct passdb_lookup *lk)
{
    switch (lk->stage) {
    case STAGE_DEFERRED:
        loop_defer_cancel(lk->loop, deliver, lk);
        lookup_free(lk);
        break;
    case STAGE_DRIVER:
    case STAGE_VERIFY:
        unlink_lookup(lk);
        lk->aborted = true;
        break;
    case STAGE_CALLING:
        break; /* deliver() frees it when the callback returns */
    }
}

void passdb_lookup_abort(struct passdb_lookup **lookup)
{
    struct passdb_lookup *lk = *lookup;
    if (lk == NULL)
        return;
    *lookup = NULL;
    cancel(lk);
}

/* Creation */

static const struct passdb_driver_ops *const drivers[] = {
    &passdb_driver_passwd_file,
    &passdb_driver_static,
    &passdb_driver_sql,
};

static const struct passdb_driver_ops *find_driver(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(drivers); i++) {
        if (name != NULL && str_eq(drivers[i]->name, name))
            return drivers[i];
    }
    return NULL;
}

static bool create_instance(struct passdb_instance *inst, const struct passdb_settings *set,
                            struct loop *loop, char **error_r)
{
    const struct passdb_driver_ops *ops = find_driver(set->driver);
    if (ops == NULL) {
        *error_r = xasprintf("unknown driver '%s'", set->driver != NULL ? set->driver : "");
        return false;
    }
    inst->driver = ops->create(set, loop, error_r);
    if (inst->driver == NULL)
        return false;
    fields_copy(&inst->default_fields, &set->default_fields);
    fields_copy(&inst->override_fields, &set->override_fields);
    inst->master = set->master;
    return true;
}

struct passdb *passdb_create(const struct settings *set, struct loop *loop, char **error_r)
{
    struct passdb *db = xcalloc(1, sizeof(*db));
    db->loop = loop;
    db->v = xcalloc(set->n_passdbs, sizeof(*db->v));
    if (set->auth_cache_size > 0)
        db->cache = auth_cache_acquire(set, set->auth_cache_size, set->auth_cache_ttl_ms,
                                       set->auth_cache_negative_ttl_ms);
    for (unsigned i = 0; i < set->n_passdbs; i++) {
        char *error = NULL;
        if (!create_instance(&db->v[i], &set->passdbs[i], loop, &error)) {
            *error_r = xasprintf("passdb #%u: %s", i + 1, error);
            free(error);
            passdb_destroy(&db);
            return NULL;
        }
        db->n++;
    }
    return db;
}

/* Pending lookups are aborted: their callbacks never run. */
void passdb_destroy(struct passdb **dbp)
{
    struct passdb *db = *dbp;
    if (db == NULL)
        return;
    *dbp = NULL;
    while (db->lookups != NULL)
        cancel(db->lookups);
    for (size_t i = 0; i < db->n; i++) {
        db->v[i].driver->ops->destroy(db->v[i].driver);
        fields_free(&db->v[i].default_fields);
        fields_free(&db->v[i].override_fields);
    }
    free(db->v);
    auth_cache_release(&db->cache);
    free(db);
}

const char *passdb_result_str(enum passdb_result r)
{
    switch (r) {
    case PASSDB_OK: return "ok";
    case PASSDB_USER_UNKNOWN: return "user_unknown";
    case PASSDB_PASSWORD_MISMATCH: return "password_mismatch";
    case PASSDB_TEMPFAIL: return "tempfail";
    }
    return "unknown";
}
