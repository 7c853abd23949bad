#include "llm/openai.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
