/* test-sql-conf - the SQL passdb's args file and connect string parser, and
 * the mapping of a result row to passdb fields (no server needed).
 *
 * The Dovecot wiki's own dovecot-sql.conf.ext examples (shared/reference)
 * are parsed verbatim: their queries must come out exactly as Dovecot
 * would send them. */
#include <stdlib.h>
#include <string.h>

#include "fields.h"
#include "mem.h"
#include "passdb-sql.h"
#include "sql-conf.h"
#include "str.h"
#include "test.h"

static struct sql_conf *parse(const char *text)
{
    char *error = NULL;
    struct sql_conf *conf = sql_conf_parse(text, strlen(text), "t.conf", &error);
    if (conf == NULL) {
        fprintf(stderr, "unexpected error: %s\n", error);
        free(error);
    }
    return conf;
}

static void check_error(const char *text, size_t len, const char *want)
{
    char *error = NULL;
    struct sql_conf *conf = sql_conf_parse(text, len, "t.conf", &error);
    CHECK(conf == NULL);
    CHECK(error != NULL && strstr(error, want) != NULL);
    if (error == NULL || strstr(error, want) == NULL)
        fprintf(stderr, "  for %.60s: got \"%s\", want \"%s\"\n", text, error ? error : "",
                want);
    sql_conf_free(&conf);
    free(error);
}

/* For literals that may hold a NUL byte. */
#define CHECK_ERROR(text, want) check_error(text, sizeof(text) - 1, want)

/* Reference 002/003: "Example password forwarding SQL configuration". */
static void test_reference_proxy_table(void)
{
    struct sql_conf *conf = parse(
        "driver = mysql\n"
        "connect = host=sqlhost1 host=sqlhost2 dbname=mail user=dovecot password=secret\n"
        "password_query = SELECT NULL AS password, 'Y' as nopassword, host, destuser, 'Y' AS "
        "proxy FROM proxy WHERE user = '%u'\n");
    CHECK(conf != NULL);
    if (conf == NULL)
        return;
    CHECK_STR(conf->driver, "mysql");
    CHECK_STR(conf->password_query, "SELECT NULL AS password, 'Y' as nopassword, host, "
                                    "destuser, 'Y' AS proxy FROM proxy WHERE user = '%u'");
    CHECK_INT(conf->connect.n_hosts, 2);
    CHECK_STR(conf->connect.hosts[0], "sqlhost1");
    CHECK_STR(conf->connect.hosts[1], "sqlhost2");
    CHECK_STR(conf->connect.dbname, "mail");
    CHECK_STR(conf->connect.user, "dovecot");
    CHECK_STR(conf->connect.password, "secret");
    CHECK_INT(conf->connect.port, 0);
    CHECK_INT(conf->connect.max_connections, SQL_DEFAULT_MAX_CONNECTIONS);
    CHECK_INT(conf->connect.connect_timeout_ms, SQL_DEFAULT_CONNECT_TIMEOUT_MS);
    CHECK_INT(conf->connect.query_timeout_ms, SQL_DEFAULT_QUERY_TIMEOUT_MS);
    CHECK(conf->default_pass_scheme == NULL);
    sql_conf_free(&conf);
}

/* Reference 002: "Example proxy_maybe SQL configuration", with the
 * backslash-continued query and the (ignored) user_query. */
static void test_reference_proxy_maybe(void)
{
    struct sql_conf *conf = parse(
        "driver = mysql\n"
        "\n"
        "password_query = \\\n"
        "  SELECT concat(user, '@', domain) AS user, password, host, 'Y' AS proxy_maybe \\\n"
        "  FROM users WHERE user = '%n' AND domain = '%d'\n"
        "\n"
        "user_query = SELECT user AS username, domain, home \\\n"
        "  FROM users WHERE user = '%n' AND domain = '%d'\n"
        "connect = host=/run/mysqld/mysqld.sock dbname=mail\n");
    CHECK(conf != NULL);
    if (conf == NULL)
        return;
    CHECK_STR(conf->password_query, "SELECT concat(user, '@', domain) AS user, password, host, "
                                    "'Y' AS proxy_maybe FROM users WHERE user = '%n' AND "
                                    "domain = '%d'");
    CHECK_INT(conf->connect.n_hosts, 1);
    CHECK_STR(conf->connect.hosts[0], "/run/mysqld/mysqld.sock");
    CHECK(conf->connect.user == NULL && conf->connect.password == NULL);
    sql_conf_free(&conf);
}

/* Reference 000/001: login referral queries, one split over six lines. */
static void test_reference_referral(void)
{
    struct sql_conf *conf = parse(
        "# NOTE: '\\' line splitting is used only for readability\n"
        "driver = mysql\n"
        "connect = host=db port=3307\n"
        "password_query = \\\n"
        "  SELECT NULL AS password, \\\n"
        "  'imap2.example.com' AS host, \\\n"
        "  'This server is down, try another one.' AS reason, \\\n"
        "  'Y' as nologin, \\\n"
        "  'Y' as nodelay\n");
    CHECK(conf != NULL);
    if (conf == NULL)
        return;
    CHECK_STR(conf->password_query, "SELECT NULL AS password, 'imap2.example.com' AS host, "
                                    "'This server is down, try another one.' AS reason, 'Y' "
                                    "as nologin, 'Y' as nodelay");
    CHECK_INT(conf->connect.port, 3307);
    sql_conf_free(&conf);
}

static void test_file_syntax(void)
{
    struct sql_conf *conf = parse(
        "  # indented comment\r\n"
        "driver=mysql\r\n"
        "connect = \"host=a password=x\"\r\n"
        "password_query = SELECT '#not a comment' AS reason FROM t WHERE u='%u'   \r\n"
        "default_pass_scheme = 'SHA512-CRYPT'\n"
        "iterate_query = SELECT 1\n"
        "userdb_warning_disable = yes\n"
        "password_query = \"SELECT \\\"q\\\" FROM t\"\n"
        "connect = host=b \\");
    CHECK(conf != NULL);
    if (conf == NULL)
        return;
    /* The last assignment wins; quotes and escapes go. */
    CHECK_STR(conf->password_query, "SELECT \"q\" FROM t");
    CHECK_STR(conf->default_pass_scheme, "SHA512-CRYPT");
    /* A file ending after '\' keeps what it had. */
    CHECK_INT(conf->connect.n_hosts, 1);
    CHECK_STR(conf->connect.hosts[0], "b");
    sql_conf_free(&conf);

    conf = parse("driver = mysql\nconnect = host=a\n");
    CHECK(conf != NULL && strstr(conf->password_query, "FROM users") != NULL);
    sql_conf_free(&conf);

    conf = parse("driver = mysql\nconnect = host=a\npassword_query = SELECT x # trailing\n");
    CHECK(conf != NULL && str_eq(conf->password_query, "SELECT x # trailing"));
    sql_conf_free(&conf);
}

static void test_file_errors(void)
{
    CHECK_ERROR("driver = pgsql\n", "t.conf:1: only driver = mysql");
    CHECK_ERROR("driver = mysql\nfoo = bar\n", "t.conf:2: unknown setting 'foo'");
    CHECK_ERROR("driver = mysql\njust words\n", "t.conf:2: expected 'key = value'");
    CHECK_ERROR("driver = mysql\n= x\n", "t.conf:2: expected");
    CHECK_ERROR("!include other.conf\n", "!include is not supported");
    CHECK_ERROR("connect = host=a\n", "driver = mysql is missing");
    CHECK_ERROR("driver = mysql\n", "connect is missing");
    CHECK_ERROR("driver = mysql\nconnect = host=a\npassword_query =\n",
                "password_query is empty");
    CHECK_ERROR("driver = mysql\0\nconnect = host=a\n", "NUL byte");
    CHECK_ERROR("driver = mysql\n\n# c\nconnect = host=a \\\n  port=0\n",
                "t.conf:4: connect: invalid value for port");
    CHECK_ERROR("driver = mysql\nconnect = host=a bogus=1\n",
                "connect: unknown setting 'bogus'");
}

static struct sql_connect connect_ok(const char *str)
{
    struct sql_connect c;
    char *error = NULL;
    bool ok = sql_connect_parse(&c, str, &error);
    CHECK(ok);
    if (!ok) {
        fprintf(stderr, "  %s: %s\n", str, error);
        free(error);
        memset(&c, 0, sizeof(c));
    }
    return c;
}

static void check_connect_error(const char *str, const char *want)
{
    struct sql_connect c;
    char *error = NULL;
    CHECK(!sql_connect_parse(&c, str, &error));
    CHECK(error != NULL && strstr(error, want) != NULL);
    if (error == NULL || strstr(error, want) == NULL)
        fprintf(stderr, "  for %s: got \"%s\", want \"%s\"\n", str, error ? error : "", want);
    free(error);
}

static void test_connect(void)
{
    struct sql_connect c = connect_ok(
        "host=h1  host=/var/run/db.sock\tport=3307 dbname=mail user=u password=\"a b\\\"c\" "
        "maxconns=3 connect_timeout=2 read_timeout=500ms ssl_ca=/etc/ca.pem ssl_cert=/c "
        "ssl_key=/k ssl_cipher=HIGH ssl_ca_path=/etc/ssl ssl_verify_server_cert=yes "
        "client_flags=2 option_file=/etc/my.cnf option_group=client write_timeout=9");
    CHECK_INT(c.n_hosts, 2);
    CHECK_STR(c.hosts[1], "/var/run/db.sock");
    CHECK_INT(c.port, 3307);
    CHECK_STR(c.password, "a b\"c");
    CHECK_INT(c.max_connections, 3);
    CHECK_INT(c.connect_timeout_ms, 2000);
    CHECK_INT(c.query_timeout_ms, 500);
    CHECK_STR(c.ssl_ca, "/etc/ca.pem");
    CHECK_STR(c.ssl_ca_path, "/etc/ssl");
    CHECK_STR(c.ssl_cipher, "HIGH");
    CHECK(c.ssl_verify_server_cert);
    CHECK_INT(c.client_flags, 2);
    CHECK_STR(c.option_group, "client");
    sql_connect_clear(&c);

    c = connect_ok("max_connections=7 query_timeout=45");
    CHECK_INT(c.max_connections, 7);
    CHECK_INT(c.query_timeout_ms, 45000);
    CHECK_INT(c.n_hosts, 1);
    CHECK_STR(c.hosts[0], "localhost");
    sql_connect_clear(&c);

    c = connect_ok("");
    CHECK_INT(c.n_hosts, 1);
    sql_connect_clear(&c);

    check_connect_error("host=", "empty host");
    check_connect_error("host", "expected key=value");
    check_connect_error("=x", "expected key=value");
    check_connect_error("port=99999", "invalid value for port");
    check_connect_error("maxconns=0", "invalid value for maxconns");
    check_connect_error("connect_timeout=soon", "invalid value for connect_timeout");
    check_connect_error("ssl_verify_server_cert=maybe", "invalid value");
    check_connect_error("password=\"open", "unterminated quote");
    check_connect_error("sslmode=require", "unknown setting 'sslmode'");
    /* A bad value is never echoed: it may be a password in the wrong key. */
    char *error = NULL;
    struct sql_connect tmp;
    CHECK(!sql_connect_parse(&tmp, "port=hunter2", &error));
    CHECK(error != NULL && strstr(error, "hunter2") == NULL);
    free(error);
}

/* Row mapping */

static void test_row_fields(void)
{
    const char *names[] = {"password", "host", "proxy", "destuser", "nologin", "", "reason"};
    const char *values[] = {"{PLAIN}x", "10.0.0.1", "Y", "", NULL, "ignored", "a=b c"};
    const unsigned long lengths[] = {8, 8, 1, 0, 0, 7, 5};
    struct sql_row row = {names, values, lengths, 7};
    struct fields f = FIELDS_INIT;
    const char *error = NULL;
    CHECK(sql_row_to_fields(&row, "MD5-CRYPT", &f, &error));
    CHECK_INT(f.n, 5);
    CHECK_STR(fields_get(&f, "password"), "{PLAIN}x");
    CHECK_STR(fields_get(&f, "host"), "10.0.0.1");
    CHECK_STR(fields_get(&f, "proxy"), "Y");
    CHECK(fields_has(&f, "destuser") && str_eq(fields_get(&f, "destuser"), ""));
    CHECK(!fields_has(&f, "nologin")); /* SQL NULL = absent */
    CHECK_STR(fields_get(&f, "reason"), "a=b c");
    fields_free(&f);

    const char *n2[] = {"password_noscheme", "user"};
    const char *v2[] = {"{not a scheme", "Real@Example.com"};
    const unsigned long l2[] = {13, 16};
    struct sql_row row2 = {n2, v2, l2, 2};
    CHECK(sql_row_to_fields(&row2, "PLAIN", &f, &error));
    CHECK_STR(fields_get(&f, "password"), "{PLAIN}{not a scheme");
    CHECK_STR(fields_get(&f, "user"), "Real@Example.com");
    fields_free(&f);

    const char *n3[] = {"host"};
    const char *v3[] = {"10.0.0.1\0evil"};
    const unsigned long l3[] = {13};
    struct sql_row row3 = {n3, v3, l3, 1};
    CHECK(!sql_row_to_fields(&row3, "PLAIN", &f, &error));
    CHECK(error != NULL && strstr(error, "NUL") != NULL);
    fields_free(&f);
}

int main(void)
{
    RUN(test_reference_proxy_table);
    RUN(test_reference_proxy_maybe);
    RUN(test_reference_referral);
    RUN(test_file_syntax);
    RUN(test_file_errors);
    RUN(test_connect);
    RUN(test_row_fields);
    return test_done();
}
