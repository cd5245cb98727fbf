/* strmap - a string-keyed hash map (open addressing, linear probing).
 *
 * Why here: the passwd-file driver must find one user among 100k quickly,
 * and remember parsed files by path. Keys are not copied: they must outlive
 * the map (they point into the file's text). There is no removal; maps are
 * built once and freed whole. Not a general container for the whole tree. */
#ifndef MR_STRMAP_H
#define MR_STRMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct strmap_slot {
    const char *key;          /* NULL: empty slot */
    void *value;
    uint64_t hash;
};

struct strmap {
    struct strmap_slot *slots;
    size_t cap;               /* a power of two, or 0 */
    size_t n;
};

#define STRMAP_INIT {NULL, 0, 0}

/* Add key -> value. Returns false (and changes nothing) when the key exists. */
bool strmap_add(struct strmap *m, const char *key, void *value);
/* The value, or NULL when the key is absent. */
void *strmap_get(const struct strmap *m, const char *key);
void strmap_free(struct strmap *m);

#endif
