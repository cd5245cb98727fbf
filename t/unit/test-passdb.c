/* test-passdb - passdb drivers (passwd-file, static), password schemes,
 * default/override fields, and the asynchronous contract: the callback
 * never runs inside passdb_lookup(), and an aborted lookup never calls back.
 *
 * Files live in a fresh temporary directory, removed at the end. */
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>

#include "buf.h"
#include "codec.h"
#include "loop.h"
#include "mem.h"
#include "passdb-file.h"
#include "passdb.h"
#include "password-scheme.h"
#include "test.h"

static char tmpdir[64];
static struct loop *loop;

/* Fixture helpers */

static char *path_in_tmp(const char *name)
{
    return xasprintf("%s/%s", tmpdir, name);
}

static void write_file(const char *name, const char *text)
{
    char *path = path_in_tmp(name);
    char *tmp = xasprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
        CHECK(rename(tmp, path) == 0);
    }
    free(tmp);
    free(path);
}

/* Rewrite in place (same inode), as an editor without backup files would.
 * The mtime is moved a second ahead: two writes within one kernel clock
 * tick can share an mtime, and the test is about a later edit. */
static void overwrite_file(const char *name, const char *text)
{
    char *path = path_in_tmp(name);
    struct stat st;
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
    CHECK(stat(path, &st) == 0);
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    times[1].tv_sec++;
    CHECK(utimensat(AT_FDCWD, path, times, 0) == 0);
    free(path);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Settings with one or two passdbs, built by hand. */
struct test_db {
    struct passdb_settings ps[2];
    struct settings set;
    struct passdb *db;
};

static void db_add(struct test_db *t, const char *driver, const char *args)
{
    struct passdb_settings *ps = &t->ps[t->set.n_passdbs++];
    ps->driver = (char *)driver;
    ps->args = (char *)args;
    t->set.passdbs = t->ps;
}

static bool db_open(struct test_db *t)
{
    char *error = NULL;
    t->db = passdb_create(&t->set, loop, &error);
    if (t->db == NULL)
        fprintf(stderr, "passdb_create: %s\n", error);
    free(error);
    return t->db != NULL;
}

static void db_close(struct test_db *t)
{
    passdb_destroy(&t->db);
    for (unsigned i = 0; i < t->set.n_passdbs; i++) {
        fields_free(&t->ps[i].default_fields);
        fields_free(&t->ps[i].override_fields);
    }
}

/* One lookup, run to completion. */
struct answer {
    int calls;
    enum passdb_result result;
    char *user;
    char *error;
    struct fields fields;
};

static void on_reply(const struct passdb_reply *reply, void *ctx)
{
    struct answer *a = ctx;
    a->calls++;
    a->result = reply->result;
    a->user = xstrdup(reply->user);
    a->error = reply->error != NULL ? xstrdup(reply->error) : NULL;
    fields_copy(&a->fields, reply->fields);
}

static void answer_free(struct answer *a)
{
    free(a->user);
    free(a->error);
    fields_free(&a->fields);
    memset(a, 0, sizeof(*a));
}

static struct answer lookup_full(struct test_db *t, const char *user, const char *password,
                                 const char *service)
{
    struct answer a = {0};
    struct passdb_request req = {.user = user, .password = password, .service = service};
    addr_parse_ip_port("192.0.2.1:4000", &req.remote);
    passdb_lookup(t->db, &req, on_reply, &a);
    /* The callback must wait for the loop. */
    CHECK_INT(a.calls, 0);
    loop_run(loop);
    CHECK_INT(a.calls, 1);
    return a;
}

static struct answer lookup(struct test_db *t, const char *user, const char *password)
{
    return lookup_full(t, user, password, password != NULL ? "imap" : "lmtp");
}

static enum passdb_result lookup_result(struct test_db *t, const char *user, const char *pw)
{
    struct answer a = lookup(t, user, pw);
    enum passdb_result r = a.result;
    answer_free(&a);
    return r;
}

/* The passwd-file parser */

static const char sample_file[] =
    "# comment line\n"
    "\n"
    "   \t\n"
    "alice@example.com:{PLAIN}secret:1000:1000:Alice:/home/alice:/bin/sh:proxy host=10.0.0.7 "
    "port=24\n"
    "bob@example.com:{PLAIN}pw\r\n"
    "carol@example.com::::::: nologin reason=Moved host=imap2.example\n"
    "dave@example.com:::::::hostip=2001:db8::1  proxy\tstarttls=any-cert\n"
    "erin@example.com:\n"
    "frank@example.com::::::: password={PLAIN}fromextra\n"
    "gina@example.com:{PLAIN}column::::::password={PLAIN}extra\n"
    "alice@example.com:{PLAIN}duplicate\n"
    "last@example.com:x";

static void test_parse(void)
{
    char *error = NULL;
    struct passwd_file *pf = passwd_file_parse(sample_file, strlen(sample_file), "t", &error);
    CHECK(pf != NULL);
    if (pf == NULL)
        return;
    unsigned dup_line;
    CHECK_INT(passwd_file_count(pf), 8);
    CHECK_INT(passwd_file_duplicates(pf, &dup_line), 1);
    CHECK_INT(dup_line, 11);

    const struct passwd_entry *e = passwd_file_find(pf, "alice@example.com");
    CHECK(e != NULL && e->line == 4);
    CHECK_STR(e->password, "{PLAIN}secret");
    CHECK_STR(e->uid, "1000");
    CHECK_STR(e->gecos, "Alice");
    CHECK_STR(e->home, "/home/alice");
    CHECK_STR(e->shell, "/bin/sh");
    CHECK_STR(e->extra, "proxy host=10.0.0.7 port=24");

    e = passwd_file_find(pf, "bob@example.com");
    CHECK_STR(e->password, "{PLAIN}pw");  /* \r stripped */
    CHECK(e->uid == NULL && e->extra == NULL);
    CHECK(passwd_file_find(pf, "Bob@example.com") == NULL);
    CHECK(passwd_file_find(pf, "nobody") == NULL);
    CHECK_STR(passwd_file_find(pf, "last@example.com")->password, "x");
    CHECK_STR(passwd_file_find(pf, "erin@example.com")->password, "");

    struct fields f = FIELDS_INIT;
    passwd_entry_fields(passwd_file_find(pf, "carol@example.com"), &f);
    CHECK(fields_has(&f, "nologin") && fields_get(&f, "nologin") == NULL);
    CHECK_STR(fields_get(&f, "reason"), "Moved");
    CHECK_STR(fields_get(&f, "host"), "imap2.example");
    CHECK(!fields_has(&f, "password"));
    fields_clear(&f);
    /* Colons inside the extra fields survive; tabs and double spaces separate. */
    passwd_entry_fields(passwd_file_find(pf, "dave@example.com"), &f);
    CHECK_STR(fields_get(&f, "hostip"), "2001:db8::1");
    CHECK(fields_has(&f, "proxy"));
    CHECK_STR(fields_get(&f, "starttls"), "any-cert");
    CHECK_INT(f.n, 3);
    fields_clear(&f);
    passwd_entry_fields(passwd_file_find(pf, "frank@example.com"), &f);
    CHECK_STR(fields_get(&f, "password"), "{PLAIN}fromextra");
    fields_clear(&f);
    passwd_entry_fields(passwd_file_find(pf, "gina@example.com"), &f);
    CHECK_STR(fields_get(&f, "password"), "{PLAIN}column");
    fields_clear(&f);
    passwd_entry_fields(passwd_file_find(pf, "alice@example.com"), &f);
    CHECK_STR(fields_get(&f, "password"), "{PLAIN}secret");
    CHECK_STR(fields_get(&f, "port"), "24");
    fields_free(&f);
    passwd_file_free(&pf);
    CHECK(pf == NULL);
}

static void check_parse_error(const char *text, size_t len, const char *want)
{
    char *error = NULL;
    struct passwd_file *pf = passwd_file_parse(text, len, "f.passwd", &error);
    CHECK(pf == NULL);
    CHECK(error != NULL && strstr(error, want) != NULL);
    if (error == NULL || strstr(error, want) == NULL)
        fprintf(stderr, "  error '%s', want '%s'\n", error ? error : "(null)", want);
    free(error);
    passwd_file_free(&pf);
}

static void test_parse_errors(void)
{
    check_parse_error("a:b\nnocolon\n", 12, "f.passwd:2: missing ':'");
    check_parse_error("# c\n:pw\n", 8, "f.passwd:2: empty user name");
    check_parse_error("a:b\nc:d\0e\n", 10, "f.passwd:2: NUL byte");
    char *error = NULL;
    struct passwd_file *pf = passwd_file_parse("", 0, "empty", &error);
    CHECK(pf != NULL && passwd_file_count(pf) == 0);
    passwd_file_free(&pf);
}

/* Password schemes */

static char *make_crypt(const char *prefix, const char *password)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data cd;
    memset(&cd, 0, sizeof(cd));
    unsigned long rounds = strcmp(prefix, "$2b$") == 0 ? 4 : 0;
    CHECK(crypt_gensalt_rn(prefix, rounds, NULL, 0, salt, sizeof(salt)) != NULL);
    const char *hash = crypt_r(password, salt, &cd);
    CHECK(hash != NULL && hash[0] != '*');
    return xstrdup(hash);
}

static char *make_sha(int digest, const char *password, const char *salt)
{
    size_t plen = strlen(password), slen = strlen(salt);
    size_t dlen = gnutls_hash_get_len((gnutls_digest_algorithm_t)digest);
    unsigned char raw[64 + 16];
    char *input = xasprintf("%s%s", password, salt);
    CHECK(gnutls_hash_fast((gnutls_digest_algorithm_t)digest, input, plen + slen, raw) == 0);
    memcpy(raw + dlen, salt, slen);
    struct buf out = BUF_INIT;
    base64_encode(&out, raw, dlen + slen);
    free(input);
    return buf_steal(&out);
}

static void check_verify(const char *plain, const char *stored, const char *scheme,
                         enum password_verify_result want)
{
    const char *error = NULL;
    enum password_verify_result got = password_verify(plain, stored, scheme, &error);
    CHECK_INT(got, want);
    if (got != want)
        fprintf(stderr, "  stored '%s' scheme %s\n", stored, scheme);
}

static void test_scheme_direct(void)
{
    char *sha512 = make_crypt("$6$", "pw1");
    char *sha256_crypt = make_crypt("$5$", "pw1");
    char *md5 = make_crypt("$1$", "pw1");
    char *blf = make_crypt("$2b$", "pw1");
    char *ssha = make_sha(GNUTLS_DIG_SHA1, "pw1", "salt");
    char *ssha256 = make_sha(GNUTLS_DIG_SHA256, "pw1", "NaCl1234");
    char *ssha512 = make_sha(GNUTLS_DIG_SHA512, "pw1", "s");
    char *sha256 = make_sha(GNUTLS_DIG_SHA256, "pw1", "");
    char buf[256];

    check_verify("pw1", "{PLAIN}pw1", "CRYPT", PASSWORD_MATCH);
    check_verify("pw1", "{plain}pw1", "CRYPT", PASSWORD_MATCH);
    check_verify("pw1", "{CLEAR}pw1", "CRYPT", PASSWORD_MATCH);
    check_verify("pw", "{PLAIN}pw1", "CRYPT", PASSWORD_NO_MATCH);
    check_verify("pw12", "{PLAIN}pw1", "CRYPT", PASSWORD_NO_MATCH);
    check_verify("", "{PLAIN}", "CRYPT", PASSWORD_MATCH);
    check_verify("pw1", "pw1", "PLAIN", PASSWORD_MATCH);
    check_verify("pw1", sha512, "CRYPT", PASSWORD_MATCH);
    check_verify("pw2", sha512, "CRYPT", PASSWORD_NO_MATCH);
    snprintf(buf, sizeof(buf), "{SHA512-CRYPT}%s", sha512);
    check_verify("pw1", buf, "PLAIN", PASSWORD_MATCH);
    snprintf(buf, sizeof(buf), "{SHA256-CRYPT}%s", sha256_crypt);
    check_verify("pw1", buf, "PLAIN", PASSWORD_MATCH);
    snprintf(buf, sizeof(buf), "{MD5-CRYPT}%s", md5);
    check_verify("pw1", buf, "PLAIN", PASSWORD_MATCH);
    snprintf(buf, sizeof(buf), "{BLF-CRYPT}%s", blf);
    check_verify("pw1", buf, "PLAIN", PASSWORD_MATCH);
    check_verify("pw2", buf, "PLAIN", PASSWORD_NO_MATCH);
    check_verify("pw1", "{CRYPT}!", "PLAIN", PASSWORD_NO_MATCH);
    check_verify("pw1", "{CRYPT}*", "PLAIN", PASSWORD_NO_MATCH);
    snprintf(buf, sizeof(buf), "{SSHA}%s", ssha);
    check_verify("pw1", buf, "PLAIN", PASSWORD_MATCH);
    check_verify("pw2", buf, "PLAIN", PASSWORD_NO_MATCH);
    snprintf(buf, sizeof(buf), "{SSHA256}%s", ssha256);
    check_verify("pw1", buf, "PLAIN", PASSWORD_MATCH);
    check_verify("pw1 ", buf, "PLAIN", PASSWORD_NO_MATCH);
    snprintf(buf, sizeof(buf), "{SSHA512}%s", ssha512);
    check_verify("pw1", buf, "PLAIN", PASSWORD_MATCH);
    snprintf(buf, sizeof(buf), "{SHA256}%s", sha256);
    check_verify("pw1", buf, "PLAIN", PASSWORD_MATCH);
    check_verify("pw1", ssha256, "SSHA256", PASSWORD_MATCH);
    /* Broken stored values */
    check_verify("pw1", "{SSHA256}dG9vc2hvcnQ=", "PLAIN", PASSWORD_BAD_STORED);
    check_verify("pw1", "{SSHA}not base64!", "PLAIN", PASSWORD_BAD_STORED);
    check_verify("pw1", "{NOSUCH}x", "PLAIN", PASSWORD_BAD_STORED);
    check_verify("pw1", "x", "NOSUCH", PASSWORD_BAD_STORED);
    CHECK(password_verify_is_slow(sha512, "CRYPT"));
    CHECK(!password_verify_is_slow("{PLAIN}x", "CRYPT"));
    CHECK(password_scheme_is_known("blf-crypt") && !password_scheme_is_known("ROT13"));
    CHECK(password_mem_eq("abc", 3, "abc", 3));
    CHECK(!password_mem_eq("abc", 3, "abd", 3));
    CHECK(!password_mem_eq("ab", 2, "abc", 3));
    CHECK(!password_mem_eq("abc", 3, "ab", 2));
    CHECK(password_mem_eq("", 0, "", 0));
    free(sha512);
    free(sha256_crypt);
    free(md5);
    free(blf);
    free(ssha);
    free(ssha256);
    free(ssha512);
    free(sha256);
}

/* passwd-file through the passdb */

static void test_file_lookup(void)
{
    struct test_db t = {0};
    char *path = path_in_tmp("users");
    char *args = xasprintf("scheme=PLAIN %s", path);
    write_file("users", sample_file);
    db_add(&t, "passwd-file", args);
    CHECK(db_open(&t));

    /* LMTP: no password, fields only; the name is lowercased first. */
    struct answer a = lookup(&t, "Alice@Example.COM", NULL);
    CHECK_INT(a.result, PASSDB_OK);
    CHECK_STR(a.user, "alice@example.com");
    CHECK(fields_has(&a.fields, "proxy"));
    CHECK_STR(fields_get(&a.fields, "host"), "10.0.0.7");
    CHECK(!fields_has(&a.fields, "password"));
    CHECK(a.error == NULL);
    answer_free(&a);

    a = lookup(&t, "alice@example.com", "secret");
    CHECK_INT(a.result, PASSDB_OK);
    CHECK(!fields_has(&a.fields, "password"));
    answer_free(&a);

    /* Wrong password: no fields at all, so no referral can leak. */
    a = lookup(&t, "carol@example.com", "guess");
    CHECK_INT(a.result, PASSDB_PASSWORD_MISMATCH);
    CHECK_INT(a.fields.n, 0);
    answer_free(&a);
    a = lookup(&t, "alice@example.com", "Secret");
    CHECK_INT(a.result, PASSDB_PASSWORD_MISMATCH);
    CHECK_INT(a.fields.n, 0);
    answer_free(&a);

    CHECK_INT(lookup_result(&t, "nobody@example.com", NULL), PASSDB_USER_UNKNOWN);
    CHECK_INT(lookup_result(&t, "nobody@example.com", "x"), PASSDB_USER_UNKNOWN);
    /* An empty password column and no nopassword: never a match. */
    CHECK_INT(lookup_result(&t, "erin@example.com", ""), PASSDB_PASSWORD_MISMATCH);
    CHECK_INT(lookup_result(&t, "erin@example.com", NULL), PASSDB_OK);
    /* The password from an extra field. */
    CHECK_INT(lookup_result(&t, "frank@example.com", "fromextra"), PASSDB_OK);
    CHECK_INT(lookup_result(&t, "gina@example.com", "column"), PASSDB_OK);
    CHECK_INT(lookup_result(&t, "gina@example.com", "extra"), PASSDB_PASSWORD_MISMATCH);
    db_close(&t);
    free(args);
    free(path);
}

static void test_file_schemes(void)
{
    struct test_db t = {0};
    char *sha512 = make_crypt("$6$", "s3cret");
    char *blf = make_crypt("$2b$", "s3cret");
    char *ssha256 = make_sha(GNUTLS_DIG_SHA256, "s3cret", "pepper");
    char *text = xasprintf("plain:{PLAIN}s3cret\n"
                           "sha512:{SHA512-CRYPT}%s\n"
                           "bare:%s\n"
                           "blf:{BLF-CRYPT}%s\n"
                           "ssha:{SSHA256}%s\n"
                           "open:{PLAIN}whatever::::::nopassword\n"
                           "bad:{ROT13}frperg\n",
                           sha512, sha512, blf, ssha256);
    char *path = path_in_tmp("schemes");
    write_file("schemes", text);
    db_add(&t, "passwd-file", path); /* default scheme: CRYPT */
    CHECK(db_open(&t));
    static const char *const users[] = {"plain", "sha512", "bare", "blf", "ssha"};
    for (size_t i = 0; i < ARRAY_LEN(users); i++) {
        CHECK_INT(lookup_result(&t, users[i], "s3cret"), PASSDB_OK);
        CHECK_INT(lookup_result(&t, users[i], "s3cret!"), PASSDB_PASSWORD_MISMATCH);
        CHECK_INT(lookup_result(&t, users[i], ""), PASSDB_PASSWORD_MISMATCH);
    }
    CHECK_INT(lookup_result(&t, "open", "anything"), PASSDB_OK);
    CHECK_INT(lookup_result(&t, "open", ""), PASSDB_OK);
    struct answer a = lookup(&t, "open", "x");
    CHECK(!fields_has(&a.fields, "nopassword") && !fields_has(&a.fields, "password"));
    answer_free(&a);
    /* An unusable stored password is a mismatch (and an error in the log). */
    CHECK_INT(lookup_result(&t, "bad", "secret"), PASSDB_PASSWORD_MISMATCH);
    db_close(&t);
    free(sha512);
    free(blf);
    free(ssha256);
    free(text);
    free(path);
}

static void test_file_domain_paths(void)
{
    struct test_db t = {0};
    char *args = xasprintf("scheme=PLAIN %s/dom-%%Ld.passwd", tmpdir);
    write_file("dom-example.com.passwd", "ann@example.com:pa::::::proxy host=10.0.0.1\n");
    write_file("dom-other.org.passwd", "ann@other.org:pb\n");
    db_add(&t, "passwd-file", args);
    CHECK(db_open(&t));
    struct answer a = lookup(&t, "ann@example.com", "pa");
    CHECK_INT(a.result, PASSDB_OK);
    CHECK_STR(fields_get(&a.fields, "host"), "10.0.0.1");
    answer_free(&a);
    CHECK_INT(lookup_result(&t, "ANN@Other.ORG", "pb"), PASSDB_OK);
    CHECK_INT(lookup_result(&t, "ann@other.org", "pa"), PASSDB_PASSWORD_MISMATCH);
    /* No file for the domain: unknown user, not a temporary failure. */
    CHECK_INT(lookup_result(&t, "ann@nowhere.net", NULL), PASSDB_USER_UNKNOWN);
    /* Values that would leave the directory, or name no file. */
    CHECK_INT(lookup_result(&t, "x@../dom-example.com", NULL), PASSDB_USER_UNKNOWN);
    CHECK_INT(lookup_result(&t, "x@a/b", NULL), PASSDB_USER_UNKNOWN);
    CHECK_INT(lookup_result(&t, "x@..", NULL), PASSDB_USER_UNKNOWN);
    CHECK_INT(lookup_result(&t, "ann@example.com\n", NULL), PASSDB_USER_UNKNOWN);
    CHECK_INT(lookup_result(&t, "nodomain", NULL), PASSDB_USER_UNKNOWN);
    db_close(&t);
    free(args);
}

static void test_file_reload(void)
{
    struct test_db t = {0};
    char *path = path_in_tmp("reload");
    write_file("reload", "u1:{PLAIN}a\n");
    db_add(&t, "passwd-file", path);
    CHECK(db_open(&t));
    passwd_file_check_interval_ms = 0;
    CHECK_INT(lookup_result(&t, "u1", "a"), PASSDB_OK);
    CHECK_INT(lookup_result(&t, "u2", NULL), PASSDB_USER_UNKNOWN);

    /* Replaced (new inode). */
    write_file("reload", "u1:{PLAIN}b\nu2:{PLAIN}c\n");
    CHECK_INT(lookup_result(&t, "u1", "b"), PASSDB_OK);
    CHECK_INT(lookup_result(&t, "u2", "c"), PASSDB_OK);
    /* Rewritten in place with the same size: the mtime tells. */
    overwrite_file("reload", "u1:{PLAIN}B\nu2:{PLAIN}C\n");
    CHECK_INT(lookup_result(&t, "u1", "B"), PASSDB_OK);

    /* Broken: TEMPFAIL naming the file and line; the old users are gone. */
    write_file("reload", "u1:{PLAIN}b\ngarbage line\n");
    struct answer a = lookup(&t, "u1", "b");
    CHECK_INT(a.result, PASSDB_TEMPFAIL);
    CHECK(a.error != NULL && strstr(a.error, path) != NULL && strstr(a.error, ":2:") != NULL);
    answer_free(&a);
    /* Unreadable (a directory in its place). */
    char *dir_path = path_in_tmp("reload");
    remove(dir_path);
    CHECK(mkdir(dir_path, 0700) == 0);
    a = lookup(&t, "u1", NULL);
    CHECK_INT(a.result, PASSDB_TEMPFAIL);
    CHECK(a.error != NULL && strstr(a.error, path) != NULL &&
          strstr(a.error, strerror(EISDIR)) != NULL);
    answer_free(&a);
    /* Missing (a fixed path): TEMPFAIL with the errno text. */
    rmdir(dir_path);
    a = lookup(&t, "u1", NULL);
    CHECK_INT(a.result, PASSDB_TEMPFAIL);
    CHECK(a.error != NULL && strstr(a.error, strerror(ENOENT)) != NULL);
    answer_free(&a);
    /* Fixed again. */
    write_file("reload", "u1:{PLAIN}z\n");
    CHECK_INT(lookup_result(&t, "u1", "z"), PASSDB_OK);

    /* With the default interval, a change within the second is not seen yet. */
    passwd_file_check_interval_ms = 1000;
    CHECK_INT(lookup_result(&t, "u1", "z"), PASSDB_OK);
    write_file("reload", "u1:{PLAIN}y\n");
    CHECK_INT(lookup_result(&t, "u1", "z"), PASSDB_OK);
    db_close(&t);
    free(dir_path);
    free(path);
}

static void test_file_unreadable_permissions(void)
{
    if (geteuid() == 0)
        return; /* root reads anything */
    struct test_db t = {0};
    char *path = path_in_tmp("noperm");
    write_file("noperm", "u:{PLAIN}x\n");
    CHECK(chmod(path, 0) == 0);
    db_add(&t, "passwd-file", path);
    CHECK(db_open(&t));
    struct answer a = lookup(&t, "u", NULL);
    CHECK_INT(a.result, PASSDB_TEMPFAIL);
    CHECK(a.error != NULL && strstr(a.error, strerror(EACCES)) != NULL);
    answer_free(&a);
    db_close(&t);
    free(path);
}

/* A 100k-user file: loading and lookups stay fast (hash, not scan). */
static void test_file_large(void)
{
    struct test_db t = {0};
    struct buf text = BUF_INIT;
    for (int i = 0; i < 100000; i++)
        buf_printf(&text, "user%d@big.example:{PLAIN}pw%d::::::proxy host=10.0.%d.%d\n", i, i,
                   i / 256 % 256, i % 256);
    write_file("big", buf_ptr(&text));
    buf_free(&text);
    char *path = path_in_tmp("big");
    db_add(&t, "passwd-file", path);
    CHECK(db_open(&t));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 100000; i += 37) {
        char user[64], pw[32];
        snprintf(user, sizeof(user), "user%d@big.example", i);
        snprintf(pw, sizeof(pw), "pw%d", i);
        CHECK_INT(lookup_result(&t, user, pw), PASSDB_OK);
    }
    CHECK_INT(lookup_result(&t, "user100000@big.example", NULL), PASSDB_USER_UNKNOWN);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(secs < 10.0); /* generous for sanitizer builds; ~0.1 s normally */
    db_close(&t);
    free(path);
}

/* static driver */

static void test_static(void)
{
    struct test_db t = {0};
    db_add(&t, "static", "proxy host=10.0.0.%n port=24 destuser=%Lu password=secret");
    CHECK(db_open(&t));
    struct answer a = lookup(&t, "7@Example.com", NULL);
    CHECK_INT(a.result, PASSDB_OK);
    CHECK_STR(fields_get(&a.fields, "host"), "10.0.0.7");
    CHECK_STR(fields_get(&a.fields, "destuser"), "7@example.com");
    CHECK(fields_has(&a.fields, "proxy") && !fields_has(&a.fields, "password"));
    answer_free(&a);
    CHECK_INT(lookup_result(&t, "anyone", "secret"), PASSDB_OK);
    CHECK_INT(lookup_result(&t, "anyone", "wrong"), PASSDB_PASSWORD_MISMATCH);
    db_close(&t);

    struct test_db t2 = {0};
    db_add(&t2, "static", "nopassword");
    CHECK(db_open(&t2));
    CHECK_INT(lookup_result(&t2, "anyone", "whatever"), PASSDB_OK);
    db_close(&t2);

    /* No password and no nopassword: only lookups without a password pass. */
    struct test_db t3 = {0};
    db_add(&t3, "static", "");
    CHECK(db_open(&t3));
    CHECK_INT(lookup_result(&t3, "anyone", NULL), PASSDB_OK);
    CHECK_INT(lookup_result(&t3, "anyone", "x"), PASSDB_PASSWORD_MISMATCH);
    db_close(&t3);
}

/* default_fields, override_fields, and the "user" field */

static void test_settings_fields(void)
{
    struct test_db t = {0};
    char *path = path_in_tmp("fields");
    write_file("fields", "a@x.org:{PLAIN}p::::::host=10.0.0.1 port=24\n"
                         "b@x.org:{PLAIN}p::::::user=renamed@y.org\n"
                         "c@x.org:{PLAIN}p::::::user= nologin\n");
    db_add(&t, "passwd-file", path);
    fields_add_pair(&t.ps[0].default_fields, "host=default.%d");
    fields_add_pair(&t.ps[0].default_fields, "proxy_timeout=5s");
    fields_add_pair(&t.ps[0].default_fields, "proxy");
    fields_add_pair(&t.ps[0].override_fields, "port=%a");
    fields_add_pair(&t.ps[0].override_fields, "forward_user=%Un");
    CHECK(db_open(&t));

    struct answer a = lookup(&t, "a@x.org", NULL);
    CHECK_STR(fields_get(&a.fields, "host"), "10.0.0.1");   /* present: default unused */
    CHECK_STR(fields_get(&a.fields, "proxy_timeout"), "5s");
    CHECK(fields_has(&a.fields, "proxy"));
    CHECK_STR(fields_get(&a.fields, "port"), "0");           /* override always wins */
    CHECK_STR(fields_get(&a.fields, "forward_user"), "A");
    answer_free(&a);

    /* "user" renames; it is not passed on as a field. */
    a = lookup(&t, "b@x.org", "p");
    CHECK_INT(a.result, PASSDB_OK);
    CHECK_STR(a.user, "renamed@y.org");
    CHECK(!fields_has(&a.fields, "user"));
    CHECK_STR(fields_get(&a.fields, "host"), "default.x.org");
    answer_free(&a);
    /* An empty "user" is ignored. */
    a = lookup(&t, "c@x.org", NULL);
    CHECK_STR(a.user, "c@x.org");
    CHECK(!fields_has(&a.fields, "user") && fields_has(&a.fields, "nologin"));
    answer_free(&a);
    /* No settings fields on failures. */
    a = lookup(&t, "a@x.org", "wrong");
    CHECK_INT(a.result, PASSDB_PASSWORD_MISMATCH);
    CHECK_INT(a.fields.n, 0);
    answer_free(&a);
    a = lookup(&t, "zz@x.org", NULL);
    CHECK_INT(a.result, PASSDB_USER_UNKNOWN);
    CHECK_INT(a.fields.n, 0);
    CHECK_STR(a.user, "zz@x.org");
    answer_free(&a);
    db_close(&t);

    /* A bad template in the settings fields: TEMPFAIL at lookup time. */
    struct test_db t2 = {0};
    db_add(&t2, "static", "");
    fields_add_pair(&t2.ps[0].override_fields, "host=%q");
    CHECK(db_open(&t2));
    a = lookup(&t2, "x", NULL);
    CHECK_INT(a.result, PASSDB_TEMPFAIL);
    CHECK(a.error != NULL && strstr(a.error, "%q") != NULL);
    answer_free(&a);
    db_close(&t2);
    free(path);
}

/* Several passdbs */

static void test_chain(void)
{
    struct test_db t = {0};
    char *path = path_in_tmp("chain");
    write_file("chain", "known:{PLAIN}k::::::host=10.0.0.1\n");
    db_add(&t, "passwd-file", path);
    db_add(&t, "static", "host=10.9.9.9 password=s");
    CHECK(db_open(&t));
    struct answer a = lookup(&t, "known", NULL);
    CHECK_STR(fields_get(&a.fields, "host"), "10.0.0.1");
    answer_free(&a);
    a = lookup(&t, "other", NULL);
    CHECK_INT(a.result, PASSDB_OK);
    CHECK_STR(fields_get(&a.fields, "host"), "10.9.9.9");
    answer_free(&a);
    /* A mismatch in the first passdb answers: the static one is not asked. */
    CHECK_INT(lookup_result(&t, "known", "s"), PASSDB_PASSWORD_MISMATCH);
    /* A TEMPFAIL stops the chain. */
    remove(path);
    passwd_file_check_interval_ms = 0;
    CHECK_INT(lookup_result(&t, "other", NULL), PASSDB_TEMPFAIL);
    passwd_file_check_interval_ms = 1000;
    db_close(&t);
    free(path);

    struct test_db none = {0};
    CHECK(db_open(&none));
    CHECK_INT(lookup_result(&none, "x", NULL), PASSDB_USER_UNKNOWN);
    db_close(&none);
}

/* The asynchronous contract */

static void test_abort(void)
{
    struct test_db t = {0};
    char *blf = make_crypt("$2b$", "pw");
    char *text = xasprintf("fast:{PLAIN}pw\nslow:{BLF-CRYPT}%s\n", blf);
    char *path = path_in_tmp("abort");
    write_file("abort", text);
    db_add(&t, "passwd-file", path);
    CHECK(db_open(&t));

    struct answer a = {0}, b = {0}, c = {0};
    struct passdb_request req = {.user = "fast", .password = "pw"};
    struct passdb_lookup *la = passdb_lookup(t.db, &req, on_reply, &a);
    req.user = "slow";
    struct passdb_lookup *lb = passdb_lookup(t.db, &req, on_reply, &b);
    req.user = "fast";
    struct passdb_lookup *lc = passdb_lookup(t.db, &req, on_reply, &c);
    CHECK(la != NULL && lb != NULL && lc != NULL);
    passdb_lookup_abort(&la);          /* answer already waiting for the loop */
    passdb_lookup_abort(&lb);          /* hash running on a worker thread */
    CHECK(la == NULL && lb == NULL);
    passdb_lookup_abort(&la);          /* NULL is fine */
    loop_run(loop);
    CHECK_INT(a.calls, 0);
    CHECK_INT(b.calls, 0);
    CHECK_INT(c.calls, 1);
    CHECK_INT(c.result, PASSDB_OK);
    answer_free(&c);

    /* The slow path delivers too, later. */
    CHECK_INT(lookup_result(&t, "slow", "pw"), PASSDB_OK);
    CHECK_INT(lookup_result(&t, "slow", "px"), PASSDB_PASSWORD_MISMATCH);

    /* Destroying the passdb aborts what is pending. */
    req.user = "fast";
    passdb_lookup(t.db, &req, on_reply, &a);
    req.user = "slow";
    passdb_lookup(t.db, &req, on_reply, &b);
    db_close(&t);
    loop_run(loop);
    CHECK_INT(a.calls, 0);
    CHECK_INT(b.calls, 0);
    free(blf);
    free(text);
    free(path);
}

/* A callback that starts the next lookup and aborts its own (finished) handle. */
struct chained {
    struct passdb *db;
    struct passdb_lookup *self;
    int calls;
};

static void on_chained(const struct passdb_reply *reply, void *ctx)
{
    struct chained *ch = ctx;
    (void)reply;
    passdb_lookup_abort(&ch->self); /* harmless inside the callback */
    if (++ch->calls < 3) {
        struct passdb_request req = {.user = "x"};
        ch->self = passdb_lookup(ch->db, &req, on_chained, ch);
    }
}

static void test_callback_reentry(void)
{
    struct test_db t = {0};
    db_add(&t, "static", "");
    CHECK(db_open(&t));
    struct chained ch = {t.db, NULL, 0};
    struct passdb_request req = {.user = "x"};
    ch.self = passdb_lookup(t.db, &req, on_chained, &ch);
    loop_run(loop);
    CHECK_INT(ch.calls, 3);
    db_close(&t);
}

static void check_create_error(const char *driver, const char *args, const char *want)
{
    struct passdb_settings ps = {.driver = (char *)driver, .args = (char *)args};
    struct settings set = {.passdbs = &ps, .n_passdbs = 1};
    char *error = NULL;
    struct passdb *db = passdb_create(&set, loop, &error);
    CHECK(db == NULL);
    CHECK(error != NULL && strstr(error, want) != NULL);
    if (error == NULL || strstr(error, want) == NULL)
        fprintf(stderr, "  error '%s', want '%s'\n", error ? error : "(null)", want);
    free(error);
    passdb_destroy(&db);
}

static void test_create_errors(void)
{
    check_create_error("ldap", "", "passdb #1: unknown driver 'ldap'");
    check_create_error("passwd-file", "", "path");
    check_create_error("passwd-file", "scheme=ROT13 /etc/x", "unknown password scheme 'ROT13'");
    check_create_error("passwd-file", "/etc/%x/users", "%x");
    check_create_error("static", "host=%{nosuch}", "%{nosuch}");
    check_create_error("static", "=x", "without a name");
    CHECK_STR(passdb_result_str(PASSDB_OK), "ok");
    CHECK_STR(passdb_result_str(PASSDB_USER_UNKNOWN), "user_unknown");
    CHECK_STR(passdb_result_str(PASSDB_PASSWORD_MISMATCH), "password_mismatch");
    CHECK_STR(passdb_result_str(PASSDB_TEMPFAIL), "tempfail");
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-passdb-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    loop = loop_new();
    RUN(test_parse);
    RUN(test_parse_errors);
    RUN(test_scheme_direct);
    RUN(test_file_lookup);
    RUN(test_file_schemes);
    RUN(test_file_domain_paths);
    RUN(test_file_reload);
    RUN(test_file_unreadable_permissions);
    RUN(test_file_large);
    RUN(test_static);
    RUN(test_settings_fields);
    RUN(test_chain);
    RUN(test_abort);
    RUN(test_callback_reentry);
    RUN(test_create_errors);
    loop_free(&loop);
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_done();
}
