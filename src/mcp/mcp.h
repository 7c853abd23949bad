/* MCP client (reference mcp-and-llm.md §2): the handshake-era protocol (protocolVersion
 * "2025-11-25", accepting a server that answers "2025-06-18" or "2025-03-26"), over stdio
 * (a child process, newline-delimited JSON) or Streamable HTTP. Everything runs on the loop
 * thread; callbacks never run inside the mcp_* call that caused them.
 *
 * One mcp_server is one configured server: its transport, its session (initialize →
 * notifications/initialized), its tool list (tools/list with pagination, fetched again on
 * notifications/tools/list_changed) and the requests in flight. A server that crashed or
 * whose session was lost is started / initialized again on the next use, with backoff.
 *
 * Seam for the stateless 2026-07-28 revision (§2.9): the session step (initialize) and the
 * building of each request are each one function of the client, so a modern server can be
 * served by replacing them (server/discover first, _meta on every request, no session). */
#ifndef CK_MCP_H
#define CK_MCP_H
#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#define MCP_PROTOCOL_VERSION "2025-11-25"

typedef struct mcp_server mcp_server;
typedef struct mcp_call mcp_call;
typedef struct mcp_elicit mcp_elicit; /* a server's elicitation/create waiting for the user */

typedef struct mcp_server_config {
    const char *label;          /* short name for logs (and tool name prefixes) */
    /* stdio: the command line, split on spaces with "double" and 'single' quotes; the child
     * gets the server's environment plus env ("K=V", NULL-terminated, may be NULL) */
    const char *command;
    const char *const *env;
    /* Streamable HTTP: the endpoint URL (command NULL); headers "Name: value" (NULL-terminated,
     * may be NULL), e.g. an Authorization bearer token */
    const char *url;
    const char *const *headers;
    unsigned init_timeout_ms;   /* start + initialize + first tools/list; 0 = 10 s */
    unsigned call_timeout_ms;   /* one tools/call; 0 = 60 s */
    size_t max_message;         /* longest message accepted (stdio line, HTTP body); 0 = 4 MiB */
} mcp_server_config;

/* Copies cfg. Nothing starts until mcp_server_ready. */
mcp_server *mcp_server_new(uv_loop_t *loop, const mcp_server_config *cfg);
/* Stops the server: pending calls are dropped without callbacks; stdio: stdin closed, SIGTERM
 * after 2 s, SIGKILL after 5 s; HTTP: DELETE of the session. Frees once the child has exited
 * (run the loop). */
void mcp_server_free(mcp_server *s);

/* Makes sure the server is started, initialized and its tools listed; cb runs once (from the
 * loop) with rc 0, or < 0 and a message safe to show (the server could not be started, timed
 * out, answered an error). Several waiters may be queued. */
typedef void (*mcp_ready_fn)(void *ud, int rc, const char *err);
void mcp_server_ready(mcp_server *s, mcp_ready_fn cb, void *ud);
/* Drops a waiter registered with this ud (its callback will not run). */
void mcp_server_ready_cancel(mcp_server *s, void *ud);

/* After ready: the tools ([{name, description?, inputSchema, ...}] as the server sent them)
 * and the server's instructions (NULL when none). Borrowed: valid until the next loop turn
 * (a list_changed notification replaces them). */
const json_t *mcp_server_tools(const mcp_server *s);
const char *mcp_server_instructions(const mcp_server *s);
const char *mcp_server_label(const mcp_server *s);
/* uv_now of the last use (ready or call), for idle shutdown by the pool. */
uint64_t mcp_server_last_used(const mcp_server *s);
/* Calls in flight. */
unsigned mcp_server_busy(const mcp_server *s);

typedef struct mcp_call_cb {
    /* notifications/progress for this call (progress increases; total < 0 when absent;
     * message may be NULL). May be NULL. */
    void (*on_progress)(void *ud, double progress, double total, const char *message);
    /* Exactly once unless cancelled: result is the CallToolResult object (borrowed for the
     * callback; isError results are results), or NULL with err: a JSON-RPC error ("the tool
     * failed: <message>"), a timeout, or the server went away mid-call. */
    void (*on_done)(void *ud, const json_t *result, const char *err);
    /* Elicitation (form mode, reference §2.8): the server asks the user for input during this
     * call (message, requestedSchema: a flat object schema). The call stays open until
     * mcp_elicit_respond. May be NULL: the client then declines at once. */
    void (*on_elicit)(void *ud, mcp_elicit *e, const char *message,
                      const json_t *requested_schema);
} mcp_call_cb;

/* Answers an elicitation and frees e: action "accept" (content: an object, borrowed), "decline" or
 * "cancel" (content NULL). Safe after the call or the server went away (then it only frees). */
void mcp_elicit_respond(mcp_elicit *e, const char *action, const json_t *content);

/* tools/call name with arguments (an object, borrowed) and a progress token. Starts the server
 * first if needed. Never returns NULL. */
mcp_call *mcp_call_tool(mcp_server *s, const char *name, const json_t *arguments,
                        const mcp_call_cb *cb, void *ud);
/* Stops waiting: sends notifications/cancelled for the request; no callback afterwards. */
void mcp_call_cancel(mcp_call *c);

#endif
