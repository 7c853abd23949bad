/* Unit tests for the upload content checks (src/files/sniff.c): detection of each format, every
 * sniff_check rule, lying types both ways, UTF-8 (split across feeds, overlongs, surrogates,
 * past U+10FFFF, cut off, NULs), stored names and Content-Disposition values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files/sniff.h"

/* Sample contents (lengths explicit: they hold NULs). */
#define PNG  "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\1\0\0\0\1\x08\x06\0\0\0"
#define JPEG "\xff\xd8\xff\xe0\0\x10JFIF\0\1\1\0\0\1\0\1\0\0"
#define GIF  "GIF89a\1\0\1\0\x80\0\0\0\0\0\xff\xff\xff!\xf9\4\1\0\0\0\0,"
#define GIF7 "GIF87a\1\0\1\0\0\0\0,\0\0\0\0\1\0\1\0\0\2\2D\1\0;"
#define WEBP "RIFF\x1a\0\0\0WEBPVP8L\x0d\0\0\0/\0\0\0\x10\x07\x10\x11\x11\x88\x88\xfe\x07\0"
#define BMP  "BM\x3a\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0\1\0\0\0\1\0\0\0\1\0\x18\0"
#define PDF  "%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
#define ZIP  "PK\3\4\x14\0\0\0\x08\0\0\0!\0"
#define ZIP0 "PK\5\6\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
#define GZ   "\x1f\x8b\x08\0\0\0\0\0\0\3\3\0\0\0\0\0\0\0\0\0"
#define TXT  "Hello, w\xc3\xb6rld \xe2\x82\xac \xf0\x9f\x98\x80\n"
#define HTML "<!doctype html><script>alert(1)</script>"
#define BIN                                                                                        \
    "\x7f"                                                                                         \
    "ELF\2\1\1\0\0\0\0\0\0\0\0\0"

typedef struct sample {
    const char *name;
    const char *data;
    size_t len;
} sample;

#define S(n, d)                                                                                    \
    {                                                                                              \
        n, d, sizeof d - 1                                                                         \
    }
static const sample SAMPLES[] = {
    S("png", PNG),  S("jpeg", JPEG), S("gif", GIF), S("gif87", GIF7), S("webp", WEBP),
    S("bmp", BMP),  S("pdf", PDF),   S("zip", ZIP), S("zip0", ZIP0),  S("gz", GZ),
    S("text", TXT), S("html", HTML), S("bin", BIN), S("empty", ""),
};
#define NSAMPLES (sizeof SAMPLES / sizeof SAMPLES[0])

static sniff_state of(const void *p, size_t n)
{
    sniff_state s;
    sniff_init(&s);
    sniff_feed(&s, p, n);
    return s;
}

#define OF(lit) of(lit, sizeof lit - 1)

static const char *type_of(const void *p, size_t n)
{
    sniff_state s = of(p, n);
    return sniff_type(&s);
}

/* sniff_check of p under declared; the reason (or "") in why. */
static char why[128];
static int check(const void *p, size_t n, const char *declared)
{
    sniff_state s = of(p, n);
    memset(why, 0, sizeof why);
    int rc = sniff_check(&s, declared, why, sizeof why);
    if (rc == 0)
        assert_string_equal(why, "");
    else
        assert_true(why[0] != 0);
    return rc;
}

#define CHECK(lit, declared) check(lit, sizeof lit - 1, declared)

/* The samples declared may be stored under, by name, e.g. "png,jpeg". */
static void accepts_only(const char *declared, const char *names)
{
    for (size_t i = 0; i < NSAMPLES; i++) {
        const sample *m = &SAMPLES[i];
        char key[32];
        snprintf(key, sizeof key, ",%s,", m->name);
        char list[128];
        snprintf(list, sizeof list, ",%s,", names);
        int want = strstr(list, key) ? 0 : -1;
        int rc = check(m->data, m->len, declared);
        if (rc != want)
            fail_msg("%s declared %s: %d, want %d (%s)", m->name, declared, rc, want, why);
    }
}

static void t_detect(void **st)
{
    (void)st;
    static const char *const want[NSAMPLES] = {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/gif",
        "image/webp",
        "image/bmp",
        "application/pdf",
        "application/zip",
        "application/zip",
        "application/gzip",
        "text/plain",
        "text/plain",
        "application/octet-stream",
        "text/plain",
    };
    for (size_t i = 0; i < NSAMPLES; i++)
        assert_string_equal(type_of(SAMPLES[i].data, SAMPLES[i].len), want[i]);
    /* magic cut short is not that format */
    assert_string_equal(type_of("\x89PNG\r\n\x1a", 7), "application/octet-stream");
    assert_string_equal(type_of("\xff\xd8", 2), "application/octet-stream");
    assert_string_equal(type_of("GIF89", 5), "text/plain");
    assert_string_equal(type_of("GIF88a....", 10), "text/plain");
    assert_string_equal(type_of("RIFF\0\0\0\0WAVE", 12), "application/octet-stream");
    assert_string_equal(type_of("RIFF\0\0\0\0WEB", 11), "application/octet-stream");
    assert_string_equal(type_of("%PDF", 4), "text/plain");
    assert_string_equal(type_of("PK\3", 3), "text/plain");
    assert_string_equal(type_of("\x1f", 1), "text/plain");
    /* "BM" alone is not a bitmap: text starting "BMW", or a bad DIB header size */
    assert_string_equal(type_of("BMW is a car maker.\n", 20), "text/plain");
    assert_string_equal(type_of("BM\0\0\0\0\0\0\0\0\0\0\0\0\x29\0\0\0", 18),
                        "application/octet-stream");
    assert_string_equal(type_of("BM\0\0\0\0\0\0\0\0\0\0\0\0\x28\0\0", 17),
                        "application/octet-stream");
    assert_string_equal(type_of("BM\0\0\0\0\0\0\0\0\0\0\0\0\x0c\0\0\0", 18), "image/bmp");
    assert_string_equal(type_of("BM\0\0\0\0\0\0\0\0\0\0\0\0\x7c\0\0\0", 18), "image/bmp");
    /* a UTF-8 BOM is text; UTF-16 is not UTF-8 */
    assert_string_equal(type_of("\xef\xbb\xbfhi", 5), "text/plain");
    assert_string_equal(type_of("\xff\xfeh\0i\0", 6), "application/octet-stream");
}

static void t_raster_images(void **st)
{
    (void)st;
    accepts_only("image/png", "png");
    accepts_only("image/x-png", "png");
    accepts_only("image/jpeg", "jpeg");
    accepts_only("image/jpg", "jpeg");
    accepts_only("image/pjpeg", "jpeg");
    accepts_only("image/gif", "gif,gif87");
    accepts_only("image/webp", "webp");
    accepts_only("image/bmp", "bmp");
    accepts_only("image/x-ms-bmp", "bmp");
    assert_int_equal(CHECK(JPEG, "image/png"), -1);
    assert_string_equal(why, "content is not image/png");
    assert_int_equal(CHECK("", "image/gif"), -1);
    assert_string_equal(why, "content is not image/gif");
}

static void t_other_images(void **st)
{
    (void)st;
    static const char svg[] = "<svg xmlns=\"http://www.w3.org/2000/svg\"><script>x()</script>"
                              "</svg>";
    const char *types[] = {"image/svg+xml", "image/tiff", "image/heic",   "image/avif",
                           "image/x-icon",  "image/png2", "Image/SVG+XML"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        accepts_only(types[i], "");
        assert_int_equal(CHECK(svg, types[i]), -1);
        assert_string_equal(why, "unsupported image type");
    }
}

static void t_documents(void **st)
{
    (void)st;
    accepts_only("application/pdf", "pdf");
    assert_int_equal(CHECK(TXT, "application/pdf"), -1);
    assert_string_equal(why, "content is not application/pdf");
    const char *zips[] = {
        "application/zip",
        "application/x-zip-compressed",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/epub+zip",
        "application/java-archive",
    };
    for (size_t i = 0; i < sizeof zips / sizeof zips[0]; i++)
        accepts_only(zips[i], "zip,zip0");
    assert_int_equal(CHECK(PDF, "application/vnd.oasis.opendocument.text"), -1);
    assert_string_equal(why, "content is not application/zip");
    accepts_only("application/gzip", "gz");
    accepts_only("application/x-gzip", "gz");
    /* the prefixes need their dot: not any type that starts alike */
    assert_int_equal(CHECK(BIN, "application/vnd.openxmlformats-officedocumentx"), 0);
}

static void t_text(void **st)
{
    (void)st;
    const char *types[] = {
        "text/plain",         "text/markdown",         "text/csv",        "text/html",
        "text/x-c",           "application/json",      "application/xml", "application/yaml",
        "application/x-yaml", "application/javascript"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        accepts_only(types[i], "text,html,empty");
    assert_int_equal(CHECK("a\0b", "text/plain"), -1);
    assert_string_equal(why, "content holds NUL bytes");
    assert_int_equal(CHECK("a\xff", "application/json"), -1);
    assert_string_equal(why, "content is not UTF-8 text");
    assert_int_equal(CHECK("caf\xc3", "text/csv"), -1); /* cut off at the end */
    assert_string_equal(why, "content is not UTF-8 text");
    assert_int_equal(CHECK("\xef\xbb\xbf# Title\n", "text/markdown"), 0);
    /* valid UTF-8 is text whatever its first bytes look like: all-ASCII "images" and PDFs */
    assert_int_equal(CHECK("GIF89a is a format.", "text/plain"), 0);
    assert_int_equal(CHECK("%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "text/plain"), 0);
    /* control characters other than NUL are text (ANSI escapes, form feeds) */
    assert_int_equal(CHECK("\x1b[1mbold\x1b[0m\f\x7f", "text/plain"), 0);
}

static void t_other_types(void **st)
{
    (void)st;
    const char *types[] = {
        "application/octet-stream", "application/x-tar", "audio/mpeg", "video/mp4",
        "application/vnd.ms-excel", "x-foo/bar"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        accepts_only(types[i], "zip,zip0,gz,text,html,bin,empty");
    assert_int_equal(CHECK(PNG, "application/octet-stream"), -1);
    assert_string_equal(why, "content is an image/png file");
    assert_int_equal(CHECK(PDF, "application/x-foo"), -1);
    assert_string_equal(why, "content is an application/pdf file");
    assert_int_equal(CHECK(BMP, "audio/mpeg"), -1);
    assert_string_equal(why, "content is an image/bmp file");
}

static void t_empty(void **st)
{
    (void)st;
    sniff_state s;
    sniff_init(&s);
    sniff_feed(&s, NULL, 0);
    assert_int_equal(s.total, 0);
    assert_string_equal(sniff_type(&s), "text/plain");
    const char *refused[] = {
        "image/png",       "image/jpeg",       "image/gif",
        "image/webp",      "image/bmp",        "application/pdf",
        "application/zip", "application/gzip", "application/vnd.oasis.opendocument.text",
        "image/svg+xml"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        assert_int_equal(sniff_check(&s, refused[i], NULL, 0), -1);
    const char *accepted[] = {"text/plain", "application/json", "application/octet-stream",
                              "application/x-whatever"};
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++)
        assert_int_equal(sniff_check(&s, accepted[i], NULL, 0), 0);
}

static void t_lying(void **st)
{
    (void)st;
    assert_int_equal(CHECK(PNG, "text/plain"), -1); /* PNG bytes as text */
    assert_string_equal(why, "content is not UTF-8 text");
    assert_int_equal(CHECK(GIF, "text/plain"), -1); /* binary GIF (NULs) */
    assert_int_equal(CHECK(TXT, "image/png"), -1);  /* text as an image */
    assert_string_equal(why, "content is not image/png");
    assert_int_equal(CHECK(JPEG, "image/png"), -1); /* one image as another */
    assert_int_equal(CHECK(PNG, "image/jpeg"), -1);
    assert_int_equal(CHECK(WEBP, "image/gif"), -1);
    assert_int_equal(CHECK(HTML, "image/png"), -1); /* HTML as an image */
    assert_int_equal(CHECK(HTML, "image/svg+xml"), -1);
    assert_int_equal(CHECK(PNG, "application/pdf"), -1);
    assert_int_equal(CHECK(ZIP, "image/png"), -1);
    assert_int_equal(CHECK(PDF, "application/zip"), -1);
    assert_int_equal(CHECK(GZ, "application/zip"), -1);
    /* an image followed by HTML is still an image; HTML with a PNG after it is not */
    assert_int_equal(CHECK(PNG HTML, "image/png"), 0);
    assert_int_equal(CHECK(HTML PNG, "image/png"), -1);
    assert_int_equal(CHECK(" " PNG, "image/png"), -1);
}

static void t_declared(void **st)
{
    (void)st;
    /* matched without regard to case */
    assert_int_equal(CHECK(PNG, "IMAGE/PNG"), 0);
    assert_int_equal(CHECK(PNG, "Image/Png"), 0);
    assert_int_equal(CHECK(PNG, "APPLICATION/OCTET-STREAM"), -1);
    assert_int_equal(CHECK(BIN, "TEXT/PLAIN"), -1);
    /* malformed: parameters, spaces, no subtype, two slashes, too long, NULL */
    const char *bad[] = {"image/png; x=y",
                         "text/plain;charset=utf-8",
                         " image/png",
                         "image/png ",
                         "image",
                         "image/",
                         "/png",
                         "/",
                         "",
                         "a/b/c",
                         "im age/png",
                         "image/pn\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(CHECK(PNG, bad[i]), -1);
        assert_string_equal(why, "malformed content type");
        assert_int_equal(CHECK(TXT, bad[i]), -1);
    }
    assert_int_equal(CHECK(TXT, NULL), -1);
    assert_string_equal(why, "no content type");
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    big[5] = '/';
    assert_int_equal(CHECK(TXT, big), -1);
    big[255] = 0; /* 255 bytes is the most */
    assert_int_equal(CHECK(TXT, big), 0);
    /* why: NULL, or truncated to whylen */
    sniff_state s = OF(JPEG);
    assert_int_equal(sniff_check(&s, "image/png", NULL, 0), -1);
    assert_int_equal(sniff_check(&s, "image/png", NULL, 10), -1);
    char small[8] = "xxxxxxx";
    assert_int_equal(sniff_check(&s, "image/png", small, 0), -1);
    assert_string_equal(small, "xxxxxxx");
    assert_int_equal(sniff_check(&s, "image/png", small, sizeof small), -1);
    assert_string_equal(small, "content");
    assert_int_equal(sniff_check(&s, "image/jpeg", small, sizeof small), 0);
}

/* ---- UTF-8 ---- */

static int is_text(const char *p, size_t n)
{
    return strcmp(type_of(p, n), "text/plain") == 0;
}

/* The same content fed in every 2- and 3-way split, and byte by byte. */
static void feed_split(const char *p, size_t n, int want_text)
{
    sniff_state s;
    for (size_t i = 0; i <= n; i++)
        for (size_t j = i; j <= n; j++) {
            sniff_init(&s);
            sniff_feed(&s, p, i);
            sniff_feed(&s, p + i, j - i);
            sniff_feed(&s, p + j, n - j);
            assert_int_equal(s.total, n);
            if ((strcmp(sniff_type(&s), "text/plain") == 0) != want_text)
                fail_msg("split %zu/%zu of %zu bytes: %s", i, j, n, sniff_type(&s));
        }
    sniff_init(&s);
    for (size_t i = 0; i < n; i++)
        sniff_feed(&s, p + i, 1);
    assert_int_equal(strcmp(sniff_type(&s), "text/plain") == 0, want_text);
}

#define SPLIT(lit, want) feed_split(lit, sizeof lit - 1, want)

static void t_utf8_valid(void **st)
{
    (void)st;
    /* the edges of each length */
    static const char *const ok[] = {
        "\x01",             /* U+0001 */
        "\x7f",             /* U+007F */
        "\xc2\x80",         /* U+0080 */
        "\xdf\xbf",         /* U+07FF */
        "\xe0\xa0\x80",     /* U+0800 */
        "\xe1\x80\x80",     /* U+1000 */
        "\xec\xbf\xbf",     /* U+CFFF */
        "\xed\x80\x80",     /* U+D000 */
        "\xed\x9f\xbf",     /* U+D7FF */
        "\xee\x80\x80",     /* U+E000 */
        "\xef\xbf\xbd",     /* U+FFFD */
        "\xef\xbf\xbf",     /* U+FFFF */
        "\xf0\x90\x80\x80", /* U+10000 */
        "\xf1\x80\x80\x80", /* U+40000 */
        "\xf3\xbf\xbf\xbf", /* U+FFFFF */
        "\xf4\x80\x80\x80", /* U+100000 */
        "\xf4\x8f\xbf\xbf", /* U+10FFFF */
        "\xef\xbb\xbf",     /* BOM */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char buf[16];
        int n = snprintf(buf, sizeof buf, "a%sb", ok[i]);
        if (!is_text(buf, (size_t)n))
            fail_msg("valid sequence %zu refused", i);
        feed_split(buf, (size_t)n, 1);
    }
    SPLIT(TXT, 1);
    SPLIT("\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xe2\x82\xac\xc3\xb6", 1);
}

static void t_utf8_invalid(void **st)
{
    (void)st;
    static const char *const bad[] = {
        "\x80", /* lone continuation */
        "\xbf",
        "\xc0\x80",                 /* overlong NUL */
        "\xc0\xaf",                 /* overlong '/' */
        "\xc1\xbf",                 /* overlong U+007F */
        "\xe0\x80\x80",             /* overlong 3-byte */
        "\xe0\x9f\xbf",             /* overlong U+07FF */
        "\xf0\x80\x80\x80",         /* overlong 4-byte */
        "\xf0\x8f\xbf\xbf",         /* overlong U+FFFF */
        "\xed\xa0\x80",             /* U+D800 */
        "\xed\xaf\xbf",             /* U+DBFF */
        "\xed\xb0\x80",             /* U+DC00 */
        "\xed\xbf\xbf",             /* U+DFFF */
        "\xed\xa0\xbd\xed\xb8\x80", /* CESU-8 surrogate pair */
        "\xf4\x90\x80\x80",         /* U+110000 */
        "\xf5\x80\x80\x80",
        "\xf7\xbf\xbf\xbf",
        "\xf8\x88\x80\x80\x80", /* 5 bytes */
        "\xfc\x84\x80\x80\x80\x80",
        "\xfe",
        "\xff",
        "\xc3", /* cut off */
        "\xe2\x82",
        "\xf0\x9f\x98",
        "\xc3x", /* cut off by ASCII */
        "\xe2\x82x",
        "\xf0\x9f\x98x",
        "\xc3\xc3\xb6",     /* a lead where a continuation belongs */
        "\xe2\x82\xac\x80", /* one continuation too many */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[16];
        int n = snprintf(buf, sizeof buf, "a%s", bad[i]);
        if (is_text(buf, (size_t)n))
            fail_msg("invalid sequence %zu accepted", i);
        feed_split(buf, (size_t)n, 0);
        n = snprintf(buf, sizeof buf, "%sz", bad[i]);
        feed_split(buf, (size_t)n, 0);
    }
    /* NULs, anywhere */
    SPLIT("\0", 0);
    SPLIT("abc\0", 0);
    SPLIT("\xc3\xb6\0\xc3\xb6", 0);
    SPLIT("\xc3\0", 0);
}

/* Far past the head: the head keeps the first SNIFF_HEAD bytes, the text check sees them all. */
static void t_long(void **st)
{
    (void)st;
    size_t n = 5 * SNIFF_HEAD + 3;
    char *p = malloc(n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)('a' + i % 26);
    memcpy(p + n - 2, "\xc3\xa9", 2);
    sniff_state s;
    sniff_init(&s);
    for (size_t at = 0; at < n; at += 7)
        sniff_feed(&s, p + at, n - at < 7 ? n - at : 7);
    assert_int_equal(s.total, n);
    assert_int_equal(s.head_len, SNIFF_HEAD);
    assert_memory_equal(s.head, p, SNIFF_HEAD);
    assert_string_equal(sniff_type(&s), "text/plain");
    sniff_feed(&s, "\0", 1);
    assert_string_equal(sniff_type(&s), "application/octet-stream");
    assert_int_equal(sniff_check(&s, "text/plain", NULL, 0), -1);
    assert_int_equal(sniff_check(&s, "application/octet-stream", NULL, 0), 0);
    /* a bad byte after the head */
    s = of(p, n);
    sniff_feed(&s, "\xc0\x80", 2);
    sniff_feed(&s, "more", 4);
    assert_string_equal(sniff_type(&s), "application/octet-stream");
    /* a PNG fed a byte at a time, with a large body */
    sniff_init(&s);
    for (size_t i = 0; i < sizeof PNG - 1; i++)
        sniff_feed(&s, &PNG[i], 1);
    sniff_feed(&s, p, n);
    assert_string_equal(sniff_type(&s), "image/png");
    assert_int_equal(sniff_check(&s, "image/png", NULL, 0), 0);
    assert_int_equal(s.total, sizeof PNG - 1 + n);
    free(p);
}

/* ---- names ---- */

static const char *clean(const char *in)
{
    static char out[512];
    memset(out, 'x', sizeof out);
    if (sniff_clean_name(in, out, sizeof out) < 0) {
        assert_string_equal(out, "");
        return NULL;
    }
    return out;
}

static void t_clean_name(void **st)
{
    (void)st;
    static const struct {
        const char *in, *want; /* want NULL: refused */
    } cases[] = {
        {"report.pdf", "report.pdf"},
        {"../../etc/passwd", "passwd"},
        {"C:\\x\\y.txt", "y.txt"},
        {"/abs/path/file", "file"},
        {"dir\\sub/mixed\\name.md", "name.md"},
        {"  spaced name.txt  ", "spaced name.txt"},
        {".bashrc", "bashrc"},
        {"...a.b...", "a.b"},
        {". . x . .", "x"},
        {"r\xc3\xa9sum\xc3\xa9 \xe2\x82\xac.txt", "r\xc3\xa9sum\xc3\xa9 \xe2\x82\xac.txt"},
        {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
        {"a\"b'c%d;e", "a\"b'c%d;e"},
        {"C:y.txt", "C:y.txt"},
        {"", NULL},
        {".", NULL},
        {"..", NULL},
        {"...", NULL},
        {" ", NULL},
        {"dir/", NULL},
        {"a/..", NULL},
        {"a\\.", NULL},
        {"a\nb.txt", NULL},
        {"a\rb", NULL},
        {"tab\t.txt", NULL},
        {"\x1f", NULL},
        {"del\x7f", NULL},
        {"bad\x01/ok.txt", NULL},             /* control characters anywhere */
        {"c1\xc2\x85.txt", NULL},             /* U+0085 NEL */
        {"x\xe2\x80\xaetxt.exe", NULL},       /* U+202E RIGHT-TO-LEFT OVERRIDE */
        {"x\xe2\x81\xa6y", NULL},             /* U+2066 */
        {"x\xe2\x80\x8ey", "x\xe2\x80\x8ey"}, /* U+200E LRM is a mark, fine */
        {"bad\xff.txt", NULL},
        {"\xc0\xae\xc0\xae", NULL}, /* overlong dots */
        {"\xed\xa0\x80", NULL},
        {"cut\xe2\x82", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = clean(cases[i].in);
        if (!cases[i].want && got)
            fail_msg("case %zu: \"%s\" accepted as \"%s\"", i, cases[i].in, got);
        if (cases[i].want && (!got || strcmp(got, cases[i].want)))
            fail_msg("case %zu: \"%s\" gave %s", i, cases[i].in, got ? got : "(refused)");
    }
    assert_null(clean(NULL));

    /* lengths: 255 bytes is the most, counted after stripping */
    char name[400], out[400];
    memset(name, 'n', sizeof name);
    name[255] = 0;
    assert_int_equal(sniff_clean_name(name, out, sizeof out), 0);
    assert_int_equal(strlen(out), 255);
    name[300] = 0;
    memset(name, 'n', 300);
    assert_int_equal(sniff_clean_name(name, out, sizeof out), -1);
    memcpy(name, "dir/", 4); /* 296 bytes after the directory */
    assert_int_equal(sniff_clean_name(name, out, sizeof out), -1);
    memset(name, '.', 44); /* 255 bytes after the directory */
    name[44] = '/';
    assert_int_equal(sniff_clean_name(name, out, sizeof out), 0);
    assert_int_equal(strlen(out), 255);
    memset(name, ' ', 100); /* spaces stripped: 200 bytes left */
    assert_int_equal(sniff_clean_name(name, out, sizeof out), 0);
    assert_int_equal(strlen(out), 200);

    /* out: too small, exactly right, 0, in place */
    char small[6] = "zzzzz";
    assert_int_equal(sniff_clean_name("a/b.txt", small, 5), -1);
    assert_string_equal(small, "");
    assert_int_equal(sniff_clean_name("a/b.txt", small, 6), 0);
    assert_string_equal(small, "b.txt");
    assert_int_equal(sniff_clean_name("b.txt", small, 0), -1);
    assert_string_equal(small, "b.txt");
    char inplace[] = "../dir/ .hidden.txt. ";
    assert_int_equal(sniff_clean_name(inplace, inplace, sizeof inplace), 0);
    assert_string_equal(inplace, "hidden.txt");
}

/* ---- Content-Disposition ---- */

static const char *dispo(const char *disp, const char *name)
{
    static char out[1024];
    memset(out, 'x', sizeof out);
    if (sniff_disposition(disp, name, out, sizeof out) < 0) {
        assert_string_equal(out, "");
        return NULL;
    }
    for (const char *c = out; *c; c++)
        assert_true(*c >= 0x20 && *c < 0x7f);
    return out;
}

static void t_disposition(void **st)
{
    (void)st;
    assert_string_equal(dispo("attachment", "report.pdf"),
                        "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf");
    assert_string_equal(dispo("inline", "a b.png"),
                        "inline; filename=\"a b.png\"; filename*=UTF-8''a%20b.png");
    assert_string_equal(dispo("attachment", NULL), "attachment");
    assert_string_equal(dispo("inline", ""), "inline");
    /* quotes, backslashes, percent, controls */
    assert_string_equal(dispo("attachment", "say \"hi\"\\.txt"),
                        "attachment; filename=\"say _hi__.txt\"; "
                        "filename*=UTF-8''say%20%22hi%22%5C.txt");
    assert_string_equal(dispo("attachment", "100%.txt"),
                        "attachment; filename=\"100_.txt\"; filename*=UTF-8''100%25.txt");
    assert_string_equal(dispo("attachment", "a\r\nSet-Cookie: x=1\x7f"),
                        "attachment; filename=\"a__Set-Cookie: x=1_\"; "
                        "filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x%3D1%7F");
    /* non-ASCII: one '_' per character in the fallback, UTF-8 bytes encoded */
    assert_string_equal(
        dispo("attachment", "r\xc3\xa9sum\xc3\xa9 \xe2\x82\xac\xf0\x9f\x98\x80.txt"),
        "attachment; filename=\"r_sum_ __.txt\"; "
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%82%AC%F0%9F%98%80.txt");
    /* attr-chars pass, the rest is encoded */
    assert_string_equal(dispo("attachment", "!#$&+-.^_`|~aZ09'()*,/:;<=>?@[]{}"),
                        "attachment; filename=\"!#$&+-.^_`|~aZ09'()*,/:;<=>?@[]{}\"; "
                        "filename*=UTF-8''!#$&+-.^_`|~aZ09%27%28%29%2A%2C%2F%3A%3B%3C%3D%3E%3F%40"
                        "%5B%5D%7B%7D");
    /* invalid UTF-8: the fallback alone */
    assert_string_equal(dispo("attachment", "a\xff\xc3z"), "attachment; filename=\"a__z\"");
    /* only the two dispositions */
    assert_null(dispo("form-data", "a"));
    assert_null(dispo("Inline", "a"));
    assert_null(dispo("inline; x", "a"));
    assert_null(dispo(NULL, "a"));

    /* too small: every size below the value's length + 1 fails, that one fits */
    const char *name = "\xc3\xa9t\xc3\xa9 \"q\".txt";
    char want[256];
    assert_int_equal(sniff_disposition("attachment", name, want, sizeof want), 0);
    assert_string_equal(want, "attachment; filename=\"_t_ _q_.txt\"; "
                              "filename*=UTF-8''%C3%A9t%C3%A9%20%22q%22.txt");
    size_t need = strlen(want) + 1;
    for (size_t n = 0; n < need; n++) {
        char *out = malloc(n ? n : 1); /* exact size: ASan sees a write past it */
        assert_non_null(out);
        out[0] = 'x';
        assert_int_equal(sniff_disposition("attachment", name, out, n), -1);
        if (n)
            assert_int_equal(out[0], 0);
        else
            assert_int_equal(out[0], 'x');
        free(out);
    }
    char *out = malloc(need);
    assert_non_null(out);
    assert_int_equal(sniff_disposition("attachment", name, out, need), 0);
    assert_string_equal(out, want);
    free(out);
    /* SNIFF_DISPOSITION_MAX is enough for any name of SNIFF_NAME_MAX bytes, and not more */
    char worst[SNIFF_NAME_MAX + 1], big[SNIFF_DISPOSITION_MAX];
    memset(worst, '"', SNIFF_NAME_MAX);
    worst[SNIFF_NAME_MAX] = 0;
    assert_int_equal(SNIFF_DISPOSITION_MAX, 1063);
    assert_int_equal(sniff_disposition("attachment", worst, big, sizeof big), 0);
    assert_int_equal(strlen(big), SNIFF_DISPOSITION_MAX - 1);
    assert_int_equal(sniff_disposition("attachment", worst, big, sizeof big - 1), -1);
    char tiny[11];
    assert_int_equal(sniff_disposition("attachment", NULL, tiny, sizeof tiny), 0);
    assert_int_equal(sniff_disposition("attachment", NULL, tiny, 10), -1);
}

static void t_inline_safe(void **st)
{
    (void)st;
    const char *yes[] = {"image/png",  "image/jpeg", "image/jpg", "image/pjpeg", "image/gif",
                         "image/webp", "image/bmp",  "IMAGE/PNG", "image/x-png", "image/x-ms-bmp"};
    const char *no[] = {"image/svg+xml",
                        "text/html",
                        "application/xhtml+xml",
                        "text/xml",
                        "application/xml",
                        "application/pdf",
                        "text/plain",
                        "image/tiff",
                        "image/png; charset=x",
                        "image/png ",
                        "",
                        "application/octet-stream",
                        "image/x-icon",
                        "image/avif"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (sniff_inline_safe(yes[i]) != 1)
            fail_msg("%s not inline-safe", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (sniff_inline_safe(no[i]) != 0)
            fail_msg("%s inline-safe", no[i]);
    assert_int_equal(sniff_inline_safe(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_detect),       cmocka_unit_test(t_raster_images),
        cmocka_unit_test(t_other_images), cmocka_unit_test(t_documents),
        cmocka_unit_test(t_text),         cmocka_unit_test(t_other_types),
        cmocka_unit_test(t_empty),        cmocka_unit_test(t_lying),
        cmocka_unit_test(t_declared),     cmocka_unit_test(t_utf8_valid),
        cmocka_unit_test(t_utf8_invalid), cmocka_unit_test(t_long),
        cmocka_unit_test(t_clean_name),   cmocka_unit_test(t_disposition),
        cmocka_unit_test(t_inline_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
