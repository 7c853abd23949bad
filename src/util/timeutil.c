#include "util/timeutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t ts_now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

void ts_format(int64_t us, char out[TS_MAX])
{
    time_t s = (time_t)(us / 1000000);
    long frac = (long)(us % 1000000);
    if (frac < 0) {
        frac += 1000000;
        s -= 1;
    }
    struct tm tm;
    gmtime_r(&s, &tm);
    /* hand-formatted: hot path, and keeps the width fixed whatever the compiler assumes */
    unsigned y = (unsigned)(tm.tm_year + 1900) % 10000;
    unsigned v[] = {(unsigned)tm.tm_mon + 1, (unsigned)tm.tm_mday, (unsigned)tm.tm_hour,
                    (unsigned)tm.tm_min, (unsigned)tm.tm_sec};
    char *o = out;
    *o++ = (char)('0' + y / 1000);
    *o++ = (char)('0' + y / 100 % 10);
    *o++ = (char)('0' + y / 10 % 10);
    *o++ = (char)('0' + y % 10);
    static const char seps[] = "--T::";
    for (int i = 0; i < 5; i++) {
        *o++ = seps[i];
        *o++ = (char)('0' + v[i] / 10 % 10);
        *o++ = (char)('0' + v[i] % 10);
    }
    *o++ = '.';
    unsigned f = (unsigned)frac;
    for (int i = 5; i >= 0; i--) {
        o[i] = (char)('0' + f % 10);
        f /= 10;
    }
    o += 6;
    *o++ = 'Z';
    *o = 0;
}

int ts_parse(const char *s, int64_t *us)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6)
        return -EINVAL;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    long frac = 0;
    const char *p = s + n;
    if (*p == '.') {
        int digits = 0;
        p++;
        while (*p >= '0' && *p <= '9') {
            if (digits < 6) {
                frac = frac * 10 + (*p - '0');
                digits++;
            }
            p++;
        }
        while (digits++ < 6)
            frac *= 10;
    }
    if (*p == 'Z')
        p++;
    if (*p)
        return -EINVAL;
    time_t t = timegm(&tm);
    *us = (int64_t)t * 1000000 + frac;
    return 0;
}
