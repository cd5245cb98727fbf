/* smtp-cmd - SMTP/LMTP command line parser (RFC 5321, 2033, 3030, XCLIENT).
 *
 * Pure: no I/O, no allocation outside the caller's struct. The parser works
 * on one command line without its CRLF and copies what it keeps into
 * cmd->storage, so the line buffer may be reused at once. Paths are returned
 * without the angle brackets; the null sender "<>" gives an empty path.
 * Quoted local parts are kept as written ("a b"@x stays quoted). */
#ifndef MR_SMTP_CMD_H
#define MR_SMTP_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum smtp_verb {
    SMTP_CMD_UNKNOWN,
    SMTP_CMD_LHLO, SMTP_CMD_HELO, SMTP_CMD_EHLO,
    SMTP_CMD_MAIL, SMTP_CMD_RCPT, SMTP_CMD_DATA, SMTP_CMD_BDAT,
    SMTP_CMD_RSET, SMTP_CMD_NOOP, SMTP_CMD_QUIT, SMTP_CMD_VRFY, SMTP_CMD_EXPN,
    SMTP_CMD_HELP, SMTP_CMD_STARTTLS, SMTP_CMD_AUTH, SMTP_CMD_XCLIENT,
    SMTP_CMD_XFORWARD,
};

#define SMTP_CMD_MAX_PARAMS 16
#define SMTP_CMD_STORAGE 4096

struct smtp_param {
    const char *key;   /* upper-cased; points into storage */
    const char *value; /* NULL when the parameter has no "=" */
};

struct smtp_cmd {
    enum smtp_verb verb;
    const char *verb_text;  /* the verb as sent, for "500 unknown command" logs */
    const char *arg;        /* LHLO/EHLO/HELO domain; MAIL/RCPT path; AUTH mechanism; VRFY text */
    struct smtp_param params[SMTP_CMD_MAX_PARAMS];
    size_t n_params;        /* MAIL/RCPT ESMTP params, XCLIENT/XFORWARD attributes, AUTH initial response */
    uint64_t bdat_size;     /* BDAT */
    bool bdat_last;         /* BDAT ... LAST */
    char storage[SMTP_CMD_STORAGE];
};

/* Parse one line (no CRLF). Returns 0 on success. On error returns -1 and sets
 * *reply_r to the complete reply to send (static string), e.g.
 * "500 5.5.2 Unknown command" or "501 5.5.4 Invalid parameters". */
int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd, const char **reply_r);

/* The value of a parameter (case-insensitive key), NULL if absent; *present_r
 * (optional) tells a key without value apart from an absent one. */
const char *smtp_cmd_param(const struct smtp_cmd *cmd, const char *key, bool *present_r);

#endif
