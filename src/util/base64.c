#include "util/base64.h"

static const char std_abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t base64_len(size_t n, int url)
{
    return url ? (n * 8 + 5) / 6 : (n + 2) / 3 * 4;
}

void base64_encode(const void *src, size_t n, char *out, int url)
{
    const char *abc = url ? url_abc : std_abc;
    const unsigned char *p = src;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | p[i];
        bits += 8;
        while (bits >= 6) {
            *out++ = abc[(acc >> (bits - 6)) & 63];
            bits -= 6;
        }
    }
    if (bits)
        *out++ = abc[(acc << (6 - bits)) & 63];
    if (!url)
        for (size_t pad = (3 - n % 3) % 3; pad; pad--)
            *out++ = '=';
    *out = 0;
}

static int value_of(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

long base64_decode(const char *src, size_t n, unsigned char *out)
{
    while (n && src[n - 1] == '=')
        n--;
    unsigned acc = 0;
    int bits = 0;
    long len = 0;
    for (size_t i = 0; i < n; i++) {
        int v = value_of((unsigned char)src[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            out[len++] = (unsigned char)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    return len;
}
