/* MCP stdio transport (reference mcp-and-llm.md §2.5): the server is a child process; one
 * compact JSON-RPC message per line on its stdin and stdout; its stderr is free-form logging.
 *
 * Lifetime: handles (timer, three pipes, the process once spawned) are counted and the
 * transport frees itself in the last close callback, which stop() arranges: close stdin (the
 * polite way to end an MCP server), SIGTERM after 2 s, SIGKILL after 5 s, and the pipes and
 * the process handle are closed once the child has exited. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcp/transport.h"
#include "util/buf.h"
#include "util/log.h"

extern char **environ;

#define MCP_DEFAULT_MAX_MESSAGE (4u * 1024 * 1024)
#define STDERR_LINE_MAX         1000 /* longer stderr lines are cut (the log line is 2 KiB) */
#define EXIT_GRACE_MS           1000 /* exit without EOF, or EOF without exit: wait this long */
#define TERM_AFTER_MS           2000
#define KILL_AFTER_MS           5000

typedef struct stdio_tp {
    mcp_transport base;
    uv_loop_t *loop;
    mcp_transport_cb cb;
    void *ud;
    char *label;
    char *command;
    char **env; /* "K=V" overrides, NULL-terminated, may be NULL */
    size_t max_message;

    uv_process_t proc;
    uv_pipe_t in, out, err;
    uv_timer_t timer; /* before stop: exit/EOF grace; after: SIGTERM then SIGKILL */
    int handles;      /* initialized and not yet closed */
    int spawned;      /* proc is an initialized handle (even when uv_spawn failed) */
    int running;      /* the child was started */
    int exited;
    int64_t exit_status;
    int term_signal;
    int out_eof;
    int reported; /* on_closed ran (or was owed and dropped by stop) */
    int stopped;
    int termed;
    int write_err; /* the first failed write (reported when the child does not exit) */

    buf line; /* partial stdout line, capped at max_message */
    char rbuf[64 * 1024];
    char ebuf[4096];
    char eline[STDERR_LINE_MAX + 1];
    size_t elen;
    int eskip; /* dropping the rest of an over-long stderr line */
} stdio_tp;

typedef struct wreq {
    uv_write_t req;
    stdio_tp *t;
    char data[];
} wreq;

static const char *qlabel(const stdio_tp *t, char *out, size_t n)
{
    return log_quote(t->label, out, n);
}

/* Our own secrets never reach a server's environment (a server that needs a key gets it
 * from its configured env): the model keys, anything named like a key, secret, token or
 * password, and the database URL. */
static int secret_name(const char *e, size_t kl)
{
    static const char *const suffix[] = {"_API_KEY", "_KEY", "_SECRET", "_TOKEN", "_PASSWORD"};
    if (kl == 12 && !strncmp(e, "DATABASE_URL", 12))
        return 1;
    for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
        size_t n = strlen(suffix[i]);
        if (kl >= n && !strncmp(e + kl - n, suffix[i], n))
            return 1;
    }
    return 0;
}

/* ---- command line and environment ---- */

char **mcp_split_command(const char *cmd, char *err, size_t errlen)
{
    size_t len = cmd ? strlen(cmd) : 0;
    /* worst case: every other character starts a word; the words are copied after the
     * pointer array into the same allocation */
    size_t maxwords = len / 2 + 2;
    char **argv = xmalloc(maxwords * sizeof(char *) + len + 1);
    char *out = (char *)(argv + maxwords);
    size_t nw = 0;
    const char *p = cmd ? cmd : "";
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        argv[nw++] = out;
        while (*p && *p != ' ' && *p != '\t') {
            if (*p == '\'' || *p == '"') {
                char q = *p++;
                while (*p && *p != q) {
                    if (q == '"' && *p == '\\' && (p[1] == '"' || p[1] == '\\'))
                        p++;
                    *out++ = *p++;
                }
                if (*p != q) {
                    snprintf(err, errlen, "unterminated %c quote in the command", q);
                    free(argv);
                    return NULL;
                }
                p++;
            } else {
                *out++ = *p++;
            }
        }
        *out++ = 0;
    }
    if (nw == 0) {
        snprintf(err, errlen, "the command is empty");
        free(argv);
        return NULL;
    }
    argv[nw] = NULL;
    return argv;
}

/* environ with the configured entries replacing the ones of the same name, then added. */
static char **build_env(char *const *extra)
{
    size_t n = 0, m = 0;
    while (environ && environ[n])
        n++;
    while (extra && extra[m])
        m++;
    char **env = xcalloc(n + m + 1, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = environ[i];
        const char *eq = strchr(e, '=');
        size_t kl = eq ? (size_t)(eq - e) : strlen(e);
        int overridden = secret_name(e, kl);
        for (size_t j = 0; j < m && !overridden; j++)
            overridden = strncmp(extra[j], e, kl) == 0 && extra[j][kl] == '=';
        if (!overridden)
            env[k++] = (char *)e;
    }
    for (size_t j = 0; j < m; j++)
        if (strchr(extra[j], '='))
            env[k++] = extra[j];
    env[k] = NULL;
    return env;
}

/* ---- teardown ---- */

static void tp_destroy(stdio_tp *t)
{
    buf_free(&t->line);
    free(t->label);
    free(t->command);
    if (t->env)
        for (char **e = t->env; *e; e++)
            free(*e);
    free(t->env);
    free(t);
}

static void on_handle_closed(uv_handle_t *h)
{
    stdio_tp *t = h->data;
    if (--t->handles == 0)
        tp_destroy(t);
}

static void close_handle(stdio_tp *t, uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_handle_closed);
}

/* Only once the child has exited (or never ran): closing the process handle earlier would
 * leave it unreaped. */
static void close_all(stdio_tp *t)
{
    close_handle(t, (uv_handle_t *)&t->in);
    close_handle(t, (uv_handle_t *)&t->out);
    close_handle(t, (uv_handle_t *)&t->err);
    close_handle(t, (uv_handle_t *)&t->timer);
    if (t->spawned)
        close_handle(t, (uv_handle_t *)&t->proc);
}

/* ---- reporting the end ---- */

static void report_closed(stdio_tp *t, const char *reason)
{
    if (t->reported || t->stopped)
        return;
    t->reported = 1;
    uv_timer_stop(&t->timer);
    uv_read_stop((uv_stream_t *)&t->out);
    t->cb.on_closed(t->ud, reason);
}

static void report_exit(stdio_tp *t)
{
    char reason[128];
    if (!t->exited && t->write_err)
        snprintf(reason, sizeof reason, "writing to it failed: %s", uv_strerror(t->write_err));
    else if (!t->exited)
        snprintf(reason, sizeof reason, "it closed its standard output");
    else if (t->term_signal)
        snprintf(reason, sizeof reason, "it was killed by signal %d (%s)", t->term_signal,
                 strsignal(t->term_signal));
    else
        snprintf(reason, sizeof reason, "it exited with status %lld", (long long)t->exit_status);
    report_closed(t, reason);
}

static void on_grace(uv_timer_t *h)
{
    report_exit(h->data);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    stdio_tp *t = p->data;
    char ql[128];
    t->exited = 1;
    t->exit_status = status;
    t->term_signal = sig;
    LOGI(NULL, "mcp server exited", "server=\"%s\" status=%lld signal=%d", qlabel(t, ql, sizeof ql),
         (long long)status, sig);
    if (t->stopped) {
        close_all(t);
        return;
    }
    /* what it wrote just before exiting may still be in the pipe: read it first */
    if (t->out_eof || t->reported)
        report_exit(t);
    else
        uv_timer_start(&t->timer, on_grace, EXIT_GRACE_MS, 0);
}

/* ---- reading ---- */

static void on_alloc_out(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    stdio_tp *t = h->data;
    *b = uv_buf_init(t->rbuf, sizeof t->rbuf);
}

static void on_alloc_err(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    stdio_tp *t = h->data;
    *b = uv_buf_init(t->ebuf, sizeof t->ebuf);
}

static void handle_line(stdio_tp *t, const char *p, size_t n)
{
    while (n && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    if (i == n)
        return;
    json_error_t e;
    json_t *m = json_loadb(p, n, 0, &e);
    if (!m) {
        char ql[128], qe[200];
        LOGW(NULL, "mcp server sent a line that is not JSON, skipped",
             "server=\"%s\" err=\"%s\" bytes=%zu", qlabel(t, ql, sizeof ql),
             log_quote(e.text, qe, sizeof qe), n);
        return;
    }
    t->cb.on_message(t->ud, m);
    json_decref(m);
}

static void too_long(stdio_tp *t)
{
    char ql[128], reason[128];
    LOGW(NULL, "mcp server sent a message over the limit, stopping it",
         "server=\"%s\" max_bytes=%zu", qlabel(t, ql, sizeof ql), t->max_message);
    if (!t->exited)
        uv_process_kill(&t->proc, SIGKILL);
    snprintf(reason, sizeof reason, "it sent a message over %zu bytes", t->max_message);
    report_closed(t, reason);
}

static void on_read_out(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    stdio_tp *t = s->data;
    if (nread < 0) {
        uv_read_stop(s);
        if (nread != UV_EOF) {
            char reason[128];
            snprintf(reason, sizeof reason, "reading its output failed: %s",
                     uv_strerror((int)nread));
            report_closed(t, reason);
            return;
        }
        t->out_eof = 1;
        if (t->exited)
            report_exit(t);
        else if (!t->reported && !t->stopped)
            uv_timer_start(&t->timer, on_grace, EXIT_GRACE_MS, 0);
        return;
    }
    const char *p = b->base, *end = b->base + nread;
    while (p < end && !t->stopped && !t->reported) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            if (buf_append(&t->line, p, (size_t)(end - p)) < 0)
                too_long(t);
            break;
        }
        size_t n = (size_t)(nl - p);
        if (t->line.len) {
            if (buf_append(&t->line, p, n) < 0) {
                too_long(t);
                break;
            }
            handle_line(t, t->line.data, t->line.len);
            buf_reset(&t->line);
            if (t->line.cap > 256 * 1024)
                buf_free(&t->line); /* one huge message should not pin its buffer */
        } else if (n > t->max_message) {
            too_long(t);
            break;
        } else {
            handle_line(t, p, n);
        }
        p = nl + 1;
    }
}

static void flush_eline(stdio_tp *t)
{
    size_t n = t->elen;
    while (n && (t->eline[n - 1] == '\r' || t->eline[n - 1] == ' '))
        n--;
    t->eline[n] = 0;
    if (n) {
        char ql[128], qt[STDERR_LINE_MAX * 2];
        LOGI(NULL, "mcp server stderr", "server=\"%s\" line=\"%s%s\"", qlabel(t, ql, sizeof ql),
             log_quote(t->eline, qt, sizeof qt), t->eskip ? "..." : "");
    }
    t->elen = 0;
}

static void on_read_err(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    stdio_tp *t = s->data;
    if (nread < 0) {
        uv_read_stop(s);
        if (t->elen)
            flush_eline(t);
        return;
    }
    for (ssize_t i = 0; i < nread; i++) {
        char c = b->base[i];
        if (c == '\n') {
            if (!t->eskip || t->elen)
                flush_eline(t);
            t->eskip = 0;
        } else if (t->eskip) {
            continue;
        } else if (t->elen < STDERR_LINE_MAX) {
            t->eline[t->elen++] = c;
        } else {
            t->eskip = 1; /* log what we have, drop the rest of the line */
            flush_eline(t);
        }
    }
}

/* ---- writing ---- */

static void on_written(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    stdio_tp *t = w->t;
    free(w);
    if (status < 0 && status != UV_ECANCELED && !t->stopped && !t->reported) {
        /* usually the child is exiting: give its exit status the chance to be the reason */
        if (!t->write_err)
            t->write_err = status;
        if (!uv_is_active((uv_handle_t *)&t->timer))
            uv_timer_start(&t->timer, on_grace, EXIT_GRACE_MS, 0);
    }
}

static int tp_send(mcp_transport *base, const json_t *msg)
{
    stdio_tp *t = (stdio_tp *)base;
    if (!t->running || t->reported || t->stopped)
        return -EPIPE;
    /* a child that stopped reading must not make us queue without bound */
    if (uv_stream_get_write_queue_size((uv_stream_t *)&t->in) > 4 * t->max_message + 65536)
        return -ENOBUFS;
    size_t n = json_dumpb(msg, NULL, 0, JSON_COMPACT);
    if (n == 0)
        return -EINVAL;
    wreq *w = malloc(sizeof *w + n + 1);
    if (!w)
        return -ENOMEM;
    w->t = t;
    json_dumpb(msg, w->data, n, JSON_COMPACT); /* compact: no raw newline inside */
    w->data[n] = '\n';
    uv_buf_t b = uv_buf_init(w->data, (unsigned)(n + 1));
    int rc = uv_write(&w->req, (uv_stream_t *)&t->in, &b, 1, on_written);
    if (rc < 0) {
        free(w);
        return rc;
    }
    return 0;
}

/* ---- start / stop ---- */

static int tp_start(mcp_transport *base, char *err, size_t errlen)
{
    stdio_tp *t = (stdio_tp *)base;
    char **argv = mcp_split_command(t->command, err, errlen);
    if (!argv)
        return -EINVAL;
    char **envp = build_env(t->env);
    uv_stdio_container_t io[3];
    io[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE; /* the child's point of view */
    io[0].data.stream = (uv_stream_t *)&t->in;
    io[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    io[1].data.stream = (uv_stream_t *)&t->out;
    io[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    io[2].data.stream = (uv_stream_t *)&t->err;
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.exit_cb = on_exit_cb;
    o.file = argv[0];
    o.args = argv;
    o.env = envp;
    o.stdio_count = 3;
    o.stdio = io;
    t->proc.data = t;
    t->spawned = 1;
    t->handles++;
    int rc = uv_spawn(t->loop, &t->proc, &o);
    char ql[128];
    if (rc < 0) {
        snprintf(err, errlen, "could not start %s: %s", argv[0], uv_strerror(rc));
        LOGW(NULL, "mcp server could not be started", "server=\"%s\" err=%s",
             qlabel(t, ql, sizeof ql), uv_err_name(rc));
        free(argv);
        free(envp);
        return rc;
    }
    free(argv);
    free(envp);
    t->running = 1;
    LOGI(NULL, "mcp server started", "server=\"%s\" pid=%d", qlabel(t, ql, sizeof ql), t->proc.pid);
    uv_read_start((uv_stream_t *)&t->out, on_alloc_out, on_read_out);
    uv_read_start((uv_stream_t *)&t->err, on_alloc_err, on_read_err);
    return 0;
}

static void on_stop_timer(uv_timer_t *h)
{
    stdio_tp *t = h->data;
    char ql[128];
    if (t->exited)
        return;
    if (!t->termed) {
        t->termed = 1;
        LOGI(NULL, "mcp server still running after stdin closed, sending SIGTERM", "server=\"%s\"",
             qlabel(t, ql, sizeof ql));
        uv_process_kill(&t->proc, SIGTERM);
        uv_timer_start(&t->timer, on_stop_timer, KILL_AFTER_MS - TERM_AFTER_MS, 0);
    } else {
        LOGW(NULL, "mcp server ignored SIGTERM, sending SIGKILL", "server=\"%s\"",
             qlabel(t, ql, sizeof ql));
        uv_process_kill(&t->proc, SIGKILL);
    }
}

static void tp_stop(mcp_transport *base)
{
    stdio_tp *t = (stdio_tp *)base;
    if (t->stopped)
        return;
    t->stopped = 1;
    if (!t->running || t->exited) {
        close_all(t);
        return;
    }
    /* stdin EOF asks the server to end; stderr stays open to log its last words */
    close_handle(t, (uv_handle_t *)&t->in);
    uv_read_stop((uv_stream_t *)&t->out);
    close_handle(t, (uv_handle_t *)&t->out);
    uv_timer_start(&t->timer, on_stop_timer, TERM_AFTER_MS, 0);
}

static const mcp_transport_ops stdio_ops = {tp_start, tp_send, tp_stop};

mcp_transport *mcp_stdio_new(uv_loop_t *loop, const mcp_server_config *cfg,
                             const mcp_transport_cb *cb, void *ud)
{
    stdio_tp *t = xcalloc(1, sizeof *t);
    t->base.ops = &stdio_ops;
    t->loop = loop;
    t->cb = *cb;
    t->ud = ud;
    t->label = xstrdup(cfg->label ? cfg->label : "mcp");
    t->command = xstrdup(cfg->command ? cfg->command : "");
    if (cfg->env) {
        size_t n = 0;
        while (cfg->env[n])
            n++;
        t->env = xcalloc(n + 1, sizeof *t->env);
        for (size_t i = 0; i < n; i++)
            t->env[i] = xstrdup(cfg->env[i]);
    }
    t->max_message = cfg->max_message ? cfg->max_message : MCP_DEFAULT_MAX_MESSAGE;
    t->line = (buf)BUF_INIT(t->max_message);
    uv_pipe_init(loop, &t->in, 0);
    uv_pipe_init(loop, &t->out, 0);
    uv_pipe_init(loop, &t->err, 0);
    uv_timer_init(loop, &t->timer);
    t->in.data = t->out.data = t->err.data = t->timer.data = t;
    t->handles = 4;
    return &t->base;
}
