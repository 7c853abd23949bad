/* OpenAI Responses API wire format (reference mcp-and-llm.md §4.2): the request body built from
 * the neutral llm_request (the whole history every turn, never previous_response_id), and a
 * decoder that turns the stream's typed events into llm_callbacks. Tolerant like openai.h: the
 * JSON "type" decides (the `event:` line may be missing), a missing output_index, a call that
 * only shows up in output_item.done or response.completed, `arguments` sent as an object, a
 * stray `[DONE]`. */
#ifndef CK_RESPONSES_H
#define CK_RESPONSES_H
#include <jansson.h>

#include "llm/provider.h"
#include "util/buf.h"

#define RSP_MAX_TOOL_CALLS 64         /* output_index range of the calls in one answer */
#define RSP_MAX_ARGS       (1u << 20) /* one call's arguments, bytes */

/* The request body (stream: true; system messages joined into "instructions") as compact
 * JSON; caller frees. tool_choice: NULL, or a tool name the model must call. Returns NULL on a
 * malformed message or tool list. */
char *rsp_body(const llm_request *req, const char *tool_choice);

typedef struct rsp_call {
    char *id;      /* call_id: what the tool result refers to */
    char *item_id; /* the output item's id ("fc_…"), to find the call without output_index */
    char *name;
    buf args;
} rsp_call;

/* Decoder of one streamed answer. Feed it every SSE event in order. */
typedef struct rsp_dec {
    const llm_callbacks *cb;
    void *ud;
    rsp_call calls[RSP_MAX_TOOL_CALLS];
    int ncalls; /* highest output_index seen + 1 */
    int last;   /* the call started last, -1 before any */
    llm_usage usage;
    char incomplete[32]; /* response.incomplete's reason ("max_output_tokens"…), "" if none */
    int text_seen;       /* a text delta went out (a failure after it is not retryable) */
    int refusal_seen;    /* the model refused (refusal deltas are not shown as text) */
    int done;            /* a terminal event (completed or incomplete) was seen */
} rsp_dec;

void rsp_dec_init(rsp_dec *d, const llm_callbacks *cb, void *ud);
/* One SSE event: its name (NULL, or "message" when the stream had no `event:` line: then only
 * the JSON "type" counts) and its data payload. Returns 0 to go on, 1 after a terminal event
 * (later events are ignored), or < 0 when the stream carried an error (error event,
 * response.failed) or was malformed: *err then holds a message safe to show (static or in
 * errbuf). Text deltas are delivered as they come; tool calls are held until rsp_dec_end. */
int rsp_dec_event(rsp_dec *d, const char *event, const char *data, size_t len, char *errbuf,
                  size_t errlen, const char **err);
/* End of the stream: emits the tool calls (in output_index order) then on_done. Returns 0, or
 * < 0 if no terminal event was seen (cut off): *err says so, nothing emitted. */
int rsp_dec_end(rsp_dec *d, const char **err);
void rsp_dec_free(rsp_dec *d);

#endif
