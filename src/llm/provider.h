/* The model interface every provider implements: the offline demo, and the HTTP providers
 * (upstream.c) for OpenAI Chat Completions, OpenAI Responses and Anthropic Messages. A call streams callbacks on the loop thread until exactly one of on_done or
 * on_error, unless llm_cancel was called first (then no callback runs after it returns).
 *
 * Input (llm_request.messages) is a JSON array in one neutral shape the adapters translate:
 *   {"role":"system"|"user"|"assistant", "content": "text"}
 *   {"role":"assistant", "tool_calls":[{"id","name","arguments": "<json text>"}]}
 *   {"role":"tool", "tool_call_id", "content": "text", "images"?: [{"mime_type","data": base64}]}
 * A user message's content may also be an array of parts: {"type":"text","text"},
 * {"type":"image","mime_type","data": base64}. Images of tool results go where the format
 * takes them: inside the result (Responses, Anthropic), or in a user message right after the
 * results (Chat Completions, whose tool messages are text only).
 * Tools (llm_request.tools): [{"name","description","parameters": <JSON schema>}]. */
#ifndef CK_PROVIDER_H
#define CK_PROVIDER_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct llm_call llm_call;

typedef struct llm_usage {
    int64_t input_tokens;
    int64_t output_tokens;
} llm_usage;

typedef struct llm_callbacks {
    void (*on_text)(void *ud, const char *delta, size_t len);
    /* A complete tool call; arguments is JSON text. The call continues (more calls may
     * follow) until on_done. */
    void (*on_tool_call)(void *ud, const char *id, const char *name, const char *arguments);
    void (*on_done)(void *ud, const llm_usage *usage);
    /* retryable: a transient upstream failure (429, 5xx, timeout, unreachable); retry_after_ms:
     * what the upstream asked for (Retry-After), 0 when it did not say. message is safe to
     * show (never a key). */
    void (*on_error)(void *ud, const char *message, int retryable, unsigned retry_after_ms);
} llm_callbacks;

typedef struct llm_request {
    const char *model;   /* the part after "provider:" */
    json_t *messages;    /* borrowed for the duration of llm_start */
    json_t *tools;       /* borrowed; may be NULL */
    unsigned delay_ms;   /* demo only: pause between deltas of a "slow" turn */
    const char *base_url; /* e.g. "https://api.openai.com/v1" (no trailing slash needed) */
    const char *api_key;  /* NULL/"" = send none (local OpenAI-compatible servers) */
    unsigned connect_timeout_ms;    /* 0 = the HTTP client's default */
    unsigned first_byte_timeout_ms;
    unsigned idle_timeout_ms;       /* longest silence inside a streaming answer */
    const char *tool_choice; /* NULL, or the name of an offered tool the model must call */
    unsigned max_tokens;     /* 0 = the provider's default (Anthropic requires one: 4096) */
} llm_request;

typedef struct llm_provider {
    const char *name;
    llm_call *(*start)(uv_loop_t *loop, const llm_request *req, const llm_callbacks *cb,
                       void *ud);
    void (*cancel)(llm_call *call);
    /* Backpressure (may be NULL): a paused call reads nothing more from upstream. */
    void (*pause)(llm_call *call, int paused);
} llm_provider;

/* Resolves "provider:model" (or "demo"). Returns NULL for an unknown or not yet available
 * provider; *model_out points into spec. */
const llm_provider *llm_provider_find(const char *spec, const char **model_out);
/* Releases what providers keep per process (the HTTP client); run the loop once more after. */
void llm_providers_shutdown(void);

extern const llm_provider llm_demo_provider;
extern const llm_provider llm_openai_provider;    /* "openai:MODEL", Chat Completions */
extern const llm_provider llm_responses_provider; /* "openai-responses:MODEL" */
extern const llm_provider llm_anthropic_provider; /* "anthropic:MODEL", Messages */

#endif
