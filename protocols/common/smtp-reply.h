/* smtp-reply - parse SMTP/LMTP replies (possibly multi-line) from a backend.
 *
 * Feed complete lines (no CRLF) one at a time. A reply is "ddd-text" lines
 * followed by a "ddd text" (or "ddd") line with the same code. The parser
 * keeps the code, the enhanced status code when the first line has one
 * (RFC 2034: class.subject.detail), and the text lines, bounded by
 * SMTP_REPLY_MAX bytes in total. */
#ifndef MR_SMTP_REPLY_H
#define MR_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

#define SMTP_REPLY_MAX 4096
#define SMTP_REPLY_MAX_LINES 64

struct smtp_reply {
    unsigned code;           /* 200..599 */
    char enhanced[16];       /* "2.1.5" or "" */
    struct buf text;         /* the text of every line, joined with "\n", enhanced code removed */
    unsigned n_lines;
};

enum smtp_reply_status { SMTP_REPLY_MORE = 0, SMTP_REPLY_DONE = 1, SMTP_REPLY_ERROR = -1 };

/* Add one line. DONE: *reply is complete (reset it with smtp_reply_reset()
 * before the next). ERROR: malformed line (bad code, code changed mid-reply,
 * too long); the connection cannot be trusted any more. */
enum smtp_reply_status smtp_reply_feed(struct smtp_reply *reply, const char *line, size_t len);
void smtp_reply_reset(struct smtp_reply *reply);
void smtp_reply_free(struct smtp_reply *reply);
/* The first line of text (up to the first "\n"), for one-line re-use. */
const char *smtp_reply_first_line(const struct smtp_reply *reply, size_t *len_r);

/* For EHLO/LHLO replies: is an extension advertised (case-insensitive keyword,
 * the first word of a text line other than the first)? *params_r (optional)
 * receives the rest of that line. */
bool smtp_reply_has_ext(const struct smtp_reply *reply, const char *ext, const char **params_r,
                        size_t *params_len_r);

#endif
