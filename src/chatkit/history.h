/* The model's input from a thread: the newest HISTORY_ITEMS items, oldest first, in
 * provider.h's neutral message shape.
 * - user messages: quoted text, text, and attachments: images (PNG, JPEG, GIF, WebP) as image
 *   parts with their bytes while the request's image budget lasts (newest first), text files
 *   inline up to a cap, anything else by name;
 * - assistant messages; widgets as their copy_text; client tool calls with their output;
 *   structured input with its answers;
 * - hidden items: tool calls the run executed map back to assistant tool_calls + tool results
 *   (calls made in one answer grouped again), other hidden context as user text.
 * What only the UI needs (tasks, workflows) is left out. Runs in a store job (reads files). */
#ifndef CK_HISTORY_H
#define CK_HISTORY_H
#include <jansson.h>

#include "store/store.h"
#include "util/config.h"

#define HISTORY_ITEMS 60

/* *msgs: the messages; *options: the inference_options of the newest user message (NULL when
 * none). Returns 0 or a store error. */
int history_load(store_conn *db, const store_scope *sc, const char *thread_id, const config *cfg,
                 json_t **msgs, json_t **options);

#endif
