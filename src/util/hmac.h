/* HMAC-SHA256 (RFC 2104) on the in-tree SHA-256, and a constant-time compare for MACs. */
#ifndef CK_HMAC_H
#define CK_HMAC_H
#include <stddef.h>

#include "util/sha256.h"

#define HMAC_SHA256_LEN SHA256_LEN

/* Incremental HMAC: init with the key, update any number of times, final. The context holds
 * key-derived state; final wipes it. Keys longer than the 64-byte block are hashed first. */
typedef struct hmac_sha256_ctx {
    sha256_ctx inner;
    unsigned char opad[64];
} hmac_sha256_ctx;

void hmac_sha256_init(hmac_sha256_ctx *c, const void *key, size_t key_len);
void hmac_sha256_update(hmac_sha256_ctx *c, const void *data, size_t len);
void hmac_sha256_final(hmac_sha256_ctx *c, unsigned char out[HMAC_SHA256_LEN]);
/* One shot. */
void hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                 unsigned char out[HMAC_SHA256_LEN]);

/* 1 if the n bytes at a and b are equal, else 0; the time taken depends on n only, never on
 * where the bytes differ. Use it for every MAC or token comparison. (Unprefixed by request:
 * it is the one generic name callers of MACs look for.) */
int ct_equal(const void *a, const void *b, size_t n);

#endif
