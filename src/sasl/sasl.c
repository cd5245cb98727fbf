/* sasl - the server-side exchange: mechanism names, the step state machine,
 * base64 decoding of each response into a buffer that is wiped when it is
 * dropped. The per-mechanism syntax lives in sasl-plain.c (PLAIN, LOGIN)
 * and sasl-oauth.c (OAUTHBEARER, XOAUTH2); this file knows none of it.
 *
 * Representation choices: an empty initial response is treated like none
 * (the server sends its first challenge), which is what Dovecot does for
 * LOGIN and costs nothing for the others, where an empty response can never
 * carry credentials. "*" cancels at any step. The limit is on the decoded
 * size of each response; longer base64 is refused before decoding. */
#include "sasl-private.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec.h"
#include "mem.h"

#define ERR_CANCELLED "Authentication cancelled"
#define ERR_UNEXPECTED "Unexpected SASL response"
#define ERR_BASE64 "Invalid base64 data"
#define ERR_TOO_LONG "SASL response too long"

static const char *const mech_names[] = {
    [SASL_MECH_PLAIN] = "PLAIN",
    [SASL_MECH_LOGIN] = "LOGIN",
    [SASL_MECH_OAUTHBEARER] = "OAUTHBEARER",
    [SASL_MECH_XOAUTH2] = "XOAUTH2",
};

bool sasl_mech_from_name(const char *name, enum sasl_mech *mech_r)
{
    for (size_t i = 0; i < ARRAY_LEN(mech_names); i++) {
        if (strcasecmp(name, mech_names[i]) == 0) {
            *mech_r = (enum sasl_mech)i;
            return true;
        }
    }
    return false;
}

const char *sasl_mech_name(enum sasl_mech mech)
{
    return (size_t)mech < ARRAY_LEN(mech_names) ? mech_names[mech] : "UNKNOWN";
}

struct sasl_server *sasl_server_new(enum sasl_mech mech)
{
    struct sasl_server *s = xcalloc(1, sizeof(*s));
    s->mech = mech;
    s->state = SASL_ST_START;
    s->max_len = SASL_DEFAULT_MAX_LEN;
    return s;
}

void sasl_server_set_max_len(struct sasl_server *s, size_t max_len)
{
    s->max_len = max_len;
}

static void drop_credentials(struct sasl_server *s)
{
    buf_free_wipe(&s->cred);
    if (s->login_user != NULL) {
        mem_wipe(s->login_user, s->login_user_len);
        free(s->login_user);
        s->login_user = NULL;
        s->login_user_len = 0;
    }
    memset(&s->result, 0, sizeof(s->result));
}

void sasl_server_free(struct sasl_server **sp)
{
    if (sp == NULL || *sp == NULL)
        return;
    drop_credentials(*sp);
    free(*sp);
    *sp = NULL;
}

const struct sasl_result *sasl_server_result(const struct sasl_server *s)
{
    return s->state == SASL_ST_DONE ? &s->result : NULL;
}

bool sasl_result_is_master(const struct sasl_result *r)
{
    return r->authzid != NULL && strcmp(r->authzid, r->authcid) != 0;
}

/* Decode one response into s->cred as [decoded] NUL [base64 as sent] NUL.
 * Returns 0 and the decoded length, or -1 with an error (cred wiped). */
static int decode_response(struct sasl_server *s, const char *in, size_t len, size_t *n_r,
                           const char **error_r)
{
    buf_free_wipe(&s->cred);
    /* Base64 of max_len bytes is at most 4 * ceil(max_len / 3) long: refuse
     * anything clearly longer before decoding; the exact check follows. */
    if (len / 4 > s->max_len / 3 + 1) {
        *error_r = ERR_TOO_LONG;
        return -1;
    }
    size_t dec_max = len / 4 * 3 + 3;
    buf_reserve(&s->cred, dec_max + 1 + len + 1);
    if (!base64_decode(&s->cred, in, len)) {
        buf_free_wipe(&s->cred);
        *error_r = ERR_BASE64;
        return -1;
    }
    size_t n = buf_used(&s->cred);
    if (n > s->max_len) {
        buf_free_wipe(&s->cred);
        *error_r = ERR_TOO_LONG;
        return -1;
    }
    buf_append(&s->cred, "", 1);
    buf_append(&s->cred, in, len);
    buf_append(&s->cred, "", 1);
    s->result.raw_response = s->cred.data + n + 1;
    *n_r = n;
    return 0;
}

/* The first challenge, when the client gave no initial response. */
static int first_challenge(struct sasl_server *s, struct buf *challenge_out)
{
    if (s->mech == SASL_MECH_LOGIN) {
        buf_append_str(challenge_out, SASL_LOGIN_USER_CHALLENGE);
        s->state = SASL_ST_LOGIN_USER;
    } else {
        s->state = SASL_ST_RESPONSE;
    }
    return SASL_CONTINUE;
}

static int dispatch(struct sasl_server *s, char *dec, size_t n, struct buf *challenge_out,
                    const char **error_r)
{
    switch (s->mech) {
    case SASL_MECH_PLAIN:
        return sasl_plain_response(s, dec, n, error_r);
    case SASL_MECH_LOGIN:
        return sasl_login_response(s, dec, n, challenge_out, error_r);
    case SASL_MECH_OAUTHBEARER:
        return sasl_oauthbearer_response(s, dec, n, error_r);
    case SASL_MECH_XOAUTH2:
        return sasl_xoauth2_response(s, dec, n, error_r);
    }
    return sasl_fail(error_r, ERR_UNEXPECTED);
}

/* End the exchange: keep the result on success, wipe everything otherwise. */
static int finish(struct sasl_server *s, int status)
{
    if (status == SASL_DONE) {
        s->state = SASL_ST_DONE;
    } else if (status != SASL_CONTINUE) {
        drop_credentials(s);
        s->state = SASL_ST_OVER;
    }
    return status;
}

int sasl_server_step(struct sasl_server *s, const char *b64_in, size_t len,
                     struct buf *challenge_out, const char **error_r)
{
    if (s->state == SASL_ST_DONE || s->state == SASL_ST_OVER)
        return sasl_fail(error_r, ERR_UNEXPECTED);
    if (b64_in == NULL)
        len = 0;
    if (len == 1 && b64_in[0] == '*') {
        *error_r = ERR_CANCELLED;
        return finish(s, SASL_CANCELLED);
    }
    if (len == 1 && b64_in[0] == '=')
        len = 0;
    if (s->state == SASL_ST_START && len == 0)
        return first_challenge(s, challenge_out);
    if (s->state == SASL_ST_START)
        s->state = s->mech == SASL_MECH_LOGIN ? SASL_ST_LOGIN_USER : SASL_ST_RESPONSE;

    size_t n;
    if (decode_response(s, len > 0 ? b64_in : "", len, &n, error_r) < 0)
        return finish(s, SASL_FAIL);
    return finish(s, dispatch(s, s->cred.data, n, challenge_out, error_r));
}

const char *sasl_check_username(const char *user)
{
    if (*user == '\0')
        return SASL_ERR_EMPTY_USER;
    for (const unsigned char *p = (const unsigned char *)user; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return SASL_ERR_BAD_USER;
    }
    return NULL;
}

/* Passwords may hold any byte but NUL, CR and LF: the backend login sends
 * them on a command line (POP3 "PASS", IMAP quoted strings). */
const char *sasl_check_password(const char *pass)
{
    if (*pass == '\0')
        return SASL_ERR_EMPTY_PASS;
    if (strpbrk(pass, "\r\n") != NULL)
        return SASL_ERR_BAD_PASS;
    return NULL;
}
