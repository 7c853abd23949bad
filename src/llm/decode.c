#include "llm/decode.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

int llm_fail(const char **err, const char *msg)
{
    *err = msg;
    return -EPROTO;
}

int llm_upstream_error(const char *msg, char *errbuf, size_t errlen, const char **err)
{
    snprintf(errbuf, errlen, "the model provider reported an error: %.200s",
             msg ? msg : "(no message)");
    *err = errbuf;
    return -EIO;
}

void tc_init(tc_list *l)
{
    l->slot = NULL;
    l->n = 0;
    l->last = -1;
}

void tc_free(tc_list *l)
{
    if (l->slot) {
        for (int i = 0; i < l->n; i++) {
            free(l->slot[i].id);
            free(l->slot[i].item_id);
            free(l->slot[i].name);
            buf_free(&l->slot[i].args);
        }
        free(l->slot);
    }
    tc_init(l);
}

tc_call *tc_slot(tc_list *l, long long k, int create, const char **err)
{
    if (k < 0 || k >= TC_MAX_SLOTS) {
        llm_fail(err, "the model made too many tool calls at once");
        return NULL;
    }
    if (!l->slot) {
        if (!create)
            return NULL;
        l->slot = xcalloc(TC_MAX_SLOTS, sizeof *l->slot);
        for (int i = 0; i < TC_MAX_SLOTS; i++)
            l->slot[i].args = (buf)BUF_INIT(TC_MAX_ARGS);
    }
    tc_call *c = &l->slot[k];
    if (!c->used) {
        if (!create)
            return NULL;
        c->used = 1;
    }
    if (k >= l->n)
        l->n = (int)k + 1;
    return c;
}

int tc_find(const tc_list *l, const char *item_id, const char *call_id)
{
    for (int i = 0; i < l->n; i++) {
        const tc_call *c = &l->slot[i];
        if ((item_id && c->item_id && !strcmp(c->item_id, item_id)) ||
            (call_id && c->id && !strcmp(c->id, call_id)))
            return i;
    }
    return -1;
}

void tc_name(tc_call *c, const char *id, const char *item_id, const char *name)
{
    if (id && !c->id)
        c->id = xstrdup(id);
    if (item_id && !c->item_id)
        c->item_id = xstrdup(item_id);
    if (name && !c->name)
        c->name = xstrdup(name);
}

int tc_args(tc_call *c, json_t *args, int replace, const char **err)
{
    int rc = 0;
    if (replace || c->preset) {
        if (json_is_string(args) || json_is_object(args)) {
            buf_reset(&c->args);
            c->preset = 0;
        }
    }
    if (json_is_string(args)) {
        rc = buf_append(&c->args, json_string_value(args), json_string_length(args));
    } else if (json_is_object(args)) {
        char *s = json_dumps(args, JSON_COMPACT);
        rc = s ? buf_puts(&c->args, s) : -ENOMEM;
        free(s);
    }
    return rc ? llm_fail(err, "the model's tool call arguments are too large") : 0;
}

void tc_emit(const tc_list *l, const llm_callbacks *cb, void *ud, const char *id_prefix)
{
    for (int i = 0; i < l->n; i++) {
        const tc_call *c = &l->slot[i];
        if (!c->used || !c->name)
            continue;
        char id[48];
        if (!c->id)
            snprintf(id, sizeof id, "%s%d", id_prefix, i);
        cb->on_tool_call(ud, c->id ? c->id : id, c->name, c->args.len ? c->args.data : "{}");
    }
}

int64_t llm_tokens(json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) > 0 ? (int64_t)json_integer_value(v) : 0;
}

int64_t llm_tokens_add(int64_t a, int64_t b)
{
    int64_t s;
    return __builtin_add_overflow(a, b, &s) ? INT64_MAX : s;
}

void llm_dec_init(llm_dec *d, const llm_callbacks *cb, void *ud)
{
    memset(d, 0, sizeof *d);
    d->cb = cb;
    d->ud = ud;
    tc_init(&d->calls);
}

void llm_dec_free(llm_dec *d)
{
    tc_free(&d->calls);
}

void llm_dec_text(llm_dec *d, json_t *text)
{
    if (json_is_string(text) && json_string_length(text)) {
        d->text_seen = 1;
        d->cb->on_text(d->ud, json_string_value(text), json_string_length(text));
    }
}

int llm_dec_end(llm_dec *d, const char *id_prefix, const char **err)
{
    if (!d->done && !d->stop[0])
        return llm_fail(err, "the model's answer was cut off");
    tc_emit(&d->calls, d->cb, d->ud, id_prefix);
    d->cb->on_done(d->ud, &d->usage);
    return 0;
}

json_t *llm_map_parts(json_t *content, json_t *(*text)(json_t *text),
                      json_t *(*image)(const char *mime, const char *data))
{
    json_t *out = json_array();
    if (json_is_string(content)) {
        json_array_append_new(out, text(content));
        return out;
    }
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *t = json_object_get(part, "text");
        const char *mime = json_string_value(json_object_get(part, "mime_type"));
        const char *data = json_string_value(json_object_get(part, "data"));
        if (type && !strcmp(type, "text") && json_is_string(t)) {
            if (json_string_length(t))
                json_array_append_new(out, text(t));
        } else if (type && !strcmp(type, "image") && mime && data) {
            json_array_append_new(out, image(mime, data));
        } else {
            json_decref(out);
            return NULL;
        }
    }
    if (!json_is_array(content)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

void llm_append_images(json_t *out, json_t *images,
                       json_t *(*image)(const char *mime, const char *data))
{
    size_t k;
    json_t *img;
    json_array_foreach(images, k, img)
    {
        const char *mime = json_string_value(json_object_get(img, "mime_type"));
        const char *data = json_string_value(json_object_get(img, "data"));
        if (mime && data)
            json_array_append_new(out, image(mime, data));
    }
}

json_t *llm_map_tools(json_t *tools, json_t *(*one)(json_t *name, json_t *desc, json_t *params))
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
        json_array_append_new(out, one(name, json_is_string(desc) ? json_incref(desc) : json_string(""),
                                       json_is_object(params) ? json_incref(params)
                                                              : json_pack("{s:s}", "type", "object")));
    }
    return out;
}
