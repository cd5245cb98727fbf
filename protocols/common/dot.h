/* dot - SMTP DATA transparency (RFC 5321 4.5.2), streaming in both directions.
 *
 * The decoder turns received DATA lines into the raw message: it removes the
 * leading dot of dot-stuffed lines and stops at CRLF.CRLF. Only CRLF.CRLF
 * ends the data (a bare LF "." LF does not: that is SMTP smuggling).
 *
 * The encoder turns a raw message into DATA form: every line ends in CRLF
 * (a bare LF becomes CRLF, as Postfix's SMTP client does), a line starting
 * with "." gets another one, and dot_encode_end() writes the final
 * ".\r\n" after making sure the last line was terminated. */
#ifndef MR_DOT_H
#define MR_DOT_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct dot_decoder {
    int state;
};

/* Decode from in; append message bytes to out. Returns the number of input
 * bytes consumed; *done is set when the terminating CRLF.CRLF was consumed
 * (the bytes after it belong to the next command). */
size_t dot_decode(struct dot_decoder *d, const char *in, size_t n, struct buf *out, bool *done);

struct dot_encoder {
    bool at_line_start; /* initially true */
    bool after_cr;
};

void dot_encoder_init(struct dot_encoder *e);
void dot_encode(struct dot_encoder *e, const char *in, size_t n, struct buf *out);
void dot_encode_end(struct dot_encoder *e, struct buf *out);
/* The encoder only inserts bytes (a CR before a bare LF, a "." before a
 * line-start "."), so the input up to the first insertion is its own
 * encoding. Returns the length k of that run and advances the encoder past
 * it as dot_encode() would: the caller sends in[0, k) as it is, and when
 * k < n gives dot_encode() at least one byte from in + k (0 means the
 * insertion is before in[0]). Saves the copy of long clean runs. */
size_t dot_encode_verbatim(struct dot_encoder *e, const char *in, size_t n);

#endif
