/* test-pop3-parse - table-driven tests of the pre-login POP3 command parser:
 * every verb, passwords with spaces, AUTH with and without an initial
 * response, XCLIENT, the exact error replies, the line limit, NUL and
 * control characters, and reuse of one struct for many lines. */
#include <stdlib.h>

#include "mem.h"
#include "pop3-parse.h"
#include "test.h"

#define BAD_CHARS "-ERR Invalid characters in command"
#define INVALID_ARGS "-ERR Invalid arguments"
#define INVALID_PARAMS "-ERR Invalid parameters"

struct cmd_case {
    const char *line;
    const char *reply; /* NULL: the line parses */
    enum pop3_verb verb;
    const char *arg;
    const char *auth_response;
    const char *params; /* "KEY=VALUE KEY2=" as parsed, NULL for none */
};

static const struct cmd_case cases[] = {
    /* USER and PASS */
    {"USER bob", NULL, POP3_CMD_USER, "bob"},
    {"user bob@example.com", NULL, POP3_CMD_USER, "bob@example.com"},
    {"USER j\xc3\xbcrgen", NULL, POP3_CMD_USER, "j\xc3\xbcrgen"},
    {"USER  bob ", NULL, POP3_CMD_USER, " bob "},
    {"USER", "-ERR Missing user name", POP3_CMD_USER},
    {"USER ", "-ERR Missing user name", POP3_CMD_USER},
    {"USER bob\tx", BAD_CHARS, POP3_CMD_USER},
    {"PASS secret", NULL, POP3_CMD_PASS, "secret"},
    {"pass  with spaces  ", NULL, POP3_CMD_PASS, " with spaces  "},
    {"PASS p\xe2\x82\xac\tx\x7f", NULL, POP3_CMD_PASS, "p\xe2\x82\xac\tx\x7f"},
    {"PASS \"q\" {5}", NULL, POP3_CMD_PASS, "\"q\" {5}"},
    {"PASS", "-ERR Missing password", POP3_CMD_PASS},
    {"PASS ", "-ERR Missing password", POP3_CMD_PASS},
    /* AUTH */
    {"AUTH", NULL, POP3_CMD_AUTH},
    {"auth  ", NULL, POP3_CMD_AUTH},
    {"AUTH plain", NULL, POP3_CMD_AUTH, "PLAIN"},
    {"AUTH PLAIN AHVzZXIAcGFzcw==", NULL, POP3_CMD_AUTH, "PLAIN", "AHVzZXIAcGFzcw=="},
    {"AUTH PLAIN =", NULL, POP3_CMD_AUTH, "PLAIN", "="},
    {"AUTH  XOAUTH2   dXNlcj1h  ", NULL, POP3_CMD_AUTH, "XOAUTH2", "dXNlcj1h"},
    {"AUTH SCRAM-SHA-256", NULL, POP3_CMD_AUTH, "SCRAM-SHA-256"},
    {"AUTH PL@IN", "-ERR Invalid SASL mechanism", POP3_CMD_AUTH},
    {"AUTH ABCDEFGHIJKLMNOPQRSTU", "-ERR Invalid SASL mechanism", POP3_CMD_AUTH},
    {"AUTH PLAIN a b", INVALID_ARGS, POP3_CMD_AUTH},
    {"AUTH PLAIN a\tb", INVALID_ARGS, POP3_CMD_AUTH},
    /* commands without arguments */
    {"CAPA", NULL, POP3_CMD_CAPA},
    {"capa ", NULL, POP3_CMD_CAPA},
    {"  CAPA", NULL, POP3_CMD_CAPA},
    {"CAPA x", INVALID_ARGS, POP3_CMD_CAPA},
    {"STLS", NULL, POP3_CMD_STLS},
    {"stls now", INVALID_ARGS, POP3_CMD_STLS},
    {"QUIT", NULL, POP3_CMD_QUIT},
    {"Quit", NULL, POP3_CMD_QUIT},
    {"NOOP", NULL, POP3_CMD_NOOP},
    {"NOOP 1", INVALID_ARGS, POP3_CMD_NOOP},
    /* XCLIENT */
    {"XCLIENT ADDR=127.0.0.1 PORT=53482 SESSION=HszV2Ltg6tB/AAAB TTL=4 FORWARD=Zm9vPWJhcg==",
     NULL, POP3_CMD_XCLIENT, NULL, NULL,
     "ADDR=127.0.0.1 PORT=53482 SESSION=HszV2Ltg6tB/AAAB TTL=4 FORWARD=Zm9vPWJhcg=="},
    {"xclient addr=2001:db8::1  x_y-z=  ", NULL, POP3_CMD_XCLIENT, NULL, NULL,
     "ADDR=2001:db8::1 X_Y-Z="},
    {"XCLIENT", INVALID_PARAMS, POP3_CMD_XCLIENT},
    {"XCLIENT ADDR", INVALID_PARAMS, POP3_CMD_XCLIENT},
    {"XCLIENT =1", INVALID_PARAMS, POP3_CMD_XCLIENT},
    {"XCLIENT _A=1", INVALID_PARAMS, POP3_CMD_XCLIENT},
    {"XCLIENT A.B=1", INVALID_PARAMS, POP3_CMD_XCLIENT},
    {"XCLIENT A=\x01", INVALID_PARAMS, POP3_CMD_XCLIENT},
    /* unknown, empty, bad characters */
    {"APOP bob 0123456789abcdef", "-ERR Unknown command: APOP", POP3_CMD_UNKNOWN},
    {"RETR 1", "-ERR Unknown command: RETR", POP3_CMD_UNKNOWN},
    {"USERbob", "-ERR Unknown command: USERbob", POP3_CMD_UNKNOWN},
    {"USER\tbob", "-ERR Unknown command: USER?bob", POP3_CMD_UNKNOWN},
    {"\xff\x1b[31mX", "-ERR Unknown command: ??[31mX", POP3_CMD_UNKNOWN},
    {"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "-ERR Unknown command: ABCDEFGHIJKLMNOPQRST",
     POP3_CMD_UNKNOWN},
    {"", "-ERR Empty command", POP3_CMD_UNKNOWN},
    {"   ", "-ERR Empty command", POP3_CMD_UNKNOWN},
    {"PASS a\rb", BAD_CHARS, POP3_CMD_UNKNOWN},
    {"USER a\nQUIT", BAD_CHARS, POP3_CMD_UNKNOWN},
};

static void format_params(const struct pop3_cmd *cmd, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < cmd->n_params && n < size; i++) {
        n += (size_t)snprintf(out + n, size - n, "%s%s=%s", i > 0 ? " " : "",
                              cmd->params[i].key, cmd->params[i].value);
    }
}

static void check_case(struct pop3_cmd *cmd, const struct cmd_case *c)
{
    const char *reply = NULL;
    char params[1024];

    test_current = c->line;
    int ret = pop3_cmd_parse(c->line, strlen(c->line), 0, cmd, &reply);
    CHECK_INT(ret, c->reply == NULL ? 0 : -1);
    CHECK_INT(cmd->verb, c->verb);
    if (c->reply != NULL) {
        CHECK_STR(reply, c->reply);
        return;
    }
    CHECK_STR(cmd->arg, c->arg);
    CHECK_STR(cmd->auth_response, c->auth_response);
    format_params(cmd, params, sizeof(params));
    CHECK_STR(params, c->params != NULL ? c->params : "");
}

static void test_table(void)
{
    struct pop3_cmd cmd;

    /* One struct for every line: nothing of a previous line may remain. */
    pop3_cmd_init(&cmd);
    for (size_t i = 0; i < ARRAY_LEN(cases); i++)
        check_case(&cmd, &cases[i]);
    for (size_t i = ARRAY_LEN(cases); i > 0; i--)
        check_case(&cmd, &cases[i - 1]);
    pop3_cmd_free(&cmd);
}

static void test_verb_text(void)
{
    struct pop3_cmd cmd;
    const char *reply;

    pop3_cmd_init(&cmd);
    CHECK_INT(pop3_cmd_parse("uSeR bob", 8, 0, &cmd, &reply), 0);
    CHECK_STR(cmd.verb_text, "uSeR");
    CHECK_INT(pop3_cmd_parse("Foo x", 5, 0, &cmd, &reply), -1);
    CHECK_STR(cmd.verb_text, "Foo");
    CHECK_INT(cmd.verb, POP3_CMD_UNKNOWN);
    pop3_cmd_free(&cmd);
}

static void check_len(size_t len, size_t max_line, const char *want_reply)
{
    struct pop3_cmd cmd;
    const char *reply = NULL;
    char *line = malloc(len + 1);

    pop3_cmd_init(&cmd);
    memcpy(line, "PASS ", 5);
    memset(line + 5, 'p', len - 5);
    int ret = pop3_cmd_parse(line, len, max_line, &cmd, &reply);
    CHECK_INT(ret, want_reply == NULL ? 0 : -1);
    if (want_reply == NULL)
        CHECK_INT(strlen(cmd.arg), len - 5);
    else
        CHECK_STR(reply, want_reply);
    pop3_cmd_free(&cmd);
    free(line);
}

static void test_line_limit(void)
{
    check_len(POP3_LINE_MAX_DEFAULT, 0, NULL);
    check_len(POP3_LINE_MAX_DEFAULT + 1, 0, POP3_REPLY_LINE_TOO_LONG);
    check_len(255, 255, NULL);
    check_len(256, 255, "-ERR Line too long");
    check_len(8000, 8192, NULL);
    check_len(1 << 20, 0, POP3_REPLY_LINE_TOO_LONG);
}

static void test_nul(void)
{
    struct pop3_cmd cmd;
    const char *reply = NULL;
    static const char pass[] = "PASS a\0b";
    static const char lead[] = "\0QUIT";

    pop3_cmd_init(&cmd);
    CHECK_INT(pop3_cmd_parse(pass, sizeof(pass) - 1, 0, &cmd, &reply), -1);
    CHECK_STR(reply, BAD_CHARS);
    CHECK_INT(pop3_cmd_parse(lead, sizeof(lead) - 1, 0, &cmd, &reply), -1);
    CHECK_STR(reply, BAD_CHARS);
    /* A line that is not NUL-terminated is read by its length only. */
    CHECK_INT(pop3_cmd_parse("QUITXYZ", 4, 0, &cmd, &reply), 0);
    CHECK_INT(cmd.verb, POP3_CMD_QUIT);
    pop3_cmd_free(&cmd);
    pop3_cmd_free(&cmd); /* twice is fine */
}

static void test_param_lookup(void)
{
    struct pop3_cmd cmd;
    const char *reply;
    const char *line = "XCLIENT addr=192.0.2.1 Ttl=3 SESSION=";

    pop3_cmd_init(&cmd);
    CHECK_INT(pop3_cmd_parse(line, strlen(line), 0, &cmd, &reply), 0);
    CHECK_STR(pop3_cmd_param(&cmd, "ADDR"), "192.0.2.1");
    CHECK_STR(pop3_cmd_param(&cmd, "ttl"), "3");
    CHECK_STR(pop3_cmd_param(&cmd, "session"), "");
    CHECK_STR(pop3_cmd_param(&cmd, "PORT"), NULL);
    pop3_cmd_free(&cmd);
}

static void check_n_params(size_t n, const char *want_reply)
{
    struct pop3_cmd cmd;
    const char *reply = NULL;
    char line[512];
    size_t len = (size_t)snprintf(line, sizeof(line), "XCLIENT");

    pop3_cmd_init(&cmd);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(line + len, sizeof(line) - len, " P%zu=%zu", i, i);
    int ret = pop3_cmd_parse(line, len, 0, &cmd, &reply);
    CHECK_INT(ret, want_reply == NULL ? 0 : -1);
    if (want_reply == NULL)
        CHECK_INT(cmd.n_params, n);
    else
        CHECK_STR(reply, want_reply);
    pop3_cmd_free(&cmd);
}

static void test_too_many_params(void)
{
    check_n_params(POP3_CMD_MAX_PARAMS, NULL);
    check_n_params(POP3_CMD_MAX_PARAMS + 1, INVALID_PARAMS);
}

static void test_arg_is_safe(void)
{
    CHECK(pop3_arg_is_safe("bob"));
    CHECK(pop3_arg_is_safe("pass with spaces\t\xc3\xbc"));
    CHECK(pop3_arg_is_safe(""));
    CHECK(!pop3_arg_is_safe("x\r\nQUIT"));
    CHECK(!pop3_arg_is_safe("x\n"));
    CHECK(!pop3_arg_is_safe("\r"));
}

int main(void)
{
    RUN(test_table);
    RUN(test_verb_text);
    RUN(test_line_limit);
    RUN(test_nul);
    RUN(test_param_lookup);
    RUN(test_too_many_params);
    RUN(test_arg_is_safe);
    return test_done();
}
