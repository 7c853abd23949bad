/* Base64 (RFC 4648): the standard alphabet with padding, or base64url without padding. */
#ifndef CK_BASE64_H
#define CK_BASE64_H
#include <stddef.h>

/* Encoded length of n bytes, without the NUL. */
size_t base64_len(size_t n, int url);
/* Writes base64_len(n, url) characters and a NUL to out. */
void base64_encode(const void *src, size_t n, char *out, int url);
/* Decodes either alphabet; padding optional, whitespace not allowed. out needs n * 3 / 4 + 1
 * bytes. Returns the decoded length, or -1 on a character outside the alphabet. */
long base64_decode(const char *src, size_t n, unsigned char *out);

#endif
