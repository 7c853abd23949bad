#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chatkit/chatkit.h"
#include "util/log.h"
#include "util/timeutil.h"

int ck_thread_json(buf *b, const store_thread *t, const store_item_page *items)
{
    char ts[TS_MAX];
    ts_format(t->created_us, ts);
    int rc = buf_putc(b, '{');
    if (t->title) {
        rc |= buf_puts(b, "\"title\":");
        rc |= buf_json_str(b, t->title, strlen(t->title));
        rc |= buf_putc(b, ',');
    }
    rc |= buf_puts(b, "\"id\":");
    rc |= buf_json_str(b, t->id, strlen(t->id));
    /* plain appends: printf's %s copies byte by byte, and these can be long */
    rc |= buf_puts(b, ",\"created_at\":\"");
    rc |= buf_puts(b, ts);
    rc |= buf_puts(b, "\",\"status\":");
    rc |= buf_puts(b, t->status_json && *t->status_json ? t->status_json : "{\"type\":\"active\"}");
    if (t->allowed_image_domains && *t->allowed_image_domains) {
        rc |= buf_puts(b, ",\"allowed_image_domains\":");
        rc |= buf_puts(b, t->allowed_image_domains);
    }
    /* thread metadata is server-private: always sent as {} (reference §6) */
    rc |= buf_puts(b, ",\"metadata\":{},\"items\":");
    if (items)
        rc |= ck_items_page_json(b, items);
    else
        rc |= buf_puts(b, "{\"data\":[],\"has_more\":false}");
    rc |= buf_putc(b, '}');
    return rc ? -ENOBUFS : 0;
}

int ck_items_page_json(buf *b, const store_item_page *p)
{
    int rc = buf_puts(b, "{\"data\":[");
    int first = 1;
    for (size_t i = 0; i < p->n; i++) {
        if (p->items[i].hidden)
            continue;
        if (!first)
            rc |= buf_putc(b, ',');
        first = 0;
        rc |= buf_puts(b, p->items[i].json);
    }
    rc |= buf_printf(b, "],\"has_more\":%s", p->has_more ? "true" : "false");
    if (p->has_more && p->after[0]) {
        rc |= buf_puts(b, ",\"after\":");
        rc |= buf_json_str(b, p->after, strlen(p->after));
    }
    rc |= buf_putc(b, '}');
    return rc ? -ENOBUFS : 0;
}

int ck_dump(buf *b, const json_t *v)
{
    char scratch[4096];
    size_t n = json_dumpb(v, scratch, sizeof scratch, JSON_COMPACT | JSON_ENCODE_ANY);
    if (n == 0)
        return -EINVAL;
    if (n <= sizeof scratch)
        return buf_append(b, scratch, n);
    int rc = buf_reserve(b, n);
    if (rc)
        return rc;
    json_dumpb(v, b->data + b->len, n, JSON_COMPACT | JSON_ENCODE_ANY);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

json_t *ck_item_parse(const store_item *it)
{
    json_error_t e;
    json_t *v = json_loads(it->json, 0, &e);
    if (!v || !json_is_object(v)) {
        char q[200];
        LOGE(NULL, "corrupt item in store", "item=%s err=\"%s\"", it->id,
             log_quote(v ? "not an object" : e.text, q, sizeof q));
        json_decref(v);
        return NULL;
    }
    return v;
}

int ck_lax_int(const json_t *v, long long *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != (double)(long long)d)
            return -1;
        *out = (long long)d;
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        while (isspace((unsigned char)*s))
            s++;
        long long n = strtoll(s, &end, 10);
        while (isspace((unsigned char)*end))
            end++;
        if (errno || end == s || *end)
            return -1;
        *out = n;
        return 0;
    }
    return -1;
}
