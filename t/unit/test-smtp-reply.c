/* test-smtp-reply - tests of the SMTP/LMTP reply parser: single and
 * multi-line replies, enhanced status codes, malformed lines, limits, and
 * extension look-ups in real EHLO/LHLO replies. */
#include <stdlib.h>

#include "smtp-reply.h"
#include "test.h"

/* Feed the lines (a NULL-terminated list); returns the status of the last. */
static enum smtp_reply_status feed_all(struct smtp_reply *reply, const char *const *lines)
{
    enum smtp_reply_status st = SMTP_REPLY_ERROR;
    for (; *lines != NULL; lines++)
        st = smtp_reply_feed(reply, *lines, strlen(*lines));
    return st;
}

struct reply_case {
    const char *lines[4];
    enum smtp_reply_status status; /* of the last line */
    unsigned code;
    const char *enhanced;
    const char *text;
};

static const struct reply_case cases[] = {
    {{"250 2.1.5 Ok"}, SMTP_REPLY_DONE, 250, "2.1.5", "Ok"},
    {{"250 Ok"}, SMTP_REPLY_DONE, 250, "", "Ok"},
    {{"250"}, SMTP_REPLY_DONE, 250, "", ""},
    {{"250 "}, SMTP_REPLY_DONE, 250, "", ""},
    {{"250 2.0.0"}, SMTP_REPLY_DONE, 250, "2.0.0", ""},
    {{"221 2.0.0 Bye"}, SMTP_REPLY_DONE, 221, "2.0.0", "Bye"},
    {{"354 OK"}, SMTP_REPLY_DONE, 354, "", "OK"},
    {{"451 4.7.1 Try  again later"}, SMTP_REPLY_DONE, 451, "4.7.1", "Try  again later"},
    {{"550 5.1.1  spaces"}, SMTP_REPLY_DONE, 550, "5.1.1", "spaces"},
    {{"552 5.123.999 big"}, SMTP_REPLY_DONE, 552, "5.123.999", "big"},
    /* not enhanced codes: kept as text */
    {{"250 5.1.1 odd"}, SMTP_REPLY_DONE, 250, "", "5.1.1 odd"},
    {{"451 4.1000.1 x"}, SMTP_REPLY_DONE, 451, "", "4.1000.1 x"},
    {{"451 4.7.1x"}, SMTP_REPLY_DONE, 451, "", "4.7.1x"},
    {{"451 4..1 x"}, SMTP_REPLY_DONE, 451, "", "4..1 x"},
    {{"451 4.7. x"}, SMTP_REPLY_DONE, 451, "", "4.7. x"},
    {{"451 4.7"}, SMTP_REPLY_DONE, 451, "", "4.7"},
    {{"250 2.0.0.1 x"}, SMTP_REPLY_DONE, 250, "", "2.0.0.1 x"},
    /* multi-line */
    {{"250-mx.example.com", "250-PIPELINING", "250 SIZE 100"}, SMTP_REPLY_DONE, 250, "",
     "mx.example.com\nPIPELINING\nSIZE 100"},
    {{"550-5.1.1 User unknown", "550 5.1.1 Try again"}, SMTP_REPLY_DONE, 550, "5.1.1",
     "User unknown\nTry again"},
    {{"550-first", "550-5.1.1 second", "550 third"}, SMTP_REPLY_DONE, 550, "",
     "first\nsecond\nthird"},
    {{"250-", "250-", "250"}, SMTP_REPLY_DONE, 250, "", "\n\n"},
    {{"250-a", "250-b"}, SMTP_REPLY_MORE, 250, "", "a\nb"},
    /* malformed */
    {{"250-a", "251 b"}, SMTP_REPLY_ERROR},
    {{"250-a", "550 b"}, SMTP_REPLY_ERROR},
    {{""}, SMTP_REPLY_ERROR},
    {{"25"}, SMTP_REPLY_ERROR},
    {{"2500 x"}, SMTP_REPLY_ERROR},
    {{"250x"}, SMTP_REPLY_ERROR},
    {{"25a x"}, SMTP_REPLY_ERROR},
    {{"150 x"}, SMTP_REPLY_ERROR},
    {{"199 x"}, SMTP_REPLY_ERROR},
    {{"600 x"}, SMTP_REPLY_ERROR},
    {{"abc def"}, SMTP_REPLY_ERROR},
    {{" 250 x"}, SMTP_REPLY_ERROR},
    {{"250 a\rb"}, SMTP_REPLY_ERROR},
};

static void check_case(const struct reply_case *c)
{
    struct smtp_reply reply = {0};

    test_current = c->lines[0];
    CHECK_INT(feed_all(&reply, c->lines), c->status);
    if (c->status != SMTP_REPLY_ERROR) {
        CHECK_INT(reply.code, c->code);
        CHECK_STR(reply.enhanced, c->enhanced);
        CHECK_STR(buf_ptr(&reply.text), c->text);
        CHECK_INT(reply.text.len, strlen(c->text));
    }
    smtp_reply_free(&reply);
}

static void test_table(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i]);
}

static void test_nul(void)
{
    struct smtp_reply reply = {0};
    static const char line[] = "250 a\0b";

    CHECK_INT(smtp_reply_feed(&reply, line, sizeof(line) - 1), SMTP_REPLY_ERROR);
    /* Only len bytes are read. */
    smtp_reply_reset(&reply);
    CHECK_INT(smtp_reply_feed(&reply, "250 okXXX", 6), SMTP_REPLY_DONE);
    CHECK_STR(buf_ptr(&reply.text), "ok");
    smtp_reply_free(&reply);
}

static void test_n_lines(void)
{
    struct smtp_reply reply = {0};

    for (unsigned i = 0; i + 1 < SMTP_REPLY_MAX_LINES; i++)
        CHECK_INT(smtp_reply_feed(&reply, "250-x", 5), SMTP_REPLY_MORE);
    CHECK_INT(smtp_reply_feed(&reply, "250 x", 5), SMTP_REPLY_DONE);
    CHECK_INT(reply.n_lines, SMTP_REPLY_MAX_LINES);

    smtp_reply_reset(&reply);
    for (unsigned i = 0; i < SMTP_REPLY_MAX_LINES; i++)
        CHECK_INT(smtp_reply_feed(&reply, "250-x", 5), SMTP_REPLY_MORE);
    CHECK_INT(smtp_reply_feed(&reply, "250 x", 5), SMTP_REPLY_ERROR);
    smtp_reply_free(&reply);
}

/* SMTP_REPLY_MAX bounds the joined text, "\n" separators included. */
static void test_size_limit(void)
{
    struct smtp_reply reply = {0};
    size_t half = SMTP_REPLY_MAX / 2;
    char *line = malloc(SMTP_REPLY_MAX + 8);

    memcpy(line, "250-", 4);
    memset(line + 4, 'a', SMTP_REPLY_MAX + 4);
    CHECK_INT(smtp_reply_feed(&reply, line, 4 + half), SMTP_REPLY_MORE);
    line[3] = ' ';
    CHECK_INT(smtp_reply_feed(&reply, line, 4 + SMTP_REPLY_MAX - half - 1), SMTP_REPLY_DONE);
    CHECK_INT(buf_used(&reply.text), SMTP_REPLY_MAX);

    smtp_reply_reset(&reply);
    CHECK_INT(smtp_reply_feed(&reply, line, 4 + half), SMTP_REPLY_DONE);
    smtp_reply_reset(&reply);
    line[3] = '-';
    CHECK_INT(smtp_reply_feed(&reply, line, 4 + half), SMTP_REPLY_MORE);
    CHECK_INT(smtp_reply_feed(&reply, line, 4 + SMTP_REPLY_MAX - half), SMTP_REPLY_ERROR);

    smtp_reply_reset(&reply);
    CHECK_INT(smtp_reply_feed(&reply, line, 4 + SMTP_REPLY_MAX + 1), SMTP_REPLY_ERROR);
    free(line);
    smtp_reply_free(&reply);
}

static void test_first_line(void)
{
    struct smtp_reply reply = {0};
    size_t len = 99;
    const char *lines[] = {"451-4.3.0 Temporary failure", "451 4.3.0 More text", NULL};

    CHECK_STR(smtp_reply_first_line(&reply, &len), "");
    CHECK_INT(len, 0);
    CHECK_INT(feed_all(&reply, lines), SMTP_REPLY_DONE);
    const char *first = smtp_reply_first_line(&reply, &len);
    CHECK_INT(len, strlen("Temporary failure"));
    CHECK(strncmp(first, "Temporary failure", len) == 0);

    smtp_reply_reset(&reply);
    CHECK_INT(reply.code, 0);
    CHECK_STR(reply.enhanced, "");
    CHECK_INT(smtp_reply_feed(&reply, "250", 3), SMTP_REPLY_DONE);
    CHECK_STR(smtp_reply_first_line(&reply, &len), "");
    CHECK_INT(len, 0);
    smtp_reply_free(&reply);
}

/* Reset between replies on one connection: the second reply starts clean. */
static void test_reset(void)
{
    struct smtp_reply reply = {0};
    const char *first[] = {"250-2.1.0 a", "250 2.1.0 b", NULL};
    const char *second[] = {"550 other", NULL};

    CHECK_INT(feed_all(&reply, first), SMTP_REPLY_DONE);
    smtp_reply_reset(&reply);
    CHECK_INT(feed_all(&reply, second), SMTP_REPLY_DONE);
    CHECK_INT(reply.code, 550);
    CHECK_STR(reply.enhanced, "");
    CHECK_STR(buf_ptr(&reply.text), "other");
    CHECK_INT(reply.n_lines, 1);
    smtp_reply_free(&reply);
}

static bool ext_params(const struct smtp_reply *reply, const char *ext, const char *want)
{
    const char *params = NULL;
    size_t len = 0;
    if (!smtp_reply_has_ext(reply, ext, &params, &len))
        return false;
    return strlen(want) == len && strncmp(params, want, len) == 0;
}

/* Received from Dovecot 2.3.19.1 lmtp (trusted peer), verbatim. */
static const char *const dovecot_lhlo[] = {
    "250-vm",
    "250-8BITMIME",
    "250-CHUNKING",
    "250-ENHANCEDSTATUSCODES",
    "250-PIPELINING",
    "250-XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT",
    "250 XRCPTFORWARD",
    NULL,
};

static void test_ext_dovecot(void)
{
    struct smtp_reply reply = {0};

    CHECK_INT(feed_all(&reply, dovecot_lhlo), SMTP_REPLY_DONE);
    CHECK_INT(reply.n_lines, 7);
    CHECK(smtp_reply_has_ext(&reply, "PIPELINING", NULL, NULL));
    CHECK(smtp_reply_has_ext(&reply, "chunking", NULL, NULL));
    CHECK(ext_params(&reply, "XRCPTFORWARD", ""));
    CHECK(ext_params(&reply, "XCLIENT", "ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT"));
    CHECK(ext_params(&reply, "8bitmime", ""));
    CHECK(!smtp_reply_has_ext(&reply, "SMTPUTF8", NULL, NULL));
    CHECK(!smtp_reply_has_ext(&reply, "vm", NULL, NULL)); /* the greeting line */
    CHECK(!smtp_reply_has_ext(&reply, "XCLIEN", NULL, NULL));
    CHECK(!smtp_reply_has_ext(&reply, "XCLIENTS", NULL, NULL));
    CHECK(!smtp_reply_has_ext(&reply, "", NULL, NULL));
    smtp_reply_free(&reply);
}

/* A Postfix 3.x smtpd EHLO reply with XCLIENT/XFORWARD authorised. */
static const char *const postfix_ehlo[] = {
    "250-mx.example.org",
    "250-PIPELINING",
    "250-SIZE 10240000",
    "250-VRFY",
    "250-ETRN",
    "250-STARTTLS",
    "250-AUTH PLAIN LOGIN",
    "250-AUTH=PLAIN LOGIN",
    "250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT",
    "250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT",
    "250-ENHANCEDSTATUSCODES",
    "250-8BITMIME",
    "250-DSN",
    "250-SMTPUTF8",
    "250 CHUNKING",
    NULL,
};

static void test_ext_postfix(void)
{
    struct smtp_reply reply = {0};

    CHECK_INT(feed_all(&reply, postfix_ehlo), SMTP_REPLY_DONE);
    CHECK(ext_params(&reply, "SIZE", "10240000"));
    CHECK(ext_params(&reply, "auth", "PLAIN LOGIN"));
    CHECK(ext_params(&reply, "XFORWARD", "NAME ADDR PROTO HELO SOURCE PORT IDENT"));
    CHECK(ext_params(&reply, "XCLIENT",
                     "NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT"));
    CHECK(ext_params(&reply, "CHUNKING", "")); /* the last line */
    CHECK(smtp_reply_has_ext(&reply, "SmtpUtf8", NULL, NULL));
    CHECK(!smtp_reply_has_ext(&reply, "XRCPTFORWARD", NULL, NULL));
    CHECK(!smtp_reply_has_ext(&reply, "mx.example.org", NULL, NULL));
    smtp_reply_free(&reply);
}

static void test_ext_single_line(void)
{
    struct smtp_reply reply = {0};

    CHECK(!smtp_reply_has_ext(&reply, "PIPELINING", NULL, NULL));
    CHECK_INT(smtp_reply_feed(&reply, "250 PIPELINING", 14), SMTP_REPLY_DONE);
    CHECK(!smtp_reply_has_ext(&reply, "PIPELINING", NULL, NULL));
    smtp_reply_free(&reply);
}

int main(void)
{
    RUN(test_table);
    RUN(test_nul);
    RUN(test_n_lines);
    RUN(test_size_limit);
    RUN(test_first_line);
    RUN(test_reset);
    RUN(test_ext_dovecot);
    RUN(test_ext_postfix);
    RUN(test_ext_single_line);
    return test_done();
}
