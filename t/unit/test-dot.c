/* test-dot - tests of the DATA dot-stuffing decoder and encoder: exact
 * outputs for the edge cases, every split of the input, and encode->decode
 * round trips on random data checked against simple byte-at-a-time
 * reference implementations. */
#include <stdint.h>
#include <stdlib.h>

#include "dot.h"
#include "test.h"

/* --- reference implementations: slow, obvious, whole input at once --- */

/* What the encoder then the decoder should give back: LF preceded by CR,
 * and a final CRLF when the message does not end in LF. */
static void ref_normalise(const char *in, size_t n, struct buf *out)
{
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
            buf_append(out, "\r", 1);
        buf_append(out, &in[i], 1);
    }
    if (n > 0 && in[n - 1] != '\n')
        buf_append(out, "\r\n", 2);
}

/* The decoder's contract over a whole input: returns the bytes consumed;
 * a "." or ".\r" at a line start at the very end is held back (consumed,
 * not output) as the streaming decoder does. */
static size_t ref_decode(const char *in, size_t n, struct buf *out, bool *done)
{
    bool line_start = true;

    *done = false;
    for (size_t i = 0; i < n; i++) {
        if (line_start && in[i] == '.') {
            if (i + 1 == n || (in[i + 1] == '\r' && i + 2 == n))
                return n;
            if (in[i + 1] == '\r' && in[i + 2] == '\n') {
                *done = true;
                return i + 3;
            }
            line_start = false;
            continue; /* the dot is dropped */
        }
        buf_append(out, &in[i], 1);
        line_start = in[i] == '\n' && i > 0 && in[i - 1] == '\r';
    }
    return n;
}

/* The encoder's contract: a "." at a line start doubled, a CR before every
 * bare LF (which then ends a line as well), a CRLF added when the message
 * does not end in LF, then ".\r\n". */
static void ref_encode(const char *in, size_t n, struct buf *out)
{
    bool line_start = true;

    for (size_t i = 0; i < n; i++) {
        if (line_start && in[i] == '.')
            buf_append(out, ".", 1);
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
            buf_append(out, "\r", 1);
        buf_append(out, &in[i], 1);
        line_start = in[i] == '\n';
    }
    if (n > 0 && in[n - 1] != '\n')
        buf_append(out, "\r\n", 2);
    buf_append(out, ".\r\n", 3);
}

/* --- drivers --- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

enum split { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_RANDOM, SPLIT_AT };

/* Next chunk length for a split mode; `at` is the one split point of SPLIT_AT. */
static size_t chunk_len(enum split mode, size_t pos, size_t left, size_t at)
{
    switch (mode) {
    case SPLIT_BYTES:
        return 1;
    case SPLIT_RANDOM:
        return 1 + rng() % (left < 40 ? left : 40);
    case SPLIT_AT:
        return pos < at ? at - pos : left;
    case SPLIT_WHOLE:
    default:
        return left;
    }
}

/* Each chunk goes to the codec in its own exact-size allocation: a codec
 * that looks past its input reads neither the next chunk's bytes (which
 * would hide the bug) nor valid memory (ASan reports it). */
static char *chunk_copy(const char *p, size_t len)
{
    char *c = malloc(len > 0 ? len : 1);
    if (len > 0)
        memcpy(c, p, len);
    return c;
}

/* Decode in chunks; stop feeding once done. Returns the bytes consumed. */
static size_t decode_split(const char *in, size_t n, enum split mode, size_t at, struct buf *out,
                           bool *done)
{
    struct dot_decoder d = {0};
    size_t pos = 0;

    *done = false;
    while (pos < n && !*done) {
        size_t len = chunk_len(mode, pos, n - pos, at);
        char *chunk = chunk_copy(in + pos, len);
        size_t used = dot_decode(&d, chunk, len, out, done);
        free(chunk);
        CHECK(used == len || *done);
        pos += used;
        if (used < len)
            break;
    }
    return pos;
}

static void encode_split(const char *in, size_t n, enum split mode, size_t at, struct buf *out)
{
    struct dot_encoder e;
    size_t pos = 0;

    dot_encoder_init(&e);
    while (pos < n) {
        size_t len = chunk_len(mode, pos, n - pos, at);
        char *chunk = chunk_copy(in + pos, len);
        dot_encode(&e, chunk, len, out);
        free(chunk);
        pos += len;
    }
    dot_encode_end(&e, out);
}

/* Encode as txn.c does: what dot_encode_verbatim() passes goes out as it
 * is, then dot_encode() takes a few bytes (1 to 3) at the insertion. Every
 * insertion point must really need one: encoding that byte alone gives 2. */
static void encode_verbatim_split(const char *in, size_t n, enum split mode, size_t at,
                                  struct buf *out)
{
    struct dot_encoder e;
    size_t pos = 0;

    dot_encoder_init(&e);
    while (pos < n) {
        size_t len = chunk_len(mode, pos, n - pos, at);
        char *chunk = chunk_copy(in + pos, len);
        const char *p = chunk;
        size_t left = len;
        while (left > 0) {
            size_t run = dot_encode_verbatim(&e, p, left);
            CHECK(run <= left);
            buf_append(out, p, run);
            p += run;
            left -= run;
            if (left == 0)
                break;
            struct dot_encoder probe = e;
            struct buf one = BUF_INIT;
            dot_encode(&probe, p, 1, &one);
            CHECK_INT(buf_used(&one), 2);
            buf_free(&one);
            size_t piece = 1 + rng() % 3;
            if (piece > left)
                piece = left;
            dot_encode(&e, p, piece, out);
            p += piece;
            left -= piece;
        }
        free(chunk);
        pos += len;
    }
    dot_encode_end(&e, out);
}

static bool buf_is(const struct buf *b, const char *s, size_t n)
{
    return buf_used(b) == n && (n == 0 || memcmp(buf_ptr(b), s, n) == 0);
}

/* --- exact edge cases --- */

struct decode_case {
    const char *in;
    const char *out;
    size_t consumed;
    bool done;
};

static const struct decode_case decode_cases[] = {
    {".\r\n", "", 3, true},                              /* empty message */
    {".\r\nQUIT\r\n", "", 3, true},
    {"\r\n.\r\n", "\r\n", 5, true},
    {"a\r\n.\r\n", "a\r\n", 6, true},
    {"a\r\n.\r\nQUIT\r\n", "a\r\n", 6, true},            /* the rest is not consumed */
    {"..a\r\n.\r\n", ".a\r\n", 8, true},
    {"a\r\n..\r\n.\r\n", "a\r\n.\r\n", 10, true},        /* ".." alone -> "." */
    {"a\r\n...\r\n.\r\n", "a\r\n..\r\n", 11, true},
    {".a\r\n.\r\n", "a\r\n", 7, true},                   /* lenient: dot dropped */
    {"a\r\n. \r\n.\r\n", "a\r\n \r\n", 10, true},
    {"a\n.\nb\r\n.\r\n", "a\n.\nb\r\n", 10, true},       /* bare LF is content */
    {"a\n.\r\nb\r\n.\r\n", "a\n.\r\nb\r\n", 11, true},
    {"a\r\n.\nb\r\n.\r\n", "a\r\n\nb\r\n", 11, true},
    {"a\r\n.\rb\r\n.\r\n", "a\r\n\rb\r\n", 11, true},
    {"a\r\n.\r\r\n.\r\n", "a\r\n\r\r\n", 10, true},
    {"a\r\r\n.\r\n", "a\r\r\n", 7, true},
    {"a\r.\r\n.\r\n", "a\r.\r\n", 8, true},              /* bare CR is not a line end */
    {"abc", "abc", 3, false},
    {"abc\r\n", "abc\r\n", 5, false},
    {"abc\r\n.", "abc\r\n", 6, false},                   /* "." held back */
    {"abc\r\n.\r", "abc\r\n", 7, false},                 /* ".\r" held back */
    {"", "", 0, false},
};

static void test_decode_cases(void)
{
    for (size_t i = 0; i < sizeof(decode_cases) / sizeof(decode_cases[0]); i++) {
        const struct decode_case *c = &decode_cases[i];
        size_t n = strlen(c->in);
        test_current = c->in;
        for (enum split mode = SPLIT_WHOLE; mode <= SPLIT_AT; mode++) {
            for (size_t at = 0; at <= (mode == SPLIT_AT ? n : 0); at++) {
                struct buf out = BUF_INIT;
                bool done;
                size_t used = decode_split(c->in, n, mode, at, &out, &done);
                CHECK_INT(used, c->consumed);
                CHECK_INT(done, c->done);
                CHECK(buf_is(&out, c->out, strlen(c->out)));
                buf_free(&out);
            }
        }
    }
}

/* After done, further calls consume nothing; a held-back ".\r" completes. */
static void test_decode_after_done(void)
{
    struct dot_decoder d = {0};
    struct buf out = BUF_INIT;
    bool done = true;

    CHECK_INT(dot_decode(&d, "x\r\n.", 4, &out, &done), 4);
    CHECK(!done);
    CHECK_INT(dot_decode(&d, "\r", 1, &out, &done), 1);
    CHECK(!done);
    CHECK_INT(dot_decode(&d, "\nMAIL", 5, &out, &done), 1);
    CHECK(done);
    CHECK_INT(dot_decode(&d, "MAIL", 4, &out, &done), 0);
    CHECK(done);
    CHECK_INT(dot_decode(&d, "", 0, &out, &done), 0);
    CHECK(done);
    CHECK_STR(buf_ptr(&out), "x\r\n");
    buf_free(&out);
}

/* The output is appended: what the buffer already holds stays. */
static void test_decode_appends(void)
{
    struct dot_decoder d = {0};
    struct buf out = BUF_INIT;
    bool done;

    buf_append_str(&out, "head:");
    buf_consume(&out, 1);
    CHECK_INT(dot_decode(&d, "x\r\n.\r\n", 6, &out, &done), 6);
    CHECK_STR(buf_ptr(&out), "ead:x\r\n");
    buf_free(&out);
}

struct encode_case {
    const char *in;
    const char *out;
};

static const struct encode_case encode_cases[] = {
    {"", ".\r\n"},
    {"a", "a\r\n.\r\n"},
    {"a\n", "a\r\n.\r\n"},
    {"a\r\n", "a\r\n.\r\n"},
    {"\n\n", "\r\n\r\n.\r\n"},
    {"\r\n", "\r\n.\r\n"},
    {".", "..\r\n.\r\n"},
    {".\n", "..\r\n.\r\n"},
    {"..", "...\r\n.\r\n"},
    {".a\n..b\r\nc.\n.", "..a\r\n...b\r\nc.\r\n..\r\n.\r\n"},
    {"a\rb\n", "a\rb\r\n.\r\n"},                       /* bare CR stays */
    {"a\r", "a\r\r\n.\r\n"},
    {"a\r.b\n", "a\r.b\r\n.\r\n"},                     /* no line start after CR */
    {"a\n\r\n.\r\n", "a\r\n\r\n..\r\n.\r\n"},
    {"x\r\n.\r\ny", "x\r\n..\r\ny\r\n.\r\n"},          /* smuggled end: stuffed */
    {"x\n.\ny\n", "x\r\n..\r\ny\r\n.\r\n"},
};

static void test_encode_cases(void)
{
    for (size_t i = 0; i < sizeof(encode_cases) / sizeof(encode_cases[0]); i++) {
        const struct encode_case *c = &encode_cases[i];
        size_t n = strlen(c->in);
        test_current = c->in;
        for (enum split mode = SPLIT_WHOLE; mode <= SPLIT_AT; mode++) {
            for (size_t at = 0; at <= (mode == SPLIT_AT ? n : 0); at++) {
                struct buf out = BUF_INIT, out2 = BUF_INIT;
                encode_split(c->in, n, mode, at, &out);
                CHECK(buf_is(&out, c->out, strlen(c->out)));
                encode_verbatim_split(c->in, n, mode, at, &out2);
                CHECK(buf_is(&out2, c->out, strlen(c->out)));
                buf_free(&out);
                buf_free(&out2);
            }
        }
    }
}

/* The encoder is ready for the next message after dot_encode_end(). */
static void test_encoder_reuse(void)
{
    struct dot_encoder e;
    struct buf out = BUF_INIT;

    dot_encoder_init(&e);
    dot_encode(&e, "a\r", 2, &out);
    dot_encode_end(&e, &out);
    dot_encode(&e, ".b", 2, &out);
    dot_encode_end(&e, &out);
    CHECK_STR(buf_ptr(&out), "a\r\r\n.\r\n..b\r\n.\r\n");
    buf_free(&out);
}

/* --- random data --- */

/* Bytes that matter to the codec, often; everything else, sometimes. */
static void random_message(char *msg, size_t n)
{
    static const char special[] = ".\r\n.\r\n.a\r\n";
    for (size_t i = 0; i < n; i++) {
        uint32_t r = rng();
        msg[i] = (r & 3) != 0 ? special[(r >> 2) % (sizeof(special) - 1)] : (char)(r >> 8);
    }
}

/* encode -> decode gives the normalised input back, for every way of
 * cutting both sides, and the bytes after ".\r\n" are never consumed. */
static void check_round_trip(const char *msg, size_t n)
{
    struct buf want = BUF_INIT, enc = BUF_INIT, enc2 = BUF_INIT;

    ref_normalise(msg, n, &want);
    encode_split(msg, n, SPLIT_WHOLE, 0, &enc);
    encode_split(msg, n, SPLIT_RANDOM, 0, &enc2);
    CHECK(buf_is(&enc2, buf_ptr(&enc), buf_used(&enc)));
    buf_reset(&enc2);
    encode_split(msg, n, SPLIT_BYTES, 0, &enc2);
    CHECK(buf_is(&enc2, buf_ptr(&enc), buf_used(&enc)));
    size_t enc_len = buf_used(&enc);
    buf_append_str(&enc, "QUIT\r\n"); /* the next command, already received */

    for (enum split mode = SPLIT_WHOLE; mode <= SPLIT_AT; mode++) {
        size_t last_at = mode == SPLIT_AT ? buf_used(&enc) : 0;
        for (size_t at = 0; at <= last_at; at++) {
            struct buf dec = BUF_INIT;
            bool done;
            size_t used = decode_split(buf_ptr(&enc), buf_used(&enc), mode, at, &dec, &done);
            CHECK(done);
            CHECK_INT(used, enc_len);
            CHECK(buf_is(&dec, buf_ptr(&want), buf_used(&want)));
            buf_free(&dec);
        }
    }
    buf_free(&want);
    buf_free(&enc);
    buf_free(&enc2);
}

static void test_round_trip_random(void)
{
    char msg[64];

    for (int i = 0; i < 3000; i++) {
        size_t n = rng() % sizeof(msg);
        random_message(msg, n);
        check_round_trip(msg, n);
    }
}

/* A big message crosses the encoder's internal slices. */
static void test_round_trip_large(void)
{
    size_t n = 1024 * 1024 + 7;
    char *msg = malloc(n);
    struct buf want = BUF_INIT, enc = BUF_INIT, dec = BUF_INIT;
    bool done;

    random_message(msg, n);
    ref_normalise(msg, n, &want);
    encode_split(msg, n, SPLIT_WHOLE, 0, &enc);
    size_t used = decode_split(buf_ptr(&enc), buf_used(&enc), SPLIT_WHOLE, 0, &dec, &done);
    CHECK(done);
    CHECK_INT(used, buf_used(&enc));
    CHECK(buf_is(&dec, buf_ptr(&want), buf_used(&want)));
    buf_reset(&dec);
    decode_split(buf_ptr(&enc), buf_used(&enc), SPLIT_RANDOM, 0, &dec, &done);
    CHECK(buf_is(&dec, buf_ptr(&want), buf_used(&want)));
    free(msg);
    buf_free(&want);
    buf_free(&enc);
    buf_free(&dec);
}

/* Any input (not only encoder output) decodes the same for every split,
 * and as the whole-input reference says. */
static void test_decode_random(void)
{
    char in[48];

    for (int i = 0; i < 3000; i++) {
        size_t n = rng() % sizeof(in);
        random_message(in, n);
        struct buf want = BUF_INIT;
        bool want_done;
        size_t want_used = ref_decode(in, n, &want, &want_done);
        for (enum split mode = SPLIT_WHOLE; mode <= SPLIT_AT; mode++) {
            for (size_t at = 0; at <= (mode == SPLIT_AT ? n : 0); at++) {
                struct buf out = BUF_INIT;
                bool done;
                size_t used = decode_split(in, n, mode, at, &out, &done);
                CHECK_INT(used, want_used);
                CHECK_INT(done, want_done);
                CHECK(buf_is(&out, buf_ptr(&want), buf_used(&want)));
                buf_free(&out);
            }
        }
        buf_free(&want);
    }
}

/* The verbatim runs, exactly: how much of an input passes unchanged for a
 * given encoder state. */
struct verbatim_case {
    bool at_line_start, after_cr;
    const char *in;
    size_t run;
};

static const struct verbatim_case verbatim_cases[] = {
    {true, false, "", 0},
    {true, false, "abc", 3},
    {true, false, ".abc", 0},             /* a "." goes first */
    {false, false, ".abc", 4},
    {true, false, "ab\r\ncd\r\n", 8},
    {true, false, "ab\r\n.cd", 4},        /* up to the LF: the dot is next */
    {true, false, "ab\ncd", 2},            /* a CR goes before the LF */
    {true, false, "\n", 0},
    {false, true, "\nab", 3},              /* the CR came in the previous chunk */
    {false, true, "\n.b", 1},
    {false, false, "\n", 0},
    {true, false, "ab\r\n", 4},           /* a "." in the next chunk is the next call's */
    {true, false, "a\r\rb\n", 4},
};

static void test_verbatim_cases(void)
{
    for (size_t i = 0; i < sizeof(verbatim_cases) / sizeof(verbatim_cases[0]); i++) {
        const struct verbatim_case *c = &verbatim_cases[i];
        struct dot_encoder e = {c->at_line_start, c->after_cr};
        test_current = c->in;
        size_t run = dot_encode_verbatim(&e, c->in, strlen(c->in));
        CHECK_INT(run, c->run);
        if (run > 0) {
            CHECK_INT(e.at_line_start, c->in[run - 1] == '\n');
            CHECK_INT(e.after_cr, c->in[run - 1] == '\r');
        } else {
            CHECK_INT(e.at_line_start, c->at_line_start);
            CHECK_INT(e.after_cr, c->after_cr);
        }
    }
}

/* The scans take 32 bytes at a time: a special sequence at every position
 * of a longer message, and every split of it, gives what the byte-at-a-time
 * references say, in both directions. */
static void check_against_references(const char *msg, size_t n)
{
    struct buf want = BUF_INIT, stuffed = BUF_INIT, want_dec = BUF_INIT;
    bool want_done;

    ref_encode(msg, n, &want);
    buf_append(&stuffed, msg, n);
    buf_append_str(&stuffed, "\r\n.\r\nQUIT\r\n");
    size_t want_used = ref_decode(buf_ptr(&stuffed), buf_used(&stuffed), &want_dec, &want_done);
    for (enum split mode = SPLIT_WHOLE; mode <= SPLIT_AT; mode++) {
        for (size_t at = 0; at <= (mode == SPLIT_AT ? n : 0); at++) {
            struct buf enc = BUF_INIT, enc2 = BUF_INIT, dec = BUF_INIT;
            encode_split(msg, n, mode, at, &enc);
            CHECK(buf_is(&enc, buf_ptr(&want), buf_used(&want)));
            encode_verbatim_split(msg, n, mode, at, &enc2);
            CHECK(buf_is(&enc2, buf_ptr(&want), buf_used(&want)));
            bool done;
            size_t used = decode_split(buf_ptr(&stuffed), buf_used(&stuffed), mode, at, &dec,
                                       &done);
            CHECK_INT(used, want_used);
            CHECK_INT(done, want_done);
            CHECK(buf_is(&dec, buf_ptr(&want_dec), buf_used(&want_dec)));
            buf_free(&enc);
            buf_free(&enc2);
            buf_free(&dec);
        }
    }
    buf_free(&want);
    buf_free(&stuffed);
    buf_free(&want_dec);
}

static void test_scan_positions(void)
{
    static const char *const specials[] = {
        "\r\n.", "\n.", "\n", "\r\n", ".\r\n", "\r\n.\r\n", "\r\n..", "\r", "\n\n.",
    };
    char msg[150];

    for (size_t s = 0; s < sizeof(specials) / sizeof(specials[0]); s++) {
        size_t len = strlen(specials[s]);
        for (size_t pos = 0; pos + len <= 100; pos++) {
            memset(msg, 'x', sizeof(msg));
            /* ordinary CRLF lines around it, one of them across a 32-byte block */
            memcpy(msg + 30, "\r\n", 2);
            memcpy(msg + 120, "\r\n", 2);
            memcpy(msg + pos, specials[s], len);
            test_current = specials[s];
            check_against_references(msg, sizeof(msg));
        }
    }
}

/* Long random messages with runs of ordinary text between the special
 * bytes, so that the 32-byte scans meet them anywhere. */
static void test_random_long_lines(void)
{
    char msg[400];

    for (int i = 0; i < 300; i++) {
        size_t n = rng() % sizeof(msg);
        random_message(msg, n);
        for (size_t k = 0; k < n; k++) {
            if (rng() % 8 != 0)
                msg[k] = 'a' + (char)(k % 26);
        }
        struct buf want = BUF_INIT;
        ref_encode(msg, n, &want);
        for (enum split mode = SPLIT_WHOLE; mode <= SPLIT_RANDOM; mode++) {
            struct buf enc = BUF_INIT, enc2 = BUF_INIT;
            encode_split(msg, n, mode, 0, &enc);
            CHECK(buf_is(&enc, buf_ptr(&want), buf_used(&want)));
            encode_verbatim_split(msg, n, mode, 0, &enc2);
            CHECK(buf_is(&enc2, buf_ptr(&want), buf_used(&want)));
            buf_free(&enc);
            buf_free(&enc2);
        }
        buf_free(&want);
        check_round_trip(msg, n);
    }
}

int main(void)
{
    RUN(test_decode_cases);
    RUN(test_decode_after_done);
    RUN(test_decode_appends);
    RUN(test_encode_cases);
    RUN(test_encoder_reuse);
    RUN(test_round_trip_random);
    RUN(test_round_trip_large);
    RUN(test_decode_random);
    RUN(test_verbatim_cases);
    RUN(test_scan_positions);
    RUN(test_random_long_lines);
    return test_done();
}
