/* Incremental client-side Server-Sent Events parser (WHATWG HTML "event stream
 * interpretation") for upstream LLM responses (OpenAI Chat Completions / Responses,
 * Anthropic Messages). Feed it the response body in whatever pieces the network delivers;
 * it calls back once per complete event. Not thread-safe; one parser per stream.
 *
 * What it does, per the spec:
 *   - lines end in CRLF, LF or a lone CR (a CR ending one feed and an LF starting the next is
 *     one line end); one leading UTF-8 BOM on the stream is skipped;
 *   - "field: value" (one space after the colon removed), "field" alone = empty value,
 *     lines starting with ':' are comments (heartbeats) and ignored;
 *   - data: lines are joined with "\n"; event: sets the name; id: sets the last event id
 *     (a value containing NUL is ignored); retry: (ASCII digits only, else ignored) sets the
 *     reconnection time ssep_retry returns; unknown fields are ignored;
 *   - a blank line dispatches the event, unless no data: line was seen (then nothing is
 *     called and the name is reset); the name defaults to "message";
 *   - at end of stream (ssep_finish) an event not terminated by a blank line is discarded.
 * Bytes are passed through as they are: UTF-8 is not validated (the caller's JSON parser
 * does that); "data: [DONE]" is ordinary data for the caller to interpret.
 *
 * Bounds (a hostile upstream cannot make it grow without limit):
 *   - an event's data (joined) larger than max_event_bytes → -EMSGSIZE;
 *   - one line longer than max_event_bytes + SSEP_LINE_SLACK (room for "data: ") → -EMSGSIZE;
 *   - an event: or id: value longer than SSEP_NAME_MAX → -EMSGSIZE (an error, not
 *     truncation: a cut name could route the event wrongly).
 * Errors are sticky: once ssep_feed failed, it returns the same error until ssep_finish. */
#ifndef CK_SSE_H
#define CK_SSE_H
#include <stddef.h>

#include "util/buf.h"

#define SSEP_NAME_MAX      256        /* event name and id, bytes */
#define SSEP_LINE_SLACK    64         /* field name + ": " on top of max_event_bytes */
#define SSEP_DEFAULT_EVENT (1u << 20) /* max_event_bytes when 0 is passed */

/* Called once per dispatched event. event: the name, never empty ("message" by default),
 * NUL-terminated. data: NOT NUL-terminated (it may point into the fed chunk), may contain
 * NUL bytes; data_len may be 0 (a lone "data:" line). id: the last event id seen so far on
 * this stream ("" if none), NUL-terminated. All pointers are valid only during the call.
 * Return 0 to go on, or a negative error to stop: ssep_feed then returns that value. The
 * callback must not call ssep_feed/ssep_finish/ssep_free on the same parser. */
typedef int (*ssep_event_fn)(void *ud, const char *event, size_t event_len, const char *data,
                             size_t data_len, const char *id);

/* Embedded by the owner (no allocation of its own); fields are private. */
typedef struct ssep {
    ssep_event_fn cb;
    void *ud;
    size_t max_data;
    buf line;         /* the part of a line that a previous feed ended inside */
    buf data;         /* joined data when it could not stay in the caller's chunk */
    const char *dref; /* the event's only data line, still inside the current chunk */
    size_t dref_len;
    int dstate;               /* none / borrowed (dref) / owned (data) */
    int err;                  /* sticky error, 0 = fine */
    unsigned char bom;        /* BOM bytes matched so far; 3 or more = BOM phase over */
    unsigned char pending_cr; /* the last feed ended in CR: skip an LF starting the next */
    size_t event_len;
    long retry_ms; /* the last valid retry: value, -1 when none */
    char event[SSEP_NAME_MAX + 1];
    char id[SSEP_NAME_MAX + 1];
} ssep;

/* max_event_bytes: cap on one event's data (0 = SSEP_DEFAULT_EVENT). cb must not be NULL. */
void ssep_init(ssep *p, size_t max_event_bytes, ssep_event_fn cb, void *ud);
/* Parses len more bytes of the stream, calling cb for each event completed by them.
 * Returns 0, -EMSGSIZE (a cap above was passed), or the callback's negative return. */
int ssep_feed(ssep *p, const char *data, size_t len);
/* End of stream: discards an incomplete event (spec) and resets the parser for a new stream
 * (for a reconnect), keeping only the last event id and retry value. Returns the sticky error, if
 * any (and clears it), else 0. */
int ssep_finish(ssep *p);
/* The last event id (for a reconnect's Last-Event-ID), "" if none. Owned by the parser. */
const char *ssep_last_id(const ssep *p);
/* The last retry: value on this stream (milliseconds, at most 999999999), kept across
 * ssep_finish like the last id; -1 when none was seen. */
long ssep_retry(const ssep *p);
/* Releases the buffers; the parser may be ssep_init'ed again. */
void ssep_free(ssep *p);

#endif
