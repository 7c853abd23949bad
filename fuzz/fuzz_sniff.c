/* libFuzzer harness for the upload content checks (src/files/sniff.c). Built and run by
 * fuzz/build.sh (target `sniff`: corpus fuzz/corpus/sniff/, dictionary fuzz/dict/sniff.dict,
 * crashes in fuzz/crash-sniff-*).
 *
 * Input: byte 0 = the size of the small pieces - 1 (bits 0-5) and where to cut in two; the rest
 * is both a file's content and (up to its first NUL) a client's file name and declared type.
 *   - the content is fed whole, cut in two, one byte at a time and in the small pieces: the
 *     state (head, total) and every answer (sniff_type, sniff_check for a set of declared
 *     types) must not depend on the cuts;
 *   - the text verdict is checked against a separate UTF-8 decoder (decode, then reject
 *     overlongs, surrogates and > U+10FFFF), the raster and document verdicts against the
 *     magic numbers, and the one property serving relies on: whatever is accepted under a type
 *     sniff_inline_safe calls safe is a raster image;
 *   - the name through sniff_clean_name (result: a non-empty tail of the input, valid UTF-8, no
 *     control characters, no separators, nothing to strip, idempotent, in place the same, out
 *     sized exactly) and sniff_disposition (printable ASCII, the fallback has no quote or
 *     backslash, filename* decodes back to the name, exactly sized out; a stored name fits in
 *     SNIFF_DISPOSITION_MAX).
 * Buffers are exact-size heap copies so ASan sees any byte read or written past them. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files/sniff.h"

static const char *const DECLARED[] = {
    "image/png",
    "image/jpeg",
    "image/jpg",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/svg+xml",
    "application/pdf",
    "application/zip",
    "application/vnd.oasis.opendocument.text",
    "application/gzip",
    "text/plain",
    "text/html",
    "application/json",
    "application/octet-stream",
    "IMAGE/PNG",
    "x/y",
};
#define NDECLARED (sizeof DECLARED / sizeof DECLARED[0])

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_sniff: %s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void *copy(const void *p, size_t n)
{
    void *c = malloc(n ? n : 1);
    CHECK(c);
    if (n)
        memcpy(c, p, n);
    return c;
}

/* Feeds s in pieces ending at cuts[0..ncuts) then at n, each a fresh heap copy. */
static void feed(sniff_state *st, const uint8_t *s, size_t n, const size_t *cuts, size_t ncuts)
{
    sniff_init(st);
    size_t at = 0;
    for (size_t k = 0; k <= ncuts; k++) {
        size_t to = k < ncuts ? cuts[k] : n;
        void *c = copy(s + at, to - at);
        sniff_feed(st, c, to - at);
        free(c);
        at = to;
    }
}

typedef struct verdict {
    const char *type;
    int rc[NDECLARED];
} verdict;

static verdict judge(const sniff_state *st)
{
    verdict v;
    v.type = sniff_type(st);
    for (size_t i = 0; i < NDECLARED; i++) {
        char why[64];
        memset(why, 'x', sizeof why);
        v.rc[i] = sniff_check(st, DECLARED[i], why, sizeof why);
        if (v.rc[i] == 0)
            CHECK(why[0] == 'x'); /* untouched */
        else {
            CHECK(v.rc[i] == -1 && memchr(why, 0, sizeof why) && why[0]);
            for (const char *c = why; *c; c++)
                CHECK(*c >= 0x20 && *c < 0x7f);
        }
    }
    return v;
}

static void same(const sniff_state *a, const verdict *va, const sniff_state *b, const verdict *vb)
{
    CHECK(a->total == b->total && a->head_len == b->head_len);
    CHECK(memcmp(a->head, b->head, a->head_len) == 0);
    CHECK(va->type == vb->type);
    CHECK(memcmp(va->rc, vb->rc, sizeof va->rc) == 0);
}

/* ---- references ---- */

/* Decodes first, judges after: a different road from sniff.c's byte ranges. */
static int ref_utf8(const uint8_t *s, size_t n, int allow_nul)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        int k;
        uint32_t cp, min;
        if (c < 0x80) {
            if (!c && !allow_nul)
                return 0;
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i <= (size_t)k)
            return 0;
        for (int j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if (cp < min || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return 0;
        i += (size_t)k + 1;
    }
    return 1;
}

static int has(const uint8_t *s, size_t n, const char *magic, size_t m)
{
    return n >= m && memcmp(s, magic, m) == 0;
}

static const char *ref_magic(const uint8_t *s, size_t n)
{
    if (has(s, n, "\x89PNG\r\n\x1a\n", 8))
        return "image/png";
    if (has(s, n, "\xff\xd8\xff", 3))
        return "image/jpeg";
    if (has(s, n, "GIF87a", 6) || has(s, n, "GIF89a", 6))
        return "image/gif";
    if (has(s, n, "RIFF", 4) && n >= 12 && !memcmp(s + 8, "WEBP", 4))
        return "image/webp";
    if (has(s, n, "BM", 2) && n >= 18 && !s[15] && !s[16] && !s[17] &&
        (s[14] == 12 || s[14] == 16 || s[14] == 40 || s[14] == 52 || s[14] == 56 || s[14] == 64 ||
         s[14] == 108 || s[14] == 124))
        return "image/bmp";
    if (has(s, n, "%PDF-", 5))
        return "application/pdf";
    if (has(s, n, "PK\3\4", 4) || has(s, n, "PK\5\6", 4))
        return "application/zip";
    if (has(s, n, "\x1f\x8b", 2))
        return "application/gzip";
    return NULL;
}

static void check_content(const uint8_t *s, size_t n, const sniff_state *st, const verdict *v)
{
    CHECK(st->total == n);
    CHECK(st->head_len == (n < SNIFF_HEAD ? n : SNIFF_HEAD));
    CHECK(memcmp(st->head, s, st->head_len) == 0);
    int text = ref_utf8(s, n, 0);
    const char *magic = ref_magic(s, n);
    const char *want = magic ? magic : text ? "text/plain" : "application/octet-stream";
    CHECK(strcmp(v->type, want) == 0);
    int image = magic && !strncmp(magic, "image/", 6);
    for (size_t i = 0; i < NDECLARED; i++) {
        const char *d = DECLARED[i];
        int ok = v->rc[i] == 0;
        if (!strcmp(d, "image/svg+xml"))
            CHECK(!ok);
        else if (!strcmp(d, "image/jpg"))
            CHECK(ok == (magic && !strcmp(magic, "image/jpeg")));
        else if (!strcmp(d, "IMAGE/PNG"))
            CHECK(ok == (magic && !strcmp(magic, "image/png")));
        else if (!strncmp(d, "image/", 6) || !strcmp(d, "application/pdf") ||
                 !strcmp(d, "application/gzip") || !strcmp(d, "application/zip"))
            CHECK(ok == (magic && !strcmp(magic, d)));
        else if (!strcmp(d, "application/vnd.oasis.opendocument.text"))
            CHECK(ok == (magic && !strcmp(magic, "application/zip")));
        else if (!strncmp(d, "text/", 5) || !strcmp(d, "application/json"))
            CHECK(ok == text);
        else
            CHECK(ok == !(image || (magic && !strcmp(magic, "application/pdf"))));
    }
}

/* ---- names ---- */

static int forbidden_cp(const uint8_t *s, size_t n)
{
    /* only called on valid UTF-8 */
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k;
        if (s[i] < 0x80)
            cp = s[i], k = 1;
        else if (s[i] < 0xE0)
            cp = (uint32_t)(s[i] & 0x1F) << 6 | (s[i + 1] & 0x3F), k = 2;
        else if (s[i] < 0xF0)
            cp = (uint32_t)(s[i] & 0x0F) << 12 | (uint32_t)(s[i + 1] & 0x3F) << 6 |
                 (s[i + 2] & 0x3F),
            k = 3;
        else
            cp = 0x10000, k = 4;
        if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || (cp >= 0x202A && cp <= 0x202E) ||
            (cp >= 0x2066 && cp <= 0x2069))
            return 1;
        i += k;
    }
    return 0;
}

static void check_clean(const char *name)
{
    size_t n = strlen(name);
    char *out = malloc(n + 1);
    CHECK(out);
    memset(out, 'x', n + 1);
    int rc = sniff_clean_name(name, out, n + 1);
    const uint8_t *u = (const uint8_t *)name;
    if (!ref_utf8(u, n, 0) || forbidden_cp(u, n)) {
        CHECK(rc == -1);
    }
    if (rc < 0) {
        CHECK(out[0] == 0);
        free(out);
        return;
    }
    size_t m = strlen(out);
    CHECK(m > 0 && m <= SNIFF_NAME_MAX && m <= n);
    CHECK(!strchr(out, '/') && !strchr(out, '\\'));
    CHECK(out[0] != ' ' && out[0] != '.' && out[m - 1] != ' ' && out[m - 1] != '.');
    CHECK(ref_utf8((const uint8_t *)out, m, 0) && !forbidden_cp((const uint8_t *)out, m));
    CHECK(strstr(name, out)); /* a piece of the input */
    /* idempotent, in place, exactly sized */
    char *again = malloc(m + 1);
    CHECK(again);
    CHECK(sniff_clean_name(out, again, m + 1) == 0 && strcmp(again, out) == 0);
    CHECK(sniff_clean_name(out, again, m) == -1);
    char *inplace = copy(name, n + 1);
    CHECK(sniff_clean_name(inplace, inplace, n + 1) == 0 && strcmp(inplace, out) == 0);
    free(inplace);
    free(again);
    free(out);
}

static int unhex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void check_disposition(const char *disp, const char *name)
{
    size_t n = strlen(name), cap = strlen(disp) + 40 + 4 * n;
    char *out = malloc(cap);
    CHECK(out);
    CHECK(sniff_disposition(disp, name, out, cap) == 0);
    size_t len = strlen(out);
    for (size_t i = 0; i < len; i++)
        CHECK(out[i] >= 0x20 && out[i] < 0x7f);
    size_t dl = strlen(disp);
    CHECK(!strncmp(out, disp, dl));
    if (!n) {
        CHECK(len == dl);
    } else {
        const char *p = out + dl;
        CHECK(!strncmp(p, "; filename=\"", 12));
        p += 12;
        const char *q = strchr(p, '"');
        CHECK(q);
        for (const char *c = p; c < q; c++)
            CHECK(*c != '\\' && *c != '%');
        p = q + 1;
        if (ref_utf8((const uint8_t *)name, n, 0)) {
            CHECK(!strncmp(p, "; filename*=UTF-8''", 19));
            p += 19;
            size_t k = 0;
            for (; *p; k++) {
                int c = (unsigned char)*p;
                if (c == '%') {
                    int h = unhex(p[1]), l = h < 0 ? -1 : unhex(p[2]);
                    CHECK(h >= 0 && l >= 0);
                    c = h << 4 | l;
                    p += 3;
                } else {
                    CHECK(strchr("!#$&+-.^_`|~", c) || (c >= 'a' && c <= 'z') ||
                          (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'));
                    p++;
                }
                CHECK(k < n && (unsigned char)name[k] == c);
            }
            CHECK(k == n);
        } else {
            CHECK(*p == 0);
        }
    }
    free(out);
    /* exactly sized: len + 1 fits, len does not */
    out = malloc(len + 1);
    CHECK(out);
    CHECK(sniff_disposition(disp, name, out, len + 1) == 0 && strlen(out) == len);
    CHECK(sniff_disposition(disp, name, out, len) == -1 && (len == 0 || out[0] == 0));
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len)
{
    if (len < 1)
        return 0;
    const uint8_t *s = in + 1;
    size_t n = len - 1;
    size_t step = (in[0] & 0x3f) + 1;
    size_t cut = (size_t)in[0] * (n + 1) / 256;

    sniff_state ref, st;
    feed(&ref, s, n, NULL, 0);
    verdict vref = judge(&ref);
    check_content(s, n, &ref, &vref);

    feed(&st, s, n, &cut, 1);
    verdict v = judge(&st);
    same(&st, &v, &ref, &vref);

    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    CHECK(cuts);
    size_t nc = 0;
    for (size_t i = 1; i < n; i++)
        cuts[nc++] = i;
    feed(&st, s, n, cuts, nc);
    v = judge(&st);
    same(&st, &v, &ref, &vref);
    nc = 0;
    for (size_t at = step; at < n; at += step)
        cuts[nc++] = at;
    feed(&st, s, n, cuts, nc);
    v = judge(&st);
    same(&st, &v, &ref, &vref);
    free(cuts);

    /* the bytes up to the first NUL as a name and as a declared type */
    char *name = malloc(n + 1);
    CHECK(name);
    memcpy(name, s, n);
    name[n] = 0;
    check_clean(name);
    check_disposition("attachment", name);
    check_disposition("inline", name);
    char cleaned[SNIFF_NAME_MAX + 1];
    if (sniff_clean_name(name, cleaned, sizeof cleaned) == 0) {
        check_disposition("attachment", cleaned);
        char *disp = malloc(SNIFF_DISPOSITION_MAX); /* enough for any stored name */
        CHECK(disp);
        CHECK(sniff_disposition("attachment", cleaned, disp, SNIFF_DISPOSITION_MAX) == 0);
        free(disp);
    }
    char small[4];
    CHECK(sniff_disposition("bogus", name, small, sizeof small) == -1 && !small[0]);

    char why[16];
    int rc = sniff_check(&ref, name, why, sizeof why);
    CHECK(rc == 0 || (rc == -1 && memchr(why, 0, sizeof why)));
    /* what is served inline is a raster image: never text, never empty, never a non-image */
    if (sniff_inline_safe(name)) {
        CHECK(rc == -1 || !strncmp(vref.type, "image/", 6));
        sniff_state t;
        sniff_init(&t);
        CHECK(sniff_check(&t, name, NULL, 0) == -1);
        sniff_feed(&t, "<svg onload=alert(1)>", 21);
        CHECK(sniff_check(&t, name, NULL, 0) == -1);
    }
    free(name);
    return 0;
}
