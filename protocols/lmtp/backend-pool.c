/* backend-pool.c - idle backend connections per target, and the memory of
 * recent connect failures ("fail fast"). One pool per worker.
 *
 * Entries are kept in a small hash table keyed by the target key; an entry
 * holds the idle connections (most recently used first) and the time of
 * the last connect failure. */
#include <stdlib.h>
#include <string.h>

#include "backend-private.h"
#include "log.h"
#include "mem.h"
#include "tls.h"

#define POOL_BUCKETS 256

struct pool_entry {
    struct pool_entry *next;
    char *key;
    struct backend **idle;
    size_t n_idle;
    uint64_t last_failure_ms;
};

struct backend_pool {
    struct loop *loop;
    struct pool_entry *buckets[POOL_BUCKETS];
    unsigned max_idle;
    uint64_t idle_ms;
    struct backend *limbo;    /* released, waiting for their RSET reply */
};

static unsigned hash_key(const char *key)
{
    unsigned h = 2166136261u;
    for (; *key != '\0'; key++)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h % POOL_BUCKETS;
}

static struct pool_entry *entry_get(struct backend_pool *p, const char *key, bool create)
{
    unsigned h = hash_key(key);
    for (struct pool_entry *e = p->buckets[h]; e != NULL; e = e->next) {
        if (strcmp(e->key, key) == 0)
            return e;
    }
    if (!create)
        return NULL;
    struct pool_entry *e = xcalloc(1, sizeof(*e));
    e->key = xstrdup(key);
    e->next = p->buckets[h];
    p->buckets[h] = e;
    return e;
}

struct backend_pool *backend_pool_new(struct loop *loop)
{
    struct backend_pool *p = xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->max_idle = 64;
    p->idle_ms = 30000;
    return p;
}

void backend_pool_set_limits(struct backend_pool *p, unsigned max_idle, uint64_t idle_ms)
{
    p->max_idle = max_idle;
    p->idle_ms = idle_ms;
}

void backend_pool_hold(struct backend_pool *p, struct backend *b)
{
    b->in_limbo = true;
    b->limbo_prev = NULL;
    b->limbo_next = p->limbo;
    if (p->limbo != NULL)
        p->limbo->limbo_prev = b;
    p->limbo = b;
}

void backend_pool_unhold(struct backend_pool *p, struct backend *b)
{
    if (!b->in_limbo)
        return;
    b->in_limbo = false;
    if (b->limbo_prev != NULL)
        b->limbo_prev->limbo_next = b->limbo_next;
    else
        p->limbo = b->limbo_next;
    if (b->limbo_next != NULL)
        b->limbo_next->limbo_prev = b->limbo_prev;
}

void backend_pool_free(struct backend_pool **pp)
{
    struct backend_pool *p = *pp;
    if (p == NULL)
        return;
    *pp = NULL;
    while (p->limbo != NULL) {
        struct backend *b = p->limbo;
        backend_pool_unhold(p, b);
        b->released = true;
        if (b->busy == 0)
            backend_pool_free_backend(b);
    }
    for (unsigned i = 0; i < POOL_BUCKETS; i++) {
        struct pool_entry *e = p->buckets[i];
        while (e != NULL) {
            struct pool_entry *next = e->next;
            for (size_t k = 0; k < e->n_idle; k++) {
                e->idle[k]->idle = false;
                backend_pool_free_backend(e->idle[k]);
            }
            free(e->idle);
            free(e->key);
            free(e);
            e = next;
        }
    }
    free(p);
}

struct backend *backend_pool_take(struct backend_pool *p, const char *key)
{
    struct pool_entry *e = entry_get(p, key, false);
    if (e == NULL || e->n_idle == 0)
        return NULL;
    struct backend *b = e->idle[--e->n_idle];
    b->idle = false;
    timer_stop(b->timer);
    return b;
}

void backend_pool_put(struct backend_pool *p, struct backend *b)
{
    struct pool_entry *e = entry_get(p, b->t.key, true);
    if (e->n_idle >= p->max_idle || p->max_idle == 0) {
        b->released = true;
        if (b->busy == 0)
            backend_pool_free_backend(b);
        return;
    }
    e->idle = xrealloc(e->idle, (e->n_idle + 1) * sizeof(*e->idle));
    e->idle[e->n_idle++] = b;
    b->idle = true;
    b->released = false;
    timer_start(b->timer, p->idle_ms);
}

void backend_pool_drop(struct backend_pool *p, struct backend *b)
{
    struct pool_entry *e = entry_get(p, b->t.key, false);
    for (size_t i = 0; e != NULL && i < e->n_idle; i++) {
        if (e->idle[i] == b) {
            memmove(&e->idle[i], &e->idle[i + 1], (e->n_idle - i - 1) * sizeof(*e->idle));
            e->n_idle--;
            break;
        }
    }
    b->idle = false;
    b->released = true;
    if (b->busy == 0)
        backend_pool_free_backend(b);
}

void backend_pool_note_failure(struct backend_pool *p, const char *key)
{
    entry_get(p, key, true)->last_failure_ms = loop_now_ms(p->loop);
}

bool backend_pool_failing(struct backend_pool *p, const char *key, uint64_t ms)
{
    struct pool_entry *e = entry_get(p, key, false);
    if (e == NULL || e->last_failure_ms == 0 || ms == 0)
        return false;
    return loop_now_ms(p->loop) - e->last_failure_ms < ms;
}

void backend_pool_free_backend(struct backend *b)
{
    if (b->in_limbo && b->pool != NULL)
        backend_pool_unhold(b->pool, b);
    loop_defer_cancel(b->loop, backend_fail_late_waiters, b);
    timer_free(&b->timer);
    stream_destroy(&b->s);
    stream_connect_abort(&b->conn);
    smtp_reply_free(&b->reply);
    smtp_reply_free(&b->caps);
    if (b->tls_client != NULL)
        tls_client_unref(&b->tls_client);
    for (size_t i = 0; i < b->n_queued; i++)
        free(b->queued[i].line);
    free(b->queued);
    free(b->waiting);
    free(b->xclient_sig);
    free(b);
}
