/* pop3-parse - the pre-login POP3 command line parser (RFC 1939 USER/PASS/
 * QUIT/NOOP, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH, Dovecot XCLIENT).
 *
 * Pure: no I/O. It works on one line without its CRLF (the stream's line
 * reader finds lines and enforces the same limit on buffering) and copies
 * what it keeps into cmd's own storage, so the line buffer may be reused at
 * once. Lines after login are not parsed: the proxy relays them. SASL
 * continuation lines of AUTH are not commands either: the caller reads them
 * raw, with a limit of its own. */
#ifndef MR_POP3_PARSE_H
#define MR_POP3_PARSE_H

#include <stdbool.h>
#include <stddef.h>

enum pop3_verb {
    POP3_CMD_UNKNOWN,
    POP3_CMD_USER, POP3_CMD_PASS, POP3_CMD_AUTH, POP3_CMD_CAPA, POP3_CMD_STLS,
    POP3_CMD_QUIT, POP3_CMD_NOOP, POP3_CMD_XCLIENT,
};

/* RFC 2449 allows 255 octets for a command; an AUTH with an initial response
 * (an OAuth token) can be longer, so the default is larger and the caller may
 * raise it. */
#define POP3_LINE_MAX_DEFAULT 512
#define POP3_CMD_MAX_PARAMS 16
/* The reply for a line over the limit, for a caller that finds it first. */
#define POP3_REPLY_LINE_TOO_LONG "-ERR Line too long"

struct pop3_param {
    const char *key;   /* upper-cased */
    const char *value; /* as sent, possibly empty */
};

struct pop3_cmd {
    enum pop3_verb verb;
    const char *verb_text;     /* the verb as sent */
    const char *arg;           /* USER name, PASS password (both verbatim, spaces
                                  included), AUTH mechanism (upper-cased, NULL when
                                  AUTH lists mechanisms); NULL otherwise */
    const char *auth_response; /* AUTH initial response as sent (base64 or "="), or NULL */
    struct pop3_param params[POP3_CMD_MAX_PARAMS]; /* XCLIENT attributes */
    size_t n_params;
    char reply[64]; /* room for the "Unknown command" reply */
    char *storage;  /* private: the copied line (wiped: it holds passwords) */
    size_t storage_cap;
};

void pop3_cmd_init(struct pop3_cmd *cmd);
/* Wipe and free the storage; the struct may be parsed into again. */
void pop3_cmd_free(struct pop3_cmd *cmd);

/* Parse one line (no CRLF); max_line 0 means POP3_LINE_MAX_DEFAULT. Returns
 * 0 on success. On error returns -1 and sets *reply_r to the complete reply
 * (without CRLF), e.g. "-ERR Unknown command: FOO"; it stays valid until cmd
 * is parsed into again or freed. */
int pop3_cmd_parse(const char *line, size_t len, size_t max_line, struct pop3_cmd *cmd,
                   const char **reply_r) __attribute__((warn_unused_result));

/* The value of an XCLIENT attribute (case-insensitive key), NULL if absent. */
const char *pop3_cmd_param(const struct pop3_cmd *cmd, const char *key);

/* True when s can be sent raw as a POP3 argument to a backend (USER/PASS):
 * it holds no CR or LF that would end the line and start another command.
 * POP3 has no quoting, so a value that fails cannot be sent at all. */
bool pop3_arg_is_safe(const char *s);

#endif
