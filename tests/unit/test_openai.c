/* OpenAI Chat Completions: request body and stream decoding (samples: mcp-and-llm.md §4.1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "llm/openai.h"

#include "llm_rec.h"

/* Runs a whole stream (payloads separated by \n) and returns the log; rc of the last step. */
static char *run(const char *const *events, size_t n, int *rc_out, const char **err)
{
    rec r = {BUF_INIT(0)};
    llm_dec d;
    llm_dec_init(&d, &rcb, &r);
    char eb[256];
    int rc = 0;
    *err = NULL;
    for (size_t i = 0; i < n && rc >= 0; i++)
        rc = oai_dec_event(&d, NULL, events[i], strlen(events[i]), eb, sizeof eb, err);
    if (rc >= 0)
        rc = llm_dec_end(&d, "call_", err);
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

static void t_text_and_usage(void **st)
{
    (void)st;
    const char *ev[] = {
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
        "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}],"
        "\"usage\":null}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}],"
        "\"usage\":null}",
        "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,"
        "\"total_tokens\":29}}",
        "[DONE]"};
    int rc;
    const char *err;
    char *log = RUN(ev, &rc, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "T:Hel|T:lo|D:19,10|");
    free(log);

    /* nothing after [DONE] counts (not text, not an error); negative counts are 0 */
    const char *after[] = {
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":-3,\"completion_tokens\":2}}",
        "[DONE]",
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"late\"}}]}",
        "{\"error\":{\"message\":\"late\"}}"};
    log = RUN(after, &rc, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "T:ok|D:0,2|");
    free(log);
}

static void t_tool_calls(void **st)
{
    (void)st;
    const char *ev[] = {
        "{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,"
        "\"tool_calls\":[{\"index\":0,\"id\":\"call_abc\",\"type\":\"function\",\"function\":"
        "{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
        "{\"arguments\":\"{\\\"loc\"}}]},\"finish_reason\":null}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
        "{\"arguments\":\"ation\\\":\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_def\","
        "\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]},"
        "\"finish_reason\":null}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}",
        "[DONE]"};
    int rc;
    const char *err;
    char *log = RUN(ev, &rc, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "C:call_abc,get_weather,{\"location\":\"Paris\"}|"
                             "C:call_def,get_time,{}|D:0,0|");
    free(log);
}

static void t_tolerant(void **st)
{
    (void)st;
    /* no index, arguments as an object, no [DONE] but a finish_reason */
    const char *ev[] = {"{\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"c1\",\"function\":"
                        "{\"name\":\"f\",\"arguments\":{\"a\":1}}}]},\"finish_reason\":"
                        "\"tool_calls\"}]}"};
    int rc;
    const char *err;
    char *log = RUN(ev, &rc, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(log, "C:c1,f,{\"a\":1}|D:0,0|");
    free(log);
}

static void t_errors(void **st)
{
    (void)st;
    int rc;
    const char *err;
    const char *mid[] = {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}",
                         "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\"}}"};
    char *log = RUN(mid, &rc, &err);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "Rate limit reached"));
    assert_string_equal(log, "T:Hi|"); /* the text before the error was delivered */
    free(log);

    const char *cut[] = {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}"};
    log = RUN(cut, &rc, &err);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "cut off"));
    assert_string_equal(log, "T:Hi|"); /* no on_done for a cut stream */
    free(log);

    const char *bad[] = {"{not json"};
    log = RUN(bad, &rc, &err);
    assert_true(rc < 0);
    assert_non_null(strstr(err, "malformed"));
    free(log);

    const char *many[] = {"{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":64,\"id\":\"x\","
                          "\"function\":{\"name\":\"f\"}}]}}]}"};
    log = RUN(many, &rc, &err);
    assert_true(rc < 0);
    free(log);
}

static void t_body(void **st)
{
    (void)st;
    json_t *msgs = json_pack(
        "[{s:s,s:s},{s:s,s:s},{s:s,s:[{s:s,s:s,s:s}]},{s:s,s:s,s:s}]", "role", "system",
        "content", "be brief", "role", "user", "content", "weather?", "role", "assistant",
        "tool_calls", "id", "call_1", "name", "get_weather", "arguments", "{\"l\":1}", "role",
        "tool", "tool_call_id", "call_1", "content", "sunny");
    json_t *tools = json_pack("[{s:s,s:s,s:{s:s}}]", "name", "get_weather", "description", "d",
                              "parameters", "type", "object");
    llm_request req = {.model = "gpt-4.1-mini", .messages = msgs, .tools = tools};
    req.tool_choice = "get_weather";
    char *body = oai_chat_body(&req);
    assert_non_null(body);
    json_t *b = json_loads(body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(b, "model")), "gpt-4.1-mini");
    assert_true(json_is_true(json_object_get(b, "stream")));
    assert_true(json_is_true(json_object_get(json_object_get(b, "stream_options"), "include_usage")));
    json_t *m = json_object_get(b, "messages");
    assert_int_equal(json_array_size(m), 4);
    json_t *a = json_array_get(m, 2);
    assert_true(json_is_null(json_object_get(a, "content")));
    json_t *tc = json_array_get(json_object_get(a, "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(tc, "type")), "function");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")),
        "{\"l\":1}");
    json_t *t = json_array_get(m, 3);
    assert_string_equal(json_string_value(json_object_get(t, "tool_call_id")), "call_1");
    json_t *fn = json_object_get(json_array_get(json_object_get(b, "tools"), 0), "function");
    assert_string_equal(json_string_value(json_object_get(fn, "name")), "get_weather");
    assert_string_equal(json_string_value(json_object_get(json_object_get(
                            json_object_get(b, "tool_choice"), "function"), "name")),
                        "get_weather");
    json_decref(b);
    free(body);
    /* a malformed message list is refused */
    json_t *badm = json_pack("[{s:s,s:i}]", "role", "user", "content", 5);
    llm_request bad = {.model = "m", .messages = badm};
    assert_null(oai_chat_body(&bad));
    json_decref(badm);
    json_decref(msgs);
    json_decref(tools);
}

int main(void)
{
    json_object_seed(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_text_and_usage), cmocka_unit_test(t_tool_calls),
        cmocka_unit_test(t_tolerant),       cmocka_unit_test(t_errors),
        cmocka_unit_test(t_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
