/* Anthropic Messages wire format (docs/architecture.md, "Outbound HTTP and the model providers"):
 * the request body built from the neutral llm_request, and a decoder that turns the stream's
 * (event, data) pairs into llm_callbacks. The neutral history is reshaped for the strict
 * alternation Anthropic wants: tool calls become tool_use blocks, tool results tool_result blocks
 * of one user message, and consecutive same-role messages are merged. Tolerant like the OpenAI
 * decoder: a missing `event:` line (the JSON `type` is used), a missing `index`, a whole `input`
 * object in content_block_start instead of input_json_delta fragments. */
#ifndef CK_ANTHROPIC_H
#define CK_ANTHROPIC_H
#include <jansson.h>

#include "llm/provider.h"
#include "llm/decode.h"

#define ANT_MAX_SYSTEM      (1u << 22) /* the joined system prompt, bytes */
#define ANT_DEFAULT_MAX_TOK 4096       /* max_tokens when 0 is passed (the API requires one) */

/* The request body (stream: true) as compact JSON; caller frees. req->tool_choice: NULL, or a tool
 * name the model must call. req->max_tokens: 0 = ANT_DEFAULT_MAX_TOK. Returns NULL on a malformed
 * message list. */
char *ant_body(const llm_request *req);

/* One SSE event of a Messages stream (see llm_dec in decode.h): its name (NULL, "" or the SSE
 * default "message" mean "use the JSON type"); message_stop is the terminal event. */
int ant_dec_event(llm_dec *d, const char *event, const char *data, size_t len, char *errbuf,
                  size_t errlen, const char **err);

#endif
