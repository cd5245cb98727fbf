/* imap-parse - a resumable byte-at-a-time parser for pre-login IMAP commands
 * (RFC 3501 syntax, RFC 7888 LITERAL+, RFC 2971 ID), plus imap_quote() and
 * imap_url_escape_user().
 *
 * It is only syntax: it does not know which commands exist or are allowed
 * now (except that it checks the shape of ID, whose limits it owns), and it
 * decodes nothing (AUTHENTICATE responses stay base64).
 *
 * How it works. One switch over a state per byte; literal bytes are copied in
 * bulk. The tag, the name and every string go into one store, NUL-terminated,
 * with offsets in the argument arrays; the pointers of struct imap_command are
 * set when the command is complete, because the store may move while it
 * grows. The store is wiped before it is reused or freed: it holds passwords.
 *
 * Errors are reported once per line, when its LF has been consumed: after a
 * syntax error the parser skips to the LF and then returns ERROR, or FATAL
 * when the line ended with a non-synchronizing literal "{n+}" (the client
 * sends those bytes without waiting, so we could only guess where the next
 * command starts). To know how a skipped line ends, the last bytes of every
 * line outside literal data go through a small "{digits[+]}" recogniser.
 *
 * Memory: the line bytes are counted (outside literals, CR and LF excluded)
 * and refused beyond max_line before they are stored; a literal's size is
 * checked against max_literal (for all literals of the command together)
 * before any of it is stored, and the size digits stop being accumulated
 * once past the limit, so "{99999999999999999999}" neither overflows nor
 * allocates. The store thus stays below max_line + max_literal + one NUL
 * per argument, times two for the growth policy.
 *
 * Leniency, on purpose: runs of spaces between arguments, spaces at the end
 * of the line, a space before ')', bare LF line ends (also after "{n}"),
 * 8-bit bytes in atoms and quoted strings (UTF-8 passwords), atoms and NIL as
 * ID values, atoms as ID keys. Strict: the tag and the command name are
 * 7-bit ATOM-CHARs (the tag may hold ']' but not '+'), only \" and \\ are
 * escapes, CR/LF/NUL end or break a quoted string, literals may not hold NUL,
 * and lists do not nest.
 *
 * Replies (after "<tag> BAD "; the tag is "*" where marked):
 *   Error in IMAP command: Empty command         (*) empty line
 *   Error in IMAP command: Invalid tag           (*) missing tag or bad character in it
 *   Error in IMAP command: Missing command name  tag alone, or two spaces after it
 *   Error in IMAP command: Invalid command name  character outside ATOM-CHAR in the name
 *   Error in IMAP command: Invalid characters    character that cannot start or continue
 *                                                an argument; CR not followed by LF
 *   Error in IMAP command: Invalid quoted string bad escape; CR, LF or NUL inside
 *   Error in IMAP command: Invalid literal       "{}", "{x}", "{5}" not at the end of
 *                                                the line, NUL in the literal data
 *   Error in IMAP command: Unexpected ')'        ')' outside a list
 *   Error in IMAP command: Missing ')'           line ends inside a list
 *   Error in IMAP command: Nested lists are not supported
 *   Error in IMAP command: Too many arguments    more than max_args (list elements count)
 *   Error in IMAP command: Line too long         (* if the tag was not complete)
 *   [TOOBIG] Literal too large                   literal(s) above max_literal
 *   Error in IMAP command ID: Invalid parameters not NIL or a list of pairs
 *   Error in IMAP command ID: Too many parameters more than max_id_pairs
 *   Error in IMAP command ID: Field name too long above max_id_key
 *   Error in IMAP command ID: Value too long     above max_id_value
 * Any of them is FATAL instead of ERROR when the bad line ends with "{n+}". */
#include "imap-parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mem.h"
#include "str.h"

#define E_PREFIX "Error in IMAP command: "
#define E_EMPTY E_PREFIX "Empty command"
#define E_TAG E_PREFIX "Invalid tag"
#define E_NO_NAME E_PREFIX "Missing command name"
#define E_NAME E_PREFIX "Invalid command name"
#define E_CHARS E_PREFIX "Invalid characters"
#define E_QUOTED E_PREFIX "Invalid quoted string"
#define E_LITERAL E_PREFIX "Invalid literal"
#define E_CLOSE E_PREFIX "Unexpected ')'"
#define E_UNCLOSED E_PREFIX "Missing ')'"
#define E_NESTED E_PREFIX "Nested lists are not supported"
#define E_ARGS E_PREFIX "Too many arguments"
#define E_LONG E_PREFIX "Line too long"
#define E_TOOBIG "[TOOBIG] Literal too large"
#define E_ID "Error in IMAP command ID: Invalid parameters"
#define E_ID_PAIRS "Error in IMAP command ID: Too many parameters"
#define E_ID_KEY "Error in IMAP command ID: Field name too long"
#define E_ID_VALUE "Error in IMAP command ID: Value too long"

enum state {
    ST_TAG,           /* the tag, from the first byte of a line */
    ST_NAME,          /* the command name */
    ST_ARG_START,     /* before an argument, ')' or the end of the line */
    ST_ATOM,
    ST_QUOTED,
    ST_QUOTED_ESC,    /* after '\' in a quoted string */
    ST_LITERAL_SIZE,  /* digits after '{' */
    ST_LITERAL_CLOSE, /* after "{n+": '}' */
    ST_LITERAL_CR,    /* after '}': CR or LF */
    ST_LITERAL_LF,    /* after "}\r": LF */
    ST_LITERAL_DATA,  /* the literal's bytes */
    ST_ARG_END,       /* after a quoted string, literal or list */
    ST_LINE_LF,       /* after the CR that ends the command */
    ST_SKIP,          /* after an error: up to the LF */
};

/* How the bytes seen so far on this line end: "{", "{12", "{12+", "{12}", "{12+}". */
enum tail { TAIL_NONE, TAIL_OPEN, TAIL_DIGITS, TAIL_PLUS, TAIL_SYNC, TAIL_NONSYNC };

enum step {
    STEP_NEXT,  /* byte consumed, go on */
    STEP_AGAIN, /* byte not consumed: look at it again in the new state */
    STEP_COMMAND,
    STEP_CONTINUATION,
    STEP_ERROR,
    STEP_FATAL,
};

/* A growable byte store that wipes what it leaves behind. */
struct store {
    char *data;
    size_t len;
    size_t cap;
};

/* Arguments being parsed: offs[i] is the store offset of args[i].str, or
 * for a list the index of its first element in the items array. */
struct arg_array {
    struct imap_arg *args;
    size_t *offs;
    size_t count;
    size_t cap;
};

struct imap_parser {
    struct imap_parse_limits limits;
    enum state state;
    enum tail tail;
    bool done; /* the last event ended the command: start afresh on the next feed */
    bool tag_valid;
    bool have_command;
    size_t line_len;
    size_t name_off;
    struct store store;
    struct arg_array top;   /* the command's arguments */
    struct arg_array items; /* the elements of its lists */
    bool in_list;
    /* the literal being read */
    size_t lit_size;
    size_t lit_remaining;
    size_t lit_total; /* bytes of the command's literals so far */
    bool lit_digits;
    bool lit_nonsync;
    bool lit_bad;
    const char *error;
    struct imap_command cmd;
};

/* ---- the store ---------------------------------------------------------- */

static void store_reserve(struct store *s, size_t n)
{
    if (s->cap - s->len >= n)
        return;
    size_t cap = s->cap * 2;
    if (cap < s->len + n)
        cap = s->len + n;
    if (cap < 256)
        cap = 256;
    char *data = xmalloc(cap);
    if (s->len > 0)
        memcpy(data, s->data, s->len);
    if (s->data != NULL) {
        mem_wipe(s->data, s->cap);
        free(s->data);
    }
    s->data = data;
    s->cap = cap;
}

static void store_putc(struct store *s, char c)
{
    store_reserve(s, 1);
    s->data[s->len++] = c;
}

static void store_clear(struct store *s)
{
    if (s->data != NULL)
        mem_wipe(s->data, s->len);
    s->len = 0;
}

/* ---- character classes (RFC 3501 section 9) ----------------------------- */

static bool is_atom_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && strchr("(){%*\"\\]", c) == NULL;
}

static bool is_tag_char(unsigned char c)
{
    return (is_atom_char(c) || c == ']') && c != '+';
}

/* ASTRING-CHAR, and 8-bit bytes: clients send UTF-8 passwords unquoted. */
static bool is_arg_atom_char(unsigned char c)
{
    return is_atom_char(c) || c == ']' || c >= 0x80;
}

static void push_tail(struct imap_parser *p, unsigned char c)
{
    enum tail t = p->tail;

    if (c == '{')
        t = TAIL_OPEN;
    else if (char_is_digit(c))
        t = t == TAIL_OPEN || t == TAIL_DIGITS ? TAIL_DIGITS : TAIL_NONE;
    else if (c == '+')
        t = t == TAIL_DIGITS ? TAIL_PLUS : TAIL_NONE;
    else if (c == '}')
        t = t == TAIL_DIGITS ? TAIL_SYNC : t == TAIL_PLUS ? TAIL_NONSYNC : TAIL_NONE;
    else if (c != '\r' || (t != TAIL_SYNC && t != TAIL_NONSYNC))
        t = TAIL_NONE;
    p->tail = t;
}

/* ---- arguments ---------------------------------------------------------- */

static void arg_array_push(struct arg_array *a, size_t off)
{
    if (a->count == a->cap) {
        a->cap = a->cap == 0 ? 8 : a->cap * 2;
        a->args = xrealloc(a->args, a->cap * sizeof(*a->args));
        a->offs = xrealloc(a->offs, a->cap * sizeof(*a->offs));
    }
    memset(&a->args[a->count], 0, sizeof(a->args[a->count]));
    a->offs[a->count++] = off;
}

static struct arg_array *cur_array(struct imap_parser *p)
{
    return p->in_list ? &p->items : &p->top;
}

static struct imap_arg *cur_arg(struct imap_parser *p)
{
    struct arg_array *a = cur_array(p);
    return &a->args[a->count - 1];
}

static enum step fail(struct imap_parser *p, const char *error)
{
    p->error = error;
    p->state = ST_SKIP;
    return STEP_AGAIN;
}

/* Start an argument of the given type; the caller sets the next state. */
static bool new_arg(struct imap_parser *p, enum imap_arg_type type)
{
    if (p->top.count + p->items.count >= p->limits.max_args)
        return false;
    struct arg_array *a = cur_array(p);
    arg_array_push(a, type == IMAP_ARG_LIST ? p->items.count : p->store.len);
    a->args[a->count - 1].type = type;
    return true;
}

static enum step begin_arg(struct imap_parser *p, enum imap_arg_type type, enum state next)
{
    if (!new_arg(p, type))
        return fail(p, E_ARGS);
    p->state = next;
    return STEP_NEXT;
}

/* NUL-terminate the current string argument and record its length. */
static void end_string(struct imap_parser *p)
{
    struct arg_array *a = cur_array(p);
    a->args[a->count - 1].len = p->store.len - a->offs[a->count - 1];
    store_putc(&p->store, '\0');
}

static void end_atom(struct imap_parser *p)
{
    struct arg_array *a = cur_array(p);
    struct imap_arg *arg = &a->args[a->count - 1];

    end_string(p); /* may move the store: look at the atom only after it */
    const char *s = p->store.data + a->offs[a->count - 1];
    if (arg->len == 3 && strncasecmp(s, "NIL", 3) == 0)
        arg->type = IMAP_ARG_NIL;
}

static void close_list(struct imap_parser *p)
{
    struct imap_arg *list = &p->top.args[p->top.count - 1];

    p->in_list = false;
    list->list_count = p->items.count - p->top.offs[p->top.count - 1];
}

static void fix_arg(struct imap_parser *p, struct imap_arg *arg, size_t off)
{
    if (arg->type == IMAP_ARG_LIST)
        arg->list = arg->list_count > 0 ? p->items.args + off : NULL;
    else
        arg->str = p->store.data + off;
}

/* ---- ID (RFC 2971) ------------------------------------------------------ */

static const char *check_id_pair(const struct imap_parser *p, const struct imap_arg *key,
                                 const struct imap_arg *value)
{
    if (key->type != IMAP_ARG_ATOM && key->type != IMAP_ARG_STRING)
        return E_ID;
    if (key->len > p->limits.max_id_key)
        return E_ID_KEY;
    if (value->type != IMAP_ARG_NIL && value->len > p->limits.max_id_value)
        return E_ID_VALUE;
    return NULL;
}

static const char *check_id(const struct imap_parser *p, const struct imap_command *cmd)
{
    if (cmd->n_args != 1)
        return E_ID;
    const struct imap_arg *params = &cmd->args[0];
    if (params->type == IMAP_ARG_NIL)
        return NULL;
    if (params->type != IMAP_ARG_LIST || params->list_count % 2 != 0)
        return E_ID;
    if (params->list_count / 2 > p->limits.max_id_pairs)
        return E_ID_PAIRS;
    for (size_t i = 0; i < params->list_count; i += 2) {
        const char *error = check_id_pair(p, &params->list[i], &params->list[i + 1]);
        if (error != NULL)
            return error;
    }
    return NULL;
}

static enum step complete(struct imap_parser *p)
{
    struct imap_command *cmd = &p->cmd;

    for (size_t i = 0; i < p->top.count; i++)
        fix_arg(p, &p->top.args[i], p->top.offs[i]);
    for (size_t i = 0; i < p->items.count; i++)
        fix_arg(p, &p->items.args[i], p->items.offs[i]);
    cmd->tag = p->store.data;
    cmd->name = p->store.data + p->name_off;
    cmd->args = p->top.count > 0 ? p->top.args : NULL;
    cmd->n_args = p->top.count;
    if (strcmp(cmd->name, "ID") == 0) {
        p->error = check_id(p, cmd);
        if (p->error != NULL)
            return STEP_ERROR;
    }
    p->have_command = true;
    return STEP_COMMAND;
}

/* ---- states ------------------------------------------------------------- */

static enum step on_tag(struct imap_parser *p, unsigned char c)
{
    if (is_tag_char(c)) {
        store_putc(&p->store, (char)c);
        return STEP_NEXT;
    }
    bool end = c == ' ' || c == '\r' || c == '\n';
    if (p->store.len == 0)
        return fail(p, c == '\r' || c == '\n' ? E_EMPTY : E_TAG);
    if (!end)
        return fail(p, E_TAG);
    store_putc(&p->store, '\0');
    p->tag_valid = true;
    p->name_off = p->store.len;
    if (c != ' ')
        return fail(p, E_NO_NAME);
    p->state = ST_NAME;
    return STEP_NEXT;
}

static enum step on_name(struct imap_parser *p, unsigned char c)
{
    if (is_atom_char(c)) {
        store_putc(&p->store, (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c));
        return STEP_NEXT;
    }
    if (c != ' ' && c != '\r' && c != '\n')
        return fail(p, E_NAME);
    if (p->store.len == p->name_off)
        return fail(p, E_NO_NAME);
    store_putc(&p->store, '\0');
    p->state = ST_ARG_START;
    return c == ' ' ? STEP_NEXT : STEP_AGAIN;
}

static enum step start_literal_size(struct imap_parser *p)
{
    p->lit_size = 0;
    p->lit_digits = false;
    p->lit_nonsync = false;
    p->lit_bad = false;
    return begin_arg(p, IMAP_ARG_STRING, ST_LITERAL_SIZE);
}

static enum step open_list(struct imap_parser *p)
{
    if (p->in_list)
        return fail(p, E_NESTED);
    if (!new_arg(p, IMAP_ARG_LIST))
        return fail(p, E_ARGS);
    p->in_list = true;
    return STEP_NEXT;
}

static enum step end_line(struct imap_parser *p, unsigned char c)
{
    if (p->in_list)
        return fail(p, E_UNCLOSED);
    if (c == '\n')
        return complete(p);
    p->state = ST_LINE_LF;
    return STEP_NEXT;
}

static enum step on_arg_start(struct imap_parser *p, unsigned char c)
{
    switch (c) {
    case ' ':
        return STEP_NEXT;
    case '"':
        return begin_arg(p, IMAP_ARG_STRING, ST_QUOTED);
    case '{':
        return start_literal_size(p);
    case '(':
        return open_list(p);
    case ')':
        if (!p->in_list)
            return fail(p, E_CLOSE);
        close_list(p);
        p->state = ST_ARG_END;
        return STEP_NEXT;
    case '\r':
    case '\n':
        return end_line(p, c);
    default:
        if (!is_arg_atom_char(c))
            return fail(p, E_CHARS);
        if (!new_arg(p, IMAP_ARG_ATOM))
            return fail(p, E_ARGS);
        store_putc(&p->store, (char)c);
        p->state = ST_ATOM;
        return STEP_NEXT;
    }
}

static enum step on_atom(struct imap_parser *p, unsigned char c)
{
    if (is_arg_atom_char(c)) {
        store_putc(&p->store, (char)c);
        return STEP_NEXT;
    }
    if (c != ' ' && c != ')' && c != '\r' && c != '\n')
        return fail(p, E_CHARS);
    end_atom(p);
    p->state = ST_ARG_START;
    return c == ' ' ? STEP_NEXT : STEP_AGAIN;
}

static enum step on_quoted(struct imap_parser *p, unsigned char c)
{
    switch (c) {
    case '"':
        end_string(p);
        p->state = ST_ARG_END;
        return STEP_NEXT;
    case '\\':
        p->state = ST_QUOTED_ESC;
        return STEP_NEXT;
    case '\0':
    case '\r':
    case '\n':
        return fail(p, E_QUOTED);
    default:
        store_putc(&p->store, (char)c);
        return STEP_NEXT;
    }
}

static enum step on_quoted_escape(struct imap_parser *p, unsigned char c)
{
    if (c != '"' && c != '\\')
        return fail(p, E_QUOTED);
    store_putc(&p->store, (char)c);
    p->state = ST_QUOTED;
    return STEP_NEXT;
}

/* "{n}" or "{n+}" is complete: refuse it here, before its CRLF, if it is too
 * large; the skip state then sees how the line ends. */
static enum step end_literal_header(struct imap_parser *p)
{
    if (p->lit_size > p->limits.max_literal - p->lit_total) {
        p->error = E_TOOBIG;
        p->state = ST_SKIP;
        return STEP_NEXT;
    }
    p->state = ST_LITERAL_CR;
    return STEP_NEXT;
}

static enum step on_literal_size(struct imap_parser *p, unsigned char c)
{
    if (char_is_digit(c)) {
        p->lit_digits = true;
        /* Past the limit the exact value does not matter: stop before it
         * can overflow. max_literal is clamped so that this cannot wrap. */
        if (p->lit_size <= p->limits.max_literal)
            p->lit_size = p->lit_size * 10 + (size_t)(c - '0');
        return STEP_NEXT;
    }
    if (!p->lit_digits || (c != '+' && c != '}'))
        return fail(p, E_LITERAL);
    if (c == '}')
        return end_literal_header(p);
    p->lit_nonsync = true;
    p->state = ST_LITERAL_CLOSE;
    return STEP_NEXT;
}

static void end_literal(struct imap_parser *p)
{
    if (p->lit_bad) {
        p->error = E_LITERAL;
        p->state = ST_SKIP;
        return;
    }
    end_string(p);
    p->state = ST_ARG_END;
}

/* The LF after "{n}" or "{n+}": the literal's bytes come next. */
static enum step begin_literal(struct imap_parser *p)
{
    struct imap_arg *arg = cur_arg(p);

    arg->literal = true;
    arg->literal_nonsync = p->lit_nonsync;
    p->lit_total += p->lit_size;
    p->lit_remaining = p->lit_size;
    store_reserve(&p->store, p->lit_size + 1);
    p->state = ST_LITERAL_DATA;
    if (p->lit_size == 0)
        end_literal(p);
    return p->lit_nonsync ? STEP_NEXT : STEP_CONTINUATION;
}

static size_t read_literal(struct imap_parser *p, const unsigned char *in, size_t len)
{
    size_t n = len < p->lit_remaining ? len : p->lit_remaining;

    if (!p->lit_bad && memchr(in, '\0', n) != NULL)
        p->lit_bad = true;
    if (!p->lit_bad) {
        memcpy(p->store.data + p->store.len, in, n);
        p->store.len += n;
    }
    p->lit_remaining -= n;
    if (p->lit_remaining == 0)
        end_literal(p);
    return n;
}

static enum step on_literal_end(struct imap_parser *p, unsigned char c)
{
    if (c == '\n')
        return begin_literal(p);
    if (c != '\r' || p->state != ST_LITERAL_CR)
        return fail(p, E_LITERAL);
    p->state = ST_LITERAL_LF;
    return STEP_NEXT;
}

static enum step on_arg_end(struct imap_parser *p, unsigned char c)
{
    if (c == ' ') {
        p->state = ST_ARG_START;
        return STEP_NEXT;
    }
    if (c != ')' && c != '\r' && c != '\n')
        return fail(p, E_CHARS);
    p->state = ST_ARG_START;
    return STEP_AGAIN;
}

static enum step on_skip(struct imap_parser *p, unsigned char c)
{
    if (c != '\n')
        return STEP_NEXT;
    return p->tail == TAIL_NONSYNC ? STEP_FATAL : STEP_ERROR;
}

static enum step step(struct imap_parser *p, unsigned char c)
{
    switch (p->state) {
    case ST_TAG:
        return on_tag(p, c);
    case ST_NAME:
        return on_name(p, c);
    case ST_ARG_START:
        return on_arg_start(p, c);
    case ST_ATOM:
        return on_atom(p, c);
    case ST_QUOTED:
        return on_quoted(p, c);
    case ST_QUOTED_ESC:
        return on_quoted_escape(p, c);
    case ST_LITERAL_SIZE:
        return on_literal_size(p, c);
    case ST_LITERAL_CLOSE:
        if (c != '}')
            return fail(p, E_LITERAL);
        return end_literal_header(p);
    case ST_LITERAL_CR:
    case ST_LITERAL_LF:
        return on_literal_end(p, c);
    case ST_ARG_END:
        return on_arg_end(p, c);
    case ST_LINE_LF:
        return c == '\n' ? complete(p) : fail(p, E_CHARS);
    case ST_SKIP:
    case ST_LITERAL_DATA: /* read in bulk by the caller; never here */
    default:
        return on_skip(p, c);
    }
}

/* ---- public ------------------------------------------------------------- */

static void start_command(struct imap_parser *p)
{
    store_clear(&p->store);
    p->top.count = 0;
    p->items.count = 0;
    p->state = ST_TAG;
    p->tail = TAIL_NONE;
    p->done = false;
    p->tag_valid = false;
    p->have_command = false;
    p->in_list = false;
    p->line_len = 0;
    p->lit_total = 0;
    p->error = NULL;
    memset(&p->cmd, 0, sizeof(p->cmd));
}

static size_t limit_or(size_t value, size_t dflt, size_t max)
{
    if (value == 0)
        return dflt;
    return value > max ? max : value;
}

struct imap_parser *imap_parser_create(const struct imap_parse_limits *limits)
{
    struct imap_parser *p = xcalloc(1, sizeof(*p));
    struct imap_parse_limits l = {0};

    if (limits != NULL)
        l = *limits;
    /* The caps keep every size computation below far from overflow. */
    p->limits.max_line = limit_or(l.max_line, IMAP_PARSE_DEFAULT_MAX_LINE, SIZE_MAX / 16);
    p->limits.max_literal =
        limit_or(l.max_literal, IMAP_PARSE_DEFAULT_MAX_LITERAL, SIZE_MAX / 16);
    p->limits.max_args = limit_or(l.max_args, IMAP_PARSE_DEFAULT_MAX_ARGS, 1u << 20);
    p->limits.max_id_pairs = limit_or(l.max_id_pairs, IMAP_PARSE_DEFAULT_MAX_ID_PAIRS, SIZE_MAX);
    p->limits.max_id_key = limit_or(l.max_id_key, IMAP_PARSE_DEFAULT_MAX_ID_KEY, SIZE_MAX);
    p->limits.max_id_value = limit_or(l.max_id_value, IMAP_PARSE_DEFAULT_MAX_ID_VALUE, SIZE_MAX);
    start_command(p);
    return p;
}

void imap_parser_destroy(struct imap_parser **pp)
{
    struct imap_parser *p = *pp;

    if (p == NULL)
        return;
    if (p->store.data != NULL) {
        mem_wipe(p->store.data, p->store.cap);
        free(p->store.data);
    }
    free(p->top.args);
    free(p->top.offs);
    free(p->items.args);
    free(p->items.offs);
    free(p);
    *pp = NULL;
}

void imap_parser_reset(struct imap_parser *p)
{
    start_command(p);
}

static bool counts_toward_line(const struct imap_parser *p, unsigned char c)
{
    return p->state != ST_SKIP && c != '\r' && c != '\n';
}

static enum imap_parse_result event(struct imap_parser *p, enum step s)
{
    switch (s) {
    case STEP_CONTINUATION:
        return IMAP_PARSE_NEED_CONTINUATION;
    case STEP_COMMAND:
        p->done = true;
        return IMAP_PARSE_COMMAND;
    case STEP_FATAL:
        p->done = true;
        return IMAP_PARSE_FATAL;
    case STEP_ERROR:
    default:
        p->done = true;
        return IMAP_PARSE_ERROR;
    }
}

enum imap_parse_result imap_parser_feed(struct imap_parser *p, const void *data, size_t len,
                                        size_t *consumed_r)
{
    const unsigned char *in = data;
    size_t pos = 0;
    bool counted = false; /* in[pos] was counted in line_len already */

    if (p->done)
        start_command(p);
    while (pos < len) {
        if (p->state == ST_LITERAL_DATA) {
            pos += read_literal(p, in + pos, len - pos);
            continue;
        }
        unsigned char c = in[pos];
        if (!counted && counts_toward_line(p, c)) {
            counted = true;
            if (++p->line_len > p->limits.max_line)
                fail(p, E_LONG);
        }
        enum step s = step(p, c);
        if (s == STEP_AGAIN)
            continue;
        push_tail(p, c);
        pos++;
        counted = false;
        if (s != STEP_NEXT) {
            *consumed_r = pos;
            return event(p, s);
        }
    }
    *consumed_r = pos;
    return IMAP_PARSE_NEED_MORE;
}

const struct imap_command *imap_parser_command(const struct imap_parser *p)
{
    return p->have_command ? &p->cmd : NULL;
}

size_t imap_parser_literal_size(const struct imap_parser *p)
{
    return p->lit_size;
}

void imap_parser_refuse_literal(struct imap_parser *p)
{
    p->done = true;
}

const char *imap_parser_tag(const struct imap_parser *p)
{
    return p->tag_valid ? p->store.data : "*";
}

const char *imap_parser_error(const struct imap_parser *p)
{
    return p->error;
}

void imap_parser_write_error(const struct imap_parser *p, struct buf *out)
{
    buf_printf(out, "%s BAD %s\r\n", imap_parser_tag(p), p->error != NULL ? p->error : E_CHARS);
}

size_t imap_parser_memory(const struct imap_parser *p)
{
    size_t per_arg = sizeof(struct imap_arg) + sizeof(size_t);
    return p->store.cap + (p->top.cap + p->items.cap) * per_arg;
}

const char *imap_arg_astring(const struct imap_arg *arg)
{
    return arg->type == IMAP_ARG_LIST ? NULL : arg->str;
}

/* ---- encoders ----------------------------------------------------------- */

static bool is_quotable(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    }
    return true;
}

enum imap_string_form imap_quote(struct buf *out, const char *s, bool literal_plus)
{
    size_t len = strlen(s);

    if (is_quotable(s)) {
        buf_append(out, "\"", 1);
        while (*s != '\0') {
            size_t plain = strcspn(s, "\"\\"); /* copied in runs: ID values are long */
            buf_append(out, s, plain);
            s += plain;
            if (*s != '\0') {
                char escaped[2] = {'\\', *s++};
                buf_append(out, escaped, 2);
            }
        }
        buf_append(out, "\"", 1);
        return IMAP_STRING_QUOTED;
    }
    if (!literal_plus) {
        buf_printf(out, "{%zu}\r\n", len);
        return IMAP_STRING_LITERAL;
    }
    buf_printf(out, "{%zu+}\r\n", len);
    buf_append(out, s, len);
    return IMAP_STRING_LITERAL_NONSYNC;
}

void imap_url_escape_user(struct buf *out, const char *user)
{
    for (const unsigned char *u = (const unsigned char *)user; *u != '\0'; u++) {
        bool alnum = (*u >= '0' && *u <= '9') || (*u >= 'A' && *u <= 'Z') ||
                     (*u >= 'a' && *u <= 'z');
        if (alnum || strchr("-._~!$&'()*+,=", *u) != NULL)
            buf_append(out, u, 1);
        else
            buf_printf(out, "%%%02X", *u);
    }
}
