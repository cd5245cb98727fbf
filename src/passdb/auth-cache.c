/* auth-cache - see auth-cache.h. A chained hash table plus a doubly linked
 * LRU list under one mutex. Keys carry user names chosen by whoever sends
 * mail, and unknown users are inserted too, so the hash is keyed (SipHash
 * with a random key per cache): nobody can aim many names at one bucket. */
#include "auth-cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "sid.h"

/* What one heap block costs beyond its contents, for the byte estimate. */
#define ALLOC_OVERHEAD 16

struct cache_entry {
    struct cache_entry *hash_next;
    struct cache_entry *newer, *older;  /* LRU list */
    uint64_t hash;
    uint64_t created_ms;
    size_t bytes;
    bool positive;
    char *key;
    char *user;
    struct fields fields;
};

struct auth_cache {
    pthread_mutex_t lock;
    uint64_t max_bytes, ttl_ms, negative_ttl_ms;
    uint64_t sip_k0, sip_k1;
    struct cache_entry **buckets;
    size_t n_buckets;                   /* a power of two */
    struct cache_entry *newest, *oldest;
    struct auth_cache_stats stats;

    /* shared caches only (auth_cache_acquire), under registry_lock */
    const void *owner;
    unsigned refs;
    struct auth_cache *reg_next;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct auth_cache *registry;

/* ---- SipHash-2-4 ---- */

static uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

struct sip {
    uint64_t v0, v1, v2, v3;
};

static void sip_round(struct sip *s)
{
    s->v0 += s->v1;
    s->v1 = rotl(s->v1, 13) ^ s->v0;
    s->v0 = rotl(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = rotl(s->v3, 16) ^ s->v2;
    s->v0 += s->v3;
    s->v3 = rotl(s->v3, 21) ^ s->v0;
    s->v2 += s->v1;
    s->v1 = rotl(s->v1, 17) ^ s->v2;
    s->v2 = rotl(s->v2, 32);
}

static void sip_absorb(struct sip *s, uint64_t m)
{
    s->v3 ^= m;
    sip_round(s);
    sip_round(s);
    s->v0 ^= m;
}

static uint64_t load_le64(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint64_t siphash(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
    const unsigned char *p = data;
    struct sip s = {
        k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL,
        k0 ^ 0x6c7967656e657261ULL, k1 ^ 0x7465646279746573ULL,
    };
    size_t i = 0;
    for (; i + 8 <= len; i += 8)
        sip_absorb(&s, load_le64(p + i, 8));
    sip_absorb(&s, load_le64(p + i, len - i) | ((uint64_t)len << 56));
    s.v2 ^= 0xff;
    for (int r = 0; r < 4; r++)
        sip_round(&s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

/* ---- entries ---- */

static size_t str_cost(const char *s)
{
    return s != NULL ? strlen(s) + 1 + ALLOC_OVERHEAD : 0;
}

static size_t entry_cost(const struct cache_entry *e)
{
    size_t n = sizeof(*e) + ALLOC_OVERHEAD + str_cost(e->key) + str_cost(e->user);
    if (e->fields.n > 0)
        n += e->fields.cap * sizeof(struct field) + ALLOC_OVERHEAD;
    for (size_t i = 0; i < e->fields.n; i++)
        n += str_cost(e->fields.v[i].key) + str_cost(e->fields.v[i].value);
    return n;
}

static void entry_free(struct cache_entry *e)
{
    fields_free(&e->fields); /* wipes values: one may be a stored password */
    free(e->key);
    free(e->user);
    free(e);
}

static bool entry_is_fresh(const struct auth_cache *c, const struct cache_entry *e,
                           uint64_t now_ms)
{
    uint64_t ttl = e->positive ? c->ttl_ms : c->negative_ttl_ms;
    return now_ms >= e->created_ms && now_ms - e->created_ms < ttl;
}

static void lru_unlink(struct auth_cache *c, struct cache_entry *e)
{
    if (e->newer != NULL)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    if (e->older != NULL)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push_newest(struct auth_cache *c, struct cache_entry *e)
{
    e->older = c->newest;
    e->newer = NULL;
    if (c->newest != NULL)
        c->newest->newer = e;
    c->newest = e;
    if (c->oldest == NULL)
        c->oldest = e;
}

/* ---- the table ---- */

static struct cache_entry **bucket_of(const struct auth_cache *c, uint64_t hash)
{
    return &c->buckets[hash & (c->n_buckets - 1)];
}

/* The link pointing at the entry with this key (or at the chain's NULL). */
static struct cache_entry **find_link(const struct auth_cache *c, const char *key,
                                      uint64_t hash)
{
    struct cache_entry **link = bucket_of(c, hash);
    while (*link != NULL && ((*link)->hash != hash || strcmp((*link)->key, key) != 0))
        link = &(*link)->hash_next;
    return link;
}

static void grow(struct auth_cache *c)
{
    size_t old_n = c->n_buckets;
    struct cache_entry **old = c->buckets;
    c->n_buckets = old_n * 2;
    c->buckets = xcalloc(c->n_buckets, sizeof(*c->buckets));
    for (size_t i = 0; i < old_n; i++) {
        while (old[i] != NULL) {
            struct cache_entry *e = old[i];
            old[i] = e->hash_next;
            struct cache_entry **b = bucket_of(c, e->hash);
            e->hash_next = *b;
            *b = e;
        }
    }
    free(old);
}

/* Unlink *link's entry from both structures and free it. */
static void remove_at(struct auth_cache *c, struct cache_entry **link)
{
    struct cache_entry *e = *link;
    *link = e->hash_next;
    lru_unlink(c, e);
    c->stats.entries--;
    c->stats.bytes -= e->bytes;
    entry_free(e);
}

static void remove_entry(struct auth_cache *c, struct cache_entry *e)
{
    remove_at(c, find_link(c, e->key, e->hash));
}

static void evict_until_fits(struct auth_cache *c)
{
    while (c->stats.bytes > c->max_bytes && c->oldest != NULL) {
        remove_entry(c, c->oldest);
        c->stats.evictions++;
    }
}

/* ---- public ---- */

struct auth_cache *auth_cache_new(uint64_t max_bytes, uint64_t ttl_ms, uint64_t negative_ttl_ms)
{
    struct auth_cache *c = xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    c->max_bytes = max_bytes;
    c->ttl_ms = ttl_ms;
    c->negative_ttl_ms = negative_ttl_ms;
    c->sip_k0 = random_u64();
    c->sip_k1 = random_u64();
    c->n_buckets = 64;
    c->buckets = xcalloc(c->n_buckets, sizeof(*c->buckets));
    return c;
}

void auth_cache_free(struct auth_cache **cp)
{
    struct auth_cache *c = *cp;
    if (c == NULL)
        return;
    *cp = NULL;
    auth_cache_flush(c, NULL);
    free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

enum auth_cache_result auth_cache_lookup(struct auth_cache *c, const char *key,
                                         uint64_t now_ms, bool allow_stale, bool *positive_r,
                                         struct fields *fields_out)
{
    uint64_t hash = siphash(c->sip_k0, c->sip_k1, key, strlen(key));
    enum auth_cache_result result = AUTH_CACHE_MISS;
    pthread_mutex_lock(&c->lock);
    struct cache_entry *e = *find_link(c, key, hash);
    if (e != NULL) {
        result = entry_is_fresh(c, e, now_ms) ? AUTH_CACHE_FOUND : AUTH_CACHE_STALE;
        if (result == AUTH_CACHE_FOUND || allow_stale) {
            *positive_r = e->positive;
            if (e->positive)
                fields_copy(fields_out, &e->fields);
            lru_unlink(c, e);
            lru_push_newest(c, e);
        }
    }
    if (result == AUTH_CACHE_FOUND)
        c->stats.hits++;
    else if (!allow_stale)
        c->stats.misses++;
    pthread_mutex_unlock(&c->lock);
    return result;
}

static struct cache_entry *entry_new(const char *key, const char *user, bool positive,
                                     const struct fields *fields, uint64_t now_ms)
{
    struct cache_entry *e = xcalloc(1, sizeof(*e));
    e->key = xstrdup(key);
    e->user = xstrdup(user != NULL ? user : "");
    e->positive = positive;
    e->created_ms = now_ms;
    if (positive && fields != NULL)
        fields_copy(&e->fields, fields);
    e->bytes = entry_cost(e);
    return e;
}

void auth_cache_insert(struct auth_cache *c, const char *key, const char *user, bool positive,
                       const struct fields *fields, uint64_t now_ms)
{
    if (!positive && c->negative_ttl_ms == 0)
        return;
    /* Built outside the lock: copying fields is the slow part. */
    struct cache_entry *e = entry_new(key, user, positive, fields, now_ms);
    if (e->bytes > c->max_bytes) {
        entry_free(e);
        return;
    }
    e->hash = siphash(c->sip_k0, c->sip_k1, key, strlen(key));
    pthread_mutex_lock(&c->lock);
    struct cache_entry **link = find_link(c, key, e->hash);
    if (*link != NULL)
        remove_at(c, link);
    if (c->stats.entries >= c->n_buckets)
        grow(c);
    struct cache_entry **b = bucket_of(c, e->hash);
    e->hash_next = *b;
    *b = e;
    lru_push_newest(c, e);
    c->stats.entries++;
    c->stats.bytes += e->bytes;
    c->stats.inserts++;
    evict_until_fits(c);
    pthread_mutex_unlock(&c->lock);
}

size_t auth_cache_flush(struct auth_cache *c, const char *user)
{
    size_t removed = 0;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n_buckets; i++) {
        struct cache_entry **link = &c->buckets[i];
        while (*link != NULL) {
            if (user == NULL || strcmp((*link)->user, user) == 0) {
                remove_at(c, link);
                removed++;
            } else {
                link = &(*link)->hash_next;
            }
        }
    }
    pthread_mutex_unlock(&c->lock);
    return removed;
}

void auth_cache_get_stats(struct auth_cache *c, struct auth_cache_stats *stats_r)
{
    pthread_mutex_lock(&c->lock);
    *stats_r = c->stats;
    pthread_mutex_unlock(&c->lock);
}

/* ---- sharing ---- */

struct auth_cache *auth_cache_acquire(const void *owner, uint64_t max_bytes, uint64_t ttl_ms,
                                      uint64_t negative_ttl_ms)
{
    pthread_mutex_lock(&registry_lock);
    struct auth_cache *c = registry;
    while (c != NULL && c->owner != owner)
        c = c->reg_next;
    if (c == NULL) {
        c = auth_cache_new(max_bytes, ttl_ms, negative_ttl_ms);
        c->owner = owner;
        c->reg_next = registry;
        registry = c;
    }
    c->refs++;
    pthread_mutex_unlock(&registry_lock);
    return c;
}

void auth_cache_release(struct auth_cache **cp)
{
    struct auth_cache *c = *cp;
    if (c == NULL)
        return;
    *cp = NULL;
    pthread_mutex_lock(&registry_lock);
    bool last = --c->refs == 0;
    if (last) {
        struct auth_cache **link = &registry;
        while (*link != c)
            link = &(*link)->reg_next;
        *link = c->reg_next;
    }
    pthread_mutex_unlock(&registry_lock);
    if (last)
        auth_cache_free(&c);
}

size_t auth_cache_flush_all(const char *user)
{
    size_t removed = 0;
    pthread_mutex_lock(&registry_lock);
    for (struct auth_cache *c = registry; c != NULL; c = c->reg_next)
        removed += auth_cache_flush(c, user);
    pthread_mutex_unlock(&registry_lock);
    return removed;
}
