/* sasl - server-side decoding of the SASL mechanisms mailroute accepts from
 * clients (PLAIN, LOGIN, OAUTHBEARER, XOAUTH2), plus the client-side
 * encoding it needs to log in to backends.
 *
 * This module decodes; it never verifies. The caller checks the password
 * against the passdb, or forwards the credentials to the backend (for
 * proxy_mech, the client's original base64 response is kept as
 * raw_response). It does no I/O and knows nothing of the protocols'
 * framing: the caller strips "AUTHENTICATE PLAIN ", "AUTH PLAIN ", CRLF, and
 * sends the challenge after "+ " or "334 ".
 *
 * Secrets: every buffer that held a decoded response, a password or a token
 * is wiped (mem_wipe) before it is freed: on sasl_server_free() and on every
 * failure path. The caller's own input line and out_b64 buffers are the
 * caller's to wipe. */
#ifndef MR_SASL_H
#define MR_SASL_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

enum sasl_mech {
    SASL_MECH_PLAIN,
    SASL_MECH_LOGIN,
    SASL_MECH_OAUTHBEARER,
    SASL_MECH_XOAUTH2,
};

/* What sasl_server_step() returns. */
enum sasl_status {
    SASL_FAIL = -1,     /* *error_r says why; the exchange is over */
    SASL_CONTINUE = 0,  /* send the challenge, call again with the client's answer */
    SASL_DONE = 1,      /* sasl_server_result() holds the credentials */
    SASL_CANCELLED = 2, /* the client answered "*"; the exchange is over */
};

/* Default bound on one decoded client response (OAuth tokens can be a few KiB). */
#define SASL_DEFAULT_MAX_LEN 8192

/* Decoded credentials. Every pointer points into the sasl_server and stays
 * valid until sasl_server_free(); every string is NUL-terminated and free
 * of NUL bytes. */
struct sasl_result {
    /* PLAIN authzid: the user to log in as, NULL when absent or empty. When
     * it differs from authcid, authcid is a master user acting for it
     * (sasl_result_is_master); the caller decides whether that is allowed. */
    const char *authzid;
    /* The login name, never NULL or empty: PLAIN authcid, LOGIN username,
     * OAUTHBEARER gs2 "a=" (unescaped), XOAUTH2 "user=". No control
     * characters, so it is safe in logs and in backend command lines. */
    const char *authcid;
    /* PLAIN and LOGIN: the password (non-empty, no NUL, CR or LF); NULL for
     * the OAuth mechanisms. */
    const char *password;
    /* OAUTHBEARER and XOAUTH2: the bearer token (RFC 6750 b64token syntax,
     * without "Bearer "); NULL for PLAIN and LOGIN. */
    const char *token;
    /* The client's last response (the one that carried the credentials),
     * base64 exactly as sent; "" for an empty response. This is what the
     * proxy sends to the backend with proxy_mech. */
    const char *raw_response;
};

/* Look a mechanism up by name, ignoring case. False for an unknown name. */
bool sasl_mech_from_name(const char *name, enum sasl_mech *mech_r);
/* The canonical (upper-case) name: "PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2". */
const char *sasl_mech_name(enum sasl_mech mech);

struct sasl_server *sasl_server_new(enum sasl_mech mech);
/* Bound on one decoded response (default SASL_DEFAULT_MAX_LEN); call before
 * the first step. */
void sasl_server_set_max_len(struct sasl_server *s, size_t max_len);

/* Feed one client response: base64 text without CRLF, len bytes.
 *
 * First call: b64_in == NULL means the client gave no initial response; the
 * server then answers with its first challenge (empty for PLAIN and the
 * OAuth mechanisms, "Username:" for LOGIN). An empty initial response ("" or
 * "=") is treated the same way. Any response may be "=" for empty, and "*"
 * cancels (SASL_CANCELLED, *error_r "Authentication cancelled").
 *
 * On SASL_CONTINUE the base64 challenge is appended to challenge_out (maybe
 * nothing: send "+ " alone). On SASL_FAIL and SASL_CANCELLED *error_r is a
 * static string, one of:
 *   "Authentication cancelled"        the client sent "*"
 *   "Unexpected SASL response"        a step after the exchange ended
 *   "Invalid base64 data"
 *   "SASL response too long"          decoded response over the max length
 *   "Missing NUL separator"           PLAIN without two NULs
 *   "NUL inside a field"              a third NUL in PLAIN; NUL in a LOGIN answer
 *   "Empty username"                  PLAIN authcid / LOGIN username empty
 *   "Empty password"
 *   "Invalid characters in username"  a control character in authcid/authzid/user
 *   "Invalid characters in password"  CR or LF in a password
 *   "Invalid GS2 header"              OAUTHBEARER header not "n|y,[a=name],"
 *   "Channel binding not supported"   OAUTHBEARER "p=..."
 *   "Invalid key/value list"          OAuth key=value pairs malformed or duplicated,
 *                                     or not ended by \x01\x01
 *   "Missing username"                OAUTHBEARER without "a=", XOAUTH2 without "user="
 *   "Missing bearer token"            no "auth=" pair
 *   "Invalid bearer token"            "auth=" not "Bearer <b64token>"
 */
int sasl_server_step(struct sasl_server *s, const char *b64_in, size_t len,
                     struct buf *challenge_out, const char **error_r);

/* The credentials after SASL_DONE; NULL before that and after a failure. */
const struct sasl_result *sasl_server_result(const struct sasl_server *s);

/* Wipe and free everything; *s becomes NULL. NULL and *s == NULL are fine. */
void sasl_server_free(struct sasl_server **s);

/* authzid given and different from authcid: a master user logs in for
 * authzid (Dovecot's master user login over PLAIN). */
bool sasl_result_is_master(const struct sasl_result *r);

/* Client side, for logging in to a backend. Each appends base64 to out_b64;
 * the caller wipes out_b64 when done (it encodes a secret). The temporary
 * plaintext is wiped here. */
/* PLAIN: authzid (NULL or "" to leave it out) NUL authcid NUL password. */
void sasl_plain_encode(struct buf *out_b64, const char *authzid, const char *authcid,
                       const char *password);
/* XOAUTH2: "user=<user>\x01auth=Bearer <token>\x01\x01". */
void sasl_xoauth2_encode(struct buf *out_b64, const char *user, const char *token);
/* OAUTHBEARER (RFC 7628): "n,a=<user, gs2-escaped>,\x01[host=<host>\x01]
 * [port=<port>\x01]auth=Bearer <token>\x01\x01"; host NULL and port 0 are left out. */
void sasl_oauthbearer_encode(struct buf *out_b64, const char *user, const char *host,
                             unsigned port, const char *token);

/* Split "user<sep>master" (auth_master_user_separator) at the first sep.
 * Returns 1 with both parts allocated (xstrdup; the caller frees them),
 * 0 when sep is '\0' or does not occur (*user_r = copy of login,
 * *master_r = NULL), -1 when a part is empty ("*master", "user*"; nothing
 * allocated, both set to NULL). */
int sasl_split_master(const char *login, char sep, char **user_r, char **master_r);

#endif
