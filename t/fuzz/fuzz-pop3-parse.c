/* fuzz-pop3-parse - libFuzzer target for the pre-login POP3 command parser.
 *
 * The first input byte picks the line limit, the rest is one line (no
 * CRLF). Besides the sanitizers it checks the parser's promises: an
 * "-ERR text" reply on error; on success a known verb, every pointer inside
 * the command's storage and NUL-terminated there, no CR/LF/NUL in what was
 * kept, an upper-case AUTH mechanism and XCLIENT keys; and the same result
 * when the struct is reused for the same line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pop3-parse.h"

#define REQUIRE(cond)                                                                    \
    do {                                                                                 \
        if (!(cond))                                                                     \
            abort();                                                                     \
    } while (0)

static void check_in_storage(const struct pop3_cmd *cmd, const char *s)
{
    const char *lo = cmd->storage, *hi = cmd->storage + cmd->storage_cap;
    REQUIRE(s >= lo && s < hi);
    REQUIRE(memchr(s, '\0', (size_t)(hi - s)) != NULL);
    REQUIRE(strpbrk(s, "\r\n") == NULL);
}

static void check_upper(const char *s)
{
    for (; *s != '\0'; s++)
        REQUIRE(!(*s >= 'a' && *s <= 'z') && *s != ' ' && *s != '=');
}

static void check_success(const struct pop3_cmd *cmd)
{
    REQUIRE(cmd->verb != POP3_CMD_UNKNOWN);
    check_in_storage(cmd, cmd->verb_text);
    if (cmd->arg != NULL) {
        check_in_storage(cmd, cmd->arg);
        REQUIRE(cmd->arg[0] != '\0');
        REQUIRE(pop3_arg_is_safe(cmd->arg));
    }
    if (cmd->verb == POP3_CMD_USER || cmd->verb == POP3_CMD_PASS)
        REQUIRE(cmd->arg != NULL);
    if (cmd->verb == POP3_CMD_AUTH && cmd->arg != NULL) {
        check_upper(cmd->arg);
        REQUIRE(strlen(cmd->arg) <= 20);
    }
    if (cmd->auth_response != NULL) {
        REQUIRE(cmd->verb == POP3_CMD_AUTH && cmd->arg != NULL);
        check_in_storage(cmd, cmd->auth_response);
        REQUIRE(strchr(cmd->auth_response, ' ') == NULL && cmd->auth_response[0] != '\0');
    }
    REQUIRE(cmd->n_params <= POP3_CMD_MAX_PARAMS);
    REQUIRE(cmd->verb == POP3_CMD_XCLIENT ? cmd->n_params > 0 : cmd->n_params == 0);
    for (size_t i = 0; i < cmd->n_params; i++) {
        check_in_storage(cmd, cmd->params[i].key);
        check_in_storage(cmd, cmd->params[i].value);
        check_upper(cmd->params[i].key);
        REQUIRE(pop3_cmd_param(cmd, cmd->params[i].key) != NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t limits[] = {0, 16, 255, 8192};
    struct pop3_cmd cmd;
    const char *reply = NULL;

    if (size < 1)
        return 0;
    size_t max_line = limits[data[0] % 4];
    const char *line = (const char *)data + 1;
    size--;

    pop3_cmd_init(&cmd);
    int ret = pop3_cmd_parse(line, size, max_line, &cmd, &reply);
    REQUIRE(ret == 0 || ret == -1);
    if (ret == 0) {
        check_success(&cmd);
    } else {
        REQUIRE(reply != NULL && strncmp(reply, "-ERR ", 5) == 0);
        REQUIRE(strpbrk(reply, "\r\n") == NULL);
    }
    enum pop3_verb verb = cmd.verb;
    int ret2 = pop3_cmd_parse(line, size, max_line, &cmd, &reply);
    REQUIRE(ret2 == ret && cmd.verb == verb);
    pop3_cmd_free(&cmd);
    return 0;
}
