#include "mcp/result.h"

#include <stdlib.h>
#include <string.h>

#include "util/base64.h"
#include "util/buf.h"
#include "util/log.h"

#define WIDGET_MAX (4u << 20) /* decoded widget JSON, bytes */

/* The widget of one content block: {"widget", "copy_text"} (new), or NULL when the block is
 * not a widget (*broken set when it claimed to be one but is unusable, with why). */
static json_t *block_widget(const json_t *block, const char **why)
{
    *why = NULL;
    const char *type = json_string_value(json_object_get(block, "type"));
    json_t *res = json_object_get(block, "resource");
    const char *uri = json_string_value(json_object_get(res, "uri"));
    const char *mime = json_string_value(json_object_get(res, "mimeType"));
    if (!type || strcmp(type, "resource") || !uri || strncmp(uri, "ui://", 5) || !mime ||
        strcmp(mime, MCP_WIDGET_MIME))
        return NULL;
    json_t *text = json_object_get(res, "text");
    json_t *blob = json_object_get(res, "blob");
    json_t *doc = NULL;
    if (json_is_string(text)) {
        doc = json_loadb(json_string_value(text), json_string_length(text), 0, NULL);
    } else if (json_is_string(blob) && json_string_length(blob) <= WIDGET_MAX / 3 * 4) {
        unsigned char *raw = xmalloc(json_string_length(blob) * 3 / 4 + 1);
        long n = base64_decode(json_string_value(blob), json_string_length(blob), raw);
        if (n >= 0)
            doc = json_loadb((const char *)raw, (size_t)n, 0, NULL);
        free(raw);
    }
    json_t *w = json_object_get(doc, "widget");
    const char *root = json_string_value(json_object_get(w, "type"));
    json_t *copy = json_object_get(doc, "copy_text");
    json_t *out = NULL;
    if (!doc)
        *why = "not JSON";
    else if (!json_is_object(w))
        *why = "no \"widget\" object";
    else if (!root || (strcmp(root, "Card") && strcmp(root, "ListView") && strcmp(root, "Basic")))
        *why = "the root is not Card, ListView or Basic";
    else if (copy && !json_is_string(copy) && !json_is_null(copy))
        *why = "copy_text is not a string";
    else
        out = json_pack("{s:O,s:s}", "widget", w, "copy_text",
                        json_is_string(copy) ? json_string_value(copy) : "");
    json_decref(doc);
    return out;
}

json_t *mcp_result_widgets(const json_t *result, const char *rid)
{
    json_t *out = json_array();
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(result, "content"), i, b)
    {
        const char *why;
        json_t *w = block_widget(b, &why);
        if (w)
            json_array_append_new(out, w);
        else if (why)
            LOGW(rid, "skipping a broken widget from a tool", "block=%zu why=\"%s\"", i, why);
    }
    return out;
}

char *mcp_result_text(const json_t *result, size_t max, const char *rid)
{
    buf b = BUF_INIT(0);
    if (json_is_true(json_object_get(result, "isError")))
        buf_puts(&b, "Error: ");
    size_t i;
    json_t *blk;
    json_array_foreach(json_object_get(result, "content"), i, blk)
    {
        const char *type = json_string_value(json_object_get(blk, "type")) ?: "";
        json_t *res = json_object_get(blk, "resource");
        const char *mime = json_string_value(json_object_get(blk, "mimeType"));
        if (b.len && b.data[b.len - 1] != ' ')
            buf_putc(&b, '\n');
        const char *why;
        json_t *w = block_widget(blk, &why);
        if (w) {
            buf_puts(&b, "[widget shown to the user] ");
            buf_puts(&b, json_string_value(json_object_get(w, "copy_text")));
            json_decref(w);
        } else if (!strcmp(type, "text")) {
            buf_puts(&b, json_string_value(json_object_get(blk, "text")) ?: "");
        } else if (!strcmp(type, "resource") && json_is_string(json_object_get(res, "text")) &&
                   !why) {
            buf_printf(&b, "[resource %.300s]\n%s",
                       json_string_value(json_object_get(res, "uri")) ?: "",
                       json_string_value(json_object_get(res, "text")));
        } else if (!strcmp(type, "resource")) {
            buf_printf(&b, "[resource %.300s (%.100s)%s]",
                       json_string_value(json_object_get(res, "uri")) ?: "",
                       json_string_value(json_object_get(res, "mimeType")) ?: "binary",
                       why ? ": a broken widget" : "");
        } else if (!strcmp(type, "image") || !strcmp(type, "audio")) {
            buf_printf(&b, "[%s %.100s]", type, mime ? mime : "");
        } else if (!strcmp(type, "resource_link")) {
            buf_printf(&b, "[link %.200s: %.300s]",
                       json_string_value(json_object_get(blk, "name")) ?: "",
                       json_string_value(json_object_get(blk, "uri")) ?: "");
        } else {
            buf_printf(&b, "[%.40s content]", type);
        }
    }
    if (!json_array_size(json_object_get(result, "content"))) {
        json_t *sc = json_object_get(result, "structuredContent");
        char *s = sc ? json_dumps(sc, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        buf_puts(&b, s ? s : "(the tool returned nothing)");
        free(s);
    }
    (void)rid;
    size_t len;
    char *out = buf_steal(&b, &len);
    if (len > max) { /* cut at a character boundary */
        size_t n = max;
        while (n > 0 && ((unsigned char)out[n] & 0xC0) == 0x80)
            n--;
        static const char note[] = "\n[... cut: the tool's answer is longer]";
        out = realloc(out, n + sizeof note);
        if (!out)
            log_oom();
        memcpy(out + n, note, sizeof note);
    }
    return out;
}

json_t *mcp_result_images(const json_t *result, size_t max)
{
    static const char *const ok[] = {"image/png", "image/jpeg", "image/gif", "image/webp"};
    json_t *out = json_array();
    size_t used = 0, i;
    json_t *b;
    json_array_foreach(json_object_get(result, "content"), i, b)
    {
        const char *type = json_string_value(json_object_get(b, "type"));
        const char *mime = json_string_value(json_object_get(b, "mimeType"));
        json_t *data = json_object_get(b, "data");
        int accepted = 0;
        for (size_t k = 0; mime && k < sizeof ok / sizeof *ok; k++)
            accepted |= !strcmp(mime, ok[k]);
        if (!type || strcmp(type, "image") || !accepted || !json_is_string(data) ||
            !json_string_length(data) || used + json_string_length(data) > max)
            continue;
        used += json_string_length(data);
        json_array_append_new(out, json_pack("{s:s,s:O}", "mime_type", mime, "data", data));
    }
    return out;
}
