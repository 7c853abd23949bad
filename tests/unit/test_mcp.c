/* MCP client tests (src/mcp/client.c, src/mcp/stdio.c) against tests/fixtures/mcp_fake.py, a
 * scripted stdio MCP server. Callbacks never call cmocka (its asserts longjmp out of uv_run);
 * they record what they saw, and the first broken rule, for the test to check. */
/* clang-format off: cmocka.h needs these first */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mcp/mcp.h"
#include "mcp/transport.h"
#include "util/log.h"

static char fake_path[PATH_MAX];
static int in_api; /* set around mcp_* calls: a callback seeing it ran inside the call */

#define API(expr)                                                                                  \
    do {                                                                                           \
        in_api = 1;                                                                                \
        expr;                                                                                      \
        in_api = 0;                                                                                \
    } while (0)

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int find_fixture(void)
{
    const char *rel = "tests/fixtures/mcp_fake.py";
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = 0;
    char *d = exe;
    for (int up = 0; up < 8; up++) {
        d = dirname(d);
        snprintf(fake_path, sizeof fake_path, "%s/%s", d, rel);
        if (access(fake_path, R_OK) == 0)
            return 0;
        if (strcmp(d, "/") == 0)
            break;
    }
    return -1;
}

/* ---- loop ---- */

typedef struct tctx {
    uv_loop_t loop;
    uv_timer_t tick; /* makes uv_run(ONCE) return regularly so deadlines are checked */
    mcp_server *s;
} tctx;

static void on_tick(uv_timer_t *t) {}

static void tctx_init(tctx *t)
{
    memset(t, 0, sizeof *t);
    assert_int_equal(uv_loop_init(&t->loop), 0);
    uv_timer_init(&t->loop, &t->tick);
    uv_timer_start(&t->tick, on_tick, 10, 10);
}

/* Frees the server (if the test did not) and checks that every handle closed: the child
 * must have exited on stdin EOF for uv_run to return. */
static void tctx_fini(tctx *t)
{
    if (t->s)
        mcp_server_free(t->s);
    t->s = NULL;
    uv_close((uv_handle_t *)&t->tick, NULL);
    long long t0 = now_ms();
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_true(now_ms() - t0 < 1500); /* no SIGTERM/SIGKILL wait */
    assert_int_equal(uv_loop_close(&t->loop), 0);
}

#define RUN_UNTIL(t, cond, ms)                                                                     \
    do {                                                                                           \
        long long deadline_ = now_ms() + (ms);                                                     \
        while (!(cond) && now_ms() < deadline_)                                                    \
            uv_run(&(t)->loop, UV_RUN_ONCE);                                                       \
    } while (0)

static void run_for(tctx *t, int ms)
{
    long long deadline = now_ms() + ms;
    while (now_ms() < deadline)
        uv_run(&t->loop, UV_RUN_ONCE);
}

static mcp_server *server(tctx *t, const char *flags, const mcp_server_config *base)
{
    char cmd[PATH_MAX + 256];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' %s", fake_path, flags);
    mcp_server_config c = base ? *base : (mcp_server_config){0};
    c.label = "fake";
    if (!c.command)
        c.command = cmd;
    t->s = mcp_server_new(&t->loop, &c);
    return t->s;
}

/* ---- records ---- */

typedef struct rd {
    int calls, rc, inside;
    char err[512];
    size_t ntools; /* tools listed when the callback ran */
    tctx *t;
} rd;

static void on_ready(void *ud, int rc, const char *err)
{
    rd *r = ud;
    r->calls++;
    r->rc = rc;
    r->inside |= in_api;
    snprintf(r->err, sizeof r->err, "%s", err ? err : "");
    if (r->t && r->t->s)
        r->ntools = json_array_size(mcp_server_tools(r->t->s));
}

typedef struct cr {
    tctx *t;
    mcp_call *c;
    int done, progress, inside, cancelled, is_error;
    double last_p, total;
    char pmsg[64];
    char text[20000];
    char err[512];
    long long count; /* structuredContent.count */
    char elicit_actions[128]; /* structuredContent.elicit, compact JSON */
    char fail[256];  /* the first broken rule */
    /* elicitation */
    int elicits;
    mcp_elicit *e; /* the last one, until the test responds */
    char emsg[128];
    int schema_ok;
    /* behaviour */
    int cancel_on_progress;
    int free_server_on_done;
    const char *respond_in_cb; /* answer from inside on_elicit */
    int cancel_on_elicit;      /* mcp_call_cancel from inside on_elicit */
} cr;

static void cr_fail(cr *r, const char *what)
{
    if (!r->fail[0])
        snprintf(r->fail, sizeof r->fail, "%s", what);
}

static void cb_progress(void *ud, double p, double total, const char *msg)
{
    cr *r = ud;
    r->progress++;
    r->inside |= in_api;
    if (r->cancelled)
        cr_fail(r, "progress after cancel");
    if (r->done)
        cr_fail(r, "progress after done");
    if (p <= r->last_p && r->progress > 1)
        cr_fail(r, "progress did not increase");
    r->last_p = p;
    r->total = total;
    snprintf(r->pmsg, sizeof r->pmsg, "%s", msg ? msg : "(null)");
    if (r->cancel_on_progress) {
        mcp_call_cancel(r->c);
        mcp_call_cancel(r->c); /* twice is harmless */
        r->cancelled = 1;
    }
}

static void cb_done(void *ud, const json_t *result, const char *err)
{
    cr *r = ud;
    r->done++;
    r->inside |= in_api;
    if (r->done > 1)
        cr_fail(r, "done twice");
    if (r->cancelled)
        cr_fail(r, "done after cancel");
    if (!result == !err)
        cr_fail(r, "exactly one of result and err expected");
    snprintf(r->err, sizeof r->err, "%s", err ? err : "");
    if (result) {
        const json_t *c0 = json_array_get(json_object_get(result, "content"), 0);
        const char *s = json_string_value(json_object_get(c0, "text"));
        snprintf(r->text, sizeof r->text, "%s", s ? s : "");
        r->is_error = json_is_true(json_object_get(result, "isError"));
        const json_t *sc = json_object_get(result, "structuredContent");
        r->count = json_integer_value(json_object_get(sc, "count"));
        char *ea = json_object_get(sc, "elicit") ? json_dumps(json_object_get(sc, "elicit"),
                                                              JSON_COMPACT)
                                                 : NULL;
        snprintf(r->elicit_actions, sizeof r->elicit_actions, "%s", ea ? ea : "");
        free(ea);
    }
    mcp_call_cancel(r->c); /* a no-op from inside on_done */
    if (r->free_server_on_done) {
        mcp_server_free(r->t->s);
        r->t->s = NULL;
    }
}

static void cb_elicit(void *ud, mcp_elicit *e, const char *message, const json_t *schema)
{
    cr *r = ud;
    r->elicits++;
    r->inside |= in_api;
    if (r->done)
        cr_fail(r, "elicitation after done");
    if (r->e)
        cr_fail(r, "a second elicitation while one is outstanding");
    snprintf(r->emsg, sizeof r->emsg, "%s", message ? message : "(null)");
    const json_t *props = json_object_get(schema, "properties");
    r->schema_ok =
        json_is_object(json_object_get(props, "name")) &&
        !strcmp(json_string_value(json_object_get(json_object_get(props, "age"), "type")),
                "integer") &&
        json_is_object(json_object_get(props, "vip")) &&
        json_array_size(json_object_get(json_object_get(props, "size"), "enum")) == 3 &&
        !strcmp(json_string_value(json_array_get(json_object_get(schema, "required"), 0)), "name");
    r->e = e;
    if (r->cancel_on_elicit) {
        mcp_call_cancel(r->c);
        r->cancelled = 1;
    }
    if (r->respond_in_cb) {
        mcp_elicit_respond(e, r->respond_in_cb, NULL);
        r->e = NULL;
    }
}

static const mcp_call_cb CB = {cb_progress, cb_done, NULL};
static const mcp_call_cb ECB = {cb_progress, cb_done, cb_elicit};

static void cr_init(cr *r, tctx *t)
{
    memset(r, 0, sizeof *r);
    r->t = t;
}

static mcp_call *call_cb(tctx *t, cr *r, const char *tool, const char *args_json,
                         const mcp_call_cb *cb)
{
    json_t *a = args_json ? json_loads(args_json, 0, NULL) : NULL;
    API(r->c = mcp_call_tool(t->s, tool, a, cb, r));
    json_decref(a);
    assert_non_null(r->c);
    return r->c;
}

static mcp_call *call(tctx *t, cr *r, const char *tool, const char *args_json)
{
    json_t *a = args_json ? json_loads(args_json, 0, NULL) : NULL;
    API(r->c = mcp_call_tool(t->s, tool, a, &CB, r));
    json_decref(a);
    assert_non_null(r->c);
    return r->c;
}

/* Calls and waits; checks no rule was broken. */
static void call_wait(tctx *t, cr *r, const char *tool, const char *args_json, int ms)
{
    call(t, r, tool, args_json);
    assert_int_equal(r->done, 0); /* never inside the call */
    RUN_UNTIL(t, r->done, ms);
    if (r->fail[0])
        fail_msg("%s", r->fail);
    assert_int_equal(r->done, 1);
    assert_int_equal(r->inside, 0);
}

static void wait_ready(tctx *t, rd *r)
{
    memset(r, 0, sizeof *r);
    r->t = t;
    API(mcp_server_ready(t->s, on_ready, r));
    assert_int_equal(r->calls, 0);
    RUN_UNTIL(t, r->calls, 5000);
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->inside, 0);
}

static int has_tool(const json_t *tools, const char *name)
{
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t)
    {
        if (!strcmp(json_string_value(json_object_get(t, "name")), name))
            return 1;
    }
    return 0;
}

/* ---- tests ---- */

static void test_split_command(void **state)
{
    char err[128];
    char **v =
        mcp_split_command("  a  \"b c\" 'd \"e' f\"g\"h \"\" \"x\\\"y\\\\\"  ", err, sizeof err);
    assert_non_null(v);
    assert_string_equal(v[0], "a");
    assert_string_equal(v[1], "b c");
    assert_string_equal(v[2], "d \"e");
    assert_string_equal(v[3], "fgh");
    assert_string_equal(v[4], "");
    assert_string_equal(v[5], "x\"y\\");
    assert_null(v[6]);
    free(v);
    assert_null(mcp_split_command("a 'b", err, sizeof err));
    assert_non_null(strstr(err, "unterminated"));
    assert_null(mcp_split_command("   ", err, sizeof err));
    assert_non_null(strstr(err, "empty"));
    v = mcp_split_command("x", err, sizeof err);
    assert_string_equal(v[0], "x");
    assert_null(v[1]);
    free(v);
}

static void test_ready_and_list(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "--no-list-changed", NULL);
    assert_null(mcp_server_tools(t.s));
    assert_string_equal(mcp_server_label(t.s), "fake");
    rd r;
    wait_ready(&t, &r);
    assert_int_equal(r.rc, 0);
    const json_t *tools = mcp_server_tools(t.s);
    assert_int_equal(json_array_size(tools), 8); /* two pages */
    const char *names[] = {"echo", "slow", "crash", "cancelled_count", "big", "env", "argv", "ask"};
    for (size_t i = 0; i < 8; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(tools, i), "name")),
                            names[i]);
    assert_non_null(json_object_get(json_array_get(tools, 0), "inputSchema"));
    assert_string_equal(mcp_server_instructions(t.s), "Fake server instructions.");
    assert_int_equal(mcp_server_busy(t.s), 0);

    /* ready again on a ready server: still from the loop */
    rd r2;
    wait_ready(&t, &r2);
    assert_int_equal(r2.rc, 0);

    /* a cancelled waiter is never called; the others are */
    rd r3 = {0}, r4 = {0};
    API(mcp_server_ready(t.s, on_ready, &r3));
    API(mcp_server_ready(t.s, on_ready, &r4));
    mcp_server_ready_cancel(t.s, &r3);
    RUN_UNTIL(&t, r4.calls, 2000);
    run_for(&t, 30);
    assert_int_equal(r3.calls, 0);
    assert_int_equal(r4.calls, 1);
    tctx_fini(&t);
}

static void test_call_echo(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "--no-list-changed", NULL);
    /* a call before ready starts the server; the text goes through JSON escaping (no raw
     * newline on the wire: the fake exits on a line that is not JSON) */
    cr r;
    cr_init(&r, &t);
    call(&t, &r, "echo", "{\"text\":\"hi \\\"there\\\"\\nline 2 \\u00fcn\\u00ef\"}");
    assert_int_equal(mcp_server_busy(t.s), 1);
    RUN_UNTIL(&t, r.done, 5000);
    if (r.fail[0])
        fail_msg("%s", r.fail);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.inside, 0);
    assert_string_equal(r.err, "");
    /* isError would carry the fake's complaint about our ping/sampling answers */
    assert_int_equal(r.is_error, 0);
    assert_string_equal(r.text, "hi \"there\"\nline 2 \xc3\xbcn\xc3\xaf");
    assert_int_equal(mcp_server_busy(t.s), 0);

    /* an unknown tool: a JSON-RPC error */
    cr r2;
    cr_init(&r2, &t);
    call_wait(&t, &r2, "no_such_tool", NULL, 5000);
    assert_non_null(strstr(r2.err, "the tool failed: Tool no_such_tool not found"));
    tctx_fini(&t);
}

static void test_progress(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "--no-list-changed", NULL);
    cr r;
    cr_init(&r, &t);
    call_wait(&t, &r, "slow", "{\"seconds\":0.3,\"steps\":3}", 5000);
    assert_string_equal(r.text, "slept");
    assert_int_equal(r.progress, 3);
    assert_true(r.last_p == 3);
    assert_true(r.total == 3);
    assert_string_equal(r.pmsg, "step 3");
    tctx_fini(&t);
}

static void test_call_timeout(void **state)
{
    tctx t;
    tctx_init(&t);
    mcp_server_config c = {.call_timeout_ms = 300};
    server(&t, "--no-list-changed", &c);
    rd rr;
    wait_ready(&t, &rr);
    cr r;
    cr_init(&r, &t);
    long long t0 = now_ms();
    call_wait(&t, &r, "slow", "{\"seconds\":3,\"steps\":2}", 5000);
    assert_true(now_ms() - t0 < 1500);
    assert_non_null(strstr(r.err, "did not answer within 0.3 s"));
    assert_int_equal(r.progress, 0);
    /* the server was told (notifications/cancelled) */
    cr r2;
    cr_init(&r2, &t);
    call_wait(&t, &r2, "cancelled_count", NULL, 5000);
    assert_string_equal(r2.err, "");
    assert_int_equal(r2.count, 1);
    tctx_fini(&t);
}

static void test_cancel(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "--no-list-changed", NULL);
    /* cancelled before it was sent: nothing reaches the server, no callback */
    cr r0;
    cr_init(&r0, &t);
    call(&t, &r0, "echo", "{\"text\":\"never\"}");
    mcp_call_cancel(r0.c);
    assert_int_equal(mcp_server_busy(t.s), 0);
    rd rr;
    wait_ready(&t, &rr);
    assert_int_equal(rr.rc, 0);

    /* cancelled at the first progress; the fake then sends more progress and its answer
     * anyway: both are dropped */
    cr r;
    cr_init(&r, &t);
    r.cancel_on_progress = 1;
    call(&t, &r, "slow", "{\"seconds\":0.6,\"steps\":3,\"respond_anyway\":true}");
    RUN_UNTIL(&t, r.cancelled, 5000);
    assert_int_equal(r.cancelled, 1);
    assert_int_equal(mcp_server_busy(t.s), 0);
    run_for(&t, 400);
    if (r.fail[0])
        fail_msg("%s", r.fail);
    assert_int_equal(r.done, 0);
    assert_int_equal(r.progress, 1);
    assert_int_equal(r0.done, 0);

    cr r2;
    cr_init(&r2, &t);
    call_wait(&t, &r2, "cancelled_count", NULL, 5000);
    assert_int_equal(r2.count, 1);
    tctx_fini(&t);
}

static void test_crash_restart(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "--no-list-changed", NULL);
    rd rr;
    wait_ready(&t, &rr);
    cr r;
    cr_init(&r, &t);
    call_wait(&t, &r, "crash", NULL, 5000);
    assert_non_null(strstr(r.err, "the MCP server fake stopped"));
    assert_non_null(strstr(r.err, "status 3"));
    assert_int_equal(mcp_server_busy(t.s), 0);

    /* the next call starts it again */
    cr r2;
    cr_init(&r2, &t);
    call_wait(&t, &r2, "echo", "{\"text\":\"back\"}", 5000);
    assert_string_equal(r2.err, "");
    assert_string_equal(r2.text, "back");

    /* two crashes in a row: the next use within 0.5 s fails fast, later it works */
    cr r3, r4, r5, r6;
    cr_init(&r3, &t);
    call_wait(&t, &r3, "crash", NULL, 5000);
    cr_init(&r4, &t);
    call_wait(&t, &r4, "crash", NULL, 5000);
    assert_non_null(strstr(r4.err, "stopped"));
    cr_init(&r5, &t);
    long long t0 = now_ms();
    call_wait(&t, &r5, "echo", "{\"text\":\"too soon\"}", 5000);
    assert_true(now_ms() - t0 < 200);
    assert_non_null(strstr(r5.err, "next attempt in"));
    rd rf;
    wait_ready(&t, &rf);
    assert_true(rf.rc < 0);
    assert_non_null(strstr(rf.err, "next attempt in"));
    run_for(&t, 550);
    cr_init(&r6, &t);
    call_wait(&t, &r6, "echo", "{\"text\":\"again\"}", 5000);
    assert_string_equal(r6.err, "");
    assert_string_equal(r6.text, "again");
    tctx_fini(&t);
}

static void test_bad_version(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "--bad-version", NULL);
    rd r;
    wait_ready(&t, &r);
    assert_true(r.rc < 0);
    assert_non_null(strstr(r.err, "\"1999-01-01\""));
    assert_non_null(strstr(r.err, "not support"));
    /* a call fails the same way */
    cr c;
    cr_init(&c, &t);
    call_wait(&t, &c, "echo", NULL, 5000);
    assert_non_null(strstr(c.err, "1999-01-01"));
    tctx_fini(&t);
}

static void test_garbage_skipped(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "--garbage --no-list-changed", NULL);
    rd r;
    wait_ready(&t, &r);
    assert_int_equal(r.rc, 0);
    cr c;
    cr_init(&c, &t);
    call_wait(&t, &c, "echo", "{\"text\":\"ok\"}", 5000);
    assert_string_equal(c.text, "ok");
    tctx_fini(&t);
}

static void test_list_changed(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "", NULL);
    rd r;
    wait_ready(&t, &r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.ntools, 8); /* ready with the first complete list */
    RUN_UNTIL(&t, json_array_size(mcp_server_tools(t.s)) == 9, 5000);
    assert_int_equal(json_array_size(mcp_server_tools(t.s)), 9);
    assert_true(has_tool(mcp_server_tools(t.s), "added_later"));
    assert_true(has_tool(mcp_server_tools(t.s), "echo"));
    tctx_fini(&t);
}

static void test_free_pending(void **state)
{
    /* calls in flight and a queued waiter: no callbacks after free; the child is reaped */
    tctx t;
    tctx_init(&t);
    server(&t, "--no-list-changed", NULL);
    rd rr;
    wait_ready(&t, &rr);
    cr slow;
    cr_init(&slow, &t);
    call(&t, &slow, "slow", "{\"seconds\":5,\"steps\":50}");
    RUN_UNTIL(&t, slow.progress, 5000);
    rd w = {0};
    API(mcp_server_ready(t.s, on_ready, &w));
    mcp_server_free(t.s);
    t.s = NULL;
    tctx_fini(&t);
    assert_int_equal(slow.done, 0);
    assert_int_equal(w.calls, 0);

    /* freed while starting, with a call waiting for ready (--no-init: it stays starting; a
     * fast machine used to finish the handshake and the call within the 20 ms) */
    tctx_init(&t);
    server(&t, "--no-init", NULL);
    cr early;
    cr_init(&early, &t);
    call(&t, &early, "echo", "{\"text\":\"x\"}");
    run_for(&t, 20);
    mcp_server_free(t.s);
    t.s = NULL;
    tctx_fini(&t);
    assert_int_equal(early.done, 0);

    /* freed from inside a callback, another call pending */
    tctx_init(&t);
    server(&t, "--no-list-changed", NULL);
    cr a, b;
    cr_init(&a, &t);
    cr_init(&b, &t);
    a.free_server_on_done = 1;
    call(&t, &b, "slow", "{\"seconds\":5,\"steps\":2}");
    call(&t, &a, "echo", "{\"text\":\"bye\"}");
    RUN_UNTIL(&t, a.done, 5000);
    assert_int_equal(a.done, 1);
    assert_null(t.s);
    tctx_fini(&t);
    assert_int_equal(b.done, 0);
}

static void test_init_timeout(void **state)
{
    tctx t;
    tctx_init(&t);
    mcp_server_config c = {.init_timeout_ms = 300};
    server(&t, "--no-init", &c);
    rd r;
    wait_ready(&t, &r);
    assert_true(r.rc < 0);
    assert_non_null(strstr(r.err, "did not start within 0.3 s"));
    tctx_fini(&t);
}

static void test_spawn_failure(void **state)
{
    tctx t;
    tctx_init(&t);
    mcp_server_config c = {.command = "/nonexistent/mcp-server --flag"};
    server(&t, "", &c);
    rd r;
    wait_ready(&t, &r);
    assert_true(r.rc < 0);
    assert_non_null(strstr(r.err, "could not be started"));
    assert_non_null(strstr(r.err, "/nonexistent/mcp-server"));
    cr k;
    cr_init(&k, &t);
    call_wait(&t, &k, "echo", NULL, 5000);
    assert_non_null(strstr(k.err, "could not be started"));
    tctx_fini(&t);

    tctx_init(&t);
    mcp_server_config q = {.command = "python3 'unterminated"};
    server(&t, "", &q);
    wait_ready(&t, &r);
    assert_true(r.rc < 0);
    assert_non_null(strstr(r.err, "unterminated"));
    tctx_fini(&t);
}

static void test_max_message(void **state)
{
    tctx t;
    tctx_init(&t);
    mcp_server_config c = {.max_message = 4096};
    server(&t, "--no-list-changed", &c);
    cr r;
    cr_init(&r, &t);
    call_wait(&t, &r, "big", "{\"bytes\":3000}", 5000);
    assert_int_equal(strlen(r.text), 3000);
    cr r2;
    cr_init(&r2, &t);
    call_wait(&t, &r2, "big", "{\"bytes\":10000}", 5000);
    assert_non_null(strstr(r2.err, "over 4096 bytes"));
    cr r3;
    cr_init(&r3, &t);
    call_wait(&t, &r3, "echo", "{\"text\":\"fine\"}", 5000);
    assert_string_equal(r3.text, "fine");
    tctx_fini(&t);
}

static void test_env_and_argv(void **state)
{
    setenv("MCP_FAKE_KEEP", "kept", 1);
    setenv("MCP_FAKE_OVER", "old", 1);
    const char *env[] = {"MCP_FAKE_OVER=new value", "MCP_FAKE_NEW=added", NULL};
    char cmd[PATH_MAX + 128];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 \"%s\" --no-list-changed --label \"a b\" 'c \"d'",
             fake_path);
    tctx t;
    tctx_init(&t);
    mcp_server_config c = {.command = cmd, .env = env};
    server(&t, "", &c);
    const char *want[][2] = {
        {"MCP_FAKE_KEEP", "kept"}, {"MCP_FAKE_OVER", "new value"}, {"MCP_FAKE_NEW", "added"}};
    for (int i = 0; i < 3; i++) {
        char args[128];
        snprintf(args, sizeof args, "{\"name\":\"%s\"}", want[i][0]);
        cr r;
        cr_init(&r, &t);
        call_wait(&t, &r, "env", args, 5000);
        assert_string_equal(r.text, want[i][1]);
    }
    cr r;
    cr_init(&r, &t);
    call_wait(&t, &r, "argv", NULL, 5000);
    assert_string_equal(r.text, "[\"--no-list-changed\", \"--label\", \"a b\", \"c \\\"d\"]");
    tctx_fini(&t);
    unsetenv("MCP_FAKE_KEEP");
    unsetenv("MCP_FAKE_OVER");
}

static void test_stderr_logged(void **state)
{
    int saved = log_level;
    log_level = LOG_INFO; /* the stderr lines are logged at info */
    tctx t;
    tctx_init(&t);
    server(&t, "--stderr --no-list-changed", NULL);
    rd r;
    wait_ready(&t, &r);
    assert_int_equal(r.rc, 0);
    cr c;
    cr_init(&c, &t);
    call_wait(&t, &c, "echo", "{\"text\":\"still fine\"}", 5000);
    assert_string_equal(c.text, "still fine");
    tctx_fini(&t);
    log_level = saved;
}

static void test_list_error(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "--list-error", NULL);
    rd r;
    wait_ready(&t, &r);
    assert_true(r.rc < 0);
    assert_non_null(strstr(r.err, "could not list its tools: no tools today"));
    tctx_fini(&t);
}

/* A server that stays up after stdin EOF gets SIGTERM 2 s after the stop. */
static void test_stop_sigterm(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "--linger --no-list-changed", NULL);
    rd r;
    wait_ready(&t, &r);
    assert_int_equal(r.rc, 0);
    long long t0 = now_ms();
    mcp_server_free(t.s);
    t.s = NULL;
    uv_close((uv_handle_t *)&t.tick, NULL);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    long long took = now_ms() - t0;
    assert_true(took >= 1900 && took < 4000);
    assert_int_equal(uv_loop_close(&t.loop), 0);
}

/* ---- elicitation ---- */

/* Starts "ask" (args) with on_elicit and waits for the elicitation. */
static void ask(tctx *t, cr *r, const char *args)
{
    call_cb(t, r, "ask", args, &ECB);
    assert_int_equal(r->elicits, 0); /* never inside the call */
    RUN_UNTIL(t, r->elicits, 5000);
    if (r->fail[0])
        fail_msg("%s", r->fail);
    assert_int_equal(r->elicits, 1);
    assert_int_equal(r->inside, 0);
    assert_string_equal(r->emsg, "Who are you?");
    assert_true(r->schema_ok);
}

static void finish_wait(tctx *t, cr *r)
{
    RUN_UNTIL(t, r->done, 5000);
    if (r->fail[0])
        fail_msg("%s", r->fail);
    assert_int_equal(r->done, 1);
    assert_int_equal(r->inside, 0);
}

static void test_elicit_answers(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "--no-list-changed", NULL);
    rd rr;
    wait_ready(&t, &rr);

    /* accept with content: the call waits for the answer */
    cr r;
    cr_init(&r, &t);
    ask(&t, &r, NULL);
    run_for(&t, 100);
    assert_int_equal(r.done, 0);
    assert_int_equal(mcp_server_busy(t.s), 1);
    json_t *content = json_loads("{\"name\":\"Ada\",\"age\":36,\"vip\":true,\"size\":\"M\"}", 0, NULL);
    API(mcp_elicit_respond(r.e, "accept", content));
    json_decref(content);
    r.e = NULL;
    finish_wait(&t, &r);
    assert_string_equal(r.err, "");
    assert_string_equal(r.text, "accept: {\"age\":36,\"name\":\"Ada\",\"size\":\"M\",\"vip\":true}");

    /* decline (content is not sent), cancel */
    cr_init(&r, &t);
    ask(&t, &r, NULL);
    json_t *junk = json_loads("{\"name\":\"no\"}", 0, NULL);
    API(mcp_elicit_respond(r.e, "decline", junk));
    json_decref(junk);
    r.e = NULL;
    finish_wait(&t, &r);
    assert_string_equal(r.text, "decline");
    cr_init(&r, &t);
    ask(&t, &r, NULL);
    API(mcp_elicit_respond(r.e, "cancel", NULL));
    r.e = NULL;
    finish_wait(&t, &r);
    assert_string_equal(r.text, "cancel");

    /* answered from inside on_elicit; a request without related-request-id goes to the
     * most recent call in flight */
    cr_init(&r, &t);
    r.respond_in_cb = "decline";
    call_cb(&t, &r, "ask", "{\"no_related\":true}", &ECB);
    finish_wait(&t, &r);
    assert_int_equal(r.elicits, 1);
    assert_string_equal(r.text, "decline");

    /* without on_elicit: declined at once */
    cr_init(&r, &t);
    call_wait(&t, &r, "ask", NULL, 5000);
    assert_string_equal(r.text, "decline");
    /* a mode we did not declare (url): -32602 */
    cr_init(&r, &t);
    call_cb(&t, &r, "ask", "{\"mode\":\"url\"}", &ECB);
    finish_wait(&t, &r);
    assert_int_equal(r.elicits, 0);
    assert_string_equal(r.text, "error -32602");
    assert_int_equal(mcp_server_busy(t.s), 0);
    tctx_fini(&t);
}

static void test_elicit_cancelled(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "--no-list-changed", NULL);
    rd rr;
    wait_ready(&t, &rr);
    /* the call is cancelled while the user is asked: the server gets "cancel", then
     * notifications/cancelled; a later respond only frees */
    cr r;
    cr_init(&r, &t);
    ask(&t, &r, NULL);
    mcp_call_cancel(r.c);
    r.cancelled = 1;
    assert_int_equal(mcp_server_busy(t.s), 0);
    run_for(&t, 200);
    API(mcp_elicit_respond(r.e, "accept", NULL));
    r.e = NULL;
    run_for(&t, 100);
    if (r.fail[0])
        fail_msg("%s", r.fail);
    assert_int_equal(r.done, 0);
    /* cancelled from inside on_elicit */
    cr r1;
    cr_init(&r1, &t);
    r1.cancel_on_elicit = 1;
    call_cb(&t, &r1, "ask", NULL, &ECB);
    RUN_UNTIL(&t, r1.elicits, 5000);
    assert_non_null(r1.e);
    run_for(&t, 100);
    mcp_elicit_respond(r1.e, "decline", NULL);
    r1.e = NULL;
    assert_int_equal(r1.done, 0);

    cr r2;
    cr_init(&r2, &t);
    call_wait(&t, &r2, "cancelled_count", NULL, 5000);
    assert_int_equal(r2.count, 2);
    assert_string_equal(r2.elicit_actions, "[\"cancel\",\"cancel\"]");

    /* the server is freed while the user is asked: respond only frees */
    cr r3;
    cr_init(&r3, &t);
    ask(&t, &r3, NULL);
    mcp_server_free(t.s); /* and the server goes: respond after it only frees too */
    t.s = NULL;
    mcp_elicit_respond(r3.e, "accept", NULL);
    r3.e = NULL;
    tctx_fini(&t);
    assert_int_equal(r3.done, 0);
}

static void test_elicit_crash(void **state)
{
    tctx t;
    tctx_init(&t);
    server(&t, "--no-list-changed", NULL);
    cr r;
    cr_init(&r, &t);
    ask(&t, &r, "{\"crash\":true}");
    finish_wait(&t, &r);
    assert_non_null(strstr(r.err, "stopped"));
    assert_non_null(r.e);
    run_for(&t, 50);
    /* the next call starts it again; the old elicitation is not answered on the new one */
    cr r2;
    cr_init(&r2, &t);
    call_wait(&t, &r2, "cancelled_count", NULL, 5000);
    API(mcp_elicit_respond(r.e, "accept", NULL));
    r.e = NULL;
    cr r3;
    cr_init(&r3, &t);
    call_wait(&t, &r3, "cancelled_count", NULL, 5000);
    assert_string_equal(r3.elicit_actions, "[]");
    tctx_fini(&t);
}

static void test_elicit_no_timeout(void **state)
{
    tctx t;
    tctx_init(&t);
    mcp_server_config c = {.call_timeout_ms = 300};
    server(&t, "--no-list-changed", &c);
    rd rr;
    wait_ready(&t, &rr);
    cr r;
    cr_init(&r, &t);
    ask(&t, &r, NULL);
    run_for(&t, 900); /* three call timeouts: the call waits for the user */
    assert_int_equal(r.done, 0);
    json_t *content = json_loads("{\"name\":\"Bo\"}", 0, NULL);
    API(mcp_elicit_respond(r.e, "accept", content));
    json_decref(content);
    r.e = NULL;
    finish_wait(&t, &r);
    assert_string_equal(r.err, "");
    assert_string_equal(r.text, "accept: {\"name\":\"Bo\"}");

    /* after the answer the timeout runs again (afresh): a server that then stalls times out */
    cr s2;
    cr_init(&s2, &t);
    s2.respond_in_cb = "accept";
    call_cb(&t, &s2, "ask", "{\"stall\":true}", &ECB);
    long long t0 = now_ms();
    finish_wait(&t, &s2);
    assert_true(now_ms() - t0 < 1500);
    assert_int_equal(s2.elicits, 1);
    assert_non_null(strstr(s2.err, "did not answer within 0.3 s"));
    tctx_fini(&t);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (find_fixture() < 0) {
        fprintf(stderr, "# mcp_fake.py not found\n");
        return 1;
    }
    const char *lv = getenv("MCP_TEST_LOG");
    log_level = lv && log_level_parse(lv) >= 0 ? log_level_parse(lv) : LOG_ERROR;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_command),   cmocka_unit_test(test_ready_and_list),
        cmocka_unit_test(test_call_echo),       cmocka_unit_test(test_progress),
        cmocka_unit_test(test_call_timeout),    cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_crash_restart),   cmocka_unit_test(test_bad_version),
        cmocka_unit_test(test_garbage_skipped), cmocka_unit_test(test_list_changed),
        cmocka_unit_test(test_free_pending),    cmocka_unit_test(test_init_timeout),
        cmocka_unit_test(test_spawn_failure),   cmocka_unit_test(test_max_message),
        cmocka_unit_test(test_env_and_argv),    cmocka_unit_test(test_stderr_logged),
        cmocka_unit_test(test_list_error),      cmocka_unit_test(test_stop_sigterm),
        cmocka_unit_test(test_elicit_answers),  cmocka_unit_test(test_elicit_cancelled),
        cmocka_unit_test(test_elicit_crash),    cmocka_unit_test(test_elicit_no_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
