/* test-smtp-cmd - table-driven tests of the SMTP/LMTP command line parser:
 * every verb, ESMTP parameters, paths, bad syntax with the exact replies,
 * limits (line length, path length, parameter count), NUL and UTF-8. */
#include <stdint.h>
#include <stdlib.h>

#include "smtp-cmd.h"
#include "test.h"

#define BAD_CHARS "500 5.5.2 Invalid characters in command"
#define UNKNOWN "500 5.5.2 Unknown command"
#define INVALID_PARAMS "501 5.5.4 Invalid parameters"
#define BAD_SENDER "501 5.1.7 Bad sender address syntax"
#define BAD_RCPT "501 5.1.3 Bad recipient address syntax"
#define MAIL_SYNTAX "501 5.5.4 Syntax: MAIL FROM:<address>"
#define RCPT_SYNTAX "501 5.5.4 Syntax: RCPT TO:<address>"
#define BAD_PARAM "501 5.5.4 Invalid parameter syntax"
#define BDAT_SYNTAX "501 5.5.4 Syntax: BDAT size [LAST]"

struct cmd_case {
    const char *line;
    const char *reply; /* NULL: the line parses */
    enum smtp_verb verb;
    const char *arg;
    const char *params; /* "KEY=VALUE KEY2" as parsed, NULL for none */
    uint64_t bdat_size;
    bool bdat_last;
};

static const struct cmd_case cases[] = {
    /* greetings */
    {"LHLO mx.example.com", NULL, SMTP_CMD_LHLO, "mx.example.com"},
    {"lhlo mx", NULL, SMTP_CMD_LHLO, "mx"},
    {"EhLo [192.0.2.1]", NULL, SMTP_CMD_EHLO, "[192.0.2.1]"},
    {"HELO x", NULL, SMTP_CMD_HELO, "x"},
    {"LHLO", "501 5.5.4 Missing hostname", SMTP_CMD_LHLO},
    {"EHLO   ", "501 5.5.4 Missing hostname", SMTP_CMD_EHLO},
    {"EHLO a b", "501 5.5.4 Invalid hostname", SMTP_CMD_EHLO},
    /* MAIL */
    {"MAIL FROM:<a@b.example>", NULL, SMTP_CMD_MAIL, "a@b.example"},
    {"mail from:<a@b>", NULL, SMTP_CMD_MAIL, "a@b"},
    {"Mail From: <a@b>", NULL, SMTP_CMD_MAIL, "a@b"},
    {"MAIL FROM:<>", NULL, SMTP_CMD_MAIL, ""},
    {"MAIL FROM:<> BODY=8BITMIME", NULL, SMTP_CMD_MAIL, "", "BODY=8BITMIME"},
    {"MAIL FROM:<a@b> SIZE=1000 BODY=8BITMIME", NULL, SMTP_CMD_MAIL, "a@b",
     "SIZE=1000 BODY=8BITMIME"},
    {"MAIL FROM:<a@b> size=10 smtputf8", NULL, SMTP_CMD_MAIL, "a@b", "SIZE=10 SMTPUTF8"},
    {"MAIL FROM:<a@b> AUTH=<> RET=HDRS ENVID=x+2By", NULL, SMTP_CMD_MAIL, "a@b",
     "AUTH=<> RET=HDRS ENVID=x+2By"},
    {"MAIL  FROM:<a@b>   SIZE=5  ", NULL, SMTP_CMD_MAIL, "a@b", "SIZE=5"},
    {"MAIL FROM:<a@b> X-Y_Z=", NULL, SMTP_CMD_MAIL, "a@b", "X-Y_Z="},
    {"MAIL FROM:a@b", BAD_SENDER, SMTP_CMD_MAIL},
    {"MAIL FROM:<a@b", BAD_SENDER, SMTP_CMD_MAIL},
    {"MAIL FROM:<a@b>SIZE=1", BAD_SENDER, SMTP_CMD_MAIL},
    {"MAIL FROM:< >", BAD_SENDER, SMTP_CMD_MAIL},
    {"MAIL FROM:<a@b> =x", BAD_PARAM, SMTP_CMD_MAIL},
    {"MAIL FROM:<a@b> SI%E=1", BAD_PARAM, SMTP_CMD_MAIL},
    {"MAIL TO:<a@b>", MAIL_SYNTAX, SMTP_CMD_MAIL},
    {"MAIL", MAIL_SYNTAX, SMTP_CMD_MAIL},
    {"MAIL FROM <a@b>", MAIL_SYNTAX, SMTP_CMD_MAIL},
    /* RCPT and path syntax */
    {"RCPT TO:<u@d.example>", NULL, SMTP_CMD_RCPT, "u@d.example"},
    {"rcpt to: <u@d>", NULL, SMTP_CMD_RCPT, "u@d"},
    {"RCPT TO:<>", BAD_RCPT, SMTP_CMD_RCPT},
    {"RCPT TO:<@a,@b.example:u@d>", NULL, SMTP_CMD_RCPT, "u@d"},
    {"RCPT TO:<@a:u@d>", NULL, SMTP_CMD_RCPT, "u@d"},
    {"RCPT TO:<@a,u@d>", BAD_RCPT, SMTP_CMD_RCPT},
    {"RCPT TO:<@a:>", BAD_RCPT, SMTP_CMD_RCPT},
    {"RCPT TO:<@d>", BAD_RCPT, SMTP_CMD_RCPT},
    {"RCPT TO:<\"a b\"@d>", NULL, SMTP_CMD_RCPT, "\"a b\"@d"},
    {"RCPT TO:<\"a\\\"b\"@d>", NULL, SMTP_CMD_RCPT, "\"a\\\"b\"@d"},
    {"RCPT TO:<\"a>b\"@d> NOTIFY=NEVER", NULL, SMTP_CMD_RCPT, "\"a>b\"@d", "NOTIFY=NEVER"},
    {"RCPT TO:<\"\"@d>", NULL, SMTP_CMD_RCPT, "\"\"@d"},
    {"RCPT TO:<\"ab@d>", BAD_RCPT, SMTP_CMD_RCPT},
    {"RCPT TO:<postmaster>", NULL, SMTP_CMD_RCPT, "postmaster"},
    {"RCPT TO:<first.last+tag@sub.d-x.example>", NULL, SMTP_CMD_RCPT,
     "first.last+tag@sub.d-x.example"},
    {"RCPT TO:<u@[192.0.2.1]>", NULL, SMTP_CMD_RCPT, "u@[192.0.2.1]"},
    {"RCPT TO:<u@[IPv6:2001:db8::1]>", NULL, SMTP_CMD_RCPT, "u@[IPv6:2001:db8::1]"},
    {"RCPT TO:<u@[]>", BAD_RCPT, SMTP_CMD_RCPT},
    {"RCPT TO:<\xc3\xbcser@ex\xc3\xa4mple.de>", NULL, SMTP_CMD_RCPT,
     "\xc3\xbcser@ex\xc3\xa4mple.de"},
    {"RCPT TO:<\xe7\x94\xb0\xe4\xb8\xad@\xf0\x9f\x98\x80.example> ORCPT=utf-8;\xc3\xbc", NULL,
     SMTP_CMD_RCPT, "\xe7\x94\xb0\xe4\xb8\xad@\xf0\x9f\x98\x80.example", "ORCPT=utf-8;\xc3\xbc"},
    {"RCPT TO:<\xff@d>", BAD_RCPT, SMTP_CMD_RCPT},
    {"RCPT TO:<\xc3\x28@d>", BAD_RCPT, SMTP_CMD_RCPT},
    {"RCPT TO:<\xc0\xaf@d>", BAD_RCPT, SMTP_CMD_RCPT},      /* overlong */
    {"RCPT TO:<\xed\xa0\x80@d>", BAD_RCPT, SMTP_CMD_RCPT},  /* surrogate */
    {"RCPT TO:<a@\xe2\x82>", BAD_RCPT, SMTP_CMD_RCPT},       /* truncated */
    {"RCPT TO:<a b@d>", BAD_RCPT, SMTP_CMD_RCPT},
    {"RCPT TO:<a@@d>", BAD_RCPT, SMTP_CMD_RCPT},
    {"RCPT TO:<a@>", BAD_RCPT, SMTP_CMD_RCPT},
    {"RCPT TO:<a(b)@d>", BAD_RCPT, SMTP_CMD_RCPT},
    {"RCPT TO:<a@d> ORCPT=rfc822;a+40d NOTIFY=SUCCESS,FAILURE", NULL, SMTP_CMD_RCPT, "a@d",
     "ORCPT=rfc822;a+40d NOTIFY=SUCCESS,FAILURE"},
    {"RCPT TO:<a@d> XRCPTFORWARD=foo+3Dbar", NULL, SMTP_CMD_RCPT, "a@d",
     "XRCPTFORWARD=foo+3Dbar"},
    {"RCPT FROM:<a@d>", RCPT_SYNTAX, SMTP_CMD_RCPT},
    {"RCPT TO:<a@d>\tNOTIFY=NEVER", BAD_CHARS, SMTP_CMD_UNKNOWN},
    /* commands without arguments */
    {"DATA", NULL, SMTP_CMD_DATA},
    {"data ", NULL, SMTP_CMD_DATA},
    {"DATA x", INVALID_PARAMS, SMTP_CMD_DATA},
    {"RSET", NULL, SMTP_CMD_RSET},
    {"RSET now", INVALID_PARAMS, SMTP_CMD_RSET},
    {"QUIT", NULL, SMTP_CMD_QUIT},
    {"quit please", INVALID_PARAMS, SMTP_CMD_QUIT},
    {"STARTTLS", NULL, SMTP_CMD_STARTTLS},
    {"StartTls x", INVALID_PARAMS, SMTP_CMD_STARTTLS},
    /* BDAT */
    {"BDAT 1000", NULL, SMTP_CMD_BDAT, NULL, NULL, 1000, false},
    {"BDAT 0 LAST", NULL, SMTP_CMD_BDAT, NULL, NULL, 0, true},
    {"bdat 42 last", NULL, SMTP_CMD_BDAT, NULL, NULL, 42, true},
    {"BDAT 007", NULL, SMTP_CMD_BDAT, NULL, NULL, 7, false},
    {"BDAT 9223372036854775807", NULL, SMTP_CMD_BDAT, NULL, NULL, 9223372036854775807ULL},
    {"BDAT 9223372036854775808", BDAT_SYNTAX, SMTP_CMD_BDAT},
    {"BDAT 99999999999999999999999", BDAT_SYNTAX, SMTP_CMD_BDAT},
    {"BDAT", BDAT_SYNTAX, SMTP_CMD_BDAT},
    {"BDAT -1", BDAT_SYNTAX, SMTP_CMD_BDAT},
    {"BDAT +5", BDAT_SYNTAX, SMTP_CMD_BDAT},
    {"BDAT 12a", BDAT_SYNTAX, SMTP_CMD_BDAT},
    {"BDAT 1 FIRST", BDAT_SYNTAX, SMTP_CMD_BDAT},
    {"BDAT 1 LAST x", BDAT_SYNTAX, SMTP_CMD_BDAT},
    /* optional and required text */
    {"NOOP", NULL, SMTP_CMD_NOOP},
    {"NOOP hello  world", NULL, SMTP_CMD_NOOP, "hello  world"},
    {"  NOOP  ", NULL, SMTP_CMD_NOOP},
    {"HELP", NULL, SMTP_CMD_HELP},
    {"help MAIL", NULL, SMTP_CMD_HELP, "MAIL"},
    {"VRFY John Smith", NULL, SMTP_CMD_VRFY, "John Smith"},
    {"VRFY", "501 5.5.4 Missing argument", SMTP_CMD_VRFY},
    {"EXPN staff", NULL, SMTP_CMD_EXPN, "staff"},
    {"expn", "501 5.5.4 Missing argument", SMTP_CMD_EXPN},
    /* AUTH */
    {"AUTH PLAIN", NULL, SMTP_CMD_AUTH, "PLAIN"},
    {"auth plain dGVzdAB0ZXN0AHBhc3M=", NULL, SMTP_CMD_AUTH, "plain", "=dGVzdAB0ZXN0AHBhc3M="},
    {"AUTH LOGIN =", NULL, SMTP_CMD_AUTH, "LOGIN", "=="},
    {"AUTH SCRAM-SHA-256", NULL, SMTP_CMD_AUTH, "SCRAM-SHA-256"},
    {"AUTH", "501 5.5.4 Missing SASL mechanism", SMTP_CMD_AUTH},
    {"AUTH PL@IN", "501 5.5.4 Invalid SASL mechanism", SMTP_CMD_AUTH},
    {"AUTH ABCDEFGHIJKLMNOPQRSTU", "501 5.5.4 Invalid SASL mechanism", SMTP_CMD_AUTH},
    {"AUTH PLAIN a b", INVALID_PARAMS, SMTP_CMD_AUTH},
    /* XCLIENT, XFORWARD */
    {"XCLIENT ADDR=192.0.2.1 PORT=25 HELO=x.example NAME=[UNAVAILABLE]", NULL, SMTP_CMD_XCLIENT,
     NULL, "ADDR=192.0.2.1 PORT=25 HELO=x.example NAME=[UNAVAILABLE]"},
    {"xclient addr=IPV6:2001:db8::1 reverse_name=a.example", NULL, SMTP_CMD_XCLIENT, NULL,
     "ADDR=IPV6:2001:db8::1 REVERSE_NAME=a.example"},
    {"XCLIENT HELO=postfix.test PROTO=LMTP SESSION=Ky6xDT+2B6AGsKRAAAg+2BzDdQ:P1 TTL=5", NULL,
     SMTP_CMD_XCLIENT, NULL,
     "HELO=postfix.test PROTO=LMTP SESSION=Ky6xDT+2B6AGsKRAAAg+2BzDdQ:P1 TTL=5"},
    {"XCLIENT", "501 5.5.4 Missing attributes", SMTP_CMD_XCLIENT},
    {"XCLIENT ADDR", BAD_PARAM, SMTP_CMD_XCLIENT},
    {"XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP", NULL, SMTP_CMD_XFORWARD,
     NULL, "NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP"},
    {"XFORWARD", "501 5.5.4 Missing attributes", SMTP_CMD_XFORWARD},
    /* unknown, empty, bad characters */
    {"FOO bar", UNKNOWN, SMTP_CMD_UNKNOWN},
    {"MAILFROM:<a@b>", UNKNOWN, SMTP_CMD_UNKNOWN},
    {"LHL0 x", UNKNOWN, SMTP_CMD_UNKNOWN},
    {"", "500 5.5.2 Empty command", SMTP_CMD_UNKNOWN},
    {"    ", "500 5.5.2 Empty command", SMTP_CMD_UNKNOWN},
    {"NOOP a\rb", BAD_CHARS, SMTP_CMD_UNKNOWN},
    {"NOOP \x7f", BAD_CHARS, SMTP_CMD_UNKNOWN},
    {"RCPT TO:<a\x01@d>", BAD_CHARS, SMTP_CMD_UNKNOWN},
};

/* The parameters as one string, "KEY=VALUE KEY2", for comparing with the table. */
static void format_params(const struct smtp_cmd *cmd, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < cmd->n_params; i++) {
        const struct smtp_param *p = &cmd->params[i];
        n += (size_t)snprintf(out + n, size - n, "%s%s%s%s", i > 0 ? " " : "", p->key,
                              p->value != NULL ? "=" : "", p->value != NULL ? p->value : "");
        if (n >= size)
            break;
    }
}

static void check_case(const struct cmd_case *c)
{
    struct smtp_cmd cmd;
    const char *reply = NULL;
    char params[SMTP_CMD_STORAGE * 2];

    test_current = c->line;
    int ret = smtp_cmd_parse(c->line, strlen(c->line), &cmd, &reply);
    CHECK_INT(ret, c->reply == NULL ? 0 : -1);
    CHECK_INT(cmd.verb, c->verb);
    if (c->reply != NULL) {
        CHECK_STR(reply, c->reply);
        return;
    }
    CHECK_STR(cmd.arg, c->arg);
    format_params(&cmd, params, sizeof(params));
    CHECK_STR(params, c->params != NULL ? c->params : "");
    CHECK_INT(cmd.bdat_size, c->bdat_size);
    CHECK_INT(cmd.bdat_last, c->bdat_last);
}

static void test_table(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i]);
}

static void test_verb_text(void)
{
    struct smtp_cmd cmd;
    const char *reply;

    CHECK_INT(smtp_cmd_parse("FooBar x y", 10, &cmd, &reply), -1);
    CHECK_STR(cmd.verb_text, "FooBar");
    CHECK_INT(smtp_cmd_parse("rCpT TO:<a@b>", 13, &cmd, &reply), 0);
    CHECK_STR(cmd.verb_text, "rCpT");
}

static void test_param_lookup(void)
{
    struct smtp_cmd cmd;
    const char *reply;
    const char *line = "MAIL FROM:<a@b> size=100 SmtpUtf8 BODY=8BITMIME";
    bool present = false;

    CHECK_INT(smtp_cmd_parse(line, strlen(line), &cmd, &reply), 0);
    CHECK_STR(smtp_cmd_param(&cmd, "SIZE", &present), "100");
    CHECK(present);
    CHECK_STR(smtp_cmd_param(&cmd, "body", NULL), "8BITMIME");
    CHECK_STR(smtp_cmd_param(&cmd, "smtputf8", &present), NULL);
    CHECK(present);
    CHECK_STR(smtp_cmd_param(&cmd, "RET", &present), NULL);
    CHECK(!present);
    CHECK_STR(cmd.params[1].key, "SMTPUTF8");
}

/* The struct is reused between lines: nothing of the previous one remains. */
static void test_reuse(void)
{
    struct smtp_cmd cmd;
    const char *reply;

    CHECK_INT(smtp_cmd_parse("BDAT 5 LAST", 11, &cmd, &reply), 0);
    CHECK_INT(smtp_cmd_parse("MAIL FROM:<a@b> SIZE=1", 22, &cmd, &reply), 0);
    CHECK_INT(cmd.bdat_size, 0);
    CHECK(!cmd.bdat_last);
    CHECK_INT(cmd.n_params, 1);
    CHECK_INT(smtp_cmd_parse("DATA", 4, &cmd, &reply), 0);
    CHECK_STR(cmd.arg, NULL);
    CHECK_INT(cmd.n_params, 0);
}

static void test_nul(void)
{
    struct smtp_cmd cmd;
    const char *reply = NULL;
    static const char noop[] = "NOOP a\0b";
    static const char rcpt[] = "RCPT TO:<a\0@b>";
    static const char lead[] = "\0DATA";

    CHECK_INT(smtp_cmd_parse(noop, sizeof(noop) - 1, &cmd, &reply), -1);
    CHECK_STR(reply, BAD_CHARS);
    CHECK_INT(smtp_cmd_parse(rcpt, sizeof(rcpt) - 1, &cmd, &reply), -1);
    CHECK_STR(reply, BAD_CHARS);
    CHECK_INT(smtp_cmd_parse(lead, sizeof(lead) - 1, &cmd, &reply), -1);
    CHECK_STR(reply, BAD_CHARS);
    /* A line that is not NUL-terminated is read by its length only. */
    CHECK_INT(smtp_cmd_parse("DATAXYZ", 4, &cmd, &reply), 0);
    CHECK_INT(cmd.verb, SMTP_CMD_DATA);
}

static void test_long_line(void)
{
    struct smtp_cmd cmd;
    const char *reply = NULL;
    size_t max = SMTP_CMD_STORAGE - 1;
    char *line = malloc(SMTP_CMD_STORAGE + 1);

    memcpy(line, "NOOP ", 5);
    memset(line + 5, 'x', SMTP_CMD_STORAGE + 1 - 5);
    CHECK_INT(smtp_cmd_parse(line, max, &cmd, &reply), 0);
    CHECK_INT(strlen(cmd.arg), max - 5);
    CHECK_INT(smtp_cmd_parse(line, max + 1, &cmd, &reply), -1);
    CHECK_STR(reply, "500 5.5.6 Line too long");
    /* Too long is decided before anything else, even for spaces only. */
    memset(line, ' ', SMTP_CMD_STORAGE + 1);
    CHECK_INT(smtp_cmd_parse(line, max + 1, &cmd, &reply), -1);
    CHECK_STR(reply, "500 5.5.6 Line too long");
    free(line);
}

/* RFC 5321 4.5.3.1.3: 256 octets including the angle brackets. */
static void check_path_len(const char *verb, size_t path_len, const char *want_reply)
{
    char line[600];
    struct smtp_cmd cmd;
    const char *reply = NULL;
    size_t n = (size_t)snprintf(line, sizeof(line), "%s<", verb);
    size_t local = path_len - 2 - strlen("@d.example");

    memset(line + n, 'a', local);
    n += local;
    n += (size_t)snprintf(line + n, sizeof(line) - n, "@d.example> SIZE=1");
    int ret = smtp_cmd_parse(line, n, &cmd, &reply);
    CHECK_INT(ret, want_reply == NULL ? 0 : -1);
    if (want_reply == NULL)
        CHECK_INT(strlen(cmd.arg), path_len - 2);
    else
        CHECK_STR(reply, want_reply);
}

static void test_path_len(void)
{
    check_path_len("MAIL FROM:", 256, NULL);
    check_path_len("MAIL FROM:", 257, "501 5.1.7 Sender address too long");
    check_path_len("RCPT TO:", 256, NULL);
    check_path_len("RCPT TO:", 300, "501 5.1.3 Recipient address too long");
}

static void check_n_params(size_t n, const char *want_reply)
{
    char line[512];
    struct smtp_cmd cmd;
    const char *reply = NULL;
    size_t len = (size_t)snprintf(line, sizeof(line), "RCPT TO:<a@b>");

    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(line + len, sizeof(line) - len, " P%zu=%zu", i, i);
    int ret = smtp_cmd_parse(line, len, &cmd, &reply);
    CHECK_INT(ret, want_reply == NULL ? 0 : -1);
    if (want_reply == NULL) {
        CHECK_INT(cmd.n_params, n);
        CHECK_STR(smtp_cmd_param(&cmd, "p15", NULL), "15");
    } else {
        CHECK_STR(reply, want_reply);
    }
}

static void test_too_many_params(void)
{
    check_n_params(SMTP_CMD_MAX_PARAMS, NULL);
    check_n_params(SMTP_CMD_MAX_PARAMS + 1, "501 5.5.4 Too many parameters");
}

/* Every pointer of a successful parse lies inside the struct's storage. */
static void test_pointers_in_storage(void)
{
    struct smtp_cmd cmd;
    const char *reply;
    const char *lines[] = {"RCPT TO:<@r:a@b> X=1 Y", "AUTH PLAIN abc=", "XCLIENT A=1"};

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        CHECK_INT(smtp_cmd_parse(lines[i], strlen(lines[i]), &cmd, &reply), 0);
        const char *lo = cmd.storage, *hi = cmd.storage + sizeof(cmd.storage);
        CHECK(cmd.verb_text >= lo && cmd.verb_text < hi);
        CHECK(cmd.arg == NULL || (cmd.arg >= lo && cmd.arg < hi));
        for (size_t j = 0; j < cmd.n_params; j++) {
            CHECK(cmd.params[j].key >= lo && cmd.params[j].key < hi);
            CHECK(cmd.params[j].value == NULL ||
                  (cmd.params[j].value >= lo && cmd.params[j].value < hi));
        }
    }
}

int main(void)
{
    RUN(test_table);
    RUN(test_verb_text);
    RUN(test_param_lookup);
    RUN(test_reuse);
    RUN(test_nul);
    RUN(test_long_line);
    RUN(test_path_len);
    RUN(test_too_many_params);
    RUN(test_pointers_in_storage);
    return test_done();
}
