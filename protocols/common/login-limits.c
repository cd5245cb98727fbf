/* login-limits.c - small counting tables keyed by bytes (see login-limits.h). */
#include "login-limits.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

#define BUCKETS 1024
#define PENALTY_MAX_ENTRIES 65536
#define PENALTY_FORGET_MS (60 * 60 * 1000) /* an hour without failures */
#define PENALTY_FIRST_MS 2000
#define BACKEND_MAX_ENTRIES 4096

struct entry {
    struct entry *next;
    unsigned count;           /* userip: sessions; penalty: failures; backend: sessions waiting */
    uint64_t last_fail_ms;    /* penalty */
    uint64_t down_since_ms;   /* backend: first failure since it last worked; 0: up */
    size_t key_len;
    unsigned char key[];
};

struct table {
    struct entry *buckets[BUCKETS];
    size_t n;
};

static uint32_t key_hash(const unsigned char *key, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

/* The entry for key, created (zeroed) when create and absent; NULL otherwise. */
static struct entry *table_get(struct table *t, const void *key, size_t len, bool create)
{
    struct entry **head = &t->buckets[key_hash(key, len) % BUCKETS];
    for (struct entry *e = *head; e != NULL; e = e->next) {
        if (e->key_len == len && memcmp(e->key, key, len) == 0)
            return e;
    }
    if (!create)
        return NULL;
    struct entry *e = xcalloc(1, sizeof(*e) + len);
    e->key_len = len;
    memcpy(e->key, key, len);
    e->next = *head;
    *head = e;
    t->n++;
    return e;
}

typedef bool entry_pred(const struct entry *e, uint64_t arg);

/* Drop every entry the predicate selects. */
static void table_drop(struct table *t, entry_pred *drop, uint64_t arg)
{
    for (size_t b = 0; b < BUCKETS; b++) {
        for (struct entry **p = &t->buckets[b]; *p != NULL;) {
            struct entry *e = *p;
            if (drop(e, arg)) {
                *p = e->next;
                free(e);
                t->n--;
            } else {
                p = &e->next;
            }
        }
    }
}

static void table_remove(struct table *t, struct entry *e)
{
    struct entry **p = &t->buckets[key_hash(e->key, e->key_len) % BUCKETS];
    while (*p != e)
        p = &(*p)->next;
    *p = e->next;
    free(e);
    t->n--;
}

/* Keys */

struct ip_key {
    unsigned char family;
    unsigned char bytes[16];
};

/* IPv6 clients are counted per /64: one host owns a whole /64 easily. */
static struct ip_key ip_key(const struct addr *ip, bool v6_prefix)
{
    struct ip_key k;
    memset(&k, 0, sizeof(k));
    k.family = (unsigned char)ip->family;
    if (ip->family == AF_INET)
        memcpy(k.bytes, &ip->u.v4, 4);
    else if (ip->family == AF_INET6)
        memcpy(k.bytes, &ip->u.v6, v6_prefix ? 8 : 16);
    return k;
}

/* mail_max_userip_connections */

static struct table userips;
static pthread_mutex_t userips_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t userip_key(unsigned char *out, size_t max, const char *user, const struct addr *ip)
{
    struct ip_key k = ip_key(ip, false);
    size_t n = strlen(user);
    if (n > max - sizeof(k))
        n = max - sizeof(k);
    memcpy(out, &k, sizeof(k));
    memcpy(out + sizeof(k), user, n);
    return sizeof(k) + n;
}

bool userip_acquire(const char *user, const struct addr *ip, unsigned limit)
{
    if (limit == 0)
        return true;
    unsigned char key[512];
    size_t len = userip_key(key, sizeof(key), user, ip);
    pthread_mutex_lock(&userips_lock);
    struct entry *e = table_get(&userips, key, len, true);
    bool ok = e->count < limit;
    if (ok)
        e->count++;
    else if (e->count == 0)
        table_remove(&userips, e);
    pthread_mutex_unlock(&userips_lock);
    return ok;
}

void userip_release(const char *user, const struct addr *ip)
{
    unsigned char key[512];
    size_t len = userip_key(key, sizeof(key), user, ip);
    pthread_mutex_lock(&userips_lock);
    struct entry *e = table_get(&userips, key, len, false);
    if (e != NULL && --e->count == 0)
        table_remove(&userips, e);
    pthread_mutex_unlock(&userips_lock);
}

unsigned userip_count(const char *user, const struct addr *ip)
{
    unsigned char key[512];
    size_t len = userip_key(key, sizeof(key), user, ip);
    pthread_mutex_lock(&userips_lock);
    struct entry *e = table_get(&userips, key, len, false);
    unsigned n = e != NULL ? e->count : 0;
    pthread_mutex_unlock(&userips_lock);
    return n;
}

/* Failure penalty */

static struct table penalties;
static pthread_mutex_t penalties_lock = PTHREAD_MUTEX_INITIALIZER;

static bool penalty_forgotten(const struct entry *e, uint64_t now_ms)
{
    return now_ms - e->last_fail_ms > PENALTY_FORGET_MS;
}

static bool is_entry_any(const struct entry *e, uint64_t unused)
{
    (void)e;
    (void)unused;
    return true;
}

uint64_t penalty_delay_ms(const struct addr *ip, uint64_t now_ms, uint64_t max_ms)
{
    struct ip_key k = ip_key(ip, true);
    uint64_t delay = 0;
    if (max_ms == 0)
        return 0;
    pthread_mutex_lock(&penalties_lock);
    struct entry *e = table_get(&penalties, &k, sizeof(k), false);
    if (e != NULL && e->count > 0) {
        unsigned shift = e->count - 1 < 16 ? e->count - 1 : 16;
        uint64_t full = (uint64_t)PENALTY_FIRST_MS << shift;
        if (full > max_ms)
            full = max_ms;
        uint64_t since = now_ms - e->last_fail_ms;
        delay = since < full ? full - since : 0;
    }
    pthread_mutex_unlock(&penalties_lock);
    return delay;
}

void penalty_failed(const struct addr *ip, uint64_t now_ms)
{
    struct ip_key k = ip_key(ip, true);
    pthread_mutex_lock(&penalties_lock);
    if (penalties.n >= PENALTY_MAX_ENTRIES)
        table_drop(&penalties, penalty_forgotten, now_ms);
    if (penalties.n >= PENALTY_MAX_ENTRIES)
        table_drop(&penalties, is_entry_any, now_ms); /* a flood of addresses: start over */
    struct entry *e = table_get(&penalties, &k, sizeof(k), true);
    if (e->count < 32)
        e->count++;
    e->last_fail_ms = now_ms;
    pthread_mutex_unlock(&penalties_lock);
}

void penalty_clear(const struct addr *ip)
{
    struct ip_key k = ip_key(ip, true);
    pthread_mutex_lock(&penalties_lock);
    struct entry *e = table_get(&penalties, &k, sizeof(k), false);
    if (e != NULL)
        table_remove(&penalties, e);
    pthread_mutex_unlock(&penalties_lock);
}

/* Backend health (per worker thread: no lock) */

static __thread struct table *backends;

struct backend_key {
    struct ip_key ip;
    uint16_t port;
};

static struct entry *backend_entry(const struct addr *backend, bool create)
{
    struct backend_key k;
    memset(&k, 0, sizeof(k));
    k.ip = ip_key(backend, false);
    k.port = backend->port;
    if (backends == NULL) {
        if (!create)
            return NULL;
        backends = xcalloc(1, sizeof(*backends));
    }
    return table_get(backends, &k, sizeof(k), create);
}

static bool backend_idle(const struct entry *e, uint64_t unused)
{
    (void)unused;
    return e->count == 0;
}

bool backend_host_down(const struct addr *backend, uint64_t now_ms, uint64_t after_ms)
{
    struct entry *e = backend_entry(backend, false);
    return after_ms > 0 && e != NULL && e->count > 0 && e->down_since_ms != 0 &&
           now_ms - e->down_since_ms > after_ms;
}

void backend_host_wait(const struct addr *backend)
{
    if (backends != NULL && backends->n >= BACKEND_MAX_ENTRIES)
        table_drop(backends, backend_idle, 0);
    backend_entry(backend, true)->count++;
}

void backend_host_unwait(const struct addr *backend)
{
    struct entry *e = backend_entry(backend, false);
    if (e != NULL && e->count > 0)
        e->count--;
}

void backend_host_result(const struct addr *backend, bool ok, uint64_t now_ms)
{
    struct entry *e = backend_entry(backend, false);
    if (e == NULL)
        return;
    if (ok)
        e->down_since_ms = 0;
    else if (e->down_since_ms == 0)
        e->down_since_ms = now_ms;
}

void backend_hosts_free(void)
{
    if (backends == NULL)
        return;
    table_drop(backends, is_entry_any, 0);
    free(backends);
    backends = NULL;
}
