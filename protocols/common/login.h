/* login - the login flow shared by IMAP, POP3 and Submission.
 *
 * A protocol provides a front (pre-login commands and replies in its own
 * words) and a back (the backend login dialogue); everything between is
 * here, once:
 *
 *   client --credentials--> passdb (with the password) --fields-->
 *   route_decide() --decision--> one of:
 *     PROXY     connect (source_ip, login_proxy_timeout, reconnects on
 *               connect failures), then back->start(): banner, ID/XCLIENT
 *               when the backend trusts us, login as destuser (or master
 *               user), then front->logged_in() and the byte relay.
 *     REFERRAL  front->referral(); nologin refuses, otherwise with a local
 *               backend the login goes on there ("log in anyway").
 *     LOCAL     like PROXY to the protocol's local backend, else tempfail.
 *     REFUSE    front->failed() after auth_failure_delay ("nodelay" skips it).
 *     LOOP, TEMPFAIL  front->failed(TEMP); the reason goes to the log only.
 *
 * Ownership: a login_session owns the client stream until the relay takes
 * it, the credentials (wiped when freed), the passdb look-up, the backend
 * connection and the decision. Passwords are never logged. */
#ifndef MR_LOGIN_H
#define MR_LOGIN_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "env.h"
#include "passdb.h"
#include "route.h"
#include "sasl.h"
#include "sid.h"
#include "stream.h"


enum login_failure {
    LOGIN_FAIL_AUTH,          /* wrong password or unknown user */
    LOGIN_FAIL_NOLOGIN,       /* nologin without host */
    LOGIN_FAIL_TEMP,          /* passdb down, backend down, bad fields */
    LOGIN_FAIL_LOOP,          /* TTL exhausted: temporary to the client, but worded so
                               * that a previous hop does not retry */
    LOGIN_FAIL_BACKEND,       /* the backend refused the login: its reply is given */
    LOGIN_FAIL_LIMIT,         /* mail_max_userip_connections: text given; the session
                               * is closed after the reply */
};

struct login_session;

struct login_credentials {
    const char *user;
    const char *password;     /* NULL for token mechanisms */
    const char *mech;         /* "PLAIN", "LOGIN", ... */
    /* The client's last SASL response, base64 as sent (NULL: none, e.g. IMAP
     * LOGIN): the backend gets it unchanged with proxy_mech (OAUTHBEARER). */
    const char *sasl_response;
    /* A master user logging in as user (PLAIN authzid != authcid); NULL
     * otherwise. "user*master" in user is split here by
     * auth_master_user_separator. */
    const char *master;
};

struct login_front {
    const char *service;      /* "imap", "pop3", "submission" */
    enum route_proto proto;
    /* Allocate the protocol state and greet. */
    void *(*start)(struct login_session *ls);
    void (*input)(struct login_session *ls, void *state);  /* client bytes, pre-login */
    void (*failed)(struct login_session *ls, void *state, enum login_failure f,
                   const char *text);
    void (*referral)(struct login_session *ls, void *state, const struct route_decision *d);
    /* The backend accepted: tell the client (backend_reply is the backend's
     * own success line, protocol-specific). The relay starts afterwards. */
    void (*logged_in)(struct login_session *ls, void *state, const char *backend_reply);
    /* STARTTLS finished: forget what was said in plaintext (NULL: nothing). */
    void (*tls_started)(struct login_session *ls, void *state);
    void (*free)(void *state);
};

struct login_back {
    /* The backend connection is up: read its banner and log in. Call
     * login_backend_accepted() or login_backend_failed() once. */
    void *(*start)(struct login_session *ls, struct stream *backend);
    void (*input)(struct login_session *ls, void *state);
    /* The handshake login_backend_starttls() started succeeded; input flows again. */
    void (*tls_started)(struct login_session *ls, void *state);
    void (*free)(void *state);
};

/* implicit_tls: the listener has "ssl = yes": TLS first, then the greeting. */
void login_session_start(struct proto_env *env, struct stream *s, const struct login_front *front,
                         const struct login_back *back, bool implicit_tls);

/* For fronts */
struct stream *login_client(struct login_session *ls);
const char *login_session_id(const struct login_session *ls);
/* Can the client start TLS now (configured, and not on TLS yet)? */
bool login_tls_available(const struct login_session *ls);
/* The front wrote its "go ahead" reply and stopped reading commands: start
 * the handshake. What the client sent after STARTTLS in plaintext is
 * discarded. On success front->tls_started() runs and input flows again;
 * a failed handshake ends the session. */
void login_starttls(struct login_session *ls);
/* Plaintext credentials allowed now? (TLS, a trusted network or loopback) */
bool login_plaintext_allowed(const struct login_session *ls);
bool login_client_trusted(const struct login_session *ls);
/* XCLIENT (or ID) from a trusted peer: the real client's address (NULL:
 * unchanged) and the TTL the previous hop gave (< 0: unchanged). The passdb
 * and the backend see the forwarded address from now on. */
void login_set_forwarded(struct login_session *ls, const struct addr *client, int ttl);
/* The previous hop's session id, kept so one login has one id along the
 * chain. False (id unchanged) when empty, longer than LOGIN_SESSION_ID_MAX
 * or not printable ASCII without spaces. */
#define LOGIN_SESSION_ID_MAX 64
bool login_set_session_id(struct login_session *ls, const char *id);
const struct settings *login_settings(const struct login_session *ls);
/* Verify and route these credentials; the client stream is paused until a
 * front callback runs. */
void login_authenticate(struct login_session *ls, const struct login_credentials *cred);
/* A finished SASL exchange: PLAIN with an authzid other than the authcid is
 * a master user login (authcid = the master). */
void login_authenticate_sasl(struct login_session *ls, enum sasl_mech mech,
                             const struct sasl_result *r);
/* Does auth_mechanisms offer this mechanism? */
bool login_mech_enabled(const struct login_session *ls, enum sasl_mech mech);
/* prefix NAME suffix for each offered mechanism, e.g. " AUTH=", "". */
void login_append_mechs(const struct login_session *ls, struct buf *out, const char *prefix,
                        const char *suffix);
/* The front is done with the client (LOGOUT/QUIT or a fatal error). */
void login_session_close(struct login_session *ls);

/* A trusted previous hop told us which of its addresses the client used. */
void login_set_forwarded_local(struct login_session *ls, const struct addr *local);
/* forward_KEY=VALUE fields from a trusted previous hop, passed on to the
 * backend with the passdb's own forward_* fields. */
void login_add_forward(struct login_session *ls, const char *key, const char *value);
const struct fields *login_forward_fields(const struct login_session *ls);

/* This worker's sessions (pre-login, logging in and relayed). */
unsigned login_sessions_count(void);
/* Close them all now (shutdown). */
void login_sessions_kill(void);

/* For backs */
struct stream *login_backend(struct login_session *ls);
/* The front's state (what front->start returned), for a back of the same
 * protocol that needs what the client said before login (SMTP HELO). */
void *login_front_state(struct login_session *ls);
const struct route_target *login_target(const struct login_session *ls);
const char *login_user(const struct login_session *ls);       /* destuser or user */
const char *login_password(const struct login_session *ls);   /* pass field or the client's */
/* The client's SASL mechanism ("PLAIN" for IMAP LOGIN / POP3 USER+PASS) and
 * its SASL response as sent (base64, NULL when none), for proxy_mech. */
const char *login_mech(const struct login_session *ls);
const char *login_sasl_response(const struct login_session *ls);
/* The client's own ID pairs, in order (IMAP; kept for imap_id_retain). */
const struct fields *login_client_id(const struct login_session *ls);
/* For fronts: remember the client's ID pairs (first ID command only). */
void login_set_client_id(struct login_session *ls, const struct fields *pairs);
const struct addr *login_client_addr(const struct login_session *ls);
const struct addr *login_local_addr(const struct login_session *ls);
int login_ttl(const struct login_session *ls);
void login_backend_accepted(struct login_session *ls, const char *reply);
/* starttls=yes|any-cert: the backend said yes to STARTTLS (or STLS): start the
 * handshake, verified like ssl=yes. Bytes it sent after its "go ahead" are
 * discarded. Success: back->tls_started(); failure: a temporary failure,
 * never retried in plaintext. */
void login_backend_starttls(struct login_session *ls);
/* The backend said "try again later" (IMAP NO [UNAVAILABLE]): reconnect
 * while login_proxy_max_reconnects and time allow, then pass text on. */
void login_backend_retry(struct login_session *ls, const char *text);
/* The decision being acted on (for "log in anyway" referrals), or NULL. */
const struct route_decision *login_decision(const struct login_session *ls);
/* The account a referral names: the decision's destuser, else the user. */
const char *login_referral_user(const struct login_session *ls, const struct route_decision *d);
/* temporary: retry/tempfail; else the reply text goes to the front as LOGIN_FAIL_BACKEND. */
void login_backend_failed(struct login_session *ls, bool temporary, const char *text);

#endif
