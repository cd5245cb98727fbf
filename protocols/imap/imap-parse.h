/* imap-parse - the pre-login IMAP command parser, and the IMAP string and URL
 * encoders used to talk to backends and to write referrals.
 *
 * The login proxy parses commands only until the user is logged in; after
 * that it relays bytes and parses nothing. So this parser knows exactly what
 * pre-login commands need: a tag, a command name, and arguments that are
 * atoms, NIL, quoted strings, literals ({n} and LITERAL+ {n+}) or one level
 * of parenthesised list (for ID). It is pure: no I/O, memory bounded by the
 * limits below, and resumable, so input may arrive in any chunking.
 *
 * Use:
 *
 *   size_t used;
 *   switch (imap_parser_feed(p, data, len, &used)) {   // then drop `used` bytes
 *   case IMAP_PARSE_NEED_MORE:         wait for more input
 *   case IMAP_PARSE_COMMAND:           run imap_parser_command(p)
 *   case IMAP_PARSE_NEED_CONTINUATION: write IMAP_CONTINUATION, feed again
 *   case IMAP_PARSE_ERROR:             imap_parser_write_error(), feed again
 *   case IMAP_PARSE_FATAL:             imap_parser_write_error(), close
 *   }
 *
 * feed() stops right after each event, so the bytes after a command's line
 * (an AUTHENTICATE response, the client's data after LOGIN) stay with the
 * caller. A result (command, tag, error) stays valid until the next call of
 * feed() or reset(). */
#ifndef MR_IMAP_PARSE_H
#define MR_IMAP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* What a server sends to let the client go on with a synchronizing literal. */
#define IMAP_CONTINUATION "+ OK\r\n"

/* Limits; a field left at 0 takes the default. */
struct imap_parse_limits {
    size_t max_line;     /* 8192: bytes of a command outside literals, CRLF excluded */
    size_t max_literal;  /* 65536: one literal, and all literals of a command together */
    size_t max_args;     /* 64: arguments, each list element counting as one */
    size_t max_id_pairs; /* 30: ID field-value pairs (RFC 2971) */
    size_t max_id_key;   /* 30: octets of an ID field name (RFC 2971) */
    size_t max_id_value; /* 1024: octets of an ID value (RFC 2971) */
};

#define IMAP_PARSE_DEFAULT_MAX_LINE 8192
#define IMAP_PARSE_DEFAULT_MAX_LITERAL 65536
#define IMAP_PARSE_DEFAULT_MAX_ARGS 64
#define IMAP_PARSE_DEFAULT_MAX_ID_PAIRS 30
#define IMAP_PARSE_DEFAULT_MAX_ID_KEY 30
#define IMAP_PARSE_DEFAULT_MAX_ID_VALUE 1024

enum imap_parse_result {
    /* Every byte was consumed and no command is complete yet. */
    IMAP_PARSE_NEED_MORE,
    /* A command is complete: imap_parser_command(). */
    IMAP_PARSE_COMMAND,
    /* A synchronizing literal {n} within the limits was announced. Write
     * IMAP_CONTINUATION and feed again; or refuse it with
     * imap_parser_refuse_literal() and a tagged reply of your own. */
    IMAP_PARSE_NEED_CONTINUATION,
    /* A bad line, consumed up to its LF: reply with imap_parser_write_error()
     * and go on with the next line. A synchronizing literal that is too large
     * ends here too: the client sends nothing more for that command. */
    IMAP_PARSE_ERROR,
    /* Reply with imap_parser_write_error(), then close the connection: the bad
     * line ended with a non-synchronizing literal {n+}, whose bytes the client
     * sends anyway and which cannot be told apart from commands. */
    IMAP_PARSE_FATAL,
};

enum imap_arg_type {
    IMAP_ARG_ATOM,   /* str as sent */
    IMAP_ARG_NIL,    /* the atom NIL in any case; str is the atom as sent */
    IMAP_ARG_STRING, /* quoted string (unescaped) or literal */
    IMAP_ARG_LIST,   /* list[0 .. list_count-1]; str is NULL */
};

struct imap_arg {
    enum imap_arg_type type;
    const char *str; /* NUL-terminated; strings never contain NUL */
    size_t len;
    bool literal;         /* STRING sent as a literal */
    bool literal_nonsync; /* ... as {n+} */
    const struct imap_arg *list;
    size_t list_count;
};

struct imap_command {
    const char *tag;
    const char *name; /* upper-cased */
    const struct imap_arg *args;
    size_t n_args;
};

struct imap_parser;

/* limits may be NULL for the defaults. */
struct imap_parser *imap_parser_create(const struct imap_parse_limits *limits);
/* Frees the parser (wiping what it holds: passwords) and sets *p to NULL. */
void imap_parser_destroy(struct imap_parser **p);
/* Forget any partial command, e.g. when STARTTLS throws away buffered input. */
void imap_parser_reset(struct imap_parser *p);

/* Consume input up to the next event; *consumed_r says how much was used.
 * Bytes not consumed belong to the next call (or to the caller). */
enum imap_parse_result imap_parser_feed(struct imap_parser *p, const void *data, size_t len,
                                        size_t *consumed_r) __attribute__((warn_unused_result));

/* After IMAP_PARSE_COMMAND; NULL otherwise. */
const struct imap_command *imap_parser_command(const struct imap_parser *p);
/* After IMAP_PARSE_NEED_CONTINUATION: the announced literal size. */
size_t imap_parser_literal_size(const struct imap_parser *p);
/* After IMAP_PARSE_NEED_CONTINUATION: drop the command instead of reading
 * the literal; the next byte starts a new command. */
void imap_parser_refuse_literal(struct imap_parser *p);
/* The tag of the current command, "*" when there is no valid one yet. */
const char *imap_parser_tag(const struct imap_parser *p);
/* After ERROR or FATAL: the text of the reply after "BAD ". */
const char *imap_parser_error(const struct imap_parser *p);
/* After ERROR or FATAL: append "<tag> BAD <error>\r\n". */
void imap_parser_write_error(const struct imap_parser *p, struct buf *out);
/* Bytes of memory held for the command being parsed (tests, fuzzing). */
size_t imap_parser_memory(const struct imap_parser *p);

/* The string value of an astring argument (ATOM, NIL or STRING), else NULL. */
const char *imap_arg_astring(const struct imap_arg *arg);

enum imap_string_form {
    IMAP_STRING_QUOTED,          /* "..." with \" and \\ escaped */
    IMAP_STRING_LITERAL_NONSYNC, /* {n+}CRLF followed by the bytes */
    IMAP_STRING_LITERAL,         /* only the header {n}CRLF: see below */
};

/* Append s as an IMAP string for a backend. Printable ASCII goes quoted;
 * anything else (CR, LF, control characters, 8-bit) as a literal, so that
 * nothing in a user name or password can end the command line. With
 * literal_plus (the backend advertised LITERAL+) the literal is {n+} and
 * complete. Without it, only "{n}\r\n" is appended: send it, wait for the
 * backend's "+" continuation, then send s itself (and the rest of the line). */
enum imap_string_form imap_quote(struct buf *out, const char *s, bool literal_plus);

/* Append user escaped as RFC 5092 enc-user for an RFC 2221 referral URL
 * (imap://<user>;AUTH=<mech>@host/): letters, digits and -._~!$&'()*+,=
 * stay, every other byte becomes %XX ('@' is %40, ';' is %3B). */
void imap_url_escape_user(struct buf *out, const char *user);

#endif
