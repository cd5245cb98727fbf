/* fuzz-proxyproto - libFuzzer target for the PROXY protocol header parser.
 *
 * The first byte picks the v2 size limit, the rest is what a load balancer
 * sent. Besides the sanitizers (each prefix is parsed from a buffer of
 * exactly its size, so any read past the end shows), it checks that the
 * parse is the same for any split of the input: every prefix answers
 * "need more" or exactly what the whole input answers (same length, same
 * result, same error), and a complete header never needs bytes past its
 * length. On success: a known version, within the limits, addresses only
 * when not local, a printable authority. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"

#define REQUIRE(cond)                                                                    \
    do {                                                                                 \
        if (!(cond))                                                                     \
            abort();                                                                     \
    } while (0)

/* Past this many bytes nothing the parser reads can change (the largest
 * limit used here, plus slack); longer prefixes are checked only whole. */
#define SPLIT_SCAN (4096 + 64)

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

static void check_success(const struct proxyproto_result *r, int n, size_t size,
                          size_t max_len)
{
    REQUIRE((size_t)n <= size);
    REQUIRE(r->version == 1 || r->version == 2);
    if (r->version == 1)
        REQUIRE(n <= PROXYPROTO_V1_MAX && !r->ssl && r->authority[0] == '\0');
    else
        REQUIRE(n >= PROXYPROTO_V2_FIXED && (size_t)n <= max_len);
    if (r->local) {
        REQUIRE(r->src.family == 0 && r->dst.family == 0);
    } else {
        REQUIRE(r->src.family == AF_INET || r->src.family == AF_INET6);
        REQUIRE(r->dst.family == AF_INET || r->dst.family == AF_INET6);
    }
    size_t alen = strnlen(r->authority, sizeof(r->authority));
    REQUIRE(alen < sizeof(r->authority));
    for (size_t i = 0; i < alen; i++)
        REQUIRE((unsigned char)r->authority[i] > 0x20 && r->authority[i] != 0x7f);
}

static int parse_copy(const char *data, size_t k, size_t max_len,
                      struct proxyproto_result *out, const char **error_r)
{
    char *copy = malloc(k > 0 ? k : 1);
    memcpy(copy, data, k);
    int ret = proxyproto_parse(copy, k, max_len, out, error_r);
    free(copy);
    return ret;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t limits[] = {0, 16, 28, 232, 512, 4096};
    if (size < 1)
        return 0;
    size_t max_len = limits[data[0] % (sizeof(limits) / sizeof(limits[0]))];
    const char *in = (const char *)data + 1;
    size_t len = size - 1;

    struct proxyproto_result whole, part;
    const char *whole_error = NULL, *error = NULL;
    int want = parse_copy(in, len, max_len, &whole, &whole_error);
    REQUIRE(want >= -1);
    if (want > 0)
        check_success(&whole, want, len, max_len != 0 ? max_len : PROXYPROTO_V2_MAX_DEFAULT);
    if (want < 0)
        REQUIRE(whole_error != NULL);

    size_t scan = len < SPLIT_SCAN ? len : SPLIT_SCAN;
    for (size_t k = 0; k <= scan; k++) {
        int got = parse_copy(in, k, max_len, &part, &error);
        if (want > 0 && k < (size_t)want)
            REQUIRE(got == 0);
        else if (want > 0)
            REQUIRE(got == want && same_result(&part, &whole));
        else if (want == 0)
            REQUIRE(got == 0);
        else
            REQUIRE(got == 0 || (got == -1 && strcmp(error, whole_error) == 0));
    }
    return 0;
}
