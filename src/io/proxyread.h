/* proxyread - take a PROXY protocol v1/v2 header off a new connection.
 *
 * For listeners behind HAProxy (haproxy = yes). The header's addresses
 * become the stream's peer and local addresses, so trust checks, logs and
 * forwarded client data (XCLIENT, ID) see the real client. A LOCAL header
 * (health checks) keeps the connection's own addresses. Whether the peer
 * may send a header at all (haproxy_trusted_networks) is the caller's
 * check, made before calling. */
#ifndef MR_PROXYREAD_H
#define MR_PROXYREAD_H

#include <stdint.h>

#include "stream.h"

/* s: the stream, ready for its protocol; or NULL when the header was
 * missing, invalid or late (error says why; the stream was closed). */
typedef void proxy_header_fn(void *ctx, struct stream *s, const char *error);

void stream_read_proxy_header(struct stream *s, uint64_t timeout_ms, proxy_header_fn *fn,
                              void *ctx);

#endif
