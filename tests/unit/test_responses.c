/* OpenAI Responses API: request body and stream decoding (samples: mcp-and-llm.md §4.2). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/responses.h"

#include "llm_rec.h"

typedef struct sse_ev {
    const char *event; /* NULL: no event: line */
    const char *data;
} sse_ev;

/* what the decoder remembered, for the tests that look */
typedef struct info {
    int text_seen, refusal_seen;
    char incomplete[32];
} info;

/* Runs a whole stream and returns the log; rc of the last step, *err its message. */
static char *run(const sse_ev *events, size_t n, int *rc_out, const char **err, info *inf)
{
    rec r = {BUF_INIT(0)};
    llm_dec d;
    llm_dec_init(&d, &rcb, &r);
    char eb[256];
    int rc = 0;
    *err = NULL;
    for (size_t i = 0; i < n && rc >= 0; i++)
        rc = rsp_dec_event(&d, events[i].event, events[i].data, strlen(events[i].data), eb,
                           sizeof eb, err);
    if (rc >= 0)
        rc = llm_dec_end(&d, "call_", err);
    *rc_out = rc;
    if (inf) {
        inf->text_seen = d.text_seen;
        inf->refusal_seen = d.refusal_seen;
        snprintf(inf->incomplete, sizeof inf->incomplete, "%s", d.stop);
    }
    llm_dec_free(&d);
    if (*err == eb) {
        static char keep[256];
        snprintf(keep, sizeof keep, "%s", eb);
        *err = keep;
    }
    return buf_steal(&r.log, NULL);
}

#define RUN(arr, rc, err, inf) run(arr, sizeof arr / sizeof arr[0], rc, err, inf)

/* The reference's function-call stream, verbatim but for its "..." elisions, filled in. */
static const sse_ev sample[] = {
    {"response.created",
     "{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\","
     "\"object\":\"response\",\"status\":\"in_progress\",\"output\":[],\"usage\":null}}"},
    {"response.in_progress",
     "{\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\","
     "\"object\":\"response\",\"status\":\"in_progress\",\"output\":[]}}"},
    {"response.output_item.added",
     "{\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,"
     "\"item\":{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\",\"name\":"
     "\"get_weather\",\"arguments\":\"\",\"status\":\"in_progress\"}}"},
    {"response.function_call_arguments.delta",
     "{\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":3,\"item_id\":"
     "\"fc_1\",\"output_index\":0,\"delta\":\"{\\\"location\\\":\"}"},
    {"response.function_call_arguments.done",
     "{\"type\":\"response.function_call_arguments.done\",\"sequence_number\":5,\"item_id\":"
     "\"fc_1\",\"output_index\":0,\"arguments\":\"{\\\"location\\\":\\\"Paris\\\"}\"}"},
    {"response.output_item.done",
     "{\"type\":\"response.output_item.done\",\"sequence_number\":6,\"output_index\":0,\"item\":"
     "{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\",\"name\":"
     "\"get_weather\",\"arguments\":\"{\\\"location\\\":\\\"Paris\\\"}\",\"status\":"
     "\"completed\"}}"},
    {"response.completed",
     "{\"type\":\"response.completed\",\"sequence_number\":7,\"response\":{\"id\":\"resp_1\","
     "\"status\":\"completed\",\"output\":[{\"type\":\"function_call\",\"id\":\"fc_1\","
     "\"call_id\":\"call_1\",\"name\":\"get_weather\",\"arguments\":"
     "\"{\\\"location\\\":\\\"Paris\\\"}\",\"status\":\"completed\"}],\"usage\":{"
     "\"input_tokens\":50,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":18,"
     "\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":68}}}"},
};

static void t_function_call_sample(void **st)
{
    (void)st;
    int rc;
    const char *err;
    info inf;
    char *log = RUN(sample, &rc, &err, &inf);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "C:call_1,get_weather,{\"location\":\"Paris\"}|D:50,18|");
    assert_int_equal(inf.text_seen, 0);
    free(log);
}

static void t_no_event_name(void **st)
{
    (void)st;
    /* the same stream without event: lines (the SSE parser then says "message") */
    sse_ev ev[sizeof sample / sizeof sample[0]];
    for (size_t i = 0; i < sizeof ev / sizeof ev[0]; i++)
        ev[i] = (sse_ev){i % 2 ? "message" : NULL, sample[i].data};
    int rc;
    const char *err;
    char *log = RUN(ev, &rc, &err, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "C:call_1,get_weather,{\"location\":\"Paris\"}|D:50,18|");
    free(log);

    /* no JSON type: the event: line names it */
    const sse_ev named[] = {
        {"response.output_text.delta", "{\"output_index\":0,\"delta\":\"Hi\"}"},
        {"response.completed",
         "{\"response\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}}"},
    };
    log = RUN(named, &rc, &err, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "T:Hi|D:1,2|");
    free(log);

    /* the JSON type wins over a different event: name */
    const sse_ev both[] = {
        {"response.in_progress", "{\"type\":\"response.output_text.delta\",\"delta\":\"x\"}"},
        {"message", "{\"type\":\"response.completed\",\"response\":{}}"},
    };
    log = RUN(both, &rc, &err, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "T:x|D:0,0|");
    free(log);
}

static void t_text(void **st)
{
    (void)st;
    const sse_ev ev[] = {
        {"response.created", "{\"type\":\"response.created\",\"sequence_number\":0,\"response\":"
                             "{\"id\":\"resp_2\",\"status\":\"in_progress\",\"output\":[]}}"},
        {"response.output_item.added",
         "{\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,"
         "\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"in_progress\",\"content\":"
         "[],\"role\":\"assistant\"}}"},
        {"response.content_part.added",
         "{\"type\":\"response.content_part.added\",\"sequence_number\":2,\"item_id\":\"msg_1\","
         "\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\","
         "\"annotations\":[],\"text\":\"\"}}"},
        {"response.output_text.delta",
         "{\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"item_id\":\"msg_1\","
         "\"output_index\":0,\"content_index\":0,\"delta\":\"Hel\",\"logprobs\":[]}"},
        {"response.output_text.delta",
         "{\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_1\","
         "\"output_index\":0,\"content_index\":0,\"delta\":\"lo, \",\"logprobs\":[]}"},
        {"response.output_text.delta",
         "{\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_1\","
         "\"output_index\":0,\"content_index\":0,\"delta\":\"w\\u00f6rld\",\"logprobs\":[]}"},
        {"response.output_text.done",
         "{\"type\":\"response.output_text.done\",\"sequence_number\":6,\"item_id\":\"msg_1\","
         "\"output_index\":0,\"content_index\":0,\"text\":\"Hello, w\\u00f6rld\",\"logprobs\":[]}"},
        {"response.content_part.done",
         "{\"type\":\"response.content_part.done\",\"sequence_number\":7,\"item_id\":\"msg_1\","
         "\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\","
         "\"annotations\":[],\"text\":\"Hello, w\\u00f6rld\"}}"},
        {"response.output_item.done",
         "{\"type\":\"response.output_item.done\",\"sequence_number\":8,\"output_index\":0,"
         "\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"completed\",\"content\":"
         "[{\"type\":\"output_text\",\"annotations\":[],\"text\":\"Hello, w\\u00f6rld\"}],"
         "\"role\":\"assistant\"}}"},
        {"response.completed",
         "{\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":\"resp_2\","
         "\"status\":\"completed\",\"output\":[{\"id\":\"msg_1\",\"type\":\"message\","
         "\"content\":[{\"type\":\"output_text\",\"text\":\"Hello, w\\u00f6rld\"}]}],"
         "\"usage\":{\"input_tokens\":12,\"output_tokens\":4,\"total_tokens\":16}}}"},
    };
    int rc;
    const char *err;
    info inf;
    char *log = RUN(ev, &rc, &err, &inf);
    assert_int_equal(rc, 0);
    /* the text once, from the deltas (not again from the done events or the final output) */
    assert_string_equal(log, "T:Hel|T:lo, |T:w\xc3\xb6rld|D:12,4|");
    assert_int_equal(inf.text_seen, 1);
    free(log);
}

static void t_parallel_calls(void **st)
{
    (void)st;
    /* text at output_index 0, calls at 1 and 2 with interleaved arguments; the second call
     * gets no arguments.done */
    const sse_ev ev[] = {
        {NULL, "{\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":"
               "\"message\",\"id\":\"msg_1\",\"role\":\"assistant\",\"content\":[]}}"},
        {NULL, "{\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"Checking."
               "\"}"},
        {NULL, "{\"type\":\"response.output_item.added\",\"output_index\":2,\"item\":{\"type\":"
               "\"function_call\",\"id\":\"fc_b\",\"call_id\":\"call_b\",\"name\":\"get_time\","
               "\"arguments\":\"\"}}"},
        {NULL, "{\"type\":\"response.output_item.added\",\"output_index\":1,\"item\":{\"type\":"
               "\"function_call\",\"id\":\"fc_a\",\"call_id\":\"call_a\",\"name\":"
               "\"get_weather\",\"arguments\":\"\"}}"},
        {NULL, "{\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_a\","
               "\"output_index\":1,\"delta\":\"{\\\"city\\\":\"}"},
        {NULL, "{\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_b\","
               "\"output_index\":2,\"delta\":\"{\\\"tz\\\":\"}"},
        {NULL, "{\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_a\","
               "\"output_index\":1,\"delta\":\"\\\"Paris\\\"}\"}"},
        {NULL, "{\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_b\","
               "\"output_index\":2,\"delta\":\"\\\"UTC\\\"}\"}"},
        {NULL, "{\"type\":\"response.function_call_arguments.done\",\"item_id\":\"fc_a\","
               "\"output_index\":1,\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}"},
        {NULL, "{\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":7,"
               "\"output_tokens\":9}}}"},
    };
    int rc;
    const char *err;
    char *log = RUN(ev, &rc, &err, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "T:Checking.|C:call_a,get_weather,{\"city\":\"Paris\"}|"
                             "C:call_b,get_time,{\"tz\":\"UTC\"}|D:7,9|");
    free(log);
}

static void t_tolerant(void **st)
{
    (void)st;
    int rc;
    const char *err;
    /* no output_index anywhere: calls found by item_id; arguments.done as an object */
    const sse_ev noix[] = {
        {NULL, "{\"type\":\"response.output_item.added\",\"item\":{\"type\":\"function_call\","
               "\"id\":\"fc_1\",\"call_id\":\"c1\",\"name\":\"f\"}}"},
        {NULL, "{\"type\":\"response.output_item.added\",\"item\":{\"type\":\"function_call\","
               "\"id\":\"fc_2\",\"call_id\":\"c2\",\"name\":\"g\"}}"},
        {NULL, "{\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_1\","
               "\"delta\":\"{\\\"a\\\":\"}"},
        {NULL, "{\"type\":\"response.function_call_arguments.done\",\"item_id\":\"fc_1\","
               "\"arguments\":{\"a\":1}}"},
        {NULL, "{\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_2\","
               "\"delta\":\"{}\"}"},
        {NULL, "{\"type\":\"response.completed\",\"response\":{}}"},
        {NULL, "[DONE]"},
    };
    char *log = RUN(noix, &rc, &err, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "C:c1,f,{\"a\":1}|C:c2,g,{}|D:0,0|");
    free(log);

    /* a call and text only in response.completed's output (nothing streamed) */
    const sse_ev late[] = {
        {NULL, "{\"type\":\"response.completed\",\"response\":{\"output\":[{\"type\":\"message\","
               "\"content\":[{\"type\":\"output_text\",\"text\":\"ok\"}]},{\"type\":"
               "\"function_call\",\"call_id\":\"c9\",\"name\":\"h\",\"arguments\":\"{\\\"x\\\":2}"
               "\"}],\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}}"},
    };
    log = RUN(late, &rc, &err, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "T:ok|C:c9,h,{\"x\":2}|D:3,4|");
    free(log);

    /* a call seen only in output_item.done, with no call_id */
    const sse_ev only_done[] = {
        {NULL, "{\"type\":\"response.output_item.done\",\"output_index\":3,\"item\":{\"type\":"
               "\"function_call\",\"name\":\"k\",\"arguments\":\"{}\"}}"},
        {NULL, "{\"type\":\"response.completed\",\"response\":{}}"},
    };
    log = RUN(only_done, &rc, &err, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "C:call_3,k,{}|D:0,0|");
    free(log);
}

static void t_ignored(void **st)
{
    (void)st;
    const sse_ev ev[] = {
        {NULL, "{\"type\":\"response.queued\",\"response\":{}}"},
        {NULL, "{\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":"
               "\"reasoning\",\"id\":\"rs_1\",\"summary\":[]}}"},
        {NULL, "{\"type\":\"response.reasoning_summary_text.delta\",\"output_index\":0,"
               "\"delta\":\"thinking\"}"},
        {NULL, "{\"type\":\"response.reasoning_text.delta\",\"output_index\":0,\"delta\":\"hm\"}"},
        {NULL, "{\"type\":\"response.refusal.delta\",\"output_index\":1,\"delta\":\"I can't\"}"},
        {NULL, "{\"type\":\"response.refusal.done\",\"output_index\":1,\"refusal\":\"I can't\"}"},
        {NULL, "{\"type\":\"response.output_text.annotation.added\",\"output_index\":1,"
               "\"annotation\":{\"type\":\"url_citation\"}}"},
        {NULL, "{\"type\":\"response.web_search_call.searching\",\"output_index\":2}"},
        {NULL, "{\"type\":\"response.mcp_call_arguments.delta\",\"output_index\":3,\"delta\":"
               "\"{}\"}"},
        {NULL, "{\"type\":\"response.custom_tool_call_input.delta\",\"output_index\":4,"
               "\"delta\":\"x\"}"},
        {NULL, "{\"type\":\"response.audio.delta\",\"delta\":\"AAAA\"}"},
        {NULL, "{\"type\":\"response.something_new\",\"output_index\":99}"},
        {NULL, "{\"sequence_number\":5}"},
        {NULL, "{\"type\":\"response.completed\",\"response\":{\"output\":[{\"type\":\"message\","
               "\"content\":[{\"type\":\"refusal\",\"refusal\":\"I can't\"}]}]}}"},
        {NULL, "{\"type\":\"response.output_text.delta\",\"delta\":\"after the end\"}"},
    };
    int rc;
    const char *err;
    info inf;
    char *log = RUN(ev, &rc, &err, &inf);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "D:0,0|"); /* the refusal is remembered, not shown */
    assert_int_equal(inf.refusal_seen, 1);
    assert_int_equal(inf.text_seen, 0);
    free(log);
}

static void t_error_event(void **st)
{
    (void)st;
    int rc;
    const char *err;
    info inf;
    const sse_ev ev[] = {
        {"response.output_text.delta",
         "{\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"Hi\"}"},
        {"error", "{\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"Rate limit "
                  "reached\",\"param\":null,\"sequence_number\":3}"},
        {NULL, "{\"type\":\"response.completed\",\"response\":{}}"},
    };
    char *log = RUN(ev, &rc, &err, &inf);
    assert_true(rc < 0);
    assert_string_equal(err, "the model provider reported an error: Rate limit reached");
    assert_string_equal(log, "T:Hi|"); /* the text before the error was delivered */
    assert_int_equal(inf.text_seen, 1);
    free(log);

    /* no JSON type, only the event: name; and the message nested in an error object */
    const sse_ev nested[] = {
        {"error", "{\"error\":{\"type\":\"server_error\",\"message\":\"Overloaded\"}}"},
    };
    log = RUN(nested, &rc, &err, &inf);
    assert_true(rc < 0);
    assert_string_equal(err, "the model provider reported an error: Overloaded");
    assert_string_equal(log, "");
    assert_int_equal(inf.text_seen, 0);
    free(log);

    const sse_ev bare[] = {{NULL, "{\"type\":\"error\"}"}};
    log = RUN(bare, &rc, &err, NULL);
    assert_true(rc < 0);
    assert_string_equal(err, "the model provider reported an error: (no message)");
    free(log);
}

static void t_failed(void **st)
{
    (void)st;
    const sse_ev ev[] = {
        {NULL, "{\"type\":\"response.created\",\"response\":{\"status\":\"in_progress\"}}"},
        {NULL, "{\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":"
               "\"function_call\",\"call_id\":\"c1\",\"name\":\"f\"}}"},
        {"response.failed",
         "{\"type\":\"response.failed\",\"sequence_number\":4,\"response\":{\"id\":\"resp_3\","
         "\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"The server had "
         "an error while processing your request.\"},\"output\":[]}}"},
    };
    int rc;
    const char *err;
    char *log = RUN(ev, &rc, &err, NULL);
    assert_true(rc < 0);
    assert_string_equal(err, "the model provider reported an error: The server had an error "
                             "while processing your request.");
    assert_string_equal(log, ""); /* no call, no on_done */
    free(log);
}

static void t_incomplete(void **st)
{
    (void)st;
    const sse_ev ev[] = {
        {NULL, "{\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"Once "
               "upon\"}"},
        {NULL, "{\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\" a\"}"},
        {"response.incomplete",
         "{\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\","
         "\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"output\":[{\"type\":"
         "\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"Once upon a\"}]}],"
         "\"usage\":{\"input_tokens\":5,\"output_tokens\":3}}}"},
    };
    int rc;
    const char *err;
    info inf;
    char *log = RUN(ev, &rc, &err, &inf);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "T:Once upon|T: a|D:5,3|");
    assert_string_equal(inf.incomplete, "max_output_tokens");
    free(log);
}

static void t_cut_off(void **st)
{
    (void)st;
    int rc;
    const char *err;
    const sse_ev text[] = {
        {NULL, "{\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"Hi\"}"},
        {NULL, "{\"type\":\"response.output_text.done\",\"output_index\":0,\"text\":\"Hi\"}"},
    };
    char *log = RUN(text, &rc, &err, NULL);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "cut off"));
    assert_string_equal(log, "T:Hi|"); /* no on_done for a cut stream */
    free(log);

    /* the sample without its response.completed: the call is never emitted */
    log = run(sample, sizeof sample / sizeof sample[0] - 1, &rc, &err, NULL);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "cut off"));
    assert_string_equal(log, "");
    free(log);

    /* an empty stream, and one with only [DONE] */
    log = run(NULL, 0, &rc, &err, NULL);
    assert_true(rc < 0);
    free(log);
    const sse_ev done_only[] = {{NULL, "[DONE]"}};
    log = RUN(done_only, &rc, &err, NULL);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "cut off"));
    free(log);
}

static void t_malformed(void **st)
{
    (void)st;
    int rc;
    const char *err;
    const char *bad[] = {"{not json", "[1,2]", "\"response.completed\"", "",
                         "{\"type\":\"response.output_text.delta\",\"delta\":\"a\"} trailing"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const sse_ev ev[] = {
            {NULL, "{\"type\":\"response.output_text.delta\",\"delta\":\"a\"}"},
            {NULL, bad[i]},
            {NULL, "{\"type\":\"response.completed\",\"response\":{}}"},
        };
        char *log = RUN(ev, &rc, &err, NULL);
        assert_true(rc < 0);
        assert_string_equal(err, "the model provider sent a malformed stream");
        assert_string_equal(log, "T:a|");
        free(log);
    }
}

static void t_limits(void **st)
{
    (void)st;
    int rc;
    const char *err;
    const sse_ev many[] = {
        {NULL, "{\"type\":\"response.output_item.added\",\"output_index\":64,\"item\":{\"type\":"
               "\"function_call\",\"call_id\":\"x\",\"name\":\"f\"}}"},
    };
    char *log = RUN(many, &rc, &err, NULL);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "too many tool calls"));
    free(log);

    const sse_ev neg[] = {
        {NULL, "{\"type\":\"response.function_call_arguments.delta\",\"output_index\":-1,"
               "\"delta\":\"{}\"}"},
    };
    log = RUN(neg, &rc, &err, NULL);
    assert_true(rc < 0);
    free(log);

    /* arguments past TC_MAX_ARGS, in two deltas */
    size_t half = TC_MAX_ARGS / 2 + 16;
    char *big = malloc(half + 128);
    assert_non_null(big);
    int n = snprintf(big, 128,
                     "{\"type\":\"response.function_call_arguments.delta\","
                     "\"output_index\":0,\"delta\":\"");
    memset(big + n, 'a', half);
    strcpy(big + n + half, "\"}");
    const sse_ev huge[] = {
        {NULL, "{\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":"
               "\"function_call\",\"call_id\":\"x\",\"name\":\"f\"}}"},
        {NULL, big},
        {NULL, big},
    };
    log = RUN(huge, &rc, &err, NULL);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "too large"));
    free(log);
    free(big);
}

static void t_body(void **st)
{
    (void)st;
    json_t *msgs = json_pack(
        "[{s:s,s:s},{s:s,s:s},{s:s,s:s},{s:s,s:s,s:[{s:s,s:s,s:s},{s:s,s:s}]},{s:s,s:s,s:s},"
        "{s:s,s:s,s:s},{s:s,s:n,s:[{s:s,s:s,s:s}]},{s:s,s:s,s:s},{s:s,s:s}]",
        "role", "system", "content", "be brief", "role", "user", "content", "weather?", "role",
        "system", "content", "use metric", "role", "assistant", "content", "Let me check.",
        "tool_calls", "id", "call_1", "name", "get_weather", "arguments", "{\"l\":1}", "id",
        "call_2", "name", "get_time", "role", "tool", "tool_call_id", "call_1", "content", "sunny",
        "role", "tool", "tool_call_id", "call_2", "content", "noon", "role", "assistant", "content",
        "tool_calls", "id", "call_3", "name", "get_weather", "arguments", "{}", "role", "tool",
        "tool_call_id", "call_3", "content", "rain", "role", "assistant", "content",
        "Sunny, rain.");
    json_t *tools = json_pack("[{s:s,s:s,s:{s:s}},{s:s}]", "name", "get_weather", "description",
                              "d", "parameters", "type", "object", "name", "get_time");
    llm_request req = {.model = "gpt-4.1-mini", .messages = msgs, .tools = tools};
    req.tool_choice = "get_weather";
    char *body = rsp_body(&req);
    assert_non_null(body);
    json_t *b = json_loads(body, 0, NULL);
    assert_non_null(b);
    assert_string_equal(json_string_value(json_object_get(b, "model")), "gpt-4.1-mini");
    assert_true(json_is_true(json_object_get(b, "stream")));
    assert_null(json_object_get(b, "previous_response_id"));
    assert_null(json_object_get(b, "messages"));
    assert_string_equal(json_string_value(json_object_get(b, "instructions")),
                        "be brief\n\nuse metric");
    json_t *in = json_object_get(b, "input");
    json_t *want = json_pack(
        "[{s:s,s:s},{s:s,s:s},{s:s,s:s,s:s,s:s},{s:s,s:s,s:s,s:s},{s:s,s:s,s:s},{s:s,s:s,s:s},"
        "{s:s,s:s,s:s,s:s},{s:s,s:s,s:s},{s:s,s:s}]",
        "role", "user", "content", "weather?", "role", "assistant", "content", "Let me check.",
        "type", "function_call", "call_id", "call_1", "name", "get_weather", "arguments",
        "{\"l\":1}", "type", "function_call", "call_id", "call_2", "name", "get_time", "arguments",
        "{}", "type", "function_call_output", "call_id", "call_1", "output", "sunny", "type",
        "function_call_output", "call_id", "call_2", "output", "noon", "type", "function_call",
        "call_id", "call_3", "name", "get_weather", "arguments", "{}", "type",
        "function_call_output", "call_id", "call_3", "output", "rain", "role", "assistant",
        "content", "Sunny, rain.");
    assert_non_null(want);
    if (!json_equal(in, want)) {
        char *got = json_dumps(in, JSON_COMPACT);
        fail_msg("input items: %s", got);
    }
    json_decref(want);
    json_t *wtools =
        json_pack("[{s:s,s:s,s:s,s:{s:s},s:b},{s:s,s:s,s:s,s:{s:s},s:b}]", "type", "function",
                  "name", "get_weather", "description", "d", "parameters", "type", "object",
                  "strict", 0, "type", "function", "name", "get_time", "description", "",
                  "parameters", "type", "object", "strict", 0);
    assert_true(json_equal(json_object_get(b, "tools"), wtools));
    json_decref(wtools);
    json_t *tc = json_object_get(b, "tool_choice");
    assert_string_equal(json_string_value(json_object_get(tc, "type")), "function");
    assert_string_equal(json_string_value(json_object_get(tc, "name")), "get_weather");
    assert_int_equal(json_object_size(tc), 2);
    json_decref(b);
    free(body);

    /* no system message, no tools, no tool_choice: those keys are left out */
    json_t *plain = json_pack("[{s:s,s:s}]", "role", "user", "content", "hi");
    llm_request preq = {.model = "m", .messages = plain};
    body = rsp_body(&preq);
    assert_string_equal(body, "{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                              "\"stream\":true}");
    free(body);
    json_decref(plain);

    /* malformed message lists and tools are refused */
    json_t *bads[] = {
        json_pack("[{s:s,s:i}]", "role", "user", "content", 5),
        json_pack("[{s:s}]", "content", "no role"),
        json_pack("[{s:s,s:s}]", "role", "developer", "content", "x"),
        json_pack("[{s:s,s:n}]", "role", "system", "content"),
        json_pack("[{s:s,s:s}]", "role", "tool", "content", "no id"),
        json_pack("[{s:s,s:s,s:i}]", "role", "tool", "tool_call_id", "c", "content", 1),
        json_pack("[{s:s,s:[{s:s}]}]", "role", "assistant", "tool_calls", "name", "no id"),
        json_pack("[{s:s,s:n}]", "role", "assistant", "content"),
        json_pack("{s:s}", "not", "an array"),
    };
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        assert_non_null(bads[i]);
        llm_request bad = {.model = "m", .messages = bads[i]};
        assert_null(rsp_body(&bad));
        json_decref(bads[i]);
    }
    json_t *badtools = json_pack("[{s:s}]", "description", "no name");
    llm_request bt = {.model = "m", .messages = msgs, .tools = badtools};
    assert_null(rsp_body(&bt));
    json_decref(badtools);
    json_decref(msgs);
    json_decref(tools);
}

int main(void)
{
    json_object_seed(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_function_call_sample),
        cmocka_unit_test(t_no_event_name),
        cmocka_unit_test(t_text),
        cmocka_unit_test(t_parallel_calls),
        cmocka_unit_test(t_tolerant),
        cmocka_unit_test(t_ignored),
        cmocka_unit_test(t_error_event),
        cmocka_unit_test(t_failed),
        cmocka_unit_test(t_incomplete),
        cmocka_unit_test(t_cut_off),
        cmocka_unit_test(t_malformed),
        cmocka_unit_test(t_limits),
        cmocka_unit_test(t_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
