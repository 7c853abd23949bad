#include "util/id.h"

#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <string.h>
#include <sys/random.h>

#include "util/log.h"

/* Per-thread pool so an id costs no syscall most of the time. */
static __thread unsigned char pool[512];
static __thread size_t pool_left;

void id_random(void *buf, size_t n)
{
    unsigned char *o = buf;
    while (n) {
        if (!pool_left) {
            size_t got = 0;
            while (got < sizeof pool) {
                ssize_t r = getrandom(pool + got, sizeof pool - got, 0);
                if (r < 0)
                    log_oom(); /* no entropy source: cannot mint safe ids */
                got += (size_t)r;
            }
            pool_left = sizeof pool;
        }
        size_t take = n < pool_left ? n : pool_left;
        memcpy(o, pool + sizeof pool - pool_left, take);
        /* wipe what was handed out so secrets do not linger */
        memset(pool + sizeof pool - pool_left, 0, take);
        pool_left -= take;
        o += take;
        n -= take;
    }
}

void id_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = 0;
}

void id_new(const char *prefix, char out[ID_MAX])
{
    static const char hx[] = "0123456789abcdef";
    unsigned char r[ID_RANDOM_HEX / 2];
    id_random(r, sizeof r);
    size_t pl = strlen(prefix);
    if (pl > ID_MAX - ID_TIME_HEX - ID_RANDOM_HEX - 2)
        pl = ID_MAX - ID_TIME_HEX - ID_RANDOM_HEX - 2;
    memcpy(out, prefix, pl);
    out[pl] = '_';
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    uint64_t ms = (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
    char *o = out + pl + 1;
    for (int i = ID_TIME_HEX - 1; i >= 0; i--, ms >>= 4)
        o[i] = hx[ms & 15];
    id_hex(r, sizeof r, o + ID_TIME_HEX);
}
