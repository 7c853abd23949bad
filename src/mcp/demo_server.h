/* The bundled demo MCP server (`chatkitd mcp-demo`): a handshake-era MCP server on stdio
 * (reference mcp-and-llm.md §2.1–2.5) with four deterministic, offline tools:
 *   get_weather {city}          text + a ChatKit widget resource (Card, JSON in `text`)
 *   get_forecast {city, days?}  text + a ChatKit widget resource (ListView, JSON in base64 `blob`)
 *   echo {message}              text only
 *   get_time {}                 the current UTC time, ISO 8601
 * Widget resources follow the project's rule (§2.3): type "resource", a ui:// uri, mimeType
 * application/vnd.ui.widget+json, content {"widget": <root>, "copy_text": "..."}.
 *
 * Framing: one compact JSON-RPC message per line on `in` and `out`; log lines go to stderr only.
 * Lines longer than 1 MiB are dropped and answered with -32600. Blocking I/O: this is the whole
 * process, nothing else runs beside it. */
#ifndef CK_MCP_DEMO_SERVER_H
#define CK_MCP_DEMO_SERVER_H
#include <stdio.h>

/* Serves until EOF on in. Returns the process exit code: 0 at EOF, 1 when reading in or
 * writing out failed. Neither stream is closed. */
int mcp_demo_main(FILE *in, FILE *out);

#endif
