/* fields - an ordered list of key[=value] pairs: passdb extra fields.
 *
 * A field may be present without a value (value == NULL), which is how
 * boolean flags such as "proxy" or "nologin" appear in a passwd-file.
 * Setting a key that exists replaces its value in place (last one wins),
 * as Dovecot does. Keys are compared case-sensitively. */
#ifndef MR_FIELDS_H
#define MR_FIELDS_H

#include <stdbool.h>
#include <stddef.h>

struct field {
    char *key;
    char *value; /* NULL: present without a value */
};

struct fields {
    struct field *v;
    size_t n;
    size_t cap;
};

#define FIELDS_INIT {NULL, 0, 0}

void fields_set(struct fields *f, const char *key, const char *value);
void fields_setn(struct fields *f, const char *key, size_t keylen, const char *value,
                 size_t valuelen);
/* Parse "key=value" or "key" (a value may contain '='). */
void fields_add_pair(struct fields *f, const char *pair);
void fields_remove(struct fields *f, const char *key);
bool fields_has(const struct fields *f, const char *key);
/* Value or NULL (also NULL when present without a value). */
const char *fields_get(const struct fields *f, const char *key);
/* Value, "" when present without one, NULL when absent. */
const char *fields_get_str(const struct fields *f, const char *key);
void fields_copy(struct fields *dst, const struct fields *src);
void fields_clear(struct fields *f);
/* Free keys and values; values are wiped first (they may hold passwords). */
void fields_free(struct fields *f);

#endif
