/* Anthropic Messages wire format (reference mcp-and-llm.md §4.3): the request body built from
 * the neutral llm_request, and a decoder that turns the stream's (event, data) pairs into
 * llm_callbacks. The neutral history is reshaped for the strict alternation Anthropic wants:
 * tool calls become tool_use blocks, tool results tool_result blocks of one user message, and
 * consecutive same-role messages are merged. Tolerant like the OpenAI decoder: a missing
 * `event:` line (the JSON `type` is used), a missing `index`, a whole `input` object in
 * content_block_start instead of input_json_delta fragments. */
#ifndef CK_ANTHROPIC_H
#define CK_ANTHROPIC_H
#include <jansson.h>

#include "llm/provider.h"
#include "util/buf.h"

#define ANT_MAX_TOOL_CALLS  64         /* tool_use blocks in one answer */
#define ANT_MAX_ARGS        (1u << 20) /* one call's input JSON, bytes */
#define ANT_MAX_SYSTEM      (1u << 22) /* the joined system prompt, bytes */
#define ANT_DEFAULT_MAX_TOK 4096       /* max_tokens when 0 is passed (the API requires one) */

/* The request body (stream: true) as compact JSON; caller frees. tool_choice: NULL, or a tool
 * name the model must call. max_tokens: 0 = ANT_DEFAULT_MAX_TOK. Returns NULL on a malformed
 * message list. */
char *ant_body(const llm_request *req, const char *tool_choice, unsigned max_tokens);

typedef struct ant_call {
    long long index; /* the content block's index */
    char *id;
    char *name;
    buf args;   /* the joined partial_json */
    int preset; /* args came whole from content_block_start: a delta replaces them */
} ant_call;

/* Decoder of one streamed answer. Feed it every SSE event in order. */
typedef struct ant_dec {
    const llm_callbacks *cb;
    void *ud;
    ant_call calls[ANT_MAX_TOOL_CALLS];
    int ncalls; /* tool_use blocks seen */
    llm_usage usage;
    char stop[32]; /* stop_reason, "" until seen */
    int text_seen; /* a text delta went out (a failure after it is not retryable) */
    int done;      /* message_stop seen */
} ant_dec;

void ant_dec_init(ant_dec *d, const llm_callbacks *cb, void *ud);
/* One event: its name (NULL, "" or the SSE default "message" mean "use the JSON type") and
 * its data payload. Returns 0 to go on, 1 after message_stop, or < 0 when the stream carried
 * an error or was malformed: *err then holds a message safe to show (static or in errbuf).
 * Text deltas are delivered as they come; tool calls are held until ant_dec_end. */
int ant_dec_event(ant_dec *d, const char *event, const char *data, size_t len, char *errbuf,
                  size_t errlen, const char **err);
/* End of the stream: emits the tool calls (in block index order) then on_done. Returns 0, or
 * < 0 if the stream ended without a stop_reason or message_stop (cut off): *err says so,
 * nothing emitted. */
int ant_dec_end(ant_dec *d, const char **err);
void ant_dec_free(ant_dec *d);

#endif
