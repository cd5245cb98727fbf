/* dot - SMTP DATA transparency (RFC 5321 4.5.2), streaming decoder and
 * encoder.
 *
 * Pure byte transforms: no I/O, no line length limits (those belong to the
 * session), no header parsing. Both directions accept any split of their
 * input into chunks and give the same output for every split.
 *
 * Speed matters (messages up to 100 MiB pass through both directions), so
 * neither side handles lines one by one: a scan finds the next LF that
 * needs attention (one followed by "." or ending the input for the decoder;
 * a bare LF or one followed by "." for the encoder) and everything before it
 * is copied as one run.
 *
 * Decoder leniency: a line-start "." followed by anything but CRLF is
 * dropped and the rest of the line kept (".." gives ".", ".x" gives "x"), as
 * Postfix does. Only CRLF "." CRLF ends the data: an LF alone never starts a
 * line here, so "\n.\n", "\n.\r\n" and "\r\n.\n" are message content.
 *
 * Encoder normalisation: every input byte is kept; an LF not preceded by CR
 * gets one; a "." at line start is doubled; dot_encode_end() adds CRLF when
 * the last byte was not an LF (so a final bare CR becomes "\r\r\n"). The
 * encoder only ever inserts bytes, which dot_encode_verbatim() makes use
 * of. */
#include "dot.h"

#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#define DOT_SSE2 1
#endif

/* Decoder states; 0 must be the initial one, since a zeroed decoder is a
 * fresh one (dot.h has no init function). */
enum {
    DEC_LINE_START = 0, /* at the start of a line: a '.' here is special */
    DEC_TEXT,           /* inside a line, the last byte was not CR */
    DEC_TEXT_CR,        /* inside a line, the last byte was CR */
    DEC_DOT,            /* a line-start "." was seen and dropped */
    DEC_DOT_CR,         /* ".\r" at line start: an LF now ends the data */
    DEC_DONE,           /* CRLF.CRLF consumed; nothing more is read */
};

/* The encoder works in slices of this size so that it can reserve its worst
 * case output (twice the input) without doubling the memory of a big call. */
#define ENCODE_SLICE (64 * 1024)

/* --- scans --- */

/* Both scans find LFs and judge each one by its neighbours. Mail has an LF
 * every 80 bytes or so: finding them 32 bytes at a time with SSE2 (part of
 * every x86-64) costs a fraction of one memchr() call per line (measured:
 * about half the time per message). Elsewhere memchr() it is. */

enum lf_kind {
    LF_BEFORE_DOT,   /* decoder: followed by "." or the last byte */
    LF_FOR_ENCODER,  /* encoder: bare (no CR before it) or followed by "." */
};

/* Is the LF at lf of that kind? start: where the scan began; cr_before:
 * whether the byte before start was a CR. */
static inline bool lf_is(enum lf_kind kind, const char *lf, const char *start, const char *end,
                         bool cr_before)
{
    if (kind == LF_BEFORE_DOT)
        return lf + 1 == end || lf[1] == '.';
    bool bare = lf > start ? lf[-1] != '\r' : !cr_before;
    return bare || (lf + 1 < end && lf[1] == '.');
}

#ifdef DOT_SSE2
/* Bit i set where p[i] is an LF, for 32 bytes. */
static inline uint32_t lf_mask32(const char *p)
{
    const __m128i lf = _mm_set1_epi8('\n');
    __m128i lo = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i hi = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
    return (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(lo, lf)) |
           (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(hi, lf)) << 16;
}
#endif

/* The first LF of that kind in [p, end), or end. */
static inline const char *find_lf(enum lf_kind kind, const char *p, const char *end,
                                  bool cr_before)
{
    const char *start = p;
#ifdef DOT_SSE2
    for (; end - p >= 32; p += 32) {
        for (uint32_t m = lf_mask32(p); m != 0; m &= m - 1) {
            const char *lf = p + __builtin_ctz(m);
            if (lf_is(kind, lf, start, end, cr_before))
                return lf;
        }
    }
    for (; p < end; p++) {
        if (*p == '\n' && lf_is(kind, p, start, end, cr_before))
            return p;
    }
    return end;
#else
    for (;;) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL)
            return end;
        if (lf_is(kind, lf, start, end, cr_before))
            return lf;
        p = lf + 1;
    }
#endif
}

/* --- decoder --- */

static char *copy_run(char *out, const char *start, const char *end)
{
    size_t n = (size_t)(end - start);
    memcpy(out, start, n);
    return out + n;
}

/* Copy line content from p until a CRLF that is followed by "." or by the
 * end of the input; lines that start with anything else need no attention. */
static const char *decode_text(struct dot_decoder *d, const char *p, const char *end, char **out)
{
    const char *start = p;
    bool cr_before_start = d->state == DEC_TEXT_CR;

    for (;;) {
        const char *lf = find_lf(LF_BEFORE_DOT, p, end, false);
        if (lf == end)
            break;
        bool crlf = lf > start ? lf[-1] == '\r' : cr_before_start;
        p = lf + 1;
        if (crlf) {
            *out = copy_run(*out, start, p);
            d->state = DEC_LINE_START;
            return p;
        }
    }
    *out = copy_run(*out, start, end);
    if (end > start)
        d->state = end[-1] == '\r' ? DEC_TEXT_CR : DEC_TEXT;
    return end;
}

/* One step of the line-start states; returns the new input position. */
static const char *decode_line_start(struct dot_decoder *d, const char *p, char **out)
{
    switch (d->state) {
    case DEC_LINE_START:
        if (*p != '.') {
            d->state = DEC_TEXT;
            return p;
        }
        d->state = DEC_DOT;
        return p + 1;
    case DEC_DOT:
        if (*p != '\r') {
            d->state = DEC_TEXT; /* the dot stays dropped */
            return p;
        }
        d->state = DEC_DOT_CR;
        return p + 1;
    case DEC_DOT_CR:
    default:
        if (*p == '\n') {
            d->state = DEC_DONE;
            return p + 1;
        }
        /* ".\rX": the held-back CR is content, the dot is not. */
        *(*out)++ = '\r';
        d->state = DEC_TEXT_CR;
        return p;
    }
}

size_t dot_decode(struct dot_decoder *d, const char *in, size_t n, struct buf *out, bool *done)
{
    const char *p = in, *end = in + n;

    if (d->state != DEC_DONE && n > 0) {
        /* The output never exceeds the input, plus one CR held back from
         * the previous call in DEC_DOT_CR. */
        char *o = buf_reserve(out, n + 1);
        char *o_start = o;
        while (p < end && d->state != DEC_DONE) {
            if (d->state == DEC_TEXT || d->state == DEC_TEXT_CR)
                p = decode_text(d, p, end, &o);
            else
                p = decode_line_start(d, p, &o);
        }
        buf_commit(out, (size_t)(o - o_start));
    }
    if (done != NULL)
        *done = d->state == DEC_DONE;
    return (size_t)(p - in);
}

/* --- encoder --- */

void dot_encoder_init(struct dot_encoder *e)
{
    e->at_line_start = true;
    e->after_cr = false;
}

static void encoder_advance(struct dot_encoder *e, const char *last)
{
    e->at_line_start = *last == '\n';
    e->after_cr = *last == '\r';
}

/* Encode one slice into out, which has room for 2 * (end - p) + 1 bytes:
 * each input byte gives at most two (an LF followed by "." gives "\r\n.."). */
static char *encode_slice(struct dot_encoder *e, const char *p, const char *end, char *out)
{
    const char *slice = p, *run = p;

    if (e->at_line_start && *p == '.')
        *out++ = '.';
    for (;;) {
        bool cr_before = p == slice ? e->after_cr : p[-1] == '\r';
        const char *lf = find_lf(LF_FOR_ENCODER, p, end, cr_before);
        if (lf == end)
            break;
        bool bare_lf = lf > slice ? lf[-1] != '\r' : !e->after_cr;
        p = lf + 1;
        if (bare_lf) {
            out = copy_run(out, run, lf);
            *out++ = '\r';
            *out++ = '\n';
        } else {
            out = copy_run(out, run, p);
        }
        if (p < end && *p == '.')
            *out++ = '.';
        run = p;
    }
    out = copy_run(out, run, end);
    encoder_advance(e, end - 1);
    return out;
}

void dot_encode(struct dot_encoder *e, const char *in, size_t n, struct buf *out)
{
    while (n > 0) {
        size_t slice = n < ENCODE_SLICE ? n : ENCODE_SLICE;
        char *o = buf_reserve(out, 2 * slice + 1);
        char *o_end = encode_slice(e, in, in + slice, o);
        buf_commit(out, (size_t)(o_end - o));
        in += slice;
        n -= slice;
    }
}

size_t dot_encode_verbatim(struct dot_encoder *e, const char *in, size_t n)
{
    if (n == 0 || (e->at_line_start && in[0] == '.'))
        return 0;
    const char *end = in + n;
    const char *lf = find_lf(LF_FOR_ENCODER, in, end, e->after_cr);
    size_t k;
    if (lf == end)
        k = n;
    else if (lf > in ? lf[-1] != '\r' : !e->after_cr)
        k = (size_t)(lf - in); /* a CR goes before this LF */
    else
        k = (size_t)(lf - in) + 1; /* a "." goes before the one after it */
    if (k > 0)
        encoder_advance(e, in + k - 1);
    return k;
}

void dot_encode_end(struct dot_encoder *e, struct buf *out)
{
    if (!e->at_line_start)
        buf_append(out, "\r\n", 2);
    buf_append(out, ".\r\n", 3);
    /* Ready for the next message. */
    dot_encoder_init(e);
}
