/* MCP Streamable HTTP transport (reference mcp-and-llm.md §2.6; protocol revisions 2025-03-26
 * to 2025-11-25) on llm/fetch.c: every JSON-RPC message is its own POST to the endpoint; the
 * reply is one JSON message, an SSE stream (server notifications and requests, then the
 * response), or 202 with no body (for our notifications and responses).
 *
 * What the transport knows of the protocol, because the HTTP binding needs it: the session id
 * comes in the Mcp-Session-Id header of the initialize response and goes on every later POST,
 * with MCP-Protocol-Version (the version the initialize result names). A POST that carried a
 * session id and gets 404, or 400 saying the session is not valid (what the TypeScript SDK
 * answers after a server restart), means the server forgot the session: the transport sends
 * the client's initialize again (then notifications/initialized) and resends the message once,
 * so a restarted server costs the client nothing. If that fails, the transport reports itself
 * closed and the client starts over on the next use.
 *
 * Failures of one request (an HTTP error status, a timeout, a broken answer) come back to the
 * client as a JSON-RPC error response to that request, so only that request fails; a server
 * that cannot be reached closes the transport. notifications/cancelled also drops the POST of
 * the request it names (its stream is not read any further).
 *
 * Resumability (2025-11-25, SEP-1699): an SSE answer that ends or breaks before its response,
 * after the server gave its events ids, is not a failure: after the stream's retry: time the
 * rest is fetched with GET and Last-Event-ID (that GET stream is closed once the response is
 * in). The standalone GET stream (server messages outside our requests) is opened after
 * notifications/initialized, unless the server answers 405, and reopened when it ends.
 *
 * A server's request on an answer's stream (elicitation: the user may take minutes) pauses
 * that transfer (no idle timeout, nothing read) until the client has answered it.
 *
 * Memory: one uv timer (resumes) besides what fetch owns (a curl multi per transport). Posts
 * are freed outside our callbacks only: within one (in_cb) they are marked dead and freed when
 * it returns, as is the transport itself after stop (then a DELETE of the session, bounded by
 * short timeouts, the fetch context, and the timer's close callback frees it). Header values
 * (tokens) are never logged, nor is the URL (it may carry a key in its query). */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llm/fetch.h"
#include "llm/sse.h"
#include "mcp/transport.h"
#include "util/buf.h"
#include "util/log.h"

#define DEFAULT_MAX_MESSAGE (4u * 1024 * 1024)
#define ERR_BODY_MAX        2048 /* the start of an error answer kept for the message */
#define ANSWER_SLACK_MS     5000 /* the client's own timeouts fire first */
#define CONNECT_MAX_MS      10000
#define DELETE_TIMEOUT_MS   2000 /* the session DELETE at stop */
#define SESSION_ID_MAX      FETCH_KEPT_MAX
#define MAX_IN_FLIGHT       256  /* posts at once; more is a client bug or a stuck server */
#define MAX_RESUMES         100  /* GETs resuming one answer (a polling server closes often) */
#define DEFAULT_RETRY_MS    1000 /* before resuming, when the stream named no retry: */
#define MAX_RETRY_MS        60000
#define GS_IDLE_MS          300000 /* the GET stream: reconnect after this long without bytes */
#define GS_MAX_FAILS        8      /* GET stream failures in a row before giving up (per session) */
#define SESSION_HEADER      "Mcp-Session-Id"
#define VERSION_HEADER      "MCP-Protocol-Version"

enum { K_REQUEST, K_NOTIFICATION, K_RESPONSE };
enum { M_NONE, M_JSON, M_SSE, M_ERROR };

typedef struct http_tp http_tp;

typedef struct post {
    http_tp *t;
    struct post *next;
    fetch *f;
    char *body;
    size_t len;
    json_t *id; /* a request's id; NULL for notifications and responses */
    json_t *asked; /* ids of the server's requests on this answer that we have not answered */
    char method[48];
    int kind;
    int mode;
    long status;
    buf acc;            /* a JSON answer, or the start of an error answer */
    ssep sse;           /* an SSE answer (mode M_SSE) */
    char fail[200];     /* why we aborted the transfer */
    uint64_t resume_at; /* waiting: when to GET the rest of the answer */
    unsigned resumes;
    unsigned gen;              /* the session it was sent with (http_tp.gen) */
    unsigned init : 1;         /* an initialize (ours or the client's) */
    unsigned reinit : 1;       /* our initialize after the session expired */
    unsigned with_session : 1; /* it carried a session id */
    unsigned resent : 1;       /* already sent again after a session expired */
    unsigned held : 1;         /* waiting for the new session */
    unsigned releases : 1;     /* our notifications/initialized of a renewed session: the held
                                * posts go out once it is done (initialized comes first) */
    unsigned answered : 1;     /* the response to `id` was delivered */
    unsigned waiting : 1;      /* its SSE answer ended early: resumed at resume_at */
    unsigned resuming : 1;     /* the transfer is a GET with Last-Event-ID */
    unsigned dead : 1;         /* done or dropped: freed outside our callbacks */
} post;

struct http_tp {
    mcp_transport base;
    uv_loop_t *loop;
    mcp_transport_cb cb;
    void *ud;
    char *label, *url;
    char **headers; /* configured "Name: value", NULL-terminated */
    size_t nheaders;
    size_t max_message;
    unsigned connect_ms, answer_ms;
    fetch_ctx *ctx;
    char *session;
    unsigned gen; /* counts sessions: a post of an older one is only resent */
    char version[32];
    char *init_body; /* the client's initialize, sent again when the session expires */
    size_t init_len;
    json_t *init_id;
    int reiniting;
    int announcing; /* notifications/initialized is on its way: requests wait for it (each
                     * message is its own POST, so the server could see them first) */
    post *posts;
    unsigned nposts;
    fetch *del;
    uv_timer_t timer; /* resuming SSE answers; (re)opening the GET stream */
    int in_cb;
    /* the standalone GET stream (§2.6): server messages outside our requests */
    fetch *gs_f;
    ssep gs_sse;
    long gs_status;
    int gs_sse_on;     /* the current answer is an event stream (gs_sse is set up) */
    unsigned gs_gen;   /* the session it belongs to */
    unsigned gs_fails; /* failed opens in a row */
    uint64_t gs_at;    /* gs_due: when to open it */
    char gs_lei[SSEP_NAME_MAX + 1]; /* the last event id seen on it (Last-Event-ID) */
    unsigned gs_due : 1, gs_off : 1;
    unsigned started : 1, reported : 1, stopped : 1, torn : 1;
};

static void post_start(http_tp *t, post *p);
static void teardown(http_tp *t);
static void arm_timer(http_tp *t);
static int try_resume(http_tp *t, post *p);
static void gs_cancel(http_tp *t);
static void gs_schedule(http_tp *t, uint64_t delay_ms);

static const char *qlabel(const http_tp *t, char *out, size_t n)
{
    return log_quote(t->label, out, n);
}

/* ---- callbacks in, callbacks out ---- */

static void enter(http_tp *t)
{
    t->in_cb++;
}

static void free_post(post *p)
{
    if (p->f)
        fetch_cancel(p->f);
    ssep_free(&p->sse);
    buf_free(&p->acc);
    json_decref(p->id);
    json_decref(p->asked);
    free(p->body);
    free(p);
}

/* Frees dead posts; after stop, the rest. Only outside our callbacks. */
static void sweep(http_tp *t)
{
    for (post **pp = &t->posts; *pp;) {
        post *p = *pp;
        if (p->dead) {
            *pp = p->next;
            t->nposts--;
            free_post(p);
        } else {
            pp = &p->next;
        }
    }
}

static void leave(http_tp *t)
{
    if (--t->in_cb > 0)
        return;
    if (t->stopped)
        teardown(t);
    else
        sweep(t);
}

/* Drops a post: its transfer stops at once, no callback; freed by the next sweep. */
static void drop(post *p)
{
    if (p->f) {
        fetch_cancel(p->f);
        p->f = NULL;
    }
    p->held = p->waiting = 0;
    p->dead = 1;
}

static void report_closed(http_tp *t, const char *reason)
{
    if (t->reported || t->stopped)
        return;
    t->reported = 1;
    gs_cancel(t);
    for (post *p = t->posts; p; p = p->next)
        drop(p);
    enter(t);
    t->cb.on_closed(t->ud, reason);
    leave(t);
}

static void deliver_one(http_tp *t, post *p, json_t *msg);

/* One received message (or a batch). p: the post it came on. */
static void deliver(http_tp *t, post *p, json_t *msg)
{
    if (json_is_array(msg)) {
        size_t i;
        json_t *m;
        json_array_foreach(msg, i, m)
        {
            if (t->reported || t->stopped || p->dead)
                break;
            deliver_one(t, p, m);
        }
    } else {
        deliver_one(t, p, msg);
    }
}

/* A JSON-RPC error response to p's request, as if the server had sent it. */
static void fail_request(http_tp *t, post *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_request(http_tp *t, post *p, const char *fmt, ...)
{
    if (p->kind != K_REQUEST || p->answered || t->reported || t->stopped)
        return;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *m = json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id", p->id, "error", "code",
                          -32000, "message", msg);
    if (!m)
        log_oom();
    deliver(t, p, m);
    json_decref(m);
}

/* ---- the session ---- */

static void set_session(http_tp *t, const char *sid)
{
    char q[128];
    size_t n = strlen(sid);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)sid[i] < 0x21 || (unsigned char)sid[i] > 0x7e) {
            LOGW(NULL, "mcp http server sent an invalid session id, ignored", "server=\"%s\"",
                 qlabel(t, q, sizeof q));
            return;
        }
    free(t->session);
    t->session = n ? xstrdup(sid) : NULL;
    t->gen++;
}

/* Our own initialize (after the session expired) was answered: the held messages go out. */
/* The renewed session is announced: what waited for it goes out. */
static void release_held(http_tp *t)
{
    for (post *h = t->posts; h && !t->reported && !t->stopped; h = h->next)
        if (h->held) {
            h->held = 0;
            post_start(t, h);
        }
}

static void reinit_answered(http_tp *t, post *p, const json_t *msg)
{
    char q[128], qv[64];
    const json_t *r = json_object_get(msg, "result");
    const char *v = json_string_value(json_object_get(r, "protocolVersion"));
    char reason[300];
    t->reiniting = 0;
    if (!v) {
        const char *e =
            json_string_value(json_object_get(json_object_get(msg, "error"), "message"));
        snprintf(reason, sizeof reason, "its session expired and it refused a new one: %.200s",
                 e ? e : "no protocol version in the answer");
        report_closed(t, reason);
        return;
    }
    if (strcmp(v, t->version) != 0) {
        snprintf(reason, sizeof reason,
                 "its session expired and the new one uses another protocol version (\"%s\")",
                 log_quote(v, qv, 40));
        report_closed(t, reason);
        return;
    }
    LOGI(NULL, "mcp http session renewed", "server=\"%s\"", qlabel(t, q, sizeof q));
    post *n = xcalloc(1, sizeof *n);
    n->t = t;
    n->kind = K_NOTIFICATION;
    snprintf(n->method, sizeof n->method, "notifications/initialized");
    n->body = xstrdup("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
    n->len = strlen(n->body);
    n->next = t->posts;
    t->posts = n;
    t->nposts++;
    n->releases = 1;
    post_start(t, n);
    gs_cancel(t); /* the old session's stream */
    t->gs_fails = 0;
    gs_schedule(t, 0);
}

/* The server forgot our session (p carried it and got 404, or 400 saying so). */
static void session_expired(http_tp *t, post *p)
{
    char q[128], reason[160];
    if (!t->init_body || p->resent || p->init) {
        snprintf(reason, sizeof reason, "its session ended (HTTP %ld)%s", p->status,
                 p->resent ? " again after a new one was made" : "");
        report_closed(t, reason);
        return;
    }
    if (p->kind != K_REQUEST) {
        p->dead = 1; /* a notification or a response for the old session: moot */
        return;
    }
    p->resent = 1;
    p->mode = M_NONE;
    buf_free(&p->acc);
    if (p->gen != t->gen && t->session && !t->reiniting) {
        post_start(t, p); /* sent before the session was renewed: the new one is there */
        return;
    }
    p->held = 1;
    if (t->reiniting)
        return;
    LOGI(NULL, "mcp http session expired, initializing again", "server=\"%s\" status=%ld",
         qlabel(t, q, sizeof q), p->status);
    free(t->session);
    t->session = NULL;
    t->reiniting = 1;
    post *n = xcalloc(1, sizeof *n);
    n->t = t;
    n->kind = K_REQUEST;
    n->init = n->reinit = 1;
    n->id = json_incref(t->init_id);
    snprintf(n->method, sizeof n->method, "initialize");
    n->body = xmalloc(t->init_len + 1);
    memcpy(n->body, t->init_body, t->init_len + 1);
    n->len = t->init_len;
    n->next = t->posts;
    t->posts = n;
    t->nposts++;
    post_start(t, n);
}

static void deliver_one(http_tp *t, post *p, json_t *msg)
{
    if (t->reported || t->stopped)
        return;
    const json_t *id = json_object_get(msg, "id");
    int response = p->id && id && !json_object_get(msg, "method") && json_equal(id, p->id);
    if (response)
        p->answered = 1;
    if (response && p->reinit) {
        reinit_answered(t, p, msg);
        return;
    }
    if (response && p->init) {
        const char *v =
            json_string_value(json_object_get(json_object_get(msg, "result"), "protocolVersion"));
        if (v && strlen(v) < sizeof t->version)
            snprintf(t->version, sizeof t->version, "%s", v);
    }
    if (id && !json_is_null(id) && json_object_get(msg, "method")) {
        /* a request of the server (elicitation: the user may take minutes): this answer's
         * stream is paused (no idle timeout) until the client has answered it */
        if (!p->asked)
            p->asked = json_array();
        json_array_append(p->asked, (json_t *)id);
        if (p->f)
            fetch_pause(p->f, 1);
    }
    enter(t);
    t->cb.on_message(t->ud, msg);
    leave(t);
}

/* ---- one POST ---- */

static int on_sse_event(void *ud, const char *event, size_t event_len, const char *data,
                        size_t data_len, const char *id)
{
    post *p = ud;
    http_tp *t = p->t;
    size_t i = 0;
    while (i < data_len &&
           (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
        i++;
    if (i == data_len)
        return 0; /* the SDK's priming event (an id, empty data) and the like */
    json_error_t e;
    json_t *m = json_loadb(data, data_len, 0, &e);
    if (!m) {
        char q[128], qe[200];
        LOGW(NULL, "mcp http server sent an event that is not JSON, skipped",
             "server=\"%s\" err=\"%s\" bytes=%zu", qlabel(t, q, sizeof q),
             log_quote(e.text, qe, sizeof qe), data_len);
        return 0;
    }
    deliver(t, p, m);
    json_decref(m);
    if (p->resuming && p->answered && !p->dead)
        drop(p); /* a GET stream stays open for more: we have what we came for */
    return t->stopped || t->reported || p->dead ? -ECANCELED : 0;
}

static int on_head(void *ud, long status, const char *ctype, const char *retry_after)
{
    post *p = ud;
    http_tp *t = p->t;
    p->status = status;
    if (p->init && status >= 200 && status < 300) {
        const char *sid = fetch_header(p->f);
        if (sid)
            set_session(t, sid);
    }
    if (status >= 200 && status < 300) {
        if (status == 202 || status == 204)
            p->mode = M_NONE;
        else if (ctype && !strncasecmp(ctype, "text/event-stream", 17))
            p->mode = M_SSE;
        else
            p->mode = M_JSON; /* application/json, or unlabelled: JSON or nothing */
    } else {
        p->mode = M_ERROR;
    }
    if (p->mode == M_SSE && !p->resuming) {
        ssep_free(&p->sse);
        ssep_init(&p->sse, t->max_message, on_sse_event, p);
    } else if (p->mode != M_SSE) {
        buf_free(&p->acc);
        p->acc = (buf)BUF_INIT(p->mode == M_ERROR ? ERR_BODY_MAX : t->max_message);
    }
    return 0;
}

static int on_data(void *ud, const char *d, size_t n)
{
    post *p = ud;
    http_tp *t = p->t;
    int rc = 0;
    switch (p->mode) {
    case M_JSON:
        if (buf_append(&p->acc, d, n) < 0) {
            snprintf(p->fail, sizeof p->fail, "its answer was over %zu bytes", t->max_message);
            rc = -1;
        }
        break;
    case M_ERROR: {
        size_t room = p->acc.max - p->acc.len;
        (void)buf_append(&p->acc, d, n < room ? n : room);
        break;
    }
    case M_SSE:
        enter(t);
        rc = ssep_feed(&p->sse, d, n);
        if (rc == -EMSGSIZE)
            snprintf(p->fail, sizeof p->fail, "it sent a message over %zu bytes", t->max_message);
        if (t->stopped || t->reported || p->dead) {
            p->f = NULL; /* cancelled by drop or stop: no more callbacks */
            rc = -1;
        }
        leave(t);
        break;
    default: break;
    }
    return rc < 0 ? -1 : 0;
}

/* The text of an error answer: the JSON-RPC error's message, else the body's first line. */
static void error_text(const buf *b, char *out, size_t n)
{
    out[0] = 0;
    if (!b->len)
        return;
    json_t *j = json_loadb(b->data, b->len, 0, NULL);
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    if (!m)
        m = json_string_value(json_object_get(j, "message"));
    if (!m)
        m = json_string_value(json_object_get(j, "error"));
    if (m) {
        snprintf(out, n, "%s", m);
    } else if (!j && b->data[0] != '<') { /* an HTML error page says nothing useful */
        size_t k = 0;
        for (size_t i = 0; i < b->len && k + 1 < n && b->data[i] != '\n'; i++)
            out[k++] = (unsigned char)b->data[i] < 0x20 ? ' ' : b->data[i];
        out[k] = 0;
    }
    json_decref(j);
}

static const char *status_hint(long status)
{
    switch (status) {
    case 400: return " (bad request)";
    case 401: return " (unauthorized: check the configured Authorization header)";
    case 403: return " (forbidden)";
    case 404: return " (not found: check the URL)";
    case 405: return " (method not allowed: is this an MCP endpoint?)";
    case 406: return " (not acceptable)";
    case 413: return " (request too large)";
    case 429: return " (too many requests)";
    case 500: return " (internal server error)";
    case 502: return " (bad gateway)";
    case 503: return " (unavailable)";
    case 504: return " (gateway timeout)";
    default: return "";
    }
}

static void http_error(http_tp *t, post *p)
{
    char text[300], q[128], qt[400];
    error_text(&p->acc, text, sizeof text);
    if (p->resuming) {
        LOGW(NULL, "mcp http answer could not be resumed", "server=\"%s\" method=\"%s\" status=%ld",
             qlabel(t, q, sizeof q), p->method, p->status);
        fail_request(t, p,
                     "the MCP server closed its answer early and did not resume it: HTTP %ld%s",
                     p->status, status_hint(p->status));
        return;
    }
    if (p->with_session && !p->init &&
        (p->status == 404 || (p->status == 400 && (strcasestr(text, "session") ||
                                                   strcasestr(text, "not initialized"))))) {
        session_expired(t, p);
        return;
    }
    LOGW(NULL, "mcp http request failed", "server=\"%s\" method=\"%s\" status=%ld text=\"%s\"",
         qlabel(t, q, sizeof q), p->method, p->status, log_quote(text, qt, sizeof qt));
    fail_request(t, p, "the MCP server answered %ld%s%s%.300s", p->status, status_hint(p->status),
                 text[0] ? ": " : "", text);
}

static void on_done(void *ud, int rc, long status, const char *message)
{
    post *p = ud;
    http_tp *t = p->t;
    char q[128], qm[300], reason[400];
    enter(t);
    p->f = NULL; /* fetch frees it after this callback */
    if (p->releases) {
        p->releases = 0;
        t->announcing = 0;
        release_held(t);
    }
    LOGD(NULL, "mcp http post done", "server=\"%s\" method=\"%s\" status=%ld rc=%d%s",
         qlabel(t, q, sizeof q), p->method, status, rc, p->resuming ? " resumed=1" : "");
    if (p->mode == M_SSE) {
        ssep_finish(&p->sse); /* keeps the last event id and retry for a resume */
        if (!p->answered && (rc == 0 || rc == FETCH_EPROTO))
            try_resume(t, p); /* the stream ended or broke early: not a cancel (§2.6) */
    }
    if (p->waiting) {
        /* resumed later */
    } else if (rc == 0) {
        if (p->mode == M_JSON) {
            size_t i = 0;
            while (i < p->acc.len && strchr(" \t\r\n", p->acc.data[i]))
                i++;
            if (i < p->acc.len) {
                json_error_t e;
                json_t *m = json_loadb(p->acc.data, p->acc.len, 0, &e);
                if (m) {
                    deliver(t, p, m);
                    json_decref(m);
                } else {
                    LOGW(NULL, "mcp http server sent an answer that is not JSON",
                         "server=\"%s\" method=\"%s\" err=\"%s\"", qlabel(t, q, sizeof q),
                         p->method, log_quote(e.text, qm, sizeof qm));
                    fail_request(t, p, "the MCP server sent an answer that is not JSON");
                }
            }
        } else if (p->mode == M_ERROR) {
            http_error(t, p);
        }
        /* held for a new session, or already sent again (p->f): not over */
        int later = p->held || p->f || p->dead;
        if (!later && !p->answered && p->reinit) {
            report_closed(t, "its session expired and a new one could not be made");
        } else if (!later && !p->answered && p->mode != M_ERROR) {
            fail_request(t, p, "the MCP server ended its answer (HTTP %ld) without a response",
                         status);
        }
    } else if (rc == FETCH_ECONNECT || rc == FETCH_ECURL) {
        snprintf(reason, sizeof reason, "it could not be reached: %.300s", message);
        report_closed(t, reason);
    } else if (p->reinit) {
        snprintf(reason, sizeof reason,
                 "its session expired and a new one could not be made: %.300s",
                 p->fail[0] ? p->fail : message);
        report_closed(t, reason);
    } else if (rc == FETCH_ETIMEOUT) {
        fail_request(t, p, "the MCP server did not answer within %.1f s", t->answer_ms / 1000.0);
    } else if (rc == FETCH_ETOOBIG) {
        fail_request(t, p, "the MCP server's answer was over %zu bytes", t->max_message);
    } else if (rc == FETCH_EABORTED && p->fail[0]) {
        LOGW(NULL, "mcp http answer refused", "server=\"%s\" method=\"%s\" why=\"%s\"",
             qlabel(t, q, sizeof q), p->method, p->fail);
        fail_request(t, p, "%s", p->fail);
    } else if (!p->held) {
        LOGW(NULL, "mcp http connection lost", "server=\"%s\" method=\"%s\" err=\"%s\"",
             qlabel(t, q, sizeof q), p->method, log_quote(message, qm, sizeof qm));
        fail_request(t, p, "the connection to the MCP server was lost: %.300s", message);
    }
    if (!p->held && !p->waiting && !p->f)
        p->dead = 1;
    leave(t);
}

static const fetch_cb post_cb = {on_head, on_data, on_done};

/* The headers of a POST (p), a GET resuming p's answer (p->resuming, lei: Last-Event-ID), the
 * GET stream (p NULL, lei: Last-Event-ID or "") or the DELETE (p and lei NULL): ours, the
 * configured ones, the session's. */
static const char **build_headers(http_tp *t, const post *p, char *sid, size_t sidn, char *ver,
                                  size_t vern, const char *lei)
{
    const char **h = xcalloc(t->nheaders + 5, sizeof *h);
    size_t k = 0;
    if ((p && p->resuming) || (!p && lei)) { /* a resume, or the GET stream (lei "" if none) */
        h[k++] = "Accept: text/event-stream";
        if (lei[0])
            h[k++] = lei;
    } else if (p) {
        h[k++] = "Content-Type: application/json";
        h[k++] = "Accept: application/json, text/event-stream";
    }
    for (size_t i = 0; i < t->nheaders; i++)
        h[k++] = t->headers[i];
    if (t->session && !(p && p->init)) {
        snprintf(sid, sidn, SESSION_HEADER ": %s", t->session);
        h[k++] = sid;
    }
    if (t->version[0] && !(p && p->init)) {
        snprintf(ver, vern, VERSION_HEADER ": %s", t->version);
        h[k++] = ver;
    }
    h[k] = NULL;
    return h;
}

/* Sends p (again): a new transfer with the current session's headers. */
static int post_fetch(http_tp *t, post *p)
{
    char sid[SESSION_ID_MAX + 32], ver[64];
    const char **h = build_headers(t, p, sid, sizeof sid, ver, sizeof ver, NULL);
    fetch_opts o = {.method = "POST",
                    .url = t->url,
                    .headers = h,
                    .body = p->body,
                    .body_len = p->len,
                    .connect_timeout_ms = t->connect_ms,
                    .first_byte_timeout_ms = t->answer_ms,
                    .idle_timeout_ms = t->answer_ms,
                    /* an SSE answer may run long (progress); each message is capped by ssep */
                    .max_response = t->max_message > SIZE_MAX / 64 ? SIZE_MAX : t->max_message * 64,
                    .keep_header = p->init ? SESSION_HEADER : NULL};
    p->with_session = t->session && !p->init;
    p->gen = t->gen;
    p->mode = M_NONE;
    p->answered = p->resuming = 0;
    json_decref(p->asked); /* a new transfer: the old one's requests are moot */
    p->asked = NULL;
    int rc = fetch_start(t->ctx, &o, &post_cb, p, &p->f);
    memset(sid, 0, sizeof sid);
    free(h);
    if (rc < 0) {
        char q[128];
        LOGW(NULL, "mcp http request could not be started", "server=\"%s\" method=\"%s\" rc=%d",
             qlabel(t, q, sizeof q), p->method, rc);
        p->f = NULL;
        p->dead = 1;
    }
    return rc;
}

/* The GET that resumes p's answer after its stream ended early (reference §2.6,
 * resumability; SEP-1699): Last-Event-ID is the last event id of that stream. */
static void resume_fetch(http_tp *t, post *p)
{
    char sid[SESSION_ID_MAX + 32], ver[64], lei[SSEP_NAME_MAX + 32];
    snprintf(lei, sizeof lei, "Last-Event-ID: %s", ssep_last_id(&p->sse));
    p->resuming = 1;
    const char **h = build_headers(t, p, sid, sizeof sid, ver, sizeof ver, lei);
    fetch_opts o = {.method = "GET",
                    .url = t->url,
                    .headers = h,
                    .connect_timeout_ms = t->connect_ms,
                    .first_byte_timeout_ms = t->answer_ms,
                    .idle_timeout_ms = t->answer_ms,
                    .max_response =
                        t->max_message > SIZE_MAX / 64 ? SIZE_MAX : t->max_message * 64};
    p->mode = M_NONE;
    int rc = fetch_start(t->ctx, &o, &post_cb, p, &p->f);
    free(h);
    if (rc < 0) {
        p->f = NULL;
        p->dead = 1;
        fail_request(t, p, "the answer of the MCP server could not be resumed");
    }
}

/* p's SSE answer ended (or broke) before the response: schedule a GET with Last-Event-ID,
 * after the stream's retry: time. Returns 1 when scheduled. */
static int try_resume(http_tp *t, post *p)
{
    const char *last = ssep_last_id(&p->sse);
    if (p->kind != K_REQUEST || p->answered || p->reinit || p->dead || !last[0] ||
        p->resumes >= MAX_RESUMES || t->reported || t->stopped)
        return 0;
    long retry = ssep_retry(&p->sse);
    if (retry < 0)
        retry = DEFAULT_RETRY_MS;
    if (retry > MAX_RETRY_MS)
        retry = MAX_RETRY_MS;
    char q[128];
    LOGD(NULL, "mcp http answer ended early, resuming", "server=\"%s\" method=\"%s\" retry_ms=%ld",
         qlabel(t, q, sizeof q), p->method, retry);
    p->resumes++;
    p->waiting = 1;
    uv_update_time(t->loop);
    p->resume_at = uv_now(t->loop) + (uint64_t)retry;
    arm_timer(t);
    return 1;
}

static void gs_open(http_tp *t);

static void on_timer(uv_timer_t *h)
{
    http_tp *t = h->data;
    uint64_t now = uv_now(t->loop);
    enter(t);
    for (post *p = t->posts; p && !t->stopped && !t->reported; p = p->next)
        if (p->waiting && !p->dead && p->resume_at <= now) {
            p->waiting = 0;
            resume_fetch(t, p);
        }
    if (t->gs_due && t->gs_at <= now && !t->stopped && !t->reported)
        gs_open(t);
    leave(t);
    if (!t->stopped)
        arm_timer(t);
}

static void arm_timer(http_tp *t)
{
    uint64_t next = 0;
    int any = 0;
    for (post *p = t->posts; p; p = p->next)
        if (p->waiting && !p->dead && (!any || p->resume_at < next)) {
            next = p->resume_at;
            any = 1;
        }
    if (t->gs_due && !t->stopped && !t->reported && (!any || t->gs_at < next)) {
        next = t->gs_at;
        any = 1;
    }
    if (!any) {
        uv_timer_stop(&t->timer);
        return;
    }
    uint64_t now = uv_now(t->loop);
    uv_timer_start(&t->timer, on_timer, next > now ? next - now : 0, 0);
}

/* ---- the standalone GET stream (§2.6) ----
 * Opened once the client has sent notifications/initialized (and again for a renewed
 * session); its messages go to the client like those of any answer. A 405 means the server
 * has none: not asked again. It is opened again when it ends (after the stream's retry:, with
 * Last-Event-ID) or fails (backoff, at most GS_MAX_FAILS times in a row); stop closes it. */

static void gs_cancel(http_tp *t)
{
    if (t->gs_f)
        fetch_cancel(t->gs_f);
    t->gs_f = NULL;
    t->gs_due = 0;
}

/* Opens it after delay_ms (a new session: from scratch). */
static void gs_schedule(http_tp *t, uint64_t delay_ms)
{
    if (t->gs_off || t->stopped || t->reported || t->gs_f)
        return;
    uv_update_time(t->loop);
    t->gs_at = uv_now(t->loop) + delay_ms;
    t->gs_due = 1;
    arm_timer(t);
}

static int gs_event(void *ud, const char *event, size_t event_len, const char *data,
                    size_t data_len, const char *id)
{
    http_tp *t = ud;
    size_t i = 0;
    while (i < data_len && strchr(" \t\r\n", data[i]))
        i++;
    if (i < data_len) {
        json_error_t e;
        json_t *m = json_loadb(data, data_len, 0, &e);
        if (!m) {
            char q[128], qe[200];
            LOGW(NULL, "mcp http server sent an event that is not JSON, skipped",
                 "server=\"%s\" err=\"%s\" bytes=%zu stream=get", qlabel(t, q, sizeof q),
                 log_quote(e.text, qe, sizeof qe), data_len);
        } else {
            size_t n = json_is_array(m) ? json_array_size(m) : 1;
            for (size_t k = 0; k < n && t->gs_f && !t->stopped && !t->reported; k++) {
                enter(t);
                t->cb.on_message(t->ud, json_is_array(m) ? json_array_get(m, k) : m);
                leave(t);
            }
            json_decref(m);
        }
    }
    return t->stopped || t->reported || !t->gs_f ? -ECANCELED : 0;
}

static int gs_head(void *ud, long status, const char *ctype, const char *retry_after)
{
    http_tp *t = ud;
    t->gs_status = status;
    if (t->gs_sse_on)
        ssep_free(&t->gs_sse);
    t->gs_sse_on = status >= 200 && status < 300 && ctype &&
                   !strncasecmp(ctype, "text/event-stream", 17);
    if (t->gs_sse_on)
        ssep_init(&t->gs_sse, t->max_message, gs_event, t);
    return 0;
}

static int gs_data(void *ud, const char *d, size_t n)
{
    http_tp *t = ud;
    if (!t->gs_sse_on)
        return 0; /* an error answer: its status says enough */
    enter(t);
    int rc = ssep_feed(&t->gs_sse, d, n);
    if (t->stopped || t->reported || !t->gs_f)
        rc = -1;
    leave(t);
    return rc < 0 ? -1 : 0;
}

static void gs_done(void *ud, int rc, long status, const char *message)
{
    http_tp *t = ud;
    char q[128], qm[300];
    t->gs_f = NULL;
    if (t->stopped || t->reported)
        return;
    int was_open = t->gs_sse_on;
    long retry = -1;
    if (t->gs_sse_on) {
        ssep_finish(&t->gs_sse);
        const char *last = ssep_last_id(&t->gs_sse);
        if (last[0])
            snprintf(t->gs_lei, sizeof t->gs_lei, "%s", last);
        retry = ssep_retry(&t->gs_sse);
        ssep_free(&t->gs_sse);
        t->gs_sse_on = 0;
    }
    if (status == 405) {
        LOGD(NULL, "mcp http server has no standalone stream", "server=\"%s\"",
             qlabel(t, q, sizeof q));
        t->gs_off = 1;
        return;
    }
    if (was_open) { /* it was up, and ended (or idled out): again, as the server asks */
        t->gs_fails = 0;
        if (retry < 0)
            retry = DEFAULT_RETRY_MS;
        if (retry > MAX_RETRY_MS)
            retry = MAX_RETRY_MS;
        LOGD(NULL, "mcp http stream ended, reopening", "server=\"%s\" rc=%d retry_ms=%ld",
             qlabel(t, q, sizeof q), rc, retry);
        gs_schedule(t, (uint64_t)retry);
        return;
    }
    t->gs_fails++;
    LOGD(NULL, "mcp http stream could not be opened", "server=\"%s\" status=%ld rc=%d err=\"%s\" failures=%u",
         qlabel(t, q, sizeof q), status, rc, log_quote(message, qm, sizeof qm), t->gs_fails);
    if (t->gs_fails >= GS_MAX_FAILS)
        return; /* until the next session */
    uint64_t d = DEFAULT_RETRY_MS;
    for (unsigned i = 1; i < t->gs_fails && d < MAX_RETRY_MS; i++)
        d *= 2;
    gs_schedule(t, d < MAX_RETRY_MS ? d : MAX_RETRY_MS);
}

static const fetch_cb gs_cb = {gs_head, gs_data, gs_done};

static void gs_open(http_tp *t)
{
    t->gs_due = 0;
    if (t->gs_f || t->gs_off)
        return;
    if (t->gs_gen != t->gen) { /* a new session: its own events */
        t->gs_gen = t->gen;
        t->gs_lei[0] = 0;
    }
    char sid[SESSION_ID_MAX + 32], ver[64], lei[SSEP_NAME_MAX + 32] = "";
    if (t->gs_lei[0])
        snprintf(lei, sizeof lei, "Last-Event-ID: %s", t->gs_lei);
    const char **h = build_headers(t, NULL, sid, sizeof sid, ver, sizeof ver, lei);
    fetch_opts o = {.method = "GET",
                    .url = t->url,
                    .headers = h,
                    .connect_timeout_ms = t->connect_ms,
                    .first_byte_timeout_ms = GS_IDLE_MS,
                    .idle_timeout_ms = GS_IDLE_MS,
                    .max_response =
                        t->max_message > SIZE_MAX / 64 ? SIZE_MAX : t->max_message * 64};
    t->gs_status = 0;
    int rc = fetch_start(t->ctx, &o, &gs_cb, t, &t->gs_f);
    memset(sid, 0, sizeof sid);
    free(h);
    if (rc < 0) {
        t->gs_f = NULL;
        t->gs_fails++;
        if (t->gs_fails < GS_MAX_FAILS)
            gs_schedule(t, MAX_RETRY_MS);
    }
}

/* post_fetch from our callbacks: a failure fails the request. */
static void post_start(http_tp *t, post *p)
{
    if (post_fetch(t, p) < 0)
        fail_request(t, p, "the request to the MCP server could not be started");
}

/* ---- ops ---- */

static int tp_send(mcp_transport *base, const json_t *msg)
{
    http_tp *t = (http_tp *)base;
    if (!t->started || t->reported || t->stopped)
        return -EPIPE;
    if (t->nposts >= MAX_IN_FLIGHT)
        return -ENOBUFS;
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *id = json_object_get(msg, "id");
    if (!method && id) {
        /* our answer to a server's request: the stream it came on reads again */
        for (post *p = t->posts; p; p = p->next) {
            size_t n = json_array_size(p->asked);
            for (size_t i = 0; i < n; i++)
                if (json_equal(json_array_get(p->asked, i), id)) {
                    json_array_remove(p->asked, i);
                    if (!json_array_size(p->asked) && p->f && !p->dead)
                        fetch_pause(p->f, 0);
                    break;
                }
        }
    }
    if (method && !strcmp(method, "notifications/cancelled")) {
        /* the client gave up on that request: stop reading its answer */
        json_t *rid = json_object_get(json_object_get(msg, "params"), "requestId");
        for (post *p = t->posts; p && rid; p = p->next)
            if (!p->dead && p->id && !p->init && json_equal(p->id, rid))
                drop(p);
    }
    size_t n = json_dumpb(msg, NULL, 0, JSON_COMPACT);
    if (n == 0)
        return -EINVAL;
    post *p = xcalloc(1, sizeof *p);
    p->t = t;
    p->body = xmalloc(n + 1);
    json_dumpb(msg, p->body, n, JSON_COMPACT);
    p->body[n] = 0;
    p->len = n;
    p->kind = !method ? K_RESPONSE : id && !json_is_null(id) ? K_REQUEST : K_NOTIFICATION;
    if (p->kind == K_REQUEST)
        p->id = json_incref(id);
    snprintf(p->method, sizeof p->method, "%s", method ? method : "(response)");
    if (method && !strcmp(method, "initialize") && p->kind == K_REQUEST) {
        p->init = 1;
        free(t->init_body);
        t->init_body = xmalloc(n + 1);
        memcpy(t->init_body, p->body, n + 1);
        t->init_len = n;
        json_decref(t->init_id);
        t->init_id = json_incref(id);
        free(t->session);
        t->session = NULL;
        t->version[0] = 0;
    }
    p->next = t->posts;
    t->posts = p;
    t->nposts++;
    if ((t->reiniting || t->announcing) && !p->init) {
        p->held = 1; /* goes out with the new session, after notifications/initialized */
        return 0;
    }
    int rc = post_fetch(t, p);
    if (rc == 0 && p->kind == K_NOTIFICATION && !strcmp(method, "notifications/initialized")) {
        p->releases = 1;
        t->announcing = 1;
        t->gs_fails = 0;
        gs_schedule(t, 0); /* the session is up: the GET stream, from the loop */
    }
    if (rc < 0 && !t->in_cb)
        sweep(t);
    return rc;
}

static int valid_header(const char *h)
{
    const char *colon = strchr(h, ':');
    if (!colon || colon == h)
        return 0;
    for (const char *c = h; c < colon; c++)
        if (!strchr("!#$%&'*+-.^_`|~", *c) &&
            !((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z')))
            return 0;
    return strpbrk(colon, "\r\n") == NULL;
}

static int tp_start(mcp_transport *base, char *err, size_t errlen)
{
    http_tp *t = (http_tp *)base;
    if (!t->url || (strncasecmp(t->url, "http://", 7) && strncasecmp(t->url, "https://", 8)) ||
        strpbrk(t->url, " \t\r\n")) {
        snprintf(err, errlen, "the URL is not an http:// or https:// URL");
        return -EINVAL;
    }
    for (size_t i = 0; i < t->nheaders; i++)
        if (!valid_header(t->headers[i])) {
            snprintf(err, errlen, "configured header %zu is not \"Name: value\"", i + 1);
            return -EINVAL;
        }
    const char *e = NULL;
    t->ctx = fetch_ctx_new(t->loop, &e);
    if (!t->ctx) {
        snprintf(err, errlen, "%s", e ? e : "no HTTP client");
        return -ENOSYS;
    }
    t->started = 1;
    return 0;
}

/* ---- stop ---- */

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void destroy(http_tp *t)
{
    if (t->ctx)
        fetch_ctx_free(t->ctx); /* allowed from inside its callbacks */
    t->ctx = NULL;
    free(t->label);
    free(t->url);
    for (size_t i = 0; i < t->nheaders; i++) {
        memset(t->headers[i], 0, strlen(t->headers[i])); /* tokens do not linger */
        free(t->headers[i]);
    }
    free(t->headers);
    free(t->session);
    free(t->init_body);
    json_decref(t->init_id);
    if (t->gs_sse_on)
        ssep_free(&t->gs_sse);
    uv_close((uv_handle_t *)&t->timer, on_timer_closed); /* frees t */
}

static void on_delete_done(void *ud, int rc, long status, const char *message)
{
    http_tp *t = ud;
    char q[128];
    LOGD(NULL, "mcp http session deleted", "server=\"%s\" status=%ld rc=%d", qlabel(t, q, sizeof q),
         status, rc);
    t->del = NULL;
    destroy(t);
}

static const fetch_cb delete_cb = {NULL, NULL, on_delete_done};

/* After stop, outside our callbacks: every post goes, then the session (DELETE; a 405 or any
 * failure is fine), then the transport. */
static void teardown(http_tp *t)
{
    if (t->torn)
        return;
    t->torn = 1;
    uv_timer_stop(&t->timer);
    gs_cancel(t);
    for (post *p = t->posts; p; p = p->next)
        drop(p);
    sweep(t);
    if (t->ctx && t->session && !t->reported) {
        char sid[SESSION_ID_MAX + 32], ver[64];
        const char **h = build_headers(t, NULL, sid, sizeof sid, ver, sizeof ver, NULL);
        fetch_opts o = {.method = "DELETE",
                        .url = t->url,
                        .headers = h,
                        .connect_timeout_ms = DELETE_TIMEOUT_MS,
                        .first_byte_timeout_ms = DELETE_TIMEOUT_MS,
                        .idle_timeout_ms = DELETE_TIMEOUT_MS,
                        .max_response = 64 * 1024};
        int rc = fetch_start(t->ctx, &o, &delete_cb, t, &t->del);
        free(h);
        if (rc == 0)
            return;
    }
    destroy(t);
}

static void tp_stop(mcp_transport *base)
{
    http_tp *t = (http_tp *)base;
    if (t->stopped)
        return;
    t->stopped = 1;
    gs_cancel(t);
    for (post *p = t->posts; p; p = p->next)
        drop(p);
    if (!t->in_cb)
        teardown(t);
}

static const mcp_transport_ops http_ops = {tp_start, tp_send, tp_stop};

mcp_transport *mcp_http_new(uv_loop_t *loop, const mcp_server_config *cfg,
                            const mcp_transport_cb *cb, void *ud)
{
    http_tp *t = xcalloc(1, sizeof *t);
    t->base.ops = &http_ops;
    t->loop = loop;
    t->cb = *cb;
    t->ud = ud;
    t->label = xstrdup(cfg->label ? cfg->label : "mcp");
    t->url = cfg->url ? xstrdup(cfg->url) : NULL;
    while (cfg->headers && cfg->headers[t->nheaders])
        t->nheaders++;
    t->headers = xcalloc(t->nheaders + 1, sizeof *t->headers);
    for (size_t i = 0; i < t->nheaders; i++)
        t->headers[i] = xstrdup(cfg->headers[i]);
    t->max_message = cfg->max_message ? cfg->max_message : DEFAULT_MAX_MESSAGE;
    unsigned init = cfg->init_timeout_ms ? cfg->init_timeout_ms : 10000;
    unsigned call = cfg->call_timeout_ms ? cfg->call_timeout_ms : 60000;
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
    t->connect_ms = init < CONNECT_MAX_MS ? init : CONNECT_MAX_MS;
    t->answer_ms = (init > call ? init : call) + ANSWER_SLACK_MS;
    return &t->base;
}
