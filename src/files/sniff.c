#include "files/sniff.h"

#include <stdio.h>
#include <string.h>

enum { OK_TEXT = 0, BAD_NUL = 1, BAD_UTF8 = 2 };

/* The detected types; sniff_check compares these pointers. */
static const char T_PNG[] = "image/png";
static const char T_JPEG[] = "image/jpeg";
static const char T_GIF[] = "image/gif";
static const char T_WEBP[] = "image/webp";
static const char T_BMP[] = "image/bmp";
static const char T_PDF[] = "application/pdf";
static const char T_ZIP[] = "application/zip";
static const char T_GZIP[] = "application/gzip";
static const char T_TEXT[] = "text/plain";
static const char T_BIN[] = "application/octet-stream";

#define TYPE_MAX 255 /* RFC 6838: 127 for each half */

void sniff_init(sniff_state *s)
{
    memset(s, 0, sizeof *s);
    s->lo = 0x80;
    s->hi = 0xBF;
}

/* Lead byte c: how many continuation bytes follow and the range of the first one (Unicode
 * table 3-7: this is what rules out overlongs, surrogates and code points past U+10FFFF).
 * Returns -1 for a byte that cannot start a sequence. */
static int lead(unsigned char c, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        return 1;
    if (c == 0xE0)
        *lo = 0xA0;
    else if (c == 0xED)
        *hi = 0x9F;
    if (c >= 0xE0 && c <= 0xEF)
        return 2;
    if (c == 0xF0)
        *lo = 0x90;
    else if (c == 0xF4)
        *hi = 0x8F;
    if (c >= 0xF0 && c <= 0xF4)
        return 3;
    return -1;
}

void sniff_feed(sniff_state *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    if (!len)
        return;
    if (s->head_len < SNIFF_HEAD) {
        size_t n = SNIFF_HEAD - s->head_len;
        if (n > len)
            n = len;
        memcpy(s->head + s->head_len, p, n);
        s->head_len += n;
    }
    s->total += len;
    if (s->bad)
        return;
    unsigned need = s->need;
    unsigned char lo = s->lo, hi = s->hi;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (need) {
            if (c < lo || c > hi) {
                s->bad = BAD_UTF8;
                return;
            }
            need--;
            lo = 0x80;
            hi = 0xBF;
        } else if (c < 0x80) {
            if (!c) {
                s->bad = BAD_NUL;
                return;
            }
        } else {
            int n = lead(c, &lo, &hi);
            if (n < 0) {
                s->bad = BAD_UTF8;
                return;
            }
            need = (unsigned)n;
        }
    }
    s->need = (unsigned char)need;
    s->lo = lo;
    s->hi = hi;
}

static int starts(const sniff_state *s, const void *magic, size_t n)
{
    return s->head_len >= n && memcmp(s->head, magic, n) == 0;
}

static int is_bmp(const sniff_state *s)
{
    if (!starts(s, "BM", 2) || s->head_len < 18)
        return 0;
    const unsigned char *h = s->head + 14;
    uint32_t dib = h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
    return dib == 12 || dib == 16 || dib == 40 || dib == 52 || dib == 56 || dib == 64 ||
           dib == 108 || dib == 124;
}

static int is_text(const sniff_state *s)
{
    return s->bad == OK_TEXT && !s->need;
}

const char *sniff_type(const sniff_state *s)
{
    if (starts(s, "\x89PNG\r\n\x1a\n", 8))
        return T_PNG;
    if (starts(s, "\xff\xd8\xff", 3))
        return T_JPEG;
    if (starts(s, "GIF87a", 6) || starts(s, "GIF89a", 6))
        return T_GIF;
    if (starts(s, "RIFF", 4) && s->head_len >= 12 && memcmp(s->head + 8, "WEBP", 4) == 0)
        return T_WEBP;
    if (is_bmp(s))
        return T_BMP;
    if (starts(s, "%PDF-", 5))
        return T_PDF;
    if (starts(s, "PK\3\4", 4) || starts(s, "PK\5\6", 4))
        return T_ZIP;
    if (starts(s, "\x1f\x8b", 2))
        return T_GZIP;
    return is_text(s) ? T_TEXT : T_BIN;
}

/* ---- declared types ---- */

static int tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A MIME type "token/token" (RFC 9110), lowercased into out (TYPE_MAX + 1 bytes). */
static int lower_type(const char *in, char *out)
{
    size_t i = 0, slash = 0; /* the slash's index + 1 */
    if (!in)
        return -1;
    for (; in[i]; i++) {
        unsigned char c = (unsigned char)in[i];
        if (i >= TYPE_MAX)
            return -1;
        if (c == '/' && !slash)
            slash = i + 1;
        else if (!tchar(c))
            return -1;
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    out[i] = 0;
    return slash > 1 && slash < i ? 0 : -1;
}

static int prefixed(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(s, *list))
            return 1;
    return 0;
}

/* The detected type a declared raster image type must have, or NULL. */
static const char *image_type(const char *t)
{
    static const struct {
        const char *name, *type;
    } map[] = {
        {"image/png", T_PNG},      {"image/x-png", T_PNG},  {"image/jpeg", T_JPEG},
        {"image/jpg", T_JPEG},     {"image/pjpeg", T_JPEG}, {"image/gif", T_GIF},
        {"image/webp", T_WEBP},    {"image/bmp", T_BMP},    {"image/x-bmp", T_BMP},
        {"image/x-ms-bmp", T_BMP},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(t, map[i].name))
            return map[i].type;
    return NULL;
}

static const char *const ZIP_TYPES[] = {
    "application/zip",
    "application/x-zip-compressed",
    "application/epub+zip",
    "application/java-archive",
    NULL,
};
static const char *const GZIP_TYPES[] = {"application/gzip", "application/x-gzip", NULL};
static const char *const TEXT_TYPES[] = {
    "application/json",   "application/xml",        "application/yaml",
    "application/x-yaml", "application/javascript", NULL,
};

static int refuse(char *why, size_t whylen, const char *fmt, const char *arg)
{
    if (why && whylen)
        snprintf(why, whylen, fmt, arg);
    return -1;
}

int sniff_check(const sniff_state *s, const char *declared, char *why, size_t whylen)
{
    char t[TYPE_MAX + 1];
    if (lower_type(declared, t) < 0)
        return refuse(why, whylen, "%s", declared ? "malformed content type" : "no content type");
    const char *got = sniff_type(s);
    const char *want = image_type(t);
    if (!want && prefixed(t, "image/"))
        return refuse(why, whylen, "%s", "unsupported image type");
    if (!want && !strcmp(t, T_PDF))
        want = T_PDF;
    if (!want &&
        (in_list(t, ZIP_TYPES) || prefixed(t, "application/vnd.openxmlformats-officedocument.") ||
         prefixed(t, "application/vnd.oasis.opendocument.")))
        want = T_ZIP;
    if (!want && in_list(t, GZIP_TYPES))
        want = T_GZIP;
    if (want)
        return got == want ? 0 : refuse(why, whylen, "content is not %s", want);
    if (prefixed(t, "text/") || in_list(t, TEXT_TYPES)) {
        if (s->bad == BAD_NUL)
            return refuse(why, whylen, "%s", "content holds NUL bytes");
        return is_text(s) ? 0 : refuse(why, whylen, "%s", "content is not UTF-8 text");
    }
    if (prefixed(got, "image/") || got == T_PDF)
        return refuse(why, whylen, "content is an %s file", got);
    return 0;
}

/* ---- names ---- */

/* The code point at s[0..n) (n >= 1), its length in *len; -1 with *len = 1 when no valid UTF-8
 * sequence starts there. */
static long utf8_next(const unsigned char *s, size_t n, size_t *len)
{
    unsigned char lo, hi;
    *len = 1;
    if (s[0] < 0x80)
        return s[0];
    int k = lead(s[0], &lo, &hi);
    if (k < 0 || n < (size_t)k + 1 || s[1] < lo || s[1] > hi)
        return -1;
    long cp = s[0] & (0x3F >> k);
    for (int i = 1; i <= k; i++) {
        if (i > 1 && (s[i] < 0x80 || s[i] > 0xBF))
            return -1;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    *len = (size_t)k + 1;
    return cp;
}

static int forbidden(long cp)
{
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || (cp >= 0x202A && cp <= 0x202E) ||
           (cp >= 0x2066 && cp <= 0x2069);
}

int sniff_clean_name(const char *in, char *out, size_t outlen)
{
    if (!in)
        goto fail;
    const unsigned char *s = (const unsigned char *)in;
    size_t n = strlen(in), start = 0;
    for (size_t i = 0, l; i < n; i += l) {
        long cp = utf8_next(s + i, n - i, &l);
        if (cp < 0 || forbidden(cp))
            goto fail;
        if (cp == '/' || cp == '\\')
            start = i + 1;
    }
    while (start < n && (in[start] == ' ' || in[start] == '.'))
        start++;
    while (n > start && (in[n - 1] == ' ' || in[n - 1] == '.'))
        n--;
    n -= start;
    if (!n || n > SNIFF_NAME_MAX || n >= outlen)
        goto fail;
    memmove(out, in + start, n);
    out[n] = 0;
    return 0;
fail:
    if (outlen)
        out[0] = 0;
    return -1;
}

/* ---- Content-Disposition ---- */

typedef struct wr {
    char *p;
    size_t len, cap; /* cap > 0: room for the NUL */
    int over;
} wr;

static void put(wr *w, const char *s, size_t n)
{
    if (w->over || n >= w->cap - w->len) {
        w->over = 1;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void puts_(wr *w, const char *s)
{
    put(w, s, strlen(s));
}

static int attr_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$&+-.^_`|~", c));
}

int sniff_disposition(const char *disposition, const char *name, char *out, size_t outlen)
{
    if (!outlen)
        return -1;
    wr w = {out, 0, outlen, 0};
    if (!disposition || (strcmp(disposition, "inline") && strcmp(disposition, "attachment")))
        goto fail;
    puts_(&w, disposition);
    if (name && *name) {
        const unsigned char *s = (const unsigned char *)name;
        size_t n = strlen(name);
        int utf8 = 1;
        puts_(&w, "; filename=\"");
        for (size_t i = 0, l; i < n; i += l) {
            long cp = utf8_next(s + i, n - i, &l);
            utf8 &= cp >= 0;
            if (cp < 0x20 || cp >= 0x7F || cp == '"' || cp == '\\' || cp == '%')
                put(&w, "_", 1);
            else
                put(&w, name + i, 1);
        }
        put(&w, "\"", 1);
        if (utf8) {
            static const char hex[] = "0123456789ABCDEF";
            puts_(&w, "; filename*=UTF-8''");
            for (size_t i = 0; i < n; i++) {
                char e[3] = {'%', hex[s[i] >> 4], hex[s[i] & 15]};
                if (attr_char(s[i]))
                    put(&w, name + i, 1);
                else
                    put(&w, e, 3);
            }
        }
    }
    if (w.over)
        goto fail;
    out[w.len] = 0;
    return 0;
fail:
    out[0] = 0;
    return -1;
}

int sniff_inline_safe(const char *mime)
{
    char t[TYPE_MAX + 1];
    return lower_type(mime, t) == 0 && image_type(t) != NULL;
}
