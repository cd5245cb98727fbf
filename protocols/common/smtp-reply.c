/* smtp-reply - parse SMTP/LMTP replies, one line at a time (RFC 5321 4.2,
 * RFC 2034 enhanced status codes).
 *
 * This is the syntax only: it does not know which command a reply answers,
 * and it does not read from a socket. A zeroed struct smtp_reply is ready
 * for use; smtp_reply_reset() makes it ready again after DONE or ERROR.
 *
 * Rules kept here:
 * - a line is "ddd" alone (a valid last line), "ddd text" (last line) or
 *   "ddd-text" (more follow), with ddd from 200 to 599;
 * - every line of one reply has the same code, else ERROR;
 * - an enhanced code "class.subject.detail" at the start of a line's text is
 *   removed from that line; the first line's one is kept in reply->enhanced.
 *   It is recognised only when its class equals the reply's class (a
 *   "250 5.1.1 ..." is taken as plain text, never as a 5xx detail), which also
 *   means a 3xx reply never has one;
 * - NUL, CR and LF inside a line are an ERROR: the text is copied into our
 *   own replies, and they would break or inject lines there;
 * - at most SMTP_REPLY_MAX bytes of joined text and SMTP_REPLY_MAX_LINES lines.
 */
#include "smtp-reply.h"

#include <string.h>
#include <strings.h>

/* A code whose first digit is 2..5 and that is followed by ' ', '-' or the end. */
static bool parse_code(const char *line, size_t len, unsigned *code_r, bool *last_r)
{
    if (len < 3 || line[0] < '2' || line[0] > '5')
        return false;
    if (line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9')
        return false;
    if (len > 3 && line[3] != ' ' && line[3] != '-')
        return false;
    *code_r = (unsigned)(line[0] - '0') * 100 + (unsigned)(line[1] - '0') * 10 +
              (unsigned)(line[2] - '0');
    *last_r = len == 3 || line[3] == ' ';
    return true;
}

/* 1 to 3 digits at s[*pos]; advances *pos. */
static bool skip_digits(const char *s, size_t len, size_t *pos)
{
    size_t start = *pos;
    while (*pos < len && *pos - start < 3 && s[*pos] >= '0' && s[*pos] <= '9')
        (*pos)++;
    return *pos > start;
}

/* Length of the enhanced status code at the start of text, 0 if none. */
static size_t enhanced_code_len(const char *text, size_t len, unsigned code)
{
    size_t pos = 2;

    if (len < 5 || text[0] != (char)('0' + code / 100) || text[1] != '.')
        return 0;
    if (!skip_digits(text, len, &pos) || pos >= len || text[pos] != '.')
        return 0;
    pos++;
    if (!skip_digits(text, len, &pos))
        return 0;
    return pos == len || text[pos] == ' ' ? pos : 0;
}

static bool has_bad_char(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\0' || s[i] == '\r' || s[i] == '\n')
            return true;
    }
    return false;
}

/* Remove the enhanced code (and the spaces after it) from the front of the
 * text; the first line's code is kept. */
static void take_enhanced(struct smtp_reply *reply, const char **text, size_t *len)
{
    size_t n = enhanced_code_len(*text, *len, reply->code);
    if (n == 0)
        return;
    if (reply->n_lines == 0) {
        memcpy(reply->enhanced, *text, n);
        reply->enhanced[n] = '\0';
    }
    while (n < *len && (*text)[n] == ' ')
        n++;
    *text += n;
    *len -= n;
}

enum smtp_reply_status smtp_reply_feed(struct smtp_reply *reply, const char *line, size_t len)
{
    unsigned code;
    bool last;

    if (!parse_code(line, len, &code, &last) || has_bad_char(line, len))
        return SMTP_REPLY_ERROR;
    if (reply->n_lines == 0)
        reply->code = code;
    else if (code != reply->code)
        return SMTP_REPLY_ERROR;
    if (reply->n_lines >= SMTP_REPLY_MAX_LINES)
        return SMTP_REPLY_ERROR;

    const char *text = len > 3 ? line + 4 : line + len;
    size_t text_len = len > 3 ? len - 4 : 0;
    take_enhanced(reply, &text, &text_len);

    size_t sep = reply->n_lines > 0 ? 1 : 0;
    if (buf_used(&reply->text) + sep + text_len > SMTP_REPLY_MAX)
        return SMTP_REPLY_ERROR;
    /* Reserve even for an empty text, so text.data is never NULL after a line. */
    char *p = buf_reserve(&reply->text, sep + text_len);
    if (sep > 0)
        *p = '\n';
    if (text_len > 0)
        memcpy(p + sep, text, text_len);
    buf_commit(&reply->text, sep + text_len);
    reply->n_lines++;
    return last ? SMTP_REPLY_DONE : SMTP_REPLY_MORE;
}

void smtp_reply_reset(struct smtp_reply *reply)
{
    reply->code = 0;
    reply->enhanced[0] = '\0';
    buf_reset(&reply->text);
    reply->n_lines = 0;
}

void smtp_reply_free(struct smtp_reply *reply)
{
    buf_free(&reply->text);
    smtp_reply_reset(reply);
}

const char *smtp_reply_first_line(const struct smtp_reply *reply, size_t *len_r)
{
    if (reply->text.data == NULL) {
        *len_r = 0;
        return "";
    }
    const char *text = buf_ptr(&reply->text);
    const char *nl = memchr(text, '\n', buf_used(&reply->text));
    *len_r = nl != NULL ? (size_t)(nl - text) : buf_used(&reply->text);
    return text;
}

bool smtp_reply_has_ext(const struct smtp_reply *reply, const char *ext, const char **params_r,
                        size_t *params_len_r)
{
    if (reply->text.data == NULL || ext[0] == '\0')
        return false;
    const char *p = buf_ptr(&reply->text);
    const char *end = p + buf_used(&reply->text);
    size_t ext_len = strlen(ext);

    /* The first line is the greeting (host name), never an extension. */
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    while (nl != NULL) {
        const char *line = nl + 1;
        nl = memchr(line, '\n', (size_t)(end - line));
        const char *line_end = nl != NULL ? nl : end;
        const char *space = memchr(line, ' ', (size_t)(line_end - line));
        const char *word_end = space != NULL ? space : line_end;

        if ((size_t)(word_end - line) != ext_len || strncasecmp(line, ext, ext_len) != 0)
            continue;
        const char *params = space != NULL ? space + 1 : line_end;
        if (params_r != NULL)
            *params_r = params;
        if (params_len_r != NULL)
            *params_len_r = (size_t)(line_end - params);
        return true;
    }
    return false;
}
