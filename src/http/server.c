/* HTTP/1.1 server on libuv + llhttp, with an SSE writer and streamed bodies both ways. See
 * http.h for the contract.
 *
 * Shape (one loop thread):
 * - One 64 KiB read buffer per server: every read is parsed synchronously by llhttp and only
 *   what must outlive the callback is copied (tracked header values, body, pipelined leftovers).
 * - A connection parses until a request is complete, then pauses llhttp and hands the request
 *   to the handler. Bytes that arrive meanwhile are stashed (capped) and parsed once the answer
 *   is queued, so responses keep request order. Reading never stops while a request is in
 *   progress (but for a streamed body, below), so EOF / ECONNRESET are seen at once and
 *   reported through the close callback.
 * - Output goes through uv_try_write first; only what the kernel refuses is copied into a
 *   uv_write request. SSE data produced during a loop turn is collected per connection and
 *   written as one chunk from a server-wide uv_check handle (a uv_idle keeps poll from blocking
 *   while anything is pending, since check alone does not).
 * - One uv_timer per connection: idle / header / body timeouts, SSE heartbeat, lingering close,
 *   stalled download reader.
 * - A streamed request body (http_server_stream_bodies) is handed to the handler with its head;
 *   llhttp then stays paused until http_body_read. Body bytes are parsed straight into on_data
 *   from the loop (on_read, or the check handle for what was stashed meanwhile); a pause stops
 *   socket reads, so TCP back-pressure reaches the client. Errors the server finds in such a
 *   body (over max_body, malformed, inactivity) are answered by the server itself (with the
 *   request's own headers) and reported through on_end; the handler's answer is then a no-op.
 * - A streamed response (http_stream_start) is a plain Content-Length response written piece by
 *   piece straight to the socket; the SSE queue / drain calls measure libuv's write queue.
 * - Close callbacks run from the uv_close callback of the connection, never from inside a call
 *   the handler made, so handler code is not re-entered. */
#include "http/http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llhttp.h>

#include "util/buf.h"
#include "util/id.h"
#include "util/log.h"
#include "util/map.h"

#define READ_BUF_SIZE (64 * 1024)
/* Reads for a connection whose request is not admitted yet (see http.h) are at most this big,
 * so what came with a head costs little until the handler wants it. */
#define HEAD_READ_SIZE (16 * 1024)
/* Pipelined bytes kept while a request is in progress; beyond it we read on (to notice a
 * disconnect) but drop the bytes and close after the current response. */
#define IN_CAP (64 * 1024)
/* Parsing of pipelined requests pauses while this much response data waits in libuv. */
#define WRITE_HIGH_WATER (256 * 1024)
/* After the last response on a closing connection: wait this long for the client's FIN so the
 * kernel does not answer its unread bytes with an RST that would destroy our response. */
#define LINGER_MS 2000
/* Room reserved in front of pending SSE data for the "<hex>\r\n" chunk-size line. */
#define CHUNK_PREFIX 10

#define DEF_MAX_HEADER    (16 * 1024)
#define DEF_MAX_URL       (8 * 1024)
#define DEF_MAX_BODY      (1024 * 1024)
#define DEF_SSE_MAX_QUEUE (1024 * 1024)
#define DEF_UNADMITTED_MAX (16 * 1024 * 1024)

struct link {
    struct link *prev, *next;
};

static void link_init(struct link *l)
{
    l->prev = l->next = l;
}
static int link_linked(const struct link *l)
{
    return l->next != l;
}

static void link_add_tail(struct link *head, struct link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

static void link_del(struct link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    link_init(l);
}

#define container_of(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

/* Most per-request header lines (http_req_add_headers). */
#define XH_MAX 2048

enum conn_state { CS_READ, CS_HANDLER, CS_SSE, CS_STREAM, CS_LINGER, CS_CLOSED };
enum conn_phase { PH_IDLE, PH_HEAD, PH_BODY };
enum conn_pause { PAUSE_NONE, PAUSE_HEADERS, PAUSE_BODY, PAUSE_MESSAGE };
/* A streamed request body: not streamed or ended; handed over, http_body_read not called yet;
 * being read; paused by on_data. */
enum body_state { BODY_NONE, BODY_WAIT, BODY_READ, BODY_PAUSED };

/* Headers we keep; values live NUL-terminated in hreq.hb. */
enum {
    H_HOST,
    H_AUTH,
    H_CTYPE,
    H_ALANG,
    H_COOKIE,
    H_ORIGIN,
    H_EXPECT,
    H_ACRM,
    H_ACRH,
    H_INM,
    H_TE,
    H_NTRACK
};
static const char *const track_names[H_NTRACK] = {
    "host",
    "authorization",
    "content-type",
    "accept-language",
    "cookie",
    "origin",
    "expect",
    "access-control-request-method",
    "access-control-request-headers",
    "if-none-match",
    "transfer-encoding",
};
#define FNAME_MAX 31 /* longest tracked name + 1 */

typedef struct conn conn;

typedef struct hreq {
    http_req pub; /* first: http_req * and hreq * convert into each other */
    conn *c;      /* NULL once detached (answered or connection gone) */
    http_close_fn close_cb;
    void *close_ud;
    http_drain_fn drain_cb;
    void *drain_ud;
    http_body_data_fn on_data; /* streamed body: set while it may still be delivered */
    http_body_end_fn on_end;
    void *body_ud;
    http_collect_fn collect; /* http_body_collect: reading the body whole */
    void *collect_ud;
    buf hb; /* URL, then tracked header values; each NUL-terminated */
    buf body;
    buf xh;                  /* http_req_add_headers lines */
    uint32_t hoff[H_NTRACK]; /* offset + 1 in hb, 0 = absent */
    int refs;                /* the handler's "must answer" ref + http_req_ref */
    unsigned char answered, dispatched, sse, stream, head_only, reading;
} hreq;

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    llhttp_t parser;
    http_server *srv;
    hreq *req;        /* request being parsed or handled */
    struct link all;  /* srv->conns */
    struct link pend; /* srv->pending: flush / resume at the next check */
    /* srv->idle_conns while no request is in progress (oldest first), srv->unadmitted from the first
     * byte of a request until it is admitted (see http.h): who goes first under pressure */
    struct link wait;
    size_t held;      /* bytes counted in srv->held (not admitted yet) */
    buf in;           /* received, not parsed yet */
    buf out;          /* SSE data of this loop turn, CHUNK_PREFIX bytes reserved in front */
    size_t hdr_bytes; /* request line + headers so far */
    size_t url_len;
    size_t trailer_bytes; /* chunked trailers count against max_body */
    size_t max_body;      /* of the request being parsed (streamed bodies have their own) */
    uint64_t body_bytes;  /* body bytes of the request being parsed */
    uint64_t stream_left; /* streamed response: bytes still owed */
    unsigned nwrites;     /* uv_write requests in flight */
    unsigned wdone;       /* uv_write requests completed (progress of a streamed response) */
    unsigned wdone_armed; /* wdone when the stall timer was armed */
    size_t last_q;        /* write queue size when the timer was armed (progress check) */
    size_t sse_big;       /* bytes of queued SSE events bigger than the slow-reader limit */
    unsigned short err_status;
    unsigned char st, phase, pause, keep_alive, sse_ka;
    unsigned char in_parse, want_flush, want_resume, wait_drain;
    unsigned char overflow, sse_raw, fake, read_stopped, shut_started, open_handles, got_eof;
    unsigned char idle_rearm;
    unsigned char head_lf, n_host; /* head bytes: last was LF (folding); Host lines seen */
    unsigned char body_st, body_has, expect_cont, kick, stream_discard;
    signed char hidx;        /* tracked header being read, -1 none */
    unsigned char fname_len; /* 0xff: name too long to be tracked */
    char fname[FNAME_MAX];
    const char *err_code, *err_msg;
    char addr[48]; /* client address, kept only when max_per_address is set */
};

struct http_server {
    uv_loop_t *loop;
    http_config cfg;
    http_handler_fn handler;
    void *ud;
    http_stream_want_fn want;
    void *want_ud;
    size_t stream_max_body;
    llhttp_settings_t settings;
    uv_tcp_t listener;
    uv_check_t check;
    uv_idle_t idle;
    uv_timer_t deadline;
    char *rbuf;
    buf wb; /* scratch for response heads, reused */
    struct link conns, pending;
    struct link idle_conns, unadmitted; /* conn.wait, oldest first */
    size_t held;                  /* bytes held by requests not admitted yet */
    map per_addr;                 /* client address -> connections (max_per_address) */
    unsigned nconns, nstreams, npending;
    unsigned nopen; /* connections not closing yet (the cap counts these) */
    unsigned open_handles; /* server-owned handles not closed yet */
    uint64_t rid_seed, rid_ctr;
    time_t date_t;
    char date[40];
    unsigned char listener_init, listener_open, shutting_down, freeing, done_called;
    http_done_fn done;
    void *done_ud;
};

typedef struct wreq {
    uv_write_t req;
    char *own; /* freed after the write */
    char data[];
} wreq;

static void conn_close(conn *c);
static void conn_linger(conn *c);
static size_t conn_parse(conn *c, const char *p, size_t n);
static void srv_check_done(http_server *srv);
static void srv_maybe_free(http_server *srv);
static void on_check(uv_check_t *h);
static void on_idle(uv_idle_t *h);
static void on_conn_timer(uv_timer_t *t);
static void conn_read_start(conn *c);
static void conn_fail(conn *c, int status, const char *code, const char *msg);

/* ---------------------------------------------------------------- small helpers */

const char *http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
    }
}

/* IMF-fixdate, formatted by hand: strftime's %a/%b follow the locale. */
static const char *srv_date(http_server *srv)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char mons[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != srv->date_t || !srv->date[0]) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(srv->date, sizeof srv->date, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, mons[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        srv->date_t = now;
    }
    return srv->date;
}

/* Request ids: a bijective mix of a counter with a random seed, so ids are unique per server
 * without a syscall per request. */
static void srv_rid(http_server *srv, char out[20])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t z = srv->rid_seed + (++srv->rid_ctr) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[z & 15];
        z >>= 4;
    }
    out[16] = 0;
}

static void error_body(buf *b, const char *code, const char *msg)
{
    if (!msg)
        msg = "";
    if (!code)
        code = "error";
    buf_puts(b, "{\"error\":");
    buf_json_str(b, msg, strlen(msg));
    buf_puts(b, ",\"code\":");
    buf_json_str(b, code, strlen(code));
    buf_putc(b, '}');
}

static void head_start(buf *b, http_server *srv, int status)
{
    char line[64];
    int n = snprintf(line, sizeof line, "HTTP/1.1 %d ", status);
    buf_append(b, line, (size_t)n);
    buf_puts(b, http_status_text(status));
    buf_puts(b, "\r\nDate: ");
    buf_puts(b, srv_date(srv));
    buf_puts(b, "\r\n");
}

/* r: the request whose http_req_add_headers lines go in (NULL: none). */
static void head_end(buf *b, int ka, const hreq *r, const char *extra)
{
    buf_puts(b, ka ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    if (r && r->xh.len)
        buf_append(b, r->xh.data, r->xh.len);
    if (extra)
        buf_puts(b, extra);
    buf_puts(b, "\r\n");
}

/* ---------------------------------------------------------------- requests */

static void req_free(hreq *r)
{
    buf_free(&r->hb);
    buf_free(&r->body);
    buf_free(&r->xh);
    free(r);
}

static void req_maybe_free(hreq *r)
{
    if (r->refs <= 0 && !r->c)
        req_free(r);
}

static const char *req_hdr(hreq *r, int idx)
{
    return r->hoff[idx] ? r->hb.data + r->hoff[idx] - 1 : NULL;
}

/* Fills the public fields of the head once hb no longer grows (trailers are not kept). */
static void req_finish_head(conn *c, hreq *r)
{
    http_server *srv = c->srv;
    uint8_t m = llhttp_get_method(&c->parser);
    switch (m) {
    case HTTP_GET: r->pub.method = HTTP_M_GET; break;
    case HTTP_HEAD: r->pub.method = HTTP_M_HEAD; break;
    case HTTP_POST: r->pub.method = HTTP_M_POST; break;
    case HTTP_PUT: r->pub.method = HTTP_M_PUT; break;
    case HTTP_DELETE: r->pub.method = HTTP_M_DELETE; break;
    case HTTP_OPTIONS: r->pub.method = HTTP_M_OPTIONS; break;
    case HTTP_PATCH: r->pub.method = HTTP_M_PATCH; break;
    default: r->pub.method = HTTP_M_OTHER; break;
    }
    r->pub.method_str = llhttp_method_name((llhttp_method_t)m);
    r->head_only = r->pub.method == HTTP_M_HEAD;
    if (!r->hb.data && !buf_reserve(&r->hb, 0))
        r->hb.data[0] = 0;  /* a fresh reservation is not terminated */
    char *url = r->hb.data; /* URL is first in hb */
    char *q = strchr(url, '?');
    if (q) {
        *q = 0;
        r->pub.query = q + 1;
    }
    r->pub.path = url;
    r->pub.host = req_hdr(r, H_HOST);
    r->pub.authorization = req_hdr(r, H_AUTH);
    r->pub.content_type = req_hdr(r, H_CTYPE);
    r->pub.accept_language = req_hdr(r, H_ALANG);
    r->pub.cookie = req_hdr(r, H_COOKIE);
    r->pub.origin = req_hdr(r, H_ORIGIN);
    r->pub.acr_method = req_hdr(r, H_ACRM);
    r->pub.acr_headers = req_hdr(r, H_ACRH);
    r->pub.if_none_match = req_hdr(r, H_INM);
    srv_rid(srv, r->pub.rid);
}

/* ---------------------------------------------------------------- pending list */

static void srv_pending_add(http_server *srv, conn *c)
{
    if (link_linked(&c->pend))
        return;
    link_add_tail(&srv->pending, &c->pend);
    srv->npending++;
    if (srv->npending == 1) {
        uv_check_start(&srv->check, on_check);
        uv_idle_start(&srv->idle, on_idle); /* check alone would not keep poll from blocking */
    }
}

static void pend_del(conn *c)
{
    if (!link_linked(&c->pend))
        return;
    link_del(&c->pend);
    c->srv->npending--;
}

/* ---------------------------------------------------------------- writing */

/* Bytes libuv still holds for the socket. */
static size_t conn_queue(conn *c)
{
    return c->fake ? 0 : uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
}

/* Backpressure: tells a waiting SSE / streamed response producer that everything it queued
 * was written. */
static void sse_drained(conn *c)
{
    hreq *r = c->req;
    if (r && r->drain_cb && (c->st == CS_SSE || c->st == CS_STREAM) && !c->out.len &&
        !conn_queue(c)) {
        http_drain_fn cb = r->drain_cb;
        r->drain_cb = NULL;
        cb(&r->pub, r->drain_ud);
    }
}

static void on_write(uv_write_t *req, int status)
{
    wreq *w = container_of(req, wreq, req);
    conn *c = req->handle->data;
    free(w->own);
    free(w);
    c->nwrites--;
    c->wdone++;
    if (status < 0) {
        if (status != UV_ECANCELED)
            LOGD(c->req ? c->req->pub.rid : NULL, "write failed", "err=%s", uv_err_name(status));
        conn_close(c);
        return;
    }
    if (c->st == CS_LINGER) {
        if (c->nwrites == 0 && !c->shut_started)
            conn_linger(c);
        return;
    }
    if (c->wait_drain && conn_queue(c) < WRITE_HIGH_WATER / 2) {
        c->wait_drain = 0;
        c->want_resume = 1;
        srv_pending_add(c->srv, c);
    }
    if (!conn_queue(c) && !c->out.len)
        c->sse_big = 0;
    sse_drained(c);
}

/* Writes a then b (b may be NULL). b_own, when set, is a malloc'd block holding b and is
 * freed once written. Tries a direct write first; only the unwritten tail is copied. */
static int conn_write(conn *c, const char *a, size_t alen, const char *b, size_t blen, char *b_own)
{
    int rc = 0;
    wreq *w = NULL;
    if (c->st == CS_CLOSED) {
        rc = -ENOTCONN;
        goto out;
    }
    if (c->fake)
        goto out;
    uv_buf_t bufs[2] = {uv_buf_init((char *)a, (unsigned)alen),
                        uv_buf_init((char *)b, (unsigned)blen)};
    unsigned nb = blen ? 2 : 1;
    size_t done = 0;
    int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nb);
    if (n >= 0) {
        done = (size_t)n;
    } else if (n != UV_EAGAIN) {
        rc = n;
        conn_close(c);
        goto out;
    }
    if (done == alen + blen)
        goto out;
    size_t askip = done < alen ? done : alen;
    size_t bskip = done - askip;
    size_t arem = alen - askip, brem = blen - bskip;
    w = xmalloc(sizeof *w + arem + (b_own ? 0 : brem));
    memcpy(w->data, a + askip, arem);
    uv_buf_t wb[2];
    nb = 0;
    if (arem)
        wb[nb++] = uv_buf_init(w->data, (unsigned)arem);
    if (brem) {
        if (b_own) {
            wb[nb++] = uv_buf_init((char *)b + bskip, (unsigned)brem);
        } else {
            memcpy(w->data + arem, b + bskip, brem);
            if (arem)
                wb[0].len += (unsigned)brem;
            else
                wb[nb++] = uv_buf_init(w->data, (unsigned)brem);
        }
    }
    w->own = b_own;
    b_own = NULL;
    rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, wb, nb, on_write);
    if (rc) {
        free(w->own);
        free(w);
        conn_close(c);
        goto out;
    }
    c->nwrites++;
out:
    free(b_own);
    return rc;
}

/* ---------------------------------------------------------------- admission and pressure */

/* Moves c to the end of list (srv->idle_conns or srv->unadmitted), or off both when NULL. */
static void conn_wait_set(conn *c, struct link *list)
{
    if (link_linked(&c->wait))
        link_del(&c->wait);
    if (list)
        link_add_tail(list, &c->wait);
}

/* What c holds for a request that is not admitted yet (see http.h), in bytes allocated. */
static size_t conn_unadmitted_bytes(const conn *c)
{
    const hreq *r = c->req;
    if (!r)
        return 0;
    if (c->st == CS_READ && c->phase != PH_IDLE)
        return r->hb.cap + r->body.cap + c->in.cap;
    if (c->st == CS_HANDLER && c->body_st == BODY_WAIT)
        return r->hb.cap + c->in.cap;
    return 0;
}

static void conn_account(conn *c)
{
    size_t now = c->st == CS_CLOSED ? 0 : conn_unadmitted_bytes(c);
    c->srv->held = c->srv->held - c->held + now;
    c->held = now;
}

/* Drops a connection to make room: a head still being read gets 503, anything else is closed. */
static void conn_evict(conn *c, const char *why)
{
    LOGD(NULL, "connection dropped", "why=%s", why);
    if (c->st == CS_READ && c->phase != PH_IDLE)
        conn_fail(c, 503, "overloaded", "the server is busy: try again");
    else
        conn_close(c);
}

/* Over unadmitted_max: the requests waiting longest to be admitted go first. */
static void srv_relieve(http_server *srv)
{
    while (srv->held > srv->cfg.unadmitted_max && link_linked(&srv->unadmitted))
        conn_evict(container_of(srv->unadmitted.next, conn, wait), "unadmitted_max");
}

/* At the connection cap: the connection idle longest (no response still draining), else the
 * oldest head still being read, makes room. 0 when nothing could go. */
static int srv_make_room(http_server *srv)
{
    for (struct link *l = srv->idle_conns.next; l != &srv->idle_conns; l = l->next) {
        conn *o = container_of(l, conn, wait);
        if (!o->nwrites) {
            conn_evict(o, "max_connections");
            return 1;
        }
    }
    for (struct link *l = srv->unadmitted.next; l != &srv->unadmitted; l = l->next) {
        conn *o = container_of(l, conn, wait);
        if (o->st == CS_READ) {
            conn_evict(o, "max_connections");
            return 1;
        }
    }
    return 0;
}

/* A client address's connection count (max_per_address): +1 / -1. Returns the new count. */
static uintptr_t srv_addr_count(http_server *srv, const char *addr, int delta)
{
    uintptr_t n = (uintptr_t)map_get(&srv->per_addr, addr) + (uintptr_t)(intptr_t)delta;
    if (n)
        map_put(&srv->per_addr, addr, (void *)n);
    else
        map_del(&srv->per_addr, addr);
    return n;
}

/* ---------------------------------------------------------------- timers */

static void conn_timer(conn *c, unsigned ms, unsigned repeat)
{
    c->last_q = conn_queue(c);
    if (ms)
        uv_timer_start(&c->timer, on_conn_timer, ms, repeat);
    else
        uv_timer_stop(&c->timer);
}

static void conn_arm_idle(conn *c)
{
    if (c->st == CS_READ && c->phase == PH_IDLE) {
        conn_wait_set(c, &c->srv->idle_conns);
        conn_timer(c, c->srv->cfg.idle_timeout_ms, 0);
    }
}

/* ---------------------------------------------------------------- closing */

static void conn_finish(conn *c)
{
    http_server *srv = c->srv;
    hreq *r = c->req;
    if (r) {
        c->req = NULL;
        r->c = NULL;
        if (!r->dispatched) {
            req_free(r);
        } else {
            /* hold the request: the callbacks may answer (dropping the handler's ref) */
            r->refs++;
            if (!r->answered && r->on_end) {
                http_body_end_fn end = r->on_end;
                r->on_end = NULL;
                r->on_data = NULL;
                end(&r->pub, -ECONNRESET, r->body_ud);
            }
            if (!r->answered && r->close_cb) {
                http_close_fn cb = r->close_cb;
                r->close_cb = NULL;
                cb(&r->pub, r->close_ud);
            }
            r->refs--;
            req_maybe_free(r);
        }
    }
    pend_del(c);
    link_del(&c->all);
    srv->nconns--;
    if (c->addr[0])
        srv_addr_count(srv, c->addr, -1);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
    srv_check_done(srv);
    srv_maybe_free(srv);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->open_handles == 0)
        conn_finish(c);
}

static void conn_close(conn *c)
{
    if (c->st == CS_CLOSED)
        return;
    if (c->st == CS_SSE)
        c->srv->nstreams--;
    c->st = CS_CLOSED;
    c->srv->nopen--;
    conn_account(c);
    conn_wait_set(c, NULL);
    pend_del(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    if (!c->fake)
        uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn *c = req->handle->data;
    free(req);
    if (status < 0 || c->got_eof)
        conn_close(c);
}

static unsigned linger_ms(conn *c)
{
    return c->srv->cfg.idle_timeout_ms > LINGER_MS ? c->srv->cfg.idle_timeout_ms : LINGER_MS;
}

/* Closing after a response: wait for queued writes, send FIN, keep reading (and discarding)
 * until the client's FIN or LINGER_MS. */
static void conn_linger(conn *c)
{
    if (c->st == CS_CLOSED)
        return;
    if (c->st == CS_SSE)
        c->srv->nstreams--;
    c->st = CS_LINGER;
    c->phase = PH_IDLE;
    conn_account(c);
    conn_wait_set(c, NULL);
    c->want_resume = 0;
    c->want_flush = 0;
    if (c->shut_started)
        return;
    if (c->nwrites) {
        /* the timer only fires without write progress (see on_conn_timer) */
        conn_timer(c, linger_ms(c), 0);
        return;
    }
    uv_timer_stop(&c->timer);
    if (c->fake) {
        conn_close(c);
        return;
    }
    c->shut_started = 1;
    uv_shutdown_t *s = xmalloc(sizeof *s);
    if (uv_shutdown(s, (uv_stream_t *)&c->tcp, on_shutdown)) {
        free(s);
        conn_close(c);
        return;
    }
    if (c->read_stopped) {
        conn_read_start(c); /* we need to see the client's FIN */
    }
    conn_timer(c, LINGER_MS, 0);
}

/* JSON error response, then close. r: the request whose added headers go in, or NULL. */
static void conn_error_reply(conn *c, int status, const char *code, const char *msg, const hreq *r)
{
    http_server *srv = c->srv;
    buf body = BUF_INIT(0);
    error_body(&body, code, msg);
    buf_reset(&srv->wb);
    head_start(&srv->wb, srv, status);
    buf_printf(&srv->wb, "Content-Type: application/json\r\nContent-Length: %zu\r\n", body.len);
    head_end(&srv->wb, 0, r, NULL);
    conn_write(c, srv->wb.data, srv->wb.len, body.data, body.len, NULL);
    buf_free(&body);
    conn_linger(c);
}

/* Error produced by the server itself while reading a request: JSON body, then close. */
static void conn_fail(conn *c, int status, const char *code, const char *msg)
{
    if (c->st != CS_READ)
        return;
    if (c->req) {
        LOGI(NULL, "request rejected", "status=%d code=%s", status, code);
        req_free(c->req);
        c->req = NULL;
    }
    conn_error_reply(c, status, code, msg, NULL);
}

/* The streamed body of c->req ended (status 0) or failed: on_end, once, from the loop. */
static void conn_body_end(conn *c, int status)
{
    hreq *r = c->req;
    c->body_st = BODY_NONE;
    if (c->st == CS_HANDLER)
        uv_timer_stop(&c->timer); /* the handler's own time is not limited */
    http_body_end_fn end = r->on_end;
    r->on_end = NULL;
    r->on_data = NULL;
    if (end)
        end(&r->pub, status, r->body_ud);
}

/* An error in a streamed body the handler is reading: the server answers it (the handler's
 * answer becomes a no-op, the close callback runs as for a disconnect) and tells on_end. */
static void conn_body_fail(conn *c, int status, const char *code, const char *msg, int err)
{
    hreq *r = c->req;
    LOGI(r->pub.rid, "request body rejected", "status=%d code=%s", status, code);
    c->body_st = BODY_NONE;
    conn_error_reply(c, status, code, msg, r);
    conn_body_end(c, err);
}

/* ---------------------------------------------------------------- after a response */

static int conn_ka(conn *c)
{
    return c->keep_alive && !c->srv->shutting_down && !c->overflow && c->body_st == BODY_NONE;
}

/* A response starts for a streamed request: its body is not delivered any more. A body that
 * is known to be empty is completed (no byte to skip); otherwise the rest is never read, so
 * no keep-alive: later bytes are dropped and the connection closes after this response. */
static void conn_body_settle(conn *c)
{
    hreq *r = c->req;
    if (c->body_st == BODY_NONE)
        return;
    r->on_data = NULL;
    r->on_end = NULL;
    if (c->body_st == BODY_WAIT && !c->body_has) {
        /* llhttp is never inside execute here: BODY_WAIT means it is paused after the head */
        c->pause = PAUSE_NONE;
        llhttp_errno_t e = llhttp_execute(&c->parser, "", 0);
        if (e == HPE_PAUSED && c->pause == PAUSE_MESSAGE) {
            llhttp_resume(&c->parser);
            c->body_st = BODY_NONE;
            return;
        }
    }
    c->body_st = BODY_NONE;
    c->expect_cont = 0;
    c->overflow = 1;
    uv_timer_stop(&c->timer);
    if (!c->in_parse)
        buf_free(&c->in); /* else conn_resume drops it after the parse */
    if (c->read_stopped)
        conn_read_start(c); /* to see a disconnect or the client's FIN */
}

/* The response for c->req is fully queued: detach the request and go back to reading. The
 * caller drops the handler's ref. */
static void conn_response_done(conn *c, int ka)
{
    hreq *r = c->req;
    if (r) {
        c->req = NULL;
        r->c = NULL;
    }
    c->phase = PH_IDLE;
    c->want_flush = 0;
    conn_wait_set(c, NULL);
    if (c->out.cap > 1024)
        buf_free(&c->out);
    else
        buf_reset(&c->out);
    if (!ka) {
        conn_linger(c);
        return;
    }
    c->st = CS_READ;
    conn_account(c);
    uv_timer_stop(&c->timer);
    if (conn_queue(c) > WRITE_HIGH_WATER)
        c->wait_drain = 1;
    if (c->in_parse) {
        c->idle_rearm = 1;
        return; /* the parse loop goes on by itself */
    }
    if (c->in.len && !c->wait_drain) {
        /* not from here: the handler must not be re-entered from inside its own call */
        c->want_resume = 1;
        srv_pending_add(c->srv, c);
    } else if (c->read_stopped && !c->wait_drain) {
        conn_read_start(c); /* stopped by a streamed body's pause */
    }
    conn_arm_idle(c);
}

/* ---------------------------------------------------------------- reading / parsing */

static void conn_read_stop(conn *c)
{
    if (c->fake || c->read_stopped)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->read_stopped = 1;
}

/* Parsing goes on: no request with the handler, or one whose streamed body is being read. */
static int conn_parsing(const conn *c)
{
    return c->st == CS_READ || (c->st == CS_HANDLER && c->body_st == BODY_READ);
}

static void conn_stash(conn *c, const char *p, size_t n)
{
    if (c->overflow)
        return;
    if (c->in.len + n > IN_CAP && c->body_st == BODY_NONE &&
        (c->st == CS_HANDLER || c->st == CS_SSE || c->st == CS_STREAM)) {
        /* keep reading to see a disconnect; the bytes are lost, so no keep-alive after */
        c->overflow = 1;
        buf_free(&c->in);
        return;
    }
    if (buf_append(&c->in, p, n)) {
        c->overflow = 1;
        return;
    }
    if (c->body_st == BODY_WAIT) {
        /* not admitted yet: what came with the head waits, the rest stays in the kernel */
        conn_read_stop(c);
    } else if (c->in.len >= IN_CAP && (c->st == CS_READ || c->body_st != BODY_NONE)) {
        /* no request in progress, or a streamed body nobody reads yet: plain TCP
         * back-pressure is fine */
        conn_read_stop(c);
    }
}

static void conn_resume(conn *c)
{
    if (!conn_parsing(c) || c->wait_drain)
        return;
    if (c->in.len || c->kick) {
        size_t used = conn_parse(c, c->in.data ? c->in.data : "", c->in.len);
        if (c->st == CS_CLOSED || c->st == CS_LINGER)
            return;
        if (c->overflow) {
            buf_free(&c->in); /* a response started before the streamed body ended */
        } else {
            buf_consume(&c->in, used);
            if (!c->in.len)
                buf_free(&c->in);
        }
    }
    if (c->read_stopped && c->in.len < IN_CAP && c->body_st != BODY_PAUSED)
        conn_read_start(c);
}

static void conn_on_data(conn *c, const char *p, size_t n)
{
    if (c->st == CS_HANDLER && c->body_st == BODY_READ && !c->req->collect)
        conn_timer(c, c->srv->cfg.body_timeout_ms, 0); /* inactivity: reset by every read */
    switch (c->st) {
    case CS_READ:
    case CS_HANDLER:
        /* a request with the handler takes bytes only for the streamed body it reads */
        if (!conn_parsing(c) || c->in.len || c->wait_drain || c->want_resume) {
            conn_stash(c, p, n);
            return;
        }
        {
            size_t used = conn_parse(c, p, n);
            if (used < n &&
                (c->st == CS_READ || c->st == CS_HANDLER || c->st == CS_SSE || c->st == CS_STREAM))
                conn_stash(c, p + used, n - used);
        }
        return;
    case CS_SSE:
    case CS_STREAM: conn_stash(c, p, n); return;
    default: return; /* lingering or closed: discard */
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    conn *c = h->data;
    b->base = c->srv->rbuf;
    b->len = c->st == CS_READ || (c->st == CS_HANDLER && c->body_st == BODY_WAIT) ? HEAD_READ_SIZE
                                                                                  : READ_BUF_SIZE;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn *c = s->data;
    if (nread < 0) {
        if (nread == UV_EOF && c->nwrites && (c->st == CS_READ || c->st == CS_LINGER)) {
            /* half-close after the last request: let its response drain first */
            c->got_eof = 1;
            conn_linger(c);
            return;
        }
        if (nread != UV_EOF && c->st != CS_LINGER)
            LOGD(c->req ? c->req->pub.rid : NULL, "read failed", "err=%s", uv_err_name((int)nread));
        conn_close(c);
        return;
    }
    if (nread > 0) {
        conn_on_data(c, b->base, (size_t)nread);
        conn_account(c);
        if (c->srv->held > c->srv->cfg.unadmitted_max)
            srv_relieve(c->srv);
    }
}

static void conn_read_start(conn *c)
{
    if (c->fake)
        return;
    c->read_stopped = 0;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
        conn_close(c);
}

static int cb_error(conn *c, int status, const char *code, const char *msg)
{
    c->err_status = (unsigned short)status;
    c->err_code = code;
    c->err_msg = msg;
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    conn *c = p->data;
    if (c->req) /* cannot happen: parsing pauses until the previous request is answered */
        return cb_error(c, 400, "bad_request", "unexpected request");
    http_server *srv = c->srv;
    hreq *r = xcalloc(1, sizeof *r);
    r->c = c;
    r->refs = 1;
    r->hb.max = srv->cfg.max_header;
    r->body.max = srv->cfg.max_body;
    r->xh.max = XH_MAX;
    r->pub.content_length = -1;
    c->req = r;
    c->phase = PH_HEAD;
    c->hdr_bytes = 0;
    c->url_len = 0;
    c->trailer_bytes = 0;
    c->max_body = srv->cfg.max_body;
    c->body_bytes = 0;
    c->body_st = BODY_NONE;
    c->body_has = 0;
    c->expect_cont = 0;
    c->hidx = -1;
    c->fname_len = 0;
    c->head_lf = 0;
    c->n_host = 0;
    conn_wait_set(c, &srv->unadmitted);
    conn_timer(c, srv->cfg.header_timeout_ms, 0);
    return 0;
}

static int hb_fail(conn *c)
{
    return cb_error(c, 431, "header_too_large", "request header fields too large");
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    conn *c = p->data;
    c->url_len += n;
    if (c->url_len > c->srv->cfg.max_url)
        return cb_error(c, 414, "uri_too_long", "request URI too long");
    return buf_append(&c->req->hb, at, n) ? hb_fail(c) : 0;
}

static int on_url_complete(llhttp_t *p)
{
    conn *c = p->data;
    return buf_putc(&c->req->hb, 0) ? hb_fail(c) : 0;
}

static int trailer_bytes(conn *c, size_t n)
{
    c->trailer_bytes += n;
    if (c->body_bytes + c->trailer_bytes > c->max_body)
        return cb_error(c, 413, "payload_too_large", "request body too large");
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (c->phase != PH_HEAD)
        return trailer_bytes(c, n);
    if (c->fname_len == 0xff)
        return 0;
    if (c->fname_len + n >= FNAME_MAX) {
        c->fname_len = 0xff;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = at[i];
        c->fname[c->fname_len++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
    }
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    conn *c = p->data;
    if (c->phase != PH_HEAD)
        return 0;
    c->hidx = -1;
    if (c->fname_len != 0xff) {
        for (int i = 0; i < H_NTRACK; i++) {
            if (strlen(track_names[i]) == c->fname_len &&
                !memcmp(track_names[i], c->fname, c->fname_len)) {
                c->hidx = (signed char)i;
                break;
            }
        }
    }
    c->fname_len = 0;
    if (c->hidx < 0)
        return 0;
    if (c->hidx == H_HOST && c->n_host < 2)
        c->n_host++;
    hreq *r = c->req;
    buf *hb = &r->hb;
    uint32_t old = r->hoff[c->hidx];
    size_t at = hb->len;
    if (old) {
        /* repeated header: the combined value "old, new" goes at the end (cookies join with
         * "; "); the stale copy costs nothing beyond the header cap */
        size_t olen = strlen(hb->data + old - 1);
        if (buf_reserve(hb, olen + 2))
            return hb_fail(c);
        memcpy(hb->data + hb->len, hb->data + old - 1, olen);
        hb->len += olen;
        hb->data[hb->len] = 0;
        if (buf_puts(hb, c->hidx == H_COOKIE ? "; " : ", "))
            return hb_fail(c);
    }
    r->hoff[c->hidx] = (uint32_t)at + 1;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (c->phase != PH_HEAD)
        return trailer_bytes(c, n);
    if (c->hidx < 0)
        return 0;
    return buf_append(&c->req->hb, at, n) ? hb_fail(c) : 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    conn *c = p->data;
    if (c->phase != PH_HEAD || c->hidx < 0)
        return 0;
    buf *hb = &c->req->hb;
    size_t start = c->req->hoff[c->hidx] - 1;
    while (hb->len > start && (hb->data[hb->len - 1] == ' ' || hb->data[hb->len - 1] == '\t'))
        hb->len--;
    c->hidx = -1;
    return buf_putc(hb, 0) ? hb_fail(c) : 0;
}

static int on_headers_complete(llhttp_t *p)
{
    conn *c = p->data;
    c->pause = PAUSE_HEADERS; /* so the parse loop learns where the head ended */
    return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    conn *c = p->data;
    hreq *r = c->req;
    if (c->body_bytes + c->trailer_bytes + n > c->max_body)
        return cb_error(c, 413, "payload_too_large", "request body too large");
    c->body_bytes += n;
    if (!r->pub.streaming)
        return buf_append(&r->body, at, n)
                   ? cb_error(c, 413, "payload_too_large", "request body too large")
                   : 0;
    if (!n)
        return 0; /* llhttp flushes an open span at the end of every execute, even empty */
    int rc = r->on_data ? r->on_data(&r->pub, at, n, r->body_ud) : 0;
    if (c->st != CS_HANDLER || c->body_st != BODY_READ) {
        /* answered (or gone) from inside on_data: r may be freed, stop here */
        c->pause = PAUSE_BODY;
        return HPE_PAUSED;
    }
    if (rc == 1) {
        /* the bytes of this read that follow wait in c->in; the socket waits in the kernel */
        c->body_st = BODY_PAUSED;
        uv_timer_stop(&c->timer);
        conn_read_stop(c);
        c->pause = PAUSE_BODY;
        return HPE_PAUSED;
    }
    return 0;
}

static const char cont100[] = "HTTP/1.1 100 Continue\r\n\r\n";

static int on_message_complete(llhttp_t *p)
{
    conn *c = p->data;
    c->pause = PAUSE_MESSAGE;
    return HPE_PAUSED;
}

/* Head complete (parser paused right after it). Returns -1 when the request failed, 1 when
 * it goes to the handler now with a streamed body, 0 when the body follows. */
static int conn_headers_done(conn *c)
{
    http_server *srv = c->srv;
    llhttp_t *p = &c->parser;
    hreq *r = c->req;
    if (c->hdr_bytes > srv->cfg.max_header) {
        conn_fail(c, 431, "header_too_large", "request header fields too large");
        return -1;
    }
    if (p->http_major != 1) {
        conn_fail(c, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are supported");
        return -1;
    }
    if (c->n_host > 1 || (p->http_minor >= 1 && !c->n_host)) {
        conn_fail(c, 400, "bad_request", "an HTTP/1.1 request needs exactly one Host header");
        return -1;
    }
    const char *te = req_hdr(r, H_TE);
    if (te && strcasecmp(te, "chunked")) {
        conn_fail(c, 501, "not_implemented", "only the chunked transfer coding is supported");
        return -1;
    }
    c->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    req_finish_head(c, r);
    if (p->flags & F_CONTENT_LENGTH)
        r->pub.content_length = (int64_t)p->content_length;
    if (srv->want && srv->want(&r->pub, srv->want_ud)) {
        r->pub.streaming = 1;
        c->max_body = srv->stream_max_body;
    }
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->max_body) {
        conn_fail(c, 413, "payload_too_large", "request body too large");
        return -1;
    }
    c->phase = PH_BODY;
    int has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
    const char *expect = req_hdr(r, H_EXPECT);
    int want_cont = has_body && expect && !strcasecmp(expect, "100-continue") &&
                    p->http_major == 1 && p->http_minor >= 1;
    if (r->pub.streaming) {
        /* the body waits for http_body_read, and so does the interim response */
        c->body_has = (unsigned char)has_body;
        c->expect_cont = (unsigned char)want_cont;
        return 1;
    }
    if (!has_body) {
        uv_timer_stop(&c->timer);
        return 0;
    }
    /* grow with the data, not with what the client claims */
    if ((p->flags & F_CONTENT_LENGTH) &&
        !buf_reserve(&r->body, p->content_length < 65536 ? (size_t)p->content_length : 65536))
        r->body.data[r->body.len] = 0; /* CONNECT skips the body: keep it a valid string */
    if (want_cont) {
        conn_write(c, cont100, sizeof cont100 - 1, NULL, 0, NULL);
        if (c->st != CS_READ)
            return -1;
    }
    conn_timer(c, srv->cfg.body_timeout_ms, 0);
    return 0;
}

/* Hands c->req to the handler: complete, or with only its head when the body is streamed. */
static void conn_dispatch(conn *c)
{
    http_server *srv = c->srv;
    hreq *r = c->req;
    if (!r->pub.streaming) {
        r->pub.body = r->body.data ? r->body.data : "";
        r->pub.body_len = r->body.len;
    }
    r->dispatched = 1;
    c->st = CS_HANDLER;
    c->phase = r->pub.streaming ? PH_BODY : PH_IDLE;
    c->body_st = r->pub.streaming ? BODY_WAIT : BODY_NONE;
    if (!r->pub.streaming)
        conn_wait_set(c, NULL); /* admitted: the handler has it whole */
    conn_account(c);
    uv_timer_stop(&c->timer);
    LOGD(r->pub.rid, "request", "method=%s path=\"%s\"", r->pub.method_str, LOGQ(r->pub.path));
    srv->handler(&r->pub, srv->ud);
}

static void conn_parse_error(conn *c, llhttp_errno_t e)
{
    if (c->body_st != BODY_NONE) {
        /* in a streamed body the handler reads */
        int status = c->err_status ? c->err_status : 400;
        c->err_status = 0;
        if (status == 413)
            conn_body_fail(c, 413, c->err_code, c->err_msg, -EMSGSIZE);
        else
            conn_body_fail(c, status, status == 400 ? "bad_request" : c->err_code,
                           status == 400 ? "malformed HTTP request body" : c->err_msg, -ECONNRESET);
        return;
    }
    if (c->err_status) {
        conn_fail(c, c->err_status, c->err_code, c->err_msg);
        c->err_status = 0;
        return;
    }
    LOGD(NULL, "malformed request", "err=%s reason=\"%s\"", llhttp_errno_name(e),
         llhttp_get_error_reason(&c->parser));
    conn_fail(c, 400, "bad_request", "malformed HTTP request");
}

/* Feeds p[0..n) to llhttp until it is consumed or a request is handed to the handler and not
 * answered yet. Returns the bytes consumed. */
static size_t conn_parse(conn *c, const char *p, size_t n)
{
    size_t off = 0;
    int kick = c->kick; /* a streamed body may complete without another byte */
    c->kick = 0;
    unsigned char saved = c->in_parse;
    c->in_parse = 1;
    while (conn_parsing(c) && !c->wait_drain && (off < n || kick)) {
        kick = 0;
        const char *at = p + off;
        size_t len = n - off;
        c->pause = PAUSE_NONE;
        llhttp_errno_t e = llhttp_execute(&c->parser, at, len);
        size_t used = len;
        if (e != HPE_OK) {
            const char *pos = llhttp_get_error_pos(&c->parser);
            if (pos >= at && pos <= at + len)
                used = (size_t)(pos - at);
        }
        if (c->phase == PH_HEAD) {
            c->hdr_bytes += used;
            /* obsolete line folding (a header line starting with SP or HT): llhttp takes it,
             * we refuse it (RFC 9112 5.2) */
            int fold = 0;
            for (size_t i = 0; i < used && !fold; i++) {
                fold = c->head_lf && (at[i] == ' ' || at[i] == '\t');
                c->head_lf = at[i] == '\n';
            }
            if (fold) {
                conn_fail(c, 400, "bad_request", "folded header lines are not accepted");
                break;
            }
        }
        off += used;
        if (e == HPE_OK) {
            if (c->phase == PH_HEAD && c->hdr_bytes > c->srv->cfg.max_header)
                conn_fail(c, 431, "header_too_large", "request header fields too large");
            continue;
        }
        if (e == HPE_PAUSED && c->pause == PAUSE_HEADERS) {
            llhttp_resume(&c->parser);
            int rc = conn_headers_done(c);
            if (rc < 0)
                break;
            if (rc > 0) {
                conn_dispatch(c); /* streamed body: parsing stops until http_body_read */
                continue;
            }
            kick = 1; /* a request without body completes on a zero-length execute */
            continue;
        }
        if (e == HPE_PAUSED && c->pause == PAUSE_BODY) {
            llhttp_resume(&c->parser); /* on_data paused, or the request was answered */
            continue;
        }
        if (e == HPE_PAUSED && c->pause == PAUSE_MESSAGE) {
            llhttp_resume(&c->parser);
            if (c->body_st != BODY_NONE)
                conn_body_end(c, 0); /* the handler may answer, and parsing go on */
            else
                conn_dispatch(c);
            continue;
        }
        conn_parse_error(c, e);
        break;
    }
    c->in_parse = saved;
    if (!saved && c->idle_rearm) {
        /* only a finished exchange restarts the idle clock, not stray bytes like bare CRLFs */
        c->idle_rearm = 0;
        conn_arm_idle(c);
    }
    return off;
}

/* ---------------------------------------------------------------- SSE output */

/* Appends "data: " lines for json; embedded newlines start new data: lines so they cannot
 * break the event framing. */
static int sse_append_data(buf *o, const char *json, size_t len)
{
    int rc = buf_puts(o, "data: ");
    size_t s = 0;
    for (size_t i = 0; i < len && !rc; i++) {
        if (json[i] == '\n' || json[i] == '\r') {
            rc = buf_append(o, json + s, i - s);
            if (!rc)
                rc = buf_puts(o, "\ndata: ");
            if (json[i] == '\r' && i + 1 < len && json[i + 1] == '\n')
                i++;
            s = i + 1;
        }
    }
    if (!rc)
        rc = buf_append(o, json + s, len - s);
    if (!rc)
        rc = buf_puts(o, "\n\n");
    return rc;
}

/* Frames the pending data as one chunk (in place, using the reserved prefix) and appends
 * tail (the terminator, or NULL). Returns the start of the bytes to write. */
static const char *sse_frame(conn *c, const char *tail, size_t *outlen)
{
    buf *o = &c->out;
    size_t start = 0;
    if (o->len > CHUNK_PREFIX && !c->sse_raw) {
        char line[CHUNK_PREFIX + 1];
        int n = snprintf(line, sizeof line, "%zx\r\n", o->len - CHUNK_PREFIX);
        start = CHUNK_PREFIX - (size_t)n;
        memcpy(o->data + start, line, (size_t)n);
        buf_puts(o, "\r\n");
    } else if (o->len <= CHUNK_PREFIX) {
        start = o->len; /* nothing pending */
    } else {
        start = CHUNK_PREFIX;
    }
    if (tail)
        buf_puts(o, tail);
    *outlen = o->len - start;
    return o->data ? o->data + start : "";
}

static void conn_flush(conn *c)
{
    if (c->st != CS_SSE || c->out.len <= CHUNK_PREFIX)
        return;
    size_t len;
    const char *p = sse_frame(c, NULL, &len);
    conn_write(c, p, len, NULL, 0, NULL);
    /* conn_write kept a copy of whatever the socket did not take: an idle stream holds no
     * buffer at all (they add up with thousands of open streams) */
    buf_free(&c->out);
    sse_drained(c); /* the socket may have taken it all at once */
}

static int sse_queue(conn *c, const char *json, size_t len, int ping)
{
    http_server *srv = c->srv;
    size_t queued = c->out.len + conn_queue(c);
    size_t need = ping ? 8 : len + 8 + CHUNK_PREFIX;
    /* the limit is on a reader that does not keep up, not on the size of one event: an event
     * bigger than the limit (the done item of a very long answer) still goes to a reader that
     * has caught up */
    size_t max = srv->cfg.sse_max_queue, limit = max + c->sse_big;
    if (max && (queued >= limit || (need <= max && queued + need > limit))) {
        LOGW(c->req ? c->req->pub.rid : NULL, "slow SSE reader dropped", "queued=%zu", queued);
        conn_close(c);
        return -ENOTCONN;
    }
    if (need > max)
        c->sse_big += need; /* until the queue is empty again */
    if (!c->out.len && buf_append(&c->out, "          ", CHUNK_PREFIX))
        return -ENOBUFS;
    int rc = ping ? buf_puts(&c->out, ": ping\n\n") : sse_append_data(&c->out, json, len);
    if (rc)
        return rc;
    if (!c->want_flush) {
        c->want_flush = 1;
        srv_pending_add(srv, c);
    }
    return 0;
}

/* ---------------------------------------------------------------- timers / check */

static void on_conn_timer(uv_timer_t *t)
{
    conn *c = t->data;
    if ((c->st == CS_LINGER || (c->st == CS_READ && c->phase == PH_IDLE)) && c->nwrites) {
        /* a response is still draining: a slow reader that makes progress is not idle */
        size_t q = conn_queue(c);
        if (q < c->last_q) {
            conn_timer(c, c->st == CS_LINGER ? linger_ms(c) : c->srv->cfg.idle_timeout_ms, 0);
            return;
        }
    }
    switch (c->st) {
    case CS_READ:
        if (c->phase == PH_IDLE) {
            conn_close(c); /* idle keep-alive: no response owed */
        } else {
            LOGI(NULL, "request timeout", "phase=%s", c->phase == PH_HEAD ? "header" : "body");
            conn_fail(c, 408, "timeout",
                      c->phase == PH_HEAD ? "request header timeout" : "request body timeout");
        }
        break;
    case CS_HANDLER:
        if (c->body_st == BODY_READ)
            conn_body_fail(c, 408, "timeout", "request body timeout", -ECONNRESET);
        break;
    case CS_SSE: sse_queue(c, NULL, 0, 1); break;
    case CS_STREAM: {
        /* a download nobody reads: bytes queued a whole period, and neither a write completed
         * nor the queue shrank (one big write drains without completing) */
        size_t q = conn_queue(c);
        if (q && c->wdone == c->wdone_armed && q >= c->last_q) {
            LOGI(c->req ? c->req->pub.rid : NULL, "stalled reader dropped", "queued=%zu", q);
            conn_close(c);
        } else {
            c->wdone_armed = c->wdone;
            c->last_q = q;
        }
        break;
    }
    case CS_LINGER: conn_close(c); break;
    default: break;
    }
}

static void on_check(uv_check_t *h)
{
    http_server *srv = h->data;
    /* only the entries present now: work they cause waits for the next turn */
    unsigned n = srv->npending;
    while (n-- && link_linked(&srv->pending)) {
        conn *c = container_of(srv->pending.next, conn, pend);
        pend_del(c);
        if (c->want_flush) {
            c->want_flush = 0;
            conn_flush(c);
        }
        if (c->want_resume) {
            c->want_resume = 0;
            conn_resume(c);
            conn_account(c);
        }
    }
    if (!srv->npending) {
        uv_check_stop(&srv->check);
        uv_idle_stop(&srv->idle);
    }
}

static void on_idle(uv_idle_t *h)
{
    (void)h;
}

/* ---------------------------------------------------------------- connections */

static conn *conn_new(http_server *srv)
{
    conn *c = xcalloc(1, sizeof *c);
    c->srv = srv;
    link_init(&c->pend);
    link_init(&c->wait);
    link_add_tail(&srv->conns, &c->all);
    srv->nconns++;
    srv->nopen++;
    uv_timer_init(srv->loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 1;
    llhttp_init(&c->parser, HTTP_REQUEST, &srv->settings);
    c->parser.data = c;
    c->st = CS_READ;
    c->hidx = -1;
    return c;
}

/* max_per_address: 0 when c may stay (counted), -1 when its address has too many. */
static int conn_count_addr(conn *c)
{
    http_server *srv = c->srv;
    struct sockaddr_storage sa;
    int len = sizeof sa;
    char name[sizeof c->addr];
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len))
        return 0;
    if (sa.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&sa, name, sizeof name);
    else
        uv_ip4_name((struct sockaddr_in *)&sa, name, sizeof name);
    if ((uintptr_t)map_get(&srv->per_addr, name) >= srv->cfg.max_per_address)
        return -1;
    memcpy(c->addr, name, sizeof name);
    srv_addr_count(srv, c->addr, 1);
    return 0;
}

static void on_connection(uv_stream_t *ls, int status)
{
    http_server *srv = ls->data;
    if (status < 0) {
        LOGW(NULL, "accept failed", "err=%s", uv_err_name(status));
        /* out of descriptors: the connection idle longest gives its one to the next client */
        if (status == UV_EMFILE || status == UV_ENFILE)
            srv_make_room(srv);
        return;
    }
    conn *c = conn_new(srv);
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    c->open_handles = 2;
    int rc = uv_accept(ls, (uv_stream_t *)&c->tcp);
    if (rc) {
        LOGW(NULL, "accept failed", "err=%s", uv_err_name(rc));
        conn_close(c);
        return;
    }
    if (srv->cfg.max_per_address && conn_count_addr(c) < 0) {
        LOGD(NULL, "connection refused", "why=max_per_address");
        conn_close(c);
        return;
    }
    if (srv->cfg.max_connections && srv->nopen > srv->cfg.max_connections && !srv_make_room(srv)) {
        LOGW(NULL, "connection limit reached", "max=%u", srv->cfg.max_connections);
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1); /* responses are written whole; Nagle would only delay them */
    conn_read_start(c);
    conn_arm_idle(c);
    if (srv->cfg.header_timeout_ms) /* a new connection owes its first request head promptly */
        conn_timer(c, srv->cfg.header_timeout_ms, 0);
}

/* ---------------------------------------------------------------- server */

http_server *http_server_new(uv_loop_t *loop, const http_config *cfg, http_handler_fn handler,
                             void *ud)
{
    http_server *srv = xcalloc(1, sizeof *srv);
    srv->loop = loop;
    srv->cfg = *cfg;
    if (!srv->cfg.max_header)
        srv->cfg.max_header = DEF_MAX_HEADER;
    if (!srv->cfg.max_url)
        srv->cfg.max_url = DEF_MAX_URL;
    if (!srv->cfg.max_body)
        srv->cfg.max_body = DEF_MAX_BODY;
    if (!srv->cfg.sse_max_queue)
        srv->cfg.sse_max_queue = DEF_SSE_MAX_QUEUE;
    if (!srv->cfg.unadmitted_max)
        srv->cfg.unadmitted_max = DEF_UNADMITTED_MAX;
    srv->handler = handler;
    srv->ud = ud;
    srv->rbuf = xmalloc(READ_BUF_SIZE);
    link_init(&srv->conns);
    link_init(&srv->pending);
    link_init(&srv->idle_conns);
    link_init(&srv->unadmitted);
    llhttp_settings_init(&srv->settings);
    srv->settings.on_message_begin = on_message_begin;
    srv->settings.on_url = on_url;
    srv->settings.on_url_complete = on_url_complete;
    srv->settings.on_header_field = on_header_field;
    srv->settings.on_header_field_complete = on_header_field_complete;
    srv->settings.on_header_value = on_header_value;
    srv->settings.on_header_value_complete = on_header_value_complete;
    srv->settings.on_headers_complete = on_headers_complete;
    srv->settings.on_body = on_body;
    srv->settings.on_message_complete = on_message_complete;
    uv_check_init(loop, &srv->check);
    uv_idle_init(loop, &srv->idle);
    uv_timer_init(loop, &srv->deadline);
    srv->check.data = srv->idle.data = srv->deadline.data = srv;
    srv->open_handles = 3;
    id_random(&srv->rid_seed, sizeof srv->rid_seed);
    return srv;
}

static void on_srv_handle_closed(uv_handle_t *h)
{
    http_server *srv = h->data;
    srv->open_handles--;
    srv_maybe_free(srv);
}

static void on_listener_closed(uv_handle_t *h)
{
    http_server *srv = h->data;
    srv->listener_open = 0;
    srv->open_handles--;
    srv_check_done(srv);
    srv_maybe_free(srv);
}

static void srv_close_listener(http_server *srv)
{
    if (srv->listener_init && !uv_is_closing((uv_handle_t *)&srv->listener))
        uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
}

int http_server_listen(http_server *srv, const char *host, int port)
{
    struct sockaddr_storage ss;
    char h6[64];
    int rc;
    if (srv->listener_init || srv->shutting_down || srv->freeing)
        return UV_EBUSY;
    if (strchr(host, ':')) {
        /* accept "[::1]" as well as "::1" */
        size_t n = strlen(host);
        if (host[0] == '[' && n >= 2 && host[n - 1] == ']' && n - 2 < sizeof h6) {
            memcpy(h6, host + 1, n - 2);
            h6[n - 2] = 0;
            host = h6;
        }
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
    } else {
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    }
    if (rc)
        return rc;
    rc = uv_tcp_init(srv->loop, &srv->listener);
    if (rc)
        return rc;
    srv->listener.data = srv;
    srv->listener_init = 1;
    srv->listener_open = 1;
    srv->open_handles++;
    /* libuv sets SO_REUSEADDR on bind, so a restart does not wait out TIME_WAIT */
    rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
    if (rc)
        goto fail;
    rc = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
    if (rc)
        goto fail;
    return 0;
fail:
    LOGE(NULL, "listen failed", "host=%s port=%d err=%s", host, port, uv_err_name(rc));
    srv_close_listener(srv);
    return rc;
}

int http_server_port(http_server *srv)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (!srv->listener_open || uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len))
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

unsigned http_server_connections(http_server *srv)
{
    return srv->nconns;
}
unsigned http_server_streams(http_server *srv)
{
    return srv->nstreams;
}

static void srv_close_all(http_server *srv)
{
    struct link *l, *next;
    for (l = srv->conns.next; l != &srv->conns; l = next) {
        next = l->next;
        conn_close(container_of(l, conn, all));
    }
}

static void srv_check_done(http_server *srv)
{
    if (!srv->shutting_down || srv->done_called || srv->freeing || srv->nconns ||
        srv->listener_open)
        return;
    srv->done_called = 1;
    uv_timer_stop(&srv->deadline);
    if (srv->done)
        srv->done(srv, srv->done_ud);
}

static void on_deadline(uv_timer_t *t)
{
    http_server *srv = t->data;
    if (srv->nconns)
        LOGW(NULL, "shutdown deadline reached", "connections=%u streams=%u", srv->nconns,
             srv->nstreams);
    srv_close_all(srv);
    srv_check_done(srv);
}

void http_server_shutdown(http_server *srv, unsigned deadline_ms, http_done_fn done, void *ud)
{
    if (srv->shutting_down || srv->freeing)
        return;
    srv->shutting_down = 1;
    srv->done = done;
    srv->done_ud = ud;
    srv_close_listener(srv);
    struct link *l, *next;
    for (l = srv->conns.next; l != &srv->conns; l = next) {
        next = l->next;
        conn *c = container_of(l, conn, all);
        /* idle keep-alive connections owe nothing; everything else finishes (and then closes,
         * since keep-alive is off from now on) */
        if (c->st == CS_READ && c->phase == PH_IDLE) {
            if (c->nwrites)
                conn_linger(c); /* let the last response drain */
            else
                conn_close(c);
        } else if (link_linked(&c->wait) || (c->req && c->req->collect && c->body_st != BODY_NONE)) {
            /* a request not delivered whole (head, or a body not admitted or being collected)
             * would only hold the deadline up */
            conn_close(c);
        }
    }
    /* done always runs from the loop, never from inside this call */
    uv_timer_start(&srv->deadline, on_deadline, srv->nconns || srv->listener_open ? deadline_ms : 0,
                   0);
}

static void srv_maybe_free(http_server *srv)
{
    if (!srv->freeing || srv->open_handles || srv->nconns)
        return;
    buf_free(&srv->wb);
    map_free(&srv->per_addr);
    free(srv->rbuf);
    free(srv);
}

void http_server_free(http_server *srv)
{
    if (!srv || srv->freeing)
        return;
    srv->freeing = 1;
    srv_close_all(srv);
    srv_close_listener(srv);
    uv_close((uv_handle_t *)&srv->check, on_srv_handle_closed);
    uv_close((uv_handle_t *)&srv->idle, on_srv_handle_closed);
    uv_close((uv_handle_t *)&srv->deadline, on_srv_handle_closed);
}

/* ---------------------------------------------------------------- answering */

/* Detaches a request from a connection it can no longer be answered on (closing). */
static void req_detach(hreq *r)
{
    if (r->c) {
        if (r->c->req == r)
            r->c->req = NULL;
        r->c = NULL;
    }
}

static void respond(hreq *r, int status, const char *ctype, const char *body, size_t len, char *own,
                    const char *extra)
{
    if (r->answered) {
        LOGW(r->pub.rid, "request answered twice", "status=%d", status);
        free(own);
        return;
    }
    if (r->sse) {
        LOGW(r->pub.rid, "plain response on an SSE stream, ending it", "status=%d", status);
        free(own);
        http_sse_end(&r->pub);
        return;
    }
    if (r->stream) {
        LOGW(r->pub.rid, "plain response on a streamed response, ending it", "status=%d", status);
        free(own);
        http_stream_end(&r->pub);
        return;
    }
    r->answered = 1;
    conn *c = r->c;
    if (c && c->st == CS_HANDLER) {
        http_server *srv = c->srv;
        conn_body_settle(c);
        int ka = conn_ka(c);
        int bodyless = status < 200 || status == 204 || status == 304;
        int nobody = bodyless || r->head_only;
        buf *h = &srv->wb;
        buf_reset(h);
        head_start(h, srv, status);
        if (!bodyless) {
            if (ctype) {
                buf_puts(h, "Content-Type: ");
                buf_puts(h, ctype);
                buf_puts(h, "\r\n");
            }
            buf_printf(h, "Content-Length: %zu\r\n", len);
        }
        head_end(h, ka, r, extra);
        LOGD(r->pub.rid, "response", "status=%d len=%zu", status, len);
        conn_write(c, h->data, h->len, nobody ? NULL : body, nobody ? 0 : len, own);
        own = NULL;
        if (c->st != CS_CLOSED)
            conn_response_done(c, ka);
    }
    req_detach(r);
    free(own);
    r->refs--;
    req_maybe_free(r);
}

void http_respond(http_req *req, int status, const char *content_type, const char *body, size_t len,
                  const char *extra_headers)
{
    respond((hreq *)req, status, content_type, body, len, NULL, extra_headers);
}

void http_respond_owned(http_req *req, int status, const char *content_type, char *body, size_t len,
                        const char *extra_headers)
{
    respond((hreq *)req, status, content_type, body, len, body, extra_headers);
}

void http_respond_error(http_req *req, int status, const char *code, const char *msg)
{
    buf b = BUF_INIT(0);
    error_body(&b, code, msg);
    size_t len;
    char *body = buf_steal(&b, &len);
    respond((hreq *)req, status, "application/json", body, len, body, NULL);
}

/* ---------------------------------------------------------------- SSE API */

int http_sse_start(http_req *req, const char *extra_headers)
{
    hreq *r = (hreq *)req;
    conn *c = r->c;
    if (r->answered || r->sse || r->stream)
        return -EINVAL;
    if (!c || c->st != CS_HANDLER)
        return -ENOTCONN;
    http_server *srv = c->srv;
    conn_body_settle(c);
    if (c->st != CS_HANDLER)
        return -ENOTCONN;
    r->sse = 1;
    c->st = CS_SSE;
    conn_wait_set(c, NULL);
    conn_account(c);
    srv->nstreams++;
    /* HTTP/1.0 has no chunked encoding: the stream ends with the connection */
    c->sse_raw = !(c->parser.http_major == 1 && c->parser.http_minor >= 1);
    c->sse_ka = conn_ka(c) && !c->sse_raw;
    buf *h = &srv->wb;
    buf_reset(h);
    head_start(h, srv, 200);
    buf_puts(h, "Content-Type: text/event-stream\r\n"
                "Cache-Control: no-cache, no-transform\r\n"
                "X-Accel-Buffering: no\r\n");
    if (!c->sse_raw)
        buf_puts(h, "Transfer-Encoding: chunked\r\n");
    head_end(h, c->sse_ka, r, extra_headers);
    LOGD(r->pub.rid, "sse start", "%s", "");
    if (conn_write(c, h->data, h->len, NULL, 0, NULL) || c->st != CS_SSE)
        return -ENOTCONN;
    if (srv->cfg.heartbeat_ms)
        conn_timer(c, srv->cfg.heartbeat_ms, srv->cfg.heartbeat_ms);
    return 0;
}

int http_sse_send(http_req *req, const char *json, size_t len)
{
    hreq *r = (hreq *)req;
    conn *c = r->c;
    if (!c || c->st == CS_CLOSED || c->st == CS_LINGER)
        return -ENOTCONN;
    if (!r->sse || r->answered || c->st != CS_SSE)
        return -EINVAL;
    return sse_queue(c, json, len, 0);
}

size_t http_sse_queued(const http_req *req)
{
    const hreq *r = (const hreq *)req;
    return r->c && (r->c->st == CS_SSE || r->c->st == CS_STREAM) ? r->c->out.len + conn_queue(r->c)
                                                                 : 0;
}

void http_sse_on_drain(http_req *req, http_drain_fn cb, void *ud)
{
    hreq *r = (hreq *)req;
    r->drain_cb = cb;
    r->drain_ud = ud;
}

/* Ending an SSE or streamed response that never started: expected when the client left
 * before it could start (ending completes the request so it is freed); otherwise it is a
 * caller's mistake. */
static void end_unstarted(http_req *req, const char *what)
{
    if (http_req_alive(req))
        LOGW(req->rid, "stream ended without its start", "call=%s", what);
    http_respond_error(req, 500, "internal", "stream was not started");
}

void http_sse_end(http_req *req)
{
    hreq *r = (hreq *)req;
    if (r->answered)
        return;
    if (!r->sse)
        return end_unstarted(req, "http_sse_end");
    r->answered = 1;
    conn *c = r->c;
    if (c && c->st == CS_SSE) {
        c->srv->nstreams--;
        c->st = CS_HANDLER;
        uv_timer_stop(&c->timer);
        size_t len;
        const char *p = sse_frame(c, c->sse_raw ? NULL : "0\r\n\r\n", &len);
        if (len)
            conn_write(c, p, len, NULL, 0, NULL);
        LOGD(r->pub.rid, "sse end", "%s", "");
        if (c->st != CS_CLOSED)
            conn_response_done(c, c->sse_ka && conn_ka(c));
    }
    req_detach(r);
    r->refs--;
    req_maybe_free(r);
}

int http_req_alive(const http_req *req)
{
    const hreq *r = (const hreq *)req;
    return r->c && (r->c->st == CS_HANDLER || r->c->st == CS_SSE || r->c->st == CS_STREAM);
}

void http_req_on_close(http_req *req, http_close_fn cb, void *ud)
{
    hreq *r = (hreq *)req;
    r->close_cb = cb;
    r->close_ud = ud;
}

void http_req_ref(http_req *req)
{
    ((hreq *)req)->refs++;
}

void http_req_unref(http_req *req)
{
    hreq *r = (hreq *)req;
    r->refs--;
    req_maybe_free(r);
}

void http_req_add_headers(http_req *req, const char *lines)
{
    hreq *r = (hreq *)req;
    if (!lines || r->answered)
        return;
    /* whole lines only, each ending in CRLF, so a cut can never break the head */
    const char *p = lines;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        size_t body = n && p[n - 1] == '\r' ? n - 1 : n;
        if (body && (r->xh.len + body + 2 > XH_MAX || buf_append(&r->xh, p, body) ||
                     buf_puts(&r->xh, "\r\n"))) {
            LOGW(r->pub.rid, "response headers over the limit, dropped", "max=%d", XH_MAX);
            return;
        }
        p += nl ? n + 1 : n;
    }
}

/* ---------------------------------------------------------------- streamed request bodies */

void http_server_stream_bodies(http_server *srv, http_stream_want_fn want, size_t max_body,
                               void *ud)
{
    srv->want = want;
    srv->want_ud = ud;
    srv->stream_max_body = max_body ? max_body : srv->cfg.max_body;
}

/* Parsing goes on from the loop (check handle), never from inside the caller's call. */
static void conn_body_go(conn *c)
{
    c->body_st = BODY_READ;
    conn_timer(c, c->srv->cfg.body_timeout_ms, 0);
    c->kick = 1;
    c->want_resume = 1;
    srv_pending_add(c->srv, c);
}

int http_body_read(http_req *req, http_body_data_fn on_data, http_body_end_fn on_end, void *ud)
{
    hreq *r = (hreq *)req;
    conn *c = r->c;
    if (!r->pub.streaming || r->reading || r->answered)
        return -EINVAL;
    if (!c)
        return -ENOTCONN;
    r->reading = 1;
    r->on_data = on_data;
    r->on_end = on_end;
    r->body_ud = ud;
    if (c->st != CS_HANDLER || c->body_st != BODY_WAIT)
        return 0; /* closing: the close callback of the connection reports -ECONNRESET */
    conn_wait_set(c, NULL); /* admitted */
    if (c->expect_cont) {
        c->expect_cont = 0;
        conn_write(c, cont100, sizeof cont100 - 1, NULL, 0, NULL);
        if (c->st != CS_HANDLER)
            return 0;
    }
    conn_body_go(c);
    conn_account(c);
    return 0;
}

static int collect_data(http_req *req, const char *data, size_t len, void *ud)
{
    hreq *r = (hreq *)req;
    if (buf_append(&r->body, data, len) && r->c)
        conn_body_fail(r->c, 413, "payload_too_large", "request body too large", -EMSGSIZE);
    return 0;
}

static void collect_end(http_req *req, int status, void *ud)
{
    hreq *r = (hreq *)req;
    if (!status) {
        r->pub.body = r->body.data ? r->body.data : "";
        r->pub.body_len = r->body.len;
    }
    r->collect(req, status, r->collect_ud);
}

int http_body_collect(http_req *req, http_collect_fn done, void *ud)
{
    hreq *r = (hreq *)req;
    conn *c = r->c;
    if (r->pub.streaming && c && !r->reading) {
        if (r->pub.content_length > 0 && (uint64_t)r->pub.content_length > c->srv->cfg.max_body)
            return -EMSGSIZE;
        c->max_body = c->srv->cfg.max_body;
        if (r->pub.content_length > 0 && !r->body.data) /* grow with the data, not the claim */
            buf_reserve(&r->body, r->pub.content_length < 65536 ? (size_t)r->pub.content_length
                                                                  : 65536);
    }
    r->collect = done;
    r->collect_ud = ud;
    return http_body_read(req, collect_data, collect_end, NULL);
}

void http_body_resume(http_req *req)
{
    hreq *r = (hreq *)req;
    conn *c = r->c;
    if (r->answered || !c || c->req != r || c->st != CS_HANDLER || c->body_st != BODY_PAUSED)
        return;
    conn_body_go(c);
}

/* ---------------------------------------------------------------- streamed responses */

int http_stream_start(http_req *req, int status, const char *content_type, uint64_t length,
                      const char *extra_headers)
{
    hreq *r = (hreq *)req;
    conn *c = r->c;
    if (r->answered || r->sse || r->stream)
        return -EINVAL;
    if (!c || c->st != CS_HANDLER)
        return -ENOTCONN;
    http_server *srv = c->srv;
    conn_body_settle(c);
    if (c->st != CS_HANDLER)
        return -ENOTCONN;
    int bodyless = status < 200 || status == 204 || status == 304;
    r->stream = 1;
    c->st = CS_STREAM;
    conn_wait_set(c, NULL);
    conn_account(c);
    c->stream_discard = (unsigned char)(bodyless || r->head_only);
    c->stream_left = c->stream_discard ? 0 : length;
    c->sse_ka = (unsigned char)conn_ka(c);
    buf *h = &srv->wb;
    buf_reset(h);
    head_start(h, srv, status);
    if (!bodyless) {
        if (content_type) {
            buf_puts(h, "Content-Type: ");
            buf_puts(h, content_type);
            buf_puts(h, "\r\n");
        }
        buf_printf(h, "Content-Length: %llu\r\n", (unsigned long long)length);
    }
    head_end(h, c->sse_ka, r, extra_headers);
    LOGD(r->pub.rid, "stream start", "status=%d len=%llu", status, (unsigned long long)length);
    if (conn_write(c, h->data, h->len, NULL, 0, NULL) || c->st != CS_STREAM)
        return -ENOTCONN;
    c->wdone_armed = c->wdone;
    conn_timer(c, srv->cfg.idle_timeout_ms, srv->cfg.idle_timeout_ms);
    return 0;
}

int http_stream_write(http_req *req, const char *data, size_t len)
{
    hreq *r = (hreq *)req;
    conn *c = r->c;
    if (!c || c->st == CS_CLOSED || c->st == CS_LINGER)
        return -ENOTCONN;
    if (!r->stream || r->answered || c->st != CS_STREAM)
        return -EINVAL;
    if (c->stream_discard || !len)
        return 0;
    if (len > c->stream_left) {
        LOGW(r->pub.rid, "write past the Content-Length of a streamed response", "len=%zu", len);
        return -EINVAL; /* the bytes would be read as the next response */
    }
    c->stream_left -= len;
    if (conn_write(c, data, len, NULL, 0, NULL) || c->st != CS_STREAM)
        return -ENOTCONN;
    return 0;
}

void http_stream_end(http_req *req)
{
    hreq *r = (hreq *)req;
    if (r->answered)
        return;
    if (!r->stream)
        return end_unstarted(req, "http_stream_end");
    r->answered = 1;
    conn *c = r->c;
    if (c && c->st == CS_STREAM) {
        c->st = CS_HANDLER;
        uv_timer_stop(&c->timer);
        int complete = c->stream_left == 0;
        if (!complete)
            LOGW(r->pub.rid, "streamed response ended short, closing", "missing=%llu",
                 (unsigned long long)c->stream_left);
        LOGD(r->pub.rid, "stream end", "%s", "");
        conn_response_done(c, complete && c->sse_ka && conn_ka(c));
    }
    req_detach(r);
    r->refs--;
    req_maybe_free(r);
}

/* ---------------------------------------------------------------- query strings */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decodes one %XX / '+' unit at *p (not past end); advances *p. */
static char url_decode_one(const char **p, const char *end)
{
    const char *s = *p;
    if (*s == '+') {
        *p = s + 1;
        return ' ';
    }
    if (*s == '%' && end - s >= 3 && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
        *p = s + 3;
        return (char)(hexval(s[1]) * 16 + hexval(s[2]));
    }
    *p = s + 1;
    return *s;
}

int http_query_get(const char *query, const char *name, char *out, size_t outlen)
{
    if (!query || !name || !out || !outlen)
        return -1;
    const char *p = query;
    while (*p) {
        const char *end = strchr(p, '&');
        if (!end)
            end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *kend = eq ? eq : end;
        /* compare the decoded key with name */
        const char *k = p, *n = name;
        while (k < kend && *n && url_decode_one(&k, kend) == *n)
            n++;
        if (k == kend && !*n) {
            size_t o = 0;
            const char *v = eq ? eq + 1 : end;
            while (v < end) {
                if (o + 1 >= outlen)
                    return -1;
                out[o++] = url_decode_one(&v, end);
            }
            out[o] = 0;
            return (int)o;
        }
        p = *end ? end + 1 : end;
    }
    return -1;
}

/* ---------------------------------------------------------------- fuzzing */

void http_fuzz_feed(http_server *srv, const uint8_t *data, size_t len, size_t step)
{
    conn *c = conn_new(srv);
    c->fake = 1;
    c->open_handles = 2; /* the timer + our hold, so c outlives the loop turns below */
    if (!step)
        step = len ? len : 1;
    for (size_t off = 0; off < len && c->st != CS_CLOSED;) {
        size_t n = len - off < step ? len - off : step;
        conn_on_data(c, (const char *)data + off, n);
        off += n;
        uv_run(srv->loop, UV_RUN_NOWAIT);
    }
    conn_close(c); /* as if the client went away */
    while (c->open_handles > 1)
        uv_run(srv->loop, UV_RUN_NOWAIT);
    on_conn_handle_closed((uv_handle_t *)&c->timer);
    uv_run(srv->loop, UV_RUN_NOWAIT);
}
