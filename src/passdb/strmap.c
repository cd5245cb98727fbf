/* strmap - see strmap.h. FNV-1a hashing is enough: keys come from the
 * admin's files, so nobody outside can choose them to force collisions
 * (lookups with attacker-chosen names only probe, they never insert). */
#include "strmap.h"

#include <stdlib.h>
#include <string.h>

#include "mem.h"

static uint64_t hash_str(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* The slot holding key, or the empty slot where it would go. */
static struct strmap_slot *probe(const struct strmap *m, const char *key, uint64_t hash)
{
    size_t mask = m->cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        struct strmap_slot *s = &m->slots[i];
        if (s->key == NULL || (s->hash == hash && strcmp(s->key, key) == 0))
            return s;
    }
}

static void grow(struct strmap *m)
{
    struct strmap old = *m;
    m->cap = old.cap ? old.cap * 2 : 16;
    m->slots = xcalloc(m->cap, sizeof(*m->slots));
    for (size_t i = 0; i < old.cap; i++) {
        if (old.slots[i].key != NULL)
            *probe(m, old.slots[i].key, old.slots[i].hash) = old.slots[i];
    }
    free(old.slots);
}

bool strmap_add(struct strmap *m, const char *key, void *value)
{
    /* Keep the load factor at or below 1/2 so probes stay short. */
    if ((m->n + 1) * 2 > m->cap)
        grow(m);
    uint64_t hash = hash_str(key);
    struct strmap_slot *s = probe(m, key, hash);
    if (s->key != NULL)
        return false;
    s->key = key;
    s->value = value;
    s->hash = hash;
    m->n++;
    return true;
}

void *strmap_get(const struct strmap *m, const char *key)
{
    if (m->cap == 0)
        return NULL;
    struct strmap_slot *s = probe(m, key, hash_str(key));
    return s->key != NULL ? s->value : NULL;
}

void strmap_free(struct strmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}
