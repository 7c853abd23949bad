/* OpenAI Chat Completions wire format (reference mcp-and-llm.md §4.1): the request body built
 * from the neutral llm_request, and a decoder that turns the stream's `data:` payloads into
 * llm_callbacks. Also what llama.cpp, vLLM, Ollama's /v1 and LM Studio speak, so the decoder is
 * tolerant: a whole call in one chunk, a missing `index`, `arguments` sent as an object. */
#ifndef CK_OPENAI_H
#define CK_OPENAI_H
#include <jansson.h>

#include "llm/provider.h"
#include "util/buf.h"

#define OAI_MAX_TOOL_CALLS 64        /* parallel calls in one answer */
#define OAI_MAX_ARGS (1u << 20)      /* one call's arguments, bytes */

/* The request body (stream: true, include_usage) as compact JSON; caller frees. tool_choice:
 * NULL, or a tool name the model must call. Returns NULL on a malformed message list. */
char *oai_chat_body(const llm_request *req, const char *tool_choice);

typedef struct oai_call {
    char *id;
    char *name;
    buf args;
} oai_call;

/* Decoder of one streamed answer. Feed it every SSE data payload in order. */
typedef struct oai_dec {
    const llm_callbacks *cb;
    void *ud;
    oai_call calls[OAI_MAX_TOOL_CALLS];
    int ncalls;            /* highest index seen + 1 */
    llm_usage usage;
    char finish[32];       /* finish_reason, "" until seen */
    int text_seen;         /* a text delta went out (a failure after it is not retryable) */
    int done;              /* [DONE] seen */
} oai_dec;

void oai_dec_init(oai_dec *d, const llm_callbacks *cb, void *ud);
/* One `data:` payload. Returns 0 to go on, 1 after `[DONE]`, or < 0 when the stream carried an
 * error or was malformed: *err then holds a message safe to show (static or in errbuf). Text
 * deltas are delivered as they come; tool calls are held until oai_dec_end. */
int oai_dec_event(oai_dec *d, const char *data, size_t len, char *errbuf, size_t errlen,
                  const char **err);
/* End of the stream: emits the tool calls (in index order) then on_done. Returns 0, or < 0 if
 * the stream ended without a finish_reason or [DONE] (cut off): *err says so, nothing emitted. */
int oai_dec_end(oai_dec *d, const char **err);
void oai_dec_free(oai_dec *d);

#endif
