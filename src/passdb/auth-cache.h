/* auth-cache - passdb answers kept in memory, shared by every worker thread.
 *
 * An entry maps a key (for SQL: the expanded query; otherwise the passdb,
 * service and user) to what the driver answered: "found, with these fields"
 * (positive) or "unknown user" (negative). Temporary failures are never
 * stored. Positive entries are fresh for ttl_ms, negative ones for
 * negative_ttl_ms (0: negative answers are not stored). A stale entry stays
 * until it is replaced or evicted, so the passdb can fall back to it when
 * its database fails (as Dovecot does). The stored fields may hold the
 * stored password: the cache never logs anything.
 *
 * Memory: max_bytes bounds an estimate of what the entries use (keys,
 * fields, bookkeeping, allocator overhead); the least recently used entries
 * go first. Dovecot's auth_cache_size is likewise a byte count.
 *
 * Thread-safe: one mutex per cache; every call copies in or out under it,
 * so callers never hold pointers into the cache. Time is passed in (a
 * monotonic clock in ms), which keeps the module free of clocks and makes
 * TTLs testable.
 *
 * Sharing: auth_cache_acquire() hands every caller with the same owner (the
 * daemon passes its loaded settings, so all workers of one configuration
 * generation share one cache) the same reference-counted cache. A reload
 * therefore starts with an empty cache, as a Dovecot reload does. */
#ifndef MR_AUTH_CACHE_H
#define MR_AUTH_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fields.h"

struct auth_cache;

enum auth_cache_result {
    AUTH_CACHE_MISS,         /* no entry */
    AUTH_CACHE_FOUND,        /* a fresh entry */
    AUTH_CACHE_STALE,        /* an entry past its TTL (only returned when asked for) */
};

struct auth_cache_stats {
    uint64_t hits, misses, inserts, evictions;
    size_t entries;
    size_t bytes;            /* the estimate max_bytes is compared with */
};

struct auth_cache *auth_cache_new(uint64_t max_bytes, uint64_t ttl_ms,
                                  uint64_t negative_ttl_ms);
void auth_cache_free(struct auth_cache **cache);

/* The shared cache of owner (created on first use; settings taken from the
 * first caller). Release each acquire once. */
struct auth_cache *auth_cache_acquire(const void *owner, uint64_t max_bytes, uint64_t ttl_ms,
                                      uint64_t negative_ttl_ms);
void auth_cache_release(struct auth_cache **cache);

/* Look key up. On FOUND (and, with allow_stale, on STALE) *positive_r tells
 * a user found from an unknown one, and a positive entry's fields are added
 * to fields_out (which the caller owns and frees). */
enum auth_cache_result auth_cache_lookup(struct auth_cache *cache, const char *key,
                                         uint64_t now_ms, bool allow_stale, bool *positive_r,
                                         struct fields *fields_out);

/* Store an answer, replacing any entry with this key. user is kept for
 * auth_cache_flush(). fields may be NULL. Negative answers are dropped when
 * negative_ttl_ms is 0, entries bigger than the whole cache always. */
void auth_cache_insert(struct auth_cache *cache, const char *key, const char *user,
                       bool positive, const struct fields *fields, uint64_t now_ms);

/* Drop the entries of user (every entry when user is NULL); returns how
 * many went. auth_cache_flush_all() does it in every live shared cache (for
 * the control socket). */
size_t auth_cache_flush(struct auth_cache *cache, const char *user);
size_t auth_cache_flush_all(const char *user);

void auth_cache_get_stats(struct auth_cache *cache, struct auth_cache_stats *stats_r);

#endif
