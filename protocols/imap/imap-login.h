/* imap-login - the IMAP front (pre-login, facing clients) and back (the
 * login dialogue with an IMAP backend) for the shared login flow. */
#ifndef MR_IMAP_LOGIN_H
#define MR_IMAP_LOGIN_H

#include "login.h"

extern const struct login_front imap_login_front;
extern const struct login_back imap_login_back;

/* "imap://<user>;AUTH=<MECH>@<host>[:<port>]/" (port left out when 143). */
void imap_referral_url(struct buf *out, const char *user, const char *mech,
                       const struct route_target *t);

#endif
