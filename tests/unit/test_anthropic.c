/* Anthropic Messages: request body and stream decoding (samples: mcp-and-llm.md §4.3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/anthropic.h"

#include "llm_rec.h"

typedef struct sse_ev {
    const char *event; /* as the SSE parser hands it over ("message" when no event: line) */
    const char *data;
} sse_ev;

/* Runs a whole stream and returns the log; rc of the last step. */
static char *run(const sse_ev *events, size_t n, int *rc_out, const char **err)
{
    rec r = {BUF_INIT(0)};
    llm_dec d;
    llm_dec_init(&d, &rcb, &r);
    char eb[256];
    int rc = 0;
    *err = NULL;
    for (size_t i = 0; i < n && rc >= 0; i++)
        rc = ant_dec_event(&d, events[i].event, events[i].data, strlen(events[i].data), eb,
                           sizeof eb, err);
    if (rc >= 0)
        rc = llm_dec_end(&d, "toolu_", err);
    *rc_out = rc;
    llm_dec_free(&d);
    if (*err == eb) {
        static char keep[256];
        snprintf(keep, sizeof keep, "%s", eb);
        *err = keep;
    }
    return buf_steal(&r.log, NULL);
}

#define RUN(arr, rc, err) run(arr, sizeof arr / sizeof arr[0], rc, err)

/* The §4.3 sample, verbatim. */
static const sse_ev sample[] = {
    {"message_start",
     "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":"
     "\"assistant\",\"content\":[],\"model\":\"claude-...\",\"stop_reason\":null,"
     "\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2,"
     "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0}}}"},
    {"content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                            "{\"type\":\"text\",\"text\":\"\"}}"},
    {"ping", "{\"type\": \"ping\"}"},
    {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                            "\"text_delta\",\"text\":\"Let me check\"}}"},
    {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}"},
    {"content_block_start",
     "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\","
     "\"id\":\"toolu_01\",\"name\":\"get_weather\",\"input\":{}}}"},
    {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
                            "\"input_json_delta\",\"partial_json\":\"\"}}"},
    {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
                            "\"input_json_delta\",\"partial_json\":\"{\\\"location\\\": "
                            "\\\"Par\"}}"},
    {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
                            "\"input_json_delta\",\"partial_json\":\"is\\\"}\"}}"},
    {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}"},
    {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
                      "\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}"},
    {"message_stop", "{\"type\":\"message_stop\"}"},
};

static void t_sample(void **st)
{
    (void)st;
    int rc;
    const char *err;
    char *log = RUN(sample, &rc, &err);
    assert_int_equal(rc, 0);
    assert_null(err);
    assert_string_equal(log, "T:Let me check|"
                             "C:toolu_01,get_weather,{\"location\": \"Paris\"}|D:472,89|");
    free(log);

    /* step by step: the text goes out at once, the call only at the end; message_stop = 1 */
    rec r = {BUF_INIT(0)};
    llm_dec d;
    llm_dec_init(&d, &rcb, &r);
    char eb[64];
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(ant_dec_event(&d, sample[i].event, sample[i].data, strlen(sample[i].data),
                                       eb, sizeof eb, &err),
                         0);
    assert_string_equal(r.log.data, "T:Let me check|");
    assert_true(d.text_seen);
    for (size_t i = 4; i < 11; i++)
        assert_int_equal(ant_dec_event(&d, sample[i].event, sample[i].data, strlen(sample[i].data),
                                       eb, sizeof eb, &err),
                         0);
    assert_string_equal(r.log.data, "T:Let me check|");
    assert_string_equal(d.stop, "tool_use");
    assert_int_equal(ant_dec_event(&d, sample[11].event, sample[11].data, strlen(sample[11].data),
                                   eb, sizeof eb, &err),
                     1);
    assert_int_equal(llm_dec_end(&d, "toolu_", &err), 0);
    llm_dec_free(&d);
    buf_free(&r.log);
}

static void t_usage(void **st)
{
    (void)st;
    /* cached input counts as input; output_tokens is cumulative: the last one wins; a
     * message_delta may repeat input_tokens. No event: lines here (the JSON type routes). */
    const sse_ev ev[] = {
        {"message", "{\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,"
                    "\"output_tokens\":1,\"cache_creation_input_tokens\":5,"
                    "\"cache_read_input_tokens\":100}}}"},
        {"message", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                    "{\"type\":\"text\",\"text\":\"\"}}"},
        {"message", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                    "\"text_delta\",\"text\":\"Hel\"}}"},
        {NULL, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
               "\"text_delta\",\"text\":\"lo\"}}"},
        {"", "{\"type\":\"content_block_stop\",\"index\":0}"},
        {"message", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},"
                    "\"usage\":{\"output_tokens\":7}}"},
        {"message", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
                    "\"usage\":{\"input_tokens\":10,\"output_tokens\":12,"
                    "\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":100}}"},
        {"message", "{\"type\":\"message_stop\"}"},
    };
    int rc;
    const char *err;
    char *log = RUN(ev, &rc, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "T:Hel|T:lo|D:115,12|");
    free(log);

    /* a stop_reason without message_stop is enough; usage defaults to 0 */
    const sse_ev nostop[] = {{"message_delta", "{\"type\":\"message_delta\",\"delta\":"
                                               "{\"stop_reason\":\"max_tokens\"}}"}};
    log = RUN(nostop, &rc, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "D:0,0|");
    free(log);

    /* hostile counts: sums saturate, negatives count as 0 (found by fuzz_llm); nothing after
     * message_stop counts, not even an error */
    const sse_ev big[] = {
        {"message_start", "{\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":"
                          "9223372036854775807,\"cache_read_input_tokens\":1,\"output_tokens\":-5}}}"},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}"},
        {"message_stop", "{\"type\":\"message_stop\"}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
                                "\"type\":\"text_delta\",\"text\":\"late\"}}"},
        {"error", "{\"type\":\"error\",\"error\":{\"message\":\"late\"}}"},
    };
    log = RUN(big, &rc, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "D:9223372036854775807,0|");
    free(log);
}

static void t_errors(void **st)
{
    (void)st;
    int rc;
    const char *err;
    const sse_ev mid[] = {
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                                "{\"type\":\"text_delta\",\"text\":\"Hi\"}}"},
        {"error", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
                  "\"Overloaded\"}}"}};
    char *log = RUN(mid, &rc, &err);
    assert_true(rc < 0);
    assert_string_equal(err, "the model provider reported an error: Overloaded");
    assert_string_equal(log, "T:Hi|"); /* the text before the error was delivered */
    free(log);

    /* the same without an event: line, and without a message */
    const sse_ev bare[] = {{"message", "{\"type\":\"error\",\"error\":{\"type\":\"x\"}}"}};
    log = RUN(bare, &rc, &err);
    assert_true(rc < 0);
    assert_string_equal(err, "the model provider reported an error: (no message)");
    assert_string_equal(log, "");
    free(log);

    /* cut off: no stop_reason, no message_stop; the started tool call is not emitted */
    const sse_ev cut[] = {
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                                "{\"type\":\"text_delta\",\"text\":\"Hi\"}}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":1,"
                                "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\","
                                "\"name\":\"f\",\"input\":{}}}"},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},"
                          "\"usage\":{\"output_tokens\":3}}"}};
    log = RUN(cut, &rc, &err);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "cut off"));
    assert_string_equal(log, "T:Hi|"); /* no call, no on_done for a cut stream */
    free(log);

    const sse_ev bad[] = {{"content_block_delta", "{not json"}};
    log = RUN(bad, &rc, &err);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "malformed stream"));
    free(log);

    const sse_ev notobj[] = {{"message_start", "[1,2]"}};
    log = RUN(notobj, &rc, &err);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "malformed stream"));
    free(log);

    /* a ping's payload is not even looked at */
    const sse_ev ping[] = {{"ping", ""}, {"message_stop", "{\"type\":\"message_stop\"}"}};
    log = RUN(ping, &rc, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "D:0,0|");
    free(log);
}

static void t_many_blocks(void **st)
{
    (void)st;
    /* thinking, text, three tool calls (the third's deltas before the second's), a server
     * tool, an unknown event; emitted in block index order */
    const sse_ev ev[] = {
        {"message_start", "{\"type\":\"message_start\",\"message\":{\"usage\":"
                          "{\"input_tokens\":3,\"output_tokens\":1}}}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
                                "\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                                "{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                                "{\"type\":\"signature_delta\",\"signature\":\"sig\"}}"},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":1,"
                                "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":"
                                "{\"type\":\"text_delta\",\"text\":\"ok\"}}"},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":3,"
                                "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t3\","
                                "\"name\":\"c\",\"input\":{}}}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":2,"
                                "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t2\","
                                "\"name\":\"b\",\"input\":{}}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":3,\"delta\":"
                                "{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"z\\\"\"}}"},
        {"content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":"
         "{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"y\\\":\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":3,\"delta\":"
                                "{\"type\":\"input_json_delta\",\"partial_json\":\":1}\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":"
                                "{\"type\":\"input_json_delta\",\"partial_json\":\"2}\"}}"},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":2}"},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":3}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":4,"
                                "\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"s\","
                                "\"name\":\"web_search\",\"input\":{}}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":4,\"delta\":"
                                "{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}"},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":4}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":5,"
                                "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t5\","
                                "\"name\":\"e\",\"input\":{}}}"},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":5}"},
        {"future_event", "{\"type\":\"future_event\",\"x\":1}"},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},"
                          "\"usage\":{\"output_tokens\":40}}"},
        {"message_stop", "{\"type\":\"message_stop\"}"},
    };
    int rc;
    const char *err;
    char *log = RUN(ev, &rc, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "T:ok|C:t2,b,{\"y\":2}|C:t3,c,{\"z\":1}|C:t5,e,{}|D:3,40|");
    free(log);

    /* one more tool_use block than the cap */
    llm_dec d;
    rec r = {BUF_INIT(0)};
    llm_dec_init(&d, &rcb, &r);
    char eb[64], data[256];
    rc = 0;
    for (int i = 0; i <= TC_MAX_SLOTS && rc == 0; i++) {
        snprintf(data, sizeof data,
                 "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":"
                 "{\"type\":\"tool_use\",\"id\":\"t%d\",\"name\":\"f\",\"input\":{}}}",
                 i, i);
        rc = ant_dec_event(&d, "content_block_start", data, strlen(data), eb, sizeof eb, &err);
        if (i < TC_MAX_SLOTS)
            assert_int_equal(rc, 0);
    }
    assert_true(rc < 0);
    assert_non_null(strstr(err, "too many tool calls"));
    llm_dec_free(&d);

    /* arguments past the cap */
    llm_dec_init(&d, &rcb, &r);
    const char *start = "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                        "{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{}}}";
    assert_int_equal(ant_dec_event(&d, NULL, start, strlen(start), eb, sizeof eb, &err), 0);
    size_t piece = 64 * 1024;
    buf big = BUF_INIT(0);
    buf_puts(&big, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                   "\"input_json_delta\",\"partial_json\":\"");
    for (size_t i = 0; i < piece; i++)
        buf_putc(&big, 'a');
    buf_puts(&big, "\"}}");
    rc = 0;
    size_t n;
    for (n = 0; n <= TC_MAX_ARGS / piece && rc == 0; n++)
        rc = ant_dec_event(&d, "content_block_delta", big.data, big.len, eb, sizeof eb, &err);
    assert_true(rc < 0);
    assert_int_equal(n, TC_MAX_ARGS / piece + 1);
    assert_non_null(strstr(err, "too large"));
    llm_dec_free(&d);
    buf_free(&big);
    assert_string_equal(r.log.data ? r.log.data : "", "");
    buf_free(&r.log);
}

static void t_tolerant(void **st)
{
    (void)st;
    /* no index, the whole input in content_block_start, no id on a second call, no
     * message_stop but a stop_reason */
    const sse_ev ev[] = {
        {"content_block_start", "{\"type\":\"content_block_start\",\"content_block\":"
                                "{\"type\":\"tool_use\",\"id\":\"t0\",\"name\":\"f\","
                                "\"input\":{\"a\":1}}}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":1,"
                                "\"content_block\":{\"type\":\"tool_use\",\"name\":\"g\","
                                "\"input\":{\"b\":1}}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":"
                                "{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"b\\\":"
                                "2}\"}}"},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"}}"},
    };
    int rc;
    const char *err;
    char *log = RUN(ev, &rc, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "C:t0,f,{\"a\":1}|C:toolu_1,g,{\"b\":2}|D:0,0|");
    free(log);
}

static json_t *get(json_t *arr, size_t i, const char *key)
{
    return json_object_get(json_array_get(arr, i), key);
}

static const char *str(json_t *j)
{
    return json_string_value(j);
}

static void t_body(void **st)
{
    (void)st;
    /* system twice (joined), a call with text and two calls, two tool results in a row, then
     * user text (same user turn), a call with bad arguments, its result, two user messages */
    json_t *msgs =
        json_pack("[{s:s,s:s},{s:s,s:s},{s:s,s:s},"
                  "{s:s,s:s,s:[{s:s,s:s,s:s},{s:s,s:s,s:s}]},"
                  "{s:s,s:s,s:s},{s:s,s:s,s:s},{s:s,s:s},"
                  "{s:s,s:n,s:[{s:s,s:s,s:s}]},{s:s,s:s,s:s},{s:s,s:s},{s:s,s:s}]",
                  "role", "system", "content", "be brief",                  /* 0 */
                  "role", "user", "content", "weather?",                    /* 1 */
                  "role", "system", "content", "be kind",                   /* 2 */
                  "role", "assistant", "content", "Checking", "tool_calls", /* 3 */
                  "id", "toolu_1", "name", "get_weather", "arguments", "{\"l\":\"Paris\"}", "id",
                  "toolu_2", "name", "get_time", "arguments", "{}", "role", "tool", "tool_call_id",
                  "toolu_1", "content", "sunny",                                /* 4 */
                  "role", "tool", "tool_call_id", "toolu_2", "content", "noon", /* 5 */
                  "role", "user", "content", "and tomorrow?",                   /* 6 */
                  "role", "assistant", "content", "tool_calls",                 /* 7 */
                  "id", "toolu_3", "name", "get_weather", "arguments", "not json", "role", "tool",
                  "tool_call_id", "toolu_3", "content", "rain",      /* 8 */
                  "role", "assistant", "content", "Rain.",           /* 9 */
                  "role", "assistant", "content", "Anything else?"); /* 10 */
    assert_non_null(msgs);
    json_t *tools =
        json_pack("[{s:s,s:s,s:{s:s,s:{}}},{s:s}]", "name", "get_weather", "description", "d",
                  "parameters", "type", "object", "properties", "name", "get_time");
    llm_request req = {.model = "claude-sonnet-4-5", .messages = msgs, .tools = tools};
    req.tool_choice = "get_weather";
    req.max_tokens = 1024;
    char *body = ant_body(&req);
    assert_non_null(body);
    json_t *b = json_loads(body, 0, NULL);
    assert_non_null(b);
    assert_string_equal(str(json_object_get(b, "model")), "claude-sonnet-4-5");
    assert_int_equal(json_integer_value(json_object_get(b, "max_tokens")), 1024);
    assert_true(json_is_true(json_object_get(b, "stream")));
    assert_string_equal(str(json_object_get(b, "system")), "be brief\n\nbe kind");

    json_t *m = json_object_get(b, "messages");
    assert_int_equal(json_array_size(m), 6);
    const char *roles[] = {"user", "assistant", "user", "assistant", "user", "assistant"};
    for (size_t i = 0; i < 6; i++)
        assert_string_equal(str(get(m, i, "role")), roles[i]);
    assert_string_equal(str(get(m, 0, "content")), "weather?");

    json_t *a = get(m, 1, "content"); /* text, then the two tool_use blocks */
    assert_int_equal(json_array_size(a), 3);
    assert_string_equal(str(get(a, 0, "type")), "text");
    assert_string_equal(str(get(a, 0, "text")), "Checking");
    assert_string_equal(str(get(a, 1, "type")), "tool_use");
    assert_string_equal(str(get(a, 1, "id")), "toolu_1");
    assert_string_equal(str(get(a, 1, "name")), "get_weather");
    assert_string_equal(str(json_object_get(get(a, 1, "input"), "l")), "Paris");
    assert_true(json_is_object(get(a, 2, "input")));
    assert_int_equal(json_object_size(get(a, 2, "input")), 0);

    json_t *u = get(m, 2, "content"); /* both results, then the text, in one user message */
    assert_int_equal(json_array_size(u), 3);
    assert_string_equal(str(get(u, 0, "type")), "tool_result");
    assert_string_equal(str(get(u, 0, "tool_use_id")), "toolu_1");
    assert_string_equal(str(get(u, 0, "content")), "sunny");
    assert_string_equal(str(get(u, 1, "tool_use_id")), "toolu_2");
    assert_string_equal(str(get(u, 1, "content")), "noon");
    assert_string_equal(str(get(u, 2, "type")), "text");
    assert_string_equal(str(get(u, 2, "text")), "and tomorrow?");

    a = get(m, 3, "content"); /* no text: only the call; invalid arguments → {} */
    assert_int_equal(json_array_size(a), 1);
    assert_string_equal(str(get(a, 0, "id")), "toolu_3");
    assert_true(json_is_object(get(a, 0, "input")));
    assert_int_equal(json_object_size(get(a, 0, "input")), 0);
    u = get(m, 4, "content");
    assert_int_equal(json_array_size(u), 1);
    assert_string_equal(str(get(u, 0, "tool_use_id")), "toolu_3");

    a = get(m, 5, "content"); /* two assistant texts merged */
    assert_int_equal(json_array_size(a), 2);
    assert_string_equal(str(get(a, 0, "text")), "Rain.");
    assert_string_equal(str(get(a, 1, "text")), "Anything else?");

    json_t *t = json_object_get(b, "tools");
    assert_int_equal(json_array_size(t), 2);
    assert_string_equal(str(get(t, 0, "name")), "get_weather");
    assert_string_equal(str(get(t, 0, "description")), "d");
    assert_string_equal(str(json_object_get(get(t, 0, "input_schema"), "type")), "object");
    assert_true(json_is_object(json_object_get(get(t, 0, "input_schema"), "properties")));
    assert_null(get(t, 0, "parameters"));
    assert_string_equal(str(json_object_get(get(t, 1, "input_schema"), "type")), "object");
    json_t *tc = json_object_get(b, "tool_choice");
    assert_string_equal(str(json_object_get(tc, "type")), "tool");
    assert_string_equal(str(json_object_get(tc, "name")), "get_weather");
    json_decref(b);
    free(body);

    /* no system, no tools, no tool_choice; max_tokens defaults */
    json_t *plain = json_pack("[{s:s,s:s}]", "role", "user", "content", "hi");
    llm_request preq = {.model = "m", .messages = plain};
    body = ant_body(&preq);
    assert_non_null(body);
    b = json_loads(body, 0, NULL);
    assert_null(json_object_get(b, "system"));
    assert_null(json_object_get(b, "tools"));
    assert_null(json_object_get(b, "tool_choice"));
    assert_int_equal(json_integer_value(json_object_get(b, "max_tokens")), ANT_DEFAULT_MAX_TOK);
    assert_string_equal(str(get(json_object_get(b, "messages"), 0, "content")), "hi");
    json_decref(b);
    free(body);
    json_decref(plain);

    /* malformed message lists are refused */
    const char *bad[] = {
        "[{\"role\":\"user\",\"content\":5}]",
        "[{\"role\":\"robot\",\"content\":\"x\"}]",
        "[{\"content\":\"x\"}]",
        "[{\"role\":\"tool\",\"content\":\"x\"}]",
        "[{\"role\":\"tool\",\"tool_call_id\":\"t\"}]",
        "[{\"role\":\"system\",\"content\":null}]",
        "[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"t\",\"arguments\":\"{}\"}]}]",
        "{\"role\":\"user\",\"content\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *bm = json_loads(bad[i], 0, NULL);
        assert_non_null(bm);
        llm_request breq = {.model = "m", .messages = bm};
        char *s = ant_body(&breq);
        if (s)
            fail_msg("accepted %s: %s", bad[i], s);
        json_decref(bm);
    }
    /* a tool without a name */
    json_t *badt = json_pack("[{s:s}]", "description", "x");
    llm_request treq = {.model = "m", .messages = msgs, .tools = badt};
    assert_null(ant_body(&treq));
    json_decref(badt);
    json_decref(msgs);
    json_decref(tools);
}

int main(void)
{
    json_object_seed(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_sample),      cmocka_unit_test(t_usage),    cmocka_unit_test(t_errors),
        cmocka_unit_test(t_many_blocks), cmocka_unit_test(t_tolerant), cmocka_unit_test(t_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
