#include "run/run.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "llm/provider.h"
#include "mcp/pool.h"
#include "mcp/result.h"
#include "run/human.h"
#include "util/buf.h"
#include "util/id.h"
#include "util/log.h"
#include "util/timeutil.h"

struct run {
    ck_stream *st;
    const llm_provider *prov;
    llm_call *call;
    char spec[160];     /* "provider:model" this run uses (after defaults and the client's pick) */
    char *base_url;     /* the provider's base URL (the agent's, else the environment's) */
    const char *api_key; /* config or environment string; never copied, logged or shown */
    char *tool_choice;  /* an offered tool the client asked the model to call, or NULL */
    json_t *item; /* the assistant message being streamed: {id, thread_id, created_at, type};
                   * its text lives in `text` */
    buf text;     /* its text so far */
    char *title_text;
    int in_cb; /* inside a provider callback: defer the free */
    int dead;  /* cancelled or finished */
    /* what a retry sends again */
    const char *model;  /* inside spec */
    json_t *messages;
    unsigned attempt;   /* retries made so far */
    int output;         /* this attempt produced text or items: a failure is not retried */
    uv_timer_t *retry;  /* the backoff wait, while one runs */
    json_t *tools;      /* the tool definitions offered to the model (NULL: none) */
    json_t *calls;      /* tool calls of the current answer, run when it is done */
    unsigned rounds;    /* model calls answered with tool calls so far */
    /* the tool calls of one answer, run together */
    json_t *round;      /* the calls being executed */
    json_t *results;    /* their results (strings; null while running) */
    size_t running;     /* calls not finished yet */
    int starting;       /* inside tools_start: completions only count */
    char *direct;        /* a widget's "tool:NAME" action: call NAME, no model (its arguments in
                          * direct_args) */
    json_t *direct_args;
    /* MCP: the agent's servers, held while the run runs */
    mcp_agent_servers *mcp;
    size_t mcp_waiting;  /* servers not ready yet; the model is asked once all answered */
    json_t *tool_map;    /* offered name -> {"s": server index, "n": the server's name} */
    struct tool_ctx **calls_out; /* one per call of the round while it runs (MCP calls) */
    json_t *extras;      /* per call of the round: null, or {"mcp_content", "widgets"} */
    ck_app *app;
    /* an MCP elicitation (issue 5): while the user is asked, the run is parked (no stream)
     * under the interaction id in app->parked, its tool call still open */
    mcp_elicit *elicit;
    char parked[ID_MAX];
    uv_timer_t *deadline;
    int judgement;       /* the user left the elicitation to the model's judgement */
    json_t *human_form;  /* a request_human_input call of the round: its form; the run then
                          * waits for the user instead of asking the model again */
    size_t human_index;  /* that call's index in the round */
    /* accounting (store_run) */
    llm_usage usage;
    unsigned model_calls, tool_calls;
    int64_t started_us;
    /* the title request, running beside the turn */
    llm_call *title_call;
    buf title;          /* its text so far */
    int title_done;     /* the model's title was set (no fallback needed) */
    int answered;       /* the turn is over; the run ends once the title call is too */
    const char *end_status; /* what the turn ended as */
};

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
        if (!b && json_is_string(n) && !strcmp(json_string_value(n), HUMAN_TOOL)) {
            if (!defs)
                defs = json_array();
            json_array_append_new(defs, human_tool_def());
            continue;
        }
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

/* Up to max characters of s (UTF-8), with "..." when cut (Rails' truncate). */
static void put_truncated(buf *b, const char *s, size_t max)
{
    size_t i = 0, chars = 0, cut = 0;
    while (s[i]) {
        if (chars == max - 3)
            cut = i;
        i++;
        while (((unsigned char)s[i] & 0xC0) == 0x80)
            i++;
        if (++chars > max) {
            buf_append(b, s, cut);
            buf_puts(b, "...");
            return;
        }
    }
    buf_puts(b, s);
}

/* The seed's progress text and icon for a tool call (streaming.md, tool_progress_text). */
static void progress_for_call(run *r, const char *name, const char *arguments)
{
    json_t *args = json_loads(arguments ? arguments : "{}", 0, NULL);
    const char *query = json_string_value(json_object_get(args, "query"));
    const char *icon = "bolt";
    buf b = BUF_INIT(0);
    if (query && !*query)
        query = NULL;
    if (strstr(name, "search") || !strcmp(name, "find_quotes")) {
        int search = strstr(name, "search") != NULL;
        icon = "search";
        if (query) {
            buf_puts(&b, search ? "Searching for \"" : "Finding quotes for \"");
            put_truncated(&b, query, 50);
            buf_puts(&b, "\"...");
        } else {
            buf_puts(&b, search ? "Searching knowledge base..." : "Finding relevant quotes...");
        }
    } else if (!strcmp(name, "remember") || !strcmp(name, "recall")) {
        icon = "book-open";
        buf_puts(&b, name[2] == 'm' ? "Saving to memory..." : "Recalling from memory...");
    } else {
        /* "get_current_time" -> "Executing Get current time..." (Rails' humanize) */
        buf_puts(&b, "Executing ");
        size_t at = b.len;
        put_truncated(&b, name, 60);
        for (size_t i = at; i < b.len; i++) {
            char ch = b.data[i];
            if (ch == '_' || ch == '-')
                b.data[i] = ' ';
            else if (ch >= 'A' && ch <= 'Z' && i > at)
                b.data[i] = (char)(ch - 'A' + 'a');
        }
        if (b.data[at] >= 'a' && b.data[at] <= 'z')
            b.data[at] = (char)(b.data[at] - 'a' + 'A');
        buf_puts(&b, "...");
    }
    stream_progress(r->st, icon, b.data);
    buf_free(&b);
    json_decref(args);
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

static void unpark(run *r);

static void run_free(run *r)
{
    stop_retry(r);
    unpark(r);
    free(r->base_url);
    free(r->tool_choice);
    free(r->direct);
    json_decref(r->direct_args);
    buf_free(&r->title);
    json_decref(r->round);
    json_decref(r->results);
    json_decref(r->extras);
    json_decref(r->human_form);
    json_decref(r->tool_map);
    free(r->calls_out);
    mcp_pool_release(r->mcp);
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

/* A title from s: the first line, at most TITLE_MAX characters, cut at a word boundary when
 * longer, without surrounding quotes or a final period. NULL when nothing is left. */
static char *title_from(const char *s)
{
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r' || *s == '"' || *s == '\'' ||
           *s == '#' || *s == '*')
        s++;
    size_t chars = 0, i = 0, last_space = 0, last_space_chars = 0;
    while (s[i] && s[i] != '\n' && chars < TITLE_MAX) {
        if (s[i] == ' ') {
            last_space = i;
            last_space_chars = chars;
        }
        i++;
        while (((unsigned char)s[i] & 0xC0) == 0x80)
            i++; /* continuation bytes of the same character */
        chars++;
    }
    size_t n = i;
    if (s[i] && s[i] != '\n' && last_space > 0 && last_space_chars > TITLE_MAX / 2)
        n = last_space; /* longer than the limit: end at the last word boundary */
    while (n > 0 && strchr(" \r\t\"'.*", s[n - 1]))
        n--;
    if (!n)
        return NULL;
    char *title = xstrndup(s, n);
    for (char *p = title; *p; p++)
        if (*p == '\r' || *p == '\t')
            *p = ' ';
    return title;
}

static void set_title(run *r, const char *text)
{
    char *t = text ? title_from(text) : NULL;
    if (t) {
        stream_set_title(r->st, t);
        r->title_done = 1;
    }
    free(t);
}

/* The run is over: the title from the user's text unless the model gave one, the run's
 * accounting stored, the stream finished. */
static void finish_run(run *r)
{
    stop_retry(r);
    if (!r->title_done && r->title_text && !stream_thread(r->st)->title &&
        stream_app(r->st)->cfg->title_enabled)
        set_title(r, r->title_text);
    store_run rec;
    memset(&rec, 0, sizeof rec);
    snprintf(rec.thread_id, sizeof rec.thread_id, "%s", stream_thread(r->st)->id);
    snprintf(rec.agent_id, sizeof rec.agent_id, "%s", stream_agent(r->st)->id);
    snprintf(rec.model, sizeof rec.model, "%.127s", r->spec);
    snprintf(rec.status, sizeof rec.status, "%s", r->end_status ? r->end_status : "cancelled");
    rec.input_tokens = r->usage.input_tokens;
    rec.output_tokens = r->usage.output_tokens;
    rec.model_calls = r->model_calls;
    rec.tool_calls = r->tool_calls;
    rec.started_us = r->started_us;
    rec.ended_us = ts_now_us();
    stream_record_run(r->st, &rec);
    LOGD(stream_rid(r->st), "run done", "status=%s in_tokens=%lld out_tokens=%lld calls=%u",
         rec.status, (long long)rec.input_tokens, (long long)rec.output_tokens, rec.model_calls);
    r->dead = 1;
    stream_finish(r->st);
}

#define TITLE_WAIT_MS 3000 /* how long a finished turn waits for its title */

static void on_title_wait(uv_timer_t *t)
{
    run *r = t->data;
    r->in_cb++;
    stop_retry(r);
    if (r->title_call) {
        r->prov->cancel(r->title_call);
        r->title_call = NULL;
    }
    finish_run(r);
    leave(r);
}

/* The turn is over (status "completed" or "failed"); the run ends now, or once the title
 * request running beside it is done (TITLE_WAIT_MS at most). */
static void end_run(run *r, const char *status)
{
    r->answered = 1;
    r->end_status = status;
    if (!r->title_call) {
        finish_run(r);
        return;
    }
    r->retry = xmalloc(sizeof *r->retry);
    uv_timer_init(stream_app(r->st)->loop, r->retry);
    r->retry->data = r;
    uv_timer_start(r->retry, on_title_wait, TITLE_WAIT_MS, 0);
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
static void tools_finish(run *r);
static void tools_start(run *r);
static void on_text(void *ud, const char *delta, size_t len);
static void start_title(run *r);
static const char *ask_human(run *r, json_t *form, json_t *call, json_t *extra);

/* Call i of the round has its result (malloc'd text, taken). */
static void tool_result(run *r, size_t i, char *result)
{
    json_array_set_new(r->results, i, result ? json_string(result) : json_null());
    free(result);
    if (--r->running == 0 && !r->starting)
        tools_finish(r);
}

/* One MCP call of a round in flight. */
typedef struct tool_ctx {
    run *r;
    size_t i;
    mcp_call *call;
    char *label; /* for progress texts */
} tool_ctx;

#define TOOL_TEXT_MAX (256u * 1024)        /* what the model gets from one tool result */
#define TOOL_IMAGES_MAX (4u * 1024 * 1024) /* base64 image bytes shown to it from one result */

static void mcp_progress(void *ud, double progress, double total, const char *message)
{
    tool_ctx *t = ud;
    char text[300];
    if (!t->r->st)
        return; /* parked: nobody is listening */
    if (message && *message)
        snprintf(text, sizeof text, "%.250s", message);
    else if (total > 0)
        snprintf(text, sizeof text, "%.200s (%.0f%%)", t->label,
                 progress / total * 100 > 100 ? 100 : progress / total * 100);
    else
        snprintf(text, sizeof text, "%.200s (%.0f)", t->label, progress);
    stream_progress(t->r->st, "bolt", text);
}

static void mcp_done(void *ud, const json_t *result, const char *err)
{
    tool_ctx *t = ud;
    run *r = t->r;
    r->calls_out[t->i] = NULL;
    char *text;
    if (!result) {
        size_t n = strlen(err) + 8;
        text = xmalloc(n);
        snprintf(text, n, "Error: %s", err);
    } else {
        text = mcp_result_text(result, TOOL_TEXT_MAX, stream_rid(r->st));
        json_t *content = json_object_get(result, "content");
        json_array_set_new(r->extras, t->i,
                           json_pack("{s:O,s:o,s:o,s:b}", "mcp_content",
                                     content ? content : json_array(), "widgets",
                                     mcp_result_widgets(result, stream_rid(r->st)), "images",
                                     mcp_result_images(result, TOOL_IMAGES_MAX), "is_error",
                                     json_is_true(json_object_get(result, "isError"))));
    }
    free(t->label);
    size_t i = t->i;
    free(t);
    r->in_cb++;
    tool_result(r, i, text);
    leave(r);
}

static void on_park_deadline(uv_timer_t *t);

/* An MCP server asks the user for input during a call: the form goes out like
 * request_human_input's, and the run is parked (its stream ends, the call stays open) until
 * the user answers (run_resume_elicitation) or CHATKIT_MCP_ELICIT_TIMEOUT_MS passes. */
static void mcp_elicit_cb(void *ud, mcp_elicit *e, const char *message, const json_t *schema)
{
    tool_ctx *t = ud;
    run *r = t->r;
    char err[300];
    json_t *form = r->elicit || !r->st ? NULL : human_form_from_schema(message, schema, err,
                                                                        sizeof err);
    if (!form) {
        char q[256];
        LOGI(r->st ? stream_rid(r->st) : NULL, "elicitation declined",
             "why=\"%s\"", log_quote(r->elicit || !r->st ? "one question at a time" : err, q,
                                       sizeof q));
        mcp_elicit_respond(e, "decline", NULL);
        return;
    }
    json_t *extra = json_pack("{s:b,s:O}", "elicitation", 1, "schema", schema);
    const char *iid = ask_human(r, form, json_array_get(r->round, t->i), extra);
    json_decref(extra);
    json_decref(form);
    r->elicit = e;
    snprintf(r->parked, sizeof r->parked, "%s", iid);
    map_put(&r->app->parked, r->parked, r);
    r->deadline = xmalloc(sizeof *r->deadline);
    uv_timer_init(r->app->loop, r->deadline);
    r->deadline->data = r;
    uv_timer_start(r->deadline, on_park_deadline, r->app->cfg->mcp_elicit_timeout_ms, 0);
    if (r->title_call) { /* the stream ends now: the title from the user's words */
        r->prov->cancel(r->title_call);
        r->title_call = NULL;
    }
    if (!r->title_done && r->title_text && !stream_thread(r->st)->title &&
        r->app->cfg->title_enabled)
        set_title(r, r->title_text);
    r->title_done = 1;
    ck_stream *st = r->st;
    r->st = NULL;
    stream_finish(st);
}

static void on_deadline_closed(uv_handle_t *h) { free(h); }

static void unpark(run *r)
{
    if (r->parked[0] && map_get(&r->app->parked, r->parked) == r)
        map_del(&r->app->parked, r->parked);
    r->parked[0] = 0;
    if (r->deadline) {
        uv_timer_stop(r->deadline);
        uv_close((uv_handle_t *)r->deadline, on_deadline_closed);
        r->deadline = NULL;
    }
}

/* A parked run that will not be resumed (deadline, shutdown): the server is told "cancel",
 * the calls still open are cancelled, and the run goes (the user's later answer finds it
 * expired). */
static void drop_parked(run *r)
{
    unpark(r);
    if (r->elicit)
        mcp_elicit_respond(r->elicit, "cancel", NULL);
    r->elicit = NULL;
    for (size_t i = 0; r->calls_out && i < json_array_size(r->round); i++)
        if (r->calls_out[i]) {
            mcp_call_cancel(r->calls_out[i]->call);
            free(r->calls_out[i]->label);
            free(r->calls_out[i]);
            r->calls_out[i] = NULL;
        }
    r->dead = 1;
    if (!r->in_cb)
        run_free(r);
}

static void on_park_deadline(uv_timer_t *t)
{
    run *r = t->data;
    LOGI(NULL, "elicitation expired", "interaction=%s", r->parked);
    drop_parked(r);
}

int run_resume_elicitation(ck_app *app, ck_stream *st, const char *iid, const char *action,
                           const json_t *content)
{
    run *r = map_get(&app->parked, iid);
    if (!r)
        return -1;
    unpark(r);
    r->st = st;
    stream_set_run(st, r);
    r->judgement = !strcmp(action, "decline");
    mcp_elicit_respond(r->elicit, action, content);
    r->elicit = NULL;
    return 0;
}

void run_drop_parked(ck_app *app)
{
    for (size_t i = 0; i < app->parked.cap; i++)
        if (map_live(&app->parked, i))
            drop_parked(app->parked.slots[i].val);
    map_free(&app->parked);
}

static const mcp_call_cb mcp_cbs = {mcp_progress, mcp_done, mcp_elicit_cb};

/* Runs one call: an MCP tool, a built-in the agent offers, else an error result for the
 * model. */
static void tool_exec(run *r, size_t i, json_t *c)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    const char *args = json_string_value(json_object_get(c, "arguments"));
    json_t *jargs = json_loads(args ? args : "{}", 0, NULL);
    json_t *mt = json_object_get(r->tool_map, name);
    if (mt && json_is_object(jargs)) {
        tool_ctx *t = xcalloc(1, sizeof *t);
        t->r = r;
        t->i = i;
        buf lb = BUF_INIT(0);
        buf_puts(&lb, "Executing ");
        buf_puts(&lb, name);
        t->label = buf_steal(&lb, NULL);
        r->calls_out[i] = t;
        mcp_server *s = mcp_agent_server(r->mcp, (size_t)json_integer_value(json_object_get(mt, "s")));
        t->call = mcp_call_tool(s, json_string_value(json_object_get(mt, "n")), jargs, &mcp_cbs, t);
        json_decref(jargs);
        return;
    }
    const struct builtin *b = builtin_find(name);
    int offered = 0;
    size_t k;
    json_t *n;
    json_array_foreach(json_object_get(stream_agent(r->st)->config, "tools"), k, n)
        offered |= json_is_string(n) && !strcmp(json_string_value(n), name);
    if (offered && !mt && !strcmp(name, HUMAN_TOOL)) {
        /* a form for the user: the run waits for it (tools_finish) */
        char err[300] = "the arguments are not a JSON object";
        json_t *form = json_is_object(jargs) ? human_form_parse(jargs, err, sizeof err) : NULL;
        json_decref(jargs);
        char *msg = NULL;
        if (form && r->human_form) {
            json_decref(form);
            msg = xstrdup("Error: only one form can wait for the user at a time.");
        } else if (!form) {
            size_t len = strlen(err) + 8;
            msg = xmalloc(len);
            snprintf(msg, len, "Error: %s", err);
        } else {
            r->human_form = form;
            r->human_index = i;
        }
        tool_result(r, i, msg); /* NULL: answered when the user is */
        return;
    }
    char *result;
    if ((!b || !offered) && !mt)
        result = xstrdup("Error: there is no such tool.");
    else if (!json_is_object(jargs))
        result = xstrdup("Error: the arguments are not a JSON object.");
    else
        result = b->exec(jargs);
    json_decref(jargs);
    tool_result(r, i, result);
}

/* The answer asked for tools: announce each call, run them all at once, and when every one
 * has its result (tools_finish) store each call and result as a hidden item (the model's,
 * never the client's) and ask the model again. */
static void tools_start(run *r)
{
    json_t *calls = r->calls;
    r->calls = NULL;
    r->round = calls;
    r->results = json_array();
    r->extras = json_array();
    free(r->calls_out);
    r->calls_out = xcalloc(json_array_size(calls) + 1, sizeof *r->calls_out);
    json_t *asked = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c)
    {
        json_array_append_new(r->results, json_null());
        json_array_append_new(r->extras, json_null());
        json_array_append_new(asked, json_pack("{s:O,s:O,s:O}", "id", json_object_get(c, "id"),
                                               "name", json_object_get(c, "name"), "arguments",
                                               json_object_get(c, "arguments")));
    }
    json_array_append_new(r->messages, json_pack("{s:s,s:o}", "role", "assistant", "tool_calls",
                                                 asked));
    json_array_foreach(calls, i, c)
        progress_for_call(r, json_string_value(json_object_get(c, "name")),
                          json_string_value(json_object_get(c, "arguments")));
    r->running = json_array_size(calls);
    r->starting = 1;
    json_array_foreach(calls, i, c)
        tool_exec(r, i, c);
    r->starting = 0;
    if (!r->running)
        tools_finish(r);
}

/* The round asked the user for input (request_human_input): the form goes out as a widget, the
 * interaction is recorded (a hidden record the model never sees, and the thread's pending mark)
 * and the run ends waiting; the user's submission resumes it (threads.custom_action). */
static const char *ask_human(run *r, json_t *form, json_t *call, json_t *extra)
{
    json_t *rec = stream_new_item(r->st, "msg", "hidden_context_item");
    const char *iid = json_string_value(json_object_get(rec, "id"));
    /* an agent with "forms": "structured" asks with the protocol's structured_input item when
     * every field fits it (choices and free text); a form widget otherwise */
    const char *style = json_string_value(json_object_get(stream_agent(r->st)->config, "forms"));
    json_t *inputs = style && !strcmp(style, "structured") && !extra
                         ? human_structured_inputs(form)
                         : NULL;
    json_t *w;
    if (inputs) {
        w = stream_new_item(r->st, "msg", "structured_input");
        json_object_set_new(w, "status", json_string("pending"));
        json_object_set_new(w, "inputs", inputs);
    } else {
        w = stream_new_item(r->st, "msg", "widget");
        json_object_set_new(w, "widget", human_form_widget(form, iid));
        json_object_set(w, "copy_text", json_object_get(form, "title"));
    }
    json_t *hi = json_pack("{s:s,s:O,s:O,s:O,s:s}", "id", iid, "tool_call", call, "form", form,
                           inputs ? "structured_item_id" : "widget_item_id",
                           json_object_get(w, "id"), "status", "pending");
    if (extra)
        json_object_update(hi, extra);
    json_object_set_new(rec, "content", json_pack("{s:o}", "human_interaction", hi));
    stream_set_metadata(r->st, "pending_interaction", json_string(iid));
    stream_emit(r->st, json_pack("{s:s,s:o}", "type", "thread.item.done", "item", w));
    stream_emit(r->st, json_pack("{s:s,s:O}", "type", "thread.item.done", "item", rec));
    static char last[ID_MAX];
    snprintf(last, sizeof last, "%s", iid);
    json_decref(rec);
    return last;
}

static void tools_finish(run *r)
{
    size_t i, n = 0;
    json_t *c;
    json_array_foreach(r->round, i, c)
    {
        if (r->human_form && i == r->human_index)
            continue; /* answered when the user is */
        json_t *result = json_array_get(r->results, i);
        json_t *extra = json_array_get(r->extras, i);
        json_t *note = stream_new_item(r->st, "msg", "hidden_context_item");
        /* call_index > 0: made in the same answer as the one before (history groups them);
         * an MCP call keeps the server's whole content, as the seed stores mcp_content */
        json_object_set_new(note, "content", json_pack("{s:O,s:O,s:I}", "tool_call", c,
                                                        "tool_result", result, "call_index",
                                                        (json_int_t)n++));
        if (json_object_get(extra, "mcp_content"))
            json_object_set(json_object_get(note, "content"), "mcp_content",
                            json_object_get(extra, "mcp_content"));
        stream_emit(r->st, json_pack("{s:s,s:o}", "type", "thread.item.done", "item", note));
        json_t *tm = json_pack("{s:s,s:O,s:O}", "role", "tool", "tool_call_id",
                               json_object_get(c, "id"), "content", result);
        if (json_array_size(json_object_get(extra, "images"))) /* shown to the model this run */
            json_object_set(tm, "images", json_object_get(extra, "images"));
        json_array_append_new(r->messages, tm);
        r->tool_calls++;
    }
    /* then the widgets the tools returned, in call order: shown where the tools ran */
    json_array_foreach(r->extras, i, c)
    {
        size_t k;
        json_t *w;
        json_array_foreach(json_object_get(c, "widgets"), k, w)
        {
            json_t *item = stream_new_item(r->st, "msg", "widget");
            json_object_set(item, "widget", json_object_get(w, "widget"));
            json_object_set(item, "copy_text", json_object_get(w, "copy_text"));
            stream_emit(r->st, json_pack("{s:s,s:o}", "type", "thread.item.done", "item", item));
        }
    }
    if (r->direct) {
        /* a widget's tool action: no model; what the tool said is shown when it has no widget */
        json_t *extra = json_array_get(r->extras, 0);
        if (!json_array_size(json_object_get(extra, "widgets"))) {
            const char *t = json_string_value(json_array_get(r->results, 0));
            on_text(r, t, strlen(t));
            close_message(r);
        }
    }
    if (r->human_form)
        ask_human(r, r->human_form, json_array_get(r->round, r->human_index), NULL);
    if (r->judgement) { /* the user left an elicitation to the model */
        r->judgement = 0;
        json_array_append_new(r->messages,
                              json_pack("{s:s,s:s}", "role", "user", "content",
                                        "[The user left the tool's question to your judgement.]"));
    }
    json_decref(r->round);
    json_decref(r->results);
    json_decref(r->extras);
    r->round = r->results = r->extras = NULL;
    r->attempt = 0;
    if (r->human_form)
        end_run(r, "waiting");
    else if (r->direct)
        end_run(r, "completed");
    else
        start_call(r);
}

static void add_usage(run *r, const llm_usage *u)
{
    if (u) {
        r->usage.input_tokens += u->input_tokens;
        r->usage.output_tokens += u->output_tokens;
    }
}

static void on_done(void *ud, const llm_usage *u)
{
    run *r = ud;
    r->in_cb++;
    close_message(r);
    r->call = NULL;
    add_usage(r, u);
    if (!r->calls) {
        end_run(r, "completed");
    } else if (++r->rounds < stream_app(r->st)->cfg->max_tool_rounds) {
        tools_start(r);
    } else {
        json_decref(r->calls);
        r->calls = NULL;
        stream_error(r->st, "custom", "The model kept calling tools without answering.", 1);
        end_run(r, "failed");
    }
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
    char q[256];
    LOGW(stream_rid(r->st), "model failed", "err=\"%s\"", log_quote(message, q, sizeof q));
    /* the user may try again after a transient failure, and after one that cut an answer
     * short; not when retrying cannot help (a bad key, a refused request) */
    stream_error(r->st, "custom", message, retryable || r->output);
    end_run(r, "failed");
    leave(r);
}

static const llm_callbacks callbacks = {on_text, on_tool_call, on_done, on_error};

/* ---- the title request ---- */

static void title_text(void *ud, const char *delta, size_t len)
{
    run *r = ud;
    buf_append(&r->title, delta, len); /* past the cap: ignored */
}

static void title_tool(void *ud, const char *id, const char *name, const char *arguments)
{
    (void)ud, (void)id, (void)name, (void)arguments; /* no tools offered: ignored */
}

static void title_over(run *r)
{
    r->title_call = NULL;
    if (r->answered) {
        stop_retry(r); /* the wait is over */
        finish_run(r);
    }
    leave(r);
}

static void title_done(void *ud, const llm_usage *u)
{
    run *r = ud;
    r->in_cb++;
    add_usage(r, u);
    if (r->title.len)
        set_title(r, r->title.data);
    title_over(r);
}

static void title_error(void *ud, const char *message, int retryable, unsigned retry_after_ms)
{
    (void)retryable, (void)retry_after_ms;
    run *r = ud;
    r->in_cb++;
    char q[256];
    LOGI(stream_rid(r->st), "title request failed", "err=\"%s\"", log_quote(message, q, sizeof q));
    title_over(r); /* the user's text gives the title */
}

static const llm_callbacks title_callbacks = {title_text, title_tool, title_done, title_error};

#define TITLE_PROMPT                                                                              \
    "Write a short title (at most six words) for a conversation that begins with the user's "     \
    "message below. Answer with the title only: no quotes, no final period."

static llm_request base_request(run *r)
{
    const config *cfg = stream_app(r->st)->cfg;
    llm_request q = {.model = r->model,
                     .messages = r->messages,
                     .tools = r->tools,
                     .delay_ms = cfg->demo_delay_ms,
                     .base_url = r->base_url,
                     .api_key = r->api_key,
                     .connect_timeout_ms = cfg->llm_connect_timeout_ms,
                     .first_byte_timeout_ms = cfg->llm_first_byte_timeout_ms,
                     .idle_timeout_ms = cfg->llm_idle_timeout_ms,
                     .tool_choice = r->tool_choice};
    return q;
}

/* A title from the model, asked beside the turn (a small second request), for a thread that
 * has none yet. The demo model has nothing better than the user's own words. */
static void start_title(run *r)
{
    const config *cfg = stream_app(r->st)->cfg;
    if (!r->title_text || !*r->title_text || stream_thread(r->st)->title || !cfg->title_enabled ||
        !cfg->model_titles || r->prov == &llm_demo_provider)
        return;
    json_t *msgs = json_pack("[{s:s,s:s},{s:s,s:s}]", "role", "system", "content", TITLE_PROMPT,
                             "role", "user", "content", r->title_text);
    llm_request q = base_request(r);
    q.messages = msgs;
    q.tools = NULL;
    q.tool_choice = NULL;
    q.max_tokens = 32;
    r->title = (buf)BUF_INIT(512);
    r->model_calls++;
    r->title_call = r->prov->start(stream_app(r->st)->loop, &q, &title_callbacks, r);
    json_decref(msgs);
}

/* ---- starting ---- */

/* What agents with model "default" run. */
static const char *default_spec(const config *cfg)
{
    if (cfg->default_model && *cfg->default_model)
        return cfg->default_model;
    if (cfg->openai_api_key && *cfg->openai_api_key)
        return "openai:gpt-4.1-mini";
    if (cfg->anthropic_api_key && *cfg->anthropic_api_key)
        return "anthropic:claude-sonnet-4-5";
    return "demo";
}

/* The model (the agent's, or the client's inference_options.model when the agent allows it),
 * its provider, base URL and key. Returns 0, or -1 with a message for the user in err. */
static int resolve_model(run *r, const json_t *options, char *err, size_t errlen)
{
    const config *cfg = stream_app(r->st)->cfg;
    const ck_agent *a = stream_agent(r->st);
    const char *spec = strcmp(a->model, "default") ? a->model : default_spec(cfg);
    const char *want = json_string_value(json_object_get(options, "model"));
    if (want && *want) {
        int ok = 0;
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(a->config, "models"), i, m)
            ok |= json_is_string(m) && !strcmp(json_string_value(m), want);
        const char *colon = strchr(spec, ':');
        if (!ok)
            LOGD(stream_rid(r->st), "inference_options.model not allowed; ignored",
                 "model=\"%s\"", LOGQ(want));
        else if (llm_provider_find(want, &r->model)) /* a whole "provider:model" spec */
            snprintf(r->spec, sizeof r->spec, "%s", want);
        else
            snprintf(r->spec, sizeof r->spec, "%.*s:%s", colon ? (int)(colon - spec) : 4,
                     colon ? spec : "demo", want);
    }
    if (!r->spec[0])
        snprintf(r->spec, sizeof r->spec, "%s", spec);
    r->prov = llm_provider_find(r->spec, &r->model);
    if (!r->prov) {
        snprintf(err, errlen, "The model \"%.80s\" of this agent is not available in this build.",
                 r->spec);
        return -1;
    }
    int anthropic = r->prov == &llm_anthropic_provider;
    const char *base = json_string_value(json_object_get(a->config, "base_url"));
    const char *key_env = json_string_value(json_object_get(a->config, "api_key_env"));
    r->base_url = xstrdup(base && *base ? base
                          : anthropic   ? cfg->anthropic_base_url
                                        : cfg->openai_base_url);
    if (key_env && *key_env) {
        r->api_key = getenv(key_env);
        if (!r->api_key || !*r->api_key) {
            snprintf(err, errlen, "This agent's API key is not configured (%.64s is not set).",
                     key_env);
            return -1;
        }
    } else {
        r->api_key = anthropic ? cfg->anthropic_api_key : cfg->openai_api_key;
    }
    return 0;
}

/* A name for an MCP tool that every provider accepts ([A-Za-z0-9_-]{1,64}) and that no
 * other offered tool has: the server's name, else prefixed with the server's label. */
static void offered_name(run *r, const char *label, const char *name, char out[65])
{
    for (int attempt = 0; attempt < 100; attempt++) {
        char raw[200];
        if (attempt == 0)
            snprintf(raw, sizeof raw, "%s", name);
        else if (attempt == 1)
            snprintf(raw, sizeof raw, "%s__%s", label, name);
        else
            snprintf(raw, sizeof raw, "%.50s__%.50s_%d", label, name, attempt);
        size_t n = 0;
        for (const char *p = raw; *p && n < 64; p++)
            out[n++] = (isalnum((unsigned char)*p) || *p == '_' || *p == '-') ? *p : '_';
        out[n] = 0;
        int taken = !n || json_object_get(r->tool_map, out) != NULL;
        size_t i;
        json_t *t;
        json_array_foreach(r->tools, i, t)
            taken |= !strcmp(json_string_value(json_object_get(t, "name")) ?: "", out);
        if (!taken)
            return;
    }
    out[0] = 0;
}

/* Adds the tools of every ready server to what the model is offered, and the servers'
 * instructions to its system text. */
static void add_mcp_tools(run *r)
{
    r->tool_map = json_object();
    for (size_t k = 0; k < mcp_agent_nservers(r->mcp); k++) {
        mcp_server *s = mcp_agent_server(r->mcp, k);
        const json_t *tools = mcp_server_tools(s);
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t)
        {
            const char *name = json_string_value(json_object_get(t, "name"));
            char offered[65];
            if (!name || (offered_name(r, mcp_server_label(s), name, offered), !offered[0]))
                continue;
            json_t *schema = json_object_get(t, "inputSchema");
            json_t *params = json_is_object(schema) ? json_deep_copy(schema)
                                                    : json_pack("{s:s}", "type", "object");
            json_object_del(params, "$schema"); /* some providers refuse meta keys */
            const char *desc = json_string_value(json_object_get(t, "description"));
            if (!r->tools)
                r->tools = json_array();
            json_array_append_new(r->tools, json_pack("{s:s,s:s,s:o}", "name", offered,
                                                      "description", desc ? desc : "",
                                                      "parameters", params));
            json_object_set_new(r->tool_map, offered,
                                json_pack("{s:I,s:s}", "s", (json_int_t)k, "n", name));
        }
        const char *instr = mcp_server_instructions(s);
        if (instr && *instr) {
            size_t at = 0;
            while (at < json_array_size(r->messages) &&
                   !strcmp(json_string_value(json_object_get(json_array_get(r->messages, at),
                                                             "role")) ?: "",
                           "system"))
                at++;
            json_array_insert_new(r->messages, at,
                                  json_pack("{s:s,s:s}", "role", "system", "content", instr));
        }
    }
}

/* A widget's "tool:NAME" action: the agent's MCP tool NAME (as the server names it, or as the
 * model is offered it) called with the action's payload, its result shown (a widget, else the
 * text) and stored like any tool call, without asking the model. */
static void run_direct(run *r)
{
    const char *offered = NULL;
    const char *k;
    json_t *v;
    json_object_foreach(r->tool_map, k, v)
    {
        if (!strcmp(k, r->direct) ||
            !strcmp(json_string_value(json_object_get(v, "n")) ?: "", r->direct)) {
            offered = k;
            break;
        }
    }
    if (!offered) {
        char msg[200];
        snprintf(msg, sizeof msg, "The tool \"%.80s\" of this action is not available.", r->direct);
        stream_error(r->st, "custom", msg, 0);
        end_run(r, "failed");
        return;
    }
    char id[ID_MAX];
    id_new("call", id);
    char *args = json_dumps(json_is_object(r->direct_args) ? r->direct_args : json_object(),
                            JSON_COMPACT);
    r->calls = json_pack("[{s:s,s:s,s:s}]", "id", id, "name", offered, "arguments", args);
    free(args);
    tools_start(r);
}

/* Everything is known: ask the model (and, beside it, for a title). */
static void begin(run *r)
{
    if (r->mcp)
        add_mcp_tools(r);
    int offered = 0;
    size_t i;
    json_t *t;
    json_array_foreach(r->tools, i, t)
        offered |= r->tool_choice && !strcmp(json_string_value(json_object_get(t, "name")),
                                             r->tool_choice);
    if (!offered) {
        free(r->tool_choice);
        r->tool_choice = NULL;
    }
    if (r->direct) {
        run_direct(r);
        return;
    }
    start_call(r);
    start_title(r);
}

static void on_mcp_ready(void *ud, int rc, const char *err)
{
    run *r = ud;
    if (rc) {
        char q[256];
        LOGW(stream_rid(r->st), "MCP server unavailable; its tools are left out", "err=\"%s\"",
             log_quote(err ? err : "", q, sizeof q));
    }
    if (--r->mcp_waiting == 0) {
        r->in_cb++;
        begin(r);
        leave(r);
    }
}

static void start(ck_stream *st, json_t *messages, const char *title_text, const json_t *options,
                  const char *direct, const json_t *direct_args);

void run_start(ck_stream *st, json_t *messages, const char *title_text, const json_t *options)
{
    start(st, messages, title_text, options, NULL, NULL);
}

static void run_start_direct(ck_stream *st, json_t *messages, const char *tool, const json_t *args)
{
    start(st, messages, NULL, NULL, tool, args);
}

static void start(ck_stream *st, json_t *messages, const char *title_text, const json_t *options,
                  const char *direct, const json_t *direct_args)
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
    r->app = stream_app(st);
    r->text = (buf)BUF_INIT(0);
    r->title = (buf)BUF_INIT(512);
    r->title_text = title_text ? xstrdup(title_text) : NULL;
    r->started_us = ts_now_us();
    r->messages = messages; /* kept: a retry sends it again */
    if (direct) {
        r->direct = xstrdup(direct);
        r->direct_args = json_deep_copy(direct_args);
        snprintf(r->spec, sizeof r->spec, "tool:%.150s", direct);
        stream_set_run(st, r);
        r->mcp = mcp_pool_acquire(stream_app(st)->mcp, agent->id, agent->config);
        size_t n = mcp_agent_nservers(r->mcp);
        r->mcp_waiting = n;
        for (size_t i = 0; i < n; i++)
            mcp_server_ready(mcp_agent_server(r->mcp, i), on_mcp_ready, r);
        if (!n)
            begin(r);
        return;
    }
    stream_progress(st, "sparkle", "Analyzing your request...");
    char err[200];
    if (resolve_model(r, options, err, sizeof err)) {
        stream_error(st, "custom", err, 0);
        r->end_status = "failed";
        finish_run(r);
        run_free(r);
        return;
    }
    if (agent->instructions && *agent->instructions)
        json_array_insert_new(
            messages, 0, json_pack("{s:s,s:s}", "role", "system", "content", agent->instructions));
    r->tools = tool_defs(json_object_get(agent->config, "tools"));
    const char *tc = json_string_value(json_object_get(json_object_get(options, "tool_choice"), "id"));
    r->tool_choice = tc ? xstrdup(tc) : NULL; /* kept only if it names an offered tool (begin) */
    stream_set_run(st, r);
    r->mcp = mcp_pool_acquire(stream_app(st)->mcp, agent->id, agent->config);
    size_t n = mcp_agent_nservers(r->mcp);
    if (!n) {
        begin(r);
        return;
    }
    r->mcp_waiting = n; /* the model is asked once every server answered (ready or failed) */
    for (size_t i = 0; i < n; i++)
        mcp_server_ready(mcp_agent_server(r->mcp, i), on_mcp_ready, r);
}

static void start_call(run *r)
{
    llm_request q = base_request(r);
    r->output = 0;
    r->model_calls++;
    r->call = r->prov->start(stream_app(r->st)->loop, &q, &callbacks, r);
}

void run_action(ck_stream *st, json_t *action, json_t *widget_item, json_t *history)
{
    const char *type = json_string_value(json_object_get(action, "type")) ?: "";
    if (!strncmp(type, "tool:", 5) && type[5]) {
        run_start_direct(st, history, type + 5, json_object_get(action, "payload"));
        return;
    }
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
    /* stored as hidden context too, so later turns know the action was taken */
    json_t *note = stream_new_item(st, "msg", "hidden_context_item");
    json_object_set_new(note, "content", json_string(text));
    stream_emit(st, json_pack("{s:s,s:o}", "type", "thread.item.done", "item", note));
    run_start(st, history, NULL, NULL);
}

void run_pause(run *r, int paused)
{
    if (r->call && r->prov->pause)
        r->prov->pause(r->call, paused);
}

void run_cancel(run *r)
{
    if (r->dead)
        return;
    stop_retry(r);
    if (r->elicit) {
        mcp_elicit_respond(r->elicit, "cancel", NULL);
        r->elicit = NULL;
    }
    for (size_t i = 0; r->mcp_waiting && i < mcp_agent_nservers(r->mcp); i++)
        mcp_server_ready_cancel(mcp_agent_server(r->mcp, i), r);
    r->mcp_waiting = 0;
    for (size_t i = 0; r->calls_out && i < json_array_size(r->round); i++)
        if (r->calls_out[i]) {
            mcp_call_cancel(r->calls_out[i]->call); /* sends notifications/cancelled */
            free(r->calls_out[i]->label);
            free(r->calls_out[i]);
            r->calls_out[i] = NULL;
        }
    if (r->call)
        r->prov->cancel(r->call);
    if (r->title_call)
        r->prov->cancel(r->title_call);
    r->call = r->title_call = NULL;
    if (!r->answered) /* (an answered turn that only waited for its title stays completed) */
        r->end_status = "cancelled";
    r->title_done = 1; /* the stream is going away: no title now */
    finish_run(r);     /* stores the accounting; the stream is already finishing */
    if (!r->in_cb)
        run_free(r);
}
