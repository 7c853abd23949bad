/* Random identifiers and secrets from the kernel CSPRNG. */
#ifndef CK_ID_H
#define CK_ID_H
#include <stddef.h>

#define ID_RANDOM_HEX 24 /* 96 random bits */
#define ID_MAX 48        /* room for any prefix we use + NUL */

/* Fills out with prefix + "_" + 24 lowercase hex chars, e.g. "thr_…". */
void id_new(const char *prefix, char out[ID_MAX]);
/* Fills buf with n random bytes. */
void id_random(void *buf, size_t n);
/* Lowercase hex of n bytes into out (2n+1 bytes). */
void id_hex(const unsigned char *in, size_t n, char *out);

#endif
