/* chatkitd: the command line (README.md, "Operator commands"). */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <uv.h>

#include "admin.h"
#include "chatkit/chatkit.h"
#include "files/files.h"
#include "mcp/pool.h"
#include "run/run.h"
#include "http/http.h"
#include "llm/provider.h"
#include "mcp/demo_server.h"
#include "store/store.h"
#include "util/config.h"
#include "util/log.h"

static const char help[] =
    "usage: chatkitd COMMAND [--json] [--flag value]...\n"
    "\n"
    "commands:\n"
    "  serve                                  run the server (default)\n"
    "  migrate                                apply database migrations\n"
    "  config                                 print the effective configuration\n"
    "  account create NAME [--external-id HOST_ACCOUNT_ID]\n"
    "  user create --account ID NAME [--external-id X]\n"
    "  agent create --account ID --name NAME [--model default|demo|PROVIDER:MODEL]\n"
    "               [--instructions TEXT | --instructions-file F]\n"
    "               [--mcp-stdio 'CMD ARGS']... [--mcp-http URL]... [--tool NAME]...\n"
    "               [--base-url URL] [--api-key-env VAR] [--allow-model MODEL]...\n"
    "               [--forms widget|structured]\n"
    "               (--mcp-env K=V after an --mcp-stdio; --mcp-header 'N: v' after an --mcp-http)\n"
    "  token create --user ID [--ttl 30d]     prints the bearer token once\n"
    "  token create --user ID --login-url     prints a one-time browser login link\n"
    "  token revoke TOKEN\n"
    "  usage --account ID [--thread ID] [--limit 50]\n"
    "                                         token usage per run, newest first\n"
    "  demo                                   idempotent demo tenant; prints ids and token\n"
    "  mcp-demo                               the bundled MCP server on stdio\n"
    "\n"
    "flags (each also an environment variable, see docs/configuration.md):\n"
    "  --listen HOST:PORT --data-dir DIR --database-url URL --log-level LEVEL\n"
    "  --max-body SIZE --heartbeat MS --idle-timeout MS --shutdown-timeout MS ...\n";

typedef struct server {
    uv_loop_t *loop;
    config *cfg;
    ck_app app;
    http_server *http;
    store *st;
    uv_signal_t sigint, sigterm;
    uv_timer_t drain;
    unsigned drain_ticks;
    int stopping;
} server;

/* Streams cut by the deadline still store what they had (cancellation); the store closes
 * once they have drained, or after a last grace period. */
static void finish_shutdown(uv_timer_t *t)
{
    server *s = t->data;
    if ((s->app.active.len || store_pending(s->st)) && s->drain_ticks++ < 500)
        return;
    if (s->app.active.len)
        LOGW(NULL, "streams still draining at exit", "streams=%zu", s->app.active.len);
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    ck_app_stop(&s->app);
    llm_providers_shutdown();
    run_drop_parked(&s->app);
    mcp_pool_free(s->app.mcp); /* children: stdin closed, then SIGTERM/SIGKILL; the loop waits */
    s->app.mcp = NULL;
    store_free(s->st);
    s->st = NULL;
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
}

static void on_http_done(http_server *srv, void *ud)
{
    server *s = ud;
    (void)srv;
    LOGI(NULL, "connections closed; flushing the store", "%s", "");
    uv_timer_init(s->loop, &s->drain);
    s->drain.data = s;
    uv_timer_start(&s->drain, finish_shutdown, 0, 10);
}

static void on_signal(uv_signal_t *h, int signum)
{
    server *s = h->data;
    if (s->stopping) {
        LOGW(NULL, "second signal: exiting now", "signal=%d", signum);
        exit(1);
    }
    s->stopping = 1;
    s->app.shutting_down = 1;
    LOGI(NULL, "shutting down", "signal=%d deadline_ms=%u", signum, s->cfg->shutdown_timeout_ms);
    http_server_shutdown(s->http, s->cfg->shutdown_timeout_ms, on_http_done, s);
}

/* What shows that a data directory had a database: its signing key, stored attachments, a
 * write-ahead log left behind. NULL when none (a first start). */
static const char *data_dir_was_used(const config *cfg, const char *db)
{
    char p[4096];
    struct stat sb;
    snprintf(p, sizeof p, "%s-wal", db);
    if (stat(p, &sb) == 0)
        return "the database's write-ahead log";
    snprintf(p, sizeof p, "%s/secret.key", cfg->data_dir);
    if (stat(p, &sb) == 0)
        return "secret.key";
    snprintf(p, sizeof p, "%s/files", cfg->data_dir);
    DIR *d = opendir(p);
    const char *why = NULL;
    for (struct dirent *e; d && !why && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "tmp"))
            why = "stored attachments (files/)";
    if (d)
        closedir(d);
    return why;
}

/* The start-up guard: a database that is missing from a data directory that was used before
 * was deleted or moved, and opening it would silently create an empty one (every account,
 * token and thread gone). Only `chatkitd migrate` creates one there, on purpose. */
static int check_database_present(const config *cfg)
{
    const char *db = cfg->database_url + 7;
    struct stat sb;
    if (strncmp(cfg->database_url, "sqlite:", 7) || !*db || !strcmp(db, ":memory:") ||
        stat(db, &sb) == 0 || errno != ENOENT)
        return 0;
    const char *why = data_dir_was_used(cfg, db);
    if (!why)
        return 0;
    fprintf(stderr,
            "chatkitd: the database %s is missing, but %s was used before (it has %s): the "
            "database was deleted or moved, and opening it would create an empty one.\n"
            "Put it back (from a backup, or a %s.rescued-* copy a running server made), or create "
            "an empty database deliberately with `chatkitd migrate` (every account, token and "
            "thread is then gone).\n",
            db, cfg->data_dir, why, db);
    return -1;
}

/* Descriptors open now (the database, the loop's own), or 0 when /proc is not there. */
static unsigned fds_in_use(void)
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n ? n - 1 : 0; /* not the directory's own */
}

/* Every connection is a file descriptor. The soft limit is raised to the hard one, and the
 * connection cap kept under what is left of it, with room for attachment files, MCP servers'
 * pipes and model connections (an eighth of the limit, 16 to 256): a cap the process cannot
 * reach would let idle connections use up the descriptors, after which accept() fails (libuv
 * then closes new connections itself) and new clients are turned away before the cap's
 * eviction of idle connections could help. */
static unsigned conn_cap_for_fds(unsigned want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return want;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t cur = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl))
            rl.rlim_cur = cur;
    }
    if (rl.rlim_cur == RLIM_INFINITY)
        return want;
    rlim_t reserve = rl.rlim_cur / 8 < 16 ? 16 : rl.rlim_cur / 8 > 256 ? 256 : rl.rlim_cur / 8;
    reserve += fds_in_use();
    rlim_t fit = rl.rlim_cur > reserve + 1 ? rl.rlim_cur - reserve : 1;
    if (want && want <= fit)
        return want;
    unsigned cap = fit > 0xffffffffu ? 0xffffffffu : (unsigned)fit;
    LOGI(NULL, "connection cap set by the descriptor limit", "max_connections=%u nofile=%llu", cap,
         (unsigned long long)rl.rlim_cur);
    return cap;
}

static int serve(config *cfg)
{
    char err[512];
    if (admin_prepare_data_dir(cfg, err, sizeof err)) {
        fprintf(stderr, "chatkitd: %s\n", err);
        return 1;
    }
    if (check_database_present(cfg))
        return 1;
    server s;
    memset(&s, 0, sizeof s);
    s.cfg = cfg;
    s.loop = uv_default_loop();
    char *e = NULL;
    s.st = store_new(s.loop, cfg->database_url, cfg->store_readers, &e);
    if (!s.st) {
        fprintf(stderr, "chatkitd: cannot open the database: %s\n", e ? e : "?");
        free(e);
        return 1;
    }
    unsigned char key[32];
    if (files_prepare(cfg->data_dir, cfg->secret_key, key, err, sizeof err)) {
        fprintf(stderr, "chatkitd: %s\n", err);
        store_free(s.st);
        uv_run(s.loop, UV_RUN_NOWAIT);
        return 1;
    }
    ck_app_init(&s.app, s.loop, cfg, s.st, key);
    ck_uploads_recover(&s.app); /* what a previous process left behind: before we listen */
    memset(key, 0, sizeof key);
    unsigned max_conns = conn_cap_for_fds(cfg->max_connections);
    http_config hc = {
        .max_header = cfg->max_header,
        .max_url = cfg->max_url,
        .max_body = cfg->max_body,
        .header_timeout_ms = cfg->header_timeout_ms,
        .body_timeout_ms = cfg->body_timeout_ms,
        .idle_timeout_ms = cfg->idle_timeout_ms,
        .heartbeat_ms = cfg->heartbeat_ms,
        .sse_max_queue = cfg->sse_max_queue,
        .max_connections = max_conns,
        .max_per_address = cfg->max_per_address,
        .unadmitted_max = cfg->unauth_max,
    };
    s.http = http_server_new(s.loop, &hc, ck_handle, &s.app);
    s.app.http = s.http;
    /* uploads: the declared size is checked by the handler; multipart framing on top */
    http_server_stream_bodies(s.http, ck_wants_stream, cfg->upload_max_bytes + 64 * 1024, &s.app);
    char host[64];
    int port;
    config_parse_listen(cfg->listen, host, sizeof host, &port);
    int rc = http_server_listen(s.http, host, port);
    if (rc) {
        fprintf(stderr, "chatkitd: cannot listen on %s: %s\n", cfg->listen, uv_strerror(rc));
        http_server_free(s.http);
        store_free(s.st);
        ck_app_stop(&s.app);
        ck_app_free(&s.app);
        uv_run(s.loop, UV_RUN_NOWAIT);
        return 1;
    }
    LOGI(NULL, "listening", "addr=%s port=%d db=%s", host, http_server_port(s.http),
         strncmp(cfg->database_url, "sqlite:", 7) ? "postgres" : cfg->database_url);
    uv_signal_init(s.loop, &s.sigint);
    uv_signal_init(s.loop, &s.sigterm);
    s.sigint.data = s.sigterm.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_run(s.loop, UV_RUN_DEFAULT);
    http_server_free(s.http);
    uv_run(s.loop, UV_RUN_DEFAULT); /* the server's handles finish closing (and free) here */
    ck_app_free(&s.app);
    if (uv_loop_close(s.loop))
        LOGW(NULL, "handles still open at exit", "%s", "");
    LOGI(NULL, "stopped", "%s", "");
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    json_object_seed(0); /* before any thread exists: jansson's seed init is not thread-safe */
    config cfg;
    char err[512];
    if (config_load(&cfg, err, sizeof err)) {
        fprintf(stderr, "chatkitd: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    /* split: global flags (config) anywhere; the rest belongs to the command */
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int nrest = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help") || !strcmp(a, "help")) {
            fputs(help, stdout);
            free(rest);
            config_free(&cfg);
            return 0;
        }
        if (!strncmp(a, "--", 2) && i + 1 < argc) {
            int r = config_flag(&cfg, a + 2, argv[i + 1], err, sizeof err);
            if (r < 0) {
                fprintf(stderr, "chatkitd: %s\n", err);
                free(rest);
                config_free(&cfg);
                return 2;
            }
            if (r == 0) {
                i++;
                continue;
            }
        }
        rest[nrest++] = argv[i];
    }
    if (config_finish(&cfg, err, sizeof err)) {
        fprintf(stderr, "chatkitd: %s\n", err);
        free(rest);
        config_free(&cfg);
        return 2;
    }
    log_level = cfg.log_level;
    int status;
    const char *cmd = nrest ? rest[0] : "serve";
    if (!strcmp(cmd, "serve")) {
        status = nrest > 1 ? (fprintf(stderr, "chatkitd: serve takes no arguments\n"), 2)
                           : serve(&cfg);
    } else if (!strcmp(cmd, "mcp-demo")) {
        status = nrest > 1 ? (fprintf(stderr, "chatkitd: mcp-demo takes no arguments\n"), 2)
                           : mcp_demo_main(stdin, stdout);
    } else if (strcmp(cmd, "migrate") && strcmp(cmd, "config") && check_database_present(&cfg)) {
        status = 1; /* the other commands would create an empty database too */
    } else {
        status = admin_main(&cfg, nrest, rest, json);
    }
    free(rest);
    config_free(&cfg);
    return status;
}
