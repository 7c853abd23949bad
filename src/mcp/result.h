/* What the model and the client get from an MCP CallToolResult (reference mcp-and-llm.md §2.3).
 *
 * The model sees text built from the content blocks: text as is; an embedded resource by its
 * text (or a description when it is binary); an image, audio or resource link named; a
 * widget as "[widget shown to the user] <copy_text>"; an isError result prefixed with
 * "Error: ". structuredContent is used when there is no content.
 *
 * Widgets: a block {"type":"resource","resource":{uri "ui://…", mimeType exactly
 * "application/vnd.ui.widget+json", text or base64 blob}} whose JSON is
 * {"widget": <root Card | ListView | Basic>, "copy_text": "…"}. Anything else under ui://
 * (MCP Apps HTML…) is not a widget; a broken one is logged and skipped. */
#ifndef CK_MCP_RESULT_H
#define CK_MCP_RESULT_H
#include <jansson.h>
#include <stddef.h>

#define MCP_WIDGET_MIME "application/vnd.ui.widget+json"

/* The model's text for a result (malloc'd; at most max bytes, cut at a character boundary with
 * a note). rid: for log lines about skipped widgets (may be NULL). */
char *mcp_result_text(const json_t *result, size_t max, const char *rid);
/* The widgets of a result: a new array of {"widget": …, "copy_text": "…"} (empty when none). */
json_t *mcp_result_widgets(const json_t *result, const char *rid);

/* The images of a result the model can be shown (PNG, JPEG, GIF, WebP; base64 at most max bytes
 * in all): a new array of {"mime_type", "data"}. */
json_t *mcp_result_images(const json_t *result, size_t max);

#endif
