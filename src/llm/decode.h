/* What the three stream decoders (Chat Completions, Responses, Anthropic) share: the decoder
 * state, and the tool calls of one streamed answer accumulated from fragments. A call lives in the slot its stream
 * names it by (Chat's `index`, Responses' `output_index`, Anthropic's content block `index`);
 * the slots are allocated on the first call, so an answer without tools costs nothing. */
#ifndef CK_DECODE_H
#define CK_DECODE_H
#include <jansson.h>

#include "llm/provider.h"
#include "util/buf.h"

#define TC_MAX_SLOTS 64        /* slot numbers 0..63: parallel calls in one answer */
#define TC_MAX_ARGS (1u << 20) /* one call's arguments, bytes */

typedef struct tc_call {
    char *id;      /* what the tool result refers to */
    char *item_id; /* Responses: the output item's id, to find the call without output_index */
    char *name;
    buf args;      /* the joined argument fragments */
    int used;      /* the slot holds a call */
    int preset;    /* args came whole up front: the first fragment replaces them */
} tc_call;

typedef struct tc_list {
    tc_call *slot; /* TC_MAX_SLOTS, NULL until the first call */
    int n;         /* highest used slot + 1 */
    int last;      /* for the decoder: the call started last, -1 before any */
} tc_list;

void tc_init(tc_list *l);
void tc_free(tc_list *l);
/* The call in slot k, created when create is set (NULL when absent and not created). NULL and
 * *err set when k is out of range. */
tc_call *tc_slot(tc_list *l, long long k, int create, const char **err);
/* The slot of the call with this item id or call id (either may be NULL), or -1. */
int tc_find(const tc_list *l, const char *item_id, const char *call_id);
/* Fills id/item_id/name when the call does not have them yet (any argument may be NULL). */
void tc_name(tc_call *c, const char *id, const char *item_id, const char *name);
/* Adds a fragment: a string is appended (after clearing when replace, or when preset), a whole
 * object (tolerated instead of a string) is serialised. Returns 0 or < 0 with *err set. */
int tc_args(tc_call *c, json_t *args, int replace, const char **err);
/* Emits every named call in slot order (unnamed slots are not calls; a call without an id gets
 * "<id_prefix><slot>"). */
void tc_emit(const tc_list *l, const llm_callbacks *cb, void *ud, const char *id_prefix);

/* Decoder of one streamed answer. The format's X_dec_event(d, event, data, len, errbuf, errlen,
 * err) takes every SSE event in order: the event name (NULL or "message" when the stream had no
 * `event:` line) and its data. It returns 0 to go on, 1 after the terminal event, or < 0 when
 * the stream carried an error or was malformed: *err then holds a message safe to show (static
 * or in errbuf). Text deltas are delivered as they come; tool calls are held until the end. */
typedef struct llm_dec {
    const llm_callbacks *cb;
    void *ud;
    tc_list calls;
    llm_usage usage;
    char stop[32];    /* why the answer ended (finish/stop/incomplete reason), "" until seen */
    int text_seen;    /* a text delta went out (a failure after it is not retryable) */
    int refusal_seen; /* Responses: the model refused (refusal deltas are not shown as text) */
    int done;         /* the terminal event was seen */
} llm_dec;

void llm_dec_init(llm_dec *d, const llm_callbacks *cb, void *ud);
void llm_dec_free(llm_dec *d);
/* A token count from upstream JSON: the integer, or 0 when absent, negative or not an integer;
 * sums of counts saturate instead of overflowing. */
int64_t llm_tokens(json_t *v);
int64_t llm_tokens_add(int64_t a, int64_t b);
/* Delivers a text delta when text is a non-empty string. */
void llm_dec_text(llm_dec *d, json_t *text);
/* End of the stream: emits the tool calls (slot order; unnamed ids get id_prefix + slot) then
 * on_done. Returns 0, or < 0 if the stream ended with neither a terminal event nor a stop
 * reason (cut off): *err says so, nothing emitted. */
int llm_dec_end(llm_dec *d, const char *id_prefix, const char **err);

/* Request side: a user message's content as a provider's parts. content is a string or an
 * array of neutral parts ({"type":"text","text"}, {"type":"image","mime_type","data": base64});
 * each part goes through text() or image(). Returns a new array, or NULL on a malformed part. */
json_t *llm_map_parts(json_t *content, json_t *(*text)(json_t *text),
                      json_t *(*image)(const char *mime, const char *data));

/* Request side: the neutral tools ([{name, description?, parameters?}]) in a format's shape:
 * one(name, description (a string, "" when absent), parameters (an object schema, {"type":
 * "object"} when absent)) builds each; both values are new references for one to keep or
 * release. Returns a new array, or NULL when a tool has no string name. */
json_t *llm_map_tools(json_t *tools, json_t *(*one)(json_t *name, json_t *desc, json_t *params));

/* Appends image(mime, data) to out for each {"mime_type","data"} of images (a tool message's
 * "images"; malformed entries are skipped). */
void llm_append_images(json_t *out, json_t *images,
                       json_t *(*image)(const char *mime, const char *data));

/* Shared by the decoders: *err = msg, returns -EPROTO. */
int llm_fail(const char **err, const char *msg);
/* An upstream error message, cut and made safe for a log or a user, into errbuf; -EIO. */
int llm_upstream_error(const char *msg, char *errbuf, size_t errlen, const char **err);

#endif
