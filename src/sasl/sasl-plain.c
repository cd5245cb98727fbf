/* sasl-plain - the two password mechanisms: PLAIN (RFC 4616) and LOGIN
 * (draft-murchison-sasl-login). They only split the decoded response into
 * names and password; checking the password is the caller's job.
 *
 * PLAIN: "[authzid] NUL authcid NUL password" in one response. An empty
 * authzid means "the same as authcid" and is returned as NULL.
 * LOGIN: "Username:" then "Password:", one answer each; the username may
 * come as the initial response. */
#include "sasl-private.h"

#include <stdlib.h>
#include <string.h>

#include "mem.h"

int sasl_plain_response(struct sasl_server *s, char *dec, size_t n, const char **error_r)
{
    char *nul1 = memchr(dec, '\0', n);
    char *nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - dec)) : NULL;
    if (nul2 == NULL)
        return sasl_fail(error_r, SASL_ERR_MISSING_NUL);
    if (strlen(nul2 + 1) != n - (size_t)(nul2 + 1 - dec))
        return sasl_fail(error_r, SASL_ERR_NUL_FIELD);

    const char *authzid = dec, *authcid = nul1 + 1, *password = nul2 + 1;
    const char *error = sasl_check_username(authcid);
    if (error == NULL && *authzid != '\0')
        error = sasl_check_username(authzid);
    if (error == NULL)
        error = sasl_check_password(password);
    if (error != NULL)
        return sasl_fail(error_r, error);

    s->result.authzid = *authzid != '\0' ? authzid : NULL;
    s->result.authcid = authcid;
    s->result.password = password;
    return SASL_DONE;
}

static int login_username(struct sasl_server *s, char *dec, size_t n, struct buf *challenge_out,
                          const char **error_r)
{
    const char *error = sasl_check_username(dec);
    if (error != NULL)
        return sasl_fail(error_r, error);
    s->login_user = xstrndup(dec, n);
    s->login_user_len = n;
    buf_append_str(challenge_out, SASL_LOGIN_PASS_CHALLENGE);
    s->state = SASL_ST_LOGIN_PASS;
    return SASL_CONTINUE;
}

int sasl_login_response(struct sasl_server *s, char *dec, size_t n, struct buf *challenge_out,
                        const char **error_r)
{
    if (strlen(dec) != n)
        return sasl_fail(error_r, SASL_ERR_NUL_FIELD);
    if (s->state == SASL_ST_LOGIN_USER)
        return login_username(s, dec, n, challenge_out, error_r);

    const char *error = sasl_check_password(dec);
    if (error != NULL)
        return sasl_fail(error_r, error);
    s->result.authcid = s->login_user;
    s->result.password = dec;
    return SASL_DONE;
}
