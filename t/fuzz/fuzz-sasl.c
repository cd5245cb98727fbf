/* fuzz-sasl - libFuzzer target for the SASL decoding, every mechanism.
 *
 * Each input is used twice per mechanism: as the decoded payload of one
 * response (base64-encoded here, so the fuzzer works on the mechanism's
 * own syntax), and as raw client lines (split at LF, an empty line meaning
 * "no response"), which exercises base64, "=", "*" and the step order.
 * Besides the sanitizers it checks the module's promises: a known status;
 * an error on failure and no result; only the known challenges; on success
 * the result's guarantees (non-empty user without control characters,
 * password without CR/LF, b64token, raw_response as sent); no step after
 * the end; and that the client encoders give back what was decoded. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "sasl.h"

#define REQUIRE(cond)                                                                    \
    do {                                                                                 \
        if (!(cond))                                                                     \
            abort();                                                                     \
    } while (0)

static const enum sasl_mech mechs[] = {
    SASL_MECH_PLAIN, SASL_MECH_LOGIN, SASL_MECH_OAUTHBEARER, SASL_MECH_XOAUTH2,
};

static void check_user(const char *user)
{
    REQUIRE(user != NULL && *user != '\0');
    for (const unsigned char *p = (const unsigned char *)user; *p != '\0'; p++)
        REQUIRE(*p >= 0x20 && *p != 0x7f);
}

static void check_token(const char *token)
{
    REQUIRE(token != NULL && *token != '\0');
    size_t n = strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                             "0123456789-._~+/");
    REQUIRE(n > 0);
    REQUIRE(token[n + strspn(token + n, "=")] == '\0');
}

static void check_result(enum sasl_mech mech, const struct sasl_result *r, const char *in,
                         size_t len)
{
    REQUIRE(r != NULL);
    check_user(r->authcid);
    if (r->authzid != NULL)
        check_user(r->authzid);
    if (mech == SASL_MECH_PLAIN || mech == SASL_MECH_LOGIN) {
        REQUIRE(r->password != NULL && *r->password != '\0');
        REQUIRE(strpbrk(r->password, "\r\n") == NULL && r->token == NULL);
    } else {
        check_token(r->token);
        REQUIRE(r->password == NULL && r->authzid == NULL);
    }
    if (mech != SASL_MECH_PLAIN)
        REQUIRE(r->authzid == NULL);
    if (len == 1 && in[0] == '=')
        len = 0;
    REQUIRE(strlen(r->raw_response) == len && memcmp(r->raw_response, in, len) == 0);
}

/* Decode b64 with a fresh server in one step; the result must equal r. */
static void check_reencoded(enum sasl_mech mech, const struct sasl_result *r,
                            const struct buf *b64)
{
    struct sasl_server *s = sasl_server_new(mech);
    struct buf chal = BUF_INIT;
    const char *error = NULL;
    REQUIRE(sasl_server_step(s, buf_ptr(b64), buf_used(b64), &chal, &error) == SASL_DONE);
    const struct sasl_result *again = sasl_server_result(s);
    REQUIRE(strcmp(again->authcid, r->authcid) == 0);
    REQUIRE((again->authzid == NULL) == (r->authzid == NULL));
    REQUIRE(r->authzid == NULL || strcmp(again->authzid, r->authzid) == 0);
    REQUIRE((again->password == NULL) == (r->password == NULL));
    REQUIRE(r->password == NULL || strcmp(again->password, r->password) == 0);
    REQUIRE((again->token == NULL) == (r->token == NULL));
    REQUIRE(r->token == NULL || strcmp(again->token, r->token) == 0);
    sasl_server_free(&s);
    buf_free(&chal);
}

static void check_encoders(enum sasl_mech mech, const struct sasl_result *r)
{
    struct buf b64 = BUF_INIT;
    if (mech == SASL_MECH_PLAIN)
        sasl_plain_encode(&b64, r->authzid, r->authcid, r->password);
    else if (mech == SASL_MECH_XOAUTH2)
        sasl_xoauth2_encode(&b64, r->authcid, r->token);
    else if (mech == SASL_MECH_OAUTHBEARER)
        sasl_oauthbearer_encode(&b64, r->authcid, "h", 143, r->token);
    else
        return;
    check_reencoded(mech, r, &b64);
    buf_free_wipe(&b64);
}

/* One step with the promises checked; returns the status. */
static int step(struct sasl_server *s, enum sasl_mech mech, const char *in, size_t len)
{
    struct buf chal = BUF_INIT;
    const char *error = NULL;
    int status = sasl_server_step(s, in, len, &chal, &error);
    switch (status) {
    case SASL_CONTINUE:
        REQUIRE(buf_used(&chal) == 0 || strcmp(buf_ptr(&chal), "VXNlcm5hbWU6") == 0 ||
                strcmp(buf_ptr(&chal), "UGFzc3dvcmQ6") == 0);
        REQUIRE(sasl_server_result(s) == NULL);
        break;
    case SASL_DONE:
        REQUIRE(buf_used(&chal) == 0);
        check_result(mech, sasl_server_result(s), in != NULL ? in : "", in != NULL ? len : 0);
        check_encoders(mech, sasl_server_result(s));
        break;
    case SASL_FAIL:
    case SASL_CANCELLED:
        REQUIRE(error != NULL && *error != '\0');
        REQUIRE(sasl_server_result(s) == NULL);
        break;
    default:
        abort();
    }
    buf_free(&chal);
    return status;
}

static void check_over(struct sasl_server *s)
{
    struct buf chal = BUF_INIT;
    const char *error = NULL;
    REQUIRE(sasl_server_step(s, "AA==", 4, &chal, &error) == SASL_FAIL);
    REQUIRE(strcmp(error, "Unexpected SASL response") == 0);
    buf_free(&chal);
}

static void run_decoded(enum sasl_mech mech, const uint8_t *data, size_t size)
{
    struct buf b64 = BUF_INIT;
    base64_encode(&b64, data, size);
    struct sasl_server *s = sasl_server_new(mech);
    int status = step(s, mech, buf_ptr(&b64), buf_used(&b64));
    if (status == SASL_CONTINUE && mech == SASL_MECH_LOGIN)
        status = step(s, mech, buf_ptr(&b64), buf_used(&b64));
    if (status != SASL_CONTINUE)
        check_over(s);
    sasl_server_free(&s);
    buf_free(&b64);
}

static void run_lines(enum sasl_mech mech, const char *text, size_t size)
{
    struct sasl_server *s = sasl_server_new(mech);
    int status = SASL_CONTINUE;
    while (status == SASL_CONTINUE) {
        const char *lf = memchr(text, '\n', size);
        size_t len = lf != NULL ? (size_t)(lf - text) : size;
        status = step(s, mech, len > 0 ? text : NULL, len);
        if (lf == NULL)
            break;
        text += len + 1;
        size -= len + 1;
    }
    if (status != SASL_CONTINUE)
        check_over(s);
    sasl_server_free(&s);
}

static void run_split_master(const uint8_t *data, size_t size)
{
    char *login = strndup((const char *)data, size);
    char *user, *master;
    int ret = sasl_split_master(login, '*', &user, &master);
    REQUIRE(ret >= -1 && ret <= 1);
    if (ret == 1)
        REQUIRE(*user != '\0' && *master != '\0' && strchr(user, '*') == NULL &&
                strlen(user) + 1 + strlen(master) == strlen(login));
    else if (ret == 0)
        REQUIRE(strcmp(user, login) == 0 && master == NULL);
    else
        REQUIRE(user == NULL && master == NULL);
    free(user);
    free(master);
    free(login);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    for (size_t i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++) {
        run_decoded(mechs[i], data, size);
        run_lines(mechs[i], (const char *)data, size);
    }
    run_split_master(data, size);
    return 0;
}
