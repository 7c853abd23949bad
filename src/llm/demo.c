/* The offline demo model: deterministic, no network. It answers the last message with a
 * short text streamed in ~20 deltas, and reacts to a few words so every protocol path can be
 * shown without a real model:
 *   "slow"        deltas are spaced delay_ms apart (cancellation tests, idle streams)
 *   "widget"      calls the demo widget tool before answering
 *   "client tool" calls the client tool get_selection (the turn ends waiting for its output)
 *   "choose"      calls the structured-input tool (the turn ends waiting for answers)
 *   "fail"        fails before the first delta (a retryable upstream error)
 *   "what time"   calls get_current_time when the agent has it; answers with its result
 *   "weather"     calls get_weather {"city": the word after "in", else Paris} when the agent
 *                 has it (the bundled MCP server's weather widget)
 *   "book", "reserve"  asks for the booking's details with request_human_input when the agent
 *                 has it (a form; the run waits for the user's answers) */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "llm/provider.h"
#include "util/buf.h"
#include "util/id.h"
#include "util/log.h"

#define DEMO_CHUNKS 20

struct llm_call {
    uv_timer_t timer;
    llm_callbacks cb;
    void *ud;
    char *text;        /* the whole reply */
    size_t pos, len, chunk;
    unsigned delay_ms;
    int tool;          /* 0 none, else index into demo_tools of a call still to make */
    char *args;        /* its arguments (NULL: {}) */
    int fail;
    int closing;
};

static const char *const demo_tools[] = {NULL, "demo_widget", "get_selection", "demo_choose",
                                         "get_current_time", "get_weather", "request_human_input"};

static const char demo_form[] =
    "{\"title\":\"Book a table\",\"description\":\"A few details for your booking.\","
    "\"fields\":[{\"name\":\"name\",\"label\":\"Your name\",\"type\":\"text\","
    "\"required\":true},{\"name\":\"date\",\"label\":\"Date\",\"type\":\"date\","
    "\"required\":true},{\"name\":\"guests\",\"label\":\"Guests\",\"type\":\"number\","
    "\"default\":2},{\"name\":\"seating\",\"label\":\"Seating\",\"type\":\"select\","
    "\"options\":[\"Inside\",\"Terrace\"]}]}";

/* {"city": "<the word after " in ">"} (letters only, capitalised), Paris when there is none. */
static char *weather_args(const char *in)
{
    char city[48] = "Paris";
    for (const char *p = in; *p; p++) {
        if (strncasecmp(p, " in ", 4))
            continue;
        size_t n = 0;
        for (const char *q = p + 4; isalpha((unsigned char)*q) && n < sizeof city - 1; q++, n++)
            city[n] = (char)(n ? tolower((unsigned char)*q) : toupper((unsigned char)*q));
        if (n) {
            city[n] = 0;
            break;
        }
    }
    json_t *a = json_pack("{s:s}", "city", city);
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

static int has_word(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (strncasecmp(p, needle, n) == 0)
            return 1;
    return 0;
}

static int offers(json_t *tools, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        const char *n = json_string_value(json_object_get(t, "name"));
        if (n && !strcmp(n, name))
            return 1;
    }
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    llm_call *c = h->data;
    free(c->text);
    free(c->args);
    free(c);
}

static void finish(llm_call *c)
{
    c->closing = 1;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_closed);
}

static void tick(uv_timer_t *t)
{
    llm_call *c = t->data;
    if (c->fail) {
        llm_callbacks cb = c->cb;
        void *ud = c->ud;
        finish(c);
        cb.on_error(ud, "The demo model failed as asked (the message contained \"fail\").", 1, 0);
        return;
    }
    if (c->tool) {
        char id[ID_MAX];
        id_new("call", id);
        const char *name = demo_tools[c->tool];
        c->tool = 0;
        c->cb.on_tool_call(c->ud, id, name, c->args ? c->args : "{}");
        if (strcmp(name, "demo_widget")) {
            /* these end the turn: the model waits for the client */
            llm_usage u = {8, 4};
            llm_callbacks cb = c->cb;
            void *ud = c->ud;
            finish(c);
            cb.on_done(ud, &u);
            return;
        }
    }
    /* normal turns emit every delta in this one loop turn; slow turns one per tick */
    do {
        /* cut after a space so deltas are whole words (never inside a UTF-8 sequence) */
        size_t end = c->pos + c->chunk;
        if (end >= c->len) {
            end = c->len;
        } else {
            while (end < c->len && c->text[end] != ' ')
                end++;
            if (end < c->len)
                end++;
        }
        c->cb.on_text(c->ud, c->text + c->pos, end - c->pos);
        c->pos = end;
        if (c->closing)
            return; /* cancelled from inside the callback */
    } while (!c->delay_ms && c->pos < c->len);
    if (c->pos >= c->len) {
        llm_usage u = {(int64_t)c->len / 4 + 8, (int64_t)c->len / 4 + 1};
        llm_callbacks cb = c->cb;
        void *ud = c->ud;
        finish(c);
        cb.on_done(ud, &u);
    }
}

static const char *last_text(json_t *messages, const char **role)
{
    size_t n = json_array_size(messages);
    *role = "user";
    for (size_t i = n; i-- > 0;) {
        json_t *m = json_array_get(messages, i);
        const char *r = json_string_value(json_object_get(m, "role"));
        const char *t = json_string_value(json_object_get(m, "content"));
        if (r && t && strcmp(r, "system")) {
            *role = r;
            return t;
        }
    }
    return "";
}

static llm_call *demo_start(uv_loop_t *loop, const llm_request *req, const llm_callbacks *cb,
                            void *ud)
{
    llm_call *c = xcalloc(1, sizeof *c);
    c->cb = *cb;
    c->ud = ud;
    const char *role;
    const char *in = last_text(req->messages, &role);
    int is_user = !strcmp(role, "user");
    int tool_result = !strcmp(role, "tool");
    int slow = has_word(in, "slow");
    c->delay_ms = slow ? (req->delay_ms ? req->delay_ms : 1) : 0;
    if (is_user && has_word(in, "fail"))
        c->fail = 1;
    else if (is_user && has_word(in, "client tool"))
        c->tool = 2;
    else if (is_user && has_word(in, "choose"))
        c->tool = 3;
    else if (is_user && has_word(in, "weather") && offers(req->tools, "get_weather")) {
        c->tool = 5;
        c->args = weather_args(in);
    } else if (is_user && (has_word(in, "book") || has_word(in, "reserve")) &&
               offers(req->tools, "request_human_input")) {
        c->tool = 6;
        c->args = xstrdup(demo_form);
    } else if (is_user && has_word(in, "widget"))
        c->tool = 1;
    else if (is_user && has_word(in, "what time") && offers(req->tools, "get_current_time"))
        c->tool = 4;

    buf b = BUF_INIT(0);
    size_t inlen = strlen(in);
    if (inlen > 200)
        inlen = 200;
    while (inlen > 0 && ((unsigned char)in[inlen] & 0xC0) == 0x80)
        inlen--; /* do not split a UTF-8 sequence */
    if (tool_result)
        buf_printf(&b, "Thanks, I received: %.*s. ", (int)inlen, in);
    else if (c->tool == 1)
        buf_puts(&b, "Here is a demo widget with a button you can click. ");
    else
        buf_printf(&b, "You said: \"%.*s\". ", (int)inlen, in);
    buf_puts(&b, "This answer comes from chatkitd's offline demo model, which streams a short "
                 "reply so that you can see every part of the protocol working end to end.");
    c->text = buf_steal(&b, &c->len);
    c->chunk = c->len / DEMO_CHUNKS + 1;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, tick, 0, c->delay_ms ? c->delay_ms : 0);
    if (!c->delay_ms)
        uv_timer_set_repeat(&c->timer, 1);
    return c;
}

static void demo_cancel(llm_call *c)
{
    if (c && !c->closing)
        finish(c);
}

const llm_provider llm_demo_provider = {"demo", demo_start, demo_cancel, NULL};
