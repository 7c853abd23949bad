/* libFuzzer harness for the HTTP request path: bytes go to a fake connection (no socket,
 * writes discarded) through http_fuzz_feed, in reads whose size comes from the first input
 * byte. A small handler answers in the ways the real ones do: plain, owned, error, SSE (one
 * shot, flooding past the queue cap, left open), and asynchronously from a timer, so request
 * lifetime, pipelining resume and close callbacks are all exercised. */
#include <stddef.h>
#include <stdint.h>
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
    switch (p[1]) {
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
        const char *h[] = {req->query,           req->host,   req->authorization, req->content_type,
                           req->accept_language, req->cookie, req->origin};
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
    }
    if (!size)
        return 0;
    http_fuzz_feed(srv, data + 1, size - 1, data[0]);
    uv_run(&loop, UV_RUN_DEFAULT); /* let late timers run against the closed connection */
    if (http_server_connections(srv) || http_server_streams(srv))
        abort();
    return 0;
}
