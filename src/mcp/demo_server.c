#include "mcp/demo_server.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/base64.h"
#include "util/log.h"

#define MAX_LINE     (1u << 20) /* longest request line accepted, without the newline */
#define MAX_CITY     100        /* bytes of a city name, after trimming */
#define MAX_DAYS     7
#define DEFAULT_DAYS 5
#define WIDGET_MIME  "application/vnd.ui.widget+json"
#define LATEST_PROTO "2025-11-25"

/* JSON-RPC error codes */
#define E_PARSE       -32700
#define E_INVALID_REQ -32600
#define E_NO_METHOD   -32601
#define E_PARAMS      -32602
#define E_INTERNAL    -32603

static const char *const protocol_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26"};

static const char instructions[] =
    "Demo tools bundled with chatkitd. get_weather and get_forecast return invented, "
    "deterministic weather for any city (no network) together with a ChatKit widget; echo "
    "repeats a message; get_time gives the current UTC time.";

typedef struct demo {
    FILE *out;
    json_t *tools; /* the tools/list array, built once */
    int initialized;
    int failed; /* writing out failed: stop */
} demo;

/* Small allocations abort on out-of-memory (design.md §9); json_pack only fails that way or on
 * a bad format string, which the tests would catch. */
static json_t *must(json_t *v)
{
    if (!v)
        log_oom();
    return v;
}

/* ------------------------------------------------------------------------------------------ */
/* output */

static int write_line(demo *d, const char *s)
{
    size_t n = strlen(s);
    if (fwrite(s, 1, n, d->out) != n || putc('\n', d->out) == EOF || fflush(d->out)) {
        LOGE(NULL, "mcp-demo: cannot write to stdout", "%s", "");
        d->failed = 1;
        return -1;
    }
    return 0;
}

/* Sends msg (stolen) as one compact line; non-ASCII stays raw UTF-8, so no escaped newline
 * can appear outside a string. */
static int send_msg(demo *d, json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!s)
        return -1;
    int rc = write_line(d, s);
    free(s);
    return rc;
}

static int send_error(demo *d, json_t *id, int code, const char *message)
{
    return send_msg(
        d, must(json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                          "error", "code", code, "message", message)));
}

/* result is stolen. A result too large to serialise (out of memory) is answered -32603. */
static int send_result(demo *d, json_t *id, json_t *result)
{
    json_t *msg = must(json_pack("{s:s,s:O,s:o}", "jsonrpc", "2.0", "id", id, "result", result));
    char *s = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!s) {
        LOGE(NULL, "mcp-demo: cannot serialise a result", "%s", "");
        return send_error(d, id, E_INTERNAL, "Internal error: result too large");
    }
    int rc = write_line(d, s);
    free(s);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* deterministic weather */

typedef struct cond {
    const char *text; /* lower case: "partly cloudy" */
    const char *icon; /* §14: built-in names or lucide: */
} cond;

static const cond conds[] = {
    {"sunny", "lucide:sun"},       {"partly cloudy", "lucide:cloud-sun"},
    {"cloudy", "lucide:cloud"},    {"light rain", "lucide:cloud-drizzle"},
    {"rain", "lucide:cloud-rain"}, {"thunderstorms", "lucide:cloud-lightning"},
    {"fog", "lucide:cloud-fog"},
};
static const cond snow = {"snow", "lucide:cloud-snow"};

typedef struct wx {
    int high, low; /* °C; the current temperature is day 0's high */
    int humidity;  /* % */
    int wind;      /* km/h */
    const cond *c;
} wx;

/* FNV-1a over the lower-cased name: "paris" and "Paris" get the same weather. */
static uint32_t city_hash(const char *city)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)city; *p; p++) {
        unsigned c = *p;
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        h = (h ^ c) * 16777619u;
    }
    return h;
}

static uint32_t mix(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    return h;
}

static void weather_for(uint32_t h, int day, wx *w)
{
    int base = (int)(mix(h) % 36) - 4; /* -4 .. 31 °C */
    uint32_t r = mix(h ^ (0x9e3779b9u * (uint32_t)(day + 1)));
    w->high = day ? base + (int)(r % 9) - 4 : base;
    w->low = w->high - 4 - (int)((r >> 8) % 6);
    w->c = &conds[(r >> 12) % (sizeof conds / sizeof conds[0])];
    if (w->high <= 1 && (w->c->text[0] == 'l' || w->c->text[0] == 'r'))
        w->c = &snow; /* rain below freezing */
    w->humidity = 35 + (int)((r >> 18) % 56);
    w->wind = 3 + (int)((r >> 24) % 30);
}

/* "partly cloudy" → "Partly cloudy" */
static void capitalised(const char *s, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", s);
    if (out[0] >= 'a' && out[0] <= 'z')
        out[0] = (char)(out[0] - 'a' + 'A');
}

/* The uri tail: lower-case ASCII letters and digits, '-' between words, other bytes
 * percent-encoded (so "Zürich" → "z%C3%BCrich"). out needs 3 * MAX_CITY + 1 bytes. */
static void city_slug(const char *city, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)city; *p; p++) {
        unsigned c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
            out[o++] = (char)c;
        else if (c >= 'A' && c <= 'Z')
            out[o++] = (char)(c - 'A' + 'a');
        else if (c >= 0x80) {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else if (o && out[o - 1] != '-')
            out[o++] = '-';
    }
    while (o && out[o - 1] == '-')
        o--;
    if (!o)
        o = (size_t)sprintf(out, "city");
    out[o] = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* arguments */

/* city: a string, trimmed, 1..MAX_CITY bytes, no control characters; the first ASCII letter
 * of each word is capitalised ("new york" → "New York"). out needs MAX_CITY + 1 bytes. */
static int arg_city(const json_t *args, char *out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(args, "city");
    if (!v || json_is_null(v)) {
        snprintf(err, errlen, "city is required (a string such as \"Paris\")");
        return -1;
    }
    if (!json_is_string(v)) {
        snprintf(err, errlen, "city must be a string");
        return -1;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (!n) {
        snprintf(err, errlen, "city must not be empty");
        return -1;
    }
    if (n > MAX_CITY) {
        snprintf(err, errlen, "city must be at most %d bytes long", MAX_CITY);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            snprintf(err, errlen, "city must not contain control characters");
            return -1;
        }
        char prev = i ? s[i - 1] : ' ';
        out[i] = (prev == ' ' && c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : (char)c;
    }
    out[n] = 0;
    return 0;
}

/* days: absent or null → DEFAULT_DAYS; else an integer (5.0 counts) in 1..MAX_DAYS. */
static int arg_days(const json_t *args, int *days, char *err, size_t errlen)
{
    const json_t *v = json_object_get(args, "days");
    *days = DEFAULT_DAYS;
    if (!v || json_is_null(v))
        return 0;
    double d;
    if (json_is_integer(v))
        d = (double)json_integer_value(v);
    else if (json_is_real(v))
        d = json_real_value(v);
    else
        d = -1;
    if (d < 1 || d > MAX_DAYS || d != (double)(int)d) {
        snprintf(err, errlen, "days must be an integer from 1 to %d", MAX_DAYS);
        return -1;
    }
    *days = (int)d;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* content blocks */

static json_t *text_block(const char *text)
{
    return must(json_pack("{s:s,s:s}", "type", "text", "text", text));
}

/* An embedded widget resource (§2.3); widget is stolen. blob: the JSON base64-encoded in
 * `blob` rather than in `text`, as servers may do; clients must accept both. */
static json_t *widget_block(const char *uri, json_t *widget, const char *copy_text, int blob)
{
    json_t *payload = must(json_pack("{s:o,s:s}", "widget", widget, "copy_text", copy_text));
    char *s = json_dumps(payload, JSON_COMPACT);
    json_decref(payload);
    if (!s)
        log_oom();
    json_t *res;
    if (blob) {
        size_t n = strlen(s);
        char *b = xmalloc(base64_len(n, 0) + 1);
        base64_encode(s, n, b, 0);
        res = must(json_pack("{s:s,s:s,s:s}", "uri", uri, "mimeType", WIDGET_MIME, "blob", b));
        free(b);
    } else {
        res = must(json_pack("{s:s,s:s,s:s}", "uri", uri, "mimeType", WIDGET_MIME, "text", s));
    }
    free(s);
    return must(json_pack("{s:s,s:o}", "type", "resource", "resource", res));
}

/* ActionConfig (chatkit-protocol §13.3) with the defaults the SDK always writes. */
static json_t *action(const char *type, json_t *payload)
{
    return must(json_pack("{s:s,s:o,s:s,s:s,s:b}", "type", type, "payload", payload, "handler",
                          "server", "loadingBehavior", "auto", "streaming", 1));
}

/* ------------------------------------------------------------------------------------------ */
/* tools */

typedef int (*tool_fn)(const json_t *args, json_t *content, char *err, size_t errlen);

static int tool_get_weather(const json_t *args, json_t *content, char *err, size_t errlen)
{
    char city[MAX_CITY + 1], slug[3 * MAX_CITY + 1], uri[3 * MAX_CITY + 64];
    if (arg_city(args, city, err, errlen))
        return -1;
    wx w;
    weather_for(city_hash(city), 0, &w);
    char temp[16], condition[32], humidity[32], wind[32];
    snprintf(temp, sizeof temp, "%d°C", w.high);
    capitalised(w.c->text, condition, sizeof condition);
    snprintf(humidity, sizeof humidity, "Humidity %d%%", w.humidity);
    snprintf(wind, sizeof wind, "Wind %d km/h", w.wind);

    size_t tlen = strlen(city) + 64;
    char *text = xmalloc(tlen), *copy = xmalloc(tlen);
    snprintf(text, tlen, "%s: %s, %s", city, temp, w.c->text);
    snprintf(copy, tlen, "Weather in %s: %s, %s", city, temp, w.c->text);

    json_t *widget = must(json_pack(
        "{s:s,s:s,s:[{s:s,s:s,s:s},{s:s,s:s,s:i,s:[{s:s,s:s,s:s},{s:s,s:s,s:s,s:s}]},"
        "{s:s,s:s,s:s},{s:s,s:i,s:[{s:s,s:s,s:s,s:s},{s:s,s:s,s:s,s:s}]},{s:s},"
        "{s:s,s:s,s:s,s:s,s:b,s:o}]}",
        "type", "Card", "size", "sm", "children",
        /* Title */
        "type", "Title", "value", city, "size", "md",
        /* Row: condition icon + temperature */
        "type", "Row", "align", "center", "gap", 2, "children", "type", "Icon", "name", w.c->icon,
        "size", "2xl", "type", "Text", "value", temp, "size", "xl", "weight", "semibold",
        /* Caption */
        "type", "Caption", "value", condition, "size", "md",
        /* Row: humidity, wind */
        "type", "Row", "gap", 3, "children", "type", "Text", "value", humidity, "size", "sm",
        "color", "secondary", "type", "Text", "value", wind, "size", "sm", "color", "secondary",
        /* Divider */
        "type", "Divider",
        /* Button */
        "type", "Button", "label", "5-day forecast", "iconStart", "calendar", "style", "secondary",
        "block", 1, "onClickAction",
        action("tool:get_forecast", must(json_pack("{s:s}", "city", city)))));

    city_slug(city, slug);
    snprintf(uri, sizeof uri, "ui://widgets/weather/%s", slug);
    json_array_append_new(content, text_block(text));
    json_array_append_new(content, widget_block(uri, widget, copy, 0));
    free(text);
    free(copy);
    return 0;
}

static int tool_get_forecast(const json_t *args, json_t *content, char *err, size_t errlen)
{
    char city[MAX_CITY + 1], slug[3 * MAX_CITY + 1], uri[3 * MAX_CITY + 64];
    int days;
    if (arg_city(args, city, err, errlen) || arg_days(args, &days, err, errlen))
        return -1;
    static const char *const names[MAX_DAYS] = {"Today", "Tomorrow", "Day 3", "Day 4",
                                                "Day 5", "Day 6",    "Day 7"};
    uint32_t h = city_hash(city);
    char head[MAX_CITY + 64], line[128];
    snprintf(head, sizeof head, "%d-day forecast for %s", days, city);
    /* "<head>:\nToday: 19°C / 12°C, sunny\n…" for the model; "; " between days for copying */
    size_t cap = sizeof head + (size_t)MAX_DAYS * sizeof line;
    char *text = xmalloc(cap), *copy = xmalloc(cap);
    size_t tn = (size_t)snprintf(text, cap, "%s:", head);
    size_t cn = (size_t)snprintf(copy, cap, "%s: ", head);
    json_t *items = must(json_array());
    for (int i = 0; i < days; i++) {
        wx w;
        weather_for(h, i, &w);
        char temps[96];
        snprintf(temps, sizeof temps, "%d°C / %d°C, %s", w.high, w.low, w.c->text);
        snprintf(line, sizeof line, "%s: %s", names[i], temps);
        tn += (size_t)snprintf(text + tn, cap - tn, "\n%s", line);
        cn += (size_t)snprintf(copy + cn, cap - cn, "%s%s", i ? "; " : "", line);
        json_array_append_new(
            items, must(json_pack("{s:s,s:i,s:s,s:[{s:s,s:s,s:s},{s:s,s:s,s:s,s:s},"
                                  "{s:s,s:s,s:s}]}",
                                  "type", "ListViewItem", "gap", 3, "align", "center", "children",
                                  "type", "Icon", "name", w.c->icon, "size", "lg", "type", "Text",
                                  "value", names[i], "weight", "semibold", "width", "88px", "type",
                                  "Text", "value", temps, "color", "secondary")));
    }
    json_t *widget = must(json_pack("{s:s,s:{s:s,s:s},s:o}", "type", "ListView", "status", "text",
                                    head, "icon", "calendar", "children", items));
    city_slug(city, slug);
    snprintf(uri, sizeof uri, "ui://widgets/forecast/%s", slug);
    json_array_append_new(content, text_block(text));
    json_array_append_new(content, widget_block(uri, widget, copy, 1));
    free(text);
    free(copy);
    return 0;
}

static int tool_echo(const json_t *args, json_t *content, char *err, size_t errlen)
{
    const json_t *v = json_object_get(args, "message");
    if (!json_is_string(v)) {
        snprintf(err, errlen,
                 v && !json_is_null(v) ? "message must be a string"
                                       : "message is required (a string)");
        return -1;
    }
    size_t n = json_string_length(v);
    char *text = xmalloc(n + 7);
    memcpy(text, "Echo: ", 6);
    memcpy(text + 6, json_string_value(v), n + 1);
    json_array_append_new(content, text_block(text));
    free(text);
    return 0;
}

static int tool_get_time(const json_t *args, json_t *content, char *err, size_t errlen)
{
    struct timespec ts;
    struct tm tm;
    char text[64];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(text + n, sizeof text - n, ".%03ldZ", ts.tv_nsec / 1000000);
    json_array_append_new(content, text_block(text));
    return 0;
}

#define CITY_SCHEMA                                                                                \
    "\"city\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":100,"                             \
    "\"description\":\"City name, e.g. Paris\"}"

static const struct tool {
    const char *name, *title, *description;
    const char *schema; /* inputSchema, JSON */
    int idempotent;
    tool_fn fn;
} tools[] = {
    {"get_weather", "Current weather",
     "Current weather for a city (demo data, deterministic per city). Returns a short text and "
     "a weather card widget.",
     "{\"type\":\"object\",\"properties\":{" CITY_SCHEMA "},\"required\":[\"city\"]}", 1,
     tool_get_weather},
    {"get_forecast", "Weather forecast",
     "Daily forecast for a city, 1 to 7 days (demo data, deterministic per city). Returns a "
     "text summary and a list widget.",
     "{\"type\":\"object\",\"properties\":{" CITY_SCHEMA ",\"days\":{\"type\":\"integer\","
     "\"minimum\":1,\"maximum\":7,\"default\":5,\"description\":\"Number of days, 1 to 7\"}},"
     "\"required\":[\"city\"]}",
     1, tool_get_forecast},
    {"echo", "Echo", "Echoes the message back as \"Echo: <message>\".",
     "{\"type\":\"object\",\"properties\":{\"message\":{\"type\":\"string\","
     "\"description\":\"Text to echo back\"}},\"required\":[\"message\"]}",
     1, tool_echo},
    {"get_time", "Current time", "The current UTC time in ISO 8601 format.",
     "{\"type\":\"object\",\"properties\":{}}", 0, tool_get_time},
};

static json_t *tool_list(void)
{
    json_t *list = must(json_array());
    for (size_t i = 0; i < sizeof tools / sizeof tools[0]; i++) {
        const struct tool *t = &tools[i];
        json_t *schema = must(json_loads(t->schema, 0, NULL));
        json_array_append_new(
            list, must(json_pack("{s:s,s:s,s:s,s:o,s:{s:b,s:b,s:b,s:b}}", "name", t->name, "title",
                                 t->title, "description", t->description, "inputSchema", schema,
                                 "annotations", "readOnlyHint", 1, "destructiveHint", 0,
                                 "idempotentHint", t->idempotent, "openWorldHint", 0)));
    }
    return list;
}

/* A tool's own failures are results with isError (what the SDK does, §2.3), so that the model
 * sees them; only a call without a tool name is a protocol error. */
static int handle_call(demo *d, json_t *id, const json_t *params)
{
    const json_t *jname = json_object_get(params, "name");
    if (!json_is_string(jname))
        return send_error(d, id, E_PARAMS, "Invalid params: name must be a string");
    const char *name = json_string_value(jname);
    const json_t *args = json_object_get(params, "arguments");
    char err[256];
    const struct tool *t = NULL;
    for (size_t i = 0; i < sizeof tools / sizeof tools[0]; i++)
        if (!strcmp(tools[i].name, name))
            t = &tools[i];
    json_t *content = must(json_array());
    int failed = 1;
    if (!t) {
        size_t n = strlen(name) + 16;
        char *msg = xmalloc(n);
        snprintf(msg, n, "Unknown tool: %s", name);
        json_array_append_new(content, text_block(msg));
        free(msg);
    } else if (args && !json_is_null(args) && !json_is_object(args)) {
        snprintf(err, sizeof err, "Invalid arguments for tool %s: arguments must be an object",
                 name);
        json_array_append_new(content, text_block(err));
    } else {
        json_t *empty = must(json_object());
        char why[160];
        if (t->fn(json_is_object(args) ? args : empty, content, why, sizeof why)) {
            snprintf(err, sizeof err, "Invalid arguments for tool %s: %s", name, why);
            json_array_clear(content);
            json_array_append_new(content, text_block(err));
        } else {
            failed = 0;
        }
        json_decref(empty);
    }
    char q[160];
    LOGI(NULL, "mcp-demo tool call", "tool=\"%s\" is_error=%d", log_quote(name, q, sizeof q),
         failed);
    json_t *result = must(json_pack("{s:o}", "content", content));
    if (failed)
        json_object_set_new(result, "isError", json_true());
    return send_result(d, id, result);
}

static int handle_initialize(demo *d, json_t *id, const json_t *params)
{
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    const char *version = LATEST_PROTO;
    for (size_t i = 0; asked && i < sizeof protocol_versions / sizeof protocol_versions[0]; i++)
        if (!strcmp(asked, protocol_versions[i]))
            version = protocol_versions[i];
    const char *client =
        json_string_value(json_object_get(json_object_get(params, "clientInfo"), "name"));
    char q1[64], q2[128];
    LOGI(NULL, "mcp-demo initialize", "asked=\"%s\" version=%s client=\"%s\"",
         log_quote(asked ? asked : "", q1, sizeof q1), version,
         log_quote(client ? client : "", q2, sizeof q2));
    return send_result(
        d, id,
        must(json_pack("{s:s,s:{s:{s:b}},s:{s:s,s:s,s:s},s:s}", "protocolVersion", version,
                       "capabilities", "tools", "listChanged", 0, "serverInfo", "name",
                       "chatkitd-demo", "title", "chatkitd demo tools", "version", "0.1.0",
                       "instructions", instructions)));
}

/* ------------------------------------------------------------------------------------------ */
/* dispatch */

static void handle_notification(demo *d, const char *method)
{
    if (!strcmp(method, "notifications/initialized"))
        d->initialized = 1;
    /* notifications/cancelled: every call is answered before the next line is read, so there is
     * never anything left to cancel; other notifications need nothing either */
    LOGD(NULL, "mcp-demo notification", "method=\"%s\"", LOGQ(method));
}

static void handle_line(demo *d, const char *line, size_t len)
{
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
        i++;
    if (i == len)
        return; /* blank line: nothing to answer */
    json_error_t jerr;
    json_t *msg = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
    if (!msg) {
        char q[256];
        LOGW(NULL, "mcp-demo: unparsable line", "error=\"%s\" position=%d",
             log_quote(jerr.text, q, sizeof q), jerr.position);
        send_error(d, NULL, E_PARSE, "Parse error");
        return;
    }
    json_t *id = json_object_get(msg, "id");
    const json_t *method = json_object_get(msg, "method");
    const json_t *version = json_object_get(msg, "jsonrpc");
    const json_t *params = json_object_get(msg, "params");
    int bad_version =
        version && (!json_is_string(version) || strcmp(json_string_value(version), "2.0") != 0);
    if (!json_is_object(msg)) {
        send_error(d, NULL, E_INVALID_REQ, "Invalid Request: expected a JSON object");
    } else if (id && !json_is_string(id) && !json_is_integer(id)) {
        send_error(d, NULL, E_INVALID_REQ, "Invalid Request: id must be a string or an integer");
    } else if (!method && (json_object_get(msg, "result") || json_object_get(msg, "error"))) {
        /* a response: this server never sends requests */
        LOGD(NULL, "mcp-demo: ignoring a response", "%s", "");
    } else if (!json_is_string(method) || bad_version) {
        if (id)
            send_error(d, id, E_INVALID_REQ, "Invalid Request: needs jsonrpc \"2.0\" and a method");
        else
            send_error(d, NULL, E_INVALID_REQ, "Invalid Request");
    } else if (!id) {
        handle_notification(d, json_string_value(method));
    } else if (params && !json_is_object(params)) {
        send_error(d, id, E_PARAMS, "Invalid params: params must be an object");
    } else {
        const char *m = json_string_value(method);
        LOGD(NULL, "mcp-demo request", "method=\"%s\" initialized=%d", LOGQ(m), d->initialized);
        /* lenient: requests before initialize are answered too */
        if (!strcmp(m, "initialize"))
            handle_initialize(d, id, params);
        else if (!strcmp(m, "ping"))
            send_result(d, id, must(json_object()));
        else if (!strcmp(m, "tools/list")) /* one page: any cursor is ignored */
            send_result(d, id, must(json_pack("{s:O}", "tools", d->tools)));
        else if (!strcmp(m, "tools/call"))
            handle_call(d, id, params);
        else
            send_error(d, id, E_NO_METHOD, "Method not found");
    }
    json_decref(msg);
}

/* Reads one line (without its newline) into *line. Returns 1 for a line, 2 for a line longer
 * than MAX_LINE (consumed and dropped), 0 at EOF, -1 on a read error. */
static int read_line(FILE *in, char **line, size_t *cap, size_t *len)
{
    size_t n = 0;
    int c, over = 0, any = 0;
    while ((c = getc_unlocked(in)) != EOF) {
        any = 1;
        if (c == '\n')
            break;
        if (over)
            continue;
        if (n == MAX_LINE) {
            over = 1;
            continue;
        }
        if (n + 1 >= *cap) {
            size_t ncap = *cap ? *cap * 2 : 4096;
            if (ncap > MAX_LINE + 1)
                ncap = MAX_LINE + 1;
            char *p = realloc(*line, ncap);
            if (!p)
                log_oom();
            *line = p;
            *cap = ncap;
        }
        (*line)[n++] = (char)c;
    }
    if (c == EOF && ferror(in))
        return -1;
    if (!any)
        return 0;
    *len = n;
    return over ? 2 : 1;
}

int mcp_demo_main(FILE *in, FILE *out)
{
    demo d = {.out = out, .tools = tool_list()};
    char *line = NULL;
    size_t cap = 0, len = 0;
    int rc, status = 0;
    LOGI(NULL, "mcp-demo started", "transport=stdio tools=%zu", json_array_size(d.tools));
    while (!d.failed && (rc = read_line(in, &line, &cap, &len)) > 0) {
        if (rc == 2) {
            LOGW(NULL, "mcp-demo: line too long, dropped", "max=%u", MAX_LINE);
            send_error(&d, NULL, E_INVALID_REQ, "Invalid Request: message longer than 1 MiB");
            continue;
        }
        handle_line(&d, line, len);
    }
    if (d.failed) {
        status = 1;
    } else if (rc < 0) {
        LOGE(NULL, "mcp-demo: cannot read stdin", "%s", "");
        status = 1;
    }
    LOGI(NULL, "mcp-demo stopped", "status=%d", status);
    free(line);
    json_decref(d.tools);
    return status;
}
