/* fuzz-imap-parse - libFuzzer target for the pre-login IMAP parser and
 * imap_quote().
 *
 * The first input byte picks the limits (default or tiny, to reach every
 * limit quickly) and the chunk sizes; the rest is fed to the parser twice,
 * whole and in small chunks, and both runs must give the same events. Every
 * command is checked against the parser's promises (tag and name syntax,
 * NUL-terminated strings without NUL, one level of lists, argument count,
 * ID shape, bounded memory), every error has a reply. Then the input up to
 * its first NUL is sent through imap_quote() and must parse back to itself
 * as the one argument of one command. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "imap-parse.h"

#define REQUIRE(cond)                                                                    \
    do {                                                                                 \
        if (!(cond))                                                                     \
            abort();                                                                     \
    } while (0)

static const struct imap_parse_limits tiny = {
    .max_line = 64, .max_literal = 32, .max_args = 8,
    .max_id_pairs = 2, .max_id_key = 4, .max_id_value = 8,
};

static size_t memory_bound(const struct imap_parse_limits *l)
{
    size_t line = l != NULL ? l->max_line : IMAP_PARSE_DEFAULT_MAX_LINE;
    size_t literal = l != NULL ? l->max_literal : IMAP_PARSE_DEFAULT_MAX_LITERAL;
    size_t args = l != NULL ? l->max_args : IMAP_PARSE_DEFAULT_MAX_ARGS;
    return 2 * (line + literal + 256) + 4 * args * (sizeof(struct imap_arg) + sizeof(size_t));
}

static bool is_atom_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && strchr("(){%*\"\\]", c) == NULL;
}

static void check_string(const struct imap_arg *arg)
{
    REQUIRE(arg->str != NULL);
    REQUIRE(strlen(arg->str) == arg->len);
    if (arg->type != IMAP_ARG_STRING)
        REQUIRE(arg->len > 0 && !arg->literal);
    if (arg->type == IMAP_ARG_NIL)
        REQUIRE(arg->len == 3);
    REQUIRE(imap_arg_astring(arg) == arg->str);
}

static size_t check_args(const struct imap_command *cmd)
{
    size_t count = cmd->n_args;

    REQUIRE((cmd->args == NULL) == (cmd->n_args == 0));
    for (size_t i = 0; i < cmd->n_args; i++) {
        const struct imap_arg *arg = &cmd->args[i];
        if (arg->type != IMAP_ARG_LIST) {
            check_string(arg);
            continue;
        }
        REQUIRE(arg->str == NULL && imap_arg_astring(arg) == NULL);
        REQUIRE((arg->list == NULL) == (arg->list_count == 0));
        for (size_t j = 0; j < arg->list_count; j++) {
            REQUIRE(arg->list[j].type != IMAP_ARG_LIST);
            check_string(&arg->list[j]);
        }
        count += arg->list_count;
    }
    return count;
}

static void check_command(const struct imap_command *cmd, const struct imap_parse_limits *l)
{
    size_t max_args = l != NULL ? l->max_args : IMAP_PARSE_DEFAULT_MAX_ARGS;

    REQUIRE(cmd->tag[0] != '\0' && cmd->name[0] != '\0');
    for (const char *t = cmd->tag; *t != '\0'; t++)
        REQUIRE((is_atom_char((unsigned char)*t) || *t == ']') && *t != '+');
    for (const char *n = cmd->name; *n != '\0'; n++)
        REQUIRE(is_atom_char((unsigned char)*n) && !(*n >= 'a' && *n <= 'z'));
    REQUIRE(check_args(cmd) <= max_args);
    if (strcmp(cmd->name, "ID") == 0) {
        REQUIRE(cmd->n_args == 1);
        REQUIRE(cmd->args[0].type == IMAP_ARG_NIL || cmd->args[0].list_count % 2 == 0);
    }
}

/* Record one event in the transcript; false when the input must stop. */
static bool record(struct imap_parser *p, enum imap_parse_result r,
                   const struct imap_parse_limits *l, struct buf *out)
{
    buf_printf(out, "%d:", (int)r);
    switch (r) {
    case IMAP_PARSE_COMMAND: {
        const struct imap_command *cmd = imap_parser_command(p);
        REQUIRE(cmd != NULL);
        check_command(cmd, l);
        buf_printf(out, "%s %s %zu\n", cmd->tag, cmd->name, cmd->n_args);
        for (size_t i = 0; i < cmd->n_args; i++) {
            if (cmd->args[i].str != NULL)
                buf_append(out, cmd->args[i].str, cmd->args[i].len + 1);
        }
        return true;
    }
    case IMAP_PARSE_NEED_CONTINUATION:
        buf_printf(out, "%zu\n", imap_parser_literal_size(p));
        return true;
    case IMAP_PARSE_ERROR:
    case IMAP_PARSE_FATAL:
    default:
        REQUIRE(imap_parser_command(p) == NULL);
        REQUIRE(imap_parser_error(p) != NULL);
        size_t before = buf_used(out);
        imap_parser_write_error(p, out);
        const char *reply = buf_ptr(out) + before;
        size_t tag_len = strlen(imap_parser_tag(p));
        REQUIRE(strncmp(reply + tag_len, " BAD ", 5) == 0);
        REQUIRE(strchr(reply, '\n') == reply + buf_used(out) - before - 1);
        return r == IMAP_PARSE_ERROR;
    }
}

/* Feed data in chunks (0: all at once) and return the transcript. */
static void run(const uint8_t *data, size_t size, unsigned seed, bool chunked,
                const struct imap_parse_limits *l, struct buf *out)
{
    struct imap_parser *p = imap_parser_create(l);
    size_t pos = 0;

    while (pos < size) {
        size_t n = size - pos;
        if (chunked) {
            seed = seed * 1103515245u + 12345u;
            size_t want = 1 + (seed >> 16) % 9;
            n = want < n ? want : n;
        }
        size_t used = 0;
        enum imap_parse_result r = imap_parser_feed(p, data + pos, n, &used);
        REQUIRE(used > 0 && used <= n);
        REQUIRE(imap_parser_memory(p) <= memory_bound(l));
        pos += used;
        if (r == IMAP_PARSE_NEED_MORE) {
            REQUIRE(used == n);
            continue;
        }
        if (!record(p, r, l, out))
            break;
    }
    imap_parser_destroy(&p);
}

/* "t X <quote(s)>\r\n" must give back s, as one argument of one command. */
static void check_quote(const char *s, bool literal_plus)
{
    struct imap_parser *p = imap_parser_create(NULL);
    struct buf line = BUF_INIT;
    size_t commands = 0, used;

    buf_append_str(&line, "t X ");
    if (imap_quote(&line, s, literal_plus) == IMAP_STRING_LITERAL)
        buf_append_str(&line, s);
    buf_append_str(&line, "\r\n");
    const char *in = buf_ptr(&line);
    size_t len = buf_used(&line);
    while (len > 0) {
        enum imap_parse_result r = imap_parser_feed(p, in, len, &used);
        REQUIRE(r == IMAP_PARSE_COMMAND || r == IMAP_PARSE_NEED_CONTINUATION);
        in += used;
        len -= used;
        if (r != IMAP_PARSE_COMMAND)
            continue;
        const struct imap_command *cmd = imap_parser_command(p);
        REQUIRE(cmd->n_args == 1 && cmd->args[0].type == IMAP_ARG_STRING);
        REQUIRE(strcmp(cmd->args[0].str, s) == 0);
        commands++;
    }
    REQUIRE(commands == 1);
    buf_free(&line);
    imap_parser_destroy(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned control = data[0];
    const struct imap_parse_limits *l = (control & 1) ? &tiny : NULL;
    struct buf whole = BUF_INIT, chunks = BUF_INIT;

    data++;
    size--;
    run(data, size, control, false, l, &whole);
    run(data, size, control, true, l, &chunks);
    REQUIRE(buf_used(&whole) == buf_used(&chunks));
    REQUIRE(memcmp(buf_ptr(&whole), buf_ptr(&chunks), buf_used(&whole)) == 0);
    buf_free(&whole);
    buf_free(&chunks);

    size_t n = strnlen((const char *)data, size < 4096 ? size : 4096);
    char *s = malloc(n + 1);
    memcpy(s, data, n);
    s[n] = '\0';
    check_quote(s, (control & 2) != 0);
    free(s);
    return 0;
}
