/* passdb - where users live: one asynchronous interface, several drivers.
 *
 * A lookup's callback runs exactly once, always later on the event loop
 * (never from inside passdb_lookup()), unless the lookup is aborted first.
 * One struct passdb belongs to one worker loop; it is not thread-safe.
 *
 * Drivers: "passwd-file" (Dovecot's format), "static" (fields from args),
 * later "sql". Fields in the reply are the Dovecot extra fields, booleans
 * present without a value; default_fields/override_fields from the config
 * are applied here. */
#ifndef MR_PASSDB_H
#define MR_PASSDB_H

#include <stdbool.h>

#include "addr.h"
#include "config.h"
#include "fields.h"

struct loop;

enum passdb_result {
    PASSDB_OK,                /* user found (and password matched when one was given) */
    PASSDB_USER_UNKNOWN,
    PASSDB_PASSWORD_MISMATCH,
    PASSDB_TEMPFAIL,          /* internal failure: unreadable file, dead SQL, ... */
};

struct passdb_request {
    const char *user;         /* LMTP: the recipient address, +detail removed */
    const char *service;      /* "lmtp", "smtp", "imap", "pop3", "submission" */
    const char *password;     /* NULL: route lookup only (LMTP), no password check */
    const char *mech;         /* SASL mechanism, for %m */
    const char *session;      /* session id, for logs and %{session} */
    struct addr local;        /* %l %a: our side (as forwarded by a trusted peer) */
    struct addr remote;       /* %r %b: the client (as forwarded by a trusted peer) */
    struct addr real_local;   /* the TCP connection itself */
    struct addr real_remote;
    /* Ask only the master passdbs ("master = yes"): user is the master user
     * of a "user*master" login. Ordinary lookups skip master passdbs. */
    bool master;
};

struct passdb_reply {
    enum passdb_result result;
    const char *user;         /* canonical user name (a "user" field may rewrite it) */
    const struct fields *fields; /* extra fields; empty on failure */
    const char *error;        /* for the log: why TEMPFAIL / which file; NULL otherwise */
};

typedef void passdb_callback(const struct passdb_reply *reply, void *ctx);

struct passdb;
struct passdb_lookup;

/* Create the configured passdbs (tried in order). NULL + *error_r (heap) on error. */
struct passdb *passdb_create(const struct settings *set, struct loop *loop, char **error_r);
void passdb_destroy(struct passdb **db);

/* Start a lookup; the request is copied. Returns a handle for abort. */
struct passdb_lookup *passdb_lookup(struct passdb *db, const struct passdb_request *req,
                                    passdb_callback *cb, void *ctx);
/* Cancel: the callback will not run. Sets *lookup to NULL; NULL is fine. */
void passdb_lookup_abort(struct passdb_lookup **lookup);

const char *passdb_result_str(enum passdb_result r);

#endif
