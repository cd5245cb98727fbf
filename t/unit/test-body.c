/* test-body - tests of an LMTP transaction's body store: bytes read back
 * exactly at every offset, in memory (across chunk boundaries) and after
 * spooling; memory released as readers advance; the threshold, explicit
 * spooling and the writer's hold that ends in a spool when readers stall. */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "body.h"
#include "loop.h"
#include "test.h"

static char tmpdir[] = "/tmp/test-body.XXXXXX";

/* Byte i of every test body: a pattern that does not repeat with any chunk
 * size, so a byte from the wrong offset shows. */
static char byte_at(uint64_t i)
{
    return (char)('a' + (i * 7 + i / 251) % 26);
}

static void append_pattern(struct body *b, uint64_t from, size_t n)
{
    char *p = malloc(n > 0 ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = byte_at(from + i);
    const char *err = NULL;
    CHECK(body_append(b, p, n, &err));
    CHECK(err == NULL);
    free(p);
}

/* Read [from, to) back in pieces of at most max bytes and compare. */
static void check_read(struct body *b, uint64_t from, uint64_t to, size_t max)
{
    char *scratch = malloc(max);
    uint64_t off = from;
    bool ok = true;
    while (off < to && ok) {
        const char *p = NULL;
        long n = body_read(b, off, scratch, max, &p);
        CHECK(n > 0 && (size_t)n <= max);
        if (n <= 0)
            break;
        for (long i = 0; i < n && ok; i++)
            ok = p[i] == byte_at(off + (uint64_t)i);
        off += (uint64_t)n;
    }
    CHECK(ok);
    CHECK(off == to);
    const char *p;
    CHECK_INT(body_read(b, to, scratch, max, &p), 0); /* the end */
    free(scratch);
}

static void test_memory_read_back(void)
{
    static const size_t sizes[] = {1, 100, 4095, 4096, 4097, 65536, 65537, 200000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        struct body *b = body_new(1024 * 1024, tmpdir);
        uint64_t size = 0;
        /* appends of varied sizes, so chunks fill across calls */
        for (size_t n = sizes[i]; size < 300000; n = n * 3 / 2 + 1) {
            append_pattern(b, size, n);
            size += n;
        }
        CHECK_INT(body_size(b), size);
        CHECK(!body_spooled(b));
        check_read(b, 0, size, 65536);
        check_read(b, 12345, size, 1000);
        body_free(&b);
        CHECK(b == NULL);
    }
}

/* Readers advance, memory goes; reading back before the release fails. */
static void test_release(void)
{
    struct body *b = body_new(1024 * 1024, tmpdir);
    char scratch[16];
    const char *p;
    append_pattern(b, 0, 150000);
    body_release(b, 70000);
    check_read(b, 70000, 150000, 4096);
    CHECK_INT(body_read(b, 69999, scratch, sizeof(scratch), &p), -1);
    /* all consumed, then more: the last chunk is used again from its start */
    body_release(b, 150000);
    append_pattern(b, 150000, 100);
    check_read(b, 150000, 150100, 4096);
    body_release(b, 150050);
    append_pattern(b, 150100, 100000);
    check_read(b, 150050, 250100, 30000);
    body_release(b, 1000000); /* past the end: up to the end */
    CHECK_INT(body_read(b, 250099, scratch, sizeof(scratch), &p), -1);
    append_pattern(b, 250100, 10);
    check_read(b, 250100, 250110, 4096);
    body_free(&b);
}

/* The window reaching the threshold makes the body full; the next append
 * spools, and only what the readers still need is read back (from the
 * file, in pieces of at most max). */
static void test_threshold_spools(void)
{
    struct body *b = body_new(10000, tmpdir);
    append_pattern(b, 0, 9999);
    CHECK(!body_full(b));
    append_pattern(b, 9999, 1);
    CHECK(body_full(b));
    CHECK(!body_spooled(b));
    body_release(b, 10);
    CHECK(!body_full(b));
    append_pattern(b, 10000, 5000); /* allowed past the threshold by one append */
    CHECK(!body_spooled(b));
    CHECK(body_full(b));
    append_pattern(b, 15000, 20000);
    CHECK(body_spooled(b));
    CHECK(!body_full(b)); /* a spooled body is never full */
    check_read(b, 10, 35000, 4096);
    body_release(b, 20000);
    append_pattern(b, 35000, 70000);
    check_read(b, 20000, 105000, 777);
    body_free(&b);
}

static void test_threshold_zero(void)
{
    struct body *b = body_new(0, tmpdir);
    CHECK(body_full(b));
    append_pattern(b, 0, 100);
    CHECK(body_spooled(b));
    check_read(b, 0, 100, 64);
    body_free(&b);
}

static void test_spool_explicitly(void)
{
    const char *err = NULL;
    struct body *b = body_new(1024 * 1024, tmpdir);
    append_pattern(b, 0, 140000);
    body_release(b, 65536 + 3); /* inside the second chunk */
    CHECK(body_spool(b, &err));
    CHECK(body_spooled(b));
    CHECK(body_spool(b, &err)); /* again: nothing to do */
    append_pattern(b, 140000, 1000);
    check_read(b, 65536 + 3, 141000, 65536);
    body_free(&b);

    b = body_new(1024, "/nonexistent-dir");
    append_pattern(b, 0, 10);
    CHECK(!body_spool(b, &err));
    CHECK(err != NULL);
    CHECK(!body_spooled(b));
    check_read(b, 0, 10, 64); /* still in memory */
    body_free(&b);
}

/* --- the writer's hold --- */

struct hold_test {
    struct loop *loop;
    struct body *body;
    int woken;
};

static void on_woken(void *ctx)
{
    struct hold_test *h = ctx;
    h->woken++;
    loop_stop(h->loop);
}

static void on_give_up(void *ctx)
{
    loop_stop(ctx);
}

/* Nobody reads: after the hold time the body spools itself and wakes the
 * writer, once, however often the writer said it holds. */
static void test_hold_ends_in_spool(void)
{
    struct hold_test h = {loop_new(), body_new(1000, tmpdir), 0};
    struct timer *give_up = timer_new(h.loop, on_give_up, h.loop);
    body_set_hold(h.body, h.loop, 20, 1000, on_woken, &h);
    append_pattern(h.body, 0, 999);
    CHECK(!body_hold(h.body)); /* not full */
    append_pattern(h.body, 999, 1);
    CHECK(body_full(h.body));
    CHECK(body_hold(h.body));
    CHECK(body_hold(h.body));
    timer_start(give_up, 5000);
    loop_run(h.loop);
    CHECK_INT(h.woken, 1);
    CHECK(body_spooled(h.body));
    CHECK(!body_full(h.body));
    CHECK(!body_hold(h.body));
    append_pattern(h.body, 1000, 100);
    check_read(h.body, 0, 1100, 512);
    timer_free(&give_up);
    body_free(&h.body);
    loop_free(&h.loop);
}

static void on_reader(void *ctx)
{
    struct hold_test *h = ctx;
    body_release(h->body, 500);
}

/* A reader makes room before the hold time: no spool, no wake-up from the
 * body (the reader's side wakes the writer). */
static void test_hold_ends_with_room(void)
{
    struct hold_test h = {loop_new(), body_new(1000, tmpdir), 0};
    struct timer *reader = timer_new(h.loop, on_reader, &h);
    struct timer *give_up = timer_new(h.loop, on_give_up, h.loop);
    body_set_hold(h.body, h.loop, 100, 1000, on_woken, &h);
    append_pattern(h.body, 0, 1000);
    CHECK(body_hold(h.body));
    timer_start(reader, 10);
    timer_start(give_up, 300);
    loop_run(h.loop);
    CHECK_INT(h.woken, 0);
    CHECK(!body_spooled(h.body));
    CHECK(!body_full(h.body));
    timer_free(&reader);
    timer_free(&give_up);
    body_free(&h.body);
    loop_free(&h.loop);
}

static void on_reader_again(void *ctx)
{
    struct hold_test *h = ctx;
    uint64_t size = body_size(h->body);
    body_release(h->body, size);
    append_pattern(h->body, size, 1000);
    if (!body_hold(h->body))
        loop_stop(h->loop);
}

/* Short holds add up: a reader that makes room every 10 ms, but never
 * before the writer has to hold again, gets the body spooled once the
 * total is used up, long before any single hold reaches its limit. */
static void test_holds_add_up(void)
{
    struct hold_test h = {loop_new(), body_new(1000, tmpdir), 0};
    struct timer *reader = timer_new(h.loop, on_reader_again, &h);
    struct timer *give_up = timer_new(h.loop, on_give_up, h.loop);
    body_set_hold(h.body, h.loop, 1000, 60, on_woken, &h);
    append_pattern(h.body, 0, 1000);
    CHECK(body_hold(h.body));
    timer_start_repeat(reader, 10);
    timer_start(give_up, 900);
    loop_run(h.loop);
    CHECK(body_spooled(h.body));
    timer_free(&reader);
    timer_free(&give_up);
    body_free(&h.body);
    loop_free(&h.loop);
}

/* A writer without flow control never holds. */
static void test_no_hold_without_set(void)
{
    struct body *b = body_new(10, tmpdir);
    append_pattern(b, 0, 10);
    CHECK(body_full(b));
    CHECK(!body_hold(b));
    body_free(&b);
}

/* Freeing a body while the writer holds stops its timer. */
static void test_hold_then_free(void)
{
    struct hold_test h = {loop_new(), body_new(10, tmpdir), 0};
    struct timer *give_up = timer_new(h.loop, on_give_up, h.loop);
    body_set_hold(h.body, h.loop, 10, 1000, on_woken, &h);
    append_pattern(h.body, 0, 10);
    CHECK(body_hold(h.body));
    body_free(&h.body);
    timer_start(give_up, 50);
    loop_run(h.loop);
    CHECK_INT(h.woken, 0);
    timer_free(&give_up);
    loop_free(&h.loop);
}

int main(void)
{
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_memory_read_back);
    RUN(test_release);
    RUN(test_threshold_spools);
    RUN(test_threshold_zero);
    RUN(test_spool_explicitly);
    RUN(test_hold_ends_in_spool);
    RUN(test_hold_ends_with_room);
    RUN(test_holds_add_up);
    RUN(test_no_hold_without_set);
    RUN(test_hold_then_free);
    rmdir(tmpdir); /* spool files are unlinked at once: the directory is empty */
    return test_done();
}
