#include "llm/responses.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

/* ---------- request ---------- */

static void text_item(json_t *in, const char *role, json_t *content)
{
    json_array_append_new(in, json_pack("{s:s,s:O}", "role", role, "content", content));
}

static json_t *input_text(json_t *text)
{
    return json_pack("{s:s,s:O}", "type", "input_text", "text", text);
}

static json_t *input_image(const char *mime, const char *data)
{
    json_t *p = json_pack("{s:s}", "type", "input_image");
    json_object_set_new(p, "image_url", json_sprintf("data:%s;base64,%s", mime, data));
    return p;
}

/* neutral message -> input items appended to in; system text goes to instr instead.
 * Returns 0, or -EINVAL for a malformed message (in then holds a partial list). */
static int add_message(json_t *in, buf *instr, json_t *m)
{
    const char *role = json_string_value(json_object_get(m, "role"));
    json_t *content = json_object_get(m, "content");
    json_t *calls = json_object_get(m, "tool_calls");
    if (!role)
        return -EINVAL;
    if (!strcmp(role, "system")) {
        if (!json_is_string(content))
            return -EINVAL;
        if (!json_string_length(content))
            return 0;
        if (instr->len)
            buf_puts(instr, "\n\n");
        buf_append(instr, json_string_value(content), json_string_length(content));
        return 0;
    }
    if (!strcmp(role, "tool")) {
        const char *id = json_string_value(json_object_get(m, "tool_call_id"));
        if (!id || !json_is_string(content))
            return -EINVAL;
        json_t *images = json_object_get(m, "images");
        json_t *output = json_incref(content);
        if (json_array_size(images)) { /* the output as parts: its text, then the images */
            json_decref(output);
            output = json_array();
            if (json_string_length(content))
                json_array_append_new(output, input_text(content));
            llm_append_images(output, images, input_image);
        }
        json_array_append_new(in, json_pack("{s:s,s:s,s:o}", "type", "function_call_output",
                                            "call_id", id, "output", output));
        return 0;
    }
    if (!strcmp(role, "user")) {
        if (json_is_array(content)) {
            json_t *parts = llm_map_parts(content, input_text, input_image);
            if (!parts)
                return -EINVAL;
            text_item(in, role, parts);
            json_decref(parts);
            return 0;
        }
        if (!json_is_string(content))
            return -EINVAL;
        text_item(in, role, content);
        return 0;
    }
    if (strcmp(role, "assistant"))
        return -EINVAL;
    if (!json_array_size(calls)) {
        if (!json_is_string(content))
            return -EINVAL;
        text_item(in, role, content);
        return 0;
    }
    if (json_is_string(content) && json_string_length(content))
        text_item(in, role, content); /* the text the model said before its calls */
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c)
    {
        const char *id = json_string_value(json_object_get(c, "id"));
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *args = json_string_value(json_object_get(c, "arguments"));
        if (!id || !name)
            return -EINVAL;
        json_array_append_new(in, json_pack("{s:s,s:s,s:s,s:s}", "type", "function_call", "call_id",
                                            id, "name", name, "arguments", args ? args : "{}"));
    }
    return 0;
}

/* a neutral tool as a flat Responses function tool */
static json_t *flat_tool(json_t *name, json_t *desc, json_t *params)
{
    return json_pack("{s:s,s:O,s:o,s:o,s:b}", "type", "function", "name", name, "description",
                     desc, "parameters", params, "strict", 0);
}

char *rsp_body(const llm_request *req)
{
    const char *tool_choice = req->tool_choice;
    if (!req->model || !json_is_array(req->messages))
        return NULL;
    json_t *in = json_array();
    buf instr = BUF_INIT(0); /* bounded by the messages already in memory */
    char *s = NULL;
    json_t *body = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(req->messages, i, m)
    {
        if (add_message(in, &instr, m))
            goto fail;
    }
    body = json_object();
    json_object_set_new(body, "model", json_string(req->model));
    if (instr.len)
        json_object_set_new(body, "instructions", json_stringn(instr.data, instr.len));
    json_object_set_new(body, "input", in);
    in = NULL;
    if (json_array_size(req->tools)) {
        json_t *tools = llm_map_tools(req->tools, flat_tool);
        if (!tools)
            goto fail;
        json_object_set_new(body, "tools", tools);
        if (tool_choice)
            json_object_set_new(body, "tool_choice",
                                json_pack("{s:s,s:s}", "type", "function", "name", tool_choice));
    }
    json_object_set_new(body, "stream", json_true());
    s = json_dumps(body, JSON_COMPACT);
fail:
    json_decref(in);
    json_decref(body);
    buf_free(&instr);
    return s;
}

/* ---------- stream ---------- */

/* The call slot an event is about: its output_index, else the started call with its item_id
 * or call_id, else (servers that send none of them) a new slot when fresh, the call started
 * last otherwise (-1 when none). */
static long long slot_of(llm_dec *d, json_t *ev, int fresh)
{
    json_t *ix = json_object_get(ev, "output_index");
    if (json_is_integer(ix))
        return json_integer_value(ix);
    json_t *item = json_object_get(ev, "item");
    const char *iid = json_string_value(json_object_get(ev, "item_id"));
    if (!iid)
        iid = json_string_value(json_object_get(item, "id"));
    int k = tc_find(&d->calls, iid, json_string_value(json_object_get(item, "call_id")));
    if (k >= 0)
        return k;
    return fresh ? d->calls.n : d->calls.last;
}

/* A function_call output item (from output_item.added/.done or response.completed's output)
 * at slot k: fills in what the call does not have yet. */
static int take_item(llm_dec *d, long long k, json_t *item, const char **err)
{
    tc_call *c = tc_slot(&d->calls, k, 1, err);
    if (!c)
        return -EPROTO;
    d->calls.last = (int)k;
    tc_name(c, json_string_value(json_object_get(item, "call_id")),
            json_string_value(json_object_get(item, "id")),
            json_string_value(json_object_get(item, "name")));
    json_t *args = json_object_get(item, "arguments");
    if (c->args.len || (json_is_string(args) && !json_string_length(args)))
        return 0; /* the streamed arguments (or .done's) are the ones that count */
    return tc_args(c, args, 0, err);
}

static int is_function_call(json_t *item)
{
    const char *t = json_string_value(json_object_get(item, "type"));
    return t && !strcmp(t, "function_call");
}

/* A terminal response object (completed or incomplete): usage, and whatever a server put only
 * there (calls never streamed; text when no delta went out). */
static int finish(llm_dec *d, json_t *resp, const char **err)
{
    json_t *usage = json_object_get(resp, "usage");
    if (json_is_object(usage)) {
        d->usage.input_tokens = llm_tokens(json_object_get(usage, "input_tokens"));
        d->usage.output_tokens = llm_tokens(json_object_get(usage, "output_tokens"));
    }
    int want_text = !d->text_seen;
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(resp, "output"), i, item)
    {
        const char *t = json_string_value(json_object_get(item, "type"));
        if (!t)
            continue;
        if (!strcmp(t, "function_call")) { /* fills only what the stream did not give */
            int k = tc_find(&d->calls, json_string_value(json_object_get(item, "id")),
                            json_string_value(json_object_get(item, "call_id")));
            int rc = take_item(d, k >= 0 ? k : (long long)i, item, err);
            if (rc)
                return rc;
        } else if (!strcmp(t, "message") && want_text) {
            size_t k;
            json_t *part;
            json_array_foreach(json_object_get(item, "content"), k, part)
            {
                const char *pt = json_string_value(json_object_get(part, "type"));
                if (pt && !strcmp(pt, "output_text"))
                    llm_dec_text(d, json_object_get(part, "text"));
            }
        }
    }
    d->done = 1;
    return 1;
}

static int dispatch(llm_dec *d, const char *type, json_t *ev, char *errbuf, size_t errlen,
                    const char **err)
{
    if (!strcmp(type, "response.output_text.delta")) {
        llm_dec_text(d, json_object_get(ev, "delta"));
        return 0;
    }
    if (!strcmp(type, "response.output_item.added") || !strcmp(type, "response.output_item.done")) {
        json_t *item = json_object_get(ev, "item");
        if (!is_function_call(item))
            return 0;
        /* without output_index: "added" starts a call, so does a "done" for an unknown id */
        int fresh = !strcmp(type, "response.output_item.added") || d->calls.last < 0 ||
                    json_object_get(item, "call_id") || json_object_get(item, "id");
        return take_item(d, slot_of(d, ev, fresh), item, err);
    }
    if (!strcmp(type, "response.function_call_arguments.delta") ||
        !strcmp(type, "response.function_call_arguments.done")) {
        int done = !strcmp(type, "response.function_call_arguments.done");
        long long k = slot_of(d, ev, 0);
        if (k < 0 && k != -1)
            return llm_fail(err, "the model made too many tool calls at once");
        if (k < 0)
            return 0; /* arguments of no call we know of */
        tc_call *c = tc_slot(&d->calls, k, 1, err);
        if (!c)
            return -EPROTO;
        return tc_args(c, json_object_get(ev, done ? "arguments" : "delta"), done, err);
    }
    if (!strcmp(type, "response.completed"))
        return finish(d, json_object_get(ev, "response"), err);
    if (!strcmp(type, "response.incomplete")) {
        /* max_output_tokens and the like: the text so far is the answer */
        json_t *resp = json_object_get(ev, "response");
        const char *why = json_string_value(
            json_object_get(json_object_get(resp, "incomplete_details"), "reason"));
        snprintf(d->stop, sizeof d->stop, "%s", why ? why : "unknown");
        return finish(d, resp, err);
    }
    if (!strcmp(type, "response.failed")) {
        json_t *e = json_object_get(json_object_get(ev, "response"), "error");
        return llm_upstream_error(json_string_value(json_object_get(e, "message")), errbuf, errlen,
                              err);
    }
    if (!strcmp(type, "error")) {
        const char *msg = json_string_value(json_object_get(ev, "message"));
        if (!msg) /* tolerated: the message nested in an error object */
            msg = json_string_value(json_object_get(json_object_get(ev, "error"), "message"));
        return llm_upstream_error(msg, errbuf, errlen, err);
    }
    if (!strncmp(type, "response.refusal.", 17)) {
        d->refusal_seen = 1; /* not shown as the answer */
        return 0;
    }
    return 0; /* reasoning, annotations, hosted tools, audio…: not ours */
}

int rsp_dec_event(llm_dec *d, const char *event, const char *data, size_t len, char *errbuf,
                  size_t errlen, const char **err)
{
    if (d->done)
        return 1;
    if (len == 6 && !memcmp(data, "[DONE]", 6))
        return 0; /* not in this API; some compatible servers add it: the terminal event counts */
    json_error_t je;
    json_t *ev = json_loadb(data, len, 0, &je);
    if (!json_is_object(ev)) {
        json_decref(ev);
        return llm_fail(err, "the model provider sent a malformed stream");
    }
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (!type && event && strcmp(event, "message"))
        type = event; /* no JSON type: the event: line names it */
    int rc = 0;
    if (type)
        rc = dispatch(d, type, ev, errbuf, errlen, err);
    else if (json_object_get(ev, "error")) /* an untyped {"error":{…}} */
        rc = dispatch(d, "error", ev, errbuf, errlen, err);
    json_decref(ev);
    return rc;
}
