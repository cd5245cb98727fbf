/* sid - session identifiers: short, unique, safe in logs and protocol lines.
 *
 * 16 characters of URL-safe base64 over 96 bits: 48 bits of time in
 * microseconds, 48 random bits. Thread-safe. */
#ifndef MR_SID_H
#define MR_SID_H

#include <stddef.h>
#include <stdint.h>

#define SID_LEN 16

void sid_new(char out[SID_LEN + 1]);
/* A pseudo-random 64-bit number (per-thread generator seeded from the OS),
 * for jitter and ids; not for secrets. */
uint64_t random_u64(void);

#endif
