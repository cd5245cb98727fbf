/* mem - allocation that never returns NULL.
 *
 * mailroute bounds memory with per-connection limits, not with NULL checks
 * scattered through the code: an allocation failure is fatal. */
#ifndef MR_MEM_H
#define MR_MEM_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Like asprintf(), aborting on failure. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Wipe a secret (password, SASL payload) so it does not linger in memory. */
void mem_wipe(void *p, size_t n);

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
