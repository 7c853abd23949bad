#include "util/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

int buf_reserve(buf *b, size_t extra)
{
    if (b->max && (b->len + extra > b->max || b->len + extra < b->len))
        return -ENOBUFS;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < need)
        ncap *= 2;
    char *p = realloc(b->data, ncap);
    if (!p)
        log_oom();
    if (!b->data)
        p[0] = 0; /* the NUL-termination promise holds from the first byte reserved */
    b->data = p;
    b->cap = ncap;
    return 0;
}

int buf_append(buf *b, const void *p, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int buf_puts(buf *b, const char *s) { return buf_append(b, s, strlen(s)); }

int buf_putc(buf *b, char c) { return buf_append(b, &c, 1); }

int buf_vprintf(buf *b, const char *fmt, va_list ap)
{
    /* format once into the free space; only a result that does not fit is formatted again */
    if (buf_reserve(b, 64) && buf_reserve(b, 0))
        return -ENOBUFS;
    size_t room = b->cap - b->len;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(b->data + b->len, room, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        b->data[b->len] = 0;
        return -EINVAL;
    }
    if (b->max && b->len + (size_t)n > b->max) {
        b->data[b->len] = 0; /* the cap holds even when the memory had room */
        return -ENOBUFS;
    }
    if ((size_t)n >= room) {
        int rc = buf_reserve(b, (size_t)n);
        if (rc) {
            b->data[b->len] = 0;
            return rc;
        }
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    }
    b->len += (size_t)n;
    return 0;
}

int buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int buf_json_str(buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* worst case 6 bytes per input byte + quotes */
    int rc = buf_reserve(b, n * 6 + 2);
    if (rc)
        return rc;
    char *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': *o++ = '\\'; *o++ = '"'; break;
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        case '\b': *o++ = '\\'; *o++ = 'b'; break;
        case '\f': *o++ = '\\'; *o++ = 'f'; break;
        default:
            if (c < 0x20) {
                *o++ = '\\'; *o++ = 'u'; *o++ = '0'; *o++ = '0';
                *o++ = hex[c >> 4]; *o++ = hex[c & 15];
            } else {
                *o++ = (char)c;
            }
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = 0;
    return 0;
}

void buf_consume(buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = 0;
}

void buf_reset(buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = 0;
}

void buf_free(buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *buf_steal(buf *b, size_t *len)
{
    if (!b->data)
        buf_reserve(b, 0);
    if (!b->data) {
        /* max == 0 case with reserve failure cannot happen; keep the contract */
        log_oom();
    }
    b->data[b->len] = 0;
    char *p = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
