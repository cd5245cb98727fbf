/* test-proxyproto - table-driven tests of the PROXY protocol v1/v2 header
 * parser: v1 lines, v2 headers as HAProxy sends them (byte captures built
 * here, TLVs included), exact errors, and for every case every split
 * point: a prefix must answer "need more" or the whole input's answer. */
#include <stdlib.h>

#include "mem.h"
#include "proxyproto.h"
#include "test.h"

#define E_SIG "Not a PROXY protocol header"
#define E_V1_LONG "PROXY v1: no CRLF within 107 bytes"
#define E_V1_LF "PROXY v1: line not terminated by CRLF"
#define E_V1_LINE "PROXY v1: malformed header line"
#define E_V1_PROTO "PROXY v1: unsupported protocol"
#define E_V1_SRC "PROXY v1: invalid source address"
#define E_V1_DST "PROXY v1: invalid destination address"
#define E_V1_SPORT "PROXY v1: invalid source port"
#define E_V1_DPORT "PROXY v1: invalid destination port"
#define E_V2_VERSION "PROXY v2: unsupported version"
#define E_V2_COMMAND "PROXY v2: unsupported command"
#define E_V2_FAMILY "PROXY v2: unsupported address family"
#define E_V2_LONG "PROXY v2: header too long"
#define E_V2_SHORT "PROXY v2: length too short for the address family"
#define E_V2_TLV "PROXY v2: truncated TLV"
#define E_V2_SSL "PROXY v2: malformed SSL TLV"
#define E_V2_AUTH "PROXY v2: malformed authority TLV"

/* The v2 signature, then version/command, family, 16-bit length. */
#define SIG "\r\n\r\n\0\r\nQUIT\n"
/* 192.0.2.1:56324 -> 198.51.100.7:143 */
#define TCP4_ADDRS "\xc0\x00\x02\x01" "\xc6\x33\x64\x07" "\xdc\x04" "\x00\x8f"
#define TCP4_SRC "192.0.2.1:56324"
#define TCP4_DST "198.51.100.7:143"

/* HAProxy "send-proxy-v2-ssl" style, TCP6 [2001:db8::1]:40000 ->
 * [2001:db8::25]:993 with ALPN "imap", AUTHORITY "imap.example.com", SSL
 * (client bit, verify 0, sub-TLVs version "TLSv1.3" and cipher) and a
 * correct CRC32C TLV last. */
#define TCP6_SSL_CAPTURE                                                                     \
    "\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a\x21\x21\x00\x70"                       \
    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"                       \
    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x25"                       \
    "\x9c\x40\x03\xe1\x01\x00\x04\x69\x6d\x61\x70\x02\x00\x10\x69\x6d"                       \
    "\x61\x70\x2e\x65\x78\x61\x6d\x70\x6c\x65\x2e\x63\x6f\x6d\x20\x00"                       \
    "\x28\x01\x00\x00\x00\x00\x21\x00\x07\x54\x4c\x53\x76\x31\x2e\x33"                       \
    "\x23\x00\x16\x54\x4c\x53\x5f\x41\x45\x53\x5f\x32\x35\x36\x5f\x47"                       \
    "\x43\x4d\x5f\x53\x48\x41\x33\x38\x34\x03\x00\x04\x92\xf5\x4c\x5b"

#define V1_UNKNOWN_107                                                                       \
    "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "                                 \
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"

struct pp_case {
    const char *data;
    size_t len;
    int want; /* header length, 0 or -1 */
    const char *error;
    int version;
    bool local;
    const char *src, *dst; /* addr_str() forms, "unix" for none */
    bool ssl;
    const char *authority; /* NULL for "" */
};

#define IN(s) .data = (s), .len = sizeof(s) - 1
#define OK1(n, s, d) .want = (n), .version = 1, .src = (s), .dst = (d)
#define OK2(n, s, d) .want = (n), .version = 2, .src = (s), .dst = (d)
#define LOCAL(n, v) .want = (n), .version = (v), .local = true, .src = "unix", .dst = "unix"
#define BAD(e) .want = -1, .error = (e)

static const struct pp_case cases[] = {
    /* v1 */
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 56324 143\r\n"), OK1(45, TCP4_SRC, TCP4_DST)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 56324 143\r\nA1 CAPABILITY\r\n"),
     OK1(45, TCP4_SRC, TCP4_DST)},
    {IN("PROXY TCP6 2001:db8::1 2001:db8::25 40000 993\r\n"),
     OK1(47, "[2001:db8::1]:40000", "[2001:db8::25]:993")},
    {IN("PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.7 1 0\r\n"),
     OK1(53, "192.0.2.1:1", "198.51.100.7:0")},
    {IN("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"),
     OK1(44, "0.0.0.0:0", "255.255.255.255:65535")},
    {IN("PROXY UNKNOWN\r\n"), LOCAL(15, 1)},
    {IN("PROXY UNKNOWN 192.0.2.1 whatever \x01\r\n"), LOCAL(36, 1)},
    {IN(V1_UNKNOWN_107), LOCAL(107, 1)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 56324 143\n"), BAD(E_V1_LF)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 56324 143\r\r\n"), BAD(E_V1_DPORT)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 56324 143 \r\n"), BAD(E_V1_LINE)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 56324 143 x\r\n"), BAD(E_V1_LINE)},
    {IN("PROXY TCP4 192.0.2.1  198.51.100.7 56324 143\r\n"), BAD(E_V1_LINE)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 56324\r\n"), BAD(E_V1_LINE)},
    {IN("PROXY TCP4\r\n"), BAD(E_V1_LINE)},
    {IN("PROXY \r\n"), BAD(E_V1_LINE)},
    {IN("PROXY  TCP4 192.0.2.1 198.51.100.7 1 2\r\n"), BAD(E_V1_LINE)},
    {IN("PROXY TCP4 192.0.2.1\0 198.51.100.7 1 2\r\n"), BAD(E_V1_LINE)},
    {IN("PROXY UDP4 192.0.2.1 198.51.100.7 1 2\r\n"), BAD(E_V1_PROTO)},
    {IN("PROXY tcp4 192.0.2.1 198.51.100.7 1 2\r\n"), BAD(E_V1_PROTO)},
    {IN("PROXY UNKNOWNX\r\n"), BAD(E_V1_PROTO)},
    {IN("PROXY TCP4 2001:db8::1 198.51.100.7 1 2\r\n"), BAD(E_V1_SRC)},
    {IN("PROXY TCP4 01.2.3.4 198.51.100.7 1 2\r\n"), BAD(E_V1_SRC)},
    {IN("PROXY TCP4 1.2.3 198.51.100.7 1 2\r\n"), BAD(E_V1_SRC)},
    {IN("PROXY TCP6 192.0.2.1 2001:db8::1 1 2\r\n"), BAD(E_V1_SRC)},
    {IN("PROXY TCP6 [2001:db8::1] 2001:db8::1 1 2\r\n"), BAD(E_V1_SRC)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.256 1 2\r\n"), BAD(E_V1_DST)},
    {IN("PROXY TCP6 2001:db8::1 192.0.2.1 1 2\r\n"), BAD(E_V1_DST)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 65536 2\r\n"), BAD(E_V1_SPORT)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 01 2\r\n"), BAD(E_V1_SPORT)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 -1 2\r\n"), BAD(E_V1_SPORT)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 +1 2\r\n"), BAD(E_V1_SPORT)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 100000 2\r\n"), BAD(E_V1_SPORT)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 1 2x\r\n"), BAD(E_V1_DPORT)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 1 99999\r\n"), BAD(E_V1_DPORT)},
    {IN(V1_UNKNOWN_107 "x"), LOCAL(107, 1)},
    {IN("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655355\r\n"), BAD(E_V1_LONG)},
    {IN("PROXY TCP4 192.0.2.1 198.51.100.7 56324 143"), .want = 0},
    {IN("PROX"), .want = 0},
    {IN("PROXY"), .want = 0},
    /* not a header at all */
    {IN("A1 LOGIN user pass\r\n"), BAD(E_SIG)},
    {IN("GET / HTTP/1.1\r\n"), BAD(E_SIG)},
    {IN("PROXX TCP4\r\n"), BAD(E_SIG)},
    {IN("proxy TCP4\r\n"), BAD(E_SIG)},
    {IN("\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c"), BAD(E_SIG)},
    {IN("\r\nA1 NOOP\r\n"), BAD(E_SIG)},
    {IN("\x16\x03\x01\x02\x00\x01"), BAD(E_SIG)}, /* a TLS ClientHello */
    /* v2 */
    {IN(SIG "\x21\x11\x00\x0c" TCP4_ADDRS), OK2(28, TCP4_SRC, TCP4_DST)},
    {IN(SIG "\x21\x11\x00\x0c" TCP4_ADDRS "A1 CAPABILITY\r\n"), OK2(28, TCP4_SRC, TCP4_DST)},
    {IN(SIG "\x21\x11\x00\x0c" TCP4_ADDRS "\r\n\r\n\0\r\nQUIT\n"), OK2(28, TCP4_SRC, TCP4_DST)},
    {IN(SIG "\x21\x11\x00\x14" TCP4_ADDRS "\x20\x00\x05" "\x00\x00\x00\x00\x00"),
     OK2(36, TCP4_SRC, TCP4_DST)},
    {IN(SIG "\x21\x11\x00\x14" TCP4_ADDRS "\x20\x00\x05" "\x05\x00\x00\x00\x01"),
     OK2(36, TCP4_SRC, TCP4_DST), .ssl = true},
    {IN(SIG "\x21\x11\x00\x18" TCP4_ADDRS "\x04\x00\x03" "\0\0\0" "\xe0\x00\x03" "abc"),
     OK2(40, TCP4_SRC, TCP4_DST)},
    {IN(SIG "\x21\x11\x00\x10" TCP4_ADDRS "\x02\x00\x01" "x"), OK2(32, TCP4_SRC, TCP4_DST),
     .authority = "x"},
    {IN(SIG "\x21\x11\x00\x0f" TCP4_ADDRS "\x02\x00\x00"), OK2(31, TCP4_SRC, TCP4_DST)},
    {IN(TCP6_SSL_CAPTURE), .want = 128, .version = 2, .src = "[2001:db8::1]:40000",
     .dst = "[2001:db8::25]:993", .ssl = true, .authority = "imap.example.com"},
    {IN(SIG "\x21\x21\x00\x24"
        "\0\0\0\0\0\0\0\0\0\0\xff\xff\xc0\x00\x02\x01"
        "\0\0\0\0\0\0\0\0\0\0\xff\xff\xc6\x33\x64\x07" "\x00\x01\x00\x02"),
     OK2(52, "192.0.2.1:1", "198.51.100.7:2")},
    {IN(SIG "\x20\x00\x00\x00"), LOCAL(16, 2)},
    {IN(SIG "\x20\x00\x00\x00" "A1 NOOP\r\n"), LOCAL(16, 2)},
    {IN(SIG "\x20\xff\x00\x03" "abc"), LOCAL(19, 2)},
    {IN(SIG "\x20\x11\x00\x0f" TCP4_ADDRS "\x20\x00\x00"), LOCAL(31, 2)},
    {IN(SIG "\x21\x00\x00\x00"), LOCAL(16, 2)},
    {IN(SIG "\x21\x00\x00\x06" "\x02\x00\x03" "a.b"), LOCAL(22, 2), .authority = "a.b"},
    {IN(SIG "\x11\x11\x00\x0c" TCP4_ADDRS), BAD(E_V2_VERSION)},
    {IN(SIG "\x31"), BAD(E_V2_VERSION)},
    {IN(SIG "\x22\x11\x00\x0c" TCP4_ADDRS), BAD(E_V2_COMMAND)},
    {IN(SIG "\x2f"), BAD(E_V2_COMMAND)},
    {IN(SIG "\x21\x12\x00\x0c" TCP4_ADDRS), BAD(E_V2_FAMILY)},
    {IN(SIG "\x21\x22"), BAD(E_V2_FAMILY)},
    {IN(SIG "\x21\x41\x00\x00"), BAD(E_V2_FAMILY)},
    {IN(SIG "\x21\x01\x00\x00"), BAD(E_V2_FAMILY)},
    {IN(SIG "\x21\x11\x00\x0b" "\xc0\x00\x02\x01" "\xc6\x33\x64\x07" "\xdc\x04\x00"),
     BAD(E_V2_SHORT)},
    {IN(SIG "\x21\x21\x00\x0c" TCP4_ADDRS), BAD(E_V2_SHORT)},
    {IN(SIG "\x21\x31\x00\x6c"), BAD(E_V2_SHORT)},
    {IN(SIG "\x21\x11\x03\xf1"), BAD(E_V2_LONG)},
    {IN(SIG "\x20\x00\xff\xff"), BAD(E_V2_LONG)},
    {IN(SIG "\x21\x11\x00\x0e" TCP4_ADDRS "\x04\x00"), BAD(E_V2_TLV)},
    {IN(SIG "\x21\x11\x00\x11" TCP4_ADDRS "\x04\x00\x03" "ab"), BAD(E_V2_TLV)},
    {IN(SIG "\x21\x11\x00\x0d" TCP4_ADDRS "\x04"), BAD(E_V2_TLV)},
    {IN(SIG "\x21\x11\x00\x13" TCP4_ADDRS "\x20\x00\x04" "\x01\x00\x00\x00"), BAD(E_V2_SSL)},
    {IN(SIG "\x21\x11\x00\x12" TCP4_ADDRS "\x02\x00\x03" "a b"), BAD(E_V2_AUTH)},
    {IN(SIG "\x21\x11\x00\x12" TCP4_ADDRS "\x02\x00\x03" "a\nb"), BAD(E_V2_AUTH)},
    {IN(SIG "\x21\x11\x00\x12" TCP4_ADDRS "\x02\x00\x03" "a\0b"), BAD(E_V2_AUTH)},
    {IN(SIG "\x21\x11\x00\x0c" "\xc0\x00\x02"), .want = 0},
    {IN(SIG), .want = 0},
    {IN("\r\n\r\n\0"), .want = 0},
};

static void check_result(const struct pp_case *c, const struct proxyproto_result *r)
{
    char src[ADDR_STRLEN], dst[ADDR_STRLEN];
    CHECK_INT(r->version, c->version);
    CHECK_INT(r->local, c->local);
    CHECK_STR(addr_str(&r->src, src, sizeof(src)), c->src);
    CHECK_STR(addr_str(&r->dst, dst, sizeof(dst)), c->dst);
    CHECK_INT(r->ssl, c->ssl);
    CHECK_STR(r->authority, c->authority != NULL ? c->authority : "");
}

static bool same_addr(const struct addr *a, const struct addr *b)
{
    return a->family == b->family && a->port == b->port &&
           (a->family == 0 || addr_ip_eq(a, b));
}

static bool same_result(const struct proxyproto_result *a, const struct proxyproto_result *b)
{
    return a->version == b->version && a->local == b->local && a->ssl == b->ssl &&
           same_addr(&a->src, &b->src) && same_addr(&a->dst, &b->dst) &&
           strcmp(a->authority, b->authority) == 0;
}

/* Every prefix of data, in a buffer of exactly that size (so ASan sees any
 * read past it), answers "need more" or what the whole input answers. */
static void check_splits(size_t idx, const char *data, size_t len, size_t max_len)
{
    struct proxyproto_result full, part;
    const char *full_error = NULL, *error = NULL;
    int want = proxyproto_parse(data, len, max_len, &full, &full_error);
    for (size_t k = 0; k <= len; k++) {
        char *copy = malloc(k > 0 ? k : 1);
        memcpy(copy, data, k);
        int got = proxyproto_parse(copy, k, max_len, &part, &error);
        free(copy);
        bool ok;
        if (want > 0)
            ok = (size_t)want > k ? got == 0 : got == want && same_result(&part, &full);
        else if (want == 0)
            ok = got == 0;
        else
            ok = got == 0 || (got == -1 && strcmp(error, full_error) == 0);
        if (!ok)
            fprintf(stderr, "case %zu: prefix %zu of %zu gives %d, whole %d\n", idx, k, len,
                    got, want);
        CHECK(ok);
    }
}

static void test_cases(void)
{
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const struct pp_case *c = &cases[i];
        struct proxyproto_result r;
        const char *error = NULL;
        int got = proxyproto_parse(c->data, c->len, 0, &r, &error);
        if (got != c->want)
            fprintf(stderr, "case %zu: error %s\n", i, got < 0 ? error : "none");
        CHECK_INT(got, c->want);
        if (c->want < 0 && got < 0)
            CHECK_STR(error, c->error);
        if (c->want > 0 && got == c->want)
            check_result(c, &r);
        check_splits(i, c->data, c->len, 0);
    }
}

/* A v2 header: fixed part, then body_len bytes of body (zero-filled past
 * the given bytes). Returns the total length. */
static size_t build_v2(char *out, unsigned char ver_cmd, unsigned char family, size_t body_len,
                       const char *body, size_t given)
{
    memcpy(out, SIG, 12);
    out[12] = (char)ver_cmd;
    out[13] = (char)family;
    out[14] = (char)(body_len >> 8);
    out[15] = (char)(body_len & 0xff);
    memset(out + 16, 0, body_len);
    memcpy(out + 16, body, given);
    return 16 + body_len;
}

static void test_unix_and_limits(void)
{
    static char h[16 + 65535];
    struct proxyproto_result r;
    const char *error = NULL;

    /* UNIX stream: 2 x 108 bytes of paths, no usable address. */
    size_t n = build_v2(h, 0x21, 0x31, 216, "/run/haproxy.sock", 17);
    CHECK_INT(proxyproto_parse(h, n, 0, &r, &error), 232);
    CHECK(r.local && r.src.family == 0 && r.dst.family == 0);
    check_splits(1000, h, n, 0);

    /* The whole header against max_len: 0 means 1 KiB. */
    n = build_v2(h, 0x21, 0x11, 1024 - 16, TCP4_ADDRS "\x04\x03\xe1", 15);
    CHECK_INT(proxyproto_parse(h, n, 0, &r, &error), 1024);
    CHECK_INT(proxyproto_parse(h, n, 1023, &r, &error), -1);
    CHECK_STR(error, E_V2_LONG);
    CHECK_INT(proxyproto_parse(h, 16, 1023, &r, &error), -1);
    n = build_v2(h, 0x21, 0x11, 65535, TCP4_ADDRS "\x04\xff\xf0", 15);
    CHECK_INT(proxyproto_parse(h, n, 16 + 65535, &r, &error), 16 + 65535);
    CHECK_INT(proxyproto_parse(h, n, 0, &r, &error), -1);
    CHECK_STR(error, E_V2_LONG);
    /* v1 ignores max_len */
    CHECK_INT(proxyproto_parse("PROXY UNKNOWN\r\n", 15, 16, &r, &error), 15);

    /* The authority holds up to 255 bytes. */
    char body[12 + 3 + 256];
    memcpy(body, TCP4_ADDRS, 12);
    body[12] = 0x02;
    body[13] = 0x00;
    body[14] = (char)255;
    memset(body + 15, 'a', 256);
    n = build_v2(h, 0x21, 0x11, 12 + 3 + 255, body, 12 + 3 + 255);
    CHECK_INT(proxyproto_parse(h, n, 0, &r, &error), (int)n);
    CHECK_INT(strlen(r.authority), 255);
    body[14] = 0x00;
    body[13] = 0x01; /* 256 */
    n = build_v2(h, 0x21, 0x11, 12 + 3 + 256, body, 12 + 3 + 256);
    CHECK_INT(proxyproto_parse(h, n, 0, &r, &error), -1);
    CHECK_STR(error, E_V2_AUTH);
}

/* A 106-byte v1 prefix without LF still waits; the 107th byte decides. */
static void test_v1_bound(void)
{
    char line[PROXYPROTO_V1_MAX + 1];
    struct proxyproto_result r;
    const char *error = NULL;
    memcpy(line, "PROXY UNKNOWN ", 14);
    memset(line + 14, 'x', sizeof(line) - 14);
    CHECK_INT(proxyproto_parse(line, 106, 0, &r, &error), 0);
    CHECK_INT(proxyproto_parse(line, 107, 0, &r, &error), -1);
    CHECK_STR(error, E_V1_LONG);
    line[105] = '\r';
    line[106] = '\n';
    CHECK_INT(proxyproto_parse(line, 107, 0, &r, &error), 107);
    CHECK(r.local);
    line[106] = 'x';
    line[107] = '\n';
    CHECK_INT(proxyproto_parse(line, 108, 0, &r, &error), -1);
    CHECK_STR(error, E_V1_LONG);
}

int main(void)
{
    RUN(test_cases);
    RUN(test_unix_and_limits);
    RUN(test_v1_bound);
    return test_done();
}
