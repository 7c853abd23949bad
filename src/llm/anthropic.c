#include "llm/anthropic.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

/* ---------- request ---------- */

static json_t *text_block(json_t *text)
{
    return json_pack("{s:s,s:O}", "type", "text", "text", text);
}

/* Appends blocks (stolen) to the last message when it has the same role, else starts one:
 * Anthropic wants user and assistant strictly alternating. tool_result blocks go before any
 * other block of their user message, as the API requires. */
static void add_blocks(json_t *msgs, const char *role, json_t *blocks)
{
    if (!json_array_size(blocks)) { /* e.g. an empty text: nothing to say */
        json_decref(blocks);
        return;
    }
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *lrole = json_string_value(json_object_get(last, "role"));
    if (!lrole || strcmp(lrole, role)) {
        json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", role, "content", blocks));
        return;
    }
    json_t *content = json_object_get(last, "content");
    size_t i, lead = 0;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        const char *t = json_string_value(json_object_get(b, "type"));
        if (!t || strcmp(t, "tool_result"))
            break;
        lead++;
    }
    json_array_foreach(blocks, i, b)
    {
        const char *t = json_string_value(json_object_get(b, "type"));
        if (t && !strcmp(t, "tool_result"))
            json_array_insert(content, lead++, b);
        else
            json_array_append(content, b);
    }
    json_decref(blocks);
}

/* A call's arguments as the object tool_use.input must be: anything else becomes {}. */
static json_t *call_input(const char *args)
{
    json_t *in = args ? json_loads(args, JSON_DECODE_ANY, NULL) : NULL;
    if (json_is_object(in))
        return in;
    json_decref(in);
    return json_object();
}

static json_t *tool_use_blocks(json_t *calls)
{
    json_t *out = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c)
    {
        const char *id = json_string_value(json_object_get(c, "id"));
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *args = json_string_value(json_object_get(c, "arguments"));
        if (!id || !name) {
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id", id,
                                             "name", name, "input", call_input(args)));
    }
    return out;
}

/* One neutral message into msgs (or its text into sys). Returns 0 or -EINVAL. */
static int add_message(json_t *msgs, buf *sys, json_t *m)
{
    const char *role = json_string_value(json_object_get(m, "role"));
    json_t *content = json_object_get(m, "content");
    json_t *calls = json_object_get(m, "tool_calls");
    if (!role)
        return -EINVAL;
    if (!strcmp(role, "tool")) {
        const char *id = json_string_value(json_object_get(m, "tool_call_id"));
        if (!id || !json_is_string(content))
            return -EINVAL;
        add_blocks(msgs, "user",
                   json_pack("[{s:s,s:s,s:O}]", "type", "tool_result", "tool_use_id", id, "content",
                             content));
        return 0;
    }
    if (!strcmp(role, "system")) {
        if (!json_is_string(content))
            return -EINVAL;
        if (!json_string_length(content))
            return 0;
        if (sys->len && buf_puts(sys, "\n\n"))
            return -EINVAL;
        return buf_append(sys, json_string_value(content), json_string_length(content)) ? -EINVAL
                                                                                        : 0;
    }
    if (strcmp(role, "user") && strcmp(role, "assistant"))
        return -EINVAL;
    json_t *blocks = json_array();
    if (json_is_string(content) && json_string_length(content))
        json_array_append_new(blocks, text_block(content));
    if (!strcmp(role, "assistant") && json_array_size(calls)) {
        json_t *uses = tool_use_blocks(calls);
        if (!uses) {
            json_decref(blocks);
            return -EINVAL;
        }
        json_array_extend(blocks, uses);
        json_decref(uses);
    } else if (!json_is_string(content)) {
        json_decref(blocks);
        return -EINVAL;
    }
    add_blocks(msgs, role, blocks);
    return 0;
}

/* A message whose content is one text block says it as a plain string. */
static void compact(json_t *msgs)
{
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        json_t *c = json_object_get(m, "content");
        json_t *b = json_array_get(c, 0);
        const char *t = json_string_value(json_object_get(b, "type"));
        if (json_array_size(c) == 1 && t && !strcmp(t, "text"))
            json_object_set(m, "content", json_object_get(b, "text"));
    }
}

char *ant_body(const llm_request *req, const char *tool_choice, unsigned max_tokens)
{
    if (!req->model || !json_is_array(req->messages))
        return NULL;
    json_t *msgs = json_array();
    buf sys = BUF_INIT(ANT_MAX_SYSTEM);
    size_t i;
    json_t *m;
    json_array_foreach(req->messages, i, m)
    {
        if (add_message(msgs, &sys, m)) {
            json_decref(msgs);
            buf_free(&sys);
            return NULL;
        }
    }
    compact(msgs);
    json_t *body = json_pack("{s:s,s:I,s:o,s:b}", "model", req->model, "max_tokens",
                             (json_int_t)(max_tokens ? max_tokens : ANT_DEFAULT_MAX_TOK),
                             "messages", msgs, "stream", 1);
    if (sys.len)
        json_object_set_new(body, "system", json_stringn(sys.data, sys.len));
    buf_free(&sys);
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
            json_t *tool = json_pack("{s:O,s:o}", "name", name, "input_schema",
                                     json_is_object(params) ? json_incref(params)
                                                            : json_pack("{s:s}", "type", "object"));
            if (json_is_string(desc) && json_string_length(desc))
                json_object_set(tool, "description", desc);
            json_array_append_new(tools, tool);
        }
        json_object_set_new(body, "tools", tools);
        if (tool_choice)
            json_object_set_new(body, "tool_choice",
                                json_pack("{s:s,s:s}", "type", "tool", "name", tool_choice));
    }
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return s;
}

/* ---------- stream ---------- */

void ant_dec_init(ant_dec *d, const llm_callbacks *cb, void *ud)
{
    memset(d, 0, sizeof *d);
    d->cb = cb;
    d->ud = ud;
    for (int i = 0; i < ANT_MAX_TOOL_CALLS; i++)
        d->calls[i].args = (buf)BUF_INIT(ANT_MAX_ARGS);
}

void ant_dec_free(ant_dec *d)
{
    for (int i = 0; i < ANT_MAX_TOOL_CALLS; i++) {
        free(d->calls[i].id);
        free(d->calls[i].name);
        d->calls[i].id = d->calls[i].name = NULL;
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

static long long block_index(json_t *ev)
{
    json_t *ix = json_object_get(ev, "index");
    return json_is_integer(ix) ? json_integer_value(ix) : 0; /* some servers omit it */
}

static ant_call *find_call(ant_dec *d, long long index)
{
    for (int i = 0; i < d->ncalls; i++)
        if (d->calls[i].index == index)
            return &d->calls[i];
    return NULL;
}

/* Input tokens include the cached ones, as OpenAI's prompt_tokens do. */
static void read_usage(ant_dec *d, json_t *u)
{
    if (!json_is_object(u))
        return;
    json_t *in = json_object_get(u, "input_tokens");
    if (json_is_integer(in))
        d->usage.input_tokens =
            json_integer_value(in) +
            json_integer_value(json_object_get(u, "cache_creation_input_tokens")) +
            json_integer_value(json_object_get(u, "cache_read_input_tokens"));
    json_t *out = json_object_get(u, "output_tokens");
    if (json_is_integer(out))
        d->usage.output_tokens = json_integer_value(out); /* cumulative: the last one wins */
}

static void emit_text(ant_dec *d, json_t *text)
{
    if (json_is_string(text) && json_string_length(text)) {
        d->text_seen = 1;
        d->cb->on_text(d->ud, json_string_value(text), json_string_length(text));
    }
}

static int block_start(ant_dec *d, json_t *ev, const char **err)
{
    json_t *cb = json_object_get(ev, "content_block");
    const char *type = json_string_value(json_object_get(cb, "type"));
    if (!type)
        return 0;
    if (!strcmp(type, "text")) {
        emit_text(d, json_object_get(cb, "text"));
        return 0;
    }
    if (strcmp(type, "tool_use"))
        return 0; /* thinking, server tools and their results are not ours */
    long long k = block_index(ev);
    ant_call *c = find_call(d, k);
    if (!c) {
        if (d->ncalls >= ANT_MAX_TOOL_CALLS)
            return fail(err, "the model made too many tool calls at once");
        c = &d->calls[d->ncalls++];
        c->index = k;
    }
    const char *id = json_string_value(json_object_get(cb, "id"));
    const char *name = json_string_value(json_object_get(cb, "name"));
    json_t *input = json_object_get(cb, "input");
    if (id && !c->id)
        c->id = xstrdup(id);
    if (name && !c->name)
        c->name = xstrdup(name);
    if (json_is_object(input) && json_object_size(input) && !c->args.len) {
        /* tolerated: the whole input up front instead of input_json_delta fragments */
        char *s = json_dumps(input, JSON_COMPACT);
        int rc = s ? buf_puts(&c->args, s) : -ENOMEM;
        free(s);
        if (rc)
            return fail(err, "the model's tool call arguments are too large");
        c->preset = 1;
    }
    return 0;
}

static int block_delta(ant_dec *d, json_t *ev, const char **err)
{
    json_t *delta = json_object_get(ev, "delta");
    const char *type = json_string_value(json_object_get(delta, "type"));
    if (!type)
        return 0;
    if (!strcmp(type, "text_delta")) {
        emit_text(d, json_object_get(delta, "text"));
        return 0;
    }
    if (strcmp(type, "input_json_delta"))
        return 0; /* thinking, signature, citations */
    json_t *pj = json_object_get(delta, "partial_json");
    ant_call *c = find_call(d, block_index(ev));
    if (!c || !json_is_string(pj) || !json_string_length(pj))
        return 0; /* a server tool's input, or nothing to add */
    if (c->preset) {
        buf_reset(&c->args);
        c->preset = 0;
    }
    if (buf_append(&c->args, json_string_value(pj), json_string_length(pj)))
        return fail(err, "the model's tool call arguments are too large");
    return 0;
}

int ant_dec_event(ant_dec *d, const char *event, const char *data, size_t len, char *errbuf,
                  size_t errlen, const char **err)
{
    if (event && !strcmp(event, "ping"))
        return 0;
    json_error_t je;
    json_t *ev = json_loadb(data, len, 0, &je);
    if (!json_is_object(ev)) {
        json_decref(ev);
        return fail(err, "the model provider sent a malformed stream");
    }
    const char *type = event;
    if (!type || !*type || !strcmp(type, "message")) /* no event: line: the JSON says */
        type = json_string_value(json_object_get(ev, "type"));
    int rc = 0;
    if (!type) {
        /* nothing to route on: ignored, like an unknown event */
    } else if (!strcmp(type, "error")) {
        rc = upstream_error(json_object_get(ev, "error"), errbuf, errlen, err);
    } else if (!strcmp(type, "message_start")) {
        read_usage(d, json_object_get(json_object_get(ev, "message"), "usage"));
    } else if (!strcmp(type, "content_block_start")) {
        rc = block_start(d, ev, err);
    } else if (!strcmp(type, "content_block_delta")) {
        rc = block_delta(d, ev, err);
    } else if (!strcmp(type, "message_delta")) {
        const char *sr =
            json_string_value(json_object_get(json_object_get(ev, "delta"), "stop_reason"));
        if (sr)
            snprintf(d->stop, sizeof d->stop, "%s", sr);
        read_usage(d, json_object_get(ev, "usage"));
    } else if (!strcmp(type, "message_stop")) {
        d->done = 1;
        rc = 1;
    } /* content_block_stop, ping and unknown events: nothing to do */
    json_decref(ev);
    return rc;
}

int ant_dec_end(ant_dec *d, const char **err)
{
    if (!d->done && !d->stop[0])
        return fail(err, "the model's answer was cut off");
    int order[ANT_MAX_TOOL_CALLS];
    for (int i = 0; i < d->ncalls; i++) { /* by block index; they nearly always come sorted */
        int j = i;
        while (j > 0 && d->calls[order[j - 1]].index > d->calls[i].index) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    for (int i = 0; i < d->ncalls; i++) {
        ant_call *c = &d->calls[order[i]];
        if (!c->name)
            continue; /* a block that never got a name is not a call */
        char id[32];
        if (!c->id)
            snprintf(id, sizeof id, "toolu_%lld", c->index);
        d->cb->on_tool_call(d->ud, c->id ? c->id : id, c->name, c->args.len ? c->args.data : "{}");
    }
    d->cb->on_done(d->ud, &d->usage);
    return 0;
}
