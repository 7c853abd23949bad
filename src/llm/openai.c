#include "llm/openai.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

/* ---------- request ---------- */

static json_t *text_part(json_t *text)
{
    return json_pack("{s:s,s:O}", "type", "text", "text", text);
}

static json_t *image_part(const char *mime, const char *data)
{
    return json_pack("{s:s,s:{s:o}}", "type", "image_url", "image_url", "url",
                     json_sprintf("data:%s;base64,%s", mime, data));
}

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
    if (!strcmp(role, "user") && json_is_array(content)) {
        json_t *parts = llm_map_parts(content, text_part, image_part);
        if (!parts) {
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, "content", parts);
        return out;
    }
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

static json_t *chat_tool(json_t *name, json_t *desc, json_t *params)
{
    return json_pack("{s:s,s:{s:O,s:o,s:o}}", "type", "function", "function", "name", name,
                     "description", desc, "parameters", params);
}

char *oai_chat_body(const llm_request *req)
{
    const char *tool_choice = req->tool_choice;
    json_t *msgs = json_array();
    size_t i;
    json_t *m;
    json_t *images = NULL; /* of the tool results just added: a user message after them */
    json_array_foreach(req->messages, i, m)
    {
        json_t *cm = chat_message(m);
        if (!cm) {
            json_decref(msgs);
            json_decref(images);
            return NULL;
        }
        json_array_append_new(msgs, cm);
        if (json_array_size(json_object_get(m, "images"))) {
            if (!images)
                images = json_pack("[{s:s,s:s}]", "type", "text", "text",
                                   "Images the tools returned:");
            llm_append_images(images, json_object_get(m, "images"), image_part);
        }
        json_t *next = json_array_get(req->messages, i + 1);
        if (images && strcmp(json_string_value(json_object_get(next, "role")) ?: "", "tool")) {
            json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", "user", "content", images));
            images = NULL;
        }
    }
    json_t *body = json_pack("{s:s,s:o,s:b,s:{s:b}}", "model", req->model, "messages", msgs,
                             "stream", 1, "stream_options", "include_usage", 1);
    if (json_array_size(req->tools)) {
        json_t *tools = llm_map_tools(req->tools, chat_tool);
        if (!tools) {
            json_decref(body);
            return NULL;
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

static int tool_delta(llm_dec *d, json_t *tc, const char **err)
{
    json_t *ix = json_object_get(tc, "index");
    long long k = json_is_integer(ix) ? json_integer_value(ix) : 0; /* some servers omit it */
    tc_call *c = tc_slot(&d->calls, k, 1, err);
    if (!c)
        return -EPROTO;
    json_t *fn = json_object_get(tc, "function");
    tc_name(c, json_string_value(json_object_get(tc, "id")), NULL,
            json_string_value(json_object_get(fn, "name")));
    return tc_args(c, json_object_get(fn, "arguments"), 0, err);
}

int oai_dec_event(llm_dec *d, const char *event, const char *data, size_t len, char *errbuf,
                  size_t errlen, const char **err)
{
    (void)event;
    if (d->done)
        return 1; /* nothing counts after [DONE] */
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        d->done = 1;
        return 1;
    }
    json_error_t je;
    json_t *ev = json_loadb(data, len, 0, &je);
    if (!json_is_object(ev)) {
        json_decref(ev);
        return llm_fail(err, "the model provider sent a malformed stream");
    }
    int rc = 0;
    json_t *e = json_object_get(ev, "error");
    if (e) {
        rc = llm_upstream_error(json_string_value(json_object_get(e, "message")), errbuf, errlen,
                                err);
        goto out;
    }
    json_t *usage = json_object_get(ev, "usage");
    if (json_is_object(usage)) {
        d->usage.input_tokens = llm_tokens(json_object_get(usage, "prompt_tokens"));
        d->usage.output_tokens = llm_tokens(json_object_get(usage, "completion_tokens"));
    }
    size_t i;
    json_t *ch;
    json_array_foreach(json_object_get(ev, "choices"), i, ch)
    {
        json_t *delta = json_object_get(ch, "delta");
        llm_dec_text(d, json_object_get(delta, "content"));
        size_t k;
        json_t *tc;
        json_array_foreach(json_object_get(delta, "tool_calls"), k, tc)
        {
            if ((rc = tool_delta(d, tc, err)))
                goto out;
        }
        const char *fr = json_string_value(json_object_get(ch, "finish_reason"));
        if (fr)
            snprintf(d->stop, sizeof d->stop, "%s", fr);
    }
out:
    json_decref(ev);
    return rc;
}
