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

static json_t *image_block(const char *mime, const char *data)
{
    return json_pack("{s:s,s:{s:s,s:s,s:s}}", "type", "image", "source", "type", "base64",
                     "media_type", mime, "data", data);
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
        json_t *result = json_incref(content);
        json_t *images = json_object_get(m, "images");
        if (json_array_size(images)) { /* the result as blocks: its text, then the images */
            json_decref(result);
            result = json_array();
            if (json_string_length(content))
                json_array_append_new(result, text_block(content));
            llm_append_images(result, images, image_block);
        }
        add_blocks(msgs, "user",
                   json_pack("[{s:s,s:s,s:o}]", "type", "tool_result", "tool_use_id", id, "content",
                             result));
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
    json_t *blocks;
    if (!strcmp(role, "user") && json_is_array(content)) {
        if (!(blocks = llm_map_parts(content, text_block, image_block)))
            return -EINVAL;
        add_blocks(msgs, role, blocks);
        return 0;
    }
    blocks = json_array();
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

static json_t *messages_tool(json_t *name, json_t *desc, json_t *params)
{
    json_t *tool = json_pack("{s:O,s:o}", "name", name, "input_schema", params);
    if (json_string_length(desc))
        json_object_set(tool, "description", desc);
    json_decref(desc);
    return tool;
}

char *ant_body(const llm_request *req)
{
    const char *tool_choice = req->tool_choice;
    unsigned max_tokens = req->max_tokens;
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
        json_t *tools = llm_map_tools(req->tools, messages_tool);
        if (!tools) {
            json_decref(body);
            return NULL;
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

static long long block_index(json_t *ev)
{
    json_t *ix = json_object_get(ev, "index");
    return json_is_integer(ix) ? json_integer_value(ix) : 0; /* some servers omit it */
}

/* Input tokens include the cached ones, as OpenAI's prompt_tokens do. */
static void read_usage(llm_dec *d, json_t *u)
{
    if (!json_is_object(u))
        return;
    json_t *in = json_object_get(u, "input_tokens");
    if (json_is_integer(in))
        d->usage.input_tokens = llm_tokens_add(
            llm_tokens_add(llm_tokens(in),
                           llm_tokens(json_object_get(u, "cache_creation_input_tokens"))),
            llm_tokens(json_object_get(u, "cache_read_input_tokens")));
    json_t *out = json_object_get(u, "output_tokens");
    if (json_is_integer(out))
        d->usage.output_tokens = llm_tokens(out); /* cumulative: the last one wins */
}

static int block_start(llm_dec *d, json_t *ev, const char **err)
{
    json_t *cb = json_object_get(ev, "content_block");
    const char *type = json_string_value(json_object_get(cb, "type"));
    if (!type)
        return 0;
    if (!strcmp(type, "text")) {
        llm_dec_text(d, json_object_get(cb, "text"));
        return 0;
    }
    if (strcmp(type, "tool_use"))
        return 0; /* thinking, server tools and their results are not ours */
    tc_call *c = tc_slot(&d->calls, block_index(ev), 1, err);
    if (!c)
        return -EPROTO;
    tc_name(c, json_string_value(json_object_get(cb, "id")), NULL,
            json_string_value(json_object_get(cb, "name")));
    json_t *input = json_object_get(cb, "input");
    if (json_is_object(input) && json_object_size(input) && !c->args.len) {
        /* tolerated: the whole input up front instead of input_json_delta fragments */
        if (tc_args(c, input, 0, err))
            return -EPROTO;
        c->preset = 1;
    }
    return 0;
}

static int block_delta(llm_dec *d, json_t *ev, const char **err)
{
    json_t *delta = json_object_get(ev, "delta");
    const char *type = json_string_value(json_object_get(delta, "type"));
    if (!type)
        return 0;
    if (!strcmp(type, "text_delta")) {
        llm_dec_text(d, json_object_get(delta, "text"));
        return 0;
    }
    if (strcmp(type, "input_json_delta"))
        return 0; /* thinking, signature, citations */
    json_t *pj = json_object_get(delta, "partial_json");
    const char *ignored;
    tc_call *c = tc_slot(&d->calls, block_index(ev), 0, &ignored);
    if (!c || !json_is_string(pj) || !json_string_length(pj))
        return 0; /* a server tool's input, or nothing to add */
    return tc_args(c, pj, 0, err);
}

int ant_dec_event(llm_dec *d, const char *event, const char *data, size_t len, char *errbuf,
                  size_t errlen, const char **err)
{
    if (d->done)
        return 1; /* nothing counts after message_stop */
    if (event && !strcmp(event, "ping"))
        return 0;
    json_error_t je;
    json_t *ev = json_loadb(data, len, 0, &je);
    if (!json_is_object(ev)) {
        json_decref(ev);
        return llm_fail(err, "the model provider sent a malformed stream");
    }
    const char *type = event;
    if (!type || !*type || !strcmp(type, "message")) /* no event: line: the JSON says */
        type = json_string_value(json_object_get(ev, "type"));
    int rc = 0;
    if (!type) {
        /* nothing to route on: ignored, like an unknown event */
    } else if (!strcmp(type, "error")) {
        rc = llm_upstream_error(
            json_string_value(json_object_get(json_object_get(ev, "error"), "message")), errbuf,
            errlen, err);
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
