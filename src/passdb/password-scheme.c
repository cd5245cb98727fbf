/* password-scheme - see password-scheme.h. Each scheme is one verify
 * function in a table; the table also says which schemes are slow (the
 * crypt family is slow by design) so the passdb can move them off-loop. */
#include "password-scheme.h"

#include <crypt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/crypto.h>

#include "buf.h"
#include "codec.h"
#include "mem.h"

#define SCHEME_NAME_MAX 32

typedef enum password_verify_result verify_fn(const char *plain, const char *data,
                                              int digest, const char **error_r);

struct scheme {
    const char *name;
    verify_fn *verify;
    int digest;               /* gnutls_digest_algorithm_t for the SHA schemes */
    bool slow;
};

bool password_mem_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    const unsigned char *pa = a, *pb = b;
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < blen; i++)
        diff |= pb[i] ^ (i < alen ? pa[i] : 0);
    return diff == 0;
}

static enum password_verify_result match_if(bool equal)
{
    return equal ? PASSWORD_MATCH : PASSWORD_NO_MATCH;
}

static enum password_verify_result verify_plain(const char *plain, const char *data, int digest,
                                                const char **error_r)
{
    (void)digest;
    (void)error_r;
    return match_if(password_mem_eq(plain, strlen(plain), data, strlen(data)));
}

/* crypt_r() picks the algorithm from the stored hash's own prefix ($6$,
 * $2y$, ...), so all crypt schemes share this. Its scratch area is large
 * (tens of kB) and holds key material: heap, wiped after use. */
static enum password_verify_result verify_crypt(const char *plain, const char *data,
                                                int digest, const char **error_r)
{
    (void)digest;
    (void)error_r;
    struct crypt_data *cd = xcalloc(1, sizeof(*cd));
    const char *hash = crypt_r(plain, data, cd);
    /* libxcrypt returns "*0"/"*1" (or NULL) for a setting it cannot use: a
     * locked account ("!", "*") is simply no match. */
    bool equal = hash != NULL && hash[0] != '*' &&
                 password_mem_eq(hash, strlen(hash), data, strlen(data));
    mem_wipe(cd, sizeof(*cd));
    free(cd);
    return match_if(equal);
}

/* SHA family: base64(H(plain || salt) || salt); salt empty for unsalted. */
static enum password_verify_result verify_sha(const char *plain, const char *data, int digest,
                                              bool salted, const char **error_r)
{
    struct buf raw = BUF_INIT;
    size_t dlen = gnutls_hash_get_len((gnutls_digest_algorithm_t)digest);
    unsigned char computed[64];
    if (!base64_decode(&raw, data, strlen(data)) || buf_used(&raw) < dlen ||
        (!salted && buf_used(&raw) != dlen) || dlen > sizeof(computed)) {
        buf_free(&raw);
        *error_r = "malformed SHA/SSHA password hash";
        return PASSWORD_BAD_STORED;
    }
    size_t plen = strlen(plain), slen = buf_used(&raw) - dlen;
    char *input = xmalloc(plen + slen);
    memcpy(input, plain, plen);
    memcpy(input + plen, buf_ptr(&raw) + dlen, slen);
    int ret = gnutls_hash_fast((gnutls_digest_algorithm_t)digest, input, plen + slen, computed);
    bool equal = ret == 0 && password_mem_eq(computed, dlen, buf_ptr(&raw), dlen);
    mem_wipe(input, plen + slen);
    mem_wipe(computed, sizeof(computed));
    free(input);
    buf_free_wipe(&raw);
    return match_if(equal);
}

static enum password_verify_result verify_ssha(const char *plain, const char *data, int digest,
                                               const char **error_r)
{
    return verify_sha(plain, data, digest, true, error_r);
}

static enum password_verify_result verify_unsalted(const char *plain, const char *data,
                                                   int digest, const char **error_r)
{
    return verify_sha(plain, data, digest, false, error_r);
}

static const struct scheme schemes[] = {
    {"PLAIN", verify_plain, 0, false},
    {"CLEAR", verify_plain, 0, false},
    {"CLEARTEXT", verify_plain, 0, false},
    {"CRYPT", verify_crypt, 0, true},
    {"DES-CRYPT", verify_crypt, 0, true},
    {"MD5-CRYPT", verify_crypt, 0, true},
    {"SHA256-CRYPT", verify_crypt, 0, true},
    {"SHA512-CRYPT", verify_crypt, 0, true},
    {"BLF-CRYPT", verify_crypt, 0, true},
    {"SSHA", verify_ssha, GNUTLS_DIG_SHA1, false},
    {"SSHA256", verify_ssha, GNUTLS_DIG_SHA256, false},
    {"SSHA512", verify_ssha, GNUTLS_DIG_SHA512, false},
    {"SHA", verify_unsalted, GNUTLS_DIG_SHA1, false},
    {"SHA1", verify_unsalted, GNUTLS_DIG_SHA1, false},
    {"SHA256", verify_unsalted, GNUTLS_DIG_SHA256, false},
    {"SHA512", verify_unsalted, GNUTLS_DIG_SHA512, false},
};

static const struct scheme *find_scheme(const char *name, size_t len)
{
    for (size_t i = 0; i < ARRAY_LEN(schemes); i++) {
        if (strlen(schemes[i].name) == len && strncasecmp(schemes[i].name, name, len) == 0)
            return &schemes[i];
    }
    return NULL;
}

bool password_scheme_is_known(const char *scheme)
{
    return find_scheme(scheme, strlen(scheme)) != NULL;
}

/* Split "{SCHEME}data"; without a prefix the default scheme applies. */
static const struct scheme *split_stored(const char *stored, const char *default_scheme,
                                         const char **data_r)
{
    const char *close = stored[0] == '{' ? strchr(stored, '}') : NULL;
    if (close != NULL && (size_t)(close - stored) <= SCHEME_NAME_MAX) {
        *data_r = close + 1;
        return find_scheme(stored + 1, (size_t)(close - stored - 1));
    }
    *data_r = stored;
    return find_scheme(default_scheme, strlen(default_scheme));
}

enum password_verify_result password_verify(const char *plain, const char *stored,
                                            const char *default_scheme,
                                            const char **error_r)
{
    const char *data;
    const struct scheme *s = split_stored(stored, default_scheme, &data);
    if (s == NULL) {
        *error_r = "unknown password scheme";
        return PASSWORD_BAD_STORED;
    }
    return s->verify(plain, data, s->digest, error_r);
}

bool password_verify_is_slow(const char *stored, const char *default_scheme)
{
    const char *data;
    const struct scheme *s = split_stored(stored, default_scheme, &data);
    return s != NULL && s->slow;
}
