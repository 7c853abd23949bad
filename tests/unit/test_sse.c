/* Unit tests for the SSE client parser (src/llm/sse.c): the WHATWG examples, line endings,
 * fields, caps, and the property that cutting a stream anywhere does not change the events. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/sse.h"
#include "util/buf.h"

/* Records every callback as "[event|data|id]\n". */
typedef struct rec {
    buf out;
    int n;
    int stop_at; /* return stop_rc from this (1-based) callback; 0 = never */
    int stop_rc;
} rec;

static int rec_cb(void *ud, const char *event, size_t event_len, const char *data, size_t data_len,
                  const char *id)
{
    rec *r = ud;
    assert_non_null(event);
    assert_non_null(data);
    assert_non_null(id);
    assert_true(event_len > 0);
    assert_int_equal(event[event_len], 0);
    assert_true(strlen(id) <= SSEP_NAME_MAX);
    assert_int_equal(buf_putc(&r->out, '['), 0);
    assert_int_equal(buf_append(&r->out, event, event_len), 0);
    assert_int_equal(buf_putc(&r->out, '|'), 0);
    assert_int_equal(buf_append(&r->out, data, data_len), 0);
    assert_int_equal(buf_printf(&r->out, "|%s]\n", id), 0);
    r->n++;
    if (r->stop_at && r->n == r->stop_at)
        return r->stop_rc;
    return 0;
}

/* Feeds in cut at the ascending offsets cuts[0..ncuts), each piece from its own heap copy that
 * is scribbled over and freed right after its feed (so a pointer kept into a chunk shows up
 * under ASan/valgrind), then finishes. Returns the record; *rc = the first error. */
static char *run_cuts(const char *in, size_t len, size_t max, int stop_at, int stop_rc,
                      const size_t *cuts, size_t ncuts, int *rc, int *nevents)
{
    rec r = {BUF_INIT(0), 0, stop_at, stop_rc};
    ssep p;
    ssep_init(&p, max, rec_cb, &r);
    size_t at = 0;
    int err = 0;
    for (size_t k = 0; k <= ncuts && !err; k++) {
        size_t to = k < ncuts ? cuts[k] : len;
        size_t n = to - at;
        char *c = malloc(n ? n : 1);
        assert_non_null(c);
        memcpy(c, in + at, n);
        err = ssep_feed(&p, c, n);
        memset(c, 'Z', n);
        free(c);
        at = to;
    }
    int frc = ssep_finish(&p);
    assert_int_equal(frc, err); /* finish reports the sticky error, or 0 */
    ssep_free(&p);
    *rc = err;
    if (nevents)
        *nevents = r.n;
    size_t olen;
    return buf_steal(&r.out, &olen);
}

/* The record of one feed must equal want (if given) with error want_rc, and so must every
 * two-piece cut, one byte at a time, and some random cuttings. Returns the record (free it). */
static char *check_cut_ex(const char *in, size_t len, size_t max, int stop_at, int stop_rc,
                          const char *want, int want_rc, int *nevents)
{
    int rc;
    char *one = run_cuts(in, len, max, stop_at, stop_rc, NULL, 0, &rc, nevents);
    if (want)
        assert_string_equal(one, want);
    assert_int_equal(rc, want_rc);
    for (size_t i = 0; i <= len; i++) {
        char *two = run_cuts(in, len, max, stop_at, stop_rc, &i, 1, &rc, NULL);
        if (strcmp(two, one))
            fail_msg("cut at %zu: got\n%s\nwant\n%s", i, two, one);
        assert_int_equal(rc, want_rc);
        free(two);
    }
    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    assert_non_null(cuts);
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    char *bytes = run_cuts(in, len, max, stop_at, stop_rc, cuts, len ? len - 1 : 0, &rc, NULL);
    assert_string_equal(bytes, one);
    assert_int_equal(rc, want_rc);
    free(bytes);
    unsigned seed = (unsigned)len * 2654435761u + 1;
    for (int t = 0; t < 50 && len; t++) {
        size_t nc = 0, at = 0;
        while (nc < len) {
            seed = seed * 1103515245u + 12345u;
            at += 1 + (seed >> 16) % 97;
            if (at >= len)
                break;
            cuts[nc++] = at;
        }
        char *rnd = run_cuts(in, len, max, stop_at, stop_rc, cuts, nc, &rc, NULL);
        assert_string_equal(rnd, one);
        assert_int_equal(rc, want_rc);
        free(rnd);
    }
    free(cuts);
    return one;
}

static void check_cut(const char *in, size_t len, size_t max, const char *want, int want_rc)
{
    free(check_cut_ex(in, len, max, 0, 0, want, want_rc, NULL));
}

/* string literal input (embedded NULs kept), default cap, no error */
#define EXPECT(in, want)              check_cut((in), sizeof(in) - 1, 0, (want), 0)
#define assert_prefix(s, lit)         assert_memory_equal((s), (lit), sizeof(lit) - 1)
#define EXPECT_CAP(in, max, want, rc) check_cut((in), sizeof(in) - 1, (max), (want), (rc))

static void t_spec_examples(void **st)
{
    (void)st;
    /* the examples of the WHATWG "event stream interpretation" section */
    EXPECT("data: YHOO\ndata: +2\ndata: 10\n\n", "[message|YHOO\n+2\n10|]\n");
    EXPECT(": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
           "data:  third event\n\n",
           "[message|first event|1]\n[message|second event|]\n[message| third event|]\n");
    /* two events (data "" and "\n"); the last one has no blank line and is discarded */
    EXPECT("data\n\ndata\ndata\n\ndata:", "[message||]\n[message|\n|]\n");
    EXPECT("data:test\n\ndata: test\n\n", "[message|test|]\n[message|test|]\n");
    EXPECT(
        "event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n",
        "[add|73857293|]\n[remove|2153|]\n[add|113411|]\n");
}

static void t_line_endings(void **st)
{
    (void)st;
    const char *want = "[a|1\n2|]\n[message|3|]\n";
    EXPECT("event: a\ndata: 1\ndata: 2\n\n: c\ndata: 3\n\n", want);
    EXPECT("event: a\r\ndata: 1\r\ndata: 2\r\n\r\n: c\r\ndata: 3\r\n\r\n", want);
    EXPECT("event: a\rdata: 1\rdata: 2\r\r: c\rdata: 3\r\r", want);
    EXPECT("event: a\r\ndata: 1\rdata: 2\n\r\n: c\rdata: 3\r\n\r", want);
    /* CR CR is a line end and a blank line; LF CR likewise; CR LF is only one line end */
    EXPECT("data: x\r\rdata: y\n\rdata: z\r\n\r\n", "[message|x|]\n[message|y|]\n[message|z|]\n");
}

static int feeds(ssep *p, const char *const *parts)
{
    int rc = 0;
    for (; *parts && !rc; parts++)
        rc = ssep_feed(p, *parts, strlen(*parts));
    return rc;
}

static void t_cr_lf_split(void **st)
{
    (void)st;
    rec r = {BUF_INIT(0), 0, 0, 0};
    ssep p;
    ssep_init(&p, 0, rec_cb, &r);
    /* a CRLF cut between feeds is one line end, not a line end and a blank line */
    const char *a[] = {"data: a\r", "\ndata: b\r\n\r", "\n", NULL};
    assert_int_equal(feeds(&p, a), 0);
    assert_string_equal(r.out.data, "[message|a\nb|]\n");
    /* an empty feed between the CR and the LF changes nothing */
    const char *b[] = {"data: c\r", "", "\n", "data: d\n\n", NULL};
    assert_int_equal(feeds(&p, b), 0);
    assert_string_equal(r.out.data, "[message|a\nb|]\n[message|c\nd|]\n");
    /* a CR ending a feed followed by another CR: line end then blank line */
    const char *c[] = {"data: e\r", "\r", NULL};
    assert_int_equal(feeds(&p, c), 0);
    assert_string_equal(r.out.data, "[message|a\nb|]\n[message|c\nd|]\n[message|e|]\n");
    /* the dispatching CR does not wait for a possible LF */
    const char *d[] = {"data: f\r\r", NULL};
    assert_int_equal(feeds(&p, d), 0);
    assert_int_equal(r.n, 4);
    const char *e[] = {"\n", "data: g\n\n", NULL};
    assert_int_equal(feeds(&p, e), 0);
    assert_int_equal(r.n, 5);
    assert_int_equal(ssep_finish(&p), 0);
    ssep_free(&p);
    buf_free(&r.out);
}

static void t_multiline_and_fields(void **st)
{
    (void)st;
    EXPECT("data: {\"a\":\ndata: 1}\n\n", "[message|{\"a\":\n1}|]\n");
    EXPECT("data:\ndata:\n\n", "[message|\n|]\n");
    EXPECT("data: x\nevent: e\ndata: y\n\n", "[e|x\ny|]\n");
    /* one space removed, not more; no space is fine; a colon in the value stays */
    EXPECT("data:x\n\ndata: x\n\ndata:  x\n\ndata: a:b: c\n\n",
           "[message|x|]\n[message|x|]\n[message| x|]\n[message|a:b: c|]\n");
    /* no colon: the whole line is the field name, the value empty */
    EXPECT("data\n\n", "[message||]\n");
    /* field names are exact and case-sensitive; unknown ones and retry are ignored */
    EXPECT("data :x\nDATA: x\nData: x\nretry: 1000\nfoo: bar\ndatas: x\n\n", "");
    EXPECT("retry: 1000\nfoo: bar\ndata: ok\nretry\n\n", "[message|ok|]\n");
    /* the last event: wins; event: with no value means the default name */
    EXPECT("event: a\nevent: b\ndata: x\n\nevent: a\nevent\ndata: y\n\n", "[b|x|]\n[message|y|]\n");
    /* NUL and non-UTF-8 bytes in data pass through */
    EXPECT("data: a\0b\xff\n\n", "[message|a\0b\xff|]\n");
}

static void t_comments(void **st)
{
    (void)st;
    EXPECT(": ping\n\n: ping\n\ndata: x\n: hb\ndata: y\n\n:\n\n::\n\n", "[message|x\ny|]\n");
    EXPECT(":data: x\n\n", "");
    EXPECT(": OPENROUTER PROCESSING\r\n\r\ndata: {}\r\n\r\n", "[message|{}|]\n");
}

static void t_event_names(void **st)
{
    (void)st;
    /* Anthropic: event: + data: */
    EXPECT("event: content_block_delta\n"
           "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
           "\"text\":\"Hi\"}}\n\n"
           "event: ping\ndata: {\"type\": \"ping\"}\n\n"
           "event: error\n"
           "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
           "\"Overloaded\"}}\n\n",
           "[content_block_delta|{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
           "\"text_delta\",\"text\":\"Hi\"}}|]\n"
           "[ping|{\"type\": \"ping\"}|]\n"
           "[error|{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
           "\"Overloaded\"}}|]\n");
    /* OpenAI Responses: typed events */
    EXPECT("event: response.output_text.delta\n"
           "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
           "[response.output_text.delta|{\"type\":\"response.output_text.delta\",\"delta\":"
           "\"Hi\"}|]\n");
    /* the name does not carry over to the next event */
    EXPECT("event: a\ndata: 1\n\ndata: 2\n\n", "[a|1|]\n[message|2|]\n");
}

static void t_done(void **st)
{
    (void)st;
    /* [DONE] is data like any other: the Chat Completions adapter interprets it */
    EXPECT("data: {\"x\":1}\n\ndata: [DONE]\n\n", "[message|{\"x\":1}|]\n[message|[DONE]|]\n");
}

static void t_ids(void **st)
{
    (void)st;
    EXPECT("id: 7\ndata: a\n\ndata: b\n\n", "[message|a|7]\n[message|b|7]\n");
    /* an id in an event that is not dispatched still sets the last event id */
    EXPECT("id: 1\n\ndata: a\n\n", "[message|a|1]\n");
    /* an id with NUL is ignored; an empty one resets */
    EXPECT("id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\nid\ndata: c\n\nid:\0\ndata: d\n\n",
           "[message|a|1]\n[message|b|1]\n[message|c|]\n[message|d|]\n");
    EXPECT("id: 1\nid: 2\ndata: a\nid: 3\n\n", "[message|a|3]\n");

    char in[600], want[600];
    memset(in, 0, sizeof in);
    memcpy(in, "id: ", 4);
    memset(in + 4, 'i', SSEP_NAME_MAX);
    strcat(in, "\ndata: x\n\n");
    snprintf(want, sizeof want, "[message|x|%.*s]\n", SSEP_NAME_MAX, in + 4);
    check_cut(in, strlen(in), 0, want, 0);
    /* one more byte: an error, not a silently cut id */
    memset(in + 4, 'i', SSEP_NAME_MAX + 1);
    strcpy(in + 4 + SSEP_NAME_MAX + 1, "\ndata: x\n\n");
    check_cut(in, strlen(in), 0, "", -EMSGSIZE);

    /* the same caps for event names */
    memcpy(in, "event:", 6);
    memset(in + 6, 'e', SSEP_NAME_MAX);
    strcpy(in + 6 + SSEP_NAME_MAX, "\ndata: x\n\n");
    snprintf(want, sizeof want, "[%.*s|x|]\n", SSEP_NAME_MAX, in + 6);
    check_cut(in, strlen(in), 0, want, 0);
    memset(in + 6, 'e', SSEP_NAME_MAX + 1);
    strcpy(in + 6 + SSEP_NAME_MAX + 1, "\ndata: x\n\n");
    check_cut(in, strlen(in), 0, "", -EMSGSIZE);

    /* the last id survives ssep_finish (for Last-Event-ID on a reconnect) */
    rec r = {BUF_INIT(0), 0, 0, 0};
    ssep p;
    ssep_init(&p, 0, rec_cb, &r);
    assert_string_equal(ssep_last_id(&p), "");
    assert_int_equal(ssep_feed(&p, "id: 42\ndata: a\n\n", 16), 0);
    assert_int_equal(ssep_finish(&p), 0);
    assert_string_equal(ssep_last_id(&p), "42");
    assert_int_equal(ssep_feed(&p, "data: b\n\n", 9), 0);
    assert_string_equal(r.out.data, "[message|a|42]\n[message|b|42]\n");
    ssep_free(&p);
    buf_free(&r.out);
}

/* retry: digits only set the reconnection time (MCP's SSE polling, SEP-1699); it survives
 * ssep_finish like the id; anything else is ignored; it dispatches nothing on its own */
static void t_retry(void **st)
{
    (void)st;
    static const struct {
        const char *in;
        long want;
    } cases[] = {
        {"retry: 500\n\n", 500},
        {"retry:0\n\n", 0},
        {"retry: 5x\n\n", -1},
        {"retry: -5\n\n", -1},
        {"retry:\n\n", -1},
        {"retry: 1234567890\n\n", -1},
        {"retry: 999999999\n", 999999999},
        {"retry: 7\nretry: x\n\n", 7},
        {"retry: 7\nretry: 8\n\n", 8},
        {"retry:  9\n\n", -1}, /* one space only is removed */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        rec r = {BUF_INIT(0), 0, 0, 0};
        ssep p;
        ssep_init(&p, 0, rec_cb, &r);
        assert_int_equal(ssep_retry(&p), -1);
        /* fed byte by byte: the value may be split anywhere */
        for (const char *c = cases[i].in; *c; c++)
            assert_int_equal(ssep_feed(&p, c, 1), 0);
        assert_int_equal(ssep_retry(&p), cases[i].want);
        assert_int_equal(ssep_finish(&p), 0);
        assert_int_equal(ssep_retry(&p), cases[i].want);
        assert_null(r.out.data);
        ssep_free(&p);
    }
    /* the SDK's priming event: an id, a retry, empty data */
    EXPECT("id: e-1\nretry: 500\ndata: \n\n", "[message||e-1]\n");
}

static void t_bom(void **st)
{
    (void)st;
    EXPECT("\357\273\277data: x\n\n", "[message|x|]\n");
    EXPECT("\357\273\277\r\ndata: x\r\n\r\n", "[message|x|]\n");
    /* only one BOM, only at the start: a second one belongs to the field name */
    EXPECT("\357\273\277\357\273\277data: x\n\ndata: y\n\n", "[message|y|]\n");
    EXPECT("data: a\n\n\357\273\277data: b\n\n", "[message|a|]\n");
    /* a partial BOM is content of the first line */
    EXPECT("\357\273data: x\n\ndata: y\n\n", "[message|y|]\n");
    EXPECT("\357\ndata: y\n\n", "[message|y|]\n");
    EXPECT("\xEF\xBB\xBF", "");
    /* a BOM in data is data */
    EXPECT("data: \xEF\xBB\xBF\n\n", "[message|\xEF\xBB\xBF|]\n");

    /* after ssep_finish a new stream may start with its own BOM */
    rec r = {BUF_INIT(0), 0, 0, 0};
    ssep p;
    ssep_init(&p, 0, rec_cb, &r);
    assert_int_equal(ssep_feed(&p, "\xEF\xBB", 2), 0);
    assert_int_equal(ssep_feed(&p, "\277data: a\n\n", 10), 0);
    assert_int_equal(ssep_finish(&p), 0);
    assert_int_equal(ssep_feed(&p, "\357\273\277data: b\n\n", 12), 0);
    assert_string_equal(r.out.data, "[message|a|]\n[message|b|]\n");
    ssep_free(&p);
    buf_free(&r.out);
}

static void t_empty_and_eof(void **st)
{
    (void)st;
    EXPECT("", "");
    EXPECT("\n\n\n\r\n\r", "");
    /* no data line: not dispatched, and the name is reset */
    EXPECT("event: x\n\n", "");
    EXPECT("event: x\n\ndata: y\n\n", "[message|y|]\n");
    EXPECT("id: 3\n\n", "");
    /* end of stream inside an event: discarded */
    EXPECT("data: a\n\ndata: b\n", "[message|a|]\n");
    EXPECT("data: a\n\ndata: b", "[message|a|]\n");
    EXPECT("data: a\n\ndata: b\r", "[message|a|]\n");

    /* after finish, nothing of the discarded event leaks into the next stream */
    rec r = {BUF_INIT(0), 0, 0, 0};
    ssep p;
    ssep_init(&p, 0, rec_cb, &r);
    assert_int_equal(ssep_feed(&p, "event: e\ndata: stale\ndata: par", 31), 0);
    assert_int_equal(ssep_finish(&p), 0);
    assert_int_equal(r.n, 0);
    assert_int_equal(ssep_feed(&p, "tial\n\ndata: c\n\n", 15), 0);
    assert_string_equal(r.out.data, "[message|c|]\n");
    ssep_free(&p);
    buf_free(&r.out);
}

static void t_caps(void **st)
{
    (void)st;
    /* max 16: exactly 16 bytes of data is fine, 17 is not, however they are split in lines */
    EXPECT_CAP("data: 0123456789abcdef\n\n", 16, "[message|0123456789abcdef|]\n", 0);
    EXPECT_CAP("data: 0123456789abcdefg\n\n", 16, "", -EMSGSIZE);
    EXPECT_CAP("data: 01234567\ndata: 0123456\n\n", 16, "[message|01234567\n0123456|]\n", 0);
    EXPECT_CAP("data: 01234567\ndata: 01234567\n\n", 16, "", -EMSGSIZE);
    EXPECT_CAP("data\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\n"
               "data\ndata\ndata\ndata\ndata\n\n", /* 18 lines: 17 joining newlines */
               16, "", -EMSGSIZE);
    /* events before the error were delivered; nothing after it */
    EXPECT_CAP("data: a\n\ndata: 0123456789abcdefg\n\ndata: c\n\n", 16, "[message|a|]\n",
               -EMSGSIZE);

    /* a line (any field, comments too) is capped at max + SSEP_LINE_SLACK, ended or not */
    char in[300];
    memset(in, ':', sizeof in);
    check_cut(in, 16 + SSEP_LINE_SLACK, 16, "", 0);
    check_cut(in, 16 + SSEP_LINE_SLACK + 1, 16, "", -EMSGSIZE);
    in[16 + SSEP_LINE_SLACK] = '\n';
    check_cut(in, 16 + SSEP_LINE_SLACK + 1, 16, "", 0);
    in[16 + SSEP_LINE_SLACK] = ':';
    in[16 + SSEP_LINE_SLACK + 1] = '\n';
    check_cut(in, 16 + SSEP_LINE_SLACK + 2, 16, "", -EMSGSIZE);

    /* the error is sticky until ssep_finish, which reports it; then the parser works again */
    rec r = {BUF_INIT(0), 0, 0, 0};
    ssep p;
    ssep_init(&p, 4, rec_cb, &r);
    assert_int_equal(ssep_feed(&p, "data: 12345\n", 12), -EMSGSIZE);
    assert_int_equal(ssep_feed(&p, "\ndata: 1\n\n", 10), -EMSGSIZE);
    assert_int_equal(r.n, 0);
    assert_int_equal(ssep_finish(&p), -EMSGSIZE);
    assert_int_equal(ssep_feed(&p, "data: 1234\n\n", 12), 0);
    assert_string_equal(r.out.data, "[message|1234|]\n");
    assert_int_equal(ssep_finish(&p), 0);
    ssep_free(&p);

    /* a big event under the default cap, in uneven pieces, then small ones (buffers shrink) */
    size_t big = 300000;
    char *s = malloc(big + 16);
    assert_non_null(s);
    memcpy(s, "data: ", 6);
    memset(s + 6, 'b', big);
    memcpy(s + 6 + big, "\n\n", 2);
    buf_reset(&r.out);
    r.n = 0;
    ssep_init(&p, 0, rec_cb, &r);
    for (size_t at = 0, k = 1; at < big + 8; at += k, k = k * 7 % 65521 + 1)
        assert_int_equal(ssep_feed(&p, s + at, at + k <= big + 8 ? k : big + 8 - at), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.out.len, big + strlen("[message||]\n"));
    assert_int_equal(ssep_feed(&p, "data: s\n\n", 9), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(ssep_finish(&p), 0);
    ssep_free(&p);
    /* one byte over the default cap */
    s = realloc(s, SSEP_DEFAULT_EVENT + 16);
    assert_non_null(s);
    memcpy(s, "data: ", 6);
    memset(s + 6, 'b', SSEP_DEFAULT_EVENT + 1);
    s[SSEP_DEFAULT_EVENT + 7] = '\n';
    ssep_init(&p, 0, rec_cb, &r);
    assert_int_equal(ssep_feed(&p, s, SSEP_DEFAULT_EVENT + 8), -EMSGSIZE);
    assert_int_equal(ssep_finish(&p), -EMSGSIZE);
    ssep_free(&p);
    free(s);
    buf_free(&r.out);
}

static void t_callback_abort(void **st)
{
    (void)st;
    const char in[] = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    free(check_cut_ex(in, sizeof in - 1, 0, 2, -ECANCELED, "[message|1|]\n[message|2|]\n",
                      -ECANCELED, NULL));
    /* a positive return is not an error */
    free(check_cut_ex(in, sizeof in - 1, 0, 2, 5, "[message|1|]\n[message|2|]\n[message|3|]\n", 0,
                      NULL));
    /* sticky: nothing more is parsed after the abort */
    rec r = {BUF_INIT(0), 0, 1, -EINTR};
    ssep p;
    ssep_init(&p, 0, rec_cb, &r);
    assert_int_equal(ssep_feed(&p, in, sizeof in - 1), -EINTR);
    assert_int_equal(ssep_feed(&p, "data: 4\n\n", 9), -EINTR);
    assert_int_equal(r.n, 1);
    assert_int_equal(ssep_finish(&p), -EINTR);
    ssep_free(&p);
    buf_free(&r.out);
}

/* The exact samples of docs mcp-and-llm.md §4 (generated from it; do not reformat). */
// clang-format off
static const char chat_text[] =
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",...,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {...,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {...,\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n"
    "\n"
    "data: {...,\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29,\"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n"
    "\n"
    "data: [DONE]\n"
    "\n"; /* the blank line ending the last event (the listing stops before it) */

static const char chat_tools_verbatim[] =
    "data: {...,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_abc\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n"
    "data: {...,\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"loc\"}}]},\"finish_reason\":null}]}\n"
    "data: {...,\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ation\\\":\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\n"
    "data: {...,\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_def\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}   ← parallel call\n"
    "...\n"
    "data: {...,\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n"
    "data: [DONE]\n"
    "\n"; /* the blank line ending the last event (the listing stops before it) */

static const char responses[] =
    "event: response.created\n"
    "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[],...}}\n"
    "\n"
    "event: response.in_progress\n"
    "data: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{...}}\n"
    "\n"
    "event: response.output_item.added\n"
    "data: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\",\"name\":\"get_weather\",\"arguments\":\"\",\"status\":\"in_progress\"}}\n"
    "\n"
    "event: response.function_call_arguments.delta\n"
    "data: {\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":3,\"item_id\":\"fc_1\",\"output_index\":0,\"delta\":\"{\\\"location\\\":\"}\n"
    "\n"
    "event: response.function_call_arguments.done\n"
    "data: {\"type\":\"response.function_call_arguments.done\",\"sequence_number\":5,\"item_id\":\"fc_1\",\"output_index\":0,\"arguments\":\"{\\\"location\\\":\\\"Paris\\\"}\"}\n"
    "\n"
    "event: response.output_item.done\n"
    "data: {\"type\":\"response.output_item.done\",\"sequence_number\":6,\"output_index\":0,\"item\":{\"type\":\"function_call\",...,\"status\":\"completed\"}}\n"
    "\n"
    "event: response.completed\n"
    "data: {\"type\":\"response.completed\",\"sequence_number\":7,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"output\":[...],\"usage\":{\"input_tokens\":50,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":18,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":68}}}\n"
    "\n"; /* the blank line ending the last event (the listing stops before it) */

static const char anthropic[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-...\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0}}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me check\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"get_weather\",\"input\":{}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\": \\\"Par\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"is\\\"}\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n"; /* the blank line ending the last event (the listing stops before it) */

// clang-format on

/* The tool-call listing above has no blank lines between its events (it is abbreviated); as
 * real servers send it, each data: line is its own event. */
static char *separate_events(const char *in)
{
    buf b = BUF_INIT(0);
    for (const char *s = in; *s; s++) {
        assert_int_equal(buf_putc(&b, *s), 0);
        if (*s == '\n' && s[1] == 'd')
            assert_int_equal(buf_putc(&b, '\n'), 0);
    }
    size_t len;
    return buf_steal(&b, &len);
}

/* the same stream with every "\n" replaced by eol */
static char *with_eol(const char *in, const char *eol)
{
    buf b = BUF_INIT(0);
    for (const char *s = in; *s; s++)
        assert_int_equal(*s == '\n' ? buf_puts(&b, eol) : buf_putc(&b, *s), 0);
    size_t len;
    return buf_steal(&b, &len);
}

static char *check_sample(const char *in, int want_events)
{
    int n;
    char *ref = check_cut_ex(in, strlen(in), 0, 0, 0, NULL, 0, &n);
    assert_int_equal(n, want_events);
    static const char *const eols[] = {"\r\n", "\r"};
    for (size_t k = 0; k < 2; k++) {
        char *v = with_eol(in, eols[k]);
        free(check_cut_ex(v, strlen(v), 0, 0, 0, ref, 0, NULL));
        free(v);
    }
    /* and after a BOM */
    buf bom = BUF_INIT(0);
    assert_int_equal(buf_puts(&bom, "\xEF\xBB\xBF"), 0);
    assert_int_equal(buf_puts(&bom, in), 0);
    free(check_cut_ex(bom.data, bom.len, 0, 0, 0, ref, 0, NULL));
    buf_free(&bom);
    return ref;
}

static void t_samples_any_cut(void **st)
{
    (void)st;
    char *r = check_sample(chat_text, 6);
    assert_prefix(r, "[message|{\"id\":\"chatcmpl-1\",");
    assert_non_null(strstr(r,
                           "[message|{...,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},"
                           "\"finish_reason\":null}],\"usage\":null}|]\n"));
    assert_non_null(strstr(r, "}}}|]\n[message|[DONE]|]\n"));
    free(r);

    /* as listed: one event of six data lines (the "..." line is an unknown field) */
    r = check_sample(chat_tools_verbatim, 1);
    assert_non_null(strstr(r, "\"finish_reason\":null}]}   \xE2\x86\x90 parallel call\n"
                              "{...,\"choices\""));
    assert_non_null(strstr(r, "\"finish_reason\":\"tool_calls\"}]}\n[DONE]|]\n"));
    free(r);
    char *sep = separate_events(chat_tools_verbatim);
    r = check_sample(sep, 6);
    assert_non_null(strstr(r, "[message|{...,\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
                              "[{\"index\":0,\"function\":{\"arguments\":\"{\\\"loc\"}}]},"
                              "\"finish_reason\":null}]}|]\n"));
    free(r);
    free(sep);

    r = check_sample(responses, 7);
    assert_prefix(r, "[response.created|{\"type\":\"response.created\",");
    assert_non_null(strstr(r, "[response.function_call_arguments.delta|{\"type\":\"response."
                              "function_call_arguments.delta\",\"sequence_number\":3,\"item_id\":"
                              "\"fc_1\",\"output_index\":0,\"delta\":\"{\\\"location\\\":\"}|]\n"));
    assert_non_null(strstr(r, "\n[response.completed|"));
    free(r);

    r = check_sample(anthropic, 12);
    assert_prefix(r, "[message_start|{\"type\":\"message_start\",");
    assert_non_null(strstr(r, "[ping|{\"type\": \"ping\"}|]\n"));
    assert_non_null(strstr(r,
                           "[content_block_delta|{\"type\":\"content_block_delta\",\"index\":1,"
                           "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"is\\\"}\"}}"
                           "|]\n"));
    assert_non_null(strstr(r, "[message_stop|{\"type\":\"message_stop\"}|]\n"));
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_spec_examples),
        cmocka_unit_test(t_line_endings),
        cmocka_unit_test(t_cr_lf_split),
        cmocka_unit_test(t_multiline_and_fields),
        cmocka_unit_test(t_comments),
        cmocka_unit_test(t_event_names),
        cmocka_unit_test(t_done),
        cmocka_unit_test(t_ids),
        cmocka_unit_test(t_retry),
        cmocka_unit_test(t_bom),
        cmocka_unit_test(t_empty_and_eof),
        cmocka_unit_test(t_caps),
        cmocka_unit_test(t_callback_abort),
        cmocka_unit_test(t_samples_any_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
