/* login-sasl - the SASL login a back makes at its backend: which responses
 * to send for PLAIN (the default, also for master users), LOGIN and, with
 * proxy_mech, the OAuth mechanisms. Protocol framing (IMAP "+", POP3 and
 * SMTP "334") stays in the backs. */
#ifndef MR_LOGIN_SASL_H
#define MR_LOGIN_SASL_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct login_session;

/* The mechanism and its responses (base64, secrets: wiped when freed). */
struct login_sasl {
    char mech[16];
    struct buf resp[2];
    size_t n, next;
    bool no_ir;                 /* LOGIN: the server speaks first */
    bool token;                 /* OAuth: a further challenge is an error report */
};

/* PLAIN as login_user() with pass: authcid = the target's master user when
 * there is one, with authzid = the user. authzid_always: authzid = the user
 * without a master too (Dovecot's submission proxy does so). */
void login_sasl_plain(struct login_session *ls, const char *pass, bool authzid_always,
                      struct login_sasl *sasl);
/* The responses for mechanism name (proxy_mech), or false when this login
 * cannot be made with it: an unknown name, no password for PLAIN/LOGIN, a
 * master user with LOGIN (no authzid), or an OAuth mechanism the client did
 * not use itself (its response is passed on unchanged). */
bool login_sasl_prepare(struct login_session *ls, const char *name, bool authzid_always,
                        struct login_sasl *sasl);
/* The next response, or NULL when all were sent. */
const struct buf *login_sasl_next(struct login_sasl *sasl);
void login_sasl_free(struct login_sasl *sasl);

#endif
