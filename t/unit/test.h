/* test.h - a tiny unit test harness: table-driven cases, asserts that print
 * file, line and both values, and a non-zero exit when anything failed.
 *
 *   static void test_parse(void) { CHECK_INT(parse("1"), 1); CHECK_STR(x, "y"); }
 *   int main(void) { RUN(test_parse); return test_done(); }
 */
#ifndef MR_TEST_H
#define MR_TEST_H

#include <stdio.h>
#include <string.h>

static int test_failures;
static int test_checks;
static const char *test_current = "";

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        test_checks++;                                                                   \
        if (!(cond)) {                                                                   \
            test_failures++;                                                             \
            fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__,       \
                    test_current, #cond);                                                \
        }                                                                                \
    } while (0)

#define CHECK_INT(got, want)                                                             \
    do {                                                                                 \
        long long g_ = (long long)(got), w_ = (long long)(want);                         \
        test_checks++;                                                                   \
        if (g_ != w_) {                                                                  \
            test_failures++;                                                             \
            fprintf(stderr, "%s:%d: %s: %s = %lld, want %lld\n", __FILE__, __LINE__,    \
                    test_current, #got, g_, w_);                                         \
        }                                                                                \
    } while (0)

#define CHECK_STR(got, want)                                                             \
    do {                                                                                 \
        const char *g_ = (got), *w_ = (want);                                            \
        test_checks++;                                                                   \
        if ((g_ == NULL) != (w_ == NULL) || (g_ != NULL && strcmp(g_, w_) != 0)) {       \
            test_failures++;                                                             \
            fprintf(stderr, "%s:%d: %s: %s = \"%s\", want \"%s\"\n", __FILE__, __LINE__, \
                    test_current, #got, g_ ? g_ : "(null)", w_ ? w_ : "(null)");         \
        }                                                                                \
    } while (0)

#define RUN(fn)                                                                          \
    do {                                                                                 \
        test_current = #fn;                                                              \
        fn();                                                                            \
    } while (0)

static inline int test_done(void)
{
    printf("%d checks, %d failed\n", test_checks, test_failures);
    return test_failures == 0 ? 0 : 1;
}

#endif
