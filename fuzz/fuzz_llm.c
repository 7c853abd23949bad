/* libFuzzer harness for everything in src/llm that reads upstream (hostile) data, plus base64
 * and the request body builders. Built and run by fuzz/build.sh (target `llm`).
 *
 * Input: byte 0 picks the mode (b % 5) and flags (b / 5, see below); the rest depends on it.
 *   0 Chat Completions, 1 Responses, 2 Anthropic: byte 1 = how the stream is cut (0 = one feed,
 *     else pieces of 1..b bytes from a PRNG seeded with it), the rest = the SSE stream. Each
 *     piece is a fresh heap copy freed right after its feed (a pointer kept into a chunk is a
 *     use-after-free for ASan). Events go from the ssep parser (src/llm/sse.c) to the format's
 *     decoder as upstream.c does (on_sse_event, f_done): a negative return stops the stream,
 *     then, with no error, llm_dec_end and llm_dec_free. Flags:
 *       1  stop at the decoder's 1 (terminal event) as well; upstream.c goes on reading, the
 *          default here too;
 *       2  a 24-byte errbuf instead of upstream.c's 320 (both exact-size heap buffers);
 *       4  pass NULL instead of "message" for an event without an `event:` line (the decoders
 *          document both).
 *     The callbacks abort on a broken contract: text deltas empty or outside the stream, tool
 *     calls or on_done outside llm_dec_end, on_done twice or before a call, NULL/unterminated
 *     id, name or arguments, on_error at all (only upstream.c reports errors); and a negative
 *     return without *err set to a terminated string, a return other than <0, 0, 1, a 1 without
 *     d->done, llm_dec_end's 0 without exactly one on_done, its < 0 with anything emitted.
 *   3 base64: decodes the rest into an exact n*3/4+1 heap buffer; when it decodes, re-encodes
 *     (url and std, exact base64_len+1 buffers) and decodes again: same bytes. Also encodes the
 *     raw input both ways and decodes it back.
 *   4 request builders: the rest as JSON (flag 1: JSON_ALLOW_NUL); an object with a "messages"
 *     array (and "tools", "tool_choice" string, "max_tokens" integer) becomes an llm_request for
 *     oai_chat_body, rsp_body and ant_body, whose results must be NULL or a JSON object with
 *     model "m" and stream true; Anthropic's messages must alternate roles, none empty. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llm/anthropic.h"
#include "llm/decode.h"
#include "llm/openai.h"
#include "llm/responses.h"
#include "llm/sse.h"
#include "util/base64.h"

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "fuzz_llm: " __VA_ARGS__);                                                 \
        fputc('\n', stderr);                                                                       \
        abort();                                                                                   \
    } while (0)

/* ---------- stream decoders ---------- */

typedef int (*dec_fn)(llm_dec *d, const char *event, const char *data, size_t len, char *errbuf,
                      size_t errlen, const char **err);

typedef struct run {
    llm_dec dec;
    dec_fn event;
    int stop_at_1;  /* flag 1 */
    int null_msg;   /* flag 4 */
    char *errbuf;   /* exact-size heap buffer */
    size_t errlen;
    const char *err;
    int dec_rc;     /* < 0: the decoder failed, the stream stopped */
    int stopped;    /* flag 1: the decoder returned 1, the stream stopped */
    int in_end;     /* inside llm_dec_end */
    int dones;      /* on_done calls */
    int calls;      /* on_tool_call calls */
    unsigned sink;  /* keeps the reads of callback data from being optimised away */
} run;

static void touch(run *r, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        r->sink = r->sink * 31 + (unsigned char)s[i];
}

static void on_text(void *ud, const char *delta, size_t len)
{
    run *r = ud;
    if (!delta || !len)
        FAIL("on_text with an empty delta (%p, %zu)", (const void *)delta, len);
    if (r->in_end || r->dones)
        FAIL("on_text from llm_dec_end or after on_done");
    touch(r, delta, len);
}

static void on_tool_call(void *ud, const char *id, const char *name, const char *arguments)
{
    run *r = ud;
    if (!r->in_end)
        FAIL("on_tool_call outside llm_dec_end (calls are held until the end)");
    if (r->dones)
        FAIL("on_tool_call after on_done");
    if (!id || !name || !arguments)
        FAIL("on_tool_call with NULL id/name/arguments (%p %p %p)", (const void *)id,
             (const void *)name, (const void *)arguments);
    size_t al = strlen(arguments); /* ASan: must be terminated */
    if (al > TC_MAX_ARGS)
        FAIL("tool call arguments past TC_MAX_ARGS: %zu", al);
    touch(r, id, strlen(id));
    touch(r, name, strlen(name));
    touch(r, arguments, al);
    r->calls++;
}

static void on_done(void *ud, const llm_usage *usage)
{
    run *r = ud;
    if (!r->in_end)
        FAIL("on_done outside llm_dec_end");
    if (r->dones++)
        FAIL("on_done twice");
    if (!usage)
        FAIL("on_done without usage");
    r->sink += (unsigned)usage->input_tokens + (unsigned)usage->output_tokens;
}

static void on_error(void *ud, const char *message, int retryable, unsigned retry_after_ms)
{
    FAIL("on_error from a decoder (only upstream.c reports errors): %s",
         message ? message : "(null)");
}

static const llm_callbacks cbs = {on_text, on_tool_call, on_done, on_error};

/* *err after a failure: set, non-empty, terminated (inside errbuf when it points there). */
static void check_err(const run *r, int rc)
{
    if (!r->err)
        FAIL("rc %d without *err", rc);
    if (r->err >= r->errbuf && r->err < r->errbuf + r->errlen) {
        if (strnlen(r->err, (size_t)(r->errbuf + r->errlen - r->err)) ==
            (size_t)(r->errbuf + r->errlen - r->err))
            FAIL("*err in errbuf is not terminated");
    }
    if (!r->err[0])
        FAIL("rc %d with an empty *err", rc);
}

/* upstream.c's on_sse_event */
static int on_event(void *ud, const char *event, size_t elen, const char *data, size_t dlen,
                    const char *id)
{
    run *r = ud;
    if (r->dec_rc < 0 || r->stopped)
        FAIL("event after the stream stopped");
    if (r->null_msg && !strcmp(event, "message"))
        event = NULL;
    r->err = NULL;
    int rc = r->event(&r->dec, event, data, dlen, r->errbuf, r->errlen, &r->err);
    if (rc < 0) {
        check_err(r, rc);
        r->dec_rc = rc;
        return rc;
    }
    if (rc > 1)
        FAIL("decoder returned %d", rc);
    if (rc == 1 && !r->dec.done)
        FAIL("decoder returned 1 without d->done");
    if (rc == 1 && r->stop_at_1) {
        r->stopped = 1;
        return -ECANCELED;
    }
    return 0;
}

static uint32_t rng_next(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void fuzz_stream(int mode, unsigned flags, const uint8_t *in, size_t len)
{
    static const dec_fn decs[3] = {oai_dec_event, rsp_dec_event, ant_dec_event};
    static const char *const prefixes[3] = {"call_", "call_", "toolu_"};
    if (!len)
        return;
    unsigned key = in[0];
    const char *s = (const char *)in + 1;
    size_t n = len - 1;

    run r;
    memset(&r, 0, sizeof r);
    r.event = decs[mode];
    r.stop_at_1 = flags & 1;
    r.null_msg = !!(flags & 4);
    r.errlen = flags & 2 ? 24 : 320;
    r.errbuf = malloc(r.errlen);
    if (!r.errbuf)
        abort();
    memset(r.errbuf, 'E', r.errlen); /* no accidental terminator */
    llm_dec_init(&r.dec, &cbs, &r);
    ssep p;
    ssep_init(&p, 0, on_event, &r);

    uint32_t seed = 0x9e3779b9u ^ key * 2654435761u;
    int frc = 0;
    for (size_t at = 0; at < n && !frc;) {
        size_t k = key ? 1 + rng_next(&seed) % key : n - at;
        if (k > n - at)
            k = n - at;
        char *c = malloc(k);
        if (!c)
            abort();
        memcpy(c, s + at, k);
        frc = ssep_feed(&p, c, k);
        free(c);
        at += k;
    }
    if (frc < 0 && frc != r.dec_rc && !(r.stopped && frc == -ECANCELED) && frc != -EMSGSIZE)
        FAIL("ssep_feed returned %d (decoder %d)", frc, r.dec_rc);

    /* upstream.c's f_done */
    int e = ssep_finish(&p);
    if (e != frc)
        FAIL("ssep_finish %d after feed %d", e, frc);
    if (r.dec_rc >= 0 && (frc == 0 || r.stopped)) {
        r.err = NULL;
        r.in_end = 1;
        int rc = llm_dec_end(&r.dec, prefixes[mode], &r.err);
        r.in_end = 0;
        if (rc < 0) {
            check_err(&r, rc);
            if (r.dones || r.calls)
                FAIL("llm_dec_end failed (%d) after emitting %d calls, %d done", rc, r.calls,
                     r.dones);
        } else if (rc > 0) {
            FAIL("llm_dec_end returned %d", rc);
        } else if (r.dones != 1) {
            FAIL("llm_dec_end returned 0 with %d on_done", r.dones);
        }
    }
    ssep_free(&p);
    llm_dec_free(&r.dec);
    free(r.errbuf);
}

/* ---------- base64 ---------- */

static unsigned char *decode_exact(const char *src, size_t n, long *out_len)
{
    size_t cap = n * 3 / 4 + 1;
    unsigned char *out = malloc(cap);
    if (!out)
        abort();
    long dl = base64_decode(src, n, out);
    if (dl >= 0 && (size_t)dl >= cap)
        FAIL("base64_decode returned %ld for %zu chars (room %zu)", dl, n, cap);
    *out_len = dl;
    return out;
}

static char *encode_exact(const void *src, size_t n, int url)
{
    size_t el = base64_len(n, url);
    char *enc = malloc(el + 1);
    if (!enc)
        abort();
    base64_encode(src, n, enc, url);
    if (strlen(enc) != el)
        FAIL("base64_encode wrote %zu chars, base64_len says %zu", strlen(enc), el);
    return enc;
}

/* src (n bytes) encoded both ways must decode back to itself. */
static void round_trip(const unsigned char *src, size_t n)
{
    for (int url = 0; url < 2; url++) {
        char *enc = encode_exact(src, n, url);
        size_t el = strlen(enc);
        long dl;
        unsigned char *back = decode_exact(enc, el, &dl);
        if (dl < 0 || (size_t)dl != n || memcmp(back, src, n))
            FAIL("base64 round trip (url %d) of %zu bytes gave %ld", url, n, dl);
        free(back);
        free(enc);
    }
}

static void fuzz_base64(const uint8_t *in, size_t n)
{
    /* an exact copy: base64_decode must not read past n either */
    char *src = malloc(n ? n : 1);
    if (!src)
        abort();
    memcpy(src, in, n);
    long dl;
    unsigned char *out = decode_exact(src, n, &dl);
    if (dl >= 0) {
        size_t m = n;
        while (m && src[m - 1] == '=')
            m--;
        if ((size_t)dl != m * 6 / 8)
            FAIL("base64_decode of %zu symbols gave %ld bytes", m, dl);
        round_trip(out, (size_t)dl);
    }
    free(out);
    round_trip(in, n);
    free(src);
}

/* ---------- request builders ---------- */

/* A builder's result: NULL, or a JSON object with the model and stream: true. */
static json_t *check_body(const char *who, char *s)
{
    if (!s)
        return NULL;
    json_error_t je;
    json_t *b = json_loads(s, JSON_ALLOW_NUL, &je);
    if (!json_is_object(b))
        FAIL("%s built invalid JSON (%s): %.200s", who, je.text, s);
    const char *model = json_string_value(json_object_get(b, "model"));
    if (!model || strcmp(model, "m") || !json_is_true(json_object_get(b, "stream")))
        FAIL("%s lost the model or stream: %.200s", who, s);
    free(s);
    return b;
}

/* Anthropic: strictly alternating roles, no empty content, tool_result blocks first. */
static void check_ant(json_t *b, unsigned max_tokens)
{
    json_int_t mt = json_integer_value(json_object_get(b, "max_tokens"));
    if (mt != (json_int_t)(max_tokens ? max_tokens : ANT_DEFAULT_MAX_TOK))
        FAIL("ant_body max_tokens %lld for %u", (long long)mt, max_tokens);
    const char *prev = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(b, "messages"), i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || (strcmp(role, "user") && strcmp(role, "assistant")))
            FAIL("ant_body message %zu: role %s", i, role ? role : "(none)");
        if (prev && !strcmp(prev, role))
            FAIL("ant_body messages %zu and %zu are both %s", i - 1, i, role);
        prev = role;
        json_t *c = json_object_get(m, "content");
        if (json_is_string(c) ? !json_string_length(c) : !json_array_size(c))
            FAIL("ant_body message %zu has empty content", i);
        int others = 0;
        size_t k;
        json_t *blk;
        json_array_foreach(c, k, blk)
        {
            const char *t = json_string_value(json_object_get(blk, "type"));
            int tr = t && !strcmp(t, "tool_result");
            if (tr && others)
                FAIL("ant_body message %zu: a tool_result after another block", i);
            others |= !tr;
        }
    }
}

static void fuzz_builders(unsigned flags, const uint8_t *in, size_t n)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)in, n, flags & 1 ? JSON_ALLOW_NUL : 0, &je);
    json_t *msgs = json_object_get(j, "messages");
    if (json_is_array(msgs)) {
        json_t *mt = json_object_get(j, "max_tokens");
        llm_request req;
        memset(&req, 0, sizeof req);
        req.model = "m";
        req.messages = msgs;
        req.tools = json_object_get(j, "tools");
        req.tool_choice = json_string_value(json_object_get(j, "tool_choice"));
        req.max_tokens = json_is_integer(mt) ? (unsigned)json_integer_value(mt) : 0;
        json_decref(check_body("oai_chat_body", oai_chat_body(&req)));
        json_decref(check_body("rsp_body", rsp_body(&req)));
        json_t *a = check_body("ant_body", ant_body(&req));
        if (a)
            check_ant(a, req.max_tokens);
        json_decref(a);
    }
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len)
{
    if (len < 1)
        return 0;
    int mode = in[0] % 5;
    unsigned flags = in[0] / 5;
    in++;
    len--;
    switch (mode) {
    case 0:
    case 1:
    case 2:
        fuzz_stream(mode, flags, in, len);
        break;
    case 3:
        fuzz_base64(in, len);
        break;
    default:
        fuzz_builders(flags, in, len);
        break;
    }
    return 0;
}
