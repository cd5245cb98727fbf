/* pop3-parse - parse one pre-login POP3 command line into a struct pop3_cmd.
 *
 * Only syntax: whether the command is allowed now (PASS after USER, AUTH
 * before TLS, XCLIENT from a trusted peer) is the session's business, and
 * nothing is decoded (AUTH responses stay base64, XCLIENT values raw).
 *
 * The line is copied once into the command's storage and cut into
 * NUL-terminated words in place. The storage grows to the longest line seen
 * (at most max_line + 1) and is wiped before each use and when freed.
 *
 * USER and PASS take the rest of the line after one space, verbatim: RFC 1939
 * servers accept passwords with spaces, and trailing spaces are part of the
 * password. Other commands accept leading spaces, runs of spaces between
 * words and trailing spaces. Verbs are case-insensitive; the AUTH mechanism
 * and XCLIENT keys are upper-cased.
 *
 * Replies given on error (exact texts):
 *   -ERR Line too long                    len > max_line
 *   -ERR Invalid characters in command    NUL, CR or LF in the line; another control
 *                                         character in USER
 *   -ERR Empty command                    empty line, or spaces only
 *   -ERR Unknown command: <verb>          verb not known; the verb is cut to 20
 *                                         characters, bytes outside 0x21-0x7e become '?'
 *   -ERR Missing user name                USER without argument
 *   -ERR Missing password                 PASS without argument
 *   -ERR Invalid arguments                argument to CAPA/STLS/QUIT/NOOP, or extra
 *                                         words after an AUTH initial response
 *   -ERR Invalid SASL mechanism           not RFC 4422 syntax (1-20 of A-Z 0-9 - _)
 *   -ERR Invalid parameters               XCLIENT without attributes, an attribute
 *                                         that is not KEY=VALUE, a control character,
 *                                         more than POP3_CMD_MAX_PARAMS */
#include "pop3-parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mem.h"
#include "str.h"

#define REPLY_BAD_CHARS "-ERR Invalid characters in command"
#define REPLY_EMPTY "-ERR Empty command"
#define REPLY_NO_USER "-ERR Missing user name"
#define REPLY_NO_PASS "-ERR Missing password"
#define REPLY_INVALID_ARGS "-ERR Invalid arguments"
#define REPLY_INVALID_MECH "-ERR Invalid SASL mechanism"
#define REPLY_INVALID_PARAMS "-ERR Invalid parameters"

/* RFC 4422 3.1: a SASL mechanism name is 1 to 20 characters. */
#define SASL_MECH_MAX 20
#define UNKNOWN_VERB_SHOWN 20

static int fail(const char **reply_r, const char *reply)
{
    *reply_r = reply;
    return -1;
}

static bool has_control(const char *s)
{
    for (; *s != '\0'; s++) {
        if (char_is_control((unsigned char)*s))
            return true;
    }
    return false;
}

static void upper(char *s)
{
    for (; *s != '\0'; s++) {
        if (*s >= 'a' && *s <= 'z')
            *s = (char)(*s - 'a' + 'A');
    }
}

static char *skip_spaces(char *s)
{
    while (*s == ' ')
        s++;
    return s;
}

/* Cut the word at s and return the start of the next one (past any run of
 * spaces), or the terminating "" when there is none. */
static char *split_word(char *s)
{
    char *space = strchr(s, ' ');
    if (space == NULL)
        return s + strlen(s);
    *space = '\0';
    return skip_spaces(space + 1);
}

/* Drop trailing spaces in place. */
static void trim_end(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        s[--n] = '\0';
}

static int parse_user(struct pop3_cmd *cmd, char *args, const char **reply_r)
{
    if (*args == '\0')
        return fail(reply_r, REPLY_NO_USER);
    if (has_control(args))
        return fail(reply_r, REPLY_BAD_CHARS);
    cmd->arg = args;
    return 0;
}

static int parse_pass(struct pop3_cmd *cmd, char *args, const char **reply_r)
{
    if (*args == '\0')
        return fail(reply_r, REPLY_NO_PASS);
    cmd->arg = args;
    return 0;
}

static int parse_no_args(struct pop3_cmd *cmd, char *args, const char **reply_r)
{
    (void)cmd;
    trim_end(args);
    return *skip_spaces(args) == '\0' ? 0 : fail(reply_r, REPLY_INVALID_ARGS);
}

static bool is_valid_mech(const char *mech)
{
    size_t n = 0;
    for (; mech[n] != '\0'; n++) {
        if (!char_is_alnum((unsigned char)mech[n]) && mech[n] != '-' && mech[n] != '_')
            return false;
    }
    return n > 0 && n <= SASL_MECH_MAX;
}

/* AUTH [mechanism [initial-response]]: without a mechanism the client asks
 * for the list (RFC 1734 as Dovecot and Cyrus answer it). */
static int parse_auth(struct pop3_cmd *cmd, char *args, const char **reply_r)
{
    trim_end(args);
    args = skip_spaces(args);
    if (*args == '\0')
        return 0;
    char *response = split_word(args);
    if (!is_valid_mech(args))
        return fail(reply_r, REPLY_INVALID_MECH);
    upper(args);
    cmd->arg = args;
    if (*response == '\0')
        return 0;
    if (*split_word(response) != '\0' || has_control(response))
        return fail(reply_r, REPLY_INVALID_ARGS);
    cmd->auth_response = response;
    return 0;
}

/* One "KEY=VALUE": the key an alphanumeric followed by alphanumerics, '-'
 * or '_', upper-cased in place; the value anything without control
 * characters (possibly empty). */
static bool parse_param(char *word, struct pop3_param *param)
{
    char *eq = strchr(word, '=');

    if (eq == NULL || eq == word || has_control(eq + 1))
        return false;
    *eq = '\0';
    for (char *k = word; *k != '\0'; k++) {
        if (!char_is_alnum((unsigned char)*k) && (k == word || (*k != '-' && *k != '_')))
            return false;
    }
    upper(word);
    param->key = word;
    param->value = eq + 1;
    return true;
}

static int parse_xclient(struct pop3_cmd *cmd, char *args, const char **reply_r)
{
    trim_end(args);
    args = skip_spaces(args);
    if (*args == '\0')
        return fail(reply_r, REPLY_INVALID_PARAMS);
    while (*args != '\0') {
        char *next = split_word(args);
        if (cmd->n_params == POP3_CMD_MAX_PARAMS ||
            !parse_param(args, &cmd->params[cmd->n_params]))
            return fail(reply_r, REPLY_INVALID_PARAMS);
        cmd->n_params++;
        args = next;
    }
    return 0;
}

struct verb_def {
    const char *name;
    enum pop3_verb verb;
    int (*parse_args)(struct pop3_cmd *cmd, char *args, const char **reply_r);
};

static const struct verb_def verbs[] = {
    {"USER", POP3_CMD_USER, parse_user},
    {"PASS", POP3_CMD_PASS, parse_pass},
    {"AUTH", POP3_CMD_AUTH, parse_auth},
    {"CAPA", POP3_CMD_CAPA, parse_no_args},
    {"STLS", POP3_CMD_STLS, parse_no_args},
    {"QUIT", POP3_CMD_QUIT, parse_no_args},
    {"NOOP", POP3_CMD_NOOP, parse_no_args},
    {"XCLIENT", POP3_CMD_XCLIENT, parse_xclient},
};

static const struct verb_def *find_verb(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(verbs); i++) {
        if (strcasecmp(verbs[i].name, name) == 0)
            return &verbs[i];
    }
    return NULL;
}

/* "-ERR Unknown command: <verb>", the verb cut short and made printable:
 * it is the client's text going back to it, and into logs. */
static const char *unknown_reply(struct pop3_cmd *cmd)
{
    char shown[UNKNOWN_VERB_SHOWN + 1];
    size_t n = 0;

    for (const char *v = cmd->verb_text; *v != '\0' && n < UNKNOWN_VERB_SHOWN; v++) {
        unsigned char c = (unsigned char)*v;
        shown[n++] = c > 0x20 && c < 0x7f ? (char)c : '?';
    }
    shown[n] = '\0';
    snprintf(cmd->reply, sizeof(cmd->reply), "-ERR Unknown command: %s", shown);
    return cmd->reply;
}

/* Make room for n bytes; the old storage is wiped before it is freed. */
static void storage_reserve(struct pop3_cmd *cmd, size_t n)
{
    if (n <= cmd->storage_cap) {
        mem_wipe(cmd->storage, cmd->storage_cap);
        return;
    }
    pop3_cmd_free(cmd);
    cmd->storage = xmalloc(n);
    cmd->storage_cap = n;
}

static void cmd_clear(struct pop3_cmd *cmd)
{
    cmd->verb = POP3_CMD_UNKNOWN;
    cmd->verb_text = NULL;
    cmd->arg = NULL;
    cmd->auth_response = NULL;
    cmd->n_params = 0;
    cmd->reply[0] = '\0';
}

void pop3_cmd_init(struct pop3_cmd *cmd)
{
    memset(cmd, 0, sizeof(*cmd));
}

void pop3_cmd_free(struct pop3_cmd *cmd)
{
    if (cmd->storage != NULL) {
        mem_wipe(cmd->storage, cmd->storage_cap);
        free(cmd->storage);
    }
    cmd->storage = NULL;
    cmd->storage_cap = 0;
    cmd_clear(cmd);
}

int pop3_cmd_parse(const char *line, size_t len, size_t max_line, struct pop3_cmd *cmd,
                   const char **reply_r)
{
    cmd_clear(cmd);
    if (max_line == 0)
        max_line = POP3_LINE_MAX_DEFAULT;
    if (len > max_line)
        return fail(reply_r, POP3_REPLY_LINE_TOO_LONG);
    if (memchr(line, '\0', len) != NULL || memchr(line, '\r', len) != NULL ||
        memchr(line, '\n', len) != NULL)
        return fail(reply_r, REPLY_BAD_CHARS);

    storage_reserve(cmd, len + 1);
    memcpy(cmd->storage, line, len);
    cmd->storage[len] = '\0';
    char *verb = skip_spaces(cmd->storage);
    if (*verb == '\0')
        return fail(reply_r, REPLY_EMPTY);
    /* Exactly one space separates the verb from a USER or PASS argument. */
    char *args = verb + strcspn(verb, " ");
    if (*args == ' ')
        *args++ = '\0';
    cmd->verb_text = verb;

    const struct verb_def *def = find_verb(verb);
    if (def == NULL)
        return fail(reply_r, unknown_reply(cmd));
    cmd->verb = def->verb;
    return def->parse_args(cmd, args, reply_r);
}

const char *pop3_cmd_param(const struct pop3_cmd *cmd, const char *key)
{
    for (size_t i = 0; i < cmd->n_params; i++) {
        if (strcasecmp(cmd->params[i].key, key) == 0)
            return cmd->params[i].value;
    }
    return NULL;
}

bool pop3_arg_is_safe(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}
