/* Wall-clock time in microseconds and its ISO-8601 form. */
#ifndef CK_TIMEUTIL_H
#define CK_TIMEUTIL_H
#include <stdint.h>

#define TS_MAX 32

int64_t ts_now_us(void);
/* "2026-05-19T12:34:56.123456Z" (UTC, always 6 fraction digits). */
void ts_format(int64_t us, char out[TS_MAX]);
/* Parses the forms ts_format writes (also without fraction / Z). Returns 0 or -EINVAL. */
int ts_parse(const char *s, int64_t *us);

#endif
