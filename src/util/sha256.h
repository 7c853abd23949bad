/* SHA-256 (FIPS 180-4). In-tree because OpenSSL 3 touches megabytes of its code just to set up
 * its providers for one digest, and token hashing is all we need from it so far. */
#ifndef CK_SHA256_H
#define CK_SHA256_H
#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32

typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t bytes;
    unsigned char block[64];
    size_t fill;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_final(sha256_ctx *c, unsigned char out[SHA256_LEN]);
void sha256(const void *data, size_t len, unsigned char out[SHA256_LEN]);

#endif
