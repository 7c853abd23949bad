#include "chatkit/history.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chatkit/chatkit.h"
#include "files/files.h"
#include "util/base64.h"
#include "util/buf.h"
#include "util/log.h"

typedef struct hist {
    const config *cfg;
    json_t *msgs;
    json_t *images;     /* attachment ids whose bytes go to the model: {id: true} */
    size_t last_calls;  /* 1 + index of the assistant message of the last executed tool call, 0
                         * when something else came after it */
} hist;

static int is_image(const char *mime)
{
    static const char *const ok[] = {"image/png", "image/jpeg", "image/gif", "image/webp"};
    for (size_t i = 0; mime && i < sizeof ok / sizeof *ok; i++)
        if (!strcmp(mime, ok[i]))
            return 1;
    return 0;
}

static int is_text(const char *mime)
{
    static const char *const ok[] = {"application/json", "application/xml", "application/yaml",
                                     "application/x-yaml", "application/javascript",
                                     "application/x-ndjson", "application/csv"};
    if (!mime)
        return 0;
    if (!strncmp(mime, "text/", 5))
        return 1;
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (!strcmp(mime, ok[i]))
            return 1;
    return 0;
}

static int attachment_file(const hist *h, json_t *a, char *path, size_t n)
{
    const char *id = json_string_value(json_object_get(a, "id"));
    return id ? files_path(h->cfg->data_dir, id, path, n) : -1;
}

/* One attachment of a user message: an image part appended to *images (created on first
 * use), a text file's content or the attachment's name appended to text. */
static void attachment_input(hist *h, json_t *a, buf *text, json_t **images)
{
    const char *name = json_string_value(json_object_get(a, "name")) ?: "?";
    const char *mime = json_string_value(json_object_get(a, "mime_type")) ?: "";
    const char *id = json_string_value(json_object_get(a, "id")) ?: "";
    char path[1024];
    size_t len = 0;
    int more = 0;
    if (is_image(mime) && json_object_get(h->images, id) && !attachment_file(h, a, path, sizeof path)) {
        char *bytes = files_read(path, h->cfg->attachment_image_max, &len, &more);
        if (bytes && !more) {
            char *b64 = xmalloc(base64_len(len, 0) + 1);
            base64_encode(bytes, len, b64, 0);
            if (!*images)
                *images = json_array();
            json_array_append_new(*images, json_pack("{s:s,s:s,s:s}", "type", "image", "mime_type",
                                                     mime, "data", b64));
            free(b64);
            free(bytes);
            buf_printf(text, "\n[image: %.255s]", name);
            return;
        }
        free(bytes);
    } else if (is_text(mime) && !attachment_file(h, a, path, sizeof path)) {
        char *bytes = files_read(path, h->cfg->attachment_text_max, &len, &more);
        if (bytes && more) { /* cut at a character boundary: drop a last character cut short */
            size_t k = len;
            while (k > 0 && ((unsigned char)bytes[k - 1] & 0xC0) == 0x80)
                k--;
            if (k > 0) {
                unsigned char lead = (unsigned char)bytes[k - 1];
                size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
                if (len - (k - 1) < need)
                    len = k - 1;
            }
        }
        /* only UTF-8 text goes inline (json_stringn refuses anything else) */
        json_t *s = bytes ? json_stringn(bytes, len) : NULL;
        free(bytes);
        if (s) {
            buf_printf(text, "\n\n[file: %.255s]\n%s%s\n[end of file]", name, json_string_value(s),
                       more ? "\n[... cut: the file is longer]" : "");
            json_decref(s);
            return;
        }
    }
    buf_printf(text, "\n[attachment: %.255s (%.127s)]", name, mime);
}

/* Which images go to the model: the newest first while the budget lasts. items: newest first. */
static void choose_images(hist *h, json_t **items, size_t n)
{
    size_t budget = h->cfg->attachment_image_max;
    for (size_t i = 0; i < n; i++) {
        if (!items[i] || strcmp(json_string_value(json_object_get(items[i], "type")) ?: "",
                                "user_message"))
            continue;
        size_t k;
        json_t *a;
        json_array_foreach(json_object_get(items[i], "attachments"), k, a)
        {
            char path[1024];
            struct stat sb;
            if (!is_image(json_string_value(json_object_get(a, "mime_type"))) ||
                attachment_file(h, a, path, sizeof path) || stat(path, &sb) ||
                (size_t)sb.st_size > budget)
                continue;
            budget -= (size_t)sb.st_size;
            json_object_set_new(h->images, json_string_value(json_object_get(a, "id")), json_true());
        }
    }
}

static char *join_text(json_t *content, const char *key)
{
    buf b = BUF_INIT(0);
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        const char *t = json_string_value(json_object_get(part, key));
        if (!t)
            continue;
        if (b.len)
            buf_putc(&b, '\n');
        buf_puts(&b, t);
    }
    return buf_steal(&b, NULL);
}

static void append_msg(json_t *msgs, const char *role, const char *content)
{
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", role, "content", content));
}

static void history_append(hist *h, json_t *it)
{
    json_t *msgs = h->msgs;
    const char *type = json_string_value(json_object_get(it, "type")) ?: "";
    buf b = BUF_INIT(0);
    if (!strcmp(type, "user_message")) {
        const char *q = json_string_value(json_object_get(it, "quoted_text"));
        if (q && *q) {
            buf_puts(&b, "> ");
            buf_puts(&b, q);
            buf_puts(&b, "\n\n");
        }
        char *t = join_text(json_object_get(it, "content"), "text");
        buf_puts(&b, t);
        free(t);
        json_t *images = NULL;
        size_t i;
        json_t *a;
        json_array_foreach(json_object_get(it, "attachments"), i, a)
            attachment_input(h, a, &b, &images);
        if (!images) {
            append_msg(h->msgs, "user", b.data ? b.data : "");
        } else {
            json_array_insert_new(images, 0,
                                  json_pack("{s:s,s:s}", "type", "text", "text", b.data ? b.data : ""));
            json_array_append_new(h->msgs, json_pack("{s:s,s:o}", "role", "user", "content", images));
        }
    } else if (!strcmp(type, "assistant_message")) {
        char *t = join_text(json_object_get(it, "content"), "text");
        append_msg(msgs, "assistant", t);
        free(t);
    } else if (!strcmp(type, "widget")) {
        const char *copy = json_string_value(json_object_get(it, "copy_text"));
        append_msg(msgs, "assistant", copy ? copy : "[a widget was shown]");
    } else if (!strcmp(type, "client_tool_call")) {
        const char *call_id = json_string_value(json_object_get(it, "call_id")) ?: "call";
        const char *name = json_string_value(json_object_get(it, "name")) ?: "";
        char *args = json_dumps(json_object_get(it, "arguments"), JSON_COMPACT | JSON_ENCODE_ANY);
        json_array_append_new(msgs, json_pack("{s:s,s:[{s:s,s:s,s:s}]}", "role", "assistant",
                                              "tool_calls", "id", call_id, "name", name,
                                              "arguments", args ? args : "{}"));
        free(args);
        json_t *out = json_object_get(it, "output");
        const char *status = json_string_value(json_object_get(it, "status")) ?: "";
        char *o = out ? json_dumps(out, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        /* every call needs its result for the providers: a pending one says so */
        json_array_append_new(msgs, json_pack("{s:s,s:s,s:s}", "role", "tool", "tool_call_id",
                                              call_id, "content",
                                              !strcmp(status, "completed") && o
                                                  ? o
                                                  : "(no output: the client did not answer)"));
        free(o);
    } else if (!strcmp(type, "structured_input")) {
        const char *status = json_string_value(json_object_get(it, "status")) ?: "pending";
        int pending = !strcmp(status, "pending");
        buf_puts(&b, pending ? "[questions asked, not answered yet]" : "Answers to the questions:");
        size_t i, k;
        json_t *q, *v;
        json_array_foreach(json_object_get(it, "inputs"), i, q)
        {
            buf_puts(&b, "\n- ");
            buf_puts(&b, json_string_value(json_object_get(q, "question")) ?: "?");
            json_t *ans = json_object_get(q, "answer");
            if (json_is_true(json_object_get(ans, "skipped")))
                buf_puts(&b, ": (skipped)");
            json_array_foreach(json_object_get(ans, "values"), k, v)
            {
                buf_puts(&b, k ? ", " : ": ");
                buf_puts(&b, json_string_value(v) ?: "");
            }
        }
        append_msg(msgs, pending ? "assistant" : "user", b.data);
    } else if (CK_HIDDEN_TYPE(type) &&
               json_is_object(json_object_get(json_object_get(it, "content"), "tool_call"))) {
        /* a tool the run executed: the call and its result, as the providers expect them;
         * calls of one answer (call_index > 0) join the assistant message of the first */
        json_t *content = json_object_get(it, "content");
        json_t *call = json_object_get(content, "tool_call");
        const char *id = json_string_value(json_object_get(call, "id")) ?: "call";
        json_t *tc = json_pack("{s:s,s:s,s:s}", "id", id, "name",
                               json_string_value(json_object_get(call, "name")) ?: "", "arguments",
                               json_string_value(json_object_get(call, "arguments")) ?: "{}");
        json_t *asked = json_integer_value(json_object_get(content, "call_index")) > 0 &&
                                h->last_calls
                            ? json_object_get(json_array_get(msgs, h->last_calls - 1), "tool_calls")
                            : NULL;
        if (asked) {
            json_array_append_new(asked, tc);
        } else {
            json_array_append_new(msgs, json_pack("{s:s,s:[o]}", "role", "assistant", "tool_calls", tc));
            h->last_calls = json_array_size(msgs);
        }
        json_array_append_new(
            msgs, json_pack("{s:s,s:s,s:s}", "role", "tool", "tool_call_id", id, "content",
                            json_string_value(json_object_get(content, "tool_result")) ?: ""));
        buf_free(&b);
        return;
    } else if (CK_HIDDEN_TYPE(type) &&
               json_object_get(json_object_get(it, "content"), "human_interaction")) {
        /* the record of a form (issue 5): the server's, not the model's */
    } else if (CK_HIDDEN_TYPE(type)) {
        json_t *content = json_object_get(it, "content");
        char *t = json_is_string(content) ? NULL
                                          : json_dumps(content, JSON_COMPACT | JSON_ENCODE_ANY);
        append_msg(msgs, "user", t ? t : json_string_value(content) ?: "");
        free(t);
    }
    h->last_calls = 0;
    buf_free(&b);
}


int history_load(store_conn *db, const store_scope *sc, const char *thread_id, const config *cfg,
                 json_t **msgs, json_t **options)
{
    store_item_page p = {0};
    store_page_req pr = {HISTORY_ITEMS, 1, NULL};
    int rc = store_items_list(db, sc, thread_id, &pr, &p);
    if (rc)
        return rc;
    hist h = {cfg, json_array(), json_object(), 0};
    json_t **items = xcalloc(p.n ? p.n : 1, sizeof *items); /* newest first */
    *options = NULL;
    for (size_t i = 0; i < p.n; i++) {
        items[i] = ck_item_parse(&p.items[i]);
        if (!*options && items[i] &&
            !strcmp(json_string_value(json_object_get(items[i], "type")) ?: "", "user_message"))
            *options = json_incref(json_object_get(items[i], "inference_options"));
    }
    choose_images(&h, items, p.n);
    for (size_t i = p.n; i-- > 0;) {
        if (items[i])
            history_append(&h, items[i]);
        json_decref(items[i]);
    }
    free(items);
    store_item_page_clear(&p);
    json_decref(h.images);
    *msgs = h.msgs;
    return 0;
}
