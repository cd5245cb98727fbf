/* fuzz-passwd-file - the passwd-file parser on arbitrary bytes.
 *
 * Parses the input, then exercises what a lookup does with a parsed file:
 * finds the user named on the first line (and one that is unlikely to be
 * there) and turns the entry's columns and extra fields into passdb fields. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fields.h"
#include "mem.h"
#include "passdb-file.h"

static void exercise_user(const struct passwd_file *pf, const char *user)
{
    const struct passwd_entry *e = passwd_file_find(pf, user);
    if (e == NULL)
        return;
    struct fields f = FIELDS_INIT;
    passwd_entry_fields(e, &f);
    /* The parser never yields a field without a name. */
    for (size_t i = 0; i < f.n; i++) {
        if (f.v[i].key[0] == '\0')
            abort();
    }
    fields_free(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *error = NULL;
    struct passwd_file *pf = passwd_file_parse((const char *)data, size, "fuzz", &error);
    if (pf == NULL) {
        if (error == NULL)
            abort(); /* a failure always says why */
        free(error);
        return 0;
    }
    /* The input is not NUL-terminated: scan it by length. */
    size_t first_len = 0;
    while (first_len < size && data[first_len] != ':' && data[first_len] != '\n')
        first_len++;
    char *first = xstrndup((const char *)data, first_len);
    exercise_user(pf, first);
    exercise_user(pf, "nobody@example.com");
    free(first);
    unsigned dup_line;
    (void)passwd_file_duplicates(pf, &dup_line);
    (void)passwd_file_count(pf);
    passwd_file_free(&pf);
    return 0;
}
