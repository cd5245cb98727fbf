/* pop3-login - the POP3 front (pre-login, facing clients) and back (the
 * login dialogue with a POP3 backend) for the shared login flow (login.h).
 * Not the POP3 mail commands: after login the relay passes them through. */
#ifndef MR_POP3_LOGIN_H
#define MR_POP3_LOGIN_H

#include "buf.h"
#include "login.h"

extern const struct login_front pop3_login_front;
extern const struct login_back pop3_login_back;

/* "<user>@<host>[:<port>]" for "-ERR [REFERRAL/...]" (port left out when
 * 110, an IPv6 literal in brackets). */
void pop3_referral_target(struct buf *out, const char *user, const struct route_target *t);

#endif
