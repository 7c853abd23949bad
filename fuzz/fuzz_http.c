/* libFuzzer harness for the HTTP request path: bytes go to a fake connection (no socket,
 * writes discarded) through http_fuzz_feed, in reads whose size comes from the first input
 * byte. A small handler answers in the ways the real ones do: plain, owned, error, SSE (one
 * shot, flooding past the queue cap, left open), and asynchronously from a timer, so request
 * lifetime, pipelining resume and close callbacks are all exercised. Paths starting with /u or
 * /r take their bodies streamed (/u reads them pausing on every other piece, /r answers
 * without reading); /d answers with a streamed response (short when the query says so). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "http/http.h"
#include "util/log.h"

static uv_loop_t loop;
static http_server *srv;

typedef struct later {
    uv_timer_t t;
    http_req *req;
} later;

static void on_later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_later(uv_timer_t *t)
{
    later *l = t->data;
    http_respond(l->req, 202, "text/plain", "later", 5, NULL);
    http_req_unref(l->req);
    uv_close((uv_handle_t *)t, on_later_closed);
}

/* streamed upload: pause on every other piece, resume from the loop */
typedef struct upload {
    uv_timer_t t;
    http_req *req;
    size_t n;
    unsigned pieces;
} upload;

static void on_upload_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_upload_resume(uv_timer_t *t)
{
    upload *u = t->data;
    http_body_resume(u->req);
}

static int on_upload_data(http_req *req, const char *data, size_t len, void *ud)
{
    upload *u = ud;
    if (!len || !data)
        abort();
    u->n += len;
    if (++u->pieces % 2) {
        uv_timer_start(&u->t, on_upload_resume, 0, 0);
        return 1;
    }
    return 0;
}

static void on_upload_end(http_req *req, int status, void *ud)
{
    upload *u = ud;
    char b[64];
    int n = snprintf(b, sizeof b, "%d %zu", status, u->n);
    http_req_add_headers(req, "X-Up: 1\r\n");
    http_respond(req, status ? 400 : 200, "text/plain", b, (size_t)n, NULL);
    uv_close((uv_handle_t *)&u->t, on_upload_closed);
}

static int want_stream(const http_req *req, void *ud)
{
    (void)ud;
    return req->path && (!strncmp(req->path, "/u", 2) || !strncmp(req->path, "/r", 2));
}

static void on_gone(http_req *req, void *ud)
{
    (void)ud;
    if (http_req_alive(req) || http_sse_send(req, "{}", 2) != -ENOTCONN)
        abort();
    http_sse_end(req); /* no-op answer: releases the request */
}

static void handler(http_req *req, void *ud)
{
    (void)ud;
    char v[32];
    const char *p = req->path;
    if (!p || p[0] != '/') {
        http_respond_error(req, 400, "bad_request", p);
        return;
    }
    if (req->streaming != want_stream(req, NULL) || (req->streaming && req->body))
        abort();
    http_req_add_headers(req, "Vary: Origin\r\nX-Cut");
    switch (p[1]) {
    case 'u': {
        upload *u = calloc(1, sizeof *u);
        u->req = req;
        uv_timer_init(&loop, &u->t);
        u->t.data = u;
        if (http_body_read(req, on_upload_data, on_upload_end, u)) {
            http_respond_error(req, 500, "internal", "read failed");
            uv_close((uv_handle_t *)&u->t, on_upload_closed);
        }
        break;
    }
    case 'r': http_respond_error(req, 401, "unauthorized", "no"); break;
    case 'd': { /* streamed response, short when the query says so */
        size_t len = req->query && req->query[0] == 's' ? 5 : 10;
        if (http_stream_start(req, 200, "text/plain", 10, "X-D: 1\r\n") == 0) {
            http_stream_write(req, "01234", 5);
            http_stream_write(req, "56789", len - 5);
            if (len == 10 && req->method != HTTP_M_HEAD && http_req_alive(req) &&
                http_stream_write(req, "x", 1) != -EINVAL)
                abort(); /* past the length */
        }
        http_stream_end(req);
        break;
    }
    case 's': /* one-shot stream */
        if (http_sse_start(req, "X-A: b\r\n") == 0) {
            http_sse_send(req, req->body, req->body_len);
            http_sse_send(req, "{\"a\":\"b\\nc\"}\r\n{}", 16);
        }
        http_sse_end(req);
        break;
    case 'f': /* flood: past sse_max_queue within one turn, dropped */
        http_req_on_close(req, on_gone, NULL);
        if (http_sse_start(req, NULL) == 0)
            for (int i = 0; i < 64 && http_sse_send(req, "{\"x\":\"0123456789abcdef\"}", 24) == 0;
                 i++)
                ;
        break; /* answered by on_gone */
    case 'o':  /* stream left open until the client goes */
        http_req_on_close(req, on_gone, NULL);
        http_sse_start(req, NULL);
        http_sse_send(req, "{}", 2);
        break;
    case 'a': { /* answered from the loop */
        later *l = malloc(sizeof *l);
        l->req = req;
        http_req_ref(req);
        uv_timer_init(&loop, &l->t);
        l->t.data = l;
        uv_timer_start(&l->t, on_later, 0, 0);
        break;
    }
    case 'e': http_respond_error(req, 418, req->query ? req->query : "q", req->body); break;
    case 'q': {
        int n = http_query_get(req->query, "a", v, sizeof v);
        http_respond(req, 200, "text/plain", v, n > 0 ? (size_t)n : 0, NULL);
        break;
    }
    case 'w': {
        char *b = malloc(req->body_len + 1);
        memcpy(b, req->body, req->body_len + 1);
        http_respond_owned(req, 200, req->content_type, b, req->body_len, "X-W: 1\r\n");
        break;
    }
    case 'n': http_respond(req, 204, NULL, NULL, 0, NULL); break;
    default: {
        /* touch every captured field */
        size_t sum = strlen(req->method_str) + strlen(req->rid) + req->body_len;
        const char *h[] = {
            req->query,  req->host,   req->authorization, req->content_type, req->accept_language,
            req->cookie, req->origin, req->acr_method,    req->acr_headers,  req->if_none_match};
        for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
            sum += h[i] ? strlen(h[i]) : 0;
        http_respond(req, sum ? 200 : 404, "text/plain", req->body, req->body_len, NULL);
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv) {
        log_level = -1; /* silence: rejected requests are the normal case here */
        uv_loop_init(&loop);
        http_config cfg = {
            .max_header = 512,
            .max_url = 128,
            .max_body = 1024,
            .sse_max_queue = 1024,
        };
        srv = http_server_new(&loop, &cfg, handler, NULL);
        http_server_stream_bodies(srv, want_stream, 4096, NULL);
    }
    if (!size)
        return 0;
    http_fuzz_feed(srv, data + 1, size - 1, data[0]);
    uv_run(&loop, UV_RUN_DEFAULT); /* let late timers run against the closed connection */
    if (http_server_connections(srv) || http_server_streams(srv))
        abort();
    return 0;
}
