/* OpenAI Chat Completions wire format (docs/architecture.md, "Outbound HTTP and the model
 * providers"): the request body built from the neutral llm_request, and a decoder that turns the
 * stream's `data:` payloads into llm_callbacks. Also what llama.cpp, vLLM, Ollama's /v1 and LM
 * Studio speak, so the decoder is tolerant: a whole call in one chunk, a missing `index`,
 * `arguments` sent as an object. */
#ifndef CK_OPENAI_H
#define CK_OPENAI_H
#include <jansson.h>

#include "llm/provider.h"
#include "llm/decode.h"


/* The request body (stream: true, include_usage) as compact JSON; caller frees. req->tool_choice:
 * NULL, or a tool name the model must call. Returns NULL on a malformed message list. */
char *oai_chat_body(const llm_request *req);

/* One SSE event of a Chat Completions stream (see llm_dec in decode.h; the event name is not
 * used, `[DONE]` is the terminal event). */
int oai_dec_event(llm_dec *d, const char *event, const char *data, size_t len, char *errbuf,
                  size_t errlen, const char **err);

#endif
