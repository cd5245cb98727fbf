/* smtp-cmd - parse one SMTP/LMTP command line (RFC 5321, 2033, 3030, 1870,
 * 6531, Postfix XCLIENT/XFORWARD) into a struct smtp_cmd.
 *
 * This is only the syntax of one line. It does not know the session state
 * (whether MAIL is allowed now, whether the peer may send XCLIENT), it does
 * not decode xtext or base64, and it does not check what an ESMTP parameter
 * means: the caller does all of that.
 *
 * The line is copied once into cmd->storage and cut into NUL-terminated
 * tokens in place, so every pointer in the result points into the struct.
 * After an error only cmd->verb (SMTP_CMD_UNKNOWN when the verb was not
 * reached) and cmd->verb_text (NULL then) are meaningful.
 *
 * Representation choices the header leaves open: the AUTH initial response
 * is params[0] with an empty key and the response as value; the AUTH
 * mechanism and the VRFY/EXPN/NOOP/HELP text are kept as written; BDAT
 * sizes must be below 2^63 (they end up in off_t-sized counters).
 *
 * Leniency, on purpose: spaces before and after the line and runs of spaces
 * between tokens are accepted; "MAIL FROM: <x>" (space after the colon) is
 * accepted; paths without a domain ("<postmaster>", LMTP "<user>") are
 * accepted; dots in unquoted local parts are not checked ("a..b@x" passes,
 * the backend decides). Strict: every control character (including TAB and
 * a stray CR) rejects the line, paths need angle brackets, UTF-8 in paths must
 * be well-formed.
 *
 * Replies given on error (exact texts):
 *   500 5.5.6 Line too long                 line does not fit in cmd->storage
 *   500 5.5.2 Empty command                 empty line, or spaces only
 *   500 5.5.2 Invalid characters in command NUL or another control character
 *   500 5.5.2 Unknown command               verb not known
 *   501 5.5.4 Invalid parameters            argument given to DATA/RSET/QUIT/STARTTLS,
 *                                           or extra words after an AUTH response
 *   501 5.5.4 Missing hostname              HELO/EHLO/LHLO without argument
 *   501 5.5.4 Invalid hostname              HELO/EHLO/LHLO with more than one word
 *   501 5.5.4 Missing argument              VRFY/EXPN without argument
 *   501 5.5.4 Syntax: MAIL FROM:<address>   no "FROM:" after MAIL
 *   501 5.5.4 Syntax: RCPT TO:<address>     no "TO:" after RCPT
 *   501 5.1.7 Bad sender address syntax     MAIL path malformed
 *   501 5.1.7 Sender address too long       MAIL path over 256 octets
 *   501 5.1.3 Bad recipient address syntax  RCPT path malformed (also "<>")
 *   501 5.1.3 Recipient address too long    RCPT path over 256 octets
 *   501 5.5.4 Invalid parameter syntax      ESMTP parameter or XCLIENT attribute malformed
 *   501 5.5.4 Too many parameters           more than SMTP_CMD_MAX_PARAMS
 *   501 5.5.4 Missing attributes            XCLIENT/XFORWARD without attributes
 *   501 5.5.4 Syntax: BDAT size [LAST]      BDAT size missing, not decimal, >= 2^63
 *   501 5.5.4 Missing SASL mechanism        AUTH without argument
 *   501 5.5.4 Invalid SASL mechanism        mechanism name not RFC 4422 syntax
 */
#include "smtp-cmd.h"
#include "str.h"

#include <string.h>
#include <strings.h>

#define REPLY_TOO_LONG "500 5.5.6 Line too long"
#define REPLY_EMPTY "500 5.5.2 Empty command"
#define REPLY_BAD_CHARS "500 5.5.2 Invalid characters in command"
#define REPLY_UNKNOWN "500 5.5.2 Unknown command"
#define REPLY_INVALID_PARAMS "501 5.5.4 Invalid parameters"
#define REPLY_MISSING_HOST "501 5.5.4 Missing hostname"
#define REPLY_INVALID_HOST "501 5.5.4 Invalid hostname"
#define REPLY_MISSING_ARG "501 5.5.4 Missing argument"
#define REPLY_BAD_PARAM "501 5.5.4 Invalid parameter syntax"
#define REPLY_TOO_MANY "501 5.5.4 Too many parameters"
#define REPLY_MISSING_ATTRS "501 5.5.4 Missing attributes"
#define REPLY_BDAT_SYNTAX "501 5.5.4 Syntax: BDAT size [LAST]"
#define REPLY_MISSING_MECH "501 5.5.4 Missing SASL mechanism"
#define REPLY_INVALID_MECH "501 5.5.4 Invalid SASL mechanism"

/* RFC 5321 4.5.3.1.3: a path is at most 256 octets, angle brackets included. */
#define SMTP_PATH_MAX 256
/* RFC 4422 3.1: a SASL mechanism name is 1 to 20 characters. */
#define SASL_MECH_MAX 20
#define BDAT_SIZE_MAX 0x7fffffffffffffffULL

struct path_rules {
    const char *prefix; /* "FROM:" or "TO:" */
    bool null_ok;       /* "<>" allowed */
    const char *syntax_reply;
    const char *bad_reply;
    const char *long_reply;
};

static const struct path_rules mail_rules = {
    "FROM:", true, "501 5.5.4 Syntax: MAIL FROM:<address>",
    "501 5.1.7 Bad sender address syntax", "501 5.1.7 Sender address too long",
};
static const struct path_rules rcpt_rules = {
    "TO:", false, "501 5.5.4 Syntax: RCPT TO:<address>",
    "501 5.1.3 Bad recipient address syntax", "501 5.1.3 Recipient address too long",
};

static int fail(const char **reply_r, const char *reply)
{
    *reply_r = reply;
    return -1;
}

/* Cut the word at s: NUL-terminate it and return the start of the next one
 * (past any run of spaces), or the terminating "" when there is none. */
static char *split_word(char *s)
{
    char *space = strchr(s, ' ');
    if (space == NULL)
        return s + strlen(s);
    *space++ = '\0';
    while (*space == ' ')
        space++;
    return space;
}

/* Length of the well-formed UTF-8 sequence (2 to 4 bytes) at s, 0 if there
 * is none: no overlong forms, no surrogates, nothing above U+10FFFF. The
 * string is NUL-terminated, so reading continuation bytes stops at the end. */
static size_t utf8_seq_len(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;

    if (u[0] >= 0xc2 && u[0] <= 0xdf) {
        n = 2;
    } else if (u[0] >= 0xe0 && u[0] <= 0xef) {
        n = 3;
        if (u[0] == 0xe0)
            lo = 0xa0;
        else if (u[0] == 0xed)
            hi = 0x9f;
    } else if (u[0] >= 0xf0 && u[0] <= 0xf4) {
        n = 4;
        if (u[0] == 0xf0)
            lo = 0x90;
        else if (u[0] == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (u[1] < lo || u[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (u[i] < 0x80 || u[i] > 0xbf)
            return 0;
    }
    return n;
}

/* atext (RFC 5322 3.2.3) plus the dot of a Dot-string. */
static bool is_local_char(unsigned char c)
{
    return char_is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL);
}

static bool is_domain_char(unsigned char c)
{
    /* '_' is not in RFC 5321, but it is common in real host names. */
    return char_is_alnum(c) || c == '-' || c == '.' || c == '_';
}

/* Skip one run of characters accepted by is_char, or of UTF-8 sequences.
 * Returns NULL when the run is empty or holds malformed UTF-8. */
static const char *skip_run(const char *s, bool (*is_char)(unsigned char))
{
    const char *start = s;
    for (;;) {
        unsigned char c = (unsigned char)*s;
        if (is_char(c)) {
            s++;
        } else if (c >= 0x80) {
            size_t n = utf8_seq_len(s);
            if (n == 0)
                return NULL;
            s += n;
        } else {
            break;
        }
    }
    return s == start ? NULL : s;
}

/* Quoted-string (RFC 5321 4.1.2): printable ASCII or UTF-8 except '"' and
 * '\', or '\' followed by a printable character. s points at the '"'. */
static const char *skip_quoted(const char *s)
{
    for (s++;;) {
        unsigned char c = (unsigned char)*s;
        if (c == '"')
            return s + 1;
        if (c == '\\') {
            if (s[1] < 0x20 || s[1] > 0x7e)
                return NULL;
            s += 2;
        } else if (c >= 0x80) {
            size_t n = utf8_seq_len(s);
            if (n == 0)
                return NULL;
            s += n;
        } else if (c >= 0x20 && c <= 0x7e) {
            s++;
        } else {
            return NULL;
        }
    }
}

static const char *skip_local_part(const char *s)
{
    return *s == '"' ? skip_quoted(s) : skip_run(s, is_local_char);
}

/* A domain name or an address literal "[...]" (RFC 5321 4.1.3, the inside
 * checked only for printable characters: the backend parses it). */
static const char *skip_domain(const char *s)
{
    if (*s != '[')
        return skip_run(s, is_domain_char);
    const char *start = ++s;
    while (*s >= 33 && *s <= 126 && *s != '[' && *s != '\\' && *s != ']')
        s++;
    if (s == start || *s != ']')
        return NULL;
    return s + 1;
}

/* Source route "@a,@b:" (RFC 5321 4.1.2 A-d-l, obsolete): skipped. */
static const char *skip_route(const char *s)
{
    for (;;) {
        if (*s != '@')
            return NULL;
        s = skip_domain(s + 1);
        if (s == NULL)
            return NULL;
        if (*s == ':')
            return s + 1;
        if (*s != ',')
            return NULL;
        s++;
    }
}

enum path_result { PATH_OK, PATH_BAD, PATH_TOO_LONG };

/* Parse "<[route:]mailbox>" at p. On success the closing '>' becomes a NUL,
 * *addr_r is the mailbox without the route and *rest_r what follows '>'. */
static enum path_result parse_path(char *p, bool null_ok, const char **addr_r, char **rest_r)
{
    const char *s = p + 1;

    if (*p != '<')
        return PATH_BAD;
    if (*s == '>' && !null_ok)
        return PATH_BAD;
    if (*s != '>') {
        if (*s == '@' && (s = skip_route(s)) == NULL)
            return PATH_BAD;
        *addr_r = s;
        if ((s = skip_local_part(s)) == NULL)
            return PATH_BAD;
        if (*s == '@' && (s = skip_domain(s + 1)) == NULL)
            return PATH_BAD;
        if (*s != '>')
            return PATH_BAD;
    } else {
        *addr_r = s;
    }
    if ((size_t)(s + 1 - p) > SMTP_PATH_MAX)
        return PATH_TOO_LONG;
    char *end = p + (s - p);
    *end = '\0';
    *rest_r = end + 1;
    return PATH_OK;
}

/* One "KEY[=VALUE]" word. Keys are an alphanumeric followed by alphanumerics,
 * '-' or '_' (XCLIENT REVERSE_NAME), upper-cased in place. Values are kept
 * raw (xtext is the caller's to decode); an empty value is allowed. */
static bool parse_param(char *word, bool need_value, struct smtp_param *param)
{
    char *p = word;

    if (!char_is_alnum((unsigned char)*p))
        return false;
    for (; char_is_alnum((unsigned char)*p) || *p == '-' || *p == '_'; p++) {
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    }
    param->key = word;
    if (*p == '\0') {
        param->value = NULL;
        return !need_value;
    }
    if (*p != '=')
        return false;
    *p = '\0';
    param->value = p + 1;
    return true;
}

static int parse_params(struct smtp_cmd *cmd, char *s, bool need_value, const char **reply_r)
{
    while (*s != '\0') {
        char *next = split_word(s);
        if (cmd->n_params == SMTP_CMD_MAX_PARAMS)
            return fail(reply_r, REPLY_TOO_MANY);
        if (!parse_param(s, need_value, &cmd->params[cmd->n_params]))
            return fail(reply_r, REPLY_BAD_PARAM);
        cmd->n_params++;
        s = next;
    }
    return 0;
}

static int parse_path_cmd(struct smtp_cmd *cmd, char *args, const struct path_rules *rules,
                          const char **reply_r)
{
    size_t prefix_len = strlen(rules->prefix);
    char *rest;

    if (strncasecmp(args, rules->prefix, prefix_len) != 0)
        return fail(reply_r, rules->syntax_reply);
    args += prefix_len;
    while (*args == ' ')
        args++;
    switch (parse_path(args, rules->null_ok, &cmd->arg, &rest)) {
    case PATH_OK:
        break;
    case PATH_TOO_LONG:
        cmd->arg = NULL;
        return fail(reply_r, rules->long_reply);
    case PATH_BAD:
    default:
        cmd->arg = NULL;
        return fail(reply_r, rules->bad_reply);
    }
    /* "<a@b>SIZE=1": a parameter glued to the path is not a parameter. */
    if (*rest != '\0' && *rest != ' ') {
        cmd->arg = NULL;
        return fail(reply_r, rules->bad_reply);
    }
    while (*rest == ' ')
        rest++;
    return parse_params(cmd, rest, false, reply_r);
}

static int parse_mail(struct smtp_cmd *cmd, char *args, const char **reply_r)
{
    return parse_path_cmd(cmd, args, &mail_rules, reply_r);
}

static int parse_rcpt(struct smtp_cmd *cmd, char *args, const char **reply_r)
{
    return parse_path_cmd(cmd, args, &rcpt_rules, reply_r);
}

static int parse_no_args(struct smtp_cmd *cmd, char *args, const char **reply_r)
{
    (void)cmd;
    return *args == '\0' ? 0 : fail(reply_r, REPLY_INVALID_PARAMS);
}

static int parse_optional_text(struct smtp_cmd *cmd, char *args, const char **reply_r)
{
    (void)reply_r;
    cmd->arg = *args == '\0' ? NULL : args;
    return 0;
}

static int parse_required_text(struct smtp_cmd *cmd, char *args, const char **reply_r)
{
    if (*args == '\0')
        return fail(reply_r, REPLY_MISSING_ARG);
    cmd->arg = args;
    return 0;
}

/* The HELO argument is not checked beyond being one word: clients send
 * all sorts of names, and the value is only logged and forwarded. */
static int parse_hello(struct smtp_cmd *cmd, char *args, const char **reply_r)
{
    if (*args == '\0')
        return fail(reply_r, REPLY_MISSING_HOST);
    if (*split_word(args) != '\0')
        return fail(reply_r, REPLY_INVALID_HOST);
    cmd->arg = args;
    return 0;
}

static bool parse_bdat_size(const char *s, uint64_t *size_r)
{
    uint64_t size = 0;

    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned digit = (unsigned)(*s - '0');
        if (size > (BDAT_SIZE_MAX - digit) / 10)
            return false;
        size = size * 10 + digit;
    }
    *size_r = size;
    return true;
}

static int parse_bdat(struct smtp_cmd *cmd, char *args, const char **reply_r)
{
    char *last = split_word(args);

    if (!parse_bdat_size(args, &cmd->bdat_size))
        return fail(reply_r, REPLY_BDAT_SYNTAX);
    if (*last == '\0')
        return 0;
    if (*split_word(last) != '\0' || strcasecmp(last, "LAST") != 0)
        return fail(reply_r, REPLY_BDAT_SYNTAX);
    cmd->bdat_last = true;
    return 0;
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

/* AUTH mechanism [initial-response]: the response (base64 or "=") becomes
 * params[0] with an empty key, kept raw for the SASL code to decode. */
static int parse_auth(struct smtp_cmd *cmd, char *args, const char **reply_r)
{
    if (*args == '\0')
        return fail(reply_r, REPLY_MISSING_MECH);
    char *response = split_word(args);
    if (!is_valid_mech(args))
        return fail(reply_r, REPLY_INVALID_MECH);
    cmd->arg = args;
    if (*response == '\0')
        return 0;
    if (*split_word(response) != '\0')
        return fail(reply_r, REPLY_INVALID_PARAMS);
    /* The key is the empty string that ends the mechanism name, so that it
     * too points into the storage. */
    cmd->params[0].key = args + strlen(args);
    cmd->params[0].value = response;
    cmd->n_params = 1;
    return 0;
}

static int parse_attributes(struct smtp_cmd *cmd, char *args, const char **reply_r)
{
    if (*args == '\0')
        return fail(reply_r, REPLY_MISSING_ATTRS);
    return parse_params(cmd, args, true, reply_r);
}

struct verb_def {
    const char *name;
    enum smtp_verb verb;
    int (*parse_args)(struct smtp_cmd *cmd, char *args, const char **reply_r);
};

static const struct verb_def verbs[] = {
    {"LHLO", SMTP_CMD_LHLO, parse_hello},
    {"HELO", SMTP_CMD_HELO, parse_hello},
    {"EHLO", SMTP_CMD_EHLO, parse_hello},
    {"MAIL", SMTP_CMD_MAIL, parse_mail},
    {"RCPT", SMTP_CMD_RCPT, parse_rcpt},
    {"DATA", SMTP_CMD_DATA, parse_no_args},
    {"BDAT", SMTP_CMD_BDAT, parse_bdat},
    {"RSET", SMTP_CMD_RSET, parse_no_args},
    {"NOOP", SMTP_CMD_NOOP, parse_optional_text},
    {"QUIT", SMTP_CMD_QUIT, parse_no_args},
    {"VRFY", SMTP_CMD_VRFY, parse_required_text},
    {"EXPN", SMTP_CMD_EXPN, parse_required_text},
    {"HELP", SMTP_CMD_HELP, parse_optional_text},
    {"STARTTLS", SMTP_CMD_STARTTLS, parse_no_args},
    {"AUTH", SMTP_CMD_AUTH, parse_auth},
    {"XCLIENT", SMTP_CMD_XCLIENT, parse_attributes},
    {"XFORWARD", SMTP_CMD_XFORWARD, parse_attributes},
};

static const struct verb_def *find_verb(const char *name)
{
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (strcasecmp(verbs[i].name, name) == 0)
            return &verbs[i];
    }
    return NULL;
}

static void cmd_clear(struct smtp_cmd *cmd)
{
    cmd->verb = SMTP_CMD_UNKNOWN;
    cmd->verb_text = NULL;
    cmd->arg = NULL;
    cmd->n_params = 0;
    cmd->bdat_size = 0;
    cmd->bdat_last = false;
    cmd->storage[0] = '\0';
}

static bool has_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (char_is_control((unsigned char)s[i]))
            return true;
    }
    return false;
}

int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd, const char **reply_r)
{
    cmd_clear(cmd);
    if (len >= sizeof(cmd->storage))
        return fail(reply_r, REPLY_TOO_LONG);
    while (len > 0 && line[len - 1] == ' ')
        len--;
    while (len > 0 && line[0] == ' ') {
        line++;
        len--;
    }
    if (len == 0)
        return fail(reply_r, REPLY_EMPTY);
    if (has_control(line, len))
        return fail(reply_r, REPLY_BAD_CHARS);

    memcpy(cmd->storage, line, len);
    cmd->storage[len] = '\0';
    char *args = split_word(cmd->storage);
    cmd->verb_text = cmd->storage;

    const struct verb_def *def = find_verb(cmd->verb_text);
    if (def == NULL)
        return fail(reply_r, REPLY_UNKNOWN);
    cmd->verb = def->verb;
    return def->parse_args(cmd, args, reply_r);
}

const char *smtp_cmd_param(const struct smtp_cmd *cmd, const char *key, bool *present_r)
{
    for (size_t i = 0; i < cmd->n_params; i++) {
        if (strcasecmp(cmd->params[i].key, key) == 0) {
            if (present_r != NULL)
                *present_r = true;
            return cmd->params[i].value;
        }
    }
    if (present_r != NULL)
        *present_r = false;
    return NULL;
}
