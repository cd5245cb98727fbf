/* passdb-file - Dovecot's passwd-file format, parsed from memory.
 *
 * One user per line: user:password:uid:gid:gecos:home:shell:extra fields.
 * Trailing columns may be left out. The extra fields (everything after the
 * seventh ':', colons included, so "hostip=2001:db8::1" works) are
 * space-separated "key=value" pairs or bare flags ("proxy", "nologin").
 * Blank lines and lines starting with '#' are ignored. A line without ':',
 * an empty user name or a NUL byte makes the whole file invalid: a file
 * caught half-written must not turn its users into "unknown" (which LMTP
 * would bounce). The first of duplicate users wins (counted, not an error).
 *
 * This header is what the fuzz target and the driver share; the driver
 * itself is reached through passdb.h. */
#ifndef MR_PASSDB_FILE_H
#define MR_PASSDB_FILE_H

#include <stddef.h>

#include "fields.h"

/* Columns point into the parsed text; NULL when the line has no such column. */
struct passwd_entry {
    const char *user;
    const char *password;
    const char *uid;
    const char *gid;
    const char *gecos;
    const char *home;
    const char *shell;
    const char *extra;
    unsigned line;
};

struct passwd_file;

/* Parse a whole file. name is used in errors only. NULL + *error_r (heap,
 * "NAME:LINE: what is wrong") when the text is invalid. */
struct passwd_file *passwd_file_parse(const char *data, size_t len, const char *name,
                                      char **error_r);
void passwd_file_free(struct passwd_file **pf);

/* Exact, case-sensitive match (the passdb lowercases names before asking). */
const struct passwd_entry *passwd_file_find(const struct passwd_file *pf, const char *user);
size_t passwd_file_count(const struct passwd_file *pf);
/* Number of duplicate user lines ignored, and the first such line (0: none). */
size_t passwd_file_duplicates(const struct passwd_file *pf, unsigned *first_line_r);

/* The entry's passdb fields: the extra fields, then "password" from the
 * second column when that is not empty (the column wins over an extra
 * "password=" field; the extra field serves when the column is empty). */
void passwd_entry_fields(const struct passwd_entry *e, struct fields *out);

/* How often (ms) a lookup may stat() the file to notice changes. Default
 * 1000; tests lower it. Not meant to be changed while lookups run. */
extern unsigned passwd_file_check_interval_ms;

#endif
