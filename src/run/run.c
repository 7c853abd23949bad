#include "run/run.h"

#include <stdlib.h>
#include <string.h>

#include "llm/provider.h"
#include "util/buf.h"
#include "util/id.h"
#include "util/log.h"
#include "util/timeutil.h"

struct run {
    ck_stream *st;
    const llm_provider *prov;
    llm_call *call;
    json_t *item; /* the assistant message being streamed: {id, thread_id, created_at, type};
                   * its text lives in `text` */
    buf text;     /* its text so far */
    char *title_text;
    int in_cb; /* inside a provider callback: defer the free */
    int dead;  /* cancelled or finished */
    /* what a retry sends again */
    const char *model;  /* inside the stream's agent */
    json_t *messages;
    unsigned attempt;   /* retries made so far */
    int output;         /* this attempt produced text or items: a failure is not retried */
    uv_timer_t *retry;  /* the backoff wait, while one runs */
    json_t *tools;      /* the tool definitions offered to the model (NULL: none) */
    json_t *calls;      /* tool calls of the current answer, run when it is done */
    unsigned rounds;    /* model calls answered with tool calls so far */
};

#define MAX_TOOL_ROUNDS 8 /* a model that keeps calling tools is stopped here */

/* ---- built-in tools ---- */

static char *tool_current_time(json_t *args)
{
    (void)args;
    char ts[TS_MAX];
    ts_format(ts_now_us(), ts);
    return xstrdup(ts);
}

static const struct builtin {
    const char *name;
    const char *description;
    char *(*exec)(json_t *args);
} builtins[] = {
    {"get_current_time", "Returns the current date and time (UTC, ISO 8601).", tool_current_time},
};

static const struct builtin *builtin_find(const char *name)
{
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        if (!strcmp(builtins[i].name, name))
            return &builtins[i];
    return NULL;
}

/* Definitions of the agent's built-in tools that this build has, or NULL. */
static json_t *tool_defs(const json_t *names)
{
    json_t *defs = NULL;
    size_t i;
    json_t *n;
    json_array_foreach(names, i, n)
    {
        const struct builtin *b = json_is_string(n) ? builtin_find(json_string_value(n)) : NULL;
        if (!b)
            continue;
        if (!defs)
            defs = json_array();
        json_array_append_new(defs, json_pack("{s:s,s:s,s:{s:s,s:{}}}", "name", b->name,
                                              "description", b->description, "parameters",
                                              "type", "object", "properties"));
    }
    return defs;
}

/* "get_current_time" -> "Executing Get current time..." (the seed's progress text) */
static void progress_for_call(run *r, const char *name)
{
    char text[160];
    size_t n = (size_t)snprintf(text, sizeof text, "Executing %.100s", name);
    for (size_t i = 10; i < n; i++)
        if (text[i] == '_')
            text[i] = ' ';
    if (text[10] >= 'a' && text[10] <= 'z')
        text[10] = (char)(text[10] - 'a' + 'A');
    snprintf(text + n, sizeof text - n, "...");
    stream_progress(r->st, "bolt", text);
}

#define RETRY_MAX_MS 30000 /* a longer Retry-After is not waited for: the user decides */

#define TITLE_MAX 60

static void on_retry_closed(uv_handle_t *h) { free(h); }

static void stop_retry(run *r)
{
    if (r->retry) {
        uv_timer_stop(r->retry);
        uv_close((uv_handle_t *)r->retry, on_retry_closed);
        r->retry = NULL;
    }
}

static void run_free(run *r)
{
    stop_retry(r);
    json_decref(r->tools);
    json_decref(r->calls);
    json_decref(r->messages);
    json_decref(r->item);
    buf_free(&r->text);
    free(r->title_text);
    free(r);
}

/* Leaves a callback; frees the run if it was cancelled meanwhile. Returns 1 if it did. */
static int leave(run *r)
{
    if (--r->in_cb == 0 && r->dead) {
        run_free(r);
        return 1;
    }
    return 0;
}

static json_t *output_part(const char *text, size_t len)
{
    return json_pack("{s:[],s:s%,s:s}", "annotations", "text", text ? text : "", len, "type",
                     "output_text");
}

static void open_message(run *r)
{
    r->item = stream_new_item(r->st, "msg", "assistant_message");
    /* the event gets its own copy: the event may still queue while the run goes on */
    json_t *added = json_copy(r->item);
    json_object_set_new(added, "content", json_array());
    stream_emit(r->st, json_pack("{s:s,s:o}", "type", "thread.item.added", "item", added));
    stream_emit(r->st, json_pack("{s:s,s:s,s:{s:s,s:i,s:o}}", "type", "thread.item.updated",
                                 "item_id", json_string_value(json_object_get(r->item, "id")),
                                 "update", "type", "assistant_message.content_part.added",
                                 "content_index", 0, "content", output_part("", 0)));
}

static void close_message(run *r)
{
    if (!r->item)
        return;
    const char *id = json_string_value(json_object_get(r->item, "id"));
    stream_emit(r->st,
                json_pack("{s:s,s:s,s:{s:s,s:i,s:o}}", "type", "thread.item.updated", "item_id", id,
                          "update", "type", "assistant_message.content_part.done", "content_index",
                          0, "content", output_part(r->text.data, r->text.len)));
    json_object_set_new(r->item, "content",
                        json_pack("[o]", output_part(r->text.data, r->text.len)));
    stream_emit(r->st, json_pack("{s:s,s:o}", "type", "thread.item.done", "item", r->item));
    r->item = NULL;
    buf_free(&r->text);
}

/* First user message, at most TITLE_MAX characters, cut at a word boundary when it is
 * longer. */
static void set_title(run *r)
{
    const store_thread *t = stream_thread(r->st);
    if (t->title || !r->title_text || !stream_app(r->st)->cfg->title_enabled)
        return;
    const char *s = r->title_text;
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
        s++;
    size_t chars = 0, i = 0, last_space = 0, last_space_chars = 0;
    while (s[i] && chars < TITLE_MAX) {
        if (s[i] == ' ' || s[i] == '\n') {
            last_space = i;
            last_space_chars = chars;
        }
        i++;
        while (((unsigned char)s[i] & 0xC0) == 0x80)
            i++; /* continuation bytes of the same character */
        chars++;
    }
    size_t n = i;
    if (s[i] && last_space > 0 && last_space_chars > TITLE_MAX / 2)
        n = last_space; /* longer than the limit: end at the last word boundary */
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n'))
        n--;
    if (!n)
        return;
    char *title = xstrndup(s, n);
    for (char *p = title; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    stream_set_title(r->st, title);
    free(title);
}

static void end_run(run *r)
{
    r->dead = 1;
    stream_finish(r->st);
}

static void on_text(void *ud, const char *delta, size_t len)
{
    run *r = ud;
    r->in_cb++;
    r->output = 1;
    if (!r->item)
        open_message(r);
    buf_append(&r->text, delta, len);
    stream_text_delta(r->st, json_string_value(json_object_get(r->item, "id")), 0, delta, len);
    leave(r);
}

json_t *run_demo_widget(long long n)
{
    char label[64];
    snprintf(label, sizeof label, "Clicked %lld time%s", n, n == 1 ? "" : "s");
    return json_pack(
        "{s:s,s:[{s:s,s:s,s:s},{s:s,s:s,s:s},{s:s,s:[{s:s,s:s,s:{s:s,s:{s:I},s:s,s:s,s:b}},"
        "{s:s,s:s,s:s,s:{s:s,s:{s:I},s:s,s:s,s:b}}]}]}",
        "type", "Card", "children", "type", "Title", "id", "title", "value", "Demo widget", "type",
        "Text", "id", "count", "value", label, "type", "Row", "children", "type", "Button", "label",
        "Click me", "onClickAction", "type", "demo.click", "payload", "n", (json_int_t)n, "handler",
        "server", "loadingBehavior", "auto", "streaming", 1, "type", "Button", "label",
        "Click (sync)", "style", "secondary", "onClickAction", "type", "demo.sync", "payload", "n",
        (json_int_t)n, "handler", "server", "loadingBehavior", "auto", "streaming", 0);
}

int run_demo_apply_action(json_t *widget_item, const json_t *action)
{
    const char *type = json_string_value(json_object_get(action, "type"));
    json_t *w = json_object_get(widget_item, "widget");
    if (!type || (strcmp(type, "demo.click") && strcmp(type, "demo.sync")) || !w)
        return 0;
    /* the count lives in the widget (not the untrusted payload) */
    json_t *count = json_object_get(json_array_get(json_object_get(w, "children"), 1), "value");
    long long n = 0;
    const char *v = json_string_value(count);
    if (!v || sscanf(v, "Clicked %lld", &n) != 1)
        return 0;
    char copy[64];
    snprintf(copy, sizeof copy, "Demo widget: clicked %lld time%s", n + 1, n + 1 == 1 ? "" : "s");
    json_object_set_new(widget_item, "widget", run_demo_widget(n + 1));
    json_object_set_new(widget_item, "copy_text", json_string(copy));
    return 1;
}

static void on_tool_call(void *ud, const char *call_id, const char *name, const char *arguments)
{
    run *r = ud;
    r->in_cb++;
    r->output = 1;
    close_message(r);
    json_t *item = NULL;
    if (!strcmp(name, "demo_widget")) {
        item = stream_new_item(r->st, "msg", "widget");
        json_object_set_new(item, "widget", run_demo_widget(0));
        json_object_set_new(item, "copy_text", json_string("Demo widget: clicked 0 times"));
    } else if (!strcmp(name, "get_selection")) {
        item = stream_new_item(r->st, "tc", "client_tool_call");
        json_t *args = json_loads(arguments ? arguments : "{}", 0, NULL);
        if (!json_is_object(args)) {
            json_decref(args);
            args = json_object();
        }
        json_object_set_new(item, "status", json_string("pending"));
        json_object_set_new(item, "call_id", json_string(call_id));
        json_object_set_new(item, "name", json_string(name));
        json_object_set_new(item, "arguments", args);
    } else if (!strcmp(name, "demo_choose")) {
        item = stream_new_item(r->st, "msg", "structured_input");
        json_object_set_new(item, "status", json_string("pending"));
        json_object_set_new(item, "inputs",
                            json_pack("[{s:s,s:s,s:s,s:[{s:s},{s:s},{s:s}],s:b},{s:s,s:s,s:s,s:s}]",
                                      "type", "multiple_choice", "id", "color", "question",
                                      "Which color do you like?", "options", "value", "red",
                                      "value", "green", "value", "blue", "multiple", 0, "type",
                                      "freeform", "id", "note", "question", "Anything else?",
                                      "description", "Optional"));
    } else {
        /* run when the answer is done; every call gets a result, even an unknown tool */
        if (!r->calls)
            r->calls = json_array();
        json_array_append_new(r->calls, json_pack("{s:s,s:s,s:s}", "id", call_id, "name", name,
                                                  "arguments", arguments ? arguments : "{}"));
    }
    if (item)
        stream_emit(r->st, json_pack("{s:s,s:o}", "type", "thread.item.done", "item", item));
    leave(r);
}

static void start_call(run *r);

/* The answer asked for tools: run them, store each call and result as a hidden item (the
 * model's, never the client's), and ask the model again with the results. */
static void run_tools(run *r)
{
    json_t *calls = r->calls;
    r->calls = NULL;
    json_t *asked = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c)
        json_array_append_new(asked, json_pack("{s:O,s:O,s:O}", "id", json_object_get(c, "id"),
                                               "name", json_object_get(c, "name"), "arguments",
                                               json_object_get(c, "arguments")));
    json_array_append_new(r->messages, json_pack("{s:s,s:o}", "role", "assistant", "tool_calls",
                                                 asked));
    json_array_foreach(calls, i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *args = json_string_value(json_object_get(c, "arguments"));
        const struct builtin *b = builtin_find(name);
        const json_t *allowed = stream_agent(r->st)->tools;
        int offered = 0;
        size_t k;
        json_t *n;
        json_array_foreach(allowed, k, n) offered |= json_is_string(n) && !strcmp(json_string_value(n), name);
        progress_for_call(r, name);
        char *result;
        json_t *jargs = json_loads(args ? args : "{}", 0, NULL);
        if (!b || !offered) {
            result = xstrdup("Error: there is no such tool.");
        } else if (!json_is_object(jargs)) {
            result = xstrdup("Error: the arguments are not a JSON object.");
        } else {
            result = b->exec(jargs);
        }
        json_decref(jargs);
        json_t *note = stream_new_item(r->st, "msg", "hidden_context_item");
        json_object_set_new(note, "content",
                            json_pack("{s:O,s:s}", "tool_call", c, "tool_result", result));
        stream_emit(r->st, json_pack("{s:s,s:o}", "type", "thread.item.done", "item", note));
        json_array_append_new(r->messages,
                              json_pack("{s:s,s:O,s:s}", "role", "tool", "tool_call_id",
                                        json_object_get(c, "id"), "content", result));
        free(result);
    }
    json_decref(calls);
    r->attempt = 0;
    start_call(r);
}

static void on_done(void *ud, const llm_usage *u)
{
    run *r = ud;
    r->in_cb++;
    close_message(r);
    r->call = NULL;
    if (r->calls) {
        if (++r->rounds < MAX_TOOL_ROUNDS) {
            run_tools(r);
            leave(r);
            return;
        }
        json_decref(r->calls);
        r->calls = NULL;
        stream_error(r->st, "custom", "The model kept calling tools without answering.", 1);
    }
    set_title(r);
    LOGD(stream_rid(r->st), "turn done", "in_tokens=%lld out_tokens=%lld",
         (long long)u->input_tokens, (long long)u->output_tokens);
    r->call = NULL;
    end_run(r);
    leave(r);
}

static void on_retry(uv_timer_t *t)
{
    run *r = t->data;
    stop_retry(r);
    start_call(r);
}

static void on_error(void *ud, const char *message, int retryable, unsigned retry_after_ms)
{
    run *r = ud;
    r->in_cb++;
    r->call = NULL;
    const config *cfg = stream_app(r->st)->cfg;
    /* a transient failure before anything was streamed: wait and ask again */
    unsigned delay = cfg->llm_retry_base_ms << (r->attempt < 16 ? r->attempt : 16);
    if (retry_after_ms > delay)
        delay = retry_after_ms;
    if (retryable && !r->output && r->attempt < cfg->llm_retries && delay <= RETRY_MAX_MS) {
        char q[256], text[96];
        r->attempt++;
        LOGI(stream_rid(r->st), "model call failed; retrying", "attempt=%u delay_ms=%u err=\"%s\"",
             r->attempt, delay, log_quote(message, q, sizeof q));
        snprintf(text, sizeof text, "The model is busy, trying again (%u of %u)...", r->attempt,
                 cfg->llm_retries);
        stream_progress(r->st, "reload", text);
        r->retry = xmalloc(sizeof *r->retry);
        uv_timer_init(stream_app(r->st)->loop, r->retry);
        r->retry->data = r;
        uv_timer_start(r->retry, on_retry, delay, 0);
        leave(r);
        return;
    }
    close_message(r); /* text received so far is kept */
    set_title(r);     /* the title comes from the user's message, which is stored */
    char q[256];
    LOGW(stream_rid(r->st), "model failed", "err=\"%s\"", log_quote(message, q, sizeof q));
    stream_error(r->st, "custom", message, retryable);
    end_run(r);
    leave(r);
}

static const llm_callbacks callbacks = {on_text, on_tool_call, on_done, on_error};

void run_start(ck_stream *st, json_t *messages, const char *title_text)
{
    if (stream_cancelled(st)) {
        /* the client left before the stream began: what it sent is stored, the model is not
         * asked (a real provider would spend tokens on an answer nobody reads) */
        json_decref(messages);
        stream_finish(st);
        return;
    }
    const ck_agent *agent = stream_agent(st);
    run *r = xcalloc(1, sizeof *r);
    r->st = st;
    r->text = (buf)BUF_INIT(0);
    r->title_text = title_text ? xstrdup(title_text) : NULL;
    stream_progress(st, "sparkle", "Analyzing your request...");
    const char *model = NULL;
    r->prov = llm_provider_find(agent->model, &model);
    if (!r->prov) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "The model \"%.80s\" of this agent is not available in this "
                 "build.",
                 agent->model);
        stream_error(st, "custom", msg, 0);
        json_decref(messages);
        stream_finish(st);
        run_free(r);
        return;
    }
    if (agent->instructions && *agent->instructions)
        json_array_insert_new(
            messages, 0, json_pack("{s:s,s:s}", "role", "system", "content", agent->instructions));
    r->model = model;
    r->messages = messages; /* kept: a retry sends it again */
    r->tools = tool_defs(agent->tools);
    stream_set_run(st, r);
    start_call(r);
}

static void start_call(run *r)
{
    const config *cfg = stream_app(r->st)->cfg;
    llm_request req = {r->model,
                       r->messages,
                       r->tools,
                       cfg->demo_delay_ms,
                       cfg->openai_base_url,
                       cfg->openai_api_key,
                       cfg->llm_connect_timeout_ms,
                       cfg->llm_first_byte_timeout_ms,
                       cfg->llm_idle_timeout_ms};
    r->output = 0;
    r->call = r->prov->start(stream_app(r->st)->loop, &req, &callbacks, r);
}

void run_action(ck_stream *st, json_t *action, json_t *widget_item, json_t *history)
{
    if (widget_item) {
        json_t *copy = json_deep_copy(widget_item);
        if (run_demo_apply_action(copy, action))
            stream_emit(st, json_pack("{s:s,s:O,s:{s:s,s:O}}", "type", "thread.item.updated",
                                      "item_id", json_object_get(copy, "id"), "update", "type",
                                      "widget.root.updated", "widget",
                                      json_object_get(copy, "widget")));
        json_decref(copy);
    }
    char *payload = json_dumps(json_object_get(action, "payload"), JSON_COMPACT | JSON_ENCODE_ANY);
    char text[512];
    snprintf(text, sizeof text, "[The user took the action \"%.64s\" with payload %.300s]",
             json_string_value(json_object_get(action, "type")), payload ? payload : "null");
    free(payload);
    json_array_append_new(history, json_pack("{s:s,s:s}", "role", "user", "content", text));
    run_start(st, history, NULL);
}

void run_cancel(run *r)
{
    if (r->dead)
        return;
    r->dead = 1;
    stop_retry(r);
    if (r->call)
        r->prov->cancel(r->call);
    r->call = NULL;
    if (!r->in_cb)
        run_free(r);
}
