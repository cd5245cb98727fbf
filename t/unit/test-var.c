/* test-var - %variable expansion: every variable, every modifier, the
 * escape callback (values only, never template text), and the errors. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "var.h"

static struct passdb_request test_request(void)
{
    struct passdb_request req = {
        .user = "Alice@Example.COM",
        .service = "imap",
        .password = "pa'ss",
        .mech = "PLAIN",
        .session = "sess1",
    };
    addr_parse_ip_port("10.0.0.1:143", &req.local);
    addr_parse_ip_port("192.0.2.7:50000", &req.remote);
    addr_parse_ip_port("10.0.0.2:1143", &req.real_local);
    addr_parse_ip_port("[2001:db8::9]:40000", &req.real_remote);
    return req;
}

/* Expand with the test request; returns a static copy ("<error: ...>" on failure). */
static const char *expand_user(const char *tmpl, const char *user)
{
    static char result[512];
    struct passdb_request req = test_request();
    struct var_ctx ctx = {.req = &req, .user = user, .secured = true};
    struct buf out = BUF_INIT;
    const char *error = NULL;
    if (var_expand(&out, tmpl, &ctx, NULL, NULL, &error)) {
        buf_append(&out, "", 0);
        snprintf(result, sizeof(result), "%s", buf_ptr(&out));
    } else {
        snprintf(result, sizeof(result), "<error: %s>", error);
    }
    buf_free(&out);
    return result;
}

static const char *expand(const char *tmpl)
{
    return expand_user(tmpl, NULL);
}

static void test_short_variables(void)
{
    char pid[32];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    CHECK_STR(expand("%u"), "Alice@Example.COM");
    CHECK_STR(expand("%n"), "Alice");
    CHECK_STR(expand("%d"), "Example.COM");
    CHECK_STR(expand("%s"), "imap");
    CHECK_STR(expand("%r"), "192.0.2.7");
    CHECK_STR(expand("%l"), "10.0.0.1");
    CHECK_STR(expand("%b"), "50000");
    CHECK_STR(expand("%a"), "143");
    CHECK_STR(expand("%m"), "PLAIN");
    CHECK_STR(expand("%w"), "pa'ss");
    CHECK_STR(expand("%c"), "secured");
    CHECK_STR(expand("%p"), pid);
    CHECK_STR(expand("%%"), "%");
    CHECK_STR(expand("100%% sure"), "100% sure");
    CHECK_STR(expand(""), "");
    CHECK_STR(expand("plain text"), "plain text");
}

static void test_long_variables(void)
{
    CHECK_STR(expand("%{user}"), "Alice@Example.COM");
    CHECK_STR(expand("%{username}"), "Alice");
    CHECK_STR(expand("%{domain}"), "Example.COM");
    CHECK_STR(expand("%{service}"), "imap");
    CHECK_STR(expand("%{rip}/%{lip}/%{rport}/%{lport}"), "192.0.2.7/10.0.0.1/50000/143");
    CHECK_STR(expand("%{mech}"), "PLAIN");
    CHECK_STR(expand("%{password}"), "pa'ss");
    CHECK_STR(expand("%{secured}"), "secured");
    CHECK_STR(expand("%{session}"), "sess1");
    CHECK_STR(expand("%{real_rip}"), "2001:db8::9");
    CHECK_STR(expand("%{real_lip}"), "10.0.0.2");
    CHECK_STR(expand("%{real_rport}"), "40000");
    CHECK_STR(expand("%{real_lport}"), "1143");
    CHECK_STR(expand("/var/%{domain}/%{username}/x"), "/var/Example.COM/Alice/x");
}

static void test_domains(void)
{
    /* No '@': %n is the whole name, the domains are empty. */
    CHECK_STR(expand_user("[%n|%d|%{domain_first}|%{domain_last}]", "bob"), "[bob|||]");
    CHECK_STR(expand_user("[%n|%d|%{domain_first}|%{domain_last}]", "bob@a.org"),
              "[bob|a.org|a.org|a.org]");
    /* Several '@': %d starts after the first one. */
    CHECK_STR(expand_user("[%n|%d|%{domain_first}|%{domain_last}]", "u@first@last"),
              "[u|first@last|first|last]");
    CHECK_STR(expand_user("[%n|%d]", "@dom"), "[|dom]");
    CHECK_STR(expand_user("[%n|%d]", "user@"), "[user|]");
    /* ctx->user overrides req->user. */
    CHECK_STR(expand_user("%u", "other@x"), "other@x");
}

static void test_modifiers(void)
{
    CHECK_STR(expand("%Lu"), "alice@example.com");
    CHECK_STR(expand("%Uu"), "ALICE@EXAMPLE.COM");
    CHECK_STR(expand("%Ln"), "alice");
    CHECK_STR(expand("%Ld"), "example.com");
    CHECK_STR(expand("%L{user}"), "alice@example.com");
    CHECK_STR(expand("%U{domain_last}"), "EXAMPLE.COM");
    CHECK_STR(expand("%Ew"), "pa\\'ss");
    CHECK_STR(expand_user("%Eu", "a\"b\\c"), "a\\\"b\\\\c");
    CHECK_STR(expand_user("[%Tu]", "name  \t"), "[name]");
    CHECK_STR(expand_user("[%Tu]", "  name"), "[  name]");
    /* Combined, applied in the order written. */
    CHECK_STR(expand_user("%LEu", "A'B"), "a\\'b");
    CHECK_STR(expand_user("%TLu", "AB  "), "ab");
    CHECK_STR(expand_user("%LUu", "aB"), "AB");
    CHECK_STR(expand_user("%ULu", "aB"), "ab");
}

static void test_missing_request_values(void)
{
    struct passdb_request req = {.user = "x@y"};
    struct var_ctx ctx = {.req = &req};
    struct buf out = BUF_INIT;
    const char *error;
    CHECK(var_expand(&out, "[%s|%r|%a|%m|%w|%c|%{session}]", &ctx, NULL, NULL, &error));
    CHECK_STR(buf_ptr(&out), "[||0||||]");
    buf_free(&out);
}

/* SQL-style escape: doubles quotes, and marks where values went. */
static void test_escape(struct buf *out, const char *value, void *ctx)
{
    int *calls = ctx;
    (*calls)++;
    buf_append_str(out, "<");
    for (; *value != '\0'; value++) {
        if (*value == '\'')
            buf_append_str(out, "'");
        buf_append(out, value, 1);
    }
    buf_append_str(out, ">");
}

static void test_escape_callback(void)
{
    struct passdb_request req = test_request();
    struct var_ctx ctx = {.req = &req, .user = "o'neil@x.org"};
    struct buf out = BUF_INIT;
    const char *error;
    int calls = 0;
    CHECK(var_expand(&out, "SELECT '%u' WHERE d='%d' AND pw='%w' -- 50%%", &ctx, test_escape,
                     &calls, &error));
    CHECK_STR(buf_ptr(&out),
              "SELECT '<o''neil@x.org>' WHERE d='<x.org>' AND pw='<pa''ss>' -- 50%");
    CHECK_INT(calls, 3);
    /* Modifiers run before the escape: %Lu lowercases, then escapes. */
    buf_reset(&out);
    calls = 0;
    CHECK(var_expand(&out, "%Lu", &ctx, test_escape, &calls, &error));
    CHECK_STR(buf_ptr(&out), "<o''neil@x.org>");
    /* An empty value still goes through the escape. */
    buf_reset(&out);
    ctx.user = "nodomain";
    CHECK(var_expand(&out, "%d", &ctx, test_escape, &calls, &error));
    CHECK_STR(buf_ptr(&out), "<>");
    buf_free(&out);
}

static void check_error(const char *tmpl, const char *want_part)
{
    const char *error = NULL;
    struct buf out = BUF_INIT;
    struct passdb_request req = test_request();
    struct var_ctx ctx = {.req = &req};
    CHECK(!var_check(tmpl, &error));
    CHECK(error != NULL && strstr(error, want_part) != NULL);
    if (error == NULL || strstr(error, want_part) == NULL)
        fprintf(stderr, "  template '%s': error '%s'\n", tmpl, error ? error : "(null)");
    error = NULL;
    CHECK(!var_expand(&out, tmpl, &ctx, NULL, NULL, &error));
    CHECK(error != NULL);
    buf_free(&out);
}

static void test_errors(void)
{
    check_error("%x", "unknown variable %x");
    check_error("/a/%q/b", "%q");
    check_error("%{nosuch}", "%{nosuch}");
    check_error("%L{}", "unknown variable");
    check_error("%{user", "unterminated");
    check_error("abc%", "incomplete");
    check_error("%L", "incomplete");
    check_error("%LLLLLLLLLu", "too many");
    check_error("%Z", "unknown variable %Z");
}

static void test_check_ok(void)
{
    const char *error = NULL;
    CHECK(var_check("", &error));
    CHECK(var_check("/etc/users/%d", &error));
    CHECK(var_check("%Lu %Ln %Ld %{domain_first} %% %{real_rip} %TEw", &error));
    CHECK(error == NULL);
}

int main(void)
{
    RUN(test_short_variables);
    RUN(test_long_variables);
    RUN(test_domains);
    RUN(test_modifiers);
    RUN(test_missing_request_values);
    RUN(test_escape_callback);
    RUN(test_errors);
    RUN(test_check_ok);
    return test_done();
}
