/* OpenAI Responses API wire format (docs/architecture.md, "Outbound HTTP and the model
 * providers"): the request body built from the neutral llm_request (the whole history every turn,
 * never previous_response_id), and a decoder that turns the stream's typed events into
 * llm_callbacks. Tolerant like openai.h: the JSON "type" decides (the `event:` line may be
 * missing), a missing output_index, a call that only shows up in output_item.done or
 * response.completed, `arguments` sent as an object, a stray `[DONE]`. */
#ifndef CK_RESPONSES_H
#define CK_RESPONSES_H
#include <jansson.h>

#include "llm/provider.h"
#include "llm/decode.h"


/* The request body (stream: true; system messages joined into "instructions") as compact
 * JSON; caller frees. req->tool_choice: NULL, or a tool name the model must call. Returns NULL on a
 * malformed message or tool list. */
char *rsp_body(const llm_request *req);

/* One SSE event of a Responses stream (see llm_dec in decode.h): the JSON "type" decides, the
 * event name only when it is missing. response.completed and response.incomplete (its reason in
 * d->stop) are terminal; later events are ignored. */
int rsp_dec_event(llm_dec *d, const char *event, const char *data, size_t len, char *errbuf,
                  size_t errlen, const char **err);

#endif
