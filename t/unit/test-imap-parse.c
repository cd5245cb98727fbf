/* test-imap-parse - the pre-login IMAP parser, table-driven: every argument
 * type, odd tags, literals ({n}, {n+}, bombs), lists for ID, errors with the
 * exact replies, skipping bad lines (and closing after a bad "{n+}" line),
 * limits (line, literal, arguments, ID), and for every case the same result
 * when the input comes whole, one byte at a time, or in random chunks. Also
 * imap_quote() (round trip through the parser) and imap_url_escape_user(). */
#include <stdint.h>
#include <stdlib.h>

#include "buf.h"
#include "imap-parse.h"
#include "mem.h"
#include "test.h"

#define E "Error in IMAP command: "
#define BAD_CHARS E "Invalid characters"
#define BAD_QUOTED E "Invalid quoted string"
#define BAD_LITERAL E "Invalid literal"
#define BAD_TAG "* BAD " E "Invalid tag"
#define TOOBIG "BAD [TOOBIG] Literal too large"
#define ID_INVALID "a BAD Error in IMAP command ID: Invalid parameters"

struct parse_case {
    const char *input;
    size_t len; /* 0: strlen(input) */
    const char *want;
};

/* An input holding NUL bytes, with its length. */
#define BIN(s) s, sizeof(s) - 1

/* The transcript format: one line per event. A command is "<tag> <NAME>"
 * and its arguments: atoms as sent, <NIL>, "quoted", {literal}, {+nonsync
 * literal}, (lists); bytes outside printable ASCII as \xHH. A continuation
 * request is "+<size>", an error the reply line without CRLF, a fatal error
 * "FATAL " and the reply (input stops there). "..." ends a transcript whose
 * input stopped in the middle of a command. */
static const struct parse_case cases[] = {
    /* commands and atoms */
    {"a NOOP\r\n", 0, "a NOOP"},
    {"a noop\r\n", 0, "a NOOP"},
    {"a NOOP\n", 0, "a NOOP"},
    {"A1 CAPABILITY\r\nA2 LOGOUT\r\n", 0, "A1 CAPABILITY\nA2 LOGOUT"},
    {"a x-Foo1\r\n", 0, "a X-FOO1"},
    {"a FOO bar\r\n", 0, "a FOO bar"},
    {"a LOGIN user pass\r\n", 0, "a LOGIN user pass"},
    {"a LOGIN  u   p\r\n", 0, "a LOGIN u p"},
    {"a NOOP \r\n", 0, "a NOOP"},
    {"a LOGIN a]b c\r\n", 0, "a LOGIN a]b c"},
    {"a LOGIN j\xc3\xbcrgen x\r\n", 0, "a LOGIN j\\xC3\\xBCrgen x"},
    {"a STARTTLS\r\nb CAPABILITY\r\nc", 0, "a STARTTLS\nb CAPABILITY\n..."},
    {"a LOGIN u", 0, "..."},
    /* tags */
    {"a]b NOOP\r\n", 0, "a]b NOOP"},
    {"1.2 NOOP\r\n", 0, "1.2 NOOP"},
    {"#x~!$&'-=^_`| NOOP\r\n", 0, "#x~!$&'-=^_`| NOOP"},
    {"NIL NOOP\r\n", 0, "NIL NOOP"},
    {"+ NOOP\r\n", 0, BAD_TAG},
    {"a+b NOOP\r\n", 0, BAD_TAG},
    {"* NOOP\r\n", 0, BAD_TAG},
    {"a%b NOOP\r\n", 0, BAD_TAG},
    {"a(b NOOP\r\n", 0, BAD_TAG},
    {"a{1} NOOP\r\n", 0, BAD_TAG},
    {"\xc3\xa4 NOOP\r\n", 0, BAD_TAG},
    {" a NOOP\r\n", 0, BAD_TAG},
    {BIN("a\0b NOOP\r\n"), BAD_TAG},
    {"\r\n", 0, "* BAD " E "Empty command"},
    {"\n\na NOOP\n", 0, "* BAD " E "Empty command\n* BAD " E "Empty command\na NOOP"},
    {"a\r\n", 0, "a BAD " E "Missing command name"},
    {"a  NOOP\r\n", 0, "a BAD " E "Missing command name"},
    {"a NO\"OP\r\n", 0, "a BAD " E "Invalid command name"},
    {"a NO]OP\r\n", 0, "a BAD " E "Invalid command name"},
    /* quoted strings */
    {"a LOGIN \"user\" \"pa ss\"\r\n", 0, "a LOGIN \"user\" \"pa ss\""},
    {"a LOGIN \"u\\\"x\" \"p\\\\y\"\r\n", 0, "a LOGIN \"u\"x\" \"p\\y\""},
    {"a LOGIN \"\" \"\"\r\n", 0, "a LOGIN \"\" \"\""},
    {"a LOGIN \"(){%*]\" \"\t\"\r\n", 0, "a LOGIN \"(){%*]\" \"\\x09\""},
    {"a LOGIN \"j\xc3\xbcrgen\" \"\xe2\x82\xac\"\r\n", 0,
     "a LOGIN \"j\\xC3\\xBCrgen\" \"\\xE2\\x82\\xAC\""},
    {"a LOGIN \"a\rb\" x\r\nb NOOP\r\n", 0, "a BAD " BAD_QUOTED "\nb NOOP"},
    {"a LOGIN \"a\nb\" x\r\n", 0, "a BAD " BAD_QUOTED "\n" BAD_TAG},
    {BIN("a LOGIN \"a\0b\" x\r\n"), "a BAD " BAD_QUOTED},
    {"a LOGIN \"a\\xb\" x\r\n", 0, "a BAD " BAD_QUOTED},
    {"a LOGIN \"u\"p\r\n", 0, "a BAD " BAD_CHARS},
    {"a LOGIN \"u\r\n", 0, "a BAD " BAD_QUOTED},
    /* literals */
    {"a LOGIN {4}\r\nuser {4}\r\npass\r\n", 0, "+4\n+4\na LOGIN {user} {pass}"},
    {"a LOGIN {4+}\r\nuser {4+}\r\npass\r\n", 0, "a LOGIN {+user} {+pass}"},
    {"a LOGIN {4}\r\nuser \"pass\"\r\n", 0, "+4\na LOGIN {user} \"pass\""},
    {"a LOGIN \"user\" {4}\r\npass\r\n", 0, "+4\na LOGIN \"user\" {pass}"},
    {"a LOGIN u {6+}\r\na\r\nb\"c\r\n", 0, "a LOGIN u {+a\\x0D\\x0Ab\"c}"},
    {"a LOGIN {0}\r\n {0+}\r\n\r\n", 0, "+0\na LOGIN {} {+}"},
    {"a LOGIN {1}\nx y\n", 0, "+1\na LOGIN {x} y"},
    {"a LOGIN {007}\r\n1234567 x\r\n", 0, "+7\na LOGIN {1234567} x"},
    {"a LOGIN {3}\r\n\xff\x01\x7f x\r\n", 0, "+3\na LOGIN {\\xFF\\x01\\x7F} x"},
    {BIN("a LOGIN {3}\r\na\0b x\r\nb NOOP\r\n"), "+3\na BAD " BAD_LITERAL "\nb NOOP"},
    {"a LOGIN {}\r\nb NOOP\r\n", 0, "a BAD " BAD_LITERAL "\nb NOOP"},
    {"a LOGIN {x}\r\n", 0, "a BAD " BAD_LITERAL},
    {"a LOGIN {-1}\r\n", 0, "a BAD " BAD_LITERAL},
    {"a LOGIN {+}\r\n", 0, "a BAD " BAD_LITERAL},
    {"a LOGIN {5+x}\r\n", 0, "a BAD " BAD_LITERAL},
    {"a LOGIN {5}x\r\nb NOOP\r\n", 0, "a BAD " BAD_LITERAL "\nb NOOP"},
    {"a LOGIN {5} x\r\n", 0, "a BAD " BAD_LITERAL},
    {"a LOGIN {5}\rx\r\n", 0, "a BAD " BAD_LITERAL},
    {"a LOGIN x{5}\r\n", 0, "a BAD " BAD_CHARS},
    {"a LOGIN {5}\r\nab", 0, "+5\n..."},
    /* literal bombs and the size limit (64 KiB by default) */
    {"a LOGIN {4294967295}\r\nb NOOP\r\n", 0, "a " TOOBIG "\nb NOOP"},
    {"a LOGIN {99999999999999999999}\r\nb NOOP\r\n", 0, "a " TOOBIG "\nb NOOP"},
    {"a LOGIN {18446744073709551616}\r\n", 0, "a " TOOBIG},
    {"a LOGIN {4294967295+}\r\nb NOOP\r\n", 0, "FATAL a " TOOBIG},
    {"a LOGIN {99999999999999999999+}\nxxxx", 0, "FATAL a " TOOBIG},
    {"a LOGIN {65537}\r\nb NOOP\r\n", 0, "a " TOOBIG "\nb NOOP"},
    {"a LOGIN {65536}\r\n", 0, "+65536"},
    {"a LOGIN {65537+}\r\n", 0, "FATAL a " TOOBIG},
    {"a LOGIN {65537}x\r\nb NOOP\r\n", 0, "a " TOOBIG "\nb NOOP"},
    /* bad lines that end with a literal: skip, or close after {n+} */
    {"a LOGIN ) {5}\r\nb NOOP\r\n", 0, "a BAD " E "Unexpected ')'\nb NOOP"},
    {"a LOGIN ((x {5+}\r\nb NOOP\r\n", 0, "FATAL a BAD " E "Nested lists are not supported"},
    {"a FOO \x01 {5+}\nzzzzz", 0, "FATAL a BAD " BAD_CHARS},
    {"+ LOGIN {5+}\r\nzzzzz", 0, "FATAL " BAD_TAG},
    {"a FOO \x01 {5+}x\r\nb NOOP\r\n", 0, "a BAD " BAD_CHARS "\nb NOOP"},
    {"a FOO \x01 {5+} \r\nb NOOP\r\n", 0, "a BAD " BAD_CHARS "\nb NOOP"},
    {"a FOO \x01 5+}\r\nb NOOP\r\n", 0, "a BAD " BAD_CHARS "\nb NOOP"},
    {"a FOO \x01 {+}\r\nb NOOP\r\n", 0, "a BAD " BAD_CHARS "\nb NOOP"},
    {"a FOO \"x\r{5+}\r\nzz", 0, "FATAL a BAD " BAD_QUOTED},
    /* CR, LF, NUL and controls outside strings */
    {"a NOOP\rb\r\nc NOOP\r\n", 0, "a BAD " BAD_CHARS "\nc NOOP"},
    {"a NOOP\r\r\n", 0, "a BAD " BAD_CHARS},
    {"a LOGIN u\x01 p\r\n", 0, "a BAD " BAD_CHARS},
    {"a LOGIN u\tp\r\n", 0, "a BAD " BAD_CHARS},
    {BIN("a LOGIN u\0 p\r\n"), "a BAD " BAD_CHARS},
    {"a LOGIN u% p\r\n", 0, "a BAD " BAD_CHARS},
    {"a LOGIN * p\r\n", 0, "a BAD " BAD_CHARS},
    {BIN("a NOOP\0\r\n"), "a BAD " E "Invalid command name"},
    /* AUTHENTICATE and SASL-IR */
    {"a AUTHENTICATE PLAIN\r\n", 0, "a AUTHENTICATE PLAIN"},
    {"a AUTHENTICATE PLAIN AHVzZXIAcGFzcw==\r\n", 0, "a AUTHENTICATE PLAIN AHVzZXIAcGFzcw=="},
    {"a authenticate plain =\r\n", 0, "a AUTHENTICATE plain ="},
    {"a AUTHENTICATE XOAUTH2 dXNlcj1+/x==\r\n", 0, "a AUTHENTICATE XOAUTH2 dXNlcj1+/x=="},
    /* ID and lists */
    {"a ID NIL\r\n", 0, "a ID <NIL>"},
    {"a ID nil\r\n", 0, "a ID <NIL>"},
    {"a ID (\"name\" \"x\" \"version\" \"1\")\r\n", 0, "a ID (\"name\" \"x\" \"version\" \"1\")"},
    {"a ID (\"name\" NIL \"os\" nil)\r\n", 0, "a ID (\"name\" <NIL> \"os\" <NIL>)"},
    {"a ID ()\r\n", 0, "a ID ()"},
    {"a ID ( \"a\"  \"b\" )\r\n", 0, "a ID (\"a\" \"b\")"},
    {"a ID (name x)\r\n", 0, "a ID (name x)"},
    {"a ID (\"name\" {3+}\r\nabc)\r\n", 0, "a ID (\"name\" {+abc})"},
    {"a ID ({4}\r\nname {2}\r\nxy)\r\n", 0, "+4\n+2\na ID ({name} {xy})"},
    {"a ID (\"name\")\r\n", 0, ID_INVALID},
    {"a ID (NIL \"x\")\r\n", 0, ID_INVALID},
    {"a ID\r\n", 0, ID_INVALID},
    {"a ID NIL NIL\r\n", 0, ID_INVALID},
    {"a ID \"x\"\r\n", 0, ID_INVALID},
    {"a ID (\"123456789012345678901234567890\" \"v\")\r\n", 0,
     "a ID (\"123456789012345678901234567890\" \"v\")"},
    {"a ID (\"1234567890123456789012345678901\" \"v\")\r\n", 0,
     "a BAD Error in IMAP command ID: Field name too long"},
    {"a ID ((\"a\"))\r\n", 0, "a BAD " E "Nested lists are not supported"},
    {"a ID (\"a\" \"b\"\r\nb NOOP\r\n", 0, "a BAD " E "Missing ')'\nb NOOP"},
    {"a ID (\"a\" \"b\"))\r\n", 0, "a BAD " E "Unexpected ')'"},
    {"a NOOP )\r\n", 0, "a BAD " E "Unexpected ')'"},
    {"a X (a \"b\" {1+}\r\nc NIL) d\r\n", 0, "a X (a \"b\" {+c} <NIL>) d"},
    {"a X (a)b\r\n", 0, "a BAD " BAD_CHARS},
    {"a X a(b)\r\n", 0, "a BAD " BAD_CHARS},
    {"a X \"a\"(b)\r\n", 0, "a BAD " BAD_CHARS},
};

static void render_bytes(struct buf *out, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            buf_append(out, &s[i], 1);
        else
            buf_printf(out, "\\x%02X", c);
    }
}

static void render_arg(struct buf *out, const struct imap_arg *arg)
{
    switch (arg->type) {
    case IMAP_ARG_ATOM:
        render_bytes(out, arg->str, arg->len);
        break;
    case IMAP_ARG_NIL:
        buf_append_str(out, "<NIL>");
        break;
    case IMAP_ARG_STRING:
        buf_append_str(out, !arg->literal ? "\"" : arg->literal_nonsync ? "{+" : "{");
        render_bytes(out, arg->str, arg->len);
        buf_append_str(out, arg->literal ? "}" : "\"");
        break;
    case IMAP_ARG_LIST:
        buf_append_str(out, "(");
        for (size_t i = 0; i < arg->list_count; i++) {
            if (i > 0)
                buf_append_str(out, " ");
            render_arg(out, &arg->list[i]);
        }
        buf_append_str(out, ")");
        break;
    }
}

static void render_command(struct buf *out, const struct imap_command *cmd)
{
    buf_printf(out, "%s %s", cmd->tag, cmd->name);
    for (size_t i = 0; i < cmd->n_args; i++) {
        buf_append_str(out, " ");
        render_arg(out, &cmd->args[i]);
        CHECK(cmd->args[i].type == IMAP_ARG_LIST || cmd->args[i].str[cmd->args[i].len] == '\0');
    }
}

/* Upper bound of imap_parser_memory() for the default limits. */
#define MEMORY_BOUND                                                                     \
    (2 * (IMAP_PARSE_DEFAULT_MAX_LINE + IMAP_PARSE_DEFAULT_MAX_LITERAL + 256) +          \
     4 * IMAP_PARSE_DEFAULT_MAX_ARGS * (sizeof(struct imap_arg) + sizeof(size_t)))

/* Add one event to the transcript; false when the input must stop. */
static bool render_event(struct imap_parser *p, enum imap_parse_result r, struct buf *out)
{
    if (buf_used(out) > 0)
        buf_append_str(out, "\n");
    switch (r) {
    case IMAP_PARSE_COMMAND:
        render_command(out, imap_parser_command(p));
        return true;
    case IMAP_PARSE_NEED_CONTINUATION:
        buf_printf(out, "+%zu", imap_parser_literal_size(p));
        return true;
    case IMAP_PARSE_FATAL:
        buf_append_str(out, "FATAL ");
        imap_parser_write_error(p, out);
        out->len -= 2; /* the CRLF */
        return false;
    case IMAP_PARSE_ERROR:
    default:
        CHECK(imap_parser_command(p) == NULL);
        imap_parser_write_error(p, out);
        out->len -= 2;
        return true;
    }
}

/* Feed input in chunks of chunk bytes (0: random sizes from seed) and
 * return the transcript (caller frees). */
static char *run(const char *input, size_t len, size_t chunk, unsigned seed,
                 const struct imap_parse_limits *limits)
{
    struct imap_parser *p = imap_parser_create(limits);
    struct buf out = BUF_INIT;
    size_t pos = 0;
    bool partial = false;

    while (pos < len) {
        size_t n = chunk;
        if (chunk == 0) {
            seed = seed * 1103515245u + 12345u;
            n = 1 + (seed >> 16) % 17;
        }
        if (n > len - pos)
            n = len - pos;
        size_t used = 0;
        enum imap_parse_result r = imap_parser_feed(p, input + pos, n, &used);
        CHECK(used <= n);
        CHECK(used > 0);
        pos += used;
        if (limits == NULL)
            CHECK(imap_parser_memory(p) <= MEMORY_BOUND);
        if (r == IMAP_PARSE_NEED_MORE) {
            CHECK_INT(used, n);
            partial = true;
            continue;
        }
        partial = false;
        if (!render_event(p, r, &out))
            break;
    }
    if (partial)
        buf_append_str(&out, buf_used(&out) > 0 ? "\n..." : "...");
    imap_parser_destroy(&p);
    CHECK(p == NULL);
    if (out.data == NULL)
        buf_append_str(&out, "");
    return buf_steal(&out);
}

static void check_case(const struct parse_case *c)
{
    size_t len = c->len != 0 ? c->len : strlen(c->input);

    test_current = c->input;
    char *whole = run(c->input, len, len, 0, NULL);
    CHECK_STR(whole, c->want);
    char *bytes = run(c->input, len, 1, 0, NULL);
    CHECK_STR(bytes, c->want);
    for (unsigned seed = 1; seed <= 3; seed++) {
        char *chunks = run(c->input, len, 0, seed, NULL);
        CHECK_STR(chunks, c->want);
        free(chunks);
    }
    free(whole);
    free(bytes);
}

static void test_table(void)
{
    for (size_t i = 0; i < ARRAY_LEN(cases); i++)
        check_case(&cases[i]);
}

/* Build "<head><n times fill><tail>" (caller frees). */
static char *make_line(const char *head, size_t n, char fill, const char *tail, size_t *len_r)
{
    size_t head_len = strlen(head), tail_len = strlen(tail);
    char *s = malloc(head_len + n + tail_len + 1);

    memcpy(s, head, head_len);
    memset(s + head_len, fill, n);
    memcpy(s + head_len + n, tail, tail_len + 1);
    *len_r = head_len + n + tail_len;
    return s;
}

/* want NULL: any complete transcript without an error. */
static void check_generated(const char *head, size_t n, char fill, const char *tail,
                            const struct imap_parse_limits *limits, const char *want)
{
    size_t len;
    char *input = make_line(head, n, fill, tail, &len);
    char *got = run(input, len, len, 0, limits);

    test_current = head;
    for (int i = 0; i < 2; i++) {
        if (want != NULL)
            CHECK_STR(got, want);
        else
            CHECK(strstr(got, "BAD") == NULL && strstr(got, "...") == NULL);
        free(got);
        if (i == 0)
            got = run(input, len, 0, 7, limits);
    }
    free(input);
}

static void test_line_length(void)
{
    /* 8192 bytes without the CRLF are fine, 8193 are not. */
    char want[IMAP_PARSE_DEFAULT_MAX_LINE + 16];
    memcpy(want, "a X ", 4);
    memset(want + 4, 'x', IMAP_PARSE_DEFAULT_MAX_LINE - 4);
    want[IMAP_PARSE_DEFAULT_MAX_LINE] = '\0';
    check_generated("a X ", IMAP_PARSE_DEFAULT_MAX_LINE - 4, 'x', "\r\n", NULL, want);
    check_generated("a X ", IMAP_PARSE_DEFAULT_MAX_LINE - 3, 'x', "\r\nb NOOP\r\n", NULL,
                    "a BAD " E "Line too long\nb NOOP");
    /* 1 MB lines: an atom, a quoted string, a tag; memory stays bounded. */
    check_generated("a LOGIN ", 1 << 20, 'x', "\r\nb NOOP\r\n", NULL,
                    "a BAD " E "Line too long\nb NOOP");
    check_generated("a LOGIN \"", 1 << 20, 'x', "\"\r\nb NOOP\r\n", NULL,
                    "a BAD " E "Line too long\nb NOOP");
    check_generated("", 1 << 20, 'a', " NOOP\r\nb NOOP\r\n", NULL,
                    "* BAD " E "Line too long\nb NOOP");
    check_generated("a LOGIN ", 1 << 20, ' ', "{5+}\r\nzzzzz", NULL,
                    "FATAL a BAD " E "Line too long");
    /* Literal data does not count toward the line. */
    struct imap_parse_limits small = {.max_line = 20};
    check_generated("a LOGIN {1000+}\r\n", 1000, 'p', " x\r\n", &small, NULL);
    check_generated("a LOGIN {1000+}\r\n", 1000, 'p', " 12345\r\n", &small,
                    "a BAD " E "Line too long");
}

static void test_literal_size(void)
{
    size_t n = IMAP_PARSE_DEFAULT_MAX_LITERAL;
    size_t len;
    char *input = make_line("a LOGIN {65536}\r\n", n, 'p', " x\r\n", &len);
    char *got = run(input, len, 0, 3, NULL);

    CHECK(strncmp(got, "+65536\na LOGIN {pppp", 20) == 0);
    CHECK_INT(strlen(got), strlen("+65536\na LOGIN {} x") + n);
    free(got);
    free(input);

    /* All literals of a command together stay within max_literal. */
    struct imap_parse_limits l = {.max_literal = 10};
    check_generated("a LOGIN {6}\r\nabcdef {4}\r\n", 4, 'x', " b NOOP\r\n", &l, NULL);
    check_generated("a LOGIN {6}\r\nabcdef {5}\r\n", 0, 'x', "b NOOP\r\n", &l,
                    "+6\na " TOOBIG "\nb NOOP");
    check_generated("a LOGIN {6+}\r\nabcdef {5+}\r\n", 0, 'x', "xxxxx\r\n", &l,
                    "FATAL a " TOOBIG);
    /* The total starts again with the next command. */
    check_generated("a X {6+}\r\nabcdef\r\nb X {6+}\r\nabcdef\r\n", 0, 'x', "", &l,
                    "a X {+abcdef}\nb X {+abcdef}");
}

/* "a X a0 a1 ..." with n atoms, or one list of n elements. */
static char *make_args(size_t n, bool list, size_t *len_r)
{
    struct buf b = BUF_INIT;

    buf_append_str(&b, list ? "a X (" : "a X");
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, list && i == 0 ? "a%zu" : " a%zu", i);
    buf_append_str(&b, list ? ")\r\nb NOOP\r\n" : "\r\nb NOOP\r\n");
    *len_r = buf_used(&b);
    return buf_steal(&b);
}

static void check_args(size_t n, bool list, bool ok)
{
    size_t len;
    char *input = make_args(n, list, &len);
    char *got = run(input, len, 0, 5, NULL);

    if (ok) {
        CHECK(strncmp(got, "a X ", 4) == 0);
        CHECK(strstr(got, "\nb NOOP") != NULL);
    } else {
        CHECK_STR(got, "a BAD " E "Too many arguments\nb NOOP");
    }
    free(got);
    free(input);
}

static void test_max_args(void)
{
    check_args(IMAP_PARSE_DEFAULT_MAX_ARGS, false, true);
    check_args(IMAP_PARSE_DEFAULT_MAX_ARGS + 1, false, false);
    /* A list counts as one argument, and so does each of its elements. */
    check_args(IMAP_PARSE_DEFAULT_MAX_ARGS - 1, true, true);
    check_args(IMAP_PARSE_DEFAULT_MAX_ARGS, true, false);
}

static void check_id(size_t pairs, size_t key_len, size_t value_len, const char *want)
{
    struct buf b = BUF_INIT;

    buf_append_str(&b, "a ID (");
    for (size_t i = 0; i < pairs; i++) {
        buf_printf(&b, "%s\"k%0*zu\" \"", i > 0 ? " " : "", (int)key_len - 1, i);
        for (size_t j = 0; j < value_len; j++)
            buf_append_str(&b, "v");
        buf_append_str(&b, "\"");
    }
    buf_append_str(&b, ")\r\n");
    char *got = run(buf_ptr(&b), buf_used(&b), 0, 11, NULL);
    test_current = "check_id";
    if (want == NULL)
        CHECK(strncmp(got, "a ID (\"k", 8) == 0);
    else
        CHECK_STR(got, want);
    free(got);
    buf_free(&b);
}

static void test_id_limits(void)
{
    check_id(30, 30, 100, NULL);
    check_id(1, 5, 1024, NULL);
    check_id(31, 3, 1, "a BAD Error in IMAP command ID: Too many parameters");
    check_id(1, 31, 1, "a BAD Error in IMAP command ID: Field name too long");
    check_id(1, 5, 1025, "a BAD Error in IMAP command ID: Value too long");

    struct imap_parse_limits l = {.max_id_pairs = 2, .max_id_key = 4, .max_id_value = 3};
    const char *ok = "a ID (\"abcd\" \"123\" \"x\" NIL)\r\n";
    char *got = run(ok, strlen(ok), 1, 0, &l);
    CHECK_STR(got, "a ID (\"abcd\" \"123\" \"x\" <NIL>)");
    free(got);
}

/* feed() stops right after a command: what follows stays with the caller. */
static void test_consumed(void)
{
    struct imap_parser *p = imap_parser_create(NULL);
    const char *in = "a AUTHENTICATE PLAIN\r\nAHVAcA==\r\nb LOGOUT\r\n";
    size_t used = 0;

    CHECK_INT(imap_parser_feed(p, in, strlen(in), &used), IMAP_PARSE_COMMAND);
    CHECK_INT(used, 22);
    CHECK_STR(imap_parser_command(p)->name, "AUTHENTICATE");
    CHECK_STR(imap_parser_tag(p), "a");
    in += used + 10; /* the caller reads the SASL response itself */
    CHECK_INT(imap_parser_feed(p, in, strlen(in), &used), IMAP_PARSE_COMMAND);
    CHECK_INT(used, strlen(in));
    CHECK_STR(imap_parser_command(p)->tag, "b");
    CHECK_INT(imap_parser_feed(p, "", 0, &used), IMAP_PARSE_NEED_MORE);
    CHECK_INT(used, 0);
    CHECK(imap_parser_command(p) == NULL);
    CHECK_STR(imap_parser_tag(p), "*");
    imap_parser_destroy(&p);
    imap_parser_destroy(&p); /* NULL is fine */
}

static void test_refuse_literal(void)
{
    struct imap_parser *p = imap_parser_create(NULL);
    const char *in = "t1 LOGIN {5}\r\nt2 NOOP\r\n";
    size_t used = 0;
    struct buf out = BUF_INIT;

    CHECK_INT(imap_parser_feed(p, in, strlen(in), &used), IMAP_PARSE_NEED_CONTINUATION);
    CHECK_INT(used, 14);
    CHECK_INT(imap_parser_literal_size(p), 5);
    imap_parser_refuse_literal(p);
    CHECK_STR(imap_parser_tag(p), "t1");
    in += used;
    CHECK_INT(imap_parser_feed(p, in, strlen(in), &used), IMAP_PARSE_COMMAND);
    CHECK_STR(imap_parser_command(p)->tag, "t2");
    CHECK_STR(imap_parser_command(p)->name, "NOOP");

    /* reset() forgets a half-read command. */
    CHECK_INT(imap_parser_feed(p, "x LOGIN \"ab", 11, &used), IMAP_PARSE_NEED_MORE);
    imap_parser_reset(p);
    CHECK_INT(imap_parser_feed(p, "y NOOP\r\n", 8, &used), IMAP_PARSE_COMMAND);
    CHECK_STR(imap_parser_command(p)->tag, "y");

    CHECK_INT(imap_parser_feed(p, "z NOOP\x01\r\n", 9, &used), IMAP_PARSE_ERROR);
    CHECK_STR(imap_parser_error(p), E "Invalid command name");
    imap_parser_write_error(p, &out);
    CHECK_STR(buf_ptr(&out), "z BAD " E "Invalid command name\r\n");
    buf_free(&out);
    imap_parser_destroy(&p);
}

static void test_arg_access(void)
{
    struct imap_parser *p = imap_parser_create(NULL);
    const char *in = "a X atom nil \"q\" (l)\r\n";
    size_t used;

    CHECK_INT(imap_parser_feed(p, in, strlen(in), &used), IMAP_PARSE_COMMAND);
    const struct imap_command *cmd = imap_parser_command(p);
    CHECK_INT(cmd->n_args, 4);
    CHECK_STR(imap_arg_astring(&cmd->args[0]), "atom");
    CHECK_INT(cmd->args[1].type, IMAP_ARG_NIL);
    CHECK_STR(imap_arg_astring(&cmd->args[1]), "nil");
    CHECK_STR(imap_arg_astring(&cmd->args[2]), "q");
    CHECK(imap_arg_astring(&cmd->args[3]) == NULL);
    CHECK_INT(cmd->args[3].list_count, 1);
    CHECK_STR(cmd->args[3].list[0].str, "l");

    CHECK_INT(imap_parser_feed(p, "b Y\r\n", 5, &used), IMAP_PARSE_COMMAND);
    CHECK_INT(imap_parser_command(p)->n_args, 0);
    CHECK(imap_parser_command(p)->args == NULL);
    imap_parser_destroy(&p);
}

/* ---- imap_quote --------------------------------------------------------- */

struct quote_case {
    const char *in;
    bool literal_plus;
    enum imap_string_form form;
    const char *out;
};

static const struct quote_case quote_cases[] = {
    {"abc", false, IMAP_STRING_QUOTED, "\"abc\""},
    {"", false, IMAP_STRING_QUOTED, "\"\""},
    {"a\"b\\c", true, IMAP_STRING_QUOTED, "\"a\\\"b\\\\c\""},
    {"p w (x) {5}", false, IMAP_STRING_QUOTED, "\"p w (x) {5}\""},
    {"a\r\nb", true, IMAP_STRING_LITERAL_NONSYNC, "{4+}\r\na\r\nb"},
    {"a\r\nb", false, IMAP_STRING_LITERAL, "{4}\r\n"},
    {"x\r\nb LOGOUT", false, IMAP_STRING_LITERAL, "{11}\r\n"},
    {"j\xc3\xbcrgen", true, IMAP_STRING_LITERAL_NONSYNC, "{7+}\r\nj\xc3\xbcrgen"},
    {"tab\there", true, IMAP_STRING_LITERAL_NONSYNC, "{8+}\r\ntab\there"},
    {"\x7f", false, IMAP_STRING_LITERAL, "{1}\r\n"},
};

static void test_quote(void)
{
    for (size_t i = 0; i < ARRAY_LEN(quote_cases); i++) {
        const struct quote_case *c = &quote_cases[i];
        struct buf out = BUF_INIT;
        test_current = c->in;
        buf_append_str(&out, "pre ");
        CHECK_INT(imap_quote(&out, c->in, c->literal_plus), c->form);
        CHECK_STR(buf_ptr(&out) + 4, c->out);
        buf_free(&out);
    }
}

/* Send "t LOGIN <quote(s)> <quote(s)>\r\n" through the parser as a backend
 * would receive it, and check both arguments come back as s, in one command. */
static void check_round_trip(const char *s, bool literal_plus)
{
    struct imap_parser *p = imap_parser_create(NULL);
    struct buf line = BUF_INIT;
    size_t used, commands = 0;

    buf_append_str(&line, "t LOGIN ");
    if (imap_quote(&line, s, literal_plus) == IMAP_STRING_LITERAL)
        buf_append_str(&line, s); /* after the continuation */
    buf_append_str(&line, " ");
    if (imap_quote(&line, s, literal_plus) == IMAP_STRING_LITERAL)
        buf_append_str(&line, s);
    buf_append_str(&line, "\r\n");

    const char *in = buf_ptr(&line);
    size_t len = buf_used(&line);
    while (len > 0) {
        enum imap_parse_result r = imap_parser_feed(p, in, len, &used);
        in += used;
        len -= used;
        CHECK(r == IMAP_PARSE_COMMAND || r == IMAP_PARSE_NEED_CONTINUATION);
        if (r != IMAP_PARSE_COMMAND)
            continue;
        commands++;
        const struct imap_command *cmd = imap_parser_command(p);
        CHECK_INT(cmd->n_args, 2);
        for (size_t i = 0; i < cmd->n_args && i < 2; i++) {
            CHECK_INT(cmd->args[i].type, IMAP_ARG_STRING);
            CHECK_INT(cmd->args[i].len, strlen(s));
            CHECK(strcmp(cmd->args[i].str, s) == 0);
        }
    }
    CHECK_INT(commands, 1);
    buf_free(&line);
    imap_parser_destroy(&p);
}

static void test_quote_round_trip(void)
{
    static const char *fixed[] = {
        "", "pass", "\"", "\\", "a\"b\\c\"", "x\r\nb LOGOUT", "\r", "\n", "\r\n",
        "{5+}", "{5}\r\n", ")", "(", " ", "NIL", "j\xc3\xbcrgen", "\xff\xfe",
    };
    unsigned seed = 42;
    char s[300];

    test_current = "round trip";
    for (size_t i = 0; i < ARRAY_LEN(fixed); i++) {
        check_round_trip(fixed[i], false);
        check_round_trip(fixed[i], true);
    }
    for (int i = 0; i < 2000; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % sizeof(s);
        for (size_t j = 0; j < len; j++) {
            seed = seed * 1103515245u + 12345u;
            /* Mostly printable, sometimes CR, LF, quotes and 8-bit. */
            unsigned r = (seed >> 16) % 100;
            s[j] = r < 80 ? (char)(0x20 + (seed >> 8) % 95) : r < 85 ? '\r' : r < 90 ? '\n'
                 : r < 95 ? '"' : (char)(1 + (seed >> 8) % 255);
        }
        s[len] = '\0';
        check_round_trip(s, i % 2 == 0);
    }
}

static void test_url_escape(void)
{
    static const char *const pairs[][2] = {
        {"bob@example.com", "bob%40example.com"},
        {"refnl143", "refnl143"},
        {"a;b:c/d%e f", "a%3Bb%3Ac%2Fd%25e%20f"},
        {"-._~!$&'()*+,=", "-._~!$&'()*+,="},
        {"\"<>?#[]\\^`{|}", "%22%3C%3E%3F%23%5B%5D%5C%5E%60%7B%7C%7D"},
        {"j\xc3\xbcrgen", "j%C3%BCrgen"},
        {"\r\n\x01\x7f", "%0D%0A%01%7F"},
        {"", ""},
    };

    for (size_t i = 0; i < ARRAY_LEN(pairs); i++) {
        struct buf out = BUF_INIT;
        test_current = pairs[i][0];
        imap_url_escape_user(&out, pairs[i][0]);
        CHECK_STR(buf_ptr(&out), pairs[i][1]);
        buf_free(&out);
    }
}

int main(void)
{
    RUN(test_table);
    RUN(test_line_length);
    RUN(test_literal_size);
    RUN(test_max_args);
    RUN(test_id_limits);
    RUN(test_consumed);
    RUN(test_refuse_literal);
    RUN(test_arg_access);
    RUN(test_quote);
    RUN(test_quote_round_trip);
    RUN(test_url_escape);
    return test_done();
}
