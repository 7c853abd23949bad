/* Outbound HTTP for model providers (and later MCP over HTTP): libcurl's multi interface
 * driven by the libuv loop (curl_multi_socket_action), no blocking call, no thread per request.
 *
 * libcurl is loaded with dlopen on first use, not linked: libcurl with OpenSSL, nghttp2, … adds
 * ~5.8 MB to the resident size of a process that only ever runs the demo model (4.6 -> 10.3 MB
 * measured), and an offline deployment should not pay for it.
 *
 * Everything runs on the loop thread. Callbacks never run inside fetch_* calls of the same
 * request (they are deferred to the loop), so a callback may cancel or pause freely. */
#ifndef CK_FETCH_H
#define CK_FETCH_H
#include <stddef.h>
#include <uv.h>

typedef struct fetch fetch;       /* one request */
typedef struct fetch_ctx fetch_ctx; /* per loop: the curl multi handle and its timers/polls */

typedef struct fetch_opts {
    const char *method;            /* "POST" (default when body != NULL) or "GET", "DELETE" */
    const char *url;               /* http:// or https:// */
    const char *const *headers;    /* NULL-terminated "Name: value" strings, or NULL */
    const char *body;              /* copied; may be NULL */
    size_t body_len;
    unsigned connect_timeout_ms;   /* 0 = 10 s */
    unsigned first_byte_timeout_ms;/* from the request sent to the first response byte; 0 = 60 s */
    unsigned idle_timeout_ms;      /* longest gap between two body reads; 0 = 60 s */
    size_t max_response;           /* total body bytes accepted; 0 = 16 MiB; more -> FETCH_ETOOBIG */
    const char *keep_header;       /* one response header to keep (name, any case), for
                                    * fetch_header; NULL = none (e.g. "Mcp-Session-Id") */
} fetch_opts;

#define FETCH_KEPT_MAX 1024 /* a kept header value longer than this is dropped, not cut */

#define FETCH_ECURL    (-3001) /* libcurl could not be loaded (message says why) */
#define FETCH_ECONNECT (-3002) /* DNS, connect or TLS failure */
#define FETCH_ETIMEOUT (-3003) /* connect, first byte or idle timeout */
#define FETCH_ETOOBIG  (-3004)
#define FETCH_EPROTO   (-3005) /* malformed HTTP from the peer */
#define FETCH_EABORTED (-3006) /* on_data returned < 0 */

typedef struct fetch_cb {
    /* Status line and headers are complete. retry_after: the Retry-After header value (seconds or
     * an HTTP date), NULL when absent. content_type may be NULL. Return < 0 to abort. */
    int (*on_head)(void *ud, long status, const char *content_type, const char *retry_after);
    /* A piece of the body. Return 0, or < 0 to abort the transfer (on_done gets FETCH_EABORTED). */
    int (*on_data)(void *ud, const char *p, size_t n);
    /* Exactly once unless cancelled: rc 0 (whole response received) or a FETCH_E* code; message
     * is a short human-readable reason (never contains request headers, so no keys). */
    void (*on_done)(void *ud, int rc, long status, const char *message);
} fetch_cb;

/* NULL if libcurl cannot be loaded; *err then says why (static string). */
fetch_ctx *fetch_ctx_new(uv_loop_t *loop, const char **err);
/* Cancels what is still running (no callbacks) and frees after the loop has run once more. */
void fetch_ctx_free(fetch_ctx *ctx);

/* Starts a request. Returns 0 and *out, or a negative error (nothing started, no callback). */
int fetch_start(fetch_ctx *ctx, const fetch_opts *o, const fetch_cb *cb, void *ud, fetch **out);
/* Aborts at once (the connection is closed, no more bytes are read); no callback afterwards. */
void fetch_cancel(fetch *f);
/* The value of opts.keep_header in the final response head (surrounding blanks removed), or
 * NULL when absent, over FETCH_KEPT_MAX bytes, or not asked for. Valid from on_head until
 * on_done returns. */
const char *fetch_header(const fetch *f);
/* Backpressure: a paused request reads nothing more from the socket until resumed. The idle
 * timeout does not run while paused. */
void fetch_pause(fetch *f, int paused);

#endif
