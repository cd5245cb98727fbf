/* dot - SMTP DATA transparency (RFC 5321 4.5.2), streaming decoder and
 * encoder.
 *
 * Pure byte transforms: no I/O, no line length limits (those belong to the
 * session), no header parsing. Both directions accept any split of their
 * input into chunks and give the same output for every split.
 *
 * Speed matters (messages up to 100 MiB pass through both directions), so
 * neither side looks at every byte in C: memchr() finds the next LF, and
 * only an LF that ends a CRLF line followed by "." (decoder) or a bare LF or
 * an LF followed by "." (encoder) interrupts the copy of a long run.
 *
 * Decoder leniency: a line-start "." followed by anything but CRLF is
 * dropped and the rest of the line kept (".." gives ".", ".x" gives "x"), as
 * Postfix does. Only CRLF "." CRLF ends the data: an LF alone never starts a
 * line here, so "\n.\n", "\n.\r\n" and "\r\n.\n" are message content.
 *
 * Encoder normalisation: every input byte is kept; an LF not preceded by CR
 * gets one; a "." at line start is doubled; dot_encode_end() adds CRLF when
 * the last byte was not an LF (so a final bare CR becomes "\r\r\n"). */
#include "dot.h"

#include <string.h>

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
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL)
            break;
        bool crlf = lf > start ? lf[-1] == '\r' : cr_before_start;
        p = lf + 1;
        if (crlf && (p == end || *p == '.')) {
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

void dot_encoder_init(struct dot_encoder *e)
{
    e->at_line_start = true;
    e->after_cr = false;
}

/* Encode one slice into out, which has room for 2 * (end - p) + 1 bytes:
 * each input byte gives at most two (an LF followed by "." gives "\r\n.."). */
static char *encode_slice(struct dot_encoder *e, const char *p, const char *end, char *out)
{
    const char *slice = p, *run = p;

    if (e->at_line_start && *p == '.')
        *out++ = '.';
    for (;;) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL)
            break;
        bool bare_lf = lf > slice ? lf[-1] != '\r' : !e->after_cr;
        p = lf + 1;
        bool dot_next = p < end && *p == '.';
        if (!bare_lf && !dot_next)
            continue;
        if (bare_lf) {
            out = copy_run(out, run, lf);
            *out++ = '\r';
            *out++ = '\n';
        } else {
            out = copy_run(out, run, p);
        }
        if (dot_next)
            *out++ = '.';
        run = p;
    }
    out = copy_run(out, run, end);
    e->at_line_start = end[-1] == '\n';
    e->after_cr = end[-1] == '\r';
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

void dot_encode_end(struct dot_encoder *e, struct buf *out)
{
    if (!e->at_line_start)
        buf_append(out, "\r\n", 2);
    buf_append(out, ".\r\n", 3);
    /* Ready for the next message. */
    dot_encoder_init(e);
}
