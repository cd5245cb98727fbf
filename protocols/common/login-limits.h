/* login-limits - what the login proxy remembers across sessions and
 * workers: sessions per user and client IP (mail_max_userip_connections),
 * failed logins per client IP (the failure penalty) and backends that keep
 * failing (proxy_host_immediate_failure_after).
 *
 * The first two tables are shared by every worker thread (a client's
 * connections land on any worker) behind one mutex each; a login touches
 * them a few times, so contention stays far below the passdb's cost. The
 * backend table is per worker: it only steers that worker's own connects.
 * Every table is bounded: entries that matter no more are dropped, and a
 * full table forgets its oldest half rather than grow. */
#ifndef MR_LOGIN_LIMITS_H
#define MR_LOGIN_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

#include "addr.h"

/* Sessions of user from ip: take one unless limit are open already
 * (limit 0: no limit, always true). Every true must be released once. */
bool userip_acquire(const char *user, const struct addr *ip, unsigned limit);
void userip_release(const char *user, const struct addr *ip);
unsigned userip_count(const char *user, const struct addr *ip);

/* Failure penalty, per client IP (IPv6 per /64): how long to hold this
 * client's next login, given its recent failures: 2 s after the first,
 * doubling, at most max_ms, less the time since the last failure. */
uint64_t penalty_delay_ms(const struct addr *ip, uint64_t now_ms, uint64_t max_ms);
void penalty_failed(const struct addr *ip, uint64_t now_ms);
void penalty_clear(const struct addr *ip);

/* Backend health, per worker, by ip:port: true when the backend has been
 * failing for longer than after_ms (since the first failure after it last
 * worked) and other sessions are waiting for it already: those keep trying,
 * this one fails at once. */
bool backend_host_down(const struct addr *backend, uint64_t now_ms, uint64_t after_ms);
/* A session starts (wait) and stops (unwait) waiting for a backend; each
 * connect it makes meanwhile reports its result. */
void backend_host_wait(const struct addr *backend);
void backend_host_unwait(const struct addr *backend);
void backend_host_result(const struct addr *backend, bool ok, uint64_t now_ms);
/* This worker thread is ending. */
void backend_hosts_free(void);

#endif
