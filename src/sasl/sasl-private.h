/* sasl-private - the server state shared by the mechanism files of src/sasl.
 * Not for use outside this folder. */
#ifndef MR_SASL_PRIVATE_H
#define MR_SASL_PRIVATE_H

#include "sasl.h"

#define SASL_ERR_NUL_FIELD "NUL inside a field"
#define SASL_ERR_EMPTY_USER "Empty username"
#define SASL_ERR_EMPTY_PASS "Empty password"
#define SASL_ERR_BAD_USER "Invalid characters in username"
#define SASL_ERR_BAD_PASS "Invalid characters in password"
#define SASL_ERR_MISSING_NUL "Missing NUL separator"
#define SASL_ERR_GS2 "Invalid GS2 header"
#define SASL_ERR_CBIND "Channel binding not supported"
#define SASL_ERR_KVLIST "Invalid key/value list"
#define SASL_ERR_NO_USER "Missing username"
#define SASL_ERR_NO_TOKEN "Missing bearer token"
#define SASL_ERR_BAD_TOKEN "Invalid bearer token"

enum sasl_state {
    SASL_ST_START,      /* nothing received yet */
    SASL_ST_RESPONSE,   /* empty challenge sent, waiting for the one response */
    SASL_ST_LOGIN_USER, /* LOGIN: "Username:" sent */
    SASL_ST_LOGIN_PASS, /* LOGIN: "Password:" sent */
    SASL_ST_DONE,
    SASL_ST_OVER,       /* failed or cancelled */
};

struct sasl_server {
    enum sasl_mech mech;
    enum sasl_state state;
    size_t max_len;
    /* The current response: decoded bytes, NUL, the base64 as sent, NUL.
     * Sized once per response so it never moves (a realloc would leave a
     * copy of the secret in freed memory); the result points into it. */
    struct buf cred;
    char *login_user;   /* LOGIN: the username between the two steps */
    size_t login_user_len;
    struct sasl_result result;
};

/* A mechanism's handler for one decoded response: dec[0..n) with dec[n] ==
 * '\0', writable in place. Returns a SASL_* status; on SASL_CONTINUE it
 * appends the next challenge and sets s->state. */
int sasl_plain_response(struct sasl_server *s, char *dec, size_t n, const char **error_r);
int sasl_login_response(struct sasl_server *s, char *dec, size_t n, struct buf *challenge_out,
                        const char **error_r);
int sasl_oauthbearer_response(struct sasl_server *s, char *dec, size_t n, const char **error_r);
int sasl_xoauth2_response(struct sasl_server *s, char *dec, size_t n, const char **error_r);

/* LOGIN's first challenge (base64 of "Username:"). */
#define SASL_LOGIN_USER_CHALLENGE "VXNlcm5hbWU6"
#define SASL_LOGIN_PASS_CHALLENGE "UGFzc3dvcmQ6"

/* Checks shared by the mechanisms; each returns NULL or the error text. */
const char *sasl_check_username(const char *user);
const char *sasl_check_password(const char *pass);

static inline int sasl_fail(const char **error_r, const char *error)
{
    *error_r = error;
    return SASL_FAIL;
}

#endif
