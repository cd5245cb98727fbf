/* proxyproto - PROXY protocol v1 (text) and v2 (binary) header parser,
 * written from the HAProxy specification (proxy-protocol.txt).
 *
 * Not here: trust checks, timeouts, reading from the socket, sending the
 * protocol to backends (mailroute, like Dovecot, only receives it).
 *
 * The parse is stateless: each check looks only at bytes that are present
 * and runs in the same order whatever len is, so a shorter prefix can only
 * answer "need more" or the same error as the whole input would.
 *
 * Choices the specification leaves open: v1 is strict (single spaces,
 * upper-case keywords, no leading zeros in ports, the address must match
 * TCP4/TCP6); v1 UNKNOWN ignores the rest of its line, as the spec asks.
 * v2 LOCAL discards the whole block, family and TLVs included (the spec
 * says the family is ignored; Dovecot once got this wrong). v2 PROXY with
 * UNSPEC or UNIX is accepted as "no address". UDP is refused: the listeners
 * are stream sockets. TLVs must tile the rest of the header exactly; only
 * SSL (client bit) and AUTHORITY are read, the rest (CRC32C, NOOP, ALPN,
 * unique id, vendor types) are skipped unchecked. */
#include "proxyproto.h"

#include <arpa/inet.h>
#include <string.h>

#define ERR_SIGNATURE "Not a PROXY protocol header"
#define ERR_V1_TOO_LONG "PROXY v1: no CRLF within 107 bytes"
#define ERR_V1_LF "PROXY v1: line not terminated by CRLF"
#define ERR_V1_LINE "PROXY v1: malformed header line"
#define ERR_V1_PROTO "PROXY v1: unsupported protocol"
#define ERR_V1_SRC "PROXY v1: invalid source address"
#define ERR_V1_DST "PROXY v1: invalid destination address"
#define ERR_V1_SPORT "PROXY v1: invalid source port"
#define ERR_V1_DPORT "PROXY v1: invalid destination port"
#define ERR_V2_VERSION "PROXY v2: unsupported version"
#define ERR_V2_COMMAND "PROXY v2: unsupported command"
#define ERR_V2_FAMILY "PROXY v2: unsupported address family"
#define ERR_V2_TOO_LONG "PROXY v2: header too long"
#define ERR_V2_SHORT "PROXY v2: length too short for the address family"
#define ERR_V2_TLV "PROXY v2: truncated TLV"
#define ERR_V2_SSL "PROXY v2: malformed SSL TLV"
#define ERR_V2_AUTHORITY "PROXY v2: malformed authority TLV"

static const char v1_sig[] = "PROXY ";
#define V1_SIG_LEN (sizeof(v1_sig) - 1)
#define V1_FIELDS 6 /* PROXY proto src dst sport dport */
static const unsigned char v2_sig[12] = {
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};

/* v2 byte 12: version in the high nibble, command in the low one. */
#define V2_VERSION 0x2
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
/* v2 byte 13: address family (high nibble) and transport (low nibble). */
#define V2_FAM_UNSPEC 0x00
#define V2_FAM_TCP4 0x11
#define V2_FAM_TCP6 0x21
#define V2_FAM_UNIX 0x31
/* Address block sizes: two addresses, then two ports for TCP. */
#define V2_ADDR_TCP4 12
#define V2_ADDR_TCP6 36
#define V2_ADDR_UNIX 216

#define PP2_TYPE_AUTHORITY 0x02
#define PP2_TYPE_SSL 0x20
#define PP2_CLIENT_SSL 0x01
#define PP2_SSL_FIXED 5 /* client flags (1 byte) and verify result (4 bytes) */

static int fail(const char **error_r, const char *error)
{
    *error_r = error;
    return -1;
}

/* ---- version 1 ---- */

/* Decimal 0..65535, no sign, no leading zero. */
static bool parse_v1_port(const char *s, uint16_t *port_r)
{
    size_t n = strlen(s);
    unsigned long v = 0;
    if (n == 0 || n > 5 || (s[0] == '0' && n > 1))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *port_r = (uint16_t)v;
    return true;
}

static bool parse_v1_addr(const char *s, int family, struct addr *out)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        if (inet_pton(AF_INET, s, &in->sin_addr) != 1)
            return false;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, s, &in6->sin6_addr) != 1)
            return false;
    }
    addr_from_sockaddr(out, (const struct sockaddr *)&ss);
    return true;
}

/* Split line at single spaces into at most max fields; false on an empty
 * field (two spaces, a leading or trailing space) or too many fields. */
static bool split_fields(char *line, char **fields, size_t max, size_t *n_r)
{
    size_t n = 0;
    for (char *p = line;;) {
        char *space = strchr(p, ' ');
        if (n == max || (space != NULL ? space == p : *p == '\0'))
            return false;
        fields[n++] = p;
        if (space == NULL)
            break;
        *space = '\0';
        p = space + 1;
    }
    *n_r = n;
    return true;
}

/* "PROXY TCP4|TCP6 src dst sport dport" without CRLF. */
static int parse_v1_line(const char *data, size_t len, struct proxyproto_result *out,
                         const char **error_r)
{
    char line[PROXYPROTO_V1_MAX + 1], *f[V1_FIELDS];
    size_t n;
    memcpy(line, data, len);
    line[len] = '\0';
    if (memchr(line, '\0', len) != NULL)
        return fail(error_r, ERR_V1_LINE);
    if (strncmp(line, "PROXY UNKNOWN", 13) == 0 && (line[13] == '\0' || line[13] == ' ')) {
        out->local = true;
        return 0;
    }
    if (!split_fields(line, f, V1_FIELDS, &n) || n < 2)
        return fail(error_r, ERR_V1_LINE);
    int family = strcmp(f[1], "TCP4") == 0 ? AF_INET : strcmp(f[1], "TCP6") == 0 ? AF_INET6 : 0;
    if (family == 0)
        return fail(error_r, ERR_V1_PROTO);
    if (n != 6)
        return fail(error_r, ERR_V1_LINE);
    if (!parse_v1_addr(f[2], family, &out->src))
        return fail(error_r, ERR_V1_SRC);
    if (!parse_v1_addr(f[3], family, &out->dst))
        return fail(error_r, ERR_V1_DST);
    if (!parse_v1_port(f[4], &out->src.port))
        return fail(error_r, ERR_V1_SPORT);
    if (!parse_v1_port(f[5], &out->dst.port))
        return fail(error_r, ERR_V1_DPORT);
    return 0;
}

static int parse_v1(const char *data, size_t len, struct proxyproto_result *out,
                    const char **error_r)
{
    size_t scan = len < PROXYPROTO_V1_MAX ? len : PROXYPROTO_V1_MAX;
    const char *lf = memchr(data, '\n', scan);
    if (lf == NULL)
        return len >= PROXYPROTO_V1_MAX ? fail(error_r, ERR_V1_TOO_LONG) : 0;
    size_t line_len = (size_t)(lf - data);
    if (data[line_len - 1] != '\r')
        return fail(error_r, ERR_V1_LF);
    out->version = 1;
    if (parse_v1_line(data, line_len - 1, out, error_r) < 0)
        return -1;
    return (int)line_len + 1;
}

/* ---- version 2 ---- */

static size_t v2_addr_len(unsigned char family)
{
    switch (family) {
    case V2_FAM_TCP4:
        return V2_ADDR_TCP4;
    case V2_FAM_TCP6:
        return V2_ADDR_TCP6;
    case V2_FAM_UNIX:
        return V2_ADDR_UNIX;
    default:
        return 0;
    }
}

static bool v2_family_ok(unsigned char family)
{
    return family == V2_FAM_UNSPEC || v2_addr_len(family) != 0;
}

static uint16_t get16(const unsigned char *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* src addr, dst addr, src port, dst port, all in network order. */
static void parse_v2_addrs(const unsigned char *p, unsigned char family,
                           struct proxyproto_result *out)
{
    struct sockaddr_storage src, dst;
    memset(&src, 0, sizeof(src));
    memset(&dst, 0, sizeof(dst));
    if (family == V2_FAM_TCP4) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&src, *d4 = (struct sockaddr_in *)&dst;
        s4->sin_family = d4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, p, 4);
        memcpy(&d4->sin_addr, p + 4, 4);
        memcpy(&s4->sin_port, p + 8, 2);
        memcpy(&d4->sin_port, p + 10, 2);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&src;
        struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&dst;
        s6->sin6_family = d6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, p, 16);
        memcpy(&d6->sin6_addr, p + 16, 16);
        memcpy(&s6->sin6_port, p + 32, 2);
        memcpy(&d6->sin6_port, p + 34, 2);
    }
    addr_from_sockaddr(&out->src, (const struct sockaddr *)&src);
    addr_from_sockaddr(&out->dst, (const struct sockaddr *)&dst);
}

static int parse_v2_authority(const unsigned char *v, size_t n, struct proxyproto_result *out,
                              const char **error_r)
{
    if (n >= sizeof(out->authority))
        return fail(error_r, ERR_V2_AUTHORITY);
    for (size_t i = 0; i < n; i++) {
        if (v[i] <= 0x20 || v[i] == 0x7f)
            return fail(error_r, ERR_V2_AUTHORITY);
    }
    memcpy(out->authority, v, n);
    out->authority[n] = '\0';
    return 0;
}

/* Type (1 byte), length (2 bytes), value; they must fill p[0..n) exactly. */
static int parse_v2_tlvs(const unsigned char *p, size_t n, struct proxyproto_result *out,
                         const char **error_r)
{
    while (n > 0) {
        if (n < 3 || get16(p + 1) > n - 3)
            return fail(error_r, ERR_V2_TLV);
        unsigned char type = p[0];
        size_t vlen = get16(p + 1);
        const unsigned char *v = p + 3;
        if (type == PP2_TYPE_SSL) {
            if (vlen < PP2_SSL_FIXED)
                return fail(error_r, ERR_V2_SSL);
            out->ssl = (v[0] & PP2_CLIENT_SSL) != 0;
        } else if (type == PP2_TYPE_AUTHORITY) {
            if (parse_v2_authority(v, vlen, out, error_r) < 0)
                return -1;
        }
        p += 3 + vlen;
        n -= 3 + vlen;
    }
    return 0;
}

/* The checks on the fixed part, each only once its byte is there. */
static int check_v2_fixed(const unsigned char *p, size_t len, size_t max_len,
                          const char **error_r)
{
    if (len <= 12)
        return 0;
    unsigned char cmd = p[12] & 0x0f;
    if ((p[12] >> 4) != V2_VERSION)
        return fail(error_r, ERR_V2_VERSION);
    if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY)
        return fail(error_r, ERR_V2_COMMAND);
    if (len > 13 && cmd == V2_CMD_PROXY && !v2_family_ok(p[13]))
        return fail(error_r, ERR_V2_FAMILY);
    if (len < PROXYPROTO_V2_FIXED)
        return 0;
    size_t body = get16(p + 14);
    if (PROXYPROTO_V2_FIXED + body > max_len)
        return fail(error_r, ERR_V2_TOO_LONG);
    if (cmd == V2_CMD_PROXY && body < v2_addr_len(p[13]))
        return fail(error_r, ERR_V2_SHORT);
    return 0;
}

static int parse_v2(const unsigned char *p, size_t len, size_t max_len,
                    struct proxyproto_result *out, const char **error_r)
{
    if (check_v2_fixed(p, len, max_len, error_r) < 0)
        return -1;
    if (len < PROXYPROTO_V2_FIXED || len < PROXYPROTO_V2_FIXED + (size_t)get16(p + 14))
        return 0;
    size_t body = get16(p + 14);
    out->version = 2;
    if ((p[12] & 0x0f) == V2_CMD_LOCAL) {
        out->local = true;
        return (int)(PROXYPROTO_V2_FIXED + body);
    }
    unsigned char family = p[13];
    size_t addr_len = v2_addr_len(family);
    if (family == V2_FAM_TCP4 || family == V2_FAM_TCP6)
        parse_v2_addrs(p + PROXYPROTO_V2_FIXED, family, out);
    else
        out->local = true;
    if (parse_v2_tlvs(p + PROXYPROTO_V2_FIXED + addr_len, body - addr_len, out, error_r) < 0)
        return -1;
    return (int)(PROXYPROTO_V2_FIXED + body);
}

/* ---- both ---- */

int proxyproto_parse(const char *data, size_t len, size_t max_len,
                     struct proxyproto_result *out, const char **error_r)
{
    memset(out, 0, sizeof(*out));
    if (max_len == 0)
        max_len = PROXYPROTO_V2_MAX_DEFAULT;
    if (len == 0)
        return 0;
    if (data[0] == v1_sig[0]) {
        size_t n = len < V1_SIG_LEN ? len : V1_SIG_LEN;
        if (memcmp(data, v1_sig, n) != 0)
            return fail(error_r, ERR_SIGNATURE);
        return len < V1_SIG_LEN ? 0 : parse_v1(data, len, out, error_r);
    }
    size_t n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
    if (memcmp(data, v2_sig, n) != 0)
        return fail(error_r, ERR_SIGNATURE);
    return parse_v2((const unsigned char *)data, len, max_len, out, error_r);
}
