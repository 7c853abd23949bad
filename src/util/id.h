/* Random identifiers and secrets from the kernel CSPRNG. */
#ifndef CK_ID_H
#define CK_ID_H
#include <stddef.h>

#define ID_RANDOM_HEX 24 /* 96 random bits */
#define ID_TIME_HEX 11   /* milliseconds since the epoch (good until the year 2527) */
#define ID_MAX 48        /* room for any prefix we use + NUL */

/* Fills out with prefix + "_" + 11 hex chars of the current millisecond + 24 random hex chars,
 * e.g. "thr_19ab3c4d5e6f0123456789abcdef0123". Ids sort by creation time, so rows inserted
 * together land on the same index pages (random ids scatter every insert over the B-trees). */
void id_new(const char *prefix, char out[ID_MAX]);
/* Fills buf with n random bytes. */
void id_random(void *buf, size_t n);
/* Lowercase hex of n bytes into out (2n+1 bytes). */
void id_hex(const unsigned char *in, size_t n, char *out);

#endif
