/* sasl-oauth - the bearer token mechanisms: OAUTHBEARER (RFC 7628) and
 * Google's XOAUTH2. They extract the user name and the token; validating the
 * token is the backend's job (the proxy passes raw_response on with
 * proxy_mech) or the passdb's.
 *
 * OAUTHBEARER: gs2-header "n,a=user," (or "y,"), then \x01, then key=value
 * pairs each ended by \x01, then a final \x01. XOAUTH2: the same pairs
 * without a header: "user=u\x01auth=Bearer t\x01\x01".
 *
 * Strictness: keys are letters, values printable (8-bit allowed, control
 * characters other than HTAB, CR and LF refused), "auth" and "user" may
 * appear once, unknown keys (host, port, ...) are ignored, nothing may follow
 * the final \x01. The token must be RFC 6750 b64token syntax, so it is safe
 * on any command line. A user name is required: the router cannot route
 * without one. The RFC 7628 error challenge (a JSON status the client answers
 * with \x01) belongs to whoever verifies the token, not here. */
#include "sasl-private.h"
#include "str.h"

#include <string.h>
#include <strings.h>

#define KV_SEP '\x01'

struct oauth_pairs {
    char *user;
    char *auth;
};

static bool is_value_char(unsigned char c)
{
    return c >= 0x20 ? c != 0x7f : (c == '\t' || c == '\r' || c == '\n');
}

/* RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static bool is_b64token(const char *s)
{
    size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         "0123456789-._~+/");
    if (n == 0)
        return false;
    n += strspn(s + n, "=");
    return s[n] == '\0';
}

/* Decode a gs2 saslname in place ("=2C" is ',', "=3D" is '=') up to the ','
 * that ends it. Returns the index of that ',' or 0 when malformed. */
static size_t unescape_saslname(char *dec, size_t n, size_t i, char **name_r)
{
    char *name = dec + i, *w = name;
    while (i < n && dec[i] != ',') {
        if (dec[i] == '=') {
            if (i + 2 >= n)
                return 0;
            if (dec[i + 1] == '2' && dec[i + 2] == 'C')
                *w++ = ',';
            else if (dec[i + 1] == '3' && dec[i + 2] == 'D')
                *w++ = '=';
            else
                return 0;
            i += 3;
        } else if (dec[i] == '\0') {
            return 0;
        } else {
            *w++ = dec[i++];
        }
    }
    if (i >= n || w == name)
        return 0;
    *w = '\0'; /* w <= dec + i: at worst this overwrites the ',' already seen */
    *name_r = name;
    return i;
}

/* RFC 5801 4: gs2-header = cb-flag "," [ "a=" saslname ] ",". Sets *pos_r
 * past it and *user_r to the unescaped name or NULL. */
static int parse_gs2_header(char *dec, size_t n, size_t *pos_r, char **user_r,
                            const char **error_r)
{
    *user_r = NULL;
    if (n >= 2 && dec[0] == 'p' && dec[1] == '=')
        return sasl_fail(error_r, SASL_ERR_CBIND);
    if (n < 2 || (dec[0] != 'n' && dec[0] != 'y') || dec[1] != ',')
        return sasl_fail(error_r, SASL_ERR_GS2);
    size_t i = 2;
    if (i + 1 < n && dec[i] == 'a' && dec[i + 1] == '=') {
        i = unescape_saslname(dec, n, i + 2, user_r);
        if (i == 0)
            return sasl_fail(error_r, SASL_ERR_GS2);
    } else if (i >= n || dec[i] != ',') {
        return sasl_fail(error_r, SASL_ERR_GS2);
    }
    *pos_r = i + 1;
    return 0;
}

static int store_pair(struct oauth_pairs *pairs, const char *key, size_t key_len, char *value)
{
    char **slot = NULL;
    if (key_len == 4 && memcmp(key, "auth", 4) == 0)
        slot = &pairs->auth;
    else if (key_len == 4 && memcmp(key, "user", 4) == 0)
        slot = &pairs->user;
    if (slot == NULL)
        return 0;
    if (*slot != NULL)
        return -1;
    *slot = value;
    return 0;
}

/* *(key "=" value %x01) %x01, where the last %x01 is the last byte. Values
 * are NUL-terminated in place (over their %x01). */
static int parse_pairs(char *dec, size_t n, size_t pos, struct oauth_pairs *pairs,
                       const char **error_r)
{
    for (;;) {
        if (pos >= n)
            return sasl_fail(error_r, SASL_ERR_KVLIST);
        if (dec[pos] == KV_SEP)
            return pos + 1 == n ? 0 : sasl_fail(error_r, SASL_ERR_KVLIST);
        size_t key = pos;
        while (pos < n && char_is_alpha((unsigned char)dec[pos]))
            pos++;
        if (pos == key || pos >= n || dec[pos] != '=')
            return sasl_fail(error_r, SASL_ERR_KVLIST);
        size_t key_len = pos - key, value = ++pos;
        while (pos < n && dec[pos] != KV_SEP) {
            if (!is_value_char((unsigned char)dec[pos]))
                return sasl_fail(error_r, SASL_ERR_KVLIST);
            pos++;
        }
        if (pos >= n)
            return sasl_fail(error_r, SASL_ERR_KVLIST);
        dec[pos++] = '\0';
        if (store_pair(pairs, dec + key, key_len, dec + value) < 0)
            return sasl_fail(error_r, SASL_ERR_KVLIST);
    }
}

/* "auth=Bearer <token>": the scheme ignores case (RFC 7235), then 1*SP. */
static int bearer_token(const char *auth, const char **token_r, const char **error_r)
{
    if (auth == NULL)
        return sasl_fail(error_r, SASL_ERR_NO_TOKEN);
    if (strncasecmp(auth, "Bearer ", 7) != 0)
        return sasl_fail(error_r, SASL_ERR_BAD_TOKEN);
    auth += 7;
    while (*auth == ' ')
        auth++;
    if (!is_b64token(auth))
        return sasl_fail(error_r, SASL_ERR_BAD_TOKEN);
    *token_r = auth;
    return 0;
}

/* The user name and token both mechanisms need, into s->result. */
static int finish_oauth(struct sasl_server *s, const char *user, const char *auth,
                        const char **error_r)
{
    if (user == NULL)
        return sasl_fail(error_r, SASL_ERR_NO_USER);
    const char *error = sasl_check_username(user);
    if (error != NULL)
        return sasl_fail(error_r, error);
    const char *token;
    if (bearer_token(auth, &token, error_r) < 0)
        return SASL_FAIL;
    s->result.authcid = user;
    s->result.token = token;
    return SASL_DONE;
}

int sasl_oauthbearer_response(struct sasl_server *s, char *dec, size_t n, const char **error_r)
{
    struct oauth_pairs pairs = {NULL, NULL};
    char *user;
    size_t pos;
    if (parse_gs2_header(dec, n, &pos, &user, error_r) < 0)
        return SASL_FAIL;
    if (pos >= n || dec[pos] != KV_SEP)
        return sasl_fail(error_r, SASL_ERR_GS2);
    if (parse_pairs(dec, n, pos + 1, &pairs, error_r) < 0)
        return SASL_FAIL;
    return finish_oauth(s, user, pairs.auth, error_r);
}

int sasl_xoauth2_response(struct sasl_server *s, char *dec, size_t n, const char **error_r)
{
    struct oauth_pairs pairs = {NULL, NULL};
    if (parse_pairs(dec, n, 0, &pairs, error_r) < 0)
        return SASL_FAIL;
    return finish_oauth(s, pairs.user, pairs.auth, error_r);
}
