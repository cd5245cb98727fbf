/* test-config - the configuration module: syntax, includes, "<file" values,
 * the settings table (types, defaults, errors with FILE:LINE), the passdb
 * and service sections, and the dump. Files are written to a mkdtemp()
 * directory that is removed at the end. */
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "mem.h"
#include "test.h"

static char tmpdir[64];

/* A path inside tmpdir; a few rotating buffers so that calls can nest. */
static const char *tmp_path(const char *rel)
{
    static char bufs[4][512];
    static unsigned next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof(bufs[0]), "%s/%s", tmpdir, rel);
    return b;
}

static void write_file(const char *rel, const char *text)
{
    FILE *f = fopen(tmp_path(rel), "w");
    if (f == NULL) {
        perror(rel);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static void make_dir(const char *rel)
{
    mkdir(tmp_path(rel), 0755);
}

static struct settings *load(const char *text, char **error)
{
    write_file("main.conf", text);
    *error = NULL;
    return settings_load(tmp_path("main.conf"), error);
}

/* The text must fail with "<tmpdir>/main.conf:" + want. */
#define CHECK_LOAD_ERROR(text, want) check_load_error(__LINE__, text, want)

static void check_load_error(int line, const char *text, const char *want)
{
    char *error = NULL;
    struct settings *set = load(text, &error);
    char *full = xasprintf("%s:%s", tmp_path("main.conf"), want);
    if (set != NULL || error == NULL || strcmp(error, full) != 0) {
        test_failures++;
        fprintf(stderr, "%s:%d: %s: error = \"%s\", want \"%s\"\n", __FILE__, line,
                test_current, error ? error : "(none)", full);
    }
    test_checks++;
    settings_free(&set);
    free(error);
    free(full);
}

static struct settings *load_ok(const char *text)
{
    char *error = NULL;
    struct settings *set = load(text, &error);
    CHECK(set != NULL);
    if (error != NULL) {
        fprintf(stderr, "  unexpected error: %s\n", error);
        free(error);
    }
    return set;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* ---- defaults ---- */

static void test_defaults(void)
{
    struct settings *set = settings_new_default();
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    CHECK_STR(set->protocols, "lmtp");
    CHECK_STR(set->listen, "*, ::");
    CHECK_STR(set->hostname, host[0] != '\0' ? host : "localhost");
    CHECK_STR(set->base_dir, "/run/mailroute");
    CHECK_STR(set->log_path, "");
    CHECK(!set->log_debug);
    CHECK_INT(set->workers, 0);
    CHECK_INT(set->shutdown_timeout_ms, 30000);
    CHECK_STR(set->login_trusted_networks_str, "");
    CHECK_INT(set->login_trusted_networks.n, 0);
    CHECK_STR(set->auth_proxy_self, "");
    CHECK_INT(set->n_passdbs, 0);
    CHECK(set->lmtp_proxy);
    CHECK_STR(set->lmtp_local, "");
    CHECK_INT(set->lmtp_referrals, LMTP_REFERRALS_FOLLOW);
    CHECK_STR(set->recipient_delimiter, "+");
    CHECK(set->lmtp_add_received_header);
    CHECK_INT(set->lmtp_max_recipients, 1000);
    CHECK_INT(set->lmtp_max_message_size, 0);
    CHECK_INT(set->lmtp_max_line_length, 4096);
    CHECK_INT(set->lmtp_max_pipelined, 128);
    CHECK_INT(set->lmtp_spool_threshold, 256 * 1024);
    CHECK_STR(set->mail_temp_dir, "/tmp");
    CHECK_INT(set->lmtp_client_timeout_ms, 5 * 60 * 1000);
    CHECK_INT(set->lmtp_proxy_connect_timeout_ms, 30000);
    CHECK_INT(set->lmtp_proxy_timeout_ms, 125000);
    CHECK_INT(set->lmtp_transaction_timeout_ms, 10 * 60 * 1000);
    CHECK_INT(set->lmtp_backend_idle_timeout_ms, 30000);
    CHECK_INT(set->lmtp_backend_max_idle, 64);
    CHECK_INT(set->lmtp_backend_fail_fast_ms, 2000);
    CHECK_INT(set->delay_until_max_ms, 300000);
    CHECK_INT(set->n_listeners, 0);
    CHECK(settings_has_protocol(set, "lmtp"));
    CHECK(!settings_has_protocol(set, "imap"));
    settings_free(&set);
    CHECK(set == NULL);
    settings_free(&set); /* NULL is fine */
}

/* ---- syntax ---- */

static void test_syntax(void)
{
    struct settings *set = load_ok(
        "# a comment\n"
        "   # an indented comment\n"
        "\n"
        "hostname = mx1.example.com   # trailing comment\n"
        "recipient_delimiter=-\n"
        "log_path =\n"
        "base_dir = \"/run/with # hash\"  # comment after quotes\n"
        "auth_proxy_self = 'single \\n #quoted'\n"
        "listen = \"a\\\"b\\\\c\\td\\ne\"\r\n"
        "\tlmtp_local\t=\tunix:/run/x  \r\n"
        "mail_temp_dir = /var/tmp\n"
        "mail_temp_dir = /var/tmp2\n" /* the last one wins */
        "lmtp_proxy = no");           /* no newline at the end */
    if (set == NULL)
        return;
    CHECK_STR(set->hostname, "mx1.example.com");
    CHECK_STR(set->recipient_delimiter, "-");
    CHECK_STR(set->log_path, "");
    CHECK_STR(set->base_dir, "/run/with # hash");
    CHECK_STR(set->auth_proxy_self, "single \\n #quoted");
    CHECK_STR(set->listen, "a\"b\\c\td\ne");
    CHECK_STR(set->lmtp_local, "unix:/run/x");
    CHECK_STR(set->mail_temp_dir, "/var/tmp2");
    CHECK(!set->lmtp_proxy);
    CHECK_STR(set->config_path, tmp_path("main.conf"));
    settings_free(&set);
}

static void test_quotes_inside_unquoted(void)
{
    /* Quotes inside a value protect '#' and " }" (SQL queries have both). */
    struct settings *set = load_ok(
        "passdb {\n"
        "  args = SELECT x FROM t WHERE a = '#1' AND b = \"}\" # comment\n"
        "  driver = sql }\n"
        "auth_proxy_self = 1.2.3.4, 'x' y\n");
    if (set == NULL)
        return;
    CHECK_INT(set->n_passdbs, 1);
    CHECK_STR(set->passdbs[0].args, "SELECT x FROM t WHERE a = '#1' AND b = \"}\"");
    CHECK_STR(set->auth_proxy_self, "1.2.3.4, 'x' y");
    settings_free(&set);
}

static void test_continuation(void)
{
    struct settings *set = load_ok(
        "passdb {\n"
        "  driver = sql\n"
        "  args = one \\\n"
        "         two\\\n"
        "     three\n"
        "# a comment ending in a backslash does not continue \\\n"
        "  default_fields = a=1\n"
        "}\n"
        "hostname = h\\\n");
    if (set == NULL)
        return;
    CHECK_STR(set->passdbs[0].args, "one twothree");
    CHECK_STR(fields_get(&set->passdbs[0].default_fields, "a"), "1");
    CHECK_STR(set->hostname, "h");
    settings_free(&set);
    /* An error in a continued line names the line where it began. */
    CHECK_LOAD_ERROR("\n\nlmtp_max_recipients = \\\n  abc\n",
                     "3: invalid value for lmtp_max_recipients: 'abc' (expected a number)");
}

static void test_syntax_errors(void)
{
    CHECK_LOAD_ERROR("hostname = \"abc\n", "1: missing closing quote (\")");
    CHECK_LOAD_ERROR("\nhostname = 'abc\n", "2: missing closing quote (')");
    CHECK_LOAD_ERROR("hostname = \"abc\" def\n", "1: unexpected text after a quoted value");
    CHECK_LOAD_ERROR("= x\n", "1: unexpected '='");
    CHECK_LOAD_ERROR("{\n", "1: unexpected '{'");
    CHECK_LOAD_ERROR("lmtp_proxy yes\n", "1: expected '=' or '{' after 'lmtp_proxy'");
    CHECK_LOAD_ERROR("passdb\n{\n}\n", "1: expected '=' or '{' after 'passdb'");
    CHECK_LOAD_ERROR("\n}\n", "2: unexpected '}'");
    CHECK_LOAD_ERROR("a {\n b {\n", "2: missing '}'");
    CHECK_LOAD_ERROR("!foo bar\n", "1: unknown directive '!foo'");
    CHECK_LOAD_ERROR("!include\n", "1: !include needs a file name");
    CHECK_LOAD_ERROR("hostname = <\n", "1: missing file name after '<'");
    CHECK_LOAD_ERROR("a{b{c{d{e{f{g{h{i{j{k{l{m{n{o{p{q{ } } } } } } } } } } } } } } } } }\n",
                     "1: sections nested too deeply");

    char *long_line = xmalloc(70000);
    memset(long_line, 'x', 69999);
    long_line[69999] = '\0';
    memcpy(long_line, "hostname = ", 11);
    CHECK_LOAD_ERROR(long_line, "1: line too long (more than 65536 bytes)");
    free(long_line);

    char *error = NULL;
    struct settings *set = settings_load_string("mem.conf", "hostname = a\0b\n", 15, &error);
    CHECK(set == NULL);
    CHECK_STR(error, "mem.conf:1: NUL character in line");
    free(error);

    error = NULL;
    set = settings_load(tmp_path("does-not-exist.conf"), &error);
    CHECK(set == NULL);
    char *want = xasprintf("%s: No such file or directory", tmp_path("does-not-exist.conf"));
    CHECK_STR(error, want);
    free(want);
    free(error);

    error = NULL;
    set = settings_load(tmpdir, &error);
    want = xasprintf("%s: not a regular file", tmpdir);
    CHECK_STR(error, want);
    free(want);
    free(error);
}

/* ---- includes ---- */

static void test_includes(void)
{
    make_dir("conf.d");
    make_dir("conf.d/sub");
    write_file("conf.d/20-b.conf", "hostname = from-b\n!include sub/inner.conf\n");
    write_file("conf.d/10-a.conf", "hostname = from-a\nlog_path = syslog\n");
    write_file("conf.d/sub/inner.conf", "recipient_delimiter = #inner\n"
                                        "recipient_delimiter = \"#inner\"\n");
    write_file("conf.d/README", "not a config file\n");
    write_file("passdb.conf.ext", "driver = static\nargs = nopassword\n");
    struct settings *set = load_ok(
        "hostname = before\n"
        "!include conf.d/*.conf\n"
        "!include_try conf.d/missing-*.conf\n"
        "!include_try /nonexistent/dir/x.conf\n"
        "passdb {\n"
        "  !include passdb.conf.ext\n"
        "}\n");
    if (set == NULL)
        return;
    /* 10-a before 20-b: glob order; include inside a section works. */
    CHECK_STR(set->hostname, "from-b");
    CHECK_STR(set->log_path, "syslog");
    CHECK_STR(set->recipient_delimiter, "#inner");
    CHECK_INT(set->n_passdbs, 1);
    CHECK_STR(set->passdbs[0].driver, "static");
    CHECK_STR(set->passdbs[0].args, "nopassword");
    settings_free(&set);
}

static void test_include_errors(void)
{
    char *want = xasprintf("1: !include %s: not found", tmp_path("missing.conf"));
    CHECK_LOAD_ERROR("!include missing.conf\n", want);
    free(want);
    want = xasprintf("2: !include %s: not found", tmp_path("conf.d/*.nomatch"));
    CHECK_LOAD_ERROR("\n!include conf.d/*.nomatch\n", want);
    free(want);

    /* Errors inside an included file name that file. */
    write_file("bad.conf", "\n\nlmtp_foo = 1\n");
    char *error = NULL;
    struct settings *set = load("!include bad.conf\n", &error);
    want = xasprintf("%s:3: unknown setting 'lmtp_foo'", tmp_path("bad.conf"));
    CHECK(set == NULL);
    CHECK_STR(error, want);
    free(want);
    free(error);

    /* A file may not close a section it did not open, nor leave one open. */
    write_file("closer.conf", "}\n");
    error = NULL;
    set = load("passdb {\n!include closer.conf\n", &error);
    want = xasprintf("%s:1: unexpected '}'", tmp_path("closer.conf"));
    CHECK_STR(error, want);
    free(want);
    free(error);
    write_file("opener.conf", "passdb {\n");
    error = NULL;
    set = load("!include opener.conf\n}\n", &error);
    want = xasprintf("%s:1: missing '}'", tmp_path("opener.conf"));
    CHECK_STR(error, want);
    free(want);
    free(error);
}

static void test_include_loop(void)
{
    write_file("loop-a.conf", "!include loop-b.conf\n");
    write_file("loop-b.conf", "\n!include loop-a.conf\n");
    char *error = NULL;
    struct settings *set = load("!include loop-a.conf\n", &error);
    char *want = xasprintf("%s:2: !include %s: include loop (the file is already being read)",
                           tmp_path("loop-b.conf"), tmp_path("loop-a.conf"));
    CHECK(set == NULL);
    CHECK_STR(error, want);
    free(want);
    free(error);

    /* A file including itself. */
    error = NULL;
    set = load("!include main.conf\n", &error);
    want = xasprintf("%s:1: !include %s: include loop (the file is already being read)",
                     tmp_path("main.conf"), tmp_path("main.conf"));
    CHECK_STR(error, want);
    free(want);
    free(error);

    /* Distinct files nested too deeply: deep1 includes deep2 ... */
    for (int i = 1; i <= 20; i++) {
        char name[32], text[64];
        snprintf(name, sizeof(name), "deep%d.conf", i);
        snprintf(text, sizeof(text), "!include deep%d.conf\n", i + 1);
        write_file(name, text);
    }
    error = NULL;
    set = load("!include deep1.conf\n", &error);
    want = xasprintf("%s:1: !include %s: includes nested too deeply (more than 16)",
                     tmp_path("deep15.conf"), tmp_path("deep16.conf"));
    CHECK_STR(error, want);
    free(want);
    free(error);
}

static void test_include_from_memory(void)
{
    /* settings_load_string() resolves relative paths against the cwd. */
    char cwd[1024];
    if (getcwd(cwd, sizeof(cwd)) == NULL || chdir(tmpdir) < 0) {
        CHECK(0);
        return;
    }
    write_file("mem-inc.conf", "hostname = from-memory-include\n");
    const char *text = "!include mem-inc.conf\nlmtp_max_recipients = 7\n";
    char *error = NULL;
    struct settings *set = settings_load_string("inline", text, strlen(text), &error);
    CHECK(set != NULL);
    if (set != NULL) {
        CHECK_STR(set->hostname, "from-memory-include");
        CHECK_INT(set->lmtp_max_recipients, 7);
        CHECK_STR(set->config_path, "inline");
    }
    settings_free(&set);
    free(error);
    CHECK(chdir(cwd) == 0);
}

/* ---- "<file" values ---- */

static void test_value_from_file(void)
{
    make_dir("keys");
    write_file("keys/host", "host-from-file\n");
    write_file("keys/multi", "line1\nline2\r\n");
    write_file("keys/empty", "");
    struct settings *set = load_ok("hostname = <keys/host\n"
                                   "auth_proxy_self = < keys/multi\n"
                                   "log_path = <keys/empty\n"
                                   "listen = <\"keys/host\"\n");
    if (set == NULL)
        return;
    CHECK_STR(set->hostname, "host-from-file");
    CHECK_STR(set->auth_proxy_self, "line1\nline2");
    CHECK_STR(set->log_path, "");
    CHECK_STR(set->listen, "host-from-file");
    settings_free(&set);

    char *want = xasprintf("2: cannot read %s: No such file or directory",
                           tmp_path("keys/none"));
    CHECK_LOAD_ERROR("\nhostname = <keys/none\n", want);
    free(want);
    /* The value read is checked like any other. */
    write_file("keys/num", "12x\n");
    CHECK_LOAD_ERROR("lmtp_max_recipients = <keys/num\n",
                     "1: invalid value for lmtp_max_recipients: '12x' (expected a number)");
}

/* ---- types ---- */

static void test_types(void)
{
    struct settings *set = load_ok("log_debug = yes\n"
                                   "workers = 4\n"
                                   "shutdown_timeout = 500ms\n"
                                   "lmtp_client_timeout = 5 min\n"
                                   "lmtp_proxy_timeout = 2 secs\n"
                                   "lmtp_transaction_timeout = 1h\n"
                                   "lmtp_backend_fail_fast = 15\n"
                                   "lmtp_max_message_size = 10M\n"
                                   "lmtp_spool_threshold = 1G\n"
                                   "lmtp_max_line_length = 512\n"
                                   "lmtp_referrals = reject\n"
                                   "lmtp_add_received_header = no\n"
                                   "protocols = lmtp imap, pop3 submission\n"
                                   "login_trusted_networks = 10.0.0.0/8 ::1, 192.168.1.1\n"
                                   "lmtp_local = inet:[::1]:24\n");
    if (set == NULL)
        return;
    CHECK(set->log_debug);
    CHECK_INT(set->workers, 4);
    CHECK_INT(set->shutdown_timeout_ms, 500);
    CHECK_INT(set->lmtp_client_timeout_ms, 300000);
    CHECK_INT(set->lmtp_proxy_timeout_ms, 2000);
    CHECK_INT(set->lmtp_transaction_timeout_ms, 3600000);
    CHECK_INT(set->lmtp_backend_fail_fast_ms, 15000);
    CHECK_INT(set->lmtp_max_message_size, 10 * 1024 * 1024);
    CHECK_INT(set->lmtp_spool_threshold, 1024 * 1024 * 1024);
    CHECK_INT(set->lmtp_max_line_length, 512);
    CHECK_INT(set->lmtp_referrals, LMTP_REFERRALS_REJECT);
    CHECK(!set->lmtp_add_received_header);
    CHECK(settings_has_protocol(set, "imap"));
    CHECK(settings_has_protocol(set, "pop3"));
    CHECK(settings_has_protocol(set, "submission"));
    CHECK(!settings_has_protocol(set, "pop"));
    CHECK_INT(set->login_trusted_networks.n, 3);
    struct addr a;
    CHECK(addr_parse_ip("10.1.2.3", &a) && cidr_set_contains(&set->login_trusted_networks, &a));
    CHECK(addr_parse_ip("11.1.2.3", &a) && !cidr_set_contains(&set->login_trusted_networks, &a));
    CHECK_STR(set->login_trusted_networks_str, "10.0.0.0/8 ::1, 192.168.1.1");
    CHECK_STR(set->lmtp_local, "inet:[::1]:24");
    settings_free(&set);

    set = load_ok("lmtp_local = maildir:/var/mail/%d/%n\n");
    if (set != NULL)
        CHECK_STR(set->lmtp_local, "maildir:/var/mail/%d/%n");
    settings_free(&set);
    /* Relative paths are relative to the daemon's working directory. */
    set = load_ok("lmtp_local = unix:run/lmtp\nbase_dir = run\n");
    if (set != NULL)
        CHECK_STR(set->lmtp_local, "unix:run/lmtp");
    settings_free(&set);
}

static void test_type_errors(void)
{
    CHECK_LOAD_ERROR("\n\nlmtp_max_recipients = abc\n",
                     "3: invalid value for lmtp_max_recipients: 'abc' (expected a number)");
    CHECK_LOAD_ERROR("lmtp_max_recipients = -1\n",
                     "1: invalid value for lmtp_max_recipients: '-1' (expected a number)");
    CHECK_LOAD_ERROR("lmtp_max_recipients = 99999999999\n",
                     "1: invalid value for lmtp_max_recipients: '99999999999' "
                     "(must be at most 4294967295)");
    CHECK_LOAD_ERROR("lmtp_max_recipients = 0\n",
                     "1: invalid value for lmtp_max_recipients: '0' (must be at least 1)");
    CHECK_LOAD_ERROR("lmtp_max_line_length = 511\n",
                     "1: invalid value for lmtp_max_line_length: '511' (must be at least 512)");
    CHECK_LOAD_ERROR("log_debug = maybe\n",
                     "1: invalid value for log_debug: 'maybe' (expected yes or no)");
    CHECK_LOAD_ERROR("lmtp_spool_threshold = 10X\n",
                     "1: invalid value for lmtp_spool_threshold: '10X' "
                     "(expected a size, e.g. 10M)");
    CHECK_LOAD_ERROR("lmtp_client_timeout = 5 fortnights\n",
                     "1: invalid value for lmtp_client_timeout: '5 fortnights' "
                     "(expected a duration, e.g. 30s)");
    CHECK_LOAD_ERROR("lmtp_client_timeout_ms = 5\n",
                     "1: unknown setting 'lmtp_client_timeout_ms'");
    CHECK_LOAD_ERROR("lmtp_referrals = ignore\n",
                     "1: invalid value for lmtp_referrals: 'ignore' (expected follow or reject)");
    CHECK_LOAD_ERROR("login_trusted_networks = 10.0.0.0/33\n",
                     "1: invalid value for login_trusted_networks: '10.0.0.0/33' "
                     "(invalid network prefix length)");
    CHECK_LOAD_ERROR("login_trusted_networks = 10.0.0.0/8 nothost\n",
                     "1: invalid value for login_trusted_networks: '10.0.0.0/8 nothost' "
                     "(invalid IP address in network list)");
    CHECK_LOAD_ERROR("protocols = lmtp imap4\n",
                     "1: invalid value for protocols: 'lmtp imap4' (unknown protocol 'imap4')");
    CHECK_LOAD_ERROR("mail_temp_dir = tmp\n",
                     "1: invalid value for mail_temp_dir: 'tmp' (expected an absolute path)");
    static const char *bad_local[] = {"inet:host", "inet::24", "inet:h:0", "inet:h:70000",
                                      "unix:", "maildir:", "lmtp:/x", "/x", "INET:h:24"};
    for (size_t i = 0; i < ARRAY_LEN(bad_local); i++) {
        char *text = xasprintf("lmtp_local = %s\n", bad_local[i]);
        char *want = xasprintf("1: invalid value for lmtp_local: '%s' "
                               "(expected inet:HOST:PORT, unix:PATH or maildir:PATH)",
                               bad_local[i]);
        CHECK_LOAD_ERROR(text, want);
        free(text);
        free(want);
    }
    /* Values in messages are cut and cleaned. */
    char *text = xasprintf("hostname = ok\nworkers = \"%0300d\\n\"\n", 7);
    char *error = NULL;
    struct settings *set = load(text, &error);
    CHECK(set == NULL);
    CHECK(error != NULL && strstr(error, "...' (expected a number)") != NULL);
    CHECK(error != NULL && strchr(error, '\n') == NULL);
    CHECK(error != NULL && strlen(error) < 400);
    free(error);
    free(text);
}

static void test_unknown(void)
{
    CHECK_LOAD_ERROR("\n\n\n\n\n\n\n\n\n\n\nlmtp_foo = 1\n", "12: unknown setting 'lmtp_foo'");
    CHECK_LOAD_ERROR("userdb {\n}\n", "1: unknown section 'userdb'");
    CHECK_LOAD_ERROR("lmtp_proxy {\n}\n", "1: unknown section 'lmtp_proxy'");
    CHECK_LOAD_ERROR("passdb {\n driver = static\n  skip = never\n}\n",
                     "3: unknown setting 'skip' in passdb section");
    CHECK_LOAD_ERROR("passdb {\n driver = static\n  foo {\n  }\n}\n",
                     "3: unknown section 'foo' in passdb section");
    CHECK_LOAD_ERROR("service lmtp {\n  process_limit = 1\n}\n",
                     "2: unknown setting 'process_limit' in service section");
    CHECK_LOAD_ERROR("service lmtp {\n  fifo_listener x {\n  }\n}\n",
                     "2: unknown section 'fifo_listener' in service section");
    CHECK_LOAD_ERROR("service lmtp {\n  inet_listener x {\n    port = 24\n    user = x\n  }\n}\n",
                     "4: unknown setting 'user' in inet_listener section");
    CHECK_LOAD_ERROR("service lmtp {\n  unix_listener x {\n    path = /x\n    group = y\n"
                     "  }\n}\n",
                     "4: unknown setting 'group' in unix_listener section");
}

/* ---- sections ---- */

static void test_passdb(void)
{
    struct settings *set = load_ok(
        "passdb {\n"
        "  driver = passwd-file\n"
        "  args = /etc/mailroute/users\n"
        "}\n"
        "passdb backup {\n"
        "  driver = sql\n"
        "  args = /etc/mailroute/sql.conf.ext\n"
        "  default_fields = proxy=y  host=10.0.0.1 nologin\n"
        "  override_fields = port=24\tttl=3\n"
        "}\n"
        "passdb \"last one\" { driver = static }\n");
    if (set == NULL)
        return;
    CHECK_INT(set->n_passdbs, 3);
    CHECK_STR(set->passdbs[0].driver, "passwd-file");
    CHECK_STR(set->passdbs[0].args, "/etc/mailroute/users");
    CHECK_STR(set->passdbs[0].name, NULL);
    CHECK_INT(set->passdbs[0].default_fields.n, 0);
    CHECK_STR(set->passdbs[1].name, "backup");
    CHECK_STR(set->passdbs[1].driver, "sql");
    CHECK_INT(set->passdbs[1].default_fields.n, 3);
    CHECK_STR(fields_get(&set->passdbs[1].default_fields, "proxy"), "y");
    CHECK_STR(fields_get(&set->passdbs[1].default_fields, "host"), "10.0.0.1");
    CHECK(fields_has(&set->passdbs[1].default_fields, "nologin"));
    CHECK_STR(fields_get(&set->passdbs[1].override_fields, "port"), "24");
    CHECK_STR(fields_get(&set->passdbs[1].override_fields, "ttl"), "3");
    CHECK_STR(set->passdbs[2].name, "last one");
    CHECK_STR(set->passdbs[2].driver, "static");
    CHECK_STR(set->passdbs[2].args, "");
    settings_free(&set);

    CHECK_LOAD_ERROR("\npassdb {\n  args = x\n}\n", "2: passdb section has no driver");
    CHECK_LOAD_ERROR("passdb {\n  driver = ldap\n}\n",
                     "2: invalid value for driver: 'ldap' (expected passwd-file, static or sql)");
    CHECK_LOAD_ERROR("passdb {\n  driver = static\n  default_fields = a=1 =2\n}\n",
                     "3: invalid value for default_fields: 'a=1 =2' (a field has no name)");
}

static void test_services(void)
{
    struct settings *set = load_ok(
        "base_dir = /var/run/mr\n"
        "service lmtp {\n"
        "  inet_listener lmtp {\n"
        "    address = 127.0.0.1, ::1\n"
        "    port = 24\n"
        "  }\n"
        "  unix_listener lmtp {\n"
        "    path = /run/mailroute/lmtp\n"
        "    mode = 0600\n"
        "  }\n"
        "  unix_listener relative {\n"
        "    path = sock/lmtp\n"
        "  }\n"
        "}\n"
        "service imap-login {\n"
        "  inet_listener imap { port = 143 }\n"
        "  inet_listener imaps { port = 993\n ssl = yes\n haproxy = yes }\n"
        "  inet_listener off { port = 0 }\n"
        "}\n"
        "service submission-login { inet_listener { port = 587 } }\n");
    if (set == NULL)
        return;
    CHECK_INT(set->n_listeners, 6);
    struct listener_settings *l = set->listeners;
    CHECK_STR(l[0].service, "lmtp");
    CHECK_STR(l[0].label, "lmtp");
    CHECK_INT(l[0].kind, LISTENER_INET);
    CHECK_STR(l[0].address, "127.0.0.1, ::1");
    CHECK_INT(l[0].port, 24);
    CHECK(!l[0].ssl && !l[0].haproxy);
    CHECK_INT(l[1].kind, LISTENER_UNIX);
    CHECK_STR(l[1].path, "/run/mailroute/lmtp");
    CHECK_INT(l[1].mode, 0600);
    CHECK_STR(l[2].path, "/var/run/mr/sock/lmtp"); /* relative to base_dir */
    CHECK_INT(l[2].mode, 0666);
    CHECK_STR(l[3].service, "imap");
    CHECK_STR(l[3].address, NULL);
    CHECK_INT(l[3].port, 143);
    CHECK_STR(l[4].label, "imaps");
    CHECK(l[4].ssl && l[4].haproxy);
    CHECK_STR(l[5].service, "submission");
    CHECK_STR(l[5].label, "submission");
    CHECK_INT(l[5].port, 587);
    settings_free(&set);

    /* The one-liner from DESIGN.md. */
    set = load_ok("service lmtp { inet_listener lmtp { port = 24 }  unix_listener lmtp "
                  "{ path = /run/mailroute/lmtp } }\n");
    if (set != NULL) {
        CHECK_INT(set->n_listeners, 2);
        CHECK_INT(set->listeners[0].port, 24);
        CHECK_STR(set->listeners[1].path, "/run/mailroute/lmtp");
    }
    settings_free(&set);

    CHECK_LOAD_ERROR("service {\n}\n", "1: service section needs a name, e.g. service lmtp");
    CHECK_LOAD_ERROR("service auth {\n}\n", "1: unknown service 'auth'");
    CHECK_LOAD_ERROR("service lmtp {\n  inet_listener lmtp {\n    address = 1.2.3.4\n  }\n}\n",
                     "2: inet_listener lmtp: port is required");
    CHECK_LOAD_ERROR("service lmtp {\n  inet_listener lmtp {\n    port = 65536\n  }\n}\n",
                     "3: invalid value for port: '65536' (expected a port number, 1-65535 "
                     "(0 disables))");
    CHECK_LOAD_ERROR("service lmtp {\n  unix_listener lmtp {\n    mode = 0600\n  }\n}\n",
                     "2: unix_listener lmtp: path is required");
    CHECK_LOAD_ERROR("service lmtp {\n  unix_listener lmtp {\n    path = /x\n    mode = 0968\n"
                     "  }\n}\n",
                     "4: invalid value for mode: '0968' (expected an octal mode such as 0660)");
    CHECK_LOAD_ERROR("service lmtp {\n  inet_listener lmtp {\n    port = 24\n    ssl = maybe\n"
                     "  }\n}\n",
                     "4: invalid value for ssl: 'maybe' (expected yes or no)");
}

/* The example configuration in the repository loads. */
static void test_example_config(void)
{
    char *error = NULL;
    struct settings *set = settings_load("../../conf.d/mailroute.conf", &error);
    CHECK(set != NULL);
    if (error != NULL)
        fprintf(stderr, "  conf.d/mailroute.conf: %s\n", error);
    if (set != NULL) {
        CHECK(set->n_passdbs >= 1);
        CHECK(set->n_listeners >= 1);
    }
    settings_free(&set);
    free(error);
}

/* ---- dump ---- */

static char *dump_to_string(const struct settings *set, bool nondefault_only)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    settings_dump(set, f, nondefault_only);
    fclose(f);
    return text;
}

static const char dump_input[] =
    "protocols = lmtp imap\n"
    "hostname = mx.example.com\n"
    "lmtp_spool_threshold = 1M\n"
    "lmtp_client_timeout = 90s\n"
    "shutdown_timeout = 1500 ms\n"
    "lmtp_referrals = reject\n"
    "auth_proxy_self = \"odd # value\"\n"
    "login_trusted_networks = 10.0.0.0/8\n"
    "passdb sql1 {\n"
    "  driver = sql\n"
    "  args = /etc/x.conf.ext\n"
    "  default_fields = proxy host=h\n"
    "}\n"
    "service lmtp {\n"
    "  inet_listener lmtp {\n"
    "    port = 24\n"
    "  }\n"
    "  unix_listener lmtp {\n"
    "    path = /run/l\n"
    "    mode = 0600\n"
    "  }\n"
    "}\n"
    "service imap-login { inet_listener imaps { port = 993\n ssl = yes } }\n";

static const char dump_nondefault_want[] =
    "protocols = lmtp imap\n"
    "hostname = mx.example.com\n"
    "shutdown_timeout = 1500 ms\n"
    "login_trusted_networks = 10.0.0.0/8\n"
    "auth_proxy_self = \"odd # value\"\n"
    "lmtp_referrals = reject\n"
    "lmtp_spool_threshold = 1 M\n"
    "lmtp_client_timeout = 90 s\n"
    "passdb sql1 {\n"
    "  driver = sql\n"
    "  args = /etc/x.conf.ext\n"
    "  default_fields = proxy host=h\n"
    "}\n"
    "service lmtp {\n"
    "  inet_listener lmtp {\n"
    "    port = 24\n"
    "  }\n"
    "  unix_listener lmtp {\n"
    "    path = /run/l\n"
    "    mode = 0600\n"
    "  }\n"
    "}\n"
    "service imap {\n"
    "  inet_listener imaps {\n"
    "    port = 993\n"
    "    ssl = yes\n"
    "  }\n"
    "}\n";

static void test_dump(void)
{
    struct settings *set = load_ok(dump_input);
    if (set == NULL)
        return;
    char *text = dump_to_string(set, true);
    CHECK_STR(text, dump_nondefault_want);
    free(text);

    /* A full dump lists every setting, in the units people write. */
    text = dump_to_string(set, false);
    CHECK(strstr(text, "\nlmtp_proxy_timeout = 125 s\n") != NULL);
    CHECK(strstr(text, "\nlmtp_transaction_timeout = 10 min\n") != NULL);
    CHECK(strstr(text, "\nlmtp_max_message_size = 0\n") != NULL);
    CHECK(strstr(text, "\nlog_path = \n") != NULL);
    CHECK(strstr(text, "\nlog_debug = no\n") != NULL);
    CHECK(strstr(text, "\nlisten = *, ::\n") != NULL);
    CHECK(strstr(text, "\n    ssl = no\n    haproxy = no\n") != NULL);

    /* The full dump loads back to the same settings. */
    char *error = NULL;
    struct settings *again = settings_load_string("dump", text, strlen(text), &error);
    CHECK(again != NULL);
    if (again != NULL) {
        char *text2 = dump_to_string(again, false);
        CHECK_STR(text2, text);
        free(text2);
    }
    settings_free(&again);
    free(error);
    free(text);
    settings_free(&set);

    /* Defaults only: nothing but (no) sections. */
    set = settings_new_default();
    text = dump_to_string(set, true);
    CHECK_STR(text, "");
    free(text);
    settings_free(&set);
}

static void test_dump_quoting(void)
{
    /* Values that need quotes survive a dump and reload. */
    struct settings *set = load_ok("auth_proxy_self = \"  lead\\ttab \\\"q\\\" \\\\ {x} <y \"\n"
                                   "recipient_delimiter = \"+#\"\n"
                                   "listen = 'a }'\n");
    if (set == NULL)
        return;
    char *text = dump_to_string(set, true);
    char *error = NULL;
    struct settings *again = settings_load_string("dump", text, strlen(text), &error);
    CHECK(again != NULL);
    if (again != NULL) {
        CHECK_STR(again->auth_proxy_self, "  lead\ttab \"q\" \\ {x} <y ");
        CHECK_STR(again->recipient_delimiter, "+#");
        CHECK_STR(again->listen, "a }");
    }
    settings_free(&again);
    free(error);
    free(text);
    settings_free(&set);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/mr-test-config-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    RUN(test_defaults);
    RUN(test_syntax);
    RUN(test_quotes_inside_unquoted);
    RUN(test_continuation);
    RUN(test_syntax_errors);
    RUN(test_includes);
    RUN(test_include_errors);
    RUN(test_include_loop);
    RUN(test_include_from_memory);
    RUN(test_value_from_file);
    RUN(test_types);
    RUN(test_type_errors);
    RUN(test_unknown);
    RUN(test_passdb);
    RUN(test_services);
    RUN(test_example_config);
    RUN(test_dump);
    RUN(test_dump_quoting);
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_done();
}
