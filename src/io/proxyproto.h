/* proxyproto - parser for the PROXY protocol header (HAProxy, versions 1
 * and 2) that a load balancer sends first on a connection to say who the
 * client is.
 *
 * Pure: no I/O, no allocation, no libuv; it lives in io only because the
 * listeners use it. Whether the peer may send a header at all
 * (haproxy_trusted_networks) and how long to wait for it are the
 * listener's business.
 *
 * Resumable by re-parsing: the listener keeps the bytes read so far, from
 * the first byte of the connection, and calls proxyproto_parse() on all of
 * them after each read. The answer depends only on data[0..len), and is the
 * same however the bytes were split across reads: 0 until the header is
 * complete, then its length (the bytes after it belong to the mail
 * protocol). An invalid prefix is refused as early as the bytes show it. */
#ifndef MR_PROXYPROTO_H
#define MR_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>

#include "addr.h"

/* A v1 line, CRLF included, is at most 107 bytes. */
#define PROXYPROTO_V1_MAX 107
/* The fixed part of a v2 header; the 16-bit length at its end says how much follows. */
#define PROXYPROTO_V2_FIXED 16
/* Default bound on a whole v2 header (fixed part, addresses and TLVs). */
#define PROXYPROTO_V2_MAX_DEFAULT 1024

struct proxyproto_result {
    int version; /* 1 or 2 */
    /* No client address: use the connection's own endpoints. Set for the v2
     * LOCAL command (a health check from the balancer itself), v1 UNKNOWN,
     * and v2 PROXY with the UNSPEC or UNIX family. src and dst are then
     * empty (family 0). */
    bool local;
    struct addr src; /* the client, with its port */
    struct addr dst; /* where the client connected to, with its port */
    /* v2 PP2_TYPE_SSL with the PP2_CLIENT_SSL bit: the client used TLS to
     * the balancer, so the connection counts as secured. */
    bool ssl;
    /* v2 PP2_TYPE_AUTHORITY: the host name the client asked for (TLS SNI);
     * "" when absent. Printable, no spaces or control characters. */
    char authority[256];
};

/* Parse a header at the start of data[0..len). v2 headers longer than
 * max_len bytes in all are refused (0 means PROXYPROTO_V2_MAX_DEFAULT);
 * v1 is always bounded by PROXYPROTO_V1_MAX.
 *
 * Returns the header's length (> 0) when it is complete and valid, 0 when
 * the bytes so far are a valid beginning, -1 when they are not, with
 * *error_r one of (static strings):
 *   "Not a PROXY protocol header"          neither the v1 nor the v2 signature
 *   "PROXY v1: no CRLF within 107 bytes"
 *   "PROXY v1: line not terminated by CRLF" a bare LF
 *   "PROXY v1: malformed header line"      missing, extra or empty fields
 *   "PROXY v1: unsupported protocol"       not TCP4, TCP6 or UNKNOWN
 *   "PROXY v1: invalid source address"     not an address of the protocol's family
 *   "PROXY v1: invalid destination address"
 *   "PROXY v1: invalid source port"        not decimal 0..65535 without leading zeros
 *   "PROXY v1: invalid destination port"
 *   "PROXY v2: unsupported version"        version nibble not 2
 *   "PROXY v2: unsupported command"        neither LOCAL nor PROXY
 *   "PROXY v2: unsupported address family" PROXY over anything but UNSPEC or
 *                                          TCP/IPv4, TCP/IPv6, UNIX stream
 *   "PROXY v2: header too long"            over max_len
 *   "PROXY v2: length too short for the address family"
 *   "PROXY v2: truncated TLV"              a TLV runs past the header's length
 *   "PROXY v2: malformed SSL TLV"          shorter than its 5 fixed bytes
 *   "PROXY v2: malformed authority TLV"    over 255 bytes, or a control/space byte
 * *out is complete only when the return value is > 0. */
int proxyproto_parse(const char *data, size_t len, size_t max_len,
                     struct proxyproto_result *out, const char **error_r);

#endif
