/* login-sasl.c - responses for the backend's SASL login (login-sasl.h). */
#include "login-sasl.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "codec.h"
#include "login.h"
#include "sasl.h"

void login_sasl_plain(struct login_session *ls, const char *pass, bool authzid_always,
                      struct login_sasl *sasl)
{
    const char *master = login_target(ls)->master;
    const char *user = login_user(ls);
    snprintf(sasl->mech, sizeof(sasl->mech), "PLAIN");
    sasl_plain_encode(&sasl->resp[0], master != NULL || authzid_always ? user : "",
                      master != NULL ? master : user, pass);
    sasl->n = 1;
}

/* The client's own response, for the same OAuth mechanism only. */
static bool pass_token_on(struct login_session *ls, struct login_sasl *sasl)
{
    const char *client_mech = login_mech(ls), *resp = login_sasl_response(ls);
    if (client_mech == NULL || resp == NULL || strcasecmp(client_mech, sasl->mech) != 0 ||
        strcspn(resp, "\r\n ") != strlen(resp))
        return false;
    buf_append_str(&sasl->resp[0], resp);
    sasl->n = 1;
    sasl->token = true;
    return true;
}

bool login_sasl_prepare(struct login_session *ls, const char *name, bool authzid_always,
                        struct login_sasl *sasl)
{
    const char *user = login_user(ls), *pass = login_password(ls);
    enum sasl_mech mech;
    if (!sasl_mech_from_name(name, &mech))
        return false;
    snprintf(sasl->mech, sizeof(sasl->mech), "%s", sasl_mech_name(mech));
    switch (mech) {
    case SASL_MECH_PLAIN:
        if (pass == NULL)
            return false;
        login_sasl_plain(ls, pass, authzid_always, sasl);
        return true;
    case SASL_MECH_LOGIN:
        if (pass == NULL || login_target(ls)->master != NULL)
            return false; /* LOGIN has no authzid */
        base64_encode(&sasl->resp[0], user, strlen(user));
        base64_encode(&sasl->resp[1], pass, strlen(pass));
        sasl->n = 2;
        sasl->no_ir = true;
        return true;
    case SASL_MECH_OAUTHBEARER:
    case SASL_MECH_XOAUTH2:
        return pass_token_on(ls, sasl);
    }
    return false;
}

const struct buf *login_sasl_next(struct login_sasl *sasl)
{
    return sasl->next < sasl->n ? &sasl->resp[sasl->next++] : NULL;
}

void login_sasl_free(struct login_sasl *sasl)
{
    for (size_t i = 0; i < 2; i++)
        buf_free_wipe(&sasl->resp[i]);
}
