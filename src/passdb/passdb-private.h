/* passdb-private - the driver interface behind passdb.h.
 *
 * A driver finds a user and returns the user's fields; it does not check
 * passwords and does not apply default_fields/override_fields: passdb.c
 * does both, the same way for every driver. The stored password travels in
 * the "password" field (with its {SCHEME} prefix when it has one); the
 * driver's default_scheme applies when it has none.
 *
 * done() may run inside lookup() (passwd-file and static answer at once) or
 * later from the loop (sql); passdb.c defers the user's callback either way.
 * A driver calls done() exactly once per lookup, also when it is destroyed
 * with lookups pending (with PASSDB_TEMPFAIL). Only PASSDB_OK,
 * PASSDB_USER_UNKNOWN and PASSDB_TEMPFAIL are valid driver results. */
#ifndef MR_PASSDB_PRIVATE_H
#define MR_PASSDB_PRIVATE_H

#include "passdb.h"

/* fields and error are owned by the driver and valid during the call only;
 * fields may be NULL (no fields), error is NULL unless PASSDB_TEMPFAIL. */
typedef void passdb_driver_done(enum passdb_result result, const struct fields *fields,
                                const char *error, void *ctx);

struct passdb_driver;

struct passdb_driver_ops {
    const char *name;
    /* NULL + *error_r (heap) when the args are wrong. */
    struct passdb_driver *(*create)(const struct passdb_settings *set, struct loop *loop,
                                    char **error_r);
    /* req->user is already canonical (lowercased). req stays valid until done(). */
    void (*lookup)(struct passdb_driver *drv, const struct passdb_request *req,
                   passdb_driver_done *done, void *ctx);
    void (*destroy)(struct passdb_driver *drv);
};

struct passdb_driver {
    const struct passdb_driver_ops *ops;
    const char *default_scheme;  /* for stored passwords without "{SCHEME}" */
};

extern const struct passdb_driver_ops passdb_driver_passwd_file;
extern const struct passdb_driver_ops passdb_driver_static;

#endif
