/* submission-login - the Submission front (pre-login SMTP facing clients:
 * EHLO, AUTH, XCLIENT, ...) and back (EHLO, XCLIENT, AUTH towards a
 * submission backend) for the shared login flow (login.h). Not the mail
 * transaction: after AUTH the relay passes MAIL/RCPT/DATA through. */
#ifndef MR_SUBMISSION_LOGIN_H
#define MR_SUBMISSION_LOGIN_H

#include <stdbool.h>

#include "buf.h"
#include "login.h"

extern const struct login_front submission_login_front;
extern const struct login_back submission_login_back;

/* What the client said about itself, for the back's XCLIENT HELO/PROTO. */
struct submission_hello {
    const char *helo;   /* EHLO/HELO argument (or XCLIENT HELO=), NULL: none */
    const char *proto;  /* "ESMTP", "SMTP" (or XCLIENT PROTO=), NULL: none */
};

/* Valid while the session is in its login phase. */
void submission_client_hello(struct login_session *ls, struct submission_hello *out);

/* "<user>@<host>[:<port>]" for "550 5.2.900 ..." (port left out when 587,
 * an IPv6 literal in brackets). */
void submission_referral_target(struct buf *out, const char *user, const struct route_target *t);

#endif
