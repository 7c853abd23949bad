/* MCP client, handshake era (reference mcp-and-llm.md §2): one mcp_server per configured
 * server. See mcp.h for the contract.
 *
 * Request ids are increasing integers per server (never reused, also across restarts), so a
 * late answer to a cancelled or timed-out request matches nothing and is ignored. The
 * server's own requests come with its ids and are answered at once (ping) or refused, except
 * elicitation/create: handed to the tools/call it belongs to (its related-request-id, else the
 * latest call in flight), whose timer is paused until mcp_elicit_respond; an mcp_elicit is
 * detached (respond then only frees it) when its call ends, is cancelled, its session ends or
 * the server is freed.
 *
 * Delivery: callbacks that a mcp_* call would otherwise cause at once (ready on a ready
 * server, a failure inside the backoff window, a session that failed while starting) go
 * through `kick`, a zero timer. Lists of waiters and calls are walked with a `doomed` mark
 * and a fresh search after each callback, because a callback may cancel, add or free. After
 * mcp_server_free (s->freed) no callback runs; memory goes in the close callbacks. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcp/mcp.h"
#include "mcp/transport.h"
#include "util/log.h"

#define DEFAULT_INIT_TIMEOUT_MS 10000u
#define DEFAULT_CALL_TIMEOUT_MS 60000u
#define DEFAULT_MAX_MESSAGE     (4u * 1024 * 1024)
#define MAX_LIST_PAGES          100u
#define MAX_TOOLS               1000u
#define BACKOFF_FIRST_MS        500u /* after the second failure in a row */
#define BACKOFF_MAX_MS          30000u
#define STABLE_SESSION_MS       60000u /* a session up this long resets the failure count */
#define MSG_MAX                 512

static const char *const accepted_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26"};

enum { S_IDLE, S_STARTING, S_READY };
enum { C_WAIT, C_SENT, C_FAILED, C_DONE };

/* An elicitation/create of the server, waiting for mcp_elicit_respond. Attached to its call
 * (c, s non-NULL) until the call ends, is cancelled, its session ends or the server is freed;
 * detached, respond only frees it. */
struct mcp_elicit {
    mcp_server *s;
    mcp_call *c;
    mcp_elicit *next; /* the call's list */
    json_t *id;       /* the server's request id (number or string) */
};

typedef struct waiter {
    struct waiter *next;
    mcp_ready_fn cb;
    void *ud;
    int doomed;
} waiter;

struct mcp_call {
    mcp_server *s;
    mcp_call *prev, *next;
    int state;
    int doomed;
    json_int_t id;
    char token[32]; /* progressToken "ck-<id>" */
    char *name;
    json_t *args; /* until sent */
    mcp_call_cb cb;
    void *ud;
    char *err; /* C_FAILED: the message the kick delivers */
    double last_progress;
    mcp_elicit *elicits; /* outstanding: the call's timer is paused meanwhile */
    uv_timer_t timer;
};

struct mcp_server {
    uv_loop_t *loop;
    mcp_server_config cfg; /* strings below are owned copies */
    char *label, *command, *url;
    char **env, **headers;

    mcp_transport *tp; /* NULL when not running */
    int state;
    char version[32]; /* negotiated protocol version */
    json_int_t next_id;
    json_int_t init_id, list_id; /* 0 = none in flight */
    int listing, relist;
    unsigned pages;
    json_t *list_acc; /* tools gathered by the listing in progress */
    json_t *tools;    /* the last complete list */
    char *instructions;

    waiter *waiters;
    mcp_call *calls, *calls_tail;
    unsigned busy;
    uint64_t last_used, ready_at;

    unsigned fails; /* failures in a row (start, handshake, crash) */
    uint64_t retry_at;
    char last_err[MSG_MAX];
    int has_pending_err; /* waiters and waiting calls fail with pending_err at the kick */
    char pending_err[MSG_MAX];

    uv_timer_t kick;
    uv_timer_t timer; /* start + initialize + first list; later a refresh's timeout */
    int handles;
    int freed;
};

static void on_kick(uv_timer_t *h);
static void start_list(mcp_server *s);

/* ---- small helpers ---- */

static char **dup_strv(const char *const *v)
{
    if (!v)
        return NULL;
    size_t n = 0;
    while (v[n])
        n++;
    char **out = xcalloc(n + 1, sizeof *out);
    for (size_t i = 0; i < n; i++)
        out[i] = xstrdup(v[i]);
    return out;
}

static void free_strv(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static const char *ql(const mcp_server *s, char *out, size_t n)
{
    return log_quote(s->label, out, n);
}

static void kick(mcp_server *s)
{
    if (!s->freed && !uv_is_active((uv_handle_t *)&s->kick))
        uv_timer_start(&s->kick, on_kick, 0, 0);
}

static void set_pending_err(mcp_server *s, const char *msg)
{
    s->has_pending_err = 1;
    snprintf(s->pending_err, sizeof s->pending_err, "%s", msg);
    kick(s);
}

/* The error text of a JSON-RPC error response, cut to fit. */
static void rpc_error_text(const json_t *msg, char *out, size_t n)
{
    const json_t *e = json_object_get(msg, "error");
    const char *m = json_string_value(json_object_get(e, "message"));
    json_int_t code = json_integer_value(json_object_get(e, "code"));
    if (m && *m)
        snprintf(out, n, "%.300s", m);
    else
        snprintf(out, n, "error %lld", (long long)code);
}

/* ---- building and sending messages (the seam for the stateless revision: every request is
 * built here, so per-request _meta can be added in one place) ---- */

static json_t *rpc_request(mcp_server *s, const char *method, json_t *params, json_int_t *id)
{
    *id = s->next_id++;
    json_t *m = json_object();
    json_object_set_new(m, "jsonrpc", json_string("2.0"));
    json_object_set_new(m, "id", json_integer(*id));
    json_object_set_new(m, "method", json_string(method));
    json_object_set_new(m, "params", params ? params : json_object());
    return m;
}

static json_t *rpc_notification(const char *method, json_t *params)
{
    json_t *m = json_object();
    json_object_set_new(m, "jsonrpc", json_string("2.0"));
    json_object_set_new(m, "method", json_string(method));
    if (params)
        json_object_set_new(m, "params", params);
    return m;
}

/* Steals m. */
static int send_msg(mcp_server *s, json_t *m)
{
    int rc = -EPIPE;
    if (m && s->tp)
        rc = s->tp->ops->send(s->tp, m);
    json_decref(m);
    return rc;
}

static void send_cancelled(mcp_server *s, json_int_t id, const char *reason)
{
    json_t *p = json_object();
    json_object_set_new(p, "requestId", json_integer(id));
    json_object_set_new(p, "reason", json_string(reason));
    send_msg(s, rpc_notification("notifications/cancelled", p));
}

/* ---- calls ---- */

static void on_call_closed(uv_handle_t *h)
{
    mcp_call *c = h->data;
    free(c->name);
    free(c->err);
    json_decref(c->args);
    free(c);
}

/* The call's elicitations can no longer be answered: respond only frees them. */
static void detach_elicits(mcp_call *c)
{
    while (c->elicits) {
        mcp_elicit *e = c->elicits;
        c->elicits = e->next;
        e->next = NULL;
        e->c = NULL;
        e->s = NULL;
    }
}

static void unlink_call(mcp_server *s, mcp_call *c)
{
    detach_elicits(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        s->calls_tail = c->prev;
    c->prev = c->next = NULL;
    s->busy--;
    c->state = C_DONE;
    uv_timer_stop(&c->timer);
}

/* Ends a call: its callback (unless freed), then its memory once the timer has closed. */
static void finish_call(mcp_server *s, mcp_call *c, const json_t *result, const char *err)
{
    unlink_call(s, c);
    s->last_used = uv_now(s->loop);
    if (!s->freed && c->cb.on_done)
        c->cb.on_done(c->ud, result, err);
    uv_close((uv_handle_t *)&c->timer, on_call_closed);
}

static void on_call_timeout(uv_timer_t *h)
{
    mcp_call *c = h->data;
    mcp_server *s = c->s;
    if (c->state != C_SENT)
        return;
    char msg[MSG_MAX], q[128], qn[300];
    unsigned ms = s->cfg.call_timeout_ms;
    LOGW(NULL, "mcp tool call timed out", "server=\"%s\" tool=\"%s\" timeout_ms=%u",
         ql(s, q, sizeof q), log_quote(c->name, qn, sizeof qn), ms);
    send_cancelled(s, c->id, "timed out");
    snprintf(msg, sizeof msg,
             "the tool %.128s of the MCP server %.64s did not answer within %.1f s", c->name,
             s->label, ms / 1000.0);
    finish_call(s, c, NULL, msg);
}

static void send_call(mcp_server *s, mcp_call *c)
{
    json_t *meta = json_object();
    json_t *p = json_object();
    json_object_set_new(p, "name", json_string(c->name));
    json_object_set_new(p, "arguments", c->args);
    c->args = NULL;
    json_t *m = rpc_request(s, "tools/call", p, &c->id);
    snprintf(c->token, sizeof c->token, "ck-%lld", (long long)c->id);
    json_object_set_new(meta, "progressToken", json_string(c->token));
    json_object_set_new(p, "_meta", meta);
    c->state = C_SENT;
    uv_timer_start(&c->timer, on_call_timeout, s->cfg.call_timeout_ms, 0);
    if (send_msg(s, m) < 0) {
        char msg[MSG_MAX];
        snprintf(msg, sizeof msg, "the MCP server %.64s could not be sent the call", s->label);
        uv_timer_stop(&c->timer);
        c->state = C_FAILED;
        c->err = xstrdup(msg);
        kick(s);
    }
}

/* Fails the calls in `state` (marked first: calls added by the callbacks are not touched). */
static void fail_calls(mcp_server *s, int state, const char *msg)
{
    for (mcp_call *c = s->calls; c; c = c->next)
        c->doomed = c->state == state;
    while (!s->freed) {
        mcp_call *c = s->calls;
        while (c && !c->doomed)
            c = c->next;
        if (!c)
            break;
        c->doomed = 0;
        if (c->err) {
            char own[MSG_MAX];
            snprintf(own, sizeof own, "%s", c->err);
            finish_call(s, c, NULL, own);
        } else {
            finish_call(s, c, NULL, msg);
        }
    }
}

static void deliver_waiters(mcp_server *s, int rc, const char *err)
{
    for (waiter *w = s->waiters; w; w = w->next)
        w->doomed = 1;
    while (!s->freed) {
        waiter **pp = &s->waiters;
        while (*pp && !(*pp)->doomed)
            pp = &(*pp)->next;
        waiter *w = *pp;
        if (!w)
            break;
        *pp = w->next;
        mcp_ready_fn cb = w->cb;
        void *ud = w->ud;
        free(w);
        cb(ud, rc, err);
    }
}

static void on_kick(uv_timer_t *h)
{
    mcp_server *s = h->data;
    if (s->has_pending_err) {
        char msg[MSG_MAX];
        snprintf(msg, sizeof msg, "%s", s->pending_err);
        s->has_pending_err = 0;
        /* mark both lists before any callback runs */
        for (mcp_call *c = s->calls; c; c = c->next)
            c->doomed = c->state == C_WAIT;
        deliver_waiters(s, -1, msg);
        while (!s->freed) {
            mcp_call *c = s->calls;
            while (c && !(c->doomed && c->state == C_WAIT))
                c = c->next;
            if (!c)
                break;
            c->doomed = 0;
            finish_call(s, c, NULL, msg);
        }
    }
    if (!s->freed)
        fail_calls(s, C_FAILED, "the MCP server failed");
    if (!s->freed && s->state == S_READY)
        deliver_waiters(s, 0, NULL);
}

/* ---- session ---- */

static void note_failure(mcp_server *s, const char *msg)
{
    uint64_t now = uv_now(s->loop);
    s->fails++;
    uint64_t d = 0;
    if (s->fails >= 2) {
        d = BACKOFF_FIRST_MS;
        for (unsigned i = 2; i < s->fails && d < BACKOFF_MAX_MS; i++)
            d *= 2;
        if (d > BACKOFF_MAX_MS)
            d = BACKOFF_MAX_MS;
    }
    s->retry_at = now + d;
    snprintf(s->last_err, sizeof s->last_err, "%s", msg);
    char q[128], qm[MSG_MAX + 64];
    LOGW(NULL, "mcp server failed", "server=\"%s\" err=\"%s\" failures=%u retry_ms=%llu",
         ql(s, q, sizeof q), log_quote(msg, qm, sizeof qm), s->fails, (unsigned long long)d);
}

/* The session is over (failure): the transport goes, every call in flight fails, and so do
 * the waiters (from the kick: this may run inside a mcp_* call). The next use starts again. */
static void session_end(mcp_server *s, const char *msg)
{
    if (s->tp) {
        s->tp->ops->stop(s->tp);
        s->tp = NULL;
    }
    uv_timer_stop(&s->timer);
    uint64_t now = uv_now(s->loop);
    if (s->state == S_READY && now - s->ready_at >= STABLE_SESSION_MS)
        s->fails = 0;
    s->state = S_IDLE;
    s->init_id = s->list_id = 0;
    s->listing = s->relist = 0;
    json_decref(s->list_acc);
    s->list_acc = NULL;
    note_failure(s, msg);
    for (mcp_call *c = s->calls; c; c = c->next)
        if (c->state == C_SENT) {
            uv_timer_stop(&c->timer);
            detach_elicits(c); /* their requests died with the session */
            c->state = C_FAILED;
            c->err = xstrdup(msg);
        }
    set_pending_err(s, msg);
}

static void session_fail(mcp_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void session_fail(mcp_server *s, const char *fmt, ...)
{
    char msg[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    session_end(s, msg);
}

static void on_tp_closed(void *ud, const char *reason)
{
    mcp_server *s = ud;
    session_fail(s, "the MCP server %.64s stopped: %.300s", s->label, reason);
}

static void on_timer(uv_timer_t *h)
{
    mcp_server *s = h->data;
    if (s->state == S_STARTING) {
        session_fail(s, "the MCP server %.64s did not start within %.1f s", s->label,
                     s->cfg.init_timeout_ms / 1000.0);
    } else if (s->listing) {
        char q[128];
        LOGW(NULL, "mcp tools/list timed out, keeping the previous list", "server=\"%s\"",
             ql(s, q, sizeof q));
        if (s->list_id)
            send_cancelled(s, s->list_id, "timed out");
        s->list_id = 0;
        s->listing = s->relist = 0;
        json_decref(s->list_acc);
        s->list_acc = NULL;
    }
}

static void become_ready(mcp_server *s)
{
    char q[128];
    uv_timer_stop(&s->timer);
    s->state = S_READY;
    s->ready_at = uv_now(s->loop);
    LOGI(NULL, "mcp server ready", "server=\"%s\" protocol=%s tools=%zu", ql(s, q, sizeof q),
         s->version, json_array_size(s->tools));
    for (mcp_call *c = s->calls; c; c = c->next)
        if (c->state == C_WAIT)
            send_call(s, c);
    kick(s); /* the waiters */
    if (s->relist) {
        s->relist = 0;
        start_list(s);
    }
}

/* The session step of the handshake era: initialize; the answer goes to on_init_result. */
static void session_begin(mcp_server *s)
{
    json_t *ci = json_object();
    json_object_set_new(ci, "name", json_string("chatkitd"));
    json_object_set_new(ci, "version", json_string("0.1.0"));
    json_t *p = json_object();
    json_object_set_new(p, "protocolVersion", json_string(MCP_PROTOCOL_VERSION));
    /* declare only what is implemented: elicitation, form mode ({} = form only, §2.1) */
    json_t *caps = json_object();
    json_object_set_new(caps, "elicitation", json_object());
    json_object_set_new(p, "capabilities", caps);
    json_object_set_new(p, "clientInfo", ci);
    if (send_msg(s, rpc_request(s, "initialize", p, &s->init_id)) < 0)
        session_fail(s, "the MCP server %.64s could not be sent initialize", s->label);
}

static void on_init_result(mcp_server *s, const json_t *msg)
{
    s->init_id = 0;
    if (json_object_get(msg, "error")) {
        char e[400];
        rpc_error_text(msg, e, sizeof e);
        session_fail(s, "the MCP server %.64s refused to initialize: %s", s->label, e);
        return;
    }
    const json_t *r = json_object_get(msg, "result");
    const char *v = json_string_value(json_object_get(r, "protocolVersion"));
    if (!json_is_object(r) || !v) {
        session_fail(s, "the MCP server %.64s sent an invalid initialize result", s->label);
        return;
    }
    int ok = 0;
    for (size_t i = 0; i < sizeof accepted_versions / sizeof *accepted_versions; i++)
        ok |= strcmp(v, accepted_versions[i]) == 0;
    if (!ok) {
        char qv[64];
        session_fail(s,
                     "the MCP server %.64s uses MCP protocol version \"%s\", which chatkitd does "
                     "not support (supported: 2025-11-25, 2025-06-18, 2025-03-26)",
                     s->label, log_quote(v, qv, 40));
        return;
    }
    snprintf(s->version, sizeof s->version, "%s", v);
    free(s->instructions);
    s->instructions = NULL;
    const char *ins = json_string_value(json_object_get(r, "instructions"));
    if (ins && *ins)
        s->instructions = xstrdup(ins);
    send_msg(s, rpc_notification("notifications/initialized", NULL));
    const json_t *caps = json_object_get(r, "capabilities");
    if (json_object_get(caps, "tools")) {
        start_list(s);
    } else { /* a server without tools (resources only, say): nothing to list */
        json_decref(s->tools);
        s->tools = json_array();
        become_ready(s);
    }
}

/* ---- tools/list ---- */

static void request_page(mcp_server *s, const char *cursor)
{
    json_t *p = json_object();
    if (cursor)
        json_object_set_new(p, "cursor", json_string(cursor));
    if (send_msg(s, rpc_request(s, "tools/list", p, &s->list_id)) < 0) {
        s->list_id = 0;
        if (s->state == S_STARTING) {
            session_fail(s, "the MCP server %.64s could not be sent tools/list", s->label);
        } else {
            s->listing = 0;
            json_decref(s->list_acc);
            s->list_acc = NULL;
        }
    }
}

static void start_list(mcp_server *s)
{
    if (s->listing) { /* one at a time: again when this one is done */
        s->relist = 1;
        return;
    }
    s->listing = 1;
    s->pages = 0;
    json_decref(s->list_acc);
    s->list_acc = json_array();
    if (s->state == S_READY) /* while starting, the init timer covers the first list */
        uv_timer_start(&s->timer, on_timer, s->cfg.call_timeout_ms, 0);
    request_page(s, NULL);
}

static void list_failed(mcp_server *s, const char *why)
{
    if (s->state == S_STARTING) {
        session_fail(s, "the MCP server %.64s could not list its tools: %s", s->label, why);
        return;
    }
    char q[128], qw[400];
    LOGW(NULL, "mcp tools/list failed, keeping the previous list", "server=\"%s\" err=\"%s\"",
         ql(s, q, sizeof q), log_quote(why, qw, sizeof qw));
    uv_timer_stop(&s->timer);
    s->listing = s->relist = 0;
    json_decref(s->list_acc);
    s->list_acc = NULL;
}

static void on_list_page(mcp_server *s, const json_t *msg)
{
    char q[128];
    s->list_id = 0;
    if (json_object_get(msg, "error")) {
        char e[400];
        rpc_error_text(msg, e, sizeof e);
        list_failed(s, e);
        return;
    }
    const json_t *r = json_object_get(msg, "result");
    const json_t *tools = json_object_get(r, "tools");
    if (!json_is_array(tools)) {
        list_failed(s, "the result has no tools array");
        return;
    }
    s->pages++;
    int full = 0;
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t)
    {
        if (json_array_size(s->list_acc) >= MAX_TOOLS) {
            LOGW(NULL, "mcp server lists too many tools, keeping the first ones",
                 "server=\"%s\" max=%u", ql(s, q, sizeof q), MAX_TOOLS);
            full = 1;
            break;
        }
        if (!json_is_object(t) || !json_is_string(json_object_get(t, "name"))) {
            LOGW(NULL, "mcp server listed a tool without a name, skipped", "server=\"%s\"",
                 ql(s, q, sizeof q));
            continue;
        }
        json_array_append(s->list_acc, (json_t *)t);
    }
    const char *cursor = json_string_value(json_object_get(r, "nextCursor"));
    if (cursor && *cursor && !full) {
        if (s->pages < MAX_LIST_PAGES) {
            request_page(s, cursor);
            return;
        }
        LOGW(NULL, "mcp server lists too many pages of tools, keeping the first ones",
             "server=\"%s\" pages=%u", ql(s, q, sizeof q), MAX_LIST_PAGES);
    }
    json_decref(s->tools);
    s->tools = s->list_acc;
    s->list_acc = NULL;
    s->listing = 0;
    if (s->state == S_STARTING) {
        become_ready(s);
        return;
    }
    uv_timer_stop(&s->timer);
    LOGI(NULL, "mcp tools list refreshed", "server=\"%s\" tools=%zu", ql(s, q, sizeof q),
         json_array_size(s->tools));
    if (s->relist) {
        s->relist = 0;
        start_list(s);
    }
}

/* ---- incoming messages ---- */

static void on_call_result(mcp_server *s, mcp_call *c, const json_t *msg)
{
    char err[MSG_MAX];
    if (json_object_get(msg, "error")) {
        char e[400];
        rpc_error_text(msg, e, sizeof e);
        snprintf(err, sizeof err, "the tool failed: %s", e);
        finish_call(s, c, NULL, err);
        return;
    }
    const json_t *r = json_object_get(msg, "result");
    if (!json_is_object(r)) {
        snprintf(err, sizeof err, "the MCP server %.64s sent an invalid tools/call result",
                 s->label);
        finish_call(s, c, NULL, err);
        return;
    }
    s->fails = 0; /* it works */
    finish_call(s, c, r, NULL);
}

static mcp_call *find_call(mcp_server *s, json_int_t id)
{
    for (mcp_call *c = s->calls; c; c = c->next)
        if (c->state == C_SENT && c->id == id)
            return c;
    return NULL;
}

static void on_response(mcp_server *s, const json_t *id, const json_t *msg)
{
    char q[128];
    if (!json_is_integer(id)) {
        LOGD(NULL, "mcp response with an id we never use, ignored", "server=\"%s\"",
             ql(s, q, sizeof q));
        return;
    }
    json_int_t v = json_integer_value(id);
    if (v != 0 && v == s->init_id && s->state == S_STARTING) {
        on_init_result(s, msg);
    } else if (v != 0 && v == s->list_id) {
        on_list_page(s, msg);
    } else {
        mcp_call *c = find_call(s, v);
        if (c)
            on_call_result(s, c, msg);
        else
            LOGD(NULL, "mcp response to an unknown or finished request, ignored",
                 "server=\"%s\" id=%lld", ql(s, q, sizeof q), (long long)v);
    }
}

static void on_progress(mcp_server *s, const json_t *p)
{
    const char *tok = json_string_value(json_object_get(p, "progressToken"));
    const json_t *pv = json_object_get(p, "progress");
    if (!tok || strncmp(tok, "ck-", 3) != 0 || !json_is_number(pv))
        return;
    char *end;
    long long id = strtoll(tok + 3, &end, 10);
    if (*end || end == tok + 3)
        return;
    mcp_call *c = find_call(s, id); /* a cancelled or finished call: dropped */
    if (!c || !c->cb.on_progress)
        return;
    double progress = json_number_value(pv);
    if (progress < c->last_progress)
        return; /* progress only increases */
    c->last_progress = progress;
    const json_t *tv = json_object_get(p, "total");
    double total = json_is_number(tv) ? json_number_value(tv) : -1;
    c->cb.on_progress(c->ud, progress, total, json_string_value(json_object_get(p, "message")));
}

static void on_log_message(mcp_server *s, const json_t *p)
{
    const char *level = json_string_value(json_object_get(p, "level"));
    const char *logger = json_string_value(json_object_get(p, "logger"));
    const json_t *data = json_object_get(p, "data");
    char *text = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    const char *t = json_is_string(data) ? json_string_value(data) : text;
    char q[128], qlg[128], qt[800];
    int lvl = LOG_INFO;
    if (level && !strcmp(level, "debug"))
        lvl = LOG_DEBUG;
    else if (level && strcmp(level, "info") && strcmp(level, "notice"))
        lvl = LOG_WARN; /* warning and above */
    LOG(lvl, NULL, "mcp server log", "server=\"%s\" level=\"%s\" logger=\"%s\" data=\"%s\"",
        ql(s, q, sizeof q), LOGQ(level && strlen(level) < 16 ? level : "?"),
        log_quote(logger ? logger : "", qlg, sizeof qlg), log_quote(t ? t : "", qt, sizeof qt));
    free(text);
}

static void on_notification(mcp_server *s, const char *method, const json_t *params)
{
    char q[128];
    if (!strcmp(method, "notifications/progress")) {
        on_progress(s, params);
    } else if (!strcmp(method, "notifications/tools/list_changed")) {
        if (s->state == S_READY)
            start_list(s);
        else if (s->state == S_STARTING)
            s->relist = 1; /* after the first list is done */
    } else if (!strcmp(method, "notifications/message")) {
        on_log_message(s, params);
    } else {
        char qm[128];
        LOGD(NULL, "mcp notification ignored", "server=\"%s\" method=\"%s\"", ql(s, q, sizeof q),
             log_quote(method, qm, sizeof qm));
    }
}

/* ---- the server's own requests ---- */

static json_t *rpc_response(const json_t *id)
{
    json_t *m = json_object();
    json_object_set_new(m, "jsonrpc", json_string("2.0"));
    json_object_set(m, "id", (json_t *)id);
    return m;
}

static void send_rpc_error(mcp_server *s, const json_t *id, int code, const char *text)
{
    json_t *m = rpc_response(id);
    json_t *e = json_object();
    json_object_set_new(e, "code", json_integer(code));
    json_object_set_new(e, "message", json_string(text));
    json_object_set_new(m, "error", e);
    send_msg(s, m);
}

/* The ElicitResult: action, and content for accept. */
static void send_elicit_result(mcp_server *s, const json_t *id, const char *action,
                               const json_t *content)
{
    json_t *r = json_object();
    json_object_set_new(r, "action", json_string(action));
    if (!strcmp(action, "accept"))
        json_object_set_new(r, "content",
                            json_is_object(content) ? json_deep_copy(content) : json_object());
    json_t *m = rpc_response(id);
    json_object_set_new(m, "result", r);
    send_msg(s, m);
}

/* The call an elicitation/create belongs to: the one its related-request-id names (none when
 * that one is over), else the most recently sent call still pending. */
static mcp_call *elicit_target(mcp_server *s, const json_t *params)
{
    const json_t *rel = json_object_get(json_object_get(params, "_meta"),
                                        "io.modelcontextprotocol/related-request-id");
    if (rel) {
        json_int_t id;
        if (json_is_integer(rel)) {
            id = json_integer_value(rel);
        } else if (json_is_string(rel)) {
            char *end;
            const char *v = json_string_value(rel);
            id = strtoll(v, &end, 10);
            if (end == v || *end)
                return NULL;
        } else {
            return NULL;
        }
        return find_call(s, id);
    }
    mcp_call *best = NULL;
    for (mcp_call *c = s->calls; c; c = c->next)
        if (c->state == C_SENT && (!best || c->id > best->id))
            best = c;
    return best;
}

/* requestedSchema: an object schema whose properties are objects (§2.8: flat primitives; the
 * owner checks the property types it can ask for). */
static int schema_ok(const json_t *sch)
{
    const char *type = json_string_value(json_object_get(sch, "type"));
    const json_t *props = json_object_get(sch, "properties");
    const json_t *req = json_object_get(sch, "required");
    if (!json_is_object(sch) || !type || strcmp(type, "object") || !json_is_object(props) ||
        (req && !json_is_array(req)))
        return 0;
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)props, k, v)
    {
        if (!json_is_object(v))
            return 0;
    }
    return 1;
}

/* elicitation/create (form mode): handed to the call it belongs to, whose timer is paused
 * until the answer; declined at once when nobody can answer it. */
static void on_elicit_request(mcp_server *s, const json_t *id, const json_t *params)
{
    char q[128], qm[128];
    const json_t *mode = json_object_get(params, "mode");
    if (mode && !(json_is_string(mode) && !strcmp(json_string_value(mode), "form"))) {
        LOGI(NULL, "mcp elicitation refused: unsupported mode", "server=\"%s\" mode=\"%s\"",
             ql(s, q, sizeof q),
             log_quote(json_is_string(mode) ? json_string_value(mode) : "?", qm, sizeof qm));
        send_rpc_error(s, id, -32602, "Unsupported elicitation mode (only form mode is supported)");
        return;
    }
    const char *message = json_string_value(json_object_get(params, "message"));
    const json_t *schema = json_object_get(params, "requestedSchema");
    mcp_call *c = elicit_target(s, params);
    const char *why = !message                ? "no message"
                      : !schema_ok(schema)    ? "malformed requestedSchema"
                      : !c                    ? "no tool call of this server in flight"
                      : !c->cb.on_elicit      ? "the caller takes no input"
                                              : NULL;
    if (why) {
        LOGI(NULL, "mcp elicitation declined", "server=\"%s\" why=\"%s\"", ql(s, q, sizeof q),
             why);
        send_elicit_result(s, id, "decline", NULL);
        return;
    }
    mcp_elicit *e = xcalloc(1, sizeof *e);
    e->s = s;
    e->c = c;
    e->id = json_deep_copy(id);
    if (!e->id)
        log_oom();
    e->next = c->elicits;
    c->elicits = e;
    uv_timer_stop(&c->timer); /* the user is asked: the owner keeps its own deadline */
    LOGI(NULL, "mcp elicitation", "server=\"%s\" tool=\"%s\"", ql(s, q, sizeof q),
         log_quote(c->name, qm, sizeof qm));
    c->cb.on_elicit(c->ud, e, message, schema);
}

/* The server's own requests: ping is answered, elicitation/create goes to its call; anything
 * else is not implemented. */
static void on_server_request(mcp_server *s, const char *method, json_t *id, const json_t *params)
{
    if (!strcmp(method, "elicitation/create")) {
        on_elicit_request(s, id, params);
        return;
    }
    if (!strcmp(method, "ping")) {
        json_t *m = rpc_response(id);
        json_object_set_new(m, "result", json_object());
        send_msg(s, m);
        return;
    }
    char q[128], qm[128];
    LOGI(NULL, "mcp server request refused", "server=\"%s\" method=\"%s\"", ql(s, q, sizeof q),
         log_quote(method, qm, sizeof qm));
    send_rpc_error(s, id, -32601, "Method not found");
}

static void on_tp_message(void *ud, json_t *msg)
{
    mcp_server *s = ud;
    char q[128];
    if (!json_is_object(msg)) {
        LOGW(NULL, "mcp server sent something that is not a JSON-RPC message, ignored",
             "server=\"%s\"", ql(s, q, sizeof q));
        return;
    }
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *id = json_object_get(msg, "id");
    if (method) {
        if (id && !json_is_null(id))
            on_server_request(s, method, id, json_object_get(msg, "params"));
        else
            on_notification(s, method, json_object_get(msg, "params"));
    } else if (id && (json_object_get(msg, "result") || json_object_get(msg, "error"))) {
        on_response(s, id, msg);
    } else {
        LOGW(NULL, "mcp server sent an unexpected message, ignored", "server=\"%s\"",
             ql(s, q, sizeof q));
    }
}

/* Starts the session when idle. Failures are delivered from the kick. */
static void ensure_started(mcp_server *s)
{
    if (s->state != S_IDLE || s->freed || s->has_pending_err)
        return;
    uint64_t now = uv_now(s->loop);
    if (s->fails && now < s->retry_at) {
        char msg[MSG_MAX];
        snprintf(msg, sizeof msg, "%.400s (next attempt in %.1f s)", s->last_err,
                 (double)(s->retry_at - now) / 1000.0);
        set_pending_err(s, msg);
        return;
    }
    static const mcp_transport_cb tcb = {on_tp_message, on_tp_closed};
    s->tp = s->command ? mcp_stdio_new(s->loop, &s->cfg, &tcb, s)
                       : mcp_http_new(s->loop, &s->cfg, &tcb, s);
    char err[300] = "";
    if (s->tp->ops->start(s->tp, err, sizeof err) < 0) {
        s->tp->ops->stop(s->tp);
        s->tp = NULL;
        char msg[MSG_MAX];
        snprintf(msg, sizeof msg, "the MCP server %.64s could not be started: %s", s->label, err);
        note_failure(s, msg);
        set_pending_err(s, msg);
        return;
    }
    s->state = S_STARTING;
    s->version[0] = 0;
    uv_timer_start(&s->timer, on_timer, s->cfg.init_timeout_ms, 0);
    session_begin(s);
}

/* ---- public API ---- */

mcp_server *mcp_server_new(uv_loop_t *loop, const mcp_server_config *cfg)
{
    mcp_server *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->label = xstrdup(cfg->label && *cfg->label ? cfg->label : "mcp");
    s->command = cfg->command ? xstrdup(cfg->command) : NULL;
    s->url = cfg->url ? xstrdup(cfg->url) : NULL;
    s->env = dup_strv(cfg->env);
    s->headers = dup_strv(cfg->headers);
    s->cfg = *cfg;
    s->cfg.label = s->label;
    s->cfg.command = s->command;
    s->cfg.url = s->url;
    s->cfg.env = (const char *const *)s->env;
    s->cfg.headers = (const char *const *)s->headers;
    if (!s->cfg.init_timeout_ms)
        s->cfg.init_timeout_ms = DEFAULT_INIT_TIMEOUT_MS;
    if (!s->cfg.call_timeout_ms)
        s->cfg.call_timeout_ms = DEFAULT_CALL_TIMEOUT_MS;
    if (!s->cfg.max_message)
        s->cfg.max_message = DEFAULT_MAX_MESSAGE;
    s->next_id = 1;
    s->last_used = uv_now(loop);
    uv_timer_init(loop, &s->kick);
    uv_timer_init(loop, &s->timer);
    s->kick.data = s->timer.data = s;
    s->handles = 2;
    return s;
}

static void on_server_closed(uv_handle_t *h)
{
    mcp_server *s = h->data;
    if (--s->handles)
        return;
    json_decref(s->tools);
    json_decref(s->list_acc);
    free(s->instructions);
    free(s->label);
    free(s->command);
    free(s->url);
    free_strv(s->env);
    free_strv(s->headers);
    free(s);
}

void mcp_server_free(mcp_server *s)
{
    if (!s || s->freed)
        return;
    s->freed = 1;
    if (s->tp) {
        s->tp->ops->stop(s->tp); /* it finishes the child on its own */
        s->tp = NULL;
    }
    while (s->waiters) {
        waiter *w = s->waiters;
        s->waiters = w->next;
        free(w);
    }
    while (s->calls) {
        mcp_call *c = s->calls;
        unlink_call(s, c);
        uv_close((uv_handle_t *)&c->timer, on_call_closed);
    }
    uv_close((uv_handle_t *)&s->kick, on_server_closed);
    uv_close((uv_handle_t *)&s->timer, on_server_closed);
}

void mcp_server_ready(mcp_server *s, mcp_ready_fn cb, void *ud)
{
    waiter *w = xcalloc(1, sizeof *w);
    w->cb = cb;
    w->ud = ud;
    waiter **pp = &s->waiters;
    while (*pp)
        pp = &(*pp)->next;
    *pp = w;
    s->last_used = uv_now(s->loop);
    if (s->state == S_READY)
        kick(s);
    else
        ensure_started(s);
}

void mcp_server_ready_cancel(mcp_server *s, void *ud)
{
    waiter **pp = &s->waiters;
    while (*pp) {
        if ((*pp)->ud == ud) {
            waiter *w = *pp;
            *pp = w->next;
            free(w);
        } else {
            pp = &(*pp)->next;
        }
    }
}

const json_t *mcp_server_tools(const mcp_server *s)
{
    return s->tools;
}

const char *mcp_server_instructions(const mcp_server *s)
{
    return s->instructions;
}

const char *mcp_server_label(const mcp_server *s)
{
    return s->label;
}

uint64_t mcp_server_last_used(const mcp_server *s)
{
    return s->last_used;
}

unsigned mcp_server_busy(const mcp_server *s)
{
    return s->busy;
}

mcp_call *mcp_call_tool(mcp_server *s, const char *name, const json_t *arguments,
                        const mcp_call_cb *cb, void *ud)
{
    mcp_call *c = xcalloc(1, sizeof *c);
    c->s = s;
    c->name = xstrdup(name);
    c->args = json_is_object(arguments) ? json_deep_copy(arguments) : json_object();
    if (!c->args)
        log_oom();
    if (cb)
        c->cb = *cb;
    c->ud = ud;
    c->last_progress = -1e300;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->prev = s->calls_tail;
    if (s->calls_tail)
        s->calls_tail->next = c;
    else
        s->calls = c;
    s->calls_tail = c;
    s->busy++;
    s->last_used = uv_now(s->loop);
    c->state = C_WAIT;
    if (s->state == S_READY)
        send_call(s, c);
    else
        ensure_started(s);
    return c;
}

void mcp_call_cancel(mcp_call *c)
{
    if (!c || c->state == C_DONE)
        return;
    mcp_server *s = c->s;
    for (mcp_elicit *e = c->elicits; e; e = e->next) /* the form is gone with the call */
        send_elicit_result(s, e->id, "cancel", NULL);
    if (c->state == C_SENT)
        send_cancelled(s, c->id, "cancelled by the user");
    unlink_call(s, c);
    uv_close((uv_handle_t *)&c->timer, on_call_closed);
}

void mcp_elicit_respond(mcp_elicit *e, const char *action, const json_t *content)
{
    if (!e)
        return;
    mcp_call *c = e->c;
    mcp_server *s = e->s;
    if (c && s && !s->freed) {
        for (mcp_elicit **pp = &c->elicits; *pp; pp = &(*pp)->next)
            if (*pp == e) {
                *pp = e->next;
                break;
            }
        if (!action || (strcmp(action, "accept") && strcmp(action, "decline")))
            action = "cancel";
        char q[128];
        LOGI(NULL, "mcp elicitation answered", "server=\"%s\" action=%s", ql(s, q, sizeof q),
             action);
        send_elicit_result(s, e->id, action, content);
        /* the call's timeout runs again, afresh, once nobody is asked any more */
        if (!c->elicits && c->state == C_SENT)
            uv_timer_start(&c->timer, on_call_timeout, s->cfg.call_timeout_ms, 0);
    }
    json_decref(e->id);
    free(e);
}
