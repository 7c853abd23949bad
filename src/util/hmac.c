#include "util/hmac.h"

#include <string.h>

#define BLOCK 64

/* memset that the optimiser cannot drop: the buffers hold key material. */
static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

void hmac_sha256_init(hmac_sha256_ctx *c, const void *key, size_t key_len)
{
    unsigned char k[BLOCK] = {0}, ipad[BLOCK];
    if (key_len > BLOCK)
        sha256(key, key_len, k); /* RFC 2104: K = H(K), then zero-padded to the block */
    else if (key_len)
        memcpy(k, key, key_len);
    for (int i = 0; i < BLOCK; i++) {
        ipad[i] = k[i] ^ 0x36;
        c->opad[i] = k[i] ^ 0x5c;
    }
    sha256_init(&c->inner);
    sha256_update(&c->inner, ipad, BLOCK);
    wipe(k, sizeof k);
    wipe(ipad, sizeof ipad);
}

void hmac_sha256_update(hmac_sha256_ctx *c, const void *data, size_t len)
{
    sha256_update(&c->inner, data, len);
}

void hmac_sha256_final(hmac_sha256_ctx *c, unsigned char out[HMAC_SHA256_LEN])
{
    unsigned char ih[SHA256_LEN];
    sha256_final(&c->inner, ih);
    sha256_ctx o;
    sha256_init(&o);
    sha256_update(&o, c->opad, BLOCK);
    sha256_update(&o, ih, sizeof ih);
    sha256_final(&o, out);
    wipe(ih, sizeof ih);
    wipe(&o, sizeof o);
    wipe(c, sizeof *c);
}

void hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                 unsigned char out[HMAC_SHA256_LEN])
{
    hmac_sha256_ctx c;
    hmac_sha256_init(&c, key, key_len);
    hmac_sha256_update(&c, data, len);
    hmac_sha256_final(&c, out);
}

int ct_equal(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    /* d in 0..255: (d - 1) >> 8 is all ones only for d == 0, without a data-dependent branch */
    return (int)(((unsigned)d - 1) >> 8 & 1);
}
