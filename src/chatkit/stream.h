/* The event pipeline of one streaming request (protocol reference §11.1, §11.7, §11.8).
 *
 * Producers (the handlers, the run) hand it events in order. It keeps pending items
 * (added, not yet done), persists what the rules say — item.done inserts, item.replaced
 * upserts, item.removed deletes, thread metadata changes save the thread and emit
 * thread.updated — and writes each event to the client only after its store effect
 * completed, so what a client saw is always stored. Hidden items are stored, never sent.
 * When the client disconnects, the run is cancelled, pending assistant messages with text
 * are stored and the "user cancelled" hidden item is appended.
 *
 * Ownership: the stream holds a ref on its http_req and registers itself in app->active under
 * its thread id until it ends; it frees itself when its queue has drained after
 * stream_finish (or a disconnect). */
#ifndef CK_STREAM_H
#define CK_STREAM_H
#include <jansson.h>

#include "chatkit/chatkit.h"

typedef struct ck_stream ck_stream;
struct run;

/* Starts the SSE response. thread is copied. The thread id must already be reserved in
 * app->active by the caller (ck_stream replaces the reservation). */
ck_stream *stream_new(ck_app *app, http_req *req, const store_scope *sc, const store_thread *thread,
                      const ck_agent *agent, int64_t last_us);

/* Event producers, in order. stream_emit steals ev. */
void stream_emit(ck_stream *st, json_t *ev);
/* An event already persisted by the caller (sent as is, no store effect). Copies json. */
void stream_emit_raw(ck_stream *st, const char *json, size_t len);
/* assistant_message.content_part.text_delta (fast path). */
void stream_text_delta(ck_stream *st, const char *item_id, int content_index, const char *delta,
                       size_t len);
void stream_error(ck_stream *st, const char *code, const char *message, int allow_retry);
void stream_progress(ck_stream *st, const char *icon, const char *text);
/* Thread metadata changes: saved and announced (thread.updated) after the next event. */
void stream_set_title(ck_stream *st, const char *title);
/* A key of the thread's server-private metadata (clients always see metadata {}), saved in
 * queue order like a title; value stolen, NULL deletes the key. */
void stream_set_metadata(ck_stream *st, const char *key, json_t *value);
/* The run's accounting, stored with the events queued before it. r is copied. */
void stream_record_run(ck_stream *st, const store_run *r);
/* The producer is done; the stream ends once everything queued is stored and sent. */
void stream_finish(ck_stream *st);
/* threads.delete of thread_id succeeded: a stream of that thread ends at once with one error
 * event (allow_retry false), its run is cancelled and nothing more is stored for the thread
 * but the run's accounting. */
void stream_thread_deleted(ck_app *app, const char *thread_id);

/* Accessors for producers. */
int64_t stream_now(ck_stream *st); /* monotonic per thread, microseconds */
const store_thread *stream_thread(ck_stream *st);
const ck_agent *stream_agent(ck_stream *st);
ck_app *stream_app(ck_stream *st);
const char *stream_rid(ck_stream *st);
int stream_cancelled(ck_stream *st);
/* The run feeding this stream (cancelled on disconnect); NULL when none. */
void stream_set_run(ck_stream *st, struct run *r);

/* A new item object {id, thread_id, created_at, type} with a fresh id and timestamp. */
json_t *stream_new_item(ck_stream *st, const char *prefix, const char *type);

#endif
