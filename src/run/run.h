/* One agent turn: feeds the model the turn's input, turns its output into stream events
 * (progress, assistant message deltas, items from tool calls), titles new threads. */
#ifndef CK_RUN_H
#define CK_RUN_H
#include <jansson.h>

#include "chatkit/stream.h"

typedef struct run run;

/* messages: the model input (provider.h shape); stolen. title_text: the user's text when the
 * thread may need a title (NULL otherwise). options: the inference_options of the user message
 * being answered (borrowed; may be NULL). The run calls stream_finish when it ends. */
void run_start(ck_stream *st, json_t *messages, const char *title_text, const json_t *options);
/* A widget action (threads.custom_action): action {type, payload}; widget_item may be NULL;
 * both borrowed. history: the model input so far (stolen); the action is added to it. */
void run_action(ck_stream *st, json_t *action, json_t *widget_item, json_t *history);
/* The user answered an MCP elicitation (issue 5): the run parked under interaction iid takes
 * st as its stream and the server gets action ("accept" with content, "decline", "cancel").
 * Returns -1 when no run waits for it (the deadline passed, or chatkitd restarted). */
int run_resume_elicitation(ck_app *app, ck_stream *st, const char *iid, const char *action,
                           const json_t *content);
/* Shutdown: every parked run is dropped (its servers get "cancel"). */
void run_drop_parked(ck_app *app);
/* Backpressure: the client is slow; a paused run reads nothing more from the model. */
void run_pause(run *r, int paused);
/* Stops the model at once; the run stores its accounting and calls nothing on the stream
 * afterwards. */
void run_cancel(run *r);

/* The demo widget (a Card with a counter and a button) for count n. */
json_t *run_demo_widget(long long n);
/* Applies a demo action to a widget item in place; returns 1 if it changed it. */
int run_demo_apply_action(json_t *widget_item, const json_t *action);

#endif
