/* Outbound HTTP: libcurl's multi_socket interface on the libuv loop, libcurl loaded with dlopen.
 *
 * Shape (the classic multi-uv pattern): curl tells us which sockets to watch (socket callback ->
 * one uv_poll per socket) and when to wake it (timer callback -> one uv_timer); both call
 * curl_multi_socket_action and then collect finished transfers with curl_multi_info_read.
 *
 * User callbacks never run inside a libcurl callback: the write and header callbacks only store
 * what arrived in the request and queue it; the queue is delivered after curl_multi_socket_action
 * has returned (or on the next loop turn, via an idle handle). So user code may cancel, pause,
 * start requests or free the context from inside its callbacks, and libcurl is never re-entered.
 *
 * Memory is freed in uv close callbacks: a request's memory outlives fetch_cancel and on_done
 * until its timer's close callback, so code that still holds it within the current callback
 * (our delivery loop) only has to look at the `dead` flag. */
#include "llm/fetch.h"

/* We call libcurl through our own pointers, so its gcc type-checking macros do not apply, and we
 * still set CURLOPT_PROTOCOLS (deprecated in 7.85) when an older libcurl lacks the _STR form. */
#define CURL_DISABLE_TYPECHECK
#define CURL_DISABLE_DEPRECATION
#include <curl/curl.h>

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/buf.h"
#include "util/log.h"

#define FETCH_DEF_CONNECT_MS    10000u
#define FETCH_DEF_FIRST_BYTE_MS 60000u
#define FETCH_DEF_IDLE_MS       60000u
#define FETCH_DEF_MAX           (16u * 1024 * 1024)
/* Body bytes held between curl's write callback and on_data. Beyond this the transfer is paused
 * inside curl until the user has been given what we hold (one write callback passes at most
 * CURL_MAX_WRITE_SIZE, so this costs one loop turn per 256 KiB at worst). */
#define FETCH_PENDING_SOFT (256u * 1024)
/* A held buffer up to this size is kept for the next piece; a bigger one (after a burst) is
 * released, so a long quiet stream does not keep the burst's memory. */
#define FETCH_PENDING_KEEP (64u * 1024)
/* Response header bytes accepted before the head is complete (we keep only the three values). */
#define FETCH_HEAD_MAX  (256u * 1024)
#define FETCH_VALUE_MAX 256

/* ---- libcurl, loaded at run time ---- */

static struct curl_api {
    __typeof__(curl_global_init) *global_init;
    __typeof__(curl_easy_init) *easy_init;
    __typeof__(curl_easy_setopt) *easy_setopt;
    __typeof__(curl_easy_getinfo) *easy_getinfo;
    __typeof__(curl_easy_cleanup) *easy_cleanup;
    __typeof__(curl_easy_pause) *easy_pause;
    __typeof__(curl_easy_strerror) *easy_strerror;
    __typeof__(curl_slist_append) *slist_append;
    __typeof__(curl_slist_free_all) *slist_free_all;
    __typeof__(curl_multi_init) *multi_init;
    __typeof__(curl_multi_setopt) *multi_setopt;
    __typeof__(curl_multi_add_handle) *multi_add_handle;
    __typeof__(curl_multi_remove_handle) *multi_remove_handle;
    __typeof__(curl_multi_socket_action) *multi_socket_action;
    __typeof__(curl_multi_info_read) *multi_info_read;
    __typeof__(curl_multi_assign) *multi_assign;
    __typeof__(curl_multi_cleanup) *multi_cleanup;
} cu;

static const struct {
    const char *name;
    size_t off;
} curl_syms[] = {
/* clang-format off */
#define SYM(field, name) {name, offsetof(struct curl_api, field)}
    SYM(global_init, "curl_global_init"),
    SYM(easy_init, "curl_easy_init"),
    SYM(easy_setopt, "curl_easy_setopt"),
    SYM(easy_getinfo, "curl_easy_getinfo"),
    SYM(easy_cleanup, "curl_easy_cleanup"),
    SYM(easy_pause, "curl_easy_pause"),
    SYM(easy_strerror, "curl_easy_strerror"),
    SYM(slist_append, "curl_slist_append"),
    SYM(slist_free_all, "curl_slist_free_all"),
    SYM(multi_init, "curl_multi_init"),
    SYM(multi_setopt, "curl_multi_setopt"),
    SYM(multi_add_handle, "curl_multi_add_handle"),
    SYM(multi_remove_handle, "curl_multi_remove_handle"),
    SYM(multi_socket_action, "curl_multi_socket_action"),
    SYM(multi_info_read, "curl_multi_info_read"),
    SYM(multi_assign, "curl_multi_assign"),
    SYM(multi_cleanup, "curl_multi_cleanup"),
#undef SYM
};
/* clang-format on */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static const char *curl_err = "libcurl not loaded";
static int curl_ok;

static void curl_load(void)
{
    char q[256];
    /* RTLD_LOCAL: libcurl's dependencies (OpenSSL, nghttp2, …) stay out of our symbol space */
    void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        LOGE(NULL, "cannot load libcurl", "error=\"%s\"", log_quote(e ? e : "?", q, sizeof q));
        curl_err = "cannot load libcurl.so.4 (install libcurl4); the HTTP model providers need it";
        return;
    }
    for (size_t i = 0; i < sizeof curl_syms / sizeof curl_syms[0]; i++) {
        void *sym = dlsym(h, curl_syms[i].name);
        if (!sym) {
            LOGE(NULL, "libcurl lacks a function", "name=%s", curl_syms[i].name);
            curl_err = "libcurl.so.4 lacks a required function (too old?)";
            return; /* the handle stays open: unloading a half-used library buys nothing */
        }
        /* POSIX guarantees that data and function pointers have the same representation */
        memcpy((char *)&cu + curl_syms[i].off, &sym, sizeof sym);
    }
    if (cu.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        curl_err = "curl_global_init failed";
        return;
    }
    curl_ok = 1;
}

/* ---- types ---- */

typedef struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    fetch_ctx *ctx;
    struct sock *prev, *next;
} sock;

struct fetch {
    fetch_ctx *ctx;
    CURL *easy;
    struct curl_slist *headers;
    fetch_cb cb;
    void *ud;
    uv_timer_t timer;     /* first-byte, then idle timeout */
    fetch *prev, *next;   /* ctx->all */
    fetch *rprev, *rnext; /* ctx->ready, when queued */
    buf data;             /* body bytes not yet given to on_data */
    size_t received;
    size_t max;
    unsigned first_byte_ms, idle_ms;
    long status;
    size_t head_bytes;
    char content_type[FETCH_VALUE_MAX];
    char retry_after[FETCH_VALUE_MAX];
    char *keep_name; /* opts.keep_header (owned), NULL when none */
    char *kept;      /* its value in the current head block, NULL when absent */
    unsigned queued : 1;
    unsigned in_multi : 1;
    unsigned sent : 1;        /* the request went out: the first-byte timer runs */
    unsigned got_byte : 1;    /* a response byte arrived: the idle timer runs */
    unsigned head_done : 1;   /* final status line and headers complete */
    unsigned head_given : 1;  /* on_head was called */
    unsigned user_paused : 1; /* fetch_pause(f, 1) */
    unsigned curl_paused : 1; /* curl holds the transfer paused (by us or by the user) */
    unsigned complete : 1;    /* the transfer ended; on_done is due once data is delivered */
    unsigned dead : 1;        /* cancelled or on_done given: no callbacks, being freed */
    int abort_rc;             /* why our write/header callback failed the transfer */
    const char *abort_msg;
    int done_rc;
    char msg[CURL_ERROR_SIZE];
    char errbuf[CURL_ERROR_SIZE]; /* curl's detail for the last error */
};

struct fetch_ctx {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer; /* curl's one timeout */
    uv_idle_t idle;   /* deferred work: delivery after fetch_pause(f, 0), kicking curl */
    fetch *all;
    fetch *ready, *ready_tail;
    sock *socks;
    unsigned open; /* uv handles whose close callback has not run; ctx is freed at 0 */
    unsigned freeing : 1;
    unsigned kick : 1; /* run curl's timeouts on the next idle turn */
};

/* ---- lists ---- */

static void queue(fetch *f)
{
    fetch_ctx *ctx = f->ctx;
    if (f->queued || f->dead)
        return;
    f->queued = 1;
    f->rnext = NULL;
    f->rprev = ctx->ready_tail;
    if (ctx->ready_tail)
        ctx->ready_tail->rnext = f;
    else
        ctx->ready = f;
    ctx->ready_tail = f;
}

static void unqueue(fetch *f)
{
    fetch_ctx *ctx = f->ctx;
    if (!f->queued)
        return;
    if (f->rprev)
        f->rprev->rnext = f->rnext;
    else
        ctx->ready = f->rnext;
    if (f->rnext)
        f->rnext->rprev = f->rprev;
    else
        ctx->ready_tail = f->rprev;
    f->queued = 0;
    f->rprev = f->rnext = NULL;
}

static void on_idle(uv_idle_t *h);

/* Runs delivery (and the kick, if asked) on the next loop turn. */
static void defer(fetch_ctx *ctx)
{
    if (!ctx->freeing)
        uv_idle_start(&ctx->idle, on_idle);
}

static void maybe_free_ctx(fetch_ctx *ctx)
{
    if (ctx->freeing && ctx->open == 0)
        free(ctx);
}

/* ---- request teardown ---- */

/* Takes the transfer out of curl. Never from inside a curl callback (curl forbids it). Removing
 * an unfinished HTTP/1 transfer closes its connection. */
static void detach_curl(fetch *f)
{
    if (f->easy) {
        if (f->in_multi && f->ctx->multi)
            cu.multi_remove_handle(f->ctx->multi, f->easy);
        f->in_multi = 0;
        cu.easy_cleanup(f->easy);
        f->easy = NULL;
    }
    if (f->headers) {
        cu.slist_free_all(f->headers);
        f->headers = NULL;
    }
}

static void on_fetch_closed(uv_handle_t *h)
{
    fetch *f = h->data;
    fetch_ctx *ctx = f->ctx;
    free(f);
    ctx->open--;
    maybe_free_ctx(ctx);
}

/* Unlinks and frees (after the timer's close callback); no callback is made. */
static void release(fetch *f)
{
    fetch_ctx *ctx = f->ctx;
    /* twice when fetch_ctx_free runs inside on_done: the context releases f, then deliver() */
    if (uv_is_closing((uv_handle_t *)&f->timer))
        return;
    detach_curl(f);
    unqueue(f);
    f->dead = 1;
    if (f->prev)
        f->prev->next = f->next;
    else
        ctx->all = f->next;
    if (f->next)
        f->next->prev = f->prev;
    f->prev = f->next = NULL;
    buf_free(&f->data);
    free(f->keep_name);
    free(f->kept);
    f->keep_name = f->kept = NULL;
    uv_close((uv_handle_t *)&f->timer, on_fetch_closed);
}

static void set_msg(fetch *f, const char *m)
{
    snprintf(f->msg, sizeof f->msg, "%s", m ? m : "");
    /* curl's messages sometimes end in a newline */
    size_t n = strlen(f->msg);
    while (n && (f->msg[n - 1] == '\n' || f->msg[n - 1] == '\r' || f->msg[n - 1] == ' '))
        f->msg[--n] = 0;
}

/* The transfer is over: stop it and queue on_done (after any body still held, unless the user
 * aborted, in which case they want nothing more). */
static void finish(fetch *f, int rc, const char *msg)
{
    if (f->complete || f->dead)
        return;
    detach_curl(f);
    uv_timer_stop(&f->timer);
    f->complete = 1;
    f->done_rc = rc;
    set_msg(f, msg);
    if (rc == FETCH_EABORTED)
        buf_free(&f->data);
    queue(f);
}

/* ---- timeouts ---- */

static void on_fetch_timer(uv_timer_t *t);
static void run_ready(fetch_ctx *ctx);

/* The per-request timer follows the state: first byte (armed once, when the request is sent),
 * then idle (restarted on every byte), stopped while paused or when over. */
static void arm_timer(fetch *f)
{
    if (f->complete || f->dead) {
        uv_timer_stop(&f->timer);
        return;
    }
    if (!f->got_byte)
        return; /* the first-byte timer, if started, keeps running, paused or not */
    if (f->user_paused)
        uv_timer_stop(&f->timer);
    else
        uv_timer_start(&f->timer, on_fetch_timer, f->idle_ms, 0);
}

static void on_fetch_timer(uv_timer_t *t)
{
    fetch *f = t->data;
    fetch_ctx *ctx = f->ctx;
    finish(f, FETCH_ETIMEOUT, f->got_byte ? "idle timeout" : "first byte timeout");
    run_ready(ctx);
}

/* ---- libcurl callbacks: record and queue, never call the user ---- */

static int on_prereq(void *ud, char *ip, char *lip, int port, int lport)
{
    fetch *f = ud;
    if (!f->sent) {
        f->sent = 1;
        uv_timer_start(&f->timer, on_fetch_timer, f->first_byte_ms, 0);
    }
    return CURL_PREREQFUNC_OK;
}

static void got_byte(fetch *f)
{
    f->got_byte = 1;
    arm_timer(f);
}

static int header_is(const char *line, size_t n, const char *name, const char **val, size_t *vlen)
{
    size_t k = strlen(name);
    if (n <= k || line[k] != ':' || strncasecmp(line, name, k) != 0)
        return 0;
    const char *v = line + k + 1;
    const char *e = line + n;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *val = v;
    *vlen = (size_t)(e - v);
    return 1;
}

static void copy_value(char *dst, const char *v, size_t n)
{
    if (n >= FETCH_VALUE_MAX)
        n = FETCH_VALUE_MAX - 1; /* longer values are not meaningful for us; keep the start */
    memcpy(dst, v, n);
    dst[n] = 0;
}

static size_t on_header(char *p, size_t size, size_t nitems, void *ud)
{
    fetch *f = ud;
    size_t n = size * nitems;
    if (f->head_done)
        return n; /* trailers */
    f->head_bytes += n;
    if (f->head_bytes > FETCH_HEAD_MAX) {
        f->abort_rc = FETCH_EPROTO;
        f->abort_msg = "response headers too large";
        return 0;
    }
    got_byte(f);
    size_t len = n;
    while (len && (p[len - 1] == '\n' || p[len - 1] == '\r'))
        len--;
    const char *v;
    size_t vlen;
    if (len == 0) {
        /* end of a header block; 1xx blocks (100 Continue, 103 Early Hints) precede the real one */
        if (f->status >= 100 && f->status < 200) {
            f->status = 0;
            return n;
        }
        f->head_done = 1;
        queue(f);
    } else if (len > 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* a new status line starts a new block: forget the previous block's values */
        const char *sp = memchr(p, ' ', len);
        long st = 0;
        if (sp)
            for (sp++; sp < p + len && *sp >= '0' && *sp <= '9' && st < 1000; sp++)
                st = st * 10 + (*sp - '0');
        f->status = st;
        f->content_type[0] = f->retry_after[0] = 0;
        free(f->kept);
        f->kept = NULL;
    } else if (header_is(p, len, "content-type", &v, &vlen)) {
        copy_value(f->content_type, v, vlen);
    } else if (header_is(p, len, "retry-after", &v, &vlen)) {
        copy_value(f->retry_after, v, vlen);
    }
    if (len && f->keep_name && header_is(p, len, f->keep_name, &v, &vlen)) {
        free(f->kept); /* a repeated header: the last one counts */
        f->kept = vlen <= FETCH_KEPT_MAX ? xstrndup(v, vlen) : NULL;
    }
    return n;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    fetch *f = ud;
    size_t n = size * nmemb;
    if (!f->head_done) {
        /* cannot happen with HTTP/1.x or 2 (headers first), but never give data before a head */
        long st = 0;
        cu.easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &st);
        f->status = st;
        f->head_done = 1;
    }
    got_byte(f);
    if (f->user_paused) {
        f->curl_paused = 1;
        return CURL_WRITEFUNC_PAUSE; /* curl keeps this chunk and gives it again on unpause */
    }
    /* CURLOPT_MAXFILESIZE only knows Content-Length; chunked and decoded bodies are counted here */
    if (n > f->max - f->received) {
        f->abort_rc = FETCH_ETOOBIG;
        f->abort_msg = "response larger than max_response";
        return CURL_WRITEFUNC_ERROR;
    }
    if (f->data.len && f->data.len + n > FETCH_PENDING_SOFT) {
        f->curl_paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (n == 0)
        return 0;
    /* cannot fail: data.max == max and received counts everything that went into data */
    if (buf_append(&f->data, p, n) < 0) {
        f->abort_rc = FETCH_ETOOBIG;
        f->abort_msg = "response larger than max_response";
        return CURL_WRITEFUNC_ERROR;
    }
    f->received += n;
    queue(f);
    return n;
}

/* ---- completion ---- */

static int map_error(fetch *f, CURLcode res, const char **msg)
{
    *msg = f->errbuf[0] ? f->errbuf : cu.easy_strerror(res);
    switch (res) {
    case CURLE_OK: *msg = ""; return 0;
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_QUIC_CONNECT_ERROR:
    case CURLE_PROXY: return FETCH_ECONNECT;
    case CURLE_OPERATION_TIMEDOUT: return FETCH_ETIMEOUT;
    case CURLE_FILESIZE_EXCEEDED: *msg = "response larger than max_response"; return FETCH_ETOOBIG;
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
        if (f->abort_rc) {
            *msg = f->abort_msg;
            return f->abort_rc;
        }
        return FETCH_EPROTO;
    default: return FETCH_EPROTO;
    }
}

static void check_done(fetch_ctx *ctx)
{
    CURLMsg *m;
    int left;
    while (ctx->multi && (m = cu.multi_info_read(ctx->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        /* read everything from m before finish() removes the handle (m dies with it) */
        CURL *e = m->easy_handle;
        CURLcode res = m->data.result;
        char *priv = NULL;
        cu.easy_getinfo(e, CURLINFO_PRIVATE, &priv);
        fetch *f = (fetch *)priv;
        if (!f || f->complete || f->dead)
            continue;
        const char *msg;
        int rc = map_error(f, res, &msg);
        finish(f, rc, msg);
    }
}

/* ---- delivery to the user, outside curl ---- */

/* Gives f what is due: head, held body, then on_done. Returns with f possibly dead. */
static void deliver(fetch *f)
{
    fetch_ctx *ctx = f->ctx;
    if (f->head_done && !f->head_given) {
        f->head_given = 1;
        if (f->cb.on_head) {
            int rc = f->cb.on_head(f->ud, f->status, f->content_type[0] ? f->content_type : NULL,
                                   f->retry_after[0] ? f->retry_after : NULL);
            if (ctx->freeing || f->dead)
                return;
            if (rc < 0)
                finish(f, FETCH_EABORTED, "aborted by on_head");
        }
    }
    if (f->user_paused)
        return;
    if (f->data.len) {
        /* hand over our buffer and start a new one, so a cancel from inside on_data frees an
         * empty buffer instead of the bytes being read */
        buf held = f->data;
        f->data = (buf)BUF_INIT(held.max);
        int rc = f->cb.on_data ? f->cb.on_data(f->ud, held.data, held.len) : 0;
        if (ctx->freeing || f->dead) {
            buf_free(&held);
            return;
        }
        if (!f->data.data && held.cap <= FETCH_PENDING_KEEP) {
            buf_reset(&held); /* keep the memory for the next piece */
            f->data = held;
        } else {
            buf_free(&held);
        }
        if (rc < 0)
            finish(f, FETCH_EABORTED, "aborted by on_data");
        if (f->user_paused)
            return;
    }
    if (!f->complete) {
        if (f->curl_paused && f->easy) {
            /* may call on_write at once with what curl kept, which queues f again; curl also has
             * to look at the transfer again to read on, hence the kick */
            f->curl_paused = 0;
            CURLcode res = cu.easy_pause(f->easy, CURLPAUSE_CONT);
            ctx->kick = 1;
            defer(ctx);
            if (res != CURLE_OK) {
                const char *msg;
                int rc = map_error(f, res, &msg);
                finish(f, rc ? rc : FETCH_EPROTO, msg);
            }
        }
        if (!f->complete)
            return;
    }
    if (f->data.len) {
        queue(f);
        return;
    }
    /* dead first: a fetch_cancel from inside on_done is then a no-op */
    f->dead = 1;
    f->cb.on_done(f->ud, f->done_rc, f->status, f->msg);
    release(f);
}

static void run_ready(fetch_ctx *ctx)
{
    fetch *f;
    while (!ctx->freeing && (f = ctx->ready)) {
        unqueue(f);
        if (!f->dead)
            deliver(f);
    }
}

/* ---- the loop side of the multi interface ---- */

static void socket_action(fetch_ctx *ctx, curl_socket_t fd, int flags)
{
    int running;
    if (ctx->multi)
        cu.multi_socket_action(ctx->multi, fd, flags, &running);
    check_done(ctx);
    run_ready(ctx);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock *s = p->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    socket_action(s->ctx, s->fd, flags);
}

static void on_multi_timer(uv_timer_t *t)
{
    socket_action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static void on_idle(uv_idle_t *h)
{
    fetch_ctx *ctx = h->data;
    uv_idle_stop(h);
    if (ctx->kick) {
        ctx->kick = 0;
        socket_action(ctx, CURL_SOCKET_TIMEOUT, 0);
    } else {
        run_ready(ctx);
    }
}

static void on_sock_closed(uv_handle_t *h)
{
    sock *s = h->data;
    fetch_ctx *ctx = s->ctx;
    free(s);
    ctx->open--;
    maybe_free_ctx(ctx);
}

static void sock_close(sock *s)
{
    fetch_ctx *ctx = s->ctx;
    if (s->prev)
        s->prev->next = s->next;
    else
        ctx->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    fetch_ctx *ctx = userp;
    sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            sock_close(s);
            cu.multi_assign(ctx->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = xcalloc(1, sizeof *s);
        s->ctx = ctx;
        s->fd = fd;
        int rc = uv_poll_init_socket(ctx->loop, &s->poll, fd);
        if (rc < 0) {
            LOGE(NULL, "fetch: cannot watch a socket", "error=%s", uv_strerror(rc));
            free(s);
            return -1;
        }
        s->poll.data = s;
        ctx->open++;
        s->next = ctx->socks;
        if (ctx->socks)
            ctx->socks->prev = s;
        ctx->socks = s;
        cu.multi_assign(ctx->multi, fd, s);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    fetch_ctx *ctx = userp;
    /* curl forbids calling socket_action from here; 0 means "as soon as possible", which a uv
     * timer of 0 gives on the next loop turn */
    if (timeout_ms < 0)
        uv_timer_stop(&ctx->timer);
    else
        uv_timer_start(&ctx->timer, on_multi_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- public ---- */

fetch_ctx *fetch_ctx_new(uv_loop_t *loop, const char **err)
{
    static const char *no_err = "";
    if (!err)
        err = &no_err;
    pthread_once(&curl_once, curl_load);
    if (!curl_ok) {
        *err = curl_err;
        return NULL;
    }
    fetch_ctx *ctx = xcalloc(1, sizeof *ctx);
    ctx->loop = loop;
    ctx->multi = cu.multi_init();
    if (!ctx->multi) {
        free(ctx);
        *err = "curl_multi_init failed";
        return NULL;
    }
    cu.multi_setopt(ctx->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    cu.multi_setopt(ctx->multi, CURLMOPT_SOCKETDATA, ctx);
    cu.multi_setopt(ctx->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    cu.multi_setopt(ctx->multi, CURLMOPT_TIMERDATA, ctx);
    /* keep idle upstream connections for reuse: the default cache (4 x the transfers at the
     * time) is too small when the number of streams swings, and every miss is a new TCP (and
     * TLS) handshake; 16-18 % of turns reconnected at c=16 before (docs/benchmarks.md) */
    cu.multi_setopt(ctx->multi, CURLMOPT_MAXCONNECTS, 1024L);
    uv_timer_init(loop, &ctx->timer);
    ctx->timer.data = ctx;
    uv_idle_init(loop, &ctx->idle);
    ctx->idle.data = ctx;
    ctx->open = 2;
    *err = NULL;
    return ctx;
}

static void on_ctx_handle_closed(uv_handle_t *h)
{
    fetch_ctx *ctx = h->data;
    ctx->open--;
    maybe_free_ctx(ctx);
}

void fetch_ctx_free(fetch_ctx *ctx)
{
    if (!ctx || ctx->freeing)
        return;
    ctx->freeing = 1;
    while (ctx->all)
        release(ctx->all);
    /* may report sockets as removed (closing their polls) as it closes cached connections */
    cu.multi_cleanup(ctx->multi);
    ctx->multi = NULL;
    while (ctx->socks)
        sock_close(ctx->socks);
    uv_close((uv_handle_t *)&ctx->timer, on_ctx_handle_closed);
    uv_close((uv_handle_t *)&ctx->idle, on_ctx_handle_closed);
}

static int valid_url(const char *u)
{
    if (strncasecmp(u, "http://", 7) != 0 && strncasecmp(u, "https://", 8) != 0)
        return 0;
    for (; *u; u++)
        if ((unsigned char)*u <= ' ' || *u == 0x7f)
            return 0;
    return 1;
}

static int valid_method(const char *m)
{
    size_t n = strlen(m);
    if (n == 0 || n > 16)
        return 0;
    for (; *m; m++)
        if (*m < 'A' || *m > 'Z')
            return 0;
    return 1;
}

/* Headers are sent as given; a CR or LF would let one header smuggle others. */
static int valid_header(const char *h)
{
    if (!h[0] || h[0] == ':')
        return 0;
    return strpbrk(h, "\r\n") == NULL;
}

#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        if (cu.easy_setopt(e, (opt), (val)) != CURLE_OK)                                           \
            goto fail;                                                                             \
    } while (0)

int fetch_start(fetch_ctx *ctx, const fetch_opts *o, const fetch_cb *cb, void *ud, fetch **out)
{
    if (out)
        *out = NULL;
    if (!ctx || ctx->freeing || !o || !o->url || !cb || !cb->on_done || !out ||
        (o->body_len && !o->body))
        return -EINVAL;
    const char *method = o->method ? o->method : o->body ? "POST" : "GET";
    if (!valid_url(o->url) || !valid_method(method))
        return -EINVAL;
    int has_expect = 0;
    for (const char *const *h = o->headers; h && *h; h++) {
        if (!valid_header(*h))
            return -EINVAL;
        if (strncasecmp(*h, "expect", 6) == 0 && ((*h)[6] == ':' || (*h)[6] == ';'))
            has_expect = 1;
    }

    int rc = -ENOMEM;
    fetch *f = xcalloc(1, sizeof *f);
    f->ctx = ctx;
    f->cb = *cb;
    f->ud = ud;
    f->max = o->max_response ? o->max_response : FETCH_DEF_MAX;
    f->data = (buf)BUF_INIT(f->max);
    f->first_byte_ms =
        o->first_byte_timeout_ms ? o->first_byte_timeout_ms : FETCH_DEF_FIRST_BYTE_MS;
    f->idle_ms = o->idle_timeout_ms ? o->idle_timeout_ms : FETCH_DEF_IDLE_MS;
    unsigned connect_ms = o->connect_timeout_ms ? o->connect_timeout_ms : FETCH_DEF_CONNECT_MS;

    CURL *e = f->easy = cu.easy_init();
    if (!e)
        goto fail;
    rc = -EINVAL; /* from here a refused option means a bad argument or an unusable libcurl */
    SETOPT(CURLOPT_PRIVATE, (void *)f);
    SETOPT(CURLOPT_ERRORBUFFER, f->errbuf);
    SETOPT(CURLOPT_URL, o->url);
    if (cu.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK)
        SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    SETOPT(CURLOPT_ACCEPT_ENCODING, "");          /* every encoding curl can decode */
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);            /* streams can be quiet for a while */
    SETOPT(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L); /* a proxy's CONNECT reply is not our head */
    /* an early refusal by Content-Length; the write callback counts the rest */
    if (f->max <= (size_t)INT64_MAX)
        SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->max);
    SETOPT(CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(CURLOPT_WRITEDATA, (void *)f);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, (void *)f);
    if (cu.easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq) == CURLE_OK) {
        SETOPT(CURLOPT_PREREQDATA, (void *)f);
    } else {
        /* libcurl < 7.80 cannot tell when the request goes out: count connecting in */
        f->sent = 1;
        f->first_byte_ms += connect_ms;
    }

    if (strcmp(method, "GET") == 0 && !o->body) {
        SETOPT(CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        if (o->body)
            goto fail;
        SETOPT(CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(method, "POST") != 0)
            SETOPT(CURLOPT_CUSTOMREQUEST, method);
        if (o->body || strcmp(method, "POST") == 0) {
            /* the size first, so COPYPOSTFIELDS copies exactly body_len bytes (NULs included) */
            SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
            rc = -ENOMEM;
            SETOPT(CURLOPT_COPYPOSTFIELDS, o->body ? o->body : "");
            rc = -EINVAL;
        }
    }

    rc = -ENOMEM;
    for (const char *const *h = o->headers; h && *h; h++) {
        struct curl_slist *l = cu.slist_append(f->headers, *h);
        if (!l)
            goto fail;
        f->headers = l;
    }
    if (!has_expect) {
        /* curl would send "Expect: 100-continue" for big bodies and wait for a reply that some
         * servers never send */
        struct curl_slist *l = cu.slist_append(f->headers, "Expect:");
        if (!l)
            goto fail;
        f->headers = l;
    }
    SETOPT(CURLOPT_HTTPHEADER, f->headers);

    if (o->keep_header && *o->keep_header)
        f->keep_name = xstrdup(o->keep_header);

    uv_timer_init(ctx->loop, &f->timer);
    f->timer.data = f;
    ctx->open++;
    f->next = ctx->all;
    if (ctx->all)
        ctx->all->prev = f;
    ctx->all = f;
    if (f->sent)
        uv_timer_start(&f->timer, on_fetch_timer, f->first_byte_ms, 0);
    if (cu.multi_add_handle(ctx->multi, e) != CURLM_OK) {
        release(f); /* the timer is live now: free through its close callback */
        return -ENOMEM;
    }
    f->in_multi = 1;
    *out = f;
    return 0;

fail:
    if (f->easy)
        cu.easy_cleanup(f->easy);
    if (f->headers)
        cu.slist_free_all(f->headers);
    free(f->keep_name);
    free(f);
    return rc;
}

void fetch_cancel(fetch *f)
{
    if (!f || f->dead)
        return;
    release(f);
}

const char *fetch_header(const fetch *f)
{
    return f && f->head_done ? f->kept : NULL;
}

void fetch_pause(fetch *f, int paused)
{
    if (!f || f->dead || !!paused == f->user_paused)
        return;
    f->user_paused = !!paused;
    arm_timer(f);
    if (paused) {
        if (f->easy && !f->complete) {
            /* stops reading at once; cannot call our callbacks */
            cu.easy_pause(f->easy, CURLPAUSE_RECV);
            f->curl_paused = 1;
        }
        return;
    }
    /* resuming: deliver what we hold and let curl go on, from the loop (never from here) */
    queue(f);
    defer(f->ctx);
}
