/* libFuzzer harness for the SSE client parser (src/llm/sse.c). Built and run by fuzz/build.sh
 * (target `sse`: corpus fuzz/corpus/sse/, dictionary fuzz/dict/sse.dict, crashes in
 * fuzz/crash-sse-*).
 *
 * Input: byte 0-1 = where to cut the stream (little-endian, modulo its length + 1), byte 2 =
 * the data cap (1 + 4*b; 255 = the default 1 MiB), the rest = the stream. The stream is fed
 * whole, cut in two, one byte at a time, and in pieces of 1..13 bytes; every way must give
 * the same callbacks (hashed) and the same error as a naive whole-buffer reading of the
 * spec below, or the harness aborts. Each piece is a fresh heap copy freed right after its
 * feed, so a pointer the parser kept into a chunk is a use-after-free for ASan. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/sse.h"

typedef struct trace {
    uint64_t h;
    size_t n;
    size_t cap;
} trace;

static void mix(trace *t, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        t->h = (t->h ^ b[i]) * 1099511628211ull;
}

/* Records the event; data starting with "!!" stops the parse, to cover callback errors. */
static int on_event(void *ud, const char *event, size_t event_len, const char *data,
                    size_t data_len, const char *id)
{
    trace *t = ud;
    size_t idl = strlen(id);
    if (!event_len || event_len > SSEP_NAME_MAX || event[event_len] || data_len > t->cap ||
        idl > SSEP_NAME_MAX || (data_len && !data))
        abort();
    mix(t, &event_len, sizeof event_len);
    mix(t, event, event_len);
    mix(t, &data_len, sizeof data_len);
    mix(t, data, data_len);
    mix(t, &idl, sizeof idl);
    mix(t, id, idl);
    t->n++;
    if (data_len >= 2 && data[0] == '!' && data[1] == '!')
        return -1000;
    return 0;
}

/* The reference: the spec's algorithm over the whole stream, one byte at a time, with the
 * same caps checked at the same points (a line's length, the joined data, name and id). */
static int oracle(const char *s, size_t n, size_t cap, trace *t)
{
    size_t i = 0, line_max = cap + SSEP_LINE_SLACK;
    if (n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3))
        i = 3;
    char *data = malloc(n + 1);
    char event[SSEP_NAME_MAX + 1] = "", id[SSEP_NAME_MAX + 1] = "";
    size_t dlen = 0, elen = 0;
    int has_data = 0, rc = 0;
    if (!data)
        abort();
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != '\r' && s[j] != '\n')
            j++;
        if (j - i > line_max) {
            rc = -EMSGSIZE;
            break;
        }
        if (j == n)
            break; /* unterminated: discarded */
        const char *l = s + i;
        size_t ll = j - i;
        i = j + 1;
        if (s[j] == '\r' && i < n && s[i] == '\n')
            i++;
        if (!ll) {
            if (has_data) {
                rc = on_event(t, elen ? event : "message", elen ? elen : 7, data, dlen, id);
                if (rc < 0)
                    break;
                rc = 0;
            }
            has_data = 0;
            dlen = 0;
            elen = 0;
            event[0] = 0;
            continue;
        }
        if (l[0] == ':')
            continue;
        size_t f = 0;
        while (f < ll && l[f] != ':')
            f++;
        const char *v = f < ll ? l + f + 1 : l + ll;
        size_t vl = f < ll ? ll - f - 1 : 0;
        if (vl && v[0] == ' ') {
            v++;
            vl--;
        }
        if (f == 4 && !memcmp(l, "data", 4)) {
            if ((has_data ? dlen + 1 : 0) + vl > cap) {
                rc = -EMSGSIZE;
                break;
            }
            if (has_data)
                data[dlen++] = '\n';
            memcpy(data + dlen, v, vl);
            dlen += vl;
            has_data = 1;
        } else if (f == 5 && !memcmp(l, "event", 5)) {
            if (vl > SSEP_NAME_MAX) {
                rc = -EMSGSIZE;
                break;
            }
            memcpy(event, v, vl);
            event[vl] = 0;
            elen = vl;
        } else if (f == 2 && !memcmp(l, "id", 2)) {
            if (memchr(v, 0, vl))
                continue;
            if (vl > SSEP_NAME_MAX) {
                rc = -EMSGSIZE;
                break;
            }
            memcpy(id, v, vl);
            id[vl] = 0;
        }
    }
    free(data);
    return rc;
}

/* Feeds s in pieces ending at cuts[0..ncuts) then at n; returns the first error. */
static int run(const char *s, size_t n, size_t max, const size_t *cuts, size_t ncuts, trace *t)
{
    ssep p;
    ssep_init(&p, max, on_event, t);
    size_t at = 0;
    int rc = 0;
    for (size_t k = 0; k <= ncuts && !rc; k++) {
        size_t to = k < ncuts ? cuts[k] : n;
        char *c = malloc(to - at + 1);
        if (!c)
            abort();
        memcpy(c, s + at, to - at);
        rc = ssep_feed(&p, c, to - at);
        free(c);
        at = to;
    }
    if (ssep_finish(&p) != rc)
        abort(); /* finish must report the sticky error */
    ssep_free(&p);
    return rc;
}

static void same(const char *what, const trace *a, int arc, const trace *b, int brc)
{
    if (a->h != b->h || a->n != b->n || arc != brc) {
        fprintf(stderr, "fuzz_sse: %s differs: %zu events rc %d vs %zu events rc %d\n", what, a->n,
                arc, b->n, brc);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len)
{
    if (len < 3)
        return 0;
    size_t n = len - 3;
    const char *s = (const char *)in + 3;
    size_t cut = ((size_t)in[0] | (size_t)in[1] << 8) % (n + 1);
    size_t max = in[2] == 255 ? 0 : 1 + 4 * (size_t)in[2];
    size_t cap = max ? max : SSEP_DEFAULT_EVENT;

    trace ref = {14695981039346656037ull, 0, cap};
    int ref_rc = oracle(s, n, cap, &ref);

    trace t = ref;
    t.h = 14695981039346656037ull;
    t.n = 0;
    int rc = run(s, n, max, NULL, 0, &t);
    same("one feed vs oracle", &t, rc, &ref, ref_rc);

    t.h = 14695981039346656037ull;
    t.n = 0;
    rc = run(s, n, max, &cut, 1, &t);
    same("two feeds vs oracle", &t, rc, &ref, ref_rc);

    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    if (!cuts)
        abort();
    for (size_t i = 0; i + 1 < n; i++)
        cuts[i] = i + 1;
    t.h = 14695981039346656037ull;
    t.n = 0;
    rc = run(s, n, max, cuts, n ? n - 1 : 0, &t);
    same("byte at a time vs oracle", &t, rc, &ref, ref_rc);

    size_t nc = 0, step = cut % 13 + 1;
    for (size_t at = step; at < n; at += step)
        cuts[nc++] = at;
    t.h = 14695981039346656037ull;
    t.n = 0;
    rc = run(s, n, max, cuts, nc, &t);
    same("small pieces vs oracle", &t, rc, &ref, ref_rc);
    free(cuts);
    return 0;
}
