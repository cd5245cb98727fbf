/* sasl-client - what the proxy sends when it logs in to a backend: PLAIN
 * (also for master users: authzid = the user, authcid = the master),
 * XOAUTH2 and OAUTHBEARER initial responses, and the split of
 * "user*master" logins (auth_master_user_separator).
 *
 * The plaintext is assembled in a buffer sized once, so it never moves,
 * and wiped before it is freed; only the base64 leaves this file. */
#include "sasl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "mem.h"

/* Encode tmp into out and wipe it. */
static void encode_and_wipe(struct buf *out_b64, struct buf *tmp)
{
    base64_encode(out_b64, buf_ptr(tmp), buf_used(tmp));
    buf_free_wipe(tmp);
}

void sasl_plain_encode(struct buf *out_b64, const char *authzid, const char *authcid,
                       const char *password)
{
    struct buf tmp = BUF_INIT;
    if (authzid == NULL)
        authzid = "";
    buf_reserve(&tmp, strlen(authzid) + strlen(authcid) + strlen(password) + 2);
    buf_append_str(&tmp, authzid);
    buf_append(&tmp, "", 1);
    buf_append_str(&tmp, authcid);
    buf_append(&tmp, "", 1);
    buf_append_str(&tmp, password);
    encode_and_wipe(out_b64, &tmp);
}

void sasl_xoauth2_encode(struct buf *out_b64, const char *user, const char *token)
{
    struct buf tmp = BUF_INIT;
    buf_reserve(&tmp, strlen(user) + strlen(token) + 32);
    buf_append_str(&tmp, "user=");
    buf_append_str(&tmp, user);
    buf_append_str(&tmp, "\x01" "auth=Bearer ");
    buf_append_str(&tmp, token);
    buf_append_str(&tmp, "\x01\x01");
    encode_and_wipe(out_b64, &tmp);
}

/* RFC 5801 saslname: ',' and '=' escaped as "=2C" and "=3D". */
static void append_saslname(struct buf *b, const char *name)
{
    for (; *name != '\0'; name++) {
        if (*name == ',')
            buf_append_str(b, "=2C");
        else if (*name == '=')
            buf_append_str(b, "=3D");
        else
            buf_append(b, name, 1);
    }
}

void sasl_oauthbearer_encode(struct buf *out_b64, const char *user, const char *host,
                             unsigned port, const char *token)
{
    struct buf tmp = BUF_INIT;
    char port_str[16];
    snprintf(port_str, sizeof(port_str), "%u", port);
    buf_reserve(&tmp, 3 * strlen(user) + (host != NULL ? strlen(host) : 0) + strlen(token) + 64);
    buf_append_str(&tmp, "n,a=");
    append_saslname(&tmp, user);
    buf_append_str(&tmp, ",\x01");
    if (host != NULL) {
        buf_append_str(&tmp, "host=");
        buf_append_str(&tmp, host);
        buf_append_str(&tmp, "\x01");
    }
    if (port != 0) {
        buf_append_str(&tmp, "port=");
        buf_append_str(&tmp, port_str);
        buf_append_str(&tmp, "\x01");
    }
    buf_append_str(&tmp, "auth=Bearer ");
    buf_append_str(&tmp, token);
    buf_append_str(&tmp, "\x01\x01");
    encode_and_wipe(out_b64, &tmp);
}

int sasl_split_master(const char *login, char sep, char **user_r, char **master_r)
{
    const char *p = sep != '\0' ? strchr(login, sep) : NULL;
    *user_r = *master_r = NULL;
    if (p == NULL) {
        *user_r = xstrdup(login);
        return 0;
    }
    if (p == login || p[1] == '\0')
        return -1;
    *user_r = xstrndup(login, (size_t)(p - login));
    *master_r = xstrdup(p + 1);
    return 1;
}
