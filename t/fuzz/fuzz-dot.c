/* fuzz-dot - libFuzzer target for the DATA dot-stuffing codec.
 *
 * The first two input bytes seed the chunking, the rest is a message.
 * Properties checked (abort on mismatch):
 * - encoding in random chunks gives the same bytes as in one piece;
 * - decode(encode(m)) == normalise(m) (LF preceded by CR, final CRLF), in
 *   random chunks, consuming exactly the encoded bytes, "QUIT" left over;
 * - decoding the raw message itself (arbitrary bytes) gives the same
 *   output, count and done flag in random chunks as in one piece. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dot.h"

#define REQUIRE(cond)                                                                    \
    do {                                                                                 \
        if (!(cond))                                                                     \
            abort();                                                                     \
    } while (0)

struct chunker {
    uint32_t state;
};

/* 1..16 bytes most of the time, sometimes a bigger piece. */
static size_t next_chunk(struct chunker *c, size_t left)
{
    c->state = c->state * 1103515245u + 12345u;
    uint32_t r = c->state >> 16;
    size_t len = (r & 7) == 0 ? 1 + (r >> 3) % 512 : 1 + (r >> 3) % 16;
    return len < left ? len : left;
}

static void normalise(const char *in, size_t n, struct buf *out)
{
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
            buf_append(out, "\r", 1);
        buf_append(out, &in[i], 1);
    }
    if (n > 0 && in[n - 1] != '\n')
        buf_append(out, "\r\n", 2);
}

static void encode(const char *in, size_t n, struct chunker *c, struct buf *out)
{
    struct dot_encoder e;
    dot_encoder_init(&e);
    for (size_t pos = 0; pos < n;) {
        size_t len = c != NULL ? next_chunk(c, n - pos) : n - pos;
        dot_encode(&e, in + pos, len, out);
        pos += len;
    }
    dot_encode_end(&e, out);
}

static size_t decode(const char *in, size_t n, struct chunker *c, struct buf *out, bool *done)
{
    struct dot_decoder d = {0};
    size_t pos = 0;

    *done = false;
    while (pos < n && !*done) {
        size_t len = c != NULL ? next_chunk(c, n - pos) : n - pos;
        size_t used = dot_decode(&d, in + pos, len, out, done);
        REQUIRE(used <= len);
        REQUIRE(used == len || *done);
        pos += used;
    }
    return pos;
}

static bool same(const struct buf *a, const struct buf *b)
{
    return buf_used(a) == buf_used(b) &&
           (buf_used(a) == 0 || memcmp(buf_ptr(a), buf_ptr(b), buf_used(a)) == 0);
}

static void check_round_trip(const char *msg, size_t n, struct chunker *c)
{
    struct buf want = BUF_INIT, enc = BUF_INIT, enc_chunked = BUF_INIT, dec = BUF_INIT;
    bool done;

    normalise(msg, n, &want);
    encode(msg, n, NULL, &enc);
    encode(msg, n, c, &enc_chunked);
    REQUIRE(same(&enc, &enc_chunked));
    size_t enc_len = buf_used(&enc);
    buf_append(&enc, "QUIT\r\n", 6);
    size_t used = decode(buf_ptr(&enc), buf_used(&enc), c, &dec, &done);
    REQUIRE(done && used == enc_len);
    REQUIRE(same(&dec, &want));
    buf_free(&want);
    buf_free(&enc);
    buf_free(&enc_chunked);
    buf_free(&dec);
}

/* Encoding as txn.c does (dot_encode_verbatim() runs sent as they are,
 * dot_encode() for a few bytes at each insertion), every chunk in its own
 * exact-size allocation (ASan sees a read past it), gives the same bytes. */
static void check_verbatim(const char *msg, size_t n, struct chunker *c)
{
    struct buf want = BUF_INIT, got = BUF_INIT;
    struct dot_encoder e;
    encode(msg, n, NULL, &want);
    dot_encoder_init(&e);
    for (size_t pos = 0; pos < n;) {
        size_t len = next_chunk(c, n - pos);
        char *chunk = malloc(len);
        memcpy(chunk, msg + pos, len);
        const char *p = chunk;
        size_t left = len;
        while (left > 0) {
            size_t run = dot_encode_verbatim(&e, p, left);
            REQUIRE(run <= left);
            buf_append(&got, p, run);
            p += run;
            left -= run;
            if (left == 0)
                break;
            struct dot_encoder probe = e;
            struct buf one = BUF_INIT;
            dot_encode(&probe, p, 1, &one);
            REQUIRE(buf_used(&one) == 2);
            buf_free(&one);
            size_t piece = 1 + (size_t)(c->state >> 20) % 3;
            piece = piece < left ? piece : left;
            dot_encode(&e, p, piece, &got);
            p += piece;
            left -= piece;
        }
        free(chunk);
        pos += len;
    }
    dot_encode_end(&e, &got);
    REQUIRE(same(&want, &got));
    buf_free(&want);
    buf_free(&got);
}

static void check_decode_splits(const char *msg, size_t n, struct chunker *c)
{
    struct buf whole = BUF_INIT, chunked = BUF_INIT;
    bool done_whole, done_chunked;

    size_t used_whole = decode(msg, n, NULL, &whole, &done_whole);
    size_t used_chunked = decode(msg, n, c, &chunked, &done_chunked);
    REQUIRE(used_whole == used_chunked && done_whole == done_chunked);
    REQUIRE(same(&whole, &chunked));
    REQUIRE(buf_used(&whole) <= used_whole);
    buf_free(&whole);
    buf_free(&chunked);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct chunker c = {(uint32_t)data[0] << 8 | data[1]};
    const char *msg = (const char *)data + 2;
    size_t n = size - 2;

    check_round_trip(msg, n, &c);
    check_decode_splits(msg, n, &c);
    check_verbatim(msg, n, &c);
    return 0;
}
