#include "sid.h"

#include <sys/random.h>
#include <sys/time.h>

static const char sidchars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

uint64_t random_u64(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        v = (uint64_t)tv.tv_usec * 6364136223846793005ULL + (uint64_t)tv.tv_sec;
    }
    return v;
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
