#include "auth/auth.h"

#include <string.h>
#include <strings.h>

#include "util/id.h"
#include "util/sha256.h"

void auth_token_new(char out[AUTH_TOKEN_MAX])
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char r[32];
    id_random(r, sizeof r);
    char *o = out;
    memcpy(o, "ckt_", 4);
    o += 4;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < sizeof r; i++) {
        acc = (acc << 8) | r[i];
        bits += 8;
        while (bits >= 6) {
            *o++ = b64[(acc >> (bits - 6)) & 63];
            bits -= 6;
        }
    }
    if (bits)
        *o++ = b64[(acc << (6 - bits)) & 63];
    *o = 0;
    memset(r, 0, sizeof r);
}

void auth_token_hash(const char *token, size_t len, char out[AUTH_HASH_HEX])
{
    unsigned char h[SHA256_LEN];
    sha256(token, len, h);
    id_hex(h, sizeof h, out);
}

int auth_bearer(const char *header, const char **token)
{
    if (!header || strncasecmp(header, "Bearer ", 7))
        return -1;
    const char *t = header + 7;
    while (*t == ' ')
        t++;
    size_t n = strlen(t);
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= AUTH_TOKEN_MAX)
        return -1;
    *token = t;
    return (int)n;
}
