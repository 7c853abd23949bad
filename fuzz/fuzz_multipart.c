/* libFuzzer harness for the multipart/form-data parser (src/files/multipart.c). Built and run
 * by fuzz/build.sh (target `multipart`: corpus fuzz/corpus/multipart/, dictionary
 * fuzz/dict/multipart.dict, crashes in fuzz/crash-multipart-*).
 *
 * Input: byte 0 = how to cut and what to check: bits 0-5 = the size of the small pieces - 1,
 * bit 6 = tight limits (64 header bytes, 3 parts, 16 bytes outside), bit 7 = callbacks may stop
 * the parse (a part named "!..." at its begin, a filename "!..." at its end); the rest = the
 * body, under "multipart/form-data; boundary=bnd". The body is fed whole, cut in two (where
 * byte 0 says), one byte at a time and in the small pieces; every way must give the same
 * callbacks (hashed; data bytes hashed as one stream per part, so how they were split does not
 * count) and the same error, or the harness aborts. The callbacks also check what the header
 * promises (strings, n > 0, begin/end pairing, at most the delimiter held back). Each piece is
 * a fresh heap copy freed right after its feed, so a pointer the parser kept into a chunk is a
 * use-after-free for ASan. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files/multipart.h"

#define CT   "multipart/form-data; boundary=bnd"
#define DLEN 7 /* "\r\n--bnd" */

typedef struct trace {
    uint64_t h;
    size_t events;
    int in_part;
    int stop;           /* callbacks may return an error */
    const char *stopfn; /* the current part's filename starts with '!' */
    size_t part_bytes;  /* data bytes of the current part */
    int bytewise;       /* fed one byte at a time */
    size_t fed;         /* body offset of the piece being fed */
    size_t data_from;   /* one byte at a time: the body offset of the part's data */
} trace;

static void mix(trace *t, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        t->h = (t->h ^ b[i]) * 1099511628211ull;
}

static void mixs(trace *t, const char *s)
{
    if (!s) {
        mix(t, "\1", 1);
        return;
    }
    mix(t, s, strlen(s) + 1);
}

static int on_begin(void *ud, const mp_part *part)
{
    trace *t = ud;
    if (t->in_part || !part->name || (part->content_type && !*part->content_type))
        abort();
    t->in_part = 1;
    t->part_bytes = 0;
    t->data_from = t->fed + 1;
    t->stopfn = part->filename && part->filename[0] == '!' ? "!" : NULL;
    mix(t, "B", 1);
    mixs(t, part->name);
    mixs(t, part->filename);
    mixs(t, part->content_type);
    mix(t, &part->index, sizeof part->index);
    t->events++;
    return t->stop && part->name[0] == '!' ? -1000 : 0;
}

static int on_data(void *ud, const char *p, size_t n)
{
    trace *t = ud;
    if (!t->in_part || !n || !p)
        abort();
    mix(t, p, n);
    t->part_bytes += n;
    return 0;
}

static int on_end(void *ud)
{
    trace *t = ud;
    if (!t->in_part)
        abort();
    t->in_part = 0;
    mix(t, "E", 1);
    mix(t, &t->part_bytes, sizeof t->part_bytes);
    t->events++;
    return t->stop && t->stopfn ? -1001 : 0;
}

static const mp_callbacks CB = {on_begin, on_data, on_end};

/* Feeds s in pieces ending at cuts[0..ncuts) then at n; returns the first error (or finish's). */
static int run(const char *s, size_t n, const mp_limits *lim, const size_t *cuts, size_t ncuts,
               trace *t)
{
    const char *err;
    mp_parser *p = mp_new(CT, lim, &CB, t, &err);
    if (!p)
        abort();
    size_t at = 0;
    int rc = 0;
    for (size_t k = 0; k <= ncuts && !rc; k++) {
        size_t to = k < ncuts ? cuts[k] : n;
        char *c = malloc(to - at + 1);
        if (!c)
            abort();
        memcpy(c, s + at, to - at);
        t->fed = at;
        rc = mp_feed(p, c, to - at);
        free(c);
        at = to;
        /* streaming: one byte at a time, a part's data starts right after the byte that began
         * it, and all of it but a delimiter prefix (< DLEN bytes) must have been handed over */
        if (t->bytewise && !rc && t->in_part && at - t->data_from > t->part_bytes + DLEN - 1)
            abort();
    }
    int frc = mp_finish(p);
    if (rc && frc != rc)
        abort(); /* sticky */
    if (!rc && frc == 0 && t->in_part)
        abort(); /* a closed body has no open part */
    if ((rc || frc) && !*mp_error(p))
        abort();
    mp_free(p);
    return rc ? rc : frc;
}

static void same(const char *what, const trace *a, int arc, const trace *b, int brc)
{
    if (a->h != b->h || a->events != b->events || arc != brc) {
        fprintf(stderr, "fuzz_multipart: %s differs: %zu events rc %d vs %zu events rc %d\n", what,
                a->events, arc, b->events, brc);
        abort();
    }
}

static trace fresh(int stop)
{
    trace t;
    memset(&t, 0, sizeof t);
    t.h = 14695981039346656037ull;
    t.stop = stop;
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len)
{
    if (len < 1)
        return 0;
    size_t n = len - 1;
    const char *s = (const char *)in + 1;
    size_t step = (in[0] & 0x3f) + 1;
    mp_limits tight = {64, 3, 16};
    const mp_limits *lim = in[0] & 0x40 ? &tight : NULL;
    int stop = in[0] >> 7;
    size_t cut = (size_t)in[0] * (n + 1) / 256;

    trace ref = fresh(stop);
    int ref_rc = run(s, n, lim, NULL, 0, &ref);

    trace t = fresh(stop);
    int rc = run(s, n, lim, &cut, 1, &t);
    same("two feeds vs one", &t, rc, &ref, ref_rc);

    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    if (!cuts)
        abort();
    for (size_t i = 0; i + 1 < n; i++)
        cuts[i] = i + 1;
    t = fresh(stop);
    t.bytewise = 1;
    rc = run(s, n, lim, cuts, n ? n - 1 : 0, &t);
    same("byte at a time vs one", &t, rc, &ref, ref_rc);

    size_t nc = 0;
    for (size_t at = step; at < n; at += step)
        cuts[nc++] = at;
    t = fresh(stop);
    rc = run(s, n, lim, cuts, nc, &t);
    same("small pieces vs one", &t, rc, &ref, ref_rc);
    free(cuts);
    return 0;
}
