/* HTTP/1.1 server on libuv + llhttp, with an SSE writer.
 *
 * Ownership: the server owns connections and requests. A handler receives an http_req that
 * stays valid until it has been answered (http_respond*, or http_sse_end) AND every
 * http_req_ref has been matched by http_req_unref. If the client goes away first, the close
 * callback (http_req_on_close) runs once; answering afterwards is a harmless no-op.
 * Everything runs on the loop thread. */
#ifndef CK_HTTP_H
#define CK_HTTP_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct http_server http_server;
typedef struct http_req http_req;

enum http_method { HTTP_M_OTHER = 0, HTTP_M_GET, HTTP_M_HEAD, HTTP_M_POST, HTTP_M_PUT,
                   HTTP_M_DELETE, HTTP_M_OPTIONS, HTTP_M_PATCH };

typedef struct http_config {
    size_t max_header;            /* request line + all headers, bytes -> 431 */
    size_t max_url;               /* -> 414 */
    size_t max_body;              /* -> 413 (Content-Length checked up front; chunked as it grows) */
    unsigned header_timeout_ms;   /* first byte of a request to end of headers -> 408 + close */
    unsigned body_timeout_ms;     /* end of headers to end of body -> 408 + close */
    unsigned idle_timeout_ms;     /* keep-alive connection with no request in progress -> close */
    unsigned heartbeat_ms;        /* SSE ": ping" comment interval, 0 = none */
    size_t sse_max_queue;         /* bytes queued for a slow SSE reader before we drop it */
    unsigned max_connections;     /* at the cap a new connection replaces the one idle longest
                                   * (or the oldest unfinished head); else it is closed at once */
    unsigned max_per_address;     /* connections from one client address; beyond: closed */
    size_t unadmitted_max;        /* bytes held in all by requests not admitted yet (heads being
                                   * read, bytes that came with them): over it the oldest such
                                   * request is dropped (503) */
} http_config;
/* Zero values: max_header/max_url/max_body/sse_max_queue/unadmitted_max take defaults (16 KiB,
 * 8 KiB, 1 MiB, 1 MiB, 16 MiB); a zero timeout disables it; max_connections and
 * max_per_address 0 = no limit.
 *
 * Admission: a request is "admitted" once the handler has it whole (a buffered body) or calls
 * http_body_read / http_body_collect for its streamed body. Until then the server holds at most
 * its head and one read of bytes that came with it, counted against unadmitted_max, and the
 * header timeout runs from the moment the connection is accepted. A handler that streams every
 * body (http_server_stream_bodies) can therefore check credentials from the head before a byte of
 * the body is read.
 *
 * Strictness: HTTP/1.0 and 1.1 only (505 otherwise), HTTP/1.1 needs exactly one Host (400),
 * folded header lines are refused (400), Transfer-Encoding must be exactly "chunked" (501). */

typedef void (*http_handler_fn)(http_req *req, void *ud);
typedef void (*http_close_fn)(http_req *req, void *ud);
typedef void (*http_done_fn)(http_server *srv, void *ud);

/* The request as the handler sees it. Strings are NUL-terminated copies; absent headers are
 * NULL. Header names are matched case-insensitively by the server. */
struct http_req {
    enum http_method method;
    const char *method_str;
    const char *path;           /* decoded? no: raw path, without the query */
    const char *query;          /* raw query without '?', or NULL */
    const char *host;
    const char *authorization;
    const char *content_type;
    const char *accept_language;
    const char *cookie;
    const char *origin;
    const char *acr_method;     /* Access-Control-Request-Method (CORS preflight) */
    const char *acr_headers;    /* Access-Control-Request-Headers */
    const char *if_none_match;  /* If-None-Match */
    const char *body;           /* NUL-terminated, body_len bytes (may contain NULs) */
    size_t body_len;
    int64_t content_length;     /* declared Content-Length, -1 when absent (chunked or none) */
    int streaming;              /* 1: the body is read with http_body_read (see below) */
    char rid[20];               /* request id for logs */
    void *data;                 /* free for the handler */
};

http_server *http_server_new(uv_loop_t *loop, const http_config *cfg, http_handler_fn handler,
                             void *ud);
/* host: IPv4/IPv6 literal. Returns 0 or a negative uv error. port 0 picks a free port. */
int http_server_listen(http_server *srv, const char *host, int port);
int http_server_port(http_server *srv);
/* Graceful stop: stop accepting, close idle keep-alive connections, let requests and streams in
 * flight finish; after deadline_ms close everything. done runs once no connection is left
 * (the server may then be freed with http_server_free). done always runs from the loop. */
void http_server_shutdown(http_server *srv, unsigned deadline_ms, http_done_fn done, void *ud);
/* Closes whatever is still open (close callbacks fire). The memory is released from the close
 * callbacks of the server's handles: run the loop (uv_run) once more before uv_loop_close. */
void http_server_free(http_server *srv);
/* Number of open connections / open SSE streams (for metrics and tests). */
unsigned http_server_connections(http_server *srv);
unsigned http_server_streams(http_server *srv);

/* Plain response. extra_headers: NULL or "Name: value\r\n…". Copies body. */
void http_respond(http_req *req, int status, const char *content_type, const char *body,
                  size_t len, const char *extra_headers);
/* Takes ownership of a malloc'd body (avoids a copy for large replies). */
void http_respond_owned(http_req *req, int status, const char *content_type, char *body,
                        size_t len, const char *extra_headers);
/* {"error": msg, "code": code} as application/json. */
void http_respond_error(http_req *req, int status, const char *code, const char *msg);

/* SSE: 200 with text/event-stream, Cache-Control: no-cache, no-transform,
 * X-Accel-Buffering: no, chunked. Returns 0 or -ENOTCONN when the client is gone. */
int http_sse_start(http_req *req, const char *extra_headers);
/* Queues "data: " + json + "\n\n". Writes produced in one loop turn go out as one write.
 * Returns 0, or -ENOTCONN when the client is gone / was dropped for reading too slowly. */
int http_sse_send(http_req *req, const char *json, size_t len);
/* Backpressure for producers that can wait (a model stream): the bytes this SSE response has
 * queued and the socket has not taken yet. */
size_t http_sse_queued(const http_req *req);
/* cb runs once, from the loop, when that queue is empty again (NULL cancels). Never runs after
 * the connection closed. */
typedef void (*http_drain_fn)(http_req *req, void *ud);
void http_sse_on_drain(http_req *req, http_drain_fn cb, void *ud);
/* Ends the stream (chunked terminator); the connection may be reused (keep-alive). */
void http_sse_end(http_req *req);
/* 1 while the client is still connected. */
int http_req_alive(const http_req *req);

/* Called once if the connection closes before the response is complete (client disconnect,
 * slow reader dropped, shutdown deadline). Not called after a complete response. It runs from
 * the loop (the connection's close callback), never from inside an http_* call, and not at all
 * when the handler answers in between. The request must still be answered afterwards (a no-op)
 * for it to be freed. Registering after the connection is gone never calls cb. */
void http_req_on_close(http_req *req, http_close_fn cb, void *ud);
void http_req_ref(http_req *req);
void http_req_unref(http_req *req);

/* ---- per-request headers ----
 * Adds header lines ("Name: value\r\n", possibly several) to whatever response this request
 * gets: plain, error, SSE or streamed (CORS headers are added once, before routing). Copied;
 * at most 2 KiB in all (the excess is dropped with a warning). */
void http_req_add_headers(http_req *req, const char *lines);

/* ---- streaming request bodies (uploads) ----
 * want(req, ud) is asked once the head of a request is complete (method, path, query and
 * headers are set; body is NULL). When it returns 1 the request is handed to the handler at
 * once with streaming = 1, body NULL and body_len 0, and no byte of the body is consumed until
 * the handler calls http_body_read. The server still refuses a declared Content-Length above
 * max_body with 413 before the handler sees the request; chunked bodies are cut at max_body
 * (on_end gets -EMSGSIZE). A "Expect: 100-continue" is answered when http_body_read is called,
 * so a request refused before that never sends its body. Answering a streaming request before
 * its body ended closes the connection after the response (the rest of the body is not read).
 * body_timeout_ms is an inactivity timeout for streamed bodies (reset by every read; stopped
 * while paused). */
typedef int (*http_stream_want_fn)(const http_req *req, void *ud);
void http_server_stream_bodies(http_server *srv, http_stream_want_fn want, size_t max_body,
                               void *ud);

/* on_data gets the body in pieces as they arrive (chunked framing removed). Return 0 to go
 * on, 1 to pause: no more on_data (and no on_end) until http_body_resume. on_end runs once:
 * 0 after the last byte, -EMSGSIZE over max_body, -ECONNRESET when the client went away or the
 * inactivity timeout fired (the request may still be answered: a no-op when the connection is
 * gone). Neither runs after the request was answered. Callbacks never run from inside
 * http_body_read or http_body_resume themselves (they are deferred to the loop). Returns 0, or
 * -EINVAL when the request is not streaming or reading already started, or -ENOTCONN when the
 * client is already gone (its close callback ran; no callback will). */
/* Reads a streamed body whole into req->body / req->body_len (NUL-terminated), capped at the
 * server's max_body, then calls done once from the loop: status 0 with the body, or
 * -EMSGSIZE / -ECONNRESET as on_end below (the server has answered, or the client is gone: the
 * handler's answer is then a no-op). The body timeout counts from this call to the last byte.
 * Returns 0, -EMSGSIZE at once when the declared Content-Length is over max_body (nothing was
 * read; the handler answers), or http_body_read's errors. */
typedef void (*http_collect_fn)(http_req *req, int status, void *ud);
int http_body_collect(http_req *req, http_collect_fn done, void *ud);

typedef int (*http_body_data_fn)(http_req *req, const char *data, size_t len, void *ud);
typedef void (*http_body_end_fn)(http_req *req, int status, void *ud);
int http_body_read(http_req *req, http_body_data_fn on_data, http_body_end_fn on_end, void *ud);
void http_body_resume(http_req *req);

/* ---- streamed responses (file downloads) ----
 * Head with Content-Length: length now (with the per-request headers and extra_headers), the
 * body then in pieces of any size with http_stream_write, which copies and returns 0 or
 * -ENOTCONN. Backpressure with http_sse_queued / http_sse_on_drain, which work for these
 * responses too. http_stream_end completes the response once exactly length bytes were
 * written (else the connection is closed: the client sees a short body). A HEAD request gets
 * the head only (writes are accepted and discarded). */
int http_stream_start(http_req *req, int status, const char *content_type, uint64_t length,
                      const char *extra_headers);
int http_stream_write(http_req *req, const char *data, size_t len);
void http_stream_end(http_req *req);

/* Query helper: copies the decoded value of `name` into out; returns length or -1. */
int http_query_get(const char *query, const char *name, char *out, size_t outlen);
/* Reason phrase for a status code. */
const char *http_status_text(int status);

/* For fuzzing: feeds data to a fake connection of srv (no socket, writes discarded) in reads of
 * `step` bytes (0 = one read), running the loop without blocking after each, then closes it as
 * a client disconnect would. */
void http_fuzz_feed(http_server *srv, const uint8_t *data, size_t len, size_t step);

#endif
