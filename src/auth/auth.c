#include "auth/auth.h"

#include <string.h>
#include <strings.h>

#include "util/base64.h"
#include "util/id.h"
#include "util/sha256.h"

void auth_token_new(char out[AUTH_TOKEN_MAX])
{
    auth_token_new_kind(out, "ckt_");
}

void auth_token_new_kind(char out[AUTH_TOKEN_MAX], const char prefix[5])
{
    unsigned char r[32];
    id_random(r, sizeof r);
    memcpy(out, prefix, 4);
    base64_encode(r, sizeof r, out + 4, 1);
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
    if (n == 0 || n > AUTH_BEARER_MAX)
        return -1;
    *token = t;
    return (int)n;
}

int auth_cookie(const char *header, const char *name, const char **value)
{
    size_t nl = strlen(name);
    for (const char *p = header; p && *p;) {
        while (*p == ' ' || *p == ';')
            p++;
        const char *e = strchr(p, ';');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > nl && p[nl] == '=' && !strncmp(p, name, nl)) {
            const char *v = p + nl + 1;
            size_t vl = len - nl - 1;
            while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
                v++;
                vl -= 2;
            }
            if (!vl || vl >= AUTH_TOKEN_MAX)
                return -1;
            *value = v;
            return (int)vl;
        }
        p = e;
    }
    return -1;
}
