/* password-scheme - checking a plaintext password against a stored one.
 *
 * Stored values look like Dovecot's: "{SCHEME}data", or bare data in the
 * passdb's default scheme. Supported: PLAIN (CLEAR, CLEARTEXT), the crypt(3)
 * family through libxcrypt's crypt_r (CRYPT, DES-CRYPT, MD5-CRYPT,
 * SHA256-CRYPT, SHA512-CRYPT, BLF-CRYPT), SSHA/SSHA256/SSHA512 and
 * SHA/SHA256/SHA512 (base64). Comparisons take constant time for a given
 * stored value. Thread-safe: it may run on a worker thread. This module
 * does not generate hashes and does not log. */
#ifndef MR_PASSWORD_SCHEME_H
#define MR_PASSWORD_SCHEME_H

#include <stdbool.h>
#include <stddef.h>

enum password_verify_result {
    PASSWORD_MATCH,
    PASSWORD_NO_MATCH,
    PASSWORD_BAD_STORED,      /* unknown scheme or malformed stored value */
};

/* Check plain against stored. default_scheme applies when stored has no
 * "{SCHEME}" prefix. On PASSWORD_BAD_STORED *error_r is a static string. */
enum password_verify_result password_verify(const char *plain, const char *stored,
                                            const char *default_scheme,
                                            const char **error_r);

/* True when checking stored costs real CPU (the crypt family), so that the
 * caller should run password_verify() off the event loop. */
bool password_verify_is_slow(const char *stored, const char *default_scheme);

/* True when the scheme name (without braces, any case) is supported. */
bool password_scheme_is_known(const char *scheme);

/* Constant-time equality for a given b length: the running time depends on
 * blen only, never on where a and b differ. */
bool password_mem_eq(const void *a, size_t alen, const void *b, size_t blen);

#endif
