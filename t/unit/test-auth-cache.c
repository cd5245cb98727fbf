/* test-auth-cache - the shared auth cache on its own (TTLs, negative
 * entries, LRU eviction by bytes, flush, sharing, threads), then hooked
 * into passdb.c with a passwd-file passdb: hits that do not read the file,
 * expiry, stale entries serving while the passdb fails, and a fresh lookup
 * when a cached password does not match. */
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth-cache.h"
#include "loop.h"
#include "mem.h"
#include "passdb.h"
#include "test.h"

/* The cache alone */

static void put(struct auth_cache *c, const char *key, const char *user, const char *host,
                uint64_t now)
{
    struct fields f = FIELDS_INIT;
    if (host != NULL)
        fields_set(&f, "host", host);
    fields_set(&f, "proxy", NULL);
    auth_cache_insert(c, key, user, host != NULL, &f, now);
    fields_free(&f);
}

/* The host field of a fresh positive entry; "-" for a negative one, NULL
 * on a miss (or a stale entry, unless allow_stale). */
static char *get(struct auth_cache *c, const char *key, uint64_t now, bool allow_stale)
{
    struct fields f = FIELDS_INIT;
    bool positive = false;
    enum auth_cache_result r = auth_cache_lookup(c, key, now, allow_stale, &positive, &f);
    char *out = NULL;
    if (r == AUTH_CACHE_FOUND || (r == AUTH_CACHE_STALE && allow_stale))
        out = xstrdup(positive ? fields_get(&f, "host") : "-");
    fields_free(&f);
    return out;
}

static void check_get(struct auth_cache *c, const char *key, uint64_t now, bool stale,
                      const char *want)
{
    char *got = get(c, key, now, stale);
    CHECK_STR(got, want);
    free(got);
}

static void test_ttl(void)
{
    struct auth_cache *c = auth_cache_new(1 << 20, 1000, 200);
    put(c, "k1", "a@x", "10.0.0.1", 5000);
    put(c, "k2", "b@x", NULL, 5000);
    check_get(c, "k1", 5999, false, "10.0.0.1");
    check_get(c, "k2", 5199, false, "-");
    check_get(c, "k2", 5200, false, NULL);  /* negative TTL over */
    check_get(c, "k2", 5200, true, "-");    /* but still there */
    check_get(c, "k1", 6000, false, NULL);
    check_get(c, "k1", 9000, true, "10.0.0.1");
    check_get(c, "k3", 5000, true, NULL);
    /* A clock before the entry (cannot happen with a monotonic clock) is stale. */
    check_get(c, "k1", 4000, false, NULL);
    /* Replacing an entry starts its TTL again. */
    put(c, "k1", "a@x", "10.0.0.2", 8000);
    check_get(c, "k1", 8500, false, "10.0.0.2");
    struct auth_cache_stats st;
    auth_cache_get_stats(c, &st);
    CHECK_INT(st.entries, 2);
    CHECK_INT(st.inserts, 3);
    CHECK(st.hits >= 3 && st.misses >= 3);
    auth_cache_free(&c);

    c = auth_cache_new(1 << 20, 1000, 0); /* negative_ttl = 0: not stored */
    put(c, "k", "a@x", NULL, 0);
    check_get(c, "k", 0, true, NULL);
    auth_cache_free(&c);
}

static void test_fields_copied(void)
{
    struct auth_cache *c = auth_cache_new(1 << 20, 1000, 1000);
    struct fields in = FIELDS_INIT, out = FIELDS_INIT;
    bool positive = false;
    fields_set(&in, "password", "{PLAIN}secret");
    fields_set(&in, "nologin", NULL);
    fields_set(&in, "destuser", "");
    auth_cache_insert(c, "k", "u", true, &in, 0);
    fields_set(&in, "password", "changed"); /* the cache keeps its own copy */
    CHECK(auth_cache_lookup(c, "k", 1, false, &positive, &out) == AUTH_CACHE_FOUND);
    CHECK(positive);
    CHECK_STR(fields_get(&out, "password"), "{PLAIN}secret");
    CHECK(fields_has(&out, "nologin") && fields_get(&out, "nologin") == NULL);
    CHECK_STR(fields_get(&out, "destuser"), "");
    fields_free(&in);
    fields_free(&out);
    auth_cache_free(&c);
}

static void test_eviction(void)
{
    struct auth_cache *c = auth_cache_new(1 << 20, 100000, 100000);
    struct auth_cache_stats st;
    put(c, "probe", "p", "10.0.0.1", 0);
    auth_cache_get_stats(c, &st);
    size_t one = st.bytes;
    auth_cache_free(&c);

    /* Room for about ten entries of this size. */
    c = auth_cache_new(one * 10 + one / 2, 100000, 100000);
    char key[32];
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        put(c, key, "u", "10.0.0.1", (uint64_t)i);
    }
    check_get(c, "k00", 20, false, "10.0.0.1"); /* k00 is now the most recent */
    for (int i = 10; i < 15; i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        put(c, key, "u", "10.0.0.1", (uint64_t)i);
    }
    auth_cache_get_stats(c, &st);
    CHECK(st.bytes <= one * 10 + one / 2);
    CHECK_INT(st.entries, 10);
    CHECK_INT(st.evictions, 5);
    check_get(c, "k00", 30, false, "10.0.0.1");
    check_get(c, "k01", 30, true, NULL);
    check_get(c, "k05", 30, true, NULL);
    check_get(c, "k06", 30, false, "10.0.0.1");
    check_get(c, "k14", 30, false, "10.0.0.1");
    auth_cache_free(&c);

    /* An entry bigger than the whole cache is not stored. */
    c = auth_cache_new(64, 1000, 1000);
    put(c, "k", "u", "10.0.0.1", 0);
    check_get(c, "k", 0, true, NULL);
    auth_cache_free(&c);
}

static void test_many_and_flush(void)
{
    struct auth_cache *c = auth_cache_new(64 << 20, 100000, 100000);
    char key[32], user[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        snprintf(user, sizeof(user), "user%d", i % 100);
        put(c, key, user, i % 3 ? "10.0.0.1" : NULL, 0);
    }
    check_get(c, "key-4998", 1, false, "-");
    check_get(c, "key-4999", 1, false, "10.0.0.1");
    CHECK_INT(auth_cache_flush(c, "user7"), 50);
    check_get(c, "key-7", 1, true, NULL);
    check_get(c, "key-8", 1, false, "10.0.0.1");
    CHECK_INT(auth_cache_flush(c, "nobody"), 0);
    CHECK_INT(auth_cache_flush(c, NULL), 4950);
    struct auth_cache_stats st;
    auth_cache_get_stats(c, &st);
    CHECK_INT(st.entries, 0);
    CHECK_INT(st.bytes, 0);
    auth_cache_free(&c);
}

static void test_shared(void)
{
    static int owner1, owner2; /* only their addresses matter */
    struct auth_cache *a = auth_cache_acquire(&owner1, 1 << 20, 1000, 1000);
    struct auth_cache *b = auth_cache_acquire(&owner1, 1 << 20, 1000, 1000);
    struct auth_cache *other = auth_cache_acquire(&owner2, 1 << 20, 1000, 1000);
    CHECK(a == b);
    CHECK(a != other);
    put(a, "k", "alice", "10.0.0.1", 0);
    put(other, "k", "alice", "10.0.0.2", 0);
    check_get(b, "k", 1, false, "10.0.0.1");
    CHECK_INT(auth_cache_flush_all("alice"), 2);
    check_get(b, "k", 1, true, NULL);
    auth_cache_release(&a);
    CHECK(a == NULL);
    put(b, "k2", "bob", "10.0.0.3", 0);
    check_get(b, "k2", 1, false, "10.0.0.3");
    auth_cache_release(&b);
    auth_cache_release(&other);
    auth_cache_release(&other); /* NULL is fine */
    /* The last release freed it: the same owner gets a new, empty one. */
    a = auth_cache_acquire(&owner1, 1 << 20, 1000, 1000);
    check_get(a, "k2", 1, true, NULL);
    auth_cache_release(&a);
}

/* Workers hit one cache at once (run under ASan/TSan to see races). */
struct hammer {
    struct auth_cache *c;
    int id;
    int found;
};

static void *hammer_thread(void *arg)
{
    struct hammer *h = arg;
    char key[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "k%d", (i * 7 + h->id) % 500);
        if (i % 4 == 0)
            put(h->c, key, "u", "10.0.0.1", (uint64_t)i);
        char *v = get(h->c, key, (uint64_t)i, true);
        h->found += v != NULL;
        free(v);
        if (i % 5000 == 0)
            auth_cache_flush(h->c, "u");
    }
    return NULL;
}

static void test_threads(void)
{
    struct hammer h[4];
    pthread_t t[4];
    struct auth_cache *c = auth_cache_new(16 << 10, 1000, 1000); /* small: evictions too */
    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){c, i, 0};
        pthread_create(&t[i], NULL, hammer_thread, &h[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    struct auth_cache_stats st;
    auth_cache_get_stats(c, &st);
    CHECK(st.bytes <= 16 << 10);
    CHECK(h[0].found > 0);
    auth_cache_free(&c);
}

/* Hooked into passdb.c, with a passwd-file passdb */

static char tmpdir[64];
static char *users_path;
static struct loop *loop;

static void write_users(const char *text)
{
    char *tmp = xasprintf("%s.tmp", users_path);
    FILE *f = fopen(tmp, "w");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
    CHECK(rename(tmp, users_path) == 0);
    free(tmp);
}

struct answer {
    int calls;
    enum passdb_result result;
    char host[64];
};

static void on_reply(const struct passdb_reply *reply, void *ctx)
{
    struct answer *a = ctx;
    const char *host = fields_get(reply->fields, "host");
    a->calls++;
    a->result = reply->result;
    snprintf(a->host, sizeof(a->host), "%s", host != NULL ? host : "");
    CHECK(!fields_has(reply->fields, "password")); /* never handed out */
}

static struct answer ask(struct passdb *db, const char *user, const char *password)
{
    struct answer a = {0};
    struct passdb_request req = {.user = user, .password = password,
                                 .service = password != NULL ? "imap" : "lmtp"};
    passdb_lookup(db, &req, on_reply, &a);
    CHECK_INT(a.calls, 0);
    loop_run(loop);
    CHECK_INT(a.calls, 1);
    return a;
}

static void check_ask(struct passdb *db, const char *user, const char *password,
                      enum passdb_result want, const char *want_host)
{
    struct answer a = ask(db, user, password);
    CHECK_STR(passdb_result_str(a.result), passdb_result_str(want));
    CHECK_STR(a.host, want_host);
}

static struct passdb *open_db(struct settings *set, struct passdb_settings *ps)
{
    char *error = NULL;
    memset(ps, 0, sizeof(*ps));
    ps->driver = (char *)"passwd-file";
    ps->args = users_path;
    set->passdbs = ps;
    set->n_passdbs = 1;
    struct passdb *db = passdb_create(set, loop, &error);
    CHECK(db != NULL);
    free(error);
    return db;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_passdb_hits_and_ttl(void)
{
    struct settings set = {.auth_cache_size = 1 << 20, .auth_cache_ttl_ms = 300,
                           .auth_cache_negative_ttl_ms = 150};
    struct passdb_settings ps;
    write_users("alice@example.com:::::::proxy host=10.0.0.1\n");
    struct passdb *db = open_db(&set, &ps);
    check_ask(db, "alice@example.com", NULL, PASSDB_OK, "10.0.0.1");
    check_ask(db, "nobody@example.com", NULL, PASSDB_USER_UNKNOWN, "");
    /* The file changes; hits do not read it. */
    write_users("alice@example.com:::::::proxy host=10.0.0.2\n"
                "nobody@example.com:::::::proxy host=10.0.0.3\n");
    check_ask(db, "ALICE@example.com", NULL, PASSDB_OK, "10.0.0.1");
    check_ask(db, "nobody@example.com", NULL, PASSDB_USER_UNKNOWN, "");
    sleep_ms(170); /* negative TTL over, positive not */
    check_ask(db, "nobody@example.com", NULL, PASSDB_OK, "10.0.0.3");
    check_ask(db, "alice@example.com", NULL, PASSDB_OK, "10.0.0.1");
    sleep_ms(150); /* positive TTL over */
    check_ask(db, "alice@example.com", NULL, PASSDB_OK, "10.0.0.2");
    passdb_destroy(&db);
}

static void test_passdb_stale_fallback(void)
{
    struct settings set = {.auth_cache_size = 1 << 20, .auth_cache_ttl_ms = 50,
                           .auth_cache_negative_ttl_ms = 50};
    struct passdb_settings ps;
    write_users("alice@example.com:::::::proxy host=10.0.0.1\n");
    struct passdb *db = open_db(&set, &ps);
    check_ask(db, "alice@example.com", NULL, PASSDB_OK, "10.0.0.1");
    check_ask(db, "bob@example.com", NULL, PASSDB_USER_UNKNOWN, "");
    unlink(users_path); /* a fixed path that is missing: TEMPFAIL */
    check_ask(db, "carol@example.com", NULL, PASSDB_TEMPFAIL, "");
    sleep_ms(70);
    /* Expired, and the passdb fails: the old answer serves... */
    check_ask(db, "alice@example.com", NULL, PASSDB_OK, "10.0.0.1");
    /* ...but never an old "unknown user" (that would bounce mail). */
    check_ask(db, "bob@example.com", NULL, PASSDB_TEMPFAIL, "");
    /* A temporary failure is not cached. */
    write_users("carol@example.com:::::::proxy host=10.0.0.4\n");
    check_ask(db, "carol@example.com", NULL, PASSDB_OK, "10.0.0.4");
    passdb_destroy(&db);
}

static void test_passdb_password(void)
{
    struct settings set = {.auth_cache_size = 1 << 20, .auth_cache_ttl_ms = 60000,
                           .auth_cache_negative_ttl_ms = 60000};
    struct passdb_settings ps;
    write_users("alice@example.com:{PLAIN}old:::::: host=10.0.0.1\n");
    struct passdb *db = open_db(&set, &ps);
    check_ask(db, "alice@example.com", "old", PASSDB_OK, "10.0.0.1");
    write_users("alice@example.com:{PLAIN}new:::::: host=10.0.0.2\n");
    /* Checked against the cached stored password... */
    check_ask(db, "alice@example.com", "old", PASSDB_OK, "10.0.0.1");
    /* ...and a mismatch asks the passdb itself, then caches its answer. */
    check_ask(db, "alice@example.com", "new", PASSDB_OK, "10.0.0.2");
    check_ask(db, "alice@example.com", "old", PASSDB_PASSWORD_MISMATCH, "");
    check_ask(db, "alice@example.com", "wrong", PASSDB_PASSWORD_MISMATCH, "");
    /* Another service is another key for a non-SQL passdb. */
    check_ask(db, "alice@example.com", NULL, PASSDB_OK, "10.0.0.2");
    passdb_destroy(&db);
}

static void test_passdb_cache_off(void)
{
    struct settings set = {.auth_cache_size = 0};
    struct passdb_settings ps;
    write_users("alice@example.com:::::::host=10.0.0.1\n");
    struct passdb *db = open_db(&set, &ps);
    check_ask(db, "alice@example.com", NULL, PASSDB_OK, "10.0.0.1");
    write_users("alice@example.com:::::::host=10.0.0.2\n");
    check_ask(db, "alice@example.com", NULL, PASSDB_OK, "10.0.0.2");
    passdb_destroy(&db);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    RUN(test_ttl);
    RUN(test_fields_copied);
    RUN(test_eviction);
    RUN(test_many_and_flush);
    RUN(test_shared);
    RUN(test_threads);

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/mr-test-cache-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return 1;
    users_path = xasprintf("%s/users", tmpdir);
    loop = loop_new();
    RUN(test_passdb_hits_and_ttl);
    RUN(test_passdb_stale_fallback);
    RUN(test_passdb_password);
    RUN(test_passdb_cache_off);
    loop_free(&loop);
    nftw(tmpdir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(users_path);
    return test_done();
}
