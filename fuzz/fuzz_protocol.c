/* libFuzzer harness for the ChatKit protocol path: the input is the BODY of
 * `POST /chatkit?agent_id=… HTTP/1.1` (bearer token, correct Content-Length), fed through
 * http_fuzz_feed to a server whose handler is ck_handle, backed by the real async store on a
 * SQLite file (writer + reader threads) and the demo model. Everything is then run to
 * quiescence, so authentication, validation, every store job, streams, the demo run,
 * cancellation and the encoders are all reached.
 *
 * Input: an optional first "mode" byte (a control byte other than \t \n \r, or >= 0x80; a
 * plain JSON file has none and means mode 0), then the body.
 *   mode & 15: 0-7 the demo agent, 8 an agent whose model is unavailable, 9 no agent_id (the
 *              account has two agents), 10 a garbage agent_id, 11 no Authorization, 12 an
 *              unknown token, 13 a non-Bearer Authorization, 14 another route (by mode >> 4
 *              & 3: PUT /chatkit/upload/…, GET /metrics, GET /healthz, GET /chatkit), 15 the
 *              token of a user of another account (scoping).
 *   mode >> 4: 12-15 the client disconnects after 0/3/6/9 extra loop iterations (cancellation
 *              at different points); otherwise it stays until the response is complete.
 *
 * http_fuzz_feed closes its fake connection once the bytes are fed, so the request is followed
 * by padding fed in chunks: each chunk is one loop iteration, and a prepare hook makes those
 * iterations wait (bounded) for store completions and timers like a blocking loop would. The
 * padding is not HTTP, so once the response is complete the connection fails and closes, and
 * the feed ends early. Then the loop runs until nothing is pending (bounded), and the harness
 * checks that no stream, thread reservation, store job or connection is left behind.
 *
 * Fixtures: a thread "thr_fix" of the demo user with a user message, an assistant message, a
 * widget, a pending structured input and a pending client tool call (newest), plus an
 * unattached attachment "atc_fix"; reset before every input that contains "_fix", so inputs
 * that use them see the same state. "thr_other" belongs to another account.
 *
 * Leaks: SQLite gets its page buffers from a static pool, so inputs end with as many mallocs as
 * frees and libFuzzer's per-input leak check stays on (see init); a periodic full LeakSanitizer
 * pass backs it up (see sweep). FUZZ_VERBOSE=1 logs at debug level; FUZZ_MALLOC_STATS=1 counts
 * unbalanced inputs. The database lives in a mkdtemp directory under /tmp, removed at exit. */
#include <ftw.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sanitizer/allocator_interface.h>
#include <sanitizer/lsan_interface.h>
#include <sqlite3.h>
#include <uv.h>

#include "auth/auth.h"
#include "chatkit/chatkit.h"
#include "files/files.h"
#include "http/http.h"
#include "run/run.h"
#include "store/store.h"
#include "util/config.h"
#include "util/log.h"
#include "util/timeutil.h"

#define STEP 256           /* bytes per fed chunk (one loop iteration each) */
#define FULL_CHUNKS 256    /* padding chunks when the client stays: enough for a slow turn */
#define MAX_WAIT_MS 2000   /* one blocking wait of the prepare hook */
#define DRAIN_ITERS 100000 /* loop iterations after the feed before we call it a hang */
#define SWEEP_MS 60000     /* full LeakSanitizer pass at most this often (see sweep) */
#define PAGE_SLOT 4608     /* SQLite page (4 KiB) plus its header */
#define PAGE_SLOTS 2048

static uv_loop_t loop;
static uv_prepare_t waiter;
static int waiting;
static config cfg;
static store *st;
static store_conn *db; /* fixtures (used only while the async store is idle) */
static ck_app app;
static http_server *srv;
static char tmpdir[] = "/tmp/fuzz-protocol-XXXXXX";
static char token[AUTH_TOKEN_MAX], other_token[AUTH_TOKEN_MAX];
static char agent_demo[STORE_ID_MAX], agent_nomodel[STORE_ID_MAX];
static store_scope scope;
static int verbose;
static uint64_t last_sweep_ms;
static _Alignas(64) unsigned char pagecache[PAGE_SLOT * PAGE_SLOTS];

/* FUZZ_MALLOC_STATS=1: how many inputs leave more mallocs than frees (what makes libFuzzer try
 * its per-input leak check, and give up after 1000 false alarms). */
static int malloc_stats;
static _Atomic unsigned long n_malloc, n_free;
static unsigned long n_inputs, n_unbalanced;

static void on_malloc(const volatile void *p, size_t n)
{
    (void)p, (void)n;
    n_malloc++;
}

static void on_free(const volatile void *p)
{
    (void)p;
    n_free++;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_protocol: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

/* Makes the NOWAIT iterations of http_fuzz_feed block like UV_RUN_ONCE would: wait until the
 * backend has an event (store completion, …) or the next timer is due. Started before the
 * store's own prepare handle, so it runs after it (libuv runs the newest first): the writes
 * staged in this iteration have reached the writer before we wait for them. */
static void on_wait(uv_prepare_t *h)
{
    (void)h;
    if (!waiting)
        return;
    int t = uv_backend_timeout(&loop);
    if (t == 0)
        return;
    if (t < 0 || t > MAX_WAIT_MS)
        t = MAX_WAIT_MS;
    struct pollfd p = {uv_backend_fd(&loop), POLLIN, 0};
    poll(&p, 1, t);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    nftw(tmpdir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void check(int rc, const char *what)
{
    if (rc)
        die(what, store_errmsg(db));
}

static void mint(const char *user_id, char out[AUTH_TOKEN_MAX])
{
    char hash[AUTH_HASH_HEX];
    auth_token_new(out);
    auth_token_hash(out, strlen(out), hash);
    check(store_token_create(db, hash, user_id, 0), "token");
}

static void tenant(const char *name, store_account *a, store_user *u)
{
    a->name = xstrdup(name);
    check(store_account_create(db, a), "account");
    snprintf(u->account_id, sizeof u->account_id, "%s", a->id);
    u->name = xstrdup(name);
    check(store_user_create(db, u), "user");
}

static void agent(const char *account_id, const char *model, char out[STORE_ID_MAX])
{
    store_agent ag = {0};
    snprintf(ag.account_id, sizeof ag.account_id, "%s", account_id);
    ag.name = xstrdup(model);
    ag.model = xstrdup(model);
    ag.instructions = xstrdup("You are the fuzz agent.");
    ag.config_json = xstrdup("{\"mcp_stdio\":[],\"mcp_http\":[],\"tools\":[]}");
    check(store_agent_create(db, &ag), "agent");
    snprintf(out, STORE_ID_MAX, "%s", ag.id);
    store_agent_clear(&ag);
}

static void thread_insert(const store_scope *sc, const char *id, const char *agent_id)
{
    store_thread t = {0};
    snprintf(t.id, sizeof t.id, "%s", id);
    snprintf(t.agent_id, sizeof t.agent_id, "%s", agent_id);
    t.status_json = xstrdup("{\"type\":\"active\"}");
    t.metadata_json = xstrdup("{}");
    t.created_us = 1700000000000000;
    check(store_thread_insert(db, sc, &t), "thread");
    store_thread_clear(&t);
}

/* Adds item (stolen) with id/thread_id/created_at/type filled in. */
static void item_add(const char *thread_id, const char *id, const char *type, int n, json_t *item)
{
    store_item it = {0};
    char ts[TS_MAX];
    snprintf(it.id, sizeof it.id, "%s", id);
    snprintf(it.thread_id, sizeof it.thread_id, "%s", thread_id);
    snprintf(it.type, sizeof it.type, "%s", type);
    it.created_us = 1700000000000000 + n * 1000000;
    ts_format(it.created_us, ts);
    json_object_set_new(item, "id", json_string(id));
    json_object_set_new(item, "thread_id", json_string(thread_id));
    json_object_set_new(item, "created_at", json_string(ts));
    json_object_set_new(item, "type", json_string(type));
    it.json = json_dumps(item, JSON_COMPACT);
    json_decref(item);
    check(store_item_add(db, &scope, &it), "item");
    free(it.json);
}

static void reset_fixture(void)
{
    check(store_begin(db), "begin");
    int rc = store_thread_delete(db, &scope, "thr_fix");
    if (rc && rc != STORE_ENOTFOUND)
        check(rc, "delete");
    thread_insert(&scope, "thr_fix", agent_demo);
    item_add("thr_fix", "msg_fix_u1", "user_message", 1,
             json_pack("{s:[{s:s,s:s}],s:[],s:{}}", "content", "type", "input_text", "text",
                       "hello widget", "attachments", "inference_options"));
    item_add("thr_fix", "msg_fix_a1", "assistant_message", 2,
             json_pack("{s:[{s:[],s:s,s:s}]}", "content", "annotations", "text", "hi", "type",
                       "output_text"));
    json_t *w = json_pack("{s:o,s:s}", "widget", run_demo_widget(0), "copy_text", "x");
    item_add("thr_fix", "msg_fix_w", "widget", 3, w);
    item_add("thr_fix", "msg_fix_h", "hidden_context_item", 4,
             json_pack("{s:s}", "content", "hidden"));
    item_add("thr_fix", "msg_fix_si", "structured_input", 5,
             json_pack("{s:s,s:[{s:s,s:s,s:s,s:[{s:s},{s:s}],s:b},{s:s,s:s,s:s}]}", "status",
                       "pending", "inputs", "type", "multiple_choice", "id", "color", "question",
                       "?", "options", "value", "red", "value", "blue", "multiple", 0, "type",
                       "freeform", "id", "note", "question", "?"));
    item_add("thr_fix", "tc_fix", "client_tool_call", 6,
             json_pack("{s:s,s:s,s:s,s:{}}", "status", "pending", "call_id", "call_fix", "name",
                       "get_selection", "arguments"));
    store_attachment a = {0};
    snprintf(a.id, sizeof a.id, "atc_fix");
    a.name = xstrdup("cat.png");
    a.mime_type = xstrdup("image/png");
    a.size = 3;
    a.json = xstrdup("{\"id\":\"atc_fix\",\"name\":\"cat.png\",\"mime_type\":\"image/png\","
                     "\"upload_descriptor\":{\"url\":\"http://h/u\",\"method\":\"PUT\","
                     "\"headers\":{}},\"type\":\"image\",\"preview_url\":\"http://h/p\"}");
    a.metadata_json = xstrdup("{}");
    a.created_us = 1700000000000000;
    check(store_attachment_save(db, &scope, &a), "attachment");
    store_attachment_clear(&a);
    check(store_commit(db), "commit");
}

static void init(void)
{
    char err[512];
    char *e = NULL;
    verbose = getenv("FUZZ_VERBOSE") != NULL;
    malloc_stats = getenv("FUZZ_MALLOC_STATS") != NULL;
    if (malloc_stats)
        __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
    /* Page buffers from a static pool instead of malloc. Otherwise every write grows or recycles
     * the connections' page caches (readers drop theirs when another connection wrote), so most
     * inputs end with a few more mallocs than frees: libFuzzer then re-runs them looking for a
     * leak, and after 1000 such false alarms turns per-input leak detection off. */
    if (sqlite3_config(SQLITE_CONFIG_PAGECACHE, pagecache, PAGE_SLOT, PAGE_SLOTS) != SQLITE_OK)
        die("sqlite3_config", NULL);
    json_object_seed(0); /* before any thread exists */
    if (!mkdtemp(tmpdir))
        die("mkdtemp", NULL);
    atexit(cleanup);
    char url[128];
    snprintf(url, sizeof url, "sqlite:%s/chatkitd.db", tmpdir);
    static const char *const flags[][2] = {
        {"demo-delay", "1"},     {"heartbeat", "0"},    {"header-timeout", "0"},
        {"body-timeout", "0"},   {"idle-timeout", "0"}, {"store-readers", "2"},
        {"max-body", "64KiB"},   {"log-level", "error"},
        {"cleanup-interval", "0"}, /* the attachment sweep timer would keep the loop alive */
    };
    if (config_load(&cfg, err, sizeof err) || config_flag(&cfg, "data-dir", tmpdir, err, sizeof err) ||
        config_flag(&cfg, "database-url", url, err, sizeof err))
        die("config", err);
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (config_flag(&cfg, flags[i][0], flags[i][1], err, sizeof err))
            die("config", err);
    if (config_finish(&cfg, err, sizeof err))
        die("config", err);
    log_level = verbose ? LOG_DEBUG : -1; /* refusals are the normal case here */

    db = store_conn_open(cfg.database_url, 1, &e);
    if (!db)
        die("store_conn_open", e);
    store_account acc = {0}, acc2 = {0};
    store_user u = {0}, u2 = {0};
    check(store_begin(db), "begin");
    tenant("Fuzz", &acc, &u);
    agent(acc.id, "demo", agent_demo);
    agent(acc.id, "nosuch:model", agent_nomodel); /* no provider: never the network */
    mint(u.id, token);
    tenant("Other", &acc2, &u2);
    char other_agent[STORE_ID_MAX];
    agent(acc2.id, "demo", other_agent);
    mint(u2.id, other_token);
    store_scope sc2;
    snprintf(sc2.account_id, sizeof sc2.account_id, "%s", acc2.id);
    snprintf(sc2.user_id, sizeof sc2.user_id, "%s", u2.id);
    thread_insert(&sc2, "thr_other", other_agent);
    check(store_commit(db), "commit");
    snprintf(scope.account_id, sizeof scope.account_id, "%s", acc.id);
    snprintf(scope.user_id, sizeof scope.user_id, "%s", u.id);
    store_account_clear(&acc);
    store_account_clear(&acc2);
    store_user_clear(&u);
    store_user_clear(&u2);
    reset_fixture();

    uv_loop_init(&loop);
    uv_prepare_init(&loop, &waiter);
    uv_prepare_start(&waiter, on_wait); /* before store_new: see on_wait */
    uv_unref((uv_handle_t *)&waiter);
    st = store_new(&loop, cfg.database_url, cfg.store_readers, &e);
    if (!st)
        die("store_new", e);
    /* files/ and files/tmp under the temporary data dir, the preview-URL key in secret.key */
    unsigned char key[32];
    if (files_prepare(cfg.data_dir, cfg.secret_key, key, err, sizeof err))
        die("files_prepare", err);
    ck_app_init(&app, &loop, &cfg, st, key);
    http_config hc = {
        .max_header = cfg.max_header,
        .max_url = cfg.max_url,
        .max_body = cfg.max_body,
        .header_timeout_ms = cfg.header_timeout_ms,
        .body_timeout_ms = cfg.body_timeout_ms,
        .idle_timeout_ms = cfg.idle_timeout_ms,
        .heartbeat_ms = cfg.heartbeat_ms,
        .sse_max_queue = cfg.sse_max_queue,
        .max_connections = cfg.max_connections,
        .max_per_address = cfg.max_per_address,
        .unadmitted_max = cfg.unauth_max,
    };
    srv = http_server_new(&loop, &hc, ck_handle, &app);
    app.http = srv;
    /* as main.c: the upload routes stream their bodies to disk */
    http_server_stream_bodies(srv, ck_wants_stream, cfg.upload_max_bytes + 64 * 1024, &app);
}

static int is_mode(uint8_t b)
{
    return b >= 0x80 || (b < 0x20 && b != '\t' && b != '\n' && b != '\r');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* libFuzzer's per-input leak check only runs after inputs that allocate more than they free,
 * and it gives up for good after 1000 false alarms (memory kept in caches). As a backstop, a
 * full LeakSanitizer pass runs every SWEEP_MS; a leak found there aborts, and its report names
 * the allocation stack (the crash file is the input of that moment, not necessarily the leaky
 * one). */
static void sweep(void)
{
    uint64_t now = uv_now(&loop);
    if (now - last_sweep_ms < SWEEP_MS)
        return;
    last_sweep_ms = now;
    if (__lsan_do_recoverable_leak_check()) {
        fprintf(stderr, "fuzz_protocol: periodic leak sweep found leaks (see the report above)\n");
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv) {
        init();
        last_sweep_ms = uv_now(&loop);
    }
    unsigned long m0 = n_malloc, f0 = n_free;
    unsigned mode = 0;
    if (size && is_mode(data[0])) {
        mode = data[0];
        data++;
        size--;
    }
    if (memmem(data, size, "_fix", 4))
        reset_fixture();

    const char *method = "POST", *path = "/chatkit", *query = "?agent_id=", *agent_id = agent_demo;
    char auth[AUTH_TOKEN_MAX + 40];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    switch (mode & 15) {
    case 8: agent_id = agent_nomodel; break;
    case 9: query = agent_id = ""; break;
    case 10: agent_id = "agt_%00%zz+%2F%ff"; break;
    case 11: auth[0] = 0; break;
    case 12: snprintf(auth, sizeof auth, "Authorization: Bearer ckt_unknown\r\n"); break;
    case 13: snprintf(auth, sizeof auth, "Authorization: Basic %s\r\n", token); break;
    case 14: { /* the other routes of ck_handle */
        static const char *const routes[][2] = {{"PUT", "/chatkit/upload/atc_fix"},
                                                 {"GET", "/metrics"},
                                                 {"GET", "/healthz"},
                                                 {"GET", "/chatkit"}};
        method = routes[(mode >> 4) & 3][0];
        path = routes[(mode >> 4) & 3][1];
        query = agent_id = "";
        break;
    }
    case 15: snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", other_token); break;
    }
    size_t chunks = mode >> 4 >= 12 ? ((mode >> 4) - 12) * 3 : FULL_CHUNKS;

    char head[512];
    int hl = snprintf(head, sizeof head,
                      "%s %s%s%s HTTP/1.1\r\nHost: fuzz.example:8080\r\n%s"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      method, path, query, agent_id, auth, size);
    size_t req_len = (size_t)hl + size;
    size_t total = req_len + chunks * STEP;
    uint8_t *msg = malloc(total);
    memcpy(msg, head, (size_t)hl);
    memcpy(msg + hl, data, size);
    memset(msg + req_len, 0, total - req_len); /* NUL: never a valid request start */

    waiting = 1;
    http_fuzz_feed(srv, msg, total, STEP);
    waiting = 0;
    free(msg);
    if (verbose)
        fprintf(stderr, "fuzz_protocol: after feed: store_pending=%u active=%zu streams=%u\n",
                store_pending(st), app.active.len, http_server_streams(srv));

    /* whatever the client left behind finishes now (UV_RUN_ONCE blocks for store threads and
     * timers; the loop is alive only while jobs are pending or timers are active) */
    int alive = 1;
    for (int i = 0; i < DRAIN_ITERS && alive; i++)
        alive = uv_run(&loop, UV_RUN_ONCE);
    if (alive || store_pending(st) || app.active.len || http_server_connections(srv) ||
        http_server_streams(srv)) {
        fprintf(stderr,
                "fuzz_protocol: request never settled: loop_alive=%d store_pending=%u "
                "active_threads=%zu connections=%u streams=%u\n",
                alive, store_pending(st), app.active.len, http_server_connections(srv),
                http_server_streams(srv));
        abort();
    }
    if (malloc_stats) {
        n_inputs++;
        n_unbalanced += n_malloc - m0 > n_free - f0;
        if (n_inputs % 10000 == 0)
            fprintf(stderr, "fuzz_protocol: %lu of %lu inputs left more mallocs than frees\n",
                    n_unbalanced, n_inputs);
    }
    sweep();
    return 0;
}
