/* Outbound HTTP client tests (src/llm/fetch.c) against tests/fixtures/http_fixture.py on
 * 127.0.0.1. Callbacks never call cmocka (its asserts longjmp out of uv_run); they record what
 * they saw, and the first broken rule, in the request record that the test then checks. */
/* clang-format off: cmocka.h needs these first */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llm/fetch.h"
#include "util/buf.h"
#include "util/log.h"

extern char **environ;

static pid_t fixture_pid;
static int fixture_port;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the fixture server ---- */

static int find_fixture(char *out, size_t outlen)
{
    const char *rel = "tests/fixtures/http_fixture.py";
    /* the source tree is an ancestor of the build directory holding this executable */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = 0;
    char *d = exe;
    for (int up = 0; up < 8; up++) {
        d = dirname(d);
        snprintf(out, outlen, "%s/%s", d, rel);
        if (access(out, R_OK) == 0)
            return 0;
        if (strcmp(d, "/") == 0)
            break;
    }
    return -1;
}

static int start_fixture(void **state)
{
    char path[PATH_MAX];
    if (find_fixture(path, sizeof path) < 0) {
        fprintf(stderr, "# http_fixture.py not found\n");
        return -1;
    }
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    char *argv[] = {"/usr/bin/python3", path, NULL};
    int rc = posix_spawn(&fixture_pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return -1;
    }
    FILE *in = fdopen(fds[0], "r");
    char line[64] = "";
    if (!in || !fgets(line, sizeof line, in))
        return -1;
    fclose(in);
    fixture_port = atoi(line);
    return fixture_port > 0 ? 0 : -1;
}

static int stop_fixture(void **state)
{
    if (fixture_pid > 0) {
        kill(fixture_pid, SIGTERM);
        waitpid(fixture_pid, NULL, 0);
    }
    return 0;
}

/* ---- loop and request records ---- */

typedef struct tctx {
    uv_loop_t loop;
    fetch_ctx *fc;
    uv_timer_t tick; /* makes uv_run(ONCE) return regularly so deadlines are checked */
} tctx;

static void on_tick(uv_timer_t *t) {}

static void tctx_init(tctx *t)
{
    assert_int_equal(uv_loop_init(&t->loop), 0);
    const char *err = "unset";
    t->fc = fetch_ctx_new(&t->loop, &err);
    assert_non_null(t->fc);
    assert_null(err);
    uv_timer_init(&t->loop, &t->tick);
    uv_timer_start(&t->tick, on_tick, 20, 20);
}

/* Frees the context (if the test did not) and checks that every handle closed. */
static void tctx_fini(tctx *t)
{
    if (t->fc)
        fetch_ctx_free(t->fc);
    uv_close((uv_handle_t *)&t->tick, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&t->loop), 0);
}

typedef struct req {
    tctx *t;
    fetch *f;
    buf body;
    int heads, datas, dones;
    long status, done_status;
    char ctype[128], retry[64], msg[256];
    char kept[64]; /* fetch_header in on_head */
    int rc;
    char fail[256]; /* the first broken rule, empty when none */
    /* behaviour */
    int head_rc;       /* on_head returns this */
    int pause_on_head; /* pause in on_head; the test resumes */
    int paused;        /* between our pause and resume */
    int cancel_at;     /* cancel in the cancel_at-th on_data */
    int abort_at;      /* return -1 from the abort_at-th on_data */
    int free_ctx_at;   /* fetch_ctx_free in the free_ctx_at-th on_data */
    int free_ctx_done; /* fetch_ctx_free in on_done */
    int cancelled;
    long long first_data_ms;
} req;

static void req_fail(req *r, const char *what)
{
    if (!r->fail[0])
        snprintf(r->fail, sizeof r->fail, "%s", what);
}

static int cb_head(void *ud, long status, const char *ct, const char *ra)
{
    req *r = ud;
    r->heads++;
    if (r->heads > 1)
        req_fail(r, "on_head twice");
    if (r->datas || r->dones)
        req_fail(r, "on_head after on_data/on_done");
    if (r->cancelled)
        req_fail(r, "on_head after cancel");
    r->status = status;
    snprintf(r->ctype, sizeof r->ctype, "%s", ct ? ct : "(null)");
    snprintf(r->retry, sizeof r->retry, "%s", ra ? ra : "(null)");
    const char *kept = fetch_header(r->f);
    snprintf(r->kept, sizeof r->kept, "%s", kept ? kept : "(null)");
    if (r->pause_on_head) {
        fetch_pause(r->f, 1);
        r->paused = 1;
    }
    return r->head_rc;
}

static int cb_data(void *ud, const char *p, size_t n)
{
    req *r = ud;
    r->datas++;
    if (!r->heads)
        req_fail(r, "on_data before on_head");
    if (r->dones)
        req_fail(r, "on_data after on_done");
    if (r->cancelled)
        req_fail(r, "on_data after cancel");
    if (r->paused)
        req_fail(r, "on_data while paused");
    if (n == 0)
        req_fail(r, "on_data with 0 bytes");
    if (!r->first_data_ms)
        r->first_data_ms = now_ms();
    if (buf_append(&r->body, p, n) < 0)
        req_fail(r, "body over the test's cap");
    if (r->cancel_at && r->datas == r->cancel_at) {
        fetch_cancel(r->f);
        fetch_cancel(r->f); /* twice is harmless */
        r->cancelled = 1;
    }
    if (r->free_ctx_at && r->datas == r->free_ctx_at) {
        fetch_ctx_free(r->t->fc);
        r->t->fc = NULL;
        r->cancelled = 1;
    }
    if (r->abort_at && r->datas == r->abort_at)
        return -1;
    return 0;
}

static void cb_done(void *ud, int rc, long status, const char *msg)
{
    req *r = ud;
    r->dones++;
    if (r->dones > 1)
        req_fail(r, "on_done twice");
    if (r->cancelled)
        req_fail(r, "on_done after cancel");
    if (!msg)
        req_fail(r, "on_done without message");
    r->rc = rc;
    r->done_status = status;
    snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : "");
    fetch_cancel(r->f); /* no-op from inside on_done */
    if (r->free_ctx_done && r->t->fc) {
        fetch_ctx_free(r->t->fc);
        r->t->fc = NULL;
    }
}

static const fetch_cb CB = {cb_head, cb_data, cb_done};

static void req_init(req *r, tctx *t)
{
    memset(r, 0, sizeof *r);
    r->t = t;
    r->body = (buf)BUF_INIT(64u * 1024 * 1024);
    r->rc = 12345;
}

static void url(char *out, size_t n, const char *path)
{
    snprintf(out, n, "http://127.0.0.1:%d%s", fixture_port, path);
}

static void start(tctx *t, req *r, const char *path, const fetch_opts *base)
{
    char u[256];
    url(u, sizeof u, path);
    fetch_opts o = base ? *base : (fetch_opts){0};
    o.url = u;
    assert_int_equal(fetch_start(t->fc, &o, &CB, r, &r->f), 0);
    assert_non_null(r->f);
}

/* Runs the loop until all n requests are done (or ms passed). Returns 1 when they are. */
static int run_done(tctx *t, req *rs, int n, unsigned ms)
{
    long long end = now_ms() + ms;
    for (;;) {
        int all = 1;
        for (int i = 0; i < n; i++)
            if (!rs[i].dones)
                all = 0;
        if (all)
            return 1;
        if (now_ms() > end)
            return 0;
        uv_run(&t->loop, UV_RUN_ONCE);
    }
}

static void run_for(tctx *t, unsigned ms)
{
    long long end = now_ms() + ms;
    while (now_ms() < end)
        uv_run(&t->loop, UV_RUN_ONCE);
}

static void check_ok(req *r)
{
    if (r->fail[0])
        fail_msg("callback rule broken: %s", r->fail);
}

static void req_free(req *r)
{
    buf_free(&r->body);
}

/* The body the fixture's /sse sends for n events. */
static char *sse_body(int n)
{
    buf b = BUF_INIT(0);
    for (int i = 0; i < n; i++)
        assert_int_equal(buf_printf(&b, "data: event %d\n\n", i), 0);
    size_t len;
    return buf_steal(&b, &len);
}

/* ---- tests ---- */

static void t_args(void **state)
{
    tctx t;
    tctx_init(&t);
    req r;
    req_init(&r, &t);
    fetch *f = (fetch *)&r;
    fetch_opts o = {.url = "ftp://127.0.0.1/x"};
    assert_int_equal(fetch_start(t.fc, &o, &CB, &r, &f), -EINVAL);
    assert_null(f);
    o.url = "http://127.0.0.1/a b";
    assert_int_equal(fetch_start(t.fc, &o, &CB, &r, &f), -EINVAL);
    const char *bad_hdr[] = {"X-A: 1\r\nX-B: 2", NULL};
    o = (fetch_opts){.url = "http://127.0.0.1/", .headers = bad_hdr};
    assert_int_equal(fetch_start(t.fc, &o, &CB, &r, &f), -EINVAL);
    o = (fetch_opts){.url = "http://127.0.0.1/", .method = "get"};
    assert_int_equal(fetch_start(t.fc, &o, &CB, &r, &f), -EINVAL);
    o = (fetch_opts){.url = "http://127.0.0.1/"};
    fetch_cb nodone = {cb_head, cb_data, NULL};
    assert_int_equal(fetch_start(t.fc, &o, &nodone, &r, &f), -EINVAL);
    run_for(&t, 50);
    assert_int_equal(r.heads + r.datas + r.dones, 0);
    tctx_fini(&t);
    /* freeing NULL and pausing/cancelling NULL are no-ops */
    fetch_ctx_free(NULL);
    fetch_cancel(NULL);
    fetch_pause(NULL, 1);
}

static void t_post_echo(void **state)
{
    tctx t;
    tctx_init(&t);
    req r, g, d;
    req_init(&r, &t);
    req_init(&g, &t);
    req_init(&d, &t);
    static const char body[] = "{\"hello\":\"w\\u00f6rld\",\"n\":1}";
    const char *hdrs[] = {"Content-Type: application/json", "X-Test: abc",
                          "Authorization: Bearer sekrit", NULL};
    fetch_opts o = {.headers = hdrs, .body = body, .body_len = strlen(body)};
    start(&t, &r, "/echo", &o);
    start(&t, &g, "/echo?q=1", NULL);
    fetch_opts od = {.method = "DELETE"};
    start(&t, &d, "/echo", &od);
    req *all[] = {&r, &g, &d};
    long long end = now_ms() + 10000;
    while ((!r.dones || !g.dones || !d.dones) && now_ms() < end)
        uv_run(&t.loop, UV_RUN_ONCE);
    for (int i = 0; i < 3; i++) {
        check_ok(all[i]);
        assert_int_equal(all[i]->dones, 1);
        assert_int_equal(all[i]->rc, 0);
        assert_int_equal(all[i]->heads, 1);
        assert_int_equal(all[i]->status, 200);
        assert_int_equal(all[i]->done_status, 200);
        assert_string_equal(all[i]->ctype, "application/json");
        assert_string_equal(all[i]->retry, "(null)");
        assert_string_equal(all[i]->kept, "(null)"); /* none asked for */
    }

    json_error_t je;
    json_t *j = json_loadb(r.body.data, r.body.len, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(j, "body")), body);
    json_t *h = json_object_get(j, "headers");
    assert_string_equal(json_string_value(json_object_get(h, "x-test")), "abc");
    assert_string_equal(json_string_value(json_object_get(h, "content-type")), "application/json");
    assert_string_equal(json_string_value(json_object_get(h, "authorization")), "Bearer sekrit");
    assert_null(json_object_get(h, "expect"));
    assert_non_null(json_object_get(h, "accept-encoding")); /* we accept compressed bodies */
    json_decref(j);

    j = json_loadb(g.body.data, g.body.len, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/echo?q=1");
    assert_string_equal(json_string_value(json_object_get(j, "body")), "");
    json_decref(j);

    j = json_loadb(d.body.data, d.body.len, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "DELETE");
    json_decref(j);

    for (int i = 0; i < 3; i++)
        req_free(all[i]);
    tctx_fini(&t);
}

static void t_sse_stream(void **state)
{
    tctx t;
    tctx_init(&t);
    req r;
    req_init(&r, &t);
    start(&t, &r, "/sse?n=5&delay_ms=40", NULL);
    assert_true(run_done(&t, &r, 1, 10000));
    check_ok(&r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.heads, 1);
    assert_int_equal(r.dones, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "text/event-stream");
    assert_true(r.datas >= 3); /* arrived in pieces, as sent */
    char *want = sse_body(5);
    assert_string_equal(r.body.data, want);
    free(want);
    run_for(&t, 50);
    assert_int_equal(r.dones, 1);
    req_free(&r);
    tctx_fini(&t);
}

static void t_status(void **state)
{
    tctx t;
    tctx_init(&t);
    req r[2];
    req_init(&r[0], &t);
    req_init(&r[1], &t);
    fetch_opts k0 = {.keep_header = "rEtRy-AfTeR"}, k1 = {.keep_header = "X-Absent"};
    start(&t, &r[0], "/status/429?retry_after=3", &k0);
    start(&t, &r[1], "/status/500", &k1);
    assert_true(run_done(&t, r, 2, 10000));
    check_ok(&r[0]);
    check_ok(&r[1]);
    assert_int_equal(r[0].rc, 0);
    assert_int_equal(r[0].status, 429);
    assert_int_equal(r[0].done_status, 429);
    assert_string_equal(r[0].retry, "3");
    assert_string_equal(r[0].kept, "3"); /* a kept header, matched in any case */
    assert_string_equal(r[0].body.data, "{\"error\": 429}");
    assert_int_equal(r[1].rc, 0);
    assert_int_equal(r[1].status, 500);
    assert_int_equal(r[1].done_status, 500);
    assert_string_equal(r[1].retry, "(null)");
    assert_string_equal(r[1].kept, "(null)");
    req_free(&r[0]);
    req_free(&r[1]);
    tctx_fini(&t);
}

static void t_connect_refused(void **state)
{
    /* a port that was just free: bind, learn it, close */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    close(s);
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/x", ntohs(a.sin_port));

    tctx t;
    tctx_init(&t);
    req r;
    req_init(&r, &t);
    const char *hdrs[] = {"Authorization: Bearer sekrit", NULL};
    fetch_opts o = {.url = u, .headers = hdrs, .body = "secret body", .body_len = 11};
    assert_int_equal(fetch_start(t.fc, &o, &CB, &r, &r.f), 0);
    assert_true(run_done(&t, &r, 1, 10000));
    check_ok(&r);
    assert_int_equal(r.rc, FETCH_ECONNECT);
    assert_int_equal(r.heads, 0);
    assert_int_equal(r.status, 0);
    assert_true(r.msg[0] != 0);
    assert_null(strstr(r.msg, "sekrit"));
    assert_null(strstr(r.msg, "secret"));
    req_free(&r);
    tctx_fini(&t);
}

static void t_timeouts(void **state)
{
    tctx t;
    tctx_init(&t);
    req h, s;
    req_init(&h, &t);
    req_init(&s, &t);
    fetch_opts oh = {.first_byte_timeout_ms = 300};
    fetch_opts os = {.idle_timeout_ms = 300};
    long long t0 = now_ms();
    start(&t, &h, "/hang", &oh);
    start(&t, &s, "/stall", &os);
    long long end = t0 + 10000;
    long long h_at = 0, s_at = 0;
    while ((!h.dones || !s.dones) && now_ms() < end) {
        uv_run(&t.loop, UV_RUN_ONCE);
        if (h.dones && !h_at)
            h_at = now_ms();
        if (s.dones && !s_at)
            s_at = now_ms();
    }
    check_ok(&h);
    check_ok(&s);
    assert_int_equal(h.dones, 1);
    assert_int_equal(h.rc, FETCH_ETIMEOUT);
    assert_string_equal(h.msg, "first byte timeout");
    assert_int_equal(h.heads, 0);
    assert_true(h_at - t0 >= 250);
    assert_true(h_at - t0 < 5000);

    assert_int_equal(s.dones, 1);
    assert_int_equal(s.rc, FETCH_ETIMEOUT);
    assert_string_equal(s.msg, "idle timeout");
    assert_int_equal(s.heads, 1);
    assert_int_equal(s.status, 200);
    assert_string_equal(s.body.data, "data: first\n\n");
    assert_true(s_at - s.first_data_ms >= 250);
    req_free(&h);
    req_free(&s);
    tctx_fini(&t);
}

static void t_too_big(void **state)
{
    tctx t;
    tctx_init(&t);
    req r[3];
    for (int i = 0; i < 3; i++)
        req_init(&r[i], &t);
    fetch_opts o = {.max_response = 50000};
    start(&t, &r[0], "/big?bytes=100000&chunked=1", &o); /* counted by us */
    start(&t, &r[1], "/big?bytes=100000", &o);           /* refused by Content-Length */
    start(&t, &r[2], "/big?bytes=50000&chunked=1", &o);  /* exactly the cap: fine */
    assert_true(run_done(&t, r, 3, 10000));
    for (int i = 0; i < 3; i++)
        check_ok(&r[i]);
    assert_int_equal(r[0].rc, FETCH_ETOOBIG);
    assert_true(r[0].body.len <= 50000);
    assert_int_equal(r[1].rc, FETCH_ETOOBIG);
    assert_true(r[1].body.len <= 50000);
    assert_int_equal(r[2].rc, 0);
    assert_int_equal(r[2].body.len, 50000);
    for (int i = 0; i < 3; i++)
        req_free(&r[i]);
    tctx_fini(&t);
}

static void t_garbage_gzip(void **state)
{
    tctx t;
    tctx_init(&t);
    req g, z;
    req_init(&g, &t);
    req_init(&z, &t);
    start(&t, &g, "/garbage", NULL);
    start(&t, &z, "/gzip", NULL);
    long long end = now_ms() + 10000;
    while ((!g.dones || !z.dones) && now_ms() < end)
        uv_run(&t.loop, UV_RUN_ONCE);
    check_ok(&g);
    check_ok(&z);
    assert_int_equal(g.dones, 1);
    assert_int_equal(g.rc, FETCH_EPROTO);
    assert_int_equal(g.heads, 0);
    assert_true(g.msg[0] != 0);
    assert_int_equal(z.dones, 1);
    assert_int_equal(z.rc, 0);
    assert_string_equal(z.ctype, "text/plain");
    buf want = BUF_INIT(0);
    for (int i = 0; i < 200; i++)
        assert_int_equal(buf_puts(&want, "gzip says hello. "), 0);
    assert_int_equal(z.body.len, want.len);
    assert_memory_equal(z.body.data, want.data, want.len);
    buf_free(&want);
    req_free(&g);
    req_free(&z);
    tctx_fini(&t);
}

/* GET /stats?tag=… until the fixture reports want for it (or 5 s). */
static int fixture_state_is(const char *tag, const char *want)
{
    long long end = now_ms() + 5000;
    int ok = 0;
    while (!ok && now_ms() < end) {
        tctx t;
        tctx_init(&t);
        req r;
        req_init(&r, &t);
        char path[128];
        snprintf(path, sizeof path, "/stats?tag=%s", tag);
        start(&t, &r, path, NULL);
        if (run_done(&t, &r, 1, 5000) && r.rc == 0) {
            json_t *j = json_loadb(r.body.data, r.body.len, 0, NULL);
            const char *st = json_string_value(json_object_get(j, "state"));
            ok = st && strcmp(st, want) == 0;
            json_decref(j);
        }
        req_free(&r);
        tctx_fini(&t);
        if (!ok)
            usleep(50 * 1000);
    }
    return ok;
}

static void t_cancel(void **state)
{
    char tag[64];
    snprintf(tag, sizeof tag, "cancel%d", (int)getpid());
    char path[128];
    snprintf(path, sizeof path, "/sse?n=200&delay_ms=20&tag=%s", tag);

    tctx t;
    tctx_init(&t);
    req a, b, c;
    req_init(&a, &t);
    req_init(&b, &t);
    req_init(&c, &t);
    b.cancel_at = 1; /* cancel from inside on_data */
    c.abort_at = 2;  /* on_data < 0 aborts with a callback */
    start(&t, &a, path, NULL);
    start(&t, &b, "/sse?n=10&delay_ms=20", NULL);
    start(&t, &c, "/sse?n=10&delay_ms=20", NULL);
    long long end = now_ms() + 10000;
    while (a.datas < 2 && now_ms() < end)
        uv_run(&t.loop, UV_RUN_ONCE);
    assert_true(a.datas >= 2);
    fetch_cancel(a.f); /* from outside any callback */
    a.cancelled = 1;
    int seen = a.datas;
    assert_true(run_done(&t, &c, 1, 10000));
    run_for(&t, 400);
    check_ok(&a);
    check_ok(&b);
    check_ok(&c);
    assert_int_equal(a.datas, seen);
    assert_int_equal(a.dones, 0);
    assert_int_equal(b.datas, 1);
    assert_int_equal(b.dones, 0);
    assert_int_equal(c.datas, 2);
    assert_int_equal(c.dones, 1);
    assert_int_equal(c.rc, FETCH_EABORTED);
    req_free(&a);
    req_free(&b);
    req_free(&c);
    tctx_fini(&t);
    /* the server saw the connection go before its stream ended */
    assert_true(fixture_state_is(tag, "aborted"));
}

static void t_head_abort(void **state)
{
    tctx t;
    tctx_init(&t);
    req r;
    req_init(&r, &t);
    r.head_rc = -1;
    start(&t, &r, "/sse?n=3&delay_ms=10", NULL);
    assert_true(run_done(&t, &r, 1, 10000));
    check_ok(&r);
    assert_int_equal(r.heads, 1);
    assert_int_equal(r.datas, 0);
    assert_int_equal(r.rc, FETCH_EABORTED);
    assert_int_equal(r.done_status, 200);
    req_free(&r);
    tctx_fini(&t);
}

static void resume_cb(uv_timer_t *tm)
{
    req *r = tm->data;
    r->paused = 0;
    fetch_pause(r->f, 0);
}

static void t_pause(void **state)
{
    tctx t;
    tctx_init(&t);
    req r;
    req_init(&r, &t);
    r.pause_on_head = 1;
    /* idle 150 ms < the 300 ms pause: the idle timer must not run while paused */
    fetch_opts o = {.idle_timeout_ms = 150};
    start(&t, &r, "/sse?n=5&delay_ms=20", &o);
    long long end = now_ms() + 10000;
    while (!r.heads && now_ms() < end)
        uv_run(&t.loop, UV_RUN_ONCE);
    assert_int_equal(r.heads, 1);
    fetch_pause(r.f, 1); /* already paused: no-op */
    uv_timer_t resume;
    uv_timer_init(&t.loop, &resume);
    resume.data = &r;
    long long paused_at = now_ms();
    uv_update_time(&t.loop); /* the timer counts from now, not from the loop turn's start */
    uv_timer_start(&resume, resume_cb, 300, 0);
    assert_true(run_done(&t, &r, 1, 10000));
    uv_close((uv_handle_t *)&resume, NULL);
    check_ok(&r);
    assert_int_equal(r.rc, 0);
    assert_true(r.first_data_ms >= paused_at + 290);
    char *want = sse_body(5);
    assert_string_equal(r.body.data, want);
    free(want);
    req_free(&r);
    tctx_fini(&t);
}

/* Pausing and resuming around every piece of a large body (the held-data path). */
static int pp_data(void *ud, const char *p, size_t n)
{
    req *r = ud;
    r->datas++;
    if (buf_append(&r->body, p, n) < 0)
        req_fail(r, "body over the test's cap");
    fetch_pause(r->f, 1);
    fetch_pause(r->f, 0);
    return 0;
}

static void t_pause_each(void **state)
{
    tctx t;
    tctx_init(&t);
    req r;
    req_init(&r, &t);
    fetch_cb cb = {cb_head, pp_data, cb_done};
    char u[128];
    url(u, sizeof u, "/big?bytes=3000000&chunked=1");
    fetch_opts o = {.url = u};
    assert_int_equal(fetch_start(t.fc, &o, &cb, &r, &r.f), 0);
    assert_true(run_done(&t, &r, 1, 20000));
    check_ok(&r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.body.len, 3000000);
    for (size_t i = 0; i < r.body.len; i++)
        if (r.body.data[i] != 'x')
            fail_msg("byte %zu is %d", i, r.body.data[i]);
    req_free(&r);
    tctx_fini(&t);
}

static void t_parallel(void **state)
{
    enum { N = 20 };
    tctx t;
    tctx_init(&t);
    req r[N];
    for (int i = 0; i < N; i++) {
        req_init(&r[i], &t);
        start(&t, &r[i], "/sse?n=5&delay_ms=10", NULL);
    }
    assert_true(run_done(&t, r, N, 20000));
    char *want = sse_body(5);
    for (int i = 0; i < N; i++) {
        check_ok(&r[i]);
        assert_int_equal(r[i].rc, 0);
        assert_int_equal(r[i].dones, 1);
        assert_string_equal(r[i].body.data, want);
        req_free(&r[i]);
    }
    free(want);
    tctx_fini(&t);
}

static void t_ctx_free(void **state)
{
    /* freed with requests running, from outside callbacks */
    tctx t;
    tctx_init(&t);
    req r[3];
    for (int i = 0; i < 3; i++)
        req_init(&r[i], &t);
    fetch_opts o = {.first_byte_timeout_ms = 100000};
    start(&t, &r[0], "/hang", &o);
    start(&t, &r[1], "/sse?n=100&delay_ms=20", NULL);
    start(&t, &r[2], "/stall", NULL);
    run_for(&t, 200);
    assert_true(r[1].datas >= 1);
    r[0].cancelled = r[1].cancelled = r[2].cancelled = 1;
    tctx_fini(&t); /* frees the context; no callbacks may follow */
    for (int i = 0; i < 3; i++) {
        check_ok(&r[i]);
        assert_int_equal(r[i].dones, 0);
        req_free(&r[i]);
    }

    /* freed from inside on_data */
    tctx_init(&t);
    req a, b;
    req_init(&a, &t);
    req_init(&b, &t);
    a.free_ctx_at = 1;
    start(&t, &a, "/sse?n=10&delay_ms=20", NULL);
    start(&t, &b, "/sse?n=10&delay_ms=20", NULL);
    long long end = now_ms() + 10000;
    while (t.fc && now_ms() < end)
        uv_run(&t.loop, UV_RUN_ONCE);
    assert_null(t.fc);
    b.cancelled = 1;
    tctx_fini(&t);
    check_ok(&a);
    check_ok(&b);
    assert_int_equal(a.datas, 1);
    assert_int_equal(a.dones + b.dones, 0);
    req_free(&a);
    req_free(&b);

    /* freed from inside on_done, another request still running */
    tctx_init(&t);
    req_init(&a, &t);
    req_init(&b, &t);
    a.free_ctx_done = 1;
    start(&t, &a, "/status/500", NULL);
    start(&t, &b, "/sse?n=10&delay_ms=50", NULL);
    end = now_ms() + 10000;
    while (t.fc && now_ms() < end)
        uv_run(&t.loop, UV_RUN_ONCE);
    assert_null(t.fc);
    b.cancelled = 1;
    tctx_fini(&t);
    check_ok(&a);
    check_ok(&b);
    assert_int_equal(a.dones, 1);
    assert_int_equal(b.dones, 0);
    req_free(&a);
    req_free(&b);
}

int main(void)
{
    log_level = LOG_ERROR;
    signal(SIGPIPE, SIG_IGN);
    /* loopback tests must not go through a proxy from the environment */
    const char *proxies[] = {"http_proxy",  "HTTP_PROXY", "https_proxy",
                             "HTTPS_PROXY", "all_proxy",  "ALL_PROXY"};
    for (size_t i = 0; i < sizeof proxies / sizeof proxies[0]; i++)
        unsetenv(proxies[i]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_args),
        cmocka_unit_test(t_post_echo),
        cmocka_unit_test(t_sse_stream),
        cmocka_unit_test(t_status),
        cmocka_unit_test(t_connect_refused),
        cmocka_unit_test(t_timeouts),
        cmocka_unit_test(t_too_big),
        cmocka_unit_test(t_garbage_gzip),
        cmocka_unit_test(t_cancel),
        cmocka_unit_test(t_head_abort),
        cmocka_unit_test(t_pause),
        cmocka_unit_test(t_pause_each),
        cmocka_unit_test(t_parallel),
        cmocka_unit_test(t_ctx_free),
    };
    return cmocka_run_group_tests(tests, start_fixture, stop_fixture);
}
