/* passdb-sql - the "sql" passdb driver (MySQL/MariaDB through MariaDB
 * Connector/C) and what its parts share.
 *
 * passdb-sql.c is the driver: it reads the args file (sql-conf.h), expands
 * password_query per lookup with values escaped by the connection's
 * mysql_real_escape_string(), and maps the result to passdb fields.
 * passdb-sql-pool.c runs the queries: per-host connection pools driven by
 * the connector's non-blocking API on the worker's event loop, failover,
 * back-off, timeouts and the retry of a query whose connection was lost.
 *
 * Everything here belongs to one worker loop; nothing is thread-safe. */
#ifndef MR_PASSDB_SQL_H
#define MR_PASSDB_SQL_H

#include <stdbool.h>
#include <stddef.h>

#include <mysql.h>

#include "buf.h"
#include "fields.h"
#include "passdb-private.h"
#include "sql-conf.h"

extern const struct passdb_driver_ops passdb_driver_sql;

/* The auth cache key of a lookup: the expanded password_query (values
 * escaped by a fixed, connection-independent rule). NULL when drv is not an
 * SQL driver. Heap string. */
char *passdb_sql_cache_key(const struct passdb_driver *drv, const struct passdb_request *req);

/* ---- result mapping (pure; unit-tested without a server) ---- */

/* One result row as the connector gives it: values[i] NULL for SQL NULL. */
struct sql_row {
    const char *const *names;
    const char *const *values;
    const unsigned long *lengths;
    unsigned n;
};

/* Turn a row into passdb fields as Dovecot does: each column a field named
 * after the column, NULL columns absent, "password_noscheme" stored as
 * "password" with the default scheme made explicit. false + *error_r
 * (static text) when a value holds a NUL byte. */
bool sql_row_to_fields(const struct sql_row *row, const char *default_scheme,
                       struct fields *out, const char **error_r);

/* ---- the connection pool ---- */

struct sql_pool;
struct loop;

/* Write the query to send on this connection (escape with its handle). */
typedef void sql_expand_fn(void *ctx, MYSQL *mysql, struct buf *out);
/* The outcome: res (freed by the pool after the call) or error (text for
 * the log; the query failed for good, retries are done). */
typedef void sql_done_fn(void *ctx, MYSQL_RES *res, const char *error);

struct sql_pool *sql_pool_new(struct loop *loop, const struct sql_connect *conf);
/* Queries still running or queued end with an error ("shutting down"). */
void sql_pool_free(struct sql_pool **pool);
/* Run a query. done() runs exactly once: later from the loop, or inside
 * this call when no server can be tried at all (the passdb defers the
 * user's callback either way). */
void sql_pool_query(struct sql_pool *pool, sql_expand_fn *expand, sql_done_fn *done,
                    void *ctx);

#endif
