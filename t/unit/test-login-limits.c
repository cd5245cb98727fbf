/* test-login-limits - sessions per user+IP, the failure penalty and the
 * backend health table, including their edges (limits, caps, /64s). */
#include <stdlib.h>

#include "addr.h"
#include "login-limits.h"
#include "test.h"

static struct addr ip(const char *text)
{
    struct addr a;
    if (!addr_parse_ip_port(text, &a) && !addr_parse_ip(text, &a))
        abort();
    return a;
}

static void test_userip(void)
{
    struct addr a = ip("192.0.2.1"), b = ip("192.0.2.2");
    CHECK(userip_acquire("u", &a, 2));
    CHECK(userip_acquire("u", &a, 2));
    CHECK(!userip_acquire("u", &a, 2));
    CHECK(userip_acquire("u", &b, 2));       /* another address */
    CHECK(userip_acquire("other", &a, 2));   /* another user */
    CHECK(userip_acquire("u", &a, 0));       /* no limit: not even counted */
    CHECK_INT(userip_count("u", &a), 2);
    userip_release("u", &a);
    CHECK_INT(userip_count("u", &a), 1);
    CHECK(userip_acquire("u", &a, 2));
    userip_release("u", &a);
    userip_release("u", &a);
    userip_release("u", &b);
    userip_release("other", &a);
    userip_release("u", &a);                 /* one too many: ignored */
    CHECK_INT(userip_count("u", &a), 0);
    CHECK_INT(userip_count("other", &a), 0);
}

static void test_penalty(void)
{
    struct addr a = ip("198.51.100.7"), v6a = ip("2001:db8:1:2::1"), v6b = ip("2001:db8:1:2::99"),
                v6c = ip("2001:db8:1:3::1");
    uint64_t t = 1000000;
    CHECK_INT(penalty_delay_ms(&a, t, 15000), 0);
    penalty_failed(&a, t);
    CHECK_INT(penalty_delay_ms(&a, t, 15000), 2000);
    CHECK_INT(penalty_delay_ms(&a, t + 500, 15000), 1500); /* time already waited counts */
    CHECK_INT(penalty_delay_ms(&a, t + 5000, 15000), 0);
    CHECK_INT(penalty_delay_ms(&a, t, 0), 0);              /* off */
    penalty_failed(&a, t);
    CHECK_INT(penalty_delay_ms(&a, t, 15000), 4000);
    for (int i = 0; i < 40; i++)
        penalty_failed(&a, t);
    CHECK_INT(penalty_delay_ms(&a, t, 15000), 15000);       /* capped */
    penalty_clear(&a);
    CHECK_INT(penalty_delay_ms(&a, t, 15000), 0);
    /* IPv6 by /64 */
    penalty_failed(&v6a, t);
    CHECK_INT(penalty_delay_ms(&v6b, t, 15000), 2000);
    CHECK_INT(penalty_delay_ms(&v6c, t, 15000), 0);
    penalty_clear(&v6b);
    CHECK_INT(penalty_delay_ms(&v6a, t, 15000), 0);
}

static void test_backend_hosts(void)
{
    struct addr b = ip("127.0.0.1:1143"), other_port = ip("127.0.0.1:1144");
    uint64_t t = 5000000;
    CHECK(!backend_host_down(&b, t, 30000));
    backend_host_wait(&b);                    /* login 1 tries it */
    backend_host_result(&b, false, t);
    CHECK(!backend_host_down(&b, t + 29000, 30000)); /* not for long enough */
    CHECK(backend_host_down(&b, t + 31000, 30000));
    CHECK(!backend_host_down(&b, t + 31000, 0));     /* off */
    CHECK(!backend_host_down(&other_port, t + 31000, 30000));
    backend_host_result(&b, false, t + 31000);        /* still failing: the clock keeps */
    CHECK(backend_host_down(&b, t + 32000, 30000));
    backend_host_unwait(&b);                  /* nobody tries it now: the next login probes */
    CHECK(!backend_host_down(&b, t + 32000, 30000));
    backend_host_wait(&b);
    backend_host_result(&b, true, t + 33000); /* it works again */
    CHECK(!backend_host_down(&b, t + 99000, 30000));
    backend_host_unwait(&b);
    backend_hosts_free();
    CHECK(!backend_host_down(&b, t, 30000));
}

int main(void)
{
    RUN(test_userip);
    RUN(test_penalty);
    RUN(test_backend_hosts);
    return test_done();
}
