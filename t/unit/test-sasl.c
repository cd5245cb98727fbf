/* test-sasl - table-driven tests of the SASL decoding: every mechanism step
 * by step with the exact challenges and errors, the RFC 4616 / RFC 7628 /
 * Google XOAUTH2 examples, limits, cancellation, the client-side encoders
 * (checked by decoding them again) and the master user split. */
#include <stdbool.h>
#include <stdlib.h>

#include "codec.h"
#include "mem.h"
#include "sasl.h"
#include "test.h"

#define USER_CHAL "VXNlcm5hbWU6"
#define PASS_CHAL "UGFzc3dvcmQ6"
#define E_CANCEL "Authentication cancelled"
#define E_B64 "Invalid base64 data"
#define E_LONG "SASL response too long"
#define E_NUL "Missing NUL separator"
#define E_NUL_FIELD "NUL inside a field"
#define E_NO_USER "Empty username"
#define E_NO_PASS "Empty password"
#define E_BAD_USER "Invalid characters in username"
#define E_BAD_PASS "Invalid characters in password"
#define E_GS2 "Invalid GS2 header"
#define E_CBIND "Channel binding not supported"
#define E_KV "Invalid key/value list"
#define E_MISSING_USER "Missing username"
#define E_NO_TOKEN "Missing bearer token"
#define E_BAD_TOKEN "Invalid bearer token"

/* RFC 7628 4.1 and Google's XOAUTH2 page, as sent on the wire. */
#define RFC7628_B64                                                                          \
    "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVh" \
    "cmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
#define RFC7628_TOKEN "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
#define XOAUTH2_B64                                                                          \
    "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNr" \
    "QmhiSFJoZG1semRHRXVZMjl0Q2cBAQ=="
#define XOAUTH2_TOKEN "ya29.vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg"

/* One client response and what the server must answer. The input is b64
 * as given, or plain (plen bytes) base64-encoded by the test, or nothing
 * (no_ir: NULL, "no initial response"). out is the challenge for
 * SASL_CONTINUE ("" when empty) and the error otherwise; a step with
 * want == SASL_CONTINUE and out == NULL ends the list. */
struct step {
    const char *b64;
    const char *plain;
    size_t plen;
    bool no_ir;
    int want;
    const char *out;
};

#define PL(s) .plain = (s), .plen = sizeof(s) - 1
#define NO_IR .no_ir = true
#define CONT(chal) .want = SASL_CONTINUE, .out = (chal)
#define DONE .want = SASL_DONE
#define FAIL(err) .want = SASL_FAIL, .out = (err)

struct sasl_case {
    enum sasl_mech mech;
    struct step steps[4];
    const char *authzid, *authcid, *password, *token;
};

static const struct sasl_case cases[] = {
    /* PLAIN, RFC 4616 examples, with and without initial response */
    {SASL_MECH_PLAIN, {{.b64 = "AHRpbQB0YW5zdGFhZnRhbnN0YWFm", DONE}},
     NULL, "tim", "tanstaaftanstaaf"},
    {SASL_MECH_PLAIN, {{.b64 = "VXJzZWwAS3VydAB4aXBqM3BsbXE=", DONE}},
     "Ursel", "Kurt", "xipj3plmq"},
    {SASL_MECH_PLAIN, {{.b64 = "VXJzZWwAS3VydAB4aXBqM3BsbXE", DONE}}, /* unpadded */
     "Ursel", "Kurt", "xipj3plmq"},
    {SASL_MECH_PLAIN, {{NO_IR, CONT("")}, {PL("\0tim\0pw"), DONE}}, NULL, "tim", "pw"},
    {SASL_MECH_PLAIN, {{.b64 = "=", CONT("")}, {PL("\0tim\0pw"), DONE}}, NULL, "tim", "pw"},
    {SASL_MECH_PLAIN, {{.b64 = "", CONT("")}, {PL("\0tim\0pw"), DONE}}, NULL, "tim", "pw"},
    {SASL_MECH_PLAIN, {{PL("tim\0tim\0pw"), DONE}}, "tim", "tim", "pw"},
    {SASL_MECH_PLAIN, {{PL("\0tim\0p\xc3\xa4ss\tw\xe4rd"), DONE}},
     NULL, "tim", "p\xc3\xa4ss\tw\xe4rd"},
    {SASL_MECH_PLAIN, {{PL("\0t\xc3\xafm@ex.example\0 pw "), DONE}},
     NULL, "t\xc3\xafm@ex.example", " pw "},
    /* PLAIN errors */
    {SASL_MECH_PLAIN, {{NO_IR, CONT("")}, {.b64 = "*", .want = SASL_CANCELLED, .out = E_CANCEL}}},
    {SASL_MECH_PLAIN, {{NO_IR, CONT("")}, {.b64 = "", FAIL(E_NUL)}}},
    {SASL_MECH_PLAIN, {{NO_IR, CONT("")}, {NO_IR, FAIL(E_NUL)}}},
    {SASL_MECH_PLAIN, {{PL("timpw"), FAIL(E_NUL)}}},
    {SASL_MECH_PLAIN, {{PL("tim\0pw"), FAIL(E_NUL)}}},
    {SASL_MECH_PLAIN, {{PL("\0tim\0pa\0ss"), FAIL(E_NUL_FIELD)}}},
    {SASL_MECH_PLAIN, {{PL("\0tim\0pw\0"), FAIL(E_NUL_FIELD)}}},
    {SASL_MECH_PLAIN, {{PL("\0\0pw"), FAIL(E_NO_USER)}}},
    {SASL_MECH_PLAIN, {{PL("admin\0\0pw"), FAIL(E_NO_USER)}}},
    {SASL_MECH_PLAIN, {{PL("\0tim\0"), FAIL(E_NO_PASS)}}},
    {SASL_MECH_PLAIN, {{PL("\0ti\x01m\0pw"), FAIL(E_BAD_USER)}}},
    {SASL_MECH_PLAIN, {{PL("\0tim\r\n\0pw"), FAIL(E_BAD_USER)}}},
    {SASL_MECH_PLAIN, {{PL("a\x7f\0tim\0pw"), FAIL(E_BAD_USER)}}},
    {SASL_MECH_PLAIN, {{PL("\0tim\0pw\r\nA1 LOGOUT"), FAIL(E_BAD_PASS)}}},
    {SASL_MECH_PLAIN, {{PL("\0tim\0pw\n"), FAIL(E_BAD_PASS)}}},
    {SASL_MECH_PLAIN, {{.b64 = "AHRpbQB0YW5zdGFhZnRhbnN0YWFm!", FAIL(E_B64)}}},
    {SASL_MECH_PLAIN, {{.b64 = "AHRpbQB0YW5zdGFhZnRhbnN0YWF", FAIL(E_B64)}}},
    {SASL_MECH_PLAIN, {{.b64 = " AHRpbQB0YW5zdGFhZnRhbnN0YWFm", FAIL(E_B64)}}},
    {SASL_MECH_PLAIN, {{.b64 = "AHRpbQB0YW5zdGFhZn=RhbnN0YWFm", FAIL(E_B64)}}},
    {SASL_MECH_PLAIN, {{.b64 = "AHRp\r\nbQB0YW5zdGFhZnRhbnN0YWFm", FAIL(E_B64)}}},
    {SASL_MECH_PLAIN, {{.b64 = "**", FAIL(E_B64)}}},
    /* LOGIN */
    {SASL_MECH_LOGIN,
     {{NO_IR, CONT(USER_CHAL)}, {PL("tim"), CONT(PASS_CHAL)}, {PL("secret"), DONE}},
     NULL, "tim", "secret"},
    {SASL_MECH_LOGIN, {{PL("tim"), CONT(PASS_CHAL)}, {PL("secret"), DONE}}, NULL, "tim", "secret"},
    {SASL_MECH_LOGIN, {{.b64 = "=", CONT(USER_CHAL)}, {PL("tim"), CONT(PASS_CHAL)},
                       {PL("s e c"), DONE}}, NULL, "tim", "s e c"},
    {SASL_MECH_LOGIN, {{NO_IR, CONT(USER_CHAL)}, {.b64 = "", FAIL(E_NO_USER)}}},
    {SASL_MECH_LOGIN, {{NO_IR, CONT(USER_CHAL)}, {PL("ti\0m"), FAIL(E_NUL_FIELD)}}},
    {SASL_MECH_LOGIN, {{NO_IR, CONT(USER_CHAL)}, {PL("t\nim"), FAIL(E_BAD_USER)}}},
    {SASL_MECH_LOGIN, {{PL("tim"), CONT(PASS_CHAL)}, {.b64 = "=", FAIL(E_NO_PASS)}}},
    {SASL_MECH_LOGIN, {{PL("tim"), CONT(PASS_CHAL)}, {PL("se\0cret"), FAIL(E_NUL_FIELD)}}},
    {SASL_MECH_LOGIN, {{PL("tim"), CONT(PASS_CHAL)}, {PL("se\rcret"), FAIL(E_BAD_PASS)}}},
    {SASL_MECH_LOGIN, {{PL("tim"), CONT(PASS_CHAL)},
                       {.b64 = "*", .want = SASL_CANCELLED, .out = E_CANCEL}}},
    {SASL_MECH_LOGIN, {{.b64 = "dGlt!", FAIL(E_B64)}}},
    /* OAUTHBEARER */
    {SASL_MECH_OAUTHBEARER, {{.b64 = RFC7628_B64, DONE}},
     NULL, "user@example.com", NULL, RFC7628_TOKEN},
    {SASL_MECH_OAUTHBEARER, {{NO_IR, CONT("")}, {.b64 = RFC7628_B64, DONE}},
     NULL, "user@example.com", NULL, RFC7628_TOKEN},
    {SASL_MECH_OAUTHBEARER, {{PL("y,a=u,\x01" "auth=Bearer abc\x01\x01"), DONE}},
     NULL, "u", NULL, "abc"},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=us=2Cer=3Dx,\x01" "auth=Bearer a-b.c_d~e+f/g==\x01\x01"),
                              DONE}}, NULL, "us,er=x", NULL, "a-b.c_d~e+f/g=="},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "auth=bEARER   t0k\x01" "user=x\x01\x01"), DONE}},
     NULL, "u", NULL, "t0k"},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01host=h\tx\r\n\x01" "auth=Bearer t\x01\x01"), DONE}},
     NULL, "u", NULL, "t"},
    {SASL_MECH_OAUTHBEARER, {{PL("p=tls-unique,a=u,\x01" "auth=Bearer t\x01\x01"),
                              FAIL(E_CBIND)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,,\x01" "auth=Bearer t\x01\x01"), FAIL(E_MISSING_USER)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=,\x01" "auth=Bearer t\x01\x01"), FAIL(E_GS2)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u=2c,\x01" "auth=Bearer t\x01\x01"), FAIL(E_GS2)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u=4,\x01" "auth=Bearer t\x01\x01"), FAIL(E_GS2)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u=3"), FAIL(E_GS2)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u"), FAIL(E_GS2)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u\0v,\x01" "auth=Bearer t\x01\x01"), FAIL(E_GS2)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("x,a=u,\x01" "auth=Bearer t\x01\x01"), FAIL(E_GS2)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,b=u,\x01" "auth=Bearer t\x01\x01"), FAIL(E_GS2)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,auth=Bearer t\x01\x01"), FAIL(E_GS2)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("\x01"), FAIL(E_GS2)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n"), FAIL(E_GS2)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u\x01x,\x01" "auth=Bearer t\x01\x01"), FAIL(E_BAD_USER)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "auth=Bearer t\x01"), FAIL(E_KV)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "auth=Bearer t"), FAIL(E_KV)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "auth=Bearer t\x01\x01x"), FAIL(E_KV)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "=x\x01\x01"), FAIL(E_KV)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "ho-st=x\x01\x01"), FAIL(E_KV)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "host\x01\x01"), FAIL(E_KV)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "host=a\x02" "b\x01\x01"), FAIL(E_KV)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "host=a\0b\x01\x01"), FAIL(E_KV)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "auth=Bearer x\x01" "auth=Bearer y\x01\x01"),
                              FAIL(E_KV)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01\x01"), FAIL(E_NO_TOKEN)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01host=h\x01port=143\x01\x01"), FAIL(E_NO_TOKEN)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "auth=Basic dTpw\x01\x01"), FAIL(E_BAD_TOKEN)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "auth=Bearer \x01\x01"), FAIL(E_BAD_TOKEN)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "auth=Bearer a b\x01\x01"), FAIL(E_BAD_TOKEN)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "auth=Bearer a=b\x01\x01"), FAIL(E_BAD_TOKEN)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "auth=Bearer =\x01\x01"), FAIL(E_BAD_TOKEN)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "auth=Bearerabc\x01\x01"), FAIL(E_BAD_TOKEN)}}},
    {SASL_MECH_OAUTHBEARER, {{PL("n,a=u,\x01" "auth=Bearer t\r\n\x01\x01"), FAIL(E_BAD_TOKEN)}}},
    /* XOAUTH2 */
    {SASL_MECH_XOAUTH2, {{.b64 = XOAUTH2_B64, DONE}},
     NULL, "someuser@example.com", NULL, XOAUTH2_TOKEN},
    {SASL_MECH_XOAUTH2, {{NO_IR, CONT("")}, {.b64 = XOAUTH2_B64, DONE}},
     NULL, "someuser@example.com", NULL, XOAUTH2_TOKEN},
    {SASL_MECH_XOAUTH2, {{PL("auth=Bearer t\x01user=u\x01\x01"), DONE}}, NULL, "u", NULL, "t"},
    {SASL_MECH_XOAUTH2, {{PL("user=u\x01\x01"), FAIL(E_NO_TOKEN)}}},
    {SASL_MECH_XOAUTH2, {{PL("auth=Bearer t\x01\x01"), FAIL(E_MISSING_USER)}}},
    {SASL_MECH_XOAUTH2, {{PL("user=\x01" "auth=Bearer t\x01\x01"), FAIL(E_NO_USER)}}},
    {SASL_MECH_XOAUTH2, {{PL("user=u\r\n\x01" "auth=Bearer t\x01\x01"), FAIL(E_BAD_USER)}}},
    {SASL_MECH_XOAUTH2, {{PL("user=u\x01" "auth=Bearer t\x01"), FAIL(E_KV)}}},
    {SASL_MECH_XOAUTH2, {{PL("user=u\x01user=v\x01" "auth=Bearer t\x01\x01"), FAIL(E_KV)}}},
    {SASL_MECH_XOAUTH2, {{PL("n,a=u,\x01" "auth=Bearer t\x01\x01"), FAIL(E_KV)}}},
    {SASL_MECH_XOAUTH2, {{NO_IR, CONT("")}, {.b64 = "", FAIL(E_KV)}}},
};

/* The base64 the test sends for a step; NULL for no_ir. */
static const char *step_input(const struct step *st, struct buf *tmp)
{
    if (st->no_ir)
        return NULL;
    if (st->b64 != NULL)
        return st->b64;
    buf_reset(tmp);
    base64_encode(tmp, st->plain, st->plen);
    return buf_ptr(tmp);
}

static void check_result(const struct sasl_case *c, const struct sasl_result *r,
                         const char *last_in)
{
    CHECK(r != NULL);
    if (r == NULL)
        return;
    CHECK_STR(r->authzid, c->authzid);
    CHECK_STR(r->authcid, c->authcid);
    CHECK_STR(r->password, c->password);
    CHECK_STR(r->token, c->token);
    CHECK_STR(r->raw_response, strcmp(last_in, "=") == 0 ? "" : last_in);
}

static void run_case(size_t idx, const struct sasl_case *c)
{
    struct sasl_server *s = sasl_server_new(c->mech);
    struct buf tmp = BUF_INIT, chal = BUF_INIT;
    const char *in = NULL;
    int status = SASL_CONTINUE;
    for (const struct step *st = c->steps; st->want != SASL_CONTINUE || st->out != NULL; st++) {
        const char *error = NULL;
        in = step_input(st, &tmp);
        buf_reset(&chal);
        status = sasl_server_step(s, in, in != NULL ? strlen(in) : 0, &chal, &error);
        if (status != st->want)
            fprintf(stderr, "case %zu step %zu\n", idx, (size_t)(st - c->steps));
        CHECK_INT(status, st->want);
        if (st->want == SASL_CONTINUE) {
            CHECK_STR(buf_ptr(&chal), st->out);
        } else if (st->want != SASL_DONE) {
            CHECK_STR(error, st->out);
            CHECK(sasl_server_result(s) == NULL);
        }
    }
    if (status == SASL_DONE)
        check_result(c, sasl_server_result(s), in);
    sasl_server_free(&s);
    CHECK(s == NULL);
    buf_free(&tmp);
    buf_free(&chal);
}

static void test_cases(void)
{
    for (size_t i = 0; i < ARRAY_LEN(cases); i++)
        run_case(i, &cases[i]);
}

static void test_mech_names(void)
{
    enum sasl_mech m = SASL_MECH_LOGIN;
    CHECK(sasl_mech_from_name("plain", &m) && m == SASL_MECH_PLAIN);
    CHECK(sasl_mech_from_name("Login", &m) && m == SASL_MECH_LOGIN);
    CHECK(sasl_mech_from_name("oauthBearer", &m) && m == SASL_MECH_OAUTHBEARER);
    CHECK(sasl_mech_from_name("XOAUTH2", &m) && m == SASL_MECH_XOAUTH2);
    CHECK(!sasl_mech_from_name("CRAM-MD5", &m));
    CHECK(!sasl_mech_from_name("", &m));
    CHECK(!sasl_mech_from_name("PLAINX", &m));
    CHECK(!sasl_mech_from_name("PLAI", &m));
    CHECK_STR(sasl_mech_name(SASL_MECH_PLAIN), "PLAIN");
    CHECK_STR(sasl_mech_name(SASL_MECH_LOGIN), "LOGIN");
    CHECK_STR(sasl_mech_name(SASL_MECH_OAUTHBEARER), "OAUTHBEARER");
    CHECK_STR(sasl_mech_name(SASL_MECH_XOAUTH2), "XOAUTH2");
}

static int step_str(struct sasl_server *s, const char *in, const char **error_r)
{
    struct buf chal = BUF_INIT;
    int ret = sasl_server_step(s, in, in != NULL ? strlen(in) : 0, &chal, error_r);
    buf_free(&chal);
    return ret;
}

static void test_after_end(void)
{
    const char *error = NULL;
    struct sasl_server *s = sasl_server_new(SASL_MECH_PLAIN);
    CHECK_INT(step_str(s, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm", &error), SASL_DONE);
    CHECK_INT(step_str(s, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm", &error), SASL_FAIL);
    CHECK_STR(error, "Unexpected SASL response");
    CHECK_STR(sasl_server_result(s)->authcid, "tim"); /* the result survives */
    sasl_server_free(&s);

    s = sasl_server_new(SASL_MECH_LOGIN);
    CHECK_INT(step_str(s, "*", &error), SASL_CANCELLED);
    CHECK_INT(step_str(s, "dGlt", &error), SASL_FAIL);
    CHECK_STR(error, "Unexpected SASL response");
    sasl_server_free(&s);

    s = sasl_server_new(SASL_MECH_XOAUTH2);
    CHECK_INT(step_str(s, "!!", &error), SASL_FAIL);
    CHECK_INT(step_str(s, XOAUTH2_B64, &error), SASL_FAIL);
    CHECK_STR(error, "Unexpected SASL response");
    CHECK(sasl_server_result(s) == NULL);
    sasl_server_free(&s);
    sasl_server_free(&s); /* NULL is fine */
    sasl_server_free(NULL);
}

/* A PLAIN response of total decoded length n: "\0u\0" and a password. */
static int plain_of_len(size_t max_len, size_t n, const char **error_r)
{
    char *plain = malloc(n);
    memcpy(plain, "\0u\0", 3);
    memset(plain + 3, 'p', n - 3);
    struct buf b64 = BUF_INIT;
    base64_encode(&b64, plain, n);
    struct sasl_server *s = sasl_server_new(SASL_MECH_PLAIN);
    if (max_len != 0)
        sasl_server_set_max_len(s, max_len);
    struct buf chal = BUF_INIT;
    int ret = sasl_server_step(s, buf_ptr(&b64), buf_used(&b64), &chal, error_r);
    if (ret == SASL_DONE)
        CHECK_INT(strlen(sasl_server_result(s)->password), n - 3);
    sasl_server_free(&s);
    buf_free(&b64);
    buf_free(&chal);
    free(plain);
    return ret;
}

static void test_limits(void)
{
    const char *error = NULL;
    CHECK_INT(plain_of_len(0, SASL_DEFAULT_MAX_LEN, &error), SASL_DONE);
    CHECK_INT(plain_of_len(0, SASL_DEFAULT_MAX_LEN + 1, &error), SASL_FAIL);
    CHECK_STR(error, E_LONG);
    for (size_t n = 4; n < 40; n++) {
        CHECK_INT(plain_of_len(20, n, &error), n <= 20 ? SASL_DONE : SASL_FAIL);
        if (n > 20)
            CHECK_STR(error, E_LONG);
    }
    /* Far too long is refused before decoding, even when it is not base64. */
    size_t huge = 1 << 20;
    char *junk = malloc(huge);
    memset(junk, '!', huge);
    struct sasl_server *s = sasl_server_new(SASL_MECH_OAUTHBEARER);
    struct buf chal = BUF_INIT;
    CHECK_INT(sasl_server_step(s, junk, huge, &chal, &error), SASL_FAIL);
    CHECK_STR(error, E_LONG);
    sasl_server_free(&s);
    free(junk);
    buf_free(&chal);
}

static void test_master(void)
{
    const char *error = NULL;
    struct sasl_server *s = sasl_server_new(SASL_MECH_PLAIN);
    CHECK_INT(step_str(s, "VXJzZWwAS3VydAB4aXBqM3BsbXE=", &error), SASL_DONE);
    CHECK(sasl_result_is_master(sasl_server_result(s)));
    sasl_server_free(&s);
    s = sasl_server_new(SASL_MECH_PLAIN);
    CHECK_INT(step_str(s, "dGltAHRpbQBwdw==", &error), SASL_DONE); /* tim\0tim\0pw */
    CHECK(!sasl_result_is_master(sasl_server_result(s)));
    sasl_server_free(&s);
    s = sasl_server_new(SASL_MECH_PLAIN);
    CHECK_INT(step_str(s, "AHRpbQBwdw==", &error), SASL_DONE);
    CHECK(!sasl_result_is_master(sasl_server_result(s)));
    sasl_server_free(&s);
}

/* Encode, then decode with the server side: the same values come back. */
static const struct sasl_result *decode_again(struct sasl_server **s, enum sasl_mech mech,
                                              const struct buf *b64)
{
    const char *error = NULL;
    *s = sasl_server_new(mech);
    CHECK_INT(step_str(*s, buf_ptr(b64), &error), SASL_DONE);
    return sasl_server_result(*s);
}

static void test_encode(void)
{
    struct buf b = BUF_INIT;
    struct sasl_server *s = NULL;
    sasl_plain_encode(&b, NULL, "tim", "tanstaaftanstaaf");
    CHECK_STR(buf_ptr(&b), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
    buf_reset(&b);
    sasl_plain_encode(&b, "", "tim", "tanstaaftanstaaf");
    CHECK_STR(buf_ptr(&b), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
    buf_reset(&b);
    sasl_plain_encode(&b, "Ursel", "Kurt", "xipj3plmq");
    CHECK_STR(buf_ptr(&b), "VXJzZWwAS3VydAB4aXBqM3BsbXE=");
    /* the master user form of the reference's lab transcript */
    buf_reset(&b);
    sasl_plain_encode(&b, "real@example.com", "proxyadmin", "masterpw");
    const struct sasl_result *r = decode_again(&s, SASL_MECH_PLAIN, &b);
    CHECK_STR(r->authzid, "real@example.com");
    CHECK_STR(r->authcid, "proxyadmin");
    CHECK_STR(r->password, "masterpw");
    sasl_server_free(&s);

    buf_reset(&b);
    sasl_xoauth2_encode(&b, "someuser@example.com", XOAUTH2_TOKEN);
    CHECK_STR(buf_ptr(&b), XOAUTH2_B64);
    buf_reset(&b);
    sasl_oauthbearer_encode(&b, "user@example.com", "server.example.com", 143, RFC7628_TOKEN);
    CHECK_STR(buf_ptr(&b), RFC7628_B64);
    buf_reset(&b);
    sasl_oauthbearer_encode(&b, "a,b=c", NULL, 0, "tok");
    r = decode_again(&s, SASL_MECH_OAUTHBEARER, &b);
    CHECK_STR(r->authcid, "a,b=c");
    CHECK_STR(r->token, "tok");
    CHECK_STR(r->raw_response, buf_ptr(&b));
    sasl_server_free(&s);
    buf_free(&b);
}

struct split_case {
    const char *login;
    char sep;
    int want;
    const char *user, *master;
};

static const struct split_case splits[] = {
    {"user*master", '*', 1, "user", "master"},
    {"user@example.com*admin", '*', 1, "user@example.com", "admin"},
    {"a*b*c", '*', 1, "a", "b*c"},
    {"user", '*', 0, "user", NULL},
    {"user*master", '\0', 0, "user*master", NULL},
    {"user*master", '#', 0, "user*master", NULL},
    {"", '*', 0, "", NULL},
    {"*master", '*', -1, NULL, NULL},
    {"user*", '*', -1, NULL, NULL},
    {"*", '*', -1, NULL, NULL},
};

static void test_split_master(void)
{
    for (size_t i = 0; i < ARRAY_LEN(splits); i++) {
        const struct split_case *c = &splits[i];
        char *user = (char *)"x", *master = (char *)"x";
        CHECK_INT(sasl_split_master(c->login, c->sep, &user, &master), c->want);
        CHECK_STR(user, c->user);
        CHECK_STR(master, c->master);
        free(user);
        free(master);
    }
}

int main(void)
{
    RUN(test_cases);
    RUN(test_mech_names);
    RUN(test_after_end);
    RUN(test_limits);
    RUN(test_master);
    RUN(test_encode);
    RUN(test_split_master);
    return test_done();
}
