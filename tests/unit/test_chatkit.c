/* Encoders, parsers and the demo model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "chatkit/chatkit.h"
#include "llm/provider.h"
#include "mcp/result.h"
#include "util/config.h"
#include "util/map.h"

static void t_thread_json(void **st)
{
    (void)st;
    store_thread t = {0};
    strcpy(t.id, "thr_1");
    t.created_us = 1779193696000001LL;
    t.status_json = "{\"type\":\"locked\",\"reason\":\"x\"}";
    t.metadata_json = "{\"secret\":1}";
    buf b = BUF_INIT(0);
    assert_int_equal(ck_thread_json(&b, &t, NULL), 0);
    /* no title key, no allowed_image_domains key, metadata always {} */
    assert_string_equal(b.data, "{\"id\":\"thr_1\",\"created_at\":\"2026-05-19T12:28:16.000001Z\","
                                "\"status\":{\"type\":\"locked\",\"reason\":\"x\"},\"metadata\":{},"
                                "\"items\":{\"data\":[],\"has_more\":false}}");
    buf_reset(&b);
    t.title = "Hé \"quoted\"";
    t.allowed_image_domains = "[\"a.example\"]";
    store_item one = {.json = "{\"id\":\"m\"}"};
    store_item_page page = {&one, 1, 1, "m"};
    assert_int_equal(ck_thread_json(&b, &t, &page), 0);
    assert_string_equal(b.data,
                        "{\"title\":\"Hé \\\"quoted\\\"\",\"id\":\"thr_1\",\"created_at\":"
                        "\"2026-05-19T12:28:16.000001Z\",\"status\":{\"type\":\"locked\",\"reason\":"
                        "\"x\"},\"allowed_image_domains\":[\"a.example\"],\"metadata\":{},\"items\":"
                        "{\"data\":[{\"id\":\"m\"}],\"has_more\":true,\"after\":\"m\"}}");
    buf_free(&b);
}

static void t_items_page(void **st)
{
    (void)st;
    store_item items[3] = {{.json = "{\"id\":\"a\"}"},
                           {.json = "{\"id\":\"h\"}", .hidden = 1},
                           {.json = "{\"id\":\"b\"}"}};
    store_item_page p = {items, 3, 0, ""};
    buf b = BUF_INIT(0);
    ck_items_page_json(&b, &p);
    assert_string_equal(b.data, "{\"data\":[{\"id\":\"a\"},{\"id\":\"b\"}],\"has_more\":false}");
    buf_reset(&b);
    p.has_more = 1;
    strcpy(p.after, "b");
    ck_items_page_json(&b, &p);
    assert_string_equal(b.data,
                        "{\"data\":[{\"id\":\"a\"},{\"id\":\"b\"}],\"has_more\":true,\"after\":\"b\"}");
    buf_reset(&b);
    store_item_page hidden_only = {items + 1, 1, 1, "h"};
    ck_items_page_json(&b, &hidden_only); /* filtered after paging: empty page, has_more kept */
    assert_string_equal(b.data, "{\"data\":[],\"has_more\":true,\"after\":\"h\"}");
    buf_free(&b);
}

static void t_lax_int(void **st)
{
    (void)st;
    long long v;
    json_t *j = json_string("5");
    assert_int_equal(ck_lax_int(j, &v), 0);
    assert_int_equal(v, 5);
    json_decref(j);
    j = json_integer(7);
    assert_int_equal(ck_lax_int(j, &v), 0);
    assert_int_equal(v, 7);
    json_decref(j);
    j = json_string("5x");
    assert_int_not_equal(ck_lax_int(j, &v), 0);
    json_decref(j);
    j = json_real(1.5);
    assert_int_not_equal(ck_lax_int(j, &v), 0);
    json_decref(j);
    j = json_true();
    assert_int_not_equal(ck_lax_int(j, &v), 0);
}

static void t_config(void **st)
{
    (void)st;
    size_t n;
    assert_int_equal(config_parse_size("1MiB", &n), 0);
    assert_int_equal(n, 1048576);
    assert_int_equal(config_parse_size("25MB", &n), 0);
    assert_int_equal(n, 25000000);
    assert_int_equal(config_parse_size("64k", &n), 0);
    assert_int_equal(n, 65536);
    assert_int_not_equal(config_parse_size("abc", &n), 0);
    assert_int_not_equal(config_parse_size("-1", &n), 0);
    assert_int_not_equal(config_parse_size("99999999999999999999G", &n), 0);
    char host[64];
    int port;
    assert_int_equal(config_parse_listen("127.0.0.1:8080", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8080);
    assert_int_equal(config_parse_listen("[::1]:0", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 0);
    assert_int_equal(config_parse_listen("localhost:1", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_not_equal(config_parse_listen("8080", host, sizeof host, &port), 0);
    assert_int_not_equal(config_parse_listen("h:99999", host, sizeof host, &port), 0);

    setenv("CHATKIT_MAX_BODY_BYTES", "nope", 1);
    config c;
    char err[256];
    assert_int_not_equal(config_load(&c, err, sizeof err), 0);
    assert_non_null(strstr(err, "CHATKIT_MAX_BODY_BYTES"));
    config_free(&c);
    unsetenv("CHATKIT_MAX_BODY_BYTES");
    setenv("OPENAI_API_KEY", "sk-secret-value", 1);
    assert_int_equal(config_load(&c, err, sizeof err), 0);
    assert_int_equal(config_flag(&c, "data-dir", "/tmp/x", err, sizeof err), 0);
    assert_int_equal(config_flag(&c, "nope", "1", err, sizeof err), 1);
    assert_int_equal(config_finish(&c, err, sizeof err), 0);
    assert_string_equal(c.database_url, "sqlite:/tmp/x/chatkitd.db");
    char *dump = config_dump(&c);
    assert_null(strstr(dump, "sk-secret-value"));
    assert_non_null(strstr(dump, "\"OPENAI_API_KEY\": \"***\""));
    free(dump);
    config_free(&c);
    unsetenv("OPENAI_API_KEY");
}

static void t_auth(void **st)
{
    (void)st;
    char h[AUTH_HASH_HEX];
    auth_token_hash("abc", 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    char t1[AUTH_TOKEN_MAX], t2[AUTH_TOKEN_MAX];
    auth_token_new(t1);
    auth_token_new(t2);
    assert_int_equal(strlen(t1), 4 + 43);
    assert_string_not_equal(t1, t2);
    const char *tok;
    assert_int_equal(auth_bearer("Bearer abc ", &tok), 3);
    assert_memory_equal(tok, "abc", 3);
    assert_int_equal(auth_bearer("bearer  x", &tok), 1);
    assert_int_equal(auth_bearer("Basic abc", &tok), -1);
    assert_int_equal(auth_bearer("Bearer ", &tok), -1);
    assert_int_equal(auth_bearer(NULL, &tok), -1);
}

static void t_map(void **st)
{
    (void)st;
    map m = MAP_INIT;
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        map_put(&m, key, (void *)(intptr_t)(i + 1));
    }
    for (int i = 0; i < 1000; i += 2) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal((intptr_t)map_del(&m, key), i + 1);
    }
    assert_int_equal(m.len, 500);
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal((intptr_t)map_get(&m, key), i % 2 ? i + 1 : 0);
    }
    /* reuse after many deletes (tombstones) */
    for (int round = 0; round < 50; round++) {
        map_put(&m, "churn", (void *)1);
        assert_non_null(map_del(&m, "churn"));
    }
    assert_null(map_get(&m, "churn"));
    map_free(&m);
}

/* ---- demo provider driven on a real loop ---- */
typedef struct demo_out {
    buf text;
    int done, error, retryable, tools;
    char tool[32];
} demo_out;

static void d_text(void *ud, const char *d, size_t n) { buf_append(&((demo_out *)ud)->text, d, n); }
static void d_tool(void *ud, const char *id, const char *name, const char *args)
{
    demo_out *o = ud;
    o->tools++;
    snprintf(o->tool, sizeof o->tool, "%s", name);
    assert_non_null(id);
    assert_string_equal(args, "{}");
}
static void d_done(void *ud, const llm_usage *u)
{
    ((demo_out *)ud)->done++;
    assert_true(u->output_tokens > 0);
}
static void d_error(void *ud, const char *msg, int retryable, unsigned retry_after_ms)
{
    (void)retry_after_ms;
    demo_out *o = ud;
    o->error++;
    o->retryable = retryable;
    assert_non_null(msg);
}
static const llm_callbacks dcb = {d_text, d_tool, d_done, d_error};

static demo_out run_demo(const char *text)
{
    demo_out o = {.text = BUF_INIT(0)};
    uv_loop_t loop;
    uv_loop_init(&loop);
    json_t *msgs = json_pack("[{s:s,s:s}]", "role", "user", "content", text);
    const char *model;
    const llm_provider *p = llm_provider_find("demo", &model);
    llm_request req = {.model = model, .messages = msgs, .delay_ms = 1};
    p->start(&loop, &req, &dcb, &o);
    json_decref(msgs);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return o;
}

static void t_demo(void **st)
{
    (void)st;
    demo_out o = run_demo("héllo wörld");
    assert_int_equal(o.done, 1);
    assert_int_equal(o.error, 0);
    assert_non_null(strstr(o.text.data, "You said: \"héllo wörld\". "));
    buf_free(&o.text);

    o = run_demo("please FAIL now");
    assert_int_equal(o.error, 1);
    assert_int_equal(o.retryable, 1);
    assert_int_equal(o.done, 0);
    assert_int_equal(o.text.len, 0);
    buf_free(&o.text);

    o = run_demo("run the client tool");
    assert_int_equal(o.tools, 1);
    assert_string_equal(o.tool, "get_selection");
    assert_int_equal(o.done, 1);
    assert_int_equal(o.text.len, 0);
    buf_free(&o.text);

    o = run_demo("a slow widget");
    assert_string_equal(o.tool, "demo_widget");
    assert_int_equal(o.done, 1);
    assert_true(o.text.len > 0);
    buf_free(&o.text);

    const char *m;
    assert_ptr_equal(llm_provider_find("openai:gpt-4.1", &m), &llm_openai_provider);
    assert_string_equal(m, "gpt-4.1");
    assert_null(llm_provider_find("nosuch:model", &m)); /* unknown providers are refused */
    assert_string_equal(m, "nosuch:model");
    assert_null(llm_provider_find("openai:", &m));
}

static void t_demo_cancel(void **st)
{
    (void)st;
    demo_out o = {.text = BUF_INIT(0)};
    uv_loop_t loop;
    uv_loop_init(&loop);
    json_t *msgs = json_pack("[{s:s,s:s}]", "role", "user", "content", "slow please");
    llm_request req = {.model = "demo", .messages = msgs, .delay_ms = 50};
    llm_call *c = llm_demo_provider.start(&loop, &req, &dcb, &o);
    json_decref(msgs);
    uv_run(&loop, UV_RUN_NOWAIT); /* first delta at most */
    llm_demo_provider.cancel(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(o.done + o.error, 0); /* nothing after cancel */
    uv_loop_close(&loop);
    buf_free(&o.text);
}

/* MCP tool results: the model's text and the widgets (mcp/result.c). */
static void t_mcp_result(void **st)
{
    (void)st;
    json_t *r = json_loads(
        "{\"content\":["
        "{\"type\":\"text\",\"text\":\"Card: Hi\"},"
        "{\"type\":\"resource\",\"resource\":{\"uri\":\"ui://w/1\",\"mimeType\":"
        "\"application/vnd.ui.widget+json\",\"text\":\"{\\\"widget\\\":{\\\"type\\\":\\\"Card\\\","
        "\\\"children\\\":[]},\\\"copy_text\\\":\\\"Hi\\\"}\"}},"
        /* {"widget":{"type":"ListView","children":[]},"copy_text":"L"} in base64 */
        "{\"type\":\"resource\",\"resource\":{\"uri\":\"ui://w/2\",\"mimeType\":"
        "\"application/vnd.ui.widget+json\",\"blob\":"
        "\"eyJ3aWRnZXQiOnsidHlwZSI6Ikxpc3RWaWV3IiwiY2hpbGRyZW4iOltdfSwiY29weV90ZXh0IjoiTCJ9\"}},"
        "{\"type\":\"resource\",\"resource\":{\"uri\":\"ui://app\",\"mimeType\":"
        "\"text/html;profile=mcp-app\",\"text\":\"<p>x</p>\"}},"
        "{\"type\":\"resource\",\"resource\":{\"uri\":\"ui://bad\",\"mimeType\":"
        "\"application/vnd.ui.widget+json\",\"text\":\"{not json\"}},"
        "{\"type\":\"resource\",\"resource\":{\"uri\":\"ui://root\",\"mimeType\":"
        "\"application/vnd.ui.widget+json\",\"text\":\"{\\\"widget\\\":{\\\"type\\\":\\\"Text\\\"}}\"}},"
        "{\"type\":\"resource\",\"resource\":{\"uri\":\"http://x/w\",\"mimeType\":"
        "\"application/vnd.ui.widget+json\",\"text\":\"{\\\"widget\\\":{\\\"type\\\":\\\"Card\\\"}}\"}},"
        "{\"type\":\"image\",\"data\":\"iVBO\",\"mimeType\":\"image/png\"},"
        "{\"type\":\"resource_link\",\"uri\":\"test://r\",\"name\":\"readme\"}]}",
        0, NULL);
    assert_non_null(r);
    json_t *w = mcp_result_widgets(r, NULL);
    assert_int_equal(json_array_size(w), 2);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(w, 0), "widget"), "type")),
                        "Card");
    assert_string_equal(json_string_value(json_object_get(json_array_get(w, 1), "copy_text")), "L");
    json_decref(w);
    char *text = mcp_result_text(r, 1 << 20, NULL);
    assert_non_null(strstr(text, "Card: Hi\n[widget shown to the user] Hi\n"));
    assert_non_null(strstr(text, "[widget shown to the user] L\n"));
    assert_non_null(strstr(text, "[resource ui://app]\n<p>x</p>"));
    assert_non_null(strstr(text, "[resource ui://bad (application/vnd.ui.widget+json): a broken widget]"));
    assert_non_null(strstr(text, "[image image/png]"));
    assert_non_null(strstr(text, "[link readme: test://r]"));
    free(text);
    /* cut at a character boundary, with a note */
    json_decref(r);
    r = json_pack("{s:[{s:s,s:s}],s:b}", "content", "type", "text", "text", "é\xc3\xa9\xc3\xa9",
                  "isError", 1);
    text = mcp_result_text(r, 10, NULL);
    assert_string_equal(text, "Error: \xc3\xa9\n[... cut: the tool's answer is longer]");
    free(text);
    json_decref(r);
    /* no content: structuredContent */
    r = json_pack("{s:{s:i}}", "structuredContent", "n", 5);
    text = mcp_result_text(r, 100, NULL);
    assert_string_equal(text, "{\"n\":5}");
    free(text);
    json_decref(r);
}

int main(void)
{
    json_object_seed(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_thread_json), cmocka_unit_test(t_items_page),
        cmocka_unit_test(t_lax_int),     cmocka_unit_test(t_config),
        cmocka_unit_test(t_auth),        cmocka_unit_test(t_map),
        cmocka_unit_test(t_demo),        cmocka_unit_test(t_demo_cancel),
        cmocka_unit_test(t_mcp_result),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
