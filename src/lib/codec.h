/* codec - base64 and SMTP xtext (RFC 3461) encoding. */
#ifndef MR_CODEC_H
#define MR_CODEC_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

void base64_encode(struct buf *out, const void *data, size_t n);
/* Decode standard base64 (padding optional); false on invalid input. */
bool base64_decode(struct buf *out, const char *s, size_t n);

/* xtext: '+', '=' and characters outside 33..126 become "+XX". */
void xtext_encode(struct buf *out, const char *s);
bool xtext_decode(struct buf *out, const char *s, size_t n);

#endif
