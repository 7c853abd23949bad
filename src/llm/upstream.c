/* The HTTP providers: one streaming request over fetch, its SSE stream fed to the wire
 * format's decoder. Every wire format (Chat Completions, Responses, Anthropic Messages) is a row
 * of a table: its path, default base URL, key header, body builder and event decoder. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llm/anthropic.h"
#include "llm/decode.h"
#include "llm/fetch.h"
#include "llm/openai.h"
#include "llm/responses.h"
#include "llm/sse.h"
#include "util/log.h"

typedef struct wire {
    const char *default_base; /* used when the request has no base_url */
    const char *path;         /* appended to the base */
    const char *key_header;   /* followed by the key */
    const char *extra_header; /* NULL or one more header line */
    const char *id_prefix;    /* for calls the stream gave no id */
    char *(*body)(const llm_request *req);
    int (*event)(llm_dec *d, const char *event, const char *data, size_t len, char *errbuf,
                 size_t errlen, const char **err);
} wire;

static const wire w_chat = {"https://api.openai.com/v1", "/chat/completions",
                            "Authorization: Bearer ", NULL, "call_", oai_chat_body, oai_dec_event};
static const wire w_responses = {"https://api.openai.com/v1", "/responses",
                                 "Authorization: Bearer ", NULL, "call_", rsp_body, rsp_dec_event};
static const wire w_anthropic = {"https://api.anthropic.com", "/v1/messages", "x-api-key: ",
                                 "anthropic-version: 2023-06-01", "toolu_", ant_body,
                                 ant_dec_event};

#define ERR_BODY_MAX 8192

static fetch_ctx *shared_ctx; /* one per process: the loop thread's curl multi */
static const char *ctx_error;

struct llm_call {
    const wire *w;
    llm_callbacks cb;
    void *ud;
    fetch *f;
    ssep sse;
    llm_dec dec;
    long status;
    unsigned retry_after_ms;
    buf errbody;        /* a non-200 answer's body, capped */
    int dec_rc;         /* < 0: the decoder failed */
    const char *err;
    char errbuf[320];
    int in_cb;          /* inside a fetch callback: free later */
    int dead;           /* cancelled or finished */
    uv_timer_t *later;  /* a start-time failure is reported from the loop, not from start */
};

static void call_free(llm_call *c)
{
    ssep_free(&c->sse);
    llm_dec_free(&c->dec);
    buf_free(&c->errbody);
    free(c);
}

static void report_error(llm_call *c, const char *msg, int retryable)
{
    c->dead = 1;
    c->cb.on_error(c->ud, msg, retryable, c->retry_after_ms);
}

/* Retry-After: delay-seconds or an HTTP date (RFC 9110 §10.2.3); capped at a day. */
static unsigned parse_retry_after(const char *v)
{
    if (!v)
        return 0;
    while (*v == ' ')
        v++;
    char *end;
    unsigned long s = strtoul(v, &end, 10);
    if (end != v && (*end == 0 || *end == ' ' || *end == '\r'))
        return s > 86400 ? 86400000u : (unsigned)s * 1000u;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm))
        return 0;
    time_t at = timegm(&tm), now = time(NULL);
    if (at <= now)
        return 0;
    return at - now > 86400 ? 86400000u : (unsigned)(at - now) * 1000u;
}

static int on_sse_event(void *ud, const char *event, size_t elen, const char *data, size_t dlen,
                        const char *id)
{
    (void)elen;
    (void)id;
    llm_call *c = ud;
    if (c->dead)
        return -ECANCELED;
    int rc = c->w->event(&c->dec, event, data, dlen, c->errbuf, sizeof c->errbuf, &c->err);
    if (rc < 0) {
        c->dec_rc = rc;
        return rc;
    }
    return c->dead ? -ECANCELED : 0; /* on_text may have cancelled us */
}

static int f_head(void *ud, long status, const char *ctype, const char *retry_after)
{
    (void)ctype;
    llm_call *c = ud;
    c->status = status;
    c->retry_after_ms = parse_retry_after(retry_after);
    return 0;
}

static int f_data(void *ud, const char *p, size_t n)
{
    llm_call *c = ud;
    if (c->status != 200) {
        buf_append(&c->errbody, p, n); /* past the cap: the rest is dropped */
        return 0;
    }
    c->in_cb++;
    int rc = ssep_feed(&c->sse, p, n);
    c->in_cb--;
    if (c->dead) { /* cancelled from a callback: fetch was cancelled too */
        call_free(c);
        return -1;
    }
    return rc < 0 ? -1 : 0;
}

/* "The model provider answered 429: Rate limit reached" from an error body. */
static void http_error(llm_call *c)
{
    json_t *b = json_loadb(c->errbody.data ? c->errbody.data : "", c->errbody.len, 0, NULL);
    const char *m = json_string_value(json_object_get(json_object_get(b, "error"), "message"));
    snprintf(c->errbuf, sizeof c->errbuf, "The model provider answered %ld: %.200s", c->status,
             m ? m : "(no details)");
    json_decref(b);
    report_error(c, c->errbuf, c->status == 429 || c->status >= 500);
}

static void f_done(void *ud, int rc, long status, const char *message)
{
    llm_call *c = ud;
    c->f = NULL;
    if (c->dead) {
        call_free(c);
        return;
    }
    if (status && status != 200) {
        http_error(c);
    } else if (c->dec_rc < 0) {
        report_error(c, c->err, !c->dec.text_seen);
    } else if (rc) {
        snprintf(c->errbuf, sizeof c->errbuf, "The model provider could not be reached: %.200s",
                 message ? message : "network error");
        report_error(c, c->errbuf, rc == FETCH_ECONNECT || rc == FETCH_ETIMEOUT);
    } else {
        int e = ssep_finish(&c->sse);
        if (e < 0 && c->dec_rc == 0) {
            report_error(c, "The model provider sent an oversized event.", 0);
        } else if (llm_dec_end(&c->dec, c->w->id_prefix, &c->err) < 0) {
            report_error(c, c->err, !c->dec.text_seen);
        } else {
            c->dead = 1; /* on_done went out inside llm_dec_end */
        }
    }
    call_free(c);
}

static const fetch_cb fcb = {f_head, f_data, f_done};

static void on_later_closed(uv_handle_t *h)
{
    llm_call *c = h->data;
    free(h);
    call_free(c);
}

static void on_later(uv_timer_t *t)
{
    llm_call *c = t->data;
    if (!c->dead)
        report_error(c, c->err, 0);
    uv_close((uv_handle_t *)t, on_later_closed);
}

static llm_call *wire_start(const wire *w, uv_loop_t *loop, const llm_request *req,
                            const llm_callbacks *cb, void *ud)
{
    llm_call *c = xcalloc(1, sizeof *c);
    c->w = w;
    c->cb = *cb;
    c->ud = ud;
    c->errbody = (buf)BUF_INIT(ERR_BODY_MAX);
    ssep_init(&c->sse, 0, on_sse_event, c);
    llm_dec_init(&c->dec, &c->cb, ud);
    char *body = w->body(req);
    if (!shared_ctx && !ctx_error)
        shared_ctx = fetch_ctx_new(loop, &ctx_error);
    char url[1024], auth[600];
    const char *base = req->base_url && *req->base_url ? req->base_url : w->default_base;
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/')
        bl--;
    snprintf(url, sizeof url, "%.*s%s", (int)bl, base, w->path);
    const char *headers[5] = {"Content-Type: application/json", "Accept: text/event-stream",
                              NULL, NULL, NULL};
    int nh = 2;
    if (w->extra_header)
        headers[nh++] = w->extra_header;
    if (req->api_key && *req->api_key) {
        snprintf(auth, sizeof auth, "%s%.500s", w->key_header, req->api_key);
        headers[nh++] = auth;
    }
    int rc = -1;
    if (!body) {
        c->err = "The conversation could not be sent to the model (malformed history).";
    } else if (!shared_ctx) {
        snprintf(c->errbuf, sizeof c->errbuf, "The model provider is unavailable: %.200s",
                 ctx_error ? ctx_error : "no HTTP client");
        c->err = c->errbuf;
    } else {
        fetch_opts o = {.url = url,
                        .headers = headers,
                        .body = body,
                        .body_len = strlen(body),
                        .connect_timeout_ms = req->connect_timeout_ms,
                        .first_byte_timeout_ms = req->first_byte_timeout_ms,
                        .idle_timeout_ms = req->idle_timeout_ms};
        rc = fetch_start(shared_ctx, &o, &fcb, c, &c->f);
        if (rc)
            c->err = "The model provider request could not be started.";
    }
    memset(auth, 0, sizeof auth); /* the key does not linger on the stack */
    free(body);
    if (rc) {
        /* callbacks never run inside start: report from the next loop turn */
        c->later = xmalloc(sizeof *c->later);
        uv_timer_init(loop, c->later);
        c->later->data = c;
        uv_timer_start(c->later, on_later, 0, 0);
    }
    return c;
}

static void wire_cancel(llm_call *c)
{
    if (!c || c->dead)
        return;
    c->dead = 1;
    if (c->later)
        return; /* on_later sees dead and frees */
    if (c->f)
        fetch_cancel(c->f);
    c->f = NULL;
    if (!c->in_cb)
        call_free(c);
}

static void wire_pause(llm_call *c, int paused)
{
    if (c && !c->dead && c->f)
        fetch_pause(c->f, paused);
}

void llm_providers_shutdown(void)
{
    if (shared_ctx)
        fetch_ctx_free(shared_ctx);
    shared_ctx = NULL;
}

static llm_call *chat_start(uv_loop_t *loop, const llm_request *req, const llm_callbacks *cb,
                            void *ud)
{
    return wire_start(&w_chat, loop, req, cb, ud);
}

static llm_call *responses_start(uv_loop_t *loop, const llm_request *req,
                                 const llm_callbacks *cb, void *ud)
{
    return wire_start(&w_responses, loop, req, cb, ud);
}

static llm_call *anthropic_start(uv_loop_t *loop, const llm_request *req,
                                 const llm_callbacks *cb, void *ud)
{
    return wire_start(&w_anthropic, loop, req, cb, ud);
}

const llm_provider llm_openai_provider = {"openai", chat_start, wire_cancel, wire_pause};
const llm_provider llm_responses_provider = {"openai-responses", responses_start, wire_cancel,
                                             wire_pause};
const llm_provider llm_anthropic_provider = {"anthropic", anthropic_start, wire_cancel,
                                             wire_pause};

const llm_provider *llm_provider_find(const char *spec, const char **model_out)
{
    static const llm_provider *const http[] = {&llm_openai_provider, &llm_responses_provider,
                                               &llm_anthropic_provider};
    if (!spec || !strcmp(spec, "demo") || !strncmp(spec, "demo:", 5)) {
        *model_out = spec && spec[4] == ':' ? spec + 5 : "demo";
        return &llm_demo_provider;
    }
    *model_out = spec;
    const char *colon = strchr(spec, ':');
    if (!colon || !colon[1])
        return NULL;
    for (size_t i = 0; i < sizeof http / sizeof *http; i++) {
        size_t n = strlen(http[i]->name);
        if ((size_t)(colon - spec) == n && !strncmp(spec, http[i]->name, n)) {
            *model_out = colon + 1;
            return http[i];
        }
    }
    return NULL;
}
