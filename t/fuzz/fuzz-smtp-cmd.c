/* fuzz-smtp-cmd - libFuzzer target for the SMTP/LMTP command line parser.
 *
 * The input is one command line (no CRLF). Besides the sanitizers, it
 * checks the parser's promises: a "5xx x.y.z text" reply on error; on
 * success every pointer inside cmd->storage and NUL-terminated there, keys
 * upper-case, paths within 256 octets, BDAT sizes below 2^63. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp-cmd.h"

#define REQUIRE(cond)                                                                    \
    do {                                                                                 \
        if (!(cond))                                                                     \
            abort();                                                                     \
    } while (0)

static void check_in_storage(const struct smtp_cmd *cmd, const char *s)
{
    const char *lo = cmd->storage, *hi = cmd->storage + sizeof(cmd->storage);
    REQUIRE(s >= lo && s < hi);
    REQUIRE(memchr(s, '\0', (size_t)(hi - s)) != NULL);
}

static void check_reply(const char *reply)
{
    REQUIRE(reply != NULL);
    REQUIRE(reply[0] == '5' && reply[3] == ' ' && reply[5] == '.');
    REQUIRE(strlen(reply) > 10);
}

static void check_success(const struct smtp_cmd *cmd)
{
    REQUIRE(cmd->verb != SMTP_CMD_UNKNOWN);
    check_in_storage(cmd, cmd->verb_text);
    if (cmd->arg != NULL) {
        check_in_storage(cmd, cmd->arg);
        for (const char *p = cmd->arg; *p != '\0'; p++)
            REQUIRE((unsigned char)*p >= 0x20 && *p != 0x7f);
    }
    if (cmd->verb == SMTP_CMD_MAIL || cmd->verb == SMTP_CMD_RCPT)
        REQUIRE(cmd->arg != NULL && strlen(cmd->arg) <= 254);
    REQUIRE(cmd->n_params <= SMTP_CMD_MAX_PARAMS);
    for (size_t i = 0; i < cmd->n_params; i++) {
        const struct smtp_param *p = &cmd->params[i];
        check_in_storage(cmd, p->key);
        if (p->value != NULL)
            check_in_storage(cmd, p->value);
        for (const char *k = p->key; *k != '\0'; k++)
            REQUIRE(!(*k >= 'a' && *k <= 'z') && *k != ' ' && *k != '=');
        bool present = false;
        (void)smtp_cmd_param(cmd, p->key, &present);
        REQUIRE(present);
    }
    REQUIRE(cmd->bdat_size <= INT64_MAX);
    REQUIRE(cmd->verb == SMTP_CMD_BDAT || (cmd->bdat_size == 0 && !cmd->bdat_last));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_cmd cmd;
    const char *reply = NULL;

    int ret = smtp_cmd_parse((const char *)data, size, &cmd, &reply);
    if (ret != 0) {
        REQUIRE(ret == -1);
        check_reply(reply);
        return 0;
    }
    check_success(&cmd);
    return 0;
}
