#include "sid.h"

#include <sys/random.h>
#include <sys/time.h>

static const char sidchars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* splitmix64 over a per-thread state seeded once from the OS: ids and
 * jitter need uniqueness and spread, not secrecy, and a getrandom() call
 * per recipient showed up in the profile. */
static __thread uint64_t prng_state;
static __thread int prng_seeded;

uint64_t random_u64(void)
{
    if (!prng_seeded) {
        if (getrandom(&prng_state, sizeof(prng_state), 0) != (ssize_t)sizeof(prng_state)) {
            struct timeval tv;
            gettimeofday(&tv, NULL);
            prng_state = (uint64_t)tv.tv_usec * 6364136223846793005ULL ^ (uint64_t)tv.tv_sec;
        }
        prng_seeded = 1;
    }
    uint64_t z = (prng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void sid_new(char out[SID_LEN + 1])
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t t = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
    uint64_t r = random_u64();
    for (int i = 0; i < 8; i++)
        out[i] = sidchars[(t >> (42 - 6 * i)) & 63];
    for (int i = 0; i < 8; i++)
        out[8 + i] = sidchars[(r >> (6 * i)) & 63];
    out[SID_LEN] = '\0';
}
