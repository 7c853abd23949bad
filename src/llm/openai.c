#include "llm/openai.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

/* ---------- request ---------- */

/* neutral message -> Chat Completions message */
static json_t *chat_message(json_t *m)
{
    const char *role = json_string_value(json_object_get(m, "role"));
    json_t *content = json_object_get(m, "content");
    json_t *calls = json_object_get(m, "tool_calls");
    if (!role)
        return NULL;
    if (!strcmp(role, "tool")) {
        const char *id = json_string_value(json_object_get(m, "tool_call_id"));
        if (!id || !json_is_string(content))
            return NULL;
        return json_pack("{s:s,s:s,s:O}", "role", "tool", "tool_call_id", id, "content", content);
    }
    if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))
        return NULL;
    json_t *out = json_pack("{s:s}", "role", role);
    json_object_set(out, "content", json_is_string(content) ? content : json_null());
    if (!strcmp(role, "assistant") && json_array_size(calls)) {
        json_t *tc = json_array();
        size_t i;
        json_t *c;
        json_array_foreach(calls, i, c)
        {
            const char *id = json_string_value(json_object_get(c, "id"));
            const char *name = json_string_value(json_object_get(c, "name"));
            const char *args = json_string_value(json_object_get(c, "arguments"));
            if (!id || !name) {
                json_decref(tc);
                json_decref(out);
                return NULL;
            }
            json_array_append_new(tc, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", id, "type",
                                                "function", "function", "name", name,
                                                "arguments", args ? args : "{}"));
        }
        json_object_set_new(out, "tool_calls", tc);
    } else if (!json_is_string(content)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

char *oai_chat_body(const llm_request *req, const char *tool_choice)
{
    json_t *msgs = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(req->messages, i, m)
    {
        json_t *cm = chat_message(m);
        if (!cm) {
            json_decref(msgs);
            return NULL;
        }
        json_array_append_new(msgs, cm);
    }
    json_t *body = json_pack("{s:s,s:o,s:b,s:{s:b}}", "model", req->model, "messages", msgs,
                             "stream", 1, "stream_options", "include_usage", 1);
    if (json_array_size(req->tools)) {
        json_t *tools = json_array();
        json_t *t;
        json_array_foreach(req->tools, i, t)
        {
            json_t *name = json_object_get(t, "name");
            json_t *desc = json_object_get(t, "description");
            json_t *params = json_object_get(t, "parameters");
            if (!json_is_string(name)) {
                json_decref(tools);
                json_decref(body);
                return NULL;
            }
            json_array_append_new(
                tools, json_pack("{s:s,s:{s:O,s:o,s:o}}", "type", "function", "function", "name",
                                 name, "description",
                                 json_is_string(desc) ? json_incref(desc) : json_string(""),
                                 "parameters",
                                 json_is_object(params) ? json_incref(params)
                                                        : json_pack("{s:s}", "type", "object")));
        }
        json_object_set_new(body, "tools", tools);
        if (tool_choice)
            json_object_set_new(body, "tool_choice",
                                json_pack("{s:s,s:{s:s}}", "type", "function", "function", "name",
                                          tool_choice));
    }
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return s;
}

/* ---------- stream ---------- */

void oai_dec_init(oai_dec *d, const llm_callbacks *cb, void *ud)
{
    memset(d, 0, sizeof *d);
    d->cb = cb;
    d->ud = ud;
    for (int i = 0; i < OAI_MAX_TOOL_CALLS; i++)
        d->calls[i].args = (buf)BUF_INIT(OAI_MAX_ARGS);
}

void oai_dec_free(oai_dec *d)
{
    for (int i = 0; i < OAI_MAX_TOOL_CALLS; i++) {
        free(d->calls[i].id);
        free(d->calls[i].name);
        buf_free(&d->calls[i].args);
    }
    d->ncalls = 0;
}

static int fail(const char **err, const char *msg)
{
    *err = msg;
    return -EPROTO;
}

/* An error object from upstream: its message, cut and made safe for a log or a user. */
static int upstream_error(json_t *e, char *errbuf, size_t errlen, const char **err)
{
    const char *msg = json_string_value(json_object_get(e, "message"));
    snprintf(errbuf, errlen, "the model provider reported an error: %.200s",
             msg ? msg : "(no message)");
    *err = errbuf;
    return -EIO;
}

static int tool_delta(oai_dec *d, json_t *tc, const char **err)
{
    json_t *ix = json_object_get(tc, "index");
    long long k = json_is_integer(ix) ? json_integer_value(ix) : 0; /* some servers omit it */
    if (k < 0 || k >= OAI_MAX_TOOL_CALLS)
        return fail(err, "the model made too many tool calls at once");
    oai_call *c = &d->calls[k];
    if (k >= d->ncalls)
        d->ncalls = (int)k + 1;
    const char *id = json_string_value(json_object_get(tc, "id"));
    json_t *fn = json_object_get(tc, "function");
    const char *name = json_string_value(json_object_get(fn, "name"));
    json_t *args = json_object_get(fn, "arguments");
    if (id && !c->id)
        c->id = xstrdup(id);
    if (name && !c->name)
        c->name = xstrdup(name);
    if (json_is_string(args)) {
        if (buf_append(&c->args, json_string_value(args), json_string_length(args)))
            return fail(err, "the model's tool call arguments are too large");
    } else if (json_is_object(args)) { /* tolerated: a whole object instead of a string */
        char *s = json_dumps(args, JSON_COMPACT);
        int rc = s ? buf_puts(&c->args, s) : -ENOMEM;
        free(s);
        if (rc)
            return fail(err, "the model's tool call arguments are too large");
    }
    return 0;
}

int oai_dec_event(oai_dec *d, const char *data, size_t len, char *errbuf, size_t errlen,
                  const char **err)
{
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        d->done = 1;
        return 1;
    }
    json_error_t je;
    json_t *ev = json_loadb(data, len, 0, &je);
    if (!json_is_object(ev)) {
        json_decref(ev);
        return fail(err, "the model provider sent a malformed stream");
    }
    int rc = 0;
    json_t *e = json_object_get(ev, "error");
    if (e) {
        rc = upstream_error(e, errbuf, errlen, err);
        goto out;
    }
    json_t *usage = json_object_get(ev, "usage");
    if (json_is_object(usage)) {
        d->usage.input_tokens = json_integer_value(json_object_get(usage, "prompt_tokens"));
        d->usage.output_tokens = json_integer_value(json_object_get(usage, "completion_tokens"));
    }
    size_t i;
    json_t *ch;
    json_array_foreach(json_object_get(ev, "choices"), i, ch)
    {
        json_t *delta = json_object_get(ch, "delta");
        json_t *content = json_object_get(delta, "content");
        if (json_is_string(content) && json_string_length(content)) {
            d->text_seen = 1;
            d->cb->on_text(d->ud, json_string_value(content), json_string_length(content));
        }
        size_t k;
        json_t *tc;
        json_array_foreach(json_object_get(delta, "tool_calls"), k, tc)
        {
            if ((rc = tool_delta(d, tc, err)))
                goto out;
        }
        const char *fr = json_string_value(json_object_get(ch, "finish_reason"));
        if (fr)
            snprintf(d->finish, sizeof d->finish, "%s", fr);
    }
out:
    json_decref(ev);
    return rc;
}

int oai_dec_end(oai_dec *d, const char **err)
{
    if (!d->done && !d->finish[0])
        return fail(err, "the model's answer was cut off");
    for (int i = 0; i < d->ncalls; i++) {
        oai_call *c = &d->calls[i];
        if (!c->name)
            continue; /* an index that never got a name is not a call */
        char id[32];
        if (!c->id)
            snprintf(id, sizeof id, "call_%d", i);
        d->cb->on_tool_call(d->ud, c->id ? c->id : id, c->name,
                            c->args.len ? c->args.data : "{}");
    }
    d->cb->on_done(d->ud, &d->usage);
    return 0;
}

/* ---------- the provider: Chat Completions over fetch ---------- */

#include "llm/fetch.h"
#include "llm/sse.h"

#define ERR_BODY_MAX 8192

static fetch_ctx *shared_ctx; /* one per process: the loop thread's curl multi */
static const char *ctx_error;

struct llm_call {
    llm_callbacks cb;
    void *ud;
    fetch *f;
    ssep sse;
    oai_dec dec;
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
    oai_dec_free(&c->dec);
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
    (void)event;
    (void)elen;
    (void)id;
    llm_call *c = ud;
    if (c->dead)
        return -ECANCELED;
    int rc = oai_dec_event(&c->dec, data, dlen, c->errbuf, sizeof c->errbuf, &c->err);
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
        } else if (oai_dec_end(&c->dec, &c->err) < 0) {
            report_error(c, c->err, !c->dec.text_seen);
        } else {
            c->dead = 1; /* on_done went out inside oai_dec_end */
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

static llm_call *oai_start(uv_loop_t *loop, const llm_request *req, const llm_callbacks *cb,
                           void *ud)
{
    llm_call *c = xcalloc(1, sizeof *c);
    c->cb = *cb;
    c->ud = ud;
    c->errbody = (buf)BUF_INIT(ERR_BODY_MAX);
    ssep_init(&c->sse, 0, on_sse_event, c);
    oai_dec_init(&c->dec, &c->cb, ud);
    char *body = oai_chat_body(req, NULL);
    if (!shared_ctx && !ctx_error)
        shared_ctx = fetch_ctx_new(loop, &ctx_error);
    char url[1024], auth[600];
    const char *base = req->base_url && *req->base_url ? req->base_url
                                                        : "https://api.openai.com/v1";
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/')
        bl--;
    snprintf(url, sizeof url, "%.*s/chat/completions", (int)bl, base);
    const char *headers[4] = {"Content-Type: application/json", "Accept: text/event-stream",
                              NULL, NULL};
    if (req->api_key && *req->api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %.500s", req->api_key);
        headers[2] = auth;
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

static void oai_cancel(llm_call *c)
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

void llm_providers_shutdown(void)
{
    if (shared_ctx)
        fetch_ctx_free(shared_ctx);
    shared_ctx = NULL;
}

const llm_provider llm_openai_provider = {"openai", oai_start, oai_cancel};
