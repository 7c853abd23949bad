/* Internal to src/mcp: how the client (client.c) talks to one MCP server process or endpoint.
 * A transport carries whole JSON-RPC messages; it knows nothing of ids or methods. stdio is
 * stdio.c; Streamable HTTP is http.c, behind the same ops.
 *
 * Rules (every transport keeps them):
 * - Callbacks run from the loop only, never inside start/send/stop.
 * - on_message gets each received message (borrowed for the callback). The callback may call
 *   send or stop; after stop nothing more is delivered.
 * - on_closed runs at most once, when the peer went away (process exit, protocol error,
 *   connection lost); nothing is delivered after it. The owner then calls stop.
 * - stop ends everything and releases the transport by itself once its handles are closed
 *   (for stdio: once the child has exited, after stdin EOF, SIGTERM at 2 s, SIGKILL at 5 s).
 *   No callback runs after stop; the owner may free whatever ud points to. */
#ifndef CK_MCP_TRANSPORT_H
#define CK_MCP_TRANSPORT_H
#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#include "mcp/mcp.h"

typedef struct mcp_transport mcp_transport;

typedef struct mcp_transport_cb {
    void (*on_message)(void *ud, json_t *msg);
    /* reason: short text for "the MCP server X stopped: <reason>" (e.g. "exited with status 1") */
    void (*on_closed)(void *ud, const char *reason);
} mcp_transport_cb;

typedef struct mcp_transport_ops {
    /* Starts the transport (spawns the child). Returns 0, or < 0 with err set; either way the
     * owner calls stop afterwards to release it. */
    int (*start)(mcp_transport *t, char *err, size_t errlen);
    /* Queues one message (not stolen). Returns 0, or < 0 when it cannot be queued (closed,
     * too much unsent data); a write failing later shows up as on_closed. */
    int (*send)(mcp_transport *t, const json_t *msg);
    void (*stop)(mcp_transport *t);
} mcp_transport_ops;

struct mcp_transport {
    const mcp_transport_ops *ops;
};

/* stdio: cfg->command split on spaces with "double" and 'single' quotes (no shell), the
 * environment plus cfg->env; cfg->label and cfg->max_message are copied (the transport may
 * outlive cfg while it stops). Never NULL. */
mcp_transport *mcp_stdio_new(uv_loop_t *loop, const mcp_server_config *cfg,
                             const mcp_transport_cb *cb, void *ud);

/* Streamable HTTP: POSTs to cfg->url with cfg->headers; cfg->label, cfg->max_message and the
 * timeouts are copied. start fails on a URL that is not http(s) or a malformed header, or
 * when libcurl cannot be loaded. An HTTP error on one request comes back as a JSON-RPC error
 * response to it; an unreachable server is on_closed. stop DELETEs the session. Never NULL. */
mcp_transport *mcp_http_new(uv_loop_t *loop, const mcp_server_config *cfg,
                            const mcp_transport_cb *cb, void *ud);

/* Splits a command line: words separated by spaces or tabs; "…" and '…' quote (no escapes
 * inside '…'; \" and \\ inside "…"); quoted parts join adjacent text. Returns a
 * NULL-terminated argv (one allocation, free() it), or NULL with err set (empty command,
 * unterminated quote). */
char **mcp_split_command(const char *cmd, char *err, size_t errlen);

#endif
