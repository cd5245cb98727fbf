/* fuzz-smtp-reply - libFuzzer target for the SMTP/LMTP reply parser.
 *
 * The input is a stream of reply lines separated by LF (a CR before the LF
 * is kept, to reach the "bad character" path). Each complete reply is
 * checked against the limits and the shape of reply->text, then looked up
 * for extensions as an EHLO reply would be. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp-reply.h"

#define REQUIRE(cond)                                                                    \
    do {                                                                                 \
        if (!(cond))                                                                     \
            abort();                                                                     \
    } while (0)

static void check_reply(const struct smtp_reply *reply)
{
    const char *text = buf_ptr(&reply->text);
    size_t len = buf_used(&reply->text), newlines = 0;

    REQUIRE(reply->code >= 200 && reply->code <= 599);
    REQUIRE(reply->n_lines >= 1 && reply->n_lines <= SMTP_REPLY_MAX_LINES);
    REQUIRE(len <= SMTP_REPLY_MAX);
    REQUIRE(strlen(reply->enhanced) < sizeof(reply->enhanced));
    REQUIRE(reply->enhanced[0] == '\0' || reply->enhanced[0] == '0' + (int)(reply->code / 100));
    for (size_t i = 0; i < len; i++) {
        REQUIRE(text[i] != '\0' && text[i] != '\r');
        newlines += text[i] == '\n';
    }
    REQUIRE(newlines + 1 == reply->n_lines);

    size_t first_len;
    const char *first = smtp_reply_first_line(reply, &first_len);
    REQUIRE(first == text && first_len <= len);

    static const char *const exts[] = {"PIPELINING", "XCLIENT", "SIZE", "a", "250"};
    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        const char *params = NULL;
        size_t params_len = 0;
        if (smtp_reply_has_ext(reply, exts[i], &params, &params_len))
            REQUIRE(params >= text && params + params_len <= text + len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_reply reply = {0};
    const char *p = (const char *)data, *end = p + size;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl != NULL ? nl : end;
        switch (smtp_reply_feed(&reply, p, (size_t)(line_end - p))) {
        case SMTP_REPLY_DONE:
            check_reply(&reply);
            smtp_reply_reset(&reply);
            break;
        case SMTP_REPLY_ERROR:
            smtp_reply_reset(&reply);
            break;
        case SMTP_REPLY_MORE:
            REQUIRE(buf_used(&reply.text) <= SMTP_REPLY_MAX);
            break;
        }
        p = nl != NULL ? nl + 1 : end;
    }
    smtp_reply_free(&reply);
    return 0;
}
