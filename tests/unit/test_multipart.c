/* Unit tests for the multipart/form-data parser (src/files/multipart.c): browser-shaped bodies
 * cut at every position, filenames (quoted, escaped, RFC 5987), the request's Content-Type,
 * malformed input, truncation, limits, callback aborts, and that a part is streamed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files/multipart.h"
#include "util/buf.h"

/* Records the callbacks as "B name|filename|type\n", "D" + the part's bytes (consecutive data
 * calls merged, so the record does not depend on how the body was cut), "E\n". */
typedef struct rec {
    buf out;
    buf file;    /* the bytes of parts that have a filename */
    int in_data; /* the last callback was data */
    int is_file; /* the current part has a filename */
    int n;       /* callbacks so far */
    int stop_at; /* return stop_rc from this (1-based) callback; 0 = never */
    int stop_rc;
    size_t max_piece; /* largest data piece seen */
} rec;

static int stop(rec *r)
{
    r->n++;
    return r->stop_at && r->n == r->stop_at ? r->stop_rc : 0;
}

static int on_begin(void *ud, const mp_part *part)
{
    rec *r = ud;
    assert_non_null(part->name);
    assert_int_equal(buf_printf(&r->out, "B %s|%s|%s\n", part->name,
                                part->filename ? part->filename : "-",
                                part->content_type ? part->content_type : "-"),
                     0);
    r->in_data = 0;
    r->is_file = part->filename != NULL;
    return stop(r);
}

static int on_data(void *ud, const char *p, size_t n)
{
    rec *r = ud;
    assert_true(n > 0);
    assert_non_null(p);
    if (!r->in_data)
        assert_int_equal(buf_putc(&r->out, 'D'), 0);
    r->in_data = 1;
    assert_int_equal(buf_append(&r->out, p, n), 0);
    if (r->is_file)
        assert_int_equal(buf_append(&r->file, p, n), 0);
    if (n > r->max_piece)
        r->max_piece = n;
    return r->stop_at < 0 ? r->stop_rc : 0;
}

static int on_end(void *ud)
{
    rec *r = ud;
    if (r->in_data)
        assert_int_equal(buf_putc(&r->out, '\n'), 0);
    assert_int_equal(buf_puts(&r->out, "E\n"), 0);
    r->in_data = 0;
    return stop(r);
}

static const mp_callbacks CB = {on_begin, on_data, on_end};

typedef struct result {
    char *rec; /* the record (NUL-terminated; may hold NULs) */
    size_t len;
    char *file;
    size_t flen;
    int rc; /* the first feed error, else mp_finish's */
} result;

static void result_free(result *r)
{
    free(r->rec);
    free(r->file);
}

/* Feeds in cut at the ascending offsets cuts[0..ncuts), each piece from its own heap copy that
 * is scribbled over and freed right after its feed (a pointer kept into a chunk shows up under
 * ASan/valgrind), then finishes. */
static result run_cuts(const char *ct, const mp_limits *lim, const char *in, size_t len,
                       const size_t *cuts, size_t ncuts, int stop_at, int stop_rc)
{
    rec r = {BUF_INIT(0), BUF_INIT(0), 0, 0, 0, stop_at, stop_rc, 0};
    const char *err = "unset";
    mp_parser *p = mp_new(ct, lim, &CB, &r, &err);
    assert_non_null(p);
    assert_null(err);
    size_t at = 0;
    int rc = 0;
    for (size_t k = 0; k <= ncuts && !rc; k++) {
        size_t to = k < ncuts ? cuts[k] : len;
        size_t n = to - at;
        char *c = malloc(n ? n : 1);
        assert_non_null(c);
        memcpy(c, in + at, n);
        rc = mp_feed(p, c, n);
        memset(c, 'Z', n);
        free(c);
        at = to;
    }
    int frc = mp_finish(p);
    if (rc) {
        assert_int_equal(frc, rc); /* sticky */
        assert_int_equal(mp_feed(p, "x", 1), rc);
        assert_true(*mp_error(p));
    } else if (!frc) {
        assert_string_equal(mp_error(p), "");
    }
    mp_free(p);
    result res;
    res.rec = buf_steal(&r.out, &res.len);
    res.file = buf_steal(&r.file, &res.flen);
    res.rc = rc ? rc : frc;
    return res;
}

static result run1(const char *ct, const char *in, size_t len)
{
    return run_cuts(ct, NULL, in, len, NULL, 0, 0, 0);
}

static void same(const result *a, const result *b, const char *what, size_t at)
{
    if (a->rc != b->rc || a->len != b->len || memcmp(a->rec, b->rec, a->len))
        fail_msg("%s %zu: rc %d vs %d, record\n%s\nvs\n%s", what, at, b->rc, a->rc, b->rec, a->rec);
    assert_int_equal(a->flen, b->flen);
    assert_memory_equal(a->file, b->file, a->flen);
}

/* The one-feed result must be what every cut in two, one byte at a time and random pieces
 * give. Returns the one-feed result. */
static result check_cuts(const char *ct, const mp_limits *lim, const char *in, size_t len,
                         int stop_at, int stop_rc)
{
    result one = run_cuts(ct, lim, in, len, NULL, 0, stop_at, stop_rc);
    for (size_t i = 0; i <= len; i++) {
        result two = run_cuts(ct, lim, in, len, &i, 1, stop_at, stop_rc);
        same(&one, &two, "cut at", i);
        result_free(&two);
    }
    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    assert_non_null(cuts);
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    result bytes = run_cuts(ct, lim, in, len, cuts, len ? len - 1 : 0, stop_at, stop_rc);
    same(&one, &bytes, "byte at a time", 0);
    result_free(&bytes);
    unsigned seed = (unsigned)len * 2654435761u + 1;
    for (int t = 0; t < 30 && len; t++) {
        size_t nc = 0, at = 0;
        while (nc < len) {
            seed = seed * 1103515245u + 12345u;
            at += 1 + (seed >> 16) % 97;
            if (at >= len)
                break;
            cuts[nc++] = at;
        }
        result rnd = run_cuts(ct, lim, in, len, cuts, nc, stop_at, stop_rc);
        same(&one, &rnd, "random cuts", (size_t)t);
        result_free(&rnd);
    }
    free(cuts);
    return one;
}

/* string literal input: every cut gives rc and (when want) the record want */
#define EXPECT_LIM(ct, lim, in, want, want_rc)                                                     \
    do {                                                                                           \
        result r_ = check_cuts((ct), (lim), (in), sizeof(in) - 1, 0, 0);                           \
        assert_int_equal(r_.rc, (want_rc));                                                        \
        if (want)                                                                                  \
            assert_string_equal(r_.rec, (const char *)(want));                                     \
        result_free(&r_);                                                                          \
    } while (0)
#define EXPECT(in, want, want_rc) EXPECT_LIM(CT, NULL, in, want, want_rc)

#define B  "AaB03x"
#define CT "multipart/form-data; boundary=" B
#define CD "Content-Disposition: form-data; "

/* ---- a browser's body ---- */

#define WK    "----WebKitFormBoundary7MA4YWxkTrZu0gW"
#define WK_CT "multipart/form-data; boundary=" WK

/* file bytes that look like the delimiter in every way but one */
static size_t tricky_file(char *out)
{
    static const char *const bits[] = {
        "\r\n--",
        "\r\n------WebKitFormBoundary7MA4YWxkTrZu0g", /* one byte short */
        "X",
        "\r\n------WebKitFormBoundary7MA4YWxkTrZu0gX", /* last byte differs */
        "\r\r\n------WebKitFormBoundary7MA4YWxkTrZu0",
        "\n------WebKitFormBoundary7MA4YWxkTrZu0gW", /* LF only: not a delimiter */
        "\r------WebKitFormBoundary7MA4YWxkTrZu0gW", /* CR only */
        "--" WK,                                     /* not at a line start */
        "\r\n-\r\n--\r\n---\r",
        "\r\n----WebKitFormBoundary",
        "\r\r\r\n\n\r\n\r",
    };
    size_t n = 0;
    for (int i = 0; i < 256; i++)
        out[n++] = (char)i;
    for (size_t k = 0; k < sizeof bits / sizeof *bits; k++) {
        memcpy(out + n, bits[k], strlen(bits[k]));
        n += strlen(bits[k]);
        out[n++] = 0;
    }
    out[n++] = '\r'; /* the file ends in CR, right before the delimiter's CRLF */
    return n;
}

static size_t browser_body(char *out, const char *file, size_t flen)
{
    size_t n = 0;
#define PUT(s) (memcpy(out + n, (s), strlen(s)), n += strlen(s))
    PUT("--" WK "\r\n" CD "name=\"thread_id\"\r\n\r\nthr_123\r\n");
    PUT("--" WK "\r\n" CD "name=\"purpose\"\r\n\r\nchat attachment\r\n");
    PUT("--" WK "\r\n" CD "name=\"file\"; filename=\"photo.bin\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n");
    memcpy(out + n, file, flen);
    n += flen;
    PUT("\r\n--" WK "--\r\n");
#undef PUT
    return n;
}

static void t_browser_any_cut(void **st)
{
    (void)st;
    char file[1024], body[2048], want[2048];
    size_t flen = tricky_file(file);
    size_t len = browser_body(body, file, flen);
    size_t wl = (size_t)sprintf(want, "B thread_id|-|-\nDthr_123\nE\n"
                                      "B purpose|-|-\nDchat attachment\nE\n"
                                      "B file|photo.bin|application/octet-stream\nD");
    memcpy(want + wl, file, flen);
    wl += flen;
    memcpy(want + wl, "\nE\n", 3);
    wl += 3;

    result r = check_cuts(WK_CT, NULL, body, len, 0, 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.len, wl);
    assert_memory_equal(r.rec, want, wl);
    assert_int_equal(r.flen, flen); /* the file bytes reassembled exactly */
    assert_memory_equal(r.file, file, flen);
    result_free(&r);

    /* Firefox: a long run of dashes and digits, text file, preamble-free, no final CRLF */
    EXPECT_LIM(
        "multipart/form-data; boundary=---------------------------9051914041544843365972754266",
        NULL,
        "-----------------------------9051914041544843365972754266\r\n"
        "Content-Disposition: form-data; name=\"text\"\r\n\r\ntext default\r\n"
        "-----------------------------9051914041544843365972754266\r\n"
        "Content-Disposition: form-data; name=\"file1\"; filename=\"a.txt\"\r\n"
        "Content-Type: text/plain\r\n\r\nContent of a.txt.\n\r\n"
        "-----------------------------9051914041544843365972754266\r\n"
        "Content-Disposition: form-data; name=\"file2\"; filename=\"\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n\r\n"
        "-----------------------------9051914041544843365972754266--",
        "B text|-|-\nDtext default\nE\nB file1|a.txt|text/plain\nDContent of a.txt.\n\nE\n"
        "B file2||application/octet-stream\nE\n",
        0);
}

/* a part is handed over as it arrives: at most the delimiter's length is held back */
static void t_streams(void **st)
{
    (void)st;
    size_t flen = 1 << 20;
    char *file = malloc(flen), *body = malloc(flen + 512);
    assert_non_null(file);
    assert_non_null(body);
    unsigned seed = 7;
    for (size_t i = 0; i < flen; i++) {
        seed = seed * 1103515245u + 12345u;
        file[i] = "\r\n-x"[(seed >> 16) % 4]; /* dense with delimiter prefixes */
    }
    const char *head = "--" B "\r\n" CD "name=\"file\"; filename=\"big\"\r\n\r\n";
    size_t hl = strlen(head), len = 0;
    memcpy(body, head, hl);
    memcpy(body + hl, file, flen);
    memcpy(body + hl + flen, "\r\n--" B "--", 4 + strlen(B) + 2);
    len = hl + flen + 4 + strlen(B) + 2;

    rec r = {BUF_INIT(0), BUF_INIT(0), 0, 0, 0, 0, 0, 0};
    mp_parser *p = mp_new(CT, NULL, &CB, &r, NULL);
    assert_non_null(p);
    size_t dl = 4 + strlen(B);
    for (size_t at = 0; at < len;) {
        size_t n = len - at < 4093 ? len - at : 4093;
        assert_int_equal(mp_feed(p, body + at, n), 0);
        at += n;
        if (at > hl && at < hl + flen)
            assert_true(r.file.len + dl > at - hl); /* never more than dl bytes behind */
    }
    assert_int_equal(mp_finish(p), 0);
    assert_int_equal(mp_parts(p), 1);
    mp_free(p);
    assert_int_equal(r.file.len, flen);
    assert_memory_equal(r.file.data, file, flen);
    assert_true(r.max_piece <= 4093);
    buf_free(&r.out);
    buf_free(&r.file);
    free(file);
    free(body);
}

/* ---- headers and filenames ---- */

static void t_filenames(void **st)
{
    (void)st;
#define ONE(disp) "--" B "\r\n" disp "\r\n\r\nx\r\n--" B "--"
    EXPECT(ONE(CD "name=\"f\"; filename=\"a \\\"q\\\" \\\\ b.txt\""),
           "B f|a \"q\" \\ b.txt|-\nDx\nE\n", 0);
    /* a backslash before anything else is kept: old browsers' Windows paths */
    EXPECT(ONE(CD "name=\"f\"; filename=\"C:\\Users\\me\\a.txt\""),
           "B f|C:\\Users\\me\\a.txt|-\nDx\nE\n", 0);
    /* HTML's escapes of names are not undone */
    EXPECT(ONE(CD "name=\"a%22b\"; filename=\"x%0Ay\""), "B a%22b|x%0Ay|-\nDx\nE\n", 0);
    /* RFC 5987 preferred, in either order */
    EXPECT(ONE(CD "name=\"f\"; filename=\"EUR rates.txt\"; filename*=UTF-8''%e2%82%ac%20rates.txt"),
           "B f|\xe2\x82\xac rates.txt|-\nDx\nE\n", 0);
    EXPECT(ONE(CD "name=f; filename*=utf-8'en'%E2%82%AC!.txt; filename=\"e.txt\""),
           "B f|\xe2\x82\xac!.txt|-\nDx\nE\n", 0);
    EXPECT(ONE(CD "name=f; FILENAME*=\"ISO-8859-1''%A3%20rates\""), "B f|\xc2\xa3 rates|-\nDx\nE\n",
           0);
    /* an unknown charset is ignored */
    EXPECT(ONE(CD "name=f; filename=\"plain.txt\"; filename*=KOI8-R''%C1"),
           "B f|plain.txt|-\nDx\nE\n", 0);
    EXPECT(ONE(CD "name=f; filename*=KOI8-R''%C1"), "B f|-|-\nDx\nE\n", 0);
    /* malformed ext-values are errors */
    EXPECT(ONE(CD "name=f; filename*=UTF-8''%e2%82"), NULL, -EBADMSG); /* invalid UTF-8 */
    EXPECT(ONE(CD "name=f; filename*=UTF-8''a%00b"), NULL, -EBADMSG);
    EXPECT(ONE(CD "name=f; filename*=UTF-8''a%4"), NULL, -EBADMSG);
    EXPECT(ONE(CD "name=f; filename*=UTF-8''a%zz"), NULL, -EBADMSG);
    EXPECT(ONE(CD "name=f; filename*=UTF-8''a\"b"), NULL, -EBADMSG);
    EXPECT(ONE(CD "name=f; filename*=UTF-8'a"), NULL, -EBADMSG);
    EXPECT(ONE(CD "name=f; filename*=\"UTF-8''a b\""), NULL, -EBADMSG);
    EXPECT(ONE(CD "name=f; filename*=UTF-8''%ed%a0%80"), NULL, -EBADMSG); /* a surrogate */
    /* empty filename (a file input with no file), none, tokens, case, spacing, other params */
    EXPECT(ONE(CD "name=\"f\"; filename=\"\""), "B f||-\nDx\nE\n", 0);
    EXPECT(ONE("content-disposition:Form-Data;NAME=\"f\" ; size=3;filename=t.bin ;"),
           "B f|t.bin|-\nDx\nE\n", 0);
    EXPECT(ONE(CD "name=\"\""), "B |-|-\nDx\nE\n", 0);
    EXPECT(ONE(CD "name=\"caf\xc3\xa9\"; filename=\"\xe6\x97\xa5.png\""),
           "B caf\xc3\xa9|\xe6\x97\xa5.png|-\nDx\nE\n", 0);
    /* Content-Type trimmed, empty = absent; other headers ignored; folding */
    EXPECT(ONE(CD "name=f\r\nContent-Type:   image/png; q=1  \r\nX-Other: y"),
           "B f|-|image/png; q=1\nDx\nE\n", 0);
    EXPECT(ONE(CD "name=f\r\nContent-Type:"), "B f|-|-\nDx\nE\n", 0);
    EXPECT(ONE("Content-Disposition: form-data;\r\n name=\"f\";\r\n\tfilename=\"a\""),
           "B f|a|-\nDx\nE\n", 0);
    EXPECT(ONE(CD "name=f\r\nContent-Transfer-Encoding: binary"), "B f|-|-\nDx\nE\n", 0);
#undef ONE
}

static void t_malformed(void **st)
{
    (void)st;
#define HDR(h) "--" B "\r\n" h "\r\n\r\nx\r\n--" B "--\r\n"
    EXPECT(HDR(CD "name=f\r\nno colon here"), "", -EBADMSG);
    EXPECT(HDR("Content-Type: text/plain"), "", -EBADMSG);       /* no disposition */
    EXPECT("--" B "\r\n\r\nx\r\n--" B "--", "", -EBADMSG);       /* no headers at all */
    EXPECT(HDR("Content-Disposition: form-data"), "", -EBADMSG); /* no name */
    EXPECT(HDR(CD "filename=\"a\""), "", -EBADMSG);
    EXPECT(HDR("Content-Disposition: attachment; name=f"), "", -EBADMSG);
    EXPECT(HDR("Content-Disposition: form-datax; name=f"), "", -EBADMSG);
    EXPECT(HDR(CD "name=f\r\n" CD "name=g"), "", -EBADMSG);
    EXPECT(HDR(CD "name=f; name=g"), "", -EBADMSG);
    EXPECT(HDR(CD "name=f; filename=a; filename=b"), "", -EBADMSG);
    EXPECT(HDR(CD "name=f\r\nContent-Type: a/b\r\nContent-Type: c/d"), "", -EBADMSG);
    EXPECT(HDR(CD "name=\"f"), "", -EBADMSG);
    EXPECT(HDR(CD "name=f g"), "", -EBADMSG);
    EXPECT(HDR(CD "name="), "", -EBADMSG);
    EXPECT(HDR(CD "=f"), "", -EBADMSG);
    EXPECT(HDR(CD "name=f\r\n: empty name"), "", -EBADMSG);
    EXPECT(HDR(CD "name=f\r\nBad Name: x"), "", -EBADMSG);
    EXPECT(HDR(" " CD "name=f"), "", -EBADMSG);   /* continuation first */
    EXPECT(HDR(CD "name=f\nX: y"), "", -EBADMSG); /* bare LF in headers */
    EXPECT(HDR(CD "name=f\rX: y"), "", -EBADMSG); /* bare CR */
    EXPECT(HDR(CD "name=\"f\0\""), "", -EBADMSG); /* control byte */
    EXPECT("--" B "\r\n" CD "name=f\n\nx\r\n--" B "--", "", -EBADMSG);
    /* the delimiter line: strict CRLF, only padding after the boundary */
    EXPECT("--" B "\n" CD "name=f\r\n\r\nx\r\n--" B "--", "", -EBADMSG);
    EXPECT("--" B "\r" CD "name=f\r\n\r\nx\r\n--" B "--", "", -EBADMSG);
    EXPECT("--" B "X\r\n" CD "name=f\r\n\r\nx\r\n--" B "--", "", -EBADMSG);
    EXPECT("--" B " \tX\r\n", "", -EBADMSG);
    EXPECT("--" B " \n", "", -EBADMSG);
    EXPECT("--" B "-x", "", -EBADMSG);
    EXPECT(HDR(CD "name=f") "", "B f|-|-\nDx\nE\n", 0);
    /* "--boundaryX" inside a part is a malformed delimiter line, not data */
    EXPECT("--" B "\r\n" CD "name=f\r\n\r\nx\r\n--" B "X\r\n--" B "--", "B f|-|-\nDx\nE\n",
           -EBADMSG);
#undef HDR
}

static void t_preamble_epilogue(void **st)
{
    (void)st;
    /* preamble: the boundary not at a line start, partial matches, LF-only lines */
    EXPECT("junk --" B "\r\n\r--" B "\n--" B "\r\n-\r\n--" B " \t\r\n" CD "name=a\r\n\r\n1\r\n--" B
           "--",
           "B a|-|-\nD1\nE\n", 0);
    /* empty form; empty part; a body of one CR; padding after the boundary */
    EXPECT("--" B "--", "", 0);
    EXPECT("--" B "--\r\n", "", 0);
    EXPECT("\r\n--" B "--", "", 0);
    EXPECT("--" B "\r\n" CD "name=a\r\n\r\n\r\n--" B "--", "B a|-|-\nE\n", 0);
    EXPECT("--" B "\r\n" CD "name=a\r\n\r\n\r\r\n--" B "  \r\n" CD "name=b\r\n\r\n\n\r\n--" B "--",
           "B a|-|-\nD\r\nE\nB b|-|-\nD\n\nE\n", 0);
    /* the epilogue may hold anything, delimiters included */
    EXPECT("--" B "\r\n" CD "name=a\r\n\r\nv\r\n--" B "--garbage\r\n--" B "\r\n" CD "name=b\r\n",
           "B a|-|-\nDv\nE\n", 0);
}

static void t_truncated(void **st)
{
    (void)st;
    static const char body[] =
        "preamble\r\n--" B "\r\n" CD "name=\"a\"\r\n\r\nvalue\r\n--" B "\r\n" CD
        "name=\"b\"; filename=\"b.bin\"\r\n\r\n\r\n--\r\n--" B "--\r\n";
    size_t len = sizeof body - 1, closed = len - 2; /* through the final "--" */
    for (size_t i = 0; i < len; i++) {
        result r = run1(CT, body, i);
        assert_int_equal(r.rc, i < closed ? -EBADMSG : 0);
        result_free(&r);
    }
    result r = run1(CT, "", 0);
    assert_int_equal(r.rc, -EBADMSG);
    result_free(&r);
    /* the message */
    mp_parser *p = mp_new(CT, NULL, NULL, NULL, NULL);
    assert_int_equal(mp_feed(p, body, 30), 0);
    assert_int_equal(mp_finish(p), -EBADMSG);
    assert_non_null(strstr(mp_error(p), "truncated"));
    mp_free(p);
}

/* ---- the request's Content-Type ---- */

static void bad_ct(const char *ct, const char *msg)
{
    const char *err = NULL;
    assert_null(mp_new(ct, NULL, &CB, NULL, &err));
    assert_non_null(err);
    if (!strstr(err, msg))
        fail_msg("%s: got \"%s\", want \"%s\"", ct ? ct : "(null)", err, msg);
    assert_null(mp_new(ct, NULL, &CB, NULL, NULL)); /* err is optional */
}

static void good_ct(const char *ct, const char *bnd)
{
    const char *err = "unset";
    mp_parser *p = mp_new(ct, NULL, NULL, NULL, &err);
    if (!p)
        fail_msg("%s: %s", ct, err);
    assert_null(err);
    /* the boundary is the one extracted: its close delimiter ends the body */
    char body[128];
    int n = snprintf(body, sizeof body, "--%s--", bnd);
    assert_int_equal(mp_feed(p, body, (size_t)n), 0);
    assert_int_equal(mp_finish(p), 0);
    mp_free(p);
}

static void t_content_type(void **st)
{
    (void)st;
    char b70[71], ct[128];
    memset(b70, 'b', 70);
    b70[70] = 0;
    good_ct("multipart/form-data; boundary=x", "x");
    good_ct("Multipart/Form-Data;BOUNDARY=\"a b'()+_,-./:=?\"; charset=utf-8", "a b'()+_,-./:=?");
    good_ct("  multipart/form-data ; charset=\"x;y\" ; boundary = \"q\\?\"", "q?");
    good_ct("multipart/form-data; boundary=\"\\x\\y\"", "xy");
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", b70);
    good_ct(ct, b70);
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=\"%sc\"", b70);
    bad_ct(ct, "longer than 70");
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%sc", b70);
    bad_ct(ct, "longer than 70");
    bad_ct(NULL, "missing Content-Type");
    bad_ct("", "not multipart/form-data");
    bad_ct("text/plain; boundary=x", "not multipart/form-data");
    bad_ct("multipart/mixed; boundary=x", "not multipart/form-data");
    bad_ct("multipart/form-data", "missing boundary");
    bad_ct("multipart/form-data; charset=utf-8", "missing boundary");
    bad_ct("multipart/form-data; boundary=", "empty boundary");
    bad_ct("multipart/form-data; boundary=\"\"", "empty boundary");
    bad_ct("multipart/form-data; boundary=a; boundary=b", "duplicate boundary");
    bad_ct("multipart/form-data; boundary=a@b", "invalid character");
    bad_ct("multipart/form-data; boundary=\"a\rb\"", "invalid character");
    bad_ct("multipart/form-data; boundary=\"ab \"", "ends in a space");
    bad_ct("multipart/form-data; boundary=\"ab", "unterminated");
    bad_ct("multipart/form-data; boundary=a b", "malformed");
    bad_ct("multipart/form-data; =b", "malformed");
    bad_ct("multipart/form-data; boundary", "malformed");
}

/* ---- limits and aborts ---- */

static void t_limits(void **st)
{
    (void)st;
    /* header bytes per part (padding and the blank line counted) */
    mp_limits lh = {sizeof(CD "name=f\r\n\r\n") - 1, 0, 0};
    EXPECT_LIM(CT, &lh, "--" B "\r\n" CD "name=f\r\n\r\nx\r\n--" B "--", "B f|-|-\nDx\nE\n", 0);
    EXPECT_LIM(CT, &lh, "--" B "\r\n" CD "name=ff\r\n\r\nx\r\n--" B "--", "", -EMSGSIZE);
    EXPECT_LIM(CT, &lh, "--" B " \r\n" CD "name=f\r\n\r\nx\r\n--" B "--", "", -EMSGSIZE);
    EXPECT_LIM(CT, &lh, "--" B "\r\n" CD "name=fffffffffffffffffffff", "", -EMSGSIZE);
    mp_limits lpad = {4, 0, 0};
    EXPECT_LIM(CT, &lpad, "--" B "    \r\n", "", -EMSGSIZE);
    EXPECT_LIM(CT, &lpad, "--" B "   \r\n", "", -EBADMSG); /* padding fits, truncated */
    /* parts */
    mp_limits lp = {0, 2, 0};
    EXPECT_LIM(CT, &lp,
               "--" B "\r\n" CD "name=a\r\n\r\n\r\n--" B "\r\n" CD "name=b\r\n\r\n\r\n--" B "--",
               "B a|-|-\nE\nB b|-|-\nE\n", 0);
    EXPECT_LIM(CT, &lp,
               "--" B "\r\n" CD "name=a\r\n\r\n\r\n--" B "\r\n" CD "name=b\r\n\r\n\r\n--" B
               "\r\n" CD "name=c\r\n\r\n\r\n--" B "--",
               "B a|-|-\nE\nB b|-|-\nE\n", -EMSGSIZE);
    /* preamble + epilogue: 8 bytes */
    mp_limits lo = {0, 0, 8};
    EXPECT_LIM(CT, &lo, "12345678\r\n--" B "--", "", 0); /* the CRLF is the delimiter's */
    EXPECT_LIM(CT, &lo, "123456789\r\n--" B "--", "", -EMSGSIZE);
    EXPECT_LIM(CT, &lo, "123456\r\n--" B "--12345678", "", -EMSGSIZE);
    EXPECT_LIM(CT, &lo, "123456\r\n--" B "--", "", 0);
    EXPECT_LIM(CT, &lo, "1234\r\n--" B "--\r\n", "", 0);
    EXPECT_LIM(CT, &lo, "--" B "--12345678", "", 0);
    EXPECT_LIM(CT, &lo, "--" B "--123456789", "", -EMSGSIZE);
    EXPECT_LIM(CT, &lo, "\r\n\r\n\r\n\r\n\r\n\r\n--" B "--", "", -EMSGSIZE);
    EXPECT_LIM(CT, &lo, "\r\n--" B "x\r\n--" B "--", "", -EBADMSG);
    EXPECT_LIM(CT, &lo, "\r\n-\r\n--" B "--", "", 0);
    EXPECT_LIM(CT, &lo, "\r\n--" B "--1234567", "", 0);
    /* the defaults: 16 parts, 4 KiB outside, 8 KiB headers */
    buf b = BUF_INIT(0);
    for (int i = 0; i < 16; i++)
        assert_int_equal(buf_printf(&b, "--" B "\r\n" CD "name=p%d\r\n\r\n\r\n", i), 0);
    assert_int_equal(buf_puts(&b, "--" B "--"), 0);
    result r = check_cuts(CT, NULL, b.data, b.len, 0, 0);
    assert_int_equal(r.rc, 0);
    result_free(&r);
    buf_reset(&b);
    for (int i = 0; i < 17; i++)
        assert_int_equal(buf_printf(&b, "--" B "\r\n" CD "name=p%d\r\n\r\n\r\n", i), 0);
    r = run1(CT, b.data, b.len);
    assert_int_equal(r.rc, -EMSGSIZE);
    result_free(&r);
    buf_reset(&b);
    for (int i = 0; i < 4097; i++)
        assert_int_equal(buf_putc(&b, 'p'), 0);
    assert_int_equal(buf_puts(&b, "\r\n--" B "--"), 0);
    r = run1(CT, b.data, b.len);
    assert_int_equal(r.rc, -EMSGSIZE);
    result_free(&r);
    r = run1(CT, b.data + 1, b.len - 1);
    assert_int_equal(r.rc, 0);
    result_free(&r);
    buf_reset(&b);
    assert_int_equal(buf_puts(&b, "--" B "\r\n" CD "name=f\r\nX-Pad: "), 0);
    while (b.len < 8192 - 4 + strlen("--" B "\r\n"))
        assert_int_equal(buf_putc(&b, 'x'), 0);
    assert_int_equal(buf_puts(&b, "\r\n\r\n\r\n--" B "--"), 0);
    r = run1(CT, b.data, b.len);
    assert_int_equal(r.rc, 0);
    result_free(&r);
    buf_reset(&b);
    assert_int_equal(buf_puts(&b, "--" B "\r\n" CD "name=f\r\nX-Pad: "), 0);
    while (b.len < 8192 - 3 + strlen("--" B "\r\n"))
        assert_int_equal(buf_putc(&b, 'x'), 0);
    assert_int_equal(buf_puts(&b, "\r\n\r\n\r\n--" B "--"), 0);
    r = run1(CT, b.data, b.len);
    assert_int_equal(r.rc, -EMSGSIZE);
    result_free(&r);
    buf_free(&b);
}

static void t_callback_abort(void **st)
{
    (void)st;
    static const char body[] = "--" B "\r\n" CD "name=a\r\n\r\nvalue\r\n--" B "\r\n" CD
                               "name=b\r\n\r\nsecond\r\n--" B "--";
    static const char *const want[] = {
        "B a|-|-\n",
        "B a|-|-\nDvalue\nE\n",
        "B a|-|-\nDvalue\nE\nB b|-|-\n",
        "B a|-|-\nDvalue\nE\nB b|-|-\nDsecond\nE\n",
    };
    for (int k = 1; k <= 4; k++) {
        result r = check_cuts(CT, NULL, body, sizeof body - 1, k, -1234);
        assert_int_equal(r.rc, -1234);
        assert_string_equal(r.rec, want[k - 1]);
        result_free(&r);
    }
    /* from the data callback: what it was given depends on the cut, so one feed only */
    result r = run_cuts(CT, NULL, body, sizeof body - 1, NULL, 0, -1, -1234);
    assert_int_equal(r.rc, -1234);
    assert_string_equal(r.rec, "B a|-|-\nDvalue");
    result_free(&r);
    /* the message; NULL callbacks are fine */
    rec rc = {BUF_INIT(0), BUF_INIT(0), 0, 0, 0, 1, -5, 0};
    mp_callbacks only_end = {NULL, NULL, on_end};
    mp_parser *p = mp_new(CT, NULL, &only_end, &rc, NULL);
    assert_int_equal(mp_feed(p, body, sizeof body - 1), -5);
    assert_string_equal(mp_error(p), "callback aborted");
    assert_int_equal(mp_finish(p), -5);
    mp_free(p);
    buf_free(&rc.out);
    buf_free(&rc.file);
    p = mp_new(CT, NULL, NULL, NULL, NULL);
    assert_int_equal(mp_feed(p, body, sizeof body - 1), 0);
    assert_int_equal(mp_finish(p), 0);
    assert_int_equal(mp_parts(p), 2);
    mp_free(p);
    mp_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_browser_any_cut),   cmocka_unit_test(t_streams),
        cmocka_unit_test(t_filenames),         cmocka_unit_test(t_malformed),
        cmocka_unit_test(t_preamble_epilogue), cmocka_unit_test(t_truncated),
        cmocka_unit_test(t_content_type),      cmocka_unit_test(t_limits),
        cmocka_unit_test(t_callback_abort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
