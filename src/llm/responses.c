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
        if (instr->len)
            buf_puts(instr, "\n\n");
        buf_append(instr, json_string_value(content), json_string_length(content));
        return 0;
    }
    if (!strcmp(role, "tool")) {
        const char *id = json_string_value(json_object_get(m, "tool_call_id"));
        if (!id || !json_is_string(content))
            return -EINVAL;
        json_array_append_new(in, json_pack("{s:s,s:s,s:O}", "type", "function_call_output",
                                            "call_id", id, "output", content));
        return 0;
    }
    if (!strcmp(role, "user")) {
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

/* neutral tools -> flat Responses function tools; NULL on a tool without a name */
static json_t *flat_tools(json_t *tools)
{
    json_t *out = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        json_t *name = json_object_get(t, "name");
        json_t *desc = json_object_get(t, "description");
        json_t *params = json_object_get(t, "parameters");
        if (!json_is_string(name)) {
            json_decref(out);
            return NULL;
        }
        json_array_append_new(
            out, json_pack("{s:s,s:O,s:o,s:o,s:b}", "type", "function", "name", name, "description",
                           json_is_string(desc) ? json_incref(desc) : json_string(""), "parameters",
                           json_is_object(params) ? json_incref(params)
                                                  : json_pack("{s:s}", "type", "object"),
                           "strict", 0));
    }
    return out;
}

char *rsp_body(const llm_request *req, const char *tool_choice)
{
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
        json_t *tools = flat_tools(req->tools);
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

void rsp_dec_init(rsp_dec *d, const llm_callbacks *cb, void *ud)
{
    memset(d, 0, sizeof *d);
    d->cb = cb;
    d->ud = ud;
    d->last = -1;
    for (int i = 0; i < RSP_MAX_TOOL_CALLS; i++)
        d->calls[i].args = (buf)BUF_INIT(RSP_MAX_ARGS);
}

void rsp_dec_free(rsp_dec *d)
{
    for (int i = 0; i < RSP_MAX_TOOL_CALLS; i++) {
        free(d->calls[i].id);
        free(d->calls[i].item_id);
        free(d->calls[i].name);
        d->calls[i].id = d->calls[i].item_id = d->calls[i].name = NULL;
        buf_free(&d->calls[i].args);
    }
    d->ncalls = 0;
    d->last = -1;
}

static int fail(const char **err, const char *msg)
{
    *err = msg;
    return -EPROTO;
}

/* An error from upstream: its message, cut and made safe for a log or a user. */
static int upstream_error(const char *msg, char *errbuf, size_t errlen, const char **err)
{
    snprintf(errbuf, errlen, "the model provider reported an error: %.200s",
             msg ? msg : "(no message)");
    *err = errbuf;
    return -EIO;
}

/* The call slot an event is about: its output_index, else the started call with its item_id
 * or call_id, else (servers that send none of them) a new slot when fresh, the call started
 * last otherwise. -1: none; -ERANGE: past the cap. */
static int slot_of(rsp_dec *d, json_t *ev, int fresh)
{
    json_t *ix = json_object_get(ev, "output_index");
    if (json_is_integer(ix)) {
        long long k = json_integer_value(ix);
        return k < 0 || k >= RSP_MAX_TOOL_CALLS ? -ERANGE : (int)k;
    }
    json_t *item = json_object_get(ev, "item");
    const char *iid = json_string_value(json_object_get(ev, "item_id"));
    if (!iid)
        iid = json_string_value(json_object_get(item, "id"));
    const char *cid = json_string_value(json_object_get(item, "call_id"));
    for (int i = 0; i < d->ncalls; i++) {
        rsp_call *c = &d->calls[i];
        if ((iid && c->item_id && !strcmp(c->item_id, iid)) ||
            (cid && c->id && !strcmp(c->id, cid)))
            return i;
    }
    return fresh ? d->ncalls : d->last;
}

static int set_args(rsp_call *c, json_t *args, int replace, const char **err)
{
    int rc = 0;
    if (json_is_string(args)) {
        if (replace)
            buf_reset(&c->args);
        rc = buf_append(&c->args, json_string_value(args), json_string_length(args));
    } else if (json_is_object(args)) { /* tolerated: a whole object instead of a string */
        char *s = json_dumps(args, JSON_COMPACT);
        if (replace)
            buf_reset(&c->args);
        rc = s ? buf_puts(&c->args, s) : -ENOMEM;
        free(s);
    }
    return rc ? fail(err, "the model's tool call arguments are too large") : 0;
}

/* A function_call output item (from output_item.added/.done or response.completed's output)
 * at slot k: fills in what the call does not have yet. */
static int take_item(rsp_dec *d, int k, json_t *item, const char **err)
{
    if (k < 0 || k >= RSP_MAX_TOOL_CALLS)
        return fail(err, "the model made too many tool calls at once");
    rsp_call *c = &d->calls[k];
    if (k >= d->ncalls)
        d->ncalls = k + 1;
    d->last = k;
    const char *id = json_string_value(json_object_get(item, "call_id"));
    const char *iid = json_string_value(json_object_get(item, "id"));
    const char *name = json_string_value(json_object_get(item, "name"));
    if (id && !c->id)
        c->id = xstrdup(id);
    if (iid && !c->item_id)
        c->item_id = xstrdup(iid);
    if (name && !c->name)
        c->name = xstrdup(name);
    json_t *args = json_object_get(item, "arguments");
    if (c->args.len || (json_is_string(args) && !json_string_length(args)))
        return 0; /* the streamed arguments (or .done's) are the ones that count */
    return set_args(c, args, 0, err);
}

static int is_function_call(json_t *item)
{
    const char *t = json_string_value(json_object_get(item, "type"));
    return t && !strcmp(t, "function_call");
}

/* A terminal response object (completed or incomplete): usage, and whatever a server put only
 * there (calls never streamed; text when no delta went out). */
static int finish(rsp_dec *d, json_t *resp, const char **err)
{
    json_t *usage = json_object_get(resp, "usage");
    if (json_is_object(usage)) {
        d->usage.input_tokens = json_integer_value(json_object_get(usage, "input_tokens"));
        d->usage.output_tokens = json_integer_value(json_object_get(usage, "output_tokens"));
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
            int rc = take_item(d, i < RSP_MAX_TOOL_CALLS ? (int)i : -1, item, err);
            if (rc)
                return rc;
        } else if (!strcmp(t, "message") && want_text) {
            size_t k;
            json_t *part;
            json_array_foreach(json_object_get(item, "content"), k, part)
            {
                const char *pt = json_string_value(json_object_get(part, "type"));
                json_t *text = json_object_get(part, "text");
                if (pt && !strcmp(pt, "output_text") && json_is_string(text) &&
                    json_string_length(text)) {
                    d->text_seen = 1;
                    d->cb->on_text(d->ud, json_string_value(text), json_string_length(text));
                }
            }
        }
    }
    d->done = 1;
    return 1;
}

static int dispatch(rsp_dec *d, const char *type, json_t *ev, char *errbuf, size_t errlen,
                    const char **err)
{
    if (!strcmp(type, "response.output_text.delta")) {
        json_t *delta = json_object_get(ev, "delta");
        if (json_is_string(delta) && json_string_length(delta)) {
            d->text_seen = 1;
            d->cb->on_text(d->ud, json_string_value(delta), json_string_length(delta));
        }
        return 0;
    }
    if (!strcmp(type, "response.output_item.added") || !strcmp(type, "response.output_item.done")) {
        json_t *item = json_object_get(ev, "item");
        if (!is_function_call(item))
            return 0;
        /* without output_index: "added" starts a call, so does a "done" for an unknown id */
        int fresh = !strcmp(type, "response.output_item.added") || d->last < 0 ||
                    json_object_get(item, "call_id") || json_object_get(item, "id");
        return take_item(d, slot_of(d, ev, fresh), item, err);
    }
    if (!strcmp(type, "response.function_call_arguments.delta") ||
        !strcmp(type, "response.function_call_arguments.done")) {
        int done = !strcmp(type, "response.function_call_arguments.done");
        int k = slot_of(d, ev, 0);
        if (k == -ERANGE)
            return fail(err, "the model made too many tool calls at once");
        if (k < 0)
            return 0; /* arguments of no call we know of */
        if (k >= d->ncalls)
            d->ncalls = k + 1;
        return set_args(&d->calls[k], json_object_get(ev, done ? "arguments" : "delta"), done, err);
    }
    if (!strcmp(type, "response.completed"))
        return finish(d, json_object_get(ev, "response"), err);
    if (!strcmp(type, "response.incomplete")) {
        /* max_output_tokens and the like: the text so far is the answer */
        json_t *resp = json_object_get(ev, "response");
        const char *why = json_string_value(
            json_object_get(json_object_get(resp, "incomplete_details"), "reason"));
        snprintf(d->incomplete, sizeof d->incomplete, "%s", why ? why : "unknown");
        return finish(d, resp, err);
    }
    if (!strcmp(type, "response.failed")) {
        json_t *e = json_object_get(json_object_get(ev, "response"), "error");
        return upstream_error(json_string_value(json_object_get(e, "message")), errbuf, errlen,
                              err);
    }
    if (!strcmp(type, "error")) {
        const char *msg = json_string_value(json_object_get(ev, "message"));
        if (!msg) /* tolerated: the message nested in an error object */
            msg = json_string_value(json_object_get(json_object_get(ev, "error"), "message"));
        return upstream_error(msg, errbuf, errlen, err);
    }
    if (!strncmp(type, "response.refusal.", 17)) {
        d->refusal_seen = 1; /* not shown as the answer */
        return 0;
    }
    return 0; /* reasoning, annotations, hosted tools, audio…: not ours */
}

int rsp_dec_event(rsp_dec *d, const char *event, const char *data, size_t len, char *errbuf,
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
        return fail(err, "the model provider sent a malformed stream");
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

int rsp_dec_end(rsp_dec *d, const char **err)
{
    if (!d->done)
        return fail(err, "the model's answer was cut off");
    for (int i = 0; i < d->ncalls; i++) {
        rsp_call *c = &d->calls[i];
        if (!c->name)
            continue; /* a slot that never got a name is not a call */
        char id[32];
        if (!c->id)
            snprintf(id, sizeof id, "call_%d", i);
        d->cb->on_tool_call(d->ud, c->id ? c->id : id, c->name, c->args.len ? c->args.data : "{}");
    }
    d->cb->on_done(d->ud, &d->usage);
    return 0;
}
